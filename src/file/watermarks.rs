//! `FileWatermarks`: every watermark of a signer in one slot file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::{store_missing, OwnerLock};
use crate::file::slots::{exists_refusal, refuse_open_here, Loaded, Recovery, SlotFile};
use crate::file::worker::{GroupCommit, Worker};
use crate::watermark::table::Changes;
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
/// repeat of an identical request writes nothing. Concurrent
/// authorizations share them (group commit): those that arrive while a
/// write is in flight are decided one after the other, each against the
/// marks of those before it, then written together with one `fdatasync`,
/// and each is answered only after that `fdatasync` returned. If it fails,
/// every authorization of the group fails and no mark of the group is
/// used. Reads ([`watermark`](SignerGuard::watermark),
/// [`precheck`](SignerGuard::precheck)) see only durable marks and do not
/// wait for the disk.
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
    durable: Arc<Mutex<Durable>>,
    worker: Worker<Inner>,
}

/// What is durable: the only state reads see. Changed by the I/O thread
/// after each write returned, and held only for moments (never across
/// I/O), so that reads do not wait for the disk.
struct Durable {
    // Shared with readers, who clone the `Arc` and let go of the lock; the
    // writer updates in place unless a reader holds it at that moment.
    table: Arc<WatermarkTable>,
    // Why writes are refused, when the loaded table may be stale.
    damage: Option<String>,
}

struct Inner {
    slots: SlotFile,
    durable: Arc<Mutex<Durable>>,
    lock: Arc<OwnerLock>,
    path: PathBuf,
    // The changes of the grouped authorizations not yet written, in order.
    staged: Changes,
    // The durable table with `staged` applied, built once a second
    // authorization of a group needs it.
    overlay: Option<WatermarkTable>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only the I/O thread writes, and only after a write returned: a panic
    // elsewhere cannot leave it half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let durable = Arc::new(Mutex::new(Durable {
            table: Arc::new(table),
            damage: loaded.damage,
        }));
        let inner = Inner {
            slots,
            durable: Arc::clone(&durable),
            lock: lock_file,
            path: path.clone(),
            staged: Changes::new(),
            overlay: None,
        };
        Ok(FileWatermarks {
            worker: Worker::new(inner, path.clone()),
            durable,
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
        self.worker.check_in_service()?;
        Ok(lock(&self.durable).damage.is_some())
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

    /// The durable table, unless the store is out of service.
    fn durable_table(&self) -> Result<Arc<WatermarkTable>> {
        self.worker.check_in_service()?;
        Ok(Arc::clone(&lock(&self.durable).table))
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
        match &lock(&self.durable).damage {
            Some(detail) => Err(damaged(&self.path, detail.clone())),
            None => Ok(()),
        }
    }

    /// Decide `requests` against the durable table with the changes staged
    /// before them, and stage their changes (all or none). Nothing is
    /// written here: see [`GroupCommit::flush`].
    fn stage_authorize(&mut self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        self.refuse_if_damaged()?;
        if self.staged.is_empty() {
            // The first of a group (the only one, without concurrency):
            // decided on the durable table as is, nothing copied.
            let durable = lock(&self.durable);
            let (decisions, changes) = durable.table.plan_authorize(requests)?;
            self.staged = changes;
            return Ok(decisions);
        }
        let overlay = match &mut self.overlay {
            Some(overlay) => overlay,
            None => {
                let mut overlay = WatermarkTable::clone(&lock(&self.durable).table);
                overlay.apply(&self.staged);
                self.overlay.insert(overlay)
            }
        };
        let (decisions, changes) = overlay.plan_authorize(requests)?;
        overlay.apply(&changes);
        self.staged.extend(changes);
        Ok(decisions)
    }

    /// Write the durable table with `changes` applied (one write, one
    /// `fdatasync`), then make them visible. Nothing may be staged.
    fn write(&mut self, changes: &Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.lock.check_held()?;
        let bytes = lock(&self.durable).table.encode_with(changes);
        self.slots.write(&bytes)?;
        let mut durable = lock(&self.durable);
        Arc::make_mut(&mut durable.table).apply(changes);
        Ok(())
    }

    /// Lift the damage refusal: allowed only for marks that cover every
    /// key of the loaded table, and always written (even when no mark
    /// changes), which overwrites the damaged slot.
    fn set_while_damaged(
        &mut self,
        detail: String,
        marks: &[(WatermarkKey, Mark)],
        mode: SetMode,
    ) -> Result<()> {
        let table = Arc::clone(&lock(&self.durable).table);
        let named: std::collections::BTreeSet<&WatermarkKey> =
            marks.iter().map(|(k, _)| k).collect();
        let missing: Vec<String> = table
            .iter()
            .filter(|(k, _)| !named.contains(k))
            .map(|(k, _)| k.to_string())
            .collect();
        if !missing.is_empty() {
            let Error::Damaged {
                path,
                detail,
                recover,
            } = damaged(&self.path, detail)
            else {
                unreachable!("damaged() makes Error::Damaged")
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
        let changes = table.plan_set(marks, mode)?;
        drop(table);
        self.lock.check_held()?;
        let bytes = lock(&self.durable).table.encode_with(&changes);
        self.slots.write(&bytes)?;
        let mut durable = lock(&self.durable);
        Arc::make_mut(&mut durable.table).apply(&changes);
        durable.damage = None;
        drop(durable);
        tracing::warn!(path = %self.path.display(), keys = marks.len(), "damaged watermark file recovered by an operator raise of every key");
        Ok(())
    }

    fn set_marks(&mut self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let damage = lock(&self.durable).damage.clone();
        if let Some(detail) = damage {
            return self.set_while_damaged(detail, marks, mode);
        }
        let changes = lock(&self.durable).table.plan_set(marks, mode)?;
        self.write(&changes)
    }
}

impl GroupCommit for Inner {
    fn flush(&mut self) -> Result<()> {
        self.overlay = None;
        let staged = std::mem::take(&mut self.staged);
        self.write(&staged)
    }

    fn discard(&mut self) {
        self.overlay = None;
        self.staged.clear();
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
            .run_grouped(move |inner| inner.stage_authorize(&requests))
            .await
    }

    // The table is this process's own (the lock makes it the only writer)
    // and only rises, so a refusal decided on its durable state is final.
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let table = self.durable_table()?;
        if let Some(detail) = &lock(&self.durable).damage {
            return Err(damaged(&self.path, detail.clone()));
        }
        crate::watermark::decide(table.get(&request.key), request)?;
        Ok(())
    }

    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        Ok(self.durable_table()?.get(key).copied())
    }

    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        Ok(self
            .durable_table()?
            .iter()
            .map(|(k, w)| (*k, *w))
            .collect())
    }

    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let marks = marks.to_vec();
        self.worker
            .run(move |inner| inner.set_marks(&marks, mode))
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
