use nonstop_bundle::{
    BundleError, BundleLimits, ComponentKind, Draft, SecretKey, TrustedKeys, Verifier,
};
use nonstop_trust::{
    CurrentRelease, Role, Roles, RootDraft, Statement, StatementBody, TrustError, TrustHolder,
};
use time::{Duration, OffsetDateTime};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn role(keys: &[&SecretKey], threshold: usize) -> Role {
    Role {
        keys: keys.iter().map(|k| k.key_id()).collect(),
        threshold,
    }
}

/// A root of `version` whose root role is `root` (k of them), release role `release` (k of
/// them), timestamp role `timestamp`, signed by `signers`.
fn root_file(
    version: u64,
    root: (&[&SecretKey], usize),
    release: (&[&SecretKey], usize),
    timestamp: Option<&SecretKey>,
    signers: &[&SecretKey],
) -> Vec<u8> {
    let mut keys: Vec<_> = root.0.iter().chain(release.0).map(|k| k.public()).collect();
    keys.extend(timestamp.map(|k| k.public()));
    let mut draft = RootDraft::new(
        version,
        &keys,
        Roles {
            root: role(root.0, root.1),
            release: role(release.0, release.1),
            timestamp: timestamp.map(|k| role(&[k], 1)),
        },
    )
    .unwrap();
    for k in signers {
        draft.sign(k);
    }
    draft.to_text().into_bytes()
}

fn bundle(version: &str, signers: &[&SecretKey]) -> Vec<u8> {
    let draft = Draft::new(
        "fees",
        ComponentKind::WasmComponent,
        version.parse().unwrap(),
        "fees.wasm",
    )
    .unwrap();
    let one = nonstop_bundle::create(&draft, b"\0asm payload", signers[0]).unwrap();
    signers[1..].iter().fold(one, |b, k| {
        nonstop_bundle::cosign(&b, k, &BundleLimits::default()).unwrap()
    })
}

fn verifier(holder: &TrustHolder) -> Verifier {
    Verifier::new(holder.release_keys(), BundleLimits::default())
}

fn base(keys: &[&SecretKey]) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    for k in keys {
        t.add(k.public());
    }
    t
}

fn statement(
    root_version: u64,
    version: u64,
    issued: OffsetDateTime,
    signer: &SecretKey,
) -> Vec<u8> {
    Statement::sign(
        &StatementBody {
            kind: "timestamp".into(),
            version,
            root_version,
            issued_at: issued,
            expires_at: issued + Duration::days(1),
            releases: vec![CurrentRelease {
                component: "fees".into(),
                version: "2.0.0".into(),
                bundle_digest: "sha256:00".into(),
            }],
        },
        signer,
    )
    .into_bytes()
}

#[test]
fn a_rotation_signed_by_both_roots_revokes_the_key_it_leaves_out_even_for_bundles_signed_before() {
    let dir = tempfile::tempdir().unwrap();
    let (offline_a, offline_b, leaked, fresh) = (key(1), key(2), key(3), key(4));
    let v1 = root_file(
        1,
        (&[&offline_a, &offline_b], 2),
        (&[&leaked], 1),
        None,
        &[&offline_a, &offline_b],
    );
    let mut holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), Some(&v1)).unwrap();
    assert_eq!(holder.current().version(), 1);
    // Signed while the key was trusted, kept by an attacker.
    let old_bundle = bundle("1.1.0", &[&leaked]);
    verifier(&holder)
        .open(&old_bundle, None)
        .expect("trusted under root 1");

    let v2 = root_file(
        2,
        (&[&offline_a, &offline_b], 2),
        (&[&fresh], 1),
        None,
        &[&offline_a, &offline_b],
    );
    assert!(holder.accept_root(&v2).unwrap());
    assert!(
        !holder.accept_root(&v2).unwrap(),
        "the same root again changes nothing"
    );
    let err = verifier(&holder).open(&old_bundle, None).unwrap_err();
    assert!(
        matches!(&err, BundleError::Revoked { key_id, by } if *key_id == leaked.key_id() && by == "root version 2"),
        "{err}"
    );
    assert!(
        err.to_string().contains("which root version 2 revoked"),
        "{err}"
    );
    verifier(&holder)
        .open(&bundle("1.1.0", &[&fresh]), None)
        .expect("the new key is trusted");

    // After a restart the chain is checked again and the revocation still holds.
    drop(holder);
    let holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), None).unwrap();
    assert_eq!(holder.current().version(), 2);
    assert!(matches!(
        verifier(&holder).open(&old_bundle, None),
        Err(BundleError::Revoked { .. })
    ));
    assert_eq!(holder.revoked()[0].key_id, leaked.key_id());
}

#[test]
fn a_stolen_key_alone_cannot_rotate_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, thief) = (key(1), key(2), key(9));
    let v1 = root_file(1, (&[&a, &b], 2), (&[&a], 1), None, &[&a, &b]);
    let mut holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), Some(&v1)).unwrap();

    // The thief's own root, signed by itself and one stolen root key.
    let forged = root_file(2, (&[&thief], 1), (&[&thief], 1), None, &[&thief, &a]);
    let err = holder.accept_root(&forged).unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::Threshold {
                valid: 1,
                needed: 2,
                root_version: 1,
                ..
            }
        ),
        "{err}"
    );
    // A root signed by the old root's threshold but not by its own new keys is refused too.
    let unsigned_by_new = root_file(2, (&[&thief], 1), (&[&a], 1), None, &[&a, &b]);
    assert!(matches!(
        holder.accept_root(&unsigned_by_new).unwrap_err(),
        TrustError::Threshold {
            role: "root",
            root_version: 2,
            ..
        }
    ));
    // A version cannot be skipped, nor an old one replayed.
    let v3 = root_file(3, (&[&a, &b], 2), (&[&a], 1), None, &[&a, &b]);
    assert!(matches!(
        holder.accept_root(&v3).unwrap_err(),
        TrustError::RootVersion {
            current: 1,
            found: 3
        }
    ));
    let other_v1 = root_file(1, (&[&a, &b], 2), (&[&b], 1), None, &[&a, &b]);
    assert!(matches!(
        holder.accept_root(&other_v1).unwrap_err(),
        TrustError::RootVersion {
            current: 1,
            found: 1
        }
    ));
    // An altered root: its signed bytes changed after signing.
    let good_v2 = root_file(2, (&[&a, &b], 2), (&[&b], 1), None, &[&a, &b]);
    let altered = String::from_utf8(good_v2)
        .unwrap()
        .replacen("\"threshold\": 1", "\"threshold\": 1 ", 1)
        .into_bytes();
    assert!(matches!(
        holder.accept_root(&altered).unwrap_err(),
        TrustError::BadSignature { .. }
    ));
    assert_eq!(
        holder.current().version(),
        1,
        "nothing changed the trusted root"
    );
}

#[test]
fn the_first_root_must_be_signed_by_the_keys_already_trusted_or_installed_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let (publisher, stranger) = (key(1), key(2));
    let mut holder = TrustHolder::open(dir.path(), &base(&[&publisher]), None).unwrap();
    assert_eq!(holder.current().version(), 0);
    let by_stranger = root_file(1, (&[&stranger], 1), (&[&stranger], 1), None, &[&stranger]);
    assert!(matches!(
        holder.accept_root(&by_stranger).unwrap_err(),
        TrustError::Threshold {
            root_version: 0,
            ..
        }
    ));
    let by_publisher = root_file(
        1,
        (&[&stranger], 1),
        (&[&stranger], 1),
        None,
        &[&publisher, &stranger],
    );
    assert!(holder.accept_root(&by_publisher).unwrap());
    let err = verifier(&holder)
        .open(&bundle("1.0.0", &[&publisher]), None)
        .unwrap_err();
    assert!(matches!(err, BundleError::Revoked { .. }), "{err}");
}

#[test]
fn a_release_needs_the_threshold_of_distinct_publisher_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (r, p1, p2, p3) = (key(1), key(2), key(3), key(4));
    let v1 = root_file(1, (&[&r], 1), (&[&p1, &p2, &p3], 2), None, &[&r]);
    let holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), Some(&v1)).unwrap();
    let v = verifier(&holder);
    let err = v.open(&bundle("1.0.0", &[&p1]), None).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooFewSignatures {
                valid: 1,
                needed: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nonstop bundle sign"), "{err}");
    let two = bundle("1.0.0", &[&p1, &p3]);
    assert_eq!(v.open(&two, None).unwrap().signers().len(), 2);
    // The same key twice counts once.
    let twice = nonstop_bundle::cosign(&bundle("1.0.0", &[&p1]), &p1, &BundleLimits::default());
    assert!(twice.is_err(), "a key cannot sign the same bundle twice");
}

#[test]
fn statements_must_be_newer_unexpired_and_made_under_the_current_root() {
    let dir = tempfile::tempdir().unwrap();
    let (r, p, ts, ts2) = (key(1), key(2), key(5), key(6));
    let v1 = root_file(1, (&[&r], 1), (&[&p], 1), Some(&ts), &[&r]);
    let mut holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), Some(&v1)).unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let f = holder.freshness(now, 3600);
    assert!(f.checked && !f.fresh, "{}", f.message);

    assert!(
        holder
            .accept_statement(&statement(1, 10, now, &ts), now)
            .unwrap()
    );
    assert!(
        !holder
            .accept_statement(&statement(1, 10, now, &ts), now)
            .unwrap()
    );
    let f = holder.freshness(now + Duration::seconds(30), 3600);
    assert!(f.fresh, "{}", f.message);
    assert_eq!(f.releases[0].version, "2.0.0");

    // Replay of an older statement.
    let err = holder
        .accept_statement(&statement(1, 9, now - Duration::minutes(5), &ts), now)
        .unwrap_err();
    assert!(
        matches!(err, TrustError::StatementReplay { found: 9, last: 10 }),
        "{err}"
    );
    // Expired.
    let err = holder
        .accept_statement(&statement(1, 11, now - Duration::days(2), &ts), now)
        .unwrap_err();
    assert!(matches!(err, TrustError::StatementExpired { .. }), "{err}");
    // Signed by a key the root does not name for statements (a publisher key).
    let err = holder
        .accept_statement(&statement(1, 12, now, &p), now)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::Threshold {
                role: "timestamp",
                valid: 0,
                ..
            }
        ),
        "{err}"
    );

    // Nothing heard for longer than the limit: the holder says so.
    let f = holder.freshness(now + Duration::hours(2), 3600);
    assert!(!f.fresh);
    assert!(
        f.message.contains("updates may be being withheld"),
        "{}",
        f.message
    );

    // A rotation to a new timestamp key: statements of the old root, or by the old key, stop.
    let v2 = root_file(2, (&[&r], 1), (&[&p], 1), Some(&ts2), &[&r]);
    holder.accept_root(&v2).unwrap();
    let f = holder.freshness(now, 3600);
    assert!(
        !f.fresh && f.message.contains("root version 1"),
        "{}",
        f.message
    );
    let err = holder
        .accept_statement(&statement(1, 13, now, &ts2), now)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::StatementRoot {
                statement: 1,
                current: 2
            }
        ),
        "{err}"
    );
    let err = holder
        .accept_statement(&statement(2, 13, now, &ts), now)
        .unwrap_err();
    assert!(matches!(err, TrustError::Threshold { .. }), "{err}");
    assert!(
        holder
            .accept_statement(&statement(2, 13, now, &ts2), now)
            .unwrap()
    );

    // After a restart the newest statement is still known.
    drop(holder);
    let holder = TrustHolder::open(dir.path(), &TrustedKeys::new(), None).unwrap();
    assert_eq!(holder.freshness(now, 3600).version, Some(13));
}

#[test]
fn a_root_that_breaks_the_rules_is_refused_with_the_rule() {
    let (a, b) = (key(1), key(2));
    let refuse = |roles: Roles, keys: Vec<nonstop_bundle::PublicKey>| {
        RootDraft::new(1, &keys, roles).unwrap_err().to_string()
    };
    let err = refuse(
        Roles {
            root: role(&[&a], 2),
            release: role(&[&a], 1),
            timestamp: None,
        },
        vec![a.public()],
    );
    assert!(err.contains("threshold is 2 of 1 keys"), "{err}");
    let err = refuse(
        Roles {
            root: role(&[&a], 1),
            release: role(&[&b], 1),
            timestamp: None,
        },
        vec![a.public()],
    );
    assert!(err.contains(&format!("names key {}", b.key_id())), "{err}");
    let err = refuse(
        Roles {
            root: role(&[&a], 0),
            release: role(&[&a], 1),
            timestamp: None,
        },
        vec![a.public()],
    );
    assert!(err.contains("threshold is 0"), "{err}");
    let not_json = TrustHolder::open(
        tempfile::tempdir().unwrap().path(),
        &TrustedKeys::new(),
        Some(b"{\"signed\": 1}"),
    )
    .unwrap_err();
    assert!(
        matches!(not_json, TrustError::Invalid { what: "root", .. }),
        "{not_json}"
    );
}
