//! Why an Agave tower file could not be read, verified or written.

use crate::error::{Error, FormatError};
use crate::identity::NodeId;

/// What is wrong with a short-vec length or a LEB128 varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactProblem {
    /// The input ended before the byte without a continuation bit.
    #[error("input ends inside it")]
    Truncated,
    /// The last byte is zero although it is not the only byte: a shorter
    /// encoding of the same value exists, so re-encoding would change the
    /// bytes.
    #[error("redundant trailing zero byte (not the shortest encoding)")]
    RedundantZero,
    /// More bytes than the type allows (3 for a short-vec length, 10 for a
    /// u64 varint).
    #[error("too many bytes")]
    TooLong,
    /// The value does not fit the type (above 65535 for a short-vec length,
    /// above `u64::MAX` for a varint).
    #[error("value overflows")]
    Overflow,
}

/// Why an Agave tower file (or its `data`) is refused.
///
/// Offsets count from the start of the bytes handed to the decoder: the
/// whole file for [`SavedTower::decode`](super::SavedTower::decode), the
/// tower `data` for [`AgaveTower::decode`](super::AgaveTower::decode).
///
/// Every variant except [`Unencodable`](AgaveError::Unencodable) and
/// [`Record`](AgaveError::Record) describes input that was read; none of
/// them is ever a panic, and no decoder allocates more than the input's
/// length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgaveError {
    /// The file has no bytes at all.
    #[error("empty tower file")]
    Empty,

    /// A field runs past the end of the input.
    #[error("truncated: {field} needs {needed} bytes at offset {offset}, {have} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the input.
        have: usize,
    },

    /// A length prefix announces more elements than the rest of the input
    /// could hold, even at the smallest element size. Refused before any
    /// allocation.
    #[error(
        "{field} at offset {offset} declares {count} elements (at least {needed} bytes), \
         only {have} bytes remain"
    )]
    AbsurdLength {
        /// The sequence.
        field: &'static str,
        /// Where its length prefix starts.
        offset: usize,
        /// The element count read.
        count: u64,
        /// The fewest bytes that many elements take (saturating).
        needed: u64,
        /// Bytes left in the input.
        have: usize,
    },

    /// An enum, `Option` or `bool` tag outside its range (an envelope
    /// variant other than 0 or 1, a last-vote variant above 3, an option
    /// flag other than 0 or 1).
    #[error("{field} at offset {offset}: unknown tag {found}")]
    BadTag {
        /// The field.
        field: &'static str,
        /// Where the tag starts.
        offset: usize,
        /// The tag read.
        found: u32,
    },

    /// A short-vec length that is malformed or not in its shortest form.
    #[error("{field} at offset {offset}: bad short-vec length: {problem}")]
    BadShortVec {
        /// The sequence whose length it is.
        field: &'static str,
        /// Where the length starts.
        offset: usize,
        /// What is wrong.
        problem: CompactProblem,
    },

    /// A LEB128 slot offset that is malformed or not in its shortest form.
    #[error("{field} at offset {offset}: bad varint: {problem}")]
    BadVarint {
        /// The field.
        field: &'static str,
        /// Where the varint starts.
        offset: usize,
        /// What is wrong.
        problem: CompactProblem,
    },

    /// Adding a compact lockout's slot offset to the previous slot
    /// overflows a u64.
    #[error("{field}: slot offset of lockout {index} at offset {offset} overflows u64")]
    SlotOverflow {
        /// The lockout list.
        field: &'static str,
        /// Where the offset starts.
        offset: usize,
        /// The lockout's position in the list.
        index: usize,
    },

    /// The authorized voters map is not in strictly ascending epoch order,
    /// which bincode's map encoding always produces: such bytes would not
    /// re-encode to themselves.
    #[error("authorized voter epoch {epoch} at offset {offset} does not follow the previous one")]
    NotAscending {
        /// Where the entry starts.
        offset: usize,
        /// The epoch read.
        epoch: u64,
    },

    /// Bytes after a complete tower inside the signed `data` section.
    #[error("{count} trailing bytes in the tower data at offset {offset}")]
    TrailingData {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },

    /// Bytes after the complete envelope (Agave ignores them; slashguard
    /// refuses them so that decoding then encoding is the identity).
    #[error("{count} trailing bytes after the envelope at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },

    /// The envelope's ed25519 signature over `data` does not verify under
    /// the node's key (strict verification, as Agave's loader does).
    #[error("tower signature does not verify for node {node}")]
    BadSignature {
        /// The node whose key was used.
        node: NodeId,
    },

    /// The tower belongs to another node than the one expected (or than the
    /// identity asked to sign it).
    #[error("tower of node {found}, expected node {expected}")]
    ForeignNode {
        /// The node expected.
        expected: NodeId,
        /// The node named in the tower.
        found: NodeId,
    },

    /// The bytes decoded but do not re-encode to themselves. Every known
    /// non-canonical form has its own variant; this is the final guard that
    /// keeps decode-then-encode the identity.
    #[error("tower data is not in canonical form (first difference at offset {offset})")]
    NotCanonical {
        /// Where re-encoding first differs.
        offset: usize,
    },

    /// A tower model that the format cannot express (a compact root of
    /// `u64::MAX`, decreasing compact slots, a confirmation count above 255
    /// in compact form, more than 65535 compact lockouts, a non-`Vote` last
    /// vote in the 1.7.14 layout).
    #[error("cannot encode {field}: {detail}")]
    Unencodable {
        /// The field.
        field: &'static str,
        /// Why.
        detail: String,
    },

    /// slashguard's tower record refused the converted tower (for example a
    /// root above the last vote, or a tower above the record size limit).
    #[error("tower record refused: {0}")]
    Record(FormatError),

    /// A tower record whose tower bytes are the validator's own format
    /// (stored by [`VoteGuard::vote`](crate::tower::VoteGuard::vote)), not
    /// an Agave tower: there is no Agave file to give back.
    #[error(
        "the stored tower of node {node} is in the validator's own format (stored through \
         VoteGuard::vote), not an Agave tower: it cannot be exported as an Agave tower file; \
         store towers with the Agave adapter (agave::AgaveTowerStorage), \
         VoteGuard::sign_vote_message or `slashguard tower import`, or start the validator \
         without --require-tower"
    )]
    OpaqueTower {
        /// The node.
        node: NodeId,
    },

    /// A tower record whose summary (last vote or root) disagrees with the
    /// Agave tower in its own tower bytes.
    #[error("tower record says {field} is {record}, its Agave tower says {tower}")]
    RecordMismatch {
        /// `last vote` or `root`.
        field: &'static str,
        /// What the record states.
        record: String,
        /// What the tower bytes hold.
        tower: String,
    },
}

impl AgaveError {
    /// The field or section the error is about, for a
    /// [`FormatError::InvalidField`].
    fn field(&self) -> &'static str {
        match self {
            AgaveError::Truncated { field, .. }
            | AgaveError::AbsurdLength { field, .. }
            | AgaveError::BadTag { field, .. }
            | AgaveError::BadShortVec { field, .. }
            | AgaveError::BadVarint { field, .. }
            | AgaveError::SlotOverflow { field, .. }
            | AgaveError::Unencodable { field, .. }
            | AgaveError::RecordMismatch { field, .. } => field,
            AgaveError::NotAscending { .. } => "vote_state.authorized_voters",
            AgaveError::TrailingData { .. } | AgaveError::NotCanonical { .. } => "data",
            AgaveError::Empty | AgaveError::TrailingBytes { .. } => "file",
            AgaveError::BadSignature { .. } => "signature",
            AgaveError::ForeignNode { .. } => "node_pubkey",
            AgaveError::Record(_) | AgaveError::OpaqueTower { .. } => "record",
        }
    }

    /// `true` for errors about a tower model or record given to be encoded
    /// (a request the format cannot satisfy), as opposed to bytes read.
    fn is_request_error(&self) -> bool {
        matches!(
            self,
            AgaveError::Unencodable { .. } | AgaveError::Record(_) | AgaveError::OpaqueTower { .. }
        )
    }
}

/// The crate-wide description of undecodable bytes; the specific Agave
/// problem is kept in the message of [`FormatError::InvalidField`] where no
/// shared variant fits.
impl From<AgaveError> for FormatError {
    fn from(e: AgaveError) -> Self {
        match e {
            AgaveError::Empty => FormatError::Empty,
            AgaveError::Truncated {
                offset,
                needed,
                have,
                ..
            } => FormatError::Truncated {
                needed: offset.saturating_add(usize::try_from(needed).unwrap_or(usize::MAX)),
                have: offset.saturating_add(have),
            },
            AgaveError::BadSignature { node } => FormatError::BadSignature {
                node: node.to_string(),
            },
            AgaveError::ForeignNode { expected, found } => FormatError::ForeignNode {
                expected: expected.to_string(),
                found: found.to_string(),
            },
            AgaveError::TrailingBytes { count, .. } | AgaveError::TrailingData { count, .. } => {
                FormatError::TrailingBytes { count }
            }
            AgaveError::Record(inner) => inner,
            other => FormatError::InvalidField {
                field: other.field(),
                detail: other.to_string(),
            },
        }
    }
}

/// Bytes that were read become [`Error::Corrupt`] (stored data damaged or
/// not ours); a model or record that cannot be encoded becomes
/// [`Error::Invalid`].
impl From<AgaveError> for Error {
    fn from(e: AgaveError) -> Self {
        if e.is_request_error() {
            Error::Invalid(e.to_string())
        } else {
            Error::corrupt("Agave tower", e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_into_crate_errors() {
        let node = NodeId([1; 32]);
        let e: Error = AgaveError::BadSignature { node }.into();
        assert!(matches!(
            e,
            Error::Corrupt {
                problem: FormatError::BadSignature { .. },
                ..
            }
        ));
        let e: Error = AgaveError::Truncated {
            field: "data",
            offset: 76,
            needed: 10,
            have: 3,
        }
        .into();
        assert!(matches!(
            e,
            Error::Corrupt {
                problem: FormatError::Truncated {
                    needed: 86,
                    have: 79
                },
                ..
            }
        ));
        let e: Error = AgaveError::Unencodable {
            field: "last_vote",
            detail: "x".into(),
        }
        .into();
        assert!(matches!(e, Error::Invalid(_)));
        let e: FormatError = AgaveError::BadVarint {
            field: "last_vote.lockouts",
            offset: 9,
            problem: CompactProblem::RedundantZero,
        }
        .into();
        assert!(matches!(
            e,
            FormatError::InvalidField {
                field: "last_vote.lockouts",
                ..
            }
        ));
    }
}
