//! An operator's session: keys, bundles, staging, promotion, rollback, and the refusals.

use std::fs;

use nonstop_bundle::SecretKey;

use crate::{fails, nonstop, ok, settings};

/// A directory with a fixed publisher key (so digests and key ids are stable) and two payloads.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed([11; 32]);
    fs::write(dir.path().join("publisher.key"), key.to_file_text()).unwrap();
    fs::write(
        dir.path().join("publisher.pub"),
        key.public().to_file_text(),
    )
    .unwrap();
    fs::write(dir.path().join("fees-1.wasm"), b"fees rules, version 1").unwrap();
    fs::write(
        dir.path().join("fees-2.wasm"),
        b"fees rules, version 2: night surcharge",
    )
    .unwrap();
    dir
}

fn create(dir: &std::path::Path, version: &str, payload: &str) -> String {
    let out = format!("fees-{version}.nsb");
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
            payload,
            "--file",
            "fees.wasm",
            "--key",
            "publisher.key",
            "--notes",
            "test release",
            "-o",
            &out,
        ],
    );
    out
}

#[test]
fn keygen_writes_a_private_secret_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["keygen", "--out", "vendor"]);
    assert!(out.starts_with("key id   "), "{out}");
    let mode = fs::metadata(dir.path().join("vendor.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = fails(dir.path(), &["keygen", "--out", "vendor"]);
    assert!(err.contains("not overwriting"), "{err}");
}

#[test]
fn an_update_goes_candidate_then_live_and_rolls_back() {
    let dir = workspace();
    let d = dir.path();
    let b1 = create(d, "1.0.0", "fees-1.wasm");
    let b2 = create(d, "1.1.0", "fees-2.wasm");
    settings().bind(|| {
        insta::assert_snapshot!("inspect", ok(d, &["bundle", "inspect", &b2]));
        insta::assert_snapshot!(
            "verify",
            ok(d, &["bundle", "verify", &b2, "--trust", "publisher.pub"])
        );
    });
    ok(d, &["store", "stage", &b1, "--trust", "publisher.pub"]);
    ok(d, &["store", "promote", "fees"]);
    ok(d, &["store", "stage", &b2, "--trust", "."]);
    settings().bind(|| {
        insta::assert_snapshot!("status_with_candidate", ok(d, &["store", "status"]));
        insta::assert_snapshot!(
            "promote",
            ok(d, &["store", "promote", "fees", "--version", "1.1.0"])
        );
        insta::assert_snapshot!(
            "rollback",
            ok(
                d,
                &[
                    "store",
                    "rollback",
                    "fees",
                    "--reason",
                    "trap rate over threshold"
                ]
            )
        );
        insta::assert_snapshot!("log", ok(d, &["store", "log", "fees"]));
    });
}

#[test]
fn bad_bundles_and_operations_are_refused_with_the_reason() {
    let dir = workspace();
    let d = dir.path();
    let b1 = create(d, "1.0.0", "fees-1.wasm");
    ok(d, &["store", "stage", &b1, "--trust", "publisher.pub"]);
    ok(d, &["store", "promote", "fees"]);

    let mut tampered = fs::read(d.join(&b1)).unwrap();
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    fs::write(d.join("tampered.nsb"), tampered).unwrap();
    let stranger = SecretKey::from_seed([12; 32]);
    fs::write(d.join("stranger.key"), stranger.to_file_text()).unwrap();
    ok(
        d,
        &[
            "bundle",
            "create",
            "--component",
            "fees",
            "--version",
            "2.0.0",
            "--payload",
            "fees-2.wasm",
            "--key",
            "stranger.key",
            "-o",
            "unsigned.nsb",
        ],
    );
    let errors = [
        fails(
            d,
            &[
                "bundle",
                "verify",
                "tampered.nsb",
                "--trust",
                "publisher.pub",
            ],
        ),
        fails(
            d,
            &["store", "stage", "unsigned.nsb", "--trust", "publisher.pub"],
        ),
        fails(d, &["store", "stage", &b1, "--trust", "publisher.pub"]),
        fails(d, &["store", "promote", "fees"]),
        fails(d, &["store", "rollback", "fees", "--reason", "x"]),
        fails(d, &["store", "promote", "../etc"]),
        fails(
            d,
            &[
                "bundle",
                "create",
                "--component",
                "../etc",
                "--version",
                "1.0.0",
                "--payload",
                "fees-1.wasm",
                "--key",
                "publisher.key",
                "-o",
                "x.nsb",
            ],
        ),
    ];
    insta::assert_snapshot!(errors.join(""));
    let status = ok(d, &["store", "status"]);
    assert!(status.contains("live       1.0.0"), "{status}");
}

#[test]
fn a_store_in_use_by_another_process_is_refused_but_status_still_reads() {
    let dir = workspace();
    let d = dir.path();
    let b1 = create(d, "1.0.0", "fees-1.wasm");
    ok(d, &["store", "stage", &b1, "--trust", "publisher.pub"]);
    let _held = nonstop_store::Store::init(&d.join("nonstop-data/store")).unwrap();
    let err = fails(d, &["store", "promote", "fees"]);
    assert!(
        err.contains(&format!(
            "is in use by another process (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    assert!(ok(d, &["store", "status"]).contains("candidate  1.0.0"));
    assert!(nonstop(d, &["store", "status", "--json"]).status.success());
}
