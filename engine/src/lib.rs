//! nightcrier: AI-powered incident triage for Kubernetes fleets.
//!
//! # Layout
//! - [`store`]: the database (SQLite or Postgres), migrations, dead letters, SeaORM entities.
//! - [`queue`]: the `incidents` table as a job queue with leases; one agent per cluster.
//! - [`ingest`]: message → source plugin decode → validated events, committed in groups, or dead
//!   letters; the spool for database outages. The one path `serve` and `ingest` share.
//! - [`feed`]: which feeds `serve` runs (MCP per cluster, webhook routes, poll loops) and the
//!   engine side of intake ([`feed::EngineDeliver`]).
//! - [`http`]: the HTTP listener (health, metrics, feed state, webhooks).
//! - [`replica`]: replicas on one Postgres: identity, heartbeat, which one holds each feed.
//! - [`config`]: the TOML config file → validated `Settings`.
//! - [`server`]: `nightcrier serve`: pre-triage, workers, sweeper, container recovery, drain.
//! - [`triage`]: the stages around the agent: pre-triage (`PreTriage`, `Decision`,
//!   `PluginPreTriage`) and post-triage (`PostTriage`: plugins, then the report).
//! - [`report`]: the report stage: markdown → sanitised HTML page, the `triage_reports` row, the
//!   report store (a folder, S3, Azure or GCS) with uploads retried until they succeed.
//! - [`plugin`]: engine ↔ WebAssembly plugin host glue (loading, key-value store, decode).
//! - [`agent`]: queue ↔ Docker agent runtime glue (`AgentInvestigator`, DB recorders).
//! - [`alert`]: operational alerts (breaker degraded/recovered, feed down/up): recorded, then
//!   delivered to the post-triage plugins that handle alerts.
//! - [`cli`]: the `nightcrier` command line.
//! - [`demo`]: `nightcrier demo`: serve on SQLite with a simulated kubernetes-mcp-server and a
//!   local demo agent image, for a first look at the whole job.
//! - `mcp_sim`: simulated kubernetes-mcp-servers over real HTTP (for `demo` and `bench intake`).
//! - [`bench`]: `nightcrier bench store`, the store and queue benchmark.
//! - [`telemetry`]: tracing set-up and the field names used in logs.
//!
//! See `engine/ARCHITECTURE.md` for the bird's-eye view, the invariants and the glossary.

pub mod agent;
pub mod alert;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod feed;
pub mod http;
pub mod ingest;
pub(crate) mod mcp_sim;
pub mod plugin;
pub mod queue;
pub mod replica;
pub mod report;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod triage;

pub use queue::{Queue, QueueError};
pub use store::{Store, StoreConfig, StoreError};
