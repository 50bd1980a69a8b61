//! The tower itself: the bincode `data` an Agave tower file signs
//! (`docs/agave-tower.md`).

use std::fmt;

use crate::agave::error::AgaveError;
use crate::agave::last_vote::LastVote;
use crate::agave::vote_state::{BlockTimestamp, VoteState};
use crate::agave::wire::{self, Input};
use crate::identity::NodeId;
use crate::tower::VoteRef;

/// Which serialization of the tower `data` a file holds. The two differ
/// only in the last vote: a bare [`Vote`](super::Vote) in the old layout, a
/// tagged [`LastVote`] in the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TowerLayout {
    /// Agave 1.7.14 (`Tower1_7_14`): the last vote is a plain vote without
    /// a tag.
    V1_7_14,
    /// Agave 1.14.11 (`Tower1_14_11`), written by every current validator.
    V1_14_11,
}

/// An `f64` kept as its exact bit pattern, so that decoding then encoding
/// is byte-exact for every value (NaN payloads and `-0.0` included) and the
/// tower can be compared with `Eq`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct F64Bits(pub u64);

impl F64Bits {
    /// The bits of `value`.
    pub fn from_f64(value: f64) -> Self {
        F64Bits(value.to_bits())
    }

    /// The value.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Debug for F64Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#018x})", self.get(), self.0)
    }
}

/// Agave's default vote threshold depth.
pub const THRESHOLD_DEPTH: u64 = 8;

/// An Agave tower, every serialized field of it.
///
/// [`decode`](Self::decode) accepts only bytes that
/// [`encode`](Self::encode) reproduces exactly; a model built by hand is
/// checked when it is encoded (see [`AgaveError::Unencodable`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgaveTower {
    /// The validator identity this tower belongs to; the file's signature
    /// is by this key.
    pub node_pubkey: NodeId,
    /// Depth of the vote checked against the threshold (8 on mainnet).
    pub threshold_depth: u64,
    /// Stake fraction of that threshold (2/3 on mainnet).
    pub threshold_size: F64Bits,
    /// The tower's lockouts and root, with the rest of a vote state.
    pub vote_state: VoteState,
    /// The last vote sent.
    pub last_vote: LastVote,
    /// The newest timestamp voted.
    pub last_timestamp: BlockTimestamp,
}

impl AgaveTower {
    /// An empty tower as a current Agave validator starts it: mainnet
    /// thresholds (depth 8, size 2/3), a default vote state, an empty
    /// [`TowerSync`](super::TowerSync) as last vote.
    pub fn new(node: NodeId) -> Self {
        AgaveTower {
            node_pubkey: node,
            threshold_depth: THRESHOLD_DEPTH,
            threshold_size: F64Bits::from_f64(2.0 / 3.0),
            vote_state: VoteState::default(),
            last_vote: LastVote::default(),
            last_timestamp: BlockTimestamp::default(),
        }
    }

    /// The slot of the last vote (Agave's `last_voted_slot`).
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.last_vote.last_voted_slot()
    }

    /// The last vote as slashguard records it: its newest slot and the bank
    /// hash voted for. `None` before the first vote.
    pub fn last_vote_ref(&self) -> Option<VoteRef> {
        self.last_voted_slot().map(|slot| VoteRef {
            slot,
            hash: self.last_vote.hash(),
        })
    }

    /// The tower's root (the vote state's root slot, as Agave reads it).
    pub fn root(&self) -> Option<u64> {
        self.vote_state.root_slot
    }

    /// Decode tower `data` of the given layout. The whole slice must be one
    /// tower: trailing bytes are an error.
    pub fn decode(data: &[u8], layout: TowerLayout) -> Result<Self, AgaveError> {
        Self::decode_at(data, layout, 0)
    }

    /// [`decode`](Self::decode) with error offsets shifted by `base` (the
    /// position of `data` in its file).
    pub(crate) fn decode_at(
        data: &[u8],
        layout: TowerLayout,
        base: usize,
    ) -> Result<Self, AgaveError> {
        let mut input = Input::new(data, base);
        let tower = AgaveTower {
            node_pubkey: NodeId(input.array("node_pubkey")?),
            threshold_depth: input.u64("threshold_depth")?,
            threshold_size: F64Bits(input.u64("threshold_size")?),
            vote_state: VoteState::read(&mut input)?,
            last_vote: LastVote::read(&mut input, layout)?,
            last_timestamp: BlockTimestamp::read(&mut input, "last_timestamp")?,
        };
        input.finish(|offset, count| AgaveError::TrailingData { offset, count })?;
        // Every non-canonical form known is refused above with its own
        // error; this keeps decode-then-encode the identity even for one
        // that is not.
        let again = tower.encode(layout).unwrap_or_default();
        if again != data {
            let offset = again
                .iter()
                .zip(data)
                .position(|(a, b)| a != b)
                .unwrap_or(again.len().min(data.len()));
            return Err(AgaveError::NotCanonical {
                offset: base + offset,
            });
        }
        Ok(tower)
    }

    /// Encode as tower `data` of the given layout: exactly the bytes
    /// Agave's bincode writes for this tower.
    pub fn encode(&self, layout: TowerLayout) -> Result<Vec<u8>, AgaveError> {
        let mut out = Vec::with_capacity(2048);
        out.extend_from_slice(self.node_pubkey.as_bytes());
        wire::put_u64(&mut out, self.threshold_depth);
        wire::put_u64(&mut out, self.threshold_size.0);
        self.vote_state.write(&mut out);
        self.last_vote.write(&mut out, layout)?;
        self.last_timestamp.write(&mut out);
        Ok(out)
    }
}
