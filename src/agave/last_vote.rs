//! The last vote a tower sent, in the four forms Agave has used
//! (`docs/agave-tower.md`, tower data item 5). Variants 2 and 3 are stored
//! in compact form: the root as a u64 with `u64::MAX` for none, a short-vec
//! lockout count, and each lockout as a LEB128 slot offset from the
//! previous slot (the first from the root, or 0) and a one-byte
//! confirmation count.

use crate::agave::compact;
use crate::agave::error::AgaveError;
use crate::agave::tower::TowerLayout;
use crate::agave::vote_state::Lockout;
use crate::agave::wire::{self, Input};

const SLOT_LEN: usize = 8;
const LOCKOUT_LEN: usize = 8 + 4;
/// A compact lockout is at least a one-byte offset and a one-byte count.
const COMPACT_LOCKOUT_MIN_LEN: usize = 2;

/// A plain vote: slots and the bank hash of the last one (variant 0, and
/// the only form of the 1.7.14 layout, where it carries no tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Vote {
    /// The slots voted on, ascending.
    pub slots: Vec<u64>,
    /// Bank hash of the last slot.
    pub hash: [u8; 32],
    /// Unix seconds, when the vote carried one.
    pub timestamp: Option<i64>,
}

/// The whole tower as a vote (variants 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VoteStateUpdate {
    /// The lockouts, oldest first.
    pub lockouts: Vec<Lockout>,
    /// The tower's root.
    pub root: Option<u64>,
    /// Bank hash of the last lockout's slot.
    pub hash: [u8; 32],
    /// Unix seconds, when the vote carried one.
    pub timestamp: Option<i64>,
}

/// The whole tower as a vote with the voted block's id (variant 3, what
/// current mainnet validators write).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TowerSync {
    /// The lockouts, oldest first.
    pub lockouts: Vec<Lockout>,
    /// The tower's root.
    pub root: Option<u64>,
    /// Bank hash of the last lockout's slot.
    pub hash: [u8; 32],
    /// Unix seconds, when the vote carried one.
    pub timestamp: Option<i64>,
    /// Id of the block voted for.
    pub block_id: [u8; 32],
}

/// The last vote of a tower (Agave's `VoteTransaction`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LastVote {
    /// Tag 0.
    Vote(Vote),
    /// Tag 1: lockouts stored in full.
    VoteStateUpdate(VoteStateUpdate),
    /// Tag 2: a [`VoteStateUpdate`] in compact form.
    CompactVoteStateUpdate(VoteStateUpdate),
    /// Tag 3, always in compact form.
    TowerSync(TowerSync),
}

impl Default for LastVote {
    /// No vote yet, in the form current writers use.
    fn default() -> Self {
        LastVote::TowerSync(TowerSync::default())
    }
}

impl LastVote {
    /// The wire tag of this variant.
    pub fn tag(&self) -> u32 {
        match self {
            LastVote::Vote(_) => 0,
            LastVote::VoteStateUpdate(_) => 1,
            LastVote::CompactVoteStateUpdate(_) => 2,
            LastVote::TowerSync(_) => 3,
        }
    }

    /// The newest slot this vote voted on (Agave's `last_voted_slot`), or
    /// `None` when it holds no slot.
    pub fn last_voted_slot(&self) -> Option<u64> {
        match self {
            LastVote::Vote(v) => v.slots.last().copied(),
            LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => {
                u.lockouts.last().map(|l| l.slot)
            }
            LastVote::TowerSync(s) => s.lockouts.last().map(|l| l.slot),
        }
    }

    /// The bank hash voted for.
    pub fn hash(&self) -> [u8; 32] {
        match self {
            LastVote::Vote(v) => v.hash,
            LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => u.hash,
            LastVote::TowerSync(s) => s.hash,
        }
    }

    /// The vote's timestamp, if it carried one.
    pub fn timestamp(&self) -> Option<i64> {
        match self {
            LastVote::Vote(v) => v.timestamp,
            LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => u.timestamp,
            LastVote::TowerSync(s) => s.timestamp,
        }
    }

    pub(crate) fn read(input: &mut Input<'_>, layout: TowerLayout) -> Result<Self, AgaveError> {
        if layout == TowerLayout::V1_7_14 {
            return Ok(LastVote::Vote(read_vote(input)?));
        }
        let offset = input.offset();
        let tag = input.u32("last_vote tag")?;
        Self::read_variant(input, tag, offset)
    }

    /// The body of variant `tag` (whose tag was read at `tag_offset`):
    /// the same bytes follow a vote instruction's tag in a vote transaction
    /// (`tower::vote_tx`), so both readers share this one.
    pub(crate) fn read_variant(
        input: &mut Input<'_>,
        tag: u32,
        tag_offset: usize,
    ) -> Result<Self, AgaveError> {
        match tag {
            0 => Ok(LastVote::Vote(read_vote(input)?)),
            1 => Ok(LastVote::VoteStateUpdate(read_full_update(input)?)),
            2 => {
                let (lockouts, root, hash, timestamp) = read_compact(input)?;
                Ok(LastVote::CompactVoteStateUpdate(VoteStateUpdate {
                    lockouts,
                    root,
                    hash,
                    timestamp,
                }))
            }
            3 => {
                let (lockouts, root, hash, timestamp) = read_compact(input)?;
                let block_id = input.array("last_vote.block_id")?;
                Ok(LastVote::TowerSync(TowerSync {
                    lockouts,
                    root,
                    hash,
                    timestamp,
                    block_id,
                }))
            }
            found => Err(AgaveError::BadTag {
                field: "last_vote tag",
                offset: tag_offset,
                found,
            }),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, layout: TowerLayout) -> Result<(), AgaveError> {
        if layout == TowerLayout::V1_7_14 {
            let LastVote::Vote(vote) = self else {
                return Err(AgaveError::Unencodable {
                    field: "last_vote",
                    detail: format!(
                        "the 1.7.14 layout holds only a plain Vote, not variant {}",
                        self.tag()
                    ),
                });
            };
            write_vote(out, vote);
            return Ok(());
        }
        wire::put_u32(out, self.tag());
        match self {
            LastVote::Vote(vote) => write_vote(out, vote),
            LastVote::VoteStateUpdate(u) => {
                wire::put_len(out, u.lockouts.len());
                for lockout in &u.lockouts {
                    lockout.write(out);
                }
                wire::put_option_u64(out, u.root);
                out.extend_from_slice(&u.hash);
                wire::put_option_i64(out, u.timestamp);
            }
            LastVote::CompactVoteStateUpdate(u) => {
                write_compact(out, &u.lockouts, u.root, &u.hash, u.timestamp)?;
            }
            LastVote::TowerSync(s) => {
                write_compact(out, &s.lockouts, s.root, &s.hash, s.timestamp)?;
                out.extend_from_slice(&s.block_id);
            }
        }
        Ok(())
    }
}

/// Read the body of last-vote variant `tag` from the start of `data` (whose
/// first byte is at offset `base` in its container), and return it with
/// the bytes after it. A vote instruction's data is its tag followed by
/// exactly this body.
pub(crate) fn read_vote_body(
    data: &[u8],
    base: usize,
    tag: u32,
) -> Result<(LastVote, &[u8]), AgaveError> {
    let mut input = Input::new(data, base);
    let vote = LastVote::read_variant(&mut input, tag, base)?;
    let used = data.len() - input.remaining();
    Ok((vote, &data[used..]))
}

/// Append the body of `vote` without its tag (the inverse of
/// [`read_vote_body`]).
pub(crate) fn write_vote_body(vote: &LastVote, out: &mut Vec<u8>) -> Result<(), AgaveError> {
    let start = out.len();
    vote.write(out, TowerLayout::V1_14_11)?;
    out.drain(start..start + 4);
    Ok(())
}

fn read_vote(input: &mut Input<'_>) -> Result<Vote, AgaveError> {
    let n = input.count("last_vote.slots", SLOT_LEN)?;
    let mut slots = Vec::with_capacity(n);
    for _ in 0..n {
        slots.push(input.u64("last_vote.slots")?);
    }
    Ok(Vote {
        slots,
        hash: input.array("last_vote.hash")?,
        timestamp: input.option_i64("last_vote.timestamp")?,
    })
}

fn write_vote(out: &mut Vec<u8>, vote: &Vote) {
    wire::put_len(out, vote.slots.len());
    for slot in &vote.slots {
        wire::put_u64(out, *slot);
    }
    out.extend_from_slice(&vote.hash);
    wire::put_option_i64(out, vote.timestamp);
}

fn read_full_update(input: &mut Input<'_>) -> Result<VoteStateUpdate, AgaveError> {
    let n = input.count("last_vote.lockouts", LOCKOUT_LEN)?;
    let mut lockouts = Vec::with_capacity(n);
    for _ in 0..n {
        lockouts.push(Lockout::read(input, "last_vote.lockouts")?);
    }
    Ok(VoteStateUpdate {
        lockouts,
        root: input.option_u64("last_vote.root")?,
        hash: input.array("last_vote.hash")?,
        timestamp: input.option_i64("last_vote.timestamp")?,
    })
}

type CompactParts = (Vec<Lockout>, Option<u64>, [u8; 32], Option<i64>);

fn read_compact(input: &mut Input<'_>) -> Result<CompactParts, AgaveError> {
    let raw_root = input.u64("last_vote.root")?;
    let root = (raw_root != u64::MAX).then_some(raw_root);
    let n = input.short_count("last_vote.lockouts", COMPACT_LOCKOUT_MIN_LEN)?;
    let mut lockouts = Vec::with_capacity(n);
    let mut slot = root.unwrap_or(0);
    for index in 0..n {
        let offset = input.offset();
        let delta = input.varint("last_vote.lockouts")?;
        slot = slot.checked_add(delta).ok_or(AgaveError::SlotOverflow {
            field: "last_vote.lockouts",
            offset,
            index,
        })?;
        let confirmation_count = input.u8("last_vote.lockouts")?.into();
        lockouts.push(Lockout {
            slot,
            confirmation_count,
        });
    }
    let hash = input.array("last_vote.hash")?;
    let timestamp = input.option_i64("last_vote.timestamp")?;
    Ok((lockouts, root, hash, timestamp))
}

fn write_compact(
    out: &mut Vec<u8>,
    lockouts: &[Lockout],
    root: Option<u64>,
    hash: &[u8; 32],
    timestamp: Option<i64>,
) -> Result<(), AgaveError> {
    let unencodable = |detail: String| AgaveError::Unencodable {
        field: "last_vote",
        detail,
    };
    if root == Some(u64::MAX) {
        return Err(unencodable(
            "a compact root of u64::MAX reads back as no root".into(),
        ));
    }
    let count = u16::try_from(lockouts.len()).map_err(|_| {
        unencodable(format!(
            "{} lockouts exceed the compact limit of {}",
            lockouts.len(),
            compact::SHORT_VEC_MAX
        ))
    })?;
    wire::put_u64(out, root.unwrap_or(u64::MAX));
    compact::encode_short_u16(out, count);
    let mut previous = root.unwrap_or(0);
    for (index, lockout) in lockouts.iter().enumerate() {
        let delta = lockout.slot.checked_sub(previous).ok_or_else(|| {
            unencodable(format!(
                "lockout {index} at slot {} is below the previous slot (or root) {previous}",
                lockout.slot
            ))
        })?;
        let count = u8::try_from(lockout.confirmation_count).map_err(|_| {
            unencodable(format!(
                "lockout {index} has confirmation count {} (compact form holds at most 255)",
                lockout.confirmation_count
            ))
        })?;
        compact::encode_varint_u64(out, delta);
        out.push(count);
        previous = lockout.slot;
    }
    out.extend_from_slice(hash);
    wire::put_option_i64(out, timestamp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockouts(slots: &[(u64, u32)]) -> Vec<Lockout> {
        slots
            .iter()
            .map(|&(slot, confirmation_count)| Lockout {
                slot,
                confirmation_count,
            })
            .collect()
    }

    fn encode(vote: &LastVote) -> Vec<u8> {
        let mut out = Vec::new();
        vote.write(&mut out, TowerLayout::V1_14_11).unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> Result<LastVote, AgaveError> {
        let mut input = Input::new(bytes, 0);
        let vote = LastVote::read(&mut input, TowerLayout::V1_14_11)?;
        assert_eq!(input.remaining(), 0);
        Ok(vote)
    }

    #[test]
    fn tower_sync_compact_bytes() {
        let sync = LastVote::TowerSync(TowerSync {
            lockouts: lockouts(&[(100, 3), (101, 2), (300, 1)]),
            root: Some(90),
            hash: [7; 32],
            timestamp: Some(-1),
            block_id: [8; 32],
        });
        let bytes = encode(&sync);
        let mut want = 3u32.to_le_bytes().to_vec();
        want.extend_from_slice(&90u64.to_le_bytes());
        want.push(3); // short-vec count
        want.extend_from_slice(&[10, 3]); // 100 - 90
        want.extend_from_slice(&[1, 2]); // 101 - 100
        want.extend_from_slice(&[0xc7, 0x01, 1]); // 300 - 101 = 199
        want.extend_from_slice(&[7; 32]);
        want.push(1);
        want.extend_from_slice(&(-1i64).to_le_bytes());
        want.extend_from_slice(&[8; 32]);
        assert_eq!(bytes, want);
        assert_eq!(decode(&bytes).unwrap(), sync);
        assert_eq!(sync.last_voted_slot(), Some(300));
    }

    #[test]
    fn compact_without_root_counts_from_zero() {
        let update = LastVote::CompactVoteStateUpdate(VoteStateUpdate {
            lockouts: lockouts(&[(5, 2), (5, 1)]),
            root: None,
            hash: [1; 32],
            timestamp: None,
        });
        let bytes = encode(&update);
        assert_eq!(bytes[4..12], u64::MAX.to_le_bytes());
        assert_eq!(bytes[12..17], [2, 5, 2, 0, 1]);
        assert_eq!(decode(&bytes).unwrap(), update);
    }

    #[test]
    fn slot_offsets_that_overflow_are_refused() {
        let sync = LastVote::TowerSync(TowerSync {
            lockouts: lockouts(&[(u64::MAX - 1, 1)]),
            root: Some(0),
            ..TowerSync::default()
        });
        let mut bytes = encode(&sync);
        // Root 2 + offset u64::MAX - 1 overflows.
        bytes[4..12].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err(AgaveError::SlotOverflow {
                field: "last_vote.lockouts",
                offset: 13,
                index: 0
            })
        );
    }

    #[test]
    fn unencodable_models_are_refused() {
        let cases = [
            TowerSync {
                root: Some(u64::MAX),
                ..TowerSync::default()
            },
            TowerSync {
                lockouts: lockouts(&[(10, 1), (9, 1)]),
                ..TowerSync::default()
            },
            TowerSync {
                lockouts: lockouts(&[(10, 1)]),
                root: Some(11),
                ..TowerSync::default()
            },
            TowerSync {
                lockouts: lockouts(&[(10, 256)]),
                ..TowerSync::default()
            },
            TowerSync {
                lockouts: vec![Lockout::default(); compact::SHORT_VEC_MAX + 1],
                ..TowerSync::default()
            },
        ];
        for sync in cases {
            let mut out = Vec::new();
            assert!(matches!(
                LastVote::TowerSync(sync).write(&mut out, TowerLayout::V1_14_11),
                Err(AgaveError::Unencodable { .. })
            ));
        }
        let mut out = Vec::new();
        assert!(matches!(
            LastVote::default().write(&mut out, TowerLayout::V1_7_14),
            Err(AgaveError::Unencodable { .. })
        ));
    }

    #[test]
    fn unknown_tag_is_refused() {
        let mut bytes = encode(&LastVote::default());
        bytes[..4].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err(AgaveError::BadTag {
                field: "last_vote tag",
                offset: 0,
                found: 4
            })
        );
    }

    #[test]
    fn the_old_layout_has_no_tag() {
        let vote = LastVote::Vote(Vote {
            slots: vec![1, 2],
            hash: [3; 32],
            timestamp: None,
        });
        let mut old = Vec::new();
        vote.write(&mut old, TowerLayout::V1_7_14).unwrap();
        assert_eq!(encode(&vote)[4..], old[..]);
        let mut input = Input::new(&old, 0);
        assert_eq!(LastVote::read(&mut input, TowerLayout::V1_7_14), Ok(vote));
    }
}
