//! Two update server processes on one PostgreSQL serve one fleet: a rollout started on one
//! reaches a node connected to the other, and a node whose server process is killed reconnects
//! to the other and finishes its update. Runs when `DATABASE_URL` names a PostgreSQL server
//! (CI sets it); each run in a schema of its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nonstop_bundle::{CandidateChecks, ComponentKind, Draft, SecretKey};
use reqwest::Client;
use serde_json::{Value, json};

struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path, database_url: &str) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nonstop"))
        .args([
            "server",
            "--no-tls",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env("DATABASE_URL", database_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(url) = line.split("listening on ").nth(1) {
            break url.trim().to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ServerProcess { child, url }
}

async fn api(
    client: &Client,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    bytes: Option<Vec<u8>>,
) -> Value {
    let mut req = match method {
        "GET" => client.get(format!("{base}{path}")),
        _ => client.post(format!("{base}{path}")),
    }
    .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(b) = bytes {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

async fn wait_rollout(client: &Client, base: &str, token: &str, id: i64, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = api(
            client,
            base,
            token,
            "GET",
            &format!("/api/v1/rollouts/{id}"),
            None,
            None,
        )
        .await;
        if r["state"] == state {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never {state}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_postgresql_serve_one_fleet() {
    let Ok(base_url) = std::env::var("DATABASE_URL") else {
        eprintln!("NOTICE: DATABASE_URL is not set: the two-server PostgreSQL test did not run");
        return;
    };
    if !base_url.starts_with("postgres") {
        eprintln!("NOTICE: DATABASE_URL is not PostgreSQL: the two-server test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sqlx::any::install_default_drivers();
    let schema = format!("fleet{}", std::process::id());
    let admin = sqlx::AnyPool::connect(&base_url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}options=-c%20search_path%3D{schema}");

    let vendor = SecretKey::generate();
    for name in ["s1", "s2", "n1", "n2"] {
        std::fs::create_dir_all(dir.path().join(name).join("trusted-keys")).unwrap();
        std::fs::write(
            dir.path().join(name).join("trusted-keys/vendor.pub"),
            vendor.public().to_file_text(),
        )
        .unwrap();
    }
    // The first process creates the administrator; the second finds it in the shared database.
    let s1 = start_server(&dir.path().join("s1"), &url);
    let s2 = start_server(&dir.path().join("s2"), &url);
    let client = Client::new();
    let password = std::fs::read_to_string(dir.path().join("s1/admin-password")).unwrap();
    let token = nonstop_loadgen::login_as(&client, &s2.url, "admin", password.trim())
        .await
        .unwrap();

    // Node n1 knows only server 2; node n2 knows server 1, then server 2.
    let mut nodes = Vec::new();
    for (name, servers) in [
        ("n1", vec![s2.url.clone()]),
        ("n2", vec![s1.url.clone(), s2.url.clone()]),
    ] {
        let v = api(
            &client,
            &s1.url,
            &token,
            "POST",
            "/api/v1/nodes",
            Some(json!({"name": name})),
            None,
        )
        .await;
        let data = dir.path().join(name);
        nonstop_node::link::enrol(
            &servers[0],
            &servers[1..],
            v["enrolment_token"].as_str().unwrap(),
            None,
            &data,
        )
        .await
        .unwrap();
        nodes.push(
            nonstop_node::start(crate::fleet::quick_node(data))
                .await
                .unwrap(),
        );
    }
    let bundle = |version: &str| {
        let mut draft = Draft::new(
            "fees",
            ComponentKind::WasmComponent,
            version.parse().unwrap(),
            "fees.wasm",
        )
        .unwrap();
        let modules = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules");
        draft.checks = serde_json::from_str::<CandidateChecks>(
            &std::fs::read_to_string(modules.join("fees-v2/checks.json")).unwrap(),
        )
        .unwrap();
        nonstop_bundle::create(
            &draft,
            &std::fs::read(modules.join("dist/fees-v2.wasm")).unwrap(),
            &vendor,
        )
        .unwrap()
    };

    // A rollout started on server 1 reaches n1, connected to server 2 only.
    api(
        &client,
        &s1.url,
        &token,
        "POST",
        "/api/v1/releases",
        None,
        Some(bundle("2.0.0")),
    )
    .await;
    let r = api(
        &client,
        &s1.url,
        &token,
        "POST",
        "/api/v1/rollouts",
        Some(json!({"release": "fees@2.0.0", "targets": {"nodes": ["n1"]}, "waves": "rest"})),
        None,
    )
    .await;
    let r = wait_rollout(
        &client,
        &s1.url,
        &token,
        r["id"].as_i64().unwrap(),
        "completed",
    )
    .await;
    assert!(r["targets"][0]["live_ms"].as_i64().is_some(), "{r}");
    assert_eq!(
        nodes[0]
            .hospital
            .live_rules()
            .iter()
            .find(|(c, _, _)| c == "fees")
            .unwrap()
            .1,
        "2.0.0"
    );

    // n2 is on server 1; server 1 is killed once n2 has been sent the update; n2 goes over to
    // server 2 and finishes it there.
    let r = api(
        &client,
        &s2.url,
        &token,
        "POST",
        "/api/v1/rollouts",
        Some(json!({"release": "fees@2.0.0", "targets": {"nodes": ["n2"]}, "waves": "rest"})),
        None,
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    let started = Instant::now();
    loop {
        let r = api(
            &client,
            &s2.url,
            &token,
            "GET",
            &format!("/api/v1/rollouts/{id}"),
            None,
            None,
        )
        .await;
        if r["targets"][0]["state"] != "pending" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s1);
    let r = wait_rollout(&client, &s2.url, &token, id, "completed").await;
    assert_eq!(r["targets"][0]["state"], "healthy", "{r}");
    assert_eq!(
        nodes[1]
            .hospital
            .live_rules()
            .iter()
            .find(|(c, _, _)| c == "fees")
            .unwrap()
            .1,
        "2.0.0"
    );
    let status = api(
        &client,
        &s2.url,
        &token,
        "GET",
        "/api/v1/status",
        None,
        None,
    )
    .await;
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["connected"] == true),
        "{status}"
    );
    let check = api(
        &client,
        &s2.url,
        &token,
        "GET",
        "/api/v1/audit/verify",
        None,
        None,
    )
    .await;
    assert!(check["first_bad"].is_null(), "{check}");
    for n in nodes {
        n.stop().await;
    }
    drop(s2);
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await;
}
