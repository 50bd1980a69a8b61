//! The owner lock: an exclusive OS lock on a sidecar file that is never
//! replaced (so growing the data file by rename cannot split ownership),
//! holding a generation counter that becomes the fencing token.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive lock held for as long as the value lives. The lock is
/// released by the kernel when the process dies, however it dies.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
    path: PathBuf,
    generation: u64,
    // The lock file's (device, inode): a store checks before each write
    // that the path still names it, so a deleted or replaced lock file
    // (which would let another process "lock" a new file) is noticed.
    id: (u64, u64),
}

impl OwnerLock {
    /// Take the lock at `path` without waiting, and bump its generation.
    /// Another holder (in this or any other process) gives
    /// [`Error::Locked`].
    pub fn try_acquire(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        crate::file::slots::refuse_symlink(&path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io(&path, e))?;
        // A lock file that is empty or unreadable as a counter restarts at 0:
        // the generation only orders this host's owners, it guards nothing.
        let previous = buf
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0);
        let generation = previous.saturating_add(1);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&generation.to_le_bytes()))
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        Ok(OwnerLock {
            _file: file,
            path,
            generation,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Wait for the lock, polling every `poll`, for at most `timeout`.
    pub async fn acquire(
        path: impl AsRef<Path>,
        poll: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match Self::try_acquire(path.as_ref()) {
                Err(Error::Locked { path }) => {
                    if tokio::time::Instant::now() + poll > deadline {
                        return Err(Error::Locked { path });
                    }
                    tokio::time::sleep(poll).await;
                }
                other => return other,
            }
        }
    }

    /// How many times this lock was taken, this time included.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`Error::Fenced`] unless the lock path still names the file this
    /// lock holds. A lock file deleted (a "stale lock" clean-up) or replaced
    /// lets another process take a lock on a new file; the store must stop.
    pub fn check_held(&self) -> Result<()> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => Ok(()),
            Ok(_) => Err(self.lost("was replaced by another file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.lost("was deleted")),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    fn lost(&self, what: &str) -> Error {
        Error::Fenced {
            identity: self.path.display().to_string(),
            reason: format!(
                "its lock file {what} while this instance held it, so another instance may own it now; nothing was written: stop this instance, check that no other instance uses the store, and reopen it"
            ),
        }
    }
}

/// The lock file's generation, read without creating or locking anything:
/// `None` when there is no lock file.
pub(crate) fn peek_generation(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0),
    )
}

/// The refusal for a data file that is absent where a store was opened:
/// says whether the lock file shows that a store existed there.
pub(crate) fn store_missing(data: &Path, lock: &Path, create_with: &str) -> Error {
    let hint = match peek_generation(lock) {
        Some(g) if g > 0 => format!(
            "its lock file {} shows a store was opened there {g} time(s): the data file was moved away or lost; restore it (or import an export); creating a new, empty store ({create_with}) would forget every signature and vote",
            lock.display()
        ),
        _ => format!(
            "no store was ever created there; check the path, or create one explicitly ({create_with})"
        ),
    };
    Error::StoreMissing {
        path: data.to_path_buf(),
        hint,
    }
}
