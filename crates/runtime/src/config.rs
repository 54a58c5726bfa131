//! Every limit of the runtime and of the candidate checks, as configuration with defaults that run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of the wasmtime engine and of each rule call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Fuel (roughly, wasm instructions) one rule call may use; a call that runs out traps.
    /// Deterministic, so a busy machine never fails a good call. `None` turns fuel off.
    pub fuel_per_call: Option<u64>,
    /// Wall-clock budget of one rule call, in milliseconds: the backstop behind fuel (and the
    /// only limit when fuel is off).
    pub call_deadline_ms: u64,
    /// How often the engine's epoch advances, in milliseconds (the deadline's resolution).
    pub epoch_tick_ms: u64,
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Largest table one instance may grow to, in elements.
    pub max_table_elements: usize,
    /// Instances the pooling allocator can hold at once across all components and versions.
    pub max_instances: u32,
    /// Warm instances kept per loaded version.
    pub warm_instances: usize,
    /// Calls one instance serves before it is discarded. 1, the default, gives every call a fresh
    /// instance: nothing a module keeps in memory can pass from one patient to the next. Higher
    /// values reuse warm instances (about 0.6 µs a call instead of 19 µs here, see
    /// `cargo bench -p nonstop-runtime`) for modules trusted to keep no state. An instance
    /// that traps or breaks an invariant is always discarded.
    pub calls_per_instance: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            fuel_per_call: Some(50_000_000),
            call_deadline_ms: 500,
            epoch_tick_ms: 1,
            max_memory_bytes: 16 << 20,
            max_table_elements: 100_000,
            max_instances: 256,
            warm_instances: 8,
            calls_per_instance: 1,
        }
    }
}

impl RuntimeConfig {
    /// The deadline in epoch ticks: one more than the budget, so a call always gets its full
    /// budget whatever the phase of the ticker.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.call_deadline_ms / self.epoch_tick_ms.max(1) + 1
    }

    /// The epoch tick.
    pub(crate) fn tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms.max(1))
    }

    /// Instances one version can hold at once: its warm pool, plus one per concurrent call.
    pub(crate) fn instances_per_version(&self) -> u32 {
        self.warm_instances as u32 + 8
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
    /// Seconds without a live call after which the remaining shadow calls replay the bundle's
    /// test vector inputs and the live inputs seen, so an idle node (at night) can be updated.
    pub shadow_idle_secs: u64,
    /// Largest ratio of the candidate's median latency to the live version's on the same inputs.
    pub max_latency_ratio: f64,
    /// Calls observed on a newly promoted version before the watch window closes.
    pub watch_calls: u64,
    /// Longest the watch window stays open, in seconds.
    pub watch_secs: u64,
    /// Failed calls (trap, fuel, deadline, memory, broken invariant), per call, that trigger a
    /// rollback in the watch window.
    pub max_failure_rate: f64,
    /// Refusals a new version adds, per call, that reject it (in shadow traffic: refusals of
    /// inputs the live version accepted) or roll it back (in the watch window: refusals beyond
    /// the previous version's own rate). A refusal is a rule's answer, not a failure, but a
    /// version that suddenly turns patients away is worse until shown otherwise; raise this for
    /// an update meant to refuse more (a stricter quota).
    pub max_new_refusal_rate: f64,
    /// Calls needed before the failure rate is judged.
    pub min_calls_for_rate: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            min_test_vectors: 1,
            shadow_calls: 100,
            shadow_timeout_secs: 120,
            shadow_idle_secs: 5,
            max_latency_ratio: 3.0,
            watch_calls: 1000,
            watch_secs: 300,
            max_failure_rate: 0.01,
            max_new_refusal_rate: 0.01,
            min_calls_for_rate: 20,
        }
    }
}
