//! `nonstop rules check | call`: the rule modules outside a node.

use std::path::PathBuf;

use anyhow::Context;
use nonstop_bundle::ComponentName;
use nonstop_runtime::{CheckConfig, RuleEngine, Rules, RuntimeConfig, VersionTag};

use crate::StoreArg;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Run candidate checks 1 and 2 on a bundle, as a node would before shadow traffic.
    Check {
        /// The bundle file.
        bundle: PathBuf,
        /// A trusted public key file, or a directory of *.pub files; repeatable.
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
    },
    /// Call the live version of a rule in a store with a JSON input.
    Call {
        #[command(flatten)]
        store: StoreArg,
        /// The component: fees, insurance, triage or quota.
        component: String,
        /// The input, as JSON (the interface's request record).
        input: String,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let engine = RuleEngine::new(RuntimeConfig::default())?;
    match cmd {
        Command::Check { bundle, trust } => {
            let verifier = crate::store_cmd::verifier(&trust)?;
            let verified = verifier
                .open_file(&bundle, None)
                .with_context(|| format!("bundle {} is refused", bundle.display()))?;
            let m = verified.manifest();
            let passed = nonstop_agent::precheck(&verified, &engine, &CheckConfig::default())
                .map_err(anyhow::Error::msg)
                .with_context(|| {
                    format!("{} {} fails its candidate checks", m.component, m.version)
                })?;
            println!(
                "{} {}: check 1 passed (compiles, exports its interface)",
                m.component, m.version
            );
            println!(
                "{} {}: check 2 passed ({passed} test vectors, host invariants, same answer twice)",
                m.component, m.version
            );
            println!("check 3 (shadow traffic) runs in the node, beside live calls");
            Ok(())
        }
        Command::Call {
            store,
            component,
            input,
        } => {
            let name = ComponentName::new(&component)?;
            let state = nonstop_store::read_status(&store.path)?
                .into_iter()
                .find(|s| s.component == name)
                .with_context(|| format!("component {name} is not in {}", store.path.display()))?;
            let live = state
                .live
                .with_context(|| format!("component {name} has no live version"))?;
            let rules = Rules::new();
            let slot = rules.slot(name.as_str())?;
            let tag = VersionTag {
                component: name.to_string(),
                version: live.version.clone(),
                digest: live.digest,
            };
            slot.load(
                &engine,
                tag,
                &nonstop_store::payload_path(&store.path, &name, &live),
                false,
            )?;
            let input: serde_json::Value =
                serde_json::from_str(&input).context("the input is not JSON")?;
            let (output, version) = slot.call_json(input).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            eprintln!(
                "computed by {} {} ({})",
                version.component, version.version, version.digest
            );
            Ok(())
        }
    }
}
