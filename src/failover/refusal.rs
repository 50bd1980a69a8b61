//! Refusals of failover steps: the seed's "common mistakes", as errors.

use std::time::Duration;

/// A failover step that is not safe (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverRefusal {
    /// A backup tried to sign before it was activated (primary confirmed
    /// down and watermarks raised).
    #[error("backup not activated: confirm the primary is down and raise the watermarks first")]
    NotActivated,
    /// The primary may still be able to sign.
    #[error("primary may still be active: {detail}")]
    PrimaryStillActive {
        /// What shows it.
        detail: String,
    },
    /// The operator asserted the primary is down, but not enough blocks have
    /// passed since its last known signature for queued signatures to land.
    #[error("wait {remaining:?} more ({blocks} blocks after the primary's last signature)")]
    WaitLonger {
        /// Time left to wait.
        remaining: Duration,
        /// Blocks the rule asks to wait.
        blocks: u32,
    },
    /// The backup signer was able to sign before activation (the seed's
    /// "pre-authorized backup").
    #[error("backup signer was authorized before activation: {detail}")]
    PreAuthorized {
        /// Which signer and how it was authorized.
        detail: String,
    },
    /// The backup's evidence is a lease-bound ownership (etcd), but nothing
    /// declares how the primary is stopped from signing once it lost that
    /// ownership: a primary cut off from etcd only, on watermarks of its
    /// own, would keep signing next to the backup.
    #[error("the primary may keep signing unfenced: {detail}")]
    PrimaryUnfenced {
        /// What is missing and what the operator must do.
        detail: String,
    },
    /// An application gate (readiness of a restarting instance, Solana's
    /// restart window) did not open, so the identity was not taken.
    #[error("{gate} gate did not open: {detail}")]
    GateClosed {
        /// Which gate.
        gate: String,
        /// How long it stayed closed, or why it can no longer open.
        detail: String,
    },
}
