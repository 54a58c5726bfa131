//! The root of trust end to end, as the vendor's key holders and an attacker would meet it: roots
//! made and signed with `nonstop trust`, pushed to a real update server, carried over the link to
//! real nodes (one of them offline at the time), and the attacks the root is there to stop.

use std::path::Path;
use std::time::{Duration, Instant};

use nonstop_bundle::{ComponentKind, Draft, PublicKey, SecretKey};
use nonstop_node::RunningNode;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fleet::{Fleet, live_version, modules, state_of};
use crate::ok;

/// `nonstop keygen --out <dir>/<name>`; returns the secret key.
fn keygen(dir: &Path, name: &str) -> SecretKey {
    ok(dir, &["keygen", "--out", name]);
    SecretKey::read(&dir.join(format!("{name}.key"))).unwrap()
}

/// The node's `GET /api/v1/trust`.
async fn node_trust(client: &reqwest::Client, node: &RunningNode) -> Value {
    client
        .get(format!("{}/api/v1/trust", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the node's trust until `done` holds; fails after 30 s.
async fn wait_trust(
    client: &reqwest::Client,
    node: &RunningNode,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let t = node_trust(client, node).await;
        if done(&t) {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never got there: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a node's trust lists `key` as revoked (by root 2). Root 1 already revoked the key
/// nonstop's own rule modules are signed with: the nodes trusted it before any root, and root 1
/// does not name it.
fn revokes(trust: &Value, key: &SecretKey) -> bool {
    trust["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key_id"] == key.key_id().to_string() && r["by_root"] == 2)
}

/// A fees bundle carrying the fees-v2 module, signed by `key`.
fn fees_bundle(version: &str, key: &SecretKey) -> Vec<u8> {
    fees_bundle_of(version, "fees-v2", key)
}

/// A fees bundle carrying `module` (built in `modules/dist`), signed by `key`.
fn fees_bundle_of(version: &str, module: &str, key: &SecretKey) -> Vec<u8> {
    let mut draft = Draft::new(
        "fees",
        ComponentKind::WasmComponent,
        version.parse().unwrap(),
        "fees.wasm",
    )
    .unwrap();
    draft.checks = serde_json::from_str(
        &std::fs::read_to_string(modules().join("fees-v2/checks.json")).unwrap(),
    )
    .unwrap();
    let payload = std::fs::read(modules().join(format!("dist/{module}.wasm"))).unwrap();
    nonstop_bundle::create(&draft, &payload, key).unwrap()
}

/// Where a bundle's payload length starts: after the magic, format, manifest and signatures
/// (the layout in `crates/bundle/src/container.rs`).
fn payload_at(bundle: &[u8]) -> usize {
    let manifest = u32::from_be_bytes(bundle[10..14].try_into().unwrap()) as usize;
    14 + manifest + 1 + 72 * bundle[14 + manifest] as usize
}

/// Pushes a bundle straight into a node's API, as its administrator; returns the report.
async fn push_to_node(fleet: &Fleet, node: &RunningNode, name: &str, bytes: Vec<u8>) -> Value {
    let password = std::fs::read_to_string(fleet.node_dir(name).join("admin-password")).unwrap();
    let token = nonstop_loadgen::login_as(&fleet.client, &node.url, "admin", password.trim())
        .await
        .unwrap();
    fleet
        .client
        .post(format!("{}/api/v1/updates", node.url))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_reaches_a_node_that_was_offline_and_the_key_it_revokes_is_refused_everywhere()
 {
    let fleet = Fleet::new().await;
    let keys = fleet.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    // The vendor's publisher key (trusted by the server and nodes since they were installed) is
    // the one that will leak. Two root keys are kept offline; two new publishers replace it.
    std::fs::write(
        keys.join("vendor.pub"),
        fleet.vendor.public().to_file_text(),
    )
    .unwrap();
    keygen(&keys, "root-a");
    keygen(&keys, "root-b");
    let p1 = keygen(&keys, "publisher-1");
    keygen(&keys, "publisher-2");
    let server_args = [
        "--server",
        fleet.base.as_str(),
        "--token",
        fleet.token.as_str(),
    ];

    let tokens = [fleet.add("online").await, fleet.add("offline").await];
    let online = fleet.start_node("online", Some(&tokens[0])).await;
    let offline = fleet.start_node("offline", Some(&tokens[1])).await;
    fleet.wait_connected(2).await;
    assert_eq!(node_trust(&fleet.client, &offline).await["root_version"], 0);
    offline.stop().await;

    // Root 1: the root keys 2 of 2, the vendor key alone for releases, and the server's
    // timestamp key. Signed by the vendor key (the nodes' implicit root) and both root keys.
    let status = ok(
        &keys,
        &[
            &[
                "trust",
                "status",
                "--timestamp-key-out",
                "server-timestamp.pub",
            ][..],
            &server_args[..],
        ]
        .concat(),
    );
    assert!(status.contains("root version      0"), "{status}");
    assert!(status.contains("not in the root"), "{status}");
    ok(
        &keys,
        &[
            "trust",
            "root",
            "--root-key",
            "root-a.pub",
            "--root-key",
            "root-b.pub",
            "--root-threshold",
            "2",
            "--release-key",
            "vendor.pub",
            "--timestamp-key",
            "server-timestamp.pub",
            "--out",
            "root-1.json",
        ],
    );
    let not_yet = crate::fails(
        &keys,
        &["trust", "show", "root-1.json", "--trusted", "vendor.pub"],
    );
    assert!(not_yet.contains("needs 1"), "{not_yet}");
    std::fs::write(keys.join("vendor.key"), fleet.vendor.to_file_text()).unwrap();
    for k in ["vendor.key", "root-a.key", "root-b.key"] {
        ok(&keys, &["trust", "sign", "root-1.json", "--key", k]);
    }
    let shown = ok(
        &keys,
        &["trust", "show", "root-1.json", "--trusted", "vendor.pub"],
    );
    assert!(
        shown.contains("ok: can be taken by nodes trusting those keys"),
        "{shown}"
    );
    let pushed = ok(
        &keys,
        &[&["trust", "push", "root-1.json"][..], &server_args[..]].concat(),
    );
    assert!(pushed.contains("root version 1"), "{pushed}");

    // The connected node takes it, then hears a signed statement of what is current.
    let t = wait_trust(&fleet.client, &online, |t| t["freshness"]["fresh"] == true).await;
    assert_eq!(t["root_version"], 1, "{t}");
    assert_eq!(
        t["release_keys"],
        json!([fleet.vendor.key_id().to_string()])
    );

    // Signed while the vendor key was trusted, and kept by whoever stole that key.
    let stolen = fees_bundle("2.0.0", &fleet.vendor);
    let (s, v) = fleet.publish(stolen.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Root 2 revokes the vendor key: releases now need 2 of the two new publishers.
    ok(
        &keys,
        &[
            "trust",
            "root",
            "--previous",
            "root-1.json",
            "--root-key",
            "root-a.pub",
            "--root-key",
            "root-b.pub",
            "--root-threshold",
            "2",
            "--release-key",
            "publisher-1.pub",
            "--release-key",
            "publisher-2.pub",
            "--release-threshold",
            "2",
            "--timestamp-key",
            "server-timestamp.pub",
            "--out",
            "root-2.json",
        ],
    );
    // The thief's key and one root key are not enough to rotate.
    ok(
        &keys,
        &["trust", "sign", "root-2.json", "--key", "root-a.key"],
    );
    ok(
        &keys,
        &["trust", "sign", "root-2.json", "--key", "vendor.key"],
    );
    let refused = crate::fails(
        &keys,
        &[&["trust", "push", "root-2.json"][..], &server_args[..]].concat(),
    );
    assert!(
        refused
            .contains("has 1 valid signature(s) by the root keys of root version 1, but needs 2"),
        "{refused}"
    );
    ok(
        &keys,
        &["trust", "sign", "root-2.json", "--key", "root-b.key"],
    );
    ok(
        &keys,
        &["trust", "show", "root-2.json", "--previous", "root-1.json"],
    );
    let pushed = ok(
        &keys,
        &[&["trust", "push", "root-2.json"][..], &server_args[..]].concat(),
    );
    assert!(
        pushed.contains(&format!(
            "revoked           {} (by root version 2)",
            fleet.vendor.key_id()
        )),
        "{pushed}"
    );
    let t = wait_trust(&fleet.client, &online, |t| t["root_version"] == 2).await;
    assert!(revokes(&t, &fleet.vendor), "{t}");
    assert_eq!(t["release_threshold"], 2);

    // The stolen key's release, published before the rotation, cannot be rolled out now...
    let (s, v) = fleet
        .call(
            "POST",
            "/api/v1/rollouts",
            Some(json!({"release": "fees@2.0.0", "targets": "all", "waves": "rest"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("which root version 2 revoked"),
        "{v}"
    );
    // ...nor pushed into a node by someone who reaches its API.
    let report = push_to_node(&fleet, &online, "online", stolen.clone()).await;
    assert_eq!(report["outcome"], "refused", "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("revoked"),
        "{report}"
    );
    assert_eq!(live_version(&online, "fees"), "1.0.0");

    // The node that was offline through both rotations gets both, in order, when it returns.
    let offline = fleet.start_node("offline", None).await;
    let t = wait_trust(&fleet.client, &offline, |t| t["root_version"] == 2).await;
    assert!(revokes(&t, &fleet.vendor), "{t}");
    assert!(
        std::fs::read_dir(fleet.node_dir("offline").join("trust/roots"))
            .unwrap()
            .count()
            == 2
    );
    let report = push_to_node(&fleet, &offline, "offline", stolen).await;
    assert!(
        report["reason"].as_str().unwrap().contains("revoked"),
        "{report}"
    );

    // One new publisher alone is not enough; co-signed by the second, the release goes out.
    let one = fees_bundle("3.0.0", &p1);
    let (s, v) = fleet.publish(one.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("needs 2"), "{v}");
    let path = keys.join("fees-3.0.0.nsb");
    std::fs::write(&path, &one).unwrap();
    ok(
        &keys,
        &[
            "bundle",
            "sign",
            "fees-3.0.0.nsb",
            "--key",
            "publisher-2.key",
        ],
    );
    let (s, v) = fleet.publish(std::fs::read(&path).unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["manifest"]["key_id"], p1.key_id().to_string());
    let id = fleet.rollout("fees@3.0.0", json!("all"), "rest").await;
    let r = fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    assert_eq!(state_of(&r, "offline"), "healthy", "{r}");
    assert_eq!(live_version(&online, "fees"), "3.0.0");
    assert_eq!(live_version(&offline, "fees"), "3.0.0");

    // The server's status shows which root each node holds; the audit has both rotations.
    let (_, audit) = fleet
        .call("GET", "/api/v1/audit?contains=root%20", None)
        .await;
    let added = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "trust.root-added")
        .count();
    assert_eq!(added, 2, "{audit}");
    online.stop().await;
    offline.stop().await;
    fleet.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_mixed_up_bundles_are_refused_and_a_node_left_without_statements_says_so() {
    // Statements every second, and a node that calls anything over 3 s old stale.
    let fleet = Fleet::start_with(false, |c| c.statement_secs = 1).await;
    let token = fleet.add("ward").await;
    let node = fleet
        .start_node_with("ward", Some(&token), |c| c.trust_root.freshness_secs = 3)
        .await;
    fleet.wait_connected(1).await;
    let t = node_trust(&fleet.client, &node).await;
    assert_eq!(
        t["freshness"]["checked"], false,
        "root 0 names no timestamp key: {t}"
    );
    assert!(
        t["freshness"]["message"]
            .as_str()
            .unwrap()
            .contains("not checked"),
        "{t}"
    );

    // A first root naming the server's timestamp key, signed by the vendor key.
    let (_, info) = fleet.call("GET", "/api/v1/trust", None).await;
    let ts = PublicKey::from_file_text(
        info["timestamp_key"]["public_key"].as_str().unwrap(),
        Path::new("timestamp.pub"),
    )
    .unwrap();
    let role = |k: &SecretKey| nonstop_trust::Role {
        keys: vec![k.key_id()],
        threshold: 1,
    };
    let mut root = nonstop_trust::RootDraft::new(
        1,
        &[fleet.vendor.public(), ts.clone()],
        nonstop_trust::Roles {
            root: role(&fleet.vendor),
            release: role(&fleet.vendor),
            timestamp: Some(nonstop_trust::Role {
                keys: vec![ts.key_id()],
                threshold: 1,
            }),
        },
    )
    .unwrap();
    root.sign(&fleet.vendor);
    let add_root = || {
        fleet
            .client
            .post(format!("{}/api/v1/trust/roots", fleet.base))
            .bearer_auth(&fleet.token)
            .body(root.to_text())
            .send()
    };
    assert_eq!(add_root().await.unwrap().status(), StatusCode::CREATED);
    // The same root again is a conflict, not a second rotation.
    assert_eq!(add_root().await.unwrap().status(), StatusCode::CONFLICT);
    wait_trust(&fleet.client, &node, |t| t["freshness"]["fresh"] == true).await;

    // fees 2.0.0 goes live through the server; its bundle is what an attacker replays later.
    let v2 = fees_bundle("2.0.0", &fleet.vendor);
    fleet.publish(v2.clone()).await;
    let id = fleet.rollout("fees@2.0.0", json!("all"), "rest").await;
    fleet.wait_rollout(id, |r| r["state"] == "completed").await;
    let v3 = fees_bundle("3.0.0", &fleet.vendor);
    let report = push_to_node(&fleet, &node, "ward", v3.clone()).await;
    assert_eq!(report["outcome"], "live", "{report}");
    // The statement the node holds names the newest published release.
    let t = wait_trust(&fleet.client, &node, |t| {
        t["freshness"]["releases"][0]["version"] == "2.0.0"
    })
    .await;
    assert_eq!(t["freshness"]["releases"][0]["component"], "fees", "{t}");

    // Replay: the validly signed 2.0.0 bundle, pushed again while 3.0.0 is live.
    let report = push_to_node(&fleet, &node, "ward", v2.clone()).await;
    assert_eq!(report["outcome"], "refused", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("older than live version 3.0.0"),
        "{report}"
    );
    // Mix and match: 4.0.0's signed manifest with an older release's payload (fees-v1).
    let new = fees_bundle("4.0.0", &fleet.vendor);
    let old = fees_bundle_of("1.5.0", "fees-v1", &fleet.vendor);
    let mut mixed = new[..payload_at(&new)].to_vec();
    mixed.extend_from_slice(&old[payload_at(&old)..]);
    let report = push_to_node(&fleet, &node, "ward", mixed).await;
    assert_eq!(report["outcome"], "refused", "{report}");
    // Refused for not being what the signed manifest describes (its size, else its digest).
    assert!(
        report["reason"].as_str().unwrap().contains("the manifest"),
        "{report}"
    );
    assert_eq!(live_version(&node, "fees"), "3.0.0");

    // Freeze: the server goes away (or someone drops its traffic); within the limit the node
    // says it has heard no fresh statement.
    fleet.server.stop().await;
    let client = fleet.client.clone();
    let t = wait_trust(&client, &node, |t| t["freshness"]["fresh"] == false).await;
    assert!(
        t["freshness"]["message"]
            .as_str()
            .unwrap()
            .contains("updates may be being withheld"),
        "{t}"
    );
    node.stop().await;
}
