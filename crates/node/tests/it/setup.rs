//! A real hospital's first day, through the API alone: a node started on an empty database
//! without the demo seed is set up by its administrator (departments, doctors, a week of clinic
//! sessions, staff accounts) and runs a morning clinic: registrations, payments, the queue, a
//! cancelled session with its refunds, a doctor who stops mid-morning, and the cashier's
//! closing, which balances to the fen.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use nonstop_node::start;

use crate::api::{Api, patient, test_config};

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_set_up_from_nothing_runs_its_morning_clinic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.seed_demo = false;
    let node = start(config).await.unwrap();
    let password = std::fs::read_to_string(node.admin_password_file.as_ref().unwrap()).unwrap();
    let anon = Api {
        base: format!("http://{}", node.addr),
        client: Client::new(),
        token: String::new(),
    };
    let admin = anon.as_user("admin", password.trim()).await;
    let today = node.hospital.business_date().to_string();

    // Nothing: no department, no session.
    let empty = admin.ok("GET", "/api/v1/departments", Value::Null).await;
    assert_eq!(empty["items"], json!([]));
    let sessions = admin
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    assert_eq!(sessions["items"], json!([]));

    // Two departments, four doctors.
    let im = id(&admin
        .ok(
            "POST",
            "/api/v1/departments",
            json!({"code": "IM", "name": "内科"}),
        )
        .await);
    let ped = id(&admin
        .ok(
            "POST",
            "/api/v1/departments",
            json!({"code": "PED", "name": "儿科"}),
        )
        .await);
    let mut doctors = Vec::new();
    for (name, title, department) in [
        ("王主任", "chief", im),
        ("李医生", "attending", im),
        ("陈主任", "associate-chief", ped),
        ("杨医生", "resident", ped),
    ] {
        let d = admin
            .ok(
                "POST",
                "/api/v1/practitioners",
                json!({"name": name, "title": title, "department_id": department}),
            )
            .await;
        assert_eq!(d["active"], true);
        doctors.push(id(&d));
    }
    let (wang, li, chen, _yang) = (doctors[0], doctors[1], doctors[2], doctors[3]);

    // A week of sessions from today, in one request: every doctor, every day, morning and
    // afternoon.
    let every_day = json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
    let template: Vec<Value> = doctors
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            let every_day = every_day.clone();
            ["morning", "afternoon"].map(move |period| {
                json!({
                    "practitioner_id": d, "weekdays": every_day, "period": period,
                    "clinic_type": "general", "registration_level": 3,
                    "room": format!("{}0{}", if i < 2 { "A" } else { "B" }, i + 1),
                    "quotas": {"on_site": 3, "online": 2, "elderly": 1}
                })
            })
        })
        .collect();
    let plan = json!({"from": today, "days": 7, "sessions": template});
    let week = admin
        .ok("POST", "/api/v1/schedules/week", plan.clone())
        .await;
    assert_eq!(week["ids"].as_array().unwrap().len(), 4 * 7 * 2);
    // Planned twice: refused whole, naming the clash.
    let (status, err) = admin
        .call("POST", "/api/v1/schedules/week", Some(plan))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "period");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has a morning session"),
        "{err}"
    );
    // A session in the past is refused naming the date.
    let yesterday = (node.hospital.business_date() - time::Duration::days(1)).to_string();
    let (status, err) = admin
        .call(
            "POST",
            "/api/v1/schedules",
            Some(json!({
                "practitioner_id": wang, "date": yesterday, "period": "night",
                "clinic_type": "night", "registration_level": 3, "quotas": [1, 1, 1]
            })),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("date"))
    );
    let today_sessions = admin
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    let session_of = |doctor: i64, period: &str| {
        today_sessions["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["practitioner_id"] == doctor && s["period"] == period)
            .map(id)
            .unwrap()
    };
    let (wang_morning, li_afternoon, chen_morning) = (
        session_of(wang, "morning"),
        session_of(li, "afternoon"),
        session_of(chen, "morning"),
    );

    // Staff accounts: a weak password is refused; a doctor's account is linked to Dr Wang.
    let (status, err) = admin
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "clerk", "role": "clerk", "password": "111111111111"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("password"))
    );
    for (username, role, practitioner) in [
        ("clerk", "clerk", None),
        ("cashier", "cashier", None),
        ("wang", "doctor", Some(wang)),
    ] {
        admin
            .ok(
                "POST",
                "/api/v1/users",
                json!({"username": username, "role": role, "practitioner_id": practitioner,
                       "password": format!("{username}-password-1")}),
            )
            .await;
    }
    let clerk = admin.as_user("clerk", "clerk-password-1").await;
    let cashier = admin.as_user("cashier", "cashier-password-1").await;
    let doctor = admin.as_user("wang", "wang-password-1").await;
    let me = doctor.ok("GET", "/api/v1/me", Value::Null).await;
    assert_eq!(
        (me["role"].as_str(), me["practitioner_id"].as_i64()),
        (Some("doctor"), Some(wang))
    );
    // The pages take the hospital's day and clock from the node, not from the computer's zone.
    assert_eq!(
        doctor.ok("GET", "/api/v1/today", Value::Null).await,
        json!({"business_date": today, "utc_offset_minutes": 8 * 60})
    );

    // The morning clinic. The clerk registers three walk-ins with Dr Wang, finding one again by
    // name, phone and ID number.
    let mut walk_ins = Vec::new();
    for n in 0..3u32 {
        let mut p = patient(700 + n);
        p["name"] = json!(format!("赵{}", ["一", "二", "三"][n as usize]));
        p["phone"] = json!(format!("1390000{n:04}"));
        let patient_id = id(&clerk.ok("POST", "/api/v1/patients", p.clone()).await);
        let r = clerk
            .ok(
                "POST",
                "/api/v1/registrations",
                json!({"patient_id": patient_id, "schedule_id": wang_morning, "channel": "on-site"}),
            )
            .await;
        walk_ins.push((patient_id, r, p));
    }
    for q in [
        "赵",
        "13900000001",
        walk_ins[1].2["id_number"].as_str().unwrap(),
    ] {
        let found = clerk
            .ok("GET", &format!("/api/v1/patients?q={q}"), Value::Null)
            .await;
        let ids: Vec<i64> = found["items"].as_array().unwrap().iter().map(id).collect();
        assert!(ids.contains(&walk_ins[1].0), "{q}: {found}");
        assert!(
            !found
                .to_string()
                .contains(walk_ins[1].2["id_number"].as_str().unwrap())
        );
    }
    let (status, dup) = clerk
        .call("POST", "/api/v1/patients", Some(walk_ins[0].2.clone()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(dup["error"]["existing_id"], walk_ins[0].0);

    // The quota cannot go below what is taken (3 on site).
    let (status, err) = admin
        .call(
            "PUT",
            &format!("/api/v1/schedules/{wang_morning}/quotas"),
            Some(json!({"on_site": 2, "online": 2, "elderly": 1})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("quotas.on_site")),
        "{err}"
    );
    let raised = admin
        .ok(
            "PUT",
            &format!("/api/v1/schedules/{wang_morning}/quotas"),
            json!({"on_site": 5, "online": 2, "elderly": 1}),
        )
        .await;
    assert_eq!(raised["remaining"], json!([2, 2, 1]));

    // The cashier finds each patient's unpaid invoice and takes payment; two check in.
    let pay = |patient_id: i64, key: String| {
        let cashier = &cashier;
        async move {
            let unpaid = cashier
                .ok(
                    "GET",
                    &format!("/api/v1/patients/{patient_id}/invoices?status=issued"),
                    Value::Null,
                )
                .await;
            let invoice = id(&unpaid["items"][0]);
            cashier
                .ok(
                    "POST",
                    "/api/v1/payments",
                    json!({"invoice_id": invoice, "patient_id": patient_id, "method": "wechat", "idempotency_key": key}),
                )
                .await
        }
    };
    for (i, (patient_id, r, _)) in walk_ins.iter().take(2).enumerate() {
        pay(*patient_id, format!("morning-{i}")).await;
        clerk
            .ok(
                "POST",
                "/api/v1/check-ins",
                json!({"appointment_id": r["id"]}),
            )
            .await;
    }
    // Dr Wang calls the first and starts; then stops the session (停诊) mid-morning: the
    // second (paid, waiting) is refunded, the third (held) released; the one in service stays.
    let called = doctor
        .ok(
            "POST",
            &format!("/api/v1/schedules/{wang_morning}/call-next"),
            json!({"room": "A01"}),
        )
        .await;
    let ticket = called["ticket_id"].as_i64().unwrap();
    doctor
        .ok(
            "POST",
            &format!("/api/v1/tickets/{ticket}/start"),
            Value::Null,
        )
        .await;
    let stopped = doctor
        .ok(
            "POST",
            &format!("/api/v1/schedules/{wang_morning}/stop"),
            json!({"reason": "王主任被急诊叫走"}),
        )
        .await;
    assert_eq!(stopped["session"]["status"], "stopped");
    let notices = stopped["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 2, "{stopped}");
    let was: Vec<&str> = notices.iter().map(|n| n["was"].as_str().unwrap()).collect();
    assert_eq!(was.iter().filter(|w| **w == "paid").count(), 1, "{stopped}");
    assert!(
        notices
            .iter()
            .all(|n| n["phone"].as_str().unwrap().starts_with("139****"))
    );
    doctor
        .ok(
            "POST",
            &format!("/api/v1/tickets/{ticket}/finish"),
            Value::Null,
        )
        .await;

    // Dr Li's afternoon is cancelled: one paid registration refunded, one hold released.
    let mut afternoon = Vec::new();
    for n in 0..2u32 {
        let patient_id = id(&clerk.ok("POST", "/api/v1/patients", patient(800 + n)).await);
        clerk
            .ok(
                "POST",
                "/api/v1/registrations",
                json!({"patient_id": patient_id, "schedule_id": li_afternoon, "channel": "on-site"}),
            )
            .await;
        afternoon.push(patient_id);
    }
    pay(afternoon[0], "afternoon-0".into()).await;
    let (status, refused) = admin
        .call(
            "POST",
            &format!("/api/v1/schedules/{li_afternoon}/cancel"),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
    );
    let cancelled = admin
        .ok(
            "POST",
            &format!("/api/v1/schedules/{li_afternoon}/cancel"),
            json!({"reason": "李医生外出会诊"}),
        )
        .await;
    assert_eq!(cancelled["notices"].as_array().unwrap().len(), 2);
    let visits = clerk
        .ok(
            "GET",
            &format!("/api/v1/patients/{}/visits", afternoon[0]),
            Value::Null,
        )
        .await;
    assert_eq!(visits["items"][0]["status"], "cancelled");
    assert_eq!(visits["items"][0]["invoice_status"], "cancelled");
    let (status, _) = clerk
        .call(
            "POST",
            "/api/v1/registrations",
            Some(json!({"patient_id": afternoon[1], "schedule_id": li_afternoon, "channel": "on-site"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The cashier's closing: their 3 payments (the refunds of the stop and the cancellation are
    // the doctor's and the administrator's, on their own accounts).
    let totals = cashier
        .ok(
            "GET",
            &format!("/api/v1/cashier/totals?date={today}&cashier=cashier"),
            Value::Null,
        )
        .await;
    let closing = cashier
        .ok("POST", "/api/v1/cashier/closings", json!({}))
        .await;
    assert_eq!(closing["business_date"], today);
    assert_eq!(closing["totals"]["payments"], 3);
    for field in [
        "paid_fen",
        "refunded_fen",
        "net_fen",
        "fund_net_fen",
        "by_method",
    ] {
        assert_eq!(closing["totals"][field], totals[field], "{field}");
    }
    // Money in = self-pay + fund of what stays paid + what was refunded, to the fen.
    let all = admin
        .ok(
            "GET",
            &format!("/api/v1/cashier/totals?date={today}"),
            Value::Null,
        )
        .await;
    // Of the day's payments, only the first walk-in's stays paid.
    let kept = admin
        .ok(
            "GET",
            &format!(
                "/api/v1/patients/{}/invoices?status=balanced",
                walk_ins[0].0
            ),
            Value::Null,
        )
        .await["items"][0]["total_fen"]
        .as_i64()
        .unwrap();
    assert_eq!(
        all["net_fen"].as_i64().unwrap() + all["fund_net_fen"].as_i64().unwrap(),
        kept
    );
    // Closed twice: refused. A payment after closing falls into tomorrow.
    let (status, _) = cashier
        .call("POST", "/api/v1/cashier/closings", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let late = id(&clerk.ok("POST", "/api/v1/patients", patient(900)).await);
    clerk
        .ok(
            "POST",
            "/api/v1/registrations",
            json!({"patient_id": late, "schedule_id": chen_morning, "channel": "on-site"}),
        )
        .await;
    pay(late, "late".into()).await;
    let tomorrow = (node.hospital.business_date() + time::Duration::days(1)).to_string();
    let next = cashier
        .ok(
            "GET",
            &format!("/api/v1/cashier/totals?date={tomorrow}&cashier=cashier"),
            Value::Null,
        )
        .await;
    assert_eq!(next["payments"], 1);
    let frozen = cashier
        .ok(
            "GET",
            &format!("/api/v1/cashier/closings?date={today}"),
            Value::Null,
        )
        .await;
    assert_eq!(frozen["items"][0]["totals"], closing["totals"]);

    // Accounts: the administrator lists and disables the clerk, whose token stops at once.
    let users = admin.ok("GET", "/api/v1/users", Value::Null).await;
    let clerk_id = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "clerk")
        .map(id)
        .unwrap();
    admin
        .ok(
            "PATCH",
            &format!("/api/v1/users/{clerk_id}"),
            json!({"disabled": true}),
        )
        .await;
    let (status, _) = clerk.call("GET", "/api/v1/patients", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The doctor changes their own password, then signs out: the token is revoked.
    doctor
        .ok(
            "POST",
            "/api/v1/me/password",
            json!({"current_password": "wang-password-1", "new_password": "wang-new-secret-2"}),
        )
        .await;
    let (status, _) = doctor
        .call("DELETE", "/api/v1/sessions/current", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = doctor.call("GET", "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    admin.as_user("wang", "wang-new-secret-2").await;
    // Every change of the day is in the audit trail.
    let trail = admin
        .ok(
            "GET",
            &format!("/api/v1/audit/schedule/{li_afternoon}"),
            Value::Null,
        )
        .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "cancel"]);
    node.stop().await;
}
