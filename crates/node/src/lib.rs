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
    /// The address it listens on.
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
    server: tokio::task::JoinHandle<()>,
    link: Option<tokio::task::JoinHandle<()>>,
    /// The agent, to know when every holder has let it go (and with it the store's lock).
    agent: std::sync::Weak<Agent>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    sweep: (
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    ),
}

impl RunningNode {
    /// Serves until the process is stopped.
    pub async fn wait(self) {
        let _ = self.server.await;
    }

    /// Serves until `stop` resolves (a signal), then stops as [`RunningNode::stop`] does: no
    /// new connection is accepted, requests in flight finish, the agent and its store are let
    /// go. Returns at once if the server ends by itself.
    pub async fn serve_until(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::select! {
            _ = &mut self.server => return,
            () = stop => {}
        }
        self.stop().await;
    }

    /// Stops serving (requests in flight finish first), stops the link and its updates under
    /// way, and returns once the agent has stopped and the version store is unlocked (another
    /// node may open it at once).
    pub async fn stop(mut self) {
        if let Some(link) = self.link.take() {
            link.abort();
            let _ = link.await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The screens' streams end so that the drain does not wait for them.
        self.hospital.end_streams();
        let _ = self.server.await;
        let _ = self.sweep.1.send(true);
        let _ = self.sweep.0.await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.agent.strong_count() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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
    let data = &config.data_dir;
    // Data at rest: the data directory is the node's alone; the program's own directory, the
    // trusted keys and the store must not be writable by others (checked where they are read).
    at_rest::private_dir(data)?;
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
        data,
        &trusted,
        &config.trust_root,
        verifier.clone(),
    )?);
    // A live version damaged on disk starts on its standby rather than keeping the hospital
    // closed; the reason is in the store's log and in what `start` returns.
    let (mut store, recovered) =
        Store::init_recovering(&data.join("store")).map_err(|e| e.to_string())?;
    let mut fell_back: Vec<String> = recovered
        .iter()
        .map(|r| format!("{} {} -> {}: {}", r.component, r.damaged, r.live, r.reason))
        .collect();
    // The shipped rule modules are part of this program, so they are checked against the key
    // they were built with, whatever the root of trust says of publishers.
    let mut shipped = TrustedKeys::new();
    shipped.add(nonstop_bundle::release_key());
    install_factory_rules(
        &mut store,
        &Verifier::new(shipped, config.bundle_limits.clone()),
    )?;

    let engine = RuleEngine::new(config.runtime.clone()).map_err(|e| e.to_string())?;
    let rules = Rules::new();
    let store_root = store.root().to_path_buf();
    let agent = Agent::start(
        store,
        verifier,
        engine,
        rules.clone(),
        config.checks.clone(),
    )
    .map_err(|e| e.to_string())?;
    fell_back.extend(
        agent
            .fell_back()
            .iter()
            .map(|f| format!("{} {} -> {}: {}", f.component, f.damaged, f.live, f.reason)),
    );

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
    let hospital = Hospital::open(&url, config.max_connections, rules.clone())
        .await
        .map_err(|e| e.to_string())?
        .with_policy(&config.policy);
    if config.seed_demo
        && hospital
            .seed_demo(hospital.business_date())
            .await
            .map_err(|e| e.to_string())?
    {
        tracing::info!("seeded the demo hospital");
    }
    let admin_password_file = if hospital.has_users().await.map_err(|e| e.to_string())? {
        None
    } else {
        let password = nonstop_hospital::auth::random_secret()[..24].to_owned();
        hospital
            .add_user("node", "admin", Role::Admin, None, &password)
            .await
            .map_err(|e| e.to_string())?;
        let path = data.join("admin-password");
        at_rest::write_private(&path, &format!("{password}\n"))?;
        Some(path)
    };

    // Unpaid holds lapse (their slots are released), and paid registrations of past sessions
    // that never checked in become no-shows: both in the background.
    let sweeper = hospital.clone();
    let every = Duration::from_secs(config.sweep_secs.max(1));
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

    let listener = match listener {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(&config.listen)
            .map_err(|e| format!("listening on {}: {e}", config.listen))?,
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls =
        nonstop_tls::ListenerTls::prepare(&config.tls, addr, data).map_err(|e| e.to_string())?;
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let agent = Arc::new(agent);
    let agent_weak = Arc::downgrade(&agent);
    let metrics = Arc::new(metrics::Metrics::new(rules.clone(), trust.clone()));
    let app = router(AppState {
        hospital: hospital.clone(),
        agent: Some(agent.clone()),
    })
    .route(
        "/metrics",
        axum::routing::get(metrics::serve).with_state(metrics.clone()),
    )
    .merge(nonstop_tls::certificate_route(tls.clone()))
    .route(
        "/api/v1/trust",
        axum::routing::get(trust::serve).with_state(trust.clone()),
    )
    .merge(nonstop_pages::hospital())
    .layer(axum::middleware::from_fn_with_state(
        metrics.clone(),
        metrics::count,
    ));
    // The update server link, on a task of its own: it hands bundles to the agent thread.
    let enrolment = link::Enrolment::read(data)?;
    if let Some(e) = &enrolment {
        e.check()
            .map_err(|e| format!("{}: {e}", data.join(link::ENROLMENT_FILE).display()))?;
    }
    let link = match enrolment {
        Some(enrolment) => Some(tokio::spawn(link::run(
            enrolment,
            config.link.clone(),
            link::NodeParts {
                agent,
                metrics,
                trust,
                fell_back: fell_back.clone(),
                store_root,
                downloads: data.join("downloads"),
            },
        ))),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving_tls = tls.clone();
    let limits = config.connections.clone();
    let server = tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        if let Err(e) = nonstop_tls::serve(listener, app, serving_tls.as_ref(), &limits, stop).await
        {
            tracing::error!(error = %e, "server failed");
        }
    });
    tracing::info!(%url, database = ?hospital.backend(), certificate = ?tls.as_ref().map(|t| &t.fingerprint), "node serving");
    Ok(RunningNode {
        addr,
        url,
        tls,
        hospital,
        rules,
        admin_password_file,
        fell_back,
        server,
        link,
        agent: agent_weak,
        shutdown: Some(tx),
        sweep: (sweep, stop_sweeping),
    })
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
