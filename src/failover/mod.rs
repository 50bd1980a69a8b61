//! Failover: who may act for an identity right now, and how an instance
//! learns that it no longer may.

mod backup;
mod gate;
mod local;
mod ownership;
mod reclaim;
mod refusal;

pub use backup::{
    ActivationReport, BackupDevice, BackupGuard, PrimaryDown, PrimaryFencing, DEFAULT_MARGIN,
};
pub use gate::{Gate, Gated};
pub use local::{LocalLockPolicy, Takeover};
pub use ownership::{LossNotifier, Ownership};
pub use reclaim::ReclaimMode;
pub use refusal::FailoverRefusal;

use async_trait::async_trait;

use crate::error::Result;

/// Decides when this instance may act for an identity, and takes it.
///
/// Contract for every implementation:
///
/// - [`acquire`](FailoverPolicy::acquire) returns only once this instance
///   owns the identity, with a fencing token larger than every earlier
///   owner's; it is bounded by the policy's own timeout.
/// - From the moment a newer owner acquires, stores fenced by an older
///   [`Ownership`] fail; the older holder's [`Ownership::lost`] resolves as
///   soon as the policy can tell (and it must stop voting or signing then).
/// - Safety never depends on the loss signal arriving in time: the storage
///   fence refuses a stale owner's write on its own.
#[async_trait]
pub trait FailoverPolicy: Send + Sync {
    /// Wait until this instance may own the identity, then take it.
    async fn acquire(&self) -> Result<Ownership>;

    /// Give the identity up (clean shutdown or step-down), so that a standby
    /// can take it without waiting for a lease to expire.
    async fn release(&self, ownership: Ownership) -> Result<()>;
}
