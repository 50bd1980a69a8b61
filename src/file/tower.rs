//! `FileTowerStorage`: one node's tower in a slot file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::{store_missing, OwnerLock};
use crate::file::slots::{exists_refusal, refuse_open_here, Loaded, Recovery, SlotFile};
use crate::file::worker::Worker;
use crate::identity::NodeId;
use crate::tower::{check_store, StoreMode, StoreReceipt, TowerRecord, TowerStorage};

const MAGIC: [u8; 4] = *b"sgTF";

/// A tower stored in `<dir>/slashguard-tower-<node>.bin`, owned by this
/// process through the OS lock on `<dir>/slashguard-tower-<node>.lock`.
///
/// A store is one write and one `fdatasync` into a pre-allocated slot; see
/// the [module docs](crate::file).
///
/// Opened on a damaged file whose loaded tower may be older than the last
/// acknowledged one, the store refuses every store with [`Error::Damaged`]
/// until an operator calls [`accept_older`](Self::accept_older)
/// (`slashguard tower accept-older`): see `docs/file-format.md`.
///
/// File I/O runs on a thread of the store's own (any tokio runtime will
/// do, with or without timers) with a deadline
/// ([`DEFAULT_DEADLINE`](crate::file::DEFAULT_DEADLINE), see
/// [`with_deadline`](Self::with_deadline)); a store that misses it returns
/// [`Error::Unavailable`] and the storage refuses every later call until it
/// is reopened.
pub struct FileTowerStorage {
    node: NodeId,
    path: PathBuf,
    fence: u64,
    recovery: Recovery,
    worker: Worker<Inner>,
}

struct Inner {
    slots: SlotFile,
    current: Option<TowerRecord>,
    lock: Arc<OwnerLock>,
    path: PathBuf,
    node: NodeId,
    // Why stores are refused, when the loaded tower may be stale.
    damage: Option<String>,
}

impl Inner {
    fn refuse_if_damaged(&self) -> Result<()> {
        match &self.damage {
            Some(detail) => Err(damaged(&self.path, &self.node, detail.clone())),
            None => Ok(()),
        }
    }
}

/// The refusal of a store whose tower may be older than the last
/// acknowledged one, with the operator's way out.
fn damaged(path: &Path, node: &NodeId, detail: String) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        detail,
        recover: format!(
            "make sure this node cannot vote on a slot it may already have voted on from the lost tower (stop it, and wait until its lockouts have expired or restore its tower from a backup or the cluster), then accept the loaded tower: `slashguard tower accept-older --dir {} --node {node}`",
            path.parent().unwrap_or(Path::new(".")).display(),
        ),
    }
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
        refuse_open_here(&Self::data_path(dir, &node))?;
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
        refuse_open_here(&Self::data_path(dir, &node))?;
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

    /// The local lock behind `ownership`, if it is this node's lock in
    /// `dir` (shared with the vote history, which lives under the same lock).
    pub(super) fn owned_lock(
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
        let mut slots = slots;
        slots.rewrite_if_needed(&loaded)?;
        let inner = Inner {
            slots,
            current,
            lock: Arc::clone(&lock),
            path: path.clone(),
            node,
            damage: loaded.damage,
        };
        Ok(FileTowerStorage {
            node,
            fence: lock.generation(),
            worker: Worker::new(inner, path.clone()),
            path,
            recovery: loaded.recovery,
        })
    }

    /// Wait at most `deadline` for each store and its `fdatasync` (default
    /// [`DEFAULT_DEADLINE`](crate::file::DEFAULT_DEADLINE)).
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.worker.set_deadline(deadline);
        self
    }

    /// `true` while the store refuses stores because the loaded tower may
    /// be older than the last acknowledged one (see
    /// [`accept_older`](Self::accept_older)).
    pub async fn is_damaged(&self) -> Result<bool> {
        self.worker.run(|inner| Ok(inner.damage.is_some())).await
    }

    /// Operator recovery of a damaged store: accept the tower that was
    /// loaded (possibly older than the last one acknowledged) as current,
    /// rewrite it durably over the damaged slot, and accept stores again.
    /// Returns that tower. Call it only once the node cannot vote twice on
    /// the older tower (its lockouts expired, or its tower was restored).
    /// On a store that is not damaged, it changes nothing.
    pub async fn accept_older(&self) -> Result<Option<TowerRecord>> {
        self.worker
            .run(|inner| {
                if inner.damage.is_none() {
                    return Ok(inner.current.clone());
                }
                inner.lock.check_held()?;
                let bytes = inner
                    .current
                    .as_ref()
                    .map(TowerRecord::encode)
                    .unwrap_or_default();
                inner.slots.write(&bytes)?;
                tracing::warn!(path = %inner.path.display(), "damaged tower file: an operator accepted the older tower");
                inner.damage = None;
                Ok(inner.current.clone())
            })
            .await
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
        // A tower that may be stale is not shown or exported as current: a
        // validator started on it could vote twice.
        if let Some(detail) = loaded.damage {
            return Err(damaged(&path, &node, detail));
        }
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
        self.worker.run(|inner| Ok(inner.current.clone())).await
    }

    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
        let record = record.clone();
        let fence = self.fence;
        self.worker
            .run(move |inner| {
                inner.refuse_if_damaged()?;
                check_store(&inner.node, inner.current.as_ref(), &record, mode)?;
                inner.lock.check_held()?;
                let sequence = inner.slots.write(&record.encode())?;
                inner.current = Some(record);
                Ok(StoreReceipt { fence, sequence })
            })
            .await
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
