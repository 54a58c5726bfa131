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
//!
//! That traffic is closed-loop: each worker waits for its answer before its next request, so it
//! never offers more than the node serves. [`start_open_loop`] offers a fixed rate instead:
//! requests leave on a schedule whatever the answers (a registration desk's steps, each visit's
//! next step taken by the next free slot of the schedule), and each one's latency counts from
//! when it was due, so a node that falls behind is not measured as if its clients had waited
//! politely (coordinated omission). A `503 overloaded` answer is counted as shed, apart from
//! failures: a node sheds what it cannot serve, and the shed step is tried again later.

use std::collections::{BTreeMap, VecDeque};
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

/// Open-loop traffic ([`start_open_loop`]): requests at a fixed rate, whatever the answers.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests a second, spread evenly over the run's duration and over the nodes.
    pub rate: f64,
}

/// What an open-loop run offered.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Offered {
    /// Requests a second, as configured.
    pub rate: f64,
    /// Requests issued on schedule (the rate times the duration).
    pub issued: u64,
    /// How long the schedule ran, seconds.
    pub seconds: f64,
    /// p99 of how late requests left, after when they were due, milliseconds: a load generator
    /// short of CPU falls behind its schedule, and this tells that lag from the node's.
    pub late_p99_ms: f64,
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
    /// Requests that failed (transport error or 5xx other than a shed one).
    pub errors: usize,
    /// Requests the node refused (4xx). The traffic is valid and the quotas large, so any
    /// refusal is a fault to look into, reported apart from failures.
    pub refused: usize,
    /// Requests the node shed (`503 overloaded`): load it said it could not serve now.
    pub shed: usize,
    /// Median latency of the requests not shed, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of the requests not shed, milliseconds.
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
    /// All requests, shed ones included.
    pub requests: usize,
    /// Failed requests (transport errors, and 5xx other than shed).
    pub errors: usize,
    /// Refused requests (4xx).
    pub refused: usize,
    /// Requests the node shed (`503 overloaded`), not failures.
    pub shed: usize,
    /// p99 over the requests not shed, milliseconds.
    pub p99_ms: f64,
    /// p99 of the shed answers, milliseconds: how soon the node said no.
    pub shed_p99_ms: f64,
    /// For open-loop traffic, what it offered.
    pub offered: Option<Offered>,
    /// Per endpoint.
    pub endpoints: Vec<EndpointReport>,
    /// Registrations and payments the node acknowledged.
    pub acknowledged: (usize, usize),
    /// The first failed requests, each with when and why (`POST /payments at 12.3 s on node 0:
    /// ...`), so that a failure can be told from another.
    pub failures: Vec<String>,
    /// What the database holds of them.
    pub records: RecordCheck,
}

/// One request on the run's timeline.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Which node (index into the targets).
    pub node: usize,
    /// Its endpoint, as the report names it (`POST /patients`).
    pub endpoint: &'static str,
    /// When it was answered, seconds since the traffic started.
    pub at: f64,
    /// Its latency, milliseconds (open-loop: from when it was due).
    pub ms: f64,
    /// Whether it failed (transport error or 5xx other than shed).
    pub failed: bool,
    /// Whether the node shed it (`503 overloaded`).
    pub shed: bool,
}

/// How the node answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 2xx.
    Accepted,
    /// 4xx: a business refusal.
    Refused,
    /// `503` with the error code `overloaded`: the node sheds load it cannot serve.
    Shed,
    /// No answer, or any other 5xx.
    Failed,
}

/// Sorts an answer (`None`: no answer at all) into an [`Outcome`].
fn outcome(answer: Option<(StatusCode, &Value)>) -> Outcome {
    match answer {
        None => Outcome::Failed,
        Some((status, body))
            if status == StatusCode::SERVICE_UNAVAILABLE
                && body["error"]["code"] == "overloaded" =>
        {
            Outcome::Shed
        }
        Some((status, _)) if status.is_success() => Outcome::Accepted,
        Some((status, _)) if status.is_client_error() => Outcome::Refused,
        Some(_) => Outcome::Failed,
    }
}

#[derive(Default)]
struct Tally {
    /// Latencies of the requests not shed, per endpoint.
    latencies: BTreeMap<String, Vec<f64>>,
    errors: BTreeMap<String, usize>,
    refused: BTreeMap<String, usize>,
    shed: BTreeMap<String, usize>,
    /// Latencies of the shed answers.
    shed_ms: Vec<f64>,
    /// How late each request left after it was due, milliseconds.
    late_ms: Vec<f64>,
    /// Acknowledged registrations and payments, per node.
    registrations: BTreeMap<usize, Vec<i64>>,
    payments: BTreeMap<usize, Vec<i64>>,
    timeline: Vec<Sample>,
    /// The first failures, described.
    failures: Vec<String>,
}

/// Failures described in a report, at most.
const FAILURES_KEPT: usize = 20;

impl Tally {
    /// Counts one request of `endpoint` on `node`, answered `at` seconds into the run.
    fn record(&mut self, node: usize, endpoint: &'static str, at: f64, ms: f64, outcome: Outcome) {
        let count = |map: &mut BTreeMap<String, usize>| {
            *map.entry(endpoint.to_owned()).or_default() += 1;
        };
        match outcome {
            Outcome::Shed => {
                count(&mut self.shed);
                self.shed_ms.push(ms);
            }
            Outcome::Failed => count(&mut self.errors),
            Outcome::Refused => count(&mut self.refused),
            Outcome::Accepted => {}
        }
        if outcome != Outcome::Shed {
            self.latencies
                .entry(endpoint.to_owned())
                .or_default()
                .push(ms);
        }
        self.timeline.push(Sample {
            node,
            endpoint,
            at,
            ms,
            failed: outcome == Outcome::Failed,
            shed: outcome == Outcome::Shed,
        });
    }

    /// Each endpoint's counts and latency, and every latency not shed (sorted).
    fn endpoints(&self) -> (Vec<EndpointReport>, Vec<f64>) {
        let names: std::collections::BTreeSet<&String> =
            self.latencies.keys().chain(self.shed.keys()).collect();
        let mut all = Vec::new();
        let mut endpoints = Vec::new();
        for endpoint in names {
            let mut ms = self.latencies.get(endpoint).cloned().unwrap_or_default();
            ms.sort_by(f64::total_cmp);
            all.extend_from_slice(&ms);
            let shed = self.shed.get(endpoint).copied().unwrap_or(0);
            endpoints.push(EndpointReport {
                endpoint: endpoint.clone(),
                requests: ms.len() + shed,
                errors: self.errors.get(endpoint).copied().unwrap_or(0),
                refused: self.refused.get(endpoint).copied().unwrap_or(0),
                shed,
                p50_ms: percentile(&ms, 0.50),
                p99_ms: percentile(&ms, 0.99),
            });
        }
        all.sort_by(f64::total_cmp);
        (endpoints, all)
    }
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
    /// One request, timed; `None` on a transport error or a 5xx (counted as errors, or as shed
    /// for `503 overloaded`); a 4xx is returned and counted as refused.
    async fn send(
        &self,
        endpoint: &'static str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        match self
            .request(Instant::now(), endpoint, method, path, body)
            .await
        {
            (Outcome::Accepted | Outcome::Refused, Some(answer)) => Some(answer),
            _ => None,
        }
    }

    /// One request, its latency counted from `due` (when it should have left), counted in the
    /// tally by its outcome.
    async fn request(
        &self,
        due: Instant,
        endpoint: &'static str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (Outcome, Option<(StatusCode, Value)>) {
        let late = due.elapsed().as_secs_f64() * 1000.0;
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
        let result = req.send().await;
        let mut failure = None;
        let answer = match result {
            Ok(resp) => {
                let status = resp.status();
                let value = resp.json::<Value>().await.unwrap_or(Value::Null);
                Some((status, value))
            }
            Err(e) => {
                // The whole chain: "error sending request" alone does not say what happened.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                failure = Some(why);
                None
            }
        };
        let ms = due.elapsed().as_secs_f64() * 1000.0;
        let outcome = outcome(answer.as_ref().map(|(s, v)| (*s, v)));
        let mut tally = self.tally.lock().await;
        if outcome == Outcome::Failed && tally.failures.len() < FAILURES_KEPT {
            let why = failure.unwrap_or_else(|| match &answer {
                Some((status, body)) => format!("{status} {body}"),
                None => "no answer".into(),
            });
            let at = self.started.elapsed().as_secs_f64();
            tally.failures.push(format!(
                "{endpoint} at {at:.1} s on node {}: {why}",
                self.node
            ));
        }
        tally.record(
            self.node,
            endpoint,
            self.started.elapsed().as_secs_f64(),
            ms,
            outcome,
        );
        tally.late_ms.push(late);
        drop(tally);
        (outcome, answer)
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

/// The schedule of open-loop traffic under way.
struct Schedule {
    rate: f64,
    duration: Duration,
    /// Issues the traffic; answers how many requests it issued, once all are answered.
    task: tokio::task::JoinHandle<u64>,
}

/// Traffic under way ([`start`]); [`Load::finish`] stops it and checks the records.
pub struct Load {
    nodes: Vec<Prepared>,
    client: Client,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Open-loop traffic's schedule.
    schedule: Option<Schedule>,
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

/// The nodes of a run, prepared, and the client that drives them.
struct Setup {
    client: Client,
    nodes: Vec<Prepared>,
    database: String,
    own: Option<(RunningNode, std::path::PathBuf)>,
}

/// Starts the node of its own if asked, and prepares every node. The client keeps at most
/// `idle` connections per node between requests.
async fn setup(config: &LoadConfig, idle: usize) -> Result<Setup, String> {
    let mut builder = Client::builder().pool_max_idle_per_host(idle);
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
    Ok(Setup {
        client,
        nodes,
        database,
        own,
    })
}

/// Prepares every node and starts the traffic: closed-loop, each desk, doctor and screen waiting
/// for its answer before its next request.
pub async fn start(config: &LoadConfig) -> Result<Load, String> {
    let Setup {
        client,
        nodes,
        database,
        own,
    } = setup(config, 64).await?;
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
        schedule: None,
        started,
        database,
        own,
    })
}

/// Visit `n`'s new patient. Each visit is a new patient: the quota rule allows one registration
/// per department per day.
fn new_patient(region: u32, n: u64) -> Value {
    let (birth_date, id_number) = identity_in(region, n);
    json!({
        "name": format!("负载{n}"), "gender": "female", "birth_date": birth_date,
        "id_number": id_number, "phone": "13800001111",
        "insurance_category": if n.is_multiple_of(3) { "none" } else { "employee" }, "insurance_number": null
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
    let Some((s, p)) = clerk
        .send(
            "POST /patients",
            "POST",
            "/api/v1/patients",
            Some(new_patient(region, n)),
        )
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

/// The next request of a desk visit in open-loop traffic: the same steps as [`desk_visit`]'s, each
/// taken by a slot of the schedule rather than right after the answer to the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Visit `visit`'s new patient.
    Patient { visit: u64 },
    /// Register the patient into a session.
    Register { visit: u64, patient: i64 },
    /// Pay the registration's invoice at a kiosk.
    Pay {
        visit: u64,
        patient: i64,
        registration: i64,
        invoice: i64,
    },
    /// Check in for the registration.
    CheckIn { registration: i64 },
}

impl Step {
    /// How far along its visit the step is, 0 to 3.
    fn stage(&self) -> usize {
        match self {
            Step::Patient { .. } => 0,
            Step::Register { .. } => 1,
            Step::Pay { .. } => 2,
            Step::CheckIn { .. } => 3,
        }
    }

    /// What the visit does next once the node answered this step with `outcome` and `body`:
    /// the next step if accepted, the same step again if shed (the node asked for a retry),
    /// nothing if the visit ends (done, refused or failed).
    fn then(self, outcome: Outcome, body: &Value) -> Option<Step> {
        match outcome {
            Outcome::Shed => return Some(self),
            Outcome::Refused | Outcome::Failed => return None,
            Outcome::Accepted => {}
        }
        match self {
            Step::Patient { visit } => Some(Step::Register {
                visit,
                patient: body["id"].as_i64()?,
            }),
            Step::Register { visit, patient } => Some(Step::Pay {
                visit,
                patient,
                registration: body["id"].as_i64()?,
                invoice: body["invoice_id"].as_i64()?,
            }),
            Step::Pay { registration, .. } => Some(Step::CheckIn { registration }),
            Step::CheckIn { .. } => None,
        }
    }
}

/// The visits of one node waiting for their next step, by stage.
#[derive(Debug, Default)]
struct Visits {
    waiting: [VecDeque<Step>; 4],
}

impl Visits {
    /// A visit's step waits for a slot of the schedule.
    fn push(&mut self, step: Step) {
        self.waiting[step.stage()].push_back(step);
    }

    /// The step of the visit furthest along, so visits finish rather than pile up half done;
    /// `None` when no visit waits (the slot starts a new one).
    fn next(&mut self) -> Option<Step> {
        self.waiting.iter_mut().rev().find_map(VecDeque::pop_front)
    }
}

/// One node's registration desk under open-loop traffic.
struct OpenDesk {
    clerk: Driver,
    kiosk: Driver,
    sessions: Arc<RwLock<Vec<(i64, i64)>>>,
    visits: std::sync::Mutex<Visits>,
    region: u32,
}

impl OpenDesk {
    /// Takes `step`, due at `due`: the request, the record it acknowledged, the visit's next step.
    async fn take(&self, step: Step, due: Instant) {
        let (driver, endpoint, path, body) = match &step {
            Step::Patient { visit } => (
                &self.clerk,
                "POST /patients",
                "/api/v1/patients",
                new_patient(self.region, *visit),
            ),
            Step::Register { visit, patient } => {
                let schedule = {
                    let s = self.sessions.read().expect("sessions");
                    s[*visit as usize % s.len()].1
                };
                let channel = if visit.is_multiple_of(4) {
                    "online"
                } else {
                    "on-site"
                };
                (
                    &self.clerk,
                    "POST /registrations",
                    "/api/v1/registrations",
                    json!({"patient_id": patient, "schedule_id": schedule, "channel": channel}),
                )
            }
            Step::Pay {
                visit,
                patient,
                invoice,
                ..
            } => (
                &self.kiosk,
                "POST /payments",
                "/api/v1/payments",
                json!({"invoice_id": invoice, "patient_id": patient, "method": "self-service",
                       "idempotency_key": format!("load-{}-{visit}", self.region)}),
            ),
            Step::CheckIn { registration } => (
                &self.clerk,
                "POST /check-ins",
                "/api/v1/check-ins",
                json!({"appointment_id": registration}),
            ),
        };
        let (outcome, answer) = driver
            .request(due, endpoint, "POST", path, Some(body))
            .await;
        let body = answer.map(|(_, body)| body).unwrap_or(Value::Null);
        if outcome == Outcome::Accepted {
            let id = body["id"].as_i64().unwrap_or(-1);
            match step {
                Step::Register { .. } => {
                    let mut tally = driver.tally.lock().await;
                    tally.registrations.entry(driver.node).or_default().push(id);
                }
                Step::Pay { .. } => {
                    let mut tally = driver.tally.lock().await;
                    tally.payments.entry(driver.node).or_default().push(id);
                }
                Step::Patient { .. } | Step::CheckIn { .. } => {}
            }
        }
        if let Some(next) = step.then(outcome, &body) {
            self.visits.lock().expect("visits").push(next);
        }
    }
}

/// Calls `issue` for each arrival of a fixed-rate schedule: the `i`-th due at `rate` a second
/// after the schedule's start, for `duration` (`rate × duration` arrivals, rounded up). It never
/// waits for what `issue` started; one that falls behind (a busy core) issues what is overdue at
/// once, each with the time it was due. Returns the arrivals issued.
async fn issue_on_schedule(
    rate: f64,
    duration: Duration,
    mut issue: impl FnMut(u64, Instant),
) -> u64 {
    let start = tokio::time::Instant::now();
    let mut i = 0u64;
    loop {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        if offset >= duration {
            return i;
        }
        let due = start + offset;
        tokio::time::sleep_until(due).await;
        issue(i, due.into_std());
        i += 1;
    }
}

/// Prepares every node and starts open-loop traffic: `open.rate` requests a second for the
/// config's duration, taken in turn by the nodes, whatever the answers (the desks, doctors and
/// screens of `config` are not used). Every request is a registration desk's step (a new
/// patient, a registration, a payment, a check-in): the writes a node must queue, and so the
/// load it sheds when it cannot serve it. [`Load::finish`] waits for the schedule to end.
pub async fn start_open_loop(config: &LoadConfig, open: OpenLoop) -> Result<Load, String> {
    if !(open.rate.is_finite() && open.rate > 0.0) {
        return Err(format!(
            "an open-loop rate is a positive number of requests a second, not {}",
            open.rate
        ));
    }
    if config.duration.is_zero() {
        return Err("open-loop traffic needs a duration".into());
    }
    // As many connections as requests in flight, each kept for the next request: a node that
    // answers slowly should not also be made to accept a new connection for each.
    let Setup {
        client,
        nodes,
        database,
        own,
    } = setup(config, usize::MAX).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let region = 100_000 + rand_u32() % 900_000;
    let driver = |node: usize, token: &str| Driver {
        node,
        base: nodes[node].base.clone(),
        client: client.clone(),
        token: token.to_owned(),
        tally: tally.clone(),
        started,
    };
    let desks: Vec<Arc<OpenDesk>> = (0..nodes.len())
        .map(|node| {
            Arc::new(OpenDesk {
                clerk: driver(node, &nodes[node].clerk),
                kiosk: driver(node, &nodes[node].kiosk),
                sessions: nodes[node].sessions.clone(),
                visits: std::sync::Mutex::new(Visits::default()),
                region,
            })
        })
        .collect();
    let duration = config.duration;
    let schedule = tokio::spawn(async move {
        let mut in_flight = tokio::task::JoinSet::new();
        let mut visits = 0u64;
        let issued = issue_on_schedule(open.rate, duration, |i, due| {
            let desk = desks[i as usize % desks.len()].clone();
            let waiting = desk.visits.lock().expect("visits").next();
            let step = waiting.unwrap_or_else(|| {
                visits += 1;
                Step::Patient { visit: visits }
            });
            in_flight.spawn(async move { desk.take(step, due).await });
            // Reap what has ended, so the set holds only what is in flight.
            while in_flight.try_join_next().is_some() {}
        })
        .await;
        while in_flight.join_next().await.is_some() {}
        issued
    });
    Ok(Load {
        nodes,
        client,
        tally,
        stop: Arc::new(AtomicBool::new(false)),
        workers: Vec::new(),
        schedule: Some(Schedule {
            rate: open.rate,
            duration,
            task: schedule,
        }),
        started,
        database,
        own,
    })
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

    /// Stops the traffic (open-loop: once its schedule has ended), waits for requests in
    /// flight, and checks every node's records.
    pub async fn finish(self) -> Result<(LoadReport, Vec<Sample>), String> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let issued = match self.schedule {
            Some(schedule) => Some((
                schedule.rate,
                schedule.duration,
                schedule
                    .task
                    .await
                    .map_err(|e| format!("the open-loop schedule failed: {e}"))?,
            )),
            None => None,
        };
        let seconds = self.started.elapsed().as_secs_f64();
        let tally = self.tally.lock().await;
        let offered = issued.map(|(rate, duration, issued)| {
            let mut late = tally.late_ms.clone();
            late.sort_by(f64::total_cmp);
            Offered {
                rate,
                issued,
                seconds: duration.as_secs_f64(),
                late_p99_ms: percentile(&late, 0.99),
            }
        });
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
        let (endpoints, all) = tally.endpoints();
        let shed: usize = tally.shed.values().sum();
        let mut shed_ms = tally.shed_ms.clone();
        shed_ms.sort_by(f64::total_cmp);
        let report = LoadReport {
            database: self.database.clone(),
            seconds,
            requests_per_second: (all.len() + shed) as f64 / seconds,
            requests: all.len() + shed,
            errors: tally.errors.values().sum(),
            refused: tally.refused.values().sum(),
            shed,
            p99_ms: percentile(&all, 0.99),
            shed_p99_ms: percentile(&shed_ms, 0.99),
            offered,
            endpoints,
            acknowledged: (
                tally.registrations.values().map(Vec::len).sum(),
                tally.payments.values().map(Vec::len).sum(),
            ),
            records,
            failures: tally.failures.clone(),
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

/// Runs open-loop traffic ([`start_open_loop`]) for its duration and checks the records.
pub async fn run_open_loop(config: LoadConfig, open: OpenLoop) -> Result<LoadReport, String> {
    start_open_loop(&config, open)
        .await?
        .finish()
        .await
        .map(|r| r.0)
}

/// Throughput and latency of the requests answered between `from` and `to` seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    /// Requests answered in the window, not counting those shed.
    pub requests: usize,
    /// Of them, failed.
    pub failed: usize,
    /// Requests shed in the window (`503 overloaded`).
    pub shed: usize,
    /// Requests per second, not counting those shed.
    pub requests_per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// The window `[from, to)` of a timeline, over every node or only `node`.
pub fn window(timeline: &[Sample], from: f64, to: f64, node: Option<usize>) -> Window {
    let mut ms: Vec<f64> = Vec::new();
    let (mut failed, mut shed) = (0, 0);
    for s in timeline {
        if s.at >= from && s.at < to && node.is_none_or(|n| n == s.node) {
            if s.shed {
                shed += 1;
                continue;
            }
            ms.push(s.ms);
            failed += usize::from(s.failed);
        }
    }
    ms.sort_by(f64::total_cmp);
    Window {
        requests: ms.len(),
        failed,
        shed,
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

    /// The schedule issues `rate × duration` requests (rounded up), the i-th due `i / rate`
    /// seconds after the first, and never waits for a request it started: here none is ever
    /// answered.
    #[tokio::test]
    async fn an_open_loop_schedule_issues_rate_times_duration_without_waiting_for_answers() {
        let never_answered = Arc::new(tokio::sync::Semaphore::new(0));
        let mut due = Vec::new();
        let mut in_flight = tokio::task::JoinSet::new();
        let issued = issue_on_schedule(2000.0, Duration::from_millis(250), |i, at| {
            due.push((i, at));
            let gate = never_answered.clone();
            in_flight.spawn(async move {
                let _ = gate.acquire().await;
            });
        })
        .await;
        assert_eq!(issued, 500);
        assert_eq!(due.len(), 500);
        assert_eq!(in_flight.len(), 500, "every request still in flight");
        for (i, at) in &due {
            let offset = at.duration_since(due[0].1);
            assert_eq!(
                offset,
                Duration::from_secs_f64(*i as f64 / 2000.0),
                "arrival {i}"
            );
        }
        // A rate that does not divide the duration: arrivals at 0, 1/30 and 2/30 s of 0.1 s.
        assert_eq!(
            issue_on_schedule(30.0, Duration::from_millis(100), |_, _| {}).await,
            3
        );
        // 7.5 a second for 1 s: 0, 0.133, ... 0.933 s.
        assert_eq!(
            issue_on_schedule(7.5, Duration::from_secs(1), |_, _| {}).await,
            8
        );
    }

    /// `503 overloaded` is shed; any other 5xx, or no answer, is a failure; a 4xx a refusal.
    #[test]
    fn only_a_503_overloaded_is_shed() {
        let overloaded =
            json!({"error": {"code": "overloaded", "message": "the node is overloaded"}});
        let rule = json!({"error": {"code": "rule-unavailable"}});
        let cases = [
            (
                Some((StatusCode::SERVICE_UNAVAILABLE, &overloaded)),
                Outcome::Shed,
            ),
            (
                Some((StatusCode::SERVICE_UNAVAILABLE, &rule)),
                Outcome::Failed,
            ),
            (
                Some((StatusCode::SERVICE_UNAVAILABLE, &Value::Null)),
                Outcome::Failed,
            ),
            (
                Some((StatusCode::INTERNAL_SERVER_ERROR, &overloaded)),
                Outcome::Failed,
            ),
            (None, Outcome::Failed),
            (Some((StatusCode::CONFLICT, &rule)), Outcome::Refused),
            (
                Some((StatusCode::TOO_MANY_REQUESTS, &rule)),
                Outcome::Refused,
            ),
            (Some((StatusCode::CREATED, &Value::Null)), Outcome::Accepted),
            (Some((StatusCode::OK, &Value::Null)), Outcome::Accepted),
        ];
        for (answer, expected) in cases {
            assert_eq!(outcome(answer), expected, "{answer:?}");
        }
    }

    /// A shed request is counted as shed, not failed, and stays out of the latency of the
    /// requests the node took.
    #[test]
    fn shed_requests_are_counted_apart_from_failures_and_latency() {
        let mut tally = Tally::default();
        tally.record(0, "POST /payments", 0.1, 3.0, Outcome::Accepted);
        tally.record(0, "POST /payments", 0.2, 0.5, Outcome::Shed);
        tally.record(0, "POST /payments", 0.3, 0.4, Outcome::Shed);
        tally.record(0, "POST /patients", 0.4, 0.6, Outcome::Shed);
        tally.record(0, "POST /payments", 0.5, 900.0, Outcome::Failed);
        let (endpoints, all) = tally.endpoints();
        let payments = endpoints
            .iter()
            .find(|e| e.endpoint == "POST /payments")
            .unwrap();
        assert_eq!(
            (payments.requests, payments.shed, payments.errors),
            (4, 2, 1)
        );
        // An endpoint whose every request was shed is reported too.
        let patients = endpoints
            .iter()
            .find(|e| e.endpoint == "POST /patients")
            .unwrap();
        assert_eq!(
            (patients.requests, patients.shed, patients.errors),
            (1, 1, 0)
        );
        assert_eq!(all, vec![3.0, 900.0]);
        assert_eq!(tally.shed_ms, vec![0.5, 0.4, 0.6]);
        let w = window(&tally.timeline, 0.0, 1.0, None);
        assert_eq!((w.requests, w.shed, w.failed), (2, 3, 1));
    }

    /// A visit moves on when a step is accepted, takes the same step again when it is shed,
    /// and ends when it is refused or failed.
    #[test]
    fn a_visit_moves_on_when_accepted_retries_when_shed_and_ends_otherwise() {
        let patient = Step::Patient { visit: 7 };
        assert_eq!(
            patient.clone().then(Outcome::Accepted, &json!({"id": 41})),
            Some(Step::Register {
                visit: 7,
                patient: 41
            })
        );
        assert_eq!(
            patient.clone().then(Outcome::Shed, &Value::Null),
            Some(patient.clone())
        );
        // An acknowledgement without the id the next step needs ends the visit.
        assert_eq!(patient.then(Outcome::Accepted, &json!({})), None);
        let register = Step::Register {
            visit: 7,
            patient: 41,
        };
        let pay = Step::Pay {
            visit: 7,
            patient: 41,
            registration: 5,
            invoice: 9,
        };
        assert_eq!(
            register
                .clone()
                .then(Outcome::Accepted, &json!({"id": 5, "invoice_id": 9})),
            Some(pay.clone())
        );
        assert_eq!(register.then(Outcome::Refused, &Value::Null), None);
        assert_eq!(
            pay.clone().then(Outcome::Accepted, &json!({"id": 3})),
            Some(Step::CheckIn { registration: 5 })
        );
        assert_eq!(pay.then(Outcome::Failed, &Value::Null), None);
        let check_in = Step::CheckIn { registration: 5 };
        assert_eq!(check_in.then(Outcome::Accepted, &Value::Null), None);
    }

    /// A free slot takes the step of the visit furthest along, in the order they waited.
    #[test]
    fn a_slot_takes_the_visit_furthest_along() {
        let mut visits = Visits::default();
        assert_eq!(visits.next(), None);
        visits.push(Step::Patient { visit: 1 });
        visits.push(Step::Register {
            visit: 2,
            patient: 20,
        });
        visits.push(Step::CheckIn { registration: 30 });
        visits.push(Step::Register {
            visit: 3,
            patient: 21,
        });
        visits.push(Step::CheckIn { registration: 31 });
        let order: Vec<Step> = std::iter::from_fn(|| visits.next()).collect();
        assert_eq!(
            order,
            vec![
                Step::CheckIn { registration: 30 },
                Step::CheckIn { registration: 31 },
                Step::Register {
                    visit: 2,
                    patient: 20
                },
                Step::Register {
                    visit: 3,
                    patient: 21
                },
                Step::Patient { visit: 1 },
            ]
        );
    }
}
