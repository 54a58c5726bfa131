//! Crash safety: a child process churns through store operations and is killed with SIGKILL at
//! seeded random moments; after every kill, opening the store must find exactly the old live
//! version or exactly the new one, its payload matching its digest, and no leftovers.
//!
//! `NONSTOP_CRASH_SEED` and `NONSTOP_CRASH_KILLS` reproduce or lengthen a run.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use nonstop_store::{ComponentState, Store};

use crate::{bundle, payload};

const COMPONENTS: [&str; 2] = ["fees", "triage"];

/// What the child was about to do when it was killed: the live versions the operation may leave.
#[derive(Serialize, Deserialize, Debug)]
struct Intent {
    component: String,
    op: String,
    live_before: Option<String>,
    live_after: Option<String>,
}

#[test]
fn the_store_survives_sigkill_at_any_moment() {
    let seed: u64 = std::env::var("NONSTOP_CRASH_SEED").map_or(0x5eed_2026, |s| s.parse().unwrap());
    let kills: u32 = std::env::var("NONSTOP_CRASH_KILLS").map_or(320, |s| s.parse().unwrap());
    eprintln!(
        "crash test: seed {seed}, {kills} kills (NONSTOP_CRASH_SEED / NONSTOP_CRASH_KILLS to change)"
    );
    let _alone = crate::CPU_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let intent_path = dir.path().join("intent.jsonl");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut transitions_seen = 0;
    let mut killed_mid_operation = 0;

    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash::churn_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NONSTOP_CRASH_CHILD", dir.path())
            .env("NONSTOP_CRASH_SEED", (seed ^ u64::from(kill)).to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.gen_range(2_000..40_000)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let context = format!("seed {seed}, kill {kill}");
        let intents = fs::read_to_string(&intent_path).unwrap_or_default();
        if intents.lines().last().is_some_and(|l| l != "done") {
            killed_mid_operation += 1;
        }
        let store = Store::init(&store_dir)
            .unwrap_or_else(|e| panic!("{context}: store does not open after the kill: {e}"));
        let last_intent = fs::read_to_string(&intent_path).ok().and_then(|t| {
            t.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Intent>(l).ok())
        });
        for state in store.components() {
            check_after_crash(&store_dir, state, last_intent.as_ref(), &context);
            transitions_seen += state.seq;
        }
    }
    eprintln!("crash test: {killed_mid_operation} of {kills} kills landed inside an operation");
    assert!(
        transitions_seen > u64::from(kills),
        "the child made too little progress to test anything"
    );
    assert!(
        killed_mid_operation * 2 >= kills,
        "only {killed_mid_operation} of {kills} kills landed inside an operation"
    );
}

fn check_after_crash(root: &Path, state: &ComponentState, intent: Option<&Intent>, context: &str) {
    let name = state.component.as_str();
    let cdir = root.join("components").join(name);
    let live = state.live.as_ref().map(|e| e.version.to_string());

    // Exactly the old live version or exactly the new one.
    if let Some(i) = intent.filter(|i| i.component == name) {
        assert!(
            live == i.live_before || live == i.live_after,
            "{context}: {name} live is {live:?} after a kill during {} ({:?} -> {:?})",
            i.op,
            i.live_before,
            i.live_after
        );
    }
    // Every installed version holds exactly its own content (Store::open checked the live digest).
    for (role, entry) in state.installed() {
        let file = cdir
            .join("versions")
            .join(entry.version.to_string())
            .join(entry.file.as_str());
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("{context}: {role} {file:?}: {e}"));
        let expected = payload(name, &entry.version.to_string(), bytes.len());
        assert!(
            bytes == expected,
            "{context}: {role} {} of {name} holds other content",
            entry.version
        );
    }
    // No leftovers: directories are exactly what the state record names.
    let mut on_disk: Vec<String> = list(&cdir.join("versions"));
    on_disk.sort();
    let mut named: Vec<String> = state
        .installed()
        .map(|(_, e)| e.version.to_string())
        .collect();
    named.sort();
    assert_eq!(on_disk, named, "{context}: version directories of {name}");
    let mut set_aside = list(&cdir.join("rejected"));
    set_aside.sort();
    let mut named: Vec<String> = state.rejected.iter().map(|r| r.dir.clone()).collect();
    named.sort();
    assert_eq!(
        set_aside, named,
        "{context}: rejected directories of {name}"
    );
    assert!(
        !cdir.join("state.tmp").exists(),
        "{context}: state.tmp left behind"
    );
    // The log ends exactly with the transition that produced the state record.
    let log = nonstop_store::read_log(root, &state.component).unwrap();
    assert_eq!(
        log.last().map(|e| e.seq).unwrap_or(0),
        state.seq,
        "{context}: log of {name}"
    );
    let tail: Vec<_> = log.iter().filter(|e| e.seq == state.seq).cloned().collect();
    assert_eq!(tail, state.last, "{context}: last transition of {name}");
    assert!(
        log.windows(2)
            .all(|w| w[0].seq <= w[1].seq && w[1].seq <= w[0].seq + 1),
        "{context}: log seq gap"
    );
}

fn list(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The child's side of the crash test: store operations in a loop until it is killed.
#[test]
#[ignore = "run as a child process by the_store_survives_sigkill_at_any_moment"]
fn churn_child() {
    let Ok(dir) = std::env::var("NONSTOP_CRASH_CHILD") else {
        return;
    };
    let dir = Path::new(&dir);
    let seed: u64 = std::env::var("NONSTOP_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::init(&dir.join("store")).unwrap();
    let mut intents = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("intent.jsonl"))
        .unwrap();
    loop {
        let name = COMPONENTS[rng.gen_range(0..COMPONENTS.len())];
        let c = crate::comp(name);
        let state = store.components().find(|s| s.component == c).cloned();
        let live = state
            .as_ref()
            .and_then(|s| s.live.as_ref())
            .map(|e| e.version.to_string());
        let pick: u32 = rng.gen_range(0..100);
        let (op, live_after) = match &state {
            Some(s) if s.candidate.is_some() && pick < 65 => (
                "promote",
                s.candidate.as_ref().map(|e| e.version.to_string()),
            ),
            Some(s) if s.candidate.is_some() => ("reject", live.clone()),
            Some(s) if s.standby.is_some() && pick < 15 => (
                "rollback",
                s.standby.as_ref().map(|e| e.version.to_string()),
            ),
            Some(_) if pick < 25 => ("gc", live.clone()),
            _ => ("stage", live.clone()),
        };
        let intent = Intent {
            component: name.into(),
            op: op.into(),
            live_before: live.clone(),
            live_after,
        };
        let mut line = serde_json::to_string(&intent).unwrap();
        line.push('\n');
        intents.write_all(line.as_bytes()).unwrap();
        intents.sync_all().unwrap();
        match op {
            "promote" => drop(store.promote(&c, None).unwrap()),
            "reject" => drop(store.reject(&c, None, "crash test").unwrap()),
            "rollback" => drop(store.rollback(&c, "crash test").unwrap()),
            "gc" => drop(store.gc(1).unwrap()),
            _ => {
                let next = state.as_ref().map_or(1, |s| {
                    s.installed()
                        .map(|(_, e)| e.version.major)
                        .chain(s.rejected.iter().map(|r| r.entry.version.major))
                        .max()
                        .unwrap_or(0)
                        + 1
                });
                let len = rng.gen_range(1_000..300_000);
                store
                    .stage(&bundle(name, &format!("{next}.0.0"), len))
                    .unwrap();
            }
        }
        // Not synced: it only tells the parent whether the kill fell inside an operation.
        intents.write_all(b"done\n").unwrap();
    }
}
