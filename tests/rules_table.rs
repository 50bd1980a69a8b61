//! The ordering rules as tables, run against every local backend.
//!
//! - Tower: each row stores a tower, offers another, and names the expected
//!   result and what must be stored afterwards (memory and file backends;
//!   the file backend is reopened to prove the outcome is on disk).
//! - Watermark: the pure rule `decide`, then batches, raised marks and
//!   operator sets through `SignerGuard` (memory and file backends, the file
//!   reopened after every row).
//! - Payload parser: hand-written byte vectors for each kind and for tz1 and
//!   tz4 offsets, with the expected (level, round) written out as numbers.

mod common;

use common::{MAINNET, TESTNET};
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::memory::{MemoryTowerStorage, MemoryWatermarks};
use slashguard::tower::{StoreMode, TowerRecord, TowerRefusal, TowerStorage, VoteRef};
use slashguard::watermark::{
    decide, ConsensusKind, ConsensusPayload, Curve, Decision, KeyHash, Mark, PayloadError,
    PayloadHash, RefusalReason, SetMode, SignRequest, SignerGuard, Watermark, WatermarkKey,
};
use slashguard::{Error, NodeKeypair, Refusal};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- tower --

type Tower = (Option<(u64, u8)>, Option<u64>);

fn tower(kp: &NodeKeypair, (vote, root): Tower) -> TowerRecord {
    let vote = vote.map(|(slot, h)| VoteRef {
        slot,
        hash: [h; 32],
    });
    TowerRecord::sign(kp, vote, root, vec![0x5A; 300]).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TowerExpect {
    Stored,
    LastVoteRegressed,
    RootRegressed,
    ConflictingVote,
    ForeignNode,
    BadSignature,
}

fn classify(r: &slashguard::Result<slashguard::tower::StoreReceipt>) -> TowerExpect {
    match r {
        Ok(_) => TowerExpect::Stored,
        Err(Error::Refused(Refusal::Tower(t))) => match t {
            TowerRefusal::LastVoteRegressed { .. } => TowerExpect::LastVoteRegressed,
            TowerRefusal::RootRegressed { .. } => TowerExpect::RootRegressed,
            TowerRefusal::ConflictingVote { .. } => TowerExpect::ConflictingVote,
            TowerRefusal::ForeignNode { .. } => TowerExpect::ForeignNode,
            TowerRefusal::BadSignature { .. } => TowerExpect::BadSignature,
            other => panic!("unexpected refusal {other:?}"),
        },
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// What is offered in a row: a tower of this node, of another node, or one
/// whose signature does not verify.
#[derive(Debug, Clone, Copy)]
enum Offer {
    Own(Tower),
    Foreign(Tower),
    Tampered(Tower),
}

fn offered(own: &NodeKeypair, other: &NodeKeypair, offer: Offer) -> TowerRecord {
    match offer {
        Offer::Own(t) => tower(own, t),
        Offer::Foreign(t) => tower(other, t),
        Offer::Tampered(t) => {
            let mut bytes = tower(own, t).encode();
            // A byte inside the opaque tower: the structure stays valid,
            // the signature no longer matches.
            let at = bytes.len() - 64 - 10;
            bytes[at] ^= 0x01;
            TowerRecord::decode_unverified(&bytes).unwrap()
        }
    }
}

#[rustfmt::skip]
fn tower_rows() -> Vec<(&'static str, Option<Tower>, Offer, StoreMode, TowerExpect)> {
    use StoreMode::{Advance, Force};
    use TowerExpect::*;
    let v = |slot, h| Some((slot, h));
    // (row, stored (vote (slot, hash), root), offered, mode, expected)
    vec![
        ("first tower",                None,                      Offer::Own((v(1, 1), None)),       Advance, Stored),
        ("first tower without vote",   None,                      Offer::Own((None, None)),          Advance, Stored),
        ("vote advances",              Some((v(10, 1), Some(5))), Offer::Own((v(11, 2), Some(5))),   Advance, Stored),
        ("retry of the same vote",     Some((v(10, 1), Some(5))), Offer::Own((v(10, 1), Some(5))),   Advance, Stored),
        ("same vote, root advances",   Some((v(10, 1), Some(5))), Offer::Own((v(10, 1), Some(9))),   Advance, Stored),
        ("first vote after none",      Some((None, None)),        Offer::Own((v(3, 1), None)),       Advance, Stored),
        ("first root after none",      Some((v(10, 1), None)),    Offer::Own((v(11, 1), Some(2))),   Advance, Stored),
        ("vote regresses",             Some((v(10, 1), Some(5))), Offer::Own((v(9, 1), Some(5))),    Advance, LastVoteRegressed),
        ("vote disappears",            Some((v(10, 1), None)),    Offer::Own((None, None)),          Advance, LastVoteRegressed),
        ("same slot, other hash",      Some((v(10, 1), Some(5))), Offer::Own((v(10, 2), Some(5))),   Advance, ConflictingVote),
        ("root regresses",             Some((v(10, 1), Some(5))), Offer::Own((v(12, 1), Some(4))),   Advance, RootRegressed),
        ("root disappears",            Some((v(10, 1), Some(5))), Offer::Own((v(12, 1), None)),      Advance, RootRegressed),
        ("force may go back",          Some((v(10, 1), Some(5))), Offer::Own((v(9, 2), Some(1))),    Force,   Stored),
        ("force may drop the vote",    Some((v(10, 1), Some(5))), Offer::Own((None, None)),          Force,   Stored),
        ("foreign node",               Some((v(10, 1), None)),    Offer::Foreign((v(11, 1), None)),  Advance, ForeignNode),
        ("foreign node, forced",       Some((v(10, 1), None)),    Offer::Foreign((v(11, 1), None)),  Force,   ForeignNode),
        ("foreign node, empty store",  None,                      Offer::Foreign((v(1, 1), None)),   Advance, ForeignNode),
        ("bad signature",              Some((v(10, 1), None)),    Offer::Tampered((v(11, 1), None)), Advance, BadSignature),
        ("bad signature, forced",      None,                      Offer::Tampered((v(11, 1), None)), Force,   BadSignature),
    ]
}

async fn run_tower_row<S: TowerStorage>(
    storage: &S,
    own: &NodeKeypair,
    other: &NodeKeypair,
    stored: Option<Tower>,
    offer: Offer,
    mode: StoreMode,
) -> (TowerExpect, Option<TowerRecord>, Option<TowerRecord>) {
    let before = stored.map(|t| tower(own, t));
    if let Some(b) = &before {
        storage.store(b, StoreMode::Advance).await.unwrap();
    }
    let new = offered(own, other, offer);
    let got = classify(&storage.store(&new, mode).await);
    let expected_after = if got == TowerExpect::Stored {
        Some(new)
    } else {
        before
    };
    (got, expected_after, storage.load().await.unwrap())
}

#[test]
fn tower_ordering_table() {
    let rt = rt();
    let own = NodeKeypair::from_seed([1; 32]);
    let other = NodeKeypair::from_seed([2; 32]);
    for (name, stored, offer, mode, expect) in tower_rows() {
        // Memory backend.
        let mem = MemoryTowerStorage::new(own.node_id());
        let (got, want, now) = rt.block_on(run_tower_row(&mem, &own, &other, stored, offer, mode));
        assert_eq!(got, expect, "memory: {name}");
        assert_eq!(now, want, "memory, stored after: {name}");

        // File backend, then reopened: the outcome is what is on disk.
        let dir = tempfile::tempdir().unwrap();
        let file = FileTowerStorage::create(dir.path(), own.node_id()).unwrap();
        let (got, want, now) = rt.block_on(run_tower_row(&file, &own, &other, stored, offer, mode));
        assert_eq!(got, expect, "file: {name}");
        assert_eq!(now, want, "file, stored after: {name}");
        drop(file);
        let file = FileTowerStorage::open(dir.path(), own.node_id()).unwrap();
        assert_eq!(
            rt.block_on(file.load()).unwrap(),
            want,
            "file after reopen: {name}"
        );
    }
}

// ------------------------------------------------------------ watermark --

fn tz1() -> KeyHash {
    KeyHash {
        curve: Curve::Ed25519,
        hash: [0x01; 20],
    }
}

fn tz4() -> KeyHash {
    KeyHash {
        curve: Curve::Bls,
        hash: [0x04; 20],
    }
}

/// Keys used in the tables: A is the reference; B, C differ from A only in
/// kind, D only in chain, E only in key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    A,
    B,
    C,
    D,
    E,
}

fn key(k: K) -> WatermarkKey {
    let (chain, key, kind) = match k {
        K::A => (MAINNET, tz1(), ConsensusKind::Attestation),
        K::B => (MAINNET, tz1(), ConsensusKind::Preattestation),
        K::C => (MAINNET, tz1(), ConsensusKind::Block),
        K::D => (TESTNET, tz1(), ConsensusKind::Attestation),
        K::E => (MAINNET, tz4(), ConsensusKind::Attestation),
    };
    WatermarkKey { chain, key, kind }
}

fn payload(variant: u8) -> PayloadHash {
    PayloadHash::of(&[variant])
}

fn req(k: K, level: u32, round: u32, variant: u8) -> SignRequest {
    SignRequest {
        key: key(k),
        mark: Mark { level, round },
        payload_hash: payload(variant),
    }
}

fn wm(level: u32, round: u32, variant: Option<u8>) -> Watermark {
    Watermark {
        mark: Mark { level, round },
        payload_hash: variant.map(payload),
    }
}

#[test]
fn decide_table() {
    use Decision::{Advanced, Repeat};
    use RefusalReason::*;
    type Row = (
        Option<(u32, u32, Option<u8>)>,
        (u32, u32, u8),
        Result<Decision, RefusalReason>,
    );
    // (stored (level, round, payload variant; None = raised), requested, expected)
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        (None,                             (0, 0, 1),                   Ok(Advanced)),
        (None,                             (10, 3, 1),                  Ok(Advanced)),
        (Some((10, 0, Some(1))),           (10, 1, 2),                  Ok(Advanced)),
        (Some((10, 5, Some(1))),           (11, 0, 2),                  Ok(Advanced)),
        (Some((10, 0, Some(1))),           (10, 0, 1),                  Ok(Repeat)),
        (Some((10, 0, Some(1))),           (10, 0, 2),                  Err(DifferentPayload)),
        (Some((10, 1, Some(1))),           (10, 0, 1),                  Err(Below)),
        (Some((10, 0, Some(1))),           (9, 7, 1),                   Err(Below)),
        (Some((10, 0, Some(1))),           (0, 0, 1),                   Err(Below)),
        (Some((10, 0, None)),              (10, 0, 1),                  Err(AtRaisedMark)),
        (Some((10, 0, None)),              (10, 1, 1),                  Ok(Advanced)),
        (Some((10, 0, None)),              (9, 9, 1),                   Err(Below)),
        (Some((u32::MAX, u32::MAX, Some(1))), (u32::MAX, u32::MAX, 1),  Ok(Repeat)),
        (Some((u32::MAX, 0, Some(1))),     (u32::MAX - 1, u32::MAX, 1), Err(Below)),
    ];
    for (i, (stored, (l, r, v), expect)) in rows.into_iter().enumerate() {
        let stored = stored.map(|(sl, sr, sv)| wm(sl, sr, sv));
        let request = req(K::A, l, r, v);
        let got = decide(stored.as_ref(), &request);
        match (got, expect) {
            (Ok(d), Ok(e)) => assert_eq!(d, e, "row {i}"),
            (Err(refusal), Err(reason)) => {
                assert_eq!(refusal.reason, reason, "row {i}");
                assert_eq!(refusal.key, key(K::A), "row {i}");
                assert_eq!(Some(refusal.stored), stored, "row {i}");
                assert_eq!(refusal.requested, request.mark, "row {i}");
                // The message names both marks, so the log explains itself.
                let text = refusal.to_string();
                assert!(text.contains(&format!("{}", request.mark)), "{text}");
                assert!(
                    text.contains(&format!("{}", stored.unwrap().mark)),
                    "{text}"
                );
            }
            (got, expect) => panic!("row {i}: got {got:?}, expected {expect:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Sign(Vec<(K, u32, u32, u8)>),
    Raise(Vec<(K, u32, u32)>),
    Force(Vec<(K, u32, u32)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Ok(Vec<Decision>),
    Refused(K, RefusalReason),
    Invalid,
}

async fn apply<G: SignerGuard>(g: &G, op: &Op) -> slashguard::Result<Vec<Decision>> {
    let marks = |v: &[(K, u32, u32)]| -> Vec<(WatermarkKey, Mark)> {
        v.iter()
            .map(|&(k, level, round)| (key(k), Mark { level, round }))
            .collect()
    };
    match op {
        Op::Sign(rs) => {
            let rs: Vec<SignRequest> = rs.iter().map(|&(k, l, r, v)| req(k, l, r, v)).collect();
            g.authorize(&rs).await
        }
        Op::Raise(ms) => g
            .set_marks(&marks(ms), SetMode::RaiseOnly)
            .await
            .map(|_| vec![]),
        Op::Force(ms) => g
            .set_marks(&marks(ms), SetMode::Force)
            .await
            .map(|_| vec![]),
    }
}

fn to_expect(r: slashguard::Result<Vec<Decision>>) -> Expect {
    match r {
        Ok(d) => Expect::Ok(d),
        Err(Error::Refused(Refusal::Watermark(w))) => {
            let k = [K::A, K::B, K::C, K::D, K::E]
                .into_iter()
                .find(|&k| key(k) == w.key)
                .expect("refusal names a table key");
            Expect::Refused(k, w.reason)
        }
        Err(Error::Invalid(_)) => Expect::Invalid,
        Err(e) => panic!("unexpected error {e}"),
    }
}

struct Row {
    name: &'static str,
    setup: Vec<Op>,
    act: Op,
    expect: Expect,
    /// Every key's watermark afterwards (keys not listed must be absent).
    after: Vec<(K, Watermark)>,
}

fn watermark_rows() -> Vec<Row> {
    use Decision::{Advanced, Repeat};
    use RefusalReason::*;
    use K::*;
    let s = |v: Vec<(K, u32, u32, u8)>| Op::Sign(v);
    vec![
        Row {
            name: "first request advances",
            setup: vec![],
            act: s(vec![(A, 10, 0, 1)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "higher round advances",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(A, 10, 1, 2)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 1, Some(2)))],
        },
        Row {
            name: "higher level with a lower round advances",
            setup: vec![s(vec![(A, 10, 3, 1)])],
            act: s(vec![(A, 11, 0, 2)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(11, 0, Some(2)))],
        },
        Row {
            name: "lower level refused",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(A, 9, 5, 1)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "same level, lower round refused",
            setup: vec![s(vec![(A, 10, 2, 1)])],
            act: s(vec![(A, 10, 1, 1)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(10, 2, Some(1)))],
        },
        Row {
            name: "same mark, different payload refused",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(A, 10, 0, 2)]),
            expect: Expect::Refused(A, DifferentPayload),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "same mark, same payload repeats without moving",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(A, 10, 0, 1)]),
            expect: Expect::Ok(vec![Repeat]),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "repeat of an older message refused",
            setup: vec![s(vec![(A, 10, 0, 1)]), s(vec![(A, 11, 0, 1)])],
            act: s(vec![(A, 10, 0, 1)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(11, 0, Some(1)))],
        },
        Row {
            name: "each kind has its own mark (preattestation)",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(B, 5, 0, 1)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (B, wm(5, 0, Some(1)))],
        },
        Row {
            name: "each kind has its own mark (block)",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(C, 5, 0, 2)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (C, wm(5, 0, Some(2)))],
        },
        Row {
            name: "each chain has its own mark",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(D, 5, 0, 2)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (D, wm(5, 0, Some(2)))],
        },
        Row {
            name: "each key has its own mark",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(E, 5, 0, 2)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (E, wm(5, 0, Some(2)))],
        },
        Row {
            name: "raised mark blocks exactly that mark",
            setup: vec![Op::Raise(vec![(A, 10, 0)])],
            act: s(vec![(A, 10, 0, 1)]),
            expect: Expect::Refused(A, AtRaisedMark),
            after: vec![(A, wm(10, 0, None))],
        },
        Row {
            name: "raised mark: the next round is allowed",
            setup: vec![Op::Raise(vec![(A, 10, 0)])],
            act: s(vec![(A, 10, 1, 1)]),
            expect: Expect::Ok(vec![Advanced]),
            after: vec![(A, wm(10, 1, Some(1)))],
        },
        Row {
            name: "raised mark: below refused",
            setup: vec![Op::Raise(vec![(A, 10, 0)])],
            act: s(vec![(A, 9, 9, 1)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(10, 0, None))],
        },
        Row {
            name: "raising above a signed mark forgets its payload",
            setup: vec![s(vec![(A, 10, 0, 1)]), Op::Raise(vec![(A, 12, 0)])],
            act: s(vec![(A, 12, 0, 1)]),
            expect: Expect::Refused(A, AtRaisedMark),
            after: vec![(A, wm(12, 0, None))],
        },
        Row {
            name: "raising to the stored mark leaves the entry as it is",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: Op::Raise(vec![(A, 10, 0)]),
            expect: Expect::Ok(vec![]),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "raise-only refuses to lower, whole batch",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: Op::Raise(vec![(B, 20, 0), (A, 9, 0)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "raise several keys at once",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: Op::Raise(vec![(A, 20, 0), (B, 20, 0), (E, 20, 0)]),
            expect: Expect::Ok(vec![]),
            after: vec![
                (A, wm(20, 0, None)),
                (B, wm(20, 0, None)),
                (E, wm(20, 0, None)),
            ],
        },
        Row {
            name: "force may lower (operator recovery)",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: Op::Force(vec![(A, 5, 0)]),
            expect: Expect::Ok(vec![]),
            after: vec![(A, wm(5, 0, None))],
        },
        Row {
            name: "batch: all advance",
            setup: vec![],
            act: s(vec![(A, 10, 0, 1), (E, 10, 0, 1)]),
            expect: Expect::Ok(vec![Advanced, Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (E, wm(10, 0, Some(1)))],
        },
        Row {
            name: "batch: a repeat and an advance",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(A, 10, 0, 1), (E, 10, 0, 1)]),
            expect: Expect::Ok(vec![Repeat, Advanced]),
            after: vec![(A, wm(10, 0, Some(1))), (E, wm(10, 0, Some(1)))],
        },
        Row {
            name: "batch is all-or-nothing (below)",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(E, 10, 0, 1), (A, 9, 0, 1)]),
            expect: Expect::Refused(A, Below),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "batch is all-or-nothing (different payload)",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![(E, 11, 0, 1), (B, 11, 0, 1), (A, 10, 0, 2)]),
            expect: Expect::Refused(A, DifferentPayload),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
        Row {
            name: "batch is all-or-nothing (raised mark)",
            setup: vec![Op::Raise(vec![(E, 10, 0)])],
            act: s(vec![(A, 10, 0, 1), (E, 10, 0, 1)]),
            expect: Expect::Refused(E, AtRaisedMark),
            after: vec![(E, wm(10, 0, None))],
        },
        Row {
            name: "duplicate key in a batch is invalid",
            setup: vec![],
            act: s(vec![(A, 10, 0, 1), (A, 11, 0, 1)]),
            expect: Expect::Invalid,
            after: vec![],
        },
        Row {
            name: "duplicate key in a batch is invalid, even identical",
            setup: vec![s(vec![(B, 1, 0, 1)])],
            act: s(vec![(A, 10, 0, 1), (A, 10, 0, 1)]),
            expect: Expect::Invalid,
            after: vec![(B, wm(1, 0, Some(1)))],
        },
        Row {
            name: "duplicate key in set_marks is invalid",
            setup: vec![],
            act: Op::Raise(vec![(A, 10, 0), (A, 11, 0)]),
            expect: Expect::Invalid,
            after: vec![],
        },
        Row {
            name: "empty batch",
            setup: vec![s(vec![(A, 10, 0, 1)])],
            act: s(vec![]),
            expect: Expect::Ok(vec![]),
            after: vec![(A, wm(10, 0, Some(1)))],
        },
    ]
}

async fn check_row<G: SignerGuard>(g: &G, row: &Row, backend: &str) {
    for op in &row.setup {
        apply(g, op)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {}: setup {op:?}: {e}", row.name));
    }
    let got = to_expect(apply(g, &row.act).await);
    assert_eq!(got, row.expect, "{backend}: {}", row.name);
    check_state(g, row, backend).await;
}

async fn check_state<G: SignerGuard>(g: &G, row: &Row, backend: &str) {
    let mut want: Vec<(WatermarkKey, Watermark)> =
        row.after.iter().map(|&(k, w)| (key(k), w)).collect();
    want.sort_by_key(|(k, _)| *k);
    let mut have = g.watermarks().await.unwrap();
    have.sort_by_key(|(k, _)| *k);
    assert_eq!(have, want, "{backend}: {}: stored watermarks", row.name);
    for (k, w) in &want {
        assert_eq!(
            g.watermark(k).await.unwrap(),
            Some(*w),
            "{backend}: {}",
            row.name
        );
    }
}

#[test]
fn watermark_rule_table() {
    let rt = rt();
    for row in watermark_rows() {
        rt.block_on(check_row(&MemoryWatermarks::new(), &row, "memory"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hwm");
        let file = FileWatermarks::create(&path).unwrap();
        rt.block_on(check_row(&file, &row, "file"));
        drop(file);
        // The outcome, refusals included, is exactly what is on disk.
        let file = FileWatermarks::open(&path).unwrap();
        rt.block_on(check_state(&file, &row, "file after reopen"));
    }
}

// -------------------------------------------------------------- payload --

/// Written field by field from the Tezos layouts, not with the builders the
/// other tests use, so that a shared mistake cannot hide here.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const CHAIN: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];

fn block_tz1_round0() -> Vec<u8> {
    cat(&[
        &[0x11],
        &CHAIN,
        &[0x00, 0x5b, 0x8d, 0x80], // level 6 000 000
        &[0x16],                   // proto level
        &[0xAA; 32],               // predecessor
        &[0x00, 0x00, 0x00, 0x00, 0x67, 0x00, 0x00, 0x00], // timestamp
        &[0x04],                   // validation passes
        &[0xBB; 32],               // operations hash
        &[0x00, 0x00, 0x00, 0x21], // fitness: 33 bytes
        &[0x00, 0x00, 0x00, 0x01, 0x02], // version 2
        &[0x00, 0x00, 0x00, 0x04, 0x00, 0x5b, 0x8d, 0x80], // level
        &[0x00, 0x00, 0x00, 0x00], // no locked round
        &[0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff], // predecessor round
        &[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00], // round 0
        &[0xCC; 32],               // payload hash
        &[0x00, 0x00, 0x00, 0x00], // payload round
        &[0x01; 8],                // proof of work nonce
        &[0x00],                   // no seed nonce hash
        &[0x02],                   // per-block votes
    ])
}

fn block_tz1_round3_locked() -> Vec<u8> {
    cat(&[
        &[0x11],
        &CHAIN,
        &[0x00, 0x00, 0x30, 0x39], // level 12345
        &[0x16],
        &[0xAA; 32],
        &[0x00, 0x00, 0x00, 0x00, 0x67, 0x00, 0x00, 0x00],
        &[0x04],
        &[0xBB; 32],
        &[0x00, 0x00, 0x00, 0x25], // fitness: 37 bytes
        &[0x00, 0x00, 0x00, 0x01, 0x02],
        &[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x30, 0x39],
        &[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01], // locked round 1
        &[0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xfe],
        &[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03], // round 3
        &[0xCC; 32],
        &[0x00, 0x00, 0x00, 0x01],
        &[0x01; 8],
        &[0x00],
        &[0x02],
    ])
}

fn preattestation_tz1() -> Vec<u8> {
    cat(&[
        &[0x12],
        &CHAIN,
        &[0xDD; 32],               // branch
        &[0x14],                   // preattestation tag
        &[0x00, 0x2a],             // slot 42
        &[0x00, 0x12, 0xd6, 0x87], // level 1 234 567
        &[0x00, 0x00, 0x00, 0x02], // round 2
        &[0xEE; 32],               // block payload hash
    ])
}

fn preattestation_tz4() -> Vec<u8> {
    cat(&[
        &[0x12],
        &CHAIN,
        &[0xDD; 32],
        &[0x14],
        &[0x00, 0x12, 0xd6, 0x87], // level 1 234 567 (no slot for tz4)
        &[0x00, 0x00, 0x00, 0x02], // round 2
        &[0xEE; 32],
    ])
}

fn attestation_tz1() -> Vec<u8> {
    cat(&[
        &[0x13],
        &CHAIN,
        &[0xDD; 32],
        &[0x15],                   // attestation tag
        &[0x01, 0x00],             // slot 256
        &[0x00, 0x98, 0x96, 0x80], // level 10 000 000
        &[0x00, 0x00, 0x00, 0x00], // round 0
        &[0xEE; 32],
    ])
}

fn attestation_dal_tz1() -> Vec<u8> {
    cat(&[
        &[0x13],
        &CHAIN,
        &[0xDD; 32],
        &[0x17], // attestation with DAL content
        &[0x01, 0x00],
        &[0x00, 0x98, 0x96, 0x80], // level 10 000 000
        &[0x00, 0x00, 0x00, 0x00],
        &[0xEE; 32],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01], // DAL bitset
    ])
}

fn attestation_tz4() -> Vec<u8> {
    cat(&[
        &[0x13],
        &CHAIN,
        &[0xDD; 32],
        &[0x15],
        &[0x7f, 0xff, 0xff, 0xff], // level i32::MAX (largest allowed)
        &[0x00, 0x00, 0x00, 0x07], // round 7
        &[0xEE; 32],
    ])
}

#[test]
fn payload_parser_table() {
    use ConsensusKind::*;
    type Row = (
        &'static str,
        Vec<u8>,
        Curve,
        Result<(ConsensusKind, u32, u32), PayloadError>,
    );
    // (row, bytes, key scheme, expected (kind, level, round) or error)
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("block, round 0",                         block_tz1_round0(),        Curve::Ed25519,   Ok((Block, 6_000_000, 0))),
        ("block, tz4 key (same layout)",           block_tz1_round0(),        Curve::Bls,       Ok((Block, 6_000_000, 0))),
        ("block, locked round, round 3",           block_tz1_round3_locked(), Curve::Ed25519,   Ok((Block, 12_345, 3))),
        ("preattestation tz1",                     preattestation_tz1(),      Curve::Ed25519,   Ok((Preattestation, 1_234_567, 2))),
        ("preattestation tz2",                     preattestation_tz1(),      Curve::Secp256k1, Ok((Preattestation, 1_234_567, 2))),
        ("preattestation tz3",                     preattestation_tz1(),      Curve::P256,      Ok((Preattestation, 1_234_567, 2))),
        ("preattestation tz4",                     preattestation_tz4(),      Curve::Bls,       Ok((Preattestation, 1_234_567, 2))),
        ("attestation tz1",                        attestation_tz1(),         Curve::Ed25519,   Ok((Attestation, 10_000_000, 0))),
        ("attestation with DAL is an attestation", attestation_dal_tz1(),     Curve::Ed25519,   Ok((Attestation, 10_000_000, 0))),
        ("attestation tz4",                        attestation_tz4(),         Curve::Bls,       Ok((Attestation, i32::MAX as u32, 7))),
        // The scheme decides the offsets: tz4 bytes read with tz1 offsets
        // are too short, and tz1 bytes read with tz4 offsets give nonsense.
        ("tz4 attestation parsed for a tz1 key",   attestation_tz4(),         Curve::Ed25519,
            Err(PayloadError::TooShort { kind: Attestation, needed: 80, have: 78 })),
        ("tz1 attestation parsed for a tz4 key",   attestation_tz1(),         Curve::Bls,
            Err(PayloadError::OutOfRange { field: "round", value: 0x9680_0000 })),
    ];
    for (name, bytes, curve, expect) in rows {
        let got = ConsensusPayload::parse(&bytes, curve);
        match (got, expect) {
            (Ok(p), Ok((kind, level, round))) => {
                assert_eq!(p.kind, kind, "{name}");
                assert_eq!(p.mark, Mark { level, round }, "{name}");
                assert_eq!(p.chain.0, CHAIN, "{name}");
                assert_eq!(p.payload_hash, PayloadHash::of(&bytes), "{name}");
            }
            (Err(e), Err(want)) => assert_eq!(e, want, "{name}"),
            (got, expect) => panic!("{name}: got {got:?}, expected {expect:?}"),
        }
    }

    // The payload identity covers every byte: a change anywhere outside the
    // parsed fields is another message at the same (level, round).
    let a = attestation_tz1();
    let mut b = a.clone();
    *b.last_mut().unwrap() ^= 1;
    let (ra, rb) = (
        SignRequest::parse(&a, tz1()).unwrap(),
        SignRequest::parse(&b, tz1()).unwrap(),
    );
    assert_eq!((ra.key, ra.mark), (rb.key, rb.mark));
    assert_ne!(ra.payload_hash, rb.payload_hash);
    assert_eq!(
        ra.key,
        WatermarkKey {
            chain: MAINNET,
            key: tz1(),
            kind: Attestation
        }
    );
    // blake2b-256 of the empty input, a published constant.
    assert_eq!(
        PayloadHash::of(&[]).0[..8],
        [0x0e, 0x57, 0x51, 0xc0, 0x26, 0xe5, 0x43, 0xb2]
    );
}
