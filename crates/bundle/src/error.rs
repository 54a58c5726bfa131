//! Every way opening, creating or reading keys for a bundle can fail. Each variant names the check
//! that failed and carries the offending value, so an operator (or the update server's audit
//! trail) can say exactly why an update was refused.

use crate::{Digest, KeyId};

/// Why a bundle or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A trusted key, or the directory holding them, can be written by others than its owner:
    /// whoever can write there could make this program trust their key (ssh's StrictModes).
    #[error(
        "{path} is writable by others than its owner (mode {mode:o}): whoever can write there \
         could make this program trust their key; run `chmod go-w {path}`"
    )]
    WritableByOthers {
        /// The file or directory.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not start with the bundle magic bytes: it is not a nonstop bundle at all.
    #[error("not a nonstop bundle: the file does not start with the bundle magic bytes")]
    NotABundle,

    /// The bundle uses a container or manifest format version this node does not understand.
    #[error(
        "unsupported bundle format version {found} in the {place} (this node reads version {supported})"
    )]
    UnsupportedFormat {
        /// Where the version was read: the container header or the manifest.
        place: &'static str,
        /// The version found.
        found: u16,
        /// The version this code reads.
        supported: u16,
    },

    /// The file ends before the section it announces.
    #[error("bundle is truncated: the {section} needs {needed} bytes but only {available} remain")]
    Truncated {
        /// Which part of the bundle was cut short.
        section: &'static str,
        /// Bytes the header announced.
        needed: u64,
        /// Bytes actually left in the file.
        available: u64,
    },

    /// There are bytes after the payload; a bundle is exactly its sections, nothing appended.
    #[error("bundle has {extra} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many extra bytes follow the payload.
        extra: u64,
    },

    /// A section is larger than this node's configured limit.
    #[error("bundle {section} is {size} bytes, over the configured limit of {limit} bytes")]
    TooLarge {
        /// `manifest`, `payload` or `file`.
        section: &'static str,
        /// The announced or actual size.
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The bundle carries no signature, or a malformed signature block.
    #[error("bundle signature block is invalid: {0}")]
    SignatureBlock(&'static str),

    /// None of the bundle's signatures is by a key this node trusts.
    #[error("bundle is signed by unknown key {key_id}: it is not in this node's trusted keys")]
    UnknownKey {
        /// The first signer's key id.
        key_id: KeyId,
    },

    /// The bundle is signed by a key the root of trust has revoked: refused, however long ago
    /// it was signed.
    #[error("bundle is signed by key {key_id}, which {by} revoked: it is no longer trusted")]
    Revoked {
        /// The revoked key.
        key_id: KeyId,
        /// What revoked it (`root version 3`).
        by: String,
    },

    /// Fewer distinct trusted keys signed the bundle than the root of trust requires.
    #[error(
        "bundle has {valid} valid signature(s) by trusted keys but needs {needed}: it must be \
         co-signed (`nonstop bundle sign`) by more of the publisher keys"
    )]
    TooFewSignatures {
        /// Distinct trusted keys whose signatures verify.
        valid: usize,
        /// The threshold.
        needed: usize,
    },

    /// A signature by a trusted key does not verify: the manifest was altered or the signature forged.
    #[error(
        "bundle signature by key {key_id} does not verify: the manifest was altered or not signed by that key"
    )]
    BadSignature {
        /// The trusted key whose signature failed.
        key_id: KeyId,
    },

    /// The signed manifest is not valid JSON for the manifest schema.
    #[error("bundle manifest is invalid: {0}")]
    ManifestInvalid(String),

    /// The manifest names a publisher key other than the one that signed it.
    #[error("manifest says it was published with key {claimed} but it is signed by {signer}")]
    KeyMismatch {
        /// `key_id` in the manifest.
        claimed: KeyId,
        /// The key whose signature verified.
        signer: KeyId,
    },

    /// A component or file name is empty, too long, or could escape its directory.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// `component` or `file`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// The payload length differs from the size in the signed manifest.
    #[error("payload is {actual} bytes but the manifest says {expected}")]
    SizeMismatch {
        /// Size in the manifest.
        expected: u64,
        /// Size of the payload carried.
        actual: u64,
    },

    /// The payload does not hash to the digest in the signed manifest.
    #[error("payload digest {actual} does not match the manifest's {expected}")]
    DigestMismatch {
        /// Digest in the manifest.
        expected: Digest,
        /// Digest of the payload carried.
        actual: Digest,
    },

    /// The bundle uses a feature reserved in the format but not implemented by this node yet.
    #[error("bundle uses {0}, which this node does not support yet")]
    Unsupported(&'static str),

    /// The bundle's version is the live version already.
    #[error("bundle version {version} of {component} is already the live version")]
    AlreadyLive {
        /// Component name.
        component: String,
        /// The version both have.
        version: semver::Version,
    },

    /// The bundle path is not a regular file (a pipe or a device could be read without end).
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },

    /// The bundle's version is older than the live one and it is not a signed rollback.
    #[error(
        "bundle version {bundle} of {component} is older than live version {live} and is not a signed rollback"
    )]
    Downgrade {
        /// Component name.
        component: String,
        /// Version in the bundle.
        bundle: semver::Version,
        /// Live version.
        live: semver::Version,
    },

    /// A signed rollback names another version than the live one as the one it replaces.
    #[error("bundle is a signed rollback of {component} from {from}, but the live version is {}", live.as_ref().map_or("none".to_string(), |v| v.to_string()))]
    RollbackMismatch {
        /// Component name.
        component: String,
        /// The version the rollback was signed to replace.
        from: semver::Version,
        /// The live version.
        live: Option<semver::Version>,
    },

    /// A key file could not be parsed.
    #[error("key file {path} is invalid: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`).
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        BundleError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}
