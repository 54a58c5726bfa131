//! One loaded version of a rule module: its compiled component, a pre-instantiated form, a small
//! pool of warm instances, and counters of its calls and failures.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nonstop_bundle::Digest;
use serde::{Deserialize, Serialize};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::engine::Sandbox;
use crate::{CallFailure, RuleEngine, RuleKind, RuntimeError};

/// Which version of which component computed something: recorded with every fee, split and queue
/// decision so an auditor can tell which rules priced a visit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionTag {
    /// Component name.
    pub component: String,
    /// Its version.
    pub version: semver::Version,
    /// Digest of its payload.
    pub digest: Digest,
}

impl fmt::Display for VersionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.component, self.version)
    }
}

/// Calls, failures and refusals of one loaded version, for shadow checks and the watch window.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: AtomicU64,
    failures: AtomicU64,
    refusals: AtomicU64,
}

/// A snapshot of [`CallStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Calls made.
    pub calls: u64,
    /// Calls that trapped, ran out of fuel, time or memory, or broke an invariant.
    pub failures: u64,
    /// Calls the rule answered with a refusal (an `Err` answer: "cannot price this").
    pub refusals: u64,
}

impl CallStats {
    /// The counts so far. Each call counts in `calls` before its outcome is counted, and the
    /// outcomes are read first, so a snapshot never shows more outcomes than calls.
    pub fn counts(&self) -> CallCounts {
        let failures = self.failures.load(Ordering::Acquire);
        let refusals = self.refusals.load(Ordering::Acquire);
        CallCounts {
            calls: self.calls.load(Ordering::Acquire),
            failures,
            refusals,
        }
    }
}

struct Warm<R: RuleKind> {
    store: Store<Sandbox>,
    bindings: R::Bindings,
    calls: u32,
}

/// A compiled, checked version of a rule module, ready to be called from many threads.
pub struct LoadedVersion<R: RuleKind> {
    tag: Arc<VersionTag>,
    engine: RuleEngine,
    pre: R::Pre,
    warm: Mutex<Vec<Warm<R>>>,
    stats: CallStats,
}

impl<R: RuleKind> LoadedVersion<R> {
    /// Checks that `component` exports `R`'s interface (and every interface in `required`) with
    /// the right types and imports nothing, and prepares it for calls. This is candidate check 1.
    pub fn new(
        engine: &RuleEngine,
        tag: VersionTag,
        component: &Component,
        required: &[String],
    ) -> Result<Self, RuntimeError> {
        for interface in std::iter::once(R::INTERFACE).chain(required.iter().map(String::as_str)) {
            if !crate::rules::exports(component, interface) {
                let found: Vec<String> = component
                    .component_type()
                    .exports(engine.wasmtime())
                    .map(|(name, _)| name.to_owned())
                    .collect();
                return Err(RuntimeError::WrongInterface {
                    expected: interface.to_owned(),
                    found: if found.is_empty() {
                        "nothing".into()
                    } else {
                        found.join(", ")
                    },
                });
            }
        }
        let incompatible = |e: wasmtime::Error| RuntimeError::Incompatible {
            interface: R::INTERFACE.to_owned(),
            detail: format!("{e:#}"),
        };
        let pre = engine
            .linker()
            .instantiate_pre(component)
            .map_err(incompatible)?;
        let pre = R::pre(pre).map_err(incompatible)?;
        Ok(LoadedVersion {
            tag: Arc::new(tag),
            engine: engine.clone(),
            pre,
            warm: Mutex::new(Vec::new()),
            stats: CallStats::default(),
        })
    }

    /// Which version this is.
    pub fn tag(&self) -> &Arc<VersionTag> {
        &self.tag
    }

    /// Its call counters.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Calls the rule and checks the host's invariants on the answer.
    pub fn call(&self, input: &R::Input) -> Result<R::Output, CallFailure> {
        self.stats.calls.fetch_add(1, Ordering::Release);
        let result = self.call_checked(input);
        match &result {
            // Running out of instance slots is the host's capacity, not the module's fault.
            Err(CallFailure::Instantiate(_)) => {}
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Release);
            }
            Ok(out) if R::is_refusal(out) => {
                self.stats.refusals.fetch_add(1, Ordering::Release);
            }
            Ok(_) => {}
        }
        result
    }

    fn call_checked(&self, input: &R::Input) -> Result<R::Output, CallFailure> {
        let pooled = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut warm = match pooled {
            Some(w) => w,
            None => self.instantiate()?,
        };
        self.engine.arm(&mut warm.store);
        let out = match R::call(&warm.bindings, &mut warm.store, input) {
            Ok(out) => out,
            // The instance is dropped here: after a trap its state cannot be trusted.
            Err(e) => return Err(self.classify(&warm.store, &e)),
        };
        // A wrong answer drops the instance too: its state may be what made it wrong.
        R::invariants(input, &out).map_err(CallFailure::Invariant)?;
        warm.calls += 1;
        if warm.calls < self.engine.config().calls_per_instance {
            let mut pool = self.warm.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < self.engine.config().warm_instances {
                pool.push(warm);
            }
        }
        Ok(out)
    }

    /// Whether every call gets an instance of its own (`calls_per_instance` 1, the default).
    pub fn instance_per_call(&self) -> bool {
        self.engine.config().calls_per_instance <= 1
    }

    /// A new instance held by the caller: no pool, no counters, no invariants. For measuring
    /// what the live handle adds to a bare call (the benchmarks).
    pub fn held_instance(&self) -> Result<HeldInstance<R>, CallFailure> {
        Ok(HeldInstance {
            warm: self.instantiate()?,
            engine: self.engine.clone(),
        })
    }

    fn instantiate(&self) -> Result<Warm<R>, CallFailure> {
        let mut store = self.engine.store();
        let bindings = R::instantiate(&self.pre, &mut store)
            .map_err(|e| CallFailure::Instantiate(format!("{e:#}")))?;
        Ok(Warm {
            store,
            bindings,
            calls: 0,
        })
    }

    fn classify(&self, store: &Store<Sandbox>, e: &wasmtime::Error) -> CallFailure {
        if store.data().memory_exceeded() {
            return CallFailure::Memory(format!("{e:#}"));
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                return CallFailure::Deadline(self.engine.config().call_deadline_ms);
            }
            Some(wasmtime::Trap::OutOfFuel) => {
                return CallFailure::Fuel(self.engine.config().fuel_per_call.unwrap_or_default());
            }
            _ => {}
        }
        CallFailure::Trap(format!("{e:#}"))
    }
}

/// An instance held directly by its caller (see [`LoadedVersion::held_instance`]).
pub struct HeldInstance<R: RuleKind> {
    warm: Warm<R>,
    engine: RuleEngine,
}

impl<R: RuleKind> HeldInstance<R> {
    /// Calls the rule on this instance.
    pub fn call(&mut self, input: &R::Input) -> wasmtime::Result<R::Output> {
        self.engine.arm(&mut self.warm.store);
        R::call(&self.warm.bindings, &mut self.warm.store, input)
    }
}
