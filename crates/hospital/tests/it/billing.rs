//! Payment, insurance split, refunds and reconciliation, on both databases.

use nonstop_hospital::{
    Hospital, HospitalError, NewRegistration, PaymentRequest, RefundRequest, Registration,
};

use crate::backends;
use crate::conformance::{patient, session};

async fn registered(h: &Hospital, n: u32, schedule: i64) -> Registration {
    let p = h
        .add_patient("clerk", &patient(n, "19900101"))
        .await
        .unwrap();
    h.register(
        "clerk",
        &NewRegistration {
            patient_id: p,
            schedule_id: schedule,
            channel: "on-site".into(),
        },
    )
    .await
    .unwrap()
}

fn payment(r: &Registration, key: &str) -> PaymentRequest {
    PaymentRequest {
        invoice_id: r.invoice_id,
        patient_id: r.patient_id,
        method: "wechat".into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn paying_splits_the_fee_with_the_insurance_rule_and_books_the_registration() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let r = registered(h, 1, schedule).await;
        let paid = h.pay("cashier-1", &payment(&r, "pay-1")).await.unwrap();
        assert_eq!(paid.self_pay_fen + paid.fund_fen, r.fee_fen, "{}", b.name);
        // An employee's first visit of the year goes to the deductible: self-pay in full.
        assert_eq!((paid.self_pay_fen, paid.fund_fen), (2600, 0), "{}", b.name);
        assert!(
            paid.insurance_rule.starts_with("insurance 1.0.0 sha256:"),
            "{}",
            paid.insurance_rule
        );
        let trail = h.audit_trail("invoice", r.invoice_id).await.unwrap();
        assert_eq!(trail[0].1, "pay");
        assert!(
            trail[0].2.contains("self-pay 2600 fen, fund 0 fen"),
            "{}",
            trail[0].2
        );
    }
}

#[tokio::test]
async fn the_same_payment_twice_charges_once() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let r = registered(h, 1, schedule).await;
        let first = h.pay("cashier-1", &payment(&r, "pay-1")).await.unwrap();
        let again = h.pay("cashier-1", &payment(&r, "pay-1")).await.unwrap();
        assert_eq!(first, again, "{}", b.name);
        let err = h.pay("cashier-1", &payment(&r, "pay-2")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refused by the billing rule: invoice {} is paid, not unpaid",
                r.invoice_id
            )
        );
        let other = registered(h, 2, schedule).await;
        let err = h
            .pay("cashier-1", &payment(&other, "pay-1"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid idempotency_key: already used for another request"
        );
        let mut wrong = payment(&other, "pay-3");
        wrong.patient_id = r.patient_id;
        let err = h.pay("cashier-1", &wrong).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid patient_id: invoice {} belongs to another patient",
                other.invoice_id
            )
        );
        assert_eq!(
            h.daily_totals(&h.business_date().to_string(), None)
                .await
                .unwrap()
                .paid_fen,
            2600,
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_of_one_invoice_charge_once() {
    for b in backends().await {
        let h = b.hospital.clone();
        let schedule = session(&h, (5, 5, 2)).await;
        let r = registered(&h, 1, schedule).await;
        // Ten retries of one request, and ten different requests, all at once.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (h, req) = (
                    h.clone(),
                    payment(
                        &r,
                        &if i < 10 {
                            "retry".to_string()
                        } else {
                            format!("other-{i}")
                        },
                    ),
                );
                tokio::spawn(async move { h.pay("kiosk", &req).await })
            })
            .collect();
        let mut won = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(p) => won.push((i, p.id)),
                Err(HospitalError::Refused {
                    rule: "billing", ..
                }) => {}
                Err(other) => panic!("{}: {other}", b.name),
            }
        }
        let mut ids: Vec<i64> = won.iter().map(|(_, id)| *id).collect();
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "{}: one payment, returned to every winner: {ids:?}",
            b.name
        );
        // If a retry won, every retry (even one sent while the first was running) got its
        // answer; if another request won, it alone did.
        let retries_won = won.iter().filter(|(i, _)| *i < 10).count();
        assert!(
            (retries_won, won.len()) == (10, 10) || (retries_won, won.len()) == (0, 1),
            "{}: {won:?}",
            b.name
        );
        let totals = h
            .daily_totals(&h.business_date().to_string(), None)
            .await
            .unwrap();
        assert_eq!(totals.paid_fen, r.fee_fen, "{}", b.name);
    }
}

#[tokio::test]
async fn a_refund_gives_back_what_was_paid_releases_the_slot_and_the_day_balances() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let kept = registered(h, 1, schedule).await;
        let refunded = registered(h, 2, schedule).await;
        let unpaid = registered(h, 3, schedule).await;
        h.pay("cashier-1", &payment(&kept, "k1")).await.unwrap();
        let mut cash = payment(&refunded, "r1");
        cash.method = "cash".into();
        h.pay("cashier-1", &cash).await.unwrap();
        let refund = |invoice_id, key: &str| RefundRequest {
            invoice_id,
            idempotency_key: key.into(),
            reason: "patient cannot come".into(),
        };
        let err = h
            .refund("cashier-1", &refund(unpaid.invoice_id, "x"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is unpaid: only a paid invoice can be refunded"),
            "{err}"
        );
        assert_eq!(h.taken(schedule).await.unwrap().0, 3);
        let back = h
            .refund("cashier-1", &refund(refunded.invoice_id, "rf1"))
            .await
            .unwrap();
        assert_eq!(
            (back.kind.as_str(), back.self_pay_fen),
            ("refund", refunded.fee_fen)
        );
        assert_eq!(
            h.refund("cashier-1", &refund(refunded.invoice_id, "rf1"))
                .await
                .unwrap(),
            back,
            "idempotent"
        );
        assert_eq!(
            h.taken(schedule).await.unwrap().0,
            2,
            "{}: the refunded slot is free again",
            b.name
        );
        assert!(h.cancel_hold("patient", unpaid.id).await.unwrap());
        assert_eq!(h.taken(schedule).await.unwrap().0, 1, "{}", b.name);
        let err = h
            .pay("cashier-1", &payment(&unpaid, "late"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is voided or refunded, not unpaid"),
            "{err}"
        );
        // The invoices say which is which, and what moved.
        let paid_back = h.invoice(refunded.invoice_id).await.unwrap();
        assert_eq!(
            (
                paid_back.status.as_str(),
                paid_back.cancelled_reason.as_deref()
            ),
            ("cancelled", Some("refunded: patient cannot come")),
            "{}",
            b.name
        );
        let kinds: Vec<_> = paid_back.payments.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["payment", "refund"]);
        let lines: i64 = paid_back.lines.iter().map(|l| l.amount_fen).sum();
        assert_eq!(lines, paid_back.total_fen);
        let voided = h.invoice(unpaid.invoice_id).await.unwrap();
        assert_eq!(
            voided.cancelled_reason.as_deref(),
            Some("voided unpaid: hold released by patient")
        );
        assert!(voided.payments.is_empty());
        let open = h.invoice(kept.invoice_id).await.unwrap();
        assert_eq!(
            (open.status.as_str(), open.cancelled_reason),
            ("balanced", None)
        );
        assert_eq!(open.fund_fen + open.self_pay_fen, open.total_fen);

        let t = h
            .daily_totals(&h.business_date().to_string(), Some("cashier-1"))
            .await
            .unwrap();
        assert_eq!(
            (t.paid_fen, t.refunded_fen, t.net_fen),
            (
                kept.fee_fen + refunded.fee_fen,
                refunded.fee_fen,
                kept.fee_fen
            ),
            "{}",
            b.name
        );
        let by_method: i64 = t.by_method.iter().map(|(_, v)| v).sum();
        assert_eq!(
            by_method, t.net_fen,
            "{}: methods balance to the fen",
            b.name
        );
        assert_eq!(
            t.by_method,
            [
                ("cash".to_string(), 0),
                ("wechat".to_string(), kept.fee_fen)
            ]
        );
    }
}

#[tokio::test]
async fn a_paid_registration_never_checked_in_becomes_a_no_show_after_its_day() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await; // the day after tomorrow
        let absent = registered(h, 1, schedule).await;
        let came = registered(h, 2, schedule).await;
        h.pay("cashier", &payment(&absent, "a")).await.unwrap();
        h.pay("cashier", &payment(&came, "c")).await.unwrap();
        h.check_in(
            "nurse",
            &nonstop_hospital::CheckIn {
                appointment_id: came.id,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let day = h.business_date() + time::Duration::days(2);
        assert_eq!(
            h.mark_no_shows(&day.to_string()).await.unwrap(),
            0,
            "{}: not before the day is over",
            b.name
        );
        let next = day + time::Duration::days(1);
        assert_eq!(
            h.mark_no_shows(&next.to_string()).await.unwrap(),
            1,
            "{}",
            b.name
        );
        assert_eq!(h.registration_status(absent.id).await.unwrap(), "noshow");
        assert_eq!(h.registration_status(came.id).await.unwrap(), "checked-in");
    }
}

#[tokio::test]
async fn a_refund_key_reused_for_a_payment_is_refused_not_answered() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let r = registered(h, 1, schedule).await;
        h.pay("cashier", &payment(&r, "same-key")).await.unwrap();
        let err = h
            .refund(
                "cashier",
                &RefundRequest {
                    invoice_id: r.invoice_id,
                    idempotency_key: "same-key".into(),
                    reason: "x".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid idempotency_key: already used for another request",
            "{}",
            b.name
        );
        assert_eq!(
            h.registration_status(r.id).await.unwrap(),
            "booked",
            "{}: nothing was refunded",
            b.name
        );
    }
}
