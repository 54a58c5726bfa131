//! The node's pages and the update console in a real browser: Debian's Chromium driven by
//! playwright-core (never a downloaded browser), from the tests in `crates/pages/browser/`. This
//! test starts an update server and a node enrolled with it, creates the staff and a
//! waiting-room screen, and runs them against both.
//!
//! They need `/usr/bin/chromium` (`apt-get install chromium`) and playwright-core
//! (`npm ci --prefix crates/pages/browser`); `.ci/run` installs both and sets
//! `NONSTOP_BROWSER_TESTS=1`, under which their absence fails the test instead of skipping it.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::api::{Api, test_config};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hospital_pages_work_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tests = root.join("crates/pages/browser");
    let ready = std::path::Path::new(CHROMIUM).exists()
        && tests.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("NONSTOP_BROWSER_TESTS").is_none(),
            "NONSTOP_BROWSER_TESTS is set, but {CHROMIUM} or playwright-core is missing: \
             `apt-get install chromium` and `npm ci --prefix crates/pages/browser`"
        );
        eprintln!(
            "NOTICE: the browser tests did not run: they need {CHROMIUM} and `npm ci --prefix crates/pages/browser`"
        );
        return;
    }

    // The update server, and the node enrolled with it.
    let server_dir = tempfile::tempdir().unwrap();
    let server = nonstop_server::start(nonstop_server::ServerConfig {
        data_dir: server_dir.path().to_owned(),
        listen: "127.0.0.1:0".into(),
        tls: nonstop_tls::TlsConfig::off(),
        ..Default::default()
    })
    .await
    .unwrap();
    let server_url = format!("http://{}", server.addr);
    let server_password =
        std::fs::read_to_string(server.admin_password_file.as_ref().unwrap()).unwrap();
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{server_url}/api/v1/sessions"))
        .json(&json!({"username": "admin", "password": server_password.trim()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let added: Value = client
        .post(format!("{server_url}/api/v1/nodes"))
        .bearer_auth(login["token"].as_str().unwrap())
        .json(&json!({"name": "hospital-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    nonstop_node::link::enrol(
        &server_url,
        &[],
        added["enrolment_token"].as_str().unwrap(),
        None,
        dir.path(),
    )
    .await
    .unwrap();
    let mut config = test_config(dir.path());
    // A traffic sample a second, so the console's chart of this node fills during the test.
    config.link.sample_secs = 1;
    let node = nonstop_node::start(config).await.unwrap();
    let password = std::fs::read_to_string(node.admin_password_file.as_ref().unwrap()).unwrap();
    let base = format!("http://{}", node.addr);
    let anon = Api {
        base: base.clone(),
        client: reqwest::Client::new(),
        token: String::new(),
    };
    let admin = anon.as_user("admin", password.trim()).await;
    let today = node.hospital.business_date().to_string();
    let sessions = admin
        .ok(
            "GET",
            &format!("/api/v1/schedules?date={today}"),
            Value::Null,
        )
        .await;
    let night = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["period"] == "night")
        .unwrap()
        .clone();
    for (username, role, practitioner) in [
        ("clerk", "clerk", None),
        ("cashier", "cashier", None),
        ("doctor", "doctor", night["practitioner_id"].as_i64()),
        ("kiosk", "kiosk", None),
        ("auditor", "auditor", None),
    ] {
        admin
            .ok(
                "POST",
                "/api/v1/users",
                json!({"username": username, "role": role, "practitioner_id": practitioner,
                       "password": format!("{username}-password-1")}),
            )
            .await;
    }
    let screen = admin
        .ok("POST", "/api/v1/screens", json!({"name": "内科候诊区"}))
        .await;
    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // On a blocking thread: the node serves the browser from this test's runtime meanwhile.
    let mut command = std::process::Command::new("node");
    command
        .arg("--test")
        .arg("--test-concurrency=1")
        .current_dir(&tests)
        .env("BASE_URL", &base)
        .env("SERVER_URL", &server_url)
        .env("SERVER_PASSWORD", server_password.trim())
        .env("ADMIN_TOKEN", &admin.token)
        .env("SCHEDULE_ID", night["id"].to_string())
        .env("SCREEN_TOKEN", screen["token"].as_str().unwrap())
        .env("FEES_BUNDLE", root.join("modules/factory/fees-2.0.0.nsb"))
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node (Node.js) runs the browser tests");
    let output =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    println!("{output}");
    assert!(run.status.success(), "the browser tests failed:\n{output}");
    node.stop().await;
    server.stop().await;
}
