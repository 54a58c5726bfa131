//! The triage queue (分诊叫号) and the doctor's view. A checked-in registration gets a ticket
//! whose sort weight comes from the live triage rule; doctors call the next patient; a called
//! patient who does not come is requeued where the rule says and expires after its maximum of
//! misses; a patient sent for tests is suspended and returns with the rule's return priority.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use nonstop_runtime::rules::triage_types::Ticket;

use crate::patient::{age_on, mask_id_number, parse_date};
use crate::write::FromRow;
use crate::{Hospital, HospitalError, Tx, args, now_ms};

/// Check-in of a paid registration (签到), with what the triage nurse records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The registration.
    pub appointment_id: i64,
    /// 0 none, 1 (most urgent) to 4.
    #[serde(default)]
    pub emergency_level: u8,
    /// Disabled patient.
    #[serde(default)]
    pub disabled: bool,
    /// Military or veteran priority.
    #[serde(default)]
    pub military: bool,
}

/// A queue ticket as the waiting room and the doctor see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueEntry {
    /// Ticket id.
    pub ticket_id: i64,
    /// The registration.
    pub appointment_id: i64,
    /// The patient (what the read audit records as shown).
    pub patient_id: i64,
    /// Patient name.
    pub patient_name: String,
    /// Masked ID number.
    pub id_number: String,
    /// `waiting`, `called`, `in-service`, `done`, `suspended` or `expired`.
    pub status: String,
    /// The same as a FHIR R4 Encounter status, for a FHIR facade: `arrived` (waiting, called),
    /// `in-progress`, `finished`, `onleave` (suspended) or `cancelled` (expired).
    pub encounter_status: String,
    /// The room a called patient goes to.
    pub room: Option<String>,
    /// Sort weight from the triage rule (higher is called first).
    pub weight: i64,
    /// Missed calls so far.
    pub missed_calls: i64,
    /// Whether the registration fee is paid (the doctor's view).
    pub paid: bool,
    /// The triage rule that set the weight.
    pub triage_rule: String,
}

/// A patient's fulfilled visits to a department, read at every check-in (a returning patient's
/// priority): bounded by that patient's history (see `plans.rs`).
pub(crate) const REVISITS: &str = "SELECT COUNT(*) FROM appointment WHERE patient_id = $1 AND department_id = $2 AND status = 'fulfilled'";

impl Hospital {
    /// Checks a paid registration in and puts it in its session's queue.
    pub async fn check_in(&self, actor: &str, c: &CheckIn) -> Result<QueueEntry, HospitalError> {
        if c.emergency_level > 4 {
            return Err(HospitalError::Invalid {
                field: "emergency_level",
                reason: format!("{} is not 0 to 4", c.emergency_level),
            });
        }
        let (c, actor, rules) = (c.clone(), actor.to_owned(), self.rules.clone());
        self.write(move |tx| {
            // The patient first, as registration, payment, refund and a session's cancellation
            // take them: a check-in and a refund of one registration never interleave.
            let locked = tx.execute(
                "UPDATE patient SET id = id WHERE id = (SELECT patient_id FROM appointment WHERE id = $1)",
                args![c.appointment_id],
            )?;
            if locked == 0 {
                return Err(HospitalError::NotFound {
                    what: "appointment",
                    id: c.appointment_id,
                });
            }
            let (status, schedule_id, visit_date, birth_date, channel, patient_id, department_id): (
                String,
                i64,
                String,
                String,
                String,
                i64,
                i64,
            ) = tx
                .row(
                    "SELECT a.status, a.schedule_id, a.visit_date, p.birth_date, a.channel, a.patient_id, a.department_id
                     FROM appointment a JOIN patient p ON p.id = a.patient_id WHERE a.id = $1",
                    args![c.appointment_id],
                )?
                .ok_or(HospitalError::NotFound {
                    what: "appointment",
                    id: c.appointment_id,
                })?;
            if status != "booked" {
                return Err(HospitalError::Refused {
                    rule: "registration",
                    reason: format!(
                        "registration {} is {status}: only a paid registration can check in",
                        c.appointment_id
                    ),
                });
            }
            let revisits: i64 = tx.one(REVISITS, args![patient_id, department_id])?;
            let ticket = Ticket {
                emergency_level: c.emergency_level,
                age_years: age_on(
                    parse_date("birth_date", &birth_date)?,
                    parse_date("visit_date", &visit_date)?,
                ),
                disabled: c.disabled,
                military: c.military,
                appointment: channel == "online",
                returned_from_tests: false,
                revisit: revisits > 0,
                missed_calls: 0,
            };
            let (assessment, rule) = assess(&rules, &ticket)?;
            let now = now_ms();
            let changed = tx.execute(
                "UPDATE appointment SET status = 'checked-in', updated_at = $1 WHERE id = $2 AND status = 'booked'",
                args![now, c.appointment_id],
            )?;
            if changed == 0 {
                return Err(HospitalError::Refused {
                    rule: "registration",
                    reason: format!("registration {} changed meanwhile", c.appointment_id),
                });
            }
            let ticket_id: i64 = tx.one(
                "INSERT INTO queue_ticket (appointment_id, schedule_id, status, weight, triage_rule, emergency_level, disabled,
                     military, revisit, max_misses, requeue_behind, checked_in_at, updated_at)
                 VALUES ($1, $2, 'waiting', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                args![
                    c.appointment_id,
                    schedule_id,
                    assessment.weight,
                    &rule,
                    i64::from(c.emergency_level),
                    i64::from(c.disabled),
                    i64::from(c.military),
                    i64::from(ticket.revisit),
                    i64::from(assessment.max_misses),
                    i64::from(assessment.requeue_behind),
                    now,
                    now,
                ],
            )?;
            let (weighed, ticketed) = (
                format!("weight {} by {rule}", assessment.weight),
                format!("ticket {ticket_id}"),
            );
            crate::audit_all(
                tx,
                &actor,
                &[
                    ("queue_ticket", ticket_id, "check-in", &weighed),
                    ("appointment", c.appointment_id, "check-in", &ticketed),
                ],
            )?;
            ticket_in(tx, ticket_id)
        })
        .await
    }

    /// Calls the next eligible waiting patient of a session to `room`; `None` if nobody waits.
    pub async fn call_next(
        &self,
        doctor: &str,
        schedule_id: i64,
        room: &str,
    ) -> Result<Option<QueueEntry>, HospitalError> {
        /// What one attempt found.
        enum Call {
            Called(QueueEntry),
            Nobody,
            /// Another doctor called the patient first (PostgreSQL): try again.
            Raced,
        }
        loop {
            let (doctor, room) = (doctor.to_owned(), room.to_owned());
            let call = self
                .write(move |tx| {
                    let Some(calls_made): Option<i64> = tx.row(
                        "UPDATE schedule SET calls_made = calls_made + 1 WHERE id = $1 RETURNING calls_made",
                        args![schedule_id],
                    )?
                    else {
                        return Err(HospitalError::NotFound {
                            what: "schedule",
                            id: schedule_id,
                        });
                    };
                    let next: Option<i64> = tx.row(
                        "SELECT id FROM queue_ticket WHERE schedule_id = $1 AND status = 'waiting' AND eligible_after_call < $2
                         ORDER BY weight DESC, checked_in_at, id LIMIT 1",
                        args![schedule_id, calls_made],
                    )?;
                    // Only requeued patients wait: the earliest of them comes back now.
                    let next = match next {
                        Some(id) => Some(id),
                        None => tx.row(
                            "SELECT id FROM queue_ticket WHERE schedule_id = $1 AND status = 'waiting'
                             ORDER BY eligible_after_call, weight DESC, id LIMIT 1",
                            args![schedule_id],
                        )?,
                    };
                    let Some(next) = next else {
                        tx.discard();
                        return Ok(Call::Nobody);
                    };
                    let called = tx.execute(
                        "UPDATE queue_ticket SET status = 'called', room = $1, updated_at = $2 WHERE id = $3 AND status = 'waiting'",
                        args![&room, now_ms(), next],
                    )?;
                    if called == 0 {
                        tx.discard();
                        return Ok(Call::Raced);
                    }
                    crate::audit(tx, &doctor, "queue_ticket", next, "call", &room)?;
                    Ok(Call::Called(ticket_in(tx, next)?))
                })
                .await?;
            match call {
                Call::Called(entry) => return Ok(Some(entry)),
                Call::Nobody => return Ok(None),
                Call::Raced => continue,
            }
        }
    }

    /// The called patient came in: the consultation starts.
    pub async fn start_consultation(
        &self,
        doctor: &str,
        ticket_id: i64,
    ) -> Result<QueueEntry, HospitalError> {
        self.move_ticket(doctor, ticket_id, "called", "in-service", "start")
            .await
    }

    /// The consultation ended: the ticket is done and the registration fulfilled, together.
    pub async fn finish_consultation(
        &self,
        doctor: &str,
        ticket_id: i64,
    ) -> Result<QueueEntry, HospitalError> {
        let doctor = doctor.to_owned();
        self.write(move |tx| {
            let done = tx.execute(
                "UPDATE queue_ticket SET status = 'done', updated_at = $1 WHERE id = $2 AND status = 'in-service'",
                args![now_ms(), ticket_id],
            )?;
            if done == 0 {
                let now = ticket_in(tx, ticket_id)?;
                return Err(refused_move(ticket_id, &now.status, "done"));
            }
            let appointment_id: Option<i64> = tx.row(
                "UPDATE appointment SET status = 'fulfilled', updated_at = $1
                 WHERE id = (SELECT appointment_id FROM queue_ticket WHERE id = $2) AND status = 'checked-in'
                 RETURNING id",
                args![now_ms(), ticket_id],
            )?;
            let fulfilled = format!("consultation finished: ticket {ticket_id}");
            let mut events = vec![(
                "queue_ticket",
                ticket_id,
                "finish",
                "done; registration fulfilled",
            )];
            if let Some(appointment_id) = appointment_id {
                events.push(("appointment", appointment_id, "fulfil", &fulfilled));
            }
            crate::audit_all(tx, &doctor, &events)?;
            ticket_in(tx, ticket_id)
        })
        .await
    }

    /// A called patient did not come: requeued behind the next patients as the triage rule says,
    /// or expired (no-show) after its maximum of misses.
    pub async fn miss(&self, doctor: &str, ticket_id: i64) -> Result<QueueEntry, HospitalError> {
        let (doctor, rules) = (doctor.to_owned(), self.rules.clone());
        self.write(move |tx| {
            let t = ticket_row(tx, ticket_id)?;
            if t.status != "called" {
                return Err(refused_move(ticket_id, &t.status, "missed"));
            }
            let missed = t.missed_calls + 1;
            let (assessment, rule) = assess(
                &rules,
                &Ticket {
                    missed_calls: missed as u32,
                    ..t.ticket
                },
            )?;
            let expired = missed >= i64::from(assessment.max_misses);
            // The session's call counter is read inside the update, so the requeue position is
            // where the rule says at this moment.
            let changed = tx.execute(
                "UPDATE queue_ticket SET status = $1, missed_calls = $2, weight = $3, triage_rule = $4, max_misses = $5,
                     requeue_behind = $6,
                     eligible_after_call = (SELECT calls_made FROM schedule WHERE id = queue_ticket.schedule_id) + $7,
                     room = NULL, updated_at = $8
                 WHERE id = $9 AND status = 'called' AND missed_calls = $10",
                args![
                    if expired { "expired" } else { "waiting" },
                    missed,
                    assessment.weight,
                    &rule,
                    i64::from(assessment.max_misses),
                    i64::from(assessment.requeue_behind),
                    i64::from(assessment.requeue_behind),
                    now_ms(),
                    ticket_id,
                    t.missed_calls,
                ],
            )?;
            if changed == 0 {
                return Err(refused_move(ticket_id, "changed meanwhile", "missed"));
            }
            if expired {
                tx.execute(
                    "UPDATE appointment SET status = 'noshow', updated_at = $1 WHERE id = $2 AND status = 'checked-in'",
                    args![now_ms(), t.appointment_id],
                )?;
            }
            let detail = if expired {
                format!(
                    "miss {missed}: expired after {} misses ({rule})",
                    assessment.max_misses
                )
            } else {
                format!(
                    "miss {missed}: requeued behind {} ({rule})",
                    assessment.requeue_behind
                )
            };
            crate::audit(tx, &doctor, "queue_ticket", ticket_id, "miss", &detail)?;
            ticket_in(tx, ticket_id)
        })
        .await
    }

    /// The patient is sent for tests: off the queue until they return.
    pub async fn suspend(&self, doctor: &str, ticket_id: i64) -> Result<QueueEntry, HospitalError> {
        self.move_ticket(doctor, ticket_id, "in-service", "suspended", "suspend")
            .await
    }

    /// Back from tests: waiting again, with the triage rule's return priority.
    pub async fn resume(&self, actor: &str, ticket_id: i64) -> Result<QueueEntry, HospitalError> {
        let (actor, rules) = (actor.to_owned(), self.rules.clone());
        self.write(move |tx| {
            let t = ticket_row(tx, ticket_id)?;
            if t.status != "suspended" {
                return Err(refused_move(ticket_id, &t.status, "resumed"));
            }
            let (assessment, rule) = assess(
                &rules,
                &Ticket {
                    returned_from_tests: true,
                    ..t.ticket
                },
            )?;
            let changed = tx.execute(
                "UPDATE queue_ticket SET status = 'waiting', returned_from_tests = 1, weight = $1, triage_rule = $2,
                     eligible_after_call = 0, updated_at = $3 WHERE id = $4 AND status = 'suspended'",
                args![assessment.weight, &rule, now_ms(), ticket_id],
            )?;
            if changed == 0 {
                return Err(refused_move(ticket_id, "changed meanwhile", "resumed"));
            }
            crate::audit(
                tx,
                &actor,
                "queue_ticket",
                ticket_id,
                "resume",
                &format!("weight {} by {rule}", assessment.weight),
            )?;
            ticket_in(tx, ticket_id)
        })
        .await
    }

    async fn move_ticket(
        &self,
        actor: &str,
        ticket_id: i64,
        from: &'static str,
        to: &'static str,
        action: &'static str,
    ) -> Result<QueueEntry, HospitalError> {
        let actor = actor.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE queue_ticket SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
                args![to, now_ms(), ticket_id, from],
            )?;
            if changed == 0 {
                let now = ticket_in(tx, ticket_id)?;
                return Err(refused_move(ticket_id, &now.status, to));
            }
            crate::audit(tx, &actor, "queue_ticket", ticket_id, action, to)?;
            ticket_in(tx, ticket_id)
        })
        .await
    }

    /// A page of a session's queue in calling order (in service, called, then waiting by
    /// weight, then suspended), with the paid status of each registration, and how many the
    /// whole queue holds: the doctor's view.
    pub async fn queue(
        &self,
        schedule_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<QueueEntry>, i64), HospitalError> {
        self.queue_in(schedule_id, Queue::Doctor, limit, offset)
            .await
    }

    /// A page of the waiting-room board: who is called, then who waits, in calling order; and
    /// how many that is in all.
    pub async fn board(
        &self,
        schedule_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<QueueEntry>, i64), HospitalError> {
        self.queue_in(schedule_id, Queue::Board, limit, offset)
            .await
    }

    async fn queue_in(
        &self,
        schedule_id: i64,
        which: Queue,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<QueueEntry>, i64), HospitalError> {
        // The queue's order is by status first, then weight, check-in and id within each
        // status. Each status is read on its own, in index order, with only the rows of the
        // page: ordering the whole queue by a computed rank cost every poll of a screen the
        // length of the queue.
        let segments: &[&str] = match which {
            Queue::Doctor => &["in-service", "called", "waiting", "suspended"],
            Queue::Board => &["called", "waiting"],
        };
        let (mut skip, mut want, mut total) = (offset.max(0), limit.max(0), 0i64);
        let mut entries = Vec::new();
        for status in segments {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM queue_ticket WHERE schedule_id = $1 AND status = $2",
            )
            .bind(schedule_id)
            .bind(*status)
            .fetch_one(&self.pool)
            .await?;
            total += count;
            if skip >= count {
                skip -= count;
                continue;
            }
            if want == 0 {
                continue;
            }
            let rows = sqlx::query(&format!(
                "{TICKET_SELECT} WHERE t.schedule_id = $1 AND t.status = $2
                 ORDER BY t.weight DESC, t.checked_in_at, t.id
                 LIMIT $3 OFFSET $4"
            ))
            .bind(schedule_id)
            .bind(*status)
            .bind(want)
            .bind(skip)
            .fetch_all(&self.pool)
            .await?;
            skip = 0;
            want -= rows.len() as i64;
            for row in &rows {
                entries.push(queue_entry(TicketColumns::any(row)?));
            }
        }
        Ok((entries, total))
    }

    /// One ticket as shown.
    pub async fn ticket(&self, ticket_id: i64) -> Result<QueueEntry, HospitalError> {
        let row = sqlx::query(&format!("{TICKET_SELECT} WHERE t.id = $1"))
            .bind(ticket_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound {
                what: "ticket",
                id: ticket_id,
            })?;
        Ok(queue_entry(TicketColumns::any(&row)?))
    }
}

/// The triage rule's assessment of a ticket, and the rule version that made it.
fn assess(
    rules: &nonstop_runtime::Rules,
    t: &Ticket,
) -> Result<(nonstop_runtime::rules::triage_types::Assessment, String), HospitalError> {
    let answer = rules
        .triage
        .call(t)
        .map_err(|e| HospitalError::Rule(e.to_string()))?;
    let rule = answer.version.to_string() + " " + &answer.version.digest.to_string();
    Ok((answer.output, rule))
}

/// One ticket as shown, read inside a write.
fn ticket_in(tx: &mut Tx<'_>, ticket_id: i64) -> Result<QueueEntry, HospitalError> {
    let cols = tx
        .row(
            &format!("{TICKET_SELECT} WHERE t.id = $1"),
            args![ticket_id],
        )?
        .ok_or(HospitalError::NotFound {
            what: "ticket",
            id: ticket_id,
        })?;
    Ok(queue_entry(cols))
}

/// The columns `ticket_row` reads.
type TicketState = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
    String,
    i64,
);

/// What the triage rule is asked about a ticket, with its state.
fn ticket_row(tx: &mut Tx<'_>, ticket_id: i64) -> Result<TicketRow, HospitalError> {
    let (status, appointment_id, missed_calls, emergency_level, disabled, military, returned, channel, visit_date, birth_date, revisit): TicketState = tx
        .row(
            "SELECT t.status, t.appointment_id, t.missed_calls, t.emergency_level, t.disabled, t.military,
                    t.returned_from_tests, a.channel, a.visit_date, p.birth_date, t.revisit
             FROM queue_ticket t JOIN appointment a ON a.id = t.appointment_id JOIN patient p ON p.id = a.patient_id
             WHERE t.id = $1",
            args![ticket_id],
        )?
        .ok_or(HospitalError::NotFound {
            what: "ticket",
            id: ticket_id,
        })?;
    Ok(TicketRow {
        status,
        appointment_id,
        missed_calls,
        ticket: Ticket {
            emergency_level: emergency_level.clamp(0, 4) as u8,
            age_years: age_on(
                parse_date("birth_date", &birth_date)?,
                parse_date("visit_date", &visit_date)?,
            ),
            disabled: disabled != 0,
            military: military != 0,
            appointment: channel == "online",
            returned_from_tests: returned != 0,
            revisit: revisit != 0,
            missed_calls: missed_calls as u32,
        },
    })
}

/// The columns of a [`QueueEntry`], read by [`queue_entry`].
const TICKET_SELECT: &str = "SELECT t.id, t.appointment_id, p.name, p.id_number, t.status, t.room, t.weight,
        t.missed_calls, i.status, t.triage_rule, p.id
    FROM queue_ticket t JOIN appointment a ON a.id = t.appointment_id JOIN patient p ON p.id = a.patient_id
    JOIN invoice i ON i.appointment_id = t.appointment_id";

/// The columns of [`TICKET_SELECT`].
type TicketColumns = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    String,
    i64,
);

fn queue_entry(
    (
        ticket_id,
        appointment_id,
        name,
        id_number,
        status,
        room,
        weight,
        missed_calls,
        invoice,
        rule,
        patient_id,
    ): TicketColumns,
) -> QueueEntry {
    QueueEntry {
        ticket_id,
        appointment_id,
        patient_id,
        patient_name: name,
        id_number: mask_id_number(&id_number),
        encounter_status: encounter_status(&status).into(),
        status,
        room,
        weight,
        missed_calls,
        paid: invoice == "balanced",
        triage_rule: rule,
    }
}

/// The FHIR R4 Encounter status of a queue ticket's status. The queue keeps its own, finer
/// states (called is not a state of an Encounter).
fn encounter_status(ticket: &str) -> &'static str {
    match ticket {
        "in-service" => "in-progress",
        "done" => "finished",
        "suspended" => "onleave",
        "expired" => "cancelled",
        _ => "arrived",
    }
}

struct TicketRow {
    status: String,
    appointment_id: i64,
    missed_calls: i64,
    ticket: Ticket,
}

fn refused_move(ticket_id: i64, status: &str, to: &str) -> HospitalError {
    HospitalError::Refused {
        rule: "queue",
        reason: format!("ticket {ticket_id} is {status}, so it cannot be {to}"),
    }
}

/// One of a doctor's clinic sessions with its queue and the paid status of each patient.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoctorSession {
    /// The clinic session (FHIR Schedule).
    pub schedule_id: i64,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// The department's name.
    pub department: String,
    /// Registrations holding a slot: held, paid, checked in or seen.
    pub registered: i64,
    /// Of them, paid.
    pub paid: i64,
    /// The queue in calling order (in service, called, waiting, suspended): its first 100.
    pub queue: Vec<QueueEntry>,
    /// How many the whole queue holds.
    pub queue_total: i64,
}

/// The doctor's view (the very thing the patent says doctors lose during an update): a
/// practitioner's clinic sessions of one day, each with its queue and who has paid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoctorDay {
    /// The practitioner.
    pub practitioner_id: i64,
    /// Their name.
    pub name: String,
    /// Their title.
    pub title: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Their sessions that day, morning first.
    pub sessions: Vec<DoctorSession>,
}

impl Hospital {
    /// A practitioner's sessions on `date` (`YYYY-MM-DD`) with their queues: the doctor's view.
    pub async fn doctor_day(
        &self,
        practitioner_id: i64,
        date: &str,
    ) -> Result<DoctorDay, HospitalError> {
        parse_date("date", date)?;
        let doctor = sqlx::query("SELECT name, title FROM practitioner WHERE id = $1")
            .bind(practitioner_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound {
                what: "practitioner",
                id: practitioner_id,
            })?;
        let rows = sqlx::query(
            "SELECT s.id, s.period, d.name,
                    (SELECT COUNT(*) FROM appointment a WHERE a.schedule_id = s.id
                        AND a.status IN ('pending', 'booked', 'checked-in', 'fulfilled')),
                    (SELECT COUNT(*) FROM appointment a WHERE a.schedule_id = s.id
                        AND a.status IN ('booked', 'checked-in', 'fulfilled'))
             FROM schedule s JOIN department d ON d.id = s.department_id
             WHERE s.practitioner_id = $1 AND s.session_date = $2
             ORDER BY CASE s.period WHEN 'morning' THEN 0 WHEN 'afternoon' THEN 1 ELSE 2 END",
        )
        .bind(practitioner_id)
        .bind(date)
        .fetch_all(&self.pool)
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let schedule_id: i64 = row.try_get(0)?;
            let (queue, queue_total) = self.queue(schedule_id, DAY_VIEW_QUEUE, 0).await?;
            sessions.push(DoctorSession {
                schedule_id,
                period: row.try_get(1)?,
                department: row.try_get(2)?,
                registered: row.try_get(3)?,
                paid: row.try_get(4)?,
                queue,
                queue_total,
            });
        }
        Ok(DoctorDay {
            practitioner_id,
            name: doctor.try_get(0)?,
            title: doctor.try_get(1)?,
            date: date.to_owned(),
            sessions,
        })
    }

    /// The practitioner whose clinic session a schedule or a queue ticket belongs to.
    pub async fn practitioner_of(&self, of: SessionOf) -> Result<i64, HospitalError> {
        let (sql, what, id) = match of {
            SessionOf::Schedule(id) => (
                "SELECT practitioner_id FROM schedule WHERE id = $1",
                "schedule",
                id,
            ),
            SessionOf::Ticket(id) => (
                "SELECT s.practitioner_id FROM queue_ticket t JOIN schedule s ON s.id = t.schedule_id WHERE t.id = $1",
                "ticket",
                id,
            ),
        };
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound { what, id })
    }
}

/// Which part of a queue is shown.
#[derive(Debug, Clone, Copy)]
enum Queue {
    /// Everyone not yet done: in service, called, waiting, suspended.
    Doctor,
    /// The waiting room's board: called and waiting.
    Board,
}

/// How many of a session's queue the doctor's view shows; `queue_total` tells how many wait in
/// all, and the queue endpoint pages through the rest.
const DAY_VIEW_QUEUE: i64 = 100;

/// What a doctor acts on: a clinic session, or a ticket in one.
#[derive(Debug, Clone, Copy)]
pub enum SessionOf {
    /// A clinic session by id.
    Schedule(i64),
    /// A queue ticket by id.
    Ticket(i64),
}
