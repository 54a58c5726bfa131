//! `nonstop store status | stage | promote | reject | rollback | gc | log`.

use std::path::PathBuf;

use anyhow::Context;
use nonstop_bundle::{BundleLimits, ComponentName, TrustedKeys, Verifier};
use nonstop_store::{ComponentState, Store, VersionEntry};

use crate::StoreArg;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show each component's live, candidate and standby versions.
    Status {
        #[command(flatten)]
        store: StoreArg,
        /// Print the state records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle and stage it as its component's candidate (never run on live traffic).
    Stage {
        #[command(flatten)]
        store: StoreArg,
        /// The bundle file.
        bundle: PathBuf,
        /// A trusted public key file, or a directory of *.pub files; repeatable.
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
    },
    /// Make the candidate live; the live version becomes standby.
    Promote {
        #[command(flatten)]
        store: StoreArg,
        /// The component.
        component: String,
        /// Promote only if the candidate is this version.
        #[arg(long)]
        version: Option<semver::Version>,
    },
    /// Refuse the candidate, setting it aside with a reason.
    Reject {
        #[command(flatten)]
        store: StoreArg,
        /// The component.
        component: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Make the standby live again; the live version is set aside with a reason.
    Rollback {
        #[command(flatten)]
        store: StoreArg,
        /// The component.
        component: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Remove old retired and rejected versions, keeping the newest few of each.
    Gc {
        #[command(flatten)]
        store: StoreArg,
        /// How many retired and how many rejected versions to keep per component.
        #[arg(long, default_value_t = 2)]
        keep: usize,
    },
    /// Show a component's transition log.
    Log {
        #[command(flatten)]
        store: StoreArg,
        /// The component.
        component: String,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Status { store, json } => status(&store, json),
        Command::Stage {
            store,
            bundle,
            trust,
        } => {
            let verifier = verifier(&trust)?;
            let mut s = Store::init(&store.path)
                .with_context(|| format!("opening version store {}", store.path.display()))?;
            let (verified, entry) = s
                .stage_file(&verifier, &bundle)
                .with_context(|| format!("bundle {} is refused", bundle.display()))?;
            println!(
                "{} {}: candidate (staged, not live)",
                verified.manifest().component,
                entry.version
            );
            Ok(())
        }
        Command::Promote {
            store,
            component,
            version,
        } => {
            let name = ComponentName::new(&component)?;
            let mut s = open(&store)?;
            let e = s.promote(&name, version.as_ref())?;
            println!("{name} {}: live", e.version);
            print_component(s.component(&name)?);
            Ok(())
        }
        Command::Reject {
            store,
            component,
            reason,
        } => {
            let name = ComponentName::new(&component)?;
            let mut s = open(&store)?;
            let e = s.reject(&name, None, &reason)?;
            println!("{name} {}: rejected ({reason})", e.version);
            Ok(())
        }
        Command::Rollback {
            store,
            component,
            reason,
        } => {
            let name = ComponentName::new(&component)?;
            let mut s = open(&store)?;
            let e = s.rollback(&name, &reason)?;
            println!("{name} {}: live again (rolled back: {reason})", e.version);
            print_component(s.component(&name)?);
            Ok(())
        }
        Command::Gc { store, keep } => {
            let mut s = open(&store)?;
            let removed = s.gc(keep)?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for (c, v) in removed {
                println!("removed {c} {v}");
            }
            Ok(())
        }
        Command::Log { store, component } => {
            let name = ComponentName::new(&component)?;
            let log = nonstop_store::read_log(&store.path, &name)?;
            for e in log {
                println!(
                    "{:>4}  {}  {:<8} {:<10} {:>9} -> {:<9}  {}{}",
                    e.seq,
                    rfc3339(e.at),
                    e.action,
                    e.version.to_string(),
                    e.from.as_str(),
                    e.to.as_str(),
                    e.digest,
                    if e.reason.is_empty() {
                        String::new()
                    } else {
                        format!("  reason: {}", e.reason)
                    }
                );
            }
            Ok(())
        }
    }
}

/// The trusted keys from `--trust` paths, with the default limits.
pub fn verifier(trust: &[PathBuf]) -> anyhow::Result<Verifier> {
    let mut trusted = TrustedKeys::new();
    for path in trust {
        trusted.load(path)?;
    }
    Ok(Verifier::new(trusted, BundleLimits::default()))
}

fn open(store: &StoreArg) -> anyhow::Result<Store> {
    Store::open(&store.path)
        .with_context(|| format!("opening version store {}", store.path.display()))
}

fn status(store: &StoreArg, json: bool) -> anyhow::Result<()> {
    let states = nonstop_store::read_status(&store.path)
        .with_context(|| format!("reading version store {}", store.path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    if states.is_empty() {
        println!("no components in {}", store.path.display());
    }
    for state in &states {
        print_component(state);
    }
    Ok(())
}

fn print_component(s: &ComponentState) {
    let line = |role: &str, e: &Option<VersionEntry>| match e {
        Some(e) => println!(
            "  {role:<10} {:<12} {}  staged {}",
            e.version.to_string(),
            e.digest,
            rfc3339(e.staged_at)
        ),
        None => println!("  {role:<10} -"),
    };
    println!("{}", s.component);
    line("live", &s.live);
    line("candidate", &s.candidate);
    line("standby", &s.standby);
    for e in &s.retired {
        line("retired", &Some(e.clone()));
    }
    for r in &s.rejected {
        println!(
            "  {:<10} {:<12} {}  {}",
            "rejected",
            r.entry.version.to_string(),
            rfc3339(r.at),
            r.reason
        );
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
