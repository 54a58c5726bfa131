//! `nonstop bundle create | inspect | verify`.

use std::path::PathBuf;

use anyhow::Context;
use nonstop_bundle::{
    BundleLimits, CandidateChecks, ComponentKind, Draft, Intent, Manifest, SecretKey,
};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Sign a payload into an update bundle.
    Create(CreateArgs),
    /// Show what a bundle holds, without trusting it.
    Inspect {
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Check a bundle exactly as a node would before staging it.
    Verify(VerifyArgs),
    /// Add your signature to a bundle, in place: when the root of trust asks for more than one
    /// publisher's signature on each release (k of n).
    Sign {
        /// The bundle file.
        bundle: PathBuf,
        /// Your secret key (`nonstop keygen`).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Component the update replaces, e.g. `fees`.
    #[arg(long)]
    component: String,
    /// Kind of content.
    #[arg(long, value_enum, default_value = "wasm-component")]
    kind: Kind,
    /// Semantic version of the content.
    #[arg(long)]
    version: semver::Version,
    /// The content file.
    #[arg(long)]
    payload: PathBuf,
    /// File name the payload gets in the version directory (default: the payload's own name).
    #[arg(long)]
    file: Option<String>,
    /// The publisher's secret key file (from `nonstop keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Release notes.
    #[arg(long, default_value = "")]
    notes: String,
    /// JSON file of candidate checks: {"exports": [..], "test_vectors": [..], "shadow": {..}}.
    #[arg(long)]
    checks: Option<PathBuf>,
    /// Sign as an explicit rollback from this live version: the bundle's version may be older,
    /// and it applies only while FROM is live.
    #[arg(long, value_name = "FROM")]
    rollback_from: Option<semver::Version>,
    /// Where to write the bundle.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    WasmComponent,
    StaticAssets,
    NodeBinary,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The bundle file.
    bundle: PathBuf,
    /// A trusted public key file, or a directory of *.pub files; repeatable.
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// Compare with the live version in this store (default: only if --store or NONSTOP_STORE is given).
    #[arg(long = "store", env = "NONSTOP_STORE")]
    store: Option<PathBuf>,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Create(args) => create(args),
        Command::Inspect { bundle } => inspect(&bundle),
        Command::Verify(args) => verify(&args),
        Command::Sign { bundle, key } => cosign(&bundle, &key),
    }
}

fn cosign(path: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    let key = SecretKey::read(key)?;
    let limits = nonstop_bundle::BundleLimits::default();
    let bytes = nonstop_bundle::read_bounded(path, &limits)?;
    let signed = nonstop_bundle::cosign(&bytes, &key, &limits)?;
    let tmp = path.with_extension("nsb.signing");
    std::fs::write(&tmp, &signed).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    let signers = nonstop_bundle::inspect(&signed, &limits)?.signers;
    println!(
        "signed {} with {}; signed by: {}",
        path.display(),
        key.key_id(),
        signers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let payload = std::fs::read(&args.payload)
        .with_context(|| format!("reading payload {}", args.payload.display()))?;
    let key = SecretKey::read(&args.key)?;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => args
            .payload
            .file_name()
            .and_then(|n| n.to_str())
            .context("the payload path has no file name; give --file")?
            .to_owned(),
    };
    let kind = match args.kind {
        Kind::WasmComponent => ComponentKind::WasmComponent,
        Kind::StaticAssets => ComponentKind::StaticAssets,
        Kind::NodeBinary => ComponentKind::NodeBinary,
    };
    let mut draft = Draft::new(&args.component, kind, args.version, &file)?;
    draft.notes = args.notes;
    if let Some(from) = args.rollback_from {
        draft.intent = Intent::Rollback { from };
    }
    if let Some(path) = &args.checks {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading checks {}", path.display()))?;
        draft.checks = serde_json::from_str::<CandidateChecks>(&text)
            .with_context(|| format!("checks file {} is not valid", path.display()))?;
    }
    let bytes = nonstop_bundle::create(&draft, &payload, &key)?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes): {} {} signed by {}",
        args.out.display(),
        bytes.len(),
        draft.component,
        draft.version,
        key.key_id()
    );
    Ok(())
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let bytes = nonstop_bundle::read_bounded(path, &BundleLimits::default())?;
    let b = nonstop_bundle::inspect(&bytes, &BundleLimits::default())?;
    println!(
        "bundle     {}  (NOT verified: use `nonstop bundle verify`)",
        path.display()
    );
    let signers: Vec<String> = b.signers.iter().map(|k| k.to_string()).collect();
    println!("signed by  {}", signers.join(", "));
    match &b.manifest {
        Ok(m) => print_manifest(m),
        Err(e) => println!("manifest   unreadable: {e}"),
    }
    println!("carried    {} bytes, {}", b.payload_size, b.payload_digest);
    Ok(())
}

fn print_manifest(m: &Manifest) {
    println!("component  {}", m.component);
    println!("kind       {}", m.kind);
    match &m.intent {
        Intent::Release => println!("version    {}", m.version),
        Intent::Rollback { from } => {
            println!("version    {}  (signed rollback from {from})", m.version)
        }
    }
    println!(
        "payload    {}, {} bytes, {}",
        m.payload.file, m.payload.size, m.payload.digest
    );
    println!("key id     {}", m.key_id);
    let created = m
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| m.created_at.to_string());
    println!("created    {created}");
    if !m.notes.is_empty() {
        println!("notes      {}", m.notes);
    }
    let c = &m.checks;
    println!(
        "checks     {} export(s), {} test vector(s), shadow: {}",
        c.exports.len(),
        c.test_vectors.len(),
        c.shadow
            .as_ref()
            .map_or("node default".to_string(), |s| format!(
                "{} calls, latency ratio <= {}",
                s.calls, s.max_latency_ratio
            ))
    );
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let verifier = crate::store_cmd::verifier(&args.trust)?;
    let bytes = nonstop_bundle::read_bounded(&args.bundle, verifier.limits())?;
    // Which component it is decides which live version to compare with; `open` re-checks everything.
    let component = nonstop_bundle::inspect(&bytes, verifier.limits())?
        .manifest
        .ok()
        .map(|m| m.component);
    let live = match (&args.store, component) {
        (Some(store), Some(component)) => nonstop_store::live_version(store, &component)?,
        _ => None,
    };
    let bundle = verifier
        .open(&bytes, live.as_ref())
        .with_context(|| format!("bundle {} is refused", args.bundle.display()))?;
    let m = bundle.manifest();
    let against_live = match (&live, &m.intent) {
        (Some(l), Intent::Release) => format!(", newer than live {l}"),
        (Some(l), _) => format!(", a signed rollback from live {l}"),
        (None, _) => String::new(),
    };
    println!(
        "OK {} {} ({}): signed by trusted key {}, payload {} bytes matches {}{against_live}",
        m.component,
        m.version,
        m.kind,
        bundle.signer(),
        m.payload.size,
        m.payload.digest,
    );
    Ok(())
}
