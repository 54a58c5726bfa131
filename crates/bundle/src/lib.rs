//! Signed update bundles: the "update file pushed by the server" of the patent.
//!
//! A bundle is one file holding a [`Manifest`] (what the update is and which checks it must pass),
//! ed25519 signatures over that manifest, and the payload, bound to the manifest by its SHA-256.
//! [`Verifier::open`] is the only way to get a [`VerifiedBundle`], and the version store accepts
//! nothing else: nothing unsigned is ever staged, let alone run.
//!
//! ```
//! use nonstop_bundle::{create, BundleLimits, ComponentKind, Draft, SecretKey, TrustedKeys, Verifier};
//!
//! let key = SecretKey::from_seed([1; 32]);
//! let draft = Draft::new("fees", ComponentKind::WasmComponent, "1.1.0".parse()?, "fees.wasm")?;
//! let bytes = create(&draft, b"\0asm...", &key)?;
//!
//! let mut trusted = TrustedKeys::new();
//! trusted.add(key.public());
//! let verifier = Verifier::new(trusted, BundleLimits::default());
//! let live = "1.0.0".parse()?;
//! let bundle = verifier.open(&bytes, Some(&live))?;
//! assert_eq!(bundle.manifest().version.to_string(), "1.1.0");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod container;
mod error;
mod keys;
mod manifest;

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use container::MAGIC;
pub use error::BundleError;
pub use keys::{KeyId, PublicKey, SecretKey, TrustedKeys};

/// The public key nonstop's own releases (the rule modules a node ships with) are signed with;
/// nodes and update servers trust it beside the keys they are given.
pub fn release_key() -> PublicKey {
    PublicKey::from_file_text(
        include_str!("../../../modules/factory/release.pub"),
        std::path::Path::new("modules/factory/release.pub"),
    )
    .expect("the release key shipped with nonstop is valid")
}
pub use manifest::{
    CandidateChecks, ComponentKind, ComponentName, Digest, FORMAT_VERSION, FileName, Intent,
    Manifest, PayloadEncoding, PayloadInfo, RESERVED_FILE_NAMES, ShadowCheck, TestVector,
};

/// Size limits a node applies to bundles before reading them into memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleLimits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: u64,
    /// Largest program payload (`node-binary`) accepted, in bytes: a whole `nonstop`
    /// executable is larger than any rule module.
    pub max_program_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_manifest_bytes: 1 << 20,
            max_payload_bytes: 64 << 20,
            max_program_bytes: 256 << 20,
        }
    }
}

impl BundleLimits {
    /// Largest whole bundle file these limits can allow (sections plus framing).
    fn max_file_bytes(&self) -> u64 {
        const FRAMING: u64 = 8 + 2 + 4 + 1 + 8 * 72 + 8;
        self.max_manifest_bytes + self.max_any_payload_bytes() + FRAMING
    }

    /// Largest payload of any kind: the container is read before its manifest says which kind
    /// it holds; [`Verifier::open`] then applies the kind's own limit.
    pub fn max_any_payload_bytes(&self) -> u64 {
        self.max_payload_bytes.max(self.max_program_bytes)
    }

    /// Largest payload allowed for `kind`.
    pub fn max_payload_for(&self, kind: ComponentKind) -> u64 {
        match kind {
            ComponentKind::NodeBinary => self.max_program_bytes,
            _ => self.max_payload_bytes,
        }
    }
}

/// What a publisher says about an update; [`create`] fills in the rest of the manifest.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Component to update.
    pub component: ComponentName,
    /// Kind of content.
    pub kind: ComponentKind,
    /// Version of the content.
    pub version: semver::Version,
    /// Release (newer than live) or signed rollback from a named live version.
    pub intent: Intent,
    /// File name of the payload in the version directory.
    pub file: FileName,
    /// Release notes.
    pub notes: String,
    /// Checks the candidate must pass.
    pub checks: CandidateChecks,
}

impl Draft {
    /// A release draft with no notes and no bundle-specific checks.
    pub fn new(
        component: &str,
        kind: ComponentKind,
        version: semver::Version,
        file: &str,
    ) -> Result<Self, BundleError> {
        Ok(Draft {
            component: ComponentName::new(component)?,
            kind,
            version,
            intent: Intent::Release,
            file: FileName::new(file)?,
            notes: String::new(),
            checks: CandidateChecks::default(),
        })
    }
}

/// Builds and signs a bundle for `payload`.
pub fn create(draft: &Draft, payload: &[u8], key: &SecretKey) -> Result<Vec<u8>, BundleError> {
    let now = OffsetDateTime::now_utc();
    // Whole seconds keep the manifest readable and its RFC 3339 form stable.
    let created_at = now.replace_nanosecond(0).unwrap_or(now);
    let manifest = Manifest {
        format: FORMAT_VERSION,
        component: draft.component.clone(),
        kind: draft.kind,
        version: draft.version.clone(),
        intent: draft.intent.clone(),
        payload: PayloadInfo {
            file: draft.file.clone(),
            size: payload.len() as u64,
            digest: Digest::of(payload),
            encoding: PayloadEncoding::Full,
        },
        key_id: key.key_id(),
        created_at,
        notes: draft.notes.clone(),
        checks: draft.checks.clone(),
        target: (draft.kind == ComponentKind::NodeBinary).then(current_target),
    };
    manifest.validate()?;
    Ok(seal(&manifest, payload, &[key]))
}

/// The platform this program was built for, as a program bundle's manifest names it
/// (`<arch>-<os>`, e.g. `x86_64-linux`): a node installs only a program built for its own.
pub fn current_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Signs `manifest` as given with each key and lays out the bundle. It does not check the
/// manifest: [`create`] is the normal way in; this one exists for key rotation (several
/// signatures) and for tests that need a validly signed but otherwise wrong bundle.
pub fn seal(manifest: &Manifest, payload: &[u8], keys: &[&SecretKey]) -> Vec<u8> {
    let manifest_bytes = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    seal_bytes(&manifest_bytes, payload, keys)
}

/// Signs manifest bytes exactly as given and lays out the bundle, with no check at all. For tools
/// and tests that must produce a bundle whose signed manifest is malformed.
pub fn seal_bytes(manifest: &[u8], payload: &[u8], keys: &[&SecretKey]) -> Vec<u8> {
    let msg = container::signed_message(manifest);
    let signatures: Vec<_> = keys.iter().map(|k| (k.key_id(), k.sign(&msg))).collect();
    container::encode(manifest, &signatures, payload)
}

/// A bundle's contents as read, with no trust decision made: for `nonstop bundle inspect`.
#[derive(Debug)]
pub struct InspectedBundle {
    /// The manifest, if it parses.
    pub manifest: Result<Manifest, String>,
    /// Key ids of the signatures carried.
    pub signers: Vec<KeyId>,
    /// Payload size as carried.
    pub payload_size: u64,
    /// Digest of the payload as carried.
    pub payload_digest: Digest,
}

/// Reads a bundle's parts without verifying anything beyond its framing.
pub fn inspect(bytes: &[u8], limits: &BundleLimits) -> Result<InspectedBundle, BundleError> {
    let raw = container::decode(bytes, limits)?;
    Ok(InspectedBundle {
        manifest: serde_json::from_slice(raw.manifest).map_err(|e| e.to_string()),
        signers: raw.signatures.iter().map(|(id, _)| *id).collect(),
        payload_size: raw.payload.len() as u64,
        payload_digest: Digest::of(raw.payload),
    })
}

/// The manifest a bundle claims, trusting nothing and without hashing its payload: what picks the
/// live version to compare with (and, in a node, whether it is a program) before
/// [`Verifier::open`] checks everything. `None` when its framing or manifest cannot be read.
pub fn claimed_manifest(bytes: &[u8], limits: &BundleLimits) -> Option<Manifest> {
    let raw = container::decode(bytes, limits).ok()?;
    serde_json::from_slice(raw.manifest).ok()
}

/// Adds `key`'s signature to a bundle (a second publisher co-signing a release whose root of
/// trust asks for more than one signature). The bundle's framing is checked, nothing else: the
/// signer vouches for the manifest as it reads it.
pub fn cosign(
    bytes: &[u8],
    key: &SecretKey,
    limits: &BundleLimits,
) -> Result<Vec<u8>, BundleError> {
    let raw = container::decode(bytes, limits)?;
    let mut signatures = raw.signatures.clone();
    if signatures.iter().any(|(id, _)| *id == key.key_id()) {
        return Err(BundleError::SignatureBlock(
            "the bundle is already signed by this key",
        ));
    }
    if signatures.len() >= container::MAX_SIGNATURES {
        return Err(BundleError::SignatureBlock(
            "the bundle carries the most signatures it can",
        ));
    }
    signatures.push((
        key.key_id(),
        key.sign(&container::signed_message(raw.manifest)),
    ));
    Ok(container::encode(raw.manifest, &signatures, raw.payload))
}

/// Opens bundles for a node: the trusted keys and the limits. Clones share their trusted keys,
/// so a key rotation ([`Verifier::set_trusted`]) reaches every holder at once.
#[derive(Debug, Clone)]
pub struct Verifier {
    trusted: std::sync::Arc<arc_swap::ArcSwap<TrustedKeys>>,
    limits: BundleLimits,
}

impl Verifier {
    /// A verifier trusting `trusted`, enforcing `limits`.
    pub fn new(trusted: TrustedKeys, limits: BundleLimits) -> Self {
        Verifier {
            trusted: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(trusted)),
            limits,
        }
    }

    /// Trusts `trusted` from now on, in this verifier and every clone of it: a bundle opened
    /// after this returns is checked against these keys and this threshold only.
    pub fn set_trusted(&self, trusted: TrustedKeys) {
        self.trusted.store(std::sync::Arc::new(trusted));
    }

    /// The keys trusted now.
    pub fn trusted(&self) -> std::sync::Arc<TrustedKeys> {
        self.trusted.load_full()
    }

    /// The limits enforced.
    pub fn limits(&self) -> &BundleLimits {
        &self.limits
    }

    /// Reads and opens a bundle file, refusing an oversized file before reading it.
    pub fn open_file(
        &self,
        path: &Path,
        live: Option<&semver::Version>,
    ) -> Result<VerifiedBundle, BundleError> {
        let bytes = read_bounded(path, &self.limits)?;
        self.open(&bytes, live)
    }

    /// Opens a bundle: it is returned only if its framing is intact and within limits, a key this
    /// node trusts signed its manifest, the manifest is valid, the payload matches the manifest's
    /// size and digest, and its version is newer than `live` (or it is a signed rollback).
    pub fn open(
        &self,
        bytes: &[u8],
        live: Option<&semver::Version>,
    ) -> Result<VerifiedBundle, BundleError> {
        let raw = container::decode(bytes, &self.limits)?;
        let signers = self.check_signatures(&raw)?;
        // The manifest is parsed only once enough trusted keys have vouched for its bytes.
        let manifest = Manifest::from_signed_bytes(raw.manifest)?;
        if !signers.contains(&manifest.key_id) {
            return Err(BundleError::KeyMismatch {
                claimed: manifest.key_id,
                signer: signers[0],
            });
        }
        let signer = manifest.key_id;
        let limit = self.limits().max_payload_for(manifest.kind);
        if manifest.payload.size > limit {
            return Err(BundleError::TooLarge {
                section: "payload",
                size: manifest.payload.size,
                limit,
            });
        }
        let actual_size = raw.payload.len() as u64;
        if actual_size != manifest.payload.size {
            return Err(BundleError::SizeMismatch {
                expected: manifest.payload.size,
                actual: actual_size,
            });
        }
        let actual = Digest::of(raw.payload);
        if actual != manifest.payload.digest {
            return Err(BundleError::DigestMismatch {
                expected: manifest.payload.digest,
                actual,
            });
        }
        check_version(&manifest, live)?;
        Ok(VerifiedBundle {
            manifest,
            signer,
            signers,
            payload: raw.payload.to_vec(),
            bytes: bytes.to_vec(),
        })
    }

    /// The distinct trusted keys whose signatures verify, once there are as many as the
    /// threshold. A signature by an unknown key is skipped (a key being added by a rotation);
    /// one by a trusted key that does not verify fails at once (the manifest was altered); a
    /// revoked key is named as such when it is the reason the threshold is not met.
    fn check_signatures(&self, raw: &container::RawBundle<'_>) -> Result<Vec<KeyId>, BundleError> {
        let trusted = self.trusted.load();
        let msg = container::signed_message(raw.manifest);
        let mut valid: Vec<KeyId> = Vec::new();
        for (id, sig) in &raw.signatures {
            let Some(key) = trusted.get(id) else { continue };
            if !key.verify(&msg, sig) {
                return Err(BundleError::BadSignature { key_id: *id });
            }
            if !valid.contains(id) {
                valid.push(*id);
            }
        }
        let needed = trusted.threshold();
        if valid.len() >= needed {
            return Ok(valid);
        }
        if let Some((id, why)) = raw
            .signatures
            .iter()
            .find_map(|(id, _)| trusted.revoked(id).map(|why| (*id, why)))
        {
            return Err(BundleError::Revoked {
                key_id: id,
                by: why.to_string(),
            });
        }
        if valid.is_empty() {
            return Err(BundleError::UnknownKey {
                key_id: raw.signatures[0].0,
            });
        }
        Err(BundleError::TooFewSignatures {
            valid: valid.len(),
            needed,
        })
    }
}

/// Whether a bundle of `manifest` may replace `live`: a release must be newer; a signed rollback
/// must name `live` as the version it replaces.
pub fn check_version(
    manifest: &Manifest,
    live: Option<&semver::Version>,
) -> Result<(), BundleError> {
    let component = || manifest.component.to_string();
    if live == Some(&manifest.version) {
        return Err(BundleError::AlreadyLive {
            component: component(),
            version: manifest.version.clone(),
        });
    }
    match (&manifest.intent, live) {
        (Intent::Release, None) => Ok(()),
        (Intent::Release, Some(live)) if manifest.version.cmp_precedence(live).is_gt() => Ok(()),
        (Intent::Release, Some(live)) => Err(BundleError::Downgrade {
            component: component(),
            bundle: manifest.version.clone(),
            live: live.clone(),
        }),
        (Intent::Rollback { from }, Some(live)) if from == live => Ok(()),
        (Intent::Rollback { from }, live) => Err(BundleError::RollbackMismatch {
            component: component(),
            from: from.clone(),
            live: live.cloned(),
        }),
    }
}

/// Reads a bundle file, refusing it before reading if it is larger than `limits` allow, and
/// never reading more than that even if the file grows meanwhile.
pub fn read_bounded(path: &Path, limits: &BundleLimits) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| BundleError::io("reading", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| BundleError::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(BundleError::NotAFile {
            path: path.display().to_string(),
        });
    }
    let limit = limits.max_file_bytes();
    if meta.len() > limit {
        return Err(BundleError::TooLarge {
            section: "file",
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BundleError::io("reading", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(BundleError::TooLarge {
            section: "file",
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// A bundle that passed every check of [`Verifier::open`]. Only this type can be staged.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    manifest: Manifest,
    signer: KeyId,
    signers: Vec<KeyId>,
    payload: Vec<u8>,
    bytes: Vec<u8>,
}

impl VerifiedBundle {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The publisher key the manifest names, whose signature verified.
    pub fn signer(&self) -> KeyId {
        self.signer
    }

    /// Every trusted key whose signature verified (as many as the threshold, or more).
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// The payload, matching the manifest's digest.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The whole bundle file, kept beside the installed payload so it can be re-verified later.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}
