//! The Alpenglow guard on the file backend: refusals, durability across
//! restarts, one durable step per event, the owner lock, and a property
//! test over random event sequences with crashes between store and sign,
//! restarts and handovers: no slashable pair is ever signed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, AlpenglowRefusal, Check, HistoryStorage, HistoryUpdate,
    RuleMode, Vote, VoteKind, MAX_NOTARIZE_FALLBACKS,
};
use slashguard::bls::PublicKey;
use slashguard::file::FileVoteHistory;
use slashguard::{Error, NodeId, NodeKeypair, Refusal};

const SV: u16 = 50093;
const IDENTITY: [u8; 32] = [11; 32];
const VOTER: [u8; 32] = [22; 32];

fn node() -> NodeId {
    NodeKeypair::from_seed(IDENTITY).node_id()
}

fn registered() -> PublicKey {
    derive_voter_key(&NodeKeypair::from_seed(VOTER))
        .unwrap()
        .public_key()
}

/// The identity's store in `dir`: created (empty) the first time, as an
/// operator does once, and opened after that.
fn store(dir: &Path) -> slashguard::Result<FileVoteHistory> {
    if FileVoteHistory::data_path(dir, &node()).exists() {
        FileVoteHistory::open(dir, node())
    } else {
        FileVoteHistory::create(dir, node())
    }
}

fn guard(dir: &Path, mode: RuleMode) -> slashguard::Result<AlpenglowGuard<FileVoteHistory>> {
    let store = store(dir)?;
    AlpenglowGuard::new(store, NodeKeypair::from_seed(VOTER), &registered(), mode)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn v(slot: u64, kind: VoteKind) -> Vote {
    Vote {
        slot,
        kind,
        shred_version: SV,
    }
}

fn refusal(e: Error) -> AlpenglowRefusal {
    match e {
        Error::Refused(Refusal::Alpenglow(r)) => r,
        other => panic!("expected an Alpenglow refusal, got {other:?}"),
    }
}

#[test]
fn a_key_that_is_not_the_registered_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileVoteHistory::create(dir.path(), node()).unwrap();
    let other = derive_voter_key(&NodeKeypair::from_seed([3; 32]))
        .unwrap()
        .public_key();
    let err = AlpenglowGuard::new(
        store,
        NodeKeypair::from_seed(VOTER),
        &other,
        RuleMode::Strict,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn no_history_is_refused_until_started_and_never_restarted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        let err = g.vote(&[v(10, VoteKind::Skip)], None).await.unwrap_err();
        assert!(matches!(refusal(err), AlpenglowRefusal::NoHistory { .. }));
        // The store exists (created empty) and still holds no history.
        assert_eq!(
            FileVoteHistory::read_unlocked(dir.path(), node()).unwrap(),
            None
        );
        g.start_history(SV, 5).await.unwrap();
        let err = g.start_history(SV, 500).await.unwrap_err();
        assert!(matches!(
            refusal(err),
            AlpenglowRefusal::HistoryExists { root: 5, .. }
        ));
        drop(g);
        // Also after a restart.
        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        let err = g.start_history(SV, 500).await.unwrap_err();
        assert!(matches!(
            refusal(err),
            AlpenglowRefusal::HistoryExists { .. }
        ));
    });
}

#[test]
fn votes_survive_restart_and_repeats_sign_the_same_bytes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        g.start_history(SV, 100).await.unwrap();
        let first = g
            .vote(
                &[
                    v(100, VoteKind::Notarize([1; 32])),
                    v(100, VoteKind::Finalize),
                ],
                None,
            )
            .await
            .unwrap();
        assert!(first.iter().all(|s| s.check() == Check::New));
        for s in &first {
            assert!(registered().verify(&s.payload(), &s.signature()));
        }
        drop(g);

        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        let again = g
            .vote(&[v(100, VoteKind::Notarize([1; 32]))], None)
            .await
            .unwrap();
        assert_eq!(again[0].check(), Check::SameData);
        assert_eq!(again[0].signature(), first[0].signature());
        // Nothing written: the receipt names the record already stored.
        assert_eq!(again[0].receipt().sequence, first[0].receipt().sequence);
        for bad in [
            v(100, VoteKind::Notarize([2; 32])),
            v(100, VoteKind::Skip),
            v(100, VoteKind::NotarizeFallback([2; 32])),
        ] {
            let err = g.vote(&[bad], None).await.unwrap_err();
            assert!(
                matches!(refusal(err), AlpenglowRefusal::Conflict { slot: 100, .. }),
                "{bad}"
            );
        }
        // Another cluster, and below the root.
        let err = g
            .vote(
                &[Vote {
                    shred_version: SV + 1,
                    ..v(101, VoteKind::Skip)
                }],
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(
            refusal(err),
            AlpenglowRefusal::ShredVersion { .. }
        ));
        let err = g.vote(&[v(99, VoteKind::Skip)], None).await.unwrap_err();
        assert!(matches!(refusal(err), AlpenglowRefusal::BelowRoot { .. }));
    });
}

/// A caller that asks for NotarizeFallback votes for more blocks in one
/// slot than can be safe to notarize is refused, in one event or over
/// many, before anything is written: the slot's record stays what it was,
/// and the history read back after a restart still refuses a Skip after
/// the slot's Notarize. (The format counts a slot's fallback blocks in 16
/// bits; unbounded, 65,536 of them wrapped the count and the history read
/// back without that Notarize.)
#[test]
fn fallbacks_per_slot_are_bounded_and_the_history_reads_back_whole() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        g.start_history(SV, 100).await.unwrap();
        g.vote(&[v(101, VoteKind::Notarize([1; 32]))], None)
            .await
            .unwrap();
        let fallback = |i: usize| {
            let mut b = [0xf0; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            v(101, VoteKind::NotarizeFallback(b))
        };
        let max = MAX_NOTARIZE_FALLBACKS;
        // One event one past the bound: refused whole.
        let too_many: Vec<Vote> = (0..=max).map(fallback).collect();
        let e = g.vote(&too_many, None).await.unwrap_err();
        assert_eq!(
            refusal(e),
            AlpenglowRefusal::TooManyFallbacks { slot: 101, max }
        );
        // Up to the bound, over two events: signed; one more: refused; a
        // repeat of a recorded one: signed again.
        let (a, b): (Vec<Vote>, Vec<Vote>) = (0..max)
            .map(fallback)
            .partition(|x| matches!(x.kind, VoteKind::NotarizeFallback(b) if b[7] % 2 == 0));
        g.vote(&a, None).await.unwrap();
        g.vote(&b, None).await.unwrap();
        let e = g.vote(&[fallback(max)], None).await.unwrap_err();
        assert!(matches!(
            refusal(e),
            AlpenglowRefusal::TooManyFallbacks { .. }
        ));
        g.vote(&[fallback(0)], None).await.unwrap();
        drop(g);

        let g = guard(dir.path(), RuleMode::Strict).unwrap();
        let history = g.load().await.unwrap().unwrap();
        let slot = history.slot(101).unwrap();
        assert_eq!(slot.notarize, Some([1; 32]));
        assert_eq!(slot.notarize_fallback.len(), max);
        assert_eq!(history.slots().count(), 1);
        let e = g.vote(&[v(101, VoteKind::Skip)], None).await.unwrap_err();
        assert!(matches!(refusal(e), AlpenglowRefusal::Conflict { .. }));
    });
}

#[test]
fn one_event_is_one_durable_step_and_all_or_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Slashable).unwrap();
        g.start_history(SV, 0).await.unwrap();
        let a = g.vote(&[v(1, VoteKind::Skip)], None).await.unwrap();
        let batch = g
            .vote(
                &[
                    v(2, VoteKind::Notarize([1; 32])),
                    v(1, VoteKind::SkipFallback),
                    v(2, VoteKind::Finalize),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(batch.len(), 3);
        // The slot file's sequence moves by one per write: three votes,
        // one write.
        assert_eq!(batch[0].receipt().sequence, a[0].receipt().sequence + 1);
        assert!(batch.iter().all(|s| s.receipt() == batch[0].receipt()));
        // A repeat writes nothing.
        let applied = g
            .storage()
            .apply(
                &HistoryUpdate {
                    votes: vec![v(1, VoteKind::Skip)],
                    finalized: None,
                },
                RuleMode::Slashable,
            )
            .await
            .unwrap();
        assert!(!applied.wrote);
        // One bad vote refuses the whole event: slot 3 stays unvoted.
        let err = g
            .vote(&[v(3, VoteKind::Skip), v(2, VoteKind::Skip)], None)
            .await
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(g.load().await.unwrap().unwrap().slot(3).is_none());
    });
}

#[test]
fn the_root_moves_forward_only_and_prunes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Slashable).unwrap();
        g.start_history(SV, 10).await.unwrap();
        g.vote(&[v(11, VoteKind::Skip), v(12, VoteKind::Skip)], None)
            .await
            .unwrap();
        g.vote(&[v(13, VoteKind::Skip)], Some(12)).await.unwrap();
        let h = g.load().await.unwrap().unwrap();
        assert_eq!(h.root(), 12);
        assert!(h.slot(11).is_none() && h.slot(12).is_some());
        let err = g.vote(&[], Some(11)).await.unwrap_err();
        assert!(matches!(
            refusal(err),
            AlpenglowRefusal::RootRegressed {
                stored: 12,
                requested: 11
            }
        ));
        drop(g);
        let h = FileVoteHistory::read_unlocked(dir.path(), node())
            .unwrap()
            .unwrap();
        assert_eq!(h.root(), 12);
    });
}

#[test]
fn one_owner_per_identity_on_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FileVoteHistory::create(dir.path(), node()).unwrap();
    // A second open in this process says so (another process gets
    // `Locked`, see tests/alpenglow_crash.rs and the file lock tests).
    assert!(matches!(
        FileVoteHistory::open(dir.path(), node()),
        Err(Error::AlreadyOpen { .. })
    ));
    // The tower of the same identity shares the lock: one owner, whatever
    // it votes with.
    assert!(matches!(
        slashguard::file::FileTowerStorage::create(dir.path(), node()),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn raw_payloads_are_parsed_exactly() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), RuleMode::Slashable).unwrap();
        g.start_history(SV, 0).await.unwrap();
        let skip = v(4, VoteKind::Skip).to_bytes();
        let signed = g.sign_payloads(&[&skip], None).await.unwrap();
        assert_eq!(signed[0].payload(), skip);
        let mut long = skip.clone();
        long.push(0);
        let err = g.sign_payloads(&[&long], None).await.unwrap_err();
        assert!(matches!(err, Error::AlpenglowPayload(_)), "{err}");
    });
}

// ---- property test -------------------------------------------------------

/// The slashable pairs, written independently of the crate's rules.
fn slashable(a: &VoteKind, b: &VoteKind) -> bool {
    use VoteKind::*;
    let f = |a: &VoteKind, b: &VoteKind| match (a, b) {
        (Notarize(x), Notarize(y)) => x != y,
        (Skip, Notarize(_)) | (Skip, Finalize) | (SkipFallback, Finalize) => true,
        (NotarizeFallback(_), Finalize) => true,
        _ => false,
    };
    f(a, b) || f(b, a)
}

#[derive(Debug, Clone)]
enum Op {
    /// One event's votes, and maybe a finalized root.
    Vote(Vec<Vote>, Option<u64>),
    /// The event's votes are recorded, then the process dies before it
    /// signs.
    CrashAfterStore(Vec<Vote>),
    /// The process restarts.
    Restart,
    /// The other instance takes the identity over (the lock passes).
    Handover,
}

fn kind() -> impl Strategy<Value = VoteKind> {
    let block = prop_oneof![Just([1u8; 32]), Just([2u8; 32]), Just([3u8; 32])];
    prop_oneof![
        block.clone().prop_map(VoteKind::Notarize),
        Just(VoteKind::Finalize),
        Just(VoteKind::Skip),
        block.prop_map(VoteKind::NotarizeFallback),
        Just(VoteKind::SkipFallback),
    ]
}

fn votes() -> impl Strategy<Value = Vec<Vote>> {
    prop::collection::vec((0u64..6, kind()), 1..4)
        .prop_map(|vs| vs.into_iter().map(|(s, k)| v(s, k)).collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (votes(), prop::option::weighted(0.15, 0u64..6)).prop_map(|(v, f)| Op::Vote(v, f)),
        2 => votes().prop_map(Op::CrashAfterStore),
        1 => Just(Op::Restart),
        1 => Just(Op::Handover),
    ]
}

/// Run `ops` on two instances sharing one identity in `dir`; return every
/// vote whose signature left, and how many events were refused.
fn run(dir: &Path, mode: RuleMode, ops: &[Op]) -> (Vec<(Vote, [u8; 96])>, usize) {
    rt().block_on(async {
        // Two instance directories would be two hosts; one host, two
        // processes share the directory and its lock.
        let mut active = Some(guard(dir, mode).unwrap());
        active.as_ref().unwrap().start_history(SV, 0).await.unwrap();
        let mut signed = Vec::new();
        let mut refused = 0;
        for op in ops {
            let g = match active.take() {
                Some(g) => g,
                None => guard(dir, mode).unwrap(),
            };
            match op {
                Op::Vote(votes, finalized) => match g.vote(votes, *finalized).await {
                    Ok(out) => {
                        for s in out {
                            assert!(registered().verify(&s.payload(), &s.signature()));
                            signed.push((s.vote(), s.signature().to_bytes()));
                        }
                        active = Some(g);
                    }
                    Err(e) => {
                        assert!(e.is_refusal(), "{e}");
                        refused += 1;
                        active = Some(g);
                    }
                },
                Op::CrashAfterStore(votes) => {
                    let update = HistoryUpdate {
                        votes: votes.clone(),
                        finalized: None,
                    };
                    let _ = g.storage().apply(&update, mode).await;
                    drop(g); // dies before signing
                }
                Op::Restart => drop(g),
                Op::Handover => {
                    // The standby was blocked on the lock until now.
                    assert!(matches!(
                        FileVoteHistory::open(dir, node()),
                        Err(Error::AlreadyOpen { .. })
                    ));
                    drop(g);
                    active = Some(guard(dir, mode).unwrap());
                }
            }
        }
        (signed, refused)
    })
}

fn assert_safe(signed: &[(Vote, [u8; 96])]) {
    let mut by_slot: BTreeMap<u64, Vec<VoteKind>> = BTreeMap::new();
    let mut sigs: HashMap<Vote, [u8; 96]> = HashMap::new();
    for (vote, sig) in signed {
        let same = sigs.entry(*vote).or_insert(*sig);
        assert_eq!(same, sig, "a repeat of {vote} signed other bytes");
        let kinds = by_slot.entry(vote.slot).or_default();
        for k in kinds.iter() {
            assert!(
                !slashable(k, &vote.kind),
                "slashable pair signed in slot {}: {k} and {}",
                vote.slot,
                vote.kind
            );
        }
        kinds.push(vote.kind);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_slashable_pair_is_ever_signed(ops in prop::collection::vec(op(), 1..40), strict in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mode = if strict { RuleMode::Strict } else { RuleMode::Slashable };
        let (signed, _) = run(dir.path(), mode, &ops);
        assert_safe(&signed);
    }
}

/// Negative control: the generator does produce conflicting requests (the
/// guard refuses some), and signing them without the guard is caught.
#[test]
fn the_property_check_sees_conflicts() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 30..40);
    let mut refused = 0;
    let mut naive_caught = false;
    for _ in 0..10 {
        let ops = ops.new_tree(&mut runner).unwrap().current();
        let dir = tempfile::tempdir().unwrap();
        refused += run(dir.path(), RuleMode::Slashable, &ops).1;
        let naive: Vec<(Vote, [u8; 96])> = ops
            .iter()
            .flat_map(|o| match o {
                Op::Vote(v, _) | Op::CrashAfterStore(v) => v.clone(),
                _ => vec![],
            })
            .map(|v| (v, [0; 96]))
            .collect();
        let mut dedup: Vec<(Vote, [u8; 96])> = Vec::new();
        for x in naive {
            if !dedup.iter().any(|y| y.0 == x.0) {
                dedup.push(x);
            }
        }
        naive_caught |= std::panic::catch_unwind(|| assert_safe(&dedup)).is_err();
    }
    assert!(
        refused > 0,
        "the generator never asked for a conflicting vote"
    );
    assert!(naive_caught, "signing without the guard was never caught");
}

// ---- races and damage ----------------------------------------------------

#[test]
fn racing_tasks_get_exactly_one_vote_per_slashable_decision() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let g = std::sync::Arc::new(guard(dir.path(), RuleMode::Slashable).unwrap());
        g.start_history(SV, 0).await.unwrap();
        for slot in 1..=20u64 {
            // Eight tasks race: four notarize different blocks, two skip,
            // two finalize. Only one conflict-free subset may be signed.
            let tasks: Vec<_> = (0..8u8)
                .map(|i| {
                    let g = g.clone();
                    let kind = match i {
                        0..=3 => VoteKind::Notarize([i + 1; 32]),
                        4 | 5 => VoteKind::Skip,
                        _ => VoteKind::Finalize,
                    };
                    tokio::spawn(async move { g.vote(&[v(slot, kind)], None).await.ok() })
                })
                .collect();
            let mut kinds = Vec::new();
            for t in tasks {
                if let Some(s) = t.await.unwrap() {
                    kinds.push(s[0].vote().kind);
                }
            }
            let notarized: std::collections::HashSet<_> = kinds
                .iter()
                .filter(|k| matches!(k, VoteKind::Notarize(_)))
                .collect();
            assert!(notarized.len() <= 1, "slot {slot}: {kinds:?}");
            for (i, a) in kinds.iter().enumerate() {
                for b in &kinds[..i] {
                    assert!(!slashable(a, b), "slot {slot}: {a} and {b}");
                }
            }
            assert!(!kinds.is_empty(), "slot {slot}: every task was refused");
        }
    });
}

#[test]
fn damage_at_every_offset_never_yields_an_unacknowledged_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    rt().block_on(async {
        let g = guard(dir.path(), RuleMode::Slashable).unwrap();
        g.start_history(SV, 0).await.unwrap();
        acknowledged.push(g.load().await.unwrap().unwrap());
        for slot in 1..4 {
            g.vote(&[v(slot, VoteKind::Notarize([slot as u8; 32]))], None)
                .await
                .unwrap();
            acknowledged.push(g.load().await.unwrap().unwrap());
        }
    });
    let path = FileVoteHistory::data_path(dir.path(), &node());
    let original = std::fs::read(&path).unwrap();
    // Only the bytes that carry data: each slot's used prefix.
    let slot_size = original.len() / 2;
    let used = |base: usize| {
        let len = u32::from_le_bytes(original[base + 20..base + 24].try_into().unwrap()) as usize;
        base..base + 24 + len + 4
    };
    let offsets: Vec<usize> = used(0).chain(used(slot_size)).collect();
    for &at in &offsets {
        let mut bytes = original.clone();
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        match FileVoteHistory::open(dir.path(), node()) {
            Ok(store) => {
                let h = rt().block_on(store.load()).unwrap().unwrap();
                assert!(
                    acknowledged.contains(&h),
                    "offset {at}: loaded a history that was never acknowledged"
                );
                if h != *acknowledged.last().unwrap() {
                    // An older record may only come with the damage reported.
                    assert_ne!(
                        store.recovery(),
                        &slashguard::file::Recovery::Clean,
                        "offset {at}"
                    );
                }
            }
            Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "offset {at}: {e}"),
        }
    }
    std::fs::write(&path, &original).unwrap();
    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    assert_eq!(
        rt().block_on(store.load()).unwrap().as_ref(),
        acknowledged.last()
    );
}
