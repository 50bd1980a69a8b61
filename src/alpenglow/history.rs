//! The vote history record: this node's own Alpenglow votes per slot from
//! the finalized root on, with its identity and cluster (shred version).
//!
//! Encoding (little-endian), the same bytes in a file slot and in an etcd
//! value. Version 1 is a history alone; version 2 adds the exact file an
//! Agave validator saved with it (through
//! [`AgaveVoteHistoryStorage`](crate::agave::AgaveVoteHistoryStorage)).
//! A history without one is still written as version 1, so stores written
//! before version 2 existed read and write unchanged.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgAV` |
//! | 1 | version (1 or 2) |
//! | 32 | identity (node public key) |
//! | 2 | shred version |
//! | 8 | root (finalized slot) |
//! | 4 | number of slots n |
//! | n × | slot u64, flags u8 (1 skip, 2 finalize, 4 skip-fallback, 8 notarize, 16 genesis), [32] notarized block if flag 8, [32] genesis block if flag 16, u16 fallback count m (at most `MAX_NOTARIZE_FALLBACKS`, 64), m × [32] fallback blocks (sorted, distinct) |
//! | 1 | version 2 only: the Agave file's inner layout code |
//! | 4 | version 2 only: the Agave file's length k |
//! | k | version 2 only: the Agave file (`vote_history-<identity>.bin`), verbatim |
//! | 4 | CRC-32 of everything before |
//!
//! Slots are strictly increasing, at or above the root, and never empty.
//! Decoding refuses anything else, so that damage cannot be read as "no
//! vote here".

use std::collections::BTreeMap;

use crate::alpenglow::payload::{BlockId, Vote};
use crate::alpenglow::rules::{
    check_vote, AlpenglowRefusal, Check, RuleMode, SlotVotes, MAX_NOTARIZE_FALLBACKS,
};
use crate::error::FormatError;
use crate::identity::NodeId;

const MAGIC: [u8; 4] = *b"sgAV";
/// A history alone.
const VERSION: u8 = 1;
/// A history and the Agave file saved with it.
const VERSION_AGAVE: u8 = 2;
const FLAG_SKIP: u8 = 1;
const FLAG_FINALIZE: u8 = 2;
const FLAG_SKIP_FALLBACK: u8 = 4;
const FLAG_NOTARIZE: u8 = 8;
const FLAG_GENESIS: u8 = 16;
const FLAGS: u8 = 31;

/// One node's Alpenglow vote history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteHistory {
    identity: NodeId,
    shred_version: u16,
    root: u64,
    slots: BTreeMap<u64, SlotVotes>,
    agave: Option<AgaveCopy>,
}

/// The file an Agave validator saved, kept with the history it was
/// checked against: what `AgaveVoteHistoryStorage::load` gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgaveCopy {
    /// The inner layout code (`agave::HistoryLayout::code`).
    pub(crate) layout: u8,
    /// The file's bytes.
    pub(crate) bytes: Vec<u8>,
}

/// One durable step: the votes of one event, and optionally a newer
/// finalized root, applied together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryUpdate {
    /// The votes to record, in order.
    pub votes: Vec<Vote>,
    /// A slot the caller states is finalized: the root moves there (never
    /// back) and older slots are forgotten, before the votes are checked.
    pub finalized: Option<u64>,
}

impl VoteHistory {
    /// An empty history of `identity` for the cluster `shred_version`,
    /// rooted at the finalized slot `root`: votes below it are refused.
    pub fn new(identity: NodeId, shred_version: u16, root: u64) -> Self {
        VoteHistory {
            identity,
            shred_version,
            root,
            slots: BTreeMap::new(),
            agave: None,
        }
    }

    /// The Agave vote history file stored with this history, exactly as
    /// the validator saved it: present only while no vote or root was
    /// recorded by any other path since (any other change drops it).
    pub fn agave_file(&self) -> Option<&[u8]> {
        self.agave.as_ref().map(|a| a.bytes.as_slice())
    }

    pub(crate) fn agave_copy(&self) -> Option<&AgaveCopy> {
        self.agave.as_ref()
    }

    pub(crate) fn set_agave_copy(&mut self, copy: Option<AgaveCopy>) {
        self.agave = copy;
    }

    /// The node whose votes these are.
    pub fn identity(&self) -> NodeId {
        self.identity
    }

    /// The cluster's shred version.
    pub fn shred_version(&self) -> u16 {
        self.shred_version
    }

    /// The finalized root.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The votes recorded in `slot`.
    pub fn slot(&self, slot: u64) -> Option<&SlotVotes> {
        self.slots.get(&slot)
    }

    /// Every slot with votes, ascending.
    pub fn slots(&self) -> impl Iterator<Item = (u64, &SlotVotes)> {
        self.slots.iter().map(|(s, v)| (*s, v))
    }

    /// The highest slot with a vote.
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.slots.keys().next_back().copied()
    }

    /// Check `vote` against this history.
    pub fn check(&self, vote: &Vote, mode: RuleMode) -> Result<Check, AlpenglowRefusal> {
        check_vote(
            self.root,
            self.shred_version,
            self.slots.get(&vote.slot),
            vote,
            mode,
        )
    }

    /// Apply `update` as one step: the root first, then each vote checked
    /// against the history including the update's earlier votes. Returns
    /// the new history and one [`Check`] per vote, or `None` for the
    /// history when nothing changed (every vote was same data and the root
    /// did not move). Any refusal refuses the whole update.
    pub fn apply(
        &self,
        update: &HistoryUpdate,
        mode: RuleMode,
    ) -> Result<(Option<VoteHistory>, Vec<Check>), AlpenglowRefusal> {
        let mut next = self.clone();
        let mut changed = false;
        if let Some(root) = update.finalized {
            if root < self.root {
                return Err(AlpenglowRefusal::RootRegressed {
                    stored: self.root,
                    requested: root,
                });
            }
            if root > self.root {
                next.root = root;
                next.slots = next.slots.split_off(&root);
                changed = true;
            }
        }
        let mut checks = Vec::with_capacity(update.votes.len());
        for vote in &update.votes {
            let check = next.check(vote, mode)?;
            if check == Check::New {
                next.slots.entry(vote.slot).or_default().insert(vote.kind);
                changed = true;
            }
            checks.push(check);
        }
        if changed {
            // The Agave file no longer describes the history: never give
            // it back as if it did.
            next.agave = None;
        }
        Ok((changed.then_some(next), checks))
    }

    /// The record's bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(55 + self.slots.len() * 44);
        out.extend_from_slice(&MAGIC);
        out.push(if self.agave.is_some() {
            VERSION_AGAVE
        } else {
            VERSION
        });
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.shred_version.to_le_bytes());
        out.extend_from_slice(&self.root.to_le_bytes());
        out.extend_from_slice(&(self.slots.len() as u32).to_le_bytes());
        for (slot, v) in &self.slots {
            out.extend_from_slice(&slot.to_le_bytes());
            let mut flags = 0;
            for (on, bit) in [
                (v.skip, FLAG_SKIP),
                (v.finalize, FLAG_FINALIZE),
                (v.skip_fallback, FLAG_SKIP_FALLBACK),
                (v.notarize.is_some(), FLAG_NOTARIZE),
                (v.genesis.is_some(), FLAG_GENESIS),
            ] {
                if on {
                    flags |= bit;
                }
            }
            out.push(flags);
            for b in [&v.notarize, &v.genesis].into_iter().flatten() {
                out.extend_from_slice(b);
            }
            // Bounded by the rules (MAX_NOTARIZE_FALLBACKS), so the count
            // fits; a history that broke the bound is not written wrapped.
            debug_assert!(v.notarize_fallback.len() <= MAX_NOTARIZE_FALLBACKS);
            out.extend_from_slice(&(v.notarize_fallback.len() as u16).to_le_bytes());
            for b in &v.notarize_fallback {
                out.extend_from_slice(b);
            }
        }
        if let Some(agave) = &self.agave {
            out.push(agave.layout);
            out.extend_from_slice(&(agave.bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&agave.bytes);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode and verify a record of `identity`.
    pub fn decode(bytes: &[u8], identity: &NodeId) -> Result<VoteHistory, FormatError> {
        if bytes.is_empty() {
            return Err(FormatError::Empty);
        }
        if bytes.len() < 4 + 1 + 32 + 2 + 8 + 4 + 4 {
            return Err(FormatError::Truncated {
                needed: 55,
                have: bytes.len(),
            });
        }
        if bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic {
                found: bytes[..4].to_vec(),
            });
        }
        let version = bytes[4];
        if version != VERSION && version != VERSION_AGAVE {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION_AGAVE,
            });
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        let mut r = Cursor { bytes: body, at: 5 };
        let found = NodeId(r.array()?);
        if found != *identity {
            return Err(FormatError::ForeignNode {
                expected: identity.to_string(),
                found: found.to_string(),
            });
        }
        let shred_version = u16::from_le_bytes(r.array()?);
        let root = u64::from_le_bytes(r.array()?);
        let count = u32::from_le_bytes(r.array()?);
        let mut slots = BTreeMap::new();
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let slot = u64::from_le_bytes(r.array()?);
            if slot < root || previous.is_some_and(|p| slot <= p) {
                return Err(invalid(
                    "slot",
                    format!("{slot} is below the root {root} or out of order"),
                ));
            }
            previous = Some(slot);
            let [flags] = r.array::<1>()?;
            if flags & !FLAGS != 0 {
                return Err(invalid("flags", format!("unknown bits {flags:#04x}")));
            }
            let mut v = SlotVotes {
                skip: flags & FLAG_SKIP != 0,
                finalize: flags & FLAG_FINALIZE != 0,
                skip_fallback: flags & FLAG_SKIP_FALLBACK != 0,
                ..SlotVotes::default()
            };
            if flags & FLAG_NOTARIZE != 0 {
                v.notarize = Some(r.array()?);
            }
            if flags & FLAG_GENESIS != 0 {
                v.genesis = Some(r.array()?);
            }
            let m = u16::from_le_bytes(r.array()?);
            for _ in 0..m {
                let b: BlockId = r.array()?;
                if v.notarize_fallback.last().is_some_and(|l| *l >= b) {
                    return Err(invalid(
                        "fallback blocks",
                        format!("slot {slot}: not sorted and distinct"),
                    ));
                }
                v.notarize_fallback.push(b);
            }
            if v.is_empty() {
                return Err(invalid("slot", format!("{slot} holds no vote")));
            }
            slots.insert(slot, v);
        }
        let agave = if version == VERSION_AGAVE {
            let [layout] = r.array::<1>()?;
            let len = u32::from_le_bytes(r.array()?) as usize;
            if len == 0 || len > body.len() - r.at {
                return Err(invalid(
                    "agave file",
                    format!("length {len} with {} bytes left", body.len() - r.at),
                ));
            }
            let bytes = body[r.at..r.at + len].to_vec();
            r.at += len;
            Some(AgaveCopy { layout, bytes })
        } else {
            None
        };
        if r.at != body.len() {
            return Err(FormatError::TrailingBytes {
                count: body.len() - r.at,
            });
        }
        Ok(VoteHistory {
            identity: found,
            shred_version,
            root,
            slots,
            agave,
        })
    }
}

fn invalid(field: &'static str, detail: String) -> FormatError {
    FormatError::InvalidField { field, detail }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let end = self.at + N;
        let s = self.bytes.get(self.at..end).ok_or(FormatError::Truncated {
            needed: end + 4,
            have: self.bytes.len() + 4,
        })?;
        self.at = end;
        Ok(s.try_into().expect("length checked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alpenglow::payload::VoteKind::*;

    fn node() -> NodeId {
        NodeId([9; 32])
    }

    fn vote(slot: u64, kind: crate::alpenglow::VoteKind) -> Vote {
        Vote {
            slot,
            kind,
            shred_version: 50093,
        }
    }

    fn sample() -> VoteHistory {
        let h = VoteHistory::new(node(), 50093, 100);
        let update = HistoryUpdate {
            votes: vec![
                vote(100, Notarize([1; 32])),
                vote(100, Finalize),
                vote(101, Skip),
                vote(101, NotarizeFallback([3; 32])),
                vote(101, NotarizeFallback([2; 32])),
                vote(101, SkipFallback),
                vote(102, Genesis([4; 32])),
            ],
            finalized: None,
        };
        h.apply(&update, RuleMode::Slashable).unwrap().0.unwrap()
    }

    #[test]
    fn encode_decode_roundtrip_and_vector() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(VoteHistory::decode(&bytes, &node()).unwrap(), h);
        // Empty history: the header, a zero count and the CRC.
        let empty = VoteHistory::new(node(), 1, 2).encode();
        assert_eq!(&empty[..5], b"sgAV\x01");
        assert_eq!(&empty[37..39], &[1, 0]);
        assert_eq!(&empty[39..47], &2u64.to_le_bytes());
        assert_eq!(&empty[47..51], &[0; 4]);
        assert_eq!(empty.len(), 55);
    }

    #[test]
    fn an_agave_file_makes_version_2_and_any_change_drops_it() {
        let mut h = sample();
        let v1 = h.encode();
        assert_eq!(v1[4], 1);
        h.set_agave_copy(Some(AgaveCopy {
            layout: 2,
            bytes: vec![0xab; 5],
        }));
        let v2 = h.encode();
        assert_eq!(v2[4], 2);
        // The history's bytes, then layout, length, file, CRC.
        assert_eq!(&v2[5..v1.len() - 4], &v1[5..v1.len() - 4]);
        assert_eq!(
            &v2[v1.len() - 4..v1.len() + 6],
            &[2, 5, 0, 0, 0, 0xab, 0xab, 0xab, 0xab, 0xab]
        );
        let back = VoteHistory::decode(&v2, &node()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.agave_file(), Some(&[0xab; 5][..]));
        for i in 0..v2.len() {
            assert!(
                VoteHistory::decode(&v2[..i], &node()).is_err(),
                "cut at {i}"
            );
        }
        // A repeat keeps it; a new vote or a root move drops it.
        let repeat = HistoryUpdate {
            votes: vec![vote(101, Skip)],
            finalized: None,
        };
        assert_eq!(h.apply(&repeat, RuleMode::Slashable).unwrap().0, None);
        let new = HistoryUpdate {
            votes: vec![vote(103, Skip)],
            finalized: None,
        };
        let next = h.apply(&new, RuleMode::Slashable).unwrap().0.unwrap();
        assert_eq!(next.agave_file(), None);
        assert_eq!(next.encode()[4], 1);
    }

    #[test]
    fn any_flipped_or_missing_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(VoteHistory::decode(&b, &node()).is_err(), "flip at {i}");
            assert!(
                VoteHistory::decode(&bytes[..i], &node()).is_err(),
                "cut at {i}"
            );
        }
        assert!(matches!(
            VoteHistory::decode(&bytes, &NodeId([8; 32])),
            Err(FormatError::ForeignNode { .. })
        ));
    }

    #[test]
    fn root_only_moves_forward_and_prunes() {
        let h = sample();
        let up = |finalized| HistoryUpdate {
            votes: vec![],
            finalized: Some(finalized),
        };
        assert_eq!(
            h.apply(&up(99), RuleMode::Slashable).unwrap_err(),
            AlpenglowRefusal::RootRegressed {
                stored: 100,
                requested: 99
            }
        );
        assert_eq!(h.apply(&up(100), RuleMode::Slashable).unwrap().0, None);
        let moved = h.apply(&up(101), RuleMode::Slashable).unwrap().0.unwrap();
        assert_eq!(moved.root(), 101);
        assert!(moved.slot(100).is_none());
        assert!(moved.slot(101).is_some());
        assert!(moved.check(&vote(100, Skip), RuleMode::Slashable).is_err());
    }

    #[test]
    fn an_update_is_all_or_nothing_and_checks_its_own_votes() {
        let h = VoteHistory::new(node(), 50093, 0);
        let bad = HistoryUpdate {
            votes: vec![vote(5, Skip), vote(5, Notarize([1; 32]))],
            finalized: None,
        };
        assert!(h.apply(&bad, RuleMode::Slashable).is_err());
        let same = HistoryUpdate {
            votes: vec![vote(5, Skip), vote(5, Skip)],
            finalized: None,
        };
        let (next, checks) = h.apply(&same, RuleMode::Slashable).unwrap();
        assert_eq!(checks, vec![Check::New, Check::SameData]);
        let (again, checks) = next.unwrap().apply(&same, RuleMode::Slashable).unwrap();
        assert_eq!(again, None);
        assert_eq!(checks, vec![Check::SameData, Check::SameData]);
    }
}
