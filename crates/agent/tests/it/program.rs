//! Updates of the node program through the agent, with a scripted [`ProgramHost`] standing for
//! the supervisor (the real one, with real processes, is tested in crates/cli's `program.rs`):
//! what the store records at each outcome, and when the standby program is retired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nonstop_agent::{Agent, Outcome, ProgramHost};
use nonstop_bundle::{BundleLimits, ComponentKind, ComponentName, Draft, TrustedKeys, Verifier};
use nonstop_runtime::{RuleEngine, Rules, RuntimeConfig};
use nonstop_store::{Role, Store};

use super::{checks, publisher};

/// What the scripted supervisor does, and what it was asked.
#[derive(Default)]
struct Script {
    version: String,
    start: Option<String>,
    test: Option<String>,
    settle: Option<String>,
    asked: Mutex<Vec<String>>,
    requests: AtomicU64,
    failures: AtomicU64,
}

struct Host(Arc<Script>);

impl ProgramHost for Host {
    fn running_version(&self) -> semver::Version {
        self.0.version.parse().unwrap()
    }
    fn start_candidate(&self, _: &std::path::Path, v: &semver::Version) -> Result<(), String> {
        self.0.asked.lock().unwrap().push(format!("start {v}"));
        self.0.start.clone().map_or(Ok(()), Err)
    }
    fn test_candidate(&self) -> Result<String, String> {
        self.0.asked.lock().unwrap().push("test".into());
        self.0.test.clone().map_or(Ok("all good".into()), Err)
    }
    fn discard_candidate(&self) {
        self.0.asked.lock().unwrap().push("discard".into());
    }
    fn hand_over(&self) -> Result<(), String> {
        self.0.asked.lock().unwrap().push("hand over".into());
        Ok(())
    }
    fn replace_with_live(&self, reason: &str) -> Result<(), String> {
        self.0
            .asked
            .lock()
            .unwrap()
            .push(format!("replace: {reason}"));
        Ok(())
    }
    fn settled(&self) -> Result<Option<String>, String> {
        self.0.asked.lock().unwrap().push("settled".into());
        Ok(self.0.settle.clone())
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.0.requests.load(Ordering::Relaxed),
            self.0.failures.load(Ordering::Relaxed),
        )
    }
}

fn agent(dir: &std::path::Path, script: &Arc<Script>) -> Agent {
    let mut trusted = TrustedKeys::new();
    trusted.add(publisher().public());
    Agent::start_with(
        Store::init(&dir.join("store")).unwrap(),
        Verifier::new(trusted, BundleLimits::default()),
        RuleEngine::new(RuntimeConfig::default()).unwrap(),
        Rules::new(),
        checks(),
        Some(Arc::new(Host(script.clone()))),
    )
    .unwrap()
}

fn program(version: &str) -> Vec<u8> {
    let draft = Draft::new(
        "node",
        ComponentKind::NodeBinary,
        version.parse().unwrap(),
        "nonstop",
    )
    .unwrap();
    nonstop_bundle::create(&draft, b"#!/bin/sh\nexit 0\n", &publisher()).unwrap()
}

fn state(dir: &std::path::Path) -> nonstop_store::ComponentState {
    nonstop_store::read_status(&dir.join("store"))
        .unwrap()
        .into_iter()
        .find(|c| c.component == ComponentName::new("node").unwrap())
        .unwrap()
}

#[test]
fn a_program_that_fails_its_checks_is_rejected_and_one_that_passes_is_handed_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script {
        version: "1.0.0".into(),
        test: Some("contract: GET /api/v1/rules answered 500".into()),
        ..Script::default()
    });
    let a = agent(dir.path(), &script);
    let report = a.install_until_live(program("1.1.0")).unwrap();
    assert!(
        matches!(&report.outcome, Outcome::Rejected { reason } if reason.contains("GET /api/v1/rules")),
        "{report:?}"
    );
    assert_eq!(
        *script.asked.lock().unwrap(),
        ["start 1.1.0", "test", "discard"]
    );
    let s = state(dir.path());
    assert!(s.live.is_none() && s.candidate.is_none());
    assert_eq!(s.rejected[0].entry.version.to_string(), "1.1.0");

    // Not newer than the program running here: refused before anything starts.
    let report = a.install_until_live(program("0.9.0")).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Refused { .. }),
        "{report:?}"
    );
    drop(a);

    let script = Arc::new(Script {
        version: "1.0.0".into(),
        ..Script::default()
    });
    let a = agent(dir.path(), &script);
    let report = a.install_until_live(program("1.2.0")).unwrap();
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
    assert_eq!(
        *script.asked.lock().unwrap(),
        ["start 1.2.0", "test", "hand over"]
    );
    assert_eq!(state(dir.path()).live.unwrap().version.to_string(), "1.2.0");
    // The window is kept for the new program to resume.
    assert!(dir.path().join("store/watches/node.json").exists());
}

#[test]
fn the_new_program_resumes_its_window_rolls_back_on_errors_and_retires_the_standby_only_for_a_contract_migration()
 {
    let dir = tempfile::tempdir().unwrap();
    // 1.0.0 hands over to 2.0.0, then 2.0.0 to 3.0.0: 2.0.0 is the standby.
    for (running, next) in [("1.0.0", "2.0.0"), ("2.0.0", "3.0.0")] {
        let script = Arc::new(Script {
            version: running.into(),
            ..Script::default()
        });
        let a = agent(dir.path(), &script);
        let report = a.install_until_live(program(next)).unwrap();
        assert!(matches!(report.outcome, Outcome::Live { .. }), "{report:?}");
        drop(a);
        std::fs::remove_file(dir.path().join("store/watches/node.json")).unwrap();
    }
    // 4.0.0 goes live; the new program (the agent started as 4.0.0) resumes its window, and its
    // server errors pass the limit: the standby is live again and the supervisor is asked to
    // start it.
    let a = agent(
        dir.path(),
        &Arc::new(Script {
            version: "3.0.0".into(),
            ..Script::default()
        }),
    );
    a.install_until_live(program("4.0.0")).unwrap();
    drop(a);
    let script = Arc::new(Script {
        version: "4.0.0".into(),
        ..Script::default()
    });
    let a = agent(dir.path(), &script);
    let ended = a
        .follow("node", &"4.0.0".parse().unwrap())
        .unwrap()
        .expect("resumed");
    script.requests.store(1000, Ordering::Relaxed);
    script.failures.store(200, Ordering::Relaxed);
    let report = ended.recv().unwrap();
    assert!(
        matches!(&report.outcome, Outcome::RolledBack { reason } if reason.contains("200 failed")),
        "{report:?}"
    );
    assert!(script.asked.lock().unwrap()[0].starts_with("replace: watch window"));
    let s = state(dir.path());
    assert_eq!(s.live.unwrap().version.to_string(), "3.0.0");
    assert_eq!(s.standby.unwrap().version.to_string(), "2.0.0");
    drop(a);

    // 3.0.0 again, to 5.0.0: healthy, nothing waited for the old program: 3.0.0 stays standby.
    let a = agent(
        dir.path(),
        &Arc::new(Script {
            version: "3.0.0".into(),
            ..Script::default()
        }),
    );
    a.install_until_live(program("5.0.0")).unwrap();
    drop(a);
    let script = Arc::new(Script {
        version: "5.0.0".into(),
        ..Script::default()
    });
    let a = agent(dir.path(), &script);
    let report = a
        .follow("node", &"5.0.0".parse().unwrap())
        .unwrap()
        .unwrap()
        .recv()
        .unwrap();
    assert!(
        matches!(
            report.outcome,
            Outcome::Live {
                watch_open: false,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(*script.asked.lock().unwrap(), ["settled"]);
    assert_eq!(
        state(dir.path()).standby.unwrap().version.to_string(),
        "3.0.0"
    );
    drop(a);

    // 6.0.0 has a contract migration: once settled, the standby (5.0.0) can never come back.
    let a = agent(
        dir.path(),
        &Arc::new(Script {
            version: "5.0.0".into(),
            ..Script::default()
        }),
    );
    a.install_until_live(program("6.0.0")).unwrap();
    drop(a);
    let script = Arc::new(Script {
        version: "6.0.0".into(),
        settle: Some("contract migrations applied: 0013_drop_legacy_fees.sql".into()),
        ..Script::default()
    });
    let a = agent(dir.path(), &script);
    a.follow("node", &"6.0.0".parse().unwrap())
        .unwrap()
        .unwrap()
        .recv()
        .unwrap();
    drop(a);
    let s = state(dir.path());
    assert!(s.standby.is_none(), "{s:?}");
    assert_eq!(s.retired[0].version.to_string(), "5.0.0");
    let log = nonstop_store::read_log(
        &dir.path().join("store"),
        &ComponentName::new("node").unwrap(),
    )
    .unwrap();
    let retired = log.last().unwrap();
    assert_eq!((retired.from, retired.to), (Role::Standby, Role::Retired));
    assert!(retired.reason.contains("0013_drop_legacy_fees.sql"));
}
