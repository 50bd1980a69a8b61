//! Agave's `VoteHistoryStorage`, without Agave's crates: an adapter that
//! takes the bytes Agave writes to `vote_history-<identity>.bin` (the
//! bincode of `SavedVoteHistoryVersions`), checks them, records their
//! votes in any slashguard [`HistoryStorage`] (durable and fenced) and keeps
//! the file with them, then gives it back byte for byte.
//!
//! Agave's trait is synchronous (`load(&Pubkey) -> Result<VoteHistory>`,
//! `store(&SavedVoteHistoryVersions) -> Result<()>`); Agave stores before
//! it sends a vote and shuts down on a store error. The async adapter is
//! wrapped in [`Blocking`](crate::blocking::Blocking) for that shape;
//! README "Agave's VoteHistoryStorage" shows the whole implementation.

use crate::agave::vote_history::error::VoteHistoryFileError;
use crate::agave::vote_history::layout::HistoryLayout;
use crate::agave::vote_history::saved::SavedVoteHistory;
use crate::alpenglow::storage::no_history;
use crate::alpenglow::{
    AgaveCopy, AlpenglowRefusal, Applied, Check, HistoryStep, HistoryStorage, HistoryUpdate,
    RuleMode, VoteHistory,
};
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

/// Why the adapter did not load or store a vote history. Agave treats
/// every store error as fatal; [`Fenced`](Self::Fenced) means *stop voting
/// now*.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgaveVoteHistoryError {
    /// This instance no longer owns the identity (another instance took it
    /// over, the lease expired, another process holds the store): stop
    /// voting now. Nothing was stored.
    #[error("stop voting now: {0}")]
    Fenced(#[source] Error),
    /// No vote history was ever stored for the identity (Agave then starts
    /// one only with `--do-not-require-vote-history`, or when its vote
    /// account has no Alpenglow vote yet).
    #[error("no Agave vote history stored for identity {node}")]
    NotFound {
        /// The identity.
        node: NodeId,
    },
    /// The history would record a slashable pair, a vote below the stored
    /// root or for another cluster, move the root back, or lose a vote the
    /// store holds (an older file): refused, nothing stored.
    #[error("vote history refused: {0}")]
    Refused(#[source] Error),
    /// The bytes are not a valid Agave vote history of the identity in the
    /// pinned layout (undecodable, another identity, a bad signature,
    /// inconsistent), or the store holds votes that no Agave file
    /// describes.
    #[error("vote history of identity {node}: {source}")]
    Invalid {
        /// The adapter's identity.
        node: NodeId,
        /// What is wrong.
        source: VoteHistoryFileError,
    },
    /// The store could not answer (unavailable within its deadline,
    /// damaged data, I/O): the history is not known to be stored.
    #[error(transparent)]
    Failed(Error),
}

impl AgaveVoteHistoryError {
    /// `true` when the validator must stop voting now (it lost the
    /// identity).
    pub fn is_fenced(&self) -> bool {
        matches!(self, AgaveVoteHistoryError::Fenced(_))
    }

    /// `true` when no history was ever stored.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgaveVoteHistoryError::NotFound { .. })
    }

    fn of(e: Error) -> Self {
        match e {
            Error::Fenced { .. } | Error::Locked { .. } => AgaveVoteHistoryError::Fenced(e),
            Error::Refused(_) | Error::Regressed { .. } => AgaveVoteHistoryError::Refused(e),
            e => AgaveVoteHistoryError::Failed(e),
        }
    }
}

/// Agave's vote history storage over a slashguard [`HistoryStorage`] of
/// one identity, pinned to one [`HistoryLayout`] (the one the validator's
/// release writes; bytes in any other are refused, naming the layouts this
/// build knows).
///
/// [`store`](Self::store) verifies the file (envelope, identity, strict
/// signature, canonical bytes, consistency), then in ONE durable, fenced
/// write of the store: moves the root to the file's root (never back),
/// records every vote the file says was cast under the slashable rules,
/// refuses a file that lacks a vote the store already holds (an older
/// file: [`AlpenglowRefusal::HistoryRegressed`]), and keeps the file's
/// bytes with the history. [`load`](Self::load) gives back exactly those
/// bytes, after checking them again and checking that the store recorded
/// nothing since (a vote recorded by another path has no Agave file, and
/// is refused rather than forgotten).
///
/// The store must hold a history first (an operator's import, or
/// [`start_history`](Self::start_history) with a finalized slot past every
/// vote the identity cast): a store without one refuses with
/// [`AlpenglowRefusal::NoHistory`], so a validator is never started on an
/// empty history by accident.
pub struct AgaveVoteHistoryStorage<S> {
    storage: S,
    layout: HistoryLayout,
}

impl<S: HistoryStorage> AgaveVoteHistoryStorage<S> {
    /// An adapter storing into `storage` files in `layout`.
    pub fn new(storage: S, layout: HistoryLayout) -> Self {
        AgaveVoteHistoryStorage { storage, layout }
    }

    /// The identity whose history this adapter stores.
    pub fn node(&self) -> NodeId {
        self.storage.node()
    }

    /// The layout the adapter is pinned to.
    pub fn layout(&self) -> HistoryLayout {
        self.layout
    }

    /// The storage behind the adapter.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Start the identity's history: rooted at `finalized` (a slot the
    /// cluster finalized after the identity's last vote, from any
    /// instance), for the cluster `shred_version`. Once; never replaces a
    /// history ([`AlpenglowRefusal::HistoryExists`]).
    pub async fn start_history(
        &self,
        shred_version: u16,
        finalized: u64,
    ) -> std::result::Result<StoreReceipt, AgaveVoteHistoryError> {
        let history = VoteHistory::new(self.node(), shred_version, finalized);
        self.storage
            .create(&history)
            .await
            .map_err(AgaveVoteHistoryError::of)
    }

    /// Start the identity's history from an Agave file (an operator's
    /// import): ONE create holding the file's root, its votes and the file
    /// itself, so that no empty history is ever left behind if it fails.
    /// `shred_version` is the cluster's. Refused like
    /// [`store`](Self::store), and with
    /// [`AlpenglowRefusal::HistoryExists`] when the store has a history.
    pub async fn start_from_file(
        &self,
        saved: &[u8],
        shred_version: u16,
    ) -> std::result::Result<StoreReceipt, AgaveVoteHistoryError> {
        let node = self.node();
        let saved = SavedVoteHistory::decode(saved, self.layout, &node)
            .map_err(|source| AgaveVoteHistoryError::Invalid { node, source })?;
        let fresh = VoteHistory::new(node, shred_version, saved.root());
        let (first, _) =
            plan_file(node, Some(&fresh), &saved).map_err(AgaveVoteHistoryError::of)?;
        self.storage
            .create(&first.unwrap_or(fresh))
            .await
            .map_err(AgaveVoteHistoryError::of)
    }

    /// Agave's `load`: the file last stored for `node`, checked again.
    /// Another identity than the adapter's is
    /// [`AgaveVoteHistoryError::Invalid`]; a store with no history, or a
    /// history with no vote and no file, is
    /// [`AgaveVoteHistoryError::NotFound`].
    pub async fn load(
        &self,
        node: &NodeId,
    ) -> std::result::Result<SavedVoteHistory, AgaveVoteHistoryError> {
        let invalid = |source| AgaveVoteHistoryError::Invalid {
            node: self.node(),
            source,
        };
        if *node != self.node() {
            return Err(invalid(VoteHistoryFileError::ForeignNode {
                expected: self.node(),
                found: *node,
            }));
        }
        let history = self
            .storage
            .load()
            .await
            .map_err(AgaveVoteHistoryError::of)?
            .ok_or(AgaveVoteHistoryError::NotFound { node: *node })?;
        let Some(saved) =
            SavedVoteHistory::from_stored(&history, Some(self.layout)).map_err(invalid)?
        else {
            if history.slots().next().is_none() {
                return Err(AgaveVoteHistoryError::NotFound { node: *node });
            }
            return Err(invalid(VoteHistoryFileError::Inconsistent {
                detail: format!(
                    "the store holds votes up to slot {} that no Agave vote history file describes (they were recorded by AlpenglowGuard, an import, or a vote after the last file): the validator cannot be given them; do not start it with --do-not-require-vote-history before the cluster finalized a slot past slot {}",
                    history.last_voted_slot().unwrap_or(history.root()),
                    history.last_voted_slot().unwrap_or(history.root()),
                ),
            }));
        };
        Ok(saved)
    }

    /// Agave's `store`: `saved` is the bincode of Agave's
    /// `SavedVoteHistoryVersions` (what Agave writes to its file). `Ok`
    /// means the file's votes are recorded and the file kept, durably and
    /// fenced; see the type's docs for the checks. `Applied::wrote` is
    /// `false` when the store already held exactly this file.
    pub async fn store(&self, saved: &[u8]) -> std::result::Result<Applied, AgaveVoteHistoryError> {
        let node = self.node();
        let saved = SavedVoteHistory::decode(saved, self.layout, &node)
            .map_err(|source| AgaveVoteHistoryError::Invalid { node, source })?;
        let step = step(node, saved);
        self.storage
            .apply_step(&step)
            .await
            .map_err(AgaveVoteHistoryError::of)
    }
}

impl SavedVoteHistory {
    /// The Agave file kept with a stored `history` (`Ok(None)` when it has
    /// none), checked again: it decodes in `layout` (the reader's; `None`:
    /// the layout it was stored in), verifies, and its root and votes are
    /// exactly the history's, so a vote recorded by another path since is
    /// never handed out as if the file held it.
    pub fn from_stored(
        history: &VoteHistory,
        layout: Option<HistoryLayout>,
    ) -> std::result::Result<Option<SavedVoteHistory>, VoteHistoryFileError> {
        let Some(copy) = history.agave_copy() else {
            return Ok(None);
        };
        let stored_in = HistoryLayout::from_code(copy.layout)?;
        let layout = layout.unwrap_or(stored_in);
        let saved = SavedVoteHistory::decode(&copy.bytes, layout, &history.identity()).map_err(
            |e| match e {
                VoteHistoryFileError::NotInLayout {
                    layout,
                    detail,
                    known,
                } if stored_in != layout => VoteHistoryFileError::NotInLayout {
                    layout,
                    detail: format!(
                        "it was stored from a validator writing the {stored_in} layout ({detail})"
                    ),
                    known,
                },
                other => other,
            },
        )?;
        let recorded =
            replay(history.identity(), history.shred_version(), &saved).map_err(|e| {
                VoteHistoryFileError::Inconsistent {
                    detail: format!("the stored file does not replay onto its own root: {e}"),
                }
            })?;
        if recorded.root() != history.root() || !same_votes(&recorded, history) {
            return Err(VoteHistoryFileError::Inconsistent {
                detail: format!(
                    "the stored file (root {}, last vote {:?}) is not the stored history (root {}, last vote {:?})",
                    recorded.root(),
                    recorded.last_voted_slot(),
                    history.root(),
                    history.last_voted_slot()
                ),
            });
        }
        Ok(Some(saved))
    }
}

fn same_votes(a: &VoteHistory, b: &VoteHistory) -> bool {
    a.slots().eq(b.slots())
}

/// The history `saved` describes on its own: its root, and its votes
/// recorded under the slashable rules.
fn replay(node: NodeId, shred_version: u16, saved: &SavedVoteHistory) -> Result<VoteHistory> {
    let update = HistoryUpdate {
        votes: saved.votes(shred_version),
        finalized: None,
    };
    let empty = VoteHistory::new(node, shred_version, saved.root());
    let (next, _) = empty.apply(&update, RuleMode::Slashable)?;
    Ok(next.unwrap_or(empty))
}

/// The step that records `saved` over the stored history.
pub(crate) fn step(node: NodeId, saved: SavedVoteHistory) -> HistoryStep {
    HistoryStep::new("an Agave vote history file", move |current| {
        plan_file(node, current, &saved)
    })
}

/// The storage-independent half of [`AgaveVoteHistoryStorage::store`].
pub(crate) fn plan_file(
    node: NodeId,
    current: Option<&VoteHistory>,
    saved: &SavedVoteHistory,
) -> Result<(Option<VoteHistory>, Vec<Check>)> {
    let current = current.ok_or_else(|| no_history(&node))?;
    // Root first (refused if it would move back), then every vote the file
    // says was cast, under the slashable rules: what the validator already
    // signed is its decision; a pair that is slashable is refused all the
    // same (the vote has not left yet: Agave sends after the store).
    let update = HistoryUpdate {
        votes: saved.votes(current.shred_version()),
        finalized: Some(saved.root()),
    };
    let (next, checks) = current.apply(&update, RuleMode::Slashable)?;
    let mut next = next.unwrap_or_else(|| current.clone());
    // An older file lacks a vote the store holds: refused, or the store
    // would give back (and the validator restart on) less than it cast.
    let described = replay(node, current.shred_version(), saved)?;
    for (slot, votes) in next.slots() {
        for kind in votes.kinds() {
            if !described.slot(slot).is_some_and(|v| v.contains(&kind)) {
                return Err(AlpenglowRefusal::HistoryRegressed { slot, vote: kind }.into());
            }
        }
    }
    next.set_agave_copy(Some(AgaveCopy {
        layout: saved.layout().code(),
        bytes: saved.encode(),
    }));
    if next == *current {
        return Ok((None, checks));
    }
    Ok((Some(next), checks))
}

impl<S: HistoryStorage> crate::blocking::Blocking<AgaveVoteHistoryStorage<S>> {
    /// [`AgaveVoteHistoryStorage::load`], blocking: Agave's `load`.
    pub fn load(
        &self,
        node: &NodeId,
    ) -> std::result::Result<SavedVoteHistory, AgaveVoteHistoryError> {
        self.block_on(self.inner().load(node))
            .map_err(AgaveVoteHistoryError::Failed)?
    }

    /// [`AgaveVoteHistoryStorage::store`], blocking: Agave's `store`.
    pub fn store(&self, saved: &[u8]) -> std::result::Result<Applied, AgaveVoteHistoryError> {
        self.block_on(self.inner().store(saved))
            .map_err(AgaveVoteHistoryError::Failed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agave::vote_history::layout::{AgaveVoteHistory, SavedVote};
    use crate::alpenglow::VoteKind;
    use crate::identity::NodeKeypair;

    const SV: u16 = 3;

    fn file(kp: &NodeKeypair, root: u64, votes: &[(u64, VoteKind)]) -> SavedVoteHistory {
        let mut h = AgaveVoteHistory::new(kp.node_id(), root);
        for (slot, kind) in votes {
            h.add_vote(SavedVote {
                slot: *slot,
                kind: *kind,
                shred_version: Some(SV),
            });
        }
        SavedVoteHistory::sign(h, HistoryLayout::SignedPayload, kp).unwrap()
    }

    fn refusal(e: Error) -> AlpenglowRefusal {
        match e {
            Error::Refused(crate::error::Refusal::Alpenglow(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plan_records_votes_keeps_the_file_and_refuses_regression() {
        let kp = NodeKeypair::from_seed([8; 32]);
        let node = kp.node_id();
        let base = VoteHistory::new(node, SV, 10);
        assert!(matches!(
            refusal(plan_file(node, None, &file(&kp, 10, &[])).unwrap_err()),
            AlpenglowRefusal::NoHistory { .. }
        ));
        let one = file(&kp, 10, &[(11, VoteKind::Notarize([1; 32]))]);
        let (next, checks) = plan_file(node, Some(&base), &one).unwrap();
        let next = next.unwrap();
        assert_eq!(checks, vec![Check::New]);
        assert_eq!(next.agave_file(), Some(&one.encode()[..]));
        assert_eq!(
            SavedVoteHistory::from_stored(&next, Some(HistoryLayout::SignedPayload)).unwrap(),
            Some(one.clone())
        );
        // The same file again: nothing to write.
        assert_eq!(plan_file(node, Some(&next), &one).unwrap().0, None);
        // An older file (without the notarize): refused.
        let older = file(&kp, 10, &[]);
        assert!(matches!(
            refusal(plan_file(node, Some(&next), &older).unwrap_err()),
            AlpenglowRefusal::HistoryRegressed { slot: 11, .. }
        ));
        // A slashable addition: refused.
        let bad = file(
            &kp,
            10,
            &[(11, VoteKind::Notarize([1; 32])), (11, VoteKind::Skip)],
        );
        assert!(matches!(
            refusal(plan_file(node, Some(&next), &bad).unwrap_err()),
            AlpenglowRefusal::Conflict { slot: 11, .. }
        ));
        // A lower root: refused.
        assert!(matches!(
            refusal(
                plan_file(
                    node,
                    Some(&next),
                    &file(&kp, 9, &[(11, VoteKind::Notarize([1; 32]))])
                )
                .unwrap_err()
            ),
            AlpenglowRefusal::RootRegressed { .. }
        ));
        // The root moves, and older votes go with it.
        let moved = file(&kp, 12, &[(12, VoteKind::Skip)]);
        let after = plan_file(node, Some(&next), &moved).unwrap().0.unwrap();
        assert_eq!(after.root(), 12);
        assert!(after.slot(11).is_none());
        // A vote recorded by another path drops the file.
        let (guarded, _) = after
            .apply(
                &HistoryUpdate {
                    votes: vec![crate::alpenglow::Vote {
                        slot: 13,
                        kind: VoteKind::Skip,
                        shred_version: SV,
                    }],
                    finalized: None,
                },
                RuleMode::Strict,
            )
            .unwrap();
        assert_eq!(guarded.unwrap().agave_file(), None);
    }
}
