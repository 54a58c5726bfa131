//! Each store operation, as an operator would use it, and each refusal.

use std::fs;

use nonstop_bundle::Intent;
use nonstop_store::{Role, Store, StoreError};

use crate::{bundle, bundle_with, comp, payload, ver};

#[test]
fn staging_creates_a_candidate_beside_the_live_version_and_leaves_live_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 100)).unwrap();
    store.promote(&comp("fees"), None).unwrap();

    store.stage(&bundle("fees", "1.1.0", 100)).unwrap();
    let s = store.component(&comp("fees")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.0.0"));
    assert_eq!(ver(&s.candidate).as_deref(), Some("1.1.0"));
    let live_dir = dir.path().join("components/fees/versions/1.0.0");
    let cand_dir = dir.path().join("components/fees/versions/1.1.0");
    assert_eq!(
        fs::read(live_dir.join("rules.wasm")).unwrap(),
        payload("fees", "1.0.0", 100)
    );
    assert_eq!(
        fs::read(cand_dir.join("rules.wasm")).unwrap(),
        payload("fees", "1.1.0", 100)
    );
    assert!(cand_dir.join("manifest.json").is_file());
    assert!(
        cand_dir.join("bundle.nsb").is_file(),
        "the signed bundle is kept for re-verification"
    );
}

#[test]
fn promote_makes_the_candidate_live_and_keeps_the_old_live_as_standby() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        store.stage(&bundle("fees", v, 64)).unwrap();
        store
            .promote(&comp("fees"), Some(&v.parse().unwrap()))
            .unwrap();
    }
    let s = store.component(&comp("fees")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.2.0"));
    assert_eq!(ver(&s.standby).as_deref(), Some("1.1.0"));
    assert_eq!(s.candidate, None);
    assert_eq!(
        s.retired
            .iter()
            .map(|e| e.version.to_string())
            .collect::<Vec<_>>(),
        ["1.0.0"]
    );
}

#[test]
fn reject_sets_the_candidate_aside_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("triage", "1.0.0", 64)).unwrap();
    store.promote(&comp("triage"), None).unwrap();
    store.stage(&bundle("triage", "2.0.0", 64)).unwrap();
    store
        .reject(
            &comp("triage"),
            None,
            "test vector 3: expected weight 90, got 10",
        )
        .unwrap();

    let s = store.component(&comp("triage")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.0.0"));
    assert_eq!(s.candidate, None);
    assert_eq!(
        s.rejected[0].reason,
        "test vector 3: expected weight 90, got 10"
    );
    assert!(!dir.path().join("components/triage/versions/2.0.0").exists());
    assert!(
        dir.path()
            .join("components/triage/rejected")
            .join(&s.rejected[0].dir)
            .join("rules.wasm")
            .is_file()
    );
    // The same version can be fixed and staged again.
    store.stage(&bundle("triage", "2.0.0", 65)).unwrap();
}

#[test]
fn rollback_returns_to_standby_and_sets_the_bad_version_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        store.stage(&bundle("fees", v, 64)).unwrap();
        store.promote(&comp("fees"), None).unwrap();
    }
    store
        .rollback(&comp("fees"), "trap rate 4% over 1% in watch window")
        .unwrap();
    let s = store.component(&comp("fees")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.1.0"));
    assert_eq!(
        ver(&s.standby).as_deref(),
        Some("1.0.0"),
        "the newest retired version becomes standby"
    );
    assert_eq!(s.rejected[0].entry.version.to_string(), "1.2.0");
    assert_eq!(s.rejected[0].reason, "trap rate 4% over 1% in watch window");

    store.rollback(&comp("fees"), "again").unwrap();
    let err = store.rollback(&comp("fees"), "once more").unwrap_err();
    assert!(matches!(err, StoreError::NoStandby { .. }), "{err}");
    assert_eq!(
        ver(&store.component(&comp("fees")).unwrap().live).as_deref(),
        Some("1.0.0")
    );
}

#[test]
fn gc_keeps_the_newest_versions_and_never_live_candidate_or_standby() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"] {
        store.stage(&bundle("fees", v, 64)).unwrap();
        store.promote(&comp("fees"), None).unwrap();
    }
    store.stage(&bundle("fees", "1.5.0", 64)).unwrap();
    let removed = store.gc(1).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let s = store.component(&comp("fees")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.4.0"));
    assert_eq!(ver(&s.standby).as_deref(), Some("1.3.0"));
    assert_eq!(ver(&s.candidate).as_deref(), Some("1.5.0"));
    assert_eq!(s.retired.len(), 1);
    let mut on_disk: Vec<_> = fs::read_dir(dir.path().join("components/fees/versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["1.2.0", "1.3.0", "1.4.0", "1.5.0"]);
}

#[test]
fn every_transition_is_in_the_log_with_time_roles_digest_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    let b = bundle("fees", "1.0.0", 64);
    store.stage(&b).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store.stage(&bundle("fees", "1.1.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store
        .rollback(&comp("fees"), "watch window: 12 traps")
        .unwrap();
    drop(store);

    let log = nonstop_store::read_log(dir.path(), &comp("fees")).unwrap();
    let moves: Vec<String> = log
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}->{} {}",
                e.seq, e.action, e.version, e.from, e.to, e.reason
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            "1 stage 1.0.0 absent->candidate ",
            "2 promote 1.0.0 candidate->live ",
            "3 stage 1.1.0 absent->candidate ",
            "4 promote 1.1.0 candidate->live ",
            "4 promote 1.0.0 live->standby ",
            "5 rollback 1.0.0 standby->live watch window: 12 traps",
            "5 rollback 1.1.0 live->rejected watch window: 12 traps",
        ]
    );
    assert_eq!(log[0].digest, b.manifest().payload.digest);
    assert!(log.iter().all(|e| e.component.as_str() == "fees"));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn refused_operations_name_the_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store.stage(&bundle("fees", "1.1.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store.stage(&bundle("fees", "1.2.0", 64)).unwrap();
    let before = store.component(&comp("fees")).unwrap().clone();

    let errors = [
        store.stage(&bundle("fees", "1.3.0", 64)).unwrap_err(),
        store
            .promote(&comp("fees"), Some(&"9.9.9".parse().unwrap()))
            .unwrap_err(),
        store.promote(&comp("nope"), None).unwrap_err(),
    ];
    let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        texts,
        [
            "component fees already has candidate 1.2.0 under test: promote or reject it first",
            "component fees's candidate is 1.2.0, not 9.9.9",
            "component nope is not in the store",
        ]
    );
    store.reject(&comp("fees"), None, "no").unwrap();
    let err = store.stage(&bundle("fees", "0.9.0", 64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle version 0.9.0 of fees is older than live version 1.1.0 and is not a signed rollback"
    );
    let err = store
        .stage(&bundle_with(
            "fees",
            "1.0.0",
            64,
            Intent::Rollback {
                from: "1.1.0".parse().unwrap(),
            },
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "component fees already holds version 1.0.0 as standby"
    );
    let err = store.promote(&comp("fees"), None).unwrap_err();
    assert_eq!(err.to_string(), "component fees has no candidate");

    let after = store.component(&comp("fees")).unwrap();
    assert_eq!(
        (&after.live, &after.standby),
        (&before.live, &before.standby)
    );
}

#[test]
fn a_signed_rollback_bundle_may_stage_an_older_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "2.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store
        .stage(&bundle_with(
            "fees",
            "1.9.0",
            64,
            Intent::Rollback {
                from: "2.0.0".parse().unwrap(),
            },
        ))
        .unwrap();
    store.promote(&comp("fees"), None).unwrap();
    assert_eq!(
        ver(&store.component(&comp("fees")).unwrap().live).as_deref(),
        Some("1.9.0")
    );
}

#[test]
fn a_second_process_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::init(dir.path()).unwrap();
    let err = Store::init(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
        "{err}"
    );
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
    // Reading status needs no lock.
    assert!(nonstop_store::read_status(dir.path()).unwrap().is_empty());
}

#[test]
fn a_damaged_live_payload_is_reported_on_open_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    drop(store);
    fs::write(
        dir.path().join("components/fees/versions/1.0.0/rules.wasm"),
        b"tampered",
    )
    .unwrap();
    let err = Store::init(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with("store is damaged for component fees: version 1.0.0 payload"),
        "{err}"
    );
    assert!(err.contains("expected sha256:"), "{err}");
}

#[test]
fn a_node_opening_a_store_whose_live_payload_is_damaged_starts_on_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    store.stage(&bundle("fees", "2.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    drop(store);
    fs::write(
        dir.path().join("components/fees/versions/2.0.0/rules.wasm"),
        b"tampered",
    )
    .unwrap();
    let (store, recovered) = Store::init_recovering(dir.path()).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].damaged.to_string(), "2.0.0");
    assert_eq!(recovered[0].live.to_string(), "1.0.0");
    let state = store.component(&comp("fees")).unwrap();
    assert_eq!(state.live.as_ref().unwrap().version.to_string(), "1.0.0");
    assert_eq!(state.rejected[0].reason, recovered[0].reason);
    assert!(
        recovered[0].reason.contains("expected sha256:"),
        "{recovered:?}"
    );
    let log = store.log(&comp("fees")).unwrap();
    assert!(
        log.iter()
            .rev()
            .take(2)
            .all(|e| e.reason == recovered[0].reason)
    );
    drop(store);
    // With no intact standby there is nothing to start on: the store is refused, as by `init`.
    fs::write(
        dir.path().join("components/fees/versions/1.0.0/rules.wasm"),
        b"tampered too",
    )
    .unwrap();
    let err = Store::init_recovering(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with("store is damaged for component fees"),
        "{err}"
    );
}

#[test]
fn a_torn_log_line_is_cut_and_the_transition_restored_from_the_state_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    drop(store);
    let log_path = dir.path().join("components/fees/log.jsonl");
    let text = fs::read_to_string(&log_path).unwrap();
    // Lose the promote line but half of it, as a crash during the append would.
    let cut = text.trim_end().rfind('\n').unwrap() + 1;
    fs::write(&log_path, &text[..cut + 20]).unwrap();

    let store = Store::init(dir.path()).unwrap();
    let log = store.log(&comp("fees")).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[1].from, log[1].to), (Role::Candidate, Role::Live));
    assert_eq!(fs::read_to_string(&log_path).unwrap(), text);
}

#[test]
fn a_failure_after_the_transition_is_mended_before_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    // The log cannot be appended to: the promote still happens (its state record is written)
    // and says so, and the log is mended before the next transition.
    let log_path = dir.path().join("components/fees/log.jsonl");
    let saved = fs::read(&log_path).unwrap();
    fs::remove_file(&log_path).unwrap();
    fs::create_dir(&log_path).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    assert_eq!(
        ver(&store.component(&comp("fees")).unwrap().live).as_deref(),
        Some("1.0.0")
    );

    fs::remove_dir(&log_path).unwrap();
    fs::write(&log_path, saved).unwrap();
    store.stage(&bundle("fees", "1.1.0", 64)).unwrap();
    let log = store.log(&comp("fees")).unwrap();
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [1, 2, 3],
        "the promote's entry was restored before the stage's"
    );
    drop(store);
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("components/button/src")).unwrap();
    fs::write(
        dir.path().join("components/button/src/main.rs"),
        "fn main() {}",
    )
    .unwrap();
    for err in [
        Store::open(dir.path()).unwrap_err(),
        Store::init(dir.path()).unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
        assert!(
            err.to_string()
                .ends_with("is not a nonstop version store (it has no nonstop-store.json)"),
            "{err}"
        );
    }
    assert!(dir.path().join("components/button/src/main.rs").is_file());
    let err = Store::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
}
