//! Files at rest: a program's data directory is its owner's alone (0700), and the files in it that
//! hold patient records or secrets (databases, passwords, credentials, keys) are 0600, whatever
//! the umask was when they were made. Used by the node and the update server for their data
//! directories; the store's own directories are checked by [`crate::Store::open`].

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) if missing, and takes away any access by others than its
/// owner. Returns whether the permissions had to be tightened.
pub fn private_dir(dir: &Path) -> Result<bool, String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    tighten(dir, 0o700)
}

/// Creates `path` empty with mode 0600 if missing, else takes away any access by others than
/// its owner. Returns whether the permissions had to be tightened.
pub fn private_file(path: &Path) -> Result<bool, String> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path, 0o600),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// Writes a secret (a password, a credential, a key) to `path`, created 0600 (an existing file
/// keeps its mode, which [`private_file`] tightens), and syncs it before returning.
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Refuses a directory that others than its owner can write (the directory of the running
/// program: whoever can write there can replace it).
pub fn refuse_writable_by_others(dir: &Path, what: &str) -> Result<(), String> {
    let mode = fs::metadata(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} ({what}) is writable by others than its owner (mode {mode:o}): whoever can write \
             there could replace what this program runs; run `chmod go-w {}`",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn tighten(path: &Path, wanted: u32) -> Result<bool, String> {
    let mode = fs::metadata(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & !wanted == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & wanted))
        .map_err(|e| format!("restricting {} to its owner: {e}", path.display()))?;
    tracing::warn!(path = %path.display(), was = format!("{mode:o}"), now = format!("{:o}", mode & wanted), "restricted to its owner");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loose_directory_and_file_are_tightened_and_new_ones_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&data).unwrap());
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!private_dir(&data).unwrap());
        let db = data.join("hospital.db");
        assert!(!private_file(&db).unwrap());
        assert_eq!(
            fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(private_file(&db).unwrap());
        assert_eq!(
            fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&data, fs::Permissions::from_mode(0o775)).unwrap();
        let e = refuse_writable_by_others(&data, "the program's directory").unwrap_err();
        assert!(e.contains("chmod go-w"), "{e}");
    }
}
