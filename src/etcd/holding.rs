//! What this instance knows about an ownership it holds: the fence, the
//! lease, until when the lease is certainly alive on the server, and
//! whether the ownership is known to be lost.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use etcd_client::{Compare, CompareOp};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::failover::LossNotifier;
use crate::identity::NodeId;

/// One held ownership, shared by the keep-alive task and every store built
/// on it.
pub(crate) struct Holding {
    pub(crate) node: NodeId,
    pub(crate) owner_key: String,
    pub(crate) fence: i64,
    /// The exact bytes of the claim this instance put (they carry a random
    /// nonce, so no other claim has them, even after a snapshot restore
    /// reused the fence revision).
    pub(crate) claim: Vec<u8>,
    pub(crate) lease: i64,
    pub(crate) instance: String,
    /// The TTL etcd granted.
    pub(crate) ttl: Duration,
    margin: Duration,
    notifier: LossNotifier,
    state: Mutex<State>,
}

struct State {
    lost: Option<String>,
    // Until when the lease is alive on the server for sure, minus the
    // safety margin, on both clocks: the monotonic one is immune to clock
    // steps, the wall clock keeps counting while the host is suspended.
    until_mono: Instant,
    until_wall: SystemTime,
}

impl Holding {
    /// `sent` is when the request that granted or renewed the lease was
    /// sent: the server started the TTL after that, never before.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: NodeId,
        owner_key: String,
        fence: i64,
        claim: Vec<u8>,
        lease: i64,
        instance: String,
        ttl: Duration,
        margin: Duration,
        sent: (Instant, SystemTime),
        notifier: LossNotifier,
    ) -> Self {
        let valid = ttl.saturating_sub(margin);
        notifier.valid_until((sent.0 + valid).into_std(), sent.1 + valid);
        Holding {
            node,
            owner_key,
            fence,
            claim,
            lease,
            instance,
            ttl,
            margin,
            notifier,
            state: Mutex::new(State {
                lost: None,
                until_mono: sent.0 + valid,
                until_wall: sent.1 + valid,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A keep-alive sent at `sent` was answered with `ttl`.
    pub(crate) fn renewed(&self, sent: (Instant, SystemTime), ttl: Duration) {
        let valid = ttl.saturating_sub(self.margin);
        let mut s = self.state();
        if s.lost.is_some() {
            return;
        }
        s.until_mono = s.until_mono.max(sent.0 + valid);
        s.until_wall = s.until_wall.max(sent.1 + valid);
        // The handle sees the same bound, so that a paused process that
        // resumes knows it may not act before this task runs again.
        self.notifier
            .valid_until(s.until_mono.into_std(), s.until_wall);
    }

    /// The compares that prove, inside a transaction, that the owner key is
    /// still this ownership's: its revision is the fence AND its value is
    /// this claim's bytes. The revision alone is not enough: after an etcd
    /// snapshot restore another owner's claim can land at the same
    /// revision.
    pub(crate) fn fence_compares(&self) -> [Compare; 2] {
        [
            Compare::mod_revision(self.owner_key.clone(), CompareOp::Equal, self.fence),
            Compare::value(self.owner_key.clone(), CompareOp::Equal, self.claim.clone()),
        ]
    }

    /// `true` when `kv` (the owner key as read) is still this ownership's.
    pub(crate) fn is_ours(&self, kv: &etcd_client::KeyValue) -> bool {
        kv.mod_revision() == self.fence && kv.value() == self.claim.as_slice()
    }

    /// When the lease stops being certainly alive (monotonic clock).
    pub(crate) fn valid_until(&self) -> Instant {
        self.state().until_mono
    }

    /// Report the loss once; later reports keep the first reason.
    pub(crate) fn lose(&self, reason: impl Into<String>) {
        let reason = reason.into();
        {
            let mut s = self.state();
            if s.lost.is_some() {
                return;
            }
            s.lost = Some(reason.clone());
        }
        tracing::warn!(node = %self.node, instance = %self.instance, fence = self.fence, %reason, "ownership lost");
        self.notifier.lose(reason);
    }

    /// Resolves when the [`Ownership`](crate::Ownership) handle is dropped.
    pub(crate) async fn handle_dropped(&self) {
        self.notifier.closed().await
    }

    /// `true` once the loss is known.
    pub(crate) fn is_lost(&self) -> bool {
        self.state().lost.is_some()
    }

    /// `Ok` while this instance may still act: not known lost, and the
    /// lease certainly alive on the server. Otherwise the loss is recorded
    /// and [`Error::Fenced`] returned.
    pub(crate) fn check(&self) -> Result<()> {
        let expired = {
            let s = self.state();
            if let Some(reason) = &s.lost {
                return Err(self.fenced(reason.clone()));
            }
            Instant::now() >= s.until_mono || SystemTime::now() >= s.until_wall
        };
        if expired {
            self.lose(format!(
                "no lease keep-alive was answered in time: lease {:x} (TTL {:?}) may expire on the server within {:?}",
                self.lease, self.ttl, self.margin
            ));
            let reason = self.state().lost.clone().unwrap_or_default();
            return Err(self.fenced(reason));
        }
        Ok(())
    }

    /// The error every refused operation under this ownership returns.
    pub(crate) fn fenced(&self, reason: String) -> Error {
        Error::Fenced {
            identity: self.node.to_string(),
            reason: format!(
                "instance {} held fence {}: {reason}",
                self.instance, self.fence
            ),
        }
    }
}

impl std::fmt::Debug for Holding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holding")
            .field("node", &self.node)
            .field("fence", &self.fence)
            .field("lease", &format_args!("{:x}", self.lease))
            .field("instance", &self.instance)
            .field("lost", &self.state().lost)
            .finish()
    }
}
