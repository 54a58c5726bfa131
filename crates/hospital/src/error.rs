//! Why a hospital operation was refused or failed. Refusals name the field or rule that refused;
//! a refused operation changes nothing.

/// Errors of the hospital core.
#[derive(Debug, thiserror::Error)]
pub enum HospitalError {
    /// More writes are waiting than the node takes: refused at once, to be retried.
    #[error("the node is overloaded ({what}): retry in {retry_after_secs} s")]
    Overloaded {
        /// What is full.
        what: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A field of the request is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `id_number`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The record would duplicate an existing one (an ID number registered already).
    #[error("invalid {field}: {reason}")]
    Duplicate {
        /// The field, e.g. `id_number`.
        field: &'static str,
        /// What is wrong with it, naming the existing record.
        reason: String,
        /// The existing record's id.
        existing_id: i64,
    },
    /// A referenced record does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `patient`, `schedule`...
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// A hospital rule refused the request (quota, daily limit, fee).
    #[error("refused by the {rule} rule: {reason}")]
    Refused {
        /// The rule component.
        rule: &'static str,
        /// Its reason.
        reason: String,
    },
    /// The pool the quota rule chose was taken by concurrent registrations.
    #[error("no {pool} slot left in schedule {schedule}")]
    QuotaExhausted {
        /// The schedule.
        schedule: i64,
        /// The pool.
        pool: &'static str,
    },
    /// No valid credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Too many failed sign-ins from this client address: none is checked until the wait ends.
    #[error(
        "too many failed sign-ins from {address}: try again in {retry_after_secs} s (per-address \
         limit; the accounts themselves are not locked by it)"
    )]
    Throttled {
        /// The client address.
        address: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The caller's role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Hashing a secret failed.
    #[error("authentication: {0}")]
    Auth(String),
    /// A rule module could not answer (no live version, or it failed with no standby).
    #[error("rule unavailable: {0}")]
    Rule(String),
    /// The commit that would have made the request durable failed: nothing of it was kept.
    #[error("commit failed, nothing was recorded: {0}")]
    Commit(String),
    /// A read of patients' data could not be recorded in the read audit (so it is not served),
    /// or the audit could not be written.
    #[error("read audit: {0}")]
    ReadAudit(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The SQLite writer's database failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
