//! `nonstop loadgen`: drives a node with mixed traffic, closed-loop (desks, doctors and screens
//! each waiting for their answer) or open-loop at a fixed rate (`--rate`), and checks the
//! records it acknowledged.

use std::time::Duration;

use anyhow::Context;
use nonstop_loadgen::{LoadConfig, NodeTarget, OpenLoop, Target, run, run_open_loop};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Registration desks working at once (patient, registration, payment, check-in).
    #[arg(long, default_value_t = 12)]
    desks: usize,
    /// Doctors calling patients at once.
    #[arg(long, default_value_t = 4)]
    doctors: usize,
    /// Waiting-room screens polling at once.
    #[arg(long, default_value_t = 4)]
    screens: usize,
    /// Open loop: this many requests a second, each sent when due whatever the answers (a
    /// registration desk's steps; latency counted from when each was due), instead of desks,
    /// doctors and screens. `503 overloaded` answers are counted as shed, not failed.
    #[arg(long, conflicts_with_all = ["desks", "doctors", "screens"])]
    rate: Option<f64>,
    /// Drive these running nodes (`http://host:port`, repeat for several) instead of a node of
    /// its own; needs --token or --password.
    #[arg(long)]
    target: Vec<String>,
    /// An administrator's token on every --target node.
    #[arg(long, env = "NONSTOP_NODE_TOKEN", conflicts_with = "password")]
    token: Option<String>,
    /// The `admin` account's password on every --target node (the file `admin-password` holds).
    #[arg(long, env = "NONSTOP_NODE_PASSWORD")]
    password: Option<String>,
    /// For a node of its own: a PostgreSQL URL with an empty schema; default SQLite in a
    /// temporary directory.
    #[arg(long, env = "LOADGEN_DATABASE_URL", conflicts_with = "target")]
    database_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The --target nodes' certificate fingerprint (`sha256:...`, as `nonstop node` printed it).
    #[arg(long, requires = "target", conflicts_with = "target_ca")]
    target_fingerprint: Option<String>,
    /// A CA certificate (PEM) that issued the --target nodes' certificates.
    #[arg(long, requires = "target")]
    target_ca: Option<std::path::PathBuf>,
}

pub fn run_cmd(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let trust = match (&args.target_fingerprint, &args.target_ca) {
        (Some(f), _) => Some(nonstop_tls::ServerPin::fingerprint(f)?),
        (None, Some(ca)) => Some(nonstop_tls::ServerPin::ca_file(ca)?),
        (None, None) => None,
    };
    let target = if args.target.is_empty() {
        Target::OwnNode(args.database_url.clone())
    } else {
        let client = nonstop_tls::http_client(trust.as_ref())?;
        let mut nodes = Vec::new();
        for url in &args.target {
            let admin_token = match (&args.token, &args.password) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => runtime
                    .block_on(nonstop_loadgen::login_as(&client, url, "admin", p.trim()))
                    .map_err(anyhow::Error::msg)?,
                (None, None) => anyhow::bail!("--target needs --token or --password"),
            };
            nodes.push(NodeTarget {
                url: url.clone(),
                admin_token,
            });
        }
        Target::Nodes(nodes)
    };
    let config = LoadConfig {
        target,
        duration: Duration::from_secs(args.seconds),
        desks: args.desks,
        doctors: args.doctors,
        screens: args.screens,
        trust: trust.clone(),
    };
    let report = match args.rate {
        Some(rate) => runtime.block_on(run_open_loop(config, OpenLoop { rate })),
        None => runtime.block_on(run(config)),
    }
    .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(offered) = &report.offered {
            println!(
                "open loop: {:.0} requests/s offered, {} issued over {:.1} s, sent late by p99 {:.1} ms",
                offered.rate, offered.issued, offered.seconds, offered.late_p99_ms
            );
        }
        println!(
            "{}: {:.0} requests/s over {:.1} s, {} requests, {} errors, {} refused, {} shed, p99 {:.1} ms (not counting shed)",
            report.database,
            report.requests_per_second,
            report.seconds,
            report.requests,
            report.errors,
            report.refused,
            report.shed,
            report.p99_ms
        );
        if report.shed > 0 {
            println!(
                "{} requests shed (503 overloaded), answered in p99 {:.1} ms",
                report.shed, report.shed_p99_ms
            );
        }
        println!(
            "{:<36} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9}",
            "endpoint", "requests", "errors", "refused", "shed", "p50 ms", "p99 ms"
        );
        for e in &report.endpoints {
            println!(
                "{:<36} {:>9} {:>7} {:>7} {:>7} {:>9.2} {:>9.2}",
                e.endpoint, e.requests, e.errors, e.refused, e.shed, e.p50_ms, e.p99_ms
            );
        }
        for failure in &report.failures {
            println!("failed: {failure}");
        }
        let r = &report.records;
        println!(
            "records: {} of {} acknowledged registrations and {} of {} acknowledged payments in the database; {} invoices paid twice",
            r.registrations_found,
            report.acknowledged.0,
            r.payments_found,
            report.acknowledged.1,
            r.invoices_paid_twice
        );
    }
    let r = &report.records;
    if r.registrations_found != report.acknowledged.0
        || r.payments_found != report.acknowledged.1
        || r.invoices_paid_twice != 0
    {
        anyhow::bail!("lost or duplicated records");
    }
    if report.errors > 0 || report.refused > 0 {
        anyhow::bail!(
            "{} requests failed and {} were refused",
            report.errors,
            report.refused
        );
    }
    Ok(())
}
