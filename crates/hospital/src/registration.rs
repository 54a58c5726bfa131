//! Registration (挂号, FHIR Appointment): holding a slot in a doctor's clinic session. The quota
//! rule decides whether and from which pool; the fees rule prices the visit; the slot is taken by
//! one conditional update, so a session with quota N never accepts N+1. The price and the rule
//! versions that computed it are stored with the registration: the price quoted is the price
//! charged even if the rules change before payment.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use nonstop_runtime::rules::fees_types::{ClinicType, DoctorTitle, FeeRequest};
use nonstop_runtime::rules::quota_types::{Channel, QuotaRequest};

use crate::patient::{age_on, parse_date};
use crate::{Hospital, HospitalError, args, now_ms};

/// A registration request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRegistration {
    /// The patient.
    pub patient_id: i64,
    /// The clinic session (FHIR Schedule).
    pub schedule_id: i64,
    /// `on-site`, `online` or `elderly-reserved`.
    pub channel: String,
}

/// A registration as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    /// Its id.
    pub id: i64,
    /// The invoice of its fee.
    pub invoice_id: i64,
    /// The patient.
    pub patient_id: i64,
    /// The clinic session.
    pub schedule_id: i64,
    /// FHIR Appointment status: `pending` while held, then `booked` when paid, ...
    pub status: String,
    /// The pool its slot was taken from.
    pub pool: String,
    /// The registration fee, in fen.
    pub fee_fen: i64,
    /// When an unpaid hold lapses (Unix ms).
    pub hold_expires_at: i64,
    /// The fees rule that priced it: component, version and digest.
    pub fee_rule: String,
    /// The quota rule that admitted it.
    pub quota_rule: String,
}

/// What [`Hospital::register`] would charge, quoted before the desk confirms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeeQuote {
    /// The fee, in fen.
    pub fee_fen: i64,
    /// The pool the slot would come from.
    pub pool: String,
    /// The fees rule that priced it: component, version and digest.
    pub fee_rule: String,
    /// The quota rule that would admit it.
    pub quota_rule: String,
    /// The fee line by line.
    pub lines: Vec<QuotedLine>,
}

/// One line of a quoted fee.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuotedLine {
    /// Item code.
    pub code: String,
    /// What it is.
    pub description: String,
    /// Amount in fen.
    pub amount_fen: i64,
}

/// A registration made, or only quoted.
enum Held {
    Registration(Registration),
    Quote(FeeQuote),
}

fn channel(text: &str) -> Result<Channel, HospitalError> {
    match text {
        "on-site" => Ok(Channel::OnSite),
        "online" => Ok(Channel::Online),
        "elderly-reserved" => Ok(Channel::ElderlyReserved),
        other => Err(HospitalError::Invalid {
            field: "channel",
            reason: format!("{other:?} is not on-site, online or elderly-reserved"),
        }),
    }
}

/// The pool's name and its columns in `schedule`.
fn pool_columns(pool: Channel) -> (&'static str, &'static str, &'static str) {
    match pool {
        Channel::OnSite => ("on-site", "taken_on_site", "quota_on_site"),
        Channel::Online => ("online", "taken_online", "quota_online"),
        Channel::ElderlyReserved => ("elderly-reserved", "taken_elderly", "quota_elderly"),
    }
}

fn title(text: &str) -> DoctorTitle {
    match text {
        "chief" => DoctorTitle::Chief,
        "associate-chief" => DoctorTitle::AssociateChief,
        "attending" => DoctorTitle::Attending,
        _ => DoctorTitle::Resident,
    }
}

fn clinic(text: &str) -> ClinicType {
    match text {
        "specialist" => ClinicType::Specialist,
        "emergency" => ClinicType::Emergency,
        "night" => ClinicType::Night,
        "holiday" => ClinicType::Holiday,
        _ => ClinicType::General,
    }
}

/// A patient's age, registrations today and fulfilled visits in a department, read inside every
/// registration (the quota rule's inputs): bounded by that patient's history (see `plans.rs`).
pub(crate) const PATIENT_IN_DEPARTMENT: &str = "SELECT p.birth_date,
        (SELECT COUNT(*) FROM appointment a WHERE a.patient_id = p.id AND a.department_id = $2
            AND a.visit_date = $3 AND a.status <> 'cancelled'),
        (SELECT COUNT(*) FROM appointment a WHERE a.patient_id = p.id AND a.department_id = $2
            AND a.status = 'fulfilled')
 FROM patient p WHERE p.id = $1";

impl Hospital {
    /// Holds a slot for a patient in a clinic session and prices it. Refused (and nothing
    /// changed) when the quota rule refuses, the fees rule cannot price it, or the pool ran out.
    /// Read, decided and written in one transaction that first locks the patient: two
    /// registrations of one patient at once are decided one after the other.
    pub async fn register(
        &self,
        actor: &str,
        r: &NewRegistration,
    ) -> Result<Registration, HospitalError> {
        match self.hold(actor, r, false).await? {
            Held::Registration(registration) => Ok(registration),
            Held::Quote(_) => Err(HospitalError::Commit(
                "a registration was only quoted".into(),
            )),
        }
    }

    /// The fee a registration would be charged now, line by line, and the pool its slot would
    /// come from, decided by the live rules exactly as [`Hospital::register`] decides them; no
    /// slot is held and nothing is kept.
    pub async fn quote_registration(
        &self,
        actor: &str,
        r: &NewRegistration,
    ) -> Result<FeeQuote, HospitalError> {
        match self.hold(actor, r, true).await? {
            Held::Quote(quote) => Ok(quote),
            Held::Registration(_) => Err(HospitalError::Commit("a quote held a slot".into())),
        }
    }

    /// [`Hospital::register`], or with `quote_only` its quote, undone before any slot is taken.
    async fn hold(
        &self,
        actor: &str,
        r: &NewRegistration,
        quote_only: bool,
    ) -> Result<Held, HospitalError> {
        let requested = channel(&r.channel)?;
        let (r, actor) = (r.clone(), actor.to_owned());
        let (rules, today) = (self.rules.clone(), self.business_date());
        self.write(move |tx| {
            let (department_id, visit_date, clinic_type, level, title_text, left_on_site, left_online, left_elderly, status, why): (
                i64,
                String,
                String,
                i64,
                String,
                i64,
                i64,
                i64,
                String,
                Option<String>,
            ) = tx
                .row(
                    "SELECT s.department_id, s.session_date, s.clinic_type, s.registration_level, p.title,
                            s.quota_on_site - s.taken_on_site, s.quota_online - s.taken_online,
                            s.quota_elderly - s.taken_elderly, s.status, s.status_reason
                     FROM schedule s JOIN practitioner p ON p.id = s.practitioner_id WHERE s.id = $1",
                    args![r.schedule_id],
                )?
                .ok_or(HospitalError::NotFound {
                    what: "schedule",
                    id: r.schedule_id,
                })?;
            if status != "active" {
                return Err(HospitalError::Refused {
                    rule: "registration",
                    reason: format!(
                        "schedule {} is {status}: {}",
                        r.schedule_id,
                        why.unwrap_or_default()
                    ),
                });
            }
            let visit_day = parse_date("session_date", &visit_date)?;
            if visit_day < today {
                return Err(HospitalError::Refused {
                    rule: "registration",
                    reason: format!(
                        "schedule {} was on {visit_date}, which has passed",
                        r.schedule_id
                    ),
                });
            }
            // The patient first (the same order as payment and cancellation).
            if tx.execute("UPDATE patient SET id = id WHERE id = $1", args![r.patient_id])? == 0 {
                return Err(HospitalError::NotFound {
                    what: "patient",
                    id: r.patient_id,
                });
            }
            let (birth_date, active_today, earlier_visits): (String, i64, i64) = tx.one(
                PATIENT_IN_DEPARTMENT,
                args![r.patient_id, department_id, &visit_date],
            )?;
            let age = age_on(parse_date("birth_date", &birth_date)?, visit_day);
            let remaining = |left: i64| left.max(0) as u32;
            let decision = rules
                .quota
                .call(&QuotaRequest {
                    channel: requested,
                    remaining_on_site: remaining(left_on_site),
                    remaining_online: remaining(left_online),
                    remaining_elderly: remaining(left_elderly),
                    patient_age_years: age,
                    registrations_today_in_department: active_today as u32,
                })
                .map_err(|e| HospitalError::Rule(e.to_string()))?;
            let quota_rule =
                decision.version.to_string() + " " + &decision.version.digest.to_string();
            let decision = decision.output;
            let Some(pool) = decision.take_from.filter(|_| decision.accept) else {
                return Err(HospitalError::Refused {
                    rule: "quota",
                    reason: decision.reason,
                });
            };
            let fee = rules
                .fees
                .call(&FeeRequest {
                    registration_level: level.clamp(0, 255) as u8,
                    doctor_title: title(&title_text),
                    clinic_type: clinic(&clinic_type),
                    patient_age_years: age,
                    first_visit: earlier_visits == 0,
                })
                .map_err(|e| HospitalError::Rule(e.to_string()))?;
            let fee_rule = fee.version.to_string() + " " + &fee.version.digest.to_string();
            let quote = fee.output.map_err(|reason| HospitalError::Refused {
                rule: "fees",
                reason,
            })?;
            if quote_only {
                tx.discard();
                let (pool_name, ..) = pool_columns(pool);
                return Ok(Held::Quote(FeeQuote {
                    fee_fen: quote.total_fen,
                    pool: pool_name.into(),
                    fee_rule,
                    quota_rule,
                    lines: quote
                        .lines
                        .iter()
                        .map(|l| QuotedLine {
                            code: l.code.clone(),
                            description: l.description.clone(),
                            amount_fen: l.amount_fen,
                        })
                        .collect(),
                }));
            }

            // The slot: one conditional update, so a session with quota N never accepts N+1, nor
            // one cancelled meanwhile any.
            let (pool_name, taken, quota) = pool_columns(pool);
            let taken_now = tx.execute(
                &format!(
                    "UPDATE schedule SET {taken} = {taken} + 1 WHERE id = $1 AND {taken} < {quota} AND status = 'active'"
                ),
                args![r.schedule_id],
            )?;
            if taken_now == 0 {
                let status: String = tx.one("SELECT status FROM schedule WHERE id = $1", args![r.schedule_id])?;
                if status != "active" {
                    return Err(HospitalError::Refused {
                        rule: "registration",
                        reason: format!("schedule {} is {status}", r.schedule_id),
                    });
                }
                return Err(HospitalError::QuotaExhausted {
                    schedule: r.schedule_id,
                    pool: pool_name,
                });
            }
            let now = now_ms();
            let hold_expires_at = now + i64::from(decision.hold_seconds) * 1000;
            let id: i64 = tx.one(
                "INSERT INTO appointment (patient_id, schedule_id, department_id, visit_date, channel, pool, status,
                     hold_expires_at, fee_fen, fee_lines, fee_rule, quota_rule, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                args![
                    r.patient_id,
                    r.schedule_id,
                    department_id,
                    &visit_date,
                    &r.channel,
                    pool_name,
                    hold_expires_at,
                    quote.total_fen,
                    serde_json::to_string(&quote.lines).unwrap_or_default(),
                    &fee_rule,
                    &quota_rule,
                    &actor,
                    now,
                    now,
                ],
            )?;
            let invoice_id: i64 = tx.one(
                "INSERT INTO invoice (patient_id, appointment_id, status, total_fen, created_at, updated_at)
                 VALUES ($1, $2, 'issued', $3, $4, $5) RETURNING id",
                args![r.patient_id, id, quote.total_fen, now, now],
            )?;
            // Registration fees (医事服务费) are class A items of the insurance catalogue.
            for line in &quote.lines {
                tx.execute(
                    "INSERT INTO charge_item (invoice_id, code, description, amount_fen, item_class)
                     VALUES ($1, $2, $3, $4, 'class-a')",
                    args![invoice_id, &line.code, &line.description, line.amount_fen],
                )?;
            }
            let detail = format!(
                "held from the {pool_name} pool, fee {} fen by {fee_rule}",
                quote.total_fen
            );
            crate::audit(tx, &actor, "appointment", id, "hold", &detail)?;
            Ok(Held::Registration(Registration {
                id,
                invoice_id,
                patient_id: r.patient_id,
                schedule_id: r.schedule_id,
                status: "pending".into(),
                pool: pool_name.into(),
                fee_fen: quote.total_fen,
                hold_expires_at,
                fee_rule,
                quota_rule,
            }))
        })
        .await
    }

    /// Slots taken in a session, per pool: (on-site, online, elderly-reserved).
    pub async fn taken(&self, schedule_id: i64) -> Result<(i64, i64, i64), HospitalError> {
        let row = sqlx::query(
            "SELECT taken_on_site, taken_online, taken_elderly FROM schedule WHERE id = $1",
        )
        .bind(schedule_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(HospitalError::NotFound {
            what: "schedule",
            id: schedule_id,
        })?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    /// Registrations of a clinic session that hold a slot (held or later, not cancelled).
    pub async fn registrations_of(&self, schedule_id: i64) -> Result<i64, HospitalError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM appointment WHERE schedule_id = $1 AND status <> 'cancelled'",
        )
        .bind(schedule_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// What a load test's acknowledged records look like in the database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecordCheck {
    /// Acknowledged registrations found (each id is unique, so found once).
    pub registrations_found: usize,
    /// Acknowledged payments found, each on a paid invoice.
    pub payments_found: usize,
    /// Invoices with more than one payment (must be 0).
    pub invoices_paid_twice: i64,
}

impl Hospital {
    /// Checks that every acknowledged registration and payment is in the database, and that no
    /// invoice was paid twice.
    pub async fn verify_records(
        &self,
        registrations: &[i64],
        payments: &[i64],
    ) -> Result<RecordCheck, HospitalError> {
        let mut check = RecordCheck::default();
        for chunk in registrations.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM appointment WHERE id IN ({list})"
            ))
            .fetch_one(&self.pool)
            .await?;
            check.registrations_found += n as usize;
        }
        for chunk in payments.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM payment p JOIN invoice i ON i.id = p.invoice_id
                 WHERE p.id IN ({list}) AND p.kind = 'payment' AND i.status = 'balanced'"
            ))
            .fetch_one(&self.pool)
            .await?;
            check.payments_found += n as usize;
        }
        check.invoices_paid_twice = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT invoice_id FROM payment WHERE kind = 'payment' GROUP BY invoice_id HAVING COUNT(*) > 1) twice",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(check)
    }
}
