//! End-to-end tests of the `nonstop` binary: real processes, real files, output as operators see it.

mod fleet;
mod fleet_postgres;
mod node_crash;
mod program;
mod rules;
mod service;
mod store_flow;
mod trust;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `nonstop` in `dir` with `args`.
pub fn nonstop(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nonstop"))
        .current_dir(dir)
        .env_remove("NONSTOP_STORE")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `nonstop` and returns stdout, failing the test with stderr if it fails.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = nonstop(dir, args);
    assert!(
        out.status.success(),
        "nonstop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `nonstop`, expecting failure, and returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = nonstop(dir, args);
    assert!(
        !out.status.success(),
        "nonstop {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Replaces times with a placeholder so snapshots stay stable.
pub fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[time]");
    s
}
