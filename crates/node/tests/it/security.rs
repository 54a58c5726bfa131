//! What a local user of the node's machine, or a machine on its network, can do: the data
//! directory and the files with patient records and secrets are the node's alone; it will not run
//! on keys, rules or a program directory that others can change; and an address that keeps
//! guessing passwords is turned away.

use std::os::unix::fs::PermissionsExt;

use nonstop_node::start;

use crate::api::test_config;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_and_its_secrets_are_the_nodes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // Made by someone with a loose umask: the node tightens it.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = test_config(&data);
    // HTTPS, so that its key is made too.
    config.tls = nonstop_tls::TlsConfig::default();
    let node = start(config).await.unwrap();
    // It serves HTTPS, and says which certificate to anyone who asks before signing in.
    let fingerprint = node.tls.as_ref().unwrap().fingerprint.clone();
    let pin = nonstop_tls::ServerPin::fingerprint(&fingerprint).unwrap();
    let cert: serde_json::Value = nonstop_tls::http_client(Some(&pin))
        .unwrap()
        .get(format!("{}/api/v1/certificate", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cert["tls"], true);
    assert_eq!(cert["fingerprint"], fingerprint.as_str());
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in ["hospital.db", "admin-password", "tls/key.pem"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    // SQLite's write-ahead log and shared memory follow the database's mode.
    for file in ["hospital.db-wal", "hospital.db-shm"] {
        if data.join(file).exists() {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn a_node_whose_trusted_keys_or_store_others_can_write_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // A first start makes everything, correctly.
    start(test_config(&data)).await.unwrap().stop().await;
    for (path, what) in [
        (data.join("trusted-keys"), "trusted-keys"),
        (data.join("store"), "store"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = match start(test_config(&data)).await {
            Ok(node) => {
                node.stop().await;
                panic!("started with a group-writable {what}");
            }
            Err(e) => e,
        };
        assert!(
            e.contains(&path.display().to_string()) && e.contains("writable by others"),
            "{what}: {e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A trusted key file others can write is refused as well.
    let key = data.join("trusted-keys/vendor.pub");
    std::fs::write(
        &key,
        nonstop_bundle::SecretKey::generate()
            .public()
            .to_file_text(),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = start(test_config(&data)).await.err().expect("refused");
    assert!(e.contains("vendor.pub"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    start(test_config(&data)).await.unwrap().stop().await;
}

#[tokio::test]
async fn an_address_that_keeps_failing_to_sign_in_is_refused_before_any_password_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.policy.per_address_failures = 3;
    // The test client is the proxy: it says which desk each attempt comes from.
    config.policy.read_audit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let node = start(config).await.unwrap();
    let password = std::fs::read_to_string(node.admin_password_file.as_ref().unwrap()).unwrap();
    let client = reqwest::Client::new();
    let sign_in = |from: &'static str, username: &'static str, password: String| {
        let client = client.clone();
        let url = format!("http://{}/api/v1/sessions", node.addr);
        async move {
            client
                .post(url)
                .header("x-forwarded-for", from)
                .json(&serde_json::json!({"username": username, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    // Three guesses at three accounts from one desk: each fails as a wrong password.
    for user in ["admin", "clerk1", "nobody"] {
        let r = sign_in("10.0.0.7", user, "guess-guess-guess".into()).await;
        assert_eq!(r.status(), 401);
    }
    // Then that desk is refused even with the right password, and told when to try again.
    let r = sign_in("10.0.0.7", "admin", password.trim().into()).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 600, "{wait}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.0.0.7"),
        "{body}"
    );
    // Another desk signs in to the same account: the account was not locked by it.
    let r = sign_in("10.0.0.8", "admin", password.trim().into()).await;
    assert_eq!(r.status(), 200);
    node.stop().await;
}
