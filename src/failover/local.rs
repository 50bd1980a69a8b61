//! One host, no server: two instances of a validator or baker on the same
//! machine (blue/green upgrade, hot spare) share an identity through an OS
//! file lock. The kernel releases the lock the moment the owner dies,
//! however it dies, so a dead primary is detected with no lease to wait for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::failover::{FailoverPolicy, Gate, LossNotifier, Ownership};
use crate::file::{FileTowerStorage, OwnerLock};
use crate::identity::NodeId;

/// A handover request older than this is ignored: its requester gave up or
/// died without withdrawing it.
const REQUEST_TTL: Duration = Duration::from_secs(30);

/// How [`LocalLockPolicy::acquire`] gets the identity from a live owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// Wait until the owner releases or dies (a standby).
    #[default]
    WaitForRelease,
    /// Ask the owner to step down (Solana's `set-identity`), then wait for
    /// it to release. The owner learns it through [`Ownership::lost`].
    RequestHandover,
}

/// A [`FailoverPolicy`] for instances on one host, built on an exclusive
/// file lock. Pair it with [`FileTowerStorage::open_owned`] so the store and
/// the ownership are the same lock.
///
/// ```
/// use slashguard::failover::{LocalLockPolicy, Takeover};
/// use slashguard::file::FileTowerStorage;
/// use slashguard::{FailoverPolicy, NodeKeypair};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let id = NodeKeypair::generate();
/// let primary = LocalLockPolicy::for_tower(dir.path(), id.node_id(), "primary");
/// let owned = primary.acquire().await?;
/// let _store = FileTowerStorage::create_owned(dir.path(), id.node_id(), &owned)?;
///
/// // A secondary asks for a handover: the primary is told, and steps down.
/// let secondary = LocalLockPolicy::for_tower(dir.path(), id.node_id(), "secondary")
///     .with_takeover(Takeover::RequestHandover);
/// let (taken, reason) = tokio::join!(secondary.acquire(), async {
///     let reason = owned.lost().await;
///     drop(_store);
///     primary.release(owned).await.unwrap();
///     reason
/// });
/// assert!(reason.contains("secondary"));
/// assert!(taken?.fence() > 1);
/// # Ok::<(), slashguard::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct LocalLockPolicy {
    lock_path: PathBuf,
    request_path: PathBuf,
    instance: String,
    takeover: Takeover,
    ready: Option<watch::Receiver<bool>>,
    poll: Duration,
    timeout: Duration,
}

impl LocalLockPolicy {
    /// A policy for the lock at `lock_path`, acting as `instance` (a name
    /// shown to the other instance and in logs).
    pub fn new(lock_path: impl Into<PathBuf>, instance: impl Into<String>) -> Self {
        let lock_path = lock_path.into();
        let mut request = lock_path.clone().into_os_string();
        request.push(".handover");
        LocalLockPolicy {
            lock_path,
            request_path: request.into(),
            instance: instance.into(),
            takeover: Takeover::default(),
            ready: None,
            poll: Duration::from_millis(20),
            timeout: Duration::from_secs(60),
        }
    }

    /// The policy guarding `node`'s tower in `dir` (the lock
    /// [`FileTowerStorage`] uses).
    pub fn for_tower(dir: &Path, node: NodeId, instance: impl Into<String>) -> Self {
        Self::new(FileTowerStorage::lock_path(dir, &node), instance)
    }

    /// How to take the identity from a live owner.
    pub fn with_takeover(mut self, takeover: Takeover) -> Self {
        self.takeover = takeover;
        self
    }

    /// Readiness gate: do nothing until the application reports `true`
    /// (for example: caught up with the cluster). A restarted primary with
    /// this gate never knocks out a healthy secondary while half-started.
    /// If it stays closed for the policy's timeout, `acquire` fails with
    /// [`FailoverRefusal::GateClosed`](crate::failover::FailoverRefusal::GateClosed)
    /// (a [`Gate::readiness`]).
    pub fn with_readiness(mut self, ready: watch::Receiver<bool>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// How often to poll the lock and the handover request (default 20 ms).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How long `acquire` may wait in all (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn write_request(&self) -> Result<()> {
        let tmp = self.request_path.with_extension("handover.tmp");
        let body = format!("{}\n{}\n", now_ms(), self.instance);
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &self.request_path))
            .map_err(|e| Error::io(&self.request_path, e))
    }

    fn withdraw_request(&self) {
        if read_request(&self.request_path).is_some_and(|who| who == self.instance) {
            let _ = std::fs::remove_file(&self.request_path);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The instance named by a fresh handover request, if there is one.
fn read_request(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let at: u64 = lines.next()?.parse().ok()?;
    let who = lines.next()?.to_string();
    (now_ms().saturating_sub(at) <= REQUEST_TTL.as_millis() as u64).then_some(who)
}

async fn watch_requests(path: PathBuf, me: String, poll: Duration, notifier: LossNotifier) {
    loop {
        tokio::select! {
            _ = notifier.closed() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        if let Some(other) = read_request(&path).filter(|who| *who != me) {
            tracing::warn!(instance = %me, requested_by = %other, "handover requested: stop voting and release");
            notifier.lose(format!("handover requested by {other}"));
            return;
        }
    }
}

#[async_trait]
impl FailoverPolicy for LocalLockPolicy {
    async fn acquire(&self) -> Result<Ownership> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        if let Some(ready) = &self.ready {
            Gate::readiness(ready.clone(), self.timeout)
                .wait_until(deadline)
                .await?;
        }
        if self.takeover == Takeover::RequestHandover {
            self.write_request()?;
        }
        let lock = loop {
            // A standby yields to a pending handover request of another
            // instance: the requester is the one the operator (or a ready,
            // restarted primary) chose, and racing it would make the
            // identity flap between three instances.
            let yield_to = (self.takeover == Takeover::WaitForRelease)
                .then(|| read_request(&self.request_path))
                .flatten()
                .filter(|who| *who != self.instance);
            if yield_to.is_none() {
                match OwnerLock::try_acquire(&self.lock_path) {
                    Ok(lock) => break lock,
                    Err(Error::Locked { .. }) => {}
                    Err(e) => {
                        self.withdraw_request();
                        return Err(e);
                    }
                }
            }
            if tokio::time::Instant::now() + self.poll > deadline {
                self.withdraw_request();
                return Err(Error::Locked {
                    path: self.lock_path.clone(),
                });
            }
            tokio::time::sleep(self.poll).await;
        };
        self.withdraw_request();
        let fence = lock.generation();
        tracing::info!(instance = %self.instance, fence, lock = %self.lock_path.display(), "identity acquired");
        let (ownership, notifier) =
            Ownership::new(fence, self.instance.clone(), Some(Arc::new(lock)));
        tokio::spawn(watch_requests(
            self.request_path.clone(),
            self.instance.clone(),
            self.poll,
            notifier,
        ));
        Ok(ownership)
    }

    async fn release(&self, ownership: Ownership) -> Result<()> {
        tracing::info!(instance = %self.instance, fence = ownership.fence(), "identity released");
        drop(ownership);
        Ok(())
    }
}
