//! The update server: the patent's first step, the server that pushes the update file to the
//! running system, for a whole fleet of nodes.
//!
//! - [`releases`]: publishers upload signed bundles; each is verified against the trusted
//!   publisher keys, stored once by digest, and never altered;
//! - [`auth`]: operators with roles and tokens; nodes enrol with a one-time token;
//! - [`fleet`]: nodes connect outbound on one WebSocket each and are pushed what is due;
//! - [`rollouts`]: a release goes out in waves, halts on the first node that does not take it,
//!   and can be paused, resumed, aborted or rolled back;
//! - [`audit`]: an append-only hash chain of everything that happened;
//! - [`trust`]: the root of trust (publisher keys, thresholds, rotation, revocation) and the
//!   signed statements of what is current, carried to every node;
//! - [`traffic`]: each node's requests, errors and p99 around its updates, from the samples it
//!   sends over its link;
//! - [`api`]: the HTTP API under `/api/v1`, and `/metrics`.
//!
//! All state is in the database (SQLite by default, PostgreSQL for several processes), so any
//! server process can serve any node, and one that dies loses nothing.
//!
//! *Not* here: installing anything (the node's agent does), the command line.

#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
mod db;
mod error;
pub mod fleet;
pub mod metrics;
pub mod releases;
pub mod rollouts;
pub mod traffic;
pub mod trust;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nonstop_bundle::{BundleLimits, TrustedKeys};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

pub use auth::OperatorRole;
pub use db::Backend;
pub use error::ServerError;

/// The server's configuration (a TOML file); every field has a default that runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the database (SQLite), trusted keys and the first administrator's password live.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// `sqlite://...` or `postgres://...`; default SQLite in the data directory.
    pub database_url: Option<String>,
    /// Database connections.
    pub max_connections: u32,
    /// Trusted publisher keys (files or directories of `*.pub`), beside
    /// `<data_dir>/trusted-keys/` and the nonstop release key.
    pub trust: Vec<PathBuf>,
    /// Bundle size limits.
    pub bundle_limits: BundleLimits,
    /// How long an operator's token lives, in hours.
    pub token_lifetime_hours: u32,
    /// Seconds between pings on each node's link, and between refreshes of `last_seen`.
    pub heartbeat_secs: u64,
    /// Milliseconds between dispatch passes when nothing wakes the dispatcher sooner.
    pub dispatch_ms: u64,
    /// Hours the nodes' traffic samples are kept.
    pub sample_retention_hours: u32,
    /// HTTPS: a configured certificate, or a self-signed one generated in `<data_dir>/tls/`
    /// whose fingerprint nodes pin at enrolment; `mode = "off"` serves plain HTTP, on a loopback
    /// address only.
    pub tls: nonstop_tls::TlsConfig,
    /// Time limits on client connections (TLS handshake, request headers, drain on stop).
    pub connections: nonstop_tls::ConnectionLimits,
    /// A root of trust to start from (`nonstop trust`), used when the server holds none yet.
    pub trust_root: Option<PathBuf>,
    /// Seconds between the signed statements of what is current sent to every node.
    pub statement_secs: u64,
    /// How long a statement holds: a node refuses it after this (a replayed old statement).
    pub statement_valid_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("nonstop-server"),
            listen: "127.0.0.1:9090".into(),
            database_url: None,
            max_connections: 8,
            trust: Vec::new(),
            bundle_limits: BundleLimits::default(),
            token_lifetime_hours: 12,
            heartbeat_secs: 5,
            dispatch_ms: 1000,
            sample_retention_hours: 168,
            tls: nonstop_tls::TlsConfig::default(),
            connections: nonstop_tls::ConnectionLimits::default(),
            trust_root: None,
            statement_secs: 60,
            statement_valid_secs: 86_400,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML configuration file.
    pub fn read(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The update server: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    config: ServerConfig,
    trust: trust::ServerTrust,
    /// This process's name in `node.connected_to`.
    instance: String,
    connections: fleet::Connections,
    writes: db::WriteLock,
    wake: tokio::sync::Notify,
    bundles: Mutex<HashMap<String, axum::body::Bytes>>,
    metrics: metrics::Metrics,
    /// Set when the server stops: every node link closes.
    closing: tokio::sync::watch::Sender<bool>,
    dispatching: tokio::sync::Mutex<()>,
}

impl Server {
    /// A counter that moves whenever this process changed something: a commit, a node's
    /// connection or hello. The console's event stream waits on it.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.writes.changes()
    }
}

/// A node as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// Whether it has exchanged its enrolment token.
    pub enrolled: bool,
    /// Whether a server process holds its link now.
    pub connected: bool,
    /// Last heard of, milliseconds since the Unix epoch.
    pub last_seen: Option<i64>,
    /// Its versions per component, as it last said.
    pub components: serde_json::Value,
    /// The root of trust version it last said it holds (0: none, its trusted keys alone).
    pub root_version: i64,
}

/// The fleet and its rollouts at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every node.
    pub nodes: Vec<NodeStatus>,
    /// Every rollout, newest first, with its nodes.
    pub rollouts: Vec<rollouts::Rollout>,
}

impl Server {
    /// Opens the database and trusted keys; does not listen (see [`start`]).
    pub async fn open(config: ServerConfig) -> Result<Server, ServerError> {
        let data = &config.data_dir;
        nonstop_store::at_rest::private_dir(data).map_err(ServerError::Io)?;
        std::fs::create_dir_all(data.join("trusted-keys"))
            .map_err(|e| ServerError::Io(format!("creating {}: {e}", data.display())))?;
        let mut trusted = TrustedKeys::new();
        trusted.add(nonstop_bundle::release_key());
        trusted.load(&data.join("trusted-keys"))?;
        for path in &config.trust {
            trusted.load(path)?;
        }
        let trust = trust::ServerTrust::open(&config, &trusted)?;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                let db = data.join("server.db");
                nonstop_store::at_rest::private_file(&db).map_err(ServerError::Io)?;
                format!("sqlite://{}?mode=rwc", db.display())
            }
        };
        let (pool, backend) = db::connect(&url, config.max_connections.max(2)).await?;
        let server = Server {
            inner: Arc::new(Inner {
                pool,
                backend,
                trust,
                instance: format!("{}-{}", std::process::id(), &auth::random_secret()[..8]),
                connections: fleet::Connections::default(),
                writes: db::WriteLock::default(),
                wake: tokio::sync::Notify::new(),
                bundles: Mutex::new(HashMap::new()),
                metrics: metrics::Metrics::default(),
                closing: tokio::sync::watch::Sender::new(false),
                dispatching: tokio::sync::Mutex::new(()),
                config,
            }),
        };
        server.sync_roots().await?;
        Ok(server)
    }

    pub(crate) async fn write(&self) -> Result<db::Write<'_>, ServerError> {
        self.inner
            .writes
            .begin(&self.inner.pool, self.inner.backend)
            .await
    }

    /// The metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Every node, connected or not, with its versions.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, ServerError> {
        let stale = db::now_ms() - 3 * 1000 * self.inner.config.heartbeat_secs.max(1) as i64;
        let rows = sqlx::query(
            "SELECT name, node_group, CASE WHEN credential_hash IS NULL THEN 0 ELSE 1 END, \
             CASE WHEN connected_to IS NULL THEN 0 ELSE 1 END, last_seen, versions, root_version FROM node ORDER BY name",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let mut nodes = Vec::new();
        for r in &rows {
            let last_seen: Option<i64> = r.try_get(4)?;
            let versions: String = r.try_get(5)?;
            nodes.push(NodeStatus {
                name: r.try_get(0)?,
                group: r.try_get(1)?,
                enrolled: r.try_get::<i64, _>(2)? == 1,
                // A server process that died leaves its nodes marked; its heartbeat stops.
                connected: r.try_get::<i64, _>(3)? == 1 && last_seen.is_some_and(|t| t >= stale),
                last_seen,
                components: serde_json::from_str(&versions).unwrap_or_default(),
                root_version: r.try_get(6)?,
            });
        }
        Ok(nodes)
    }

    /// Every rollout, newest first, with its nodes.
    pub async fn rollouts(&self) -> Result<Vec<rollouts::Rollout>, ServerError> {
        let mut rollouts = Vec::new();
        for id in self.rollout_ids().await? {
            rollouts.push(self.rollout(id).await?);
        }
        Ok(rollouts)
    }

    /// The fleet and every rollout.
    pub async fn status(&self) -> Result<Status, ServerError> {
        Ok(Status {
            nodes: self.nodes().await?,
            rollouts: self.rollouts().await?,
        })
    }
}

/// A running update server.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `https://<addr>` or, with TLS off, `http://<addr>`.
    pub url: String,
    /// The certificate it serves, when it serves HTTPS: nodes pin its fingerprint.
    pub tls: Option<nonstop_tls::ListenerTls>,
    /// The server.
    pub server: Server,
    /// Where the first administrator's password was written, if this start created it.
    pub admin_password_file: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningServer {
    /// Serves until the process is stopped.
    pub async fn wait(mut self) {
        if let Some(t) = self.tasks.pop() {
            let _ = t.await;
        }
    }

    /// Stops serving and drops every node's link: no new connection is accepted, requests in
    /// flight finish (within `drain_secs`), the dispatcher stops.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.inner.closing.send_replace(true);
        // The last task is the listener: it drains by itself. The others are stopped.
        if let Some(listener) = self.tasks.pop() {
            let _ = listener.await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serves until `stop` resolves (a signal), then stops as [`RunningServer::stop`] does.
    /// Returns at once if the listener ends by itself.
    pub async fn serve_until(mut self, stop: impl std::future::Future<Output = ()>) {
        let Some(mut listener) = self.tasks.pop() else {
            return;
        };
        tokio::select! {
            _ = &mut listener => return,
            () = stop => {}
        }
        self.tasks.push(listener);
        self.stop().await;
    }
}

/// Starts a server: database, first administrator, dispatcher, API.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    start_on(config, None).await
}

/// [`start`], serving on `listener` when one is given: a socket someone else holds open across
/// the server's restarts (systemd's socket activation), so that nodes and operators connecting
/// between two server processes wait instead of being refused.
pub async fn start_on(
    config: ServerConfig,
    listener: Option<std::net::TcpListener>,
) -> Result<RunningServer, ServerError> {
    let listen = config.listen.clone();
    let data = config.data_dir.clone();
    let url = config.database_url.clone();
    let server = Server::open(config).await?;
    let admin_password_file = if server.has_operators().await? {
        None
    } else {
        let password = auth::random_secret()[..24].to_owned();
        server
            .add_operator("server", "admin", OperatorRole::Admin, &password)
            .await?;
        let path = data.join("admin-password");
        write_private(&path, &format!("{password}\n"))?;
        Some(path)
    };
    let listener = match listener {
        Some(listener) => listener,
        None => nonstop_tls::listen(&listen)
            .map_err(|e| ServerError::Io(format!("listening on {listen}: {e}")))?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let tls = nonstop_tls::ListenerTls::prepare(&server.inner.config.tls, addr, &data)
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let url_shown = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let mut tasks = vec![tokio::spawn(server.clone().run_dispatcher())];
    if let Some(url) = url.filter(|_| server.backend() == Backend::Postgres) {
        tasks.push(tokio::spawn(server.clone().listen(url)));
    }
    let app = api::router(server.clone()).merge(nonstop_tls::certificate_route(tls.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving_tls = tls.clone();
    let limits = server.inner.config.connections.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        if let Err(e) = nonstop_tls::serve(listener, app, serving_tls.as_ref(), &limits, stop).await
        {
            tracing::error!(error = %e, "server failed");
        }
    }));
    tracing::info!(url = %url_shown, database = ?server.backend(), certificate = ?tls.as_ref().map(|t| &t.fingerprint), "update server serving");
    Ok(RunningServer {
        addr,
        url: url_shown,
        tls,
        server,
        admin_password_file,
        tasks,
        shutdown: Some(tx),
    })
}

/// Writes a secret (a password, a key) to `path`, readable by its owner only, and syncs it.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), ServerError> {
    nonstop_store::at_rest::write_private(path, text).map_err(ServerError::Io)
}
