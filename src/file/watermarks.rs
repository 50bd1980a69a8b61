//! `FileWatermarks`: every watermark of a signer in one slot file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::{store_missing, OwnerLock};
use crate::file::slots::{exists_refusal, Loaded, Recovery, SlotFile};
use crate::file::tower::lock;
use crate::watermark::{
    Decision, Mark, SetMode, SignRequest, SignerGuard, Watermark, WatermarkKey, WatermarkTable,
};

const MAGIC: [u8; 4] = *b"sgWF";

/// Watermarks in the file at `path` (all keys, chains and kinds in one
/// table), owned by this process through the OS lock on `<path>.lock`.
/// When the table outgrows the file, it is rewritten through a temporary
/// `<path>.grow` renamed into place.
///
/// An authorization that advances is one write and one `fdatasync`; a
/// repeat of an identical request writes nothing.
pub struct FileWatermarks {
    path: PathBuf,
    recovery: Recovery,
    _lock: Arc<OwnerLock>,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: SlotFile,
    table: WatermarkTable,
}

impl FileWatermarks {
    /// Create a new, empty watermark file at `path`, taking its lock.
    /// Refuses with [`Error::StoreExists`] when a file is already there
    /// (open it instead) and with [`Error::Locked`] when another owner
    /// holds the lock.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        exists_refusal(path)?;
        let lock = OwnerLock::try_acquire(Self::lock_path(path))?;
        Self::create_locked(path, Arc::new(lock))
    }

    /// Open the existing watermark file at `path`, taking its lock.
    /// Fails with [`Error::StoreMissing`] when there is no data file (nothing
    /// is created: see [`create`](Self::create)), with [`Error::Locked`] if
    /// another process (or another open store in this one) holds it, and
    /// with [`Error::Corrupt`] if the file holds no intact table or a slot
    /// of a format version this build does not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::missing_refusal(path)?;
        let lock = OwnerLock::try_acquire(Self::lock_path(path))?;
        Self::open_locked(path, Arc::new(lock))
    }

    /// [`open`](Self::open) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) built with
    /// [`lock_path`](Self::lock_path): the store shares the policy's lock.
    pub fn open_owned(path: impl AsRef<Path>, ownership: &crate::Ownership) -> Result<Self> {
        let path = path.as_ref();
        Self::missing_refusal(path)?;
        Self::open_locked(path, Self::owned_lock(path, ownership)?)
    }

    /// [`create`](Self::create) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) built with
    /// [`lock_path`](Self::lock_path).
    pub fn create_owned(path: impl AsRef<Path>, ownership: &crate::Ownership) -> Result<Self> {
        let path = path.as_ref();
        exists_refusal(path)?;
        Self::create_locked(path, Self::owned_lock(path, ownership)?)
    }

    fn owned_lock(path: &Path, ownership: &crate::Ownership) -> Result<Arc<OwnerLock>> {
        let expected = Self::lock_path(path);
        match ownership.backing::<OwnerLock>() {
            Some(lock) if lock.path() == expected => Ok(lock),
            _ => Err(Error::Invalid(format!(
                "ownership is not the local lock {}",
                expected.display()
            ))),
        }
    }

    fn missing_refusal(path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(store_missing(
                path,
                &Self::lock_path(path),
                "`FileWatermarks::create`, or `--create` on the command line",
            )),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The lock file that makes a process the owner of the watermark file at `path`.
    pub fn lock_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    fn create_locked(path: &Path, lock_file: Arc<OwnerLock>) -> Result<Self> {
        let empty = WatermarkTable::new().encode_with(&Vec::new());
        let opened = SlotFile::create_new(path, MAGIC, &empty)?;
        Self::from_opened(path, lock_file, opened)
    }

    fn open_locked(path: &Path, lock_file: Arc<OwnerLock>) -> Result<Self> {
        let opened = SlotFile::open(path, MAGIC)?;
        Self::from_opened(path, lock_file, opened)
    }

    fn from_opened(
        path: &Path,
        lock_file: Arc<OwnerLock>,
        (slots, loaded): (SlotFile, Loaded),
    ) -> Result<Self> {
        let path = path.to_path_buf();
        let table = WatermarkTable::decode(&loaded.payload)
            .map_err(|p| Error::corrupt(path.display().to_string(), p))?;
        Ok(FileWatermarks {
            path,
            recovery: loaded.recovery,
            _lock: lock_file,
            inner: Mutex::new(Inner { slots, table }),
        })
    }

    /// Read every watermark in the file at `path` without taking its lock
    /// and without writing (for inspection and export while a baker runs).
    ///
    /// Errors: [`Error::StoreMissing`] when there is no file (a read-only
    /// command must not report "no watermark" for a store that is not
    /// there); [`Error::Corrupt`] as for [`open`](Self::open);
    /// [`Error::Io`] when the file cannot be read.
    pub fn read_unlocked(path: impl AsRef<Path>) -> Result<WatermarkTable> {
        let path = path.as_ref();
        match SlotFile::read_snapshot(path, MAGIC)? {
            None => Err(store_missing(
                path,
                &Self::lock_path(path),
                "`FileWatermarks::create`, or `--create` on the command line",
            )),
            Some(loaded) => WatermarkTable::decode(&loaded.payload)
                .map_err(|p| Error::corrupt(path.display().to_string(), p)),
        }
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}

impl Inner {
    fn commit(&mut self, changes: &crate::watermark::table::Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let bytes = self.table.encode_with(changes);
        self.slots.write(&bytes)?;
        self.table.apply(changes);
        Ok(())
    }
}

#[async_trait]
impl SignerGuard for FileWatermarks {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        let mut inner = lock(&self.inner);
        let (decisions, changes) = inner.table.plan_authorize(requests)?;
        inner.commit(&changes)?;
        Ok(decisions)
    }

    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        Ok(lock(&self.inner).table.get(key).copied())
    }

    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        Ok(lock(&self.inner)
            .table
            .iter()
            .map(|(k, w)| (*k, *w))
            .collect())
    }

    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let mut inner = lock(&self.inner);
        let changes = inner.table.plan_set(marks, mode)?;
        inner.commit(&changes)
    }
}

impl std::fmt::Debug for FileWatermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatermarks")
            .field("path", &self.path)
            .finish()
    }
}
