//! Publisher keys and the set of keys a node trusts. Keys are ed25519; a key is known by its key
//! id, the first 8 bytes of the SHA-256 of its public key, so a bundle can say which key signed
//! it and a node can hold several trusted keys at once (the ground for key rotation).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::BundleError;

/// Short identifier of a public key: the first 8 bytes of SHA-256 of the key, as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let hash = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id)
            .map_err(|e| format!("key id {s:?} is not 16 hex digits: {e}"))?;
        Ok(KeyId(id))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// On-disk form of both key files: JSON, so a human can see what a file is and which key it holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    algorithm: String,
    key_id: KeyId,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
}

/// A publisher's signing key. Kept by the update server, never by a node.
pub struct SecretKey {
    key: SigningKey,
}

impl SecretKey {
    /// A new random key from the operating system's random source.
    pub fn generate() -> Self {
        SecretKey {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key derived from 32 seed bytes (tests and reproducible fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }

    /// Signs `message`. Every kind of signed nonstop document puts its own domain prefix in
    /// `message`, so a signature over one kind can never pass for another.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The key file text (JSON). Whoever writes it must make it readable by its owner only.
    pub fn to_file_text(&self) -> String {
        let file = KeyFile {
            algorithm: "ed25519".into(),
            key_id: self.key_id(),
            public_key: None,
            secret_key: Some(B64.encode(self.key.to_bytes())),
        };
        serde_json::to_string_pretty(&file).expect("key file serialises") + "\n"
    }

    /// Reads a secret key file written by [`SecretKey::to_file_text`].
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let file = read_key_file(path)?;
        let bytes = decode_32(path, file.secret_key.as_deref(), "secret_key")?;
        let key = SecretKey {
            key: SigningKey::from_bytes(&bytes),
        };
        check_id(path, file.key_id, key.key_id())?;
        Ok(key)
    }
}

/// A public key, as a node holds it to verify bundles.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key)
    }

    /// Whether `signature` is this key's over `message` (strict ed25519 verification).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }

    /// The key's 32 bytes, base64: how documents that list keys (a root of trust) write it.
    pub fn to_base64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }

    /// Parses [`PublicKey::to_base64`]'s form.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes: [u8; 32] = B64
            .decode(text)
            .map_err(|e| format!("not base64: {e}"))?
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, expected 32", b.len()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(|key| PublicKey { key })
            .map_err(|e| format!("not a valid ed25519 public key: {e}"))
    }

    /// The key file text (JSON).
    pub fn to_file_text(&self) -> String {
        let file = KeyFile {
            algorithm: "ed25519".into(),
            key_id: self.key_id(),
            public_key: Some(B64.encode(self.key.as_bytes())),
            secret_key: None,
        };
        serde_json::to_string_pretty(&file).expect("key file serialises") + "\n"
    }

    /// Reads a public key file written by [`PublicKey::to_file_text`].
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BundleError::io("reading", path, e))?;
        Self::from_file_text(&text, path)
    }

    /// Parses public key file text (e.g. a key compiled into a binary); `path` names it in errors.
    pub fn from_file_text(text: &str, path: &Path) -> Result<Self, BundleError> {
        let file = parse_key_file(text, path)?;
        let bytes = decode_32(path, file.public_key.as_deref(), "public_key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| BundleError::KeyFile {
            path: path.display().to_string(),
            reason: format!("not a valid ed25519 public key: {e}"),
        })?;
        let key = PublicKey { key };
        check_id(path, file.key_id, key.key_id())?;
        Ok(key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

fn read_key_file(path: &Path) -> Result<KeyFile, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|e| BundleError::io("reading", path, e))?;
    parse_key_file(&text, path)
}

fn parse_key_file(text: &str, path: &Path) -> Result<KeyFile, BundleError> {
    let file: KeyFile = serde_json::from_str(text).map_err(|e| BundleError::KeyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if file.algorithm != "ed25519" {
        return Err(BundleError::KeyFile {
            path: path.display().to_string(),
            reason: format!(
                "algorithm {:?} is not supported (only ed25519)",
                file.algorithm
            ),
        });
    }
    Ok(file)
}

fn decode_32(path: &Path, field: Option<&str>, name: &str) -> Result<[u8; 32], BundleError> {
    let bad = |reason: String| BundleError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let text = field.ok_or_else(|| bad(format!("has no {name} field")))?;
    let bytes = B64
        .decode(text)
        .map_err(|e| bad(format!("{name} is not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{name} is {} bytes, expected 32", b.len())))
}

fn check_id(path: &Path, claimed: KeyId, actual: KeyId) -> Result<(), BundleError> {
    if claimed != actual {
        return Err(BundleError::KeyFile {
            path: path.display().to_string(),
            reason: format!("key_id says {claimed} but the key's id is {actual}"),
        });
    }
    Ok(())
}

/// The public keys a node accepts bundles from, by key id, and how many of them must sign a
/// bundle (its threshold, at least 1). Keys a root of trust once listed and no longer does are
/// kept as revoked, so a bundle they signed is refused for that reason by name.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
    threshold: usize,
    revoked: BTreeMap<KeyId, String>,
}

impl TrustedKeys {
    /// An empty set: trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct trusted keys must sign a bundle (at least 1).
    pub fn threshold(&self) -> usize {
        self.threshold.max(1)
    }

    /// Requires `threshold` distinct trusted signatures on every bundle.
    pub fn set_threshold(&mut self, threshold: usize) {
        self.threshold = threshold;
    }

    /// Marks `id` revoked: a bundle it signed is refused with `why` (e.g. `root version 3`),
    /// and it is no longer trusted.
    pub fn revoke(&mut self, id: KeyId, why: String) {
        self.keys.remove(&id);
        self.revoked.insert(id, why);
    }

    /// Why `id` was revoked, if it was.
    pub fn revoked(&self, id: &KeyId) -> Option<&str> {
        self.revoked.get(id).map(String::as_str)
    }

    /// The trusted keys' ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// Adds `key` to the set.
    pub fn add(&mut self, key: PublicKey) {
        self.revoked.remove(&key.key_id());
        self.keys.insert(key.key_id(), key);
    }

    /// Reads a public key file, or every `*.pub` file in a directory.
    pub fn load(&mut self, path: &Path) -> Result<(), BundleError> {
        refuse_writable_by_others(path)?;
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|e| BundleError::io("reading", path, e))?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| BundleError::io("reading", path, e))?;
                let p = entry.path();
                if p.extension().is_some_and(|ext| ext == "pub") {
                    refuse_writable_by_others(&p)?;
                    files.push(p);
                }
            }
            files.sort();
            for p in files {
                self.add(PublicKey::read(&p)?);
            }
        } else {
            self.add(PublicKey::read(path)?);
        }
        Ok(())
    }

    /// The key with this id, if trusted.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Refuses a trusted key, or a directory of them, that others than its owner can write.
fn refuse_writable_by_others(path: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| BundleError::io("reading", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(BundleError::WritableByOthers {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_keep_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::from_seed([7; 32]);
        std::fs::write(dir.path().join("k.key"), secret.to_file_text()).unwrap();
        std::fs::write(dir.path().join("k.pub"), secret.public().to_file_text()).unwrap();
        let back = SecretKey::read(&dir.path().join("k.key")).unwrap();
        assert_eq!(back.key_id(), secret.key_id());
        let mut trusted = TrustedKeys::new();
        trusted.load(dir.path()).unwrap();
        assert_eq!(trusted.len(), 1, "only the .pub file is a trusted key");
        assert!(trusted.get(&secret.key_id()).is_some());
    }

    #[test]
    fn a_key_file_whose_id_does_not_match_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = SecretKey::from_seed([1; 32])
            .public()
            .to_file_text()
            .replace(
                &SecretKey::from_seed([1; 32]).key_id().to_string(),
                "0000000000000000",
            );
        let path = dir.path().join("k.pub");
        std::fs::write(&path, text).unwrap();
        let err = PublicKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("key_id says 0000000000000000"), "{err}");
    }
}
