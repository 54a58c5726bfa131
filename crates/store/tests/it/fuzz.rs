//! Fuzz target for the state record, `components/<name>/state.json`: the file the store reads back
//! to know which version is live, candidate and standby. Each input is written as the record of
//! `fees` in a copy of a real store (every role filled, versions set aside), which is then read
//! without the lock (`read_status`, `live_version`, `read_log`), opened (recovery runs), and
//! given one transition. The property: nothing panics or hangs; the readers and `Store::open`
//! agree on what the record says; a record that is accepted leaves the live payload matching its
//! digest and the log ending with the record's last transition; and nothing outside the store's
//! directory is touched, whatever the record names.
//!
//! Longer: `BOLERO_RANDOM_ITERATIONS=20000 cargo test -p nonstop-store --test it fuzz::`.

use std::fs;
use std::path::{Component, Path};
use std::time::Duration;

use nonstop_bundle::Digest;
use nonstop_fuzzing::{Target, recipes};
use nonstop_store::{ComponentState, Role, Store};

use crate::{bundle, comp};

/// Random inputs after the committed ones; each copies a small store and opens it (about 1 ms
/// in memory).
const RANDOM: usize = 200;
const MUTATED: usize = 1500;

fn target() -> Target {
    Target::new(
        "state",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
}

#[test]
fn state() {
    let _alone = crate::CPU_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let t = target();
    let template = Template::new();
    bolero::check!(name = "state")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, |input| template.open_with(input)));
}

#[test]
fn state_mutated() {
    let _alone = crate::CPU_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let t = target();
    let template = Template::new();
    let corpus = t.corpus().with_words(&[
        b"\"live\"",
        b"\"candidate\"",
        b"\"standby\"",
        b"\"retired\"",
        b"\"rejected\"",
        b"\"dir\"",
        b"\"seq\"",
        b"\"last\"",
        b"\"format\"",
        b"../",
        b"2.0.0",
        b"fees",
    ]);
    bolero::check!(name = "state-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| t.check(&corpus.mutate(recipe), |input| template.open_with(input)));
}

/// A real store to copy for each input: `fees` with a live, a standby, a retired and two rejected
/// versions; `quota` with a live one.
struct Template {
    dir: tempfile::TempDir,
}

impl Template {
    fn new() -> Template {
        let dir = scratch();
        let mut store = Store::init(&dir.path().join("store")).unwrap();
        for (component, version, then) in [
            ("quota", "1.0.0", "promote"),
            ("fees", "1.0.0", "promote"),
            ("fees", "2.0.0", "promote"),
            ("fees", "3.0.0", "reject"),
            ("fees", "3.1.0", "promote"),
            ("fees", "", "rollback"),
        ] {
            if !version.is_empty() {
                store.stage(&bundle(component, version, 64)).unwrap();
            }
            match then {
                "promote" => store.promote(&comp(component), None).map(drop),
                "reject" => store
                    .reject(&comp(component), None, "check 2 failed")
                    .map(drop),
                _ => store.rollback(&comp(component), "watch window").map(drop),
            }
            .unwrap();
        }
        drop(store);
        Template { dir }
    }

    /// A copy of the store with `record` as the state record of `fees`, read and opened.
    fn open_with(&self, record: &[u8]) {
        let scratch = scratch();
        copy_tree(self.dir.path(), scratch.path());
        let root = scratch.path().join("store");
        fs::write(root.join("components/fees/state.json"), record).unwrap();
        fs::create_dir(scratch.path().join("outside")).unwrap();
        fs::write(scratch.path().join("outside/keep"), b"not the store's").unwrap();
        let fees = comp("fees");

        let status = nonstop_store::read_status(&root);
        let live = nonstop_store::live_version(&root, &fees);
        let opened = Store::open(&root);
        match (&opened, &status) {
            (Ok(store), Ok(status)) => {
                let state = store
                    .component(&fees)
                    .expect("an opened fees record is kept");
                assert_eq!(status.iter().find(|s| s.component == fees), Some(state));
                assert_eq!(
                    live.as_ref().unwrap(),
                    &state.live.as_ref().map(|e| e.version.clone())
                );
                accepted(&root, state);
            }
            (Ok(_), Err(e)) => panic!("Store::open accepted a record read_status refuses: {e}"),
            (Err(e), _) => assert!(!e.to_string().is_empty()),
        }
        // Only the record of `fees` differs from a good store, and every reader parses it alike.
        assert_eq!(
            status.is_ok(),
            live.is_ok(),
            "read_status and live_version disagree"
        );
        // One transition of whatever was accepted.
        if let Ok(mut store) = opened {
            let _ = match record.len() % 4 {
                0 => store.promote(&fees, None).map(drop),
                1 => store.rollback(&fees, "fuzz").map(drop),
                2 => store.reject(&fees, None, "fuzz").map(drop),
                _ => store.gc(1).map(drop),
            };
            if let Ok(state) = store.component(&fees) {
                let state = state.clone();
                drop(store);
                accepted(&root, &state);
            }
        }

        let mut beside: Vec<_> = fs::read_dir(scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        beside.sort();
        assert_eq!(
            beside,
            ["outside", "store"],
            "something was written beside the store"
        );
        assert_eq!(
            fs::read_dir(scratch.path().join("outside"))
                .unwrap()
                .count(),
            1,
            "something was moved outside the store"
        );
    }
}

/// What an accepted record promises: its live payload matches its digest, every installed
/// version has its payload, the log ends with its last transition, and every directory it names
/// is inside the component's directory.
fn accepted(root: &Path, state: &ComponentState) {
    for (role, entry) in state.installed() {
        let path = nonstop_store::payload_path(root, &state.component, entry);
        if role == Role::Live {
            assert_eq!(Digest::of(&fs::read(&path).unwrap()), entry.digest);
        }
        assert!(path.is_file(), "{role} {} has no payload", entry.version);
    }
    let log = nonstop_store::read_log(root, &state.component).unwrap();
    assert!(
        log.ends_with(&state.last),
        "the log does not end with the record's last transition"
    );
    for r in &state.rejected {
        let mut parts = Path::new(&r.dir).components();
        assert!(
            matches!(
                (parts.next(), parts.next()),
                (Some(Component::Normal(_)), None)
            ),
            "the record names a rejected directory outside its own: {:?}",
            r.dir
        );
    }
}

/// A temporary directory in memory where there is one: each input opens a store, which syncs.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "store.lock" {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes the seed corpus: the state record of `fees` after each step of its life. Run after a
/// format change, then commit the files:
/// `cargo test -p nonstop-store --test it fuzz::write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/__fuzz__/state/corpus");
    fs::create_dir_all(&corpus).unwrap();
    let dir = scratch();
    let mut store = Store::init(dir.path()).unwrap();
    let fees = comp("fees");
    let save = |name: &str| {
        let record = dir.path().join("components/fees/state.json");
        fs::copy(record, corpus.join(format!("{name}.json"))).unwrap();
    };
    store.stage(&bundle("fees", "1.0.0", 64)).unwrap();
    save("staged");
    store.promote(&fees, None).unwrap();
    save("live");
    store.stage(&bundle("fees", "2.0.0", 64)).unwrap();
    store.promote(&fees, None).unwrap();
    save("standby");
    store.stage(&bundle("fees", "3.0.0", 64)).unwrap();
    store
        .reject(
            &fees,
            None,
            "check 2 (test vector 3): expected 6100, got 6000",
        )
        .unwrap();
    save("rejected");
    store.stage(&bundle("fees", "3.1.0", 64)).unwrap();
    save("candidate");
    store.promote(&fees, None).unwrap();
    save("retired");
    store.rollback(&fees, "watch window: 12 traps").unwrap();
    save("rolled-back");
    store.gc(0).unwrap();
    save("collected");
}
