//! The server's database: SQLite in its data directory by default, PostgreSQL when several server
//! processes serve one fleet. All state lives here, so any process can serve any node. Writes
//! are few (a control plane), so they take one lock: a mutex in this process and, on PostgreSQL,
//! a transaction-scoped advisory lock shared by every process. That also serialises the audit
//! chain, whose every entry names the hash of the one before.

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::ServerError;
use crate::audit;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path`
    Sqlite,
    /// `postgres://...`
    Postgres,
}

impl FromStr for Backend {
    type Err = ServerError;
    fn from_str(url: &str) -> Result<Self, ServerError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(ServerError::invalid(
                "database_url",
                format!("{url:?} is neither sqlite:// nor postgres://"),
            ))
        }
    }
}

/// Connects and applies the migrations of the backend.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<(AnyPool, Backend), ServerError> {
    install_default_drivers();
    let backend: Backend = url.parse()?;
    let mut options = AnyPoolOptions::new().max_connections(max_connections);
    if backend == Backend::Sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
    }
    let pool = options.connect(url).await?;
    match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
        Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
    }
    Ok((pool, backend))
}

/// The server's write lock; one per process. It also counts this process's committed changes,
/// which the console's event stream waits on ([`WriteLock::changed`]).
pub(crate) struct WriteLock(tokio::sync::Mutex<()>, tokio::sync::watch::Sender<u64>);

impl Default for WriteLock {
    fn default() -> Self {
        WriteLock(
            tokio::sync::Mutex::new(()),
            tokio::sync::watch::Sender::new(0),
        )
    }
}

/// A write transaction holding the write lock. Dropped without [`Write::commit`], it rolls back.
pub(crate) struct Write<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    changes: &'a tokio::sync::watch::Sender<u64>,
    pub(crate) tx: Transaction<'static, Any>,
}

impl WriteLock {
    /// Begins a write: this process's mutex, a transaction, and on PostgreSQL the fleet-wide
    /// advisory lock (released at commit or rollback).
    pub(crate) async fn begin<'a>(
        &'a self,
        pool: &AnyPool,
        backend: Backend,
    ) -> Result<Write<'a>, ServerError> {
        let guard = self.0.lock().await;
        // IMMEDIATE: take SQLite's write lock now. A deferred transaction that reads first
        // cannot upgrade once another connection has committed (SQLITE_BUSY_SNAPSHOT), and the
        // heartbeat and hello updates write outside this process's lock.
        let mut tx = match backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        if backend == Backend::Postgres {
            // 0x6e6f6e73 = "nons": one lock for every server process of this database.
            sqlx::query("SELECT pg_advisory_xact_lock(1852796531)")
                .execute(&mut *tx)
                .await?;
        }
        Ok(Write {
            _guard: guard,
            changes: &self.1,
            tx,
        })
    }

    /// Says that something changed (a write made outside the lock: a node's connection, its
    /// hello).
    pub(crate) fn changed(&self) {
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits on changes: the counter moves with every commit and [`WriteLock::changed`].
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }
}

impl Write<'_> {
    /// Appends an entry to the audit chain inside this transaction.
    pub(crate) async fn audit(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> Result<(), ServerError> {
        audit::append(&mut self.tx, actor, action, subject, detail).await
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), ServerError> {
        self.tx.commit().await?;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
