//! End-to-end tests of nightcrier: one binary, a module per area. Every store and queue test
//! runs on a real SQLite file and on a real Postgres server (`NIGHTCRIER_TEST_PG_URL`, started
//! by `tests/run.sh`; with `CI=true` a missing server fails the run).

mod alerts;
mod api;
mod cli;
mod demo;
mod examples;
mod feed_stop;
mod ingest;
mod intake;
mod migrations;
mod plugins;
mod plugins_run;
mod queue;
mod queue_concurrency;
mod records;
mod replicas;
mod reports;
mod retention;
mod serve;
mod support;
mod tidy;
mod ui;
mod untrusted_text;
mod wakeups;
mod worker;
