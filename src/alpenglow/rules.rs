//! The rules a vote history enforces, pure and without I/O.
//!
//! Per slot s, these pairs are slashable (Anza's reference implementation
//! and Firedancer agree) and always refused, in either order:
//!
//! - Notarize(s, b) and Notarize(s, b') with b != b';
//! - Skip(s) and Notarize(s, _);
//! - Skip(s) or SkipFallback(s) and Finalize(s);
//! - NotarizeFallback(s, _) and Finalize(s).
//!
//! Two Genesis votes for different blocks in one slot are refused too (the
//! migration casts one; a second for another block is an equivocation).
//!
//! [`RuleMode::Strict`] also refuses what an honest Agave node never casts
//! and Agave's vote pools treat as conflicting: Notarize(s, b) with
//! NotarizeFallback(s, b); Skip(s) with SkipFallback(s); a fallback vote
//! with no first-round vote (Notarize or Skip) in s before it.
//!
//! An identical repeat is [`Check::SameData`]: it may be signed again, and
//! the signature is the same bytes (BLS signing is deterministic).

use crate::alpenglow::payload::{BlockId, Vote, VoteKind};

/// Which rule set applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleMode {
    /// Refuse the slashable pairs only.
    #[default]
    Slashable,
    /// Also refuse the pairs Agave's pools treat as conflicting.
    Strict,
}

/// This node's own votes in one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotVotes {
    /// The block notarized, if any.
    pub notarize: Option<BlockId>,
    /// Skip was cast.
    pub skip: bool,
    /// Finalize was cast.
    pub finalize: bool,
    /// Blocks given a NotarizeFallback vote, sorted, without repeats.
    pub notarize_fallback: Vec<BlockId>,
    /// SkipFallback was cast.
    pub skip_fallback: bool,
    /// The block of the migration's Genesis vote, if cast in this slot.
    pub genesis: Option<BlockId>,
}

impl SlotVotes {
    /// `true` when no vote is recorded.
    pub fn is_empty(&self) -> bool {
        *self == SlotVotes::default()
    }

    /// The votes recorded, in kind order.
    pub fn kinds(&self) -> Vec<VoteKind> {
        let mut out = Vec::new();
        if let Some(b) = self.notarize {
            out.push(VoteKind::Notarize(b));
        }
        if self.finalize {
            out.push(VoteKind::Finalize);
        }
        if self.skip {
            out.push(VoteKind::Skip);
        }
        out.extend(
            self.notarize_fallback
                .iter()
                .map(|b| VoteKind::NotarizeFallback(*b)),
        );
        if self.skip_fallback {
            out.push(VoteKind::SkipFallback);
        }
        if let Some(b) = self.genesis {
            out.push(VoteKind::Genesis(b));
        }
        out
    }

    /// `true` when exactly this vote is already recorded.
    pub fn contains(&self, kind: &VoteKind) -> bool {
        match kind {
            VoteKind::Notarize(b) => self.notarize == Some(*b),
            VoteKind::Finalize => self.finalize,
            VoteKind::Skip => self.skip,
            VoteKind::NotarizeFallback(b) => self.notarize_fallback.binary_search(b).is_ok(),
            VoteKind::SkipFallback => self.skip_fallback,
            VoteKind::Genesis(b) => self.genesis == Some(*b),
        }
    }

    /// Record `kind` (the caller checked it with [`check_slot`]).
    pub fn insert(&mut self, kind: VoteKind) {
        match kind {
            VoteKind::Notarize(b) => self.notarize = Some(b),
            VoteKind::Finalize => self.finalize = true,
            VoteKind::Skip => self.skip = true,
            VoteKind::NotarizeFallback(b) => {
                if let Err(at) = self.notarize_fallback.binary_search(&b) {
                    self.notarize_fallback.insert(at, b);
                }
            }
            VoteKind::SkipFallback => self.skip_fallback = true,
            VoteKind::Genesis(b) => self.genesis = Some(b),
        }
    }
}

/// What the rules say about a vote that is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not recorded yet: record it durably, then sign.
    New,
    /// Exactly this vote is recorded: sign again (same bytes), nothing to
    /// store.
    SameData,
}

/// A vote the history refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlpenglowRefusal {
    /// The vote conflicts with one this node already cast in the slot.
    #[error("{vote} conflicts with {recorded} already cast in slot {slot} ({why})")]
    Conflict {
        /// The slot.
        slot: u64,
        /// The vote asked for.
        vote: VoteKind,
        /// The recorded vote it conflicts with.
        recorded: VoteKind,
        /// Slashable, or refused by the strict rules only.
        why: ConflictClass,
    },
    /// A fallback vote with no first-round vote in its slot (strict mode).
    #[error("{vote} in slot {slot} without a Notarize or Skip before it (strict mode)")]
    FallbackFirst {
        /// The slot.
        slot: u64,
        /// The fallback vote.
        vote: VoteKind,
    },
    /// The slot is below the history's finalized root.
    #[error("slot {slot} is below the finalized root {root}")]
    BelowRoot {
        /// The vote's slot.
        slot: u64,
        /// The root.
        root: u64,
    },
    /// The vote is for another cluster.
    #[error("vote for shred version {vote}, the history is for {history}")]
    ShredVersion {
        /// The vote's shred version.
        vote: u16,
        /// The history's.
        history: u16,
    },
    /// One more NotarizeFallback in a slot that holds
    /// [`MAX_NOTARIZE_FALLBACKS`] already: more blocks than can be safe to
    /// notarize.
    #[error("slot {slot} already holds NotarizeFallback votes for {max} blocks, more than can be safe to notarize; refused")]
    TooManyFallbacks {
        /// The slot.
        slot: u64,
        /// The bound.
        max: usize,
    },
    /// The root would move backwards.
    #[error("root would move back from {stored} to {requested}")]
    RootRegressed {
        /// The stored root.
        stored: u64,
        /// The one asked for.
        requested: u64,
    },
    /// No vote history exists for this identity, and starting one without
    /// evidence could sign what the previous owner signed.
    #[error("no vote history for {identity}: import the previous owner's (`slashguard vote-history import`) or start with a finalized slot past its last vote")]
    NoHistory {
        /// The identity.
        identity: String,
    },
    /// A whole history offered in place of the stored one (an Agave
    /// validator's saved file) lacks a vote the stored one holds: it is
    /// older than the stored history, or another instance's.
    #[error("the history offered lacks {vote} in slot {slot}, which the stored history holds: it is older than the stored one (or another instance's); nothing was stored")]
    HistoryRegressed {
        /// The slot.
        slot: u64,
        /// The recorded vote missing from the offered history.
        vote: VoteKind,
    },
    /// A vote history already exists; starting a fresh one would forget it.
    #[error("a vote history for {identity} already exists (root {root}); it is never replaced")]
    HistoryExists {
        /// The identity.
        identity: String,
        /// Its root.
        root: u64,
    },
}

/// The most blocks one slot may hold a NotarizeFallback vote for. A
/// node casts NotarizeFallback(b) only when b is safe to notarize, which
/// needs at least 20% of the stake's notarize votes for b; each node
/// notarizes at most one block per slot, so at most five blocks qualify.
/// The bound leaves room above that and keeps a slot's record (and the
/// format's 16-bit count of fallback blocks) small: a caller asking for
/// more is refused, never written.
pub const MAX_NOTARIZE_FALLBACKS: usize = 64;

/// Why two votes in one slot conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictClass {
    /// Provably slashable.
    Slashable,
    /// Not slashable, but never cast by an honest node (strict mode).
    Strict,
}

impl std::fmt::Display for ConflictClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictClass::Slashable => "slashable",
            ConflictClass::Strict => "conflicting in Agave's pools",
        })
    }
}

/// Is the pair (`a`, `b`) of votes in one slot slashable? Symmetric.
pub fn slashable_pair(a: &VoteKind, b: &VoteKind) -> bool {
    use VoteKind::*;
    let one_way = |x: &VoteKind, y: &VoteKind| match (x, y) {
        (Notarize(p), Notarize(q)) => p != q,
        (Genesis(p), Genesis(q)) => p != q,
        (Skip, Notarize(_)) => true,
        (Skip | SkipFallback, Finalize) => true,
        (NotarizeFallback(_), Finalize) => true,
        _ => false,
    };
    one_way(a, b) || one_way(b, a)
}

/// Is the pair one that only the strict rules refuse? Symmetric.
pub fn strict_pair(a: &VoteKind, b: &VoteKind) -> bool {
    use VoteKind::*;
    let one_way = |x: &VoteKind, y: &VoteKind| match (x, y) {
        (Notarize(p), NotarizeFallback(q)) => p == q,
        (Skip, SkipFallback) => true,
        _ => false,
    };
    one_way(a, b) || one_way(b, a)
}

/// Check `kind` against the votes already cast in `slot`.
pub fn check_slot(
    slot: u64,
    recorded: &SlotVotes,
    kind: &VoteKind,
    mode: RuleMode,
) -> Result<Check, AlpenglowRefusal> {
    if recorded.contains(kind) {
        return Ok(Check::SameData);
    }
    if matches!(kind, VoteKind::NotarizeFallback(_))
        && recorded.notarize_fallback.len() >= MAX_NOTARIZE_FALLBACKS
    {
        return Err(AlpenglowRefusal::TooManyFallbacks {
            slot,
            max: MAX_NOTARIZE_FALLBACKS,
        });
    }
    for old in recorded.kinds() {
        let why = if slashable_pair(&old, kind) {
            ConflictClass::Slashable
        } else if mode == RuleMode::Strict && strict_pair(&old, kind) {
            ConflictClass::Strict
        } else {
            continue;
        };
        return Err(AlpenglowRefusal::Conflict {
            slot,
            vote: *kind,
            recorded: old,
            why,
        });
    }
    if mode == RuleMode::Strict
        && matches!(kind, VoteKind::NotarizeFallback(_) | VoteKind::SkipFallback)
        && recorded.notarize.is_none()
        && !recorded.skip
    {
        return Err(AlpenglowRefusal::FallbackFirst { slot, vote: *kind });
    }
    Ok(Check::New)
}

/// Check a whole vote against a history's root and shred version, then
/// against the slot's recorded votes.
pub fn check_vote(
    root: u64,
    shred_version: u16,
    recorded: Option<&SlotVotes>,
    vote: &Vote,
    mode: RuleMode,
) -> Result<Check, AlpenglowRefusal> {
    if vote.shred_version != shred_version {
        return Err(AlpenglowRefusal::ShredVersion {
            vote: vote.shred_version,
            history: shred_version,
        });
    }
    if vote.slot < root {
        return Err(AlpenglowRefusal::BelowRoot {
            slot: vote.slot,
            root,
        });
    }
    let empty = SlotVotes::default();
    check_slot(vote.slot, recorded.unwrap_or(&empty), &vote.kind, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VoteKind::*;

    const B: BlockId = [1; 32];
    const C: BlockId = [2; 32];

    fn all_kinds() -> Vec<VoteKind> {
        vec![
            Notarize(B),
            Notarize(C),
            Finalize,
            Skip,
            NotarizeFallback(B),
            NotarizeFallback(C),
            SkipFallback,
            Genesis(B),
            Genesis(C),
        ]
    }

    /// The slashable table, written out pair by pair (first vote, second
    /// vote), independently of `slashable_pair`'s code.
    fn expected_slashable(a: &VoteKind, b: &VoteKind) -> bool {
        let s = |x: &VoteKind| match x {
            Notarize(b) if *b == B => "N1",
            Notarize(_) => "N2",
            Finalize => "F",
            Skip => "S",
            NotarizeFallback(b) if *b == B => "NF1",
            NotarizeFallback(_) => "NF2",
            SkipFallback => "SF",
            Genesis(b) if *b == B => "G1",
            Genesis(_) => "G2",
        };
        const TABLE: &[(&str, &str)] = &[
            ("N1", "N2"),
            ("S", "N1"),
            ("S", "N2"),
            ("S", "F"),
            ("SF", "F"),
            ("NF1", "F"),
            ("NF2", "F"),
            ("G1", "G2"),
        ];
        TABLE
            .iter()
            .any(|&(x, y)| (s(a), s(b)) == (x, y) || (s(a), s(b)) == (y, x))
    }

    fn expected_strict_only(a: &VoteKind, b: &VoteKind) -> bool {
        matches!(
            (a, b),
            (Notarize(x), NotarizeFallback(y)) | (NotarizeFallback(x), Notarize(y)) if x == y
        ) || matches!((a, b), (Skip, SkipFallback) | (SkipFallback, Skip))
    }

    #[test]
    fn every_pair_of_kinds_in_one_slot() {
        for first in all_kinds() {
            for second in all_kinds() {
                let mut recorded = SlotVotes::default();
                recorded.insert(first);
                for mode in [RuleMode::Slashable, RuleMode::Strict] {
                    let got = check_slot(9, &recorded, &second, mode);
                    let label = format!("{first} then {second} ({mode:?})");
                    if first == second {
                        assert_eq!(got, Ok(Check::SameData), "{label}");
                    } else if expected_slashable(&first, &second) {
                        assert!(
                            matches!(got, Err(AlpenglowRefusal::Conflict { why: ConflictClass::Slashable, recorded, .. }) if recorded == first),
                            "{label}: {got:?}"
                        );
                    } else if mode == RuleMode::Strict && expected_strict_only(&first, &second) {
                        assert!(
                            matches!(
                                got,
                                Err(AlpenglowRefusal::Conflict {
                                    why: ConflictClass::Strict,
                                    ..
                                })
                            ),
                            "{label}: {got:?}"
                        );
                    } else if mode == RuleMode::Strict
                        && matches!(second, NotarizeFallback(_) | SkipFallback)
                        && !matches!(first, Notarize(_) | Skip)
                    {
                        assert!(
                            matches!(got, Err(AlpenglowRefusal::FallbackFirst { .. })),
                            "{label}: {got:?}"
                        );
                    } else {
                        assert_eq!(got, Ok(Check::New), "{label}");
                    }
                    assert_eq!(
                        slashable_pair(&first, &second),
                        expected_slashable(&first, &second),
                        "{label}"
                    );
                }
            }
        }
    }

    #[test]
    fn fallbacks_per_slot_are_bounded() {
        let mut s = SlotVotes {
            skip: true,
            ..SlotVotes::default()
        };
        for i in 0..MAX_NOTARIZE_FALLBACKS {
            let k = NotarizeFallback([i as u8; 32]);
            assert_eq!(check_slot(3, &s, &k, RuleMode::Slashable), Ok(Check::New));
            s.insert(k);
        }
        let max = MAX_NOTARIZE_FALLBACKS;
        for mode in [RuleMode::Slashable, RuleMode::Strict] {
            assert_eq!(
                check_slot(3, &s, &NotarizeFallback([0xff; 32]), mode),
                Err(AlpenglowRefusal::TooManyFallbacks { slot: 3, max })
            );
            // A recorded one is still a repeat; other kinds are unaffected.
            assert_eq!(
                check_slot(3, &s, &NotarizeFallback([0; 32]), mode),
                Ok(Check::SameData)
            );
            assert_eq!(
                check_slot(3, &s, &SkipFallback, RuleMode::Slashable),
                Ok(Check::New)
            );
        }
    }

    #[test]
    fn honest_sequences_pass_strict_mode() {
        // Notarize, then fallback for another block, then skip-fallback.
        let mut s = SlotVotes::default();
        for k in [Notarize(B), NotarizeFallback(C), SkipFallback] {
            assert_eq!(
                check_slot(3, &s, &k, RuleMode::Strict),
                Ok(Check::New),
                "{k}"
            );
            s.insert(k);
        }
        // Notarize then Finalize.
        let mut s = SlotVotes::default();
        for k in [Notarize(B), Finalize] {
            assert_eq!(check_slot(3, &s, &k, RuleMode::Strict), Ok(Check::New));
            s.insert(k);
        }
        // Skip then NotarizeFallback (no Finalize can follow).
        let mut s = SlotVotes::default();
        for k in [Skip, NotarizeFallback(B)] {
            assert_eq!(check_slot(3, &s, &k, RuleMode::Strict), Ok(Check::New));
            s.insert(k);
        }
        assert!(check_slot(3, &s, &Finalize, RuleMode::Slashable).is_err());
    }

    #[test]
    fn root_and_shred_version() {
        let v = |slot, sv| Vote {
            slot,
            kind: Skip,
            shred_version: sv,
        };
        assert_eq!(
            check_vote(10, 7, None, &v(9, 7), RuleMode::Slashable),
            Err(AlpenglowRefusal::BelowRoot { slot: 9, root: 10 })
        );
        assert_eq!(
            check_vote(10, 7, None, &v(10, 7), RuleMode::Slashable),
            Ok(Check::New)
        );
        assert_eq!(
            check_vote(10, 7, None, &v(11, 8), RuleMode::Slashable),
            Err(AlpenglowRefusal::ShredVersion {
                vote: 8,
                history: 7
            })
        );
    }
}
