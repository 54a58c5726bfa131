//! Why a store operation was refused or failed. An operation that returns an error did not happen:
//! the state record is as it was (files it had begun to write are removed then or on next open).

use std::path::PathBuf;

/// Errors of the version store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store, or its components directory, can be written by others than its owner: whoever
    /// can write there could change the code this node runs.
    #[error(
        "{path} is writable by others than its owner (mode {mode:o}): whoever can write there \
         could change the rules this node runs; run `chmod go-w {path}`"
    )]
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another process holds the store's lock file.
    #[error("store {path} is in use by another process{}: only one process may change a store at a time", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written in the lock file by its holder, if readable.
        holder: Option<u32>,
    },

    /// The directory is not a version store (no `nonstop-store.json`); it is never touched.
    #[error("{0} is not a nonstop version store (it has no nonstop-store.json)")]
    NotAStore(PathBuf),

    /// A line of a transition log does not parse.
    #[error("transition log {path} is damaged at line {line}: {detail}")]
    LogDamaged {
        /// The log file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },

    /// A file system operation failed (a full disk, permissions, ...).
    #[error("{action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: String,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The store's files contradict themselves in a way recovery cannot mend.
    #[error("store is damaged for component {component}: {detail}")]
    Damaged {
        /// The component.
        component: String,
        /// What is wrong.
        detail: String,
    },

    /// The component has never been staged in this store.
    #[error("component {0} is not in the store")]
    UnknownComponent(String),

    /// Promote or reject was asked but the component has no candidate.
    #[error("component {component} has no candidate")]
    NoCandidate {
        /// The component.
        component: String,
    },

    /// The candidate is not the version the caller meant.
    #[error("component {component}'s candidate is {candidate}, not {expected}")]
    CandidateMismatch {
        /// The component.
        component: String,
        /// The version the caller named.
        expected: semver::Version,
        /// The actual candidate.
        candidate: semver::Version,
    },

    /// Staging was asked while another candidate is under test.
    #[error(
        "component {component} already has candidate {version} under test: promote or reject it first"
    )]
    CandidatePresent {
        /// The component.
        component: String,
        /// The candidate's version.
        version: semver::Version,
    },

    /// Rollback was asked but there is no standby version to return to.
    #[error("component {component} has no standby version to roll back to")]
    NoStandby {
        /// The component.
        component: String,
    },

    /// The version is already in the store in some role.
    #[error("component {component} already holds version {version} as {role}")]
    VersionPresent {
        /// The component.
        component: String,
        /// The version.
        version: semver::Version,
        /// Its role there.
        role: &'static str,
    },

    /// The bundle may not replace the live version (not newer, not a rollback).
    #[error(transparent)]
    Bundle(#[from] nonstop_bundle::BundleError),
}

impl StoreError {
    pub(crate) fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}
