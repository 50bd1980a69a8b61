//! Solana vote towers: the signed record slashguard stores, the rules a
//! store must obey, the storage trait, and the guard that turns a durable
//! store into a signed vote.

mod record;
mod rules;
mod storage;
mod vote_binding;
mod vote_guard;
pub mod vote_tx;

pub(crate) use record::Reader;
pub use record::{message_hash, TowerBytesKind, TowerRecord, VoteRef, MAX_TOWER_BYTES};
pub(crate) use rules::check_order;
pub use rules::{check_after_released, check_store, ReleasedVote, StoreMode, TowerRefusal};
pub use storage::{StoreReceipt, TowerStorage};
pub use vote_binding::{check_message, check_vote, VoteBinding, VoteRefusal};
pub use vote_guard::{SignedVote, TowerUpdate, VoteGuard};
