//! `nonstop trust`: make, sign and check roots of trust offline, and hand the next one to the
//! update server, which carries it to every node (see `crates/trust`).
//!
//! A rotation, as the holders of the root keys run it:
//!
//! ```text
//! nonstop trust root --previous root-1.json --root-key a.pub --root-key b.pub --root-threshold 2 \
//!     --release-key p2.pub --release-threshold 1 --timestamp-key server-timestamp.pub --out root-2.json
//! nonstop trust sign root-2.json --key a.key     # each holder, on their own machine
//! nonstop trust sign root-2.json --key b.key
//! nonstop trust show root-2.json --previous root-1.json
//! nonstop trust push root-2.json                 # to the update server, and on to the fleet
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nonstop_bundle::{KeyId, PublicKey, SecretKey, TrustedKeys};
use nonstop_trust::{Role, Roles, Root, RootDraft};
use serde_json::Value;

use crate::server_cmd::Client;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a new, unsigned root: its keys, and per role which of them must sign and how many.
    Root(RootArgs),
    /// Add your signature to a root file, in place.
    Sign {
        /// The root file.
        file: PathBuf,
        /// Your secret key (`nonstop keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Show a root and check it: against the root before it (--previous), or as a first root.
    Show {
        /// The root file.
        file: PathBuf,
        /// The root it must follow.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Or: the publisher keys a node trusts without a root (a first root must be signed by
        /// one of them for such nodes to take it from the server).
        #[arg(long, conflicts_with = "previous")]
        trusted: Vec<PathBuf>,
    },
    /// Give the update server the next root; it sends it on to every node.
    Push {
        #[command(flatten)]
        client: Client,
        /// The root file, signed.
        file: PathBuf,
    },
    /// The update server's root of trust, and the timestamp key to name in the next root.
    Status {
        #[command(flatten)]
        client: Client,
        /// Write the server's timestamp public key to this file.
        #[arg(long)]
        timestamp_key_out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct RootArgs {
    /// The root this one replaces: the new version is one more than its.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Keys that sign the next root (public key files). Keep their secrets offline.
    #[arg(long = "root-key", required = true)]
    root_keys: Vec<PathBuf>,
    /// How many root keys must sign the next root.
    #[arg(long, default_value_t = 1)]
    root_threshold: usize,
    /// Publisher keys (public key files).
    #[arg(long = "release-key", required = true)]
    release_keys: Vec<PathBuf>,
    /// How many publisher keys must sign each bundle.
    #[arg(long, default_value_t = 1)]
    release_threshold: usize,
    /// The update server's timestamp key (`nonstop trust status --timestamp-key-out`, or
    /// `<server data>/timestamp.pub`); without one, nodes do not check freshness.
    #[arg(long = "timestamp-key")]
    timestamp_keys: Vec<PathBuf>,
    /// Where to write the unsigned root; refuses to overwrite.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Root(args) => root(&args),
        Command::Sign { file, key } => sign(&file, &key),
        Command::Show {
            file,
            previous,
            trusted,
        } => show(&file, previous.as_deref(), &trusted),
        Command::Push { client, file } => {
            let bytes = read(&file)?;
            let v = client
                .call(
                    reqwest::Method::POST,
                    "/api/v1/trust/roots",
                    None,
                    Some(bytes),
                )
                .with_context(|| format!("adding {}", file.display()))?;
            println!(
                "root version {} is the update server's root of trust; it is sent to every node",
                v["root_version"]
            );
            print_revoked(&v);
            Ok(())
        }
        Command::Status {
            client,
            timestamp_key_out,
        } => {
            let v = client.get("/api/v1/trust")?;
            println!("root version      {}", v["root_version"]);
            println!(
                "publisher keys    {} of {}",
                v["release_threshold"],
                list(&v["release_keys"])
            );
            print_revoked(&v);
            println!(
                "timestamp key     {} ({})",
                v["timestamp_key"]["key_id"].as_str().unwrap_or(""),
                if v["signing_statements"] == Value::Bool(true) {
                    "named by the root: statements are signed and sent"
                } else {
                    "not in the root: nodes cannot check freshness until a root names it"
                }
            );
            if let Some(path) = timestamp_key_out {
                let text = v["timestamp_key"]["public_key"].as_str().unwrap_or("");
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote the timestamp public key to {}", path.display());
            }
            Ok(())
        }
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn print_revoked(v: &Value) {
    for r in v["revoked"].as_array().into_iter().flatten() {
        println!(
            "revoked           {} (by root version {})",
            r["key_id"].as_str().unwrap_or(""),
            r["by_root"]
        );
    }
}

/// Key ids as a comma-separated list.
fn joined(ids: &[KeyId]) -> String {
    ids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::read(p).map_err(anyhow::Error::from))
        .collect()
}

fn role(keys: &[PublicKey], threshold: usize) -> Role {
    Role {
        keys: keys.iter().map(PublicKey::key_id).collect(),
        threshold,
    }
}

fn root(args: &RootArgs) -> anyhow::Result<()> {
    let version = match &args.previous {
        Some(p) => {
            RootDraft::read(&read(p)?)
                .with_context(|| format!("reading {}", p.display()))?
                .body()
                .version
                + 1
        }
        None => 1,
    };
    let root_keys = public_keys(&args.root_keys)?;
    let release_keys = public_keys(&args.release_keys)?;
    let timestamp_keys = public_keys(&args.timestamp_keys)?;
    let mut all: Vec<PublicKey> = Vec::new();
    for k in root_keys.iter().chain(&release_keys).chain(&timestamp_keys) {
        if !all.contains(k) {
            all.push(k.clone());
        }
    }
    let roles = Roles {
        root: role(&root_keys, args.root_threshold),
        release: role(&release_keys, args.release_threshold),
        timestamp: (!timestamp_keys.is_empty()).then(|| role(&timestamp_keys, 1)),
    };
    let draft = RootDraft::new(version, &all, roles)?;
    write_new(&args.out, &draft.to_text())?;
    println!(
        "root version {version} written to {} (unsigned): each root key holder runs \
         `nonstop trust sign {} --key <their.key>`; it needs {} of the new root keys{}",
        args.out.display(),
        args.out.display(),
        args.root_threshold,
        if args.previous.is_some() {
            " and the threshold of the previous root's"
        } else {
            ""
        }
    );
    Ok(())
}

fn sign(file: &Path, key: &Path) -> anyhow::Result<()> {
    let mut draft =
        RootDraft::read(&read(file)?).with_context(|| format!("reading {}", file.display()))?;
    let key = SecretKey::read(key)?;
    draft.sign(&key);
    replace(file, &draft.to_text())?;
    println!(
        "signed root version {} with {}; signed by: {}",
        draft.body().version,
        key.key_id(),
        joined(&draft.signers())
    );
    Ok(())
}

fn show(file: &Path, previous: Option<&Path>, trusted: &[PathBuf]) -> anyhow::Result<()> {
    let bytes = read(file)?;
    let draft = RootDraft::read(&bytes).with_context(|| format!("reading {}", file.display()))?;
    let body = draft.body();
    println!(
        "root version {} made {}",
        body.version,
        body.created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let name = |r: &Role| {
        let ids: BTreeSet<String> = r.keys.iter().map(KeyId::to_string).collect();
        format!(
            "{} of {}",
            r.threshold,
            ids.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    println!("  root       {}", name(&body.roles.root));
    println!("  release    {}", name(&body.roles.release));
    match &body.roles.timestamp {
        Some(r) => println!("  timestamp  {}", name(r)),
        None => println!("  timestamp  none (nodes will not check freshness)"),
    }
    println!("  signed by  {}", joined(&draft.signers()));
    let verdict = match previous {
        Some(p) => {
            let prev =
                Root::first(&read(p)?).with_context(|| format!("reading {}", p.display()))?;
            prev.successor(&bytes)
                .map(|_| format!("follows root version {}", prev.version()))
        }
        None if !trusted.is_empty() => {
            let mut keys = TrustedKeys::new();
            for path in trusted {
                keys.load(path)?;
            }
            Root::implicit(&keys)
                .successor(&bytes)
                .map(|_| "can be taken by nodes trusting those keys".to_string())
        }
        None => Root::first(&bytes).map(|_| "complete as a first root".to_string()),
    };
    match verdict {
        Ok(v) => {
            println!("ok: {v}");
            Ok(())
        }
        Err(e) => bail!("not ready: {e}"),
    }
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (not overwriting it)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `text` over `path` through a file beside it, so an interrupted signature never leaves
/// half a root.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.signing");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
