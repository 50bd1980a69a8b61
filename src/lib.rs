//! # slashguard
//!
//! Keeps Solana validators from double-voting and Tezos bakers from
//! double-signing when they run a hot spare, fail over, or restart.
//!
//! Two rules, enforced so that a caller cannot go around them:
//!
//! - **Write tower before vote.** A [`VoteGuard`](tower::VoteGuard) owns the
//!   node's keypair; the only way to a vote signature is a completed,
//!   durable, fenced [`TowerStorage::store`] of the tower that contains the
//!   vote. Store failure withholds the vote.
//! - **Never sign below the high watermark.** A [`GuardedSigner`] releases a
//!   signature only after [`SignerGuard::authorize`] has checked and
//!   advanced the (level, round) watermark for that key, chain and kind,
//!   durably and atomically.
//!
//! Agave's own tower files can be read, verified, written back byte for
//! byte and converted to and from slashguard's records: see [`agave`].
//!
//! Backends: [`memory`] (tests), [`file`](mod@file) (one host, one
//! `fdatasync` per store), and, behind features, `etcd` (shared between
//! hosts, with fencing) and `usb` (Ledger Tezos Baking app, TezSign).
//!
//! ```
//! use slashguard::file::{FileTowerStorage, FileWatermarks};
//! use slashguard::tower::vote_tx::CastVote;
//! use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
//! use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//!
//! // Solana: the tower is durable before the vote is signed.
//! let identity = NodeKeypair::generate();
//! let storage = FileTowerStorage::create(dir.path(), identity.node_id())?;
//! let node = identity.node_id();
//! let vote_account = slashguard::NodeId([9; 32]);
//! let validator = VoteGuard::new(storage, identity)?.with_vote_account(vote_account);
//! let update = TowerUpdate { vote: VoteRef { slot: 7, hash: [1; 32] }, root: None, tower: vec![0; 2048] };
//! // The vote transaction message must cast exactly the tower's last vote.
//! let message = CastVote::tower_sync_for(update.vote, update.root, vote_account, node)
//!     .to_legacy_message(node, [0; 32])?;
//! validator.vote(update, &message).await?;
//!
//! // Tezos: the watermark is durable before the block is signed.
//! let baker = GuardedSigner::new(FileWatermarks::create(dir.path().join("hwm"))?, Ed25519Signer::generate());
//! // A tz1 attestation as a baker sends it: 0x13, chain id, branch,
//! // tag 21, slot, level, round, block payload hash (80 bytes).
//! let mut attestation = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
//! attestation.extend_from_slice(&[0x5c; 32]);
//! attestation.push(21);
//! attestation.extend_from_slice(&3u16.to_be_bytes());
//! attestation.extend_from_slice(&1000u32.to_be_bytes());
//! attestation.extend_from_slice(&0u32.to_be_bytes());
//! attestation.extend_from_slice(&[0xa1; 32]);
//! baker.sign(&attestation).await?;
//! # Ok::<(), slashguard::Error>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agave;
#[cfg(feature = "alpenglow")]
pub mod alpenglow;
pub mod blocking;
#[cfg(feature = "bls")]
pub mod bls;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failover;
pub mod file;
mod identity;
#[cfg(feature = "keys")]
pub mod keys;
mod limit;
pub mod memory;
pub mod metrics;
#[cfg(feature = "signer")]
pub mod remote_signer;
mod signer;
pub mod tower;
#[cfg(feature = "usb")]
pub mod usb;
pub mod watermark;

pub use error::{BoxError, Error, FormatError, Refusal, Result};
pub use failover::{FailoverPolicy, Ownership};
pub use identity::{NodeId, NodeKeypair};
pub use limit::SignerLimit;
pub use signer::{Ed25519Signer, GuardedSignature, GuardedSigner, Signer};
pub use tower::TowerStorage;
pub use watermark::SignerGuard;
