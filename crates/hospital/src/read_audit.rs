//! The read audit: who saw which patient's identifying data or invoices through the API, when, by
//! which kind of read and from which address. Personal-information law asks that access be
//! traceable; the change audit (`audit_event`, written in each change's own transaction) says who
//! changed what, this says who looked.
//!
//! Reads are frequent (the doctor's view refreshes every 5 seconds), so a read is not written in
//! its own path. Its handler queues it ([`Hospital::record_read`]) before the answer is sent, on a
//! bounded queue, and one background task writes what gathered in `gather_ms` as one write (on
//! SQLite, one job in the writer's group commit). So:
//!
//! - a crash loses the reads queued and not yet written: at most those of the last `gather_ms`
//!   and of the batch being written. [`Hospital::flush_reads`] writes everything queued before
//!   it; `nonstop node` calls it when stopped, and the audit's query calls it first, so an auditor
//!   sees every read answered before they asked;
//! - a read that finds the queue full waits up to `full_wait_ms` for room, and is then refused
//!   (503): patient data is never served unrecorded;
//! - the same account seeing the same patient by the same kind of read of the same record from
//!   the same address again within `repeat_secs` is not recorded again: a doctor's view polled
//!   every 5 seconds makes a row per patient a minute, not twelve.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::write::{Arg, Writer, any_query};
use crate::{Hospital, HospitalError, Role, Staff, Tx, now_ms};

/// What kind of read showed a patient: the endpoint it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadKind {
    /// `GET /patients`: a list or a search, each patient it answered with.
    PatientSearch,
    /// `GET /patients/{id}`: one patient's details.
    Patient,
    /// `GET /patients/{id}/visits`.
    Visits,
    /// `GET /patients/{id}/invoices`.
    Invoices,
    /// `GET /patients/{id}/revisions`: a patient's earlier details.
    Revisions,
    /// `GET /invoices/{id}` (the cashier's, the desk's or a kiosk's lookup).
    Invoice,
    /// `POST /payments/quote`: the insurance split of a patient's invoice.
    PaymentQuote,
    /// `GET /schedules/{id}/queue`.
    Queue,
    /// `GET /schedules/{id}/waiting-room`.
    WaitingRoom,
    /// `GET /practitioners/{id}/day`: the doctor's view, each patient in its queues.
    DoctorDay,
    /// `GET /audit/patient/{id}`: a patient's change audit.
    ChangeAudit,
}

impl ReadKind {
    const ALL: [ReadKind; 11] = [
        ReadKind::PatientSearch,
        ReadKind::Patient,
        ReadKind::Visits,
        ReadKind::Invoices,
        ReadKind::Revisions,
        ReadKind::Invoice,
        ReadKind::PaymentQuote,
        ReadKind::Queue,
        ReadKind::WaitingRoom,
        ReadKind::DoctorDay,
        ReadKind::ChangeAudit,
    ];

    /// The kind's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadKind::PatientSearch => "patient-search",
            ReadKind::Patient => "patient",
            ReadKind::Visits => "visits",
            ReadKind::Invoices => "invoices",
            ReadKind::Revisions => "revisions",
            ReadKind::Invoice => "invoice",
            ReadKind::PaymentQuote => "payment-quote",
            ReadKind::Queue => "queue",
            ReadKind::WaitingRoom => "waiting-room",
            ReadKind::DoctorDay => "doctor-day",
            ReadKind::ChangeAudit => "change-audit",
        }
    }

    fn parse(text: &str) -> Option<ReadKind> {
        ReadKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// How reads are recorded: the queue, the batches, and whom to believe about a client's address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadAuditPolicy {
    /// Reads waiting to be written, at most.
    pub queue: usize,
    /// Rows (patients shown) gathered into one write at most; a read's rows stay together.
    pub batch_rows: usize,
    /// How long reads are gathered before they are written, in milliseconds: at most one write
    /// of the audit per interval, and what a crash can lose.
    pub gather_ms: u64,
    /// How long a read waits for room in a full queue before it is refused, in milliseconds.
    pub full_wait_ms: u64,
    /// A patient seen again by the same account, kind of read, record and address within this
    /// many seconds is not recorded again (0: every read is recorded).
    pub repeat_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed; none by default, so the address
    /// recorded is the one the connection came from.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ReadAuditPolicy {
    fn default() -> Self {
        ReadAuditPolicy {
            queue: 10_000,
            batch_rows: 1_000,
            gather_ms: 200,
            full_wait_ms: 2_000,
            repeat_secs: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

/// One patient shown by one read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadEntry {
    /// Id.
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// The account that read.
    pub user_id: i64,
    /// Its username.
    pub username: String,
    /// Its role at the time.
    pub role: Role,
    /// Which read.
    pub kind: ReadKind,
    /// The record asked for: a patient, invoice, clinic session or practitioner by its id, as
    /// the kind says; none for a search.
    pub target: Option<i64>,
    /// The patient shown.
    pub patient_id: i64,
    /// The client's IP address, or `unknown`.
    pub client: String,
}

/// A page of the read audit, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadPage {
    /// The entries.
    pub items: Vec<ReadEntry>,
    /// The `after` that asks for the next page; none on the last.
    pub next: Option<i64>,
}

/// What to look for in the read audit: every filter given applies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Reads that showed this patient.
    #[serde(default)]
    pub patient_id: Option<i64>,
    /// Reads by this username.
    #[serde(default)]
    pub staff: Option<String>,
    /// At or after this time (Unix ms).
    #[serde(default)]
    pub since: Option<i64>,
    /// Before this time (Unix ms).
    #[serde(default)]
    pub until: Option<i64>,
    /// Entries in a page, 1 to 500.
    #[serde(default = "default_limit")]
    pub limit: i64,
    /// The entries after (older than) this one: the `next` of the page before.
    #[serde(default)]
    pub after: Option<i64>,
}

fn default_limit() -> i64 {
    50
}

impl Default for ReadQuery {
    fn default() -> Self {
        ReadQuery {
            patient_id: None,
            staff: None,
            since: None,
            until: None,
            limit: default_limit(),
            after: None,
        }
    }
}

/// The address a request came from: the connection's peer, or, when the peer is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not one (each proxy appends the
/// address it was reached from, so the entries a client wrote itself come first and are not
/// believed). `unknown` when the server did not say (a router served without connect info).
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> String {
    let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
        return "unknown".into();
    };
    let mut client = peer;
    if trusted.contains(&client)
        && let Some(forwarded) = forwarded_for
    {
        for hop in forwarded.rsplit(',') {
            // A hop that is not an address ends what can be believed: the last believed stands.
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !trusted.contains(&client) {
                break;
            }
        }
    }
    client.to_string()
}

/// One read, as queued.
struct Read {
    at: i64,
    user_id: i64,
    username: String,
    role: Role,
    kind: ReadKind,
    target: Option<i64>,
    client: String,
    patients: Vec<i64>,
}

enum Message {
    Read(Read),
    /// Answered once every read queued before it is written.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Where reads are queued: the queue and its writing task start with the first read.
#[derive(Clone)]
pub(crate) struct Recorder {
    policy: Arc<ReadAuditPolicy>,
    writer: Writer,
    queue: Arc<OnceLock<mpsc::Sender<Message>>>,
}

impl Recorder {
    pub(crate) fn new(writer: Writer, policy: &ReadAuditPolicy) -> Recorder {
        Recorder {
            policy: Arc::new(policy.clone()),
            writer,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// The queue, its writing task started if it was not. (Called from async code only: the
    /// task is spawned on the caller's runtime.)
    fn queue(&self) -> &mpsc::Sender<Message> {
        self.queue.get_or_init(|| {
            let (queue, reads) = mpsc::channel(self.policy.queue.max(1));
            tokio::spawn(write_reads(reads, self.writer.clone(), self.policy.clone()));
            queue
        })
    }
}

fn stopped() -> HospitalError {
    HospitalError::ReadAudit("its writer has stopped".into())
}

impl Hospital {
    /// Records that `staff`, from `client`, saw `patients` by a read of `kind` (of the record
    /// `target`). Answers once the read is queued, not written (see the module's text); refuses
    /// when the queue stays full, and then the read's answer must not be sent.
    pub async fn record_read(
        &self,
        staff: &Staff,
        kind: ReadKind,
        target: Option<i64>,
        client: &str,
        patients: impl IntoIterator<Item = i64>,
    ) -> Result<(), HospitalError> {
        let mut patients: Vec<i64> = patients.into_iter().collect();
        // A program under test answers only replays of reads the live program recorded already.
        if patients.is_empty() || self.writer.is_held() {
            return Ok(());
        }
        patients.sort_unstable();
        patients.dedup();
        let read = Message::Read(Read {
            at: now_ms(),
            user_id: staff.user_id,
            username: staff.username.clone(),
            role: staff.role,
            kind,
            target,
            client: client.to_owned(),
            patients,
        });
        let queue = self.reads.queue();
        match queue.try_send(read) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
            Err(mpsc::error::TrySendError::Full(read)) => {
                let wait = Duration::from_millis(self.reads.policy.full_wait_ms);
                match tokio::time::timeout(wait, queue.send(read)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(stopped()),
                    Err(_) => {
                        tracing::error!(
                            queued = self.reads.policy.queue,
                            "the read audit is not keeping up: a read was refused"
                        );
                        Err(HospitalError::ReadAudit(format!(
                            "{} reads wait to be recorded; this one is not served unrecorded",
                            self.reads.policy.queue
                        )))
                    }
                }
            }
        }
    }

    /// Writes every read queued before this call; answers when they are durable.
    pub async fn flush_reads(&self) -> Result<(), HospitalError> {
        let Some(queue) = self.reads.queue.get() else {
            return Ok(()); // nothing was ever recorded by this process
        };
        let (done, written) = oneshot::channel();
        queue
            .send(Message::Flush(done))
            .await
            .map_err(|_| stopped())?;
        written
            .await
            .map_err(|_| stopped())?
            .map_err(HospitalError::ReadAudit)
    }

    /// The client address a request came from, believing `X-Forwarded-For` only from the
    /// configured trusted proxies ([`client_address`]).
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> String {
        client_address(peer, forwarded_for, &self.reads.policy.trusted_proxies)
    }

    /// A page of the read audit, newest first (by time, then id), after the reads queued so far
    /// are written.
    pub async fn read_audit(&self, q: &ReadQuery) -> Result<ReadPage, HospitalError> {
        if !(1..=500).contains(&q.limit) {
            return Err(HospitalError::Invalid {
                field: "limit",
                reason: format!("{} is not 1 to 500", q.limit),
            });
        }
        if let Some(staff) = &q.staff
            && (staff.is_empty() || staff.len() > 64)
        {
            return Err(HospitalError::Invalid {
                field: "staff",
                reason: "must be a username of 1 to 64 characters".into(),
            });
        }
        self.flush_reads().await?;
        let mut sql = String::from(
            "SELECT id, at, user_id, username, role, kind, target, patient_id, client FROM read_audit WHERE 1 = 1",
        );
        let mut args = Vec::new();
        let mut and = |clause: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(" AND ");
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(patient) = q.patient_id {
            and("patient_id = ?", patient.into());
        }
        if let Some(staff) = &q.staff {
            and("username = ?", staff.into());
        }
        if let Some(since) = q.since {
            and("at >= ?", since.into());
        }
        if let Some(until) = q.until {
            and("at < ?", until.into());
        }
        if let Some(after) = q.after {
            // Scrolling by (at, id), which every index of the table serves in order.
            and(
                "(at, id) < (SELECT at, id FROM read_audit WHERE id = ?)",
                after.into(),
            );
        }
        args.push((q.limit + 1).into());
        sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ${}", args.len()));
        let rows = any_query(&sql, &args).fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(|r| {
                let (role, kind): (String, String) = (r.try_get(4)?, r.try_get(5)?);
                Ok(ReadEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    user_id: r.try_get(2)?,
                    username: r.try_get(3)?,
                    role: Role::parse(&role)
                        .ok_or_else(|| HospitalError::ReadAudit(format!("unknown role {role}")))?,
                    kind: ReadKind::parse(&kind).ok_or_else(|| {
                        HospitalError::ReadAudit(format!("unknown kind of read {kind}"))
                    })?,
                    target: r.try_get(6)?,
                    patient_id: r.try_get(7)?,
                    client: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, HospitalError>>()?;
        let next = if items.len() as i64 > q.limit {
            items.truncate(q.limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(ReadPage { items, next })
    }
}

/// The task that writes queued reads: it takes the first, gathers what comes for `gather_ms`
/// (less when a flush is asked for, or the batch is full), writes them as one write, answers the
/// flushes, and goes on. It ends when the hospital is dropped, after writing what was queued.
async fn write_reads(
    mut reads: mpsc::Receiver<Message>,
    writer: Writer,
    policy: Arc<ReadAuditPolicy>,
) {
    let mut recent = Recent::default();
    let window_ms = i64::try_from(policy.repeat_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    while let Some(first) = reads.recv().await {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(policy.gather_ms);
        let (mut batch, mut flushes, mut rows) = (Vec::new(), Vec::new(), 0);
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Read(read) => {
                    rows += read.patients.len();
                    batch.push(read);
                }
                Message::Flush(done) => flushes.push(done),
            }
            if rows >= policy.batch_rows || !flushes.is_empty() {
                break;
            }
            if let Ok(Some(message)) = tokio::time::timeout_at(deadline, reads.recv()).await {
                next = Some(message);
            }
        }
        let rows = Arc::new(recent.rows(batch, window_ms));
        let mut pause = Duration::from_millis(100);
        while !rows.is_empty() {
            let to_write = rows.clone();
            match writer
                .run_with(
                    move |tx| insert(tx, &to_write),
                    crate::write::Admit::QueueOnly,
                )
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, rows = rows.len(), "writing the read audit failed");
                    for done in flushes.drain(..) {
                        let _ = done.send(Err(format!("writing it failed: {e}")));
                    }
                    if reads.is_closed() {
                        tracing::error!(rows = rows.len(), "the node stops: these reads are lost");
                        break;
                    }
                    // Reads queue meanwhile; once the queue is full they are refused.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in flushes {
            let _ = done.send(Ok(()));
        }
    }
}

/// One row to write: a read and one patient it showed.
struct ReadRow {
    read: Arc<Read>,
    patient_id: i64,
}

/// Rows in one `INSERT` (of 8 parameters each); the rest go one by one. Two statement texts
/// only, so the writer's statement cache keeps them beside the other writes' statements.
const ROWS_PER_INSERT: usize = 32;

fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let n: Vec<String> = (1..=8).map(|k| format!("${}", 8 * i + k)).collect();
            format!("({})", n.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO read_audit (at, user_id, username, role, kind, target, patient_id, client) VALUES {}",
        values.join(", ")
    )
}

static INSERT_MANY: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));

fn insert(tx: &mut Tx<'_>, rows: &[ReadRow]) -> Result<(), HospitalError> {
    let bound = |rows: &[ReadRow]| -> Vec<Arg> {
        rows.iter()
            .flat_map(|r| {
                [
                    r.read.at.into(),
                    r.read.user_id.into(),
                    r.read.username.as_str().into(),
                    r.read.role.as_str().into(),
                    r.read.kind.as_str().into(),
                    r.read.target.into(),
                    r.patient_id.into(),
                    r.read.client.as_str().into(),
                ]
            })
            .collect()
    };
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        tx.execute(&INSERT_MANY, &bound(chunk))?;
    }
    for row in chunks.remainder() {
        tx.execute(&INSERT_ONE, &bound(std::slice::from_ref(row)))?;
    }
    Ok(())
}

/// Who saw which patient how, and when that was last recorded (Unix ms).
#[derive(Hash, PartialEq, Eq)]
struct Seen {
    user_id: i64,
    kind: ReadKind,
    target: Option<i64>,
    client: String,
    patient_id: i64,
}

/// Repeats remembered at most (some 100 bytes each); past it, the ones older than the window are
/// forgotten, and if that is not enough, all: a forgotten repeat is only recorded again.
const REMEMBERED: usize = 100_000;

/// The reads recorded within the repeat window.
#[derive(Default)]
struct Recent(HashMap<Seen, i64>);

impl Recent {
    /// The rows to write for `reads`: each patient each read showed, but those seen the same way
    /// less than `window_ms` after they were last recorded.
    fn rows(&mut self, reads: Vec<Read>, window_ms: i64) -> Vec<ReadRow> {
        let mut rows = Vec::new();
        for read in reads {
            let read = Arc::new(read);
            for &patient_id in &read.patients {
                if window_ms > 0 {
                    let seen = Seen {
                        user_id: read.user_id,
                        kind: read.kind,
                        target: read.target,
                        client: read.client.clone(),
                        patient_id,
                    };
                    // A clock set back records the read rather than trusting the difference.
                    if let Some(&last) = self.0.get(&seen)
                        && read.at >= last
                        && read.at - last < window_ms
                    {
                        continue;
                    }
                    self.0.insert(seen, read.at);
                }
                rows.push(ReadRow {
                    read: read.clone(),
                    patient_id,
                });
            }
        }
        if self.0.len() > REMEMBERED {
            let now = now_ms();
            self.0.retain(|_, at| now - *at < window_ms);
            if self.0.len() > REMEMBERED {
                self.0.clear();
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// `X-Forwarded-For` is believed only from a trusted proxy, and only as far back as the
    /// trusted hops go: what a client wrote into it itself is not its address.
    #[test]
    fn a_client_address_believes_forwarding_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.5");
        let trusted = [proxy, ip("10.0.0.6")];
        let from = |peer: Option<&str>, header: Option<&str>, trusted: &[IpAddr]| {
            client_address(peer.map(ip), header, trusted)
        };
        assert_eq!(from(None, Some("1.2.3.4"), &trusted), "unknown");
        assert_eq!(from(Some("192.168.1.9"), None, &trusted), "192.168.1.9");
        // Not from a trusted proxy: the header is anyone's to write.
        assert_eq!(
            from(Some("192.168.1.9"), Some("1.2.3.4"), &trusted),
            "192.168.1.9"
        );
        assert_eq!(from(Some("10.0.0.5"), Some("192.168.1.9"), &[]), "10.0.0.5");
        // Through two trusted proxies; the client's own "1.1.1.1" is not believed.
        assert_eq!(
            from(
                Some("10.0.0.5"),
                Some("1.1.1.1, 192.168.1.9, 10.0.0.6"),
                &trusted
            ),
            "192.168.1.9"
        );
        assert_eq!(
            from(Some("10.0.0.5"), Some("junk, 10.0.0.6"), &trusted),
            "10.0.0.6"
        );
        assert_eq!(from(Some("10.0.0.5"), None, &trusted), "10.0.0.5");
        // An IPv4 client reaching a dual-stack listener is recorded as IPv4.
        assert_eq!(
            from(Some("::ffff:192.168.1.9"), None, &trusted),
            "192.168.1.9"
        );
    }

    fn read(at: i64, client: &str, patients: &[i64]) -> Read {
        Read {
            at,
            user_id: 7,
            username: "doctor".into(),
            role: Role::Doctor,
            kind: ReadKind::DoctorDay,
            target: Some(3),
            client: client.into(),
            patients: patients.to_vec(),
        }
    }

    /// A view polled again within the window records only the patients new to it, or seen from
    /// elsewhere; after the window, all again; with no window, every read.
    #[test]
    fn repeats_within_the_window_are_recorded_once() {
        let shown = |rows: Vec<ReadRow>| -> Vec<(i64, i64)> {
            rows.iter().map(|r| (r.read.at, r.patient_id)).collect()
        };
        let mut recent = Recent::default();
        let rows = recent.rows(
            vec![
                read(1_000, "10.1.1.1", &[1, 2]),
                read(6_000, "10.1.1.1", &[1, 2, 3]),
                read(7_000, "10.1.1.2", &[1]),
            ],
            60_000,
        );
        assert_eq!(
            shown(rows),
            [(1_000, 1), (1_000, 2), (6_000, 3), (7_000, 1)]
        );
        let rows = recent.rows(vec![read(61_000, "10.1.1.1", &[1, 2, 3])], 60_000);
        assert_eq!(shown(rows), [(61_000, 1), (61_000, 2)]);
        let mut every = Recent::default();
        let rows = every.rows(
            vec![read(1_000, "10.1.1.1", &[1]), read(1_001, "10.1.1.1", &[1])],
            0,
        );
        assert_eq!(shown(rows), [(1_000, 1), (1_001, 1)]);
    }
}
