//! Solana Alpenglow (Votor): write-vote-history-before-vote (feature
//! `alpenglow`).
//!
//! Alpenglow votes are BLS-signed messages with no tower. What keeps a
//! validator from a slashable pair of votes is its own vote history: per
//! slot from the finalized root on, what it already cast. The
//! [`AlpenglowGuard`] owns the BLS vote key and releases a signature only
//! after the vote was checked against the history and recorded durably,
//! fenced by ownership of the identity, in the same step.
//!
//! - [`payload`](Vote::parse): the exact signed bytes (11 or 43).
//! - [`rules`](check_slot): the slashable and strict pairs, pure.
//! - [`VoteHistory`]: the record, its encoding and its update step.
//! - [`HistoryStorage`]: where it lives (memory, file, etcd).
//! - [`AlpenglowGuard`]: check, record, then sign.

mod guard;
mod history;
mod payload;
mod rules;
pub(crate) mod storage;

pub use guard::{
    derive_voter_key, pop_prefix, AlpenglowGuard, SignedAlpenglowVote, BLS_DERIVATION_MESSAGE,
};
pub(crate) use history::AgaveCopy;
pub use history::{HistoryUpdate, VoteHistory};
pub use payload::{AlpenglowPayloadError, BlockId, Vote, VoteKind, BLOCK_VOTE_LEN, SLOT_VOTE_LEN};
pub use rules::{
    check_slot, check_vote, slashable_pair, strict_pair, AlpenglowRefusal, Check, ConflictClass,
    RuleMode, SlotVotes, MAX_NOTARIZE_FALLBACKS,
};
pub use storage::{Applied, HistoryStep, HistoryStorage};
