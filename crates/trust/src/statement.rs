//! Signed statements of what is current (TUF's timestamp role, with the snapshot folded in): the
//! update server signs, with its online timestamp key, the newest release of every component,
//! under which root, when, and until when the statement holds. It sends a fresh one every few
//! minutes. A node keeps the newest it accepted; one that has heard no fresh statement within
//! its configured time says so (someone may be holding back its updates: a freeze attack), and
//! an older or expired statement is refused (a replay).

use nonstop_bundle::SecretKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::{Envelope, Kind};
use crate::{Root, TrustError};

/// Largest statement accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// The newest release of one component, as the server publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentRelease {
    /// The component.
    pub component: String,
    /// Its newest published version.
    pub version: String,
    /// `sha256:<hex>` of that release's bundle file.
    pub bundle_digest: String,
}

/// The signed part of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementBody {
    /// Always `timestamp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Grows with every statement the server makes (its clock in milliseconds, or one more than
    /// the last, whichever is larger).
    pub version: u64,
    /// The root version it was made under.
    pub root_version: u64,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// After this, it is refused.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The newest release of every component.
    pub releases: Vec<CurrentRelease>,
}

/// A statement whose signatures and dates have been checked against a root.
#[derive(Debug, Clone)]
pub struct Statement {
    body: StatementBody,
    text: String,
}

impl Statement {
    /// Makes and signs a statement (the update server's side).
    pub fn sign(body: &StatementBody, key: &SecretKey) -> String {
        let mut envelope = Envelope::new(Kind::Timestamp, body);
        envelope.sign(key);
        envelope.to_text()
    }

    /// Checks a statement against `root` at `now`: the root's timestamp keys signed it with
    /// their threshold, it was made under this very root, and it has not expired.
    pub fn verify(bytes: &[u8], root: &Root, now: OffsetDateTime) -> Result<Statement, TrustError> {
        let what = Kind::Timestamp.name();
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(TrustError::invalid(
                what,
                format!("it is {} bytes, over {MAX_STATEMENT_BYTES}", bytes.len()),
            ));
        }
        let Some(role) = root.body().roles.timestamp.as_ref() else {
            return Err(TrustError::NoTimestampRole {
                root_version: root.version(),
            });
        };
        let envelope = Envelope::parse(Kind::Timestamp, bytes)?;
        let valid = envelope.valid_signers(|id| root.role_key(role, id), what)?;
        if valid.len() < role.threshold {
            return Err(TrustError::Threshold {
                what: what.to_string(),
                role: "timestamp",
                root_version: root.version(),
                valid: valid.len(),
                needed: role.threshold,
            });
        }
        let body: StatementBody = envelope.body()?;
        if body.kind != "timestamp" {
            return Err(TrustError::invalid(
                what,
                format!("its type is {:?}, not \"timestamp\"", body.kind),
            ));
        }
        if body.root_version != root.version() {
            return Err(TrustError::StatementRoot {
                statement: body.root_version,
                current: root.version(),
            });
        }
        if body.expires_at <= now {
            return Err(TrustError::StatementExpired {
                expires_at: rfc3339(body.expires_at),
            });
        }
        Ok(Statement {
            body,
            text: envelope.to_text(),
        })
    }

    /// Its content.
    pub fn body(&self) -> &StatementBody {
        &self.body
    }

    /// Its file text.
    pub fn to_text(&self) -> &str {
        &self.text
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
