//! Updates pushed into a running node: good ones go live with zero failed calls, bad ones are
//! rejected with the check they failed, and one that fails in production is rolled back by itself.

use nonstop_agent::Outcome;
use nonstop_bundle::{ComponentName, SecretKey};

use crate::{GENERAL_ONLY, MIXED, Traffic, bundle, start};

fn live(node: &crate::Node) -> String {
    node.rules.fees.live().unwrap().tag().version.to_string()
}

fn store_state(node: &crate::Node) -> nonstop_store::ComponentState {
    nonstop_store::read_status(&node.dir.path().join("store"))
        .unwrap()
        .into_iter()
        .find(|s| s.component == ComponentName::new("fees").unwrap())
        .unwrap()
}

#[test]
fn an_update_goes_live_under_traffic_with_zero_failed_calls() {
    let node = start(None);
    let first = node
        .agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    assert!(
        matches!(first.outcome, Outcome::Live { shadow: None, .. }),
        "{first:?}"
    );

    let traffic = Traffic::start(&node.rules, MIXED, None);
    let report = node
        .agent
        .install_and_wait(bundle("fees-v2", "fees", "2.0.0"))
        .unwrap();
    let tally = traffic.stop();
    match &report.outcome {
        Outcome::Live {
            vectors,
            shadow: Some(shadow),
            watched_failures,
            ..
        } => {
            assert_eq!(*watched_failures, 0);
            assert_eq!(*vectors, 5);
            assert!(shadow.calls >= 50, "{shadow:?}");
            assert!(
                shadow.differences > 0,
                "the night surcharge changed: {shadow:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (tally.failed, tally.covered),
        (0, 0),
        "live calls failed during the update: {tally:?}"
    );
    assert!(tally.calls > 100);
    assert_eq!(live(&node), "2.0.0");
    let state = store_state(&node);
    assert_eq!(state.live.unwrap().version.to_string(), "2.0.0");
    assert_eq!(state.standby.unwrap().version.to_string(), "1.0.0");
}

#[test]
fn each_bad_update_is_refused_or_rejected_with_its_reason_and_the_live_version_keeps_answering() {
    let node = start(None);
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    let traffic = Traffic::start(&node.rules, MIXED, None);

    let mut corrupt = bundle("fees-v2", "fees", "1.9.0");
    let n = corrupt.len();
    corrupt[n - 100] ^= 0x40;
    let stranger = {
        let mut draft = nonstop_bundle::Draft::new(
            "fees",
            nonstop_bundle::ComponentKind::WasmComponent,
            "1.9.1".parse().unwrap(),
            "rules.wasm",
        )
        .unwrap();
        draft.notes = "not ours".into();
        nonstop_bundle::create(&draft, b"\0asm", &SecretKey::from_seed([99; 32])).unwrap()
    };
    let cases = [
        (corrupt, "payload digest sha256:"),
        (stranger, "bundle is signed by unknown key"),
        (
            bundle("fees-v1", "fees", "0.9.0"),
            "bundle version 0.9.0 of fees is older than live version 1.0.0",
        ),
        (
            bundle("bad-interface", "fees", "1.1.0"),
            "check 1 (compiles and exports the interface): component does not export nonstop:his-rules/fees@0.1.0",
        ),
        (
            bundle("bad-answers", "fees", "1.2.0"),
            "check 2 (test vector 0): expected",
        ),
        (
            bundle("bad-loop", "fees", "1.3.0"),
            "check 2 (test vector 0): ran out of its fuel budget",
        ),
        (
            bundle("bad-memory", "fees", "1.4.0"),
            "check 2 (test vector 0): exceeded its memory limit",
        ),
        (
            bundle("bad-trap", "fees", "1.5.0"),
            "check 3 (shadow traffic, call",
        ),
    ];
    for (bytes, expected) in cases {
        let report = node.agent.install_and_wait(bytes).unwrap();
        let reason = match &report.outcome {
            Outcome::Refused { reason } | Outcome::Rejected { reason } => reason.clone(),
            other => panic!("{expected}: {other:?}"),
        };
        assert!(
            reason.contains(expected),
            "expected {expected:?} in {reason:?}"
        );
        assert_eq!(live(&node), "1.0.0");
    }
    let tally = traffic.stop();
    assert_eq!(
        (tally.failed, tally.covered),
        (0, 0),
        "live calls failed: {tally:?}"
    );

    let state = store_state(&node);
    assert_eq!(state.live.unwrap().version.to_string(), "1.0.0");
    assert_eq!(state.candidate, None);
    let rejected: Vec<String> = state
        .rejected
        .iter()
        .map(|r| r.entry.version.to_string())
        .collect();
    assert_eq!(
        rejected,
        ["1.5.0", "1.4.0", "1.3.0", "1.2.0", "1.1.0"],
        "refused bundles never reach the store"
    );
    assert!(
        state.rejected[0]
            .reason
            .starts_with("check 3 (shadow traffic"),
        "{}",
        state.rejected[0].reason
    );
}

#[test]
fn a_module_that_fails_in_production_is_rolled_back_by_itself_with_zero_failed_calls() {
    let node = start(None);
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    // General visits only until 1.1.0 answers: shadow traffic cannot see its night-clinic trap.
    let traffic = Traffic::start(&node.rules, GENERAL_ONLY, Some("1.1.0"));
    let report = node
        .agent
        .install_and_wait(bundle("bad-trap", "fees", "1.1.0"))
        .unwrap();
    let tally = traffic.stop();
    match &report.outcome {
        Outcome::RolledBack { reason } => assert!(reason.starts_with("watch window: "), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(tally.failed, 0, "no call went unanswered: {tally:?}");
    assert!(
        tally.covered > 0,
        "the bad version did fail calls, and the standby answered them: {tally:?}"
    );
    assert_eq!(live(&node), "1.0.0");
    let state = store_state(&node);
    assert_eq!(state.live.unwrap().version.to_string(), "1.0.0");
    assert_eq!(state.rejected[0].entry.version.to_string(), "1.1.0");
    assert!(
        state.rejected[0].reason.contains("failed and 0 refused of"),
        "{}",
        state.rejected[0].reason
    );
    let log = nonstop_store::read_log(
        &node.dir.path().join("store"),
        &ComponentName::new("fees").unwrap(),
    )
    .unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.version.to_string()),
        ("rollback", "1.1.0".to_string())
    );
}

/// A node's directory with fees 1.0.0 installed and live, the node stopped.
fn stopped_with_fees_1() -> tempfile::TempDir {
    let node = start(None);
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    drop(node.agent);
    node.dir
}

/// Stages a bundle (verified, signed by the test publisher) in a stopped node's store, behind
/// its agent's back; returns the store, to change more.
fn stage_while_stopped(dir: &std::path::Path, bytes: &[u8]) -> nonstop_store::Store {
    let mut store = nonstop_store::Store::open(&dir.join("store")).unwrap();
    let live = store
        .component(&ComponentName::new("fees").unwrap())
        .ok()
        .and_then(|s| s.live.as_ref().map(|e| e.version.clone()));
    let mut trusted = nonstop_bundle::TrustedKeys::new();
    trusted.add(crate::publisher().public());
    let verifier = nonstop_bundle::Verifier::new(trusted, Default::default());
    store
        .stage(&verifier.open(bytes, live.as_ref()).unwrap())
        .unwrap();
    store
}

#[test]
fn a_restart_reloads_the_live_version_and_rejects_an_unfinished_candidate() {
    let node = start(None);
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    let traffic = Traffic::start(&node.rules, MIXED, None);
    let report = node
        .agent
        .install_and_wait(bundle("fees-v2", "fees", "2.0.0"))
        .unwrap();
    traffic.stop();
    assert!(matches!(report.outcome, Outcome::Live { .. }), "{report:?}");
    let dir = node.dir;
    drop(node.agent);
    // A candidate staged just before the node stopped.
    stage_while_stopped(dir.path(), &bundle("fees-v2", "fees", "2.1.0"));
    let node = start(Some(dir));
    assert_eq!(live(&node), "2.0.0");
    assert_eq!(
        node.rules.fees.standby().unwrap().tag().version.to_string(),
        "1.0.0"
    );
    let state = store_state(&node);
    assert_eq!(state.candidate, None);
    assert_eq!(
        state.rejected[0].reason,
        "node restarted before the candidate's checks finished"
    );
    // Operator rollback through the agent.
    let back = node
        .agent
        .rollback("fees", "operator: fee schedule not approved")
        .unwrap()
        .unwrap();
    assert_eq!(back.version.to_string(), "1.0.0");
    assert_eq!(live(&node), "1.0.0");
    let slot = node.rules.slot("fees").unwrap();
    assert_eq!(slot.live_tag().unwrap().version.to_string(), "1.0.0");
}

#[test]
fn with_no_live_traffic_a_candidate_is_shadowed_on_its_vectors_inputs_and_goes_live() {
    let node = crate::start_with(crate::CheckConfig {
        shadow_idle_secs: 0,
        ..crate::checks()
    });
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    // A bundle that fails its checks never goes live: waiting for "live" gets its rejection.
    let report = node
        .agent
        .install_until_live(bundle("bad-answers", "fees", "1.5.0"))
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Rejected { .. }),
        "{report:?}"
    );
    // The night: nobody registers. The update is checked on replayed inputs, not refused.
    let report = node
        .agent
        .install_until_live(bundle("fees-v2", "fees", "2.0.0"))
        .unwrap();
    match &report.outcome {
        Outcome::Live {
            shadow: Some(shadow),
            watch_open,
            ..
        } => {
            assert_eq!((shadow.calls, shadow.replayed), (50, 50));
            assert!(shadow.differences > 0, "{shadow:?}");
            assert!(watch_open, "reported at promotion, the watch goes on");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(live(&node), "2.0.0");
}

#[test]
fn with_no_live_traffic_and_replay_held_back_a_candidate_is_rejected_when_the_wait_ends() {
    let node = crate::start_with(crate::CheckConfig {
        shadow_timeout_secs: 1,
        shadow_idle_secs: 60,
        ..crate::checks()
    });
    node.agent
        .install_and_wait(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    let report = node
        .agent
        .install_and_wait(bundle("fees-v2", "fees", "2.0.0"))
        .unwrap();
    match &report.outcome {
        Outcome::Rejected { reason } => {
            assert_eq!(
                reason,
                "check 3 (shadow traffic): only 0 of 50 live calls arrived within 1 s"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_first_install_that_fails_in_production_has_nothing_to_roll_back_to_and_says_so() {
    let node = start(None);
    let traffic = Traffic::start(&node.rules, MIXED, None);
    let report = node
        .agent
        .install_and_wait(bundle("bad-trap", "fees", "1.0.0"))
        .unwrap();
    let tally = traffic.stop();
    match &report.outcome {
        Outcome::RollbackFailed { reason } => assert!(
            reason.ends_with(
                "the rollback failed: component fees has no standby version to roll back to"
            ),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        tally.failed > 0,
        "with no standby, night visits fail: {tally:?}"
    );
}

#[test]
fn an_operator_rollback_during_the_watch_window_is_not_kept_waiting() {
    let node = crate::start_with(crate::CheckConfig {
        watch_secs: 600,
        watch_calls: u64::MAX,
        ..crate::checks()
    });
    let first = node
        .agent
        .install(bundle("fees-v1", "fees", "1.0.0"))
        .unwrap();
    // The first install is now in a ten-minute watch window; the operator rolls back meanwhile.
    while node.rules.fees.live().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let traffic = Traffic::start(&node.rules, MIXED, None);
    let second = node
        .agent
        .install(bundle("fees-v2", "fees", "2.0.0"))
        .unwrap();
    let started = std::time::Instant::now();
    let err = node
        .agent
        .rollback("fees", "operator: wrong fee schedule")
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "component fees has no standby version to roll back to");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    match first.recv().unwrap().outcome {
        Outcome::RollbackFailed { reason } => assert!(
            reason.starts_with("operator: wrong fee schedule"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    // The queued bundle runs once the watch has ended; its own watch is ended by a rollback too.
    while node.rules.fees.live().unwrap().tag().version.major != 2 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let back = node
        .agent
        .rollback("fees", "operator: back to 1.0.0")
        .unwrap()
        .unwrap();
    assert_eq!(back.version.to_string(), "1.0.0");
    match second.recv().unwrap().outcome {
        Outcome::RolledBack { reason } => assert_eq!(reason, "operator: back to 1.0.0"),
        other => panic!("{other:?}"),
    }
    let tally = traffic.stop();
    assert_eq!((tally.failed, tally.covered), (0, 0), "{tally:?}");
}

#[test]
fn a_live_version_this_engine_cannot_load_starts_on_its_standby_and_says_why() {
    let dir = stopped_with_fees_1();
    // A version made live behind the agent's back (its checks never ran) that no engine can
    // compile: what a node finds when a newer runtime refuses what an older one ran.
    let draft = nonstop_bundle::Draft::new(
        "fees",
        nonstop_bundle::ComponentKind::WasmComponent,
        "2.0.0".parse().unwrap(),
        "rules.wasm",
    )
    .unwrap();
    let bytes =
        nonstop_bundle::create(&draft, b"\0asm not a component", &crate::publisher()).unwrap();
    stage_while_stopped(dir.path(), &bytes)
        .promote(&ComponentName::new("fees").unwrap(), None)
        .unwrap();
    let node = start(Some(dir));
    assert_eq!(live(&node), "1.0.0", "the standby serves");
    let fell = node.agent.fell_back();
    assert_eq!(fell.len(), 1, "{fell:?}");
    assert_eq!(fell[0].damaged.to_string(), "2.0.0");
    assert!(
        fell[0].reason.contains("could not be loaded at start"),
        "{fell:?}"
    );
    let state = store_state(&node);
    assert_eq!(state.live.as_ref().unwrap().version.to_string(), "1.0.0");
    assert_eq!(state.rejected[0].entry.version.to_string(), "2.0.0");
    assert_eq!(state.rejected[0].reason, fell[0].reason);
    // It keeps answering.
    let traffic = Traffic::start(&node.rules, MIXED, None);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let tally = traffic.stop();
    assert!(
        tally.calls > 0 && tally.failed == 0,
        "{} calls, {} failed",
        tally.calls,
        tally.failed
    );
}

#[test]
fn a_restart_in_the_middle_of_a_watch_window_resumes_it_and_rolls_back_what_fails_after() {
    let dir = stopped_with_fees_1();
    // A long window, judged on at least 20 calls, so that it is still open when the node stops.
    let long = nonstop_runtime::CheckConfig {
        watch_secs: 60,
        watch_calls: 1_000_000,
        min_calls_for_rate: 20,
        ..crate::checks()
    };
    let node = crate::start_on(dir, long.clone());
    // General visits only: neither the shadow check nor the window sees the night-clinic trap.
    let traffic = Traffic::start(&node.rules, GENERAL_ONLY, None);
    let report = node
        .agent
        .install_until_live(bundle("bad-trap", "fees", "1.1.0"))
        .unwrap();
    traffic.stop();
    assert!(
        matches!(
            report.outcome,
            Outcome::Live {
                watch_open: true,
                ..
            }
        ),
        "{report:?}"
    );
    let kept = node.dir.path().join("store/watches/fees.json");
    assert!(kept.is_file(), "the open window is kept on disk");
    // The node stops with the window open, and starts again.
    let dir = node.dir;
    drop(node.agent);
    let node = crate::start_on(dir, long);
    assert_eq!(live(&node), "1.1.0");
    let ended = node
        .agent
        .follow("fees", &"1.1.0".parse().unwrap())
        .unwrap()
        .expect("the window was resumed");
    // Night-clinic visits now: the version fails them, the standby answers, the window rolls
    // it back as it would have without the restart.
    let traffic = Traffic::start(&node.rules, MIXED, None);
    let report = ended
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let tally = traffic.stop();
    match &report.outcome {
        Outcome::RolledBack { reason } => assert!(reason.starts_with("watch window: "), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert_eq!(live(&node), "1.0.0");
    assert!(!kept.exists(), "a closed window is forgotten");
    assert!(
        node.agent
            .follow("fees", &"1.0.0".parse().unwrap())
            .unwrap()
            .is_none(),
        "no window is open"
    );
}
