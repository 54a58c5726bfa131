//! A hospital's own set-up and its invariants under concurrency, on both databases: quotas
//! changed while registrations race, sessions cancelled while patients pay, the cashier's day
//! closed while payments come in, patient search and corrections, staff accounts.

use nonstop_hospital::clinic::{NewDepartment, NewPractitioner, SessionTemplate, WeekPlan};
use nonstop_hospital::patient::{PatientCorrection, PatientSearch};
use nonstop_hospital::staff::AccountChange;
use nonstop_hospital::{
    Hospital, HospitalError, NewRegistration, NewSchedule, PaymentRequest, Quotas, Role,
};

use crate::backends;
use crate::conformance::{patient, session};

async fn patients(h: &Hospital, from: u32, n: u32) -> Vec<i64> {
    let mut out = Vec::new();
    for i in from..from + n {
        out.push(
            h.add_patient("clerk", &patient(i, "19900101"))
                .await
                .unwrap(),
        );
    }
    out
}

fn on_site(patient_id: i64, schedule_id: i64) -> NewRegistration {
    NewRegistration {
        patient_id,
        schedule_id,
        channel: "on-site".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_lowered_while_registrations_race_never_leaves_more_taken_than_it_allows() {
    for b in backends().await {
        let h = b.hospital.clone();
        let schedule = session(&h, (40, 0, 0)).await;
        let ids = patients(&h, 0, 60).await;
        let mut tasks = Vec::new();
        for (i, p) in ids.into_iter().enumerate() {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                if i == 10 {
                    // Lowered to 15 while the others register: refused if more are taken.
                    let lowered = h.set_quotas("admin", schedule, (15, 0, 0).into()).await;
                    return (None, Some(lowered.map(|s| s.quota.on_site)));
                }
                (Some(h.register("clerk", &on_site(p, schedule)).await), None)
            }));
        }
        let (mut accepted, mut lowered) = (0, None);
        for t in tasks {
            match t.await.unwrap() {
                (Some(Ok(_)), _) => accepted += 1,
                (Some(Err(_)), _) => {}
                (None, Some(outcome)) => lowered = Some(outcome),
                _ => unreachable!(),
            }
        }
        let taken = h.taken(schedule).await.unwrap().0;
        let quota = h.session(schedule).await.unwrap().quota.on_site;
        assert_eq!(taken, accepted, "{}", b.name);
        assert!(taken <= quota, "{}: {taken} taken of {quota}", b.name);
        match lowered.unwrap() {
            Ok(15) => assert!(taken <= 15, "{}", b.name),
            Ok(other) => panic!("{}: quota {other}", b.name),
            Err(e) => assert!(e.to_string().contains("taken already"), "{}: {e}", b.name),
        }
        // And below what is taken, it is refused naming the pool.
        if taken > 0 {
            let err = h
                .set_quotas("admin", schedule, (taken - 1, 0, 0).into())
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    HospitalError::Invalid {
                        field: "quotas.on_site",
                        ..
                    }
                ),
                "{}: {err}",
                b.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cancelled_while_patients_pay_leaves_every_payment_refunded_not_lost() {
    for b in backends().await {
        let h = b.hospital.clone();
        let schedule = session(&h, (30, 0, 0)).await;
        let mut registrations = Vec::new();
        for p in patients(&h, 100, 20).await {
            registrations.push(h.register("clerk", &on_site(p, schedule)).await.unwrap());
        }
        let mut tasks = Vec::new();
        for (i, r) in registrations.iter().enumerate() {
            let (h, r) = (h.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                h.pay(
                    "cashier",
                    &PaymentRequest {
                        invoice_id: r.invoice_id,
                        patient_id: r.patient_id,
                        method: "cash".into(),
                        idempotency_key: format!("race-{i}"),
                    },
                )
                .await
                .map(|p| (r.invoice_id, p))
            }));
        }
        let cancel = {
            let h = h.clone();
            tokio::spawn(async move {
                h.cancel_session("admin", schedule, "doctor called away", false)
                    .await
            })
        };
        let mut paid = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(p) => paid.push(p),
                Err(e) => assert!(e.to_string().contains("cancelled"), "{}: {e}", b.name),
            }
        }
        let cancellation = cancel.await.unwrap().unwrap();
        assert_eq!(cancellation.notices.len(), 20, "{}", b.name);
        assert_eq!(cancellation.session.status, "cancelled");
        // Every payment that was taken was given back, in full.
        for (invoice, payment) in &paid {
            let view = h.invoice(*invoice).await.unwrap();
            assert_eq!(view.status, "cancelled", "{}", b.name);
            let refund = view
                .payments
                .iter()
                .find(|p| p.kind == "refund")
                .unwrap_or_else(|| panic!("{}: invoice {invoice} paid, not refunded", b.name));
            assert_eq!(
                (refund.self_pay_fen, refund.fund_fen),
                (payment.self_pay_fen, payment.fund_fen)
            );
            let notice = cancellation
                .notices
                .iter()
                .find(|n| n.invoice_id == *invoice)
                .unwrap();
            assert_eq!(notice.was, "paid");
            assert_eq!(notice.refunded_self_pay_fen, payment.self_pay_fen);
        }
        let held = cancellation
            .notices
            .iter()
            .filter(|n| n.was == "held")
            .count();
        assert_eq!(held + paid.len(), 20, "{}", b.name);
        assert_eq!(h.taken(schedule).await.unwrap(), (0, 0, 0), "{}", b.name);
        let totals = h
            .daily_totals(&h.business_date().to_string(), Some("admin"))
            .await
            .unwrap();
        assert_eq!(totals.refunds as usize, paid.len(), "{}", b.name);
        // Nobody registers in a cancelled session.
        let late = patients(&h, 200, 1).await[0];
        let err = h
            .register("clerk", &on_site(late, schedule))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{}: {err}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_day_keeps_its_totals_and_later_payments_fall_into_the_next_day() {
    for b in backends().await {
        let h = b.hospital.clone();
        h.add_user(
            "admin",
            "cashier-a",
            Role::Cashier,
            None,
            "cashier-password-1",
        )
        .await
        .unwrap();
        let schedule = session(&h, (60, 0, 0)).await;
        let mut registrations = Vec::new();
        for p in patients(&h, 300, 30).await {
            registrations.push(h.register("clerk", &on_site(p, schedule)).await.unwrap());
        }
        let today = h.business_date();
        let pay = |i: usize| {
            let (h, r) = (h.clone(), registrations[i].clone());
            tokio::spawn(async move {
                h.pay(
                    "cashier-a",
                    &PaymentRequest {
                        invoice_id: r.invoice_id,
                        patient_id: r.patient_id,
                        method: if i.is_multiple_of(2) {
                            "cash"
                        } else {
                            "wechat"
                        }
                        .into(),
                        idempotency_key: format!("close-{i}"),
                    },
                )
                .await
                .unwrap()
            })
        };
        let tasks: Vec<_> = (0..30).map(pay).collect();
        let closing = {
            let h = h.clone();
            tokio::spawn(async move { h.close_day("cashier-a", "cashier-a", None).await })
        };
        for t in tasks {
            t.await.unwrap();
        }
        let closing = closing.await.unwrap().unwrap();
        let tomorrow = (today + time::Duration::days(1)).to_string();
        let (on_day, next_day) = (
            h.daily_totals(&today.to_string(), Some("cashier-a"))
                .await
                .unwrap(),
            h.daily_totals(&tomorrow, Some("cashier-a")).await.unwrap(),
        );
        // The closing froze exactly the day's payments; the rest went to tomorrow.
        assert_eq!(closing.totals, on_day, "{}", b.name);
        assert_eq!(on_day.payments + next_day.payments, 30, "{}", b.name);
        let method_sum: i64 = on_day.by_method.iter().map(|(_, n)| n).sum();
        assert_eq!(method_sum, on_day.net_fen, "{}", b.name);
        // Closed twice: refused; the closing is listed.
        let err = h
            .close_day("cashier-a", "cashier-a", None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("closed already"),
            "{}: {err}",
            b.name
        );
        let listed = h
            .closings(Some(&today.to_string()), Some("cashier-a"))
            .await
            .unwrap();
        assert_eq!(listed, vec![closing], "{}", b.name);
        // A future day cannot be closed.
        let err = h
            .close_day("cashier-a", "cashier-a", Some(&tomorrow))
            .await
            .unwrap_err();
        assert!(matches!(err, HospitalError::Invalid { field: "date", .. }));
    }
}

#[tokio::test]
async fn patients_are_found_by_name_prefix_phone_or_id_number_and_corrections_keep_the_old_values()
{
    for b in backends().await {
        let h = &b.hospital;
        let mut first = patient(1, "19800101");
        first.name = "张三丰".into();
        first.phone = "13912345678".into();
        let zhang = h.add_patient("clerk", &first).await.unwrap();
        let mut second = patient(2, "19800101");
        second.name = "张无忌".into();
        h.add_patient("clerk", &second).await.unwrap();
        let mut third = patient(3, "19800101");
        third.name = "李四".into();
        h.add_patient("clerk", &third).await.unwrap();

        let find = |by: PatientSearch| async move { h.search_patients(&by, 50, 0).await.unwrap() };
        let (found, total) = find(PatientSearch::NamePrefix("张".into())).await;
        assert_eq!(total, 2, "{}", b.name);
        assert_eq!(found[0].name, "张三丰");
        let (found, _) = find(PatientSearch::guess("张无").unwrap()).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "张无忌");
        let (found, _) = find(PatientSearch::guess("13912345678").unwrap()).await;
        assert_eq!(found[0].id, zhang);
        assert_eq!(found[0].phone, "139****5678");
        let (found, _) = find(PatientSearch::guess(&first.id_number.to_lowercase()).unwrap()).await;
        assert_eq!(found[0].id, zhang, "{}", b.name);
        assert_eq!(
            found[0].id_number,
            nonstop_hospital::patient::mask_id_number(&first.id_number)
        );

        // A second patient with the same ID number is refused, naming the first.
        let err = h.add_patient("clerk", &first).await.unwrap_err();
        assert!(
            matches!(err, HospitalError::Duplicate { field: "id_number", existing_id, .. } if existing_id == zhang),
            "{}: {err}",
            b.name
        );

        // A correction keeps the previous values, and the audit names the fields, not values.
        let corrected = h
            .correct_patient(
                "clerk",
                zhang,
                &PatientCorrection {
                    phone: Some("13900000000".into()),
                    reason: "patient changed number".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(corrected.phone, "13900000000");
        let revisions = h.patient_revisions(zhang).await.unwrap();
        assert_eq!(revisions[0].previous["phone"], "13912345678", "{}", b.name);
        assert_eq!(revisions[0].actor, "clerk");
        let trail = h.audit_trail("patient", zhang).await.unwrap();
        assert_eq!(trail.last().unwrap().1, "correct");
        assert!(trail.last().unwrap().2.contains("phone"), "{:?}", trail);
        assert!(!trail.last().unwrap().2.contains("1390000"), "{:?}", trail);
        // An ID number taken by another patient, or not matching the birth date, is refused.
        let err = h
            .correct_patient(
                "clerk",
                zhang,
                &PatientCorrection {
                    id_number: Some(second.id_number.clone()),
                    reason: "typo".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, HospitalError::Duplicate { .. }), "{err}");
        let err = h
            .correct_patient(
                "clerk",
                zhang,
                &PatientCorrection {
                    birth_date: Some("1981-01-01".into()),
                    reason: "typo".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HospitalError::Invalid {
                    field: "id_number",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_new_hospital_plans_its_week_and_refuses_what_would_break_it() {
    for b in backends().await {
        let h = &b.hospital;
        let department = h
            .add_department(
                "admin",
                &NewDepartment {
                    code: "DERM".into(),
                    name: "皮肤科".into(),
                },
            )
            .await
            .unwrap();
        let doctor = h
            .add_practitioner(
                "admin",
                &NewPractitioner {
                    name: "周医生".into(),
                    title: "attending".into(),
                    department_id: department.id,
                },
            )
            .await
            .unwrap();
        let from = h.business_date() + time::Duration::days(1);
        let plan = WeekPlan {
            from: from.to_string(),
            days: 7,
            sessions: vec![SessionTemplate {
                practitioner_id: doctor.id,
                weekdays: ["mon", "tue", "wed", "thu", "fri"]
                    .map(String::from)
                    .to_vec(),
                period: "morning".into(),
                clinic_type: "general".into(),
                registration_level: 3,
                room: Some("D-101".into()),
                quotas: Quotas {
                    on_site: 10,
                    online: 5,
                    elderly: 2,
                },
            }],
        };
        let ids = h.plan_week("admin", &plan).await.unwrap();
        assert_eq!(ids.len(), 5, "{}", b.name);
        // The same plan again: refused whole, naming the clash; nothing added.
        let err = h.plan_week("admin", &plan).await.unwrap_err();
        assert!(
            err.to_string().contains("already has a morning session"),
            "{err}"
        );
        let day = h.session(ids[0]).await.unwrap().date;
        let on_day: Vec<_> = h
            .sessions_on(&day, Some(department.id))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(on_day, vec![ids[0]], "{}", b.name);
        let s = h.session(ids[0]).await.unwrap();
        assert_eq!(
            (s.room.as_deref(), s.remaining),
            (Some("D-101"), (10, 5, 2))
        );

        // A deactivated doctor takes no new session; their sessions stay.
        h.change_practitioner(
            "admin",
            doctor.id,
            &nonstop_hospital::clinic::PractitionerChange {
                active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let err = h
            .add_schedule(&NewSchedule {
                practitioner_id: doctor.id,
                date: from.to_string(),
                period: "afternoon".into(),
                clinic_type: "general".into(),
                registration_level: 3,
                room: None,
                quotas: (1, 1, 1).into(),
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("deactivated"), "{err}");
        assert_eq!(h.session(ids[0]).await.unwrap().status, "active");
        let trail = h.audit_trail("practitioner", doctor.id).await.unwrap();
        assert_eq!(trail.last().unwrap().1, "change");
    }
}

#[tokio::test]
async fn a_disabled_account_is_signed_out_at_once_and_failed_sign_ins_lock_an_account() {
    for b in backends().await {
        let h = &b.hospital;
        let id = h
            .add_user("admin", "clerk-x", Role::Clerk, None, "clerk-password-1")
            .await
            .unwrap();
        let admin = h
            .add_user("admin", "admin-x", Role::Admin, None, "admin-password-1")
            .await
            .unwrap();
        let (token, _) = h.login("clerk-x", "clerk-password-1").await.unwrap();
        h.authenticate(&token).await.unwrap();
        h.change_account(
            "admin-x",
            admin,
            id,
            &AccountChange {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(h.authenticate(&token).await.is_err(), "{}", b.name);
        let err = h.login("clerk-x", "clerk-password-1").await.unwrap_err();
        assert!(err.to_string().contains("disabled"), "{err}");
        // An administrator cannot lock themself out.
        let err = h
            .change_account(
                "admin-x",
                admin,
                admin,
                &AccountChange {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("own account"), "{err}");

        // Five failures lock the account, even against the right password; audited.
        let cashier = h
            .add_user(
                "admin",
                "cashier-x",
                Role::Cashier,
                None,
                "cashier-password-1",
            )
            .await
            .unwrap();
        for _ in 0..5 {
            h.login("cashier-x", "wrong-password-00").await.unwrap_err();
        }
        let err = h
            .login("cashier-x", "cashier-password-1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("locked"), "{}: {err}", b.name);
        let trail = h.audit_trail("app_user", cashier).await.unwrap();
        assert!(
            trail.iter().any(|(_, action, _)| action == "lock"),
            "{trail:?}"
        );
        // A reset lifts the lock.
        h.reset_password("admin-x", cashier, "new-cashier-pass-2")
            .await
            .unwrap();
        h.login("cashier-x", "new-cashier-pass-2").await.unwrap();
        // Weak passwords are refused naming the field.
        let err = h
            .add_user("admin", "weak", Role::Clerk, None, "aaaaaaaaaaaaaaaa")
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            HospitalError::Invalid {
                field: "password",
                ..
            }
        ));
    }
}

#[tokio::test]
async fn a_stopped_session_refunds_only_the_patients_not_yet_seen() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (10, 0, 0)).await;
        let mut tickets = Vec::new();
        for (i, p) in patients(h, 400, 4).await.into_iter().enumerate() {
            let r = h.register("clerk", &on_site(p, schedule)).await.unwrap();
            if i == 3 {
                break; // held, unpaid
            }
            h.pay(
                "cashier",
                &PaymentRequest {
                    invoice_id: r.invoice_id,
                    patient_id: p,
                    method: "card".into(),
                    idempotency_key: format!("stop-{i}"),
                },
            )
            .await
            .unwrap();
            let entry = h
                .check_in(
                    "clerk",
                    &nonstop_hospital::CheckIn {
                        appointment_id: r.id,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            tickets.push((entry.ticket_id, r.invoice_id));
        }
        // The first is with the doctor, the second out for tests; the third waits.
        for _ in 0..2 {
            let called = h.call_next("doctor", schedule, "3").await.unwrap().unwrap();
            h.start_consultation("doctor", called.ticket_id)
                .await
                .unwrap();
            if called.ticket_id != tickets[0].0 {
                h.suspend("doctor", called.ticket_id).await.unwrap();
            }
        }
        let stopped = h
            .cancel_session("doctor", schedule, "fever", true)
            .await
            .unwrap();
        let mut told: Vec<(&str, i64)> = stopped
            .notices
            .iter()
            .map(|n| (n.was.as_str(), n.invoice_id))
            .collect();
        told.sort();
        assert_eq!(told.len(), 2, "{}: {told:?}", b.name);
        assert_eq!(told[1], ("paid", tickets[2].1), "{}", b.name);
        assert_eq!(told[0].0, "held");
        // The two whose consultation began keep their paid visit and their ticket.
        for (ticket, invoice) in &tickets[..2] {
            assert_eq!(h.invoice(*invoice).await.unwrap().status, "balanced");
            assert_ne!(h.ticket(*ticket).await.unwrap().status, "expired");
        }
    }
}

/// A program that takes over (issue 10) is handed the tokens the one before verified: they work
/// at once there, and one signed out meanwhile is refused at its first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_handed_to_the_next_program_work_there_and_a_revoked_one_does_not() {
    for b in backends().await {
        let h = &b.hospital;
        h.add_user(
            "admin",
            "clerk-a",
            nonstop_hospital::Role::Clerk,
            None,
            "a-password-1",
        )
        .await
        .unwrap();
        h.add_user(
            "admin",
            "clerk-b",
            nonstop_hospital::Role::Clerk,
            None,
            "b-password-1",
        )
        .await
        .unwrap();
        let (a, _) = h.login("clerk-a", "a-password-1").await.unwrap();
        let (b_token, b_staff) = h.login("clerk-b", "b-password-1").await.unwrap();
        h.authenticate(&a).await.unwrap();
        h.authenticate(&b_token).await.unwrap();
        let handed = h.remembered_tokens();
        assert_eq!(handed.len(), 2, "{}", b.name);
        // The handed list carries digests, never the secrets.
        let text = serde_json::to_string(&handed).unwrap();
        assert!(!text.contains(a.split_once('.').unwrap().1), "{}", b.name);

        // clerk-b signs out after the hand-over was taken.
        let b_id: i64 = b_token.split_once('.').unwrap().0.parse().unwrap();
        h.sign_out(&b_staff, b_id).await.unwrap();

        // The next program, on the same database.
        let next = Hospital::open(&b.url, 4, crate::rules(b._dir.path()))
            .await
            .unwrap();
        next.remember_tokens(serde_json::from_str(&text).unwrap());
        assert_eq!(
            next.authenticate(&a).await.unwrap().username,
            "clerk-a",
            "{}",
            b.name
        );
        assert!(next.authenticate(&b_token).await.is_err(), "{}", b.name);
        // A forged token with a handed id and another secret is refused.
        let forged = format!("{}.{}", a.split_once('.').unwrap().0, "0".repeat(64));
        assert!(next.authenticate(&forged).await.is_err(), "{}", b.name);
    }
}
