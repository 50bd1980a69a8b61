//! Agave's Alpenglow vote history file, `vote_history-<identity>.bin`
//! (feature `alpenglow`): a byte-exact reader and writer pinned to the
//! inner layouts this build knows ([`HistoryLayout`]), and
//! [`AgaveVoteHistoryStorage`], Agave's `VoteHistoryStorage` over any
//! slashguard vote history store.
//!
//! Layers, outermost first: the file in the ledger directory
//! ([`load_vote_history`], [`write_vote_history_durable`]); its signed
//! envelope ([`SavedVoteHistory`]); the history `data`
//! ([`AgaveVoteHistory`], in a [`HistoryLayout`]).
//!
//! ```
//! use slashguard::agave::{AgaveVoteHistory, HistoryLayout, SavedVote, SavedVoteHistory};
//! use slashguard::alpenglow::VoteKind;
//! use slashguard::NodeKeypair;
//!
//! let identity = NodeKeypair::generate();
//! let mut history = AgaveVoteHistory::new(identity.node_id(), 90);
//! history.add_vote(SavedVote { slot: 91, kind: VoteKind::Notarize([7; 32]), shred_version: Some(50093) });
//! let file = SavedVoteHistory::sign(history, HistoryLayout::SignedPayload, &identity)?.encode();
//!
//! let back = SavedVoteHistory::decode(&file, HistoryLayout::SignedPayload, &identity.node_id())?;
//! assert_eq!(back.history().last_voted_slot(), Some(91));
//! assert_eq!(back.encode(), file);
//! // The same bytes in another layout are refused, naming the known ones.
//! assert!(SavedVoteHistory::decode(&file, HistoryLayout::VoteEnum, &identity.node_id()).is_err());
//! # Ok::<(), slashguard::agave::VoteHistoryFileError>(())
//! ```

mod error;
mod files;
mod layout;
mod saved;
mod storage;

pub use error::VoteHistoryFileError;
pub use files::{
    check_successor, load_vote_history, read_vote_history_file, vote_history_file_name,
    vote_history_file_path, write_vote_history_durable,
};
pub use layout::{AgaveVoteHistory, HistoryLayout, SavedVote};
pub use saved::{
    SavedVoteHistory, ENVELOPE_BYTES, FIREDANCER_IMPORT_LIMIT, MAX_VOTE_HISTORY_FILE_BYTES,
};
pub use storage::{AgaveVoteHistoryError, AgaveVoteHistoryStorage};
