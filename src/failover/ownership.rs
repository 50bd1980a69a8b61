//! The handle an owner holds while it may act for an identity.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::watch;

/// Ownership of an identity, as granted by a [`FailoverPolicy`](super::FailoverPolicy).
///
/// Dropping it does not release the identity in a shared store (a lease
/// does that when it expires), but it does drop local locks it carries.
pub struct Ownership {
    fence: u64,
    holder: String,
    lost: watch::Receiver<Option<String>>,
    // Keeps whatever backs the ownership alive (a file lock, a lease
    // keep-alive task) for as long as the handle lives.
    keep: Option<Arc<dyn Any + Send + Sync>>,
}

/// The backend's side of an [`Ownership`]: it reports the loss.
#[derive(Debug, Clone)]
pub struct LossNotifier(watch::Sender<Option<String>>);

impl LossNotifier {
    /// Report that ownership is lost, and why. Later reports are ignored.
    pub fn lose(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.0.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// `true` once a loss was reported.
    pub fn is_lost(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves when the [`Ownership`] is dropped, so that a backend's
    /// watcher task can stop.
    pub async fn closed(&self) {
        self.0.closed().await
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
        (
            Ownership {
                fence,
                holder: holder.into(),
                lost: rx,
                keep,
            },
            LossNotifier(tx),
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

    /// Who holds it (an instance name chosen by the application).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The loss reason, if ownership is already known to be lost.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// `true` once ownership is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves when ownership is lost, with the reason. If the backend goes
    /// away without a reason, that counts as lost too.
    pub async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        let reason = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "ownership backend stopped".to_string(),
        };
        reason
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
