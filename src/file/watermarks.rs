//! `FileWatermarks`: every watermark of a signer in one slot file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::file::lock::OwnerLock;
use crate::file::slots::{Recovery, SlotFile};
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
    _lock: OwnerLock,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: SlotFile,
    table: WatermarkTable,
}

impl FileWatermarks {
    /// Open (or create) the watermark file at `path`, taking its lock.
    /// Fails with [`Error::Locked`] if another process (or another open
    /// store in this one) holds it, and with [`Error::Corrupt`] if the file
    /// holds no intact table or a slot of a format version this build does
    /// not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut lock_name = path.clone().into_os_string();
        lock_name.push(".lock");
        let lock_file = OwnerLock::try_acquire(PathBuf::from(lock_name))?;
        let empty = WatermarkTable::new().encode_with(&Vec::new());
        let (slots, loaded) = SlotFile::open_or_create(&path, MAGIC, &empty)?;
        let table = WatermarkTable::decode(&loaded.payload)
            .map_err(|p| Error::corrupt(path.display().to_string(), p))?;
        Ok(FileWatermarks {
            path,
            recovery: loaded.recovery,
            _lock: lock_file,
            inner: Mutex::new(Inner { slots, table }),
        })
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
