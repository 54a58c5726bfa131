//! What a node (or an update server) keeps of its trust on disk: every root it has accepted, in
//! order (`roots/<version>.json`), and the newest statement of what is current
//! (`timestamp.json`). The directory is its owner's alone; files are written whole, 0600, and
//! flushed before they replace anything, so a crash never leaves half a root.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nonstop_bundle::{KeyId, TrustedKeys};
use serde::Serialize;
use time::OffsetDateTime;

use crate::statement::rfc3339;
use crate::{CurrentRelease, Root, Statement, StatementBody, TrustError};

/// A statement accepted, and when.
#[derive(Debug, Clone)]
struct Heard {
    body: StatementBody,
    received_at: OffsetDateTime,
}

/// The roots accepted and the newest statement, kept in a directory.
#[derive(Debug)]
pub struct TrustHolder {
    dir: PathBuf,
    /// Oldest first; the last is current. The first is the implicit root (version 0) unless a
    /// root was installed as given.
    roots: Vec<Root>,
    heard: Option<Heard>,
}

/// A revoked publisher key, and which root revoked it.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The key.
    pub key_id: KeyId,
    /// The root version that left it out.
    pub by_root: u64,
}

/// Whether a fresh statement of what is current has been heard.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// False when the root names no timestamp key: freshness is not checked.
    pub checked: bool,
    /// True when the newest statement was made within `max_age_secs` and has not expired.
    pub fresh: bool,
    /// The configured limit.
    pub max_age_secs: u64,
    /// The newest statement's version.
    pub version: Option<u64>,
    /// When it was made (the server's clock, RFC 3339).
    pub issued_at: Option<String>,
    /// When this holder accepted it (RFC 3339).
    pub received_at: Option<String>,
    /// Seconds since it was made.
    pub age_secs: Option<i64>,
    /// The newest release of every component, as it says.
    pub releases: Vec<CurrentRelease>,
    /// What an operator should read.
    pub message: String,
}

/// Everything a holder's status shows of its trust.
#[derive(Debug, Clone, Serialize)]
pub struct TrustStatus {
    /// The current root's version (0: no root file, the trusted keys alone).
    pub root_version: u64,
    /// The publisher keys a bundle may be signed by.
    pub release_keys: Vec<KeyId>,
    /// How many of them must sign.
    pub release_threshold: usize,
    /// Keys earlier roots listed and the current one does not.
    pub revoked: Vec<Revoked>,
    /// The update server's timestamp keys, if the root names any.
    pub timestamp_keys: Vec<KeyId>,
    /// Whether a fresh statement has been heard.
    pub freshness: Freshness,
}

impl TrustHolder {
    /// Opens (creating) `dir`. `base` is the implicit root's keys; `initial`, a root file given
    /// at installation, is used only when the directory holds no root yet. Every root kept is
    /// checked again, each against the one before.
    pub fn open(
        dir: &Path,
        base: &TrustedKeys,
        initial: Option<&[u8]>,
    ) -> Result<TrustHolder, TrustError> {
        let roots_dir = dir.join("roots");
        for d in [dir, roots_dir.as_path()] {
            std::fs::create_dir_all(d).map_err(|e| TrustError::io("creating", d, e))?;
            let mode = std::fs::metadata(d)
                .map_err(|e| TrustError::io("reading", d, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| TrustError::io("securing", d, e))?;
            }
        }
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        for entry in
            std::fs::read_dir(&roots_dir).map_err(|e| TrustError::io("reading", &roots_dir, e))?
        {
            let path = entry
                .map_err(|e| TrustError::io("reading", &roots_dir, e))?
                .path();
            let version = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok());
            if let (Some(v), Some("json")) = (version, path.extension().and_then(|e| e.to_str())) {
                files.push((v, path));
            }
        }
        files.sort();
        let mut holder = TrustHolder {
            dir: dir.to_owned(),
            roots: vec![Root::implicit(base)],
            heard: None,
        };
        for (i, (_, path)) in files.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| TrustError::io("reading", path, e))?;
            let current = holder.current();
            let next = match current.successor(&bytes) {
                Ok(next) => next,
                // The first file may be a root installed as given.
                Err(_) if i == 0 => {
                    holder.roots.clear();
                    Root::first(&bytes)?
                }
                Err(e) => return Err(e),
            };
            holder.roots.push(next);
        }
        if files.is_empty()
            && let Some(bytes) = initial
        {
            let root = match holder.current().successor(bytes) {
                Ok(root) => root,
                Err(_) => {
                    holder.roots.clear();
                    Root::first(bytes)?
                }
            };
            holder.keep_root(&root)?;
            holder.roots.push(root);
        }
        let statement = dir.join("timestamp.json");
        if let Ok(bytes) = std::fs::read(&statement) {
            let received_at = std::fs::metadata(&statement)
                .and_then(|m| m.modified())
                .map(OffsetDateTime::from)
                .unwrap_or_else(|_| OffsetDateTime::now_utc());
            // Its signature is checked again; its expiry is not (an expired statement still says
            // when the holder last heard one).
            if let Ok(s) = Statement::verify(&bytes, holder.current(), OffsetDateTime::UNIX_EPOCH) {
                holder.heard = Some(Heard {
                    body: s.body().clone(),
                    received_at,
                });
            }
        }
        Ok(holder)
    }

    /// The root trusted now.
    pub fn current(&self) -> &Root {
        self.roots.last().expect("a holder always has a root")
    }

    /// Every root accepted, oldest first (the implicit root, version 0, included if it is the
    /// origin of the chain).
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Accepts the root that follows the current one; `Ok(false)` if this very root is already
    /// held. It is written to disk before it is trusted.
    pub fn accept_root(&mut self, bytes: &[u8]) -> Result<bool, TrustError> {
        let current = self.current();
        match current.successor(bytes) {
            Ok(next) => {
                self.keep_root(&next)?;
                self.roots.push(next);
                Ok(true)
            }
            Err(TrustError::RootVersion { found, .. }) if found <= current.version() => {
                let held = self.roots.iter().find(|r| r.version() == found);
                let same = held
                    .and_then(Root::to_text)
                    .is_some_and(|text| text.as_bytes() == bytes || same_root(&text, bytes));
                if same {
                    Ok(false)
                } else {
                    Err(TrustError::RootVersion {
                        current: current.version(),
                        found,
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Accepts a statement of what is current, checked against the current root at `now`;
    /// refuses one older than the newest accepted. `Ok(false)` if it is that very one again.
    pub fn accept_statement(
        &mut self,
        bytes: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool, TrustError> {
        let statement = Statement::verify(bytes, self.current(), now)?;
        let body = statement.body();
        if let Some(last) = &self.heard {
            if body.version < last.body.version {
                return Err(TrustError::StatementReplay {
                    found: body.version,
                    last: last.body.version,
                });
            }
            if body.version == last.body.version {
                return Ok(false);
            }
        }
        write_private(
            &self.dir.join("timestamp.json"),
            statement.to_text().as_bytes(),
        )?;
        self.heard = Some(Heard {
            body: body.clone(),
            received_at: now,
        });
        Ok(true)
    }

    /// The publisher keys a bundle verifier should trust now: the current root's release role,
    /// its threshold, and every key an earlier root listed and a later one left out, revoked.
    pub fn release_keys(&self) -> TrustedKeys {
        let mut trusted = TrustedKeys::new();
        for r in self.revoked() {
            trusted.revoke(r.key_id, format!("root version {}", r.by_root));
        }
        let current = self.current().release_keys();
        for id in current.ids() {
            if let Some(key) = current.get(&id) {
                trusted.add(key.clone());
            }
        }
        trusted.set_threshold(current.threshold());
        trusted
    }

    /// Keys an earlier root's release or root role listed and the current root's does not.
    pub fn revoked(&self) -> Vec<Revoked> {
        let mut revoked: BTreeMap<KeyId, u64> = BTreeMap::new();
        for pair in self.roots.windows(2) {
            let (before, after) = (pair[0].body(), pair[1].body());
            for id in before
                .roles
                .release
                .keys
                .iter()
                .chain(&before.roles.root.keys)
            {
                if !after.roles.release.keys.contains(id) && !after.roles.root.keys.contains(id) {
                    revoked.entry(*id).or_insert(after.version);
                }
            }
        }
        let current = self.current().body();
        revoked
            .into_iter()
            .filter(|(id, _)| {
                !current.roles.release.keys.contains(id) && !current.roles.root.keys.contains(id)
            })
            .map(|(key_id, by_root)| Revoked { key_id, by_root })
            .collect()
    }

    /// The holder's trust as its status shows it, at `now`, with `max_age_secs` as the limit on
    /// a statement's age.
    pub fn status(&self, now: OffsetDateTime, max_age_secs: u64) -> TrustStatus {
        let root = self.current();
        let body = root.body();
        TrustStatus {
            root_version: root.version(),
            release_keys: body.roles.release.keys.clone(),
            release_threshold: body.roles.release.threshold,
            revoked: self.revoked(),
            timestamp_keys: body
                .roles
                .timestamp
                .as_ref()
                .map(|r| r.keys.clone())
                .unwrap_or_default(),
            freshness: self.freshness(now, max_age_secs),
        }
    }

    /// Whether a fresh statement has been heard.
    pub fn freshness(&self, now: OffsetDateTime, max_age_secs: u64) -> Freshness {
        let root = self.current();
        let mut f = Freshness {
            checked: root.body().roles.timestamp.is_some(),
            fresh: false,
            max_age_secs,
            version: None,
            issued_at: None,
            received_at: None,
            age_secs: None,
            releases: Vec::new(),
            message: String::new(),
        };
        if !f.checked {
            f.message = format!(
                "freshness is not checked: root version {} names no timestamp key",
                root.version()
            );
            return f;
        }
        let Some(heard) = &self.heard else {
            f.message = "no signed statement of what is current has been heard from the update \
                         server: updates may be being withheld"
                .into();
            return f;
        };
        let age = (now - heard.body.issued_at).whole_seconds();
        f.version = Some(heard.body.version);
        f.issued_at = Some(rfc3339(heard.body.issued_at));
        f.received_at = Some(rfc3339(heard.received_at));
        f.age_secs = Some(age);
        f.releases = heard.body.releases.clone();
        let under_this_root = heard.body.root_version == root.version();
        let expired = heard.body.expires_at <= now;
        f.fresh = under_this_root && !expired && age <= max_age_secs as i64;
        f.message = if f.fresh {
            format!("fresh: the newest signed statement of what is current was made {age} s ago")
        } else if !under_this_root {
            format!(
                "stale: the newest signed statement was made under root version {}, and none \
                 under root version {} has been heard",
                heard.body.root_version,
                root.version()
            )
        } else {
            format!(
                "stale: the newest signed statement of what is current was made {age} s ago \
                 (limit {max_age_secs} s){}: updates may be being withheld",
                if expired { " and has expired" } else { "" }
            )
        };
        f
    }

    fn keep_root(&self, root: &Root) -> Result<(), TrustError> {
        let text = root.to_text().expect("a root file has its text");
        let path = self
            .dir
            .join("roots")
            .join(format!("{:08}.json", root.version()));
        write_private(&path, text.as_bytes())
    }
}

/// Whether `bytes` is the same root as `held` (the same signed content, whatever the envelope's
/// whitespace or the order of its signatures).
fn same_root(held: &str, bytes: &[u8]) -> bool {
    match (
        crate::RootDraft::read(held.as_bytes()),
        crate::RootDraft::read(bytes),
    ) {
        (Ok(a), Ok(b)) => a.body() == b.body(),
        _ => false,
    }
}

/// Writes `bytes` to `path` whole: a 0600 temporary file in the same directory (tempfile creates
/// it so), flushed, then renamed over `path`, then the directory flushed.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| TrustError::io("writing", path, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| TrustError::io("writing", path, e))?;
    tmp.persist(path)
        .map_err(|e| TrustError::io("writing", path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrustError::io("writing", dir, e))
}
