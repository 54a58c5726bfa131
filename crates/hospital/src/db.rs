//! The database: SQLite (embedded, WAL) or PostgreSQL, chosen by the URL. Reads go through one
//! sqlx `Any` pool and writes through [`Writer`] (`write.rs`), both with `$n` parameters, so every
//! query is written once. Migrations are versioned files per backend, applied at start-up: all of
//! them, or, for a program starting beside the live one, only the expand ones ([`crate::schema`]).

use std::str::FromStr;

use nonstop_runtime::Rules;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Executor};

use crate::schema::{MigrationError, MigrationFile, MigrationKind, MigrationSet, Migrations};
use crate::write::Writer;
use crate::{Hospital, HospitalError, Policy};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path`
    Sqlite,
    /// `postgres://...`
    Postgres,
}

impl FromStr for Backend {
    type Err = HospitalError;
    fn from_str(url: &str) -> Result<Self, HospitalError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(HospitalError::Invalid {
                field: "database_url",
                reason: format!("{url:?} is neither sqlite:// nor postgres://"),
            })
        }
    }
}

/// The migrations shipped for `backend` (`migrations/<backend>/`), checked ([`MigrationSet`]).
pub(crate) fn shipped(backend: Backend) -> Result<MigrationSet, MigrationError> {
    static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
    let migrator = match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    };
    // sqlx keeps a file's version and description, not its name: every file is named
    // `<4-digit version>_<description with underscores>.sql`.
    MigrationSet::new(
        backend,
        migrator.iter().map(|m| {
            let name = format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_"));
            (name, m.sql.to_string())
        }),
    )
}

/// Connects, applies the migrations of the backend `migrations` says, and starts where writes
/// run.
pub(crate) async fn connect_with(
    url: &str,
    max_connections: u32,
    migrations: Migrations,
) -> Result<(AnyPool, Backend, Writer), HospitalError> {
    install_default_drivers();
    let backend: Backend = url.parse()?;
    // On SQLite the pool only reads (writes run on the writer thread, see `write.rs`), and WAL
    // readers do not wait for each other or for the writer; each connection is a thread, so a
    // few are enough on a small machine.
    let connections = match backend {
        Backend::Sqlite => max_connections.min(4),
        Backend::Postgres => max_connections,
    };
    let mut options = AnyPoolOptions::new().max_connections(connections);
    if backend == Backend::Sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                // The pool writes only the migrations: at start, before the writer thread
                // starts, and contract ones later, beside it; the busy timeout covers the writer
                // or another process (the CLI, the program beside this one) holding the lock.
                // WAL lets readers run beside the writer; foreign keys are off by default in
                // SQLite.
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                // FULL: an acknowledged payment survives a power failure, not just a crash.
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
    }
    let pool = options.connect(url).await?;
    shipped(backend)?.apply(&pool, migrations).await?;
    let writer = match backend {
        Backend::Sqlite => {
            let file = SqliteConnectOptions::from_str(url)?
                .get_filename()
                .to_owned();
            if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
                return Err(HospitalError::Invalid {
                    field: "database_url",
                    reason: "an in-memory SQLite database cannot be shared with the node's writer: name a file".into(),
                });
            }
            Writer::sqlite(&file, crate::write::WRITE_QUEUE)?
        }
        Backend::Postgres => Writer::postgres(pool.clone(), crate::write::WRITE_QUEUE),
    };
    Ok((pool, backend, writer))
}

impl Hospital {
    /// [`Hospital::open`], applying the pending migrations `migrations` says: a program that
    /// starts beside the live one against the same database (a candidate, issue 10) opens it with
    /// [`Migrations::ExpandOnly`], so that the live one keeps working and can come back as the
    /// standby; once that program cannot come back, [`Hospital::apply_contract_migrations`]
    /// applies the rest. Refused, with nothing applied, when a migration file declares no kind or
    /// one declared expand is not one ([`MigrationError`], naming the file and the statement).
    pub async fn open_with(
        database_url: &str,
        max_connections: u32,
        rules: Rules,
        migrations: Migrations,
    ) -> Result<Hospital, HospitalError> {
        let (pool, backend, writer) =
            connect_with(database_url, max_connections, migrations).await?;
        let policy = Policy::default();
        Ok(Hospital {
            pool,
            backend,
            rules,
            utc_offset: time::UtcOffset::UTC,
            annual_cap_fen: 0,
            token_lifetime_ms: 0,
            lockout_after: 0,
            lockout_minutes: 0,
            tokens: crate::auth::TokenCache::default(),
            reads: crate::read_audit::Recorder::new(writer.clone(), &policy.read_audit),
            sign_ins: std::sync::Arc::new(crate::throttle::SignInThrottle::new(
                0,
                std::time::Duration::ZERO,
            )),
            writer,
            changes: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            ending: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
        }
        .with_policy(&policy))
    }

    /// The shipped migrations this database has not applied yet, in order, with their kinds.
    pub async fn pending_migrations(&self) -> Result<Vec<MigrationFile>, HospitalError> {
        shipped(self.backend)?.pending(&self.pool).await
    }

    /// Whether a contract migration is pending: one that [`Migrations::ExpandOnly`] left for
    /// [`Hospital::apply_contract_migrations`].
    pub async fn contract_migrations_pending(&self) -> Result<bool, HospitalError> {
        let pending = self.pending_migrations().await?;
        Ok(pending.iter().any(|m| m.kind == MigrationKind::Contract))
    }

    /// Applies every pending migration, contract ones and those after them included, and returns
    /// those it applied. Call it only once the program before this one can no longer come back
    /// (retired, not merely the standby): a contract migration takes away what it relies on.
    pub async fn apply_contract_migrations(&self) -> Result<Vec<MigrationFile>, HospitalError> {
        shipped(self.backend)?
            .apply(&self.pool, Migrations::All)
            .await
    }
}
