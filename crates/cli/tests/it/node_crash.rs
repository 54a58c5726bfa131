//! A node killed with SIGKILL in the middle of its writes loses nothing it acknowledged: desks
//! register and pay over HTTP, the node is killed while requests are in flight, started again on
//! the same data directory, and killed again; then every patient, registration and payment it
//! answered with success is in the database exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nonstop_loadgen::{identity, login_as};
use serde_json::{Value, json};

/// What the node acknowledged.
#[derive(Default)]
struct Acknowledged {
    patients: Vec<i64>,
    registrations: Vec<i64>,
    payments: Vec<i64>,
}

/// A running `nonstop node` and its address.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(data: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nonstop"))
            .args(["node", "--no-tls", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the node exited before it listened")
                .unwrap();
            if let Some(addr) = line.strip_prefix("nonstop node listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep reading its output, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Node { child, base }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Option<Value> {
    let answer = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// Desks register and pay until the node dies; each records what was acknowledged.
async fn traffic(
    base: String,
    clerk: String,
    cashier: String,
    schedules: Vec<i64>,
    first: u64,
    acked: Arc<Mutex<Acknowledged>>,
) {
    let client = reqwest::Client::new();
    let mut desks = Vec::new();
    for desk in 0..6_u64 {
        let (client, base, clerk, cashier, schedules, acked) = (
            client.clone(),
            base.clone(),
            clerk.clone(),
            cashier.clone(),
            schedules.clone(),
            acked.clone(),
        );
        desks.push(tokio::spawn(async move {
            let mut failures = 0;
            let mut n = first + desk * 100_000;
            while failures < 20 {
                n += 1;
                let (birth_date, id_number) = identity(n);
                let patient = json!({
                    "name": format!("崩溃{n}"), "gender": "male", "birth_date": birth_date,
                    "id_number": id_number, "phone": "13800001111",
                    "insurance_category": "employee", "insurance_number": null
                });
                let Some(p) = call(&client, &base, &clerk, "/api/v1/patients", patient).await else {
                    failures += 1;
                    continue;
                };
                let patient_id = p["id"].as_i64().unwrap();
                acked.lock().unwrap().patients.push(patient_id);
                let schedule = schedules[n as usize % schedules.len()];
                let registration = json!({"patient_id": patient_id, "schedule_id": schedule, "channel": "on-site"});
                let Some(r) = call(&client, &base, &clerk, "/api/v1/registrations", registration).await else {
                    failures += 1;
                    continue;
                };
                acked.lock().unwrap().registrations.push(r["id"].as_i64().unwrap());
                let payment = json!({"invoice_id": r["invoice_id"], "patient_id": patient_id,
                    "method": "cash", "idempotency_key": format!("crash-{n}")});
                if let Some(paid) = call(&client, &base, &cashier, "/api/v1/payments", payment).await {
                    acked.lock().unwrap().payments.push(paid["id"].as_i64().unwrap());
                } else {
                    failures += 1;
                }
            }
        }));
    }
    for desk in desks {
        desk.await.unwrap();
    }
}

#[test]
fn a_node_killed_mid_write_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..3_u64 {
        let node = Node::start(dir.path());
        let base = node.base.clone();
        let password = std::fs::read_to_string(dir.path().join("admin-password")).unwrap();
        let (clerk, cashier, schedules) = runtime.block_on(async {
            let client = reqwest::Client::new();
            let admin = login_as(&client, &base, "admin", password.trim()).await.unwrap();
            if round == 0 {
                call(&client, &base, &admin, "/api/v1/users",
                    json!({"username": "cashier", "role": "cashier", "password": "cashier-crash-password"}))
                    .await
                    .expect("the cashier was added");
            }
            let cashier = login_as(&client, &base, "cashier", "cashier-crash-password").await.unwrap();
            // Every session of the demo week that has not passed.
            let mut schedules = Vec::new();
            let today = time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap()).date();
            for day in 1..7 {
                let date = today + time::Duration::days(day);
                let list: Value = client
                    .get(format!("{base}/api/v1/schedules?date={date}"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                schedules.extend(list["items"].as_array().unwrap().iter().filter_map(|s| s["id"].as_i64()));
            }
            (admin, cashier, schedules)
        });
        assert!(!schedules.is_empty());
        let desks = runtime.spawn(traffic(
            base,
            clerk,
            cashier,
            schedules,
            round * 1_000_000,
            acked.clone(),
        ));
        // Kill it once this round has had payments acknowledged: requests are then in flight.
        let payments_before = acked.lock().unwrap().payments.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().payments.len() < payments_before + 50 {
            assert!(Instant::now() < deadline, "no traffic reached the node");
            std::thread::sleep(Duration::from_millis(5));
        }
        node.kill();
        runtime.block_on(desks).unwrap();
    }

    let db = rusqlite::Connection::open(dir.path().join("hospital.db")).unwrap();
    let acked = acked.lock().unwrap();
    for (table, ids, extra) in [
        ("patient", &acked.patients, ""),
        ("appointment", &acked.registrations, ""),
        ("payment", &acked.payments, " AND kind = 'payment'"),
    ] {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let found: i64 = db
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE id IN ({list}){extra}"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found as usize, ids.len(), "acknowledged {table} rows lost");
    }
    assert!(acked.payments.len() >= 150);
    let paid_twice: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT invoice_id FROM payment WHERE kind = 'payment' GROUP BY invoice_id HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(paid_twice, 0);
    // Every paid invoice's registration is booked: no payment without its booking.
    let unbooked: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM payment p JOIN invoice i ON i.id = p.invoice_id JOIN appointment a ON a.id = i.appointment_id
             WHERE p.kind = 'payment' AND (i.status <> 'balanced' OR a.status <> 'booked')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unbooked, 0);
}
