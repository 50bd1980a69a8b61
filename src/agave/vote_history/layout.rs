//! The signed `data` of an Agave vote history file: the bincode of Agave's
//! `VoteHistory` struct, in one of the layouts this build knows.
//!
//! Every layout has the same fields in the same order (bincode, fixed-width
//! little-endian integers, `u64` lengths; sets and maps in the writer's
//! hash order):
//!
//! | field | encoding |
//! |---|---|
//! | `node_pubkey` | [32] |
//! | `voted` | set of slots |
//! | `voted_notar` | map slot → [32] block id |
//! | `voted_notar_fallback` | map slot → set of [32] |
//! | `voted_skip_fallback` | set of slots |
//! | `skipped` | set of slots |
//! | `its_over` | set of slots |
//! | `votes_cast` | map slot → list of votes |
//! | `notarized_blocks` | set of (slot, [32]) |
//! | `parent_ready_slots` | map slot → set of (slot, [32]) |
//! | `root` | u64 |
//!
//! The layouts differ in how one vote of `votes_cast` is written: see
//! [`HistoryLayout`]. Agave kept the file's variant tag at 0 when that
//! changed, so the layout cannot be read from the file: a reader is pinned
//! to the layouts it knows and refuses anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::agave::vote_history::error::VoteHistoryFileError;
use crate::alpenglow::{BlockId, Vote, VoteKind};
use crate::identity::NodeId;

/// How a vote is written inside Agave's saved vote history, per release
/// family (checked against the sources named, not against a running
/// validator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HistoryLayout {
    /// A vote is Agave's `Vote` enum in bincode: `u32` variant (0
    /// Notarize, 1 Finalize, 2 Skip, 3 NotarizeFallback, 4 SkipFallback,
    /// 5 Genesis), `u64` slot, `[32]` block id for 0, 3 and 5; no shred
    /// version. Written by Anza's Alpenglow code up to the upstreamed
    /// `agave-votor` crate (checked at anza-xyz/alpenglow 7a7b645e,
    /// February 2026; files without a Genesis vote are the same bytes in
    /// the earlier, five-variant enum).
    VoteEnum,
    /// A vote is the payload it signed (`VotePayloadToSign`): `u8` kind
    /// (1 Notarize, 2 Finalize, 3 Skip, 4 NotarizeFallback, 5
    /// SkipFallback, 6 Genesis), `u64` slot, `[32]` block id for 1, 4 and
    /// 6, `u16` shred version. What Firedancer reads and writes as Agave's
    /// file (`ag_vote_history_file`, checked at firedancer-io/firedancer
    /// 632e0e67), for Agave 4.2+.
    SignedPayload,
}

impl HistoryLayout {
    /// Every layout this build knows, newest first.
    pub const ALL: [HistoryLayout; 2] = [HistoryLayout::SignedPayload, HistoryLayout::VoteEnum];

    /// The code stored with a copy of the file (never written into the
    /// file itself).
    pub fn code(self) -> u8 {
        match self {
            HistoryLayout::VoteEnum => 1,
            HistoryLayout::SignedPayload => 2,
        }
    }

    /// The layout of `code`, or [`VoteHistoryFileError::UnknownLayout`].
    pub fn from_code(code: u8) -> Result<Self, VoteHistoryFileError> {
        Self::ALL
            .into_iter()
            .find(|l| l.code() == code)
            .ok_or_else(|| VoteHistoryFileError::UnknownLayout {
                code,
                known: Self::known(),
            })
    }

    /// The command-line name: `vote-enum`, `signed-payload`.
    pub fn name(self) -> &'static str {
        match self {
            HistoryLayout::VoteEnum => "vote-enum",
            HistoryLayout::SignedPayload => "signed-payload",
        }
    }

    /// The layout named `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Result<Self, VoteHistoryFileError> {
        Self::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| VoteHistoryFileError::NotInLayout {
                layout: HistoryLayout::SignedPayload,
                detail: format!("no layout is named {name:?}"),
                known: Self::known(),
            })
    }

    /// Who writes this layout, as checked.
    pub fn written_by(self) -> &'static str {
        match self {
            HistoryLayout::VoteEnum => {
                "Anza's Alpenglow code through agave-votor (anza-xyz/alpenglow 7a7b645e, Feb 2026)"
            }
            HistoryLayout::SignedPayload => {
                "Agave 4.2+ as read and written by Firedancer (ag_vote_history_file at 632e0e67)"
            }
        }
    }

    /// Every known layout and its writer, for error messages.
    pub fn known() -> String {
        Self::ALL
            .iter()
            .map(|l| format!("{} ({})", l.name(), l.written_by()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for HistoryLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One vote of `votes_cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedVote {
    /// The slot (the map key it is filed under).
    pub slot: u64,
    /// What was voted.
    pub kind: VoteKind,
    /// The shred version signed with it ([`HistoryLayout::SignedPayload`]
    /// only).
    pub shred_version: Option<u16>,
}

/// Agave's `VoteHistory`, as written: every set and map in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgaveVoteHistory {
    /// The validator identity that cast the votes.
    pub node: NodeId,
    /// Slots with a Notarize or Skip vote.
    pub voted: Vec<u64>,
    /// The block notarized per slot.
    pub voted_notar: Vec<(u64, BlockId)>,
    /// The blocks given a NotarizeFallback vote per slot.
    pub voted_notar_fallback: Vec<(u64, Vec<BlockId>)>,
    /// Slots with a SkipFallback vote.
    pub voted_skip_fallback: Vec<u64>,
    /// Slots with a Skip, SkipFallback or NotarizeFallback vote.
    pub skipped: Vec<u64>,
    /// Slots with a Finalize vote.
    pub its_over: Vec<u64>,
    /// Every vote cast, per slot, in the order cast.
    pub votes_cast: Vec<(u64, Vec<SavedVote>)>,
    /// Blocks seen notarized (not votes).
    pub notarized_blocks: Vec<(u64, BlockId)>,
    /// Ready parents per slot (not votes).
    pub parent_ready_slots: Vec<(u64, Vec<(u64, BlockId)>)>,
    /// The finalized root; nothing above is below it.
    pub root: u64,
}

/// A bincode reader that knows where it is; every error names the field
/// and the offset.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    base: usize,
}

type Read<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Read<&'a [u8]> {
        let have = self.bytes.len() - self.at;
        if n > have {
            return Err(format!(
                "{field} at offset {} needs {n} bytes, {have} remain",
                self.base + self.at
            ));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Read<[u8; N]> {
        Ok(self.take(N, field)?.try_into().expect("length taken"))
    }

    fn u64(&mut self, field: &str) -> Read<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u64` sequence length, refused before any allocation when the
    /// rest of the input cannot hold that many elements of `min` bytes.
    fn len(&mut self, field: &str, min: usize) -> Read<usize> {
        let at = self.base + self.at;
        let n = self.u64(field)?;
        let have = self.bytes.len() - self.at;
        if n > (have / min) as u64 {
            return Err(format!(
                "{field} at offset {at} declares {n} elements, only {have} bytes remain"
            ));
        }
        Ok(n as usize)
    }

    fn slots(&mut self, field: &str) -> Read<Vec<u64>> {
        let n = self.len(field, 8)?;
        (0..n).map(|_| self.u64(field)).collect()
    }

    fn block(&mut self, field: &str) -> Read<(u64, BlockId)> {
        Ok((self.u64(field)?, self.array(field)?))
    }

    fn vote(&mut self, layout: HistoryLayout) -> Read<SavedVote> {
        let at = self.base + self.at;
        match layout {
            HistoryLayout::VoteEnum => {
                let tag = u32::from_le_bytes(self.array("votes_cast vote variant")?);
                let slot = self.u64("votes_cast vote slot")?;
                let mut block = || self.array::<32>("votes_cast vote block id");
                let kind = match tag {
                    0 => VoteKind::Notarize(block()?),
                    1 => VoteKind::Finalize,
                    2 => VoteKind::Skip,
                    3 => VoteKind::NotarizeFallback(block()?),
                    4 => VoteKind::SkipFallback,
                    5 => VoteKind::Genesis(block()?),
                    other => {
                        return Err(format!(
                            "votes_cast vote at offset {at}: unknown Vote variant {other}"
                        ))
                    }
                };
                Ok(SavedVote {
                    slot,
                    kind,
                    shred_version: None,
                })
            }
            HistoryLayout::SignedPayload => {
                let [code] = self.array::<1>("votes_cast vote kind")?;
                let len = match code {
                    1 | 4 | 6 => crate::alpenglow::BLOCK_VOTE_LEN,
                    2 | 3 | 5 => crate::alpenglow::SLOT_VOTE_LEN,
                    other => {
                        return Err(format!(
                            "votes_cast vote at offset {at}: unknown vote kind {other}"
                        ))
                    }
                };
                self.at -= 1;
                let bytes = self.take(len, "votes_cast vote")?;
                let vote = Vote::parse(bytes)
                    .map_err(|e| format!("votes_cast vote at offset {at}: {e}"))?;
                Ok(SavedVote {
                    slot: vote.slot,
                    kind: vote.kind,
                    shred_version: Some(vote.shred_version),
                })
            }
        }
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_slots(out: &mut Vec<u8>, slots: &[u64]) {
    put_u64(out, slots.len() as u64);
    for s in slots {
        put_u64(out, *s);
    }
}

fn put_blocks(out: &mut Vec<u8>, blocks: &[(u64, BlockId)]) {
    put_u64(out, blocks.len() as u64);
    for (s, b) in blocks {
        put_u64(out, *s);
        out.extend_from_slice(b);
    }
}

impl AgaveVoteHistory {
    /// An empty history of `node` rooted at `root`.
    pub fn new(node: NodeId, root: u64) -> Self {
        AgaveVoteHistory {
            node,
            voted: vec![],
            voted_notar: vec![],
            voted_notar_fallback: vec![],
            voted_skip_fallback: vec![],
            skipped: vec![],
            its_over: vec![],
            votes_cast: vec![],
            notarized_blocks: vec![],
            parent_ready_slots: vec![],
            root,
        }
    }

    /// Record `vote` as Agave's `add_vote` does (every set it touches, and
    /// `votes_cast`). For building histories in tests and tools; no rule is
    /// checked here.
    pub fn add_vote(&mut self, vote: SavedVote) {
        fn insert(set: &mut Vec<u64>, slot: u64) {
            if !set.contains(&slot) {
                set.push(slot);
            }
        }
        let slot = vote.slot;
        match vote.kind {
            VoteKind::Notarize(b) => {
                insert(&mut self.voted, slot);
                if !self.voted_notar.iter().any(|(s, _)| *s == slot) {
                    self.voted_notar.push((slot, b));
                }
            }
            VoteKind::Finalize => insert(&mut self.its_over, slot),
            VoteKind::Skip => {
                insert(&mut self.voted, slot);
                insert(&mut self.skipped, slot);
            }
            VoteKind::NotarizeFallback(b) => {
                insert(&mut self.skipped, slot);
                match self
                    .voted_notar_fallback
                    .iter_mut()
                    .find(|(s, _)| *s == slot)
                {
                    Some((_, blocks)) if !blocks.contains(&b) => blocks.push(b),
                    Some(_) => {}
                    None => self.voted_notar_fallback.push((slot, vec![b])),
                }
            }
            VoteKind::SkipFallback => {
                insert(&mut self.skipped, slot);
                insert(&mut self.voted_skip_fallback, slot);
            }
            VoteKind::Genesis(_) => {}
        }
        match self.votes_cast.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, votes)) => votes.push(vote),
            None => self.votes_cast.push((slot, vec![vote])),
        }
    }

    /// Decode `data` (the signed bytes, starting at file offset `base`) in
    /// `layout`, strictly: every byte read, lengths bounded by the input,
    /// and the result re-encodes to exactly `data`. Consistency is checked
    /// separately ([`check`](Self::check)).
    pub fn decode(
        data: &[u8],
        layout: HistoryLayout,
        base: usize,
    ) -> Result<Self, VoteHistoryFileError> {
        let not_in = |detail: String| VoteHistoryFileError::NotInLayout {
            layout,
            detail,
            known: HistoryLayout::known(),
        };
        let mut r = Reader {
            bytes: data,
            at: 0,
            base,
        };
        let h = (|| -> Read<AgaveVoteHistory> {
            let node = NodeId(r.array("node_pubkey")?);
            let voted = r.slots("voted")?;
            let n = r.len("voted_notar", 40)?;
            let voted_notar = (0..n)
                .map(|_| r.block("voted_notar"))
                .collect::<Read<_>>()?;
            let n = r.len("voted_notar_fallback", 16)?;
            let mut voted_notar_fallback = Vec::with_capacity(n);
            for _ in 0..n {
                let slot = r.u64("voted_notar_fallback")?;
                let m = r.len("voted_notar_fallback blocks", 32)?;
                let blocks = (0..m)
                    .map(|_| r.array("voted_notar_fallback blocks"))
                    .collect::<Read<_>>()?;
                voted_notar_fallback.push((slot, blocks));
            }
            let voted_skip_fallback = r.slots("voted_skip_fallback")?;
            let skipped = r.slots("skipped")?;
            let its_over = r.slots("its_over")?;
            let n = r.len("votes_cast", 16)?;
            let mut votes_cast = Vec::with_capacity(n);
            for _ in 0..n {
                let slot = r.u64("votes_cast")?;
                let m = r.len("votes_cast votes", 11)?;
                let votes = (0..m).map(|_| r.vote(layout)).collect::<Read<_>>()?;
                votes_cast.push((slot, votes));
            }
            let n = r.len("notarized_blocks", 40)?;
            let notarized_blocks = (0..n)
                .map(|_| r.block("notarized_blocks"))
                .collect::<Read<_>>()?;
            let n = r.len("parent_ready_slots", 16)?;
            let mut parent_ready_slots = Vec::with_capacity(n);
            for _ in 0..n {
                let slot = r.u64("parent_ready_slots")?;
                let m = r.len("parent_ready_slots parents", 40)?;
                let parents = (0..m)
                    .map(|_| r.block("parent_ready_slots parents"))
                    .collect::<Read<_>>()?;
                parent_ready_slots.push((slot, parents));
            }
            let root = r.u64("root")?;
            Ok(AgaveVoteHistory {
                node,
                voted,
                voted_notar,
                voted_notar_fallback,
                voted_skip_fallback,
                skipped,
                its_over,
                votes_cast,
                notarized_blocks,
                parent_ready_slots,
                root,
            })
        })()
        .map_err(not_in)?;
        if r.at != data.len() {
            return Err(not_in(format!(
                "{} bytes left after the root at offset {}",
                data.len() - r.at,
                base + r.at
            )));
        }
        // Final guard: decoding then encoding is the identity.
        match h.encode(layout) {
            Ok(again) if again == data => Ok(h),
            _ => Err(not_in("the bytes do not re-encode to themselves".into())),
        }
    }

    /// The bytes of this history in `layout`.
    pub fn encode(&self, layout: HistoryLayout) -> Result<Vec<u8>, VoteHistoryFileError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.node.as_bytes());
        put_slots(&mut out, &self.voted);
        put_blocks(&mut out, &self.voted_notar);
        put_u64(&mut out, self.voted_notar_fallback.len() as u64);
        for (slot, blocks) in &self.voted_notar_fallback {
            put_u64(&mut out, *slot);
            put_u64(&mut out, blocks.len() as u64);
            for b in blocks {
                out.extend_from_slice(b);
            }
        }
        put_slots(&mut out, &self.voted_skip_fallback);
        put_slots(&mut out, &self.skipped);
        put_slots(&mut out, &self.its_over);
        put_u64(&mut out, self.votes_cast.len() as u64);
        for (slot, votes) in &self.votes_cast {
            put_u64(&mut out, *slot);
            put_u64(&mut out, votes.len() as u64);
            for v in votes {
                match (layout, v.shred_version) {
                    (HistoryLayout::VoteEnum, None) => {
                        let tag: u32 = match v.kind {
                            VoteKind::Notarize(_) => 0,
                            VoteKind::Finalize => 1,
                            VoteKind::Skip => 2,
                            VoteKind::NotarizeFallback(_) => 3,
                            VoteKind::SkipFallback => 4,
                            VoteKind::Genesis(_) => 5,
                        };
                        out.extend_from_slice(&tag.to_le_bytes());
                        put_u64(&mut out, v.slot);
                        if let Some(b) = v.kind.block() {
                            out.extend_from_slice(b);
                        }
                    }
                    (HistoryLayout::SignedPayload, Some(shred_version)) => {
                        out.extend_from_slice(
                            &Vote {
                                slot: v.slot,
                                kind: v.kind,
                                shred_version,
                            }
                            .to_bytes(),
                        );
                    }
                    (layout, sv) => {
                        return Err(VoteHistoryFileError::Unencodable {
                            layout,
                            detail: format!(
                                "vote {} in slot {} {} a shred version",
                                v.kind,
                                v.slot,
                                if sv.is_some() { "has" } else { "lacks" }
                            ),
                        })
                    }
                }
            }
        }
        put_blocks(&mut out, &self.notarized_blocks);
        put_u64(&mut out, self.parent_ready_slots.len() as u64);
        for (slot, parents) in &self.parent_ready_slots {
            put_u64(&mut out, *slot);
            put_blocks(&mut out, parents);
        }
        put_u64(&mut out, self.root);
        Ok(out)
    }

    /// Check that the history holds together as Agave's code keeps it:
    /// nothing below the root (as Agave's `set_root` prunes and Firedancer's
    /// reader checks), no repeated member in a set or key in a map, every
    /// vote filed under its own slot, and every slot in `voted` (Notarize
    /// or Skip) and `skipped` (Skip, SkipFallback or NotarizeFallback)
    /// explained by a vote in [`votes`](Self::votes): such an entry says a
    /// vote was cast without saying which, and the history would then hold
    /// a vote that cannot be recorded.
    pub fn check(&self) -> Result<(), VoteHistoryFileError> {
        let bad = |detail: String| Err(VoteHistoryFileError::Inconsistent { detail });
        let root = self.root;
        let keys: [(&str, Vec<u64>); 9] = [
            ("voted", self.voted.clone()),
            (
                "voted_notar",
                self.voted_notar.iter().map(|x| x.0).collect(),
            ),
            (
                "voted_notar_fallback",
                self.voted_notar_fallback.iter().map(|x| x.0).collect(),
            ),
            ("voted_skip_fallback", self.voted_skip_fallback.clone()),
            ("skipped", self.skipped.clone()),
            ("its_over", self.its_over.clone()),
            ("votes_cast", self.votes_cast.iter().map(|x| x.0).collect()),
            (
                "parent_ready_slots",
                self.parent_ready_slots.iter().map(|x| x.0).collect(),
            ),
            (
                "notarized_blocks",
                self.notarized_blocks.iter().map(|x| x.0).collect(),
            ),
        ];
        for (field, slots) in &keys {
            if let Some(s) = slots.iter().find(|s| **s < root) {
                return bad(format!("{field} holds slot {s}, below the root {root}"));
            }
            // notarized_blocks is a set of (slot, block): a slot may repeat.
            if *field != "notarized_blocks"
                && slots.iter().collect::<BTreeSet<_>>().len() != slots.len()
            {
                return bad(format!("{field} repeats a slot"));
            }
        }
        let distinct = |v: &[(u64, BlockId)]| v.iter().collect::<BTreeSet<_>>().len() == v.len();
        if !distinct(&self.notarized_blocks) {
            return bad("notarized_blocks repeats a block".into());
        }
        for (slot, parents) in &self.parent_ready_slots {
            if !distinct(parents) {
                return bad(format!("parent_ready_slots[{slot}] repeats a parent"));
            }
        }
        for (slot, blocks) in &self.voted_notar_fallback {
            if blocks.iter().collect::<BTreeSet<_>>().len() != blocks.len() {
                return bad(format!("voted_notar_fallback[{slot}] repeats a block"));
            }
        }
        for (slot, votes) in &self.votes_cast {
            if let Some(v) = votes.iter().find(|v| v.slot != *slot) {
                return bad(format!(
                    "votes_cast[{slot}] holds {} for slot {}",
                    v.kind, v.slot
                ));
            }
        }
        let mut kinds: BTreeMap<u64, Vec<VoteKind>> = BTreeMap::new();
        for (slot, kind) in self.all_votes() {
            kinds.entry(slot).or_default().push(kind);
        }
        let has =
            |slot: &u64, f: fn(&VoteKind) -> bool| kinds.get(slot).is_some_and(|k| k.iter().any(f));
        if let Some(s) = self
            .voted
            .iter()
            .find(|s| !has(s, |k| matches!(k, VoteKind::Notarize(_) | VoteKind::Skip)))
        {
            return bad(format!(
                "voted holds slot {s} with no Notarize or Skip vote recorded in it"
            ));
        }
        if let Some(s) = self.skipped.iter().find(|s| {
            !has(s, |k| {
                matches!(
                    k,
                    VoteKind::Skip | VoteKind::SkipFallback | VoteKind::NotarizeFallback(_)
                )
            })
        }) {
            return bad(format!(
                "skipped holds slot {s} with no Skip, SkipFallback or NotarizeFallback vote recorded in it"
            ));
        }
        Ok(())
    }

    /// Every vote the history says was cast, as (slot, kind): the votes of
    /// `votes_cast`, and those the per-kind sets name (`voted_notar`,
    /// `voted_notar_fallback`, `voted_skip_fallback`, `its_over`) even if
    /// `votes_cast` lacks them. Both are what the validator decides on, so
    /// both are recorded.
    fn all_votes(&self) -> Vec<(u64, VoteKind)> {
        let mut out: Vec<(u64, VoteKind)> = self
            .votes_cast
            .iter()
            .flat_map(|(_, votes)| votes.iter())
            .map(|v| (v.slot, v.kind))
            .collect();
        out.extend(
            self.voted_notar
                .iter()
                .map(|(s, b)| (*s, VoteKind::Notarize(*b))),
        );
        out.extend(self.voted_notar_fallback.iter().flat_map(|(s, blocks)| {
            blocks
                .iter()
                .map(move |b| (*s, VoteKind::NotarizeFallback(*b)))
        }));
        out.extend(
            self.voted_skip_fallback
                .iter()
                .map(|s| (*s, VoteKind::SkipFallback)),
        );
        out.extend(self.its_over.iter().map(|s| (*s, VoteKind::Finalize)));
        out
    }

    /// Every vote the history says was cast (see [`check`](Self::check)),
    /// as slashguard votes: `votes_cast` in file order, then what only the
    /// per-kind sets name. A vote without a shred version
    /// ([`HistoryLayout::VoteEnum`], and those the sets name) takes
    /// `shred_version`, the cluster's; repeats are left to the rules
    /// (an identical repeat is the same vote).
    pub fn votes(&self, shred_version: u16) -> Vec<Vote> {
        let cast = self
            .votes_cast
            .iter()
            .flat_map(|(_, votes)| votes.iter())
            .map(|v| Vote {
                slot: v.slot,
                kind: v.kind,
                shred_version: v.shred_version.unwrap_or(shred_version),
            });
        let in_cast = |slot: u64, kind: &VoteKind| {
            self.votes_cast
                .iter()
                .any(|(s, votes)| *s == slot && votes.iter().any(|v| v.kind == *kind))
        };
        let named = self
            .all_votes()
            .into_iter()
            .skip(self.votes_cast.iter().map(|(_, v)| v.len()).sum::<usize>())
            .filter(|(slot, kind)| !in_cast(*slot, kind))
            .map(|(slot, kind)| Vote {
                slot,
                kind,
                shred_version,
            });
        cast.chain(named).collect()
    }

    /// The highest slot with a vote.
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.votes_cast.iter().map(|(s, _)| *s).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(layout: HistoryLayout) -> AgaveVoteHistory {
        let sv = match layout {
            HistoryLayout::VoteEnum => None,
            HistoryLayout::SignedPayload => Some(9),
        };
        let mut h = AgaveVoteHistory::new(NodeId([5; 32]), 10);
        for (slot, kind) in [
            (11, VoteKind::Notarize([0xaa; 32])),
            (12, VoteKind::Skip),
            (12, VoteKind::SkipFallback),
            (12, VoteKind::NotarizeFallback([0xb1; 32])),
            (11, VoteKind::Finalize),
        ] {
            h.add_vote(SavedVote {
                slot,
                kind,
                shred_version: sv,
            });
        }
        h.notarized_blocks.push((11, [0xaa; 32]));
        h.parent_ready_slots.push((12, vec![(11, [0xaa; 32])]));
        h
    }

    /// A file shaped like Firedancer's reader test (root 10, a notarize in
    /// 11, skip and fallbacks in 12), written out field by field here.
    #[test]
    fn signed_payload_layout_byte_vector() {
        let mut d = Vec::new();
        d.extend_from_slice(&[5; 32]);
        let u = |d: &mut Vec<u8>, v: u64| d.extend_from_slice(&v.to_le_bytes());
        u(&mut d, 2);
        u(&mut d, 11);
        u(&mut d, 12); // voted
        u(&mut d, 1);
        u(&mut d, 11);
        d.extend_from_slice(&[0xaa; 32]); // voted_notar
        u(&mut d, 1);
        u(&mut d, 12);
        u(&mut d, 1);
        d.extend_from_slice(&[0xb1; 32]); // voted_notar_fallback
        u(&mut d, 1);
        u(&mut d, 12); // voted_skip_fallback
        u(&mut d, 1);
        u(&mut d, 12); // skipped
        u(&mut d, 0); // its_over
        u(&mut d, 2); // votes_cast
        u(&mut d, 11);
        u(&mut d, 1);
        d.push(1);
        u(&mut d, 11);
        d.extend_from_slice(&[0xaa; 32]);
        d.extend_from_slice(&9u16.to_le_bytes());
        u(&mut d, 12);
        u(&mut d, 3);
        for (code, block) in [(3u8, None), (5, None), (4, Some([0xb1u8; 32]))] {
            d.push(code);
            u(&mut d, 12);
            if let Some(b) = block {
                d.extend_from_slice(&b);
            }
            d.extend_from_slice(&9u16.to_le_bytes());
        }
        u(&mut d, 1);
        u(&mut d, 11);
        d.extend_from_slice(&[0xaa; 32]); // notarized_blocks
        u(&mut d, 1);
        u(&mut d, 12);
        u(&mut d, 1);
        u(&mut d, 11);
        d.extend_from_slice(&[0xaa; 32]); // parent_ready_slots
        u(&mut d, 10); // root

        let h = AgaveVoteHistory::decode(&d, HistoryLayout::SignedPayload, 76).unwrap();
        let mut want = sample(HistoryLayout::SignedPayload);
        // Without the finalize (Firedancer's vector has none).
        want.its_over.clear();
        want.votes_cast[0].1.pop();
        assert_eq!(h, want);
        h.check().unwrap();
        assert_eq!(h.encode(HistoryLayout::SignedPayload).unwrap(), d);
        // The same bytes are not a vote-enum history.
        assert!(matches!(
            AgaveVoteHistory::decode(&d, HistoryLayout::VoteEnum, 76),
            Err(VoteHistoryFileError::NotInLayout { .. })
        ));
    }

    #[test]
    fn vote_enum_layout_writes_u32_variants_without_shred_version() {
        let h = sample(HistoryLayout::VoteEnum);
        let bytes = h.encode(HistoryLayout::VoteEnum).unwrap();
        // node, voted(2), voted_notar(1), fallback(1 slot, 1 block),
        // skip_fallback(1), skipped(1), its_over(1), then votes_cast.
        let at = 32 + 24 + 48 + 56 + 16 + 16 + 16;
        assert_eq!(&bytes[at..at + 8], &2u64.to_le_bytes());
        assert_eq!(&bytes[at + 8..at + 16], &11u64.to_le_bytes());
        assert_eq!(&bytes[at + 16..at + 24], &2u64.to_le_bytes());
        // Notarize: variant 0, slot, block.
        assert_eq!(&bytes[at + 24..at + 28], &0u32.to_le_bytes());
        assert_eq!(&bytes[at + 28..at + 36], &11u64.to_le_bytes());
        assert_eq!(&bytes[at + 36..at + 68], &[0xaa; 32]);
        // Finalize: variant 1, slot.
        assert_eq!(&bytes[at + 68..at + 72], &1u32.to_le_bytes());
        let back = AgaveVoteHistory::decode(&bytes, HistoryLayout::VoteEnum, 0).unwrap();
        assert_eq!(back, h);
        back.check().unwrap();
        assert!(h.encode(HistoryLayout::SignedPayload).is_err());
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        for layout in HistoryLayout::ALL {
            let bytes = sample(layout).encode(layout).unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    AgaveVoteHistory::decode(&bytes[..cut], layout, 0).is_err(),
                    "{layout} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(AgaveVoteHistory::decode(&long, layout, 0).is_err());
        }
    }

    #[test]
    fn an_absurd_length_is_refused_before_allocating() {
        let mut bytes = sample(HistoryLayout::VoteEnum)
            .encode(HistoryLayout::VoteEnum)
            .unwrap();
        bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = AgaveVoteHistory::decode(&bytes, HistoryLayout::VoteEnum, 0).unwrap_err();
        assert!(err.to_string().contains("declares"), "{err}");
    }

    #[test]
    fn inconsistent_histories_are_refused() {
        let good = sample(HistoryLayout::VoteEnum);
        good.check().unwrap();
        type Change = Box<dyn Fn(&mut AgaveVoteHistory)>;
        let cases: Vec<(&str, Change)> = vec![
            ("below root", Box::new(|h| h.root = 12)),
            ("voted without a vote", Box::new(|h| h.voted.push(13))),
            ("skipped without a vote", Box::new(|h| h.skipped.push(14))),
            ("repeated slot", Box::new(|h| h.voted.push(11))),
            (
                "vote under another slot",
                Box::new(|h| h.votes_cast[0].1[0].slot = 12),
            ),
            (
                "repeated fallback block",
                Box::new(|h| h.voted_notar_fallback[0].1.push([0xb1; 32])),
            ),
            (
                "repeated notarized block",
                Box::new(|h| h.notarized_blocks.push((11, [0xaa; 32]))),
            ),
        ];
        for (name, change) in cases {
            let mut h = good.clone();
            change(&mut h);
            assert!(
                matches!(h.check(), Err(VoteHistoryFileError::Inconsistent { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn votes_named_only_by_a_set_are_votes_too() {
        let mut h = sample(HistoryLayout::VoteEnum);
        // A finalize the sets name but votes_cast lacks: still cast.
        h.its_over.push(13);
        h.check().unwrap();
        let votes = h.votes(4);
        assert!(votes.contains(&Vote {
            slot: 13,
            kind: VoteKind::Finalize,
            shred_version: 4
        }));
        // votes_cast first, in file order.
        assert_eq!(votes[0].kind, VoteKind::Notarize([0xaa; 32]));
        assert_eq!(votes[0].shred_version, 4);
    }

    #[test]
    fn layouts_are_named_and_coded() {
        for l in HistoryLayout::ALL {
            assert_eq!(HistoryLayout::from_code(l.code()).unwrap(), l);
            assert_eq!(HistoryLayout::from_name(l.name()).unwrap(), l);
        }
        let err = HistoryLayout::from_code(9).unwrap_err().to_string();
        assert!(
            err.contains("vote-enum") && err.contains("signed-payload"),
            "{err}"
        );
    }
}
