//! One conformance suite for both databases: what registration must do whatever stores it.

use nonstop_hospital::{
    Hospital, HospitalError, InsuranceCategory, NewPatient, NewRegistration, NewSchedule,
};

use crate::{backends, id_number};

pub fn patient(n: u32, birth: &str) -> NewPatient {
    NewPatient {
        name: format!("患者{n}"),
        gender: if n.is_multiple_of(2) {
            "female"
        } else {
            "male"
        }
        .into(),
        birth_date: format!("{}-{}-{}", &birth[..4], &birth[4..6], &birth[6..]),
        id_number: id_number(birth, n),
        phone: format!("1380000{n:04}"),
        insurance_category: InsuranceCategory::Employee,
        insurance_number: Some(format!("E{n:08}")),
    }
}

pub async fn session(h: &Hospital, quotas: (i64, i64, i64)) -> i64 {
    let doctor = h.practitioners().await.unwrap()[2]; // 张伟, attending, internal medicine
    h.add_schedule(&NewSchedule {
        practitioner_id: doctor,
        date: (h.business_date() + time::Duration::days(2)).to_string(),
        period: "night".into(),
        clinic_type: "night".into(),
        registration_level: 3,
        room: None,
        quotas: quotas.into(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_registrations_for_ten_slots_give_exactly_ten() {
    for b in backends().await {
        let h = b.hospital.clone();
        let schedule = session(&h, (0, 10, 0)).await;
        let mut patients = Vec::new();
        for n in 0..200 {
            patients.push(
                h.add_patient("clerk", &patient(n, "19900101"))
                    .await
                    .unwrap(),
            );
        }
        let tasks: Vec<_> = patients
            .into_iter()
            .map(|patient_id| {
                let h = h.clone();
                tokio::spawn(async move {
                    h.register(
                        "online",
                        &NewRegistration {
                            patient_id,
                            schedule_id: schedule,
                            channel: "online".into(),
                        },
                    )
                    .await
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(
                    HospitalError::QuotaExhausted { .. }
                    | HospitalError::Refused { rule: "quota", .. },
                ) => {}
                Err(other) => panic!("{}: unexpected {other}", b.name),
            }
        }
        assert_eq!(accepted, 10, "{}", b.name);
        assert_eq!(h.taken(schedule).await.unwrap(), (0, 10, 0), "{}", b.name);
        assert_eq!(
            h.registrations_of(schedule).await.unwrap(),
            10,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_registration_keeps_its_price_and_the_rule_versions_that_computed_it() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let p = h
            .add_patient("clerk", &patient(1, "19900101"))
            .await
            .unwrap();
        let r = h
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
        // fees 1.0.0: attending 20 yuan at level 3, night clinic 5 yuan, first visit booklet 1 yuan.
        assert_eq!(
            (r.fee_fen, r.status.as_str(), r.pool.as_str()),
            (2600, "pending", "on-site"),
            "{}",
            b.name
        );
        assert!(
            r.fee_rule.starts_with("fees 1.0.0 sha256:"),
            "{}",
            r.fee_rule
        );
        assert!(
            r.quota_rule.starts_with("quota 1.0.0 sha256:"),
            "{}",
            r.quota_rule
        );
        let trail = h.audit_trail("appointment", r.id).await.unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!(
            (trail[0].0.as_str(), trail[0].1.as_str()),
            ("clerk", "hold")
        );
        assert!(
            trail[0].2.contains("fee 2600 fen by fees 1.0.0"),
            "{}",
            trail[0].2
        );
    }
}

#[tokio::test]
async fn the_quota_rule_refuses_with_its_reason_and_nothing_changes() {
    for b in backends().await {
        let h = &b.hospital;
        let schedule = session(h, (5, 5, 2)).await;
        let young = h
            .add_patient("clerk", &patient(1, "19900101"))
            .await
            .unwrap();
        let elderly = h
            .add_patient("clerk", &patient(2, "19500101"))
            .await
            .unwrap();
        let register = |patient_id, channel: &str| NewRegistration {
            patient_id,
            schedule_id: schedule,
            channel: channel.into(),
        };
        let err = h
            .register("clerk", &register(young, "elderly-reserved"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused by the quota rule: reserved for patients 65 and over"
        );
        h.register("clerk", &register(young, "on-site"))
            .await
            .unwrap();
        let err = h
            .register("clerk", &register(young, "online"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused by the quota rule: one registration per department per day"
        );
        let r = h
            .register("clerk", &register(elderly, "elderly-reserved"))
            .await
            .unwrap();
        assert_eq!(
            r.fee_fen, 1600,
            "65 and over pay half the base fee: {}",
            b.name
        );
        assert_eq!(h.taken(schedule).await.unwrap(), (1, 0, 1), "{}", b.name);
        let err = h
            .register("clerk", &register(young, "walk-in"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid channel: \"walk-in\" is not on-site, online or elderly-reserved"
        );
        let err = h
            .register("clerk", &register(9999, "on-site"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "patient 9999 not found");
    }
}

#[tokio::test]
async fn bad_patient_fields_are_refused_with_the_field_named() {
    for b in backends().await {
        let h = &b.hospital;
        let mut p = patient(3, "19800229");
        let first = h.add_patient("clerk", &p).await.unwrap();
        let err = h.add_patient("clerk", &p).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid id_number: a patient with this ID number is already registered",
            "{}",
            b.name
        );
        assert!(
            matches!(err, HospitalError::Duplicate { existing_id, .. } if existing_id == first),
            "{}",
            b.name
        );
        p.id_number
            .replace_range(17.., if p.id_number.ends_with('0') { "1" } else { "0" });
        let err = h.add_patient("clerk", &p).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid id_number: check character is"),
            "{err}"
        );
        let mut p = patient(4, "19800101");
        p.birth_date = "1980-13-01".into();
        let err = h.add_patient("clerk", &p).await.unwrap_err();
        assert!(err.to_string().starts_with("invalid birth_date:"), "{err}");
    }
}

#[tokio::test]
async fn the_demo_hospital_has_a_week_of_sessions() {
    for b in backends().await {
        let h = &b.hospital;
        for day in 0..7 {
            let date = h.business_date() + time::Duration::days(day);
            let weekend = matches!(
                date.weekday(),
                time::Weekday::Saturday | time::Weekday::Sunday
            );
            // 8 doctors, mornings only at weekends, plus internal medicine's night clinic.
            let expected = if weekend { 8 + 1 } else { 16 + 1 };
            assert_eq!(
                h.schedules_on(&date.to_string()).await.unwrap().len(),
                expected,
                "{} {date}",
                b.name
            );
        }
        assert!(
            !h.seed_demo(h.business_date()).await.unwrap(),
            "seeding twice adds nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_patient_registering_twice_at_once_gets_one_registration() {
    for b in backends().await {
        let h = b.hospital.clone();
        let schedule = session(&h, (10, 10, 2)).await;
        let p = h
            .add_patient("clerk", &patient(1, "19900101"))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move {
                    h.register(
                        "clerk",
                        &NewRegistration {
                            patient_id: p,
                            schedule_id: schedule,
                            channel: "on-site".into(),
                        },
                    )
                    .await
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(
            accepted, 1,
            "{}: the daily limit holds under concurrency",
            b.name
        );
        assert_eq!(h.taken(schedule).await.unwrap(), (1, 0, 0), "{}", b.name);
    }
}

#[tokio::test]
async fn a_session_that_has_passed_takes_no_registration() {
    for b in backends().await {
        let h = &b.hospital;
        let doctor = h.practitioners().await.unwrap()[0];
        let yesterday = (h.business_date() - time::Duration::days(1)).to_string();
        let mut session = NewSchedule {
            practitioner_id: doctor,
            date: yesterday.clone(),
            period: "morning".into(),
            clinic_type: "general".into(),
            registration_level: 1,
            room: None,
            quotas: (5, 5, 1).into(),
        };
        // A session is never created in the past...
        let err = h.add_schedule(&session).await.unwrap_err();
        assert!(err.to_string().contains("has passed"), "{err}");
        // ...but yesterday's sessions were created before yesterday.
        session.date = (h.business_date() + time::Duration::days(30)).to_string();
        let past = h.add_schedule(&session).await.unwrap();
        b.sql(&format!(
            "UPDATE schedule SET session_date = '{yesterday}' WHERE id = {past}"
        ))
        .await;
        let p = h
            .add_patient("clerk", &patient(1, "19900101"))
            .await
            .unwrap();
        let err = h
            .register(
                "clerk",
                &NewRegistration {
                    patient_id: p,
                    schedule_id: past,
                    channel: "on-site".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().ends_with("which has passed"), "{err}");
    }
}
