//! The node end to end over HTTP: real processes' worth of wiring (store, agent, rules, database,
//! API) started on a loopback port, driven as staff would drive it.

use std::path::PathBuf;
use std::time::Duration;

use nonstop_node::{NodeConfig, RunningNode, start};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::id_number;

/// Checks an answer against the node's OpenAPI document, as a client generated from it would
/// read it: the status is documented for the operation (or covered by its `default`), and the
/// body matches that response's schema. Every call these tests make goes through here.
pub(crate) fn conforms(method: &str, path: &str, status: StatusCode, body: &Value) {
    static DOC: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::from_str(nonstop_hospital::api::OPENAPI).unwrap());
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    let fits = |template: &str| {
        let t: Vec<&str> = template.split('/').collect();
        t.len() == segments.len()
            && t.iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    };
    let operation = DOC["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(template, _)| fits(template))
        // The most literal template wins: `/a/{id}/x` before `/a/{id}/{action}`.
        .min_by_key(|(template, _)| template.matches('{').count())
        .map(|(_, item)| &item[method.to_lowercase()])
        .filter(|op| op.is_object())
        .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
    let responses = &operation["responses"];
    let mut response = responses
        .get(status.as_str())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
    if let Some(name) = response["$ref"].as_str() {
        response = &DOC["components"]["responses"][name.rsplit('/').next().unwrap()];
    }
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return;
    };
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": DOC["components"],
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} ({status}) does not match its documented schema: {errors:?}\n{body}"
    );
}

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) token: String,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            "PATCH" => self.client.patch(url),
            "PUT" => self.client.put(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        conforms(method, path, status, &value);
        (status, value)
    }

    pub(crate) async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self
            .call(method, path, Some(body).filter(|b| !b.is_null()))
            .await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    pub(crate) async fn as_user(&self, username: &str, password: &str) -> Api {
        let login = Api {
            base: self.base.clone(),
            client: self.client.clone(),
            token: String::new(),
        };
        let v = login
            .ok(
                "POST",
                "/api/v1/sessions",
                json!({"username": username, "password": password}),
            )
            .await;
        Api {
            base: self.base.clone(),
            client: self.client.clone(),
            token: v["token"].as_str().unwrap().to_owned(),
        }
    }
}

pub(crate) fn test_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".into(),
        // Loopback only: the HTTPS listener has tests of its own (crates/tls, cli fleet).
        tls: nonstop_tls::TlsConfig::off(),
        ..NodeConfig::default()
    };
    config.checks.shadow_calls = 20;
    config.checks.watch_calls = 20;
    config.checks.watch_secs = 2;
    config
}

/// A node on SQLite in `dir`, with an administrator and one user of each role.
pub(crate) async fn node(dir: &std::path::Path) -> (RunningNode, Api, Api, Api, Api) {
    let node = start(test_config(dir)).await.unwrap();
    let password = std::fs::read_to_string(node.admin_password_file.as_ref().unwrap()).unwrap();
    let base = format!("http://{}", node.addr);
    let anon = Api {
        base,
        client: Client::new(),
        token: String::new(),
    };
    let admin = anon.as_user("admin", password.trim()).await;
    for role in ["clerk", "cashier", "doctor"] {
        admin
            .ok(
                "POST",
                "/api/v1/users",
                json!({"username": role, "role": role, "password": format!("{role}-password-1")}),
            )
            .await;
    }
    let clerk = admin.as_user("clerk", "clerk-password-1").await;
    let cashier = admin.as_user("cashier", "cashier-password-1").await;
    let doctor = admin.as_user("doctor", "doctor-password-1").await;
    (node, admin, clerk, cashier, doctor)
}

pub(crate) fn patient(n: u32) -> Value {
    json!({
        "name": format!("病人{n}"), "gender": "female", "birth_date": "1990-01-01",
        "id_number": id_number("19900101", n), "phone": "13800001111",
        "insurance_category": "resident", "insurance_number": null
    })
}

/// A new patient `n`, registered on site in `schedule`: the patient's id and the registration.
pub(crate) async fn walk_in(clerk: &Api, schedule: i64, n: u32) -> (i64, Value) {
    let p = clerk.ok("POST", "/api/v1/patients", patient(n)).await["id"]
        .as_i64()
        .unwrap();
    let r = clerk
        .ok(
            "POST",
            "/api/v1/registrations",
            json!({"patient_id": p, "schedule_id": schedule, "channel": "on-site"}),
        )
        .await;
    (p, r)
}

/// The id of today's night clinic (internal medicine's most junior doctor).
pub(crate) async fn night_clinic(clerk: &Api, today: &str) -> i64 {
    let schedules = clerk
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    schedules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["period"] == "night")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_goes_from_registration_to_the_doctor_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;

    let (p, r) = walk_in(&clerk, schedule, 1).await;
    // fees 1.0.0 for the resident doctor's night clinic: 10 yuan x 90% + 5 yuan + booklet 1 yuan.
    assert_eq!(r["fee_fen"], 1500);
    assert!(
        r["fee_rule"]
            .as_str()
            .unwrap()
            .starts_with("fees 1.0.0 sha256:")
    );
    let pay = json!({"invoice_id": r["invoice_id"], "patient_id": p, "method": "wechat", "idempotency_key": "k-1"});
    let first = cashier.ok("POST", "/api/v1/payments", pay.clone()).await;
    assert_eq!(
        cashier.ok("POST", "/api/v1/payments", pay).await,
        first,
        "the same request twice charges once"
    );
    let invoice = cashier
        .ok(
            "GET",
            &format!("/api/v1/invoices/{}", r["invoice_id"]),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            invoice["status"].as_str(),
            invoice["payments"][0]["id"].clone()
        ),
        (Some("balanced"), first["id"].clone())
    );
    clerk
        .ok(
            "POST",
            "/api/v1/check-ins",
            json!({"appointment_id": r["id"]}),
        )
        .await;
    let called = doctor
        .ok(
            "POST",
            &format!("/api/v1/schedules/{schedule}/call-next"),
            json!({"room": "诊室 5"}),
        )
        .await;
    assert_eq!(
        (called["room"].as_str(), called["paid"].as_bool()),
        (Some("诊室 5"), Some(true))
    );
    let view = doctor
        .ok(
            "GET",
            &format!("/api/v1/schedules/{schedule}/queue"),
            Value::Null,
        )
        .await;
    assert_eq!(
        view["items"][0]["id_number"],
        "110105********0019".replace("0019", &id_number("19900101", 1)[14..])
    );
    let board = clerk
        .ok(
            "GET",
            &format!("/api/v1/schedules/{schedule}/waiting-room"),
            Value::Null,
        )
        .await;
    assert_eq!(board["items"][0]["patient"], "病**");
    let first_only = clerk
        .ok(
            "GET",
            &format!("/api/v1/schedules/{schedule}/waiting-room?limit=1"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            first_only["items"].as_array().map(Vec::len),
            &first_only["total"]
        ),
        (Some(1), &board["total"])
    );
    doctor
        .ok(
            "POST",
            &format!("/api/v1/tickets/{}/start", called["ticket_id"]),
            Value::Null,
        )
        .await;
    let seen = doctor
        .ok(
            "POST",
            &format!("/api/v1/tickets/{}/finish", called["ticket_id"]),
            Value::Null,
        )
        .await;
    // The queue's states, and the FHIR Encounter status a facade would show.
    assert_eq!(
        [&called, &seen].map(|t| (t["status"].as_str(), t["encounter_status"].as_str())),
        [
            (Some("called"), Some("arrived")),
            (Some("done"), Some("finished"))
        ]
    );

    let totals = cashier
        .ok(
            "GET",
            &format!("/api/v1/cashier/totals?date={today}"),
            Value::Null,
        )
        .await;
    assert_eq!(totals["net_fen"], 1500);
    let trail = admin
        .ok(
            "GET",
            &format!("/api/v1/audit/appointment/{}", r["id"]),
            Value::Null,
        )
        .await;
    assert_eq!(trail["items"][0]["actor"], "clerk");
    let rules = clerk.ok("GET", "/api/v1/rules", Value::Null).await;
    assert_eq!(rules["items"].as_array().unwrap().len(), 4);
    node.stop().await;
}

/// A self-service kiosk has an account of its own that shows an invoice and takes self-service
/// payments, and can do nothing else: not take cash, not refund, not see patients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_takes_self_service_payments_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, _doctor) = node(dir.path()).await;
    admin
        .ok(
            "POST",
            "/api/v1/users",
            json!({"username": "kiosk-hall-1", "role": "kiosk", "password": "kiosk-password-1"}),
        )
        .await;
    let kiosk = admin.as_user("kiosk-hall-1", "kiosk-password-1").await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let (p, r) = walk_in(&clerk, schedule, 1).await;
    let invoice = format!("/api/v1/invoices/{}", r["invoice_id"]);
    assert_eq!(
        kiosk.ok("GET", &invoice, Value::Null).await["status"],
        "issued"
    );

    let pay = |method: &str| json!({"invoice_id": r["invoice_id"], "patient_id": p, "method": method, "idempotency_key": format!("kiosk-{method}")});
    let refused = [
        kiosk
            .call("POST", "/api/v1/payments", Some(pay("cash")))
            .await,
        kiosk
            .call(
                "POST",
                "/api/v1/refunds",
                Some(json!({"invoice_id": r["invoice_id"], "idempotency_key": "r", "reason": "r"})),
            )
            .await,
        kiosk.call("GET", "/api/v1/patients", None).await,
        kiosk
            .call("POST", "/api/v1/patients", Some(patient(2)))
            .await,
        kiosk
            .call("GET", &format!("/api/v1/schedules?date={today}"), None)
            .await,
    ];
    for (i, (status, body)) in refused.iter().enumerate() {
        assert_eq!(*status, StatusCode::FORBIDDEN, "case {i}: {body}");
    }
    assert_eq!(
        kiosk.ok("GET", &invoice, Value::Null).await["status"],
        "issued"
    );
    let paid = kiosk
        .ok("POST", "/api/v1/payments", pay("self-service"))
        .await;
    assert_eq!(paid["kind"], "payment");
    let totals = cashier
        .ok(
            "GET",
            &format!("/api/v1/cashier/totals?date={today}&cashier=kiosk-hall-1"),
            Value::Null,
        )
        .await;
    assert_eq!(
        totals["by_method"],
        json!([["self-service", paid["self_pay_fen"]]])
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_sees_their_day_with_who_has_paid_and_acts_only_in_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, _doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedules = clerk
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    let night = schedules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["period"] == "night")
        .unwrap()
        .clone();
    let other = schedules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["practitioner_id"] != night["practitioner_id"])
        .unwrap()
        .clone();
    let me = night["practitioner_id"].as_i64().unwrap();
    admin
        .ok(
            "POST",
            "/api/v1/users",
            json!({"username": "dr-night", "role": "doctor", "practitioner_id": me, "password": "night-password-1"}),
        )
        .await;
    // Only a doctor's account names a practitioner.
    let (status, body) = admin
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "clerk-2", "role": "clerk", "practitioner_id": me, "password": "clerk-password-2"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("practitioner_id"))
    );
    let doctor = admin.as_user("dr-night", "night-password-1").await;

    // Two patients checked in to the night clinic: both paid. A third holds a slot unpaid.
    let mut tickets = Vec::new();
    for n in 1..=3 {
        let p = clerk.ok("POST", "/api/v1/patients", patient(n)).await["id"].clone();
        let r = clerk
            .ok(
                "POST",
                "/api/v1/registrations",
                json!({"patient_id": p, "schedule_id": night["id"], "channel": "on-site"}),
            )
            .await;
        if n == 3 {
            break;
        }
        cashier
            .ok(
                "POST",
                "/api/v1/payments",
                json!({"invoice_id": r["invoice_id"], "patient_id": p, "method": "card", "idempotency_key": format!("day-{n}")}),
            )
            .await;
        let t = clerk
            .ok(
                "POST",
                "/api/v1/check-ins",
                json!({"appointment_id": r["id"]}),
            )
            .await;
        tickets.push(t["ticket_id"].clone());
    }
    let day = doctor
        .ok(
            "GET",
            &format!("/api/v1/practitioners/{me}/day"),
            Value::Null,
        )
        .await;
    assert_eq!(day["date"], today.as_str());
    let session = day["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schedule_id"] == night["id"])
        .unwrap()
        .clone();
    assert_eq!(
        (session["registered"].as_i64(), session["paid"].as_i64()),
        (Some(3), Some(2))
    );
    let queue = session["queue"].as_array().unwrap();
    assert_eq!(queue.len(), 2);
    assert!(
        queue
            .iter()
            .all(|t| t["paid"] == true && t["status"] == "waiting")
    );

    // Another doctor's day and patients are not theirs.
    let theirs = other["practitioner_id"].as_i64().unwrap();
    let (status, _) = doctor
        .call("GET", &format!("/api/v1/practitioners/{theirs}/day"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = doctor
        .call(
            "POST",
            &format!("/api/v1/schedules/{}/call-next", other["id"]),
            Some(json!({"room": "3"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Their own: called, and the view shows it.
    let called = doctor
        .ok(
            "POST",
            &format!("/api/v1/schedules/{}/call-next", night["id"]),
            json!({"room": "夜诊 1"}),
        )
        .await;
    assert!(tickets.contains(&called["ticket_id"]));
    let day = clerk
        .ok(
            "GET",
            &format!("/api/v1/practitioners/{me}/day?date={today}"),
            Value::Null,
        )
        .await;
    let first = &day["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schedule_id"] == night["id"])
        .unwrap()["queue"][0];
    assert_eq!(
        (first["status"].as_str(), first["room"].as_str()),
        (Some("called"), Some("夜诊 1"))
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let (p1, r1) = walk_in(&clerk, schedule, 1).await;

    // A second patient's registration, paid.
    let (p2, r2) = walk_in(&clerk, schedule, 2).await;
    let paid = cashier
        .ok(
            "POST",
            "/api/v1/payments",
            json!({"invoice_id": r2["invoice_id"], "patient_id": p2, "method": "cash", "idempotency_key": "paid-2"}),
        )
        .await;
    let trail_of = |id: &Value| format!("/api/v1/audit/appointment/{id}");
    let trails_before = (
        admin.ok("GET", &trail_of(&r1["id"]), Value::Null).await,
        admin.ok("GET", &trail_of(&r2["id"]), Value::Null).await,
    );

    let anon = Api {
        base: clerk.base.clone(),
        client: Client::new(),
        token: String::new(),
    };
    let raw = clerk
        .client
        .post(format!("{}/api/v1/patients", clerk.base))
        .bearer_auth(&clerk.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    let mut wrong_digit = patient(3);
    let id = wrong_digit["id_number"].as_str().unwrap().to_owned();
    wrong_digit["id_number"] = json!(format!(
        "{}{}",
        &id[..17],
        if id.ends_with('0') { '1' } else { '0' }
    ));
    let mut unborn = patient(4);
    unborn["birth_date"] = json!("2999-01-01");
    let cases = [
        (anon.call("GET", "/api/v1/patients", None).await, StatusCode::UNAUTHORIZED, "unauthorized", None),
        (cashier.call("POST", "/api/v1/registrations", Some(json!({"patient_id": p2, "schedule_id": schedule, "channel": "on-site"}))).await, StatusCode::FORBIDDEN, "forbidden", None),
        (clerk.call("POST", "/api/v1/patients", Some(json!({"name": "x", "age": 3}))).await, StatusCode::BAD_REQUEST, "bad-request", Some("age")),
        (clerk.call("POST", "/api/v1/patients", Some(json!({"name": "x"}))).await, StatusCode::BAD_REQUEST, "bad-request", Some("gender")),
        (clerk.call("POST", "/api/v1/registrations", Some(json!({"patient_id": "one", "schedule_id": schedule, "channel": "on-site"}))).await, StatusCode::BAD_REQUEST, "bad-request", Some("patient_id")),
        (clerk.call("POST", "/api/v1/patients", Some(unborn)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("birth_date")),
        (clerk.call("POST", "/api/v1/check-ins", Some(json!({"appointment_id": r2["id"], "emergency_level": 9}))).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("emergency_level")),
        (clerk.call("POST", "/api/v1/check-ins", Some(json!({"appointment_id": r2["id"], "emergency_level": 300}))).await, StatusCode::BAD_REQUEST, "bad-request", Some("emergency_level")),
        (clerk.call("POST", &format!("/api/v1/registrations/{}/cancel", r2["id"]), None).await, StatusCode::CONFLICT, "refused", None),
        (cashier.call("POST", "/api/v1/payments", Some(json!({"invoice_id": r2["invoice_id"], "patient_id": p1, "method": "cash", "idempotency_key": "paid-2"}))).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("patient_id")),
        (doctor.call("POST", "/api/v1/tickets/abc/start", None).await, StatusCode::BAD_REQUEST, "bad-request", None),
        (clerk.call("GET", "/api/v1/patients?offset=-1", None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("offset")),
        (clerk.call("GET", "/api/v1/patients?offset=x", None).await, StatusCode::BAD_REQUEST, "bad-request", Some("offset")),
        (clerk.call("POST", "/api/v1/patients", Some(wrong_digit)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("id_number")),
        (clerk.call("POST", "/api/v1/registrations", Some(json!({"patient_id": p1, "schedule_id": schedule, "channel": "online"}))).await, StatusCode::CONFLICT, "refused", None),
        (cashier.call("POST", "/api/v1/payments", Some(json!({"invoice_id": r1["invoice_id"], "patient_id": p2, "method": "cash", "idempotency_key": "x"}))).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("patient_id")),
        (cashier.call("POST", "/api/v1/refunds", Some(json!({"invoice_id": r1["invoice_id"], "idempotency_key": "y", "reason": "r"}))).await, StatusCode::CONFLICT, "refused", None),
        (doctor.call("POST", "/api/v1/tickets/999/start", None).await, StatusCode::NOT_FOUND, "not-found", None),
        (clerk.call("GET", "/api/v1/patients?limit=100000", None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("limit")),
    ];
    for (i, ((status, body), want_status, want_code, want_field)) in cases.into_iter().enumerate() {
        assert_eq!(status, want_status, "case {i}: {body}");
        assert_eq!(body["error"]["code"], want_code, "case {i}: {body}");
        assert_eq!(
            body["error"]["field"].as_str(),
            want_field,
            "case {i}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Nothing changed: two slots taken, one payment, two patients, listed masked, and neither
    // registration's status or audit trail moved.
    assert_eq!(node.hospital.taken(schedule).await.unwrap(), (2, 0, 0));
    assert_eq!(
        cashier
            .ok(
                "GET",
                &format!("/api/v1/cashier/totals?date={today}"),
                Value::Null
            )
            .await["paid_fen"],
        paid["self_pay_fen"]
    );
    let status = |id: &Value| node.hospital.registration_status(id.as_i64().unwrap());
    assert_eq!(status(&r1["id"]).await.unwrap(), "pending");
    assert_eq!(status(&r2["id"]).await.unwrap(), "booked");
    let trails_after = (
        admin.ok("GET", &trail_of(&r1["id"]), Value::Null).await,
        admin.ok("GET", &trail_of(&r2["id"]), Value::Null).await,
    );
    assert_eq!(trails_after, trails_before);
    let list = clerk
        .ok("GET", "/api/v1/patients?limit=1&offset=0", Value::Null)
        .await;
    assert_eq!(
        (
            list["total"].as_i64(),
            list["items"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    assert!(
        list["items"][0]["id_number"]
            .as_str()
            .unwrap()
            .contains("********")
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_update_pushed_under_traffic_goes_live_and_quoted_prices_stay_as_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, _doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let (p, before) = walk_in(&clerk, schedule, 1).await;
    assert_eq!(before["fee_fen"], 1500);

    // Traffic: the fees rule is called by registrations of other patients at other sessions.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (base, token, stop) = (clerk.base.clone(), clerk.token.clone(), stop.clone());
        let schedules: Vec<i64> = clerk
            .ok(
                "GET",
                &format!("/api/v1/schedules?date={today}"),
                Value::Null,
            )
            .await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        tokio::spawn(async move {
            let api = Api {
                base,
                client: Client::new(),
                token,
            };
            let (mut ok, mut failed) = (0, 0);
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (s, v) = api.call("POST", "/api/v1/patients", Some(patient(n))).await;
                if !s.is_success() {
                    failed += 1;
                    continue;
                }
                let sid = schedules[n as usize % schedules.len()];
                let (s, _) = api.call("POST", "/api/v1/registrations", Some(json!({"patient_id": v["id"], "schedule_id": sid, "channel": "on-site"}))).await;
                if s.is_success() || s == StatusCode::CONFLICT {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        })
    };
    let bundle = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules/factory/fees-2.0.0.nsb"),
    )
    .unwrap();
    let resp = admin
        .client
        .post(format!("{}/api/v1/updates", admin.base))
        .bearer_auth(&admin.token)
        .body(bundle)
        .send()
        .await
        .unwrap();
    let report: Value = resp.json().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert_eq!(report["outcome"], "live", "{report}");
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the update ({ok} succeeded)"
    );
    assert!(ok > 0);

    let rules = clerk.ok("GET", "/api/v1/rules", Value::Null).await;
    let fees = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["component"] == "fees")
        .unwrap()
        .clone();
    assert_eq!(fees["version"], "2.0.0");
    // A new night-clinic registration is priced by 2.0.0; the earlier one is charged as quoted.
    let (_, after) = walk_in(&clerk, schedule, 2).await;
    assert_eq!(after["fee_fen"], 1800, "night clinic 5 -> 8 yuan");
    let paid = cashier
        .ok("POST", "/api/v1/payments", json!({"invoice_id": before["invoice_id"], "patient_id": p, "method": "cash", "idempotency_key": "q"}))
        .await;
    assert_eq!(
        paid["self_pay_fen"].as_i64().unwrap() + paid["fund_fen"].as_i64().unwrap(),
        1500
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    node.stop().await;
}

#[test]
fn the_openapi_document_lists_every_route_and_its_answer() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hospital/src/api");
    let source: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    // `.route("/path", ...)`, however rustfmt wrapped it.
    let routes_in = |source: &str| -> Vec<String> {
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    };
    let mut routes = routes_in(&source);
    // The node adds API routes of its own and the listener's (the certificate); `/metrics` is
    // Prometheus's.
    for file in ["src/lib.rs", "../tls/src/lib.rs"] {
        let source =
            std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        routes.extend(
            routes_in(&source)
                .into_iter()
                .filter(|r| r.starts_with("/api/")),
        );
    }
    routes.sort();
    let doc: Value = serde_json::from_str(nonstop_hospital::api::OPENAPI).unwrap();
    let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    documented.sort();
    assert_eq!(routes, documented);
    // Every operation says what its success looks like; every answer the tests get is checked
    // against it (`conforms`).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses
                    .iter()
                    .any(|(status, r)| status.starts_with('2') && r["content"].is_object()),
                "{method} {path} documents no response body"
            );
        }
    }
}

#[test]
fn the_shipped_rule_bundles_carry_exactly_the_built_modules() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules");
    for (bundle, module) in [
        ("fees-1.0.0", "fees-v1"),
        ("insurance-1.0.0", "insurance-v1"),
        ("triage-1.0.0", "triage-v1"),
        ("quota-1.0.0", "quota-v1"),
        ("fees-2.0.0", "fees-v2"),
        ("triage-2.0.0", "triage-v2"),
    ] {
        let bytes = std::fs::read(root.join("factory").join(format!("{bundle}.nsb"))).unwrap();
        let inspected = nonstop_bundle::inspect(&bytes, &Default::default()).unwrap();
        let built = std::fs::read(root.join("dist").join(format!("{module}.wasm"))).unwrap();
        assert_eq!(
            inspected.payload_digest,
            nonstop_bundle::Digest::of(&built),
            "{bundle} does not carry modules/dist/{module}.wasm"
        );
        let checks: nonstop_bundle::CandidateChecks = serde_json::from_str(
            &std::fs::read_to_string(root.join(module).join("checks.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            inspected.manifest.unwrap().checks,
            checks,
            "{bundle}'s test vectors"
        );
    }
}

/// A node stopped between staging and promoting a shipped rule module (its first start, cut
/// short) starts again, with that module live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_halfway_through_its_first_install_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules/factory");
    let release = std::fs::read_to_string(root.join("release.pub")).unwrap();
    let mut trusted = nonstop_bundle::TrustedKeys::new();
    trusted.add(
        nonstop_bundle::PublicKey::from_file_text(&release, &root.join("release.pub")).unwrap(),
    );
    let verifier = nonstop_bundle::Verifier::new(trusted, nonstop_bundle::BundleLimits::default());
    {
        let mut store = nonstop_store::Store::init(&dir.path().join("store")).unwrap();
        let bytes = std::fs::read(root.join("fees-1.0.0.nsb")).unwrap();
        store.stage(&verifier.open(&bytes, None).unwrap()).unwrap();
    }
    let (node, _admin, clerk, _cashier, _doctor) = node(dir.path()).await;
    let rules = clerk.ok("GET", "/api/v1/rules", Value::Null).await;
    let fees = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["component"] == "fees")
        .unwrap()
        .clone();
    assert_eq!(fees["version"], "1.0.0");
    node.stop().await;
}
