//! The update agent: the patent's "new thread". It owns the node's version store and runs every
//! update on its own thread, never on a request-serving one:
//!
//! 1. open the pushed bundle ([`nonstop_bundle::Verifier::open`]): signature, digest, limits, version;
//! 2. stage it in the store as the component's candidate, beside the live version;
//! 3. test the candidate's running state: check 1 (compiles, exports the interface), check 2
//!    (test vectors, invariants, determinism), check 3 (shadow traffic beside live calls);
//! 4. only if every check passes, promote it (store first, then one pointer swap in memory),
//!    otherwise reject it with the failing check as the reason;
//! 5. watch the new live version; if its failure rate passes the threshold, roll back to the
//!    standby by itself and record why.
//!
//! Request-serving workers only ever call [`nonstop_runtime::LiveModule::call`]; nothing here
//! makes them wait.

#![deny(missing_docs)]

mod error;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use nonstop_bundle::{ComponentName, VerifiedBundle, Verifier};
use nonstop_runtime::checks::ShadowReport;
use nonstop_runtime::{CheckConfig, RuleEngine, RuleSlot, Rules, VersionTag};
use nonstop_store::{Store, VersionEntry};
use serde::Serialize;

pub use error::AgentError;

/// How an update ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// The bundle was refused before staging (signature, digest, limits, version...).
    Refused {
        /// Why.
        reason: String,
    },
    /// The candidate failed a check and was rejected; the live version never changed.
    Rejected {
        /// The failed check.
        reason: String,
    },
    /// The candidate passed every check and is live.
    Live {
        /// Test vectors passed.
        vectors: usize,
        /// What shadow traffic showed (none on a first install).
        shadow: Option<ShadowReport>,
        /// Calls and failures seen in the watch window.
        watched_calls: u64,
        /// Failures in the watch window (answered by the standby).
        watched_failures: u64,
    },
    /// The candidate went live, failed in the watch window, and the standby is live again.
    RolledBack {
        /// Why.
        reason: String,
    },
}

/// The result of one pushed update.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// Component, if the bundle named one readable.
    pub component: Option<String>,
    /// Version, if known.
    pub version: Option<semver::Version>,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

enum Request {
    Install(Vec<u8>, Sender<InstallReport>),
    Rollback(String, String, Sender<Result<VersionTag, String>>),
}

/// Handle to the agent thread. Dropping it stops the thread after the current update.
pub struct Agent {
    tx: Option<Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Loads every installed live and standby version into `rules`, rejects a candidate left by a
    /// restart (its checks must run again from a new push), and starts the agent thread.
    pub fn start(
        mut store: Store,
        verifier: Verifier,
        engine: RuleEngine,
        rules: Rules,
        checks: CheckConfig,
    ) -> Result<Agent, AgentError> {
        for slot in rules.slots() {
            let name =
                ComponentName::new(slot.component()).expect("rule component names are valid");
            let Ok(state) = store.component(&name).cloned() else {
                continue;
            };
            if let Some(live) = &state.live {
                slot.load(
                    &engine,
                    tag(&name, live),
                    &store.payload_path(&name, live),
                    false,
                )?;
            }
            if let Some(standby) = &state.standby {
                slot.load(
                    &engine,
                    tag(&name, standby),
                    &store.payload_path(&name, standby),
                    true,
                )?;
            }
            if let Some(cand) = &state.candidate {
                tracing::warn!(component = %name, version = %cand.version, step = "reject", "candidate left by a restart");
                store.reject(
                    &name,
                    Some(&cand.version),
                    "node restarted before the candidate's checks finished",
                )?;
            }
        }
        let (tx, rx) = channel();
        let mut worker = Worker {
            store,
            verifier,
            engine,
            rules,
            checks,
        };
        let thread = std::thread::Builder::new()
            .name("nonstop-agent".into())
            .spawn(move || worker.run(rx))
            .map_err(|_| AgentError::Stopped)?;
        Ok(Agent {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a pushed bundle; the report arrives when the update has ended (after the watch
    /// window if it went live).
    pub fn install(&self, bundle: Vec<u8>) -> Result<Receiver<InstallReport>, AgentError> {
        let (tx, rx) = channel();
        self.send(Request::Install(bundle, tx))?;
        Ok(rx)
    }

    /// Installs a bundle and waits for its report.
    pub fn install_and_wait(&self, bundle: Vec<u8>) -> Result<InstallReport, AgentError> {
        self.install(bundle)?
            .recv()
            .map_err(|_| AgentError::Stopped)
    }

    /// Makes the standby of `component` live again, by an operator's decision.
    pub fn rollback(
        &self,
        component: &str,
        reason: &str,
    ) -> Result<Result<VersionTag, String>, AgentError> {
        let (tx, rx) = channel();
        self.send(Request::Rollback(
            component.to_owned(),
            reason.to_owned(),
            tx,
        ))?;
        rx.recv().map_err(|_| AgentError::Stopped)
    }

    fn send(&self, request: Request) -> Result<(), AgentError> {
        self.tx
            .as_ref()
            .ok_or(AgentError::Stopped)?
            .send(request)
            .map_err(|_| AgentError::Stopped)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs checks 1 and 2 on a verified bundle outside any node: what a vendor runs before
/// publishing (`nonstop rules check`). Check 3 needs live traffic, so only a node runs it.
/// Returns the number of test vectors passed, or the failed check as the node would word it.
pub fn precheck(
    bundle: &VerifiedBundle,
    engine: &RuleEngine,
    checks: &CheckConfig,
) -> Result<usize, String> {
    let m = bundle.manifest();
    let rules = Rules::new();
    let slot = rules
        .slot(m.component.as_str())
        .map_err(|e| e.to_string())?;
    // The runtime loads components from files (it caches compiled code beside them).
    let dir = std::env::temp_dir().join(format!(
        "nonstop-precheck-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let payload = dir.join(m.payload.file.as_str());
    let result = std::fs::write(&payload, bundle.payload())
        .map_err(|e| format!("writing {}: {e}", payload.display()))
        .and_then(|()| {
            let tag = VersionTag {
                component: m.component.to_string(),
                version: m.version.clone(),
                digest: m.payload.digest,
            };
            slot.check_candidate(engine, tag, &payload, &m.checks, checks.min_test_vectors)
                .map_err(|f| f.to_string())
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tag(component: &ComponentName, entry: &VersionEntry) -> VersionTag {
    VersionTag {
        component: component.to_string(),
        version: entry.version.clone(),
        digest: entry.digest,
    }
}

struct Worker {
    store: Store,
    verifier: Verifier,
    engine: RuleEngine,
    rules: Rules,
    checks: CheckConfig,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Request>) {
        while let Ok(request) = rx.recv() {
            match request {
                Request::Install(bytes, reply) => {
                    let report = self.install(&bytes);
                    tracing::info!(component = ?report.component, version = ?report.version, outcome = ?report.outcome, "update ended");
                    let _ = reply.send(report);
                }
                Request::Rollback(component, reason, reply) => {
                    let _ = reply.send(self.rollback(&component, &reason));
                }
            }
        }
    }

    fn install(&mut self, bytes: &[u8]) -> InstallReport {
        let limits = self.verifier.limits().clone();
        let named = nonstop_bundle::inspect(bytes, &limits)
            .ok()
            .and_then(|b| b.manifest.ok());
        let mut report = InstallReport {
            component: named.as_ref().map(|m| m.component.to_string()),
            version: named.as_ref().map(|m| m.version.clone()),
            outcome: Outcome::Refused {
                reason: String::new(),
            },
        };
        let refuse = |reason: String, mut report: InstallReport| {
            tracing::warn!(component = ?report.component, version = ?report.version, step = "verify", %reason, "bundle refused");
            report.outcome = Outcome::Refused { reason };
            report
        };
        // Step 1: open the bundle against this store's live version.
        let live = named
            .as_ref()
            .and_then(|m| self.store.component(&m.component).ok())
            .and_then(|s| s.live.as_ref())
            .map(|e| e.version.clone());
        let bundle = match self.verifier.open(bytes, live.as_ref()) {
            Ok(b) => b,
            Err(e) => return refuse(e.to_string(), report),
        };
        let m = bundle.manifest().clone();
        let name = m.component.clone();
        let rules = self.rules.clone();
        let slot = match rules.slot(name.as_str()) {
            Ok(slot) => slot,
            Err(e) => return refuse(e.to_string(), report),
        };
        // Step 2: stage the candidate beside the live version.
        let entry = match self.store.stage(&bundle) {
            Ok(entry) => entry,
            Err(e) => return refuse(e.to_string(), report),
        };
        tracing::info!(component = %name, version = %m.version, step = "stage", "candidate staged");
        let version = m.version.clone();
        let reject = |worker: &mut Worker, reason: String, mut report: InstallReport| {
            tracing::warn!(component = %name, version = %version, step = "reject", %reason, "candidate rejected");
            slot.drop_candidate();
            if let Err(e) = worker.store.reject(&name, Some(&version), &reason) {
                tracing::error!(component = %name, error = %e, "could not record the rejection");
            }
            report.outcome = Outcome::Rejected { reason };
            report
        };
        // Step 3: test the candidate's running state.
        let payload = self.store.payload_path(&name, &entry);
        let vectors = match slot.check_candidate(
            &self.engine,
            tag(&name, &entry),
            &payload,
            &m.checks,
            self.checks.min_test_vectors,
        ) {
            Ok(n) => n,
            Err(f) => return reject(self, f.to_string(), report),
        };
        tracing::info!(component = %name, version = %version, step = "check", vectors, "checks 1 and 2 passed");
        let (calls, ratio) = match &m.checks.shadow {
            Some(s) => (
                s.calls.max(self.checks.shadow_calls),
                s.max_latency_ratio.min(self.checks.max_latency_ratio),
            ),
            None => (self.checks.shadow_calls, self.checks.max_latency_ratio),
        };
        let timeout = Duration::from_secs(self.checks.shadow_timeout_secs);
        let shadow = match slot.shadow_candidate(calls, timeout, ratio) {
            Ok(s) => s,
            Err(f) => return reject(self, f.to_string(), report),
        };
        if let Some(s) = &shadow {
            tracing::info!(component = %name, version = %version, step = "shadow", calls = s.calls, differences = s.differences, latency_ratio = s.latency_ratio, "check 3 passed");
        }
        // Step 4: promote: the store first (durable), then one pointer swap in memory.
        if let Err(e) = self.store.promote(&name, Some(&version)) {
            return reject(self, format!("promotion failed: {e}"), report);
        }
        slot.promote_candidate();
        tracing::info!(component = %name, version = %version, step = "promote", "candidate is live");
        // Step 5: the watch window.
        match self.watch(slot) {
            Ok((watched_calls, watched_failures)) => {
                report.outcome = Outcome::Live {
                    vectors,
                    shadow,
                    watched_calls,
                    watched_failures,
                }
            }
            Err(reason) => {
                let reason = match self.rollback(name.as_str(), &reason) {
                    Ok(_) => reason,
                    Err(e) => format!("{reason}; rollback failed: {e}"),
                };
                report.outcome = Outcome::RolledBack { reason };
            }
        }
        report
    }

    /// Watches the new live version; `Err` with the reason when it must be rolled back.
    fn watch(&self, slot: &dyn RuleSlot) -> Result<(u64, u64), String> {
        let Some((_, start)) = slot.live_counts() else {
            return Ok((0, 0));
        };
        let until = Instant::now() + Duration::from_secs(self.checks.watch_secs);
        loop {
            let (_, now) = slot.live_counts().ok_or("the live version disappeared")?;
            let (calls, failures) = (now.calls - start.calls, now.failures - start.failures);
            if calls >= self.checks.min_calls_for_rate
                && failures as f64 > self.checks.max_failure_rate * calls as f64
            {
                return Err(format!(
                    "watch window: {failures} of {calls} live calls failed, over the limit of {:.1}%",
                    self.checks.max_failure_rate * 100.0
                ));
            }
            if calls >= self.checks.watch_calls || Instant::now() >= until {
                return Ok((calls, failures));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Rolls back in the store (durable), then in memory, then loads the new standby if any.
    fn rollback(&mut self, component: &str, reason: &str) -> Result<VersionTag, String> {
        let name = ComponentName::new(component).map_err(|e| e.to_string())?;
        let slot = self.rules.slot(component).map_err(|e| e.to_string())?;
        let live = self
            .store
            .rollback(&name, reason)
            .map_err(|e| e.to_string())?;
        slot.rollback();
        tracing::warn!(component = %name, version = %live.version, step = "rollback", %reason, "rolled back to standby");
        let standby = self
            .store
            .component(&name)
            .ok()
            .and_then(|s| s.standby.clone());
        if let Some(standby) = standby
            && let Err(e) = slot.load(
                &self.engine,
                tag(&name, &standby),
                &self.store.payload_path(&name, &standby),
                true,
            )
        {
            tracing::error!(component = %name, error = %e, "could not load the new standby");
        }
        Ok(tag(&name, &live))
    }
}
