//! Updates of the node program itself while it serves (issue 10), with real processes on
//! loopback: `nonstop node --supervise`, program bundles pushed to the node's API, a load
//! generator counting every failed request and checking every acknowledged record.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nonstop_loadgen::{LoadConfig, NodeTarget, Target};
use serde_json::Value;

const NONSTOP: &str = env!("CARGO_BIN_EXE_nonstop");

/// A supervised node and what it said.
struct Supervised {
    child: Child,
    base: String,
    data: PathBuf,
    /// Everything it wrote to stderr (its log), for waiting on a step.
    log: Arc<Mutex<Vec<String>>>,
}

impl Supervised {
    fn start(data: &Path, config: &str) -> Supervised {
        Supervised::start_with(data, config, &[])
    }

    fn start_with(data: &Path, config: &str, extra: &[&str]) -> Supervised {
        Supervised::launch(data, config, &[&["--no-tls"], extra].concat())
    }

    /// Serving HTTPS, with the certificate it makes itself.
    fn start_https(data: &Path, config: &str) -> Supervised {
        Supervised::launch(data, config, &[])
    }

    fn launch(data: &Path, config: &str, extra: &[&str]) -> Supervised {
        std::fs::create_dir_all(data.join("trusted-keys")).unwrap();
        let file = data.with_extension("toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(NONSTOP)
            .args(["node", "--supervise", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(&file)
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = log.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut said = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the node exited: {said:?}"))
                .unwrap();
            if let Some(url) = line.strip_prefix("nonstop node listening on ") {
                break url.trim().to_owned();
            }
            said.push(line);
        };
        assert!(
            said.iter()
                .any(|l| l.starts_with("supervising the node program on")),
            "{said:?}"
        );
        std::thread::spawn(move || lines.for_each(drop));
        Supervised {
            child,
            base,
            data: data.to_owned(),
            log,
        }
    }

    /// Waits until a log line contains `text`.
    fn wait_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line says {text:?} within {within:?}; the log ends: {:#?}",
            self.log
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
        );
    }

    /// SIGKILL to the supervisor: its generations die with it (their parent-death signal).
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a SIGTERM stop is a clean exit: {status}");
    }
}

impl Drop for Supervised {
    /// A test that fails leaves no node behind: SIGKILL to the supervisor (a no-op once it has
    /// exited), and its generations die with it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A publisher key the node trusts.
fn publisher(dir: &Path, data: &Path) -> PathBuf {
    super::ok(dir, &["keygen", "--out", "vendor"]);
    std::fs::create_dir_all(data.join("trusted-keys")).unwrap();
    std::fs::copy(
        dir.join("vendor.pub"),
        data.join("trusted-keys").join("vendor.pub"),
    )
    .unwrap();
    dir.join("vendor.key")
}

/// Signs `program` as the node program `version`, through the CLI.
fn program_bundle(dir: &Path, program: &Path, version: &str, key: &Path) -> Vec<u8> {
    let out = dir.join(format!("node-{version}.nsb"));
    super::ok(
        dir,
        &[
            "bundle",
            "create",
            "--component",
            "node",
            "--kind",
            "node-binary",
            "--version",
            version,
            "--payload",
            program.to_str().unwrap(),
            "--file",
            "nonstop",
            "--key",
            key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

/// An executable script in `dir`.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn admin_token(client: &reqwest::Client, node: &Supervised) -> String {
    let password = std::fs::read_to_string(node.data.join("admin-password")).unwrap();
    nonstop_loadgen::login_as(client, &node.base, "admin", password.trim())
        .await
        .unwrap()
}

/// Pushes a bundle to the node's API and returns its report once it is live or has ended.
async fn push(client: &reqwest::Client, node: &Supervised, token: &str, bundle: Vec<u8>) -> Value {
    let response = client
        .post(format!("{}/api/v1/updates?wait=live", node.base))
        .bearer_auth(token)
        .body(bundle)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let report: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {report}");
    report
}

/// The node's JSON answer to `GET /api/v1/{path}`.
async fn read(client: &reqwest::Client, node: &Supervised, path: &str) -> Value {
    client
        .get(format!("{}/api/v1/{path}", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn program(client: &reqwest::Client, node: &Supervised) -> Value {
    read(client, node, "program").await
}

/// Waits until the program answering is `version`.
async fn wait_program(client: &reqwest::Client, node: &Supervised, version: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = program(client, node).await;
        if p["version"] == version {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "program {version} never answered; {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn store_log(data: &Path) -> Vec<nonstop_store::LogEntry> {
    let name = nonstop_bundle::ComponentName::new("node").unwrap();
    nonstop_store::read_log(&data.join("store"), &name).unwrap()
}

fn program_state(data: &Path) -> Option<nonstop_store::ComponentState> {
    nonstop_store::read_status(&data.join("store"))
        .unwrap()
        .into_iter()
        .find(|c| c.component.as_str() == "node")
}

/// A client that opens a new connection for every health check and counts failures.
fn poll_health(
    base: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ok = AtomicUsize::new(0);
    tokio::spawn(async move {
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match client.get(format!("{base}/health")).send().await {
                Ok(r) if r.status().is_success() => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => failures.push(r.status().to_string()),
                Err(e) => failures.push(format!("{e:?}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok.load(Ordering::Relaxed), failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_bundle_takes_over_under_load_without_a_failed_request_or_a_lost_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = publisher(dir.path(), &data);
    let node = Supervised::start(&data, "[checks]\nwatch_secs = 3\n");
    let client = reqwest::Client::new();
    let token = admin_token(&client, &node).await;
    let first = program(&client, &node).await;
    assert_eq!(first["supervised"], true);

    let load = nonstop_loadgen::start(&LoadConfig {
        target: Target::Nodes(vec![NodeTarget {
            url: node.base.clone(),
            admin_token: token.clone(),
        }]),
        duration: Duration::ZERO,
        desks: 4,
        doctors: 1,
        screens: 1,
        trust: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Two upgrades in a row: the installed program hands over to 1.0.0, which then takes its
    // own update to 2.0.0 (same build, new versions: what changes is the process).
    let exe = Path::new(NONSTOP);
    for version in ["1.0.0", "2.0.0"] {
        let before = program(&client, &node).await;
        let pushed = Instant::now();
        let report = push(
            &client,
            &node,
            &token,
            program_bundle(dir.path(), exe, version, &key),
        )
        .await;
        assert_eq!(report["outcome"], "live", "{report}");
        assert_eq!(report["watch_open"], true, "{report}");
        let now = wait_program(&client, &node, version).await;
        assert_ne!(now["pid"], before["pid"], "a new process answers");
        eprintln!("program {version}: push to serving {:?}", pushed.elapsed());
        // Its watch window runs in the new program, which resumed it from the store.
        node.wait_log(
            &format!(
                "resuming the watch window a restart cut short component=node version={version}"
            ),
            Duration::from_secs(30),
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (report, _) = load.finish().await.unwrap();
    if report.errors > 0 {
        for line in node.log.lock().unwrap().iter() {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("{line}");
            }
        }
    }
    assert_eq!(report.errors, 0, "no request failed: {report:?}");
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(
        (
            report.records.registrations_found,
            report.records.payments_found
        ),
        report.acknowledged,
        "every acknowledged record is kept: {report:?}"
    );
    assert_eq!(report.records.invoices_paid_twice, 0);

    // The store: 2.0.0 official, 1.0.0 kept as the standby, both watch windows closed.
    let state = program_state(&data).unwrap();
    assert_eq!(state.live.unwrap().version.to_string(), "2.0.0");
    assert_eq!(state.standby.unwrap().version.to_string(), "1.0.0");
    assert!(state.candidate.is_none());
    assert!(!data.join("store/watches/node.json").exists());
    node.stop();
}

/// A node serving HTTPS takes a new program as a plain one does. The candidate answers on a
/// private plain-HTTP socket, so what it says of its listener (`GET /certificate`) differs from
/// the live program's; the checks leave that answer alone (its OpenAPI mark), and compare the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_https_takes_a_new_program() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = publisher(dir.path(), &data);
    let node = Supervised::start_https(&data, "[checks]\nwatch_secs = 1\n");
    assert!(node.base.starts_with("https://"), "{}", node.base);
    // The test trusts whatever certificate the node made: pinning it is not what is tested here.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let token = admin_token(&client, &node).await;
    let before = program(&client, &node).await;
    let bundle = program_bundle(dir.path(), Path::new(NONSTOP), "1.0.0", &key);
    let report = push(&client, &node, &token, bundle).await;
    assert_eq!(report["outcome"], "live", "{report}");
    let now = wait_program(&client, &node, "1.0.0").await;
    assert_ne!(now["pid"], before["pid"], "a new process answers");
    let certificate = read(&client, &node, "certificate").await;
    assert_eq!(certificate["tls"], true, "{certificate}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_that_fail_to_start_break_the_contract_or_crash_after_taking_over_are_refused_or_rolled_back()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = publisher(dir.path(), &data);
    let node = Supervised::start(&data, "[checks]\nwatch_secs = 30\n");
    let client = reqwest::Client::new();
    let token = admin_token(&client, &node).await;
    let installed = program(&client, &node).await;
    let stop = Arc::new(AtomicBool::new(false));
    let health = poll_health(node.base.clone(), stop.clone());

    // A program that cannot start.
    let broken = script(
        dir.path(),
        "broken",
        "#!/bin/sh\necho 'error while loading shared libraries: libhis.so.3' >&2\nexit 127\n",
    );
    let report = push(
        &client,
        &node,
        &token,
        program_bundle(dir.path(), &broken, "1.0.0", &key),
    )
    .await;
    assert_eq!(report["outcome"], "rejected", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("exited (exit status: 127)"), "{reason}");
    assert!(reason.contains("libhis.so.3"), "{reason}");

    // A program that starts and answers its health check, but no longer documents the API.
    let contract = script(
        dir.path(),
        "contract",
        r#"#!/usr/bin/env python3
import http.server, json, os, socket
listener = socket.socket(fileno=5)
control = os.fdopen(3, "w")
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else json.dumps({"openapi": "3.1.0", "paths": {}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(listener.getsockname(), Answer, bind_and_activate=False)
server.socket = listener
control.write(json.dumps({"serving": {"addr": "%s:%d" % listener.getsockname()}}) + "\n")
control.flush()
server.serve_forever()
"#,
    );
    let report = push(
        &client,
        &node,
        &token,
        program_bundle(dir.path(), &contract, "1.0.1", &key),
    )
    .await;
    assert_eq!(report["outcome"], "rejected", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("contract: the candidate no longer documents"),
        "{reason}"
    );
    assert!(reason.contains("POST /api/v1/registrations"), "{reason}");

    // The live program never noticed: the same process answered every check.
    assert_eq!(program(&client, &node).await["pid"], installed["pid"]);
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = health.await.unwrap();
    assert!(ok > 0);
    assert!(failures.is_empty(), "{failures:?}");

    // A program that passes its checks, takes over, and crashes in its watch window: the
    // supervisor puts the standby back (here the installed program) and says why.
    let watch = data.join("store/watches/node.json");
    let crashing = script(
        dir.path(),
        "crashing",
        &format!(
            "#!/bin/sh\n( while [ ! -e '{}' ]; do sleep 0.1; done; sleep 2; kill -9 $$ ) &\nexec '{NONSTOP}' \"$@\"\n",
            watch.display()
        ),
    );
    let report = push(
        &client,
        &node,
        &token,
        program_bundle(dir.path(), &crashing, "1.0.2", &key),
    )
    .await;
    assert_eq!(report["outcome"], "live", "{report}");
    node.wait_log(
        "rolled the program back in the store",
        Duration::from_secs(60),
    );
    let back = wait_program(&client, &node, installed["version"].as_str().unwrap()).await;
    assert_ne!(
        back["pid"], installed["pid"],
        "a new process of the installed program"
    );

    let log = store_log(&data);
    let rejected: Vec<_> = log
        .iter()
        .filter(|e| e.to == nonstop_store::Role::Rejected)
        .collect();
    assert_eq!(rejected.len(), 3, "{log:?}");
    assert!(rejected[0].reason.contains("libhis.so.3"));
    assert!(rejected[1].reason.contains("contract"));
    assert_eq!(rejected[2].version.to_string(), "1.0.2");
    assert!(
        rejected[2].reason.contains("signal: 9")
            && rejected[2].reason.contains("inside its watch window"),
        "{}",
        rejected[2].reason
    );
    assert!(
        program_state(&data).unwrap().live.is_none(),
        "the installed program runs"
    );
    node.stop();
}

/// The generation processes of the node whose data directory is `data`.
fn generations(data: &Path) -> Vec<u32> {
    let needle = data.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "--generation") && args.iter().any(|a| a == needle) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_at_any_moment_of_a_program_upgrade_starts_again_on_exactly_one_program() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = publisher(dir.path(), &data);
    let config = "[checks]\nwatch_secs = 4\n";
    let exe = Path::new(NONSTOP);
    let client = reqwest::Client::new();
    // Each round kills the whole node (SIGKILL to the supervisor; its generations die with it)
    // at another step of an upgrade, at a moment that varies from run to run.
    let moments = [
        ("stage", "program candidate staged"),
        ("test", "the candidate serves nobody"),
        ("handover", "the new program accepts on the shared socket"),
        (
            "watch",
            "resuming the watch window a restart cut short component=node",
        ),
    ];
    let mut expected_live: Option<String> = None;
    for (round, (step, line)) in moments.iter().enumerate() {
        let node = Supervised::start(&data, config);
        let token = admin_token(&client, &node).await;
        let version = format!("{}.0.0", round + 1);
        let bundle = program_bundle(dir.path(), exe, &version, &key);
        let pushing = {
            let (client, base, token) = (client.clone(), node.base.clone(), token.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{base}/api/v1/updates?wait=live"))
                    .bearer_auth(token)
                    .body(bundle)
                    .send()
                    .await
            })
        };
        node.wait_log(line, Duration::from_secs(60));
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 300;
        tokio::time::sleep(Duration::from_millis(jitter.into())).await;
        node.kill();
        let _ = pushing.await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !generations(&data).is_empty() {
            assert!(
                Instant::now() < deadline,
                "a generation outlived its supervisor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // It starts again, serves, and runs exactly one program: the old one or the new one.
        let node = Supervised::start(&data, config);
        let answering = program(&client, &node).await;
        let state = program_state(&data).unwrap();
        assert!(state.candidate.is_none(), "after {step}: {state:?}");
        let live = state.live.as_ref().map(|e| e.version.to_string());
        match &live {
            Some(v) => assert_eq!(answering["version"], v.as_str(), "after {step}"),
            None => assert_eq!(answering["version"], env!("CARGO_PKG_VERSION")),
        }
        assert!(
            live == expected_live || live.as_deref() == Some(version.as_str()),
            "after a kill at {step}: {live:?} is neither the old {expected_live:?} nor the new {version}"
        );
        eprintln!("killed at {step} (+{jitter} ms): {live:?} serves");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(generations(&data).len(), 1, "after {step}");
        // A restart in the watch window resumed it; let it close before the next round.
        if data.join("store/watches/node.json").exists() {
            node.wait_log(
                "update ended component=Some(\"node\")",
                Duration::from_secs(30),
            );
        }
        expected_live = live;
        node.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_release_rolls_out_through_the_update_server_and_is_healthy_once_the_new_program_says_so()
 {
    let fleet = super::fleet::Fleet::new().await;
    let token = fleet.add("ward-1").await;
    let data = fleet.node_dir("ward-1");
    std::fs::create_dir_all(data.join("trusted-keys")).unwrap();
    std::fs::write(
        data.join("trusted-keys/vendor.pub"),
        fleet.vendor.public().to_file_text(),
    )
    .unwrap();
    let node = Supervised::start_with(
        &data,
        "[checks]\nwatch_secs = 3\n[link]\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n",
        &["--server", &fleet.base, "--enrol-token", &token],
    );
    fleet.wait_connected(1).await;
    let client = reqwest::Client::new();
    let before = program(&client, &node).await;

    let draft = nonstop_bundle::Draft::new(
        "node",
        nonstop_bundle::ComponentKind::NodeBinary,
        "1.0.0".parse().unwrap(),
        "nonstop",
    )
    .unwrap();
    let bytes =
        nonstop_bundle::create(&draft, &std::fs::read(NONSTOP).unwrap(), &fleet.vendor).unwrap();
    let (status, release) = fleet.publish(bytes).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{release}");
    let id = fleet
        .rollout(
            "node@1.0.0",
            serde_json::json!({"nodes": ["ward-1"]}),
            "rest",
        )
        .await;
    // Live when the old program has handed over; healthy only when the new one, which resumed
    // the watch window, says it closed.
    let r = fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    assert_eq!(super::fleet::state_of(&r, "ward-1"), "healthy", "{r}");
    let now = wait_program(&client, &node, "1.0.0").await;
    assert_ne!(now["pid"], before["pid"]);
    node.wait_log(
        "resuming the watch window a restart cut short component=node version=1.0.0",
        Duration::from_secs(10),
    );
    // The server hears the versions from the new program's own link.
    let (_, status) = fleet.call("GET", "/api/v1/status", None).await;
    let components = &status["nodes"][0]["components"];
    assert!(components.to_string().contains("1.0.0"), "{components}");
    node.stop();
}
