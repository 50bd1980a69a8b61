//! `FileTowerStorage`: one node's tower in a slot file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::{store_missing, OwnerLock};
use crate::file::slots::{exists_refusal, Loaded, Recovery, SlotFile};
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
    /// Create a new, empty tower file for `node` in `dir`, taking the owner
    /// lock. Refuses with [`Error::StoreExists`] when a tower file is
    /// already there (open it instead) and with [`Error::Locked`] when
    /// another owner holds the lock.
    pub fn create(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        exists_refusal(&Self::data_path(dir, &node))?;
        let lock = OwnerLock::try_acquire(Self::lock_path(dir, &node))?;
        Self::create_locked(dir, node, Arc::new(lock))
    }

    /// Open the existing tower file of `node` in `dir`, taking the owner
    /// lock. Fails with [`Error::StoreMissing`] when there is no tower file
    /// (nothing is created: see [`create`](Self::create)), with
    /// [`Error::Locked`] if another process (or another open store in this
    /// one) holds it, and with [`Error::Corrupt`] if the file holds no
    /// intact record, a record of another node, or a slot of a format
    /// version this build does not read.
    pub fn open(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        Self::missing_refusal(dir, &node)?;
        let lock = OwnerLock::try_acquire(Self::lock_path(dir, &node))?;
        Self::open_locked(dir, node, Arc::new(lock))
    }

    /// [`open`](Self::open) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) for the same
    /// directory and node: the store shares the policy's lock, so it stays
    /// locked for as long as either the store or the ownership lives.
    pub fn open_owned(
        dir: impl AsRef<Path>,
        node: NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        Self::missing_refusal(dir, &node)?;
        let lock = Self::owned_lock(dir, &node, ownership)?;
        Self::open_locked(dir, node, lock)
    }

    /// [`create`](Self::create) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) for the same
    /// directory and node.
    pub fn create_owned(
        dir: impl AsRef<Path>,
        node: NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        exists_refusal(&Self::data_path(dir, &node))?;
        let lock = Self::owned_lock(dir, &node, ownership)?;
        Self::create_locked(dir, node, lock)
    }

    fn owned_lock(
        dir: &Path,
        node: &NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Arc<OwnerLock>> {
        let expected = Self::lock_path(dir, node);
        match ownership.backing::<OwnerLock>() {
            Some(lock) if lock.path() == expected => Ok(lock),
            _ => Err(Error::Invalid(format!(
                "ownership is not the local lock {} of node {node}",
                expected.display()
            ))),
        }
    }

    fn missing_refusal(dir: &Path, node: &NodeId) -> Result<()> {
        let path = Self::data_path(dir, node);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(store_missing(
                &path,
                &Self::lock_path(dir, node),
                "`FileTowerStorage::create`, or `tower import --create` on the command line",
            )),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// The lock file that makes a process the owner of `node`'s tower in `dir`.
    pub fn lock_path(dir: &Path, node: &NodeId) -> PathBuf {
        dir.join(format!("slashguard-tower-{node}.lock"))
    }

    fn create_locked(dir: &Path, node: NodeId, lock: Arc<OwnerLock>) -> Result<Self> {
        let path = Self::data_path(dir, &node);
        let opened = SlotFile::create_new(&path, MAGIC, &[])?;
        Self::from_opened(path, node, lock, opened)
    }

    fn open_locked(dir: &Path, node: NodeId, lock: Arc<OwnerLock>) -> Result<Self> {
        let path = Self::data_path(dir, &node);
        let opened = SlotFile::open(&path, MAGIC)?;
        Self::from_opened(path, node, lock, opened)
    }

    fn from_opened(
        path: PathBuf,
        node: NodeId,
        lock: Arc<OwnerLock>,
        (slots, loaded): (SlotFile, Loaded),
    ) -> Result<Self> {
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
    /// `Ok(None)` when the store holds no tower yet.
    ///
    /// Errors: [`Error::StoreMissing`] when there is no tower file;
    /// [`Error::Corrupt`] as for [`open`](Self::open);
    /// [`Error::Io`] when the file cannot be read.
    pub fn read_unlocked(dir: impl AsRef<Path>, node: NodeId) -> Result<Option<TowerRecord>> {
        let dir = dir.as_ref();
        let path = Self::data_path(dir, &node);
        let Some(loaded) = SlotFile::read_snapshot(&path, MAGIC)? else {
            return Err(store_missing(
                &path,
                &Self::lock_path(dir, &node),
                "`FileTowerStorage::create`, or `tower import --create` on the command line",
            ));
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
