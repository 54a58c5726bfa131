//! The node's end of its link to the update server (the patent's step 1: the server pushes the
//! update file into the running system). One task keeps one outbound WebSocket open, says which
//! versions the node runs, and for every [`ServerMessage::Install`] downloads the bundle (resuming
//! a cut download with `Range`), checks its digest, and hands it to the agent thread, reporting
//! each step back as it happens. Request-serving workers never see any of it.
//!
//! Every `sample_secs` it also takes a sample of the node's traffic (requests, server errors,
//! p99) and sends it; samples taken while the server was out of reach are kept, up to
//! `samples_kept`, and sent when the link is back, so the server's chart has no hole where an
//! update happened.
//!
//! A dropped connection is reopened with exponential backoff and jitter; steps that could not be
//! sent wait for the next connection, and an install already under way is not started twice.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nonstop_agent::{Agent, Outcome, Progress};
use nonstop_bundle::Digest;
use nonstop_link::{
    ComponentVersions, Installed, LINK_PATH, NodeMessage, Sample, ServerMessage, Step,
};
use nonstop_tls::ServerPin;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// The file in the data directory that keeps a node's enrolment (readable by its owner only).
pub const ENROLMENT_FILE: &str = "server-link.json";

/// What a node keeps of its enrolment with an update server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// The server's base URL (`http://host:port`); several, tried in turn, when several server
    /// processes serve one fleet.
    pub servers: Vec<String>,
    /// The node's name on the server.
    pub node: String,
    /// The credential the enrolment token was exchanged for.
    pub credential: String,
    /// What the server's certificate is trusted by (its fingerprint, or a CA), given at
    /// enrolment; required for `https://` servers. Plain `http://` is accepted on loopback only.
    #[serde(default)]
    pub pin: Option<ServerPin>,
}

impl Enrolment {
    /// Reads `<data_dir>/server-link.json`; `None` when the node is not enrolled.
    pub fn read(data_dir: &Path) -> Result<Option<Enrolment>, String> {
        let path = data_dir.join(ENROLMENT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Refuses a link the network could read or tamper with: `http://` off loopback, or
    /// `https://` without a pinned certificate or CA.
    pub fn check(&self) -> Result<(), String> {
        for server in &self.servers {
            check_server_url(server, self.pin.as_ref())?;
        }
        Ok(())
    }

    /// An HTTP client that trusts the server as the pin says.
    fn http_client(&self) -> Result<reqwest::Client, String> {
        http_client(self.pin.as_ref())
    }

    /// Writes it to `<data_dir>/server-link.json`, mode 0600.
    pub fn write(&self, data_dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
        let path = data_dir.join(ENROLMENT_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        nonstop_store::at_rest::write_private(&path, &text)
    }
}

/// Exchanges a one-time enrolment token for the node's credential at `server` and keeps it in
/// `data_dir`. `also` lists further server processes of the same fleet to reconnect to.
pub async fn enrol(
    server: &str,
    also: &[String],
    token: &str,
    pin: Option<ServerPin>,
    data_dir: &Path,
) -> Result<Enrolment, String> {
    let server = server.trim_end_matches('/').to_owned();
    check_server_url(&server, pin.as_ref())?;
    for s in also {
        check_server_url(s, pin.as_ref())?;
    }
    let answer = http_client(pin.as_ref())?
        .post(format!("{server}/api/v1/enrolments"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .map_err(|e| format!("enrolling with {server}: {}", causes(&e)))?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "the update server refused the enrolment ({status}): {}",
            body["message"].as_str().unwrap_or("no reason given")
        ));
    }
    let (Some(node), Some(credential)) = (body["node"].as_str(), body["credential"].as_str())
    else {
        return Err(format!(
            "the update server's enrolment answer is malformed: {body}"
        ));
    };
    let mut servers = vec![server];
    servers.extend(also.iter().map(|s| s.trim_end_matches('/').to_owned()));
    let enrolment = Enrolment {
        servers,
        node: node.to_owned(),
        credential: credential.to_owned(),
        pin,
    };
    enrolment.write(data_dir)?;
    Ok(enrolment)
}

/// An error with its causes (reqwest's own text leaves out why a TLS handshake failed).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether `url` may carry the link: `https://` with a pin, or `http://` to this machine.
fn check_server_url(url: &str, pin: Option<&ServerPin>) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or_default();
        let host = host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "{url}: the link to an update server on another machine must be https:// \
                 (plain http:// is accepted on loopback only)"
            ));
        }
        Ok(())
    } else if url.starts_with("https://") {
        if pin.is_none() {
            return Err(format!(
                "{url}: say how to trust the server's certificate: --server-fingerprint with the \
                 fingerprint `nonstop server` printed at start, or --server-ca with its CA"
            ));
        }
        Ok(())
    } else {
        Err(format!(
            "{url}: an update server's URL starts with https:// or http://"
        ))
    }
}

/// An HTTP client for the update server: with a pin, it trusts exactly what the pin names.
fn http_client(pin: Option<&ServerPin>) -> Result<reqwest::Client, String> {
    nonstop_tls::http_client(pin).map_err(|e| e.to_string())
}

/// Timing of the link (part of the node's configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// First reconnect delay, milliseconds; doubles per failed attempt.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Attempts to download one bundle before the update is reported failed.
    pub download_attempts: u32,
    /// Seconds without any frame from the server before the connection is taken for dead.
    pub idle_timeout_secs: u64,
    /// Seconds between traffic samples sent to the server.
    pub sample_secs: u64,
    /// Samples kept while the server is out of reach (the oldest are dropped past it).
    pub samples_kept: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            backoff_initial_ms: 250,
            backoff_max_ms: 30_000,
            download_attempts: 5,
            idle_timeout_secs: 60,
            sample_secs: 5,
            samples_kept: 720,
        }
    }
}

/// What the link shares between its connections.
struct Shared {
    enrolment: Enrolment,
    config: LinkConfig,
    agent: Arc<Agent>,
    metrics: Arc<crate::metrics::Metrics>,
    trust: Arc<crate::NodeTrust>,
    store_root: PathBuf,
    downloads: PathBuf,
    http: reqwest::Client,
    /// Messages for the server, sent in order by whichever connection is open.
    outbox: mpsc::UnboundedSender<NodeMessage>,
    /// `(rollout, component, version)` of installs under way: a repeated push is not started twice.
    busy: Mutex<HashSet<(i64, String, String)>>,
    /// The install and rollback tasks under way: they end with the link.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The TLS configuration that trusts the server as pinned (`https://` servers).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Traffic samples not yet sent, oldest first.
    samples: Mutex<VecDeque<Sample>>,
    /// Woken when a sample is taken.
    sampled: tokio::sync::Notify,
}

/// The parts of the node the link works with.
pub struct NodeParts {
    /// Installs what the server pushes.
    pub agent: Arc<Agent>,
    /// Where the traffic samples come from.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Takes the roots and statements the server sends.
    pub trust: Arc<crate::NodeTrust>,
    /// Components that started on their standby (told to the server once).
    pub fell_back: Vec<String>,
    /// The version store, read for the hello.
    pub store_root: PathBuf,
    /// Where bundles are downloaded to.
    pub downloads: PathBuf,
}

/// Runs the link until the task is aborted.
pub async fn run(enrolment: Enrolment, config: LinkConfig, node: NodeParts) {
    let NodeParts {
        agent,
        metrics,
        trust,
        fell_back,
        store_root,
        downloads,
    } = node;
    let http = match enrolment.http_client() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "the update server link cannot start");
            return;
        }
    };
    let tls = match &enrolment.pin {
        Some(pin) => match nonstop_tls::client_config(pin) {
            Ok(config) => Some(config),
            Err(e) => {
                tracing::error!(error = %e, "the update server link cannot start");
                return;
            }
        },
        None => None,
    };
    let (outbox, mut inbox) = mpsc::unbounded_channel();
    if !fell_back.is_empty() {
        // Queued before any connection: it follows the first hello.
        let _ = outbox.send(NodeMessage::FellBack {
            components: fell_back,
        });
    }
    let shared = Arc::new(Shared {
        enrolment,
        config,
        agent,
        metrics,
        trust,
        store_root,
        downloads,
        http,
        outbox,
        busy: Mutex::new(HashSet::new()),
        tasks: Mutex::new(Vec::new()),
        samples: Mutex::new(VecDeque::new()),
        sampled: tokio::sync::Notify::new(),
        tls,
    });
    let sampler = tokio::spawn(sample(shared.clone()));
    // The sampler ends with the link (this task is aborted, never returns otherwise).
    let _sampler = AbortOnDrop(sampler);
    // So do the installs and rollbacks it started: a stopped node holds nothing of its agent.
    let _tasks = AbortTasks(shared.clone());
    // Messages a closed connection could not send, first in line for the next one.
    let mut unsent: VecDeque<NodeMessage> = VecDeque::new();
    let mut failures: u32 = 0;
    let mut turn = 0usize;
    loop {
        let servers = &shared.enrolment.servers;
        let server = servers[turn % servers.len().max(1)].clone();
        match connect(&shared, &server).await {
            Ok(ws) => {
                failures = 0;
                tracing::info!(%server, node = %shared.enrolment.node, "connected to the update server");
                serve(&shared, ws, &mut inbox, &mut unsent).await;
                tracing::warn!(%server, "the update server link closed; reconnecting");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // The next attempt goes to the next server process of the fleet.
                turn += 1;
                tracing::warn!(%server, error = %e, attempt = failures, "cannot reach the update server");
            }
        }
        tokio::time::sleep(backoff(&shared.config, failures)).await;
    }
}

/// Aborts the link's install and rollback tasks when dropped.
struct AbortTasks(Arc<Shared>);

impl Drop for AbortTasks {
    fn drop(&mut self) {
        for task in self.0.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

/// Starts a task that ends with the link.
fn spawn_task(shared: &Shared, task: impl std::future::Future<Output = ()> + Send + 'static) {
    let handle = tokio::spawn(task).abort_handle();
    let mut tasks = shared.tasks.lock().expect("tasks");
    tasks.retain(|t| !t.is_finished());
    tasks.push(handle);
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes a traffic sample every `sample_secs`, whether or not the server can be reached.
async fn sample(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.config.sample_secs.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = shared.metrics.window().take();
        let mut samples = shared.samples.lock().expect("samples");
        samples.push_back(s);
        while samples.len() > shared.config.samples_kept.max(1) {
            samples.pop_front();
        }
        drop(samples);
        shared.sampled.notify_one();
    }
}

/// Sends the samples not yet sent; on failure they stay for the next connection.
async fn send_samples(
    shared: &Shared,
    tx: &mut futures_util::stream::SplitSink<Socket, tungstenite::Message>,
) -> Result<(), tungstenite::Error> {
    let samples: Vec<Sample> = shared.samples.lock().expect("samples").drain(..).collect();
    if samples.is_empty() {
        return Ok(());
    }
    let m = NodeMessage::Samples { samples };
    let result = send(tx, &m).await;
    if result.is_err() {
        let NodeMessage::Samples { samples } = m else {
            unreachable!()
        };
        let mut kept = shared.samples.lock().expect("samples");
        for s in samples.into_iter().rev() {
            kept.push_front(s);
        }
    }
    result
}

/// Exponential backoff with full jitter: a fleet that lost its server does not come back at once.
fn backoff(config: &LinkConfig, failures: u32) -> Duration {
    let ceiling = config
        .backoff_initial_ms
        .saturating_mul(1u64 << failures.min(16))
        .min(config.backoff_max_ms)
        .max(1);
    Duration::from_millis(rand::random::<u64>() % ceiling + ceiling / 4)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(shared: &Shared, server: &str) -> Result<Socket, String> {
    let url = format!(
        "{}{LINK_PATH}",
        server
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", shared.enrolment.credential)
            .parse()
            .map_err(|_| "the credential is not a valid header value".to_owned())?,
    );
    let connector = shared.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| match e {
        tungstenite::Error::Http(resp) => format!("refused with {}", resp.status()),
        e => e.to_string(),
    })?;
    Ok(ws)
}

/// Serves one connection until it closes.
async fn serve(
    shared: &Arc<Shared>,
    ws: Socket,
    inbox: &mut mpsc::UnboundedReceiver<NodeMessage>,
    unsent: &mut VecDeque<NodeMessage>,
) {
    let (mut tx, mut rx) = ws.split();
    let hello = hello(shared);
    // A hello describes the store now, so it goes first; steps held back follow in order.
    unsent.retain(|m| !matches!(m, NodeMessage::Hello { .. }));
    unsent.push_front(hello);
    while let Some(m) = unsent.pop_front() {
        if send(&mut tx, &m).await.is_err() {
            unsent.push_front(m);
            return;
        }
    }
    if send_samples(shared, &mut tx).await.is_err() {
        return;
    }
    let idle = Duration::from_secs(shared.config.idle_timeout_secs.max(1));
    loop {
        tokio::select! {
            frame = tokio::time::timeout(idle, rx.next()) => {
                let message = match frame {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "the update server link failed");
                        return;
                    }
                    Ok(None) => return,
                    Err(_) => {
                        tracing::warn!("no word from the update server; reconnecting");
                        return;
                    }
                };
                match message {
                    tungstenite::Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(m) => handle(shared, m),
                        Err(e) => tracing::warn!(error = %e, "an update server message this node cannot read"),
                    },
                    tungstenite::Message::Close(_) => return,
                    // Pings are answered by the library; nothing else is expected.
                    _ => {}
                }
            }
            _ = shared.sampled.notified() => {
                if send_samples(shared, &mut tx).await.is_err() {
                    return;
                }
            }
            Some(m) = inbox.recv() => {
                if send(&mut tx, &m).await.is_err() {
                    unsent.push_back(m);
                    return;
                }
            }
        }
    }
}

async fn send(
    tx: &mut futures_util::stream::SplitSink<Socket, tungstenite::Message>,
    m: &NodeMessage,
) -> Result<(), tungstenite::Error> {
    let text = serde_json::to_string(m).unwrap_or_default();
    tx.send(tungstenite::Message::Text(text.into())).await
}

/// The node's versions of every component, read from its store without its lock.
pub fn versions(store_root: &Path) -> Vec<ComponentVersions> {
    let installed = |e: &Option<nonstop_store::VersionEntry>| {
        e.as_ref().map(|e| Installed {
            version: e.version.to_string(),
            digest: e.digest.to_string(),
        })
    };
    match nonstop_store::read_status(store_root) {
        Ok(states) => states
            .iter()
            .map(|s| ComponentVersions {
                component: s.component.to_string(),
                live: installed(&s.live),
                candidate: installed(&s.candidate),
                standby: installed(&s.standby),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the version store's status");
            Vec::new()
        }
    }
}

/// What the node says on connecting, and again when its versions or its root change.
fn hello(shared: &Shared) -> NodeMessage {
    NodeMessage::Hello {
        components: versions(&shared.store_root),
        root_version: shared.trust.root_version(),
    }
}

fn handle(shared: &Arc<Shared>, message: ServerMessage) {
    let refused = |what: &str, reason: String| {
        tracing::warn!(what, %reason, "refused what the update server sent");
        let _ = shared.outbox.send(NodeMessage::TrustRefused {
            what: what.into(),
            reason,
        });
    };
    match message {
        ServerMessage::Roots { roots } => match shared.trust.accept_roots(&roots) {
            Ok(true) => {
                let _ = shared.outbox.send(hello(shared));
            }
            Ok(false) => {}
            Err(reason) => {
                // Roots accepted before the refused one stand; the server hears both.
                let _ = shared.outbox.send(hello(shared));
                refused("root", reason);
            }
        },
        ServerMessage::Timestamp { statement } => {
            if let Err(reason) = shared.trust.accept_statement(&statement) {
                refused("timestamp statement", reason);
            }
        }
        ServerMessage::Install {
            rollout,
            component,
            version,
            bundle_digest,
            size,
            bundle_path,
        } => {
            let key = (rollout, component.clone(), version.clone());
            if !shared.busy.lock().expect("busy set").insert(key.clone()) {
                return;
            }
            let task_shared = shared.clone();
            spawn_task(shared, async move {
                let shared = task_shared;
                let push = Push {
                    rollout,
                    component,
                    version,
                };
                install(&shared, &push, &bundle_digest, size, &bundle_path).await;
                shared.busy.lock().expect("busy set").remove(&key);
            });
        }
        ServerMessage::Rollback {
            rollout,
            component,
            version,
            reason,
        } => {
            let task_shared = shared.clone();
            spawn_task(shared, async move {
                let push = Push {
                    rollout,
                    component,
                    version,
                };
                rollback(&task_shared, &push, reason).await;
            });
        }
    }
}

/// Which update a step belongs to.
struct Push {
    rollout: i64,
    component: String,
    version: String,
}

impl Push {
    fn report(&self, shared: &Shared, step: Step) {
        tracing::info!(rollout = self.rollout, component = %self.component, version = %self.version, step = step.name(), "update step");
        let live_after = match &step {
            Step::Live { ms, .. } => Some(*ms as f64 / 1000.0),
            _ => None,
        };
        shared.metrics.step(step.name(), live_after);
        let last = step.is_final();
        let _ = shared.outbox.send(NodeMessage::Step {
            rollout: self.rollout,
            component: self.component.clone(),
            version: self.version.clone(),
            step,
        });
        if last {
            // Versions changed (or may have): say so.
            let _ = shared.outbox.send(hello(shared));
        }
    }
}

async fn install(shared: &Arc<Shared>, push: &Push, bundle_digest: &str, size: u64, path: &str) {
    let arrived = Instant::now();
    // Pushed again after a reconnect, for a version this node already runs: nothing to do.
    let live = versions(&shared.store_root)
        .into_iter()
        .find(|c| c.component == push.component)
        .and_then(|c| c.live);
    if live.is_some_and(|l| l.version == push.version) {
        // If its watch window is open (the node restarted in the middle of it, and resumed it),
        // the update ends when the window closes, healthy or rolled back.
        let agent = shared.agent.clone();
        let (component, version) = (push.component.clone(), push.version.clone());
        let ended = tokio::task::spawn_blocking(move || {
            let version = semver::Version::parse(&version).ok()?;
            agent.follow(&component, &version).ok()??.recv().ok()
        })
        .await
        .ok()
        .flatten();
        // No window open (it closed while the node was down, or never was): healthy.
        let step = ended.map_or(
            Step::Healthy {
                calls: 0,
                failures: 0,
            },
            |r| ended_step(r.outcome),
        );
        push.report(shared, step);
        return;
    }
    // Pushed again after a reconnect, for a version this node ran and rolled back meanwhile (a
    // new program that crashed in its watch window, put back by the supervisor): it ended so.
    if let Some(reason) = rolled_back(&shared.store_root, &push.component, &push.version) {
        push.report(shared, Step::RolledBack { reason });
        return;
    }
    let bytes = match download(shared, bundle_digest, size, path).await {
        Ok(bytes) => bytes,
        Err(reason) => {
            push.report(shared, Step::Failed { reason });
            return;
        }
    };
    push.report(
        shared,
        Step::Received {
            bytes: bytes.len() as u64,
            ms: arrived.elapsed().as_millis() as u64,
        },
    );
    let progress = match shared.agent.install_with_progress(bytes) {
        Ok(p) => p,
        Err(e) => {
            push.report(
                shared,
                Step::Failed {
                    reason: e.to_string(),
                },
            );
            return;
        }
    };
    // The agent answers on std channels; wait for them on a blocking thread, never a worker.
    let (steps_tx, mut steps_rx) = mpsc::unbounded_channel();
    let waiter = tokio::task::spawn_blocking(move || {
        for step in progress.steps.iter() {
            let _ = steps_tx.send(Err(step));
        }
        if let Ok(live) = progress.live.recv() {
            let _ = steps_tx.send(Ok((true, live)));
        }
        if let Ok(ended) = progress.ended.recv() {
            let _ = steps_tx.send(Ok((false, ended)));
        }
    });
    while let Some(event) = steps_rx.recv().await {
        let step = match event {
            Err(Progress::Staged) => Step::Staged,
            Err(Progress::Testing { vectors }) => Step::Testing { vectors },
            Ok((true, report)) => Step::Live {
                shadow: match &report.outcome {
                    Outcome::Live { shadow, .. } => {
                        shadow.as_ref().and_then(|s| serde_json::to_value(s).ok())
                    }
                    _ => None,
                },
                ms: arrived.elapsed().as_millis() as u64,
            },
            // A program update ends here with its watch window open: the new program, now
            // serving, resumes the window and reports how it ends when the server pushes the
            // release again to its link (see the start of this function).
            Ok((false, report))
                if matches!(
                    report.outcome,
                    Outcome::Live {
                        watch_open: true,
                        ..
                    }
                ) =>
            {
                continue;
            }
            Ok((false, report)) => ended_step(report.outcome),
        };
        push.report(shared, step);
    }
    let _ = waiter.await;
}

/// Why `version` of `component` was rolled back on this node, if it was: the newest entry of the
/// store's log for it is a rollback that took it from live.
fn rolled_back(store: &std::path::Path, component: &str, version: &str) -> Option<String> {
    let name = nonstop_bundle::ComponentName::new(component).ok()?;
    let version = semver::Version::parse(version).ok()?;
    nonstop_store::read_log(store, &name)
        .ok()?
        .into_iter()
        .rev()
        .find(|e| e.version == version)
        .filter(|e| e.action == "rollback" && e.from == nonstop_store::Role::Live)
        .map(|e| e.reason)
}

/// The step that reports how an update ended.
fn ended_step(outcome: Outcome) -> Step {
    match outcome {
        Outcome::Live {
            watched_calls,
            watched_failures,
            ..
        } => Step::Healthy {
            calls: watched_calls,
            failures: watched_failures,
        },
        Outcome::Refused { reason } => Step::Refused { reason },
        Outcome::Rejected { reason } => Step::Rejected { reason },
        Outcome::RolledBack { reason } => Step::RolledBack { reason },
        Outcome::RollbackFailed { reason } => Step::Failed { reason },
    }
}

async fn rollback(shared: &Arc<Shared>, push: &Push, reason: String) {
    let live = versions(&shared.store_root)
        .into_iter()
        .find(|c| c.component == push.component)
        .and_then(|c| c.live);
    if live.is_none_or(|l| l.version != push.version) {
        // It is not live here (never was, or already rolled back): nothing to undo.
        push.report(
            shared,
            Step::RolledBack {
                reason: format!(
                    "{reason} (version {} was not live on this node)",
                    push.version
                ),
            },
        );
        return;
    }
    let agent = shared.agent.clone();
    let (component, why) = (push.component.clone(), reason.clone());
    let result = tokio::task::spawn_blocking(move || agent.rollback(&component, &why)).await;
    let step = match result {
        Ok(Ok(Ok(_))) => Step::RolledBack { reason },
        Ok(Ok(Err(e))) => Step::Failed {
            reason: format!("rollback refused: {e}"),
        },
        Ok(Err(e)) => Step::Failed {
            reason: e.to_string(),
        },
        Err(e) => Step::Failed {
            reason: e.to_string(),
        },
    };
    push.report(shared, step);
}

/// Downloads a bundle into `<downloads>/<digest>.part`, resuming what an earlier attempt got
/// (`Range`), and returns it once its digest matches. A file whose digest does not match is
/// deleted and fetched again from the start.
async fn download(shared: &Shared, digest: &str, size: u64, path: &str) -> Result<Vec<u8>, String> {
    let name = digest.replace(':', "-");
    if name.is_empty() || name.contains(['/', '.']) {
        return Err(format!("the bundle digest {digest:?} is not a digest"));
    }
    std::fs::create_dir_all(&shared.downloads)
        .map_err(|e| format!("creating {}: {e}", shared.downloads.display()))?;
    let part = shared.downloads.join(format!("{name}.part"));
    let mut last = String::new();
    for attempt in 0..shared.config.download_attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(backoff(&shared.config, attempt)).await;
        }
        match fetch_into(shared, path, &part, size).await {
            Ok(()) => {}
            Err(e) => {
                last = e;
                continue;
            }
        }
        let bytes = std::fs::read(&part).map_err(|e| format!("reading {}: {e}", part.display()))?;
        let _ = std::fs::remove_file(&part);
        let got = Digest::of(&bytes).to_string();
        if got == digest {
            return Ok(bytes);
        }
        last = format!("the downloaded bundle's digest is {got}, the release's is {digest}");
    }
    Err(format!(
        "downloading the bundle failed after {} attempts: {last}",
        shared.config.download_attempts.max(1)
    ))
}

/// One attempt: appends to `part` from where it ends; a server that ignores the range restarts it.
async fn fetch_into(shared: &Shared, path: &str, part: &Path, size: u64) -> Result<(), String> {
    let have = std::fs::metadata(part).map_or(0, |m| m.len());
    if have > size {
        let _ = std::fs::remove_file(part);
    }
    let have = std::fs::metadata(part).map_or(0, |m| m.len());
    if have == size && size > 0 {
        return Ok(());
    }
    let server = &shared.enrolment.servers;
    let mut last = String::new();
    for base in server {
        let mut req = shared
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(&shared.enrolment.credential)
            .timeout(Duration::from_secs(60));
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = resp.status();
        let append = status == reqwest::StatusCode::PARTIAL_CONTENT;
        if !status.is_success() {
            last = format!("the server answered {status}");
            continue;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .mode(0o600)
            .open(part)
            .map_err(|e| format!("writing {}: {e}", part.display()))?;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => f
                    .write_all(&chunk)
                    .map_err(|e| format!("writing {}: {e}", part.display()))?,
                Ok(None) => return Ok(()),
                // What arrived stays in the part file; the next attempt resumes after it.
                Err(e) => return Err(format!("the download was cut: {e}")),
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let c = LinkConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..LinkConfig::default()
        };
        for failures in 0..40 {
            let d = backoff(&c, failures).as_millis() as u64;
            let ceiling = (100u64 << failures.min(16)).min(1000);
            assert!(
                d >= ceiling / 4 && d < ceiling + ceiling / 4,
                "{failures}: {d}"
            );
        }
        let spread: HashSet<u128> = (0..50).map(|_| backoff(&c, 10).as_millis()).collect();
        assert!(spread.len() > 10, "no jitter: {spread:?}");
    }
}
