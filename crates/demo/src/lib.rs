//! `nonstop demo`: the whole method end to end, on one machine, from nothing. It starts an update
//! server and three hospital nodes as separate processes (each with its own SQLite database and
//! port, enrolled in the server), drives all three with the load generator, and while the load
//! runs publishes four releases and rolls each out in waves, canary first:
//!
//! 1. `fees` 2.0.0 (patients 60 and over at half price): checked, promoted, priced into new
//!    registrations;
//! 2. `triage` 2.0.0: promoted, visible in queue order;
//! 3. `fees` 3.0.0, a broken build (every fee 1 yuan): its test vectors fail on the canary, the
//!    rollout halts, the other nodes never receive it;
//! 4. `fees` 3.1.0 (`modules/fees-v3`), which passes every candidate check but traps on level-4
//!    sessions; once it is live the hospital opens its level-4 community clinics, the module
//!    fails on those real inputs, and the canary's watch window rolls it back by itself.
//!
//! Then a publisher key leaks: the fleet's root of trust (pushed to every node at the start)
//! is rotated to root 2 without it, and a bundle the thief signs is refused by the update server
//! and by a node it is pushed into directly ([`key_leak`]).
//!
//! It prints a timeline of every step on every node and ends with a report: requests, failed
//! requests, acknowledged records against those found, and throughput and latency before, during
//! and after each update. It fails if a request failed or a record was lost.

#![deny(missing_docs)]

pub mod key_leak;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nonstop_bundle::{CandidateChecks, ComponentKind, Draft, SecretKey};
use nonstop_loadgen::{LoadConfig, NodeTarget, SessionKind, Target, Window};
use serde::Serialize;
use serde_json::{Value, json};

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The `nonstop` executable to start the server and the nodes with.
    pub exe: PathBuf,
    /// Shortest length of the traffic; the updates take what they take within it.
    pub duration: Duration,
    /// Keep the working directory (logs, databases) instead of deleting it.
    pub keep: bool,
    /// Where progress lines go.
    pub progress: ProgressTo,
}

/// Where the timeline is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressTo {
    /// Standard output (the report is text).
    Stdout,
    /// Standard error (standard output carries the JSON report).
    Stderr,
}

/// One update of the demo and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    /// The component.
    pub component: String,
    /// The version.
    pub version: String,
    /// What it was for.
    pub story: String,
    /// `live` (every node runs it, healthy), `rejected` (refused by a candidate check) or
    /// `rolled_back` (went live and was rolled back by its watch window).
    pub outcome: String,
    /// Slowest node's time from receiving the push to live, milliseconds; null if it never
    /// went live anywhere.
    pub push_to_live_ms: Option<u64>,
    /// From the rollout's start to its end, milliseconds.
    pub rollout_ms: u64,
    /// Per node: its last step and its push-to-live time.
    pub nodes: Vec<NodeOutcome>,
    /// Why the rollout halted, if it did.
    pub reason: Option<String>,
    /// Traffic in the seconds before the rollout, during it, and after it.
    pub before: Window,
    /// During the rollout.
    pub during: Window,
    /// After it.
    pub after: Window,
}

/// How one node ended one update.
#[derive(Debug, Clone, Serialize)]
pub struct NodeOutcome {
    /// The node.
    pub node: String,
    /// Its last state in the rollout (`healthy`, `rejected`, `rolled-back`, `pending` if never
    /// sent).
    pub state: String,
    /// Push to live, milliseconds, as the node measured it.
    pub push_to_live_ms: Option<u64>,
}

/// The demo's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests made.
    pub requests: usize,
    /// Failed requests (transport errors and 5xx): must be 0.
    pub failed_requests: usize,
    /// Requests the nodes refused (4xx).
    pub refused_requests: usize,
    /// Registrations and payments the nodes acknowledged.
    pub records_acknowledged: usize,
    /// Of them, found in the nodes' databases (each exactly once): must match.
    pub records_found: usize,
    /// Invoices paid twice: must be 0.
    pub invoices_paid_twice: i64,
    /// Seconds of traffic.
    pub seconds: f64,
    /// Requests per second over the whole run.
    pub requests_per_second: f64,
    /// p99 over the whole run, milliseconds.
    pub p99_ms: f64,
    /// The updates, in order.
    pub updates: Vec<UpdateReport>,
    /// Whether the audit chain verified at the end.
    pub audit_chain_ok: bool,
    /// The leaked publisher key, revoked, and the thief's bundle refused.
    pub key_leak: key_leak::KeyLeakReport,
    /// Where the logs and databases are (when kept).
    pub dir: String,
}

impl Report {
    /// Whether the demo kept its promise: no failed request, no lost record.
    pub fn passed(&self) -> bool {
        self.failed_requests == 0
            && self.records_found == self.records_acknowledged
            && self.invoices_paid_twice == 0
    }
}

/// The bundles the demo publishes, built at compile time into the binary.
const FEES_2: &[u8] = include_bytes!("../../../modules/factory/fees-2.0.0.nsb");
const TRIAGE_2: &[u8] = include_bytes!("../../../modules/factory/triage-2.0.0.nsb");
const BAD_ANSWERS: &[u8] = include_bytes!("../../../modules/dist/bad-answers.wasm");
const BAD_ANSWERS_CHECKS: &str = include_str!("../../../modules/bad-answers/checks.json");
const FEES_3: &[u8] = include_bytes!("../../../modules/dist/fees-v3.wasm");
const FEES_3_CHECKS: &str = include_str!("../../../modules/fees-v3/checks.json");

/// The nodes' configuration for the demo: short watch windows and shadow samples, so that four
/// updates in two waves fit in a minute or two.
const NODE_CONFIG: &str = r#"
[checks]
shadow_calls = 40
shadow_idle_secs = 2
watch_calls = 300
watch_secs = 8
[link]
backoff_initial_ms = 100
backoff_max_ms = 2000
"#;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Prints timeline lines with the time since the demo started.
struct Timeline {
    started: Instant,
    to: ProgressTo,
}

impl Timeline {
    fn say(&self, text: &str) {
        let line = format!("[{:6.1}s] {text}", self.started.elapsed().as_secs_f64());
        match self.to {
            ProgressTo::Stdout => println!("{line}"),
            ProgressTo::Stderr => eprintln!("{line}"),
        }
    }
}

/// What a started process said before it listened: where, and its certificate's fingerprint.
struct Started {
    child: Child,
    url: String,
    fingerprint: Option<String>,
}

/// Starts `exe args...` with its output in `log`, and waits for the line that says where it
/// listens.
fn spawn(exe: &Path, args: &[&str], log: &Path, what: &str) -> Result<Started, String> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(log.with_extension("err"))
                .map_err(|e| format!("creating {}: {e}", log.display()))?,
        )
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out =
        std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    std::thread::spawn(move || {
        let mut fingerprint = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(f) = line.strip_prefix("certificate ") {
                fingerprint = f.split_whitespace().next().map(str::to_owned);
            }
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send((url.trim().to_owned(), fingerprint.take()));
            }
            let _ = writeln!(out, "{line}");
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((url, fingerprint)) => Ok(Started {
            child,
            url,
            fingerprint,
        }),
        Err(_) => {
            let _ = child.kill();
            let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
            Err(format!(
                "{what} did not start within 120 s; its log:\n{}",
                err.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        }
    }
}

/// A `nonstop node` process on loopback, on its own (not enrolled): what the benchmarks that
/// compare two nodes side by side run.
pub struct StandaloneNode {
    /// Its URL and an administrator's token.
    pub target: NodeTarget,
    /// Its certificate's fingerprint, when it serves HTTPS.
    pub fingerprint: Option<String>,
    procs: Processes,
}

impl StandaloneNode {
    /// Starts `exe node` with its data in `dir/name` and the configuration `config` (TOML),
    /// serving HTTPS with a generated certificate when `tls`, else plain HTTP.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        tls: bool,
    ) -> Result<StandaloneNode, String> {
        let extra: &[&str] = if tls { &[] } else { &["--no-tls"] };
        Self::start_with(exe, dir, name, config, extra).await
    }

    async fn start_with(
        exe: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        extra: &[&str],
    ) -> Result<StandaloneNode, String> {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let config_file = dir.join(format!("{name}.toml"));
        std::fs::write(&config_file, config).map_err(|e| e.to_string())?;
        let (config_arg, data_arg) = (
            config_file.to_string_lossy().into_owned(),
            data.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "node",
            "--config",
            &config_arg,
            "--data-dir",
            &data_arg,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let started = spawn(exe, &args, &dir.join(format!("{name}.log")), name)?;
        let procs = Processes(vec![(name.into(), started.child)]);
        let pin = started
            .fingerprint
            .as_deref()
            .map(nonstop_tls::ServerPin::fingerprint)
            .transpose()
            .map_err(|e| e.to_string())?;
        let client = nonstop_tls::http_client(pin.as_ref()).map_err(|e| e.to_string())?;
        let admin_token = login(&client, &started.url, &data.join("admin-password")).await?;
        Ok(StandaloneNode {
            target: NodeTarget {
                url: started.url,
                admin_token,
            },
            fingerprint: started.fingerprint,
            procs,
        })
    }
}

impl StandaloneNode {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.procs.0[0].1.id()
    }
}

/// A client of the update server's API, signed in as its administrator.
pub struct Api {
    client: reqwest::Client,
    /// The server's URL.
    pub base: String,
    /// How its certificate is trusted (the fingerprint it printed).
    pub pin: Option<nonstop_tls::ServerPin>,
    token: String,
}

impl Api {
    /// One request; the answer's JSON, or the server's reason as the error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        bytes: Option<Vec<u8>>,
    ) -> Result<Value, String> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(b) = bytes {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!(
                "{path}: {status}: {}",
                v["message"].as_str().unwrap_or("")
            ))
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.send(reqwest::Method::POST, path, Some(body), None)
            .await
    }
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    password_file: &Path,
) -> Result<String, String> {
    let password = std::fs::read_to_string(password_file)
        .map_err(|e| format!("reading {}: {e}", password_file.display()))?;
    nonstop_loadgen::login_as(client, base, "admin", password.trim()).await
}

/// A signed rule-module bundle of `payload` with the test vectors of `checks` (JSON).
pub fn bundle(
    component: &str,
    version: &str,
    payload: &[u8],
    checks: &str,
    notes: &str,
    key: &SecretKey,
) -> Result<Vec<u8>, String> {
    let mut draft = Draft::new(
        component,
        ComponentKind::WasmComponent,
        semver::Version::parse(version).map_err(|e| e.to_string())?,
        &format!("{component}.wasm"),
    )
    .map_err(|e| e.to_string())?;
    draft.notes = notes.into();
    draft.checks = serde_json::from_str::<CandidateChecks>(checks).map_err(|e| e.to_string())?;
    nonstop_bundle::create(&draft, payload, key).map_err(|e| e.to_string())
}

/// Runs the demo.
pub async fn run(config: DemoConfig) -> Result<Report, String> {
    let t = Timeline {
        started: Instant::now(),
        to: config.progress,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("nonstop-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = run_in(&config, &t, &dir).await;
    if config.keep {
        t.say(&format!("logs and databases kept in {}", dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// An update server and nodes, each a process of its own, enrolled and connected: what the demo
/// and the fleet benchmarks run on.
pub struct Lab {
    /// The server's API, signed in as its administrator.
    pub server: Api,
    /// The nodes, each with an administrator's token.
    pub nodes: Vec<NodeTarget>,
    /// The publisher key the server and the nodes trust.
    pub vendor: SecretKey,
    procs: Processes,
}

impl Lab {
    /// Starts `nonstop server` and one `nonstop node` per name in `dir`, each node with the
    /// configuration `node_config` (TOML), and waits until every node is connected.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        names: &[&str],
        node_config: &str,
        say: &dyn Fn(&str),
    ) -> Result<Lab, String> {
        let key = SecretKey::generate();
        let vendor_pub = key.public().to_file_text();
        let mut procs = Processes(Vec::new());
        // The update server, trusting the vendor's key (and nonstop's release key).
        let server_dir = dir.join("server");
        std::fs::create_dir_all(server_dir.join("trusted-keys")).map_err(|e| e.to_string())?;
        std::fs::write(server_dir.join("trusted-keys/vendor.pub"), &vendor_pub)
            .map_err(|e| e.to_string())?;
        let server_data = server_dir.to_string_lossy().into_owned();
        // The server speaks HTTPS with the certificate it generates; the nodes and this process
        // pin its fingerprint, as a hospital's nodes would across the internet.
        let started = spawn(
            exe,
            &[
                "server",
                "--data-dir",
                &server_data,
                "--listen",
                "127.0.0.1:0",
            ],
            &dir.join("server.log"),
            "the update server",
        )?;
        procs.0.push(("server".into(), started.child));
        let server_url = started.url;
        let fingerprint = started
            .fingerprint
            .ok_or("the update server printed no certificate fingerprint")?;
        say(&format!(
            "update server listening on {server_url}, certificate {fingerprint}"
        ));
        let pin = nonstop_tls::ServerPin::fingerprint(&fingerprint).map_err(|e| e.to_string())?;
        let server_client = nonstop_tls::http_client(Some(&pin)).map_err(|e| e.to_string())?;
        let server = Api {
            token: login(
                &server_client,
                &server_url,
                &server_dir.join("admin-password"),
            )
            .await?,
            client: server_client,
            base: server_url.clone(),
            pin: Some(pin),
        };
        // The nodes, enrolled, each a process of its own with its own SQLite database.
        let mut nodes = Vec::new();
        for name in names {
            let enrolment = server
                .post(
                    "/api/v1/nodes",
                    json!({"name": name, "group": "hospital-a"}),
                )
                .await?;
            let token = enrolment["enrolment_token"]
                .as_str()
                .ok_or("no enrolment token")?
                .to_owned();
            std::fs::create_dir_all(dir.join(name).join("trusted-keys"))
                .map_err(|e| e.to_string())?;
            std::fs::write(dir.join(name).join("trusted-keys/vendor.pub"), &vendor_pub)
                .map_err(|e| e.to_string())?;
            let mut node = StandaloneNode::start_with(
                exe,
                dir,
                name,
                node_config,
                &[
                    // The nodes serve this machine only: plain HTTP on loopback, for the load.
                    "--no-tls",
                    "--server",
                    &server_url,
                    "--server-fingerprint",
                    &fingerprint,
                    "--enrol-token",
                    &token,
                ],
            )
            .await?;
            procs.0.append(&mut node.procs.0);
            say(&format!("{name} serving on {}, enrolled", node.target.url));
            nodes.push(node.target);
        }
        wait_connected(&server, names.len()).await?;
        Ok(Lab {
            server,
            nodes,
            vendor: key,
            procs,
        })
    }

    /// Publishes a bundle and rolls it out to every node in `waves`; returns the rollout's id.
    pub async fn release(&self, bytes: Vec<u8>, release: &str, waves: &str) -> Result<i64, String> {
        self.server
            .send(reqwest::Method::POST, "/api/v1/releases", None, Some(bytes))
            .await?;
        let rollout = self
            .server
            .post(
                "/api/v1/rollouts",
                json!({"release": release, "targets": "all", "waves": waves}),
            )
            .await?;
        rollout["id"]
            .as_i64()
            .ok_or_else(|| "no rollout id".to_owned())
    }

    /// The server process's id.
    pub fn server_pid(&self) -> u32 {
        self.procs.0.first().map_or(0, |(_, c)| c.id())
    }

    /// Stops every process.
    pub fn stop(self) {
        drop(self.procs);
    }
}

async fn run_in(config: &DemoConfig, t: &Timeline, dir: &Path) -> Result<Report, String> {
    let lab = Lab::start(&config.exe, dir, &NODES, NODE_CONFIG, &|line| t.say(line)).await?;
    t.say("all three nodes connected to the update server");
    let root_keys = key_leak::first_root(&lab, &|line| t.say(line)).await?;
    let (server, key, targets) = (&lab.server, &lab.vendor, lab.nodes.clone());

    let load = nonstop_loadgen::start(&LoadConfig {
        target: Target::Nodes(targets),
        duration: config.duration,
        desks: 6,
        doctors: 3,
        screens: 3,
        trust: None,
    })
    .await?;
    t.say("load generator running: 6 registration desks, 3 doctors, 3 waiting-room screens");
    let sample = |n: u64| sample_fee(&lab.nodes[NODES.len() - 1], n);
    t.say(&format!(
        "at {}'s desk: {}",
        NODES[NODES.len() - 1],
        sample(0).await?
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;

    let plans = [
        (
            "fees",
            "2.0.0",
            "a senior discount: patients 60 and over at half price",
            FEES_2.to_vec(),
            false,
        ),
        (
            "triage",
            "2.0.0",
            "a new queue order",
            TRIAGE_2.to_vec(),
            false,
        ),
        (
            "fees",
            "3.0.0",
            "a broken build: every fee 1 yuan",
            bundle(
                "fees",
                "3.0.0",
                BAD_ANSWERS,
                BAD_ANSWERS_CHECKS,
                "broken build",
                key,
            )?,
            false,
        ),
        (
            "fees",
            "3.1.0",
            "emergency surcharge 10 yuan; wrong on level-4 sessions, which open after it is live",
            bundle(
                "fees",
                "3.1.0",
                FEES_3,
                FEES_3_CHECKS,
                "emergency surcharge 10 yuan",
                key,
            )?,
            true,
        ),
    ];
    let mut updates = Vec::new();
    // The first update's "before" is the quiet traffic since the load started.
    let mut last_end: f64 = 0.0;
    for (component, version, story, bytes, level4_after_live) in plans {
        t.say(&format!("publishing {component} {version}: {story}"));
        let started_at = load.elapsed();
        let id = lab
            .release(bytes, &format!("{component}@{version}"), "1,rest")
            .await?;
        t.say(&format!(
            "rollout {id}: {component} {version} to {} nodes in waves: canary, then the rest",
            NODES.len()
        ));
        let started = Instant::now();
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        let mut opened = false;
        let final_rollout = loop {
            let r = server.get(&format!("/api/v1/rollouts/{id}")).await?;
            for target in r["targets"].as_array().into_iter().flatten() {
                let node = target["node"].as_str().unwrap_or("?").to_owned();
                let state = target["state"].as_str().unwrap_or("?").to_owned();
                if seen.get(&node) != Some(&state) {
                    let detail = describe(&target["detail"]);
                    t.say(&format!(
                        "  {component} {version} on {node} (wave {}): {state}{detail}",
                        target["wave"].as_i64().unwrap_or(0) + 1
                    ));
                    seen.insert(node, state.clone());
                }
                if level4_after_live && !opened && state == "live" {
                    opened = true;
                    t.say("  the hospital opens its level-4 community clinics: new inputs for the fees rule");
                    load.open_sessions(&SessionKind {
                        clinic_type: "general".into(),
                        registration_level: 4,
                    })
                    .await?;
                }
            }
            let state = r["state"].as_str().unwrap_or("");
            if matches!(state, "completed" | "halted" | "aborted" | "rolled-back") {
                break r;
            }
            if started.elapsed() > Duration::from_secs(180) {
                return Err(format!("rollout {id} did not finish within 180 s: {r}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let ended_at = load.elapsed();
        let state = final_rollout["state"].as_str().unwrap_or("").to_owned();
        let reason = final_rollout["reason"].as_str().map(str::to_owned);
        t.say(&format!(
            "rollout {id} {state} after {:.1} s{}",
            ended_at - started_at,
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        let nodes: Vec<NodeOutcome> = final_rollout["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| NodeOutcome {
                node: t["node"].as_str().unwrap_or("?").into(),
                state: t["state"].as_str().unwrap_or("?").into(),
                push_to_live_ms: t["live_ms"].as_u64(),
            })
            .collect();
        let went_live = nodes.iter().any(|n| n.push_to_live_ms.is_some());
        let outcome = if state == "completed" {
            "live"
        } else if nodes.iter().any(|n| n.state == "rolled-back") {
            "rolled_back"
        } else {
            "rejected"
        };
        updates.push((
            UpdateReport {
                component: component.into(),
                version: version.into(),
                story: story.into(),
                outcome: outcome.into(),
                push_to_live_ms: if went_live {
                    nodes.iter().filter_map(|n| n.push_to_live_ms).max()
                } else {
                    None
                },
                rollout_ms: ((ended_at - started_at) * 1000.0) as u64,
                nodes,
                reason,
                before: Window::default(),
                during: Window::default(),
                after: Window::default(),
            },
            (last_end.max(started_at - 5.0), started_at, ended_at),
        ));
        last_end = ended_at;
        if component == "fees" {
            t.say(&format!(
                "at {}'s desk: {}",
                NODES[NODES.len() - 1],
                sample(updates.len() as u64).await?
            ));
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let key_leak = key_leak::leak(&lab, &root_keys, &|line| t.say(line)).await?;
    // The rest of the traffic, at least as long as asked.
    let left = config.duration.as_secs_f64() - load.elapsed();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
    t.say("stopping the load; checking every acknowledged record in the nodes' databases");
    let (load_report, timeline) = load.finish().await?;
    let mut reports = Vec::new();
    for (i, (mut u, (before, start, end))) in updates.iter().cloned().enumerate() {
        let after_end = updates
            .get(i + 1)
            .map_or(end + 5.0, |(_, (_, next, _))| (end + 5.0).min(*next));
        u.before = nonstop_loadgen::window(&timeline, before, start, None);
        u.during = nonstop_loadgen::window(&timeline, start, end, None);
        u.after = nonstop_loadgen::window(&timeline, end, after_end, None);
        reports.push(u);
    }
    let chain = server.get("/api/v1/audit/verify").await?;
    let r = &load_report.records;
    let report = Report {
        requests: load_report.requests,
        failed_requests: load_report.errors,
        refused_requests: load_report.refused,
        records_acknowledged: load_report.acknowledged.0 + load_report.acknowledged.1,
        records_found: r.registrations_found + r.payments_found,
        invoices_paid_twice: r.invoices_paid_twice,
        seconds: load_report.seconds,
        requests_per_second: load_report.requests_per_second,
        p99_ms: load_report.p99_ms,
        updates: reports,
        audit_chain_ok: chain["first_bad"].is_null(),
        key_leak,
        dir: dir.display().to_string(),
    };
    lab.stop();
    Ok(report)
}

/// Registers one 62-year-old walk-in patient at `node` (today's first general session with an
/// on-site slot) and says what the live fees rule charged: half price from 60 under fees 2.0.0,
/// from 65 before. This is how the demo shows a fees update reach the registration desk.
async fn sample_fee(node: &NodeTarget, n: u64) -> Result<String, String> {
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let req = client
            .request(method, format!("{}{path}", node.url))
            .bearer_auth(&node.admin_token);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                Ok(v)
            } else {
                Err(format!("{path}: {status}: {v}"))
            }
        }
    };
    let today = time_today();
    let sessions = call(
        reqwest::Method::GET,
        format!("/api/v1/schedules?date={today}"),
        None,
    )
    .await?;
    let session = sessions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["remaining"][0].as_i64().unwrap_or(0) > 0 && s["clinic_type"] == "general")
        .ok_or("no session with an on-site slot today")?;
    // Born 1964-01-01, in the load generator's default ID region, which its desks never use.
    let (birth_date, id_number) = nonstop_loadgen::identity(5_113_000 + n);
    let patient = call(
        reqwest::Method::POST,
        "/api/v1/patients".into(),
        Some(json!({"name": format!("样例{n}"), "gender": "male", "birth_date": birth_date, "id_number": id_number,
            "phone": "13900001111", "insurance_category": "none", "insurance_number": null})),
    )
    .await?;
    let r = call(
        reqwest::Method::POST,
        "/api/v1/registrations".into(),
        Some(json!({"patient_id": patient["id"], "schedule_id": session["id"], "channel": "on-site"})),
    )
    .await?;
    Ok(format!(
        "a patient born {birth_date} registers at a general clinic of a {} doctor: {:.2} yuan, priced by fees {}",
        session["title"].as_str().unwrap_or("?").to_lowercase(),
        r["fee_fen"].as_i64().unwrap_or(0) as f64 / 100.0,
        r["fee_rule"]
            .as_str()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("?")
    ))
}

/// Today's date on the hospitals' clock (UTC+8, the node's default).
fn time_today() -> String {
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::now_utc()
        .to_offset(offset)
        .date()
        .to_string()
}

/// The interesting part of a node's report, for the timeline.
fn describe(detail: &Value) -> String {
    match detail["step"].as_str() {
        Some("received") => format!(" ({} bytes in {} ms)", detail["bytes"], detail["ms"]),
        Some("testing") => format!(
            " (checks 1 and 2 passed, {} test vectors; shadow traffic next)",
            detail["vectors"]
        ),
        Some("live") => {
            let s = &detail["shadow"];
            if s.is_object() {
                format!(
                    " ({} ms after the push; shadow: {} calls, {} differed, latency ratio {:.2})",
                    detail["ms"],
                    s["calls"],
                    s["differences"],
                    s["latency_ratio"].as_f64().unwrap_or(0.0)
                )
            } else {
                format!(" ({} ms after the push)", detail["ms"])
            }
        }
        Some("healthy") => format!(
            " (watch window closed: {} live calls, {} failed)",
            detail["calls"], detail["failures"]
        ),
        Some("rejected" | "refused" | "rolled-back" | "failed") => {
            format!(": {}", detail["reason"].as_str().unwrap_or(""))
        }
        _ => String::new(),
    }
}

async fn wait_connected(server: &Api, n: usize) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let status = server.get("/api/v1/status").await?;
        let connected = status["nodes"].as_array().map_or(0, |nodes| {
            nodes.iter().filter(|n| n["connected"] == true).count()
        });
        if connected >= n {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "only {connected} of {n} nodes connected within 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n{} requests in {:.1} s ({:.0}/s, p99 {:.1} ms): {} failed, {} refused\n",
        report.requests,
        report.seconds,
        report.requests_per_second,
        report.p99_ms,
        report.failed_requests,
        report.refused_requests
    ));
    out.push_str(&format!(
        "records: {} acknowledged, {} found in the nodes' databases, {} invoices paid twice\n",
        report.records_acknowledged, report.records_found, report.invoices_paid_twice
    ));
    out.push_str(&format!(
        "leaked key {}: revoked by root of trust {} on {} nodes; its bundle refused by the \
         update server and by a node\n",
        report.key_leak.revoked_key, report.key_leak.root_version, report.key_leak.nodes_on_root
    ));
    out.push_str(&format!(
        "audit chain: {}\n\n",
        if report.audit_chain_ok {
            "verifies"
        } else {
            "BROKEN"
        }
    ));
    out.push_str(&format!(
        "{:<8} {:<7} {:<12} {:>13} {:>10}   {:>22} {:>22} {:>22}\n",
        "update",
        "version",
        "outcome",
        "push-to-live",
        "rollout",
        "before req/s p50 p99",
        "during",
        "after"
    ));
    for u in &report.updates {
        let w = |w: &Window| {
            format!(
                "{:>6.0} {:>5.1} {:>6.1}",
                w.requests_per_second, w.p50_ms, w.p99_ms
            )
        };
        out.push_str(&format!(
            "{:<8} {:<7} {:<12} {:>13} {:>8.1} s   {:>22} {:>22} {:>22}\n",
            u.component,
            u.version,
            u.outcome,
            u.push_to_live_ms
                .map_or("-".into(), |ms| format!("{ms} ms")),
            u.rollout_ms as f64 / 1000.0,
            w(&u.before),
            w(&u.during),
            w(&u.after)
        ));
        for n in &u.nodes {
            out.push_str(&format!(
                "           {:<8} {:<12} {}\n",
                n.node,
                n.state,
                n.push_to_live_ms
                    .map_or(String::new(), |ms| format!("live {ms} ms after the push"))
            ));
        }
    }
    out
}
