//! What updating the node program itself costs the hospital (issue 10), measured from outside the
//! processes measured, side by side in one run:
//! `cargo bench -p nonstop-cli --bench upgrade [-- --upgrades N --every S]`.
//!
//! Two supervised nodes (`nonstop node --supervise`) under one load from this process, shared
//! evenly. One takes ten program upgrades in a row through its API, alternating two builds of
//! the program; the other takes none. Reports each node's throughput and p99 over the same
//! seconds and their ratio, the failed requests (goal 0), every acknowledged record found, and
//! for each upgrade the time from the push to the new program answering, its checks included
//! (goal under 5 s on 2 cores).
//!
//! The two builds are this build's `nonstop` without its debug line tables (`strip
//! --strip-debug`, as a vendor ships it; this workspace's release profile keeps them for
//! backtraces) and a copy of that with 64 KiB appended (an ELF loader ignores what follows its
//! segments): two different files, digests and versions; the code that runs is the same, which
//! is what an upgrade's cost depends on least. Without `strip` the unstripped build is used.
//!
//! To look closer: `UPGRADE_LOG=<dir>` keeps each node's log (at `info`) in `<dir>`, and
//! `UPGRADE_ENDPOINTS=1` adds each endpoint's count and mean latency on both nodes in the 1.5 s
//! after each handover and in 1.5 s of a quiet moment later (how the upgrade benchmark found a
//! check-in that read the whole history, migration 0013).

mod common;

use common::arg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nonstop_loadgen::{LoadConfig, NodeTarget, Target, window};
use serde_json::Value;

/// Short watch windows, so that an upgrade every few seconds can finish its window first.
const NODE_CONFIG: &str = "[checks]\nwatch_secs = 2\n";

struct Node {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(exe: &Path, dir: &Path, name: &str, publisher: &Path) -> Node {
    let data = dir.join(name);
    std::fs::create_dir_all(data.join("trusted-keys")).unwrap();
    std::fs::copy(publisher, data.join("trusted-keys/bench.pub")).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, NODE_CONFIG).unwrap();
    let mut child = Command::new(exe)
        .args(["node", "--supervise", "--no-tls", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env_remove("DATABASE_URL")
        .env(
            "RUST_LOG",
            std::env::var("UPGRADE_LOG").map_or("warn", |_| "info"),
        )
        .stdout(Stdio::piped())
        .stderr(match std::env::var("UPGRADE_LOG") {
            Ok(dir) => Stdio::from(
                std::fs::File::create(Path::new(&dir).join(format!("{name}.log"))).unwrap(),
            ),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the node exited").unwrap();
        if let Some(url) = line.strip_prefix("nonstop node listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Node { child, base, data }
}

async fn token(client: &reqwest::Client, node: &Node) -> String {
    let password = std::fs::read_to_string(node.data.join("admin-password")).unwrap();
    nonstop_loadgen::login_as(client, &node.base, "admin", password.trim())
        .await
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let upgrades = arg(&args, "--upgrades", 10) as usize;
    let every = arg(&args, "--every", 6);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(upgrades, every));
}

async fn run(upgrades: usize, every: u64) {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nonstop"));
    let dir = tempfile::tempdir().unwrap();
    let key = nonstop_bundle::SecretKey::generate();
    let publisher = dir.path().join("bench.pub");
    std::fs::write(&publisher, key.public().to_file_text()).unwrap();
    let shipped = dir.path().join("nonstop");
    std::fs::copy(&exe, &shipped).unwrap();
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(&shipped)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        println!("  (no `strip` here: the programs pushed keep their debug line tables)");
    }
    let program = std::fs::read(&shipped).unwrap();
    let builds = [program.clone(), [program, vec![0u8; 64 * 1024]].concat()];
    let bundles: Vec<(String, Vec<u8>)> = (0..upgrades)
        .map(|i| {
            let version = format!("{}.0.0", i + 1);
            let draft = nonstop_bundle::Draft::new(
                "node",
                nonstop_bundle::ComponentKind::NodeBinary,
                version.parse().unwrap(),
                "nonstop",
            )
            .unwrap();
            let bytes = nonstop_bundle::create(&draft, &builds[i % 2], &key).unwrap();
            (version, bytes)
        })
        .collect();

    let upgraded = start(&exe, dir.path(), "upgraded", &publisher);
    let steady = start(&exe, dir.path(), "steady", &publisher);
    let client = reqwest::Client::new();
    let admin = token(&client, &upgraded).await;
    let load = nonstop_loadgen::start(&LoadConfig {
        target: Target::Nodes(vec![
            NodeTarget {
                url: upgraded.base.clone(),
                admin_token: admin.clone(),
            },
            NodeTarget {
                url: steady.base.clone(),
                admin_token: token(&client, &steady).await,
            },
        ]),
        duration: Duration::ZERO,
        desks: 8,
        doctors: 2,
        screens: 2,
        trust: None,
    })
    .await
    .unwrap();
    // Warm up: a fresh node's first seconds are not its steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = load.elapsed();
    let mut pushes = Vec::new();
    for (version, bytes) in bundles {
        let next = Instant::now() + Duration::from_secs(every);
        let size = bytes.len();
        let pushed = Instant::now();
        let at = load.elapsed();
        let response = client
            .post(format!("{}/api/v1/updates?wait=live", upgraded.base))
            .bearer_auth(&admin)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let report: Value = response.json().await.unwrap();
        let answered = pushed.elapsed();
        assert_eq!(report["outcome"], "live", "{report}");
        // Serving: the new program answers on the shared socket.
        loop {
            let p: Value = client
                .get(format!("{}/api/v1/program", upgraded.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if p["version"] == version.as_str() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let serving = pushed.elapsed();
        pushes.push((version, size, answered, serving, at));
        tokio::time::sleep_until(next.max(Instant::now()).into()).await;
    }
    let to = load.elapsed();
    let (report, timeline) = load.finish().await.unwrap();
    let (u, s) = (
        window(&timeline, from, to, Some(0)),
        window(&timeline, from, to, Some(1)),
    );
    println!(
        "== program upgrades: {} in a row on one supervised node, none on the other, one load over both ({:.0} s)",
        pushes.len(),
        to - from
    );
    for (name, w) in [("upgraded", &u), ("not upgraded", &s)] {
        println!(
            "  {name:<13} {:>7.0} req/s  p50 {:>5.2} ms  p99 {:>6.2} ms  failed {}",
            w.requests_per_second, w.p50_ms, w.p99_ms, w.failed
        );
    }
    println!(
        "  upgraded / not: throughput {:.3} (goal >= 0.95), p99 {:.3} (goal <= 1.3); failed requests {} (goal 0); records {} of {} found",
        u.requests_per_second / s.requests_per_second,
        u.p99_ms / s.p99_ms,
        report.errors,
        report.records.registrations_found + report.records.payments_found,
        report.acknowledged.0 + report.acknowledged.1
    );
    for failure in &report.failures {
        println!("  failed: {failure}");
    }
    let mut serving: Vec<f64> = pushes.iter().map(|p| p.3.as_secs_f64()).collect();
    // Where the difference is: the seconds around each upgrade, or the seconds between.
    let (mut near, mut between) = ([0usize; 2], [0usize; 2]);
    for (i, push) in pushes.iter().enumerate() {
        let (start, busy_until) = (push.4, push.4 + 3.0);
        let end = pushes.get(i + 1).map_or(to, |p| p.4);
        for node in 0..2 {
            near[node] += window(&timeline, start, busy_until.min(end), Some(node)).requests;
            between[node] += window(&timeline, busy_until.min(end), end, Some(node)).requests;
        }
    }
    println!(
        "  upgraded / not, requests in the 3 s from each push: {:.3}; in the seconds between: {:.3}",
        near[0] as f64 / near[1] as f64,
        between[0] as f64 / between[1] as f64
    );
    let mut by_second = Vec::new();
    for second in 0..3 {
        let mut n = [0usize; 2];
        for push in &pushes {
            let from = push.4 + second as f64;
            for (node, count) in n.iter_mut().enumerate() {
                *count += window(&timeline, from, from + 1.0, Some(node)).requests;
            }
        }
        by_second.push(format!("{:.3}", n[0] as f64 / n[1] as f64));
    }
    println!(
        "  upgraded / not, by second after each push: {}",
        by_second.join(", ")
    );
    // Finer, around the moment the new program was first seen answering: requests answered
    // (upgraded / not) by 250 ms, and the upgraded node's slow answers and sheds there.
    let mut bins = Vec::new();
    for bin in -4..10 {
        let mut n = [0usize; 2];
        let (mut slow, mut shed) = (0, 0);
        for push in &pushes {
            let from = push.4 + push.3.as_secs_f64() + f64::from(bin) * 0.25;
            for (node, count) in n.iter_mut().enumerate() {
                let w = window(&timeline, from, from + 0.25, Some(node));
                *count += w.requests;
                if node == 0 {
                    shed += w.shed;
                    slow += timeline
                        .iter()
                        .filter(|s| s.node == 0 && s.at >= from && s.at < from + 0.25)
                        .filter(|s| s.ms > 100.0)
                        .count();
                }
            }
        }
        bins.push(format!(
            "{:+.2}s {:.2}{}{}",
            f64::from(bin) * 0.25,
            n[0] as f64 / n[1].max(1) as f64,
            if slow > 0 {
                format!(" slow {slow}")
            } else {
                String::new()
            },
            if shed > 0 {
                format!(" shed {shed}")
            } else {
                String::new()
            }
        ));
    }
    println!(
        "  upgraded / not, by 250 ms from the new program answering (slow: over 100 ms): {}",
        bins.join(", ")
    );
    if std::env::var_os("UPGRADE_ENDPOINTS").is_some() {
        let each: Vec<String> = pushes
            .iter()
            .map(|push| {
                let at = push.4 + push.3.as_secs_f64();
                let n: Vec<usize> = (0..2)
                    .map(|node| window(&timeline, at, at + 2.0, Some(node)).requests)
                    .collect();
                format!("{:.2}", n[0] as f64 / n[1] as f64)
            })
            .collect();
        println!("  each push, 2 s from serving: {}", each.join(" "));
        for (name, a, b) in [("after", 0.0, 1.5), ("later", 3.0, 4.5)] {
            let mut by: std::collections::BTreeMap<(&str, usize), (usize, f64)> =
                Default::default();
            for push in &pushes {
                let at = push.4 + push.3.as_secs_f64();
                for s in timeline.iter().filter(|s| s.at >= at + a && s.at < at + b) {
                    let e = by.entry((s.endpoint, s.node)).or_default();
                    e.0 += 1;
                    e.1 += s.ms;
                }
            }
            for ((endpoint, node), (n, ms)) in by {
                println!(
                    "  {name} {endpoint:<40} node {node} n {n:>6} mean {:.2} ms",
                    ms / n as f64
                );
            }
        }
    }
    for (version, size, answered, serving, _) in &pushes {
        println!(
            "  {version:<7} {:>5.1} MB  push to live (the API's answer) {:>5.2} s, to the new program serving {:>5.2} s",
            *size as f64 / 1e6,
            answered.as_secs_f64(),
            serving.as_secs_f64()
        );
    }
    serving.sort_by(f64::total_cmp);
    println!(
        "  push to serving: median {:.2} s, slowest {:.2} s (goal under 5 s, the checks included)",
        serving[serving.len() / 2],
        serving[serving.len() - 1]
    );
}
