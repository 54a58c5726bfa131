//! Write transactions: one SQLite writer thread with group commit, or PostgreSQL transactions.
//!
//! A write is a closure over a [`Tx`], run as one transaction: it commits if the closure returns
//! `Ok` (unless it called [`Tx::discard`]) and changes nothing if it returns `Err`. The same
//! closure runs on either database, so every query is written once.
//!
//! - **SQLite** has one writer at a time, and every statement sqlx runs is a round trip to its
//!   connection's thread (measured under `nonstop loadgen`: about 0.1 ms per statement, the cost
//!   of waking a vCPU here, so 1.1 ms for a registration that holds SQLite's lock throughout).
//!   So the node has one writer thread that owns a rusqlite connection and runs each write
//!   closure whole, with no hand-off between statements. Writes queued while it works form a
//!   group: each is a savepoint (a refusal or an error undoes only its own changes), and one
//!   commit — one fsync — makes the group durable. Nobody is answered before the commit that
//!   holds their change; if it fails, every request of the group gets the error. No library runs
//!   sqlx-style closures as a group commit on one SQLite connection, hence this module.
//! - **PostgreSQL** locks rows and commits in parallel: each write is its own transaction, run
//!   on a blocking thread that drives sqlx's statements one by one.
//!
//! A write, once started, runs to its end even if its caller goes away (a client that
//! disconnects): it is committed or undone as its closure says, never cut off half-way. A write
//! whose caller has gone before it starts is not run at all: nobody would see its answer, and a
//! client that retries (with its idempotency key) gets one outcome either way.
//!
//! Load the node cannot serve is shed, not queued without end: a write is refused at once with
//! [`HospitalError::Overloaded`] (503 with `Retry-After`) while the SQLite writer's queue stands
//! (its writes have waited past `max_write_wait_ms` for a while: a [`Backlog`]), or when
//! [`WRITE_QUEUE`] writes wait for the database (the SQLite writer, or a PostgreSQL connection).
//! So the writes it accepts keep their latency: at twice what the node serves, a queue bounded
//! by its length alone (1,024) kept every accepted write waiting for the whole queue, 130 ms.
//! Reads that need no transaction stay on the async sqlx pool.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSql, ToSqlOutput, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::oneshot;

use crate::HospitalError;

/// Requests one SQLite commit makes durable at most: bounds how long the first of them waits.
const MAX_GROUP: usize = 64;

/// Writes that may always wait, however long they have waited (see [`Backlog::refuses`]).
const FEW: usize = 8;

/// Writes that may wait for the database at once (for the SQLite writer, or running and waiting
/// for a PostgreSQL connection). At about 1 ms a write, the last of them waits about a second;
/// past it a write is refused at once rather than waiting longer. A burst of a few hundred
/// registrations (an online booking window opening) is taken whole.
pub(crate) const WRITE_QUEUE: usize = 1024;

/// How long writes may stand in the SQLite writer's queue, by default (see [`Backlog`]): CoDel's
/// own target. At 10 ms, at twice the node's capacity, accepted writes waited 21 ms at p99 in the
/// writer (the queue's 10, their group's 5, the commit), twice what they waited at capacity.
pub const MAX_WRITE_WAIT_MS: u64 = 5;

/// How long the writes taken by the SQLite writer must all have waited longer than the limit
/// before new writes are refused: a burst, or a slow commit, that the queue absorbs within this
/// is not overload.
const STANDING: Duration = Duration::from_millis(250);

/// How long after its queue stood, or after it last refused a write, the writer treats the load
/// as the same overload, not a new burst.
const RECENT: Duration = Duration::from_secs(1);

/// Over how long the writer measures its pace.
const PACE: Duration = Duration::from_millis(50);

/// Whether the SQLite writer's queue stands: admission control by how long writes wait, after
/// CoDel (Nichols and Jacobson, "Controlling Queue Delay", 2012), not by the queue's length.
///
/// The same length is a few milliseconds on one machine and a second on another, or on the same
/// one when writes get slower; and a burst that drains at once is not overload. So the writer
/// thread looks at how long each write it takes has waited: when every write it took over
/// [`STANDING`] waited longer than the limit, the queue is standing and new writes are refused at
/// once (503, `Retry-After`) until it takes one that waited less. Once it has stood, it stands
/// again as soon as a write waits too long within [`RECENT`] (as CoDel's dropping state resumes):
/// waiting [`STANDING`] again would let the queue grow by that much at every opening, which kept
/// accepted writes waiting 100 ms at twice the node's capacity. While it stood lately the queue
/// holds only what the writer takes in the limit, and the overload lasts as long as writes are
/// still refused for it: a queue kept that short no longer stands, and when the overload was
/// forgotten a second after its last standing, the queue filled to [`WRITE_QUEUE`] and stood for
/// [`STANDING`] again every second (accepted writes waited 300 ms at p99 at twice the capacity).
/// The writes already queued are all run: refusing arrivals, not dropping from the head, keeps
/// every accepted write's promise.
/// Written here because the queue is our own writer's (no tower layer sees it).
#[derive(Debug)]
pub(crate) struct Backlog {
    /// Whether new writes are refused now.
    standing: AtomicBool,
    /// Writes queued and not yet taken by the writer.
    queued: AtomicUsize,
    /// How many writes may wait while the queue stood lately: as many as the writer takes in
    /// the limit at its recent pace (no limit otherwise).
    room: AtomicUsize,
    /// The limit, in nanoseconds.
    max_wait_nanos: AtomicU64,
    /// When a write was last refused, in nanoseconds after `born` (0: never).
    refused_nanos: AtomicU64,
    born: Instant,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            standing: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            room: AtomicUsize::new(usize::MAX),
            max_wait_nanos: AtomicU64::new(MAX_WRITE_WAIT_MS * 1_000_000),
            refused_nanos: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

impl Backlog {
    /// Sets the longest writes may stand in the queue.
    pub(crate) fn set_max_wait(&self, max: Duration) {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        self.max_wait_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Why a write cannot be let in now, if it cannot. Never while fewer than [`FEW`] wait (as
    /// CoDel never drops from a queue of one packet): where a single write takes longer than the
    /// limit (a slow disk, a debug build), a few writes in a row are not overload, and were
    /// refused when this rule was missing. Not a group's worth ([`MAX_GROUP`]) either: at twice
    /// the node's capacity a standing queue of 64 kept every accepted write waiting two full
    /// groups, ~30 ms, where the limit asked for 10.
    fn refuses(&self) -> Option<HospitalError> {
        let (queued, room) = (
            self.queued.load(Ordering::Relaxed),
            self.room.load(Ordering::Relaxed),
        );
        if queued < FEW {
            return None;
        }
        let refused = if queued >= room {
            overloaded(&format!(
                "{queued} writes are waiting for the database, what it writes in {} ms at its \
                 recent pace (policy.max_write_wait_ms)",
                self.max_wait_nanos.load(Ordering::Relaxed) / 1_000_000
            ))
        } else if self.standing.load(Ordering::Relaxed) {
            overloaded(&format!(
                "the writes waiting for the database have waited over {} ms for {} ms \
                 (policy.max_write_wait_ms)",
                self.max_wait_nanos.load(Ordering::Relaxed) / 1_000_000,
                STANDING.as_millis()
            ))
        } else {
            return None;
        };
        let nanos = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.refused_nanos.store(nanos.max(1), Ordering::Relaxed);
        Some(refused)
    }

    /// Whether a write was refused within [`RECENT`] of `now`.
    fn refused_lately(&self, now: Instant) -> bool {
        match self.refused_nanos.load(Ordering::Relaxed) {
            0 => false,
            nanos => {
                now.saturating_duration_since(self.born + Duration::from_nanos(nanos)) < RECENT
            }
        }
    }
}

/// The SQLite writer's view of its queue's wait ([`Backlog`]), kept by its thread.
struct Sojourns<'b> {
    backlog: &'b Backlog,
    /// When the writes taken began to wait longer than the limit, every one since.
    above_since: Option<Instant>,
    /// When the queue last stopped standing.
    stood_until: Option<Instant>,
    /// Writes taken since `pace_since`: the writer's pace.
    taken: usize,
    pace_since: Instant,
}

impl Sojourns<'_> {
    /// The writer takes a write that was queued at `queued`.
    fn took(&mut self, queued: Instant) {
        let now = Instant::now();
        let max = Duration::from_nanos(self.backlog.max_wait_nanos.load(Ordering::Relaxed));
        self.backlog.queued.fetch_sub(1, Ordering::Relaxed);
        self.taken += 1;
        let measured = now.duration_since(self.pace_since);
        if measured >= PACE {
            // Once the queue has stood, the writes let in are as many as the writer takes in the
            // limit: letting in all that come until one waits too long would let the queue grow
            // for a whole limit's time at every opening.
            let room = if self.backlog.standing.load(Ordering::Relaxed) || self.stood_lately(now) {
                let per_sec = self.taken as f64 / measured.as_secs_f64();
                ((per_sec * max.as_secs_f64()) as usize).max(FEW)
            } else {
                usize::MAX
            };
            self.backlog.room.store(room, Ordering::Relaxed);
            (self.taken, self.pace_since) = (0, now);
        }
        // A few writes waiting are no standing queue, however long they waited.
        if now.duration_since(queued) <= max || self.backlog.queued.load(Ordering::Relaxed) < FEW {
            self.drained();
            return;
        }
        let since = *self.above_since.get_or_insert(now);
        if self.stood_lately(now) || now.duration_since(since) >= STANDING {
            self.backlog.standing.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the queue stopped standing, or a write was refused, within [`RECENT`] of `now`.
    fn stood_lately(&self, now: Instant) -> bool {
        self.stood_until
            .is_some_and(|t| now.duration_since(t) < RECENT)
            || self.backlog.refused_lately(now)
    }

    /// The queue is empty, or a write waited less than the limit: nothing stands.
    fn drained(&mut self) {
        self.above_since = None;
        if self.backlog.standing.swap(false, Ordering::Relaxed) {
            self.stood_until = Some(Instant::now());
        }
    }
}

fn overloaded(what: &str) -> HospitalError {
    HospitalError::Overloaded {
        what: what.to_owned(),
        retry_after_secs: 1,
    }
}

/// A value bound to a statement's `$n` parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    /// SQL NULL where an integer goes (PostgreSQL types its parameters).
    NullInt,
    /// SQL NULL where text goes.
    NullText,
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(v.clone())
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        v.map_or(Arg::NullInt, Arg::Int)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        v.map_or(Arg::NullText, Arg::Text)
    }
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Arg::Text(v) => ToSqlOutput::Borrowed(v.as_str().into()),
            Arg::NullInt | Arg::NullText => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// `args![a, b]`: a statement's parameters `$1`, `$2`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$($crate::write::Arg::from($a)),*][..] };
}
pub(crate) use args;

/// A column type both databases decode.
pub(crate) trait Col: Sized {
    fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    fn any(row: &AnyRow, i: usize) -> Result<Self, sqlx::Error>;
}

/// What a statement's row is read as: one column, or a tuple of columns.
pub(crate) trait FromRow: Sized {
    fn sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
    fn any(row: &AnyRow) -> Result<Self, sqlx::Error>;
}

macro_rules! columns {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
                row.get(i)
            }
            fn any(row: &AnyRow, i: usize) -> Result<Self, sqlx::Error> {
                row.try_get(i)
            }
        }
        impl FromRow for $t {
            fn sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                row.get(0)
            }
            fn any(row: &AnyRow) -> Result<Self, sqlx::Error> {
                row.try_get(0)
            }
        }
    )*};
}
columns!(i64, String, Option<i64>, Option<String>);

macro_rules! tuples {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: Col),+> FromRow for ($($t,)+) {
            fn sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($($t::sqlite(row, $i)?,)+))
            }
            fn any(row: &AnyRow) -> Result<Self, sqlx::Error> {
                Ok(($($t::any(row, $i)?,)+))
            }
        }
    )*};
}
tuples! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11)
}

/// One request's write transaction. Statements use PostgreSQL's `$n` parameters on both
/// databases.
pub(crate) struct Tx<'c> {
    conn: Conn<'c>,
    discard: bool,
}

enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres {
        tx: &'c mut Transaction<'static, Any>,
        runtime: tokio::runtime::Handle,
    },
}

impl Tx<'_> {
    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, HospitalError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => Ok(prepare(in_group(conn)?, sql, args)?.raw_execute()? as u64),
            Conn::Postgres { tx, runtime } => Ok(runtime
                .block_on(any_query(sql, args).execute(&mut ***tx))?
                .rows_affected()),
        }
    }

    /// The rows of a query.
    pub(crate) fn rows<R: FromRow>(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<R>, HospitalError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = prepare(in_group(conn)?, sql, args)?;
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(R::sqlite(row)?);
                }
                Ok(out)
            }
            Conn::Postgres { tx, runtime } => runtime
                .block_on(any_query(sql, args).fetch_all(&mut ***tx))?
                .iter()
                .map(|row| R::any(row).map_err(HospitalError::from))
                .collect(),
        }
    }

    /// The first row of a query, if any.
    pub(crate) fn row<R: FromRow>(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<R>, HospitalError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = prepare(in_group(conn)?, sql, args)?;
                let mut rows = stmt.raw_query();
                Ok(match rows.next()? {
                    Some(row) => Some(R::sqlite(row)?),
                    None => None,
                })
            }
            Conn::Postgres { tx, runtime } => {
                match runtime.block_on(any_query(sql, args).fetch_optional(&mut ***tx))? {
                    Some(row) => Ok(Some(R::any(&row)?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// The first row of a query that always has one (an aggregate, `RETURNING` of an insert).
    pub(crate) fn one<R: FromRow>(&mut self, sql: &str, args: &[Arg]) -> Result<R, HospitalError> {
        self.row(sql, args)?
            .ok_or(HospitalError::Db(sqlx::Error::RowNotFound))
    }

    /// Takes a lock on `key` until the transaction ends, `shared` with other shared holders or
    /// exclusive: a PostgreSQL advisory lock. Nothing on SQLite, whose one writer runs writes
    /// one at a time.
    pub(crate) fn lock(&mut self, key: &str, shared: bool) -> Result<(), HospitalError> {
        if matches!(self.conn, Conn::Sqlite(_)) {
            return Ok(());
        }
        let function = if shared {
            "pg_advisory_xact_lock_shared"
        } else {
            "pg_advisory_xact_lock"
        };
        // Counted, because the lock function's own result (void) is not a type sqlx decodes.
        self.one::<i64>(
            &format!("SELECT COUNT(*) FROM (SELECT {function}(hashtext($1))) l"),
            args![key],
        )?;
        Ok(())
    }

    /// Undoes this request's changes although it returns `Ok` (it found nothing to do, or lost
    /// a race it retries).
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }
}

/// Whether an error is a unique key already taken.
pub(crate) fn is_unique_violation(e: &HospitalError) -> bool {
    match e {
        HospitalError::Db(sqlx::Error::Database(d)) => d.is_unique_violation(),
        HospitalError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        }
        _ => false,
    }
}

/// The writer's connection, if its group transaction is still open. SQLite ends a transaction by
/// itself on some errors (disk full, I/O): a write that went on after one would run its
/// statements outside the group, each committed on its own.
fn in_group(conn: &rusqlite::Connection) -> Result<&rusqlite::Connection, HospitalError> {
    if conn.is_autocommit() {
        return Err(HospitalError::Commit(
            "the group transaction has ended after an error; nothing more of this write runs"
                .into(),
        ));
    }
    Ok(conn)
}

/// Prepares (from the connection's cache) and binds a statement. SQLite numbers `$n`
/// parameters in order of first appearance, not by `n`, so each is bound by its name.
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg],
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for i in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(i).unwrap_or("?");
        let arg = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
        stmt.raw_bind_parameter(i, arg)?;
    }
    Ok(stmt)
}

/// A sqlx query with `args` bound in order (reads on the pool use it too).
pub(crate) fn any_query<'q>(
    sql: &'q str,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::NullInt => query.bind(None::<i64>),
            Arg::NullText => query.bind(None::<String>),
        };
    }
    query
}

/// Where write transactions run, and whether they may: a program under test beside the live one
/// (a candidate, issue 10) holds its writes until it takes over.
#[derive(Clone)]
pub(crate) struct Writer {
    backend: Backend,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
enum Backend {
    /// The SQLite writer thread's queue (each write with when it was queued), bounded by its
    /// length and by how long writes stand in it.
    Sqlite(mpsc::SyncSender<(Instant, Job)>, Arc<Backlog>),
    /// PostgreSQL: a transaction per write from the pool, as many at once as the permits.
    Postgres(AnyPool, std::sync::Arc<tokio::sync::Semaphore>),
}

/// A write queued for the SQLite writer: runs in its savepoint, says whether to keep it, and
/// is answered once the group's commit has ended.
/// Called with `None` when it cannot run (its group's transaction failed first).
pub(crate) type Job = Box<dyn FnOnce(Option<&mut Tx<'_>>) -> Ran + Send>;

/// What a job did: whether its changes are kept, and how to answer it after the commit.
pub(crate) struct Ran {
    keep: bool,
    answer: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl Writer {
    /// PostgreSQL writes on `pool`, at most `queue` running or waiting at once.
    pub(crate) fn postgres(pool: AnyPool, queue: usize) -> Writer {
        Writer::new(Backend::Postgres(
            pool,
            std::sync::Arc::new(tokio::sync::Semaphore::new(queue)),
        ))
    }

    /// Starts the writer thread of the SQLite database at `path` (after migrations ran), with
    /// at most `queue` writes waiting for it.
    pub(crate) fn sqlite(path: &Path, queue: usize) -> Result<Writer, HospitalError> {
        let conn = rusqlite::Connection::open(path)?;
        // As the sqlx connections (see `db.rs`): WAL, FULL sync, foreign keys; a busy timeout
        // for another process (the CLI) writing.
        // Its statement journals (each request's savepoint) in memory: in a file, each group
        // commit created and unlinked one (measured: 5% of the writer's time a write).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(128);
        let (jobs, queue) = mpsc::sync_channel::<(Instant, Job)>(queue);
        let backlog = Arc::new(Backlog::default());
        let paced = backlog.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_groups(&conn, &queue, &paced))
            .map_err(|e| HospitalError::Commit(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Writer::new(Backend::Sqlite(jobs, backlog)))
    }

    fn new(backend: Backend) -> Writer {
        Writer {
            backend,
            held: std::sync::Arc::default(),
        }
    }

    /// Holds (refuses) every write from now on, or lets them through again.
    pub(crate) fn hold(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether writes are held.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets how long writes may stand in the SQLite writer's queue before new ones are refused.
    pub(crate) fn set_max_wait(&self, max: Duration) {
        if let Backend::Sqlite(_, backlog) = &self.backend {
            backlog.set_max_wait(max);
        }
    }

    /// Runs `write` as one transaction; the future answers once it is durable (or undone). On
    /// SQLite the write is queued at once, before the future is first polled, so writes are
    /// grouped and run in the order this is called.
    pub(crate) fn run<T, F>(
        &self,
        write: F,
    ) -> impl Future<Output = Result<T, HospitalError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, HospitalError> + Send + 'static,
    {
        self.run_with(write, Admit::ByWait)
    }

    /// As [`Writer::run`], let in as `admit` says.
    pub(crate) fn run_with<T, F>(
        &self,
        write: F,
        admit: Admit,
    ) -> impl Future<Output = Result<T, HospitalError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, HospitalError> + Send + 'static,
    {
        let pending = match &self.backend {
            _ if self.is_held() => Pending::Queued(Err(HospitalError::Overloaded {
                what: "this program is a candidate under test beside the live one and takes no \
                       writes"
                    .into(),
                retry_after_secs: 1,
            })),
            Backend::Sqlite(_, backlog)
                if admit == Admit::ByWait
                    && let Some(refused) = backlog.refuses() =>
            {
                Pending::Queued(Err(refused))
            }
            Backend::Sqlite(jobs, backlog) => Pending::Queued(queue(jobs, backlog, write)),
            Backend::Postgres(pool, permits) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Pending::Postgres(pool.clone(), write, permit),
                Err(_) => Pending::Queued(Err(overloaded(&format!(
                    "{WRITE_QUEUE} writes are waiting for the database already"
                )))),
            },
        };
        async move {
            match pending {
                Pending::Queued(answer) => answer?.await.map_err(|_| {
                    HospitalError::Commit(
                        "the write failed without an answer (see the node's log); nothing of it was kept"
                            .into(),
                    )
                })?,
                Pending::Postgres(pool, write, permit) => {
                    let runtime = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        postgres_write(&pool, &runtime, write)
                    })
                        .await
                        .map_err(|e| HospitalError::Commit(format!("the write failed: {e}")))?
                }
            }
        }
    }
}

/// How a write is let into the SQLite writer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Refused while writes stand in the queue ([`Backlog`]) or it is full: a request's write.
    ByWait,
    /// Refused only when the queue is full: the node's own writes that have a bounded queue of
    /// their own (the read audit's batches), so that load shed from requests does not make the
    /// audit fall behind.
    QueueOnly,
}

/// A write on its way.
enum Pending<T, F> {
    /// Queued for the SQLite writer: its answer, or why it could not be queued.
    Queued(Result<oneshot::Receiver<Result<T, HospitalError>>, HospitalError>),
    /// To run on PostgreSQL, holding one of its permits.
    Postgres(AnyPool, F, tokio::sync::OwnedSemaphorePermit),
}

/// Queues a write for the SQLite writer thread.
fn queue<T, F>(
    jobs: &mpsc::SyncSender<(Instant, Job)>,
    backlog: &Backlog,
    write: F,
) -> Result<oneshot::Receiver<Result<T, HospitalError>>, HospitalError>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T, HospitalError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move |tx| {
        let Some(tx) = tx else {
            // Not run: its group's transaction had already failed.
            return Ran {
                keep: false,
                answer: Box::new(move |outcome| {
                    let why = outcome.err().unwrap_or_default();
                    let _ = reply.send(Err(HospitalError::Commit(why)));
                }),
            };
        };
        if reply.is_closed() {
            // Its caller has gone (the client disconnected) before it started: not run.
            return Ran {
                keep: false,
                answer: Box::new(|_| {}),
            };
        }
        let result = write(tx);
        let keep = result.is_ok() && !tx.discard;
        Ran {
            keep,
            answer: Box::new(move |committed| {
                let _ = reply.send(match (result, committed) {
                    (Ok(_), Err(e)) => Err(HospitalError::Commit(e)),
                    (result, _) => result,
                });
            }),
        }
    });
    // Counted in before it is sent: the writer counts it out as it takes it.
    backlog.queued.fetch_add(1, Ordering::Relaxed);
    jobs.try_send((Instant::now(), job)).map_err(|e| {
        backlog.queued.fetch_sub(1, Ordering::Relaxed);
        match e {
            mpsc::TrySendError::Full(_) => overloaded(&format!(
                "{WRITE_QUEUE} writes are waiting for the database already"
            )),
            mpsc::TrySendError::Disconnected(_) => {
                HospitalError::Commit("the SQLite writer has stopped".into())
            }
        }
    })?;
    Ok(answer)
}

/// Runs a write as its own PostgreSQL transaction, on a blocking thread.
fn postgres_write<T, F>(
    pool: &AnyPool,
    runtime: &tokio::runtime::Handle,
    write: F,
) -> Result<T, HospitalError>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T, HospitalError>,
{
    let mut own = runtime.block_on(pool.begin())?;
    let mut tx = Tx {
        conn: Conn::Postgres {
            tx: &mut own,
            runtime: runtime.clone(),
        },
        discard: false,
    };
    let result = write(&mut tx);
    if result.is_ok() && !tx.discard {
        runtime
            .block_on(own.commit())
            .map_err(|e| HospitalError::Commit(e.to_string()))?;
    } else if let Err(e) = runtime.block_on(own.rollback()) {
        // The write's own answer stands (nothing of it is kept either way: the connection
        // goes back to the pool only once the server has ended the transaction).
        tracing::warn!(error = %e, "rolling back a write failed");
    }
    result
}

/// The writer thread: takes the first queued write, then every write queued meanwhile (up to
/// [`MAX_GROUP`], for half of `max_write_wait_ms`), each in its own savepoint, commits them
/// together, then answers them. Writes that arrive during the commit's fsync form the next
/// group. Ends when the node is dropped.
fn write_groups(
    conn: &rusqlite::Connection,
    queue: &mpsc::Receiver<(Instant, Job)>,
    backlog: &Backlog,
) {
    let mut sojourns = Sojourns {
        backlog,
        above_since: None,
        stood_until: None,
        taken: 0,
        pace_since: Instant::now(),
    };
    loop {
        let (queued, first) = match queue.try_recv() {
            Ok(next) => next,
            Err(mpsc::TryRecvError::Empty) => {
                // Nothing waits: nothing stands. (Refused writes never enter, so without this
                // the queue could empty while standing and refuse every write after.)
                sojourns.drained();
                match queue.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        sojourns.took(queued);
        if !conn.is_autocommit() {
            // A rollback after a failed group failed too: end that transaction before anything.
            tracing::error!("the writer's connection was left in a transaction; rolling it back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut answers = Vec::new();
        // A group takes writes for half the limit at most: the first of them waits for the
        // whole group, and at twice the node's capacity groups of 64 (~20 ms of writes) kept
        // every accepted write waiting twice the limit.
        let span = Duration::from_nanos(backlog.max_wait_nanos.load(Ordering::Relaxed) / 2);
        let group_began = Instant::now();
        let mut broken = conn.execute_batch("BEGIN IMMEDIATE").err();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if broken.is_some() {
                answers.push(job(None).answer);
            } else {
                match run_job(conn, job) {
                    Ok(answer) => answers.push(answer),
                    Err((answer, e)) => {
                        answers.push(answer);
                        broken = Some(e);
                    }
                }
            }
            // Once the group has failed, or has run its span, writes still queued wait for the
            // next one.
            if answers.len() < MAX_GROUP && broken.is_none() && group_began.elapsed() < span {
                next = match queue.try_recv() {
                    Ok((queued, job)) => {
                        sojourns.took(queued);
                        Some(job)
                    }
                    // Nothing waits behind this group: nothing stands (cleared before its
                    // commit, so that a write sent once this group is answered is let in).
                    Err(_) => {
                        sojourns.drained();
                        None
                    }
                };
            }
        }
        let outcome = match broken {
            None => conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
            Some(e) => Err(format!("the group transaction failed: {e}")),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, requests = answers.len(), "a group commit failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        for answer in answers {
            answer(outcome.clone());
        }
    }
}

type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Runs one write in its savepoint. A panic in it is its own failure: its changes are undone
/// and it is answered with an error (its reply is dropped), the group goes on. Fails with the
/// error that broke the group's transaction, if one did.
fn run_job(conn: &rusqlite::Connection, job: Job) -> Result<Answer, (Answer, rusqlite::Error)> {
    if let Err(e) = conn.execute_batch("SAVEPOINT request") {
        return Err((job(None).answer, e));
    }
    let mut tx = Tx {
        conn: Conn::Sqlite(conn),
        discard: false,
    };
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(Some(&mut tx))));
    let (keep, answer) = match ran {
        Ok(ran) => (ran.keep, ran.answer),
        Err(_) => {
            // Its reply went with the panic: its caller gets an error.
            tracing::error!("a write panicked; its changes are undone");
            (false, Box::new(|_| {}) as Answer)
        }
    };
    let ended = if conn.is_autocommit() {
        // SQLite ended the group's transaction on an error inside this write.
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the group transaction ended inside a write".into()),
        ))
    } else if keep {
        conn.execute_batch("RELEASE request")
    } else {
        conn.execute_batch("ROLLBACK TO request; RELEASE request")
    };
    match ended {
        Ok(()) => Ok(answer),
        Err(e) => Err((answer, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::mpsc as std_mpsc;

    use super::*;

    /// A writer on a new database with `t (n, parent)`, whose foreign key is checked at commit.
    fn writer() -> (Writer, PathBuf, tempfile::TempDir) {
        writer_with(WRITE_QUEUE)
    }

    fn writer_with(queue: usize) -> (Writer, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE parent (n INTEGER PRIMARY KEY);
                 CREATE TABLE t (n INTEGER PRIMARY KEY,
                     parent INTEGER REFERENCES parent (n) DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
        (Writer::sqlite(&path, queue).unwrap(), path, dir)
    }

    /// What another connection sees: only committed rows.
    fn committed(path: &Path) -> Vec<i64> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Holds the writer in a first write until the returned sender is used, so that every write
    /// queued meanwhile joins one group.
    fn hold(
        w: &Writer,
    ) -> (
        std_mpsc::Sender<()>,
        impl Future<Output = Result<(), HospitalError>>,
    ) {
        let (open, gate) = std_mpsc::channel::<()>();
        let first = w.run(move |_| {
            gate.recv().unwrap();
            Ok(())
        });
        (open, first)
    }

    fn insert(tx: &mut Tx<'_>, n: i64) -> Result<u64, HospitalError> {
        tx.execute("INSERT INTO t (n) VALUES ($1)", args![n])
    }

    /// Writes sharing one commit: those that return `Ok` are visible to another connection by
    /// the time they are answered; one that returns an error, discards, or panics leaves
    /// nothing (the panic is answered with an error), and the others of its group are kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_write_keeps_exactly_its_own_outcome_in_a_shared_commit() {
        let (w, path, _dir) = writer();
        let (open, first) = hold(&w);
        let mut answers = Vec::new();
        for n in 0..60_i64 {
            answers.push((
                n,
                w.run(move |tx| {
                    insert(tx, n)?;
                    match n % 4 {
                        0 => Ok(n),
                        1 => Err(HospitalError::Invalid {
                            field: "n",
                            reason: "refused after its insert".into(),
                        }),
                        2 => {
                            tx.discard();
                            Ok(n)
                        }
                        _ => panic!("a write that fails half-way"),
                    }
                }),
            ));
        }
        open.send(()).unwrap();
        first.await.unwrap();
        for (n, answer) in answers {
            let answer = answer.await;
            match n % 4 {
                0 | 2 => assert_eq!(answer.unwrap(), n),
                1 => assert!(matches!(
                    answer,
                    Err(HospitalError::Invalid { field: "n", .. })
                )),
                _ => assert!(
                    matches!(answer, Err(HospitalError::Commit(_))),
                    "{answer:?}"
                ),
            }
            if n % 4 == 0 {
                assert!(
                    committed(&path).contains(&n),
                    "{n} answered before its commit"
                );
            }
        }
        let want: Vec<i64> = (0..60).filter(|n| n % 4 == 0).collect();
        assert_eq!(committed(&path), want);
    }

    /// A unique key taken by a write earlier in the same group is taken for the ones after it,
    /// and their refusal does not undo the earlier write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_write_in_a_group_sees_the_earlier_ones() {
        let (w, path, _dir) = writer();
        let (open, first) = hold(&w);
        let answers: Vec<_> = (0..20).map(|_| w.run(|tx| insert(tx, 7))).collect();
        open.send(()).unwrap();
        first.await.unwrap();
        let mut won = 0;
        for answer in answers {
            match answer.await {
                Ok(_) => won += 1,
                Err(e) => assert!(is_unique_violation(&e), "{e}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(committed(&path), vec![7]);
    }

    /// When the commit fails (here a foreign key checked only at commit), every write of the
    /// group is answered with the error and nothing of the group is kept; the writer goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_every_write_of_its_group() {
        let (w, path, _dir) = writer();
        let (open, first) = hold(&w);
        let good = w.run(|tx| insert(tx, 1));
        let orphan = w.run(|tx| tx.execute("INSERT INTO t (n, parent) VALUES (2, 99)", &[]));
        open.send(()).unwrap();
        assert!(matches!(first.await, Err(HospitalError::Commit(_))));
        for answer in [good.await, orphan.await] {
            let Err(HospitalError::Commit(why)) = answer else {
                panic!("{answer:?}")
            };
            assert!(why.contains("FOREIGN KEY"), "{why}");
        }
        assert_eq!(committed(&path), Vec::<i64>::new());
        w.run(|tx| insert(tx, 3)).await.unwrap();
        assert_eq!(committed(&path), vec![3]);
    }

    /// When SQLite ends the group's transaction inside a write (as it does on a full disk or an
    /// I/O error; here the write ends it itself), nothing more of that write runs, the writes
    /// before it in the group are answered with an error (their changes went with the
    /// transaction), and the writes queued after it run in the next group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_ended_inside_a_write_fails_its_group_and_no_more() {
        let (w, path, _dir) = writer();
        let (open, first) = hold(&w);
        let before = w.run(|tx| insert(tx, 1));
        let ender = w.run(|tx| {
            tx.execute("ROLLBACK", &[])?;
            insert(tx, 2)
        });
        let after = w.run(|tx| insert(tx, 3));
        open.send(()).unwrap();
        assert!(matches!(first.await, Err(HospitalError::Commit(_))));
        assert!(matches!(before.await, Err(HospitalError::Commit(_))));
        let Err(HospitalError::Commit(why)) = ender.await else {
            panic!("the write went on outside its transaction")
        };
        assert!(why.contains("has ended"), "{why}");
        after.await.unwrap();
        assert_eq!(committed(&path), vec![3]);
    }

    /// `$n` is bound by its number, wherever it first appears, and a missing one is an error
    /// naming it.
    #[tokio::test]
    async fn parameters_are_bound_by_number() {
        let (w, _path, _dir) = writer();
        let row: (i64, String, i64) = w
            .run(|tx| tx.one("SELECT $2, $1, $2 + 1", args!["a", 5]))
            .await
            .unwrap();
        assert_eq!(row, (5, "a".into(), 6));
        let missing = w.run(|tx| tx.one::<i64>("SELECT $3", args![1])).await;
        assert!(missing.unwrap_err().to_string().contains("$3"));
    }

    /// Past the queue's bound a write is refused at once (to be retried), not queued; the
    /// writes queued before it are all kept, and there is room again once they are done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_a_write_at_once_and_keeps_every_queued_one() {
        let (w, path, _dir) = writer_with(4);
        let (open, first) = hold(&w);
        // The held write has left the queue once the writer runs it.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let queued: Vec<_> = (0..4).map(|n| w.run(move |tx| insert(tx, n))).collect();
        let refused = w.run(|tx| insert(tx, 99)).await;
        assert!(
            matches!(
                refused,
                Err(HospitalError::Overloaded {
                    retry_after_secs: 1,
                    ..
                })
            ),
            "{refused:?}"
        );
        open.send(()).unwrap();
        first.await.unwrap();
        for q in queued {
            q.await.unwrap();
        }
        w.run(|tx| insert(tx, 5)).await.unwrap();
        assert_eq!(committed(&path), [0, 1, 2, 3, 5]);
    }

    /// A write on its way, boxed.
    type SlowWrite<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, HospitalError>> + Send>>;

    /// Writes of `ns`, each taking `ms` milliseconds in the writer.
    fn slow_writes(w: &Writer, ns: std::ops::Range<i64>, ms: u64) -> Vec<SlowWrite<u64>> {
        ns.map(|n| {
            Box::pin(w.run(move |tx| {
                std::thread::sleep(Duration::from_millis(ms));
                insert(tx, n)
            })) as SlowWrite<u64>
        })
        .collect()
    }

    /// A burst that waits past the limit but drains at once is taken whole; a queue whose
    /// writes have all waited past the limit for a while stands, and a new write is refused at
    /// once while every queued one is kept; once it drains, writes are let in again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queue_that_stands_refuses_new_writes_at_once_and_lets_them_in_once_drained() {
        let (w, path, _dir) = writer();
        w.set_max_wait(Duration::from_millis(5));
        let (open, first) = hold(&w);
        let burst: Vec<_> = (0..10).map(|n| w.run(move |tx| insert(tx, n))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        open.send(()).unwrap();
        first.await.unwrap();
        for write in burst {
            write.await.unwrap();
        }
        w.run(|tx| insert(tx, 10)).await.unwrap();

        // A few slow writes are not overload: fewer than `FEW` wait, however long, for longer
        // than `STANDING`.
        let behind = 11 + FEW as i64;
        let few = slow_writes(&w, 11..behind, 40);
        tokio::time::sleep(STANDING + Duration::from_millis(100)).await;
        let after = w.run(move |tx| insert(tx, behind)).await;
        for write in few {
            write.await.unwrap();
        }
        after.unwrap();

        // Many slow writes, each taken 5 ms after the one before: past the limit for longer than
        // `STANDING`, with more than `FEW` still waiting.
        let last = behind + 1 + 250;
        let slow = slow_writes(&w, behind + 1..last, 5);
        tokio::time::sleep(STANDING + Duration::from_millis(200)).await;
        let refused = w.run(|tx| insert(tx, 9999)).await;
        assert!(
            matches!(
                &refused,
                Err(HospitalError::Overloaded { what, retry_after_secs: 1 })
                    if what.contains("policy.max_write_wait_ms")
            ),
            "{refused:?}"
        );
        for write in slow {
            write.await.unwrap();
        }
        w.run(move |tx| insert(tx, last)).await.unwrap();
        assert_eq!(committed(&path), (0..=last).collect::<Vec<_>>());
    }

    /// Writes offered faster than the writer takes them, for longer than [`RECENT`] after the
    /// queue first stood: the queue stays as short as the limit allows the whole time (it grew
    /// without end a second after the first standing, when the overload was forgotten although
    /// writes were still being refused), and every write let in is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overload_that_goes_on_keeps_the_queue_short_for_as_long_as_it_lasts() {
        let (w, path, _dir) = writer();
        w.set_max_wait(Duration::from_millis(5));
        let Backend::Sqlite(_, backlog) = &w.backend else {
            unreachable!("a SQLite writer")
        };
        let backlog = backlog.clone();
        // 1 ms a write (at most 1,000 a second), offered four every 2 ms (at most 2,000 a
        // second). Measured once the queue that first stood has drained.
        let (mut accepted, mut refused, mut longest) = (Vec::new(), 0, 0);
        let mut drained = false;
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < STANDING + RECENT * 2 {
            for _ in 0..4 {
                let write = w.run(move |tx| {
                    std::thread::sleep(Duration::from_millis(1));
                    insert(tx, n)
                });
                let queued = backlog.queued.load(Ordering::Relaxed);
                drained |= backlog.refused_nanos.load(Ordering::Relaxed) != 0 && queued < FEW;
                if drained {
                    longest = longest.max(queued);
                }
                accepted.push((n, tokio::spawn(write)));
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut kept = Vec::new();
        for (n, write) in accepted {
            match write.await.unwrap() {
                Ok(_) => kept.push(n),
                Err(HospitalError::Overloaded { .. }) => refused += 1,
                Err(e) => panic!("write {n}: {e}"),
            }
        }
        assert!(
            refused > 0,
            "an overload of several times the pace refused nothing"
        );
        assert_eq!(committed(&path), kept);
        assert!(
            longest <= FEW + 16,
            "{longest} writes waited at once after the first standing queue drained (at most {} \
             expected: the queue holds what the writer takes in the limit, at least a few)",
            FEW + 16
        );
    }

    /// A group takes writes for half the limit at most, then commits: its first write is
    /// answered long before the writes queued behind it have all run (it waited for all 40, in a
    /// group of up to 64, when a group took every write queued).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commits_after_half_the_limit_rather_than_keeping_its_first_write_waiting() {
        let (w, path, _dir) = writer();
        w.set_max_wait(Duration::from_millis(10));
        let last_started = Arc::new(AtomicBool::new(false));
        let (open, held) = hold(&w);
        let mut writes: Vec<_> = (0..40)
            .map(|n| {
                let last_started = last_started.clone();
                w.run(move |tx| {
                    if n == 39 {
                        last_started.store(true, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(3));
                    insert(tx, n)
                })
            })
            .collect();
        let rest = writes.split_off(1);
        open.send(()).unwrap();
        held.await.unwrap();
        writes.pop().unwrap().await.unwrap();
        assert!(
            !last_started.load(Ordering::SeqCst),
            "the first write was answered only once the 40th had started: its group took 120 ms \
             of writes where the limit is 10 ms"
        );
        for write in rest {
            write.await.unwrap();
        }
        assert_eq!(committed(&path), (0..40).collect::<Vec<_>>());
    }

    /// A write whose caller went away (its client disconnected) before the writer reached it
    /// is not run; the writes around it are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_caller_has_gone_before_it_starts_is_not_run() {
        let (w, path, _dir) = writer();
        let (open, first) = hold(&w);
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let before = w.run(|tx| insert(tx, 1));
        let gone = {
            let ran = ran.clone();
            w.run(move |tx| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                insert(tx, 2)
            })
        };
        let after = w.run(|tx| insert(tx, 3));
        drop(gone);
        open.send(()).unwrap();
        first.await.unwrap();
        before.await.unwrap();
        after.await.unwrap();
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the abandoned write ran"
        );
        assert_eq!(committed(&path), [1, 3]);
    }
}
