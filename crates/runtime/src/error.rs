//! What can go wrong loading, checking or calling a rule module. A failed call fails that one call
//! (the live handle then answers from the standby, if one is loaded); it never fails the process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::VersionTag;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be built with the configuration.
    #[error("cannot build the WebAssembly engine: {0}")]
    Engine(String),

    /// The payload is not a valid WebAssembly component.
    #[error("component does not compile: {0}")]
    Compile(String),

    /// The component does not export the interface its component name requires.
    #[error("component does not export {expected} (it exports: {found})")]
    WrongInterface {
        /// The interface required.
        expected: String,
        /// What it exports, comma-separated.
        found: String,
    },

    /// The component exports the interface with the wrong types, or imports what the host does
    /// not grant.
    #[error("component does not fit {interface}: {detail}")]
    Incompatible {
        /// The interface required.
        interface: String,
        /// wasmtime's explanation.
        detail: String,
    },

    /// The component name has no rule interface on this node.
    #[error("no rule interface is known for component {0} (known: fees, insurance, triage, quota)")]
    UnknownComponent(String),

    /// A call failed.
    #[error("{tag}: {failure}")]
    Call {
        /// The version that failed.
        tag: Arc<VersionTag>,
        /// How.
        failure: CallFailure,
    },

    /// No version of the component is loaded.
    #[error("component {0} has no live version loaded")]
    NotLoaded(String),

    /// Reading a payload failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A payload's content is not the content its version was installed with.
    #[error("{path} does not match its digest: expected {expected}, found {found}")]
    DigestMismatch {
        /// The payload.
        path: PathBuf,
        /// The digest the store recorded.
        expected: String,
        /// The digest of what is there.
        found: String,
    },
}

/// How one rule call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    /// The guest trapped (a panic, an unreachable, a bad memory access...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call used up its fuel (its instruction budget).
    #[error("ran out of its fuel budget of {0} units")]
    Fuel(u64),
    /// The call ran past its deadline and was interrupted.
    #[error("ran past its deadline of {0} ms and was stopped")]
    Deadline(u64),
    /// The guest tried to grow its memory past the limit.
    #[error("exceeded its memory limit: {0}")]
    Memory(String),
    /// The answer broke one of the host's invariants.
    #[error("broke an invariant: {0}")]
    Invariant(String),
    /// A fresh instance could not be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}
