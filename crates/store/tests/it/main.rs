//! Integration tests of the version store: one test binary for the crate.

mod crash;
mod disk_full;
mod fuzz;
mod model;
mod ops;

use nonstop_bundle::{
    BundleLimits, ComponentKind, Draft, Intent, SecretKey, TrustedKeys, VerifiedBundle, Verifier,
};

/// Held by the tests that would starve the crash test's child of the CPU time it needs to make
/// progress between kills (the fuzz targets), and by the crash test itself.
pub static CPU_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The payload of `component` at `version`: distinct per version, so a test can tell exactly which
/// version a file holds. `len` bytes.
pub fn payload(component: &str, version: &str, len: usize) -> Vec<u8> {
    let seed = format!("{component} {version} ");
    seed.bytes().cycle().take(len.max(seed.len())).collect()
}

/// A verified bundle of `component` at `version` with [`payload`] as content.
pub fn bundle(component: &str, version: &str, len: usize) -> VerifiedBundle {
    bundle_with(component, version, len, Intent::Release)
}

/// Like [`bundle`], with an explicit intent (release or signed rollback).
pub fn bundle_with(component: &str, version: &str, len: usize, intent: Intent) -> VerifiedBundle {
    let key = SecretKey::from_seed([5; 32]);
    let mut draft = Draft::new(
        component,
        ComponentKind::WasmComponent,
        version.parse().unwrap(),
        "rules.wasm",
    )
    .unwrap();
    // A signed rollback opens only against the live version it names.
    let live = match &intent {
        Intent::Rollback { from } => Some(from.clone()),
        Intent::Release => None,
    };
    draft.intent = intent;
    let bytes = nonstop_bundle::create(&draft, &payload(component, version, len), &key).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.add(key.public());
    Verifier::new(trusted, BundleLimits::default())
        .open(&bytes, live.as_ref())
        .unwrap()
}

/// The version string of an optional entry, for compact assertions.
pub fn ver(e: &Option<nonstop_store::VersionEntry>) -> Option<String> {
    e.as_ref().map(|e| e.version.to_string())
}

/// `name` as a component name.
pub fn comp(name: &str) -> nonstop_bundle::ComponentName {
    nonstop_bundle::ComponentName::new(name).unwrap()
}
