//! Payment, insurance split, refunds and the cashier's daily totals. Every payment and refund
//! carries an idempotency key: the same request twice never charges or refunds twice. The
//! insurance split is computed by the live insurance rule when the invoice is paid, and the rule
//! version is stored with it.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use nonstop_runtime::rules::insurance_types::{
    InsuranceCategory, ItemClass, OrderLine, SplitRequest,
};

use crate::write::is_unique_violation;
use crate::{Hospital, HospitalError, Tx, args, now_ms};

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

/// The insurance split an unpaid invoice would get if it were paid now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitQuote {
    /// The total, in fen.
    pub total_fen: i64,
    /// The insurance fund's part.
    pub fund_fen: i64,
    /// The patient's part.
    pub self_pay_fen: i64,
    /// The insurance rule that split it: component, version and digest.
    pub insurance_rule: String,
    /// Line by line.
    pub lines: Vec<ChargeLine>,
}

/// A payment taken, or only quoted.
enum Settled {
    Paid(Payment),
    Quote(SplitQuote),
}

/// A cashier's totals for one business day, balancing to the fen.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DailyTotals {
    /// Payments taken.
    pub payments: i64,
    /// Refunds given.
    pub refunds: i64,
    /// Self-pay money taken.
    pub paid_fen: i64,
    /// Self-pay money given back.
    pub refunded_fen: i64,
    /// `paid_fen - refunded_fen`.
    pub net_fen: i64,
    /// Insurance fund parts of the payments.
    pub fund_paid_fen: i64,
    /// Insurance fund parts given back.
    pub fund_refunded_fen: i64,
    /// `fund_paid_fen - fund_refunded_fen`.
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
    /// The hospital's business day now; the payment carries the cashier's next open day
    /// from it ([`crate::closing`]).
    today: time::Date,
    at: i64,
}

/// Inserts a payment or refund; its idempotency key must be new.
fn record(tx: &mut Tx<'_>, r: Record<'_>) -> Result<i64, HospitalError> {
    let business_date = crate::closing::open_day(tx, r.cashier, r.today)?.to_string();
    let inserted = tx.one(
        "INSERT INTO payment (invoice_id, kind, method, self_pay_fen, fund_fen, cashier, idempotency_key, business_date, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        args![
            r.invoice_id,
            r.kind,
            r.method,
            r.self_pay_fen,
            r.fund_fen,
            r.cashier,
            r.key,
            business_date,
            r.at,
        ],
    );
    match inserted {
        // The key was used meanwhile by another request.
        Err(e) if is_unique_violation(&e) => Err(HospitalError::Invalid {
            field: "idempotency_key",
            reason: "already used for another request".into(),
        }),
        other => other,
    }
}

/// Locks the patient an invoice belongs to, as the first write of `tx`: payments, refunds and
/// cancellations of one patient then run one at a time.
fn lock_patient_of_invoice(tx: &mut Tx<'_>, invoice_id: i64) -> Result<(), HospitalError> {
    let locked = tx.execute(
        "UPDATE patient SET id = id WHERE id = (SELECT patient_id FROM invoice WHERE id = $1)",
        args![invoice_id],
    )?;
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
        match self.settle(cashier, p, false).await? {
            Settled::Paid(payment) => Ok(payment),
            Settled::Quote(_) => Err(HospitalError::Commit("a payment was only quoted".into())),
        }
    }

    /// The insurance split the live rule would give an unpaid invoice if it were paid now, line
    /// by line, decided exactly as [`Hospital::pay`] decides it; nothing is kept.
    pub async fn quote_payment(
        &self,
        invoice_id: i64,
        patient_id: i64,
    ) -> Result<SplitQuote, HospitalError> {
        let request = PaymentRequest {
            invoice_id,
            patient_id,
            method: "cash".into(),
            idempotency_key: "quote".into(),
        };
        match self.settle("quote", &request, true).await? {
            Settled::Quote(quote) => Ok(quote),
            Settled::Paid(_) => Err(HospitalError::Commit("a quote took a payment".into())),
        }
    }

    /// [`Hospital::pay`], or with `quote_only` its split, undone before anything is recorded.
    async fn settle(
        &self,
        cashier: &str,
        p: &PaymentRequest,
        quote_only: bool,
    ) -> Result<Settled, HospitalError> {
        if !METHODS.contains(&p.method.as_str()) {
            return Err(HospitalError::Invalid {
                field: "method",
                reason: format!("{:?} is not one of {}", p.method, METHODS.join(", ")),
            });
        }
        check_key(&p.idempotency_key)?;
        let (p, cashier) = (p.clone(), cashier.to_owned());
        let (rules, annual_cap_fen) = (self.rules.clone(), self.annual_cap_fen);
        let today = self.business_date();
        self.write(move |tx| {
            lock_patient_of_invoice(tx, p.invoice_id)?;
            // A retry is answered from the first payment. After the lock: a retry sent while the
            // first is still running waits for it, then finds it (and its answer, like any, is
            // given only once the commit holding it is durable).
            if !quote_only
                && let Some(done) = replay(tx, &p.idempotency_key, "payment", p.invoice_id, Some(p.patient_id))?
            {
                return Ok(Settled::Paid(done));
            }
            let (owner, status, appointment_status, hold_expires_at, category_text, appointment_id): (
                i64,
                String,
                String,
                i64,
                String,
                i64,
            ) = tx.one(
                "SELECT i.patient_id, i.status, a.status, a.hold_expires_at, pt.insurance_category, a.id
                 FROM invoice i JOIN appointment a ON a.id = i.appointment_id JOIN patient pt ON pt.id = i.patient_id
                 WHERE i.id = $1",
                args![p.invoice_id],
            )?;
            if owner != p.patient_id {
                return Err(HospitalError::Invalid {
                    field: "patient_id",
                    reason: format!("invoice {} belongs to another patient", p.invoice_id),
                });
            }
            if status != "issued" {
                let why: Option<String> = tx.one(
                    "SELECT cancelled_reason FROM invoice WHERE id = $1",
                    args![p.invoice_id],
                )?;
                return Err(HospitalError::Refused {
                    rule: "billing",
                    reason: format!(
                        "invoice {}{} is {}, not unpaid",
                        p.invoice_id,
                        why.map(|why| format!(" ({why})")).unwrap_or_default(),
                        invoice_word(&status),
                    ),
                });
            }
            if appointment_status != "pending" || hold_expires_at < now_ms() {
                return Err(HospitalError::Refused {
                    rule: "quota",
                    reason: format!(
                        "the hold on registration {appointment_id} has expired; register again"
                    ),
                });
            }
            let items: Vec<(i64, String, i64, String, String)> = tx.rows(
                "SELECT id, code, amount_fen, item_class, description FROM charge_item WHERE invoice_id = $1 ORDER BY id",
                args![p.invoice_id],
            )?;
            // The insurance year of the payments' business days: bounded on both sides, as a
            // payment taken after a cashier closed 31 December carries 1 January.
            let year_start = format!("{}-01-01", today.year());
            let next_year = format!("{}-01-01", today.year() + 1);
            let (fund_this_year, deductible_used): (i64, i64) = tx.one(
                "SELECT CAST(COALESCE(SUM(i.fund_fen), 0) AS BIGINT), CAST(COALESCE(SUM(i.deductible_fen), 0) AS BIGINT)
                 FROM invoice i JOIN payment p ON p.invoice_id = i.id AND p.kind = 'payment'
                 WHERE i.patient_id = $1 AND i.status = 'balanced' AND p.business_date >= $2 AND p.business_date < $3",
                args![p.patient_id, year_start, next_year],
            )?;
            let lines = items
                .iter()
                .map(|(_, code, amount_fen, class, _)| OrderLine {
                    code: code.clone(),
                    amount_fen: *amount_fen,
                    item_class: item_class(class),
                })
                .collect();
            let answer = rules
                .insurance
                .call(&SplitRequest {
                    category: category(&category_text),
                    deductible_used_fen: deductible_used,
                    fund_paid_this_year_fen: fund_this_year,
                    annual_cap_fen,
                    lines,
                })
                .map_err(|e| HospitalError::Rule(e.to_string()))?;
            let insurance_rule =
                answer.version.to_string() + " " + &answer.version.digest.to_string();
            let split = answer.output.map_err(|reason| HospitalError::Refused {
                rule: "insurance",
                reason,
            })?;
            if quote_only {
                tx.discard();
                return Ok(Settled::Quote(SplitQuote {
                    total_fen: split.fund_fen + split.self_pay_fen,
                    fund_fen: split.fund_fen,
                    self_pay_fen: split.self_pay_fen,
                    insurance_rule,
                    lines: items
                        .iter()
                        .zip(&split.lines)
                        .map(|((_, code, amount_fen, class, description), line)| ChargeLine {
                            code: code.clone(),
                            description: description.clone(),
                            amount_fen: *amount_fen,
                            item_class: class.clone(),
                            fund_fen: line.fund_fen,
                            self_pay_fen: line.self_pay_fen,
                        })
                        .collect(),
                }));
            }

            let now = now_ms();
            tx.execute(
                "UPDATE invoice SET status = 'balanced', fund_fen = $1, self_pay_fen = $2, deductible_fen = $3,
                     insurance_rule = $4, updated_at = $5
                 WHERE id = $6 AND status = 'issued'",
                args![
                    split.fund_fen,
                    split.self_pay_fen,
                    split.deductible_applied_fen,
                    &insurance_rule,
                    now,
                    p.invoice_id,
                ],
            )?;
            for ((item_id, ..), line) in items.iter().zip(&split.lines) {
                tx.execute(
                    "UPDATE charge_item SET fund_fen = $1, self_pay_fen = $2 WHERE id = $3",
                    args![line.fund_fen, line.self_pay_fen, *item_id],
                )?;
            }
            let id = record(
                tx,
                Record {
                    invoice_id: p.invoice_id,
                    kind: "payment",
                    method: &p.method,
                    self_pay_fen: split.self_pay_fen,
                    fund_fen: split.fund_fen,
                    cashier: &cashier,
                    key: &p.idempotency_key,
                    today,
                    at: now,
                },
            )?;
            tx.execute(
                "UPDATE appointment SET status = 'booked', updated_at = $1 WHERE id = $2 AND status = 'pending'",
                args![now, appointment_id],
            )?;
            let detail = format!(
                "paid by {}: self-pay {} fen, fund {} fen, split by {insurance_rule}",
                p.method, split.self_pay_fen, split.fund_fen
            );
            let booked = format!("paid: invoice {}", p.invoice_id);
            crate::audit_all(
                tx,
                &cashier,
                &[
                    ("invoice", p.invoice_id, "pay", &detail),
                    ("appointment", appointment_id, "book", &booked),
                ],
            )?;
            Ok(Settled::Paid(Payment {
                id,
                invoice_id: p.invoice_id,
                kind: "payment".into(),
                self_pay_fen: split.self_pay_fen,
                fund_fen: split.fund_fen,
                insurance_rule,
            }))
        })
        .await
    }

    /// Refunds a paid registration that has not been consumed (before the consultation): the
    /// invoice is voided, both parts are given back, the registration is cancelled and its slot
    /// released. A retry with the same idempotency key returns the first refund. Decided inside
    /// one transaction: a consultation that starts meanwhile either wins (and the refund is
    /// refused) or finds its ticket withdrawn.
    pub async fn refund(&self, cashier: &str, r: &RefundRequest) -> Result<Payment, HospitalError> {
        check_key(&r.idempotency_key)?;
        let (r, cashier) = (r.clone(), cashier.to_owned());
        let today = self.business_date();
        self.write(move |tx| {
            lock_patient_of_invoice(tx, r.invoice_id)?;
            // After the lock, as in `pay`: a concurrent retry finds the first refund.
            if let Some(done) = replay(tx, &r.idempotency_key, "refund", r.invoice_id, None)? {
                return Ok(done);
            }
            let refunded = refund_paid(
                tx,
                &cashier,
                r.invoice_id,
                &r.idempotency_key,
                &r.reason,
                today,
            )?;
            Ok(Payment {
                id: refunded.payment_id,
                invoice_id: r.invoice_id,
                kind: "refund".into(),
                self_pay_fen: refunded.self_pay_fen,
                fund_fen: refunded.fund_fen,
                insurance_rule: refunded.insurance_rule.unwrap_or_default(),
            })
        })
        .await
    }

    /// Cancels an unpaid hold (by the patient, or the sweeper when it expires): the slot is
    /// released and the invoice voided. Returns whether it was still held.
    pub async fn cancel_hold(
        &self,
        actor: &str,
        appointment_id: i64,
    ) -> Result<bool, HospitalError> {
        let actor = actor.to_owned();
        self.write(move |tx| {
            // The patient first, as payment does: the two never wait on each other in opposite
            // order.
            let locked = tx.execute(
                "UPDATE patient SET id = id WHERE id = (SELECT patient_id FROM appointment WHERE id = $1)",
                args![appointment_id],
            )?;
            if locked == 0 {
                return Err(HospitalError::NotFound {
                    what: "appointment",
                    id: appointment_id,
                });
            }
            let released = void_unpaid(tx, &actor, appointment_id, &format!("hold released by {actor}"))?;
            Ok(released)
        })
        .await
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
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT kind, method, COUNT(*), CAST(COALESCE(SUM(self_pay_fen), 0) AS BIGINT), CAST(COALESCE(SUM(fund_fen), 0) AS BIGINT) FROM payment
             WHERE business_date = $1 AND ($2 = '' OR cashier = $2) GROUP BY kind, method ORDER BY method, kind",
        )
        .bind(business_date)
        .bind(cashier.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(DailyTotals::of(rows))
    }
}

impl DailyTotals {
    /// Sums `(kind, method, count, self-pay, fund)` groups of payments.
    pub(crate) fn of(groups: Vec<(String, String, i64, i64, i64)>) -> DailyTotals {
        let mut t = DailyTotals::default();
        for (kind, method, count, self_pay, fund) in groups {
            let sign = if kind == "refund" { -1 } else { 1 };
            if sign > 0 {
                t.payments += count;
                t.paid_fen += self_pay;
                t.fund_paid_fen += fund;
            } else {
                t.refunds += count;
                t.refunded_fen += self_pay;
                t.fund_refunded_fen += fund;
            }
            match t.by_method.iter_mut().find(|(m, _)| *m == method) {
                Some((_, net)) => *net += sign * self_pay,
                None => t.by_method.push((method, sign * self_pay)),
            }
        }
        t.net_fen = t.paid_fen - t.refunded_fen;
        t.fund_net_fen = t.fund_paid_fen - t.fund_refunded_fen;
        t
    }
}

/// What a refund gave back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refunded {
    /// The refund's payment record.
    pub payment_id: i64,
    /// Self-pay money given back.
    pub self_pay_fen: i64,
    /// Insurance fund money given back.
    pub fund_fen: i64,
    /// The insurance rule that split the payment.
    pub insurance_rule: Option<String>,
}

/// Refunds a paid invoice whose registration has not been consumed, in `tx`, whose caller has
/// locked the patient: its ticket is withdrawn, its slot released, both parts given back by the
/// method it was paid with, and the refund recorded as `actor`'s with `key`.
pub(crate) fn refund_paid(
    tx: &mut Tx<'_>,
    actor: &str,
    invoice_id: i64,
    key: &str,
    reason: &str,
    today: time::Date,
) -> Result<Refunded, HospitalError> {
    // The schedule before the ticket, as `call_next` takes them: on PostgreSQL the two never
    // wait on each other in opposite order.
    tx.execute(
        "UPDATE schedule SET id = id WHERE id = (SELECT a.schedule_id FROM invoice i
             JOIN appointment a ON a.id = i.appointment_id WHERE i.id = $1)",
        args![invoice_id],
    )?;
    let (status, self_pay, fund, insurance_rule, appointment_id, method): (
        String,
        i64,
        i64,
        Option<String>,
        i64,
        Option<String>,
    ) = tx.one(
        "SELECT i.status, i.self_pay_fen, i.fund_fen, i.insurance_rule, i.appointment_id,
                (SELECT method FROM payment WHERE invoice_id = i.id AND kind = 'payment')
         FROM invoice i WHERE i.id = $1",
        args![invoice_id],
    )?;
    if status != "balanced" {
        return Err(HospitalError::Refused {
            rule: "billing",
            reason: format!(
                "invoice {invoice_id} is {}: only a paid invoice can be refunded",
                invoice_word(&status)
            ),
        });
    }
    let now = now_ms();
    // Withdraw a ticket that has not reached the doctor; a consultation that has started (or a
    // visit that ended) makes the registration consumed.
    tx.execute(
        "UPDATE queue_ticket SET status = 'expired', updated_at = $1
         WHERE appointment_id = $2 AND status IN ('waiting', 'called', 'suspended')",
        args![now, appointment_id],
    )?;
    let consulted: i64 = tx.one(
        "SELECT COUNT(*) FROM queue_ticket WHERE appointment_id = $1 AND status IN ('in-service', 'done')",
        args![appointment_id],
    )?;
    if consulted > 0 || !release_slot(tx, appointment_id, &["booked", "checked-in"])? {
        return Err(HospitalError::Refused {
            rule: "billing",
            reason: format!(
                "registration {appointment_id} is in or past its consultation: consumed services are not refunded"
            ),
        });
    }
    tx.execute(
        "UPDATE invoice SET status = 'cancelled', cancelled_reason = $1, updated_at = $2 WHERE id = $3 AND status = 'balanced'",
        args![format!("refunded: {reason}"), now, invoice_id],
    )?;
    let method = method.unwrap_or_else(|| "cash".into());
    let payment_id = record(
        tx,
        Record {
            invoice_id,
            kind: "refund",
            method: &method,
            self_pay_fen: self_pay,
            fund_fen: fund,
            cashier: actor,
            key,
            today,
            at: now,
        },
    )?;
    let detail = format!("refunded {self_pay} fen self-pay, {fund} fen fund: {reason}");
    let cancelled =
        format!("refunded (invoice {invoice_id}), slot released, ticket withdrawn: {reason}");
    crate::audit_all(
        tx,
        actor,
        &[
            ("invoice", invoice_id, "refund", &detail),
            ("appointment", appointment_id, "cancel", &cancelled),
        ],
    )?;
    Ok(Refunded {
        payment_id,
        self_pay_fen: self_pay,
        fund_fen: fund,
        insurance_rule,
    })
}

/// Releases an unpaid hold and voids its invoice, in `tx`, whose caller has locked the patient.
/// Returns whether it was still held.
pub(crate) fn void_unpaid(
    tx: &mut Tx<'_>,
    actor: &str,
    appointment_id: i64,
    why: &str,
) -> Result<bool, HospitalError> {
    let released = release_slot(tx, appointment_id, &["pending"])?;
    if released {
        tx.execute(
            "UPDATE invoice SET status = 'cancelled', cancelled_reason = $1, updated_at = $2 WHERE appointment_id = $3 AND status = 'issued'",
            args![format!("voided unpaid: {why}"), now_ms(), appointment_id],
        )?;
        crate::audit(tx, actor, "appointment", appointment_id, "cancel-hold", why)?;
    }
    Ok(released)
}

/// Cancels an appointment in one of `from` and gives its slot back to its pool, in `tx`.
/// Returns false (and changes nothing) if it was not in one of those states.
fn release_slot(
    tx: &mut Tx<'_>,
    appointment_id: i64,
    from: &[&str],
) -> Result<bool, HospitalError> {
    let (status, pool, schedule_id): (String, String, i64) = tx
        .row(
            "SELECT status, pool, schedule_id FROM appointment WHERE id = $1",
            args![appointment_id],
        )?
        .ok_or(HospitalError::NotFound {
            what: "appointment",
            id: appointment_id,
        })?;
    if !from.contains(&status.as_str()) {
        return Ok(false);
    }
    let changed = tx.execute(
        "UPDATE appointment SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status = $3",
        args![now_ms(), appointment_id, &status],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    let taken = match pool.as_str() {
        "online" => "taken_online",
        "elderly-reserved" => "taken_elderly",
        _ => "taken_on_site",
    };
    tx.execute(
        &format!("UPDATE schedule SET {taken} = {taken} - 1 WHERE id = $1 AND {taken} > 0"),
        args![schedule_id],
    )?;
    Ok(true)
}

/// A payment's id, invoice, kind, parts, insurance rule and patient.
type EarlierPayment = (i64, i64, String, i64, i64, Option<String>, i64);

/// The earlier result of a request with this idempotency key: a payment or refund of the same
/// kind and invoice (and, for a payment, the same patient). A key used for anything else is
/// refused, never silently answered.
fn replay(
    tx: &mut Tx<'_>,
    key: &str,
    kind: &str,
    invoice_id: i64,
    patient_id: Option<i64>,
) -> Result<Option<Payment>, HospitalError> {
    let Some((id, first_invoice, first_kind, self_pay_fen, fund_fen, insurance_rule, owner)): Option<
        EarlierPayment,
    > = tx.row(
        "SELECT p.id, p.invoice_id, p.kind, p.self_pay_fen, p.fund_fen, i.insurance_rule, i.patient_id
         FROM payment p JOIN invoice i ON i.id = p.invoice_id WHERE p.idempotency_key = $1",
        args![key],
    )?
    else {
        return Ok(None);
    };
    if first_invoice != invoice_id || first_kind != kind {
        return Err(HospitalError::Invalid {
            field: "idempotency_key",
            reason: "already used for another request".into(),
        });
    }
    if let Some(patient_id) = patient_id
        && patient_id != owner
    {
        return Err(HospitalError::Invalid {
            field: "patient_id",
            reason: format!("invoice {invoice_id} belongs to another patient"),
        });
    }
    Ok(Some(Payment {
        id,
        invoice_id,
        kind: first_kind,
        self_pay_fen,
        fund_fen,
        insurance_rule: insurance_rule.unwrap_or_default(),
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

/// Paid registrations of days before `$1` that never checked in, read by the sweeper every few
/// seconds: bounded by the booked registrations of those days (see `plans.rs`).
pub(crate) const UNATTENDED: &str =
    "SELECT id FROM appointment WHERE status = 'booked' AND visit_date < $1";

impl Hospital {
    /// Marks paid registrations of sessions before `today` (`YYYY-MM-DD`) that never checked in
    /// as no-shows; returns how many. Their payment stands (the slot was held for them).
    pub async fn mark_no_shows(&self, today: &str) -> Result<u64, HospitalError> {
        crate::patient::parse_date("today", today)?;
        let ids: Vec<i64> = sqlx::query_scalar(UNATTENDED)
            .bind(today)
            .fetch_all(&self.pool)
            .await?;
        let mut marked = 0;
        for id in ids {
            let changed = self
                .write(move |tx| {
                    let changed = tx.execute(
                        "UPDATE appointment SET status = 'noshow', updated_at = $1 WHERE id = $2 AND status = 'booked'",
                        args![now_ms(), id],
                    )?;
                    if changed > 0 {
                        crate::audit(
                            tx,
                            "system",
                            "appointment",
                            id,
                            "no-show",
                            "paid, never checked in",
                        )?;
                    }
                    Ok(changed)
                })
                .await?;
            marked += changed;
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
