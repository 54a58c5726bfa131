//! The cashier's day closing (日结): a record per cashier and business day that freezes the day's
//! totals. Payments and refunds a cashier records after closing a day carry the next day that
//! is still open, so a closed day's totals never change and always equal its payments.
//!
//! On PostgreSQL a payment holds its cashier's lock shared and a closing holds it exclusive, so
//! a closing waits for payments in flight and payments wait for the closing; on SQLite the one
//! writer runs them one after the other.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::patient::parse_date;
use crate::write::is_unique_violation;
use crate::{DailyTotals, Hospital, HospitalError, Tx, args, now_ms};

/// A closed business day of one cashier, with its frozen totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Closing {
    /// Id.
    pub id: i64,
    /// The cashier (a kiosk's account closes like one).
    pub cashier: String,
    /// The business day closed, `YYYY-MM-DD`.
    pub business_date: String,
    /// When (Unix ms).
    pub closed_at: i64,
    /// Who closed it: the cashier, or an administrator for them.
    pub closed_by: String,
    /// The day's totals, as they were and stay.
    pub totals: DailyTotals,
}

fn lock_key(cashier: &str) -> String {
    format!("cashier-day:{cashier}")
}

/// The business day a payment `cashier` records now carries: `today`, or the first day after it
/// that they have not closed. Holds the cashier's lock shared until the transaction ends.
pub(crate) fn open_day(tx: &mut Tx<'_>, cashier: &str, today: Date) -> Result<Date, HospitalError> {
    tx.lock(&lock_key(cashier), true)?;
    let closed: Vec<String> = tx.rows(
        "SELECT business_date FROM cashier_closing WHERE cashier = $1 AND business_date >= $2 ORDER BY business_date",
        args![cashier, today.to_string()],
    )?;
    let mut day = today;
    for date in closed {
        if date == day.to_string() {
            day = day.next_day().unwrap_or(day);
        } else {
            break;
        }
    }
    Ok(day)
}

impl Hospital {
    /// Closes `cashier`'s business day `date` (today by default): its totals are computed and
    /// frozen, and their payments from now on fall into the next open day. Refused for a day
    /// that is closed already or has not begun.
    pub async fn close_day(
        &self,
        actor: &str,
        cashier: &str,
        date: Option<&str>,
    ) -> Result<Closing, HospitalError> {
        let today = self.business_date();
        let day = match date {
            Some(text) => parse_date("date", text)?,
            None => today,
        };
        if day > today {
            return Err(HospitalError::Invalid {
                field: "date",
                reason: format!("{day} has not begun (today is {today})"),
            });
        }
        let (actor, cashier) = (actor.to_owned(), cashier.to_owned());
        self.write(move |tx| {
            // Any account that moves money closes: cashiers and kiosks, and the administrator or
            // doctor whose cancelled or stopped session refunded its patients.
            let known: i64 = tx.one(
                "SELECT COUNT(*) FROM app_user WHERE username = $1",
                args![&cashier],
            )?;
            if known == 0 {
                return Err(HospitalError::Invalid {
                    field: "cashier",
                    reason: format!("{cashier} is not a staff account"),
                });
            }
            tx.lock(&lock_key(&cashier), false)?;
            let groups: Vec<(String, String, i64, i64, i64)> = tx.rows(
                "SELECT kind, method, COUNT(*), CAST(COALESCE(SUM(self_pay_fen), 0) AS BIGINT), CAST(COALESCE(SUM(fund_fen), 0) AS BIGINT)
                 FROM payment WHERE business_date = $1 AND cashier = $2 GROUP BY kind, method ORDER BY method, kind",
                args![day.to_string(), &cashier],
            )?;
            let totals = DailyTotals::of(groups);
            let closed_at = now_ms();
            let id: i64 = tx
                .one(
                    "INSERT INTO cashier_closing (cashier, business_date, closed_at, closed_by, payments, refunds,
                         paid_fen, refunded_fen, fund_paid_fen, fund_refunded_fen, by_method)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                    args![
                        &cashier,
                        day.to_string(),
                        closed_at,
                        &actor,
                        totals.payments,
                        totals.refunds,
                        totals.paid_fen,
                        totals.refunded_fen,
                        totals.fund_paid_fen,
                        totals.fund_refunded_fen,
                        serde_json::to_string(&totals.by_method).unwrap_or_default(),
                    ],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        HospitalError::Refused {
                            rule: "billing",
                            reason: format!("{cashier}'s business day {day} is closed already"),
                        }
                    } else {
                        e
                    }
                })?;
            let detail = format!(
                "{cashier} {day}: {} payments, {} refunds, self-pay net {} fen, fund net {} fen",
                totals.payments, totals.refunds, totals.net_fen, totals.fund_net_fen
            );
            crate::audit(tx, &actor, "cashier_closing", id, "close", &detail)?;
            Ok(Closing {
                id,
                cashier,
                business_date: day.to_string(),
                closed_at,
                closed_by: actor,
                totals,
            })
        })
        .await
    }

    /// Closed days, newest first: of one day and one cashier if given.
    pub async fn closings(
        &self,
        date: Option<&str>,
        cashier: Option<&str>,
    ) -> Result<Vec<Closing>, HospitalError> {
        if let Some(date) = date {
            parse_date("date", date)?;
        }
        type Row = (
            i64,
            String,
            String,
            i64,
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            String,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, cashier, business_date, closed_at, closed_by, payments, refunds, paid_fen, refunded_fen,
                    fund_paid_fen, fund_refunded_fen, by_method FROM cashier_closing
             WHERE ($1 = '' OR business_date = $1) AND ($2 = '' OR cashier = $2)
             ORDER BY business_date DESC, cashier LIMIT 500",
        )
        .bind(date.unwrap_or(""))
        .bind(cashier.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let by_method: Vec<(String, i64)> = serde_json::from_str(&r.11).unwrap_or_default();
                Closing {
                    id: r.0,
                    cashier: r.1,
                    business_date: r.2,
                    closed_at: r.3,
                    closed_by: r.4,
                    totals: DailyTotals {
                        payments: r.5,
                        refunds: r.6,
                        paid_fen: r.7,
                        refunded_fen: r.8,
                        net_fen: r.7 - r.8,
                        fund_paid_fen: r.9,
                        fund_refunded_fen: r.10,
                        fund_net_fen: r.9 - r.10,
                        by_method,
                    },
                }
            })
            .collect())
    }
}
