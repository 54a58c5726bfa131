//! The state record of one component (which version is live, candidate, standby) and the entries
//! of its append-only transition log. The record is replaced only by atomic rename; it also carries
//! the log entries of the transition that produced it, so a crash between writing the record and
//! appending to the log is mended on the next open.

use std::fmt;

use nonstop_bundle::{ComponentKind, ComponentName, Digest, FileName};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Version of the state record's layout.
pub(crate) const STATE_FORMAT: u32 = 1;

/// Where one version of a component stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Not in the store (before staging, after garbage collection).
    Absent,
    /// Staged copy under test: never executed on live traffic (the patent's "test version").
    Candidate,
    /// Serving live traffic (the patent's "official version").
    Live,
    /// The previous live version, kept for instant rollback (the patent's "original marked test").
    Standby,
    /// An older live version kept on disk until garbage collection.
    Retired,
    /// Refused or rolled back, kept aside with the reason.
    Rejected,
}

impl Role {
    /// The word operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Absent => "absent",
            Role::Candidate => "candidate",
            Role::Live => "live",
            Role::Standby => "standby",
            Role::Retired => "retired",
            Role::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One installed version of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionEntry {
    /// The version.
    pub version: semver::Version,
    /// Digest of its payload file.
    pub digest: Digest,
    /// Its payload file's name in the version directory.
    pub file: FileName,
    /// Kind of content.
    pub kind: ComponentKind,
    /// When it was staged.
    #[serde(with = "time::serde::rfc3339")]
    pub staged_at: OffsetDateTime,
}

/// A version set aside by reject or rollback, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedEntry {
    /// The version as it was installed.
    pub entry: VersionEntry,
    /// Directory name under `rejected/` (a version may be rejected more than once).
    pub dir: String,
    /// Why it was set aside.
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The state record of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentState {
    /// Layout version of this record.
    pub format: u32,
    /// The component.
    pub component: ComponentName,
    /// Number of transitions so far; the log's last entry carries the same number.
    pub seq: u64,
    /// The version serving live traffic.
    pub live: Option<VersionEntry>,
    /// The version under test, never executed on live traffic.
    pub candidate: Option<VersionEntry>,
    /// The previous live version, ready for rollback.
    pub standby: Option<VersionEntry>,
    /// Older live versions, newest first, kept until garbage collection.
    pub retired: Vec<VersionEntry>,
    /// Versions set aside, newest first, kept until garbage collection.
    pub rejected: Vec<RejectedEntry>,
    /// The log entries of the transition that produced this record.
    pub last: Vec<LogEntry>,
}

impl ComponentState {
    pub(crate) fn empty(component: ComponentName) -> Self {
        ComponentState {
            format: STATE_FORMAT,
            component,
            seq: 0,
            live: None,
            candidate: None,
            standby: None,
            retired: Vec::new(),
            rejected: Vec::new(),
            last: Vec::new(),
        }
    }

    /// The role of `version` in this component, if it is installed.
    pub fn role_of(&self, version: &semver::Version) -> Option<Role> {
        let is = |e: &Option<VersionEntry>| e.as_ref().is_some_and(|e| &e.version == version);
        if is(&self.live) {
            Some(Role::Live)
        } else if is(&self.candidate) {
            Some(Role::Candidate)
        } else if is(&self.standby) {
            Some(Role::Standby)
        } else if self.retired.iter().any(|e| &e.version == version) {
            Some(Role::Retired)
        } else {
            None
        }
    }

    /// Every installed version (not rejected) with its role: the directories under `versions/`.
    pub fn installed(&self) -> impl Iterator<Item = (Role, &VersionEntry)> {
        [
            (Role::Live, &self.live),
            (Role::Candidate, &self.candidate),
            (Role::Standby, &self.standby),
        ]
        .into_iter()
        .filter_map(|(role, e)| e.as_ref().map(|e| (role, e)))
        .chain(self.retired.iter().map(|e| (Role::Retired, e)))
    }
}

/// One line of a component's transition log: a version moving from one role to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// The transition's number; all moves of one transition share it.
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The component.
    pub component: ComponentName,
    /// The operation: stage, promote, reject, rollback, gc.
    pub action: String,
    /// The version that moved.
    pub version: semver::Version,
    /// Its payload digest.
    pub digest: Digest,
    /// Role before.
    pub from: Role,
    /// Role after.
    pub to: Role,
    /// Why, for reject and rollback; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
