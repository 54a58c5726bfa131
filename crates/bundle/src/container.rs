//! The container: how a manifest, its signatures and the payload are laid out in one file.
//!
//! Written by hand rather than as a tar or zip archive: a bundle is untrusted input, and this
//! layout can be checked completely with bounded reads — every length is known and compared with
//! the configured limits before anything is allocated, there is exactly one manifest and one
//! payload (no duplicate entries, no paths, no metadata to misread), and the signed bytes are the
//! manifest bytes exactly as stored, so no canonicalisation is needed.
//!
//! ```text
//! magic          8 bytes   "NSBUNDLE"
//! format         u16 BE    container format version (1)
//! manifest_len   u32 BE
//! manifest       JSON, manifest_len bytes            <- signed
//! sig_count      u8        1..=8 (several during a key rotation)
//! signatures     sig_count × (key id 8 bytes, ed25519 signature 64 bytes)
//! payload_len    u64 BE
//! payload        payload_len bytes                    <- bound by the manifest's digest
//! ```

use crate::{BundleError, BundleLimits, FORMAT_VERSION, KeyId};

/// The first bytes of every bundle file.
pub const MAGIC: &[u8; 8] = b"NSBUNDLE";

/// Signatures are over this prefix, the container format version, then the manifest bytes, so a
/// signature can never be replayed as a signature over some other kind of nonstop message.
const SIGNING_DOMAIN: &[u8] = b"nonstop update bundle\0";

pub(crate) const MAX_SIGNATURES: usize = 8;

/// A bundle split into its parts, signatures not yet checked.
pub(crate) struct RawBundle<'a> {
    pub manifest: &'a [u8],
    pub signatures: Vec<(KeyId, [u8; 64])>,
    pub payload: &'a [u8],
}

/// The exact bytes a publisher signs for `manifest`.
pub(crate) fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + 2 + manifest.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    msg.extend_from_slice(manifest);
    msg
}

/// Lays out a bundle file.
pub(crate) fn encode(manifest: &[u8], signatures: &[(KeyId, [u8; 64])], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + 2 + 4 + manifest.len() + 1 + 72 * signatures.len() + 8 + payload.len(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    out.extend_from_slice(manifest);
    out.push(signatures.len() as u8);
    for (id, sig) in signatures {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(sig);
    }
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits `bytes` into its sections, checking every length against the file and `limits`.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    limits: &BundleLimits,
) -> Result<RawBundle<'a>, BundleError> {
    let mut r = Reader { bytes, pos: 0 };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    r.pos = MAGIC.len();
    let format = u16::from_be_bytes(r.array("container header")?);
    if format != FORMAT_VERSION {
        return Err(BundleError::UnsupportedFormat {
            place: "container header",
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let manifest_len = u64::from(u32::from_be_bytes(r.array("container header")?));
    if manifest_len > limits.max_manifest_bytes {
        return Err(BundleError::TooLarge {
            section: "manifest",
            size: manifest_len,
            limit: limits.max_manifest_bytes,
        });
    }
    let manifest = r.take("manifest", manifest_len)?;
    let [count] = r.array::<1>("signature block")?;
    let count = usize::from(count);
    if count == 0 {
        return Err(BundleError::SignatureBlock(
            "the bundle carries no signature",
        ));
    }
    if count > MAX_SIGNATURES {
        return Err(BundleError::SignatureBlock("more than 8 signatures"));
    }
    let mut signatures = Vec::with_capacity(count);
    for _ in 0..count {
        let id = KeyId(r.array("signature block")?);
        let sig: [u8; 64] = r.array("signature block")?;
        signatures.push((id, sig));
    }
    let payload_len = u64::from_be_bytes(r.array("payload length")?);
    if payload_len > limits.max_any_payload_bytes() {
        return Err(BundleError::TooLarge {
            section: "payload",
            size: payload_len,
            limit: limits.max_any_payload_bytes(),
        });
    }
    let payload = r.take("payload", payload_len)?;
    let extra = (bytes.len() - r.pos) as u64;
    if extra != 0 {
        return Err(BundleError::TrailingBytes { extra });
    }
    Ok(RawBundle {
        manifest,
        signatures,
        payload,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, section: &'static str, len: u64) -> Result<&'a [u8], BundleError> {
        let available = (self.bytes.len() - self.pos) as u64;
        if len > available {
            return Err(BundleError::Truncated {
                section,
                needed: len,
                available,
            });
        }
        // `len <= available`, which is a usize, so the cast is lossless.
        let end = self.pos + len as usize;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, section: &'static str) -> Result<[u8; N], BundleError> {
        let slice = self.take(section, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}
