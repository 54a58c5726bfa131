//! The append-only transition log of a component: one JSON line per version move. Appends are
//! fsynced; a torn last line left by a crash is cut off on open and the transition it belonged to
//! is re-appended from the state record, so the log always ends at the state record's `seq`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::{ComponentState, LogEntry, StoreError};

/// Appends `entries` durably.
pub(crate) fn append(path: &Path, entries: &[LogEntry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).expect("log entries serialise"));
        text.push('\n');
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| StoreError::io("opening log", path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| StoreError::io("appending to log", path, e))?;
    f.sync_all()
        .map_err(|e| StoreError::io("syncing log", path, e))
}

/// Reads every complete entry; `Err` names the first line that does not parse.
pub fn read(path: &Path) -> Result<Vec<LogEntry>, StoreError> {
    let (entries, _) = read_with_offsets(path)?;
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// Complete entries with the byte offset each starts at, and the length of the complete part.
fn read_with_offsets(path: &Path) -> Result<(Vec<(u64, LogEntry)>, u64), StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StoreError::io("reading log", path, e)),
    };
    // Only newline-terminated lines were fully written; anything after the last newline is torn.
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for (n, line) in bytes[..complete]
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        let entry: LogEntry = serde_json::from_slice(line).map_err(|e| StoreError::LogDamaged {
            path: path.to_owned(),
            line: n + 1,
            detail: e.to_string(),
        })?;
        entries.push((offset, entry));
        offset += line.len() as u64;
    }
    Ok((entries, complete as u64))
}

/// Makes the log end exactly with `state.last`: cuts a torn tail and re-appends a transition the
/// state record has but the log lost or holds only in part.
pub(crate) fn repair(path: &Path, state: &ComponentState) -> Result<(), StoreError> {
    let (entries, complete) = read_with_offsets(path)?;
    let tail_start = entries.iter().position(|(_, e)| e.seq >= state.seq);
    let tail: Vec<&LogEntry> = tail_start.map_or(Vec::new(), |i| {
        entries[i..].iter().map(|(_, e)| e).collect()
    });
    if let Some(bad) = entries.iter().find(|(_, e)| e.seq > state.seq) {
        return Err(StoreError::Damaged {
            component: state.component.to_string(),
            detail: format!(
                "log has transition {} but the state record ends at {}",
                bad.1.seq, state.seq
            ),
        });
    }
    let whole =
        tail.len() == state.last.len() && tail.iter().zip(&state.last).all(|(a, b)| *a == b);
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if whole && file_len == complete {
        return Ok(());
    }
    let cut = if whole {
        complete
    } else {
        tail_start.map_or(complete, |i| entries[i].0)
    };
    if file_len > 0 {
        let f = File::options()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io("opening log", path, e))?;
        f.set_len(cut)
            .map_err(|e| StoreError::io("truncating torn log", path, e))?;
        f.sync_all()
            .map_err(|e| StoreError::io("syncing log", path, e))?;
    }
    if !whole {
        tracing::info!(component = %state.component, seq = state.seq, "re-appending transition lost by a crash to the log");
        append(path, &state.last)?;
    }
    Ok(())
}
