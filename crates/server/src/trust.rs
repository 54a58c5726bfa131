//! The fleet's root of trust, on the server's side.
//!
//! - Every server process keeps a [`TrustHolder`] in `<data_dir>/trust/`: releases are verified
//!   against the publisher keys and threshold of its current root, so a revoked key's bundle is
//!   refused at publishing and at rollout, not only on the nodes.
//! - An administrator adds the next root (`POST /api/v1/trust/roots`, `nonstop trust push`);
//!   it is checked against the current one, kept in the database (where the other processes
//!   find it on their next pass), and sent to every connected node. A node that was offline is
//!   sent every root newer than the one its hello names when it comes back.
//! - The server signs statements of what is current (the newest release of every component)
//!   with its own timestamp key (`<data_dir>/timestamp.key`, made on first start; its public
//!   half is `timestamp.pub`), when the current root names that key for the timestamp role. Each
//!   node is sent one on connecting, after every publish and root change, and every
//!   `statement_secs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nonstop_bundle::{PublicKey, SecretKey, TrustedKeys};
use nonstop_link::ServerMessage;
use nonstop_trust::{CurrentRelease, Statement, StatementBody, TrustHolder, TrustStatus};
use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;

use crate::db::now_ms;
use crate::{Server, ServerConfig, ServerError};

/// What this server process holds of the root of trust.
pub(crate) struct ServerTrust {
    holder: Mutex<TrustHolder>,
    timestamp_key: SecretKey,
    /// The newest statement signed, and its version.
    statement: Mutex<Option<(u64, String)>>,
    last_version: AtomicU64,
}

/// The server's trust, as `GET /api/v1/trust` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TrustInfo {
    /// The root, keys, revocations and this process's own freshness.
    #[serde(flatten)]
    pub status: TrustStatus,
    /// The key this server signs statements with: its id and its public key file, to put in the
    /// root's timestamp role.
    pub timestamp_key: TimestampKey,
    /// Whether the current root names it (only then are statements signed and sent).
    pub signing_statements: bool,
    /// The current root file, if there is one.
    pub root: Option<String>,
}

/// This server's timestamp key.
#[derive(Debug, Clone, Serialize)]
pub struct TimestampKey {
    /// Its id.
    pub key_id: String,
    /// Its public key file text (`nonstop trust root --timestamp-key`).
    pub public_key: String,
}

impl ServerTrust {
    /// Opens the holder and the timestamp key in the data directory.
    pub(crate) fn open(
        config: &ServerConfig,
        base: &TrustedKeys,
    ) -> Result<ServerTrust, ServerError> {
        let data = &config.data_dir;
        let initial = match &config.trust_root {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| ServerError::Io(format!("reading {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let holder = TrustHolder::open(&data.join("trust"), base, initial.as_deref())
            .map_err(|e| ServerError::Io(format!("the root of trust: {e}")))?;
        let key_path = data.join("timestamp.key");
        let timestamp_key = if key_path.exists() {
            SecretKey::read(&key_path)?
        } else {
            let key = SecretKey::generate();
            crate::write_private(&key_path, &key.to_file_text())?;
            crate::write_private(&data.join("timestamp.pub"), &key.public().to_file_text())?;
            key
        };
        Ok(ServerTrust {
            holder: Mutex::new(holder),
            timestamp_key,
            statement: Mutex::new(None),
            last_version: AtomicU64::new(0),
        })
    }

    /// The publisher keys and threshold releases are verified against.
    pub(crate) fn release_keys(&self) -> TrustedKeys {
        self.holder.lock().expect("trust").release_keys()
    }

    fn root_version(&self) -> u64 {
        self.holder.lock().expect("trust").current().version()
    }

    fn signing(&self) -> bool {
        let holder = self.holder.lock().expect("trust");
        let id = self.timestamp_key.key_id();
        holder
            .current()
            .body()
            .roles
            .timestamp
            .as_ref()
            .is_some_and(|r| r.keys.contains(&id))
    }
}

impl Server {
    fn trust(&self) -> &ServerTrust {
        &self.inner.trust
    }

    /// The root of trust as this process holds it, and its timestamp key.
    pub fn trust_info(&self) -> TrustInfo {
        let t = self.trust();
        let holder = t.holder.lock().expect("trust");
        let public: PublicKey = t.timestamp_key.public();
        TrustInfo {
            status: holder.status(
                OffsetDateTime::now_utc(),
                self.inner.config.statement_valid_secs,
            ),
            timestamp_key: TimestampKey {
                key_id: public.key_id().to_string(),
                public_key: public.to_file_text(),
            },
            signing_statements: holder
                .current()
                .body()
                .roles
                .timestamp
                .as_ref()
                .is_some_and(|r| r.keys.contains(&public.key_id())),
            root: holder.current().to_text(),
        }
    }

    /// Adds the next root of trust: checked against the current one (version, both roots'
    /// thresholds), kept, audited, and sent to every connected node.
    pub async fn add_root(&self, actor: &str, bytes: &[u8]) -> Result<TrustInfo, ServerError> {
        // Roots other processes added first, so the new one is checked against the newest.
        self.sync_roots().await?;
        let mut w = self.write().await?;
        let (version, revoked) = {
            let mut holder = self.trust().holder.lock().expect("trust");
            let before: Vec<String> = holder
                .revoked()
                .iter()
                .map(|r| r.key_id.to_string())
                .collect();
            match holder.accept_root(bytes) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ServerError::Conflict(format!(
                        "root version {} is the current root already",
                        holder.current().version()
                    )));
                }
                Err(e) => return Err(ServerError::invalid("root", e.to_string())),
            }
            let revoked: Vec<String> = holder
                .revoked()
                .iter()
                .map(|r| r.key_id.to_string())
                .filter(|k| !before.contains(k))
                .collect();
            (holder.current().version(), revoked)
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        sqlx::query(
            "INSERT INTO trust_root (version, body, added_by, added_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(version as i64)
        .bind(&text)
        .bind(actor)
        .bind(now_ms())
        .execute(&mut *w.tx)
        .await?;
        w.audit(
            actor,
            "trust.root-added",
            &format!("root {version}"),
            &serde_json::json!({ "version": version, "revoked": revoked }),
        )
        .await?;
        w.commit().await?;
        tracing::info!(root = version, ?revoked, "accepted a new root of trust");
        self.send_roots_to_all().await;
        self.refresh_statement().await;
        Ok(self.trust_info())
    }

    /// Accepts, in order, the roots the database holds beyond this process's own (added through
    /// another process); writes to the database a root this process was installed with and the
    /// database lacks.
    pub(crate) async fn sync_roots(&self) -> Result<(), ServerError> {
        let held = self.trust().root_version();
        let rows =
            sqlx::query("SELECT version, body FROM trust_root WHERE version > $1 ORDER BY version")
                .bind(held as i64)
                .fetch_all(&self.inner.pool)
                .await?;
        for row in &rows {
            let body: String = row.try_get(1)?;
            let accepted = self
                .trust()
                .holder
                .lock()
                .expect("trust")
                .accept_root(body.as_bytes());
            if let Err(e) = accepted {
                tracing::error!(error = %e, "a root of trust in the database is refused");
                break;
            }
        }
        if rows.is_empty() && held > 0 {
            let in_db: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM trust_root")
                .fetch_one(&self.inner.pool)
                .await?;
            if in_db.unwrap_or(0) < held as i64 {
                let roots: Vec<(u64, String)> = self
                    .trust()
                    .holder
                    .lock()
                    .expect("trust")
                    .roots()
                    .iter()
                    .filter(|r| r.version() as i64 > in_db.unwrap_or(0))
                    .filter_map(|r| r.to_text().map(|t| (r.version(), t)))
                    .collect();
                let mut w = self.write().await?;
                for (version, text) in roots {
                    sqlx::query(
                        "INSERT INTO trust_root (version, body, added_by, added_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(version as i64)
                    .bind(text)
                    .bind("server")
                    .bind(now_ms())
                    .execute(&mut *w.tx)
                    .await?;
                }
                w.commit().await?;
            }
        }
        Ok(())
    }

    /// The roots a node holding `node_root` lacks, oldest first.
    async fn roots_after(&self, node_root: u64) -> Result<Vec<String>, ServerError> {
        Ok(
            sqlx::query_scalar("SELECT body FROM trust_root WHERE version > $1 ORDER BY version")
                .bind(node_root as i64)
                .fetch_all(&self.inner.pool)
                .await?,
        )
    }

    /// After a node's hello: the roots it lacks, then the newest statement.
    pub(crate) async fn send_trust(&self, node: i64, node_root: u64) -> Result<(), ServerError> {
        let roots = self.roots_after(node_root).await?;
        if !roots.is_empty() {
            self.inner
                .connections
                .send(node, ServerMessage::Roots { roots });
        }
        if let Some(statement) = self.current_statement().await {
            self.inner
                .connections
                .send(node, ServerMessage::Timestamp { statement });
        }
        Ok(())
    }

    async fn send_roots_to_all(&self) {
        for node in self.inner.connections.ids() {
            let node_root: i64 = sqlx::query_scalar("SELECT root_version FROM node WHERE id = $1")
                .bind(node)
                .fetch_optional(&self.inner.pool)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            match self.roots_after(node_root.max(0) as u64).await {
                Ok(roots) if !roots.is_empty() => {
                    self.inner
                        .connections
                        .send(node, ServerMessage::Roots { roots });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot send a node its roots"),
            }
        }
    }

    /// The newest statement, signing one if none has been.
    async fn current_statement(&self) -> Option<String> {
        if let Some((_, text)) = self.trust().statement.lock().expect("statement").clone() {
            return Some(text);
        }
        self.sign_statement().await
    }

    /// Signs a new statement of what is current and sends it to every connected node; called
    /// every `statement_secs` and after a publish or a root change.
    pub(crate) async fn refresh_statement(&self) {
        if let Some(statement) = self.sign_statement().await {
            for node in self.inner.connections.ids() {
                self.inner.connections.send(
                    node,
                    ServerMessage::Timestamp {
                        statement: statement.clone(),
                    },
                );
            }
        }
    }

    async fn sign_statement(&self) -> Option<String> {
        let t = self.trust();
        if !t.signing() {
            return None;
        }
        let releases = match self.newest_releases().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the current releases for a statement");
                return None;
            }
        };
        let now = OffsetDateTime::now_utc();
        // Versions grow: the clock in milliseconds, or one more than the last if the clock
        // stepped back.
        let clock = now_ms().max(0) as u64;
        let mut prev = t.last_version.load(Ordering::SeqCst);
        let version = loop {
            let next = clock.max(prev + 1);
            match t
                .last_version
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break next,
                Err(now_prev) => prev = now_prev,
            }
        };
        let body = StatementBody {
            kind: "timestamp".into(),
            version,
            root_version: t.root_version(),
            issued_at: now.replace_nanosecond(0).unwrap_or(now),
            expires_at: now
                + time::Duration::seconds(self.inner.config.statement_valid_secs as i64),
            releases,
        };
        let text = Statement::sign(&body, &t.timestamp_key);
        // This process's own holder follows what it says, so its status shows its freshness.
        if let Err(e) = t
            .holder
            .lock()
            .expect("trust")
            .accept_statement(text.as_bytes(), now)
        {
            tracing::warn!(error = %e, "this server's own statement is refused by its holder");
        }
        *t.statement.lock().expect("statement") = Some((version, text.clone()));
        Some(text)
    }

    /// The newest release of every component.
    async fn newest_releases(&self) -> Result<Vec<CurrentRelease>, ServerError> {
        let rows = sqlx::query("SELECT component, version, bundle_digest FROM release")
            .fetch_all(&self.inner.pool)
            .await?;
        let mut newest: std::collections::BTreeMap<String, (semver::Version, String)> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let component: String = row.try_get(0)?;
            let Ok(version) = semver::Version::parse(&row.try_get::<String, _>(1)?) else {
                continue;
            };
            let digest: String = row.try_get(2)?;
            let newer = newest
                .get(&component)
                .is_none_or(|(v, _)| version.cmp_precedence(v).is_gt());
            if newer {
                newest.insert(component, (version, digest));
            }
        }
        Ok(newest
            .into_iter()
            .map(|(component, (version, bundle_digest))| CurrentRelease {
                component,
                version: version.to_string(),
                bundle_digest,
            })
            .collect())
    }
}
