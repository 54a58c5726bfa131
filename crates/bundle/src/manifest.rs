//! The manifest: what an update is (component, kind, version), what it carries (payload digest and
//! size), who published it and when, and which candidate checks it must pass before going live.
//! The manifest is the signed part of a bundle; the payload is bound to it by its digest.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::{BundleError, KeyId};

/// The bundle format version this code writes and reads, both in the container header and in the
/// manifest. A node refuses any other number rather than guessing at its meaning.
pub const FORMAT_VERSION: u16 = 1;

/// The signed description of one update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version; must equal [`FORMAT_VERSION`].
    pub format: u16,
    /// The component this update replaces, e.g. `fees`.
    pub component: ComponentName,
    /// What kind of content the payload is.
    pub kind: ComponentKind,
    /// Semantic version of the content.
    pub version: semver::Version,
    /// Release or rollback: a rollback may carry a version older than the live one.
    #[serde(default)]
    pub intent: Intent,
    /// The payload's name, size, digest and encoding.
    pub payload: PayloadInfo,
    /// The publisher's key; must be the key whose signature verifies.
    pub key_id: KeyId,
    /// When the bundle was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Release notes for operators.
    #[serde(default)]
    pub notes: String,
    /// Checks the candidate must pass before it may go live, on top of the node's own.
    #[serde(default)]
    pub checks: CandidateChecks,
    /// The platform a program payload runs on (`node-binary`: e.g. `x86_64-linux`, see
    /// [`crate::current_target`]); absent for every other kind, which runs anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a bundle's payload is. Only WebAssembly components are installed today; the other kinds
/// are part of the format so bundles for them can be published without a format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// A WebAssembly component implementing one of the rule interfaces in `wit/`.
    WasmComponent,
    /// Static web assets (an archive) for the web console.
    StaticAssets,
    /// The node binary itself.
    NodeBinary,
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::WasmComponent => "wasm-component",
            ComponentKind::StaticAssets => "static-assets",
            ComponentKind::NodeBinary => "node-binary",
        })
    }
}

/// Whether an update moves forward or deliberately back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Intent {
    /// A normal update: its version must be newer than the live one.
    #[default]
    Release,
    /// An explicitly signed rollback from one named live version: its version may be older, but
    /// it applies only while `from` is live, so it cannot be replayed later against another.
    Rollback {
        /// The live version this rollback replaces.
        from: semver::Version,
    },
}

/// How the payload is described in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadInfo {
    /// File name the payload gets inside its version directory, e.g. `fees.wasm`.
    pub file: FileName,
    /// Payload size in bytes.
    pub size: u64,
    /// SHA-256 of the payload bytes as carried in the bundle.
    pub digest: Digest,
    /// Full content, or (reserved) a patch against a base version.
    #[serde(default)]
    pub encoding: PayloadEncoding,
}

/// How the payload bytes turn into the content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PayloadEncoding {
    /// The payload is the whole content.
    #[default]
    Full,
    /// Reserved for delta bundles: the payload is a patch against `base`. Refused by this node.
    Delta {
        /// The version the patch applies to.
        base_version: semver::Version,
        /// Digest of that base version's content.
        base_digest: Digest,
    },
}

/// Checks carried by the bundle that the candidate must pass before it may go live. The node adds
/// its own preset requirements (invariants, resource budgets) to these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateChecks {
    /// Interfaces the component must export, e.g. `nonstop:his-rules/fees`.
    #[serde(default)]
    pub exports: Vec<String>,
    /// Inputs and the outputs the candidate must produce for them.
    #[serde(default)]
    pub test_vectors: Vec<TestVector>,
    /// Shadow traffic requirements; `None` uses the node's configured defaults.
    #[serde(default)]
    pub shadow: Option<ShadowCheck>,
}

/// One input and the output the candidate must return for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestVector {
    /// The exported function called, e.g. `registration-fee`.
    pub function: String,
    /// The call's input, in the interface's JSON form.
    pub input: serde_json::Value,
    /// The output expected, in the interface's JSON form.
    pub expected: serde_json::Value,
}

/// How much live traffic the candidate must shadow, and how slow it may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowCheck {
    /// Number of live calls the candidate is run beside.
    pub calls: u32,
    /// Largest allowed ratio of candidate latency to live latency.
    pub max_latency_ratio: f64,
}

impl Manifest {
    /// Parses signed manifest bytes, with a typed error for each rule: the format version first
    /// (so a newer format is named as such, not as an unknown field), then the names, then the rest.
    pub fn from_signed_bytes(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let invalid = |e: serde_json::Error| BundleError::ManifestInvalid(e.to_string());
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == u64::from(FORMAT_VERSION) => {}
            Some(f) => {
                return Err(BundleError::UnsupportedFormat {
                    place: "manifest",
                    found: u16::try_from(f).unwrap_or(u16::MAX),
                    supported: FORMAT_VERSION,
                });
            }
            None => {
                return Err(BundleError::ManifestInvalid(
                    "no numeric `format` field".into(),
                ));
            }
        }
        if let Some(name) = value.get("component").and_then(|c| c.as_str()) {
            ComponentName::new(name)?;
        }
        if let Some(name) = value.pointer("/payload/file").and_then(|c| c.as_str()) {
            FileName::new(name)?;
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(invalid)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the rules the type system cannot: names, format version, supported encodings.
    /// Deserialisation already validated the names; this re-checks values built in code.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat {
                place: "manifest",
                found: self.format,
                supported: FORMAT_VERSION,
            });
        }
        ComponentName::new(self.component.as_str())?;
        FileName::new(self.payload.file.as_str())?;
        if let PayloadEncoding::Delta { .. } = self.payload.encoding {
            return Err(BundleError::Unsupported("delta payloads"));
        }
        match (self.kind, &self.target) {
            (ComponentKind::NodeBinary, None) => Err(BundleError::ManifestInvalid(
                "a node-binary bundle must name its target platform".into(),
            )),
            (ComponentKind::NodeBinary, Some(_)) | (_, None) => Ok(()),
            (kind, Some(_)) => Err(BundleError::ManifestInvalid(format!(
                "a {kind} bundle names a target platform; only node-binary bundles do"
            ))),
        }
    }
}

/// A component name: the key of its directory in the version store, so it must be a single safe
/// path component. 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ComponentName(String);

impl ComponentName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, BundleError> {
        let bad = |reason| BundleError::InvalidName {
            what: "component",
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(bad("must be 1 to 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(bad("must start with a lower-case letter or digit"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(bad(
                "may hold only a-z, 0-9, '-' and '_' (no path separators or dots)",
            ));
        }
        Ok(ComponentName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ComponentName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ComponentName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Names the version store uses in each version directory, which a payload may not take.
pub const RESERVED_FILE_NAMES: &[&str] = &["manifest.json", "bundle.nsb"];

/// A file name inside a version directory: one path component that cannot escape it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct FileName(String);

impl FileName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, BundleError> {
        let bad = |reason| BundleError::InvalidName {
            what: "file",
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 128 {
            return Err(bad("must be 1 to 128 characters"));
        }
        if name.starts_with('.') {
            return Err(bad("must not start with '.' (no '..', no hidden files)"));
        }
        // The version store keeps these beside the payload in each version directory.
        if RESERVED_FILE_NAMES.contains(&name) || name.ends_with(".cwasm") || name.ends_with(".tmp")
        {
            return Err(bad("is reserved for the version store's own files"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "may hold only A-Z, a-z, 0-9, '-', '_' and '.' (no path separators)",
            ));
        }
        Ok(FileName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FileName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 digest, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {s:?} does not start with 'sha256:'"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|e| format!("digest {s:?} is not 64 hex digits: {e}"))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_cannot_escape_the_store() {
        for bad in [
            "",
            "..",
            "../fees",
            "fees/../x",
            "a/b",
            "Fees",
            ".fees",
            "-x",
            "fe es",
        ] {
            assert!(ComponentName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["fees", "insurance", "triage-v2", "quota_2"] {
            assert_eq!(ComponentName::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn file_names_cannot_escape_the_version_directory() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "x\0y",
            "manifest.json",
            "x.cwasm",
        ] {
            assert!(FileName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FileName::new("fees.wasm").is_ok());
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = Digest::of(b"hello");
        let text = d.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<Digest>().unwrap(), d);
        assert!("md5:00".parse::<Digest>().is_err());
    }
}
