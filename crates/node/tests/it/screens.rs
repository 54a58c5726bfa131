//! What the pages stand on: the quotes a desk shows before it confirms, the waiting-room screen's
//! board pushed as it changes, and the pages themselves, served by the node with a policy that
//! keeps patient data on its own origin.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{night_clinic, node, walk_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_is_what_registering_and_paying_then_charge_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _admin, clerk, cashier, _doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let patient = clerk
        .ok("POST", "/api/v1/patients", crate::api::patient(41))
        .await["id"]
        .as_i64()
        .unwrap();
    let ask = json!({"patient_id": patient, "schedule_id": schedule, "channel": "on-site"});
    let before = node.hospital.taken(schedule).await.unwrap();
    let quote = clerk
        .ok("POST", "/api/v1/registrations/quote", ask.clone())
        .await;
    assert_eq!(node.hospital.taken(schedule).await.unwrap(), before);
    let lines: i64 = quote["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount_fen"].as_i64().unwrap())
        .sum();
    assert_eq!(lines, quote["fee_fen"].as_i64().unwrap());
    let registration = clerk.ok("POST", "/api/v1/registrations", ask).await;
    assert_eq!(registration["fee_fen"], quote["fee_fen"]);
    assert_eq!(registration["fee_rule"], quote["fee_rule"]);

    let of = json!({"invoice_id": registration["invoice_id"], "patient_id": patient});
    let split = cashier
        .ok("POST", "/api/v1/payments/quote", of.clone())
        .await;
    let invoice = format!("/api/v1/invoices/{}", registration["invoice_id"]);
    assert_eq!(
        cashier.ok("GET", &invoice, Value::Null).await["status"],
        "issued",
        "a quote pays nothing"
    );
    let paid = cashier
        .ok(
            "POST",
            "/api/v1/payments",
            json!({"invoice_id": registration["invoice_id"], "patient_id": patient,
                   "method": "cash", "idempotency_key": "quoted-1"}),
        )
        .await;
    assert_eq!(
        (&paid["self_pay_fen"], &paid["fund_fen"]),
        (&split["self_pay_fen"], &split["fund_fen"])
    );
    // A clerk may not quote a payment.
    let (status, _) = clerk.call("POST", "/api/v1/payments/quote", Some(of)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    node.stop().await;
}

/// Reads server-sent events from a response until one named `board` arrives; returns its data.
async fn next_board(resp: &mut reqwest::Response, buffer: &mut String) -> Value {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: board") {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("no board event within 10 s")
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_room_screen_is_pushed_each_call_and_stops_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, cashier, doctor) = node(dir.path()).await;
    let today = node.hospital.business_date().to_string();
    let schedule = night_clinic(&clerk, &today).await;
    let screen = admin
        .ok("POST", "/api/v1/screens", json!({"name": "内科候诊区"}))
        .await;
    let token = screen["token"].as_str().unwrap().to_owned();
    let base = format!("http://{}", node.addr);
    let client = reqwest::Client::new();

    // A wrong token reads nothing; a staff token is not a screen token.
    let wrong = client
        .get(format!(
            "{base}/api/v1/board?token={}&schedules={schedule}",
            clerk.token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let mut events = client
        .get(format!(
            "{base}/api/v1/board/events?token={token}&schedules={schedule}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut buffer = String::new();
    let first = next_board(&mut events, &mut buffer).await;
    assert_eq!(first["items"][0]["schedule_id"], schedule);
    assert_eq!(first["items"][0]["called"], json!([]));

    // A paid, checked-in patient is called: the screen is told, by surname only.
    let (p, r) = walk_in(&clerk, schedule, 51).await;
    cashier
        .ok(
            "POST",
            "/api/v1/payments",
            json!({"invoice_id": r["invoice_id"], "patient_id": p, "method": "cash", "idempotency_key": "screen-1"}),
        )
        .await;
    clerk
        .ok(
            "POST",
            "/api/v1/check-ins",
            json!({"appointment_id": r["id"]}),
        )
        .await;
    doctor
        .ok(
            "POST",
            &format!("/api/v1/schedules/{schedule}/call-next"),
            json!({"room": "诊室3"}),
        )
        .await;
    let called = loop {
        let board = next_board(&mut events, &mut buffer).await;
        if board["items"][0]["called"].as_array().unwrap().len() == 1 {
            break board;
        }
    };
    assert_eq!(called["items"][0]["called"][0]["patient"], "病**");
    assert_eq!(called["items"][0]["called"][0]["room"], "诊室3");
    assert!(!called.to_string().contains("病人51"));

    // Revoked: the snapshot is refused, and the stream ends within its recheck.
    admin
        .call("DELETE", &format!("/api/v1/screens/{}", screen["id"]), None)
        .await;
    let refused = client
        .get(format!(
            "{base}/api/v1/board?token={token}&schedules={schedule}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_ends_its_screens_streams_rather_than_waiting_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin, clerk, ..) = node(dir.path()).await;
    let schedule = night_clinic(&clerk, &node.hospital.business_date().to_string()).await;
    let screen = admin
        .ok("POST", "/api/v1/screens", json!({"name": "候诊区"}))
        .await;
    let mut events = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/board/events?token={}&schedules={schedule}",
            node.addr,
            screen["token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    next_board(&mut events, &mut String::new()).await;
    // The drain would wait 30 s for an open stream; the stream ends instead, and the screen
    // reconnects to whichever process serves next.
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("the node stopped without waiting for its screen's stream");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

#[tokio::test]
async fn the_pages_are_served_by_the_node_and_talk_only_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ..) = node(dir.path()).await;
    let base = format!("http://{}", node.addr);
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/screen.html", "text/html"),
    ] {
        let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        // Revalidated cheaply: the same file is not sent twice.
        let etag = header("etag");
        let again = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    // The API's own 404 stays JSON.
    let missing = reqwest::get(format!("{base}/api/v1/nothing"))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    node.stop().await;
}
