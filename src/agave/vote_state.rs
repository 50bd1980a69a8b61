//! The vote state inside a tower, in the 1.14.11 layout every current
//! writer uses (`docs/agave-tower.md`, tower data item 4). Every field is
//! kept, so an old file that carries the whole on-chain vote state
//! re-encodes to the same bytes.

use std::collections::BTreeMap;

use crate::agave::error::AgaveError;
use crate::agave::wire::{self, Input};

/// Entries in the prior-voters ring.
pub const PRIOR_VOTERS_LEN: usize = 32;

const LOCKOUT_LEN: usize = 8 + 4;
const AUTHORIZED_VOTER_LEN: usize = 8 + 32;
const EPOCH_CREDITS_LEN: usize = 3 * 8;

/// A vote and how many votes were stacked on it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lockout {
    /// The slot voted on.
    pub slot: u64,
    /// Confirmations stacked on it (its lockout is 2^count slots).
    pub confirmation_count: u32,
}

impl Lockout {
    pub(crate) fn read(input: &mut Input<'_>, field: &'static str) -> Result<Self, AgaveError> {
        Ok(Lockout {
            slot: input.u64(field)?,
            confirmation_count: input.u32(field)?,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        wire::put_u64(out, self.slot);
        wire::put_u32(out, self.confirmation_count);
    }
}

/// A slot and the unix time (seconds) a vote reported for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockTimestamp {
    /// The slot.
    pub slot: u64,
    /// Unix seconds.
    pub timestamp: i64,
}

impl BlockTimestamp {
    pub(crate) fn read(input: &mut Input<'_>, field: &'static str) -> Result<Self, AgaveError> {
        Ok(BlockTimestamp {
            slot: input.u64(field)?,
            timestamp: input.i64(field)?,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        wire::put_u64(out, self.slot);
        wire::put_i64(out, self.timestamp);
    }
}

/// One entry of the prior-voters ring: a voter key and the epochs it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PriorVoter {
    /// The former authorized voter.
    pub pubkey: [u8; 32],
    /// First epoch it was authorized.
    pub start_epoch: u64,
    /// Epoch its authorization ended.
    pub end_epoch: u64,
}

/// The fixed ring of the last 32 authorized voters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PriorVoters {
    /// The ring, always 32 entries (unused ones zero).
    pub buf: [PriorVoter; PRIOR_VOTERS_LEN],
    /// Index of the newest entry. Kept as read, even out of range: the
    /// format does not constrain it.
    pub idx: u64,
    /// `true` while nothing was ever pushed.
    pub is_empty: bool,
}

/// The empty ring Agave starts from: index 31, flagged empty.
impl Default for PriorVoters {
    fn default() -> Self {
        PriorVoters {
            buf: [PriorVoter::default(); PRIOR_VOTERS_LEN],
            idx: PRIOR_VOTERS_LEN as u64 - 1,
            is_empty: true,
        }
    }
}

/// Credits earned in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EpochCredits {
    /// The epoch.
    pub epoch: u64,
    /// Credits at its end.
    pub credits: u64,
    /// Credits at its start.
    pub prev_credits: u64,
}

/// The vote state a tower carries (Agave's `VoteState1_14_11`).
///
/// Since about Agave 2.3 writers fill only [`votes`](Self::votes) and
/// [`root_slot`](Self::root_slot) and leave the rest at
/// [`Default`]; older files carry the whole on-chain state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VoteState {
    /// The validator identity of the vote account.
    pub node_pubkey: [u8; 32],
    /// The key allowed to withdraw from the vote account.
    pub authorized_withdrawer: [u8; 32],
    /// Commission, percent.
    pub commission: u8,
    /// The lockouts, oldest first.
    pub votes: Vec<Lockout>,
    /// The tower's root: the newest slot that can no longer be rolled back.
    pub root_slot: Option<u64>,
    /// Authorized voter by epoch (ascending, no duplicates by construction).
    pub authorized_voters: BTreeMap<u64, [u8; 32]>,
    /// The ring of former voters.
    pub prior_voters: PriorVoters,
    /// Credits per epoch, oldest first.
    pub epoch_credits: Vec<EpochCredits>,
    /// The newest vote timestamp.
    pub last_timestamp: BlockTimestamp,
}

impl VoteState {
    pub(crate) fn read(input: &mut Input<'_>) -> Result<Self, AgaveError> {
        let node_pubkey = input.array("vote_state.node_pubkey")?;
        let authorized_withdrawer = input.array("vote_state.authorized_withdrawer")?;
        let commission = input.u8("vote_state.commission")?;

        let n = input.count("vote_state.votes", LOCKOUT_LEN)?;
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            votes.push(Lockout::read(input, "vote_state.votes")?);
        }
        let root_slot = input.option_u64("vote_state.root_slot")?;

        let n = input.count("vote_state.authorized_voters", AUTHORIZED_VOTER_LEN)?;
        let mut authorized_voters = BTreeMap::new();
        let mut previous = None;
        for _ in 0..n {
            let offset = input.offset();
            let epoch = input.u64("vote_state.authorized_voters")?;
            let voter = input.array("vote_state.authorized_voters")?;
            if previous.is_some_and(|p| epoch <= p) {
                return Err(AgaveError::NotAscending { offset, epoch });
            }
            previous = Some(epoch);
            authorized_voters.insert(epoch, voter);
        }

        let mut buf = [PriorVoter::default(); PRIOR_VOTERS_LEN];
        for entry in &mut buf {
            *entry = PriorVoter {
                pubkey: input.array("vote_state.prior_voters")?,
                start_epoch: input.u64("vote_state.prior_voters")?,
                end_epoch: input.u64("vote_state.prior_voters")?,
            };
        }
        let prior_voters = PriorVoters {
            buf,
            idx: input.u64("vote_state.prior_voters.idx")?,
            is_empty: input.flag("vote_state.prior_voters.is_empty")?,
        };

        let n = input.count("vote_state.epoch_credits", EPOCH_CREDITS_LEN)?;
        let mut epoch_credits = Vec::with_capacity(n);
        for _ in 0..n {
            epoch_credits.push(EpochCredits {
                epoch: input.u64("vote_state.epoch_credits")?,
                credits: input.u64("vote_state.epoch_credits")?,
                prev_credits: input.u64("vote_state.epoch_credits")?,
            });
        }
        let last_timestamp = BlockTimestamp::read(input, "vote_state.last_timestamp")?;

        Ok(VoteState {
            node_pubkey,
            authorized_withdrawer,
            commission,
            votes,
            root_slot,
            authorized_voters,
            prior_voters,
            epoch_credits,
            last_timestamp,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node_pubkey);
        out.extend_from_slice(&self.authorized_withdrawer);
        out.push(self.commission);
        wire::put_len(out, self.votes.len());
        for lockout in &self.votes {
            lockout.write(out);
        }
        wire::put_option_u64(out, self.root_slot);
        wire::put_len(out, self.authorized_voters.len());
        for (epoch, voter) in &self.authorized_voters {
            wire::put_u64(out, *epoch);
            out.extend_from_slice(voter);
        }
        for entry in &self.prior_voters.buf {
            out.extend_from_slice(&entry.pubkey);
            wire::put_u64(out, entry.start_epoch);
            wire::put_u64(out, entry.end_epoch);
        }
        wire::put_u64(out, self.prior_voters.idx);
        wire::put_flag(out, self.prior_voters.is_empty);
        wire::put_len(out, self.epoch_credits.len());
        for credits in &self.epoch_credits {
            wire::put_u64(out, credits.epoch);
            wire::put_u64(out, credits.credits);
            wire::put_u64(out, credits.prev_credits);
        }
        self.last_timestamp.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(state: &VoteState) -> Vec<u8> {
        let mut out = Vec::new();
        state.write(&mut out);
        let mut input = Input::new(&out, 0);
        assert_eq!(&VoteState::read(&mut input).unwrap(), state);
        assert_eq!(input.remaining(), 0);
        out
    }

    #[test]
    fn default_state_layout() {
        let bytes = roundtrip(&VoteState::default());
        // keys, commission, no votes, no root, no voters, ring of 32,
        // idx, is_empty, no credits, last timestamp.
        assert_eq!(
            bytes.len(),
            32 + 32 + 1 + 8 + 1 + 8 + 32 * 48 + 8 + 1 + 8 + 16
        );
        let ring_end = 32 + 32 + 1 + 8 + 1 + 8 + 32 * 48;
        assert_eq!(bytes[ring_end..ring_end + 8], 31u64.to_le_bytes());
        assert_eq!(bytes[ring_end + 8], 1);
    }

    #[test]
    fn voters_out_of_order_or_duplicated_are_refused() {
        let mut state = VoteState::default();
        state.authorized_voters.insert(5, [1; 32]);
        state.authorized_voters.insert(9, [2; 32]);
        let bytes = roundtrip(&state);
        let voters_at = 32 + 32 + 1 + 8 + 1 + 8;
        for second_epoch in [5u64, 4] {
            let mut b = bytes.clone();
            b[voters_at + 40..voters_at + 48].copy_from_slice(&second_epoch.to_le_bytes());
            assert_eq!(
                VoteState::read(&mut Input::new(&b, 0)),
                Err(AgaveError::NotAscending {
                    offset: voters_at + 40,
                    epoch: second_epoch
                })
            );
        }
    }

    #[test]
    fn is_empty_must_be_a_bool() {
        let bytes = roundtrip(&VoteState::default());
        let flag_at = 32 + 32 + 1 + 8 + 1 + 8 + 32 * 48 + 8;
        let mut b = bytes.clone();
        b[flag_at] = 2;
        assert!(matches!(
            VoteState::read(&mut Input::new(&b, 0)),
            Err(AgaveError::BadTag {
                field: "vote_state.prior_voters.is_empty",
                found: 2,
                ..
            })
        ));
    }
}
