//! The vote guard signs a message only when it casts exactly the vote of the
//! tower it has just stored: adversarial messages are typed refusals, a
//! byte-identical resend is signed again, and (property) over random
//! sequences of stores, votes and crashes between store and sign, no two
//! signatures leave for one slot with different bank hashes, and none for a
//! slot that no stored tower held as its last vote.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use slashguard::agave::{LastVote, Lockout, TowerSync, Vote};
use slashguard::file::FileTowerStorage;
use slashguard::memory::MemoryTowerStorage;
use slashguard::tower::vote_tx::{CastVote, VoteKind, VoteTxError};
use slashguard::tower::{
    StoreMode, StoreReceipt, TowerRecord, TowerRefusal, TowerStorage, TowerUpdate, VoteGuard,
    VoteRef, VoteRefusal,
};
use slashguard::{Error, NodeId, NodeKeypair, Refusal};

const ACCOUNT: NodeId = NodeId([0x5a; 32]);
const OTHER_PROGRAM: NodeId = NodeId([0x33; 32]);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn identity() -> NodeKeypair {
    NodeKeypair::from_seed([1; 32])
}

fn voter() -> NodeKeypair {
    NodeKeypair::from_seed([2; 32])
}

/// A TowerSync of three lockouts ending at `slot`, rooted at `root`.
fn sync(slot: u64, hash: u8, root: Option<u64>, authority: NodeId) -> CastVote {
    CastVote {
        kind: VoteKind::TowerSync,
        vote_account: ACCOUNT,
        authority,
        vote: LastVote::TowerSync(TowerSync {
            lockouts: (0..3)
                .map(|i| Lockout {
                    slot: slot - 2 + i,
                    confirmation_count: 3 - i as u32,
                })
                .collect(),
            root,
            hash: [hash; 32],
            timestamp: Some(1_700_000_000),
            block_id: [0xb0; 32],
        }),
        switch_proof: None,
    }
}

fn message(vote: &CastVote) -> Vec<u8> {
    vote.to_legacy_message(identity().node_id(), [0xee; 32])
        .unwrap()
}

fn update(slot: u64, hash: u8, root: Option<u64>) -> TowerUpdate {
    TowerUpdate {
        vote: VoteRef {
            slot,
            hash: [hash; 32],
        },
        root,
        tower: vec![7; 64],
    }
}

fn vote_refusal(result: Result<impl std::fmt::Debug, Error>) -> VoteRefusal {
    match result {
        Err(Error::Refused(Refusal::Vote(r))) => r,
        other => panic!("expected a vote refusal, got {other:?}"),
    }
}

/// Offsets in a message built by `to_legacy_message`: the instruction
/// count byte and the start of the first instruction.
fn instructions_at(bytes: &[u8]) -> usize {
    4 + 32 * bytes[3] as usize + 32
}

fn with_guard(f: impl AsyncFnOnce(&VoteGuard<FileTowerStorage>)) {
    let dir = tempfile::tempdir().unwrap();
    let id = identity();
    let storage = FileTowerStorage::create(dir.path(), id.node_id()).unwrap();
    let guard = VoteGuard::new(storage, id)
        .unwrap()
        .with_authorized_voter(voter())
        .with_vote_account(ACCOUNT);
    rt().block_on(f(&guard));
}

#[test]
fn adversarial_messages_are_typed_refusals_and_store_nothing() {
    with_guard(async |guard| {
        let node = identity().node_id();
        let good = sync(100, 1, Some(90), node);
        let bytes = message(&good);
        let u = update(100, 1, Some(90));
        let at = instructions_at(&bytes);

        // Two vote instructions.
        let mut two = bytes[..at].to_vec();
        two.push(2);
        two.extend_from_slice(&bytes[at + 1..]);
        two.extend_from_slice(&bytes[at + 1..]);
        assert_eq!(
            vote_refusal(guard.vote(u.clone(), &two).await),
            VoteRefusal::Malformed(VoteTxError::SeveralVotes {
                first: 0,
                second: 1
            })
        );
        // Another vote account.
        let other_account = CastVote {
            vote_account: NodeId([0x44; 32]),
            ..good.clone()
        };
        assert!(matches!(
            vote_refusal(guard.vote(u.clone(), &message(&other_account)).await),
            VoteRefusal::OtherVoteAccount { .. }
        ));
        // An authority that is not a signer: the header claims one signer
        // fewer, so the voter key becomes an unsigned account.
        let mut unsigned = message(&sync(100, 1, Some(90), voter().node_id()));
        unsigned[0] = 1; // required signatures 2 -> 1: the voter is unsigned
        unsigned[1] = 0; // read-only signed 1 -> 0
        assert!(matches!(
            vote_refusal(guard.vote(u.clone(), &unsigned).await),
            VoteRefusal::Malformed(VoteTxError::AuthorityNotSigner { .. })
        ));
        // An authority the guard does not hold.
        let stranger = sync(100, 1, Some(90), NodeId([0x66; 32]));
        assert!(matches!(
            vote_refusal(guard.vote(u.clone(), &message(&stranger)).await),
            VoteRefusal::UnknownAuthority { .. }
        ));
        // Another program's instruction beside the vote.
        let with_other = add_instruction(&bytes, OTHER_PROGRAM);
        assert_eq!(
            vote_refusal(guard.vote(u.clone(), &with_other).await),
            VoteRefusal::ProgramNotAllowed {
                instruction: 1,
                program: OTHER_PROGRAM
            }
        );
        // Only another program: no vote at all.
        let mut not_vote = bytes.clone();
        let program_key = at - 32 - 32;
        not_vote[program_key..program_key + 32].copy_from_slice(OTHER_PROGRAM.as_bytes());
        assert_eq!(
            vote_refusal(guard.vote(u.clone(), &not_vote).await),
            VoteRefusal::Malformed(VoteTxError::NoVote)
        );
        // Wrong bank hash, another last slot, a root ahead of the tower's.
        assert!(matches!(
            vote_refusal(guard.vote(update(100, 2, Some(90)), &bytes).await),
            VoteRefusal::OtherBankHash { slot: 100, .. }
        ));
        assert!(matches!(
            vote_refusal(guard.vote(update(101, 1, Some(90)), &bytes).await),
            VoteRefusal::OtherSlot {
                tower: 101,
                message: 100
            }
        ));
        assert!(matches!(
            vote_refusal(guard.vote(update(100, 1, Some(89)), &bytes).await),
            VoteRefusal::RootAhead {
                tower: Some(89),
                message: 90
            }
        ));
        assert!(matches!(
            vote_refusal(guard.vote(update(100, 1, None), &bytes).await),
            VoteRefusal::RootAhead { tower: None, .. }
        ));
        // Lockouts at or below the tower's root.
        assert!(matches!(
            vote_refusal(
                guard
                    .vote(
                        update(100, 1, Some(98)),
                        &message(&sync(100, 1, None, node))
                    )
                    .await
            ),
            VoteRefusal::SlotAtOrBelowRoot { slot: 98, root: 98 }
        ));
        // A v0 message whose vote account comes from a lookup table.
        let mut v0 = vec![0x80];
        let mut looked = bytes.clone();
        looked[at + 3] = 3; // vote account -> the first looked-up account
        v0.extend_from_slice(&looked);
        v0.push(1);
        v0.extend_from_slice(&[0x77; 32]);
        v0.extend_from_slice(&[1, 0, 0]);
        assert_eq!(
            vote_refusal(guard.vote(u.clone(), &v0).await),
            VoteRefusal::Malformed(VoteTxError::LookupTableAccount {
                instruction: 0,
                position: 0
            })
        );
        // Trailing bytes after the message.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            vote_refusal(guard.vote(u.clone(), &trailing).await),
            VoteRefusal::Malformed(VoteTxError::TrailingBytes { count: 1, .. })
        ));
        // Truncation at every offset.
        for cut in 0..bytes.len() {
            assert!(matches!(
                vote_refusal(guard.vote(u.clone(), &bytes[..cut]).await),
                VoteRefusal::Malformed(_)
            ));
        }
        // Garbage that is not a message at all.
        assert!(matches!(
            vote_refusal(guard.vote(u.clone(), b"vote transaction message").await),
            VoteRefusal::Malformed(_)
        ));
        // Nothing of that was stored.
        assert_eq!(guard.load().await.unwrap(), None);

        // The matching message is signed, and the stored record says so.
        let signed = guard.vote(u.clone(), &bytes).await.unwrap();
        assert_eq!(signed.signatures().len(), 1);
        assert!(node.verify(&bytes, &signed.signatures()[0].1));
    });
}

/// `bytes` with an extra instruction of `program` (no accounts, one data
/// byte) appended, the program added as a read-only account key.
fn add_instruction(bytes: &[u8], program: NodeId) -> Vec<u8> {
    let keys = bytes[3] as usize;
    let at = 4 + 32 * keys;
    let mut out = bytes[..3].to_vec();
    out[2] += 1;
    out.push(keys as u8 + 1);
    out.extend_from_slice(&bytes[4..at]);
    out.extend_from_slice(program.as_bytes());
    out.extend_from_slice(&bytes[at..at + 32]); // blockhash
    let count = bytes[at + 32];
    out.push(count + 1);
    out.extend_from_slice(&bytes[at + 33..]);
    out.extend_from_slice(&[keys as u8, 0, 1, 0xab]);
    out
}

#[test]
fn an_allowed_program_may_accompany_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity();
    let node = id.node_id();
    let storage = FileTowerStorage::create(dir.path(), node).unwrap();
    let guard = VoteGuard::new(storage, id)
        .unwrap()
        .with_vote_account(ACCOUNT)
        .allow_program(OTHER_PROGRAM);
    let bytes = add_instruction(&message(&sync(100, 1, Some(90), node)), OTHER_PROGRAM);
    let signed = rt().block_on(guard.sign_vote_message(&bytes)).unwrap();
    assert_eq!(signed.vote().slot, 100);
}

#[test]
fn a_resend_is_signed_again_and_another_message_for_the_vote_is_refused() {
    with_guard(async |guard| {
        let node = identity().node_id();
        let first = message(&sync(100, 1, Some(90), node));
        let a = guard.sign_vote_message(&first).await.unwrap();
        // A crash, then the byte-identical resend: the same signature.
        let b = guard.sign_vote_message(&first).await.unwrap();
        assert_eq!(a.signatures(), b.signatures());
        // Same vote, another message (another timestamp): refused.
        let mut other = sync(100, 1, Some(90), node);
        if let LastVote::TowerSync(s) = &mut other.vote {
            s.timestamp = Some(1_700_000_001);
        }
        let e = guard.sign_vote_message(&message(&other)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused(Refusal::Tower(TowerRefusal::OtherMessage { slot: 100 }))
            ),
            "{e}"
        );
        // Same vote through `vote` with another recent blockhash: refused.
        let other_blockhash = sync(100, 1, Some(90), node)
            .to_legacy_message(node, [0x11; 32])
            .unwrap();
        let e = guard
            .vote(update(100, 1, Some(90)), &other_blockhash)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Refused(Refusal::Tower(TowerRefusal::OtherMessage { .. }))
        ));
        // Re-saving the tower keeps the release: still refused afterwards.
        guard
            .save(update(100, 1, Some(90)), StoreMode::Advance)
            .await
            .unwrap();
        assert!(guard
            .vote(update(100, 1, Some(90)), &other_blockhash)
            .await
            .is_err());
        assert!(guard.sign_vote_message(&first).await.is_ok());
        // The next slot is free for its own message.
        guard
            .sign_vote_message(&message(&sync(101, 1, Some(90), node)))
            .await
            .unwrap();
    });
}

/// An operator's forced store (recovery) may put another or an older
/// tower back, but the votes this process released stay released: the
/// guard does not sign a vote that contradicts them, whatever the store
/// now holds. A new process (a restart) votes from the forced tower, as
/// the operator asked.
#[test]
fn a_forced_store_does_not_free_a_released_slot_in_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity();
    let node = id.node_id();
    let guard = |storage| {
        VoteGuard::new(storage, identity())
            .unwrap()
            .with_vote_account(ACCOUNT)
    };
    let storage = FileTowerStorage::create(dir.path(), node).unwrap();
    let g = guard(storage);
    rt().block_on(async {
        let h1 = message(&sync(42, 1, Some(30), node));
        g.sign_vote_message(&h1).await.unwrap();
        // Forced: slot 42 with another bank hash, then an older tower.
        for (slot, hash, vote, refusal) in [
            (
                42,
                2,
                sync(42, 2, Some(30), node),
                TowerRefusal::ConflictingVote { slot: 42 },
            ),
            (
                40,
                1,
                sync(41, 3, Some(30), node),
                TowerRefusal::LastVoteRegressed {
                    stored: 42,
                    requested: Some(41),
                },
            ),
        ] {
            g.save(update(slot, hash, Some(30)), StoreMode::Force)
                .await
                .unwrap();
            match g.sign_vote_message(&message(&vote)).await {
                Err(Error::Refused(Refusal::Tower(r))) => assert_eq!(r, refusal),
                other => panic!("a contradicting vote was signed: {other:?}"),
            }
        }
        // The released message itself may still be sent again, and a
        // newer slot is free.
        g.sign_vote_message(&h1).await.unwrap();
        g.sign_vote_message(&message(&sync(43, 4, Some(30), node)))
            .await
            .unwrap();
    });
    // A restart after a forced store: the operator's decision stands.
    drop(g);
    let g = guard(FileTowerStorage::open(dir.path(), node).unwrap());
    rt().block_on(async {
        g.save(update(40, 1, Some(30)), StoreMode::Force)
            .await
            .unwrap();
        g.sign_vote_message(&message(&sync(41, 3, Some(30), node)))
            .await
            .unwrap();
    });
}

#[test]
fn the_derived_tower_is_the_agave_tower_of_the_vote() {
    with_guard(async |guard| {
        let node = identity().node_id();
        let vote = sync(100, 1, Some(90), voter().node_id());
        let signed = guard.sign_vote_message(&message(&vote)).await.unwrap();
        // Identity pays, the voter authorizes: both sign, in that order.
        let keys: Vec<NodeId> = signed.signatures().iter().map(|s| s.0).collect();
        assert_eq!(keys, vec![node, voter().node_id()]);
        let record = guard.load().await.unwrap().unwrap();
        assert_eq!(
            record.tower_kind(),
            slashguard::tower::TowerBytesKind::AgaveTowerData
        );
        let tower = slashguard::agave::AgaveTower::decode(
            record.tower_bytes(),
            slashguard::agave::TowerLayout::V1_14_11,
        )
        .unwrap();
        assert_eq!(tower.node_pubkey, node);
        assert_eq!(tower.last_vote, vote.vote);
        assert_eq!(tower.root(), Some(90));
        assert_eq!(tower.vote_state.votes.len(), 3);
        assert_eq!(tower.last_timestamp.timestamp, 1_700_000_000);
        // A plain vote carries no tower.
        let plain = CastVote {
            kind: VoteKind::Vote,
            vote: LastVote::Vote(Vote {
                slots: vec![101],
                hash: [1; 32],
                timestamp: None,
            }),
            ..vote
        };
        assert_eq!(
            vote_refusal(guard.sign_vote_message(&message(&plain)).await),
            VoteRefusal::NoTower
        );
    });
}

#[test]
fn a_guard_without_a_vote_account_signs_nothing() {
    let id = identity();
    let node = id.node_id();
    let guard = VoteGuard::new(MemoryTowerStorage::new(node), id).unwrap();
    let bytes = message(&sync(100, 1, Some(90), node));
    assert!(matches!(
        rt().block_on(guard.sign_vote_message(&bytes)),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        rt().block_on(guard.vote(update(100, 1, Some(90)), &bytes)),
        Err(Error::Config(_))
    ));
}

// ----------------------------------------------------------- property --

/// A store that can crash right after a store became durable, before the
/// caller hears of it: the record is written, no signature leaves.
struct CrashingStore {
    inner: MemoryTowerStorage,
    crash_next: AtomicBool,
    /// Every last vote a successful store (crashed or not) left durable.
    stored: std::sync::Mutex<BTreeSet<(u64, [u8; 32])>>,
}

#[async_trait]
impl TowerStorage for CrashingStore {
    fn node(&self) -> NodeId {
        self.inner.node()
    }
    async fn load(&self) -> slashguard::Result<Option<TowerRecord>> {
        self.inner.load().await
    }
    async fn store(
        &self,
        record: &TowerRecord,
        mode: StoreMode,
    ) -> slashguard::Result<StoreReceipt> {
        let receipt = self.inner.store(record, mode).await?;
        if let Some(v) = record.last_vote() {
            self.stored.lock().unwrap().insert((v.slot, v.hash));
        }
        if self.crash_next.swap(false, Ordering::SeqCst) {
            return Err(Error::Unavailable {
                backend: "crash",
                detail: "process died after the store".into(),
                source: None,
            });
        }
        Ok(receipt)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `vote(update, message)`; the message may cast another vote than
    /// the update (`msg_slot`, `msg_hash`).
    Vote {
        slot: u64,
        hash: u8,
        msg_slot: u64,
        msg_hash: u8,
        stamp: u8,
    },
    /// `sign_vote_message` of a TowerSync.
    Sign { slot: u64, hash: u8, stamp: u8 },
    /// `save` without a signature.
    Save { slot: u64, hash: u8 },
    /// The next store crashes after it is durable; the guard restarts.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 3u64..12;
    let hash = 1u8..3;
    prop_oneof![
        (
            slot.clone(),
            hash.clone(),
            slot.clone(),
            hash.clone(),
            0u8..2
        )
            .prop_map(|(slot, hash, msg_slot, msg_hash, stamp)| Op::Vote {
                slot,
                hash,
                msg_slot,
                msg_hash,
                stamp
            }),
        (slot.clone(), hash.clone(), 0u8..2).prop_map(|(slot, hash, stamp)| Op::Sign {
            slot,
            hash,
            stamp
        }),
        (slot, hash).prop_map(|(slot, hash)| Op::Save { slot, hash }),
        Just(Op::Crash),
    ]
}

/// The (bank hash, message) pairs signed for one slot.
type Released = BTreeSet<([u8; 32], Vec<u8>)>;

fn stamped(slot: u64, hash: u8, stamp: u8) -> Vec<u8> {
    let mut vote = sync(slot, hash, None, identity().node_id());
    if let LastVote::TowerSync(s) = &mut vote.vote {
        s.timestamp = Some(i64::from(stamp));
    }
    message(&vote)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_double_vote_and_no_vote_without_its_tower(ops in proptest::collection::vec(op(), 1..40)) {
        let store = Arc::new(CrashingStore {
            inner: MemoryTowerStorage::new(identity().node_id()),
            crash_next: AtomicBool::new(false),
            stored: Default::default(),
        });
        let new_guard = || VoteGuard::new(store.clone(), identity()).unwrap().with_vote_account(ACCOUNT);
        let mut guard = new_guard();
        let rt = rt();
        // slot -> (hash, message) of every signature that left.
        let mut released: BTreeMap<u64, Released> = BTreeMap::new();
        for op in ops {
            let outcome = match op {
                Op::Vote { slot, hash, msg_slot, msg_hash, stamp } => {
                    let bytes = stamped(msg_slot, msg_hash, stamp);
                    rt.block_on(guard.vote(update(slot, hash, None), &bytes)).map(|s| (s, bytes))
                }
                Op::Sign { slot, hash, stamp } => {
                    let bytes = stamped(slot, hash, stamp);
                    rt.block_on(guard.sign_vote_message(&bytes)).map(|s| (s, bytes))
                }
                Op::Save { slot, hash } => {
                    let _ = rt.block_on(guard.save(update(slot, hash, None), StoreMode::Advance));
                    continue;
                }
                Op::Crash => {
                    store.crash_next.store(true, Ordering::SeqCst);
                    guard = new_guard();
                    continue;
                }
            };
            if let Ok((signed, bytes)) = outcome {
                for (key, signature) in signed.signatures() {
                    prop_assert!(key.verify(&bytes, signature));
                }
                released.entry(signed.vote().slot).or_default().insert((signed.vote().hash, bytes));
            }
        }
        let stored = store.stored.lock().unwrap().clone();
        for (slot, signatures) in &released {
            let hashes: BTreeSet<_> = signatures.iter().map(|(h, _)| *h).collect();
            prop_assert_eq!(hashes.len(), 1, "slot {} signed with {} bank hashes", slot, hashes.len());
            // One message per vote: only byte-identical resends.
            prop_assert_eq!(signatures.len(), 1, "slot {} signed {} messages", slot, signatures.len());
            for (hash, _) in signatures {
                prop_assert!(stored.contains(&(*slot, *hash)), "slot {} signed without a stored tower", slot);
            }
        }
    }
}
