//! `nonstop`: the command line for the people who run nonstop. It only parses arguments and wires
//! the library crates together; what each command does lives in those crates.

mod bundle_cmd;
mod demo_cmd;
mod keygen;
mod loadgen_cmd;
mod node_cmd;
mod rules_cmd;
mod server_cmd;
mod store_cmd;
mod trust_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Update a running hospital information system without stopping it.
///
/// nonstop installs signed update bundles into a running node: each update is staged beside the
/// live version as a candidate, tested, and only then made live, keeping the previous version as
/// standby for instant rollback.
#[derive(Parser)]
#[command(name = "nonstop", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Log more: -v for each update step, -vv for debugging.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start here: an update server, three hospital nodes under load, and four updates pushed
    /// into them in waves while they serve; ends with a report.
    Demo(demo_cmd::Args),
    /// Run the update server, enrol nodes, add operators, sign in.
    Server(server_cmd::ServerArgs),
    /// Upload a signed bundle to the update server as a release.
    Publish(server_cmd::PublishArgs),
    /// Roll a release out to the fleet in waves; pause, resume, abort, roll back.
    #[command(subcommand)]
    Rollout(server_cmd::RolloutCommand),
    /// The fleet's nodes and rollouts, from the update server.
    Status(server_cmd::StatusArgs),
    /// The update server's audit chain.
    #[command(subcommand)]
    Audit(server_cmd::AuditCommand),
    /// Create an ed25519 publisher key pair (<OUT>.key, secret; <OUT>.pub, to give to nodes).
    Keygen(keygen::Args),
    /// Make, sign and check roots of trust (publisher keys, k of n, rotation, revocation), and
    /// give the next one to the update server.
    #[command(subcommand)]
    Trust(trust_cmd::Command),
    /// Create, inspect, co-sign and verify signed update bundles.
    #[command(subcommand)]
    Bundle(bundle_cmd::Command),
    /// Look at and change a node's version store (live / candidate / standby).
    #[command(subcommand)]
    Store(store_cmd::Command),
    /// Run the hospital node: registration, payment, queue, with its update agent inside.
    Node(node_cmd::Args),
    /// Drive a node with mixed outpatient traffic; report rates and latencies, check every record.
    Loadgen(loadgen_cmd::Args),
    /// Check rule-module bundles and call live rules (fees, insurance, triage, quota).
    #[command(subcommand)]
    Rules(rules_cmd::Command),
}

/// Where the version store is, for every command that uses one.
#[derive(clap::Args, Clone)]
pub struct StoreArg {
    /// The version store directory.
    #[arg(
        long = "store",
        env = "NONSTOP_STORE",
        default_value = "nonstop-data/store"
    )]
    pub path: PathBuf,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo_cmd::run_cmd(&args),
        Command::Server(args) => server_cmd::run(args),
        Command::Publish(args) => server_cmd::publish(&args),
        Command::Rollout(cmd) => server_cmd::rollout(cmd),
        Command::Status(args) => server_cmd::status(&args),
        Command::Audit(cmd) => server_cmd::audit(cmd),
        Command::Keygen(args) => keygen::run(&args),
        Command::Bundle(cmd) => bundle_cmd::run(cmd),
        Command::Trust(cmd) => trust_cmd::run(cmd),
        Command::Store(cmd) => store_cmd::run(cmd),
        Command::Rules(cmd) => rules_cmd::run(cmd),
        Command::Node(args) => node_cmd::run(&args),
        Command::Loadgen(args) => loadgen_cmd::run_cmd(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The listening socket systemd handed over (`LISTEN_FDS`, fd 3), if any; says so.
pub(crate) fn handed_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    use anyhow::Context;
    let handed = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("taking the listening socket handed over in LISTEN_FDS")?;
    if let Some(l) = &handed {
        println!(
            "serving on the socket handed over ({})",
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        );
    }
    Ok(handed)
}

/// Watches for Ctrl-C or SIGTERM (what `systemctl stop` and container runtimes send) from the
/// moment it is called, and resolves saying which: the node and the server drain, flush and stop
/// the same way on either. Call it before serving (inside the runtime): a signal that arrives
/// before the handlers are installed ends the process at once, without its drain.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = interrupt.recv() => "interrupted",
                _ = term.recv() => "terminated",
            },
            (Err(e), Ok(mut interrupt)) => {
                tracing::warn!(error = %e, "cannot watch for SIGTERM; Ctrl-C only");
                interrupt.recv().await;
                "interrupted"
            }
            (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot watch for Ctrl-C; SIGTERM only");
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        term.recv().await;
                        "terminated"
                    }
                    Err(_) => std::future::pending().await,
                }
            }
        }
    }
}
