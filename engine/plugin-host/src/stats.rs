//! Call statistics per plugin, kept in memory for the API (`GET /api/v1/plugins`) and exported as
//! Prometheus metrics: `nightcrier_plugin_calls_total{plugin, stage, outcome}` and
//! `nightcrier_plugin_call_duration_seconds{plugin, stage}`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::error::CallError;

/// The outcome label of a call.
pub(crate) fn outcome_of<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::Plugin { .. }) => "plugin_error",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(CallError::MemoryLimit { .. }) => "memory_limit",
        Err(CallError::OutputTooLarge { .. }) => "output_too_large",
        Err(CallError::Trap { .. }) => "trap",
        Err(CallError::KvWrites { .. }) => "kv_error",
        Err(CallError::Instantiate { .. }) => "instantiate_error",
        Err(CallError::NotFound { .. } | CallError::WrongWorld { .. }) => "not_found",
    }
}

/// What one plugin's calls came to since the host loaded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls by outcome (`ok`, `plugin_error`, `timeout`, `trap`, …).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Total time in calls, microseconds.
    pub total_us: u64,
    /// The longest call, microseconds.
    pub max_us: u64,
}

/// The live counters of one plugin.
#[derive(Debug, Default)]
pub(crate) struct CallCounters(Mutex<CallStats>);

impl CallCounters {
    pub(crate) fn record(
        &self,
        plugin: &str,
        stage: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        {
            let mut stats = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            stats.calls += 1;
            *stats.outcomes.entry(outcome).or_default() += 1;
            stats.total_us = stats.total_us.saturating_add(micros);
            stats.max_us = stats.max_us.max(micros);
        }
        metrics::counter!("nightcrier_plugin_calls_total", "plugin" => plugin.to_owned(), "stage" => stage, "outcome" => outcome).increment(1);
        metrics::histogram!("nightcrier_plugin_call_duration_seconds", "plugin" => plugin.to_owned(), "stage" => stage).record(took.as_secs_f64());
    }

    pub(crate) fn snapshot(&self) -> CallStats {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
