//! Opening bundles: every check `Verifier::open` makes, each with the error a user would see.

use nonstop_bundle::{
    BundleError, BundleLimits, ComponentKind, Draft, Intent, Manifest, PayloadEncoding, SecretKey,
    TrustedKeys, Verifier, create, seal, seal_bytes,
};
use proptest::prelude::*;

const PAYLOAD: &[u8] = b"\0asm fees rules version 1.1.0";

fn publisher() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

fn verifier() -> Verifier {
    let mut trusted = TrustedKeys::new();
    trusted.add(publisher().public());
    Verifier::new(trusted, BundleLimits::default())
}

fn draft(version: &str) -> Draft {
    let mut d = Draft::new(
        "fees",
        ComponentKind::WasmComponent,
        version.parse().unwrap(),
        "fees.wasm",
    )
    .unwrap();
    d.notes = "night clinic surcharge".into();
    d
}

fn good_bundle() -> Vec<u8> {
    create(&draft("1.1.0"), PAYLOAD, &publisher()).unwrap()
}

fn manifest_of(bytes: &[u8]) -> Manifest {
    nonstop_bundle::inspect(bytes, &BundleLimits::default())
        .unwrap()
        .manifest
        .unwrap()
}

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

#[test]
fn a_signed_bundle_opens_with_its_manifest_and_payload() {
    let bytes = good_bundle();
    let bundle = verifier().open(&bytes, Some(&v("1.0.0"))).unwrap();
    let m = bundle.manifest();
    assert_eq!(m.component.as_str(), "fees");
    assert_eq!(m.version, v("1.1.0"));
    assert_eq!(m.notes, "night clinic surcharge");
    assert_eq!(m.payload.size, PAYLOAD.len() as u64);
    assert_eq!(bundle.payload(), PAYLOAD);
    assert_eq!(bundle.signer(), publisher().key_id());
    assert_eq!(bundle.bytes(), &bytes[..]);
}

#[test]
fn every_truncation_is_refused() {
    let bytes = good_bundle();
    for len in 0..bytes.len() {
        let err = verifier().open(&bytes[..len], None).unwrap_err();
        assert!(
            matches!(err, BundleError::NotABundle | BundleError::Truncated { .. }),
            "cut at {len}: {err}"
        );
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let bytes = good_bundle();
    for pos in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut bad = bytes.clone();
            bad[pos] ^= 1 << bit;
            assert!(
                verifier().open(&bad, None).is_err(),
                "flip of bit {bit} at byte {pos} accepted"
            );
        }
    }
}

proptest! {
    #[test]
    fn any_overwritten_byte_is_refused(pos in 0usize..10_000, value in any::<u8>()) {
        let bytes = good_bundle();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != value);
        let mut bad = bytes.clone();
        bad[pos] = value;
        prop_assert!(verifier().open(&bad, None).is_err());
    }
}

#[test]
fn a_payload_altered_after_signing_fails_its_digest() {
    let mut bytes = good_bundle();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    let err = verifier().open(&bytes, None).unwrap_err();
    assert!(matches!(err, BundleError::DigestMismatch { .. }), "{err}");
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused_with_its_key_id() {
    let stranger = SecretKey::from_seed([9; 32]);
    let bytes = create(&draft("1.1.0"), PAYLOAD, &stranger).unwrap();
    match verifier().open(&bytes, None).unwrap_err() {
        BundleError::UnknownKey { key_id } => assert_eq!(key_id, stranger.key_id()),
        other => panic!("{other}"),
    }
}

#[test]
fn a_second_trusted_signature_opens_the_bundle_during_key_rotation() {
    let new_key = SecretKey::from_seed([3; 32]);
    let mut m = manifest_of(&good_bundle());
    m.key_id = publisher().key_id();
    // Signed by a key the node does not know yet, then by the one it trusts.
    let bytes = seal(&m, PAYLOAD, &[&new_key, &publisher()]);
    assert_eq!(
        verifier().open(&bytes, None).unwrap().signer(),
        publisher().key_id()
    );
}

#[test]
fn versions_must_move_forward_unless_the_bundle_is_a_signed_rollback() {
    let bytes = good_bundle();
    assert!(matches!(
        verifier().open(&bytes, Some(&v("1.1.0"))).unwrap_err(),
        BundleError::AlreadyLive { .. }
    ));
    assert!(matches!(
        verifier().open(&bytes, Some(&v("1.2.0"))).unwrap_err(),
        BundleError::Downgrade { .. }
    ));
    let mut rollback = draft("1.1.0");
    rollback.intent = Intent::Rollback { from: v("1.2.0") };
    let bytes = create(&rollback, PAYLOAD, &publisher()).unwrap();
    assert!(verifier().open(&bytes, Some(&v("1.2.0"))).is_ok());
    // Replayed later, against another live version, it is refused.
    assert!(matches!(
        verifier().open(&bytes, Some(&v("1.3.0"))).unwrap_err(),
        BundleError::RollbackMismatch { .. }
    ));
}

#[test]
fn limits_are_enforced_before_anything_is_read_into_memory() {
    let limits = BundleLimits {
        max_manifest_bytes: 1 << 20,
        max_payload_bytes: 8,
        max_program_bytes: 8,
    };
    let mut trusted = TrustedKeys::new();
    trusted.add(publisher().public());
    let err = Verifier::new(trusted.clone(), limits)
        .open(&good_bundle(), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooLarge {
                section: "payload",
                ..
            }
        ),
        "{err}"
    );

    // A rule module is held to the rule limit even where a program may be larger.
    let limits = BundleLimits {
        max_manifest_bytes: 1 << 20,
        max_payload_bytes: 8,
        max_program_bytes: 1 << 20,
    };
    let err = Verifier::new(trusted.clone(), limits)
        .open(&good_bundle(), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooLarge {
                section: "payload",
                limit: 8,
                ..
            }
        ),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.nsb");
    std::fs::write(&path, vec![0u8; 1 << 21]).unwrap();
    let limits = BundleLimits {
        max_manifest_bytes: 1024,
        max_payload_bytes: 1024,
        max_program_bytes: 1024,
    };
    let err = Verifier::new(trusted, limits)
        .open_file(&path, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooLarge {
                section: "file",
                ..
            }
        ),
        "{err}"
    );
}

/// Re-signs `bundle`'s manifest after `edit` changes its JSON, so only the edited rule can fail.
fn resigned(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut json = serde_json::to_value(manifest_of(&good_bundle())).unwrap();
    edit(&mut json);
    seal_bytes(
        &serde_json::to_vec(&json).unwrap(),
        PAYLOAD,
        &[&publisher()],
    )
}

/// The error each kind of bad bundle gets, exactly as an operator reads it. The golden file is
/// `snapshots/it__open__bad_bundles_get_errors_naming_the_failed_check.snap`.
#[test]
fn bad_bundles_get_errors_naming_the_failed_check() {
    let good = good_bundle();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("not a bundle", b"PK\x03\x04 a zip file".to_vec()),
        ("truncated payload", good[..good.len() - 5].to_vec()),
        ("trailing bytes", [good.clone(), b"junk".to_vec()].concat()),
        (
            "unknown key",
            create(&draft("1.1.0"), PAYLOAD, &SecretKey::from_seed([9; 32])).unwrap(),
        ),
        ("manifest format 2", resigned(|m| m["format"] = 2.into())),
        (
            "unknown manifest field",
            resigned(|m| m["run_as_root"] = true.into()),
        ),
        (
            "component ../etc",
            resigned(|m| m["component"] = "../etc".into()),
        ),
        (
            "payload file ../../bin/sh",
            resigned(|m| m["payload"]["file"] = "../../bin/sh".into()),
        ),
        (
            "wrong payload size",
            resigned(|m| m["payload"]["size"] = 3.into()),
        ),
        (
            "key id of another key",
            resigned(|m| m["key_id"] = "00112233445566ff".into()),
        ),
    ];
    let mut header2 = good.clone();
    header2[9] = 2;
    cases.push(("container format 2", header2));
    let mut forged = good.clone();
    forged[20] ^= 1;
    cases.push(("manifest altered", forged));
    let mut digest = good.clone();
    let n = digest.len();
    digest[n - 1] ^= 1;
    cases.push(("payload altered", digest));
    let mut unsigned = good.clone();
    let sig_count_at = 14 + u32::from_be_bytes(good[10..14].try_into().unwrap()) as usize;
    unsigned[sig_count_at] = 0;
    cases.push(("no signature", unsigned));
    let mut delta = manifest_of(&good);
    delta.payload.encoding = PayloadEncoding::Delta {
        base_version: v("1.0.0"),
        base_digest: nonstop_bundle::Digest::of(b"base"),
    };
    cases.push(("delta payload", seal(&delta, PAYLOAD, &[&publisher()])));
    cases.push(("older than live 2.0.0", good.clone()));
    let mut replay = draft("1.0.0");
    replay.intent = Intent::Rollback { from: v("1.1.0") };
    cases.push((
        "older than live 2.0.0: rollback signed from 1.1.0",
        create(&replay, PAYLOAD, &publisher()).unwrap(),
    ));
    cases.push((
        "manifest format 2 with a new field",
        resigned(|m| {
            m["format"] = 2.into();
            m["added_in_v2"] = true.into();
        }),
    ));
    cases.push((
        "payload file manifest.json",
        resigned(|m| m["payload"]["file"] = "manifest.json".into()),
    ));

    let report: String = cases
        .iter()
        .map(|(name, bytes)| {
            let live = name.starts_with("older").then(|| v("2.0.0"));
            let outcome = match verifier().open(bytes, live.as_ref()) {
                Ok(_) => "ACCEPTED".to_string(),
                Err(e) => e.to_string(),
            };
            format!("{name}:\n    {outcome}\n")
        })
        .collect();
    insta::assert_snapshot!(report);
}
