//! Every limit of the runtime and of the candidate checks, as configuration with defaults that run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of the wasmtime engine and of each rule call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Wall-clock budget of one rule call, in milliseconds; a call past it traps.
    pub call_deadline_ms: u64,
    /// How often the engine's epoch advances, in milliseconds (the deadline's resolution).
    pub epoch_tick_ms: u64,
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Instances the pooling allocator can hold at once across all versions.
    pub max_instances: u32,
    /// Warm instances kept per loaded version.
    pub warm_instances: usize,
    /// Calls one instance serves before it is discarded for a fresh one; 1 gives every call a
    /// fresh instance (no state can pass between patients, about 20 µs more per call). An
    /// instance that traps is always discarded.
    pub calls_per_instance: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            call_deadline_ms: 50,
            epoch_tick_ms: 1,
            max_memory_bytes: 16 << 20,
            max_instances: 256,
            warm_instances: 8,
            calls_per_instance: 1000,
        }
    }
}

impl RuntimeConfig {
    /// The deadline in epoch ticks (at least one).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.call_deadline_ms / self.epoch_tick_ms.max(1)).max(1)
    }

    /// The epoch tick.
    pub(crate) fn tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms.max(1))
    }
}

/// The preset requirements a candidate must meet before it goes live, and the watch window after.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Test vectors a bundle must carry (check 2).
    pub min_test_vectors: usize,
    /// Live calls the candidate must shadow (a bundle may ask for more).
    pub shadow_calls: u32,
    /// How long to wait for those calls before refusing the candidate, in seconds.
    pub shadow_timeout_secs: u64,
    /// Largest ratio of the candidate's median latency to the live version's on the same inputs.
    pub max_latency_ratio: f64,
    /// Calls observed on a newly promoted version before the watch window closes.
    pub watch_calls: u64,
    /// Longest the watch window stays open, in seconds.
    pub watch_secs: u64,
    /// Failed calls (trap, deadline, memory, broken invariant) per call that trigger a rollback.
    pub max_failure_rate: f64,
    /// Calls needed before the failure rate is judged.
    pub min_calls_for_rate: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            min_test_vectors: 1,
            shadow_calls: 100,
            shadow_timeout_secs: 120,
            max_latency_ratio: 3.0,
            watch_calls: 1000,
            watch_secs: 300,
            max_failure_rate: 0.01,
            min_calls_for_rate: 20,
        }
    }
}
