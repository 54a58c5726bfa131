//! `nonstop rules`: a vendor checks a rule bundle before publishing; an operator calls a live rule.

use std::fs;
use std::path::{Path, PathBuf};

use nonstop_bundle::SecretKey;

use crate::{fails, ok};

fn modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules")
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed([31; 32]);
    fs::write(dir.path().join("vendor.key"), key.to_file_text()).unwrap();
    fs::write(dir.path().join("vendor.pub"), key.public().to_file_text()).unwrap();
    dir
}

fn bundle(dir: &Path, module: &str, version: &str) -> String {
    let out = format!("{module}-{version}.nsb");
    let payload = modules().join("dist").join(format!("{module}.wasm"));
    let checks = modules().join(module).join("checks.json");
    ok(
        dir,
        &[
            "bundle",
            "create",
            "--component",
            "fees",
            "--version",
            version,
            "--payload",
            payload.to_str().unwrap(),
            "--file",
            "fees.wasm",
            "--checks",
            checks.to_str().unwrap(),
            "--key",
            "vendor.key",
            "-o",
            &out,
        ],
    );
    out
}

#[test]
fn a_vendor_checks_a_bundle_before_publishing_it() {
    let dir = setup();
    let d = dir.path();
    let good = bundle(d, "fees-v2", "2.0.0");
    let out = ok(d, &["rules", "check", &good, "--trust", "vendor.pub"]);
    assert!(
        out.contains("fees 2.0.0: check 2 passed (5 test vectors"),
        "{out}"
    );

    let bad = bundle(d, "bad-answers", "2.0.1");
    let err = fails(d, &["rules", "check", &bad, "--trust", "vendor.pub"]);
    assert!(
        err.starts_with(
            "error: fees 2.0.1 fails its candidate checks: check 2 (test vector 0): expected"
        ),
        "{err}"
    );
    let wrong = bundle(d, "bad-interface", "2.0.2");
    let err = fails(d, &["rules", "check", &wrong, "--trust", "vendor.pub"]);
    assert!(
        err.contains("component does not export nonstop:his-rules/fees@0.1.0"),
        "{err}"
    );
}

#[test]
fn an_operator_calls_the_live_rule_of_a_store() {
    let dir = setup();
    let d = dir.path();
    let b = bundle(d, "fees-v1", "1.0.0");
    ok(d, &["store", "stage", &b, "--trust", "vendor.pub"]);
    ok(d, &["store", "promote", "fees"]);
    let input = r#"{"registration_level":3,"doctor_title":"Attending","clinic_type":"Night","patient_age_years":30,"first_visit":false}"#;
    let out = ok(d, &["rules", "call", "fees", input]);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["Ok"]["total_fen"], 2500);
    let err = fails(d, &["rules", "call", "fees", r#"{"registration_level":3}"#]);
    assert!(
        err.contains("input does not fit quote: missing field `doctor_title`"),
        "{err}"
    );
}
