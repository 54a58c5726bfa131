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
mod program;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use nonstop_bundle::{ComponentName, VerifiedBundle, Verifier};
use nonstop_runtime::checks::{ShadowLimits, ShadowReport};
use nonstop_runtime::{CallCounts, CheckConfig, RuleEngine, Rules, VersionTag};
use nonstop_store::{Store, VersionEntry};
use serde::Serialize;

pub use error::AgentError;
pub use program::{PROGRAM, ProgramHost};

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
        /// Whether the watch window was still open when this report was sent (a report sent at
        /// promotion, see [`Agent::install_until_live`]); the version may still be rolled back.
        watch_open: bool,
    },
    /// The candidate went live, failed in the watch window (or an operator rolled it back),
    /// and the standby is live again.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// The candidate went live and failed in the watch window, but there was no standby to
    /// return to (a first install): it is still live. Needs an operator.
    RollbackFailed {
        /// Why it failed and why the rollback did not happen.
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

/// A step of an install before it goes live, for those who report progress as it happens (the
/// node's link to its update server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Verified and staged as the candidate.
    Staged,
    /// Checks 1 and 2 passed with this many test vectors; check 3 (shadow traffic) runs next.
    Testing {
        /// Test vectors passed.
        vectors: usize,
    },
}

/// The three channels of an install followed step by step ([`Agent::install_with_progress`]).
pub struct InstallProgress {
    /// [`Progress`] before the update goes live; closed once it is live or has ended.
    pub steps: Receiver<Progress>,
    /// The report when the update goes live; closed without one if it never does.
    pub live: Receiver<InstallReport>,
    /// The final report: after the watch window if it went live.
    pub ended: Receiver<InstallReport>,
}

/// Where an install's reports go: when it ends, and, if asked, when it goes live and at each
/// step before.
struct Replies {
    ended: Sender<InstallReport>,
    live: Option<Sender<InstallReport>>,
    progress: Option<Sender<Progress>>,
}

enum Request {
    Install(Vec<u8>, Replies),
    Rollback(String, String, Sender<Result<VersionTag, String>>),
    Follow(
        String,
        semver::Version,
        Sender<Option<Receiver<InstallReport>>>,
    ),
}

/// Handle to the agent thread. Dropping it stops the thread after the current update.
pub struct Agent {
    tx: Option<Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    fell_back: Vec<FellBack>,
}

/// A component whose live version could not be loaded at start, and that started on its standby.
#[derive(Debug, Clone, Serialize)]
pub struct FellBack {
    /// The component.
    pub component: String,
    /// The version that could not be loaded (now set aside as rejected).
    pub damaged: semver::Version,
    /// The version live instead (the standby).
    pub live: semver::Version,
    /// Why, as the store's log records it.
    pub reason: String,
}

impl Agent {
    /// Loads every installed live and standby version into `rules`, rejects a candidate left by a
    /// restart (its checks must run again from a new push), and starts the agent thread. A live
    /// version that cannot be loaded (a damaged file) is rolled back to its standby, with the
    /// reason in the store's log ([`Agent::fell_back`]); without a standby the start fails.
    pub fn start(
        store: Store,
        verifier: Verifier,
        engine: RuleEngine,
        rules: Rules,
        checks: CheckConfig,
    ) -> Result<Agent, AgentError> {
        Agent::start_with(store, verifier, engine, rules, checks, None)
    }

    /// [`Agent::start`], in a node whose program runs under a supervisor (`program`): it also
    /// takes updates of the node program itself ([`ProgramHost`]), and resumes the watch window
    /// of a program that has just taken over.
    pub fn start_with(
        mut store: Store,
        verifier: Verifier,
        engine: RuleEngine,
        rules: Rules,
        checks: CheckConfig,
        program: Option<Arc<dyn ProgramHost>>,
    ) -> Result<Agent, AgentError> {
        let mut fell_back = Vec::new();
        for slot in rules.slots() {
            let name =
                ComponentName::new(slot.component()).expect("rule component names are valid");
            let Ok(mut state) = store.component(&name).cloned() else {
                continue;
            };
            if let Some(live) = &state.live {
                let loaded = slot.load(
                    &engine,
                    tag(&name, live),
                    &store.payload_path(&name, live),
                    false,
                );
                match loaded {
                    Ok(()) => {}
                    Err(e) if state.standby.is_some() => {
                        let reason = format!(
                            "live version {} could not be loaded at start: {e}",
                            live.version
                        );
                        tracing::error!(component = %name, %reason, "starting on the standby");
                        let now_live = store.rollback(&name, &reason)?;
                        slot.load(
                            &engine,
                            tag(&name, &now_live),
                            &store.payload_path(&name, &now_live),
                            false,
                        )?;
                        fell_back.push(FellBack {
                            component: name.to_string(),
                            damaged: live.version.clone(),
                            live: now_live.version.clone(),
                            reason,
                        });
                        state = store.component(&name)?.clone();
                    }
                    Err(e) => return Err(e.into()),
                }
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
        let program_name = ComponentName::new(PROGRAM).expect("the program's name is valid");
        if let Some(cand) = store
            .component(&program_name)
            .ok()
            .and_then(|s| s.candidate.clone())
        {
            tracing::warn!(component = PROGRAM, version = %cand.version, step = "reject", "program candidate left by a restart");
            store.reject(
                &program_name,
                Some(&cand.version),
                "node restarted before the candidate program's checks finished",
            )?;
        }
        let watches = resume_watches(&store, &rules, program.as_deref());
        let (tx, rx) = channel();
        let mut worker = Worker {
            store,
            verifier,
            engine,
            rules,
            checks,
            watches,
            pending: VecDeque::new(),
            program,
        };
        let thread = std::thread::Builder::new()
            .name("nonstop-agent".into())
            .spawn(move || worker.run(rx))
            .map_err(|_| AgentError::Stopped)?;
        Ok(Agent {
            tx: Some(tx),
            thread: Some(thread),
            fell_back,
        })
    }

    /// Follows the open watch window of `component` at `version` (one resumed after a restart,
    /// or one of an install under way): the receiver gets its report when it closes. `None` when
    /// no window is open for that version.
    pub fn follow(
        &self,
        component: &str,
        version: &semver::Version,
    ) -> Result<Option<Receiver<InstallReport>>, AgentError> {
        let (tx, rx) = channel();
        self.send(Request::Follow(component.to_owned(), version.clone(), tx))?;
        rx.recv().map_err(|_| AgentError::Stopped)
    }

    /// The components that started on their standby because their live version could not be
    /// loaded.
    pub fn fell_back(&self) -> &[FellBack] {
        &self.fell_back
    }

    /// Queues a pushed bundle; the report arrives when the update has ended (after the watch
    /// window if it went live). While a watch window is open, further bundles wait for it; an
    /// operator's rollback does not.
    pub fn install(&self, bundle: Vec<u8>) -> Result<Receiver<InstallReport>, AgentError> {
        let (ended, rx) = channel();
        self.send(Request::Install(
            bundle,
            Replies {
                ended,
                live: None,
                progress: None,
            },
        ))?;
        Ok(rx)
    }

    /// Installs a bundle and reports each step as it happens: staged, testing, live, ended.
    pub fn install_with_progress(&self, bundle: Vec<u8>) -> Result<InstallProgress, AgentError> {
        let (ended, ended_rx) = channel();
        let (live, live_rx) = channel();
        let (progress, steps) = channel();
        self.send(Request::Install(
            bundle,
            Replies {
                ended,
                live: Some(live),
                progress: Some(progress),
            },
        ))?;
        Ok(InstallProgress {
            steps,
            live: live_rx,
            ended: ended_rx,
        })
    }

    /// Installs a bundle and waits until it is live (its watch window then goes on, and a
    /// failure in it still rolls it back by itself) or has ended without going live.
    pub fn install_until_live(&self, bundle: Vec<u8>) -> Result<InstallReport, AgentError> {
        let (ended, ended_rx) = channel();
        let (live, live_rx) = channel();
        self.send(Request::Install(
            bundle,
            Replies {
                ended,
                live: Some(live),
                progress: None,
            },
        ))?;
        match live_rx.recv() {
            Ok(report) => Ok(report),
            // It never went live: its one report says why.
            Err(_) => ended_rx.recv().map_err(|_| AgentError::Stopped),
        }
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

/// Loads the live and standby rule versions the store at `store_root` records, reading it without
/// its lock and changing nothing: what a candidate program does, beside the live program that
/// owns the store, so that it answers with the very rules the live one runs.
pub fn load_installed(
    store_root: &std::path::Path,
    engine: &RuleEngine,
    rules: &Rules,
) -> Result<(), AgentError> {
    for state in nonstop_store::read_status(store_root)? {
        let Ok(slot) = rules.slot(state.component.as_str()) else {
            continue;
        };
        let name = &state.component;
        if let Some(live) = &state.live {
            let path = nonstop_store::payload_path(store_root, name, live);
            slot.load(engine, tag(name, live), &path, false)?;
        }
        if let Some(standby) = &state.standby {
            let path = nonstop_store::payload_path(store_root, name, standby);
            slot.load(engine, tag(name, standby), &path, true)?;
        }
    }
    Ok(())
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

/// The watch windows a restart cut short, reopened for the time they had left (closing at once
/// if it ran out while the node was down), counting the calls made from now on. A kept window
/// whose version is no longer live is forgotten.
fn resume_watches(store: &Store, rules: &Rules, program: Option<&dyn ProgramHost>) -> Vec<Watch> {
    let mut watches = Vec::new();
    let Ok(entries) = std::fs::read_dir(store.root().join("watches")) else {
        return watches;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(component) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|_| path.extension().is_some_and(|e| e == "json"))
            .and_then(|s| ComponentName::new(s).ok())
        else {
            continue;
        };
        let kept: Option<KeptWatch> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let live = if component.as_str() == PROGRAM {
            // The program watched is the one running here, just handed the socket.
            program.map(|p| (p.running_version(), program_counts(p)))
        } else {
            rules
                .slot(component.as_str())
                .ok()
                .and_then(|slot| slot.live_counts())
                .map(|(tag, counts)| (tag.version.clone(), counts))
        };
        match (kept, live) {
            (Some(kept), Some((version, counts))) if version == kept.version => {
                let left = Duration::from_millis((kept.until_ms - now_ms()).max(0) as u64);
                tracing::info!(component = %component, version = %kept.version, left_ms = left.as_millis() as u64, "resuming the watch window a restart cut short");
                watches.push(Watch {
                    component: component.clone(),
                    version: kept.version.clone(),
                    start: counts,
                    baseline_refusal_rate: kept.baseline_refusal_rate,
                    until: Instant::now() + left,
                    report: InstallReport {
                        component: Some(component.to_string()),
                        version: Some(kept.version),
                        outcome: Outcome::Live {
                            vectors: 0,
                            shadow: None,
                            watched_calls: 0,
                            watched_failures: 0,
                            watch_open: true,
                        },
                    },
                    replies: Vec::new(),
                });
            }
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    watches
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
    /// Updates that went live and are in their watch window.
    watches: Vec<Watch>,
    /// Bundles pushed while a watch window was open; installed one at a time after it closes.
    pending: VecDeque<(Vec<u8>, Replies)>,
    /// Who runs the program's generations, in a supervised node.
    program: Option<Arc<dyn ProgramHost>>,
}

/// A newly live version under watch; its report is sent when the window closes.
struct Watch {
    component: ComponentName,
    version: semver::Version,
    /// The new version's counts when it went live.
    start: CallCounts,
    /// Share of calls the previous live version refused: refusals up to that rate are the rules,
    /// not a regression.
    baseline_refusal_rate: f64,
    until: Instant,
    report: InstallReport,
    /// Who hears how it ends: the install's caller, and whoever follows it after a restart.
    replies: Vec<Sender<InstallReport>>,
}

/// An open watch window as kept on disk (`<store>/watches/<component>.json`), so that a node
/// restarted in the middle of one resumes it.
#[derive(Debug, Serialize, serde::Deserialize)]
struct KeptWatch {
    version: semver::Version,
    /// When the window closes, milliseconds since the Unix epoch.
    until_ms: i64,
    baseline_refusal_rate: f64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn watch_file(store_root: &std::path::Path, component: &str) -> std::path::PathBuf {
    store_root.join("watches").join(format!("{component}.json"))
}

/// Keeps an open watch on disk (written whole: a temporary file renamed over the old).
fn keep_watch(store_root: &std::path::Path, w: &Watch) {
    let dir = store_root.join("watches");
    let kept = KeptWatch {
        version: w.version.clone(),
        until_ms: now_ms()
            + w.until
                .saturating_duration_since(Instant::now())
                .as_millis() as i64,
        baseline_refusal_rate: w.baseline_refusal_rate,
    };
    let path = watch_file(store_root, w.component.as_str());
    let tmp = path.with_extension("tmp");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&kept).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(component = %w.component, error = %e, "cannot keep the watch window on disk; a restart would forget it");
    }
}

fn forget_watch(store_root: &std::path::Path, component: &str) {
    let _ = std::fs::remove_file(watch_file(store_root, component));
}

enum Verdict {
    Open,
    Passed(u64, u64),
    Failed(String),
}

impl Worker {
    fn run(&mut self, rx: Receiver<Request>) {
        loop {
            let request = if self.watches.is_empty() {
                if let Some((bytes, replies)) = self.pending.pop_front() {
                    self.install(bytes, replies);
                    continue;
                }
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(Duration::from_millis(10))
            };
            match request {
                Ok(Request::Install(bytes, replies)) if self.watches.is_empty() => {
                    self.install(bytes, replies)
                }
                Ok(Request::Install(bytes, replies)) => self.pending.push_back((bytes, replies)),
                Ok(Request::Rollback(component, reason, reply)) => {
                    let result = self.rollback(&component, &reason);
                    // An operator's rollback ends the watch of that component.
                    if let Some(i) = self
                        .watches
                        .iter()
                        .position(|w| w.component.as_str() == component)
                    {
                        let mut w = self.watches.remove(i);
                        w.report.outcome = match &result {
                            Ok(_) => Outcome::RolledBack {
                                reason: reason.clone(),
                            },
                            Err(e) => Outcome::RollbackFailed {
                                reason: format!("{reason}; {e}"),
                            },
                        };
                        forget_watch(self.store.root(), &component);
                        for r in &w.replies {
                            let _ = r.send(w.report.clone());
                        }
                    }
                    let _ = reply.send(result);
                }
                Ok(Request::Follow(component, version, reply)) => {
                    let watch = self
                        .watches
                        .iter_mut()
                        .find(|w| w.component.as_str() == component && w.version == version);
                    let _ = reply.send(watch.map(|w| {
                        let (tx, rx) = channel();
                        w.replies.push(tx);
                        rx
                    }));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.poll_watches();
        }
    }

    /// Steps 1 to 4 for one bundle; the report is sent at once if the update ends here, or when
    /// its watch window closes.
    fn install(&mut self, bytes: Vec<u8>, replies: Replies) {
        let kind = nonstop_bundle::claimed_manifest(&bytes, self.verifier.limits()).map(|m| m.kind);
        if kind == Some(nonstop_bundle::ComponentKind::NodeBinary) {
            return self.install_program(&bytes, replies);
        }
        let Replies {
            ended: reply,
            live,
            progress,
        } = replies;
        // `progress` is dropped when this returns (live, or ended), which closes the caller's
        // step channel.
        let step = |p: Progress| {
            if let Some(tx) = &progress {
                let _ = tx.send(p);
            }
        };
        match self.check_and_promote(&bytes, &step) {
            Ok((report, watch_from)) => {
                let component = ComponentName::new(report.component.as_deref().unwrap_or_default());
                let slot = report
                    .component
                    .as_deref()
                    .and_then(|c| self.rules.slot(c).ok());
                match (component, slot, watch_from) {
                    (Ok(component), Some(slot), Some(start)) => {
                        let baseline_refusal_rate = slot
                            .standby_counts()
                            .filter(|c| c.calls > 0)
                            .map_or(0.0, |c| c.refusals as f64 / c.calls as f64);
                        self.watches.push(Watch {
                            component,
                            version: report
                                .version
                                .clone()
                                .unwrap_or_else(|| semver::Version::new(0, 0, 0)),
                            start,
                            baseline_refusal_rate,
                            until: Instant::now() + Duration::from_secs(self.checks.watch_secs),
                            report: report.clone(),
                            replies: vec![reply],
                        });
                        keep_watch(self.store.root(), self.watches.last().expect("just pushed"));
                        if let Some(live) = live {
                            let _ = live.send(report);
                        }
                    }
                    _ => {
                        let mut report = report;
                        if let Outcome::Live { watch_open, .. } = &mut report.outcome {
                            *watch_open = false;
                        }
                        log_end(&report);
                        let _ = reply.send(report);
                    }
                }
            }
            Err(report) => {
                log_end(&report);
                let _ = reply.send(*report);
            }
        }
    }

    /// Steps 1 to 4. `Ok` with the new live version's counts when it went live (the watch starts
    /// from them); `Err` with the report of a refused or rejected update.
    fn check_and_promote(
        &mut self,
        bytes: &[u8],
        step: &dyn Fn(Progress),
    ) -> Result<(InstallReport, Option<CallCounts>), Box<InstallReport>> {
        let named = nonstop_bundle::claimed_manifest(bytes, self.verifier.limits());
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
            Box::new(report)
        };
        // Step 1: open the bundle against this store's live version.
        let live = named
            .as_ref()
            .and_then(|m| self.store.component(&m.component).ok())
            .and_then(|s| s.live.as_ref())
            .map(|e| e.version.clone());
        let bundle = self
            .verifier
            .open(bytes, live.as_ref())
            .map_err(|e| refuse(e.to_string(), report.clone()))?;
        let m = bundle.manifest().clone();
        let name = m.component.clone();
        let rules = self.rules.clone();
        let slot = rules
            .slot(name.as_str())
            .map_err(|e| refuse(e.to_string(), report.clone()))?;
        // Step 2: stage the candidate beside the live version.
        let entry = self
            .store
            .stage(&bundle)
            .map_err(|e| refuse(e.to_string(), report.clone()))?;
        tracing::info!(component = %name, version = %m.version, step = "stage", "candidate staged");
        step(Progress::Staged);
        let version = m.version.clone();
        let reject = |worker: &mut Worker, reason: String, mut report: InstallReport| {
            tracing::warn!(component = %name, version = %version, step = "reject", %reason, "candidate rejected");
            slot.drop_candidate();
            if let Err(e) = worker.store.reject(&name, Some(&version), &reason) {
                tracing::error!(component = %name, error = %e, "could not record the rejection");
            }
            report.outcome = Outcome::Rejected { reason };
            Box::new(report)
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
            Err(f) => return Err(reject(self, f.to_string(), report)),
        };
        tracing::info!(component = %name, version = %version, step = "check", vectors, "checks 1 and 2 passed");
        step(Progress::Testing { vectors });
        // A bundle may ask for more shadow calls or a tighter latency ratio, never for less.
        let limits = ShadowLimits {
            calls: m
                .checks
                .shadow
                .as_ref()
                .map_or(0, |s| s.calls)
                .max(self.checks.shadow_calls),
            timeout: Duration::from_secs(self.checks.shadow_timeout_secs),
            max_latency_ratio: m
                .checks
                .shadow
                .as_ref()
                .map_or(f64::INFINITY, |s| s.max_latency_ratio)
                .min(self.checks.max_latency_ratio),
            max_new_refusal_rate: self.checks.max_new_refusal_rate,
            idle: Duration::from_secs(self.checks.shadow_idle_secs),
            replay: m
                .checks
                .test_vectors
                .iter()
                .map(|v| v.input.clone())
                .collect(),
        };
        let shadow = match slot.shadow_candidate(&limits) {
            Ok(s) => s,
            Err(f) => return Err(reject(self, f.to_string(), report)),
        };
        if let Some(s) = &shadow {
            tracing::info!(component = %name, version = %version, step = "shadow", calls = s.calls, replayed = s.replayed, differences = s.differences, latency_ratio = s.latency_ratio, "check 3 passed");
        }
        // Step 4: promote: the store first (durable), then one pointer swap in memory.
        if let Err(e) = self.store.promote(&name, Some(&version)) {
            return Err(reject(self, format!("promotion failed: {e}"), report));
        }
        slot.promote_candidate();
        tracing::info!(component = %name, version = %version, step = "promote", "candidate is live; watch window open");
        report.outcome = Outcome::Live {
            vectors,
            shadow,
            watched_calls: 0,
            watched_failures: 0,
            watch_open: true,
        };
        Ok((report, slot.live_counts().map(|(_, c)| c)))
    }

    /// Steps 1 to 4 for a program bundle. Its watch window (step 5) runs in the new program,
    /// which resumes it from the store when it takes over; this one's report ends at the
    /// handover, saying the window is open.
    fn install_program(&mut self, bytes: &[u8], replies: Replies) {
        let step = |p: Progress| {
            if let Some(tx) = &replies.progress {
                let _ = tx.send(p);
            }
        };
        let report = match self.check_and_hand_over(bytes, &step) {
            Ok(report) => {
                if let Some(live) = &replies.live {
                    let _ = live.send(report.clone());
                }
                report
            }
            Err(report) => *report,
        };
        log_end(&report);
        let _ = replies.ended.send(report);
    }

    fn check_and_hand_over(
        &mut self,
        bytes: &[u8],
        step: &dyn Fn(Progress),
    ) -> Result<InstallReport, Box<InstallReport>> {
        let name = ComponentName::new(PROGRAM).expect("the program's name is valid");
        let mut report = InstallReport {
            component: Some(PROGRAM.to_owned()),
            version: nonstop_bundle::claimed_manifest(bytes, self.verifier.limits())
                .map(|m| m.version),
            outcome: Outcome::Refused {
                reason: String::new(),
            },
        };
        let refuse = |reason: String, mut report: InstallReport| {
            tracing::warn!(component = PROGRAM, version = ?report.version, step = "verify", %reason, "program bundle refused");
            report.outcome = Outcome::Refused { reason };
            Box::new(report)
        };
        let Some(host) = self.program.clone() else {
            return Err(refuse(
                "this node runs without a supervisor, so its program cannot be replaced while it \
                 serves: start it with `nonstop node --supervise` (as deploy/systemd does)"
                    .into(),
                report,
            ));
        };
        // Step 1: verify, against the program running here (newer only, or a signed rollback).
        let running = host.running_version();
        let bundle = self
            .verifier
            .open(bytes, Some(&running))
            .map_err(|e| refuse(e.to_string(), report.clone()))?;
        let m = bundle.manifest().clone();
        if m.component.as_str() != PROGRAM {
            return Err(refuse(
                format!(
                    "a node-binary bundle must be for component `{PROGRAM}`, not `{}`",
                    m.component
                ),
                report,
            ));
        }
        let here = nonstop_bundle::current_target();
        if m.target.as_deref() != Some(here.as_str()) {
            return Err(refuse(
                format!(
                    "the program is built for {}, and this node runs on {here}",
                    m.target.as_deref().unwrap_or("no named platform")
                ),
                report,
            ));
        }
        // Step 2: stage the copy beside the running program.
        let entry = self
            .store
            .stage(&bundle)
            .map_err(|e| refuse(e.to_string(), report.clone()))?;
        tracing::info!(component = PROGRAM, version = %m.version, step = "stage", "program candidate staged");
        step(Progress::Staged);
        let version = m.version.clone();
        let reject = |worker: &mut Worker, reason: String, mut report: InstallReport| {
            tracing::warn!(component = PROGRAM, version = %version, step = "reject", %reason, "program candidate rejected");
            host.discard_candidate();
            if let Err(e) = worker.store.reject(&name, Some(&version), &reason) {
                tracing::error!(component = PROGRAM, error = %e, "could not record the rejection");
            }
            report.outcome = Outcome::Rejected { reason };
            Box::new(report)
        };
        // Step 3: run the copy where it serves nobody, and test its running state.
        let payload = self.store.payload_path(&name, &entry);
        if let Err(reason) = host.start_candidate(&payload, &version) {
            return Err(reject(self, reason, report));
        }
        step(Progress::Testing { vectors: 0 });
        let checked = match host.test_candidate() {
            Ok(checked) => checked,
            Err(reason) => return Err(reject(self, reason, report)),
        };
        tracing::info!(component = PROGRAM, version = %version, step = "check", %checked, "program candidate passed its checks");
        // Step 4: official in the store (the running program becomes the standby), the watch
        // window kept for the new program to resume, then the socket handed over.
        if let Err(e) = self.store.promote(&name, Some(&version)) {
            return Err(reject(self, format!("promotion failed: {e}"), report));
        }
        let watch = Watch {
            component: name.clone(),
            version: version.clone(),
            start: CallCounts::default(),
            baseline_refusal_rate: 0.0,
            until: Instant::now() + Duration::from_secs(self.checks.watch_secs),
            report: report.clone(),
            replies: Vec::new(),
        };
        keep_watch(self.store.root(), &watch);
        if let Err(e) = host.hand_over() {
            let reason = format!("the handover failed: {e}");
            forget_watch(self.store.root(), PROGRAM);
            let back = self
                .store
                .rollback(&name, &reason)
                .map(|_| ())
                .or_else(|_| self.store.set_aside_live(&name, &reason).map(|_| ()));
            if let Err(e) = back {
                tracing::error!(component = PROGRAM, error = %e, "could not record the failed handover");
            }
            host.discard_candidate();
            report.outcome = Outcome::RolledBack { reason };
            return Err(Box::new(report));
        }
        tracing::info!(component = PROGRAM, version = %version, step = "promote", "the new program took over; its watch window runs there");
        report.outcome = Outcome::Live {
            vectors: 0,
            shadow: None,
            watched_calls: 0,
            watched_failures: 0,
            watch_open: true,
        };
        Ok(report)
    }

    /// Step 5: judges every open watch window and closes those that are done.
    fn poll_watches(&mut self) {
        let mut i = 0;
        while i < self.watches.len() {
            let verdict = self.judge(&self.watches[i]);
            if matches!(verdict, Verdict::Open) {
                i += 1;
                continue;
            }
            let mut w = self.watches.remove(i);
            match verdict {
                Verdict::Passed(calls, failures) => {
                    if let Outcome::Live {
                        watched_calls,
                        watched_failures,
                        watch_open,
                        ..
                    } = &mut w.report.outcome
                    {
                        *watched_calls = calls;
                        *watched_failures = failures;
                        *watch_open = false;
                    }
                }
                Verdict::Failed(reason) => {
                    w.report.outcome = match self.rollback(w.component.as_str(), &reason) {
                        Ok(_) => Outcome::RolledBack { reason },
                        Err(e) => Outcome::RollbackFailed {
                            reason: format!("{reason}; the rollback failed: {e}"),
                        },
                    };
                }
                Verdict::Open => unreachable!("open watches are kept above"),
            }
            if w.component.as_str() == PROGRAM && matches!(w.report.outcome, Outcome::Live { .. }) {
                self.settle_program();
            }
            log_end(&w.report);
            forget_watch(self.store.root(), w.component.as_str());
            for r in &w.replies {
                let _ = r.send(w.report.clone());
            }
        }
    }

    fn judge(&self, w: &Watch) -> Verdict {
        let now = if w.component.as_str() == PROGRAM {
            match &self.program {
                Some(p) => program_counts(p.as_ref()),
                None => return Verdict::Passed(0, 0),
            }
        } else {
            let Ok(slot) = self.rules.slot(w.component.as_str()) else {
                return Verdict::Failed("the component has no slot".into());
            };
            let Some((tag, now)) = slot.live_counts() else {
                return Verdict::Failed("the live version disappeared".into());
            };
            if tag.version != w.version {
                // Replaced by an operator's rollback meanwhile.
                return Verdict::Passed(0, 0);
            }
            now
        };
        let calls = now.calls - w.start.calls;
        let failures = now.failures - w.start.failures;
        let refusals = now.refusals - w.start.refusals;
        let excess_refusals = (refusals as f64 - w.baseline_refusal_rate * calls as f64).max(0.0);
        let over = calls > 0
            && (failures as f64 > self.checks.max_failure_rate * calls as f64
                || excess_refusals > self.checks.max_new_refusal_rate * calls as f64);
        let closing = calls >= self.checks.watch_calls || Instant::now() >= w.until;
        // Judged early once there are enough calls; judged on whatever there is at the close.
        if over && (calls >= self.checks.min_calls_for_rate || closing) {
            return Verdict::Failed(format!(
                "watch window: {failures} failed and {refusals} refused of {calls} live calls \
                 (the previous version refused {:.1}%), over the limit of {:.1}% failed or {:.1}% \
                 more refused",
                w.baseline_refusal_rate * 100.0,
                self.checks.max_failure_rate * 100.0,
                self.checks.max_new_refusal_rate * 100.0
            ));
        }
        if closing {
            Verdict::Passed(calls, failures)
        } else {
            Verdict::Open
        }
    }

    /// Rolls back in the store (durable), then in memory, then loads the new standby if any.
    fn rollback(&mut self, component: &str, reason: &str) -> Result<VersionTag, String> {
        if component == PROGRAM {
            return self.rollback_program(reason);
        }
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

impl Worker {
    /// Puts the standby program back: recorded in the store first (the standby live, or, with
    /// none, the program installed on disk), then the supervisor starts it and it takes over
    /// from this process, which then exits.
    fn rollback_program(&mut self, reason: &str) -> Result<VersionTag, String> {
        let Some(host) = self.program.clone() else {
            return Err("this node runs without a supervisor; its program is not replaced".into());
        };
        let name = ComponentName::new(PROGRAM).expect("the program's name is valid");
        let tag = match self.store.rollback(&name, reason) {
            Ok(standby) => tag(&name, &standby),
            Err(nonstop_store::StoreError::NoStandby { .. }) => {
                self.store
                    .set_aside_live(&name, reason)
                    .map_err(|e| e.to_string())?;
                // The program installed on disk (the supervisor's own), from no bundle.
                VersionTag {
                    component: PROGRAM.into(),
                    version: semver::Version::new(0, 0, 0),
                    digest: nonstop_bundle::Digest([0; 32]),
                }
            }
            Err(e) => return Err(e.to_string()),
        };
        forget_watch(self.store.root(), PROGRAM);
        tracing::warn!(component = PROGRAM, %reason, step = "rollback", "putting the standby program back");
        host.replace_with_live(reason)?;
        Ok(tag)
    }
}

impl Worker {
    /// After a new program's healthy watch window: its contract migrations, which retire the
    /// standby program (it relied on what they remove), are recorded in the store's log.
    fn settle_program(&mut self) {
        let Some(host) = self.program.clone() else {
            return;
        };
        match host.settled() {
            Ok(None) => {}
            Ok(Some(done)) => {
                let name = ComponentName::new(PROGRAM).expect("the program's name is valid");
                match self.store.retire_standby(&name, &done) {
                    Ok(retired) => {
                        tracing::warn!(component = PROGRAM, retired = ?retired.map(|e| e.version), %done, "the standby program is retired: it cannot come back")
                    }
                    Err(e) => {
                        tracing::error!(component = PROGRAM, error = %e, "could not record the retired standby program")
                    }
                }
            }
            Err(e) => {
                tracing::error!(component = PROGRAM, error = %e, "the program's contract migrations failed; the standby program stays")
            }
        }
    }
}

/// A program's answered and failed requests, as call counts for the watch window.
fn program_counts(p: &dyn ProgramHost) -> CallCounts {
    let (calls, failures) = p.counts();
    CallCounts {
        calls,
        failures,
        refusals: 0,
    }
}

fn log_end(report: &InstallReport) {
    tracing::info!(component = ?report.component, version = ?report.version, outcome = ?report.outcome, "update ended");
}
