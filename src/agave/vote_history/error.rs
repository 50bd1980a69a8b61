//! Why an Agave vote history file could not be read, verified or written.

use crate::agave::vote_history::layout::HistoryLayout;
use crate::error::{Error, FormatError};
use crate::identity::NodeId;

/// Why bytes are refused as Agave's `vote_history-<identity>.bin` (the
/// bincode of `SavedVoteHistoryVersions`). Offsets count from the start of
/// the file. Never a panic; no length prefix makes the decoder allocate
/// more than the input's size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteHistoryFileError {
    /// No bytes at all.
    #[error("empty vote history file")]
    Empty,

    /// Larger than any vote history this build stores.
    #[error("vote history file of {len} bytes, above the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The envelope (`u32` variant, 64-byte signature, `u64` length,
    /// data) is malformed.
    #[error("vote history envelope: {detail}")]
    Envelope {
        /// What is wrong.
        detail: String,
    },

    /// The identity's signature over the data does not verify (strictly).
    #[error("vote history signature does not verify for identity {node}")]
    BadSignature {
        /// The identity named in the data.
        node: NodeId,
    },

    /// The history belongs to another identity than the one expected.
    #[error("vote history of identity {found}, expected {expected}")]
    ForeignNode {
        /// The identity expected.
        expected: NodeId,
        /// The identity in the history.
        found: NodeId,
    },

    /// The signed data does not decode in the layout asked for. The
    /// layout is not in the file (Agave kept the variant tag at 0 when the
    /// struct changed), so a file written by a release this build does not
    /// know looks like this.
    #[error(
        "the vote history data does not decode in the {layout} layout ({detail}); this build knows \
         the layouts: {known}; a validator release that writes another layout is not supported"
    )]
    NotInLayout {
        /// The layout tried.
        layout: HistoryLayout,
        /// Where and why decoding failed.
        detail: String,
        /// Every layout this build knows, with the software that writes it.
        known: String,
    },

    /// A layout code that this build does not know (a stored copy written
    /// by a newer build).
    #[error("unknown vote history layout code {code}; this build knows the layouts: {known}")]
    UnknownLayout {
        /// The code found.
        code: u8,
        /// Every layout this build knows.
        known: String,
    },

    /// The file decodes in more than one known layout with different
    /// meanings: the layout must be named.
    #[error("the vote history decodes in several layouts with different votes ({layouts}); name the layout the validator writes")]
    Ambiguous {
        /// The layouts that decode.
        layouts: String,
    },

    /// The history decodes, but does not hold together the way Agave's
    /// code keeps it (a slot below the root, a repeated set member, the
    /// per-kind sets disagreeing with the votes cast): the validator would
    /// decide on something other than what it recorded.
    #[error("vote history is inconsistent: {detail}")]
    Inconsistent {
        /// What is wrong.
        detail: String,
    },

    /// The history cannot be written in the layout asked for (a vote
    /// without a shred version in the signed-payload layout, or with one
    /// in the vote-enum layout).
    #[error("cannot encode the vote history in the {layout} layout: {detail}")]
    Unencodable {
        /// The layout.
        layout: HistoryLayout,
        /// Why.
        detail: String,
    },
}

impl From<VoteHistoryFileError> for FormatError {
    fn from(e: VoteHistoryFileError) -> Self {
        match e {
            VoteHistoryFileError::Empty => FormatError::Empty,
            VoteHistoryFileError::BadSignature { node } => FormatError::BadSignature {
                node: node.to_string(),
            },
            VoteHistoryFileError::ForeignNode { expected, found } => FormatError::ForeignNode {
                expected: expected.to_string(),
                found: found.to_string(),
            },
            other => FormatError::InvalidField {
                field: "Agave vote history",
                detail: other.to_string(),
            },
        }
    }
}

/// Bytes that were read become [`Error::Corrupt`]; a history that cannot
/// be encoded is [`Error::Invalid`].
impl From<VoteHistoryFileError> for Error {
    fn from(e: VoteHistoryFileError) -> Self {
        match e {
            VoteHistoryFileError::Unencodable { .. } => Error::Invalid(e.to_string()),
            e => Error::corrupt("Agave vote history", e.into()),
        }
    }
}
