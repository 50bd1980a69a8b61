//! `FileWatermarks`: every watermark of a signer in one slot file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::{store_missing, OwnerLock};
use crate::file::slots::{exists_refusal, refuse_open_here, Loaded, Recovery, SlotFile};
use crate::file::worker::Worker;
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
///
/// Opened on a damaged file whose loaded table may be older than the last
/// acknowledged one, the store refuses every authorization with
/// [`Error::Damaged`] until one [`set_marks`](SignerGuard::set_marks) raises
/// every key it holds (`slashguard watermark set-level --all`): see
/// `docs/file-format.md`.
///
/// File I/O runs on a thread of the store's own (any tokio runtime will
/// do, with or without timers) with a deadline
/// ([`DEFAULT_DEADLINE`](crate::file::DEFAULT_DEADLINE), see
/// [`with_deadline`](Self::with_deadline)); a call that misses it returns
/// [`Error::Unavailable`] and the store refuses every later call until it
/// is reopened.
pub struct FileWatermarks {
    path: PathBuf,
    recovery: Recovery,
    worker: Worker<Inner>,
}

struct Inner {
    slots: SlotFile,
    table: WatermarkTable,
    lock: Arc<OwnerLock>,
    path: PathBuf,
    // Why writes are refused, when the loaded table may be stale.
    damage: Option<String>,
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
        refuse_open_here(path)?;
        let lock = OwnerLock::try_acquire(Self::lock_path(path))?;
        Self::open_locked(path, Arc::new(lock))
    }

    /// [`open`](Self::open) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) built with
    /// [`lock_path`](Self::lock_path): the store shares the policy's lock.
    pub fn open_owned(path: impl AsRef<Path>, ownership: &crate::Ownership) -> Result<Self> {
        let path = path.as_ref();
        Self::missing_refusal(path)?;
        refuse_open_here(path)?;
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
        let mut slots = slots;
        slots.rewrite_if_needed(&loaded)?;
        let inner = Inner {
            slots,
            table,
            lock: lock_file,
            path: path.clone(),
            damage: loaded.damage,
        };
        Ok(FileWatermarks {
            worker: Worker::new(inner, path.clone()),
            path,
            recovery: loaded.recovery,
        })
    }

    /// Wait at most `deadline` for each write and its `fdatasync` (default
    /// [`DEFAULT_DEADLINE`](crate::file::DEFAULT_DEADLINE)).
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.worker.set_deadline(deadline);
        self
    }

    /// `true` while the store refuses authorizations because the loaded
    /// table may be older than the last acknowledged one (see the type's
    /// docs for the recovery).
    pub async fn is_damaged(&self) -> Result<bool> {
        self.worker.run(|inner| Ok(inner.damage.is_some())).await
    }

    /// The deadline of each write.
    pub fn deadline(&self) -> std::time::Duration {
        self.worker.deadline()
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
            // A table that may be stale is not shown or exported as if it
            // were current: an import elsewhere would carry the rollback.
            Some(Loaded {
                damage: Some(detail),
                ..
            }) => Err(damaged(path, detail)),
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

/// The refusal of a store whose table may be older than the last
/// acknowledged one, with the operator's way out.
fn damaged(path: &Path, detail: String) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        detail,
        recover: format!(
            "raise every key the store holds, in one step, to a level above anything it may have signed (the chain's current level + 10): `slashguard watermark set-level --file {} --chain <CHAIN> --all --level <LEVEL>` (the signer stopped); check with `watermark show` afterwards",
            path.display()
        ),
    }
}

impl Inner {
    fn refuse_if_damaged(&self) -> Result<()> {
        match &self.damage {
            Some(detail) => Err(damaged(&self.path, detail.clone())),
            None => Ok(()),
        }
    }

    fn commit(&mut self, changes: &crate::watermark::table::Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(changes)
    }

    fn write(&mut self, changes: &crate::watermark::table::Changes) -> Result<()> {
        self.lock.check_held()?;
        let bytes = self.table.encode_with(changes);
        self.slots.write(&bytes)?;
        self.table.apply(changes);
        Ok(())
    }

    /// Lift the damage refusal: allowed only for marks that cover every
    /// key of the loaded table, and always written (even when no mark
    /// changes), which overwrites the damaged slot.
    fn set_while_damaged(&mut self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let named: std::collections::BTreeSet<&WatermarkKey> =
            marks.iter().map(|(k, _)| k).collect();
        let missing: Vec<String> = self
            .table
            .iter()
            .filter(|(k, _)| !named.contains(k))
            .map(|(k, _)| k.to_string())
            .collect();
        if !missing.is_empty() {
            let Err(Error::Damaged {
                path,
                detail,
                recover,
            }) = self.refuse_if_damaged()
            else {
                unreachable!("called only while damaged")
            };
            return Err(Error::Damaged {
                path,
                detail: format!(
                    "{detail}; a recovery raise must cover every stored key, and these were not named: {}",
                    missing.join(", ")
                ),
                recover,
            });
        }
        let changes = self.table.plan_set(marks, mode)?;
        self.write(&changes)?;
        tracing::warn!(path = %self.path.display(), keys = marks.len(), "damaged watermark file recovered by an operator raise of every key");
        self.damage = None;
        Ok(())
    }
}

#[async_trait]
impl SignerGuard for FileWatermarks {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        let requests = requests.to_vec();
        self.worker
            .run(move |inner| {
                inner.refuse_if_damaged()?;
                let (decisions, changes) = inner.table.plan_authorize(&requests)?;
                inner.commit(&changes)?;
                Ok(decisions)
            })
            .await
    }

    // The table is this process's own (the lock makes it the only writer),
    // so a refusal decided on it is final.
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let request = *request;
        self.worker
            .run(move |inner| {
                inner.refuse_if_damaged()?;
                crate::watermark::decide(inner.table.get(&request.key), &request)?;
                Ok(())
            })
            .await
    }

    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        let key = *key;
        self.worker
            .run(move |inner| Ok(inner.table.get(&key).copied()))
            .await
    }

    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        self.worker
            .run(|inner| Ok(inner.table.iter().map(|(k, w)| (*k, *w)).collect()))
            .await
    }

    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let marks = marks.to_vec();
        self.worker
            .run(move |inner| {
                if inner.damage.is_some() {
                    return inner.set_while_damaged(&marks, mode);
                }
                let changes = inner.table.plan_set(&marks, mode)?;
                inner.commit(&changes)
            })
            .await
    }
}

impl std::fmt::Debug for FileWatermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatermarks")
            .field("path", &self.path)
            .finish()
    }
}
