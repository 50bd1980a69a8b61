//! `vote_history-<identity>.bin` in a validator's ledger directory: its
//! name, reading it, and writing one durably without replacing a newer one.
//!
//! Agave writes it to `<name>.bin.new` and renames it into place with no
//! fsync; an export from slashguard is what a validator (or Firedancer's
//! `set-identity --vote-history-file`) trusts next, so
//! [`write_vote_history_durable`] syncs the file and the directory.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::agave::files::{read_bounded, write_durable};
use crate::agave::vote_history::layout::HistoryLayout;
use crate::agave::vote_history::saved::{SavedVoteHistory, MAX_VOTE_HISTORY_FILE_BYTES};
use crate::alpenglow::AlpenglowRefusal;
use crate::error::{Error, Result};
use crate::identity::NodeId;

/// The file name Agave uses for `node`'s vote history.
pub fn vote_history_file_name(node: &NodeId) -> String {
    format!("vote_history-{node}.bin")
}

/// `dir` joined with [`vote_history_file_name`].
pub fn vote_history_file_path(dir: impl AsRef<Path>, node: &NodeId) -> PathBuf {
    dir.as_ref().join(vote_history_file_name(node))
}

/// Read, decode and verify the vote history file at `path` of `expected`,
/// in `layout`, or, with `None`, in whichever known layout it is
/// ([`SavedVoteHistory::decode_any`]).
///
/// Errors: [`Error::Io`] when it cannot be read (including not found);
/// [`Error::Corrupt`] naming the path when it is too large, undecodable,
/// not canonical, of another identity, badly signed or inconsistent.
pub fn read_vote_history_file(
    path: impl AsRef<Path>,
    layout: Option<HistoryLayout>,
    expected: &NodeId,
) -> Result<SavedVoteHistory> {
    let path = path.as_ref();
    let bytes = read_bounded(path, MAX_VOTE_HISTORY_FILE_BYTES)?;
    match layout {
        Some(layout) => SavedVoteHistory::decode(&bytes, layout, expected),
        None => SavedVoteHistory::decode_any(&bytes, expected),
    }
    .map_err(|e| Error::corrupt(path.display().to_string(), e.into()))
}

/// Load `node`'s vote history file from a ledger directory: `Ok(None)`
/// when there is none.
pub fn load_vote_history(
    dir: impl AsRef<Path>,
    layout: Option<HistoryLayout>,
    node: &NodeId,
) -> Result<Option<SavedVoteHistory>> {
    match read_vote_history_file(vote_history_file_path(dir, node), layout, node) {
        Ok(saved) => Ok(Some(saved)),
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuse to replace `old` with `new` when `new` is older: a lower root,
/// or a vote of `old` (at or above `new`'s root) that `new` lacks. A
/// validator restarted on an older file can vote twice.
pub fn check_successor(old: &SavedVoteHistory, new: &SavedVoteHistory) -> Result<()> {
    if new.root() < old.root() {
        return Err(AlpenglowRefusal::RootRegressed {
            stored: old.root(),
            requested: new.root(),
        }
        .into());
    }
    // Shred versions are compared as written; a vote-enum file has none,
    // and 0 stands for it on both sides.
    let have = new.votes(0);
    for v in old.votes(0) {
        if v.slot >= new.root() && !have.iter().any(|h| h.slot == v.slot && h.kind == v.kind) {
            return Err(AlpenglowRefusal::HistoryRegressed {
                slot: v.slot,
                vote: v.kind,
            }
            .into());
        }
    }
    Ok(())
}

/// Write `saved` into the ledger directory `dir` as
/// `vote_history-<identity>.bin`, durably and atomically (a temporary file
/// written and fsynced, renamed into place, the directory fsynced). Returns
/// the path written.
///
/// Unless `overwrite_newer`, a file already there must be older
/// ([`check_successor`]): a newer one is refused ([`Error::Refused`]) and
/// nothing is written, and so is one that cannot be read in a known
/// layout. `dir` must exist. Do not write into the ledger directory of a
/// running validator (it overwrites the file at its next vote).
pub fn write_vote_history_durable(
    dir: impl AsRef<Path>,
    saved: &SavedVoteHistory,
    overwrite_newer: bool,
) -> Result<PathBuf> {
    let dir = dir.as_ref();
    saved.verify().map_err(|e| {
        Error::Invalid(format!(
            "refusing to write a vote history file that the validator would reject: {e}"
        ))
    })?;
    let node = saved.node();
    if !overwrite_newer {
        if let Some(existing) = load_vote_history(dir, None, &node)? {
            check_successor(&existing, saved)?;
        }
    }
    write_durable(dir, &vote_history_file_name(&node), &saved.encode())
}
