//! The ordering rules every tower store obeys, as a pure function: no I/O,
//! so that every backend applies exactly the same rule and tests can state
//! it as a table.

use crate::identity::NodeId;
use crate::tower::{TowerRecord, VoteRef};

/// How a store treats a tower that would move backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreMode {
    /// Refuse a tower whose last vote or root is older than the stored one,
    /// or that votes a different hash at the stored last-vote slot.
    #[default]
    Advance,
    /// Store regardless of the stored tower (operator recovery only). The
    /// node and signature checks still apply.
    Force,
}

/// Why a tower store was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TowerRefusal {
    /// The record belongs to another node than the store.
    #[error("tower of node {record} offered to the store of node {store}")]
    ForeignNode {
        /// The node the store belongs to.
        store: NodeId,
        /// The node named in the record.
        record: NodeId,
    },
    /// The last vote slot would go backwards (or disappear).
    #[error("last vote would regress from slot {stored} to {}", describe(.requested))]
    LastVoteRegressed {
        /// Stored last vote slot.
        stored: u64,
        /// Requested last vote slot (`None`: no vote at all).
        requested: Option<u64>,
    },
    /// The root slot would go backwards (or disappear).
    #[error("root would regress from slot {stored} to {}", describe(.requested))]
    RootRegressed {
        /// Stored root.
        stored: u64,
        /// Requested root.
        requested: Option<u64>,
    },
    /// Same slot, different bank hash: storing it would permit a double vote.
    #[error("slot {slot} already voted for another hash")]
    ConflictingVote {
        /// The slot.
        slot: u64,
    },
    /// The stored tower already released a vote message for this vote, and
    /// the new one would release a different message (or forget which one
    /// was released). Only the byte-identical message may be signed again.
    #[error(
        "slot {slot} was already released with another vote message; only the byte-identical \
         message may be signed again (build the next vote on a newer slot)"
    )]
    OtherMessage {
        /// The slot of the stored vote.
        slot: u64,
    },
    /// The record's signature does not verify under its node key.
    #[error("tower signature does not verify for node {node}")]
    BadSignature {
        /// The node.
        node: NodeId,
    },
}

fn describe(slot: &Option<u64>) -> String {
    match slot {
        Some(s) => format!("slot {s}"),
        None => "none".to_string(),
    }
}

/// Decide whether `new` may replace `stored` in the store of node `store`.
///
/// The node and signature checks apply in every mode; the ordering checks
/// only in [`StoreMode::Advance`]. Equal slots with the same hash are
/// allowed: a retried store of the same vote is not a double vote.
pub fn check_store(
    store: &NodeId,
    stored: Option<&TowerRecord>,
    new: &TowerRecord,
    mode: StoreMode,
) -> Result<(), TowerRefusal> {
    if new.node() != *store {
        return Err(TowerRefusal::ForeignNode {
            store: *store,
            record: new.node(),
        });
    }
    if !new.signature_holds() {
        return Err(TowerRefusal::BadSignature { node: new.node() });
    }
    let Some(stored) = stored else { return Ok(()) };
    if mode == StoreMode::Force {
        return Ok(());
    }
    check_order(
        (stored.last_vote(), stored.root()),
        (new.last_vote(), new.root()),
    )?;
    check_released(stored, new)
}

/// The stored record released a message for its last vote: a record for
/// that same vote must keep exactly that message.
fn check_released(stored: &TowerRecord, new: &TowerRecord) -> Result<(), TowerRefusal> {
    match (stored.last_vote(), stored.released_message()) {
        (Some(vote), Some(released))
            if new.last_vote() == Some(vote) && new.released_message() != Some(released) =>
        {
            Err(TowerRefusal::OtherMessage { slot: vote.slot })
        }
        _ => Ok(()),
    }
}

/// The last vote a guard released in this process, and the hash of its
/// message: kept apart from the store, which an operator may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedVote {
    /// The released last vote.
    pub vote: VoteRef,
    /// The [`message_hash`](crate::tower::message_hash) of its message.
    pub message: [u8; 32],
}

/// Whether a vote for `vote` with message hash `message` may be released
/// after `released` was, by the same process: only at a newer slot, or as
/// the byte-identical message again. The refusals are the ones
/// [`check_store`] gives while the stored tower is the one this process
/// stored; this check still holds after an operator forced an older or
/// another tower in ([`StoreMode::Force`]), because what this process
/// signed cannot be taken back.
pub fn check_after_released(
    released: Option<ReleasedVote>,
    vote: VoteRef,
    message: [u8; 32],
) -> Result<(), TowerRefusal> {
    let Some(r) = released else { return Ok(()) };
    if vote.slot > r.vote.slot {
        return Ok(());
    }
    if vote.slot < r.vote.slot {
        return Err(TowerRefusal::LastVoteRegressed {
            stored: r.vote.slot,
            requested: Some(vote.slot),
        });
    }
    if vote.hash != r.vote.hash {
        return Err(TowerRefusal::ConflictingVote { slot: vote.slot });
    }
    if message != r.message {
        return Err(TowerRefusal::OtherMessage { slot: vote.slot });
    }
    Ok(())
}

/// The ordering half of [`check_store`], on (last vote, root) pairs: for
/// stores whose towers are not [`TowerRecord`]s (an Agave tower file).
pub(crate) fn check_order(
    stored: (Option<VoteRef>, Option<u64>),
    new: (Option<VoteRef>, Option<u64>),
) -> Result<(), TowerRefusal> {
    if let Some(old) = stored.0 {
        match new.0 {
            Some(v) if v.slot < old.slot || v.slot == old.slot && v.hash != old.hash => {
                return Err(if v.slot < old.slot {
                    TowerRefusal::LastVoteRegressed {
                        stored: old.slot,
                        requested: Some(v.slot),
                    }
                } else {
                    TowerRefusal::ConflictingVote { slot: v.slot }
                });
            }
            Some(_) => {}
            None => {
                return Err(TowerRefusal::LastVoteRegressed {
                    stored: old.slot,
                    requested: None,
                })
            }
        }
    }
    if let Some(old_root) = stored.1 {
        if new.1.is_none_or(|r| r < old_root) {
            return Err(TowerRefusal::RootRegressed {
                stored: old_root,
                requested: new.1,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKeypair;
    use crate::tower::VoteRef;

    fn rec(kp: &NodeKeypair, vote: Option<(u64, u8)>, root: Option<u64>) -> TowerRecord {
        let vote = vote.map(|(slot, h)| VoteRef {
            slot,
            hash: [h; 32],
        });
        TowerRecord::sign(kp, vote, root, vec![1, 2, 3]).unwrap()
    }

    #[test]
    fn ordering_table() {
        use TowerRefusal::*;
        let kp = NodeKeypair::from_seed([1; 32]);
        let id = kp.node_id();
        // (stored, new, mode, expected refusal or None)
        type Case = (
            Option<(u64, u8)>,
            Option<u64>,
            Option<(u64, u8)>,
            Option<u64>,
            StoreMode,
            Option<fn(&TowerRefusal) -> bool>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (Some((10, 1)), Some(5), Some((11, 1)), Some(5), StoreMode::Advance, None),
            (Some((10, 1)), Some(5), Some((10, 1)), Some(5), StoreMode::Advance, None),
            (Some((10, 1)), Some(5), Some((10, 1)), Some(6), StoreMode::Advance, None),
            (Some((10, 1)), Some(5), Some((9, 1)), Some(5), StoreMode::Advance, Some(|r| matches!(r, LastVoteRegressed { stored: 10, requested: Some(9) }))),
            (Some((10, 1)), Some(5), Some((10, 2)), Some(5), StoreMode::Advance, Some(|r| matches!(r, ConflictingVote { slot: 10 }))),
            (Some((10, 1)), Some(5), Some((12, 1)), Some(4), StoreMode::Advance, Some(|r| matches!(r, RootRegressed { stored: 5, requested: Some(4) }))),
            (Some((10, 1)), Some(5), Some((12, 1)), None, StoreMode::Advance, Some(|r| matches!(r, RootRegressed { requested: None, .. }))),
            (Some((10, 1)), None, None, None, StoreMode::Advance, Some(|r| matches!(r, LastVoteRegressed { requested: None, .. }))),
            (None, None, Some((1, 1)), None, StoreMode::Advance, None),
            (Some((10, 1)), Some(5), Some((9, 1)), Some(4), StoreMode::Force, None),
        ];
        for (i, (sv, sr, nv, nr, mode, expect)) in cases.into_iter().enumerate() {
            let stored = rec(&kp, sv, sr);
            let new = rec(&kp, nv, nr);
            let got = check_store(&id, Some(&stored), &new, mode);
            match expect {
                None => assert!(got.is_ok(), "case {i}: {got:?}"),
                Some(f) => assert!(got.as_ref().is_err_and(f), "case {i}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_released_message_is_kept_for_its_vote() {
        use crate::tower::{message_hash, TowerBytesKind};
        let kp = NodeKeypair::from_seed([1; 32]);
        let id = kp.node_id();
        let vote = |slot| {
            Some(VoteRef {
                slot,
                hash: [1; 32],
            })
        };
        let with = |slot, m: Option<&[u8]>| {
            TowerRecord::sign_as(
                &kp,
                vote(slot),
                None,
                vec![],
                TowerBytesKind::Opaque,
                m.map(message_hash),
            )
            .unwrap()
        };
        let stored = with(10, Some(b"a"));
        let check = |new: &TowerRecord| check_store(&id, Some(&stored), new, StoreMode::Advance);
        assert_eq!(check(&with(10, Some(b"a"))), Ok(()));
        assert_eq!(
            check(&with(10, Some(b"b"))),
            Err(TowerRefusal::OtherMessage { slot: 10 })
        );
        assert_eq!(
            check(&with(10, None)),
            Err(TowerRefusal::OtherMessage { slot: 10 })
        );
        assert_eq!(check(&with(11, Some(b"b"))), Ok(()));
        assert_eq!(check(&with(11, None)), Ok(()));
        // A record that released nothing binds nothing.
        let plain = with(10, None);
        assert_eq!(
            check_store(&id, Some(&plain), &with(10, Some(b"b")), StoreMode::Advance),
            Ok(())
        );
        // Operator recovery overrides it, as it overrides ordering.
        assert_eq!(
            check_store(&id, Some(&stored), &with(10, None), StoreMode::Force),
            Ok(())
        );
    }

    #[test]
    fn foreign_node_refused_even_when_forced() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let other = NodeKeypair::from_seed([2; 32]);
        let r = rec(&other, Some((1, 1)), None);
        for mode in [StoreMode::Advance, StoreMode::Force] {
            assert!(matches!(
                check_store(&kp.node_id(), None, &r, mode),
                Err(TowerRefusal::ForeignNode { .. })
            ));
        }
    }

    #[test]
    fn bad_signature_refused_in_every_mode() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let good = rec(&kp, Some((7, 1)), None);
        let mut bytes = good.encode();
        // Last byte of the tower bytes, just before the 64-byte signature.
        let at = bytes.len() - 65;
        bytes[at] ^= 0x01;
        let forged = TowerRecord::decode_unverified(&bytes).expect("well formed");
        assert!(!forged.verify());
        for mode in [StoreMode::Advance, StoreMode::Force] {
            assert_eq!(
                check_store(&kp.node_id(), None, &forged, mode),
                Err(TowerRefusal::BadSignature { node: kp.node_id() })
            );
            assert_eq!(check_store(&kp.node_id(), None, &good, mode), Ok(()));
        }
        // The same bytes untouched decode unverified and verify on store.
        let plain = TowerRecord::decode_unverified(&good.encode()).expect("well formed");
        assert_eq!(plain, good);
        assert_eq!(
            check_store(&kp.node_id(), None, &plain, StoreMode::Advance),
            Ok(())
        );
    }

    #[test]
    fn a_released_vote_binds_this_process_whatever_the_store_says() {
        let v = |slot, h| VoteRef {
            slot,
            hash: [h; 32],
        };
        let released = Some(ReleasedVote {
            vote: v(42, 1),
            message: [9; 32],
        });
        assert_eq!(check_after_released(None, v(1, 7), [0; 32]), Ok(()));
        // The byte-identical message again, or any newer slot.
        assert_eq!(check_after_released(released, v(42, 1), [9; 32]), Ok(()));
        assert_eq!(check_after_released(released, v(43, 2), [0; 32]), Ok(()));
        assert_eq!(
            check_after_released(released, v(42, 2), [9; 32]),
            Err(TowerRefusal::ConflictingVote { slot: 42 })
        );
        assert_eq!(
            check_after_released(released, v(42, 1), [8; 32]),
            Err(TowerRefusal::OtherMessage { slot: 42 })
        );
        assert_eq!(
            check_after_released(released, v(41, 1), [9; 32]),
            Err(TowerRefusal::LastVoteRegressed {
                stored: 42,
                requested: Some(41)
            })
        );
    }
}
