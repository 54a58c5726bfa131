//! `nonstop server` (run the update server, enrol nodes, add operators, sign in) and the commands
//! operators run against it: `publish`, `rollout`, `status`, `audit`. Each of the latter is a
//! client of the server's HTTP API, with `--server` and `--token` (or `NONSTOP_SERVER`,
//! `NONSTOP_TOKEN`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use nonstop_server::{ServerConfig, start_on};
use serde_json::{Value, json};

/// Where the server is and who is asking.
#[derive(clap::Args, Clone)]
pub struct Client {
    /// The update server's URL.
    #[arg(
        long = "server",
        env = "NONSTOP_SERVER",
        default_value = "https://127.0.0.1:9090",
        global = true
    )]
    server: String,
    /// An operator's token (`nonstop server login` prints one).
    #[arg(long, env = "NONSTOP_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(flatten)]
    trust: ServerTrust,
}

/// How a client trusts the update server's certificate (for `https://` URLs).
#[derive(clap::Args, Clone, Default)]
pub struct ServerTrust {
    /// The server certificate's fingerprint (`sha256:...`), as `nonstop server` printed it.
    #[arg(
        long,
        env = "NONSTOP_SERVER_FINGERPRINT",
        global = true,
        conflicts_with = "server_ca"
    )]
    pub server_fingerprint: Option<String>,
    /// A CA certificate (PEM) that issued the server's certificate.
    #[arg(long, env = "NONSTOP_SERVER_CA", global = true)]
    pub server_ca: Option<PathBuf>,
}

impl ServerTrust {
    /// The pin these flags give, if any.
    pub fn pin(&self) -> anyhow::Result<Option<nonstop_tls::ServerPin>> {
        Ok(match (&self.server_fingerprint, &self.server_ca) {
            (Some(f), _) => Some(nonstop_tls::ServerPin::fingerprint(f)?),
            (None, Some(ca)) => Some(nonstop_tls::ServerPin::ca_file(ca)?),
            (None, None) => None,
        })
    }
}

impl Client {
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        bytes: Option<Vec<u8>>,
    ) -> anyhow::Result<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut req = nonstop_tls::http_client(self.trust.pin()?.as_ref())?.request(
                method,
                format!("{}{path}", self.server.trim_end_matches('/')),
            );
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            if let Some(b) = bytes {
                req = req.body(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("reaching {}", self.server))?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!(
                    "{status}: {}",
                    v["message"].as_str().unwrap_or("no reason given")
                );
            }
            Ok(v)
        })
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None, None)
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body), None)
    }
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A TOML configuration file (see `ServerConfig`); without one, defaults that run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Trusted publisher keys (`*.pub` files or directories), beside `<data-dir>/trusted-keys`.
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// A root of trust to start from (`nonstop trust root`), used when the server holds none.
    #[arg(long)]
    trust_root: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (`[tls] mode = "off"`): refused unless --listen is a
    /// loopback address.
    #[arg(long)]
    no_tls: bool,
}

#[derive(clap::Subcommand)]
enum ServerCommand {
    /// Manage the fleet's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage operator accounts.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Sign in; prints a token for NONSTOP_TOKEN.
    Login {
        #[command(flatten)]
        client: Client,
        /// Username.
        #[arg(long, default_value = "admin")]
        username: String,
        /// A file holding the password (the first administrator's is `<data-dir>/admin-password`).
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum NodeCommand {
    /// Add a node; prints its one-time enrolment token (`nonstop node --server URL --enrol-token T`).
    Add {
        #[command(flatten)]
        client: Client,
        /// The node's name.
        name: String,
        /// Its group (rollouts can target a group).
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// List nodes, connected or not, with their versions.
    List {
        #[command(flatten)]
        client: Client,
    },
}

#[derive(clap::Subcommand)]
enum OperatorCommand {
    /// Add an operator account.
    Add {
        #[command(flatten)]
        client: Client,
        /// Username.
        username: String,
        /// admin, publisher, operator or auditor.
        #[arg(long)]
        role: String,
        /// A file holding the new account's password (at least 12 characters).
        #[arg(long)]
        password_file: PathBuf,
    },
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    match args.command {
        None => serve(&args.run),
        Some(ServerCommand::Node(NodeCommand::Add {
            client,
            name,
            group,
        })) => {
            let v = client.post("/api/v1/nodes", json!({"name": name, "group": group}))?;
            println!("node {name} added to group {group}");
            println!(
                "enrolment token (one use): {}",
                v["enrolment_token"].as_str().unwrap_or("")
            );
            println!(
                "on the node: nonstop node --server {} --enrol-token <token>",
                client.server
            );
            Ok(())
        }
        Some(ServerCommand::Node(NodeCommand::List { client })) => {
            let v = client.get("/api/v1/nodes")?;
            print_nodes(&v["items"]);
            Ok(())
        }
        Some(ServerCommand::Operator(OperatorCommand::Add {
            client,
            username,
            role,
            password_file,
        })) => {
            let password = read_secret(&password_file)?;
            client.post(
                "/api/v1/operators",
                json!({"username": username, "role": role, "password": password}),
            )?;
            println!("operator {username} added with role {role}");
            Ok(())
        }
        Some(ServerCommand::Login {
            client,
            username,
            password_file,
        }) => {
            let password = read_secret(&password_file)?;
            let v = client.post(
                "/api/v1/sessions",
                json!({"username": username, "password": password}),
            )?;
            println!("export NONSTOP_TOKEN={}", v["token"].as_str().unwrap_or(""));
            Ok(())
        }
    }
}

fn read_secret(path: &PathBuf) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

fn serve(args: &RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::read(path).map_err(anyhow::Error::msg)?,
        None => ServerConfig::default(),
    };
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config.trust.extend(args.trust.iter().cloned());
    if let Some(root) = &args.trust_root {
        config.trust_root = Some(root.clone());
    }
    if args.no_tls {
        config.tls = nonstop_tls::TlsConfig::off();
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        config.database_url = Some(url);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = crate::stop_signal();
        // A socket handed over by systemd: it stays open across this process's restarts.
        let handed = crate::handed_listener()?;
        let server = start_on(config, handed)
            .await
            .context("starting the update server")?;
        if let Some(tls) = &server.tls {
            println!(
                "certificate {} ({}){}",
                tls.fingerprint,
                tls.cert_path.display(),
                if tls.generated { ", generated now" } else { "" }
            );
            println!(
                "nodes and operators trust it with --server-fingerprint {}",
                tls.fingerprint
            );
        }
        println!("nonstop server listening on {}", server.url);
        if let Some(path) = &server.admin_password_file {
            println!("administrator: user admin, password in {}", path.display());
        }
        // Under systemd (Type=notify): serving now. Elsewhere NOTIFY_SOCKET is unset: nothing.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        // On Ctrl-C or SIGTERM: stop accepting, finish the requests in flight, then go.
        server
            .serve_until(async {
                let signal = stop.await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                println!("{signal}: stopping");
            })
            .await;
        Ok(())
    })
}

/// `nonstop publish FILE`: uploads a signed bundle as a release.
#[derive(clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    client: Client,
    /// The bundle file.
    file: PathBuf,
}

pub fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let v = args
        .client
        .call(reqwest::Method::POST, "/api/v1/releases", None, Some(bytes))
        .with_context(|| format!("publishing {}", args.file.display()))?;
    println!(
        "published {}@{} (release {}, {}, signed by {})",
        v["component"].as_str().unwrap_or(""),
        v["version"].as_str().unwrap_or(""),
        v["id"],
        v["bundle_digest"].as_str().unwrap_or(""),
        v["signer"].as_str().unwrap_or("")
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum RolloutCommand {
    /// Start rolling a release out in waves.
    Start {
        #[command(flatten)]
        client: Client,
        /// The release: `component@version` or its id.
        release: String,
        /// Only this group's nodes.
        #[arg(long, conflicts_with = "nodes")]
        group: Option<String>,
        /// Only these nodes, in this order (the first are the canaries).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Cumulative waves: counts, shares of the targets (25%), or rest.
        #[arg(long, default_value = "1,25%,rest")]
        waves: String,
    },
    /// A rollout with each node's state.
    Show {
        #[command(flatten)]
        client: Client,
        /// The rollout's id.
        id: i64,
    },
    /// Send no more nodes the release.
    Pause(Action),
    /// Go on after a pause.
    Resume(Action),
    /// Stop for good; nodes keep what they took.
    Abort(Action),
    /// Return every node that took the release to its standby.
    Rollback(Action),
}

#[derive(clap::Args)]
pub struct Action {
    #[command(flatten)]
    client: Client,
    /// The rollout's id.
    id: i64,
    /// Why (recorded in the audit log and, for a rollback, in each node's store).
    #[arg(long, default_value = "")]
    reason: String,
}

pub fn rollout(cmd: RolloutCommand) -> anyhow::Result<()> {
    let (client, path, body) = match cmd {
        RolloutCommand::Start {
            client,
            release,
            group,
            nodes,
            waves,
        } => {
            let targets = match (group, nodes.is_empty()) {
                (Some(g), _) => json!({"group": g}),
                (None, false) => json!({"nodes": nodes}),
                (None, true) => json!("all"),
            };
            let body = json!({"release": release, "targets": targets, "waves": waves});
            (client, "/api/v1/rollouts".to_owned(), Some(body))
        }
        RolloutCommand::Show { client, id } => {
            print_rollout(&client.get(&format!("/api/v1/rollouts/{id}"))?);
            return Ok(());
        }
        RolloutCommand::Pause(a) => (
            a.client,
            format!("/api/v1/rollouts/{}/pause", a.id),
            Some(json!({"reason": a.reason})),
        ),
        RolloutCommand::Resume(a) => (
            a.client,
            format!("/api/v1/rollouts/{}/resume", a.id),
            Some(json!({"reason": a.reason})),
        ),
        RolloutCommand::Abort(a) => (
            a.client,
            format!("/api/v1/rollouts/{}/abort", a.id),
            Some(json!({"reason": a.reason})),
        ),
        RolloutCommand::Rollback(a) => (
            a.client,
            format!("/api/v1/rollouts/{}/rollback", a.id),
            Some(json!({"reason": a.reason})),
        ),
    };
    let v = client.call(reqwest::Method::POST, &path, body, None)?;
    print_rollout(&v);
    Ok(())
}

fn print_rollout(r: &Value) {
    println!(
        "rollout {}: {}@{} {} (wave {} of {}){}",
        r["id"],
        r["component"].as_str().unwrap_or(""),
        r["version"].as_str().unwrap_or(""),
        r["state"].as_str().unwrap_or(""),
        r["current_wave"].as_i64().unwrap_or(0) + 1,
        r["waves"],
        r["reason"]
            .as_str()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    for t in r["targets"].as_array().into_iter().flatten() {
        println!(
            "  wave {} {:<16} {:<14} {}",
            t["wave"].as_i64().unwrap_or(0) + 1,
            t["node"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["live_ms"]
                .as_i64()
                .map(|ms| format!("live {ms} ms after the push"))
                .unwrap_or_default()
        );
    }
}

fn print_nodes(nodes: &Value) {
    for n in nodes.as_array().into_iter().flatten() {
        let versions: Vec<String> = n["components"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c["component"].as_str().unwrap_or(""),
                    c["live"]["version"].as_str().unwrap_or("-"),
                    c["standby"]["version"]
                        .as_str()
                        .map(|s| format!(" (standby {s})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        println!(
            "{:<16} {:<12} {:<13} {:<7} {}",
            n["name"].as_str().unwrap_or(""),
            n["group"].as_str().unwrap_or(""),
            if n["connected"] == true {
                "connected"
            } else if n["enrolled"] == true {
                "disconnected"
            } else {
                "not enrolled"
            },
            format!("root {}", n["root_version"].as_i64().unwrap_or(0)),
            versions.join(", ")
        );
    }
}

/// `nonstop status`: every node and every rollout.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: Client,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let v = args.client.get("/api/v1/status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_nodes(&v["nodes"]);
    for r in v["rollouts"].as_array().into_iter().flatten() {
        print_rollout(r);
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the audit chain; names the first entry that does not verify.
    Verify {
        #[command(flatten)]
        client: Client,
    },
    /// Entries, oldest first.
    List {
        #[command(flatten)]
        client: Client,
        /// Only entries whose actor, subject or detail contains this.
        #[arg(long)]
        contains: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: i64,
    },
}

pub fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { client } => {
            let v = client.get("/api/v1/audit/verify")?;
            if v["first_bad"].is_null() {
                println!("audit chain verifies: {} entries", v["entries"]);
                Ok(())
            } else {
                bail!(
                    "audit chain broken at entry {}: {}",
                    v["first_bad"],
                    v["problem"].as_str().unwrap_or("")
                )
            }
        }
        AuditCommand::List {
            client,
            contains,
            limit,
        } => {
            let mut path = format!("/api/v1/audit?limit={limit}");
            if let Some(c) = contains {
                path.push_str(&format!("&contains={}", c.replace(' ', "%20")));
            }
            for e in client.get(&path)?["items"].as_array().into_iter().flatten() {
                println!(
                    "{:>6} {} {:<20} {:<22} {:<20} {}",
                    e["seq"],
                    e["at"],
                    e["actor"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["subject"].as_str().unwrap_or(""),
                    e["detail"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}
