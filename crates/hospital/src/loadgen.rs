//! `nonstop loadgen`: realistic mixed outpatient traffic against a node over HTTP, then a check
//! against the database that every acknowledged registration and payment is there exactly once.
//!
//! It starts its own node (SQLite in a temporary directory, or the PostgreSQL of `database_url`),
//! adds large clinic sessions so quotas do not end the run, and drives three kinds of workers
//! side by side: registration desks (a new patient, registration, payment at a self-service
//! kiosk with an idempotency key, check-in), doctors (call the next patient, start, finish), and
//! waiting-room screens (polling the board). Latency is measured per endpoint on the client side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::node::{NodeConfig, start};
use crate::registration::RecordCheck;
use crate::seed::NewSchedule;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `None`: SQLite in a temporary directory; else a PostgreSQL URL (its schema must be empty).
    pub database_url: Option<String>,
    /// How long to drive traffic.
    pub duration: Duration,
    /// Registration desks working at once.
    pub desks: usize,
    /// Doctors working at once.
    pub doctors: usize,
    /// Waiting-room screens polling at once.
    pub screens: usize,
}

/// Latency of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// `METHOD /path` with ids replaced by `{id}`.
    pub endpoint: String,
    /// Requests made.
    pub requests: usize,
    /// Requests that failed (transport error or 5xx).
    pub errors: usize,
    /// Requests the node refused (4xx). The traffic is valid and the quotas large, so any
    /// refusal is a fault to look into, reported apart from failures.
    pub refused: usize,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Wall time of the traffic.
    pub seconds: f64,
    /// Requests per second, all endpoints.
    pub requests_per_second: f64,
    /// All requests.
    pub requests: usize,
    /// Failed requests (transport errors and 5xx).
    pub errors: usize,
    /// Refused requests (4xx).
    pub refused: usize,
    /// p99 over all requests, milliseconds.
    pub p99_ms: f64,
    /// Per endpoint.
    pub endpoints: Vec<EndpointReport>,
    /// Registrations and payments the node acknowledged.
    pub acknowledged: (usize, usize),
    /// What the database holds of them.
    pub records: RecordCheck,
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<String, Vec<f64>>,
    errors: BTreeMap<String, usize>,
    refused: BTreeMap<String, usize>,
    registrations: Vec<i64>,
    payments: Vec<i64>,
}

struct Driver {
    base: String,
    client: Client,
    token: String,
    tally: Arc<Mutex<Tally>>,
}

impl Driver {
    /// One request, timed; `None` on a transport error or a 5xx (counted as errors); a 4xx is
    /// returned and counted as refused.
    async fn send(
        &self,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = if method == "GET" {
            self.client.get(url)
        } else {
            self.client.post(url)
        };
        req = req.bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let t = Instant::now();
        let result = req.send().await;
        let answer = match result {
            Ok(resp) => {
                let status = resp.status();
                let value = resp.json::<Value>().await.unwrap_or(Value::Null);
                Some((status, value))
            }
            Err(_) => None,
        };
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut tally = self.tally.lock().await;
        tally
            .latencies
            .entry(endpoint.to_owned())
            .or_default()
            .push(ms);
        match answer {
            Some((status, _)) if status.is_server_error() => {
                *tally.errors.entry(endpoint.to_owned()).or_default() += 1;
                None
            }
            None => {
                *tally.errors.entry(endpoint.to_owned()).or_default() += 1;
                None
            }
            Some((status, value)) => {
                if status.is_client_error() {
                    *tally.refused.entry(endpoint.to_owned()).or_default() += 1;
                }
                Some((status, value))
            }
        }
    }
}

/// Runs the load and checks the records.
pub async fn run(config: LoadConfig) -> Result<LoadReport, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("nonstop-loadgen-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut node_config = NodeConfig {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".into(),
        database_url: config.database_url.clone(),
        max_connections: 16,
        ..NodeConfig::default()
    };
    node_config.seed_demo = true;
    let node = start(node_config).await?;
    let database = format!("{:?}", node.hospital.backend()).to_lowercase();
    let password = std::fs::read_to_string(
        node.admin_password_file
            .as_ref()
            .ok_or("the database is not empty")?,
    )
    .map_err(|e| e.to_string())?;
    let base = format!("http://{}", node.addr);
    let client = Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let login = |username: &'static str, password: String| {
        let (client, base) = (client.clone(), base.clone());
        async move { login_as(&client, &base, username, &password).await }
    };
    let admin = login("admin", password.trim().to_owned()).await?;
    // Patients pay at self-service kiosks, with accounts that can do nothing else.
    for role in ["clerk", "kiosk"] {
        client
            .post(format!("{base}/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"username": role, "role": role, "password": format!("{role}-load-password")}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
    }
    let tokens = [
        login("clerk", "clerk-load-password".into()).await?,
        login("kiosk", "kiosk-load-password".into()).await?,
    ];
    // One large session per doctor so that quotas do not end the run.
    // A day after the seeded week, so the sessions do not collide with the demo's.
    let today = (node.hospital.business_date() + time::Duration::days(10)).to_string();
    let mut sessions = Vec::new();
    let practitioners = node
        .hospital
        .practitioners()
        .await
        .map_err(|e| e.to_string())?;
    for &practitioner in &practitioners {
        let id = node
            .hospital
            .add_schedule(&NewSchedule {
                practitioner_id: practitioner,
                date: today.clone(),
                period: "night".into(),
                clinic_type: "night".into(),
                registration_level: 3,
                quotas: (1_000_000, 1_000_000, 1_000_000),
            })
            .await
            .map_err(|e| e.to_string())?;
        sessions.push(id);
    }
    let sessions = Arc::new(sessions);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = |token: &str| Driver {
        base: base.clone(),
        client: client.clone(),
        token: token.to_owned(),
        tally: tally.clone(),
    };
    let mut workers = Vec::new();
    for desk in 0..config.desks {
        let (clerk, kiosk, stop, sessions) = (
            driver(&tokens[0]),
            driver(&tokens[1]),
            stop.clone(),
            sessions.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = desk as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Each visit is a new patient: the quota rule allows one registration per
                // department per day.
                let (birth_date, id_number) = identity(n);
                let patient = json!({
                    "name": format!("负载{n}"), "gender": "female", "birth_date": birth_date,
                    "id_number": id_number, "phone": "13800001111",
                    "insurance_category": if n.is_multiple_of(3) { "none" } else { "employee" }, "insurance_number": null
                });
                let Some((s, p)) = clerk.send("POST /patients", "POST", "/api/v1/patients", Some(patient)).await else { continue };
                if !s.is_success() {
                    continue;
                }
                let schedule = sessions[n as usize % sessions.len()];
                let channel = if n.is_multiple_of(4) { "online" } else { "on-site" };
                let body = json!({"patient_id": p["id"], "schedule_id": schedule, "channel": channel});
                let Some((s, r)) = clerk.send("POST /registrations", "POST", "/api/v1/registrations", Some(body)).await else { continue };
                if !s.is_success() {
                    continue;
                }
                clerk.tally.lock().await.registrations.push(r["id"].as_i64().unwrap_or(-1));
                let pay = json!({"invoice_id": r["invoice_id"], "patient_id": p["id"], "method": "self-service", "idempotency_key": format!("load-{n}")});
                let Some((s, paid)) = kiosk.send("POST /payments", "POST", "/api/v1/payments", Some(pay)).await else { continue };
                if !s.is_success() {
                    continue;
                }
                kiosk.tally.lock().await.payments.push(paid["id"].as_i64().unwrap_or(-1));
                clerk.send("POST /check-ins", "POST", "/api/v1/check-ins", Some(json!({"appointment_id": r["id"]}))).await;
            }
        }));
    }
    for doctor in 0..config.doctors {
        // Each doctor logs in with an account linked to their practitioner, so the API checks
        // that they call only their own session's patients.
        let practitioner = practitioners[doctor % practitioners.len()];
        let username = format!("doctor-{doctor}");
        client
            .post(format!("{base}/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"username": username, "role": "doctor", "practitioner_id": practitioner, "password": "doctor-load-password"}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let token = login_as(&client, &base, &username, "doctor-load-password").await?;
        let (d, stop, sessions) = (driver(&token), stop.clone(), sessions.clone());
        workers.push(tokio::spawn(async move {
            let schedule = sessions[doctor % sessions.len()];
            let mut view_shown = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // The doctor's screen refreshes their day about once a second.
                if view_shown.elapsed() >= Duration::from_secs(1) {
                    view_shown = Instant::now();
                    d.send(
                        "GET /practitioners/{id}/day",
                        "GET",
                        &format!("/api/v1/practitioners/{practitioner}/day"),
                        None,
                    )
                    .await;
                }
                let path = format!("/api/v1/schedules/{schedule}/call-next");
                match d
                    .send(
                        "POST /schedules/{id}/call-next",
                        "POST",
                        &path,
                        Some(json!({"room": format!("room {doctor}")})),
                    )
                    .await
                {
                    Some((StatusCode::OK, t)) => {
                        let id = t["ticket_id"].as_i64().unwrap_or(0);
                        d.send(
                            "POST /tickets/{id}/start",
                            "POST",
                            &format!("/api/v1/tickets/{id}/start"),
                            None,
                        )
                        .await;
                        d.send(
                            "POST /tickets/{id}/finish",
                            "POST",
                            &format!("/api/v1/tickets/{id}/finish"),
                            None,
                        )
                        .await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for screen in 0..config.screens {
        let (d, stop, sessions) = (driver(&tokens[0]), stop.clone(), sessions.clone());
        workers.push(tokio::spawn(async move {
            let schedule = sessions[screen % sessions.len()];
            while !stop.load(Ordering::Relaxed) {
                d.send(
                    "GET /schedules/{id}/waiting-room",
                    "GET",
                    &format!("/api/v1/schedules/{schedule}/waiting-room"),
                    None,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();

    let tally = tally.lock().await;
    let records = node
        .hospital
        .verify_records(&tally.registrations, &tally.payments)
        .await
        .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    let mut endpoints = Vec::new();
    for (endpoint, ms) in &tally.latencies {
        let mut ms = ms.clone();
        ms.sort_by(f64::total_cmp);
        all.extend_from_slice(&ms);
        endpoints.push(EndpointReport {
            endpoint: endpoint.clone(),
            requests: ms.len(),
            errors: tally.errors.get(endpoint).copied().unwrap_or(0),
            refused: tally.refused.get(endpoint).copied().unwrap_or(0),
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
        });
    }
    all.sort_by(f64::total_cmp);
    let report = LoadReport {
        database,
        seconds,
        requests_per_second: all.len() as f64 / seconds,
        requests: all.len(),
        errors: tally.errors.values().sum(),
        refused: tally.refused.values().sum(),
        p99_ms: percentile(&all, 0.99),
        endpoints,
        acknowledged: (tally.registrations.len(), tally.payments.len()),
        records,
    };
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Logs in to the node at `base` (`http://host:port`); returns the token.
pub async fn login_as(
    client: &Client,
    base: &str,
    username: &str,
    password: &str,
) -> Result<String, String> {
    let v: Value = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login of {username} failed: {v}"))
}

/// A birth date and a valid, unique ID number for synthetic patient `n` (below 18 million): the
/// birth date varies with `n`, so more than a thousand patients (the sequence number's range) get
/// distinct numbers.
pub fn identity(n: u64) -> (String, String) {
    let day = time::Date::from_calendar_date(1950, time::Month::January, 1).expect("a valid date")
        + time::Duration::days((n / 1000 % 18_000) as i64);
    let birth = format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    let body = format!("110105{birth}{:03}", n % 1000);
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    (
        day.to_string(),
        format!("{body}{}", b"10X98765432"[(sum % 11) as usize] as char),
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
