//! The audit chain: an append-only log in which every entry carries the SHA-256 of the entry
//! before it, so editing, inserting or deleting any entry breaks the chain from there on. Who
//! published what, which rollout sent what where, and every step each node reported.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::ServerError;
use crate::db::now_ms;

/// The hash the first entry names as its predecessor.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When, milliseconds since the Unix epoch.
    pub at: i64,
    /// Who: `operator:<name>`, `node:<name>` or `server`.
    pub actor: String,
    /// What (`release.published`, `rollout.started`, `node.step`, ...).
    pub action: String,
    /// On what (`release fees@2.0.0`, `rollout 3`, ...).
    pub subject: String,
    /// The details, as JSON text.
    pub detail: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The hash of an entry: SHA-256 over its fields and its predecessor's hash, as a JSON array (so
/// no field's text can be taken for another's).
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let canonical = serde_json::to_string(&(prev_hash, seq, at, actor, action, subject, detail))
        .unwrap_or_default();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Appends an entry inside `tx` (which holds the write lock, so the chain cannot fork).
pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), ServerError> {
    let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (seq, prev) = match last {
        Some(row) => (row.try_get::<i64, _>(0)? + 1, row.try_get::<String, _>(1)?),
        None => (1, GENESIS.to_owned()),
    };
    let at = now_ms();
    let detail = detail.to_string();
    let hash = entry_hash(&prev, seq, at, actor, action, subject, &detail);
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(&detail)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    tracing::debug!(seq, actor, action, subject, "audit");
    Ok(())
}

/// What a query of the audit log asks for.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries whose actor or subject contains this text (a node's name, a component).
    pub contains: Option<String>,
    /// Entries after this sequence number.
    pub after: Option<i64>,
    /// Entries at or after this time, milliseconds since the Unix epoch.
    pub since: Option<i64>,
    /// Entries at or before this time.
    pub until: Option<i64>,
    /// At most this many (default 200, at most 5,000).
    pub limit: Option<i64>,
}

fn entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        seq: row.try_get(0)?,
        at: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        subject: row.try_get(4)?,
        detail: row.try_get(5)?,
        prev_hash: row.try_get(6)?,
        hash: row.try_get(7)?,
    })
}

const COLUMNS: &str = "seq, at, actor, action, subject, detail, prev_hash, hash";

/// Entries, oldest first.
pub async fn list(pool: &AnyPool, q: &AuditQuery) -> Result<Vec<AuditEntry>, ServerError> {
    let like = format!("%{}%", q.contains.clone().unwrap_or_default());
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit WHERE seq > $1 AND (actor LIKE $2 OR subject LIKE $2 OR detail LIKE $2) \
         AND at >= $3 AND at <= $4 ORDER BY seq LIMIT $5"
    ))
    .bind(q.after.unwrap_or(0))
    .bind(like)
    .bind(q.since.unwrap_or(i64::MIN))
    .bind(q.until.unwrap_or(i64::MAX))
    .bind(q.limit.unwrap_or(200).clamp(1, 5000))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(entry).collect::<Result<_, _>>()?)
}

/// The result of checking the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainCheck {
    /// Entries checked.
    pub entries: i64,
    /// The first entry that does not verify, if any.
    pub first_bad: Option<i64>,
    /// Why it does not.
    pub problem: Option<String>,
}

/// Recomputes every entry's hash from the start and names the first that does not verify.
pub async fn verify(pool: &AnyPool) -> Result<ChainCheck, ServerError> {
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut after = 0;
    let mut entries = 0;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT 2000"
        ))
        .bind(after)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(ChainCheck {
                entries,
                first_bad: None,
                problem: None,
            });
        }
        for row in &rows {
            let e = entry(row)?;
            entries += 1;
            let bad = |problem: String| {
                Ok(ChainCheck {
                    entries,
                    first_bad: Some(e.seq),
                    problem: Some(problem),
                })
            };
            if e.seq != expected_seq {
                return bad(format!("entry {expected_seq} is missing"));
            }
            if e.prev_hash != prev {
                return bad("it does not name the previous entry's hash".into());
            }
            let hash = entry_hash(
                &e.prev_hash,
                e.seq,
                e.at,
                &e.actor,
                &e.action,
                &e.subject,
                &e.detail,
            );
            if hash != e.hash {
                return bad("its content does not match its hash (edited)".into());
            }
            prev = e.hash.clone();
            expected_seq += 1;
            after = e.seq;
        }
    }
}
