//! The database: SQLite (embedded, WAL) or PostgreSQL, chosen by the URL. Reads go through one
//! sqlx `Any` pool and writes through [`Writer`] (`write.rs`), both with `$n` parameters, so every
//! query is written once. Migrations are versioned files per backend, applied at start-up.

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Executor};

use crate::HospitalError;
use crate::write::Writer;

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

/// Connects, applies the migrations of the backend, and starts where writes run.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
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
                // The pool writes only the migrations, before the writer thread starts; the
                // busy timeout covers another process (the CLI) holding the lock. WAL lets
                // readers run beside the writer; foreign keys are off by default in SQLite.
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
    let writer = match backend {
        Backend::Sqlite => {
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
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
        Backend::Postgres => {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Writer::postgres(pool.clone(), crate::write::WRITE_QUEUE)
        }
    };
    Ok((pool, backend, writer))
}
