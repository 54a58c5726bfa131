//! `nonstop node`: the hospital system with its update agent inside. With no configuration it
//! keeps everything in one data directory (an SQLite database in WAL mode, the version store,
//! trusted keys), seeds a demo hospital, installs the reference rule modules shipped with it, and
//! creates an administrator whose password it writes to `admin-password` (readable by its owner
//! only). `DATABASE_URL=postgres://...` selects PostgreSQL instead.
//!
//! A node enrolled with an update server ([`link`]) keeps one outbound stream to it, on a task of
//! its own, and installs what the server pushes through the agent; without one it works alone.

#![deny(missing_docs)]

pub mod link;
pub mod metrics;
pub mod trust;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nonstop_agent::Agent;
use nonstop_bundle::{BundleLimits, ComponentName, TrustedKeys, Verifier};
use nonstop_runtime::{CheckConfig, RuleEngine, Rules, RuntimeConfig};
use nonstop_store::{Store, at_rest};
use serde::Deserialize;
pub use trust::{NodeTrust, TrustConfig};

use nonstop_hospital::api::{AppState, router};
use nonstop_hospital::{Hospital, Policy, Role};

/// The rule modules a new node starts with, signed by the nonstop release key
/// (`modules/factory/release.pub`), and verified like any pushed bundle.
const FACTORY_BUNDLES: [&[u8]; 4] = [
    include_bytes!("../../../modules/factory/fees-1.0.0.nsb"),
    include_bytes!("../../../modules/factory/insurance-1.0.0.nsb"),
    include_bytes!("../../../modules/factory/triage-1.0.0.nsb"),
    include_bytes!("../../../modules/factory/quota-1.0.0.nsb"),
];

/// A node's configuration (a TOML file); every field has a default that runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the database (SQLite), version store and keys live.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// `sqlite://...` or `postgres://...`; default: SQLite in the data directory. (`nonstop
    /// node` sets it from the `DATABASE_URL` environment variable when that is set.)
    pub database_url: Option<String>,
    /// Database connections (PostgreSQL; SQLite reads on at most 4 and writes on its own, see
    /// `db.rs`).
    pub max_connections: u32,
    /// Extra trusted public keys (files or directories of `*.pub`), beside
    /// `<data_dir>/trusted-keys/` and the nonstop release key.
    pub trust: Vec<PathBuf>,
    /// Seed the demo hospital when the database is empty.
    pub seed_demo: bool,
    /// Bundle size limits.
    pub bundle_limits: BundleLimits,
    /// Rule call limits.
    pub runtime: RuntimeConfig,
    /// Candidate checks and watch window.
    pub checks: CheckConfig,
    /// The hospital's own settings (clock, insurance cap, token lifetime).
    pub policy: Policy,
    /// Seconds between sweeps that release expired holds and mark no-shows.
    pub sweep_secs: u64,
    /// The update server link's timing; the server and credential come from enrolment
    /// (`<data_dir>/server-link.json`).
    pub link: link::LinkConfig,
    /// HTTPS: a configured certificate, or a self-signed one generated in `<data_dir>/tls/`;
    /// `mode = "off"` serves plain HTTP, on a loopback address only.
    pub tls: nonstop_tls::TlsConfig,
    /// Time limits on client connections (TLS handshake, request headers, drain on stop).
    pub connections: nonstop_tls::ConnectionLimits,
    /// The root of trust to start from and how fresh the update server's statements must be.
    pub trust_root: TrustConfig,
    /// What a new node program must show before it takes over (a supervised node, issue 10).
    pub program: nonstop_program::ProgramChecks,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("nonstop-data"),
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            max_connections: 16,
            trust: Vec::new(),
            seed_demo: true,
            bundle_limits: BundleLimits::default(),
            runtime: RuntimeConfig::default(),
            checks: CheckConfig::default(),
            policy: Policy::default(),
            sweep_secs: 15,
            link: link::LinkConfig::default(),
            tls: nonstop_tls::TlsConfig::default(),
            connections: nonstop_tls::ConnectionLimits::default(),
            trust_root: TrustConfig::default(),
            program: nonstop_program::ProgramChecks::default(),
        }
    }
}

impl NodeConfig {
    /// Reads a TOML configuration file.
    pub fn read(path: &Path) -> Result<NodeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A running node.
pub struct RunningNode {
    /// The address it listens on (a candidate program: its private address, until it takes over).
    pub addr: SocketAddr,
    /// `https://<addr>` or, with TLS off, `http://<addr>`.
    pub url: String,
    /// The certificate it serves, when it serves HTTPS.
    pub tls: Option<nonstop_tls::ListenerTls>,
    /// The hospital core.
    pub hospital: Hospital,
    /// The live rules.
    pub rules: Rules,
    /// Where the administrator's first password was written, if this start created it.
    pub admin_password_file: Option<PathBuf>,
    /// Components that started on their standby because their live version was damaged or
    /// could not be loaded: `component damaged -> live: reason`.
    pub fell_back: Vec<String>,
    /// The supervisor's control channel, when a supervisor runs this program (issue 10).
    pub control: Option<Arc<nonstop_program::Control>>,
    parts: Arc<std::sync::Mutex<Parts>>,
}

/// What runs, and is stopped by [`RunningNode::stop`]. A candidate program starts its agent,
/// link and sweeper only when it takes over, so these are filled in as they start.
#[derive(Default)]
struct Parts {
    /// Each listener's server task and the sender that stops it.
    servers: Vec<(
        tokio::task::JoinHandle<()>,
        Option<tokio::sync::oneshot::Sender<()>>,
    )>,
    link: Option<tokio::task::JoinHandle<()>>,
    /// The agent, to know when every holder has let it go (and with it the store's lock).
    agent: std::sync::Weak<Agent>,
    sweep: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    )>,
    /// A candidate's takeover, under way.
    taking_over: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Serves until the process is stopped.
    pub async fn wait(self) {
        let first = self
            .parts
            .lock()
            .expect("not poisoned")
            .servers
            .first_mut()
            .map(|(server, _)| std::mem::replace(server, tokio::spawn(async {})));
        if let Some(server) = first {
            let _ = server.await;
        }
    }

    /// Serves until `stop` resolves (a signal), or the supervisor says drain, then stops as
    /// [`RunningNode::stop`] does: no new connection is accepted, requests in flight finish,
    /// the agent and its store are let go.
    pub async fn serve_until(self, stop: impl std::future::Future<Output = ()>) {
        match self.control.clone() {
            Some(control) => {
                tokio::select! {
                    () = stop => {}
                    () = control.drained() => tracing::info!("the supervisor handed the socket to the next program: draining"),
                }
            }
            None => stop.await,
        }
        self.stop().await;
    }

    /// Stops serving (requests in flight finish first), stops the link and its updates under
    /// way, and returns once the agent has stopped and the version store is unlocked (another
    /// node may open it at once).
    pub async fn stop(self) {
        let (servers, link, sweep, agent, taking_over) = {
            let mut parts = self.parts.lock().expect("not poisoned");
            (
                std::mem::take(&mut parts.servers),
                parts.link.take(),
                parts.sweep.take(),
                parts.agent.clone(),
                parts.taking_over.take(),
            )
        };
        if let Some(t) = taking_over {
            t.abort();
            let _ = t.await;
        }
        if let Some(link) = link {
            link.abort();
            let _ = link.await;
        }
        let mut waiting = Vec::new();
        for (server, stop) in servers {
            if let Some(tx) = stop {
                let _ = tx.send(());
            }
            waiting.push(server);
        }
        // The screens' streams end so that the drain does not wait for them.
        self.hospital.end_streams();
        for server in waiting {
            let _ = server.await;
        }
        if let Some((task, stop)) = sweep {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while agent.strong_count() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How a node process came to serve.
pub enum Launch {
    /// On its own (`nonstop node`): on `Some` socket someone holds open across restarts
    /// (systemd's socket activation), or on `listen`.
    Alone(Option<std::net::TcpListener>),
    /// As a generation of a supervised node (`nonstop node --supervise`): live from the start,
    /// or a candidate that serves nobody until the supervisor says accept.
    Supervised(nonstop_program::Handed),
}

/// Starts a node: store, rules, agent, database, API, listening on `config.listen`.
pub async fn start(config: NodeConfig) -> Result<RunningNode, String> {
    start_on(config, None).await
}

/// [`start`], serving on `listener` when one is given: a socket someone else holds open across
/// the node's restarts (systemd's socket activation, `deploy/systemd/`), so that connections
/// arriving between two node processes wait instead of being refused.
pub async fn start_on(
    config: NodeConfig,
    listener: Option<std::net::TcpListener>,
) -> Result<RunningNode, String> {
    launch(config, Launch::Alone(listener)).await
}

/// What every start shares, and what a candidate's takeover needs later.
struct Ready {
    config: NodeConfig,
    verifier: Verifier,
    trust: Arc<NodeTrust>,
    engine: RuleEngine,
    rules: Rules,
    hospital: Hospital,
    metrics: Arc<metrics::Metrics>,
    sample: Arc<nonstop_program::Sample>,
    agent_slot: nonstop_hospital::api::AgentSlot,
    /// The app without the metrics and sampling layers: the contract's reference answers.
    plain_app: axum::Router,
    app: axum::Router,
    fell_back: Vec<String>,
}

/// Starts a node as `how` says.
pub async fn launch(config: NodeConfig, how: Launch) -> Result<RunningNode, String> {
    let data = config.data_dir.clone();
    // Data at rest: the data directory is the node's alone; the program's own directory, the
    // trusted keys and the store must not be writable by others (checked where they are read).
    at_rest::private_dir(&data)?;
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
    {
        at_rest::refuse_writable_by_others(&dir, "the directory of the running program")?;
    }
    std::fs::create_dir_all(data.join("trusted-keys"))
        .map_err(|e| format!("creating {}: {e}", data.display()))?;
    let mut trusted = TrustedKeys::new();
    trusted.add(nonstop_bundle::release_key());
    trusted
        .load(&data.join("trusted-keys"))
        .map_err(|e| e.to_string())?;
    for path in &config.trust {
        trusted.load(path).map_err(|e| e.to_string())?;
    }
    let verifier = Verifier::new(trusted.clone(), config.bundle_limits.clone());
    // The keys above are the implicit root; a root of trust, once held, decides instead.
    let trust = Arc::new(NodeTrust::open(
        &data,
        &trusted,
        &config.trust_root,
        verifier.clone(),
    )?);
    let engine = RuleEngine::new(config.runtime.clone()).map_err(|e| e.to_string())?;
    let rules = Rules::new();
    let candidate =
        matches!(&how, Launch::Supervised(h) if h.role == nonstop_program::Role::Candidate);

    // A candidate program leaves the store to the live one: it loads the rules the store
    // records, reading it only. Every other start owns the store and starts the agent.
    let mut fell_back = Vec::new();
    let owned_store = if candidate {
        nonstop_agent::load_installed(&data.join("store"), &engine, &rules)
            .map_err(|e| e.to_string())?;
        None
    } else {
        Some(open_store(&data, &config, &mut fell_back)?)
    };
    if let Launch::Supervised(h) = &how
        && let Some(reason) = &h.fell_back
    {
        fell_back.push(format!("{} -> standby: {reason}", nonstop_agent::PROGRAM));
    }

    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            // Made 0600 before SQLite opens it: its WAL and shared-memory files take the
            // database file's mode.
            let db = data.join("hospital.db");
            at_rest::private_file(&db)?;
            format!("sqlite://{}?mode=rwc", db.display())
        }
    };
    // A supervised program leaves contract migrations pending: the program before it may come
    // back as the standby (see `Migrations::ExpandOnly`); it applies them once it is settled.
    let migrations = match &how {
        Launch::Supervised(_) => nonstop_hospital::Migrations::ExpandOnly,
        Launch::Alone(_) => nonstop_hospital::Migrations::All,
    };
    let hospital = Hospital::open_with(&url, config.max_connections, rules.clone(), migrations)
        .await
        .map_err(|e| e.to_string())?
        .with_policy(&config.policy);
    let mut admin_password_file = None;
    if candidate {
        // Under test it answers replays of reads only; it takes writes once it takes over.
        hospital.hold_writes(true);
    } else {
        if config.seed_demo
            && hospital
                .seed_demo(hospital.business_date())
                .await
                .map_err(|e| e.to_string())?
        {
            tracing::info!("seeded the demo hospital");
        }
        if !hospital.has_users().await.map_err(|e| e.to_string())? {
            let password = nonstop_hospital::auth::random_secret()[..24].to_owned();
            hospital
                .add_user("node", "admin", Role::Admin, None, &password)
                .await
                .map_err(|e| e.to_string())?;
            let path = data.join("admin-password");
            at_rest::write_private(&path, &format!("{password}\n"))?;
            admin_password_file = Some(path);
        }
    }

    let metrics = Arc::new(metrics::Metrics::new(rules.clone(), trust.clone()));
    let sample = nonstop_program::Sample::new(config.program.sample_every, config.program.replay);
    let agent_slot = nonstop_hospital::api::AgentSlot::default();
    let with_agent = |agent: nonstop_hospital::api::AgentSlot| {
        router(AppState {
            hospital: hospital.clone(),
            agent,
        })
        .route(
            "/metrics",
            axum::routing::get(metrics::serve).with_state(metrics.clone()),
        )
        .route(
            "/api/v1/trust",
            axum::routing::get(trust::serve).with_state(trust.clone()),
        )
        .route(
            "/api/v1/program",
            axum::routing::get(serve_program).with_state(Arc::new(ProgramInfo {
                version: program_version(match &how {
                    Launch::Supervised(h) => h.version.clone(),
                    Launch::Alone(_) => None,
                })
                .to_string(),
                pid: std::process::id(),
                supervised: matches!(how, Launch::Supervised(_)),
            })),
        )
        .merge(nonstop_pages::hospital())
    };
    // The contract's reference answers come from a router of its own, without the agent: the
    // agent holds the program host that holds this router.
    let plain_app = with_agent(nonstop_hospital::api::AgentSlot::default());
    let app = with_agent(agent_slot.clone())
        .layer(axum::middleware::from_fn_with_state(
            sample.clone(),
            nonstop_program::sample::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            metrics::count,
        ));
    let mut ready = Ready {
        config,
        verifier,
        trust,
        engine,
        rules,
        hospital,
        metrics,
        sample,
        agent_slot,
        plain_app,
        app,
        fell_back,
    };
    let parts = Arc::new(std::sync::Mutex::new(Parts::default()));
    let (listener, control) = match how {
        Launch::Alone(listener) => (listener, None),
        Launch::Supervised(h) if candidate => {
            // Serves nobody: plain HTTP on its private loopback socket, for its tests only.
            let private = h.private.expect("a candidate is handed a private socket");
            let addr = private.local_addr().map_err(|e| e.to_string())?;
            let app = ready.app.clone();
            serve(&parts, private, app, None, &ready.config.connections);
            h.control
                .tell(&nonstop_program::protocol::ToSupervisor::Serving {
                    addr: addr.to_string(),
                })?;
            tracing::info!(%addr, version = ?h.version, "candidate program serving nobody, on its private socket");
            let running = RunningNode {
                addr,
                url: format!("http://{addr}"),
                tls: None,
                hospital: ready.hospital.clone(),
                rules: ready.rules.clone(),
                admin_password_file: None,
                fell_back: ready.fell_back.clone(),
                control: Some(h.control.clone()),
                parts: parts.clone(),
            };
            let control = h.control.clone();
            let shared = h.shared;
            let version = h.version;
            let takeover_parts = parts.clone();
            let task = tokio::spawn(async move {
                let warm = control.accepted().await;
                if let Ok(tokens) = serde_json::from_value(warm) {
                    ready.hospital.remember_tokens(tokens);
                }
                if let Err(e) =
                    take_over(ready, shared, control.clone(), version, takeover_parts).await
                {
                    tracing::error!(error = %e, "the candidate program could not take over");
                    // Exiting tells the supervisor, which keeps the live program serving.
                    std::process::exit(70);
                }
            });
            parts.lock().expect("not poisoned").taking_over = Some(task);
            return Ok(running);
        }
        Launch::Supervised(h) => (Some(h.shared), Some((h.control, h.version))),
    };
    let store = owned_store.expect("a node that is not a candidate owns its store");
    let listener = match listener {
        Some(listener) => listener,
        None => nonstop_tls::listen(&ready.config.listen)
            .map_err(|e| format!("listening on {}: {e}", ready.config.listen))?,
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = nonstop_tls::ListenerTls::prepare(&ready.config.tls, addr, &data)
        .map_err(|e| e.to_string())?;
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let host = control
        .as_ref()
        .map(|(c, v)| program_host(&ready, c.clone(), v.clone()));
    start_owner(&mut ready, store, host, &parts)?;
    let app = ready
        .app
        .clone()
        .merge(nonstop_tls::certificate_route(tls.clone()));
    serve(
        &parts,
        listener,
        app,
        tls.as_ref(),
        &ready.config.connections,
    );
    if let Some((c, _)) = &control {
        c.tell(&nonstop_program::protocol::ToSupervisor::Serving {
            addr: addr.to_string(),
        })?;
    }
    tracing::info!(%url, database = ?ready.hospital.backend(), certificate = ?tls.as_ref().map(|t| &t.fingerprint), "node serving");
    Ok(RunningNode {
        addr,
        url,
        tls,
        hospital: ready.hospital.clone(),
        rules: ready.rules.clone(),
        admin_password_file,
        fell_back: ready.fell_back.clone(),
        control: control.map(|(c, _)| c),
        parts,
    })
}

/// `GET /api/v1/program`: which program answers, public like the certificate.
#[derive(Clone, serde::Serialize)]
struct ProgramInfo {
    /// Its version: the version store's record of it, or the version it was built as.
    version: String,
    /// Its process.
    pid: u32,
    /// Whether a supervisor runs it (only then can a program bundle replace it).
    supervised: bool,
}

async fn serve_program(
    axum::extract::State(info): axum::extract::State<Arc<ProgramInfo>>,
) -> axum::Json<ProgramInfo> {
    axum::Json(info.as_ref().clone())
}

/// Opens the version store (a damaged live version starts on its standby, said in `fell_back`)
/// and installs the shipped rule modules it lacks.
fn open_store(
    data: &Path,
    config: &NodeConfig,
    fell_back: &mut Vec<String>,
) -> Result<Store, String> {
    // A live version damaged on disk starts on its standby rather than keeping the hospital
    // closed; the reason is in the store's log and in what `start` returns.
    let (mut store, recovered) =
        Store::init_recovering(&data.join("store")).map_err(|e| e.to_string())?;
    fell_back.extend(
        recovered
            .iter()
            .map(|r| format!("{} {} -> {}: {}", r.component, r.damaged, r.live, r.reason)),
    );
    // The shipped rule modules are part of this program, so they are checked against the key
    // they were built with, whatever the root of trust says of publishers.
    let mut shipped = TrustedKeys::new();
    shipped.add(nonstop_bundle::release_key());
    install_factory_rules(
        &mut store,
        &Verifier::new(shipped, config.bundle_limits.clone()),
    )?;
    Ok(store)
}

/// The program's own version: the store's record of it, or, for the program installed on disk,
/// the version it was built as.
fn program_version(handed: Option<semver::Version>) -> semver::Version {
    handed.unwrap_or_else(|| {
        env!("CARGO_PKG_VERSION")
            .parse()
            .expect("the crate version is semver")
    })
}

fn program_host(
    ready: &Ready,
    control: Arc<nonstop_program::Control>,
    version: Option<semver::Version>,
) -> Arc<dyn nonstop_agent::ProgramHost> {
    let metrics = ready.metrics.clone();
    let hospital = ready.hospital.clone();
    let verified = ready.hospital.clone();
    // The contract migrations a program starting beside another left pending: applied once it
    // is settled, which retires the program before it (see `Migrations::ExpandOnly`).
    let settle: nonstop_program::generation::Settle = Box::new(move || {
        let hospital = hospital.clone();
        Box::pin(async move {
            if !hospital
                .contract_migrations_pending()
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(None);
            }
            let applied = hospital
                .apply_contract_migrations()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(format!(
                "contract migrations applied: {}",
                applied
                    .iter()
                    .map(|m| m.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })
    });
    let hooks = nonstop_program::Hooks {
        counts: Box::new(move || metrics.totals()),
        settle,
        // The tokens it verified: the program after it need not verify them with argon2 again.
        warm: Box::new(move || {
            serde_json::to_value(verified.remembered_tokens()).unwrap_or_default()
        }),
    };
    Arc::new(nonstop_program::SupervisedHost::new(
        control,
        program_version(version),
        ready.config.program.clone(),
        ready.sample.clone(),
        ready.plain_app.clone(),
        hooks,
    ))
}

/// Starts what the owner of the version store runs: the agent, the link to the update server,
/// and the sweeper.
fn start_owner(
    ready: &mut Ready,
    store: Store,
    host: Option<Arc<dyn nonstop_agent::ProgramHost>>,
    parts: &Arc<std::sync::Mutex<Parts>>,
) -> Result<(), String> {
    let data = ready.config.data_dir.clone();
    let store_root = store.root().to_path_buf();
    let agent = Agent::start_with(
        store,
        ready.verifier.clone(),
        ready.engine.clone(),
        ready.rules.clone(),
        ready.config.checks.clone(),
        host,
    )
    .map_err(|e| e.to_string())?;
    ready.fell_back.extend(
        agent
            .fell_back()
            .iter()
            .map(|f| format!("{} {} -> {}: {}", f.component, f.damaged, f.live, f.reason)),
    );
    let agent = Arc::new(agent);
    let _ = ready.agent_slot.set(agent.clone());
    let mut p = parts.lock().expect("not poisoned");
    p.agent = Arc::downgrade(&agent);

    // Unpaid holds lapse (their slots are released), and paid registrations of past sessions
    // that never checked in become no-shows: both in the background.
    let sweeper = ready.hospital.clone();
    let every = Duration::from_secs(ready.config.sweep_secs.max(1));
    let (stop_sweeping, mut sweeping_stopped) = tokio::sync::watch::channel(false);
    let sweep = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = sweeping_stopped.changed() => return,
            }
            match sweeper.release_expired_holds().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "released expired holds"),
                Err(e) => tracing::warn!(error = %e, "releasing expired holds failed"),
            }
            match sweeper
                .mark_no_shows(&sweeper.business_date().to_string())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(marked = n, "marked no-shows"),
                Err(e) => tracing::warn!(error = %e, "marking no-shows failed"),
            }
        }
    });
    p.sweep = Some((sweep, stop_sweeping));

    // The update server link, on a task of its own: it hands bundles to the agent thread.
    let enrolment = link::Enrolment::read(&data)?;
    if let Some(e) = &enrolment {
        e.check()
            .map_err(|e| format!("{}: {e}", data.join(link::ENROLMENT_FILE).display()))?;
    }
    if let Some(enrolment) = enrolment {
        p.link = Some(tokio::spawn(link::run(
            enrolment,
            ready.config.link.clone(),
            link::NodeParts {
                agent,
                metrics: ready.metrics.clone(),
                trust: ready.trust.clone(),
                fell_back: ready.fell_back.clone(),
                store_root,
                downloads: data.join("downloads"),
            },
        )));
    }
    Ok(())
}

/// Serves `app` on `listener` until its stop sender fires.
fn serve(
    parts: &Arc<std::sync::Mutex<Parts>>,
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<&nonstop_tls::ListenerTls>,
    limits: &nonstop_tls::ConnectionLimits,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tls = tls.cloned();
    let limits = limits.clone();
    let server = tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        if let Err(e) = nonstop_tls::serve(listener, app, tls.as_ref(), &limits, stop).await {
            tracing::error!(error = %e, "server failed");
        }
    });
    parts
        .lock()
        .expect("not poisoned")
        .servers
        .push((server, Some(tx)));
}

/// A tested candidate takes over: it takes writes, accepts on the shared socket, says so (the
/// supervisor then drains the old program), and, once the old program has let the version store
/// go, starts its agent (which resumes this program's watch window), its link and sweeper.
async fn take_over(
    mut ready: Ready,
    shared: std::net::TcpListener,
    control: Arc<nonstop_program::Control>,
    version: Option<semver::Version>,
    parts: Arc<std::sync::Mutex<Parts>>,
) -> Result<(), String> {
    ready.hospital.hold_writes(false);
    let addr = shared.local_addr().map_err(|e| e.to_string())?;
    let tls = nonstop_tls::ListenerTls::prepare(&ready.config.tls, addr, &ready.config.data_dir)
        .map_err(|e| e.to_string())?;
    let app = ready
        .app
        .clone()
        .merge(nonstop_tls::certificate_route(tls.clone()));
    serve(&parts, shared, app, tls.as_ref(), &ready.config.connections);
    control.tell(&nonstop_program::protocol::ToSupervisor::Serving {
        addr: addr.to_string(),
    })?;
    tracing::info!(%addr, version = ?version, "the new program accepts on the shared socket");
    // The old program lets the store go once it has drained.
    let data = ready.config.data_dir.clone();
    let deadline =
        std::time::Instant::now() + Duration::from_secs(ready.config.connections.drain_secs + 30);
    let store = loop {
        let mut fell_back = Vec::new();
        match open_store(&data, &ready.config, &mut fell_back) {
            Ok(store) => {
                ready.fell_back.extend(fell_back);
                break store;
            }
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(format!("the version store stayed locked: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let host = program_host(&ready, control, version);
    start_owner(&mut ready, store, Some(host), &parts)?;
    tracing::info!("the new program runs its update agent");
    Ok(())
}

/// Installs each shipped rule module whose component has no live version yet: verified (signature,
/// digest, limits), staged and promoted. There is no live traffic to shadow and no older version
/// to compare with; the agent checks its interface (check 1) when it loads it, and the modules'
/// test vectors are checked against the very same bytes by the project's tests.
fn install_factory_rules(store: &mut Store, verifier: &Verifier) -> Result<(), String> {
    for bytes in FACTORY_BUNDLES {
        let bundle = verifier
            .open(bytes, None)
            .map_err(|e| format!("a shipped rule bundle is refused: {e}"))?;
        let name: &ComponentName = &bundle.manifest().component;
        let state = store.component(name).ok().cloned();
        if state.as_ref().is_some_and(|s| s.live.is_some()) {
            continue;
        }
        if let Some(unfinished) = state.and_then(|s| s.candidate) {
            // A node stopped between staging and promoting this install: set that aside and
            // install again from the verified bundle.
            store
                .reject(
                    name,
                    Some(&unfinished.version),
                    "an install of the shipped rule module that did not finish",
                )
                .map_err(|e| e.to_string())?;
        }
        store.stage(&bundle).map_err(|e| e.to_string())?;
        store.promote(name, None).map_err(|e| e.to_string())?;
        tracing::info!(component = %name, version = %bundle.manifest().version, "installed the shipped rule module");
    }
    Ok(())
}
