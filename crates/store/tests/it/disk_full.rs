//! A full disk during staging: the stage fails with the OS error, the live version keeps its
//! payload, nothing is left half-written, and the store keeps working once space is back.
//!
//! Needs a small tmpfs, so it runs as root (as CI does); elsewhere it prints why it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use nonstop_store::{Store, StoreError};

use crate::{bundle, comp, payload, ver};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            // mode=755: a store refuses a root that others can write (tmpfs defaults to 1777).
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_staging_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(dir.path(), "1m") else {
        eprintln!(
            "SKIPPED a_full_disk_during_staging_changes_nothing: cannot mount a tmpfs (needs root)"
        );
        return;
    };
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "1.0.0", 200_000)).unwrap();
    store.promote(&comp("fees"), None).unwrap();

    let err = store
        .stage(&bundle("fees", "2.0.0", 2_000_000))
        .unwrap_err();
    match &err {
        StoreError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(28), "{err}"),
        other => panic!("expected an I/O error, got {other}"),
    }
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let s = store.component(&comp("fees")).unwrap();
    assert_eq!(ver(&s.live).as_deref(), Some("1.0.0"));
    assert_eq!(s.candidate, None);
    let versions = dir.path().join("components/fees/versions");
    let left: Vec<_> = std::fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["1.0.0"], "the half-written stage was removed");
    assert_eq!(
        std::fs::read(versions.join("1.0.0/rules.wasm")).unwrap(),
        payload("fees", "1.0.0", 200_000)
    );

    drop(store);
    let mut store = Store::init(dir.path()).unwrap();
    store.stage(&bundle("fees", "2.0.0", 100_000)).unwrap();
    store.promote(&comp("fees"), None).unwrap();
    assert_eq!(
        ver(&store.component(&comp("fees")).unwrap().live).as_deref(),
        Some("2.0.0")
    );
}
