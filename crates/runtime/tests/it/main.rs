//! Integration tests of the runtime against the real rule modules in `modules/dist/`.

mod checks;
mod fuzz;
mod live;

use std::path::PathBuf;
use std::sync::Arc;

use nonstop_bundle::{CandidateChecks, Digest};
use nonstop_runtime::{LoadedVersion, RuleEngine, RuleKind, RuntimeConfig, VersionTag};

/// A built rule module.
pub fn module_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../modules/dist")
        .join(format!("{name}.wasm"))
}

/// The candidate checks shipped beside a module's source.
pub fn module_checks(name: &str) -> CandidateChecks {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../modules")
        .join(name)
        .join("checks.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The default engine with a small memory limit, so the memory-eating module fails fast.
pub fn engine() -> RuleEngine {
    engine_with(RuntimeConfig::default())
}

/// An engine with `config`, memory limited to 4 MiB.
pub fn engine_with(config: RuntimeConfig) -> RuleEngine {
    RuleEngine::new(RuntimeConfig {
        max_memory_bytes: 4 << 20,
        ..config
    })
    .unwrap()
}

/// The tag a module gets when installed as `component` at `version`.
pub fn tag(component: &str, name: &str, version: &str) -> VersionTag {
    VersionTag {
        component: component.into(),
        version: version.parse().unwrap(),
        digest: Digest::of(&std::fs::read(module_path(name)).unwrap()),
    }
}

/// Loads module `name` as a version of rule `R`, copying it to a temporary directory first so its
/// compiled cache does not land in the source tree.
pub fn load<R: RuleKind>(
    engine: &RuleEngine,
    name: &str,
    version: &str,
) -> Result<Arc<LoadedVersion<R>>, nonstop_runtime::RuntimeError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.wasm");
    std::fs::copy(module_path(name), &path).unwrap();
    let tag = tag(R::COMPONENT, name, version);
    let component = engine.load(&path, &tag.digest)?;
    LoadedVersion::new(engine, tag, &component, &[]).map(Arc::new)
}
