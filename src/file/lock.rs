//! The owner lock: an exclusive OS lock on a sidecar file that is never
//! replaced (so growing the data file by rename cannot split ownership),
//! holding a generation counter that becomes the fencing token.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive lock held for as long as the value lives. The lock is
/// released by the kernel when the process dies, however it dies.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
    path: PathBuf,
    generation: u64,
}

impl OwnerLock {
    /// Take the lock at `path` without waiting, and bump its generation.
    /// Another holder (in this or any other process) gives
    /// [`Error::Locked`].
    pub fn try_acquire(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
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
        Ok(OwnerLock {
            _file: file,
            path,
            generation,
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
}
