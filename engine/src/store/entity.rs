//! SeaORM entities of the nightcrier tables: generated-style code only.
//!
//! These mirror the migrations column for column, in the shape `sea-orm-cli generate entity`
//! produces. Behaviour (status parsing, conversions into domain types) lives in `store` and
//! `queue`, never here.

pub mod agent_executions;
pub mod alert_deliveries;
pub mod alerts;
pub mod circuit_breakers;
pub mod fault_events;
pub mod incidents;
pub mod plugin_kv;
pub mod plugin_runs;
pub mod rejected_events;
pub mod triage_reports;
