//! Payment, insurance split, refunds and the cashier's daily totals. Every payment and refund
//! carries an idempotency key: the same request twice never charges or refunds twice. The
//! insurance split is computed by the live insurance rule when the invoice is paid, and the rule
//! version is stored with it.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use nonstop_runtime::rules::insurance_types::{
    InsuranceCategory, ItemClass, OrderLine, SplitRequest,
};

use crate::{Hospital, HospitalError, now_ms};

/// How a payment is made.
const METHODS: [&str; 5] = ["cash", "card", "wechat", "alipay", "self-service"];

/// A payment request, from a cashier or a self-service kiosk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The invoice to pay.
    pub invoice_id: i64,
    /// The patient paying; must be the invoice's patient.
    pub patient_id: i64,
    /// `cash`, `card`, `wechat`, `alipay` or `self-service`.
    pub method: String,
    /// Unique per payment attempt; a retry with the same key returns the first result.
    pub idempotency_key: String,
}

/// A refund request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The paid invoice to refund.
    pub invoice_id: i64,
    /// Unique per refund attempt.
    pub idempotency_key: String,
    /// Why (退号 reason).
    pub reason: String,
}

/// A recorded payment or refund.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Payment {
    /// Its id.
    pub id: i64,
    /// The invoice.
    pub invoice_id: i64,
    /// `payment` or `refund`.
    pub kind: String,
    /// What the patient paid (or got back).
    pub self_pay_fen: i64,
    /// What the insurance fund paid (or got back).
    pub fund_fen: i64,
    /// The insurance rule that split it: component, version and digest.
    pub insurance_rule: String,
}

/// An invoice as the cashier sees it (FHIR Invoice): its state, its parts, its lines and every
/// payment and refund of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoiceView {
    /// Its id.
    pub id: i64,
    /// The patient.
    pub patient_id: i64,
    /// The registration it charges.
    pub appointment_id: i64,
    /// FHIR Invoice status: `issued` (unpaid), `balanced` (paid) or `cancelled`.
    pub status: String,
    /// Why it was cancelled: refunded (with the reason given) or voided unpaid.
    pub cancelled_reason: Option<String>,
    /// The total, in fen.
    pub total_fen: i64,
    /// The insurance fund's part, once paid.
    pub fund_fen: i64,
    /// The patient's part, once paid.
    pub self_pay_fen: i64,
    /// The insurance rule that split it: component, version and digest.
    pub insurance_rule: Option<String>,
    /// Its charge lines (FHIR ChargeItem): code, description, amount, item class, parts.
    pub lines: Vec<ChargeLine>,
    /// Its payments and refunds, oldest first.
    pub payments: Vec<Payment>,
}

/// One charge line of an invoice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChargeLine {
    /// Item code.
    pub code: String,
    /// What it is.
    pub description: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// `class-a`, `class-b` or `class-c` of the insurance catalogue.
    pub item_class: String,
    /// The fund's part, once paid.
    pub fund_fen: i64,
    /// The patient's part, once paid.
    pub self_pay_fen: i64,
}

/// A cashier's totals for one business day, balancing to the fen.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DailyTotals {
    /// Self-pay money taken.
    pub paid_fen: i64,
    /// Self-pay money given back.
    pub refunded_fen: i64,
    /// `paid_fen - refunded_fen`.
    pub net_fen: i64,
    /// Net insurance fund amounts.
    pub fund_net_fen: i64,
    /// Net self-pay per method.
    pub by_method: Vec<(String, i64)>,
}

fn category(text: &str) -> InsuranceCategory {
    match text {
        "employee" => InsuranceCategory::Employee,
        "resident" => InsuranceCategory::Resident,
        _ => InsuranceCategory::None,
    }
}

fn item_class(text: &str) -> ItemClass {
    match text {
        "class-b" => ItemClass::ClassB,
        "class-c" => ItemClass::ClassC,
        _ => ItemClass::ClassA,
    }
}

/// A payment or refund row to insert.
struct Record<'a> {
    invoice_id: i64,
    kind: &'static str,
    method: &'a str,
    self_pay_fen: i64,
    fund_fen: i64,
    cashier: &'a str,
    key: &'a str,
    business_date: String,
    at: i64,
}

/// Inserts a payment or refund; its idempotency key must be new.
async fn record(tx: &mut crate::WriteTx, r: Record<'_>) -> Result<i64, HospitalError> {
    let inserted = sqlx::query_scalar(
        "INSERT INTO payment (invoice_id, kind, method, self_pay_fen, fund_fen, cashier, idempotency_key, business_date, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(r.invoice_id)
    .bind(r.kind)
    .bind(r.method)
    .bind(r.self_pay_fen)
    .bind(r.fund_fen)
    .bind(r.cashier)
    .bind(r.key)
    .bind(&r.business_date)
    .bind(r.at)
    .fetch_one(&mut **tx)
    .await;
    match inserted {
        Ok(id) => Ok(id),
        // The key was used meanwhile by another request.
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(HospitalError::Invalid {
            field: "idempotency_key",
            reason: "already used for another request".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Locks the patient an invoice belongs to, as the first write of `tx`: payments, refunds and
/// cancellations of one patient then run one at a time (on SQLite the write lock is taken here,
/// so the transaction never fails on a lock upgrade later).
async fn lock_patient_of_invoice(
    tx: &mut crate::WriteTx,
    invoice_id: i64,
) -> Result<(), HospitalError> {
    let locked = sqlx::query(
        "UPDATE patient SET id = id WHERE id = (SELECT patient_id FROM invoice WHERE id = $1)",
    )
    .bind(invoice_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if locked == 0 {
        return Err(HospitalError::NotFound {
            what: "invoice",
            id: invoice_id,
        });
    }
    Ok(())
}

impl Hospital {
    /// Pays an invoice: splits it with the insurance rule, records the payment, and books the
    /// registration. A retry with the same idempotency key returns the first payment unchanged.
    /// Everything is read and decided inside one transaction that first locks the patient, so
    /// two invoices of one patient paid at once cannot both use the same deductible or cap.
    pub async fn pay(&self, cashier: &str, p: &PaymentRequest) -> Result<Payment, HospitalError> {
        if !METHODS.contains(&p.method.as_str()) {
            return Err(HospitalError::Invalid {
                field: "method",
                reason: format!("{:?} is not one of {}", p.method, METHODS.join(", ")),
            });
        }
        check_key(&p.idempotency_key)?;
        if let Some(done) = replay(
            &mut *self.pool.acquire().await?,
            &p.idempotency_key,
            "payment",
            p.invoice_id,
            Some(p.patient_id),
        )
        .await?
        {
            return Ok(done);
        }
        let mut tx = self.begin_write().await?;
        lock_patient_of_invoice(&mut tx, p.invoice_id).await?;
        let invoice = sqlx::query(
            "SELECT i.patient_id, i.status, a.status, a.hold_expires_at, pt.insurance_category, a.id
             FROM invoice i JOIN appointment a ON a.id = i.appointment_id JOIN patient pt ON pt.id = i.patient_id
             WHERE i.id = $1",
        )
        .bind(p.invoice_id)
        .fetch_one(&mut *tx)
        .await?;
        let owner: i64 = invoice.try_get(0)?;
        if owner != p.patient_id {
            tx.rollback().await?;
            return Err(HospitalError::Invalid {
                field: "patient_id",
                reason: format!("invoice {} belongs to another patient", p.invoice_id),
            });
        }
        let status: String = invoice.try_get(1)?;
        if status != "issued" {
            // Paid meanwhile, perhaps by this very request retried concurrently: its answer is
            // given once the first one's commit has made it durable.
            let first = replay(
                &mut tx,
                &p.idempotency_key,
                "payment",
                p.invoice_id,
                Some(p.patient_id),
            )
            .await;
            if let Ok(Some(done)) = first {
                tx.commit().await?;
                return Ok(done);
            }
            tx.rollback().await?;
            first?;
            return Err(HospitalError::Refused {
                rule: "billing",
                reason: format!(
                    "invoice {} is {}, not unpaid",
                    p.invoice_id,
                    invoice_word(&status)
                ),
            });
        }
        let appointment_status: String = invoice.try_get(2)?;
        let hold_expires_at: i64 = invoice.try_get(3)?;
        let appointment_id: i64 = invoice.try_get(5)?;
        if appointment_status != "pending" || hold_expires_at < now_ms() {
            tx.rollback().await?;
            return Err(HospitalError::Refused {
                rule: "quota",
                reason: format!(
                    "the hold on registration {appointment_id} has expired; register again"
                ),
            });
        }
        let items = sqlx::query("SELECT id, code, amount_fen, item_class FROM charge_item WHERE invoice_id = $1 ORDER BY id")
            .bind(p.invoice_id)
            .fetch_all(&mut *tx)
            .await?;
        let year_start = format!("{}-01-01", self.business_date().year());
        let year = sqlx::query(
            "SELECT CAST(COALESCE(SUM(i.fund_fen), 0) AS BIGINT), CAST(COALESCE(SUM(i.deductible_fen), 0) AS BIGINT)
             FROM invoice i JOIN payment p ON p.invoice_id = i.id AND p.kind = 'payment'
             WHERE i.patient_id = $1 AND i.status = 'balanced' AND p.business_date >= $2",
        )
        .bind(p.patient_id)
        .bind(&year_start)
        .fetch_one(&mut *tx)
        .await?;
        let mut lines = Vec::with_capacity(items.len());
        for item in &items {
            lines.push(OrderLine {
                code: item.try_get(1)?,
                amount_fen: item.try_get(2)?,
                item_class: item_class(&item.try_get::<String, _>(3)?),
            });
        }
        let category = category(&invoice.try_get::<String, _>(4)?);
        let answer = self.rules.insurance.call(&SplitRequest {
            category,
            deductible_used_fen: year.try_get(1)?,
            fund_paid_this_year_fen: year.try_get(0)?,
            annual_cap_fen: self.annual_cap_fen,
            lines,
        });
        // A refusal ends the transaction at once, releasing the patient's lock.
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                tx.rollback().await?;
                return Err(HospitalError::Rule(e.to_string()));
            }
        };
        let insurance_rule = answer.version.to_string() + " " + &answer.version.digest.to_string();
        let split = match answer.output {
            Ok(split) => split,
            Err(reason) => {
                tx.rollback().await?;
                return Err(HospitalError::Refused {
                    rule: "insurance",
                    reason,
                });
            }
        };

        let now = now_ms();
        sqlx::query(
            "UPDATE invoice SET status = 'balanced', fund_fen = $1, self_pay_fen = $2, deductible_fen = $3,
                 insurance_rule = $4, updated_at = $5
             WHERE id = $6 AND status = 'issued'",
        )
        .bind(split.fund_fen)
        .bind(split.self_pay_fen)
        .bind(split.deductible_applied_fen)
        .bind(&insurance_rule)
        .bind(now)
        .bind(p.invoice_id)
        .execute(&mut *tx)
        .await?;
        for (item, line) in items.iter().zip(&split.lines) {
            sqlx::query("UPDATE charge_item SET fund_fen = $1, self_pay_fen = $2 WHERE id = $3")
                .bind(line.fund_fen)
                .bind(line.self_pay_fen)
                .bind(item.try_get::<i64, _>(0)?)
                .execute(&mut *tx)
                .await?;
        }
        let recorded = record(
            &mut tx,
            Record {
                invoice_id: p.invoice_id,
                kind: "payment",
                method: &p.method,
                self_pay_fen: split.self_pay_fen,
                fund_fen: split.fund_fen,
                cashier,
                key: &p.idempotency_key,
                business_date: self.business_date().to_string(),
                at: now,
            },
        )
        .await;
        let id = match recorded {
            Ok(id) => id,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        sqlx::query("UPDATE appointment SET status = 'booked', updated_at = $1 WHERE id = $2 AND status = 'pending'")
            .bind(now)
            .bind(appointment_id)
            .execute(&mut *tx)
            .await?;
        let detail = format!(
            "paid by {}: self-pay {} fen, fund {} fen, split by {insurance_rule}",
            p.method, split.self_pay_fen, split.fund_fen
        );
        let booked = format!("paid: invoice {}", p.invoice_id);
        crate::audit_all(
            &mut tx,
            cashier,
            &[
                ("invoice", p.invoice_id, "pay", &detail),
                ("appointment", appointment_id, "book", &booked),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Payment {
            id,
            invoice_id: p.invoice_id,
            kind: "payment".into(),
            self_pay_fen: split.self_pay_fen,
            fund_fen: split.fund_fen,
            insurance_rule,
        })
    }

    /// Refunds a paid registration that has not been consumed (before the consultation): the
    /// invoice is voided, both parts are given back, the registration is cancelled and its slot
    /// released. A retry with the same idempotency key returns the first refund. Decided inside
    /// one transaction: a consultation that starts meanwhile either wins (and the refund is
    /// refused) or finds its ticket withdrawn.
    pub async fn refund(&self, cashier: &str, r: &RefundRequest) -> Result<Payment, HospitalError> {
        check_key(&r.idempotency_key)?;
        if let Some(done) = replay(
            &mut *self.pool.acquire().await?,
            &r.idempotency_key,
            "refund",
            r.invoice_id,
            None,
        )
        .await?
        {
            return Ok(done);
        }
        let mut tx = self.begin_write().await?;
        lock_patient_of_invoice(&mut tx, r.invoice_id).await?;
        let row = sqlx::query(
            "SELECT i.status, i.self_pay_fen, i.fund_fen, i.insurance_rule, i.appointment_id,
                    (SELECT method FROM payment WHERE invoice_id = i.id AND kind = 'payment')
             FROM invoice i WHERE i.id = $1",
        )
        .bind(r.invoice_id)
        .fetch_one(&mut *tx)
        .await?;
        let status: String = row.try_get(0)?;
        if status != "balanced" {
            let first = replay(&mut tx, &r.idempotency_key, "refund", r.invoice_id, None).await;
            if let Ok(Some(done)) = first {
                tx.commit().await?;
                return Ok(done);
            }
            tx.rollback().await?;
            first?;
            return Err(HospitalError::Refused {
                rule: "billing",
                reason: format!(
                    "invoice {} is {}: only a paid invoice can be refunded",
                    r.invoice_id,
                    invoice_word(&status)
                ),
            });
        }
        let appointment_id: i64 = row.try_get(4)?;
        let now = now_ms();
        // Withdraw a ticket that has not reached the doctor; a consultation that has started
        // (or a visit that ended) makes the registration consumed.
        sqlx::query(
            "UPDATE queue_ticket SET status = 'expired', updated_at = $1
             WHERE appointment_id = $2 AND status IN ('waiting', 'called', 'suspended')",
        )
        .bind(now)
        .bind(appointment_id)
        .execute(&mut *tx)
        .await?;
        let consulted: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM queue_ticket WHERE appointment_id = $1 AND status IN ('in-service', 'done')")
                .bind(appointment_id)
                .fetch_one(&mut *tx)
                .await?;
        if consulted > 0
            || !self
                .release_slot(&mut tx, appointment_id, &["booked", "checked-in"])
                .await?
        {
            tx.rollback().await?;
            return Err(HospitalError::Refused {
                rule: "billing",
                reason: format!(
                    "registration {appointment_id} is in or past its consultation: consumed services are not refunded"
                ),
            });
        }
        let (self_pay, fund): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        let insurance_rule: String = row.try_get::<Option<String>, _>(3)?.unwrap_or_default();
        let method: String = row
            .try_get::<Option<String>, _>(5)?
            .unwrap_or_else(|| "cash".into());
        sqlx::query("UPDATE invoice SET status = 'cancelled', cancelled_reason = $1, updated_at = $2 WHERE id = $3 AND status = 'balanced'")
            .bind(format!("refunded: {}", r.reason))
            .bind(now)
            .bind(r.invoice_id)
            .execute(&mut *tx)
            .await?;
        let recorded = record(
            &mut tx,
            Record {
                invoice_id: r.invoice_id,
                kind: "refund",
                method: &method,
                self_pay_fen: self_pay,
                fund_fen: fund,
                cashier,
                key: &r.idempotency_key,
                business_date: self.business_date().to_string(),
                at: now,
            },
        )
        .await;
        let id = match recorded {
            Ok(id) => id,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        let detail = format!(
            "refunded {self_pay} fen self-pay, {fund} fen fund: {}",
            r.reason
        );
        let cancelled = format!(
            "refunded (invoice {}), slot released, ticket withdrawn: {}",
            r.invoice_id, r.reason
        );
        crate::audit_all(
            &mut tx,
            cashier,
            &[
                ("invoice", r.invoice_id, "refund", &detail),
                ("appointment", appointment_id, "cancel", &cancelled),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Payment {
            id,
            invoice_id: r.invoice_id,
            kind: "refund".into(),
            self_pay_fen: self_pay,
            fund_fen: fund,
            insurance_rule,
        })
    }

    /// Cancels an unpaid hold (by the patient, or the sweeper when it expires): the slot is
    /// released and the invoice voided. Returns whether it was still held.
    pub async fn cancel_hold(
        &self,
        actor: &str,
        appointment_id: i64,
    ) -> Result<bool, HospitalError> {
        let mut tx = self.begin_write().await?;
        // The patient first, as payment does: the two never wait on each other in opposite order.
        let locked = sqlx::query("UPDATE patient SET id = id WHERE id = (SELECT patient_id FROM appointment WHERE id = $1)")
            .bind(appointment_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if locked == 0 {
            tx.rollback().await?;
            return Err(HospitalError::NotFound {
                what: "appointment",
                id: appointment_id,
            });
        }
        let released = self
            .release_slot(&mut tx, appointment_id, &["pending"])
            .await?;
        if released {
            sqlx::query("UPDATE invoice SET status = 'cancelled', cancelled_reason = $1, updated_at = $2 WHERE appointment_id = $3 AND status = 'issued'")
                .bind(format!("voided unpaid: hold released by {actor}"))
                .bind(now_ms())
                .bind(appointment_id)
                .execute(&mut *tx)
                .await?;
            crate::audit(
                &mut tx,
                actor,
                "appointment",
                appointment_id,
                "cancel-hold",
                "hold released",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Releases every hold whose time limit has passed; returns how many. One hold that cannot
    /// be released is logged and skipped, not allowed to stop the others.
    pub async fn release_expired_holds(&self) -> Result<usize, HospitalError> {
        let expired: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM appointment WHERE status = 'pending' AND hold_expires_at < $1",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        let mut released = 0;
        for id in expired {
            match self.cancel_hold("system", id).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(appointment = id, error = %e, "could not release an expired hold")
                }
            }
        }
        Ok(released)
    }

    /// Cancels an appointment in one of `from` and gives its slot back to its pool, in `tx`.
    /// Returns false (and changes nothing) if it was not in one of those states.
    async fn release_slot(
        &self,
        tx: &mut crate::WriteTx,
        appointment_id: i64,
        from: &[&str],
    ) -> Result<bool, HospitalError> {
        let row = sqlx::query("SELECT status, pool, schedule_id FROM appointment WHERE id = $1")
            .bind(appointment_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(HospitalError::NotFound {
                what: "appointment",
                id: appointment_id,
            })?;
        let status: String = row.try_get(0)?;
        if !from.contains(&status.as_str()) {
            return Ok(false);
        }
        let changed = sqlx::query("UPDATE appointment SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status = $3")
            .bind(now_ms())
            .bind(appointment_id)
            .bind(&status)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        let taken = match row.try_get::<String, _>(1)?.as_str() {
            "online" => "taken_online",
            "elderly-reserved" => "taken_elderly",
            _ => "taken_on_site",
        };
        sqlx::query(&format!(
            "UPDATE schedule SET {taken} = {taken} - 1 WHERE id = $1 AND {taken} > 0"
        ))
        .bind(row.try_get::<i64, _>(2)?)
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }

    /// An invoice with its lines and payments.
    pub async fn invoice(&self, invoice_id: i64) -> Result<InvoiceView, HospitalError> {
        let row = sqlx::query(
            "SELECT id, patient_id, appointment_id, status, cancelled_reason, total_fen, fund_fen, self_pay_fen,
                    insurance_rule FROM invoice WHERE id = $1",
        )
        .bind(invoice_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(HospitalError::NotFound {
            what: "invoice",
            id: invoice_id,
        })?;
        let lines = sqlx::query(
            "SELECT code, description, amount_fen, item_class, fund_fen, self_pay_fen FROM charge_item
             WHERE invoice_id = $1 ORDER BY id",
        )
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|l| {
            Ok(ChargeLine {
                code: l.try_get(0)?,
                description: l.try_get(1)?,
                amount_fen: l.try_get(2)?,
                item_class: l.try_get(3)?,
                fund_fen: l.try_get(4)?,
                self_pay_fen: l.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, HospitalError>>()?;
        let insurance_rule: Option<String> = row.try_get(8)?;
        let payments = sqlx::query(
            "SELECT id, kind, self_pay_fen, fund_fen FROM payment WHERE invoice_id = $1 ORDER BY id",
        )
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|p| {
            Ok(Payment {
                id: p.try_get(0)?,
                invoice_id,
                kind: p.try_get(1)?,
                self_pay_fen: p.try_get(2)?,
                fund_fen: p.try_get(3)?,
                insurance_rule: insurance_rule.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, HospitalError>>()?;
        Ok(InvoiceView {
            id: row.try_get(0)?,
            patient_id: row.try_get(1)?,
            appointment_id: row.try_get(2)?,
            status: row.try_get(3)?,
            cancelled_reason: row.try_get(4)?,
            total_fen: row.try_get(5)?,
            fund_fen: row.try_get(6)?,
            self_pay_fen: row.try_get(7)?,
            insurance_rule,
            lines,
            payments,
        })
    }

    /// A cashier's totals for a business day (`YYYY-MM-DD`); `None` for every cashier.
    pub async fn daily_totals(
        &self,
        business_date: &str,
        cashier: Option<&str>,
    ) -> Result<DailyTotals, HospitalError> {
        let rows = sqlx::query(
            "SELECT kind, method, CAST(COALESCE(SUM(self_pay_fen), 0) AS BIGINT), CAST(COALESCE(SUM(fund_fen), 0) AS BIGINT) FROM payment
             WHERE business_date = $1 AND ($2 = '' OR cashier = $2) GROUP BY kind, method ORDER BY method, kind",
        )
        .bind(business_date)
        .bind(cashier.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut t = DailyTotals::default();
        for row in rows {
            let (kind, method): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let (self_pay, fund): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
            let sign = if kind == "refund" { -1 } else { 1 };
            if sign > 0 {
                t.paid_fen += self_pay;
            } else {
                t.refunded_fen += self_pay;
            }
            t.fund_net_fen += sign * fund;
            match t.by_method.iter_mut().find(|(m, _)| *m == method) {
                Some((_, net)) => *net += sign * self_pay,
                None => t.by_method.push((method, sign * self_pay)),
            }
        }
        t.net_fen = t.paid_fen - t.refunded_fen;
        Ok(t)
    }
}

/// The earlier result of a request with this idempotency key: a payment or refund of the same
/// kind and invoice (and, for a payment, the same patient). A key used for anything else is
/// refused, never silently answered.
async fn replay(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    kind: &str,
    invoice_id: i64,
    patient_id: Option<i64>,
) -> Result<Option<Payment>, HospitalError> {
    let Some(row) = sqlx::query(
        "SELECT p.id, p.invoice_id, p.kind, p.self_pay_fen, p.fund_fen, i.insurance_rule, i.patient_id
         FROM payment p JOIN invoice i ON i.id = p.invoice_id WHERE p.idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    if row.try_get::<i64, _>(1)? != invoice_id || row.try_get::<String, _>(2)? != kind {
        return Err(HospitalError::Invalid {
            field: "idempotency_key",
            reason: "already used for another request".into(),
        });
    }
    if let Some(patient_id) = patient_id
        && patient_id != row.try_get::<i64, _>(6)?
    {
        return Err(HospitalError::Invalid {
            field: "patient_id",
            reason: format!("invoice {invoice_id} belongs to another patient"),
        });
    }
    Ok(Some(Payment {
        id: row.try_get(0)?,
        invoice_id,
        kind: row.try_get(2)?,
        self_pay_fen: row.try_get(3)?,
        fund_fen: row.try_get(4)?,
        insurance_rule: row.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
    }))
}

fn check_key(key: &str) -> Result<(), HospitalError> {
    if key.is_empty() || key.len() > 128 {
        return Err(HospitalError::Invalid {
            field: "idempotency_key",
            reason: "must be 1 to 128 characters".into(),
        });
    }
    Ok(())
}

/// The word operators use for an invoice status.
fn invoice_word(status: &str) -> &'static str {
    match status {
        "issued" => "unpaid",
        "balanced" => "paid",
        _ => "voided or refunded",
    }
}

impl Hospital {
    /// Marks paid registrations of sessions before `today` (`YYYY-MM-DD`) that never checked in
    /// as no-shows; returns how many. Their payment stands (the slot was held for them).
    pub async fn mark_no_shows(&self, today: &str) -> Result<u64, HospitalError> {
        crate::patient::parse_date("today", today)?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM appointment WHERE status = 'booked' AND visit_date < $1",
        )
        .bind(today)
        .fetch_all(&self.pool)
        .await?;
        let mut marked = 0;
        for id in ids {
            let mut tx = self.begin_write().await?;
            let changed = sqlx::query("UPDATE appointment SET status = 'noshow', updated_at = $1 WHERE id = $2 AND status = 'booked'")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed > 0 {
                crate::audit(
                    &mut tx,
                    "system",
                    "appointment",
                    id,
                    "no-show",
                    "paid, never checked in",
                )
                .await?;
                marked += 1;
            }
            tx.commit().await?;
        }
        Ok(marked)
    }

    /// A registration's FHIR Appointment status.
    pub async fn registration_status(&self, appointment_id: i64) -> Result<String, HospitalError> {
        sqlx::query_scalar("SELECT status FROM appointment WHERE id = $1")
            .bind(appointment_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound {
                what: "appointment",
                id: appointment_id,
            })
    }
}
