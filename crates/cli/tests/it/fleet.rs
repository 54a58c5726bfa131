//! The update server and its fleet end to end: a real server and real nodes on loopback ports,
//! enrolled with one-time tokens, each node's link a WebSocket, bundles fetched over HTTP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nonstop_bundle::{CandidateChecks, ComponentKind, Draft, SecretKey};
use nonstop_node::{NodeConfig, RunningNode};
use nonstop_server::{RunningServer, ServerConfig};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

pub(crate) fn modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules")
}

pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: RunningServer,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) client: Client,
    pub(crate) vendor: SecretKey,
    /// The server's certificate, pinned by this client and the nodes, when it serves HTTPS.
    pub(crate) pin: Option<nonstop_tls::ServerPin>,
}

impl Fleet {
    /// A server on plain HTTP (loopback).
    pub(crate) async fn new() -> Fleet {
        Fleet::start(false).await
    }

    /// A server with TLS (its generated certificate, pinned) or without.
    pub(crate) async fn start(tls: bool) -> Fleet {
        Fleet::start_with(tls, |_| {}).await
    }

    /// [`Fleet::start`], with `tune` changing the server's configuration first.
    pub(crate) async fn start_with(tls: bool, tune: impl FnOnce(&mut ServerConfig)) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let vendor = SecretKey::generate();
        let keys = dir.path().join("server/trusted-keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("vendor.pub"), vendor.public().to_file_text()).unwrap();
        let mut config = ServerConfig {
            data_dir: dir.path().join("server"),
            listen: "127.0.0.1:0".into(),
            dispatch_ms: 200,
            heartbeat_secs: 1,
            tls: if tls {
                nonstop_tls::TlsConfig::default()
            } else {
                nonstop_tls::TlsConfig::off()
            },
            ..ServerConfig::default()
        };
        tune(&mut config);
        let server = nonstop_server::start(config).await.unwrap();
        let base = server.url.clone();
        let pin = server
            .tls
            .as_ref()
            .map(|t| nonstop_tls::ServerPin::fingerprint(&t.fingerprint).unwrap());
        let client = nonstop_tls::http_client(pin.as_ref()).unwrap();
        let password =
            std::fs::read_to_string(server.admin_password_file.as_ref().unwrap()).unwrap();
        let v: Value = client
            .post(format!("{base}/api/v1/sessions"))
            .json(&json!({"username": "admin", "password": password.trim()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Fleet {
            token: v["token"].as_str().unwrap().into(),
            dir,
            server,
            base,
            client,
            vendor,
            pin,
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn publish(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}/api/v1/releases", self.base))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Adds a node on the server and returns its enrolment token.
    pub(crate) async fn add(&self, name: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/nodes",
                Some(json!({"name": name, "group": "ward"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["enrolment_token"].as_str().unwrap().to_owned()
    }

    pub(crate) fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a node process-equivalent (its own data directory, database and port), enrolled.
    pub(crate) async fn start_node(&self, name: &str, token: Option<&str>) -> RunningNode {
        self.start_node_with(name, token, |_| {}).await
    }

    /// [`Fleet::start_node`], with `tune` changing the node's configuration first.
    pub(crate) async fn start_node_with(
        &self,
        name: &str,
        token: Option<&str>,
        tune: impl FnOnce(&mut NodeConfig),
    ) -> RunningNode {
        let data = self.node_dir(name);
        std::fs::create_dir_all(data.join("trusted-keys")).unwrap();
        std::fs::write(
            data.join("trusted-keys/vendor.pub"),
            self.vendor.public().to_file_text(),
        )
        .unwrap();
        if let Some(token) = token {
            nonstop_node::link::enrol(&self.base, &[], token, self.pin.clone(), &data)
                .await
                .unwrap();
        }
        let mut config = quick_node(data);
        tune(&mut config);
        nonstop_node::start(config).await.unwrap()
    }

    pub(crate) fn bundle(
        &self,
        component: &str,
        version: &str,
        module: &str,
        checks_of: &str,
    ) -> Vec<u8> {
        let mut draft = Draft::new(
            component,
            ComponentKind::WasmComponent,
            version.parse().unwrap(),
            &format!("{component}.wasm"),
        )
        .unwrap();
        draft.checks = serde_json::from_str::<CandidateChecks>(
            &std::fs::read_to_string(modules().join(checks_of).join("checks.json")).unwrap(),
        )
        .unwrap();
        let payload = std::fs::read(modules().join("dist").join(format!("{module}.wasm"))).unwrap();
        nonstop_bundle::create(&draft, &payload, &self.vendor).unwrap()
    }

    pub(crate) async fn rollout(&self, release: &str, targets: Value, waves: &str) -> i64 {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/rollouts",
                Some(json!({"release": release, "targets": targets, "waves": waves})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_i64().unwrap()
    }

    /// Polls a rollout until `done` holds, returning it; fails after 60 s.
    pub(crate) async fn wait_rollout(&self, id: i64, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (_, r) = self
                .call("GET", &format!("/api/v1/rollouts/{id}"), None)
                .await;
            if done(&r) {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "rollout never got there: {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn wait_connected(&self, n: usize) {
        let started = Instant::now();
        loop {
            let (_, s) = self.call("GET", "/api/v1/status", None).await;
            let connected = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["connected"] == true)
                .count();
            if connected >= n {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An empty hospital node for these tests: idle, so check 3 replays the vectors after a second,
/// and the watch window closes after two; it reconnects within half a second.
pub fn quick_node(data: PathBuf) -> NodeConfig {
    let mut config = NodeConfig {
        data_dir: data,
        listen: "127.0.0.1:0".into(),
        seed_demo: false,
        tls: nonstop_tls::TlsConfig::off(),
        ..NodeConfig::default()
    };
    config.checks.shadow_idle_secs = 1;
    config.checks.watch_secs = 2;
    config.link.backoff_initial_ms = 50;
    config.link.backoff_max_ms = 500;
    config
}

pub(crate) fn state_of<'a>(rollout: &'a Value, node: &str) -> &'a str {
    rollout["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["node"] == node)
        .unwrap()["state"]
        .as_str()
        .unwrap()
}

pub(crate) fn live_version(node: &RunningNode, component: &str) -> String {
    node.hospital
        .live_rules()
        .into_iter()
        .find(|(c, _, _)| c == component)
        .unwrap()
        .1
}

fn store_versions(data: &Path, component: &str) -> Vec<String> {
    let dir = data
        .join("store/components")
        .join(component)
        .join("versions");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_goes_live_on_every_node_wave_by_wave_and_an_offline_node_catches_up() {
    let fleet = Fleet::new().await;
    let tokens = [
        fleet.add("a").await,
        fleet.add("b").await,
        fleet.add("c").await,
    ];
    let a = fleet.start_node("a", Some(&tokens[0])).await;
    let b = fleet.start_node("b", Some(&tokens[1])).await;
    // Node c is enrolled on the server but offline while the rollout starts.
    fleet.wait_connected(2).await;
    let (s, release) = fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{release}");
    let id = fleet
        .rollout("fees@2.0.0", json!({"nodes": ["a", "b", "c"]}), "1,rest")
        .await;
    // The canary goes first; the others are not sent anything until it is healthy.
    let r = fleet.wait_rollout(id, |r| state_of(r, "a") == "live").await;
    assert_eq!(state_of(&r, "b"), "pending", "{r}");
    let r = fleet
        .wait_rollout(id, |r| state_of(r, "b") == "healthy")
        .await;
    assert_eq!(state_of(&r, "a"), "healthy");
    assert_eq!(r["state"], "running", "c has not taken it yet: {r}");
    assert_eq!(live_version(&a, "fees"), "2.0.0");
    assert_eq!(live_version(&b, "fees"), "2.0.0");
    // Node c comes online and catches up.
    let c = fleet.start_node("c", Some(&tokens[2])).await;
    let r = fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    assert!(r["targets"][0]["live_ms"].as_i64().is_some(), "{r}");
    assert_eq!(live_version(&c, "fees"), "2.0.0");
    // The server's status shows each node's versions as it reported them.
    let (_, status) = fleet.call("GET", "/api/v1/status", None).await;
    let fees_of = |node: &str| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == "fees")
            .unwrap()
            .clone()
    };
    let started = Instant::now();
    while fees_of("c")["live"]["version"] != "2.0.0" && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, status) = fleet.call("GET", "/api/v1/status", None).await;
    let c_fees = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "c")
        .unwrap()["components"]
        .clone();
    assert!(
        c_fees.to_string().contains("\"standby\":{\"digest\""),
        "{c_fees}"
    );
    // And the audit chain holds every step and verifies.
    let (_, check) = fleet.call("GET", "/api/v1/audit/verify", None).await;
    assert!(check["first_bad"].is_null(), "{check}");
    let (_, audit) = fleet
        .call("GET", "/api/v1/audit?contains=node:c", None)
        .await;
    let steps: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "node.step")
        .map(|e| {
            serde_json::from_str::<Value>(e["detail"].as_str().unwrap()).unwrap()["report"]["step"]
                .as_str()
                .unwrap()
                .to_owned()
                .leak() as &str
        })
        .collect();
    assert_eq!(steps, ["received", "staged", "testing", "live", "healthy"]);
    for n in [a, b, c] {
        n.stop().await;
    }
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_rejects_the_release_halts_the_rollout_before_any_other_node_receives_it() {
    let fleet = Fleet::new().await;
    let tokens = [fleet.add("a").await, fleet.add("b").await];
    let a = fleet.start_node("a", Some(&tokens[0])).await;
    let b = fleet.start_node("b", Some(&tokens[1])).await;
    fleet.wait_connected(2).await;
    // Every fee 1 yuan: version 1's test vectors refuse it.
    let (s, _) = fleet
        .publish(fleet.bundle("fees", "2.0.0", "bad-answers", "bad-answers"))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = fleet.rollout("fees@2.0.0", json!("all"), "1,rest").await;
    let r = fleet.wait_rollout(id, |r| r["state"] == "halted").await;
    assert_eq!(state_of(&r, "a"), "rejected", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("node a: rejected: check 2"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, r) = fleet
        .call("GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(state_of(&r, "b"), "pending", "{r}");
    assert_eq!(store_versions(&fleet.node_dir("b"), "fees"), ["1.0.0"]);
    assert_eq!(live_version(&a, "fees"), "1.0.0");
    a.stop().await;
    b.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_signed_by_an_unknown_key_is_refused_by_the_server_and_by_the_node() {
    let fleet = Fleet::new().await;
    let stranger = SecretKey::generate();
    let mut draft = Draft::new(
        "fees",
        ComponentKind::WasmComponent,
        "9.0.0".parse().unwrap(),
        "fees.wasm",
    )
    .unwrap();
    draft.checks = serde_json::from_str(
        &std::fs::read_to_string(modules().join("fees-v2/checks.json")).unwrap(),
    )
    .unwrap();
    let bytes = nonstop_bundle::create(
        &draft,
        &std::fs::read(modules().join("dist/fees-v2.wasm")).unwrap(),
        &stranger,
    )
    .unwrap();
    let (s, v) = fleet.publish(bytes.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not trusted")
            || v["message"].as_str().unwrap().contains("unknown"),
        "{v}"
    );
    // A tampered bundle: one byte of the payload changed.
    let mut tampered = fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2");
    let n = tampered.len();
    tampered[n - 10] ^= 1;
    let (s, v) = fleet.publish(tampered).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A version that does not move forward.
    let (s, _) = fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Tampered after it was published: refused for what it is, and told nothing of what is
    // published.
    let mut again = fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2");
    let n = again.len();
    again[n - 10] ^= 1;
    let (s, v) = fleet.publish(again).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        !v["message"].as_str().unwrap().contains("published already"),
        "{v}"
    );
    let (s, v) = fleet
        .publish(fleet.bundle("fees", "1.5.0", "fees-v2", "fees-v2"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1.5.0"), "{v}");
    // Injected straight into a node, the stranger's bundle is refused there too.
    let node = fleet.start_node("solo", None).await;
    let password = std::fs::read_to_string(fleet.node_dir("solo").join("admin-password")).unwrap();
    let node_base = format!("http://{}", node.addr);
    let token = nonstop_loadgen::login_as(&fleet.client, &node_base, "admin", password.trim())
        .await
        .unwrap();
    let report: Value = fleet
        .client
        .post(format!("{node_base}/api/v1/updates"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["outcome"], "refused", "{report}");
    assert_eq!(live_version(&node, "fees"), "1.0.0");
    node.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_roll_back_and_abort_rollouts() {
    let fleet = Fleet::new().await;
    let tokens = [fleet.add("a").await, fleet.add("b").await];
    let a = fleet.start_node("a", Some(&tokens[0])).await;
    let b = fleet.start_node("b", Some(&tokens[1])).await;
    fleet.wait_connected(2).await;
    fleet
        .publish(fleet.bundle("triage", "2.0.0", "triage-v2", "triage-v2"))
        .await;
    let id = fleet
        .rollout("triage@2.0.0", json!({"group": "ward"}), "1,rest")
        .await;
    let (s, v) = fleet
        .call(
            "POST",
            &format!("/api/v1/rollouts/{id}/pause"),
            Some(json!({"reason": "lunch"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "paused");
    // Paused: the canary may finish what it was sent, but the next wave never starts.
    fleet
        .wait_rollout(id, |r| {
            state_of(r, "a") == "healthy" || state_of(r, "a") == "pending"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, r) = fleet
        .call("GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(state_of(&r, "b"), "pending", "{r}");
    let (s, _) = fleet
        .call("POST", &format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    assert_eq!(live_version(&b, "triage"), "2.0.0");
    // A resumed, completed rollout cannot be paused; it can be rolled back.
    let (s, _) = fleet
        .call("POST", &format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = fleet
        .call(
            "POST",
            &format!("/api/v1/rollouts/{id}/rollback"),
            Some(json!({"reason": "queue order complaints"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = fleet
        .wait_rollout(id, |r| r["state"] == "rolled-back")
        .await;
    assert_eq!(state_of(&r, "a"), "rolled-back", "{r}");
    for node in [&a, &b] {
        assert_eq!(live_version(node, "triage"), "1.0.0");
    }
    // Each node's own store records why.
    let log = nonstop_store::read_log(
        &fleet.node_dir("a").join("store"),
        &nonstop_bundle::ComponentName::new("triage").unwrap(),
    )
    .unwrap();
    assert!(
        log.iter()
            .any(|e| format!("{e:?}").contains("queue order complaints")),
        "{log:?}"
    );
    // Aborting: a new rollout stops before its next wave; the nodes it skipped never get it.
    fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    let id = fleet
        .rollout("fees@2.0.0", json!({"nodes": ["a", "b"]}), "1,rest")
        .await;
    let (s, v) = fleet
        .call(
            "POST",
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "wrong day"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "aborted");
    assert_eq!(v["reason"], "wrong day");
    assert_eq!(state_of(&v, "b"), "skipped", "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, r) = fleet
        .call("GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(state_of(&r, "b"), "skipped", "{r}");
    assert_eq!(live_version(&b, "fees"), "1.0.0");
    a.stop().await;
    b.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_audit_entry_breaks_the_chain_at_that_entry() {
    let fleet = Fleet::new().await;
    fleet.add("a").await;
    fleet.add("b").await;
    fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    let (_, check) = fleet.call("GET", "/api/v1/audit/verify", None).await;
    assert!(check["first_bad"].is_null(), "{check}");
    let entries = check["entries"].as_i64().unwrap();
    assert!(entries >= 4, "{check}");
    let db = rusqlite::Connection::open(fleet.dir.path().join("server/server.db")).unwrap();
    db.execute(
        "UPDATE audit SET detail = replace(detail, 'ward', 'icu') WHERE action = 'node.added' AND subject = 'node b'",
        [],
    )
    .unwrap();
    let edited: i64 = db
        .query_row("SELECT seq FROM audit WHERE subject = 'node b'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let (_, check) = fleet.call("GET", "/api/v1/audit/verify", None).await;
    assert_eq!(check["first_bad"], edited, "{check}");
    assert!(
        check["problem"].as_str().unwrap().contains("edited"),
        "{check}"
    );
    // Recomputing that entry's hash moves the break to the next entry, which names the old one.
    db.execute("UPDATE audit SET hash = 'forged' WHERE seq = ?1", [edited])
        .unwrap();
    let (_, check) = fleet.call("GET", "/api/v1/audit/verify", None).await;
    assert_eq!(check["first_bad"], edited, "{check}");
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_each_operator_may_do() {
    let fleet = Fleet::new().await;
    let (s, _) = fleet
        .call(
            "POST",
            "/api/v1/operators",
            Some(json!({"username": "ann", "role": "auditor", "password": "auditor-password-1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let v: Value = fleet
        .client
        .post(format!("{}/api/v1/sessions", fleet.base))
        .json(&json!({"username": "ann", "password": "auditor-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auditor = v["token"].as_str().unwrap();
    let publish = fleet
        .client
        .post(format!("{}/api/v1/releases", fleet.base))
        .bearer_auth(auditor)
        .body(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), StatusCode::FORBIDDEN);
    let audit = fleet
        .client
        .get(format!("{}/api/v1/audit/verify", fleet.base))
        .bearer_auth(auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), StatusCode::OK);
    let anonymous = fleet
        .client
        .get(format!("{}/api/v1/status", fleet.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // An enrolment token works once.
    let token = fleet.add("a").await;
    let enrol = |t: String| {
        let client = fleet.client.clone();
        let base = fleet.base.clone();
        async move {
            client
                .post(format!("{base}/api/v1/enrolments"))
                .json(&json!({"token": t}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(enrol(token.clone()).await, StatusCode::OK);
    assert_eq!(enrol(token).await, StatusCode::UNAUTHORIZED);
    let metrics = fleet
        .client
        .get(format!("{}/metrics", fleet.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nonstop_server_http_requests_total"),
        "{metrics}"
    );
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_half_way_resumes_and_a_corrupt_one_is_fetched_again() {
    let fleet = Fleet::new().await;
    let tokens = [fleet.add("a").await, fleet.add("b").await];
    let bytes = fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2");
    let digest = nonstop_bundle::Digest::of(&bytes)
        .to_string()
        .replace(':', "-");
    // Node a was cut off after the first half of the bundle; node b's half is garbage.
    for (name, half) in [
        ("a", bytes[..bytes.len() / 2].to_vec()),
        ("b", vec![0xAB; bytes.len() / 2]),
    ] {
        let downloads = fleet.node_dir(name).join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::write(downloads.join(format!("{digest}.part")), half).unwrap();
    }
    let a = fleet.start_node("a", Some(&tokens[0])).await;
    let b = fleet.start_node("b", Some(&tokens[1])).await;
    fleet.wait_connected(2).await;
    fleet.publish(bytes.clone()).await;
    let id = fleet.rollout("fees@2.0.0", json!("all"), "rest").await;
    let r = fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    // a fetched only the second half; b's garbage failed the digest and was fetched whole.
    let (_, audit) = fleet
        .call("GET", "/api/v1/audit?contains=node:a", None)
        .await;
    let received = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["detail"].as_str().unwrap().contains("\"received\""))
        .unwrap()
        .clone();
    assert!(
        received["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("\"bytes\":{}", bytes.len())),
        "{received}"
    );
    assert_eq!(live_version(&a, "fees"), "2.0.0", "{r}");
    assert_eq!(live_version(&b, "fees"), "2.0.0", "{r}");
    let metrics = fleet
        .client
        .get(format!("{}/metrics", fleet.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ranged = metrics.lines().find(|l| {
        l.starts_with("nonstop_server_http_requests_total")
            && l.contains("bundles")
            && l.contains("status=\"206\"")
    });
    assert!(
        ranged.is_some(),
        "no ranged download was served:\n{metrics}"
    );
    for n in [a, b] {
        n.stop().await;
    }
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_drive_the_server_from_the_command_line() {
    let fleet = Fleet::new().await;
    let dir = fleet.dir.path();
    std::fs::write(
        dir.join("fees.nsb"),
        fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"),
    )
    .unwrap();
    let server = fleet.base.clone();
    let token = fleet.token.clone();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nonstop"))
            .current_dir(dir)
            .env("NONSTOP_SERVER", &server)
            .env("NONSTOP_TOKEN", &token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["server", "node", "add", "ward-3", "--group", "hospital-a"]);
    assert!(ok && out.contains("enrolment token (one use): "), "{out}");
    let token = out
        .split("enrolment token (one use): ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let node = fleet.start_node("ward-3", Some(&token)).await;
    fleet.wait_connected(1).await;
    let (ok, out) = run(&["publish", "fees.nsb"]);
    assert!(ok && out.contains("published fees@2.0.0"), "{out}");
    let (ok, out) = run(&["publish", "fees.nsb"]);
    assert!(!ok && out.contains("published already"), "{out}");
    let (ok, out) = run(&[
        "rollout",
        "start",
        "fees@2.0.0",
        "--group",
        "hospital-a",
        "--waves",
        "rest",
    ]);
    assert!(ok && out.contains("rollout 1: fees@2.0.0 running"), "{out}");
    fleet.wait_rollout(1, |r| r["state"] == "completed").await;
    let (ok, out) = run(&["status"]);
    assert!(
        ok && out.contains("ward-3")
            && out.contains("connected")
            && out.contains("fees 2.0.0 (standby 1.0.0)"),
        "{out}"
    );
    assert!(out.contains("healthy"), "{out}");
    let (ok, out) = run(&["audit", "verify"]);
    assert!(ok && out.contains("audit chain verifies"), "{out}");
    let (ok, out) = run(&["rollout", "pause", "1"]);
    assert!(
        !ok && out.contains("a completed rollout cannot be paused"),
        "{out}"
    );
    node.stop().await;
    fleet.server.stop().await;
}

/// Sends `/health` requests to a node for `secs`, returning how many it answered.
async fn traffic_for(node: &RunningNode, secs: f64) -> u64 {
    let client = Client::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut answered = 0;
    while Instant::now() < until {
        let r = client
            .get(format!("http://{}/health", node.addr))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_a_nodes_traffic_before_and_after_each_update() {
    let fleet = Fleet::new().await;
    let token = fleet.add("a").await;
    let a = fleet
        .start_node_with("a", Some(&token), |c| c.link.sample_secs = 1)
        .await;
    fleet.wait_connected(1).await;
    let started = nonstop_now_ms();
    let mut sent = traffic_for(&a, 3.0).await;
    let (s, v) = fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = fleet
        .rollout("fees@2.0.0", json!({"nodes": ["a"]}), "rest")
        .await;
    // Traffic goes on while the update is tested, goes live and is watched.
    let load = async {
        let mut n = 0;
        while fleet
            .call("GET", &format!("/api/v1/rollouts/{id}"), None)
            .await
            .1["state"]
            != "completed"
        {
            n += traffic_for(&a, 0.5).await;
        }
        n + traffic_for(&a, 3.0).await
    };
    sent += load.await;
    // Every request the node answered reaches the server's chart within a couple of samples.
    let chart = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, chart) = fleet
                .call(
                    "GET",
                    &format!("/api/v1/nodes/a/traffic?since={}", started - 1000),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{chart}");
            let counted: u64 = chart["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum();
            if counted >= sent {
                assert_eq!(counted, sent, "no request is counted twice");
                break chart;
            }
            assert!(Instant::now() < deadline, "{counted} of {sent}: {chart}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let samples = chart["samples"].as_array().unwrap();
    assert!(samples.len() >= 5, "one sample a second: {chart}");
    assert!(samples.iter().all(|p| p["errors"] == 0), "{chart}");
    assert!(
        samples.iter().any(|p| p["p99_ms"].as_f64().unwrap() > 0.0),
        "{chart}"
    );
    // The update is marked where it went live, with the traffic before and after it.
    let updates = chart["updates"].as_array().unwrap();
    let live: Vec<&Value> = updates.iter().filter(|u| u["step"] == "live").collect();
    assert_eq!(live.len(), 1, "{chart}");
    assert_eq!(live[0]["component"], "fees");
    assert_eq!(live[0]["version"], "2.0.0");
    for side in ["before", "after"] {
        let s = &live[0][side];
        assert!(s["rps"].as_f64().unwrap() > 1.0, "{side}: {chart}");
        assert_eq!(s["error_rate"], 0.0, "{side}: {chart}");
    }
    // A span before anything happened has no samples; a bad span or node says what is wrong.
    let (_, empty) = fleet
        .call(
            "GET",
            &format!(
                "/api/v1/nodes/a/traffic?since={}&until={}",
                started - 60_000,
                started - 30_000
            ),
            None,
        )
        .await;
    assert_eq!(empty["samples"], json!([]), "{empty}");
    let (s, v) = fleet
        .call("GET", "/api/v1/nodes/nobody/traffic", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = fleet
        .call("GET", "/api/v1/nodes/a/traffic?since=10&until=5", None)
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("since"))
    );
    // The audit log is searched by time on the server.
    let live_at = live[0]["at"].as_i64().unwrap();
    let (_, after) = fleet
        .call(
            "GET",
            &format!("/api/v1/audit?contains=node:a&since={live_at}"),
            None,
        )
        .await;
    let after = after["items"].as_array().unwrap();
    assert!(!after.is_empty());
    assert!(after.iter().all(|e| e["at"].as_i64().unwrap() >= live_at));
    let (_, before) = fleet
        .call(
            "GET",
            &format!("/api/v1/audit?contains=node:a&until={}", live_at - 1),
            None,
        )
        .await;
    let before = before["items"].as_array().unwrap();
    assert!(before.iter().all(|e| e["at"].as_i64().unwrap() < live_at));
    assert!(
        before
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("staged")),
        "the steps before live are there: {before:?}"
    );
    a.stop().await;
    fleet.server.stop().await;
}

fn nonstop_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_is_tls_and_trusts_only_the_pinned_server_certificate() {
    let fleet = Fleet::start(true).await;
    let tls = fleet.server.tls.clone().expect("the server serves HTTPS");
    assert!(fleet.base.starts_with("https://"), "{}", fleet.base);
    // A plain client gets nothing from the server; a node cannot enrol without a pin, with the
    // wrong one, or over plain HTTP to another machine, and each refusal says why.
    assert!(
        reqwest::get(format!("http://{}/health", fleet.server.addr))
            .await
            .is_err()
    );
    let token = fleet.add("a").await;
    let data = fleet.node_dir("a");
    let e = nonstop_node::link::enrol(&fleet.base, &[], &token, None, &data)
        .await
        .unwrap_err();
    assert!(e.contains("--server-fingerprint"), "{e}");
    let wrong = nonstop_tls::ServerPin::fingerprint(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let e = nonstop_node::link::enrol(&fleet.base, &[], &token, Some(wrong), &data)
        .await
        .unwrap_err();
    assert!(e.contains("not the pinned"), "{e}");
    let e = nonstop_node::link::enrol("http://192.0.2.1:9090", &[], &token, None, &data)
        .await
        .unwrap_err();
    assert!(e.contains("must be https://"), "{e}");
    // With the right pin it enrols (the token was not spent by the refusals), connects over wss,
    // and a release goes live through it.
    let a = fleet.start_node("a", Some(&token)).await;
    fleet.wait_connected(1).await;
    let (s, v) = fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = fleet
        .rollout("fees@2.0.0", json!({"nodes": ["a"]}), "rest")
        .await;
    fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    assert_eq!(live_version(&a, "fees"), "2.0.0");
    // The server's certificate endpoint shows what was pinned.
    let (_, cert) = fleet.call("GET", "/api/v1/certificate", None).await;
    assert_eq!(cert["fingerprint"], tls.fingerprint.as_str());
    a.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_deeply_nested_bodies_are_refused_and_a_large_bundle_is_not() {
    let fleet = Fleet::new().await;
    // A JSON body past 64 KiB: refused before it is parsed, saying why.
    let big = json!({"name": "x".repeat(100 * 1024), "group": "ward"});
    let (s, v) = fleet.call("POST", "/api/v1/nodes", Some(big)).await;
    assert!(s.is_client_error(), "{s} {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("length limit"),
        "{v}"
    );
    // Nesting past serde_json's recursion limit: a 400 naming the body, not a crash.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let resp = fleet
        .client
        .post(format!("{}/api/v1/nodes", fleet.base))
        .bearer_auth(&fleet.token)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["field"], "body", "{v}");
    // A bundle upload may be as large as the bundle limits: 5 MB of garbage is read in full and
    // refused for what it is, not for its size.
    let (s, v) = fleet.publish(vec![7u8; 5 << 20]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not a nonstop bundle"),
        "{v}"
    );
    // The server still serves.
    let (s, _) = fleet.call("GET", "/api/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_live_rule_is_damaged_on_disk_starts_on_its_standby_and_tells_the_server() {
    let fleet = Fleet::new().await;
    let token = fleet.add("ward").await;
    let node = fleet.start_node("ward", Some(&token)).await;
    fleet.wait_connected(1).await;
    fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    let id = fleet.rollout("fees@2.0.0", json!("all"), "rest").await;
    fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    node.stop().await;
    // The disk damages fees 2.0.0's payload while the node is down.
    let payload = fleet
        .node_dir("ward")
        .join("store/components/fees/versions/2.0.0/fees.wasm");
    let mut bytes = std::fs::read(&payload).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&payload, bytes).unwrap();
    let node = fleet.start_node("ward", None).await;
    assert_eq!(live_version(&node, "fees"), "1.0.0", "the standby serves");
    assert_eq!(node.fell_back.len(), 1, "{:?}", node.fell_back);
    assert!(
        node.fell_back[0].starts_with("fees 2.0.0 -> 1.0.0: the live payload was damaged"),
        "{:?}",
        node.fell_back
    );
    // The server hears why, in its audit.
    let started = Instant::now();
    loop {
        let (_, audit) = fleet
            .call("GET", "/api/v1/audit?contains=node:ward", None)
            .await;
        let told = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "node.fell-back");
        if let Some(e) = told {
            assert!(
                e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("fees 2.0.0 -> 1.0.0"),
                "{e}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_during_a_watch_window_finishes_it_before_the_server_hears_healthy() {
    let fleet = Fleet::new().await;
    let token = fleet.add("ward").await;
    let watch = |c: &mut NodeConfig| c.checks.watch_secs = 8;
    let node = fleet.start_node_with("ward", Some(&token), watch).await;
    fleet.wait_connected(1).await;
    fleet
        .publish(fleet.bundle("fees", "2.0.0", "fees-v2", "fees-v2"))
        .await;
    let id = fleet.rollout("fees@2.0.0", json!("all"), "rest").await;
    fleet
        .wait_rollout(id, |r| state_of(r, "ward") == "live")
        .await;
    // Stopped and started again in the middle of its 8-second window.
    node.stop().await;
    let restarted = Instant::now();
    let node = fleet.start_node_with("ward", None, watch).await;
    let r = fleet
        .wait_rollout(id, |r| state_of(r, "ward") != "live")
        .await;
    assert_eq!(state_of(&r, "ward"), "healthy", "{r}");
    assert!(
        restarted.elapsed() >= Duration::from_secs(2),
        "healthy only once the resumed window closed, not at once: {:?}",
        restarted.elapsed()
    );
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(live_version(&node, "fees"), "2.0.0");
    node.stop().await;
    fleet.server.stop().await;
}
