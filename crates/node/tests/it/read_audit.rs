//! The read audit over HTTP: who read which patient's data, how and from where, read back by an
//! auditor, who can do nothing else; and nobody but an administrator or an auditor reads it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, conforms, night_clinic, node, patient, walk_in};

/// The read audit's entries for `query` (`?patient_id=...`), newest first.
async fn audit(api: &Api, query: &str) -> Vec<Value> {
    let page = api
        .ok("GET", &format!("/api/v1/read-audit{query}"), Value::Null)
        .await;
    page["items"].as_array().unwrap().clone()
}

/// The entries of one kind of read, as (username, role, target, patient, client).
fn of_kind(entries: &[Value], kind: &str) -> Vec<(String, String, Value, i64, String)> {
    entries
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| {
            (
                e["username"].as_str().unwrap().to_owned(),
                e["role"].as_str().unwrap().to_owned(),
                e["target"].clone(),
                e["patient_id"].as_i64().unwrap(),
                e["client"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn auditor(admin: &Api) -> Api {
    admin
        .ok(
            "POST",
            "/api/v1/users",
            json!({"username": "auditor", "role": "auditor", "password": "auditor-password-1"}),
        )
        .await;
    admin.as_user("auditor", "auditor-password-1").await
}

fn entry(
    username: &str,
    role: &str,
    target: Value,
    patient: i64,
) -> (String, String, Value, i64, String) {
    (
        username.into(),
        role.into(),
        target,
        patient,
        "127.0.0.1".into(),
    )
}

/// A clerk's look at a patient, a cashier's at the invoice and the doctor's view of the queue
/// each leave an entry naming who (account and role), which patient, which read of which record,
/// and the address the request came from; `X-Forwarded-For` is not believed from a client that
/// is not a configured proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_record_read_by_staff_is_in_the_read_audit_with_who_what_and_from_where() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, doctor) = node(dir.path()).await;
    let auditor = auditor(&admin).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let (p, r) = walk_in(&clerk, schedule, 1).await;
    let invoice = r["invoice_id"].as_i64().unwrap();

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let path = format!("/api/v1/patients/{p}");
    let answer = clerk
        .client
        .get(format!("{}{path}", clerk.base))
        .bearer_auth(&clerk.token)
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    conforms("GET", &path, status, &body);
    assert_eq!((status, body["id"].as_i64()), (StatusCode::OK, Some(p)));

    let entries = audit(&auditor, &format!("?patient_id={p}")).await;
    assert_eq!(
        of_kind(&entries, "patient"),
        [entry("clerk", "clerk", json!(p), p)]
    );
    let clerk_id = clerk.ok("GET", "/api/v1/me", Value::Null).await["id"].clone();
    let read = entries.iter().find(|e| e["kind"] == "patient").unwrap();
    assert_eq!(read["user_id"], clerk_id);
    assert!(read["at"].as_i64().unwrap() >= before);

    cashier
        .ok("GET", &format!("/api/v1/invoices/{invoice}"), Value::Null)
        .await;
    cashier
        .ok(
            "POST",
            "/api/v1/payments",
            json!({"invoice_id": invoice, "patient_id": p, "method": "cash", "idempotency_key": "read-audit-1"}),
        )
        .await;
    clerk
        .ok(
            "POST",
            "/api/v1/check-ins",
            json!({"appointment_id": r["id"]}),
        )
        .await;
    let sessions = clerk
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    let practitioner = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == schedule)
        .unwrap()["practitioner_id"]
        .as_i64()
        .unwrap();
    let day = doctor
        .ok(
            "GET",
            &format!("/api/v1/practitioners/{practitioner}/day"),
            Value::Null,
        )
        .await;
    assert!(
        day["sessions"]
            .to_string()
            .contains(&format!("\"patient_id\":{p}"))
    );

    let entries = audit(&admin, &format!("?patient_id={p}")).await;
    assert_eq!(
        of_kind(&entries, "invoice"),
        [entry("cashier", "cashier", json!(invoice), p)]
    );
    assert_eq!(
        of_kind(&entries, "doctor-day"),
        [entry("doctor", "doctor", json!(practitioner), p)]
    );
    // Newest first.
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["doctor-day", "invoice", "patient"]);
    // By member of staff: the cashier's reads only.
    let by_cashier = audit(&auditor, "?staff=cashier").await;
    assert!(!by_cashier.is_empty() && by_cashier.iter().all(|e| e["username"] == "cashier"));
    node.stop().await;
}

/// A search records each patient it answered with, and only those: a page of two of three
/// records those two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_records_every_patient_it_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, _cashier, _doctor) = node(dir.path()).await;
    let auditor = auditor(&admin).await;
    for n in 20..23 {
        clerk.ok("POST", "/api/v1/patients", patient(n)).await;
    }
    let ids = |page: &Value| -> Vec<i64> {
        let mut ids: Vec<i64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let found = clerk
        .ok("GET", "/api/v1/patients?q=病人&limit=20", Value::Null)
        .await;
    let returned = ids(&found);
    assert_eq!(returned.len(), 3);
    let recorded = |entries: &[Value]| -> Vec<i64> {
        let mut ids: Vec<i64> = of_kind(entries, "patient-search")
            .into_iter()
            .map(|(username, role, target, patient, client)| {
                assert_eq!(
                    (username.as_str(), role.as_str(), target, client.as_str()),
                    ("clerk", "clerk", Value::Null, "127.0.0.1")
                );
                patient
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(recorded(&audit(&auditor, "?staff=clerk").await), returned);

    // A page of two, by the admin: two entries, the two it showed.
    let page = admin
        .ok(
            "GET",
            "/api/v1/patients?q=病人&limit=2&offset=1",
            Value::Null,
        )
        .await;
    let shown = ids(&page);
    assert_eq!(shown.len(), 2);
    let entries = audit(&auditor, "?staff=admin").await;
    let mut by_admin: Vec<i64> = of_kind(&entries, "patient-search")
        .into_iter()
        .map(|e| e.3)
        .collect();
    by_admin.sort();
    assert_eq!(by_admin, shown);

    // Paged by the cursor: one entry a page, each once.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = auditor
            .ok(
                "GET",
                &format!("/api/v1/read-audit?staff=clerk&limit=1{after}"),
                Value::Null,
            )
            .await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next"].as_i64() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    node.stop().await;
}

/// An auditor reads the read audit and the change audit and is refused everything else; the
/// staff who are read about cannot read the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_the_audits_and_nothing_else_and_a_clerk_cannot_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, doctor) = node(dir.path()).await;
    let auditor = auditor(&admin).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let (p, r) = walk_in(&clerk, schedule, 2).await;
    clerk
        .ok("GET", &format!("/api/v1/patients/{p}"), Value::Null)
        .await;

    assert_eq!(
        auditor.ok("GET", "/api/v1/me", Value::Null).await["role"],
        "auditor"
    );
    assert!(!audit(&auditor, "").await.is_empty());
    let trail = auditor
        .ok("GET", &format!("/api/v1/audit/patient/{p}"), Value::Null)
        .await;
    assert_eq!(trail["items"][0]["action"], "create");
    // The auditor's look at the patient's trail is itself recorded.
    let entries = audit(&admin, &format!("?patient_id={p}&staff=auditor")).await;
    assert_eq!(
        of_kind(&entries, "change-audit"),
        [entry("auditor", "auditor", json!(p), p)]
    );

    let refused = [
        ("GET", "/api/v1/patients".to_owned(), None),
        ("GET", format!("/api/v1/patients/{p}"), None),
        ("GET", format!("/api/v1/patients/{p}/visits"), None),
        ("POST", "/api/v1/patients".to_owned(), Some(patient(3))),
        (
            "POST",
            "/api/v1/registrations".to_owned(),
            Some(json!({"patient_id": p, "schedule_id": schedule, "channel": "on-site"})),
        ),
        ("GET", format!("/api/v1/invoices/{}", r["invoice_id"]), None),
        ("GET", format!("/api/v1/schedules/{schedule}/queue"), None),
        ("GET", format!("/api/v1/schedules?date={today}"), None),
        ("GET", "/api/v1/rules".to_owned(), None),
        ("GET", "/api/v1/users".to_owned(), None),
        ("POST", "/api/v1/tickets/1/no-such-action".to_owned(), None),
    ];
    for (method, path, body) in refused {
        let (status, answer) = auditor.call(method, &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }

    for staff in [&clerk, &cashier, &doctor] {
        let (status, answer) = staff.call("GET", "/api/v1/read-audit", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }
    let (status, _) = clerk
        .call("GET", &format!("/api/v1/audit/patient/{p}"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    node.stop().await;
}
