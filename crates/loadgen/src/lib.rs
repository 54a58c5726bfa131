//! `nonstop loadgen`: realistic mixed outpatient traffic against one node or several over HTTP,
//! then a check, through each node's API, that every acknowledged registration and payment is in
//! its database exactly once.
//!
//! It drives nodes it is given (`--target URL`, with an administrator's token) or starts its own
//! (SQLite in a temporary directory, or the PostgreSQL of `database_url`). Through the API it
//! creates its staff accounts and large clinic sessions so quotas do not end the run, then
//! drives three kinds of workers side by side: registration desks (a new patient, registration,
//! payment at a self-service kiosk with an idempotency key, check-in), doctors (call the next
//! patient, start, finish, each signed in as their own practitioner), and waiting-room screens.
//! Latency is measured per endpoint on the client side, and every request is kept on a timeline
//! so that a caller (`nonstop demo`) can compare windows of the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use nonstop_hospital::RecordCheck;
use nonstop_node::{NodeConfig, RunningNode};

/// Which nodes to drive.
#[derive(Debug, Clone)]
pub enum Target {
    /// A node of its own, started in this process: SQLite in a temporary directory (`None`), or
    /// this PostgreSQL URL (its schema must be empty).
    OwnNode(Option<String>),
    /// Running nodes, each with an administrator's token.
    Nodes(Vec<NodeTarget>),
}

/// A running node to drive.
#[derive(Debug, Clone)]
pub struct NodeTarget {
    /// `http://host:port`.
    pub url: String,
    /// An administrator's token: the load generator creates its accounts and sessions with it.
    pub admin_token: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Which nodes.
    pub target: Target,
    /// How long to drive traffic.
    pub duration: Duration,
    /// Registration desks working at once.
    pub desks: usize,
    /// Doctors working at once.
    pub doctors: usize,
    /// Waiting-room screens polling at once.
    pub screens: usize,
    /// How to trust `https://` nodes' certificates (one pin for every target).
    pub trust: Option<nonstop_tls::ServerPin>,
}

/// Ids per record-check request: with ids of up to 12 digits, a body well under the node's
/// 64 KiB limit on JSON bodies.
const IDS_PER_CHECK: usize = 4000;

/// The bodies of the record checks for these ids, each with at most [`IDS_PER_CHECK`] of them;
/// at least one, so an empty run still checks for invoices paid twice.
fn record_check_bodies(registrations: &[i64], payments: &[i64]) -> Vec<Value> {
    let mut bodies = Vec::new();
    let (mut r, mut p) = (registrations, payments);
    loop {
        let take_r = r.len().min(IDS_PER_CHECK);
        let take_p = p.len().min(IDS_PER_CHECK - take_r);
        bodies.push(json!({"registrations": &r[..take_r], "payments": &p[..take_p]}));
        (r, p) = (&r[take_r..], &p[take_p..]);
        if r.is_empty() && p.is_empty() {
            return bodies;
        }
    }
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
    /// `sqlite` or `postgres` for a node of its own; `nodes` for nodes it was given.
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

/// One request on the run's timeline.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Which node (index into the targets).
    pub node: usize,
    /// When it was answered, seconds since the traffic started.
    pub at: f64,
    /// Its latency, milliseconds.
    pub ms: f64,
    /// Whether it failed (transport error or 5xx).
    pub failed: bool,
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<String, Vec<f64>>,
    errors: BTreeMap<String, usize>,
    refused: BTreeMap<String, usize>,
    /// Acknowledged registrations and payments, per node.
    registrations: BTreeMap<usize, Vec<i64>>,
    payments: BTreeMap<usize, Vec<i64>>,
    timeline: Vec<Sample>,
}

struct Driver {
    node: usize,
    base: String,
    client: Client,
    token: String,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
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
        let failed = answer
            .as_ref()
            .is_none_or(|(status, _)| status.is_server_error());
        let mut tally = self.tally.lock().await;
        tally
            .latencies
            .entry(endpoint.to_owned())
            .or_default()
            .push(ms);
        tally.timeline.push(Sample {
            node: self.node,
            at: self.started.elapsed().as_secs_f64(),
            ms,
            failed,
        });
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

/// A clinic session the load registers patients into: what the fees rule prices it by.
#[derive(Debug, Clone)]
pub struct SessionKind {
    /// `general`, `specialist`, `emergency`, `night` or `holiday`.
    pub clinic_type: String,
    /// Registration level, 1 to 4.
    pub registration_level: i64,
}

impl Default for SessionKind {
    fn default() -> Self {
        SessionKind {
            clinic_type: "night".into(),
            registration_level: 3,
        }
    }
}

/// One node as the workers see it.
struct Prepared {
    base: String,
    admin: String,
    clerk: String,
    kiosk: String,
    /// (practitioner, doctor's token) for each doctor account.
    doctors: Vec<(i64, String)>,
    practitioners: Vec<i64>,
    /// The sessions desks register into, (practitioner, session); grows when
    /// [`Load::open_sessions`] adds some.
    sessions: Arc<RwLock<Vec<(i64, i64)>>>,
    date: time::Date,
    /// Sets of sessions opened so far: each set takes the next period (a doctor has one session
    /// per date and period).
    opened: std::sync::atomic::AtomicUsize,
}

/// Traffic under way ([`start`]); [`Load::finish`] stops it and checks the records.
pub struct Load {
    nodes: Vec<Prepared>,
    client: Client,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    database: String,
    own: Option<(RunningNode, std::path::PathBuf)>,
}

async fn call(
    client: &Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let resp = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{base}{path}: {e}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{base}{path}: {status}: {v}"));
    }
    Ok(v)
}

/// Creates the load's accounts and sessions on one node, through its API.
async fn prepare(
    client: &Client,
    target: &NodeTarget,
    doctors: usize,
    run: &str,
) -> Result<Prepared, String> {
    let base = target.url.trim_end_matches('/').to_owned();
    let admin = &target.admin_token;
    let today = time::OffsetDateTime::now_utc()
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).map_err(|e| e.to_string())?)
        .date();
    let listed: Value = client
        .get(format!("{base}/api/v1/schedules?date={today}"))
        .bearer_auth(admin)
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let mut practitioners: Vec<i64> = listed["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s["practitioner_id"].as_i64())
                .collect()
        })
        .unwrap_or_default();
    practitioners.sort_unstable();
    practitioners.dedup();
    if practitioners.is_empty() {
        return Err(format!(
            "{base} has no clinic sessions today, so no doctor to register patients with"
        ));
    }
    let password = format!("load-{run}-password");
    let mut tokens = Vec::new();
    for role in ["clerk", "kiosk"] {
        let username = format!("load-{role}-{run}");
        call(
            client,
            &base,
            admin,
            "/api/v1/users",
            json!({"username": username, "role": role, "password": password}),
        )
        .await?;
        tokens.push(login_as(client, &base, &username, &password).await?);
    }
    let mut doctor_tokens = Vec::new();
    for doctor in 0..doctors {
        let practitioner = practitioners[doctor % practitioners.len()];
        let username = format!("load-doctor-{doctor}-{run}");
        call(client, &base, admin, "/api/v1/users", json!({"username": username, "role": "doctor", "practitioner_id": practitioner, "password": password})).await?;
        doctor_tokens.push((
            practitioner,
            login_as(client, &base, &username, &password).await?,
        ));
    }
    // Ten days ahead, so the sessions do not collide with a hospital's real (or demo) week.
    let date = today + time::Duration::days(10);
    let prepared = Prepared {
        base,
        admin: admin.clone(),
        clerk: tokens[0].clone(),
        kiosk: tokens[1].clone(),
        doctors: doctor_tokens,
        practitioners,
        sessions: Arc::new(RwLock::new(Vec::new())),
        date,
        opened: std::sync::atomic::AtomicUsize::new(0),
    };
    prepared
        .open_sessions(client, &SessionKind::default())
        .await?;
    Ok(prepared)
}

impl Prepared {
    /// One large session per doctor, so quotas do not end the run.
    async fn open_sessions(&self, client: &Client, kind: &SessionKind) -> Result<(), String> {
        let base = self.opened.fetch_add(1, Ordering::Relaxed);
        let mut ids = Vec::new();
        for &practitioner in &self.practitioners {
            // The first free (date, period) of this doctor from this set's own: a doctor has one
            // session per period, and earlier runs on the same node took some.
            let mut tries = 0;
            let id = loop {
                let n = base + tries;
                let period = ["night", "afternoon", "morning"][n % 3];
                let date = (self.date + time::Duration::days((n / 3) as i64)).to_string();
                let created = call(
                    client,
                    &self.base,
                    &self.admin,
                    "/api/v1/schedules",
                    json!({
                        "practitioner_id": practitioner, "date": date, "period": period,
                        "clinic_type": kind.clinic_type, "registration_level": kind.registration_level,
                        "quotas": [1_000_000, 1_000_000, 1_000_000],
                    }),
                )
                .await;
                match created {
                    Ok(v) => break v["id"].as_i64().ok_or("the new session has no id")?,
                    Err(e) if e.contains("already has") && tries < 60 => tries += 1,
                    Err(e) => return Err(e),
                }
            };
            ids.push((practitioner, id));
        }
        self.sessions.write().expect("sessions").extend(ids);
        Ok(())
    }
}

/// Prepares every node and starts the traffic.
pub async fn start(config: &LoadConfig) -> Result<Load, String> {
    let mut builder = Client::builder().pool_max_idle_per_host(64);
    if let Some(pin) = &config.trust {
        let tls = nonstop_tls::client_config(pin).map_err(|e| e.to_string())?;
        builder = builder.use_preconfigured_tls((*tls).clone());
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let (targets, own, database) = match &config.target {
        Target::Nodes(targets) => (targets.clone(), None, "nodes".to_owned()),
        Target::OwnNode(database_url) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("nonstop-loadgen-{}-{nanos}", std::process::id()));
            let node = nonstop_node::start(NodeConfig {
                data_dir: dir.clone(),
                listen: "127.0.0.1:0".into(),
                database_url: database_url.clone(),
                max_connections: 16,
                seed_demo: true,
                // A node of its own on loopback, measured without TLS as before.
                tls: nonstop_tls::TlsConfig::off(),
                ..NodeConfig::default()
            })
            .await?;
            let database = format!("{:?}", node.hospital.backend()).to_lowercase();
            let password = std::fs::read_to_string(
                node.admin_password_file
                    .as_ref()
                    .ok_or("the database is not empty")?,
            )
            .map_err(|e| e.to_string())?;
            let base = format!("http://{}", node.addr);
            let admin_token = login_as(&client, &base, "admin", password.trim()).await?;
            (
                vec![NodeTarget {
                    url: base,
                    admin_token,
                }],
                Some((node, dir)),
                database,
            )
        }
    };
    if targets.is_empty() {
        return Err("no node to drive".into());
    }
    let run = &random_suffix();
    let mut nodes = Vec::new();
    for t in &targets {
        nodes.push(prepare(&client, t, config.doctors.max(1), run).await?);
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // A region of this run's own for its patients' ID numbers (100000 to 999999).
    let region = 100_000 + rand_u32() % 900_000;
    let mut workers = Vec::new();
    let driver = |node: usize, token: &str| Driver {
        node,
        base: nodes[node].base.clone(),
        client: client.clone(),
        token: token.to_owned(),
        tally: tally.clone(),
        started,
    };
    for desk in 0..config.desks {
        let node = desk % nodes.len();
        let (clerk, kiosk) = (
            driver(node, &nodes[node].clerk),
            driver(node, &nodes[node].kiosk),
        );
        let (stop, sessions) = (stop.clone(), nodes[node].sessions.clone());
        workers.push(tokio::spawn(async move {
            let mut n = desk as u64 * 1_000_000;
            let region = region;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                desk_visit(&clerk, &kiosk, &sessions, region, n).await;
            }
        }));
    }
    for doctor in 0..config.doctors {
        let node = doctor % nodes.len();
        let (practitioner, token) =
            nodes[node].doctors[doctor / nodes.len() % nodes[node].doctors.len()].clone();
        let (d, stop, sessions) = (
            driver(node, &token),
            stop.clone(),
            nodes[node].sessions.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut view_shown = Instant::now();
            let mut turn = 0usize;
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
                // Their own sessions: every session of theirs the load opened, in turn.
                let mine: Vec<i64> = sessions
                    .read()
                    .expect("sessions")
                    .iter()
                    .filter(|(p, _)| *p == practitioner)
                    .map(|(_, id)| *id)
                    .collect();
                turn += 1;
                let Some(&schedule) = mine.get(turn % mine.len().max(1)) else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                consult(&d, schedule, doctor).await;
            }
        }));
    }
    for screen in 0..config.screens {
        let node = screen % nodes.len();
        let (d, stop, sessions) = (
            driver(node, &nodes[node].clerk),
            stop.clone(),
            nodes[node].sessions.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let schedule = {
                    let s = sessions.read().expect("sessions");
                    s[screen % s.len()].1
                };
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
    Ok(Load {
        nodes,
        client,
        tally,
        stop,
        workers,
        started,
        database,
        own,
    })
}

/// One visit at a registration desk: a new patient, a registration, payment at a kiosk, check-in.
async fn desk_visit(
    clerk: &Driver,
    kiosk: &Driver,
    sessions: &RwLock<Vec<(i64, i64)>>,
    region: u32,
    n: u64,
) {
    // Each visit is a new patient: the quota rule allows one registration per department per day.
    let (birth_date, id_number) = identity_in(region, n);
    let patient = json!({
        "name": format!("负载{n}"), "gender": "female", "birth_date": birth_date,
        "id_number": id_number, "phone": "13800001111",
        "insurance_category": if n.is_multiple_of(3) { "none" } else { "employee" }, "insurance_number": null
    });
    let Some((s, p)) = clerk
        .send("POST /patients", "POST", "/api/v1/patients", Some(patient))
        .await
    else {
        return;
    };
    if !s.is_success() {
        return;
    }
    let schedule = {
        let s = sessions.read().expect("sessions");
        s[n as usize % s.len()].1
    };
    let channel = if n.is_multiple_of(4) {
        "online"
    } else {
        "on-site"
    };
    let body = json!({"patient_id": p["id"], "schedule_id": schedule, "channel": channel});
    let Some((s, r)) = clerk
        .send(
            "POST /registrations",
            "POST",
            "/api/v1/registrations",
            Some(body),
        )
        .await
    else {
        return;
    };
    if !s.is_success() {
        return;
    }
    clerk
        .tally
        .lock()
        .await
        .registrations
        .entry(clerk.node)
        .or_default()
        .push(r["id"].as_i64().unwrap_or(-1));
    let pay = json!({"invoice_id": r["invoice_id"], "patient_id": p["id"], "method": "self-service", "idempotency_key": format!("load-{region}-{n}")});
    let Some((s, paid)) = kiosk
        .send("POST /payments", "POST", "/api/v1/payments", Some(pay))
        .await
    else {
        return;
    };
    if !s.is_success() {
        return;
    }
    kiosk
        .tally
        .lock()
        .await
        .payments
        .entry(kiosk.node)
        .or_default()
        .push(paid["id"].as_i64().unwrap_or(-1));
    clerk
        .send(
            "POST /check-ins",
            "POST",
            "/api/v1/check-ins",
            Some(json!({"appointment_id": r["id"]})),
        )
        .await;
}

/// A doctor calls the next patient of `schedule`, starts and finishes the consultation; a
/// session that is not theirs or is empty costs a short pause.
async fn consult(d: &Driver, schedule: i64, doctor: usize) {
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

impl Load {
    /// Seconds since the traffic started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Opens sessions of another kind on every node; desks register into them from now on, beside
    /// the ones they had (a clinic opening during the day).
    pub async fn open_sessions(&self, kind: &SessionKind) -> Result<(), String> {
        for node in &self.nodes {
            node.open_sessions(&self.client, kind).await?;
        }
        Ok(())
    }

    /// The requests answered so far.
    pub async fn timeline(&self) -> Vec<Sample> {
        self.tally.lock().await.timeline.clone()
    }

    /// Stops the traffic, waits for requests in flight, and checks every node's records.
    pub async fn finish(self) -> Result<(LoadReport, Vec<Sample>), String> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let tally = self.tally.lock().await;
        let mut records = RecordCheck::default();
        for (i, node) in self.nodes.iter().enumerate() {
            let registrations = tally.registrations.get(&i).cloned().unwrap_or_default();
            let payments = tally.payments.get(&i).cloned().unwrap_or_default();
            // In parts: a node takes JSON bodies of at most 64 KiB.
            let mut paid_twice = 0;
            for body in record_check_bodies(&registrations, &payments) {
                let found: RecordCheck = serde_json::from_value(
                    call(
                        &self.client,
                        &node.base,
                        &node.admin,
                        "/api/v1/records/check",
                        body,
                    )
                    .await?,
                )
                .map_err(|e| format!("{}: the record check's answer: {e}", node.base))?;
                records.registrations_found += found.registrations_found;
                records.payments_found += found.payments_found;
                // Counted over the whole database by every call: taken once per node.
                paid_twice = found.invoices_paid_twice;
            }
            records.invoices_paid_twice += paid_twice;
        }
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
            database: self.database.clone(),
            seconds,
            requests_per_second: all.len() as f64 / seconds,
            requests: all.len(),
            errors: tally.errors.values().sum(),
            refused: tally.refused.values().sum(),
            p99_ms: percentile(&all, 0.99),
            endpoints,
            acknowledged: (
                tally.registrations.values().map(Vec::len).sum(),
                tally.payments.values().map(Vec::len).sum(),
            ),
            records,
        };
        let timeline = tally.timeline.clone();
        drop(tally);
        if let Some((node, dir)) = self.own {
            node.stop().await;
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok((report, timeline))
    }
}

/// Runs the load for its duration and checks the records.
pub async fn run(config: LoadConfig) -> Result<LoadReport, String> {
    let load = start(&config).await?;
    tokio::time::sleep(config.duration).await;
    Ok(load.finish().await?.0)
}

/// Throughput and latency of the requests answered between `from` and `to` seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    /// Requests answered in the window.
    pub requests: usize,
    /// Of them, failed.
    pub failed: usize,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// The window `[from, to)` of a timeline, over every node or only `node`.
pub fn window(timeline: &[Sample], from: f64, to: f64, node: Option<usize>) -> Window {
    let mut ms: Vec<f64> = Vec::new();
    let mut failed = 0;
    for s in timeline {
        if s.at >= from && s.at < to && node.is_none_or(|n| n == s.node) {
            ms.push(s.ms);
            failed += usize::from(s.failed);
        }
    }
    ms.sort_by(f64::total_cmp);
    Window {
        requests: ms.len(),
        failed,
        requests_per_second: if to > from {
            ms.len() as f64 / (to - from)
        } else {
            0.0
        },
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
    }
}

fn random_suffix() -> String {
    format!("{:08x}", rand_u32())
}

/// A random number for account names, from the clock and the process (unique enough: accounts
/// of one run only need to differ from an earlier run's on the same node).
fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
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
    identity_in(110_105, n)
}

/// [`identity`] in another region (the ID number's first six digits): each run of the load
/// generator takes a region of its own, so a second run against the same hospital registers new
/// patients instead of being refused the first run's ID numbers.
pub fn identity_in(region: u32, n: u64) -> (String, String) {
    let day = time::Date::from_calendar_date(1950, time::Month::January, 1).expect("a valid date")
        + time::Duration::days((n / 1000 % 18_000) as i64);
    let birth = format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    let body = format!("{:06}{birth}{:03}", region % 1_000_000, n % 1000);
    let check = nonstop_hospital::patient::id_check_character(&body);
    (day.to_string(), format!("{body}{check}"))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long run's ids go in parts that each fit the node's 64 KiB body limit, every id once.
    #[test]
    fn record_checks_of_a_long_run_fit_the_nodes_body_limit() {
        let registrations: Vec<i64> = (100_000_000_000..100_000_030_000).collect();
        let payments: Vec<i64> = (200_000_000_000..200_000_025_000).collect();
        let bodies = record_check_bodies(&registrations, &payments);
        let (mut r, mut p) = (Vec::new(), Vec::new());
        for b in &bodies {
            assert!(serde_json::to_vec(b).unwrap().len() < 64 * 1024);
            r.extend(
                b["registrations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap()),
            );
            p.extend(
                b["payments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap()),
            );
        }
        assert_eq!((r, p), (registrations, payments));
        assert_eq!(record_check_bodies(&[], &[]).len(), 1);
    }
}
