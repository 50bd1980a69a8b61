//! Tower files in an Agave tower directory: their names, reading them as
//! Agave's loader does, and writing one durably.
//!
//! Agave writes its tower to `<name>.bin.new` and renames it over the old
//! file without any fsync, so a power cut can lose or tear it. An export
//! from slashguard is the tower a validator will trust on its next start,
//! so [`write_tower_durable`] syncs the file and the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::agave::envelope::{FileKind, SavedTower, ENVELOPE_OVERHEAD};
use crate::error::{Error, FormatError, Result};
use crate::identity::NodeId;
use crate::tower::{check_order, StoreMode, MAX_TOWER_BYTES};

/// Largest tower file read: the largest tower a [`TowerRecord`] holds plus
/// the envelope. Agave's towers are a few KiB.
///
/// [`TowerRecord`]: crate::tower::TowerRecord
pub const MAX_TOWER_FILE_BYTES: usize = MAX_TOWER_BYTES + ENVELOPE_OVERHEAD;

/// The file name Agave uses for `node`'s tower: `tower-1_9-<base58>.bin`,
/// or `tower-<base58>.bin` for [`FileKind::Legacy`].
pub fn tower_file_name(node: &NodeId, kind: FileKind) -> String {
    match kind {
        FileKind::V1_9 => format!("tower-1_9-{node}.bin"),
        FileKind::Legacy => format!("tower-{node}.bin"),
    }
}

/// `dir` joined with [`tower_file_name`].
pub fn tower_file_path(dir: impl AsRef<Path>, node: &NodeId, kind: FileKind) -> PathBuf {
    dir.as_ref().join(tower_file_name(node, kind))
}

/// Read, decode and verify the tower file at `path`, of the given kind,
/// belonging to `expected`.
///
/// Errors: [`Error::Io`] when it cannot be read (including not found);
/// [`Error::Corrupt`] naming the path when it is larger than
/// [`MAX_TOWER_FILE_BYTES`], undecodable, not canonical, of another node,
/// or badly signed (see [`SavedTower::decode`]).
pub fn read_tower_file(
    path: impl AsRef<Path>,
    kind: FileKind,
    expected: &NodeId,
) -> Result<SavedTower> {
    let path = path.as_ref();
    let bytes = read_bounded(path, MAX_TOWER_FILE_BYTES)?;
    SavedTower::decode(&bytes, kind, expected)
        .map_err(|e| Error::corrupt(path.display().to_string(), e.into()))
}

/// Load `node`'s tower from an Agave tower directory as Agave does: the
/// `tower-1_9-<node>.bin` file, or, only when that file does not exist,
/// the pre-1.9 `tower-<node>.bin`. `Ok(None)` when neither exists.
///
/// Unlike Agave, a `tower-1_9` file that exists but cannot be opened is an
/// error, not a reason to fall back to an older file.
pub fn load_tower(dir: impl AsRef<Path>, node: &NodeId) -> Result<Option<SavedTower>> {
    let dir = dir.as_ref();
    for kind in [FileKind::V1_9, FileKind::Legacy] {
        let path = tower_file_path(dir, node, kind);
        match read_tower_file(&path, kind, node) {
            Ok(saved) => return Ok(Some(saved)),
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Write `saved` into the Agave tower directory `dir` as
/// `tower-1_9-<node>.bin`, durably and atomically: a temporary file in
/// `dir` is written and fsynced, renamed over the tower file, and the
/// directory is fsynced. After `Ok`, the new file survives a crash or power
/// loss; at any moment before, the old file (or none) is what Agave finds.
/// Returns the path written.
///
/// With [`StoreMode::Advance`], the tower Agave would load from `dir` now
/// ([`load_tower`]) must not be newer: a last vote or root that would go
/// backwards, or the same last-vote slot with another hash, is refused
/// ([`Error::Refused`]) and nothing is written, because a validator
/// restarted on an older tower can vote twice. An existing file that
/// cannot be read is refused with its error too; use [`StoreMode::Force`]
/// only when an operator has decided to overwrite it.
///
/// Only the `tower-1_9` envelopes can be written ([`Error::Invalid`] for
/// [`EnvelopeFormat::Legacy`](super::EnvelopeFormat::Legacy), which Agave
/// ignores whenever a `tower-1_9` file exists), and only a tower whose
/// signature verifies. `dir` must exist. One writer at a time: do not
/// write into the tower directory of a running validator (it keeps its
/// tower in memory and overwrites the file at its next vote), nor run two
/// exports into one directory at once.
pub fn write_tower_durable(
    dir: impl AsRef<Path>,
    saved: &SavedTower,
    mode: StoreMode,
) -> Result<PathBuf> {
    let dir = dir.as_ref();
    if saved.format().file_kind() != FileKind::V1_9 {
        return Err(Error::Invalid(
            "a pre-1.9 (legacy) tower file is not written: re-sign it in the current envelope"
                .into(),
        ));
    }
    saved.verify().map_err(|e| {
        Error::Invalid(format!(
            "refusing to write a tower file that Agave would reject: {e}"
        ))
    })?;
    let node = saved.node();
    if mode == StoreMode::Advance {
        if let Some(existing) = load_tower(dir, &node)? {
            let old = existing.tower();
            let new = saved.tower();
            check_order(
                (old.last_vote_ref(), old.root()),
                (new.last_vote_ref(), new.root()),
            )?;
        }
    }
    write_durable(
        dir,
        &tower_file_name(&node, FileKind::V1_9),
        &saved.encode(),
    )
}

/// Write `bytes` as `dir/name`, durably and atomically: a temporary file in
/// `dir` written and fsynced, renamed over `name`, the directory fsynced.
/// At any moment before `Ok`, the old file (or none) is what a validator
/// finds. Returns the path written.
pub(crate) fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    // Not Agave's own `.bin.new`, so that a validator writing at the same
    // moment (which it must not be) cannot interleave with this file.
    let tmp = dir.join(format!("{name}.slashguard-new"));
    let result = write_synced(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e)))
        .and_then(|()| {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(dir, e))
        });
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless (Agave never
        // reads it), but do not leave it behind when we can help it.
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Read the file at `path`, refusing one above `max` bytes without
/// reading more than that, and anything but a regular file (a named pipe
/// or a device would block the read, or never end it).
pub(crate) fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a named pipe with no writer returns at
    // once; the open file's own type is then checked (no race with a
    // rename between a check of the path and the open).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::corrupt(
            path.display().to_string(),
            FormatError::InvalidField {
                field: "file",
                detail: "not a regular file".into(),
            },
        ));
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() > max {
        return Err(Error::corrupt(
            path.display().to_string(),
            FormatError::InvalidField {
                field: "file",
                detail: format!("larger than {max} bytes"),
            },
        ));
    }
    Ok(bytes)
}
