//! Every way a root of trust or a signed statement can be refused. Each variant names the rule
//! that was broken and the values involved, so the node's status and the server's audit can say
//! exactly why.

use nonstop_bundle::KeyId;

/// Why a root or a statement was refused, or could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The document is not a signed nonstop document of the expected kind.
    #[error("{what} is not valid: {reason}")]
    Invalid {
        /// `root` or `timestamp statement`.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A root must follow the current one by exactly one version: a root cannot be skipped (the
    /// keys that sign the next one are named by the one before) nor replayed.
    #[error("root version {found} cannot follow root version {current}: the next root is version {}", current + 1)]
    RootVersion {
        /// The version this holder trusts now.
        current: u64,
        /// The version offered.
        found: u64,
    },

    /// Too few of the keys a role names signed the document.
    #[error(
        "{what} has {valid} valid signature(s) by the {role} keys of root version {root_version}, \
         but needs {needed}{}",
        if *root_version == 0 {
            " (root version 0 is the publisher keys trusted without a root: a first root must be \
             signed by one of them, or installed with --trust-root)"
        } else {
            ""
        }
    )]
    Threshold {
        /// `root version 3` or `timestamp statement`.
        what: String,
        /// Whose keys: `root` or `timestamp`.
        role: &'static str,
        /// The root naming those keys.
        root_version: u64,
        /// Distinct valid signatures by them.
        valid: usize,
        /// The role's threshold.
        needed: usize,
    },

    /// A signature by a key the role names does not verify: the document was altered.
    #[error("the signature by key {key_id} on {what} does not verify: the document was altered")]
    BadSignature {
        /// The signer.
        key_id: KeyId,
        /// What was signed.
        what: String,
    },

    /// The root of trust names no key for signed statements, so none can be accepted.
    #[error(
        "root version {root_version} names no timestamp key: this holder cannot accept signed \
         statements of what is current (add the update server's timestamp key to the root)"
    )]
    NoTimestampRole {
        /// The current root.
        root_version: u64,
    },

    /// A statement made under another root than the one trusted here.
    #[error(
        "the statement was made under root version {statement}, but this holder trusts root \
         version {current}{}",
        if statement > current { ": the newer root must arrive first" } else { "" }
    )]
    StatementRoot {
        /// The statement's root version.
        statement: u64,
        /// The root trusted here.
        current: u64,
    },

    /// A statement older than one already accepted: a replay, meant to hide what is current.
    #[error(
        "the statement is version {found}, older than version {last} accepted before: a replayed \
         statement is refused"
    )]
    StatementReplay {
        /// Its version.
        found: u64,
        /// The newest accepted before.
        last: u64,
    },

    /// A statement past its expiry: whoever holds it may be hiding newer ones.
    #[error("the statement expired at {expires_at}: a stale statement is refused")]
    StatementExpired {
        /// When it expired (RFC 3339).
        expires_at: String,
    },

    /// Reading or writing the holder's trust files failed.
    #[error("{action} {path}: {reason}")]
    Io {
        /// `reading` or `writing`.
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

impl TrustError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        TrustError::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
        e: impl std::fmt::Display,
    ) -> Self {
        TrustError::Io {
            action,
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}
