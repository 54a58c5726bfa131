//! The signed envelope both kinds of document use:
//!
//! ```json
//! {
//!  "signed": { "type": "root", "version": 2, ... },
//!  "signatures": [ { "key_id": "…", "signature": "<base64 ed25519>" } ]
//! }
//! ```
//!
//! Signatures are over a domain prefix naming the kind, then the bytes of `signed` exactly as
//! they stand in the file (kept with serde_json's `RawValue`), so no canonical JSON is needed and
//! a signature over a root can never pass for one over a statement. Adding a signature leaves
//! those bytes untouched, so holders of different keys can sign one after another.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use nonstop_bundle::{KeyId, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::TrustError;

/// A document's kind: its `type`, and the prefix its signatures are made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Root,
    Timestamp,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Root => "root",
            Kind::Timestamp => "timestamp statement",
        }
    }

    fn domain(self) -> &'static [u8] {
        match self {
            Kind::Root => b"nonstop root of trust\0",
            Kind::Timestamp => b"nonstop timestamp statement\0",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureEntry {
    key_id: KeyId,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeFile {
    signed: Box<RawValue>,
    signatures: Vec<SignatureEntry>,
}

/// A parsed envelope: the signed bytes and the signatures, none of them checked yet.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    kind: Kind,
    signed: String,
    signatures: Vec<(KeyId, [u8; 64])>,
}

impl Envelope {
    /// Parses `bytes` as an envelope of `kind` (its size is the caller's to bound).
    pub(crate) fn parse(kind: Kind, bytes: &[u8]) -> Result<Envelope, TrustError> {
        let file: EnvelopeFile = serde_json::from_slice(bytes)
            .map_err(|e| TrustError::invalid(kind.name(), e.to_string()))?;
        let mut signatures = Vec::with_capacity(file.signatures.len());
        for s in file.signatures {
            let sig: [u8; 64] = B64
                .decode(&s.signature)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    TrustError::invalid(
                        kind.name(),
                        format!("the signature by {} is not 64 bytes of base64", s.key_id),
                    )
                })?;
            signatures.push((s.key_id, sig));
        }
        Ok(Envelope {
            kind,
            signed: file.signed.get().to_owned(),
            signatures,
        })
    }

    /// An unsigned envelope around `body`.
    pub(crate) fn new<T: Serialize>(kind: Kind, body: &T) -> Envelope {
        Envelope {
            kind,
            signed: serde_json::to_string_pretty(body).expect("a trust document serialises"),
            signatures: Vec::new(),
        }
    }

    /// The signed part, parsed as `T` (nothing about it is trusted until the signatures are).
    pub(crate) fn body<T: for<'de> Deserialize<'de>>(&self) -> Result<T, TrustError> {
        serde_json::from_str(&self.signed)
            .map_err(|e| TrustError::invalid(self.kind.name(), e.to_string()))
    }

    fn message(&self) -> Vec<u8> {
        let mut msg = self.kind.domain().to_vec();
        msg.extend_from_slice(self.signed.as_bytes());
        msg
    }

    /// Adds (or replaces) `key`'s signature.
    pub(crate) fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(&self.message());
        self.signatures.retain(|(id, _)| *id != key.key_id());
        self.signatures.push((key.key_id(), sig));
    }

    /// The key ids that carry a signature, in order.
    pub(crate) fn signers(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|(id, _)| *id).collect()
    }

    /// The distinct keys among `allowed` whose signatures verify; a signature by one of them
    /// that does not verify is an error (the document was altered), one by any other key is
    /// skipped.
    pub(crate) fn valid_signers<'k>(
        &self,
        allowed: impl Fn(&KeyId) -> Option<&'k PublicKey>,
        what: &str,
    ) -> Result<BTreeSet<KeyId>, TrustError> {
        let msg = self.message();
        let mut valid = BTreeSet::new();
        for (id, sig) in &self.signatures {
            let Some(key) = allowed(id) else { continue };
            if !key.verify(&msg, sig) {
                return Err(TrustError::BadSignature {
                    key_id: *id,
                    what: what.to_string(),
                });
            }
            valid.insert(*id);
        }
        Ok(valid)
    }

    /// The file text.
    pub(crate) fn to_text(&self) -> String {
        let file = EnvelopeFile {
            signed: RawValue::from_string(self.signed.clone()).expect("the signed part is JSON"),
            signatures: self
                .signatures
                .iter()
                .map(|(key_id, sig)| SignatureEntry {
                    key_id: *key_id,
                    signature: B64.encode(sig),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).expect("an envelope serialises") + "\n"
    }
}
