//! The rule slots of a node, seen without their types: what the update agent needs to load,
//! check, promote and roll back any component by name.

use std::path::Path;
use std::sync::Arc;

use nonstop_bundle::CandidateChecks;

use crate::checks::{self, CheckFailure, ShadowLimits, ShadowReport};
use crate::rules::{Fees, Insurance, Quota, Triage};
use crate::{
    CallCounts, LiveModule, LoadedVersion, RuleEngine, RuleKind, RuntimeError, VersionTag,
};

/// One component's live handle, as the agent drives it.
pub trait RuleSlot: Send + Sync {
    /// Component name, e.g. `fees`.
    fn component(&self) -> &'static str;
    /// The interface its versions must export.
    fn interface(&self) -> &'static str;
    /// The live version, if any.
    fn live_tag(&self) -> Option<Arc<VersionTag>>;
    /// The standby version's call counts (its record while it was live).
    fn standby_counts(&self) -> Option<CallCounts>;
    /// The live version's call counts (for the watch window).
    fn live_counts(&self) -> Option<(Arc<VersionTag>, CallCounts)>;
    /// Loads an installed version as live (`standby == false`) or standby, at start-up.
    fn load(
        &self,
        engine: &RuleEngine,
        tag: VersionTag,
        payload: &Path,
        standby: bool,
    ) -> Result<(), RuntimeError>;
    /// Checks 1 and 2 on a staged candidate; on success it is held as the candidate.
    fn check_candidate(
        &self,
        engine: &RuleEngine,
        tag: VersionTag,
        payload: &Path,
        checks: &CandidateChecks,
        min_vectors: usize,
    ) -> Result<usize, CheckFailure>;
    /// Check 3 on the held candidate; `None` when there is no live traffic source (first install).
    fn shadow_candidate(&self, limits: &ShadowLimits)
    -> Result<Option<ShadowReport>, CheckFailure>;
    /// The held candidate becomes live; the old live becomes standby.
    fn promote_candidate(&self) -> Option<Arc<VersionTag>>;
    /// Forgets the held candidate.
    fn drop_candidate(&self);
    /// The standby becomes live again.
    fn rollback(&self) -> Option<Arc<VersionTag>>;
    /// Calls the live version with a JSON input (the CLI and tests).
    fn call_json(
        &self,
        input: serde_json::Value,
    ) -> Result<(serde_json::Value, Arc<VersionTag>), String>;
}

impl<R: RuleKind> RuleSlot for LiveModule<R> {
    fn component(&self) -> &'static str {
        R::COMPONENT
    }

    fn interface(&self) -> &'static str {
        R::INTERFACE
    }

    fn live_tag(&self) -> Option<Arc<VersionTag>> {
        self.live().map(|v| v.tag().clone())
    }

    fn standby_counts(&self) -> Option<CallCounts> {
        self.standby().map(|v| v.stats().counts())
    }

    fn live_counts(&self) -> Option<(Arc<VersionTag>, CallCounts)> {
        self.live().map(|v| (v.tag().clone(), v.stats().counts()))
    }

    fn load(
        &self,
        engine: &RuleEngine,
        tag: VersionTag,
        payload: &Path,
        standby: bool,
    ) -> Result<(), RuntimeError> {
        // Already there (a program that took over loads what it loaded as a candidate again):
        // nothing to do, and its counts go on.
        let held = if standby { self.standby() } else { self.live() };
        if held.is_some_and(|v| **v.tag() == tag) {
            return Ok(());
        }
        let component = engine.load(payload, &tag.digest)?;
        let version = Arc::new(LoadedVersion::<R>::new(engine, tag, &component, &[])?);
        if standby {
            self.set_standby(Some(version));
        } else {
            let old_standby = self.standby();
            self.swap_in(version);
            self.set_standby(old_standby);
        }
        Ok(())
    }

    fn check_candidate(
        &self,
        engine: &RuleEngine,
        tag: VersionTag,
        payload: &Path,
        checks: &CandidateChecks,
        min_vectors: usize,
    ) -> Result<usize, CheckFailure> {
        let component = engine
            .load(payload, &tag.digest)
            .map_err(CheckFailure::Load)?;
        let version = LoadedVersion::<R>::new(engine, tag, &component, &checks.exports)
            .map_err(CheckFailure::Load)?;
        let passed = checks::run_vectors(&version, &checks.test_vectors, min_vectors)?;
        self.set_candidate(Some(Arc::new(version)));
        Ok(passed)
    }

    fn shadow_candidate(
        &self,
        limits: &ShadowLimits,
    ) -> Result<Option<ShadowReport>, CheckFailure> {
        let Some(candidate) = self.candidate() else {
            return Ok(None);
        };
        if self.live().is_none() || limits.calls == 0 {
            return Ok(None);
        }
        checks::shadow(self, &candidate, limits).map(Some)
    }

    fn promote_candidate(&self) -> Option<Arc<VersionTag>> {
        LiveModule::promote_candidate(self)
    }

    fn drop_candidate(&self) {
        self.set_candidate(None);
    }

    fn rollback(&self) -> Option<Arc<VersionTag>> {
        LiveModule::rollback(self)
    }

    fn call_json(
        &self,
        input: serde_json::Value,
    ) -> Result<(serde_json::Value, Arc<VersionTag>), String> {
        let input: R::Input = serde_json::from_value(input)
            .map_err(|e| format!("input does not fit {}: {e}", R::FUNCTION))?;
        let answer = self.call(&input).map_err(|e| e.to_string())?;
        let output = serde_json::to_value(&answer.output).map_err(|e| e.to_string())?;
        Ok((output, answer.version))
    }
}

/// The live handles of a node's four rule components.
#[derive(Default, Clone)]
pub struct Rules {
    /// Registration fees.
    pub fees: Arc<LiveModule<Fees>>,
    /// Insurance split.
    pub insurance: Arc<LiveModule<Insurance>>,
    /// Triage order.
    pub triage: Arc<LiveModule<Triage>>,
    /// Registration quota.
    pub quota: Arc<LiveModule<Quota>>,
}

impl Rules {
    /// Empty handles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every slot.
    pub fn slots(&self) -> [&dyn RuleSlot; 4] {
        [&*self.fees, &*self.insurance, &*self.triage, &*self.quota]
    }

    /// The slot of `component`.
    pub fn slot(&self, component: &str) -> Result<&dyn RuleSlot, RuntimeError> {
        self.slots()
            .into_iter()
            .find(|s| s.component() == component)
            .ok_or_else(|| RuntimeError::UnknownComponent(component.to_owned()))
    }
}
