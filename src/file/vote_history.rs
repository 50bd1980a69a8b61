//! `FileVoteHistory`: one node's Alpenglow vote history in a slot file,
//! fenced by the identity's owner lock (the same lock as its tower file, so
//! one identity has one owner on a host whatever it votes with).
//!
//! It fails closed like the tower file (`FileTowerStorage`): the file is
//! made only by an explicit [`create`](FileVoteHistory::create), a missing
//! file is [`Error::StoreMissing`] (never "no history"), a newest record
//! that may have been lost to damage fences every write until an operator
//! accepts the older one, the lock file is checked before each write, and
//! every file operation runs off the async workers with a deadline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::alpenglow::storage::{check_create, plan};
use crate::alpenglow::{
    Applied, Check, HistoryStep, HistoryStorage, HistoryUpdate, RuleMode, VoteHistory,
};
use crate::error::{Error, Result};
use crate::file::lock::{peek_generation, OwnerLock};
use crate::file::slots::{exists_refusal, refuse_open_here, Loaded, Medium, Recovery, SlotFile};
use crate::file::worker::Worker;
use crate::file::FileTowerStorage;
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

const MAGIC: [u8; 4] = *b"sgAF";

/// A vote history stored in `<dir>/slashguard-alpenglow-<node>.bin`, owned
/// by this process through the identity's OS lock
/// ([`FileTowerStorage::lock_path`]).
///
/// - [`create`](Self::create) makes a new, empty store (no history yet:
///   [`HistoryStorage::create`] then writes the first one, from the
///   operator's evidence); [`open`](Self::open) opens an existing one and
///   refuses with [`Error::StoreMissing`] when the file is absent, so a
///   history moved away or lost is never read as "never voted".
/// - An `apply` that records something is one write and one `fdatasync`
///   into a pre-allocated slot (the record is CRC-checked twice: by the
///   slot and by its own encoding); one that only repeats recorded votes
///   writes nothing.
/// - Opened on a file whose newest record may be lost (both copies of a
///   slot damaged), every write is refused with [`Error::Damaged`] until
///   [`accept_older`](Self::accept_older) (`slashguard vote-history
///   accept-older`).
/// - File I/O runs on the store's own I/O thread with a deadline
///   ([`DEFAULT_DEADLINE`](crate::file::DEFAULT_DEADLINE), see
///   [`with_deadline`](Self::with_deadline)); a call that misses it returns
///   [`Error::Unavailable`] and the store refuses every later call until
///   it is reopened. Any tokio runtime works (no timer is needed).
pub struct FileVoteHistory {
    node: NodeId,
    path: PathBuf,
    fence: u64,
    recovery: Recovery,
    worker: Worker<Inner>,
}

/// The state behind the worker, generic over where slots are written so
/// that a hung disk can be simulated (`Medium` is the seam).
struct Inner<M: Medium = File> {
    slots: SlotFile<M>,
    current: Option<VoteHistory>,
    lock: Arc<OwnerLock>,
    path: PathBuf,
    node: NodeId,
    fence: u64,
    // Why writes are refused, when the loaded history may be stale.
    damage: Option<String>,
}

impl<M: Medium> Inner<M> {
    fn receipt(&self) -> StoreReceipt {
        StoreReceipt {
            fence: self.fence,
            sequence: self.slots.sequence(),
        }
    }

    fn refuse_if_damaged(&self) -> Result<()> {
        match &self.damage {
            Some(detail) => Err(damaged(&self.path, &self.node, detail.clone())),
            None => Ok(()),
        }
    }

    fn create(&mut self, history: &VoteHistory) -> Result<StoreReceipt> {
        self.refuse_if_damaged()?;
        check_create(&self.node, self.current.as_ref(), history)?;
        self.lock.check_held()?;
        self.slots.write(&history.encode())?;
        self.current = Some(history.clone());
        Ok(self.receipt())
    }

    fn apply(&mut self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
        let node = self.node;
        self.apply_with(|current| plan(&node, current, update, mode))
    }

    /// Plan from the current history, then write the result (if any) in
    /// one durable step under the lock.
    fn apply_with(
        &mut self,
        plan: impl FnOnce(Option<&VoteHistory>) -> Result<(Option<VoteHistory>, Vec<Check>)>,
    ) -> Result<Applied> {
        self.refuse_if_damaged()?;
        let (next, checks) = plan(self.current.as_ref())?;
        let Some(next) = next else {
            return Ok(Applied {
                receipt: self.receipt(),
                checks,
                wrote: false,
            });
        };
        self.lock.check_held()?;
        self.slots.write(&next.encode())?;
        // Only after the write is durable: a write left behind by a
        // timed-out call changes nothing nobody was told about.
        self.current = Some(next);
        Ok(Applied {
            receipt: self.receipt(),
            checks,
            wrote: true,
        })
    }

    fn accept_older(&mut self) -> Result<Option<VoteHistory>> {
        if self.damage.is_none() {
            return Ok(self.current.clone());
        }
        self.lock.check_held()?;
        let bytes = self
            .current
            .as_ref()
            .map(VoteHistory::encode)
            .unwrap_or_default();
        self.slots.write(&bytes)?;
        tracing::warn!(path = %self.path.display(), "damaged vote history file: an operator accepted the older history");
        self.damage = None;
        Ok(self.current.clone())
    }
}

/// The refusal of a write to a store whose history may be older than the
/// last acknowledged one, with the operator's way out.
fn damaged(path: &Path, node: &NodeId, detail: String) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        detail,
        recover: format!(
            "make sure this identity cannot vote again in a slot the lost record may hold (stop it, and wait until the cluster has finalized a slot past its last vote, or restore the history from a backup or `slashguard vote-history export`), then accept the loaded history: `slashguard vote-history accept-older --dir {} --node {node}`",
            path.parent().unwrap_or(Path::new(".")).display(),
        ),
    }
}

/// The refusal for a history file that is absent where a store is opened
/// or read. The lock file is shared with the identity's tower, so its
/// generation says that the directory served this identity, not that it
/// held a history: the hint says both.
fn history_missing(dir: &Path, node: &NodeId) -> Error {
    let path = FileVoteHistory::data_path(dir, node);
    let lock = FileTowerStorage::lock_path(dir, node);
    let create = "`FileVoteHistory::create`, or `slashguard vote-history import --create`";
    let hint = match peek_generation(&lock) {
        Some(g) if g > 0 => format!(
            "the identity's lock file {} shows this directory was opened {g} time(s) for this identity (tower or vote history): if its vote history was kept here, the file was moved away or lost: restore it (or import an export); a new, empty history ({create}) forgets every vote and needs evidence that the identity cannot vote twice (a finalized slot past its last vote)",
            lock.display()
        ),
        _ => format!(
            "no vote history was ever created here; check --dir and the identity, or create one explicitly ({create})"
        ),
    };
    Error::StoreMissing { path, hint }
}

fn missing_refusal(dir: &Path, node: &NodeId) -> Result<()> {
    let path = FileVoteHistory::data_path(dir, node);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(history_missing(dir, node)),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The history in a slot's payload: empty is a store created with no
/// history yet.
fn decode(path: &Path, payload: &[u8], node: &NodeId) -> Result<Option<VoteHistory>> {
    if payload.is_empty() {
        return Ok(None);
    }
    VoteHistory::decode(payload, node)
        .map(Some)
        .map_err(|p| Error::corrupt(path.display().to_string(), p))
}

impl FileVoteHistory {
    /// Create a new store for `node` in `dir` with no history yet, taking
    /// the identity's owner lock. [`Error::StoreExists`] when a history
    /// file is already there (open it instead), [`Error::Locked`] when
    /// another owner holds the lock.
    pub fn create(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        exists_refusal(&Self::data_path(dir, &node))?;
        let lock = OwnerLock::try_acquire(FileTowerStorage::lock_path(dir, &node))?;
        Self::create_locked(dir, node, Arc::new(lock))
    }

    /// Open `node`'s existing store in `dir`, taking the identity's owner
    /// lock. [`Error::StoreMissing`] when there is no history file
    /// (nothing is created: see [`create`](Self::create));
    /// [`Error::Locked`] if another process holds the lock;
    /// [`Error::AlreadyOpen`] if this process has it open;
    /// [`Error::Corrupt`] if the file holds no intact record, another
    /// node's, or a format version this build does not read.
    pub fn open(dir: impl AsRef<Path>, node: NodeId) -> Result<Self> {
        let dir = dir.as_ref();
        missing_refusal(dir, &node)?;
        refuse_open_here(&Self::data_path(dir, &node))?;
        let lock = OwnerLock::try_acquire(FileTowerStorage::lock_path(dir, &node))?;
        Self::open_locked(dir, node, Arc::new(lock))
    }

    /// [`open`](Self::open) under an ownership granted by a
    /// [`LocalLockPolicy`](crate::failover::LocalLockPolicy) for the same
    /// directory and node (`LocalLockPolicy::for_tower`): the store shares
    /// the policy's lock.
    pub fn open_owned(
        dir: impl AsRef<Path>,
        node: NodeId,
        ownership: &crate::Ownership,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        missing_refusal(dir, &node)?;
        refuse_open_here(&Self::data_path(dir, &node))?;
        let lock = FileTowerStorage::owned_lock(dir, &node, ownership)?;
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
        let lock = FileTowerStorage::owned_lock(dir, &node, ownership)?;
        Self::create_locked(dir, node, lock)
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
        (mut slots, loaded): (SlotFile, Loaded),
    ) -> Result<Self> {
        let current = decode(&path, &loaded.payload, &node)?;
        slots.rewrite_if_needed(&loaded)?;
        let fence = lock.generation();
        let inner = Inner {
            slots,
            current,
            lock,
            path: path.clone(),
            node,
            fence,
            damage: loaded.damage,
        };
        Ok(FileVoteHistory {
            node,
            fence,
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

    /// `true` while the store refuses writes because the loaded history
    /// may be older than the last acknowledged one (see
    /// [`accept_older`](Self::accept_older)).
    pub async fn is_damaged(&self) -> Result<bool> {
        self.worker.run(|inner| Ok(inner.damage.is_some())).await
    }

    /// Operator recovery of a damaged store: accept the history that was
    /// loaded (possibly older than the last one acknowledged) as current,
    /// rewrite it durably over the damaged slot, and accept writes again.
    /// Returns that history. Call it only once this identity cannot vote
    /// again in a slot the lost record may hold. On a store that is not
    /// damaged it changes nothing.
    pub async fn accept_older(&self) -> Result<Option<VoteHistory>> {
        self.worker.run(|inner| inner.accept_older()).await
    }

    /// Read `node`'s history from `dir` without the lock and without
    /// writing (inspection). `Ok(None)` when the store holds no history
    /// yet. [`Error::StoreMissing`] when there is no history file;
    /// [`Error::Damaged`] when the newest record may be lost (a possibly
    /// stale history is never shown or exported as current).
    pub fn read_unlocked(dir: impl AsRef<Path>, node: NodeId) -> Result<Option<VoteHistory>> {
        let dir = dir.as_ref();
        let path = Self::data_path(dir, &node);
        let Some(loaded) = SlotFile::read_snapshot(&path, MAGIC)? else {
            return Err(history_missing(dir, &node));
        };
        if let Some(detail) = loaded.damage {
            return Err(damaged(&path, &node, detail));
        }
        decode(&path, &loaded.payload, &node)
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

    /// The fence (the owner lock's generation) this store writes under.
    pub fn fence(&self) -> u64 {
        self.fence
    }
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
        self.worker.run(|inner| Ok(inner.current.clone())).await
    }

    async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt> {
        let history = history.clone();
        self.worker.run(move |inner| inner.create(&history)).await
    }

    async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
        let update = update.clone();
        self.worker
            .run(move |inner| inner.apply(&update, mode))
            .await
    }

    async fn apply_step(&self, step: &HistoryStep) -> Result<Applied> {
        let step = step.clone();
        self.worker
            .run(move |inner| inner.apply_with(|current| step.plan(current)))
            .await
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

/// A hung `fdatasync` under a vote, at the `Medium` seam (a real disk
/// cannot be made to hang on demand): the call returns `Unavailable`
/// within the deadline, the runtime keeps running, and the store refuses
/// every later call, even after the stuck write completes.
#[cfg(test)]
mod hung_disk {
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::alpenglow::{Vote, VoteKind};

    #[derive(Clone)]
    struct HungDisk(Arc<(Mutex<bool>, Condvar)>);

    impl HungDisk {
        fn release(&self) {
            let (released, cv) = &*self.0;
            *released.lock().unwrap() = true;
            cv.notify_all();
        }
    }

    impl Medium for HungDisk {
        fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            let (released, cv) = &*self.0;
            let mut r = released.lock().unwrap();
            while !*r {
                r = cv.wait(r).unwrap();
            }
            Ok(())
        }
        fn grow(_: &mut SlotFile<Self>, _: &[u8], _: u64) -> Result<u64> {
            Err(Error::Invalid("no growth on the simulated disk".into()))
        }
    }

    fn node() -> NodeId {
        NodeId([7; 32])
    }

    #[test]
    fn a_hung_sync_under_a_vote_is_unavailable_and_the_store_stays_out_of_service() {
        let dir = tempfile::tempdir().unwrap();
        // A real store with a history, whose image the hung disk starts from.
        let history = VoteHistory::new(node(), 5, 10);
        let lock = Arc::new(
            OwnerLock::try_acquire(FileTowerStorage::lock_path(dir.path(), &node())).unwrap(),
        );
        let path = FileVoteHistory::data_path(dir.path(), &node());
        drop(SlotFile::create_new(&path, MAGIC, &history.encode()).unwrap());
        let image = std::fs::read(&path).unwrap();

        let disk = HungDisk(Arc::new((Mutex::new(false), Condvar::new())));
        let (slots, loaded) = SlotFile::from_image(disk.clone(), &image, &path, MAGIC).unwrap();
        let inner = Inner {
            slots,
            current: decode(&path, &loaded.payload, &node()).unwrap(),
            lock,
            path: path.clone(),
            node: node(),
            fence: 1,
            damage: None,
        };
        let mut worker = Worker::new(inner, path);
        let deadline = Duration::from_millis(300);
        worker.set_deadline(deadline);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let vote = |slot| Vote {
            slot,
            kind: VoteKind::Skip,
            shred_version: 5,
        };
        rt.block_on(async {
            let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let t = Arc::clone(&ticks);
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            let update = HistoryUpdate {
                votes: vec![vote(11)],
                finalized: None,
            };
            let began = Instant::now();
            let got = worker
                .run(move |i| i.apply(&update, RuleMode::Strict))
                .await;
            assert!(matches!(got, Err(Error::Unavailable { .. })), "{got:?}");
            // Bounded: no tight upper bound on a busy machine, only "it
            // came back" and "not before the deadline".
            assert!(began.elapsed() >= deadline);
            assert!(
                ticks.load(std::sync::atomic::Ordering::Relaxed) >= 5,
                "the runtime was blocked during the hung sync"
            );
            // The stuck write completes; the store still refuses, and the
            // vote it carried was never acknowledged.
            disk.release();
            let later = HistoryUpdate {
                votes: vec![vote(12)],
                finalized: None,
            };
            let again = worker.run(move |i| i.apply(&later, RuleMode::Strict)).await;
            assert!(matches!(again, Err(Error::Unavailable { .. })), "{again:?}");
            let load = worker.run(|i| Ok(i.current.clone())).await;
            assert!(matches!(load, Err(Error::Unavailable { .. })), "{load:?}");
            ticker.abort();
        });
    }
}
