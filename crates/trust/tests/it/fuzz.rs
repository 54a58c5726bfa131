//! Fuzz targets for the two documents a node takes from its update server: a root of trust
//! (`Root::successor`, as a node checks the next root against the one it holds) and a statement
//! of what is current (`Statement::verify`). Each replays its committed inputs in
//! `__fuzz__/<target>/{corpus,crashes}` and then random ones, with a mutated twin
//! (`nonstop_fuzzing` says why). The property: nothing panics or hangs; a root is accepted only
//! as version 2 signed by both root keys of root 1 (the threshold, 2) and naming only keys it
//! lists; a statement only if made under root 1 by its timestamp key and not expired.
//!
//! Longer: `BOLERO_RANDOM_ITERATIONS=20000 cargo test -p nonstop-trust --test it fuzz::`.
//! The committed corpus is written by `cargo test -p nonstop-trust --test it fuzz::write_corpus
//! -- --ignored` (keys from fixed seeds, so it chains from `root_1()`).

use std::path::Path;
use std::time::Duration;

use nonstop_bundle::SecretKey;
use nonstop_fuzzing::{Target, recipes};
use nonstop_trust::{CurrentRelease, Role, Roles, Root, RootDraft, Statement, StatementBody};
use time::OffsetDateTime;

const RANDOM: usize = 300;
const MUTATED: usize = 600;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn role(keys: &[u8], threshold: usize) -> Role {
    Role {
        keys: keys.iter().map(|n| key(*n).key_id()).collect(),
        threshold,
    }
}

/// Root keys 1 and 2 (2 of 2), publisher 3, timestamp key 4; version `v`, signed by `signers`.
fn root_text(version: u64, release: u8, signers: &[u8]) -> String {
    let keys: Vec<_> = [1, 2, release, 4]
        .iter()
        .map(|n| key(*n).public())
        .collect();
    let mut draft = RootDraft::new(
        version,
        &keys,
        Roles {
            root: role(&[1, 2], 2),
            release: role(&[release], 1),
            timestamp: Some(role(&[4], 1)),
        },
    )
    .unwrap();
    for n in signers {
        draft.sign(&key(*n));
    }
    draft.to_text()
}

fn root_1() -> Root {
    Root::first(root_text(1, 3, &[1, 2]).as_bytes()).unwrap()
}

/// A fixed "now" inside the corpus statements' validity.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn target(name: &'static str) -> Target {
    Target::new(
        name,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
}

fn check_root(current: &Root, input: &[u8]) {
    let _ = RootDraft::read(input);
    let _ = Root::first(input);
    if let Ok(next) = current.successor(input) {
        let body = next.body();
        assert_eq!(body.version, 2, "only the next version follows root 1");
        let signers = RootDraft::read(input).unwrap().signers();
        for n in [1, 2] {
            assert!(
                signers.contains(&key(n).key_id()),
                "root 1's root key {n} must sign"
            );
        }
        for id in body.roles.release.keys.iter().chain(&body.roles.root.keys) {
            assert!(body.keys.contains_key(id), "a role names only listed keys");
        }
    }
}

fn check_statement(root: &Root, input: &[u8]) {
    if let Ok(s) = Statement::verify(input, root, now()) {
        assert_eq!(s.body().root_version, 1);
        assert!(s.body().expires_at > now());
    }
}

#[test]
fn root() {
    let t = target("root");
    let current = root_1();
    bolero::check!(name = "root")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, |input| check_root(&current, input)));
}

#[test]
fn root_mutated() {
    let t = target("root");
    let current = root_1();
    let corpus = t.corpus().with_words(&[
        b"\"threshold\"",
        b"\"version\"",
        b"\"signed\"",
        b"\"signatures\"",
        b"\"timestamp\"",
        b"\"release\"",
    ]);
    bolero::check!(name = "root-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| t.check(&corpus.mutate(recipe), |input| check_root(&current, input)));
}

#[test]
fn statement() {
    let t = target("statement");
    let root = root_1();
    bolero::check!(name = "statement")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, |input| check_statement(&root, input)));
}

#[test]
fn statement_mutated() {
    let t = target("statement");
    let root = root_1();
    let corpus = t.corpus().with_words(&[
        b"\"root_version\"",
        b"\"expires_at\"",
        b"\"version\"",
        b"\"releases\"",
    ]);
    bolero::check!(name = "statement-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| {
            t.check(&corpus.mutate(recipe), |input| {
                check_statement(&root, input)
            })
        });
}

#[test]
#[ignore = "writes the committed corpus"]
fn write_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/__fuzz__");
    let write = |target: &str, name: &str, text: &str| {
        let d = dir.join(target).join("corpus");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), text).unwrap();
    };
    write("root", "root-2.json", &root_text(2, 5, &[1, 2]));
    write("root", "root-2-one-signature.json", &root_text(2, 5, &[1]));
    write("root", "root-3.json", &root_text(3, 5, &[1, 2]));
    write("root", "root-1.json", &root_text(1, 3, &[1, 2]));
    let statement = |version: u64, root_version: u64, signer: u8| {
        Statement::sign(
            &StatementBody {
                kind: "timestamp".into(),
                version,
                root_version,
                issued_at: now() - time::Duration::minutes(1),
                expires_at: now() + time::Duration::days(1),
                releases: vec![CurrentRelease {
                    component: "fees".into(),
                    version: "2.0.0".into(),
                    bundle_digest: format!("sha256:{}", "ab".repeat(32)),
                }],
            },
            &key(signer),
        )
    };
    write("statement", "fresh.json", &statement(10, 1, 4));
    write("statement", "other-root.json", &statement(11, 2, 4));
    write("statement", "wrong-key.json", &statement(12, 1, 3));
}
