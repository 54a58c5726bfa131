//! The few file system moves the store is built from, each durable when it returns: a file is
//! written under a temporary name, fsynced, renamed over its final name, and its directory fsynced,
//! so a crash leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::StoreError;

/// Makes the directory entry changes in `dir` (creates, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// Writes `bytes` to a new file at `path` and fsyncs it (not its directory).
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StoreError::io("creating", path, e))?;
    f.write_all(bytes)
        .map_err(|e| StoreError::io("writing", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("syncing", path, e))
}

/// Replaces the file at `path` with `bytes` atomically and durably.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store files live in a directory");
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    if let Err(e) = write_new(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| StoreError::io("renaming into place", path, e))?;
    // The rename has happened: the new content is what every reader sees from now on, so the
    // caller must not undo what the file refers to. If making the rename itself durable fails,
    // a power loss may still bring back the old file, which `Store::open` reconciles like any
    // crash before the rename.
    if let Err(e) = sync_dir(dir) {
        tracing::error!(path = %path.display(), error = %e, "replaced, but syncing its directory failed");
    }
    Ok(())
}

/// Creates `dir` and any missing parents, making each new entry durable in its parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(StoreError::io("creating directory", dir, e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Renames `from` to `to` and makes both directories' entries durable.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to)
        .map_err(|e| StoreError::io(format!("renaming {} to", from.display()), to, e))?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    match (from.parent(), to.parent()) {
        (Some(a), Some(b)) if a != b => sync_dir(a),
        _ => Ok(()),
    }
}

/// Removes a directory tree if present and makes the removal durable.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("removing", dir, e)),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}
