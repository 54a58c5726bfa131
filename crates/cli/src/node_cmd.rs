//! `nonstop node`: runs the hospital node.

use std::path::PathBuf;

use anyhow::Context;
use nonstop_node::{NodeConfig, start_on};

#[derive(clap::Args)]
pub struct Args {
    /// A TOML configuration file (see `NodeConfig`); without one, defaults that run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Enrol with this update server (`https://host:port`, with --server-fingerprint or
    /// --server-ca; `http://` on loopback only) before starting; needs --enrol-token.
    /// The credential is kept in the data directory, so later starts need neither.
    #[arg(long, requires = "enrol_token")]
    server: Option<String>,
    /// The one-time token `nonstop server node add` printed.
    #[arg(long, requires = "server")]
    enrol_token: Option<String>,
    /// Further server processes of the same fleet, tried in turn when one cannot be reached.
    #[arg(long, requires = "server")]
    also_server: Vec<String>,
    /// How to trust the update server's certificate (kept with the enrolment).
    #[command(flatten)]
    trust: crate::server_cmd::ServerTrust,
    /// A root of trust to start from (`nonstop trust root`), used when the node holds none yet;
    /// later roots come from the update server.
    #[arg(long)]
    trust_root: Option<PathBuf>,
    /// Do not seed the demo hospital into an empty database.
    #[arg(long)]
    no_seed: bool,
    /// Serve plain HTTP instead of HTTPS (`[tls] mode = "off"`): refused unless --listen is a
    /// loopback address.
    #[arg(long)]
    no_tls: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::read(path).map_err(anyhow::Error::msg)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        config.database_url = Some(url);
    }
    if args.no_seed {
        config.seed_demo = false;
    }
    if let Some(root) = &args.trust_root {
        config.trust_root.file = Some(root.clone());
    }
    if args.no_tls {
        config.tls = nonstop_tls::TlsConfig::off();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if let (Some(server), Some(token)) = (&args.server, &args.enrol_token) {
            let pin = args.trust.pin()?;
            let e =
                nonstop_node::link::enrol(server, &args.also_server, token, pin, &config.data_dir)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("enrolling with the update server")?;
            println!("enrolled with {server} as node {}", e.node);
        }
        // A socket handed over by systemd (deploy/systemd/nonstop-node.socket): it stays open
        // across this process's restarts.
        let handed = crate::handed_listener()?;
        let node = start_on(config, handed)
            .await
            .map_err(anyhow::Error::msg)
            .context("starting the node")?;
        if let Some(tls) = &node.tls {
            println!(
                "certificate {} ({}){}",
                tls.fingerprint,
                tls.cert_path.display(),
                if tls.generated { ", generated now" } else { "" }
            );
        }
        println!("nonstop node listening on {}", node.url);
        println!("API: {}/api/v1/openapi.json", node.url);
        println!(
            "live rules: {}",
            node.hospital
                .live_rules()
                .iter()
                .map(|(c, v, _)| format!("{c} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for line in &node.fell_back {
            println!("started on the standby: {line}");
        }
        if let Some(path) = &node.admin_password_file {
            println!("administrator: user admin, password in {}", path.display());
        }
        let hospital = node.hospital.clone();
        // Under systemd (Type=notify): serving now. Elsewhere NOTIFY_SOCKET is unset: nothing.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        // On Ctrl-C or SIGTERM: stop accepting, finish the requests in flight, then go.
        node.serve_until(async {
            let signal = crate::stop_signal().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            println!("{signal}: stopping");
        })
        .await;
        // The reads still queued for the read audit are written before the process ends.
        hospital
            .flush_reads()
            .await
            .context("writing the read audit before stopping")?;
        Ok(())
    })
}
