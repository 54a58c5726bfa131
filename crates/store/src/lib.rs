//! The version store: the patent's "local file directory" of the content to update. Each component
//! has a directory holding its versions and a state record naming the *live* version (official),
//! the *candidate* under test (never executed on live traffic) and the *standby* (the previous
//! live version, kept for rollback).
//!
//! ```text
//! <root>/store.lock                     held by the one process that may change the store
//! <root>/components/<name>/state.json   live / candidate / standby, replaced by atomic rename
//! <root>/components/<name>/log.jsonl    append-only transition log
//! <root>/components/<name>/versions/<version>/{<payload file>, manifest.json, bundle.nsb}
//! <root>/components/<name>/rejected/<version>@<seq>/   versions set aside, with the reason in state
//! ```
//!
//! Crash safety: the state record changes only by atomic rename, and directories are made to agree
//! with it afterwards by the same code that runs on open ([`Store::open`] finishes or undoes
//! whatever a crash interrupted). After a crash at any point, the live version is exactly the old
//! one or exactly the new one, with its payload matching its digest.

#![deny(missing_docs)]

pub mod at_rest;
mod error;
mod fsio;
pub mod log;
mod state;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nonstop_bundle::{ComponentName, Digest, VerifiedBundle, Verifier};
use time::OffsetDateTime;

pub use error::StoreError;
pub use state::{ComponentState, LogEntry, RejectedEntry, Role, VersionEntry};

const STAGING_PREFIX: &str = ".staging-";
/// The file that marks a directory as a version store; nothing else is ever opened as one.
const MARKER: &str = "nonstop-store.json";
/// How long opening waits for another holder of the lock before refusing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const MARKER_TEXT: &str = "{\"nonstop_version_store\": 1}\n";

/// A version store opened for changes. Holding it holds the store's lock file.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    components: BTreeMap<ComponentName, ComponentState>,
    /// Components whose log or directories could not be brought in line after a transition;
    /// mended before their next transition.
    unsettled: Vec<ComponentName>,
    _lock: File,
}

/// A component [`Store::init_recovering`] rolled back because its live payload was damaged.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The component.
    pub component: ComponentName,
    /// The version whose payload was damaged (now rejected).
    pub damaged: semver::Version,
    /// The version live instead (the standby it had).
    pub live: semver::Version,
    /// Why, as the store's log records it.
    pub reason: String,
}

impl Store {
    /// Opens the store at `root`, creating it if `root` does not exist or is empty.
    pub fn init(root: &Path) -> Result<Store, StoreError> {
        // Empty, or holding only a marker that a crash cut short.
        let empty = list_dir(root)?.iter().all(|n| n == "nonstop-store.tmp");
        if empty {
            fsio::ensure_dir(root)?;
            fsio::replace(&root.join(MARKER), MARKER_TEXT.as_bytes())?;
        }
        Store::open(root)
    }

    /// [`Store::init`], except that a component whose live payload no longer matches its digest
    /// (a damaged disk, a file changed by hand) is rolled back to its standby, when the standby
    /// is intact, instead of refusing the whole store: the bad version is set aside as rejected
    /// with the reason, which is also returned. What a node starts with, so one damaged file
    /// does not keep a hospital from opening.
    pub fn init_recovering(root: &Path) -> Result<(Store, Vec<Recovered>), StoreError> {
        Store::init(root)
            .map(|s| (s, Vec::new()))
            .or_else(|e| match e {
                StoreError::Damaged { .. } => Store::open_with(root, true),
                e => Err(e),
            })
    }

    /// Opens an existing store, takes its lock, and recovers every component: interrupted stages
    /// are removed, interrupted moves finished, a torn log mended, and each live payload checked
    /// against its digest. A directory that is not a store is refused, never cleaned up.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, false).map(|(store, _)| store)
    }

    fn open_with(root: &Path, recover: bool) -> Result<(Store, Vec<Recovered>), StoreError> {
        if !root.join(MARKER).is_file() {
            return Err(StoreError::NotAStore(root.to_owned()));
        }
        let lock = lock(root)?;
        fsio::ensure_dir(&root.join("components"))?;
        for dir in [root.to_owned(), root.join("components")] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dir)
                .map_err(|e| StoreError::io("reading", &dir, e))?
                .permissions()
                .mode()
                & 0o7777;
            if mode & 0o022 != 0 {
                return Err(StoreError::WritableByOthers { path: dir, mode });
            }
        }
        let mut components = BTreeMap::new();
        let mut damaged = Vec::new();
        let dir = root.join("components");
        for entry in fs::read_dir(&dir).map_err(|e| StoreError::io("reading", &dir, e))? {
            let entry = entry.map_err(|e| StoreError::io("reading", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| ComponentName::new(n).ok()) else {
                tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a component directory");
                continue;
            };
            let cdir = entry.path();
            match read_state(&cdir, &name)? {
                Some(state) => {
                    settle(&cdir, &state)?;
                    match verify(&cdir, &state) {
                        Ok(()) => {}
                        Err(e)
                            if recover
                                && state.standby.is_some()
                                && live_damaged(&cdir, &state) =>
                        {
                            damaged.push((name.clone(), e.to_string()));
                        }
                        Err(e) => return Err(e),
                    }
                    components.insert(name, state);
                }
                // A first stage that crashed before its state record was written left nothing
                // that counts: remove its leftovers, if they are only what a stage writes.
                None if only_stage_leftovers(&cdir)? => fsio::remove_tree(&cdir)?,
                None => {
                    return Err(StoreError::Damaged {
                        component: name.to_string(),
                        detail: format!("{} has files but no state record", cdir.display()),
                    });
                }
            }
        }
        let mut store = Store {
            root: root.to_owned(),
            components,
            unsettled: Vec::new(),
            _lock: lock,
        };
        let mut recovered = Vec::new();
        for (name, why) in damaged {
            let bad = store.component(&name)?.live.clone().map(|e| e.version);
            let reason = format!("the live payload was damaged at start: {why}");
            let now_live = store.rollback(&name, &reason)?;
            tracing::error!(component = %name, %reason, live = %now_live.version, "started on the standby");
            recovered.push(Recovered {
                component: name,
                damaged: bad.unwrap_or_else(|| semver::Version::new(0, 0, 0)),
                live: now_live.version,
                reason,
            });
        }
        Ok((store, recovered))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state of every component.
    pub fn components(&self) -> impl Iterator<Item = &ComponentState> {
        self.components.values()
    }

    /// The state of one component.
    pub fn component(&self, name: &ComponentName) -> Result<&ComponentState, StoreError> {
        self.components
            .get(name)
            .ok_or_else(|| StoreError::UnknownComponent(name.to_string()))
    }

    /// The directory of `version` of `component` (installed versions only).
    pub fn version_dir(&self, component: &ComponentName, version: &semver::Version) -> PathBuf {
        component_dir(&self.root, component)
            .join("versions")
            .join(version.to_string())
    }

    /// The payload file of an installed version.
    pub fn payload_path(&self, component: &ComponentName, entry: &VersionEntry) -> PathBuf {
        self.version_dir(component, &entry.version)
            .join(entry.file.as_str())
    }

    /// The transition log of a component.
    pub fn log(&self, component: &ComponentName) -> Result<Vec<LogEntry>, StoreError> {
        log::read(&component_dir(&self.root, component).join("log.jsonl"))
    }

    /// Stages a verified bundle as the component's candidate: a new version directory beside the
    /// live one, holding the payload, the manifest and the bundle. The live version is untouched.
    pub fn stage(&mut self, bundle: &VerifiedBundle) -> Result<VersionEntry, StoreError> {
        let m = bundle.manifest();
        let name = &m.component;
        let state = self
            .components
            .get(name)
            .cloned()
            .unwrap_or_else(|| ComponentState::empty(name.clone()));
        if let Some(c) = &state.candidate {
            return Err(StoreError::CandidatePresent {
                component: name.to_string(),
                version: c.version.clone(),
            });
        }
        // Checked again here, under the lock: the live version may have moved since the bundle was opened.
        nonstop_bundle::check_version(m, state.live.as_ref().map(|e| &e.version))?;
        if let Some(role) = state.role_of(&m.version) {
            return Err(StoreError::VersionPresent {
                component: name.to_string(),
                version: m.version.clone(),
                role: role.as_str(),
            });
        }
        let entry = VersionEntry {
            version: m.version.clone(),
            digest: m.payload.digest,
            file: m.payload.file.clone(),
            kind: m.kind,
            staged_at: now(),
        };
        self.settle_pending(name)?;
        let cdir = component_dir(&self.root, name);
        let versions = cdir.join("versions");
        fsio::ensure_dir(&versions)?;
        let staging = versions.join(format!("{STAGING_PREFIX}{}", m.version));
        let target = versions.join(m.version.to_string());
        let written = write_version(&staging, &target, bundle);
        if let Err(e) = written {
            let _ = fsio::remove_tree(&staging);
            tracing::warn!(component = %name, version = %m.version, step = "stage", error = %e, "staging failed; live version untouched");
            return Err(e);
        }
        let mut next = state;
        next.candidate = Some(entry.clone());
        let moves = vec![Move::new(
            "stage",
            &entry,
            Role::Absent,
            Role::Candidate,
            "",
        )];
        if let Err(e) = self.commit(next, moves) {
            let _ = fsio::remove_tree(&target);
            return Err(e);
        }
        Ok(entry)
    }

    /// Reads, verifies and stages a bundle file as its component's candidate; it must be newer
    /// than this store's live version of the component (or a signed rollback from it).
    pub fn stage_file(
        &mut self,
        verifier: &Verifier,
        path: &Path,
    ) -> Result<(VerifiedBundle, VersionEntry), StoreError> {
        let bytes = nonstop_bundle::read_bounded(path, verifier.limits())?;
        // The component named in the (not yet verified) manifest only picks the live version to
        // compare with; `open` then verifies everything, including that name.
        let named =
            nonstop_bundle::claimed_manifest(&bytes, verifier.limits()).map(|m| m.component);
        let live = named
            .and_then(|c| self.components.get(&c))
            .and_then(|s| s.live.as_ref())
            .map(|e| e.version.clone());
        let bundle = verifier.open(&bytes, live.as_ref())?;
        let entry = self.stage(&bundle)?;
        Ok((bundle, entry))
    }

    /// Makes the candidate live in one atomic step; the old live version becomes standby and the
    /// old standby is retired. `expected`, if given, must be the candidate's version.
    pub fn promote(
        &mut self,
        component: &ComponentName,
        expected: Option<&semver::Version>,
    ) -> Result<VersionEntry, StoreError> {
        let state = self.component(component)?.clone();
        let cand = candidate_of(&state, expected)?;
        self.check_payload(component, &cand)?;
        let mut next = state.clone();
        let mut moves = vec![Move::new("promote", &cand, Role::Candidate, Role::Live, "")];
        if let Some(old) = &state.live {
            moves.push(Move::new("promote", old, Role::Live, Role::Standby, ""));
        }
        if let Some(old) = &state.standby {
            moves.push(Move::new("promote", old, Role::Standby, Role::Retired, ""));
            next.retired.insert(0, old.clone());
        }
        next.standby = state.live.clone();
        next.live = Some(cand.clone());
        next.candidate = None;
        self.commit(next, moves)?;
        Ok(cand)
    }

    /// Refuses the candidate: it is set aside under `rejected/` with `reason`.
    pub fn reject(
        &mut self,
        component: &ComponentName,
        expected: Option<&semver::Version>,
        reason: &str,
    ) -> Result<VersionEntry, StoreError> {
        let state = self.component(component)?.clone();
        let cand = candidate_of(&state, expected)?;
        let mut next = state.clone();
        next.candidate = None;
        next.rejected
            .insert(0, rejected(&cand, state.seq + 1, reason));
        let moves = vec![Move::new(
            "reject",
            &cand,
            Role::Candidate,
            Role::Rejected,
            reason,
        )];
        self.commit(next, moves)?;
        Ok(cand)
    }

    /// Makes the standby live again; the bad live version is set aside with `reason`, and the
    /// newest retired version (if any) becomes the standby.
    pub fn rollback(
        &mut self,
        component: &ComponentName,
        reason: &str,
    ) -> Result<VersionEntry, StoreError> {
        let state = self.component(component)?.clone();
        let Some(standby) = state.standby.clone() else {
            return Err(StoreError::NoStandby {
                component: component.to_string(),
            });
        };
        self.check_payload(component, &standby)?;
        let mut next = state.clone();
        let mut moves = vec![Move::new(
            "rollback",
            &standby,
            Role::Standby,
            Role::Live,
            reason,
        )];
        if let Some(bad) = &state.live {
            moves.push(Move::new(
                "rollback",
                bad,
                Role::Live,
                Role::Rejected,
                reason,
            ));
            next.rejected
                .insert(0, rejected(bad, state.seq + 1, reason));
        }
        next.standby = None;
        if !next.retired.is_empty() {
            let older = next.retired.remove(0);
            moves.push(Move::new(
                "rollback",
                &older,
                Role::Retired,
                Role::Standby,
                reason,
            ));
            next.standby = Some(older);
        }
        next.live = Some(standby.clone());
        self.commit(next, moves)?;
        Ok(standby)
    }

    /// Sets the live version aside with `reason` when it has no standby to roll back to, leaving
    /// the component with no live version. For the node program (issue 10): a program with no
    /// live version in the store is the one installed on disk, which is what then runs again.
    pub fn set_aside_live(
        &mut self,
        component: &ComponentName,
        reason: &str,
    ) -> Result<VersionEntry, StoreError> {
        let state = self.component(component)?.clone();
        let Some(bad) = state.live.clone() else {
            return Err(StoreError::NoStandby {
                component: component.to_string(),
            });
        };
        let mut next = state.clone();
        next.rejected
            .insert(0, rejected(&bad, state.seq + 1, reason));
        next.live = None;
        let moves = vec![Move::new(
            "rollback",
            &bad,
            Role::Live,
            Role::Rejected,
            reason,
        )];
        self.commit(next, moves)?;
        Ok(bad)
    }

    /// Retires the standby with `reason`: it can no longer be rolled back to (for the node
    /// program, once a contract migration has removed what the standby relied on). Returns the
    /// retired version, if there was a standby.
    pub fn retire_standby(
        &mut self,
        component: &ComponentName,
        reason: &str,
    ) -> Result<Option<VersionEntry>, StoreError> {
        let state = self.component(component)?.clone();
        let Some(standby) = state.standby.clone() else {
            return Ok(None);
        };
        let mut next = state.clone();
        next.standby = None;
        next.retired.insert(0, standby.clone());
        let moves = vec![Move::new(
            "retire",
            &standby,
            Role::Standby,
            Role::Retired,
            reason,
        )];
        self.commit(next, moves)?;
        Ok(Some(standby))
    }

    /// Removes all but the `keep` newest retired and the `keep` newest rejected versions of every
    /// component. Live, candidate and standby are never removed. Returns the versions removed.
    pub fn gc(&mut self, keep: usize) -> Result<Vec<(ComponentName, semver::Version)>, StoreError> {
        let mut removed = Vec::new();
        let names: Vec<_> = self.components.keys().cloned().collect();
        for name in names {
            let state = self.components[&name].clone();
            let mut next = state.clone();
            let mut moves = Vec::new();
            for old in next.retired.drain(keep.min(state.retired.len())..) {
                moves.push(Move::new("gc", &old, Role::Retired, Role::Absent, ""));
            }
            for old in next.rejected.drain(keep.min(state.rejected.len())..) {
                moves.push(Move::new(
                    "gc",
                    &old.entry,
                    Role::Rejected,
                    Role::Absent,
                    "",
                ));
            }
            if moves.is_empty() {
                continue;
            }
            removed.extend(
                moves
                    .iter()
                    .map(|m| (name.clone(), m.entry.version.clone())),
            );
            self.commit(next, moves)?;
        }
        Ok(removed)
    }

    /// Records a transition. The new state record replaces the old by atomic rename: that rename
    /// *is* the transition, and an error before it means nothing happened. The log append and
    /// directory moves after it only mend files; if they fail, the transition still stands (it is
    /// reported as done) and they are redone before the component's next transition or on open.
    fn commit(&mut self, mut next: ComponentState, moves: Vec<Move>) -> Result<(), StoreError> {
        let cdir = component_dir(&self.root, &next.component);
        self.settle_pending(&next.component)?;
        let at = now();
        next.seq += 1;
        next.last = moves
            .iter()
            .map(|m| LogEntry {
                seq: next.seq,
                at,
                component: next.component.clone(),
                action: m.action.to_owned(),
                version: m.entry.version.clone(),
                digest: m.entry.digest,
                from: m.from,
                to: m.to,
                reason: m.reason.clone(),
            })
            .collect();
        fsio::ensure_dir(&cdir)?;
        let record = serde_json::to_vec_pretty(&next).expect("state record serialises");
        fsio::replace(&cdir.join("state.json"), &record)?;
        for e in &next.last {
            tracing::info!(component = %e.component, version = %e.version, step = %e.action, from = %e.from, to = %e.to, reason = %e.reason, seq = e.seq, "store transition");
        }
        if let Err(e) = settle(&cdir, &next) {
            tracing::error!(component = %next.component, error = %e, "transition recorded, but its log entry or directory move is pending; retried before the next one");
            self.unsettled.push(next.component.clone());
        }
        self.components.insert(next.component.clone(), next);
        Ok(())
    }

    /// Finishes the log append and directory moves of the component's last transition if they
    /// failed. Runs before anything else touches the component's files: reconciling removes
    /// version directories the state record does not name.
    fn settle_pending(&mut self, component: &ComponentName) -> Result<(), StoreError> {
        if let Some(i) = self.unsettled.iter().position(|c| c == component) {
            let current = self.component(component)?.clone();
            settle(&component_dir(&self.root, component), &current)?;
            self.unsettled.remove(i);
        }
        Ok(())
    }

    fn check_payload(
        &self,
        component: &ComponentName,
        entry: &VersionEntry,
    ) -> Result<(), StoreError> {
        check_digest(&self.payload_path(component, entry), component, entry)
    }
}

/// Brings a component's log and directories in line with its state record.
fn settle(cdir: &Path, state: &ComponentState) -> Result<(), StoreError> {
    log::repair(&cdir.join("log.jsonl"), state)?;
    reconcile(cdir, state)
}

/// True when a component directory without a state record holds only what an interrupted first
/// stage leaves (its `versions/` directory).
fn only_stage_leftovers(cdir: &Path) -> Result<bool, StoreError> {
    Ok(list_dir(cdir)?
        .iter()
        .all(|n| n == "versions" || n == "state.tmp"))
}

/// The live version of `component`, read without taking the lock.
pub fn live_version(
    root: &Path,
    component: &ComponentName,
) -> Result<Option<semver::Version>, StoreError> {
    let Some(state) = read_state(&component_dir(root, component), component)? else {
        return Ok(None);
    };
    Ok(state.live.map(|e| e.version))
}

/// The payload file of an installed version, for readers that do not hold the store.
pub fn payload_path(root: &Path, component: &ComponentName, entry: &VersionEntry) -> PathBuf {
    component_dir(root, component)
        .join("versions")
        .join(entry.version.to_string())
        .join(entry.file.as_str())
}

/// Reads every component's state without taking the lock: state records are only ever replaced
/// whole, so this is a consistent snapshot of each one even while a node holds the store.
pub fn read_status(root: &Path) -> Result<Vec<ComponentState>, StoreError> {
    let dir = root.join("components");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io("reading", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("reading", &dir, e))?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| ComponentName::new(n).ok())
        else {
            continue;
        };
        if let Some(state) = read_state(&entry.path(), &name)? {
            out.push(state);
        }
    }
    out.sort_by(|a, b| a.component.cmp(&b.component));
    Ok(out)
}

/// Reads one component's log without taking the lock.
pub fn read_log(root: &Path, component: &ComponentName) -> Result<Vec<LogEntry>, StoreError> {
    let cdir = component_dir(root, component);
    if !cdir.join("state.json").is_file() {
        return Err(StoreError::UnknownComponent(component.to_string()));
    }
    log::read(&cdir.join("log.jsonl"))
}

struct Move {
    action: &'static str,
    entry: VersionEntry,
    from: Role,
    to: Role,
    reason: String,
}

impl Move {
    fn new(action: &'static str, entry: &VersionEntry, from: Role, to: Role, reason: &str) -> Self {
        Move {
            action,
            entry: entry.clone(),
            from,
            to,
            reason: reason.to_owned(),
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn component_dir(root: &Path, component: &ComponentName) -> PathBuf {
    root.join("components").join(component.as_str())
}

fn rejected(entry: &VersionEntry, seq: u64, reason: &str) -> RejectedEntry {
    RejectedEntry {
        entry: entry.clone(),
        dir: format!("{}@{seq}", entry.version),
        reason: reason.to_owned(),
        at: now(),
    }
}

fn candidate_of(
    state: &ComponentState,
    expected: Option<&semver::Version>,
) -> Result<VersionEntry, StoreError> {
    let Some(cand) = &state.candidate else {
        return Err(StoreError::NoCandidate {
            component: state.component.to_string(),
        });
    };
    if let Some(expected) = expected
        && *expected != cand.version
    {
        return Err(StoreError::CandidateMismatch {
            component: state.component.to_string(),
            expected: expected.clone(),
            candidate: cand.version.clone(),
        });
    }
    Ok(cand.clone())
}

/// Takes the store's lock file, or says who holds it.
fn lock(root: &Path) -> Result<File, StoreError> {
    let path = root.join("store.lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io("opening lock file", &path, e))?;
    // A lock can outlive its holder briefly: a process that just closed the store may have forked
    // a child that has not yet exec'd (and closed its inherited descriptors). Wait that long.
    let waited_from = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if waited_from.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path,
                    holder: text.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("locking", &path, e)),
        }
    }
    // The pid is only informative (it names the holder in the error above), so it is not fsynced.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    written.map_err(|e| StoreError::io("writing lock file", &path, e))?;
    Ok(file)
}

fn read_state(cdir: &Path, name: &ComponentName) -> Result<Option<ComponentState>, StoreError> {
    let path = cdir.join("state.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("reading", &path, e)),
    };
    let state: ComponentState =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
            component: name.to_string(),
            detail: format!("state record {} does not parse: {e}", path.display()),
        })?;
    if state.format != state::STATE_FORMAT || state.component != *name {
        return Err(StoreError::Damaged {
            component: name.to_string(),
            detail: format!(
                "state record {} has format {} for component {}",
                path.display(),
                state.format,
                state.component
            ),
        });
    }
    // Recovery follows the record: it re-appends `last` to the log and moves versions into the
    // directories `rejected` names. A record that contradicts itself, or names a directory
    // outside its component's, is damaged rather than followed.
    let damaged = |detail: String| StoreError::Damaged {
        component: name.to_string(),
        detail: format!("state record {}: {detail}", path.display()),
    };
    if let Some(e) = state
        .last
        .iter()
        .find(|e| e.seq != state.seq || e.component != *name)
    {
        return Err(damaged(format!(
            "it is at transition {} but its last transition has a move of transition {} of {}",
            state.seq, e.seq, e.component
        )));
    }
    if let Some(r) = state.rejected.iter().find(|r| {
        let mut parts = Path::new(&r.dir).components();
        !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        )
    }) {
        return Err(damaged(format!(
            "it sets version {} aside in {:?}, which is not one directory name under rejected/",
            r.entry.version, r.dir
        )));
    }
    Ok(Some(state))
}

/// Writes a version's files into `staging`, then renames it to `target` in one step.
fn write_version(staging: &Path, target: &Path, bundle: &VerifiedBundle) -> Result<(), StoreError> {
    let m = bundle.manifest();
    fsio::remove_tree(staging)?;
    // `target` is not referenced by the state record (the caller checked), so it can only be a
    // leftover of a failed earlier attempt.
    fsio::remove_tree(target)?;
    fs::create_dir(staging).map_err(|e| StoreError::io("creating directory", staging, e))?;
    let payload = staging.join(m.payload.file.as_str());
    fsio::write_new(&payload, bundle.payload())?;
    if m.kind == nonstop_bundle::ComponentKind::NodeBinary {
        // A program is run from here (its owner only may run it, as the store is its owner's).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&payload, fs::Permissions::from_mode(0o700))
            .map_err(|e| StoreError::io("making executable", &payload, e))?;
    }
    let manifest = serde_json::to_vec_pretty(m).expect("manifest serialises");
    fsio::write_new(&staging.join("manifest.json"), &manifest)?;
    fsio::write_new(&staging.join("bundle.nsb"), bundle.bytes())?;
    fsio::sync_dir(staging)?;
    fsio::rename_durable(staging, target)
}

/// Makes the directories agree with the state record: the same code finishes an operation in the
/// normal path and after a crash. Removes interrupted stages and versions no record names, moves
/// rejected versions aside, and removes what garbage collection dropped.
fn reconcile(cdir: &Path, state: &ComponentState) -> Result<(), StoreError> {
    let _ = fs::remove_file(cdir.join("state.tmp"));
    let versions = cdir.join("versions");
    let rejected_dir = cdir.join("rejected");
    for name in list_dir(&versions)? {
        let path = versions.join(&name);
        if name.starts_with(STAGING_PREFIX) {
            fsio::remove_tree(&path)?;
            continue;
        }
        let Ok(version) = name.parse::<semver::Version>() else {
            tracing::warn!(path = %path.display(), "leaving alone a file the store did not write");
            continue;
        };
        if state.role_of(&version).is_some() {
            continue;
        }
        let set_aside = state
            .rejected
            .iter()
            .find(|r| r.entry.version == version && !rejected_dir.join(&r.dir).exists());
        match set_aside {
            Some(r) => {
                fsio::ensure_dir(&rejected_dir)?;
                fsio::rename_durable(&path, &rejected_dir.join(&r.dir))?;
            }
            None => fsio::remove_tree(&path)?,
        }
    }
    for name in list_dir(&rejected_dir)? {
        if !state.rejected.iter().any(|r| r.dir == name) {
            fsio::remove_tree(&rejected_dir.join(&name))?;
        }
    }
    Ok(())
}

/// Whether the live payload is what fails [`verify`] (and nothing else it checks).
fn live_damaged(cdir: &Path, state: &ComponentState) -> bool {
    let Some(live) = &state.live else {
        return false;
    };
    let path = cdir
        .join("versions")
        .join(live.version.to_string())
        .join(live.file.as_str());
    check_digest(&path, &state.component, live).is_err()
}

/// Checks that every installed version's directory is there and that the live payload matches its
/// digest.
fn verify(cdir: &Path, state: &ComponentState) -> Result<(), StoreError> {
    for (role, entry) in state.installed() {
        let path = cdir
            .join("versions")
            .join(entry.version.to_string())
            .join(entry.file.as_str());
        // A live program's digest is checked by the supervisor each time before it runs it
        // (crate nonstop-program): hashing a whole executable at every open of the store would
        // cost the program that just took over a busy fraction of a second.
        if role == Role::Live && entry.kind != nonstop_bundle::ComponentKind::NodeBinary {
            check_digest(&path, &state.component, entry)?;
        } else if !path.is_file() {
            return Err(StoreError::Damaged {
                component: state.component.to_string(),
                detail: format!(
                    "{role} version {} has no payload at {}",
                    entry.version,
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

fn check_digest(
    path: &Path,
    component: &ComponentName,
    entry: &VersionEntry,
) -> Result<(), StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::Damaged {
        component: component.to_string(),
        detail: format!(
            "version {} payload {} unreadable: {e}",
            entry.version,
            path.display()
        ),
    })?;
    let actual = Digest::of(&bytes);
    if actual != entry.digest {
        return Err(StoreError::Damaged {
            component: component.to_string(),
            detail: format!(
                "version {} payload {} has digest {actual}, expected {}",
                entry.version,
                path.display(),
                entry.digest
            ),
        });
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("reading", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("reading", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
