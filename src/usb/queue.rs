//! One request at a time per device, in a line with a bound on the wait.
//!
//! A Ledger answers one APDU at a time (the Tezos Baking app drops an APDU
//! that arrives while it works on another, and Speculos sends every reply
//! to its newest client); a TezSign gadget serves one request per
//! interface. [`LedgerSigner`](crate::usb::LedgerSigner) and
//! [`TezSignDevice`](crate::usb::TezSignDevice) already hold a lock around
//! each exchange, so the device never sees two at once, but a lock has no
//! bound: behind a slow or hung device, requests pile up and each waits for
//! every one before it, past any deadline its client has.
//!
//! [`DeviceQueue`] puts the requests of one device in one first-come,
//! first-served line with a *budget*: the most a request may spend on the
//! device, waiting included (a server sets it a little under its request
//! deadline). It keeps an estimate of how long one device operation takes
//! (it rises at once to a slow operation and comes down by a quarter of
//! the difference after each faster one, so a device that just timed out
//! counts as slow until it proves otherwise). A request is refused at once
//! with [`DeviceError::Backlog`] ("device busy") when the requests ahead of
//! it and itself would not fit in the budget at that pace, and after
//! waiting `budget - estimate` if its turn has not come by then. Nothing is
//! sent to the device for a refused request, so a refusal here never leaves
//! the device's state in doubt.
//!
//! The device's turn is held by the operation itself, not by its caller:
//! a caller that gives up (a server's request deadline) does not free the
//! device while the operation still runs; the next request starts only
//! once the device has answered or failed, and the answer of the abandoned
//! one is dropped (it was never released).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::signer::Signer;
use crate::usb::error::DeviceError;
use crate::watermark::{KeyHash, SignRequest};

struct Inner {
    device: String,
    budget: Duration,
    /// One permit: the device's turn.
    turn: Arc<Semaphore>,
    /// Requests waiting or in service.
    queued: AtomicUsize,
    /// How long one operation takes, as last seen.
    estimate: Mutex<Duration>,
}

impl Inner {
    fn estimate(&self) -> Duration {
        *self.estimate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, took: Duration) {
        let mut e = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        *e = next_estimate(*e, took);
    }
}

/// The estimate after an operation that took `took`: at once up to a
/// slower one, down by a quarter of the difference after a faster one.
pub(crate) fn next_estimate(current: Duration, took: Duration) -> Duration {
    if took >= current {
        took
    } else {
        current - (current - took) / 4
    }
}

/// Whether a request with `ahead` requests before it (the one in service
/// included) is refused at once: some are ahead, and they and this one
/// would not be done within `budget` at `estimate` each. A request for an
/// idle device is always tried, whatever the estimate.
pub(crate) fn over_budget(ahead: usize, estimate: Duration, budget: Duration) -> bool {
    let n = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    ahead > 0 && estimate.saturating_mul(n) > budget
}

/// Decrements the line's length when the request leaves it (answered,
/// refused, or abandoned while waiting).
struct Place(Arc<Inner>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The line of requests to one device. Clones share it: give every signer
/// of one device (a TezSign with a consensus and a companion key) the same
/// queue.
#[derive(Clone)]
pub struct DeviceQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceQueue")
            .field("device", &self.inner.device)
            .field("budget", &self.inner.budget)
            .field("queued", &self.queued())
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl DeviceQueue {
    /// A line for `device` (named in errors and logs) in which a request
    /// may spend at most `budget`, waiting included. The estimate starts
    /// at zero (see [`with_estimate`](Self::with_estimate)).
    pub fn new(device: impl Into<String>, budget: Duration) -> Self {
        DeviceQueue {
            inner: Arc::new(Inner {
                device: device.into(),
                budget,
                turn: Arc::new(Semaphore::new(1)),
                queued: AtomicUsize::new(0),
                estimate: Mutex::new(Duration::ZERO),
            }),
        }
    }

    /// Start from `estimate` for one operation (for example the time the
    /// device took to answer when it was connected).
    pub fn with_estimate(self, estimate: Duration) -> Self {
        *self
            .inner
            .estimate
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = estimate;
        self
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.inner.device
    }

    /// The most a request may spend on the device, waiting included.
    pub fn budget(&self) -> Duration {
        self.inner.budget
    }

    /// How long one operation is expected to take now.
    pub fn estimate(&self) -> Duration {
        self.inner.estimate()
    }

    /// Requests waiting or in service.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Run `work` (one device operation) when the device's turn comes, or
    /// refuse with [`DeviceError::Backlog`] without running it (see the
    /// module docs). `work` runs in a task of its own that holds the turn
    /// until it ends, even if this future is dropped.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl Future<Output = Result<R>> + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner.clone();
        let ahead = inner.queued.fetch_add(1, Ordering::SeqCst);
        let place = Place(inner.clone());
        let estimate = inner.estimate();
        let busy = || -> Error {
            DeviceError::Backlog {
                device: inner.device.clone(),
                ahead,
                budget: inner.budget,
            }
            .into()
        };
        if over_budget(ahead, estimate, inner.budget) {
            tracing::warn!(device = %inner.device, ahead, estimate_ms = estimate.as_millis() as u64, budget_ms = inner.budget.as_millis() as u64, "device busy: request refused before it was sent");
            return Err(busy());
        }
        let wait = inner.budget.saturating_sub(estimate);
        let turn = match tokio::time::timeout(wait, inner.turn.clone().acquire_owned()).await {
            Ok(Ok(turn)) => turn,
            // The semaphore is never closed; answered as busy all the same.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(device = %inner.device, ahead, waited_ms = wait.as_millis() as u64, "device busy: its turn did not come in time; nothing was sent");
                return Err(busy());
            }
        };
        let task = {
            let inner = inner.clone();
            tokio::spawn(async move {
                let _place = place;
                let _turn = turn;
                let start = Instant::now();
                let r = work.await;
                inner.observe(start.elapsed());
                r
            })
        };
        task.await.map_err(|e| Error::Signer {
            detail: format!("device task for {} failed: {e}", inner.device),
            source: None,
        })?
    }
}

/// A [`Signer`] whose signatures go through a [`DeviceQueue`]: one at a
/// time on the device, refused as "device busy" rather than kept waiting
/// past the queue's budget. Checks ([`Signer::check`]) do not wait: they
/// involve no device I/O.
pub struct QueuedSigner<S> {
    signer: Arc<S>,
    queue: DeviceQueue,
}

impl<S> std::fmt::Debug for QueuedSigner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueuedSigner({})", self.queue.device())
    }
}

impl<S: Signer + 'static> QueuedSigner<S> {
    /// `signer`, through `queue`.
    pub fn new(signer: S, queue: DeviceQueue) -> Self {
        QueuedSigner {
            signer: Arc::new(signer),
            queue,
        }
    }

    /// The wrapped signer.
    pub fn signer(&self) -> &S {
        &self.signer
    }

    /// The queue.
    pub fn queue(&self) -> &DeviceQueue {
        &self.queue
    }
}

#[async_trait]
impl<S: Signer + 'static> Signer for QueuedSigner<S> {
    fn key_hash(&self) -> KeyHash {
        self.signer.key_hash()
    }

    fn deterministic(&self) -> bool {
        self.signer.deterministic()
    }

    fn has_own_watermark(&self) -> bool {
        self.signer.has_own_watermark()
    }

    fn check(&self, request: &SignRequest, payload: &[u8]) -> Result<()> {
        self.signer.check(request, payload)
    }

    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let signer = self.signer.clone();
        let payload = payload.to_vec();
        self.queue
            .run(async move { signer.sign(&payload).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_estimate_jumps_up_and_creeps_down() {
        assert_eq!(next_estimate(MS * 100, MS * 2000), MS * 2000);
        assert_eq!(next_estimate(MS * 2000, MS * 400), MS * 1600);
        assert_eq!(next_estimate(MS * 1600, MS * 1600), MS * 1600);
        assert_eq!(next_estimate(Duration::ZERO, MS * 5), MS * 5);
    }

    #[test]
    fn only_a_line_that_cannot_fit_is_refused() {
        let budget = MS * 1000;
        // An idle device is always tried, even after a very slow answer.
        assert!(!over_budget(0, MS * 5000, budget));
        assert!(!over_budget(1, MS * 500, budget));
        assert!(over_budget(1, MS * 501, budget));
        assert!(over_budget(3, MS * 300, budget));
        assert!(!over_budget(usize::MAX, Duration::ZERO, budget));
        assert!(over_budget(usize::MAX, MS, budget));
    }

    #[tokio::test]
    async fn one_at_a_time_in_order_and_busy_past_the_budget() {
        let q = DeviceQueue::new("test device", MS * 2000).with_estimate(MS * 600);
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let q = q.clone();
            tokio::spawn(async move {
                q.run(async move {
                    let _ = hold.await;
                    Ok(1)
                })
                .await
            })
        };
        while q.queued() < 1 {
            tokio::task::yield_now().await;
        }
        // One ahead: 2 x 600 ms fits in 2 s, so it waits.
        let second = {
            let q = q.clone();
            tokio::spawn(async move { q.run(async { Ok(2) }).await })
        };
        while q.queued() < 2 {
            tokio::task::yield_now().await;
        }
        // Two ahead: 3 x 600 ms still fits; three ahead: 4 x 600 ms does not.
        let third = {
            let q = q.clone();
            tokio::spawn(async move { q.run(async { Ok(3) }).await })
        };
        while q.queued() < 3 {
            tokio::task::yield_now().await;
        }
        let e = q.run(async { Ok(4) }).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("device busy"), "{e}");
        assert_eq!(q.queued(), 3, "the refused request left the line");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(third.await.unwrap().unwrap(), 3);
        assert_eq!(q.queued(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_free_the_device() {
        let q = DeviceQueue::new("test device", MS * 60_000);
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let abandoned = {
            let q = q.clone();
            tokio::spawn(async move {
                q.run(async move {
                    let _ = hold.await;
                    let _ = done_tx.send(());
                    Ok(())
                })
                .await
            })
        };
        while q.queued() < 1 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        // The operation still runs: the next one waits for it.
        let next = {
            let q = q.clone();
            tokio::spawn(async move { q.run(async { Ok(7) }).await })
        };
        tokio::time::sleep(MS * 50).await;
        assert!(!next.is_finished(), "the device's turn is still taken");
        release.send(()).unwrap();
        done.await.unwrap();
        assert_eq!(next.await.unwrap().unwrap(), 7);
    }

    #[tokio::test]
    async fn a_wait_past_the_budget_is_busy() {
        let q = DeviceQueue::new("test device", MS * 200);
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let q = q.clone();
            tokio::spawn(async move {
                q.run(async move {
                    let _ = hold.await;
                    Ok(())
                })
                .await
            })
        };
        while q.queued() < 1 {
            tokio::task::yield_now().await;
        }
        // The estimate is zero: the line looks short, but the turn does
        // not come within the budget.
        let e = q.run(async { Ok(()) }).await.unwrap_err();
        assert!(e.to_string().contains("device busy"), "{e}");
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
    }
}
