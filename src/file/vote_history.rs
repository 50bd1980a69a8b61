//! `FileVoteHistory`: one node's Alpenglow vote history in a slot file,
//! fenced by the identity's owner lock (the same lock as its tower file, so
//! one identity has one owner on a host whatever it votes with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::alpenglow::storage::{check_create, no_history, plan};
use crate::alpenglow::{Applied, HistoryStorage, HistoryUpdate, RuleMode, VoteHistory};
use crate::error::{Error, Result};
use crate::file::lock::OwnerLock;
use crate::file::slots::{Loaded, Recovery, SlotFile};
use crate::file::FileTowerStorage;
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

const MAGIC: [u8; 4] = *b"sgAF";

/// The only two ways this backend touches the slot file, kept in one place
/// so that the slot file's open/create contract can change under them.
mod slot_access {
    use super::*;

    /// Open an existing history file; `None` when there is none.
    pub(super) fn open(path: &Path) -> Result<Option<(SlotFile, Loaded)>> {
        match std::fs::metadata(path) {
            Ok(_) => SlotFile::open(path, MAGIC).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Create the file holding `payload` (the caller holds the owner lock
    /// and saw no file).
    pub(super) fn create(path: &Path, payload: &[u8]) -> Result<SlotFile> {
        SlotFile::create_new(path, MAGIC, payload).map(|(s, _)| s)
    }
}

/// A vote history stored in `<dir>/slashguard-alpenglow-<node>.bin`, owned
/// by this process through the identity's OS lock
/// ([`FileTowerStorage::lock_path`]).
///
/// An `apply` that records something is one write and one `fdatasync` into
/// a pre-allocated slot (the record is CRC-checked twice: by the slot and
/// by its own encoding); one that only repeats recorded votes writes
/// nothing. The file is created only by [`create`](HistoryStorage::create).
pub struct FileVoteHistory {
    node: NodeId,
    path: PathBuf,
    lock: Arc<OwnerLock>,
    recovery: Recovery,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: Option<SlotFile>,
    current: Option<VoteHistory>,
    sequence: u64,
}

impl FileVoteHistory {
    /// Open `node`'s history in `dir` (it need not exist yet), taking the
    /// identity's owner lock. [`Error::Locked`] if another process or
    /// store holds it; [`Error::Corrupt`] if the file holds no intact
    /// record, another node's, or a format version this build does not
    /// read.
    pub fn open(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        let lock = OwnerLock::try_acquire(FileTowerStorage::lock_path(dir, &node))?;
        Self::open_locked(dir, node, Arc::new(lock))
    }

    /// Open under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) for the same
    /// directory and node (`LocalLockPolicy::for_tower`): the store shares
    /// the policy's lock.
    pub fn open_owned(
        dir: impl AsRef<Path>,
        node: NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let expected = FileTowerStorage::lock_path(dir, &node);
        match ownership.backing::<OwnerLock>() {
            Some(lock) if lock.path() == expected => Self::open_locked(dir, node, lock),
            _ => Err(Error::Invalid(format!(
                "ownership is not the local lock {} of node {node}",
                expected.display()
            ))),
        }
    }

    /// Read `node`'s history from `dir` without the lock and without
    /// writing (inspection). `Ok(None)` when there is none.
    pub fn read_unlocked(dir: impl AsRef<Path>, node: NodeId) -> Result<Option<VoteHistory>> {
        let path = Self::data_path(dir.as_ref(), &node);
        let Some(loaded) = SlotFile::read_snapshot(&path, MAGIC)? else {
            return Ok(None);
        };
        decode(&path, &loaded.payload, &node).map(Some)
    }

    /// The data file of `node`'s history in `dir`.
    pub fn data_path(dir: &Path, node: &NodeId) -> PathBuf {
        dir.join(format!("slashguard-alpenglow-{node}.bin"))
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found (a damaged slot from an interrupted write).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    fn open_locked(dir: &Path, node: NodeId, lock: Arc<OwnerLock>) -> Result<Self> {
        let path = Self::data_path(dir, &node);
        let (slots, current, recovery) = match slot_access::open(&path)? {
            None => (None, None, Recovery::Clean),
            Some((slots, loaded)) => {
                let h = decode(&path, &loaded.payload, &node)?;
                (Some(slots), Some(h), loaded.recovery)
            }
        };
        let sequence = slots.as_ref().map_or(0, |s| s.sequence());
        Ok(FileVoteHistory {
            node,
            path,
            lock,
            recovery,
            inner: Mutex::new(Inner {
                slots,
                current,
                sequence,
            }),
        })
    }

    fn receipt(&self, sequence: u64) -> StoreReceipt {
        StoreReceipt {
            fence: self.lock.generation(),
            sequence,
        }
    }
}

fn decode(path: &Path, payload: &[u8], node: &NodeId) -> Result<VoteHistory> {
    VoteHistory::decode(payload, node).map_err(|p| Error::corrupt(path.display().to_string(), p))
}

#[async_trait]
impl HistoryStorage for FileVoteHistory {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    async fn load(&self) -> Result<Option<VoteHistory>> {
        Ok(lock(&self.inner).current.clone())
    }

    async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt> {
        let mut inner = lock(&self.inner);
        check_create(&self.node, inner.current.as_ref(), history)?;
        // The owner lock is held, so nobody else can have created the file
        // since it was found missing.
        let slots = slot_access::create(&self.path, &history.encode())?;
        inner.sequence = slots.sequence();
        inner.slots = Some(slots);
        inner.current = Some(history.clone());
        Ok(self.receipt(inner.sequence))
    }

    async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
        let mut inner = lock(&self.inner);
        let (next, checks) = plan(&self.node, inner.current.as_ref(), update, mode)?;
        let Some(next) = next else {
            return Ok(Applied {
                receipt: self.receipt(inner.sequence),
                checks,
                wrote: false,
            });
        };
        let slots = inner.slots.as_mut().ok_or_else(|| no_history(&self.node))?;
        // Synchronous on purpose: the vote waits for this fdatasync anyway.
        let sequence = slots.write(&next.encode())?;
        inner.current = Some(next);
        inner.sequence = sequence;
        Ok(Applied {
            receipt: self.receipt(sequence),
            checks,
            wrote: true,
        })
    }
}

impl std::fmt::Debug for FileVoteHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileVoteHistory")
            .field("node", &self.node)
            .field("path", &self.path)
            .finish()
    }
}

/// The history's mutex, recovered after a panic of another holder, as the
/// other file stores did before they moved to the worker (a torn slot is
/// caught by its checksum at the next open, not by the mutex).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
