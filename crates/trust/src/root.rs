//! The root of trust, after TUF's root metadata: the keys a holder trusts and, for each role,
//! which of them and how many must sign.
//!
//! - `root`: the keys that sign the next root (kept offline);
//! - `release`: the publisher keys, and how many of them must sign a bundle (k of n);
//! - `timestamp` (optional): the update server's online key that signs statements of what is
//!   current.
//!
//! A root is replaced only by the next version, signed both by the threshold of the current
//! root's `root` keys and by the threshold of its own: a stolen key alone cannot rotate, and a
//! key left out of the new root is revoked from then on.

use std::collections::BTreeMap;

use nonstop_bundle::{KeyId, PublicKey, SecretKey, TrustedKeys};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::TrustError;
use crate::envelope::{Envelope, Kind};

/// Largest root file accepted, in bytes (a root lists a handful of keys).
pub const MAX_ROOT_BYTES: usize = 64 * 1024;

/// One role: the keys that may sign for it and how many of them must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Key ids, each listed in the root's `keys`.
    pub keys: Vec<KeyId>,
    /// How many distinct keys of them must sign (at least 1, at most `keys.len()`).
    pub threshold: usize,
}

/// The roles a root defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs the next root.
    pub root: Role,
    /// Signs bundles (publishers).
    pub release: Role,
    /// Signs statements of what is current (the update server); none means freshness is not
    /// checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Role>,
}

/// The signed part of a root file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    /// Always `root`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first root, one more for each rotation.
    pub version: u64,
    /// When it was made (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Every key a role names: key id to the base64 ed25519 public key.
    pub keys: BTreeMap<KeyId, String>,
    /// Who signs what.
    pub roles: Roles,
}

/// A root whose form and signatures have been checked (or the implicit root a holder without a
/// root file trusts: version 0, its trusted keys in every role, threshold 1).
#[derive(Debug, Clone)]
pub struct Root {
    body: RootBody,
    keys: BTreeMap<KeyId, PublicKey>,
    envelope: Option<Envelope>,
}

impl Root {
    /// The root a holder trusts before it has a root file: the publisher keys it was given, each
    /// enough alone to sign a bundle or the first root. No timestamp key.
    pub fn implicit(trusted: &TrustedKeys) -> Root {
        let ids: Vec<KeyId> = trusted.ids().collect();
        let keys: BTreeMap<KeyId, PublicKey> = ids
            .iter()
            .filter_map(|id| trusted.get(id).map(|k| (*id, k.clone())))
            .collect();
        let role = Role {
            keys: ids,
            threshold: 1,
        };
        Root {
            body: RootBody {
                kind: "root".into(),
                version: 0,
                created_at: OffsetDateTime::UNIX_EPOCH,
                keys: keys.iter().map(|(id, k)| (*id, k.to_base64())).collect(),
                roles: Roles {
                    root: role.clone(),
                    release: role,
                    timestamp: None,
                },
            },
            keys,
            envelope: None,
        }
    }

    /// A root given at installation, trusted as given (as TUF trusts the root it ships with):
    /// its form is checked and it must carry its own root threshold of signatures.
    pub fn first(bytes: &[u8]) -> Result<Root, TrustError> {
        let (root, envelope) = Self::parse(bytes)?;
        root.check_signed_by(&envelope, &root, "itself")?;
        Ok(Root {
            envelope: Some(envelope),
            ..root
        })
    }

    /// The root that follows this one: version `self + 1`, signed by the threshold of this
    /// root's `root` keys and by the threshold of its own.
    pub fn successor(&self, bytes: &[u8]) -> Result<Root, TrustError> {
        let (next, envelope) = Self::parse(bytes)?;
        if next.version() != self.version() + 1 {
            return Err(TrustError::RootVersion {
                current: self.version(),
                found: next.version(),
            });
        }
        next.check_signed_by(&envelope, self, "the root before it")?;
        next.check_signed_by(&envelope, &next, "itself")?;
        Ok(Root {
            envelope: Some(envelope),
            ..next
        })
    }

    /// Parses and checks the form of a root file, signatures not yet checked.
    fn parse(bytes: &[u8]) -> Result<(Root, Envelope), TrustError> {
        if bytes.len() > MAX_ROOT_BYTES {
            return Err(TrustError::invalid(
                "root",
                format!("it is {} bytes, over {MAX_ROOT_BYTES}", bytes.len()),
            ));
        }
        let envelope = Envelope::parse(Kind::Root, bytes)?;
        let body: RootBody = envelope.body()?;
        let root = Self::from_body(body)?;
        Ok((root, envelope))
    }

    fn from_body(body: RootBody) -> Result<Root, TrustError> {
        let bad = |reason: String| TrustError::invalid("root", reason);
        if body.kind != "root" {
            return Err(bad(format!("its type is {:?}, not \"root\"", body.kind)));
        }
        if body.version == 0 {
            return Err(bad(
                "version 0 is the implicit root; a root file starts at 1".into(),
            ));
        }
        let mut keys = BTreeMap::new();
        for (id, text) in &body.keys {
            let key = PublicKey::from_base64(text).map_err(|e| bad(format!("key {id}: {e}")))?;
            if key.key_id() != *id {
                return Err(bad(format!(
                    "key {id} is listed under the id of another key ({})",
                    key.key_id()
                )));
            }
            keys.insert(*id, key);
        }
        let roles = [
            ("root", Some(&body.roles.root)),
            ("release", Some(&body.roles.release)),
            ("timestamp", body.roles.timestamp.as_ref()),
        ];
        for (name, role) in roles {
            let Some(role) = role else { continue };
            let mut seen = std::collections::BTreeSet::new();
            for id in &role.keys {
                if !keys.contains_key(id) {
                    return Err(bad(format!(
                        "the {name} role names key {id}, which `keys` does not list"
                    )));
                }
                if !seen.insert(id) {
                    return Err(bad(format!("the {name} role names key {id} twice")));
                }
            }
            if role.threshold == 0 || role.threshold > role.keys.len() {
                return Err(bad(format!(
                    "the {name} role's threshold is {} of {} keys: it must be between 1 and the number of keys",
                    role.threshold,
                    role.keys.len()
                )));
            }
        }
        Ok(Root {
            body,
            keys,
            envelope: None,
        })
    }

    /// Checks that `signer`'s root role signed this root's envelope with its threshold.
    fn check_signed_by(
        &self,
        envelope: &Envelope,
        signer: &Root,
        whose: &str,
    ) -> Result<(), TrustError> {
        let role = &signer.body.roles.root;
        let what = format!("root version {}", self.version());
        let valid = envelope.valid_signers(|id| signer.role_key(role, id), &what)?;
        if valid.len() < role.threshold {
            return Err(TrustError::Threshold {
                what: format!("{what} (checked against {whose})"),
                role: "root",
                root_version: signer.version(),
                valid: valid.len(),
                needed: role.threshold,
            });
        }
        Ok(())
    }

    pub(crate) fn role_key(&self, role: &Role, id: &KeyId) -> Option<&PublicKey> {
        role.keys.contains(id).then(|| self.keys.get(id)).flatten()
    }

    /// Its version (0 for the implicit root).
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// Its signed content.
    pub fn body(&self) -> &RootBody {
        &self.body
    }

    /// The key with this id, if the root lists it.
    pub fn key(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// The file text it was read from (none for the implicit root).
    pub fn to_text(&self) -> Option<String> {
        self.envelope.as_ref().map(Envelope::to_text)
    }

    /// The publisher keys and their threshold, as a bundle verifier takes them.
    pub fn release_keys(&self) -> TrustedKeys {
        let mut trusted = TrustedKeys::new();
        for id in &self.body.roles.release.keys {
            if let Some(key) = self.keys.get(id) {
                trusted.add(key.clone());
            }
        }
        trusted.set_threshold(self.body.roles.release.threshold);
        trusted
    }
}

/// A root being made and signed, before it is complete: `nonstop trust` writes it to a file
/// between one key holder's signature and the next.
#[derive(Debug, Clone)]
pub struct RootDraft {
    envelope: Envelope,
    body: RootBody,
}

impl RootDraft {
    /// A new, unsigned root of `version` with these keys and roles; its form is checked.
    pub fn new(version: u64, keys: &[PublicKey], roles: Roles) -> Result<RootDraft, TrustError> {
        let now = OffsetDateTime::now_utc();
        let body = RootBody {
            kind: "root".into(),
            version,
            created_at: now.replace_nanosecond(0).unwrap_or(now),
            keys: keys.iter().map(|k| (k.key_id(), k.to_base64())).collect(),
            roles,
        };
        let root = Root::from_body(body)?;
        Ok(RootDraft {
            envelope: Envelope::new(Kind::Root, &root.body),
            body: root.body,
        })
    }

    /// Reads a root file, complete or not, to sign it further; its form is checked.
    pub fn read(bytes: &[u8]) -> Result<RootDraft, TrustError> {
        let (root, envelope) = Root::parse(bytes)?;
        Ok(RootDraft {
            envelope,
            body: root.body,
        })
    }

    /// Adds `key`'s signature.
    pub fn sign(&mut self, key: &SecretKey) {
        self.envelope.sign(key);
    }

    /// Its content.
    pub fn body(&self) -> &RootBody {
        &self.body
    }

    /// The key ids that have signed it so far.
    pub fn signers(&self) -> Vec<KeyId> {
        self.envelope.signers()
    }

    /// The file text.
    pub fn to_text(&self) -> String {
        self.envelope.to_text()
    }
}
