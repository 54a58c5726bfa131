//! The demo's last act: a publisher key leaks. At the start the vendor gives the fleet a root of
//! trust (two offline root keys, 2 of 2; publishers: the vendor and nonstop's release key; the
//! update server's timestamp key); at the end the vendor's key is stolen, root 2 leaves it out,
//! and a bundle the thief signs is refused by the update server and by a node it is pushed into
//! directly.

use std::time::{Duration, Instant};

use nonstop_bundle::{PublicKey, SecretKey};
use nonstop_trust::{Role, Roles, RootDraft};
use serde::Serialize;
use serde_json::Value;

use crate::{Api, Lab, bundle};

/// What the key leak showed.
#[derive(Debug, Clone, Serialize)]
pub struct KeyLeakReport {
    /// The key that leaked and was revoked.
    pub revoked_key: String,
    /// The root version every node held at the end.
    pub root_version: u64,
    /// Nodes that held it.
    pub nodes_on_root: usize,
    /// Why the update server refused the thief's bundle.
    pub refused_by_server: String,
    /// Why a node refused it when pushed straight into its API.
    pub refused_by_node: String,
}

/// The root keys, kept offline by the vendor (here: in memory).
pub(crate) struct RootKeys {
    a: SecretKey,
    b: SecretKey,
    timestamp: PublicKey,
}

fn role(keys: &[&PublicKey], threshold: usize) -> Role {
    Role {
        keys: keys.iter().map(|k| k.key_id()).collect(),
        threshold,
    }
}

/// A root of `version` naming `publishers` for releases, signed by `extra` and both root keys.
fn root(
    keys: &RootKeys,
    version: u64,
    publishers: &[&PublicKey],
    extra: &[&SecretKey],
) -> Result<String, String> {
    let (a, b) = (keys.a.public(), keys.b.public());
    let mut all = vec![a.clone(), b.clone(), keys.timestamp.clone()];
    all.extend(publishers.iter().map(|k| (*k).clone()));
    let mut draft = RootDraft::new(
        version,
        &all,
        Roles {
            root: role(&[&a, &b], 2),
            release: role(publishers, 1),
            timestamp: Some(role(&[&keys.timestamp], 1)),
        },
    )
    .map_err(|e| e.to_string())?;
    for k in extra.iter().copied().chain([&keys.a, &keys.b]) {
        draft.sign(k);
    }
    Ok(draft.to_text())
}

/// Pushes a root to the server and waits until every node says it holds it.
async fn push_root(
    server: &Api,
    text: String,
    version: u64,
    nodes: usize,
) -> Result<Value, String> {
    let added = server
        .send(
            reqwest::Method::POST,
            "/api/v1/trust/roots",
            None,
            Some(text.into_bytes()),
        )
        .await?;
    let started = Instant::now();
    loop {
        let status = server.get("/api/v1/status").await?;
        let holding = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["root_version"].as_u64() == Some(version))
            .count();
        if holding >= nodes {
            return Ok(added);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "only {holding} of {nodes} nodes took root {version} in 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Root 1, pushed to the fleet: the vendor's key still trusted.
pub(crate) async fn first_root(lab: &Lab, say: &dyn Fn(&str)) -> Result<RootKeys, String> {
    let info = lab.server.get("/api/v1/trust").await?;
    let timestamp = PublicKey::from_file_text(
        info["timestamp_key"]["public_key"].as_str().unwrap_or(""),
        std::path::Path::new("the update server's timestamp key"),
    )
    .map_err(|e| e.to_string())?;
    let keys = RootKeys {
        a: SecretKey::generate(),
        b: SecretKey::generate(),
        timestamp,
    };
    let nonstop = nonstop_bundle::release_key();
    let text = root(&keys, 1, &[&lab.vendor.public(), &nonstop], &[&lab.vendor])?;
    push_root(&lab.server, text, 1, lab.nodes.len()).await?;
    say(&format!(
        "root of trust 1 on every node: 2 of 2 offline root keys; publishers {} (the vendor) and {} (nonstop); the server's statements of what is current",
        lab.vendor.key_id(),
        nonstop.key_id()
    ));
    Ok(keys)
}

/// The vendor's key leaks: root 2 without it, then the thief's bundle, refused.
pub(crate) async fn leak(
    lab: &Lab,
    keys: &RootKeys,
    say: &dyn Fn(&str),
) -> Result<KeyLeakReport, String> {
    let stolen = &lab.vendor;
    say(&format!(
        "the vendor's publisher key {} leaks; the root key holders sign root 2 without it",
        stolen.key_id()
    ));
    let successor = SecretKey::generate();
    let text = root(
        keys,
        2,
        &[&successor.public(), &nonstop_bundle::release_key()],
        &[],
    )?;
    push_root(&lab.server, text, 2, lab.nodes.len()).await?;
    say("root of trust 2 on every node: the leaked key is revoked");
    let thief = bundle(
        "fees",
        "9.0.0",
        crate::FEES_3,
        crate::FEES_3_CHECKS,
        "signed with the stolen key",
        stolen,
    )?;
    let refused_by_server = match lab
        .server
        .send(
            reqwest::Method::POST,
            "/api/v1/releases",
            None,
            Some(thief.clone()),
        )
        .await
    {
        Ok(v) => {
            return Err(format!(
                "the update server published the thief's bundle: {v}"
            ));
        }
        Err(e) => e,
    };
    say(&format!(
        "the thief publishes fees 9.0.0: {refused_by_server}"
    ));
    let node = &lab.nodes[0];
    let report: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/updates", node.url))
        .bearer_auth(&node.admin_token)
        .body(thief)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if report["outcome"] != "refused" {
        return Err(format!("a node took the thief's bundle: {report}"));
    }
    let refused_by_node = report["reason"].as_str().unwrap_or("").to_owned();
    say(&format!(
        "the thief pushes it straight into {}: refused: {refused_by_node}",
        node.url
    ));
    Ok(KeyLeakReport {
        revoked_key: stolen.key_id().to_string(),
        root_version: 2,
        nodes_on_root: lab.nodes.len(),
        refused_by_server,
        refused_by_node,
    })
}
