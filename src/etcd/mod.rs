//! etcd backends (feature `etcd`): a tower and watermarks shared between
//! hosts, with identity ownership fenced by etcd revisions.
//!
//! - [`EtcdConfig`] / [`EtcdClient`]: endpoints, mutual TLS, deadlines.
//!   Every request returns within the deadline; an unreachable etcd or one
//!   without quorum is [`Error::Unavailable`](crate::Error::Unavailable),
//!   and the same client works again once etcd is back.
//! - [`EtcdIdentity`]: who owns a node identity. [`take_over`](EtcdIdentity::take_over)
//!   commits a claim in one transaction and returns an
//!   [`Ownership`](crate::Ownership) whose fence is that revision; a
//!   lease kept alive in the background makes a dead owner's claim expire,
//!   so a standby can [`acquire_when_free`](EtcdIdentity::acquire_when_free).
//! - [`EtcdTowerStorage`]: the tower, stored in ONE transaction that checks
//!   the fence.
//! - [`EtcdWatermarks`]: watermarks advanced by compare-and-set, shared by
//!   any number of signers.
//! - [`EtcdFailover`]: the [`FailoverPolicy`](crate::FailoverPolicy).
//!
//! The key layout and every transaction are described in
//! `docs/etcd-layout.md`.

mod claim;
mod client;
mod config;
mod fenced;
mod holding;
mod keepalive;
mod keys;
mod ownership;
mod policy;
mod tower;
#[cfg(feature = "alpenglow")]
mod vote_history;
mod watermarks;

pub use claim::MAX_INSTANCE_LEN;
pub use client::EtcdClient;
pub use config::{
    EtcdConfig, EtcdConfigBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL,
    DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_REQUEST_DEADLINE,
};
pub use keys::EtcdKeys;
pub use ownership::{EtcdIdentity, OwnerStatus, OwnershipOptions, DEFAULT_LEASE_TTL};
pub use policy::{AcquireMode, EtcdFailover};
pub use tower::EtcdTowerStorage;
#[cfg(feature = "alpenglow")]
pub use vote_history::EtcdVoteHistory;
pub use watermarks::{EtcdWatermarks, MAX_BATCH};
