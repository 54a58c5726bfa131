//! The triage queue and the doctor's view, on both databases.

use nonstop_hospital::{
    CheckIn, Hospital, NewRegistration, PaymentRequest, RefundRequest, Registration,
};

use crate::backends;
use crate::conformance::{patient, session};

/// Registers, pays and checks in patient `n` born on `birth`, through `channel`.
async fn arrive(
    h: &Hospital,
    schedule: i64,
    n: u32,
    birth: &str,
    channel: &str,
    emergency_level: u8,
) -> (Registration, i64) {
    let p = h.add_patient("clerk", &patient(n, birth)).await.unwrap();
    let r = h
        .register(
            "clerk",
            &NewRegistration {
                patient_id: p,
                schedule_id: schedule,
                channel: channel.into(),
            },
        )
        .await
        .unwrap();
    h.pay(
        "cashier",
        &PaymentRequest {
            invoice_id: r.invoice_id,
            patient_id: p,
            method: "card".into(),
            idempotency_key: format!("pay-{n}"),
        },
    )
    .await
    .unwrap();
    let t = h
        .check_in(
            "nurse",
            &CheckIn {
                appointment_id: r.id,
                emergency_level,
                ..CheckIn::default()
            },
        )
        .await
        .unwrap();
    (r, t.ticket_id)
}

fn names(queue: &[nonstop_hospital::QueueEntry]) -> Vec<(String, String)> {
    queue
        .iter()
        .map(|e| (e.patient_name.clone(), e.status.clone()))
        .collect()
}

#[tokio::test]
async fn patients_are_called_in_the_triage_rules_order_and_a_missed_one_is_requeued_then_expires() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (10, 10, 2)).await;
        arrive(h, schedule, 1, "19960101", "on-site", 0).await; // weight 0
        arrive(h, schedule, 2, "19410101", "on-site", 0).await; // 85 years: 3000
        let (emergency, _) = arrive(h, schedule, 3, "19960101", "on-site", 2).await; // level 2: 500000
        arrive(h, schedule, 4, "19960101", "online", 0).await; // appointment: 1000
        arrive(h, schedule, 5, "19960101", "on-site", 0).await; // 0, after patient 1
        arrive(h, schedule, 6, "19960101", "on-site", 0).await; // 0
        let order: Vec<String> = h
            .queue(schedule, 50, 0)
            .await
            .unwrap()
            .0
            .iter()
            .map(|e| e.patient_name.clone())
            .collect();
        assert_eq!(
            order,
            ["患者3", "患者2", "患者4", "患者1", "患者5", "患者6"],
            "{}",
            b.name
        );
        assert!(
            h.queue(schedule, 50, 0)
                .await
                .unwrap()
                .0
                .iter()
                .all(|e| e.paid),
            "the doctor sees who paid"
        );
        // A long queue is shown a page at a time, in the same order, with its length.
        let (page, total) = h.queue(schedule, 2, 2).await.unwrap();
        let page: Vec<&str> = page.iter().map(|e| e.patient_name.as_str()).collect();
        assert_eq!((page, total), (vec!["患者4", "患者1"], 6), "{}", b.name);

        let first = h
            .call_next("dr-zhang", schedule, "room 3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.patient_name.as_str(), first.room.as_deref()),
            ("患者3", Some("room 3"))
        );
        h.start_consultation("dr-zhang", first.ticket_id)
            .await
            .unwrap();
        h.finish_consultation("dr-zhang", first.ticket_id)
            .await
            .unwrap();

        let elderly = h
            .call_next("dr-zhang", schedule, "room 3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(elderly.patient_name, "患者2");
        let missed = h.miss("dr-zhang", elderly.ticket_id).await.unwrap();
        assert_eq!(
            (missed.status.as_str(), missed.weight, missed.missed_calls),
            ("waiting", 2000, 1),
            "{}",
            b.name
        );
        // triage 1.0.0 requeues a missed patient behind the next 3: patients 4, 1 and 5 come
        // first, then the missed one (weight 2000) before patient 6 (weight 0).
        let mut next = Vec::new();
        for _ in 0..4 {
            next.push(
                h.call_next("dr-zhang", schedule, "room 3")
                    .await
                    .unwrap()
                    .unwrap()
                    .patient_name,
            );
        }
        assert_eq!(next, ["患者4", "患者1", "患者5", "患者2"], "{}", b.name);
        // Missed again it waits behind 3 more; only patient 6 is left, so it comes back after
        // them, misses a third time, and expires (the rule's maximum).
        let t = h.miss("dr-zhang", elderly.ticket_id).await.unwrap();
        assert_eq!(t.missed_calls, 2);
        let sixth = h
            .call_next("dr-zhang", schedule, "room 3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sixth.patient_name, "患者6", "{}", b.name);
        let again = h
            .call_next("dr-zhang", schedule, "room 3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.ticket_id, elderly.ticket_id, "{}", b.name);
        let t = h.miss("dr-zhang", again.ticket_id).await.unwrap();
        assert_eq!(t.missed_calls, 3);
        assert_eq!(
            h.ticket(elderly.ticket_id).await.unwrap().status,
            "expired",
            "{}",
            b.name
        );
        assert!(
            h.call_next("dr-zhang", schedule, "room 3")
                .await
                .unwrap()
                .is_none()
        );
        let trail = h
            .audit_trail("queue_ticket", elderly.ticket_id)
            .await
            .unwrap();
        assert!(
            trail
                .last()
                .unwrap()
                .2
                .starts_with("miss 3: expired after 3 misses (triage 1.0.0"),
            "{:?}",
            trail.last()
        );

        // The emergency patient was seen: a consumed registration is not refunded.
        let err = h
            .refund(
                "cashier",
                &RefundRequest {
                    invoice_id: emergency.invoice_id,
                    idempotency_key: "rf".into(),
                    reason: "changed mind".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("consumed services are not refunded"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_patient_back_from_tests_returns_with_priority_and_unpaid_ones_cannot_check_in() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (10, 10, 2)).await;
        let (_, t1) = arrive(h, schedule, 1, "19960101", "on-site", 0).await;
        let (second, _) = arrive(h, schedule, 2, "19960101", "online", 0).await; // 1000
        let called = h
            .call_next("dr", schedule, "room 1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(called.patient_name, "患者2");
        h.start_consultation("dr", called.ticket_id).await.unwrap();
        // In consultation, the registration is consumed: no refund.
        let err = h
            .refund(
                "cashier",
                &RefundRequest {
                    invoice_id: second.invoice_id,
                    idempotency_key: "rf".into(),
                    reason: "r".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("consumed services are not refunded"),
            "{err}"
        );
        assert_eq!(
            h.ticket(called.ticket_id).await.unwrap().status,
            "in-service",
            "{}",
            b.name
        );
        let away = h.suspend("dr", called.ticket_id).await.unwrap();
        assert_eq!(away.status, "suspended");
        assert_eq!(
            names(&h.queue(schedule, 50, 0).await.unwrap().0),
            [
                ("患者1".into(), "waiting".into()),
                ("患者2".into(), "suspended".into())
            ]
        );
        let back = h.resume("nurse", called.ticket_id).await.unwrap();
        assert_eq!(
            (back.status.as_str(), back.weight),
            ("waiting", 3500),
            "{}: appointment 1000 + back from tests 2500",
            b.name
        );
        assert_eq!(
            h.call_next("dr", schedule, "room 1")
                .await
                .unwrap()
                .unwrap()
                .ticket_id,
            called.ticket_id
        );

        let p = h
            .add_patient("clerk", &patient(9, "19960101"))
            .await
            .unwrap();
        let unpaid = h
            .register(
                "clerk",
                &NewRegistration {
                    patient_id: p,
                    schedule_id: schedule,
                    channel: "on-site".into(),
                },
            )
            .await
            .unwrap();
        let err = h
            .check_in(
                "nurse",
                &CheckIn {
                    appointment_id: unpaid.id,
                    ..CheckIn::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refused by the registration rule: registration {} is pending: only a paid registration can check in",
                unpaid.id
            )
        );
        let err = h.finish_consultation("dr", t1).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is waiting, so it cannot be done"),
            "{err}"
        );
    }
}
