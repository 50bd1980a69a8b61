//! `FileTowerStorage`: one node's tower in a slot file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::OwnerLock;
use crate::file::slots::{Recovery, SlotFile};
use crate::identity::NodeId;
use crate::tower::{check_store, StoreMode, StoreReceipt, TowerRecord, TowerStorage};

const MAGIC: [u8; 4] = *b"sgTF";

/// A tower stored in `<dir>/slashguard-tower-<node>.bin`, owned by this
/// process through the OS lock on `<dir>/slashguard-tower-<node>.lock`.
///
/// A store is one write and one `fdatasync` into a pre-allocated slot; see
/// the [module docs](crate::file).
pub struct FileTowerStorage {
    node: NodeId,
    path: PathBuf,
    lock: Arc<OwnerLock>,
    recovery: Recovery,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: SlotFile,
    current: Option<TowerRecord>,
}

impl FileTowerStorage {
    /// Open (or create) the tower file of `node` in `dir`, taking the owner
    /// lock. Fails with [`Error::Locked`] if another process (or another
    /// open store in this one) holds it, and with [`Error::Corrupt`] if the
    /// file holds no intact record, a record of another node, or a slot of a
    /// format version this build does not read.
    pub fn open(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        let lock = OwnerLock::try_acquire(Self::lock_path(dir, &node))?;
        Self::open_locked(dir, node, Arc::new(lock))
    }

    /// Open the tower file under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) for the same
    /// directory and node: the store shares the policy's lock, so it stays
    /// locked for as long as either the store or the ownership lives.
    pub fn open_owned(
        dir: impl AsRef<Path>,
        node: NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let expected = Self::lock_path(dir, &node);
        match ownership.backing::<OwnerLock>() {
            Some(lock) if lock.path() == expected => Self::open_locked(dir, node, lock),
            _ => Err(Error::Invalid(format!(
                "ownership is not the local lock {} of node {node}",
                expected.display()
            ))),
        }
    }

    /// The lock file that makes a process the owner of `node`'s tower in `dir`.
    pub fn lock_path(dir: &Path, node: &NodeId) -> PathBuf {
        dir.join(format!("slashguard-tower-{node}.lock"))
    }

    fn open_locked(dir: &Path, node: NodeId, lock: Arc<OwnerLock>) -> Result<Self> {
        let path = Self::data_path(dir, &node);
        let (slots, loaded) = SlotFile::open_or_create(&path, MAGIC, &[])?;
        let current = if loaded.payload.is_empty() {
            None
        } else {
            Some(
                TowerRecord::decode(&loaded.payload, &node)
                    .map_err(|p| Error::corrupt(path.display().to_string(), p))?,
            )
        };
        Ok(FileTowerStorage {
            node,
            path,
            lock,
            recovery: loaded.recovery,
            inner: Mutex::new(Inner { slots, current }),
        })
    }

    /// Read `node`'s tower from `dir` without taking the owner lock and
    /// without writing (for inspection while the validator runs). The
    /// record is verified like [`load`](TowerStorage::load) does.
    /// `Ok(None)` when no tower was ever stored there.
    ///
    /// Errors: [`Error::Corrupt`] as for [`open`](Self::open);
    /// [`Error::Io`] when the file cannot be read.
    pub fn read_unlocked(dir: impl AsRef<Path>, node: NodeId) -> Result<Option<TowerRecord>> {
        let path = Self::data_path(dir.as_ref(), &node);
        let Some(loaded) = SlotFile::read_snapshot(&path, MAGIC)? else {
            return Ok(None);
        };
        if loaded.payload.is_empty() {
            return Ok(None);
        }
        TowerRecord::decode(&loaded.payload, &node)
            .map(Some)
            .map_err(|p| Error::corrupt(path.display().to_string(), p))
    }

    /// The data file of `node`'s tower in `dir`.
    pub fn data_path(dir: &Path, node: &NodeId) -> PathBuf {
        dir.join(format!("slashguard-tower-{node}.bin"))
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found (a damaged slot from an interrupted write is
    /// reported here and in the log).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}

#[async_trait]
impl TowerStorage for FileTowerStorage {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    async fn load(&self) -> Result<Option<TowerRecord>> {
        Ok(lock(&self.inner).current.clone())
    }

    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
        let mut inner = lock(&self.inner);
        check_store(&self.node, inner.current.as_ref(), record, mode)?;
        // Synchronous on purpose: the vote must wait for this fdatasync
        // anyway, and handing it to another thread only adds latency.
        let sequence = inner.slots.write(&record.encode())?;
        inner.current = Some(record.clone());
        Ok(StoreReceipt {
            fence: self.lock.generation(),
            sequence,
        })
    }
}

impl std::fmt::Debug for FileTowerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTowerStorage")
            .field("node", &self.node)
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
