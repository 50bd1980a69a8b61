//! The handle an owner holds while it may act for an identity.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

/// Ownership of an identity, as granted by a [`FailoverPolicy`](super::FailoverPolicy).
///
/// Dropping it does not release the identity in a shared store (a lease
/// does that when it expires), but it does drop local locks it carries.
pub struct Ownership {
    fence: u64,
    holder: String,
    lost: watch::Receiver<Option<String>>,
    valid: Arc<Validity>,
    // Keeps whatever backs the ownership alive (a file lock, a lease
    // keep-alive task) for as long as the handle lives.
    keep: Option<Arc<dyn Any + Send + Sync>>,
}

/// The backend's side of an [`Ownership`]: it reports the loss.
#[derive(Debug, Clone)]
pub struct LossNotifier {
    tx: watch::Sender<Option<String>>,
    valid: Arc<Validity>,
    // For the metrics hook: who lost which fence.
    holder: Arc<str>,
    fence: u64,
}

/// Until when an ownership may act for sure, if the backend bounds it in
/// time (a lease): on both clocks, the monotonic one being immune to
/// clock steps and the wall clock counting while the host is suspended.
#[derive(Debug, Default)]
struct Validity(Mutex<Option<(Instant, SystemTime)>>);

impl Validity {
    fn get(&self) -> Option<(Instant, SystemTime)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the ownership counts as lost by time alone, if it does.
    fn expired(&self) -> Option<String> {
        let (mono, wall) = self.get()?;
        (Instant::now() >= mono || SystemTime::now() >= wall)
            .then(|| "no renewal (lease keep-alive) was answered before its time bound: the lease may have expired".to_string())
    }
}

impl LossNotifier {
    /// Bound the ownership in time: from `mono` (monotonic clock) or
    /// `wall` (wall clock), whichever comes first, it counts as lost even
    /// if no loss was reported, so that a process resuming from a pause
    /// sees the loss at once, before its backend task had a chance to
    /// run. A lease-based backend calls this at every renewal with the
    /// instant before which the lease certainly cannot have expired.
    pub fn valid_until(&self, mono: Instant, wall: SystemTime) {
        *self.valid.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((mono, wall));
    }

    /// Report that ownership is lost, and why. Later reports are ignored.
    pub fn lose(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let first = self.tx.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(reason);
                true
            } else {
                false
            }
        });
        if first {
            if let Some(m) = crate::metrics::installed() {
                m.ownership(&self.holder, false, self.fence);
            }
        }
    }

    /// `true` once a loss was reported.
    pub fn is_lost(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Resolves when the [`Ownership`] is dropped, so that a backend's
    /// watcher task can stop.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl Ownership {
    /// A new ownership with fencing token `fence`; `keep` is held until the
    /// ownership is dropped.
    pub fn new(
        fence: u64,
        holder: impl Into<String>,
        keep: Option<Arc<dyn Any + Send + Sync>>,
    ) -> (Ownership, LossNotifier) {
        let (tx, rx) = watch::channel(None);
        let valid = Arc::new(Validity::default());
        let holder: String = holder.into();
        if let Some(m) = crate::metrics::installed() {
            m.ownership(&holder, true, fence);
        }
        let notifier = LossNotifier {
            tx,
            valid: valid.clone(),
            holder: holder.as_str().into(),
            fence,
        };
        (
            Ownership {
                fence,
                holder,
                lost: rx,
                valid,
                keep,
            },
            notifier,
        )
    }

    /// What backs the ownership, if it is of type `T` (for example the
    /// [`OwnerLock`](crate::file::OwnerLock) of a local policy, which a file
    /// store then shares instead of taking a second lock).
    pub fn backing<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.keep.clone().and_then(|k| k.downcast::<T>().ok())
    }

    /// The fencing token: grows with every acquisition of the identity.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// `true` when the backend bounds this ownership in time (a lease in a
    /// shared store such as etcd): it can be lost while the process runs
    /// on, cut off from the store, rather than only when the process dies
    /// (a local lock).
    pub fn is_lease_bound(&self) -> bool {
        self.valid.get().is_some()
    }

    /// Who holds it (an instance name chosen by the application).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The loss reason, if ownership is already known to be lost, or if
    /// the backend's time bound (a lease) has passed.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone().or_else(|| self.valid.expired())
    }

    /// `true` once ownership is known to be lost, or its time bound (a
    /// lease) has passed: check it right before acting.
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when ownership is lost, with the reason. If the backend goes
    /// away without a reason, or its time bound passes, that counts as
    /// lost too.
    pub async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        loop {
            let bound = self.valid.get();
            let expiry = async {
                match bound {
                    // The wall-clock bound is checked when the monotonic
                    // one or a report wakes this up.
                    Some((mono, _)) => tokio::time::sleep_until(mono.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.wait_for(|r| r.is_some()) => {
                    return match r {
                        Ok(r) => r.clone().unwrap_or_default(),
                        Err(_) => "ownership backend stopped".to_string(),
                    };
                }
                _ = expiry => {
                    // Renewed meanwhile: wait for the new bound.
                    if let Some(reason) = self.lost_reason() {
                        return reason;
                    }
                }
            }
        }
    }
}

impl Drop for Ownership {
    // Dropping the handle means this instance no longer acts for the
    // identity (a released lock, a stopped keep-alive): report it.
    fn drop(&mut self) {
        if let Some(m) = crate::metrics::installed() {
            m.ownership(&self.holder, false, self.fence);
        }
    }
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("fence", &self.fence)
            .field("holder", &self.holder)
            .field("lost", &self.lost_reason())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_time_bound_counts_as_a_loss_without_a_report() {
        let (own, notifier) = Ownership::new(1, "a", None);
        assert!(!own.is_lost());
        let bound = Duration::from_millis(80);
        notifier.valid_until(Instant::now() + bound, SystemTime::now() + bound);
        assert!(!own.is_lost());
        let started = Instant::now();
        let reason = tokio::time::timeout(Duration::from_secs(2), own.lost())
            .await
            .expect("lost() resolves at the bound");
        assert!(started.elapsed() >= Duration::from_millis(70));
        assert!(reason.contains("lease"), "{reason}");
        assert!(own.is_lost());

        // A renewal before the bound keeps it; a stopped wall clock bound
        // counts too.
        let (own, notifier) = Ownership::new(2, "b", None);
        notifier.valid_until(Instant::now() + bound, SystemTime::now() + bound);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let longer = Duration::from_secs(60);
        notifier.valid_until(Instant::now() + longer, SystemTime::now() + longer);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!own.is_lost());
        notifier.valid_until(
            Instant::now() + longer,
            SystemTime::now() - Duration::from_secs(1),
        );
        assert!(own.is_lost());

        // A reported reason wins over the bound.
        let (own, notifier) = Ownership::new(3, "c", None);
        notifier.lose("taken over by d");
        notifier.valid_until(Instant::now(), SystemTime::now());
        assert_eq!(own.lost_reason().as_deref(), Some("taken over by d"));
    }
}
