//! `nonstop node`: runs the hospital node.

use std::path::PathBuf;

use anyhow::Context;
use nonstop_node::{Launch, NodeConfig, launch};

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
    /// Run under a supervisor that holds the listening socket across program generations, so
    /// that the node program itself can be updated while it serves (a program bundle): the
    /// supervisor starts the program the version store records live, tests a new one beside it,
    /// hands it the socket, and puts the standby back if it fails. deploy/systemd runs this.
    #[arg(long, conflicts_with = "generation")]
    supervise: bool,
    /// Internal: run as a generation of a supervised node (`live` or `candidate`), on the
    /// sockets the supervisor handed over.
    #[arg(long, hide = true, value_parser = ["live", "candidate"])]
    generation: Option<String>,
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
    if args.supervise {
        return supervise(args, config, &runtime);
    }
    let how = match args.generation.as_deref() {
        Some(role) => Launch::Supervised(
            nonstop_program::Handed::take(if role == "candidate" {
                nonstop_program::Role::Candidate
            } else {
                nonstop_program::Role::Live
            })
            .map_err(anyhow::Error::msg)?,
        ),
        // A socket handed over by systemd (deploy/systemd/nonstop-node.socket): it stays open
        // across this process's restarts.
        None => Launch::Alone(crate::handed_listener()?),
    };
    let candidate = args.generation.as_deref() == Some("candidate");
    runtime.block_on(async {
        let stop = crate::stop_signal();
        if let (Some(server), Some(token)) = (&args.server, &args.enrol_token) {
            let pin = args.trust.pin()?;
            let e =
                nonstop_node::link::enrol(server, &args.also_server, token, pin, &config.data_dir)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("enrolling with the update server")?;
            println!("enrolled with {server} as node {}", e.node);
        }
        let node = launch(config, how)
            .await
            .map_err(anyhow::Error::msg)
            .context("starting the node")?;
        if candidate {
            // Not "listening on": it serves nobody until the supervisor says accept.
            println!(
                "candidate program under test, serving nobody, on {}",
                node.url
            );
            node.serve_until(async {
                let signal = stop.await;
                println!("{signal}: stopping");
            })
            .await;
            return Ok(());
        }
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
            let signal = stop.await;
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

/// `nonstop node --supervise`: enrols if asked, then runs the supervisor on the listening socket
/// (systemd's, or its own) until Ctrl-C or SIGTERM.
fn supervise(
    args: &Args,
    config: NodeConfig,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if let (Some(server), Some(token)) = (&args.server, &args.enrol_token) {
        let pin = args.trust.pin()?;
        let e = runtime
            .block_on(nonstop_node::link::enrol(
                server,
                &args.also_server,
                token,
                pin,
                &config.data_dir,
            ))
            .map_err(anyhow::Error::msg)
            .context("enrolling with the update server")?;
        println!("enrolled with {server} as node {}", e.node);
    }
    nonstop_store::at_rest::private_dir(&config.data_dir).map_err(anyhow::Error::msg)?;
    // Watched from now on, before any program generation starts.
    let stop = {
        let _runtime = runtime.enter();
        crate::stop_signal()
    };
    let listener = match crate::handed_listener()? {
        Some(l) => l,
        None => nonstop_tls::listen(&config.listen)
            .with_context(|| format!("listening on {}", config.listen))?,
    };
    // Every generation runs `nonstop node` with these, on the sockets the supervisor hands it.
    let mut generation_args: Vec<std::ffi::OsString> = vec!["node".into()];
    if let Some(c) = &args.config {
        generation_args.extend(["--config".into(), c.clone().into_os_string()]);
    }
    generation_args.extend([
        "--data-dir".into(),
        std::path::absolute(&config.data_dir)?.into_os_string(),
    ]);
    if let Some(root) = &args.trust_root {
        generation_args.extend(["--trust-root".into(), root.clone().into_os_string()]);
    }
    if args.no_seed {
        generation_args.push("--no-seed".into());
    }
    if args.no_tls {
        generation_args.push("--no-tls".into());
    }
    let supervisor = nonstop_program::SupervisorConfig {
        installed: std::env::current_exe().context("finding this program")?,
        args: generation_args,
        store: config.data_dir.join("store"),
        start_secs: config.program.start_secs,
        drain_secs: config.connections.drain_secs,
    };
    println!(
        "supervising the node program on {} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let result = nonstop_program::supervise(supervisor, listener, move |handle| {
            // Under systemd (Type=notify): serving now.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            let _ = handle_tx.send(handle);
        });
        let _ = ended_tx.send(());
        result
    });
    runtime.block_on(async {
        let mut ended = ended_rx;
        let handle = tokio::select! {
            h = handle_rx => h.ok(),
            _ = &mut ended => return,
        };
        tokio::select! {
            signal = stop => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                println!("{signal}: stopping the supervised node");
                if let Some(h) = handle {
                    h.stop();
                }
            }
            // It could not keep a program running: its error says why.
            _ = &mut ended => {}
        }
    });
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the supervisor panicked"))?
        .map_err(anyhow::Error::msg)
        .context("supervising the node program")
}
