//! The hospital system being updated: the outpatient core of a hospital information system, whose
//! frequently changing rules (fees, insurance split, triage order, registration quota) come from
//! the live rule modules ([`nonstop_runtime::Rules`]), so they can be updated while it serves.
//!
//! - the core: [`patient`], [`registration`], [`billing`], [`queue`], [`auth`], on SQLite or
//!   PostgreSQL; the hospital's own organisation and accounts, kept by its administrator:
//!   [`clinic`] (departments, doctors, clinic sessions), [`staff`] (accounts), [`closing`]
//!   (the cashier's day closing). Registration, payment, refund and cancellation first lock the
//!   patient's row, so one patient's registrations and money change one at a time, in one lock
//!   order everywhere: patient, then clinic session, then queue ticket;
//! - [`read_audit`]: who saw which patient's data, when, how and from where, beside the change
//!   audit every write keeps;
//! - [`api`]: the HTTP JSON API under `/api/v1`;
//!
//! *Not* here: the node's assembly with its store, agent and server link (`nonstop-node`), and
//! the load generator (`nonstop-loadgen`).

#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod billing;
pub mod clinic;
pub mod closing;
mod db;
mod error;
pub mod patient;
#[cfg(test)]
mod plans;
pub mod queue;
pub mod read_audit;
pub mod registration;
pub mod schema;
pub mod screen;
mod seed;
pub mod staff;
pub mod throttle;
mod write;

use nonstop_runtime::Rules;
use sqlx::AnyPool;

pub use auth::{Role, Staff};
pub use billing::{ChargeLine, DailyTotals, InvoiceView, Payment, PaymentRequest, RefundRequest};
pub use clinic::{NewSchedule, Quotas};
pub use db::Backend;
pub use error::HospitalError;
pub use patient::{InsuranceCategory, NewPatient};
pub use queue::{CheckIn, DoctorDay, DoctorSession, QueueEntry, SessionOf};
pub use read_audit::{ReadAuditPolicy, ReadEntry, ReadKind, ReadPage, ReadQuery};
pub use registration::{NewRegistration, RecordCheck, Registration};
pub use schema::{MigrationKind, Migrations};
pub(crate) use write::{Tx, args};

/// The hospital core: its database and the live rules it prices and admits with.
#[derive(Clone)]
pub struct Hospital {
    pool: AnyPool,
    backend: Backend,
    rules: Rules,
    utc_offset: time::UtcOffset,
    annual_cap_fen: i64,
    token_lifetime_ms: i64,
    lockout_after: i64,
    lockout_minutes: i64,
    tokens: auth::TokenCache,
    /// Where write transactions run ([`write`]).
    writer: write::Writer,
    /// Where reads of patients' data are recorded ([`read_audit`]).
    reads: read_audit::Recorder,
    /// Failed sign-ins per client address ([`throttle`]).
    sign_ins: std::sync::Arc<throttle::SignInThrottle>,
    /// Moved by every committed write ([`Hospital::changes`]).
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Set when the node stops: long-lived streams end ([`Hospital::end_streams`]).
    ending: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

/// The hospital's own settings, beside the rules (which the rule modules hold).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Hours east of UTC of the hospital's clock (business days, cashier totals).
    pub utc_offset_hours: i8,
    /// The insurance year's cap of fund payments per patient, in fen.
    pub annual_cap_fen: i64,
    /// How long a login token lives, in hours.
    pub token_lifetime_hours: u32,
    /// Failed sign-ins in a row that lock an account (0: never).
    pub lockout_after: u32,
    /// How long a locked account stays locked, in minutes.
    pub lockout_minutes: u32,
    /// Failed sign-ins from one client address, over any accounts, that make the node refuse
    /// that address's sign-ins for the rest of `per_address_minutes` (0: no limit).
    pub per_address_failures: u32,
    /// The window of `per_address_failures`, in minutes.
    pub per_address_minutes: u32,
    /// How reads of patients' data are recorded.
    pub read_audit: ReadAuditPolicy,
    /// How long a write may expect to wait for the SQLite writer, at its recent pace, before it
    /// is refused at once (503 `overloaded`, with `Retry-After`): the node sheds load past this
    /// rather than making every write wait longer. A burst of writes up to this much work is
    /// taken whole.
    pub max_write_wait_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            utc_offset_hours: 8,
            annual_cap_fen: 30_000_000,
            token_lifetime_hours: 12,
            lockout_after: 5,
            lockout_minutes: 15,
            per_address_failures: 20,
            per_address_minutes: 10,
            read_audit: ReadAuditPolicy::default(),
            max_write_wait_ms: write::MAX_WRITE_WAIT_MS,
        }
    }
}

impl Hospital {
    /// Connects to `database_url` (`sqlite://...` or `postgres://...`), applies migrations, and
    /// uses `rules` for every rule decision.
    pub async fn open(
        database_url: &str,
        max_connections: u32,
        rules: Rules,
    ) -> Result<Hospital, HospitalError> {
        Hospital::open_with(database_url, max_connections, rules, Migrations::All).await
    }

    /// Holds every write (`true`: each is refused at once with 503 `overloaded`, and reads are not
    /// recorded in the read audit) or lets them through again. A program under test beside the
    /// live one (issue 10) holds them: it answers replays of reads only, until it takes over.
    pub fn hold_writes(&self, held: bool) {
        self.writer.hold(held);
    }

    /// Applies the hospital's settings.
    pub fn with_policy(mut self, policy: &Policy) -> Hospital {
        self.utc_offset = time::UtcOffset::from_hms(policy.utc_offset_hours, 0, 0)
            .unwrap_or(time::UtcOffset::UTC);
        self.annual_cap_fen = policy.annual_cap_fen;
        self.token_lifetime_ms = i64::from(policy.token_lifetime_hours) * 3600 * 1000;
        self.lockout_after = i64::from(policy.lockout_after);
        self.lockout_minutes = i64::from(policy.lockout_minutes);
        self.sign_ins = std::sync::Arc::new(throttle::SignInThrottle::new(
            policy.per_address_failures,
            std::time::Duration::from_secs(60 * u64::from(policy.per_address_minutes)),
        ));
        self.writer
            .set_max_wait(std::time::Duration::from_millis(policy.max_write_wait_ms));
        // Reads recorded before go on being written by the recorder they were queued on.
        self.reads = read_audit::Recorder::new(self.writer.clone(), &policy.read_audit);
        self
    }

    /// Signs in as `username` from `address`: refused at once while that address has used up
    /// its failed sign-ins, and a failure here counts against it.
    pub async fn login_from(
        &self,
        address: &str,
        username: &str,
        password: &str,
    ) -> Result<(String, auth::Staff), HospitalError> {
        if let Err(retry_after_secs) = self.sign_ins.check(address) {
            return Err(HospitalError::Throttled {
                address: address.to_owned(),
                retry_after_secs,
            });
        }
        let result = self.login(username, password).await;
        if matches!(result, Err(HospitalError::Unauthorized(_))) {
            self.sign_ins.failed(address);
        }
        result
    }

    /// The hospital's business day now.
    pub fn business_date(&self) -> time::Date {
        time::OffsetDateTime::now_utc()
            .to_offset(self.utc_offset)
            .date()
    }

    /// The hospital's offset from UTC, in minutes (`policy.utc_offset_hours`).
    pub fn utc_offset_minutes(&self) -> i16 {
        self.utc_offset.whole_minutes()
    }

    /// The live version of each rule component: (component, version, digest).
    pub fn live_rules(&self) -> Vec<(String, String, String)> {
        self.rules
            .slots()
            .iter()
            .filter_map(|s| s.live_tag())
            .map(|t| {
                (
                    t.component.clone(),
                    t.version.to_string(),
                    t.digest.to_string(),
                )
            })
            .collect()
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Ids of the clinic sessions on `date` (`YYYY-MM-DD`), in id order.
    pub async fn schedules_on(&self, date: &str) -> Result<Vec<i64>, HospitalError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM schedule WHERE session_date = $1 ORDER BY id")
                .bind(date)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The audit trail of one record: (actor, action, detail), oldest first.
    pub async fn audit_trail(
        &self,
        entity: &str,
        id: i64,
    ) -> Result<Vec<(String, String, String)>, HospitalError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT actor, action, detail FROM audit_event WHERE entity = $1 AND entity_id = $2 ORDER BY id")
                .bind(entity)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }
}

impl Hospital {
    /// Runs `write` as one transaction: kept if it returns `Ok`, undone if it returns `Err`.
    /// The future answers once the change is durable ([`write`]).
    pub(crate) fn write<T, F>(
        &self,
        write: F,
    ) -> impl Future<Output = Result<T, HospitalError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, HospitalError> + Send + 'static,
    {
        let (written, changes) = (self.writer.run(write), self.changes.clone());
        async move {
            let result = written.await;
            if result.is_ok() {
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
            result
        }
    }
}

/// Records who did what to which record, in the same transaction as the change.
pub(crate) fn audit(
    tx: &mut Tx<'_>,
    actor: &str,
    entity: &str,
    id: i64,
    action: &str,
    detail: &str,
) -> Result<(), HospitalError> {
    audit_all(tx, actor, &[(entity, id, action, detail)])
}

/// Records what one change did to several records, `(entity, id, action, detail)` each, in one
/// statement.
pub(crate) fn audit_all(
    tx: &mut Tx<'_>,
    actor: &str,
    events: &[(&str, i64, &str, &str)],
) -> Result<(), HospitalError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let n = 3 + 4 * i;
            format!("($1, $2, ${n}, ${}, ${}, ${})", n + 1, n + 2, n + 3)
        })
        .collect();
    let sql = format!(
        "INSERT INTO audit_event (at, actor, entity, entity_id, action, detail) VALUES {}",
        rows.join(", ")
    );
    let mut bound = vec![write::Arg::from(now_ms()), actor.into()];
    for (entity, id, action, detail) in events {
        bound.extend([
            (*entity).into(),
            (*id).into(),
            (*action).into(),
            (*detail).into(),
        ]);
    }
    tx.execute(&sql, &bound)?;
    Ok(())
}

/// For a field that may be absent (no change: `None`, by `#[serde(default)]`) or present, even as
/// `null` (`Some(None)`: clear it), as in the administrator's and the desk's corrections.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
