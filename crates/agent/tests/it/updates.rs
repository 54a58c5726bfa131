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
    let (calls, failed) = traffic.stop();
    match &report.outcome {
        Outcome::Live {
            vectors,
            shadow: Some(shadow),
            ..
        } => {
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
        failed, 0,
        "{failed} of {calls} live calls failed during the update"
    );
    assert!(calls > 100);
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
            "check 2 (test vector 0): ran past its deadline of 20 ms",
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
    let (calls, failed) = traffic.stop();
    assert_eq!(failed, 0, "{failed} of {calls} live calls failed");

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
    let (calls, failed) = traffic.stop();
    match &report.outcome {
        Outcome::RolledBack { reason } => assert!(reason.starts_with("watch window: "), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        failed, 0,
        "the standby answered every call the bad version failed ({calls} calls)"
    );
    assert_eq!(live(&node), "1.0.0");
    let state = store_state(&node);
    assert_eq!(state.live.unwrap().version.to_string(), "1.0.0");
    assert_eq!(state.rejected[0].entry.version.to_string(), "1.1.0");
    assert!(
        state.rejected[0].reason.contains("live calls failed"),
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
    {
        let mut store = nonstop_store::Store::open(&dir.path().join("store")).unwrap();
        let mut trusted = nonstop_bundle::TrustedKeys::new();
        trusted.add(crate::publisher().public());
        let verifier = nonstop_bundle::Verifier::new(trusted, Default::default());
        let b = verifier
            .open(
                &bundle("fees-v2", "fees", "2.1.0"),
                Some(&"2.0.0".parse().unwrap()),
            )
            .unwrap();
        store.stage(&b).unwrap();
    }
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
fn with_no_live_traffic_to_shadow_a_candidate_is_rejected_when_the_wait_ends() {
    let node = crate::start_with(crate::CheckConfig {
        shadow_timeout_secs: 1,
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
