//! Agave's tower files: a byte-exact reader and writer, signature checks,
//! and conversion to and from slashguard's
//! [`TowerRecord`](crate::tower::TowerRecord). With feature `alpenglow`,
//! also Agave's Alpenglow vote history file and its `VoteHistoryStorage`
//! ([`AgaveVoteHistoryStorage`]).
//!
//! Layers, outermost first (byte by byte in `docs/agave-tower.md`):
//!
//! - a file in a tower directory, `tower-1_9-<node>.bin` or the pre-1.9
//!   `tower-<node>.bin` ([`load_tower`], [`read_tower_file`],
//!   [`write_tower_durable`]);
//! - its signed envelope ([`SavedTower`], [`EnvelopeFormat`]);
//! - the tower `data` ([`AgaveTower`], in a [`TowerLayout`]), holding a
//!   [`VoteState`] and a [`LastVote`].
//!
//! Decoding is strict: every byte string that decodes re-encodes to itself
//! (non-canonical lengths and varints, out-of-range tags, unordered maps,
//! trailing bytes are refused), a malformed input is a typed
//! [`AgaveError`] and never a panic, and no length prefix can make the
//! decoder allocate more than the input's size.
//!
//! ```
//! use slashguard::agave::{AgaveTower, FileKind, LastVote, Lockout, SavedTower, TowerSync};
//! use slashguard::NodeKeypair;
//!
//! let identity = NodeKeypair::generate();
//! let mut tower = AgaveTower::new(identity.node_id());
//! tower.vote_state.root_slot = Some(90);
//! tower.last_vote = LastVote::TowerSync(TowerSync {
//!     lockouts: vec![Lockout { slot: 100, confirmation_count: 1 }],
//!     root: Some(90),
//!     hash: [7; 32],
//!     timestamp: None,
//!     block_id: [8; 32],
//! });
//! let file = SavedTower::sign(tower, &identity)?.encode();
//!
//! let back = SavedTower::decode(&file, FileKind::V1_9, &identity.node_id())?;
//! assert_eq!(back.tower().last_voted_slot(), Some(100));
//! assert_eq!(back.encode(), file);
//! # Ok::<(), slashguard::agave::AgaveError>(())
//! ```

mod compact;
mod convert;
mod envelope;
mod error;
mod files;
mod last_vote;
mod storage;
mod tower;
#[cfg(feature = "alpenglow")]
mod vote_history;
mod vote_state;
mod wire;

pub(crate) use compact::decode_short_u16;
pub(crate) use compact::encode_short_u16;
pub use envelope::{EnvelopeFormat, FileKind, SavedTower};
pub use error::{AgaveError, CompactProblem};
pub use files::{
    load_tower, read_tower_file, tower_file_name, tower_file_path, write_tower_durable,
    MAX_TOWER_FILE_BYTES,
};
pub(crate) use last_vote::{read_vote_body, write_vote_body};
pub use last_vote::{LastVote, TowerSync, Vote, VoteStateUpdate};
pub use storage::{AgaveStorageError, AgaveTowerStorage};
pub use tower::{AgaveTower, F64Bits, TowerLayout, THRESHOLD_DEPTH};
#[cfg(feature = "alpenglow")]
pub use vote_history::{
    check_successor, load_vote_history, read_vote_history_file, vote_history_file_name,
    vote_history_file_path, write_vote_history_durable, AgaveVoteHistory, AgaveVoteHistoryError,
    AgaveVoteHistoryStorage, HistoryLayout, SavedVote, SavedVoteHistory, VoteHistoryFileError,
    ENVELOPE_BYTES, FIREDANCER_IMPORT_LIMIT, MAX_VOTE_HISTORY_FILE_BYTES,
};

pub use vote_state::{
    BlockTimestamp, EpochCredits, Lockout, PriorVoter, PriorVoters, VoteState, PRIOR_VOTERS_LEN,
};
