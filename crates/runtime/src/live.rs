//! The live handle of a component: the version serving live traffic, the standby that answers when
//! the live version fails a call, and the candidate under test, which `call` never touches.
//!
//! Every call runs entirely on one version: it loads the live pointer once and keeps that version
//! alive until it returns. A swap is one atomic pointer store; calls in flight finish on the
//! version they started on, and the old version is dropped when its last call ends.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arc_swap::ArcSwapOption;

use crate::{CallFailure, LoadedVersion, RuleKind, RuntimeError, VersionTag};

/// An answer and the version that computed it.
#[derive(Debug, Clone)]
pub struct Answer<O> {
    /// The rule's result.
    pub output: O,
    /// The version that produced it (record it with the decision).
    pub version: Arc<VersionTag>,
    /// Set when the live version failed this call and the standby answered instead.
    pub live_failure: Option<CallFailure>,
}

/// A live call's input and answer, copied for the candidate's shadow check.
pub(crate) struct ShadowSample<R: RuleKind> {
    pub input: R::Input,
    pub live_output: R::Output,
}

/// The live handle of one component.
pub struct LiveModule<R: RuleKind> {
    live: ArcSwapOption<LoadedVersion<R>>,
    standby: ArcSwapOption<LoadedVersion<R>>,
    candidate: ArcSwapOption<LoadedVersion<R>>,
    shadow: ArcSwapOption<SyncSender<ShadowSample<R>>>,
}

impl<R: RuleKind> Default for LiveModule<R> {
    fn default() -> Self {
        LiveModule {
            live: ArcSwapOption::empty(),
            standby: ArcSwapOption::empty(),
            candidate: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
        }
    }
}

impl<R: RuleKind> LiveModule<R> {
    /// A handle with nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls the live version. If it fails (trap, deadline, memory, broken invariant) and a
    /// standby is loaded, the standby answers and the failure is reported with the answer.
    pub fn call(&self, input: &R::Input) -> Result<Answer<R::Output>, RuntimeError> {
        let live = self.live.load();
        let Some(live) = live.as_ref() else {
            return Err(RuntimeError::NotLoaded(R::COMPONENT.to_owned()));
        };
        match live.call(input) {
            Ok(output) => {
                if let Some(tap) = self.shadow.load().as_ref() {
                    // Never blocks: when the checker is behind, the sample is skipped.
                    let _ = tap.try_send(ShadowSample {
                        input: input.clone(),
                        live_output: output.clone(),
                    });
                }
                Ok(Answer {
                    output,
                    version: live.tag().clone(),
                    live_failure: None,
                })
            }
            Err(failure) => {
                tracing::warn!(component = R::COMPONENT, version = %live.tag().version, %failure, "live rule call failed");
                let standby = self.standby.load();
                if let Some(standby) = standby.as_ref()
                    && let Ok(output) = standby.call(input)
                {
                    return Ok(Answer {
                        output,
                        version: standby.tag().clone(),
                        live_failure: Some(failure),
                    });
                }
                Err(RuntimeError::Call {
                    tag: live.tag().clone(),
                    failure,
                })
            }
        }
    }

    /// The live version, if any.
    pub fn live(&self) -> Option<Arc<LoadedVersion<R>>> {
        self.live.load_full()
    }

    /// The standby version, if loaded.
    pub fn standby(&self) -> Option<Arc<LoadedVersion<R>>> {
        self.standby.load_full()
    }

    /// The candidate under test, if any.
    pub fn candidate(&self) -> Option<Arc<LoadedVersion<R>>> {
        self.candidate.load_full()
    }

    /// Makes `version` live at once (start-up, tests, benchmarks); the old live becomes standby.
    /// The standby is set first, so a call that fails on the new version always has the old one
    /// to fall back to. Only the agent's thread changes the handle, so the two stores do not race.
    pub fn swap_in(&self, version: Arc<LoadedVersion<R>>) {
        self.standby.store(self.live.load_full());
        self.live.store(Some(version));
    }

    /// Loads `version` as the standby (start-up: the store's standby).
    pub fn set_standby(&self, version: Option<Arc<LoadedVersion<R>>>) {
        self.standby.store(version);
    }

    /// Holds `version` as the candidate. It serves no live traffic.
    pub fn set_candidate(&self, version: Option<Arc<LoadedVersion<R>>>) {
        self.candidate.store(version);
    }

    /// The candidate becomes live in one atomic pointer store; the old live becomes standby.
    pub fn promote_candidate(&self) -> Option<Arc<VersionTag>> {
        let cand = self.candidate.swap(None)?;
        let tag = cand.tag().clone();
        self.swap_in(cand);
        Some(tag)
    }

    /// The standby becomes live again; the failing version is dropped when its last call ends.
    /// The standby slot keeps pointing at the same version, so a call still running on the
    /// failing one can fall back; the agent then loads the next standby, if the store has one.
    pub fn rollback(&self) -> Option<Arc<VersionTag>> {
        let standby = self.standby.load_full()?;
        let tag = standby.tag().clone();
        self.live.store(Some(standby));
        Some(tag)
    }

    /// Starts copying live calls for a shadow check; at most `capacity` wait unprocessed.
    pub(crate) fn tap(&self, capacity: usize) -> Receiver<ShadowSample<R>> {
        let (tx, rx) = sync_channel(capacity);
        self.shadow.store(Some(Arc::new(tx)));
        rx
    }

    /// Stops copying live calls.
    pub(crate) fn untap(&self) {
        self.shadow.store(None);
    }
}
