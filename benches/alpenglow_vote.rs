//! `alpenglow_vote`: what an Alpenglow validator pays before its votes
//! leave, next to the floor of a durable write plus one BLS signature.
//!
//! slashguard rows (`AlpenglowGuard::vote`, strict rules, the root moved
//! every 32 slots in the same step, as a validator following finalization
//! would):
//! - `file_vote`: one Notarize on `FileVoteHistory`: check, one write and
//!   one `fdatasync`, one BLS signature;
//! - `file_event3`: one event of three votes (Notarize, NotarizeFallback,
//!   SkipFallback): still one write and one `fdatasync`, three signatures;
//! - `memory_vote`: the same as `file_vote` on `MemoryVoteHistory`.
//!
//! Baselines, same directory, same record bytes:
//! - `s_bls_sign`: one BLS signature of a 43-byte payload (blst);
//! - (c) `c_floor_fdatasync`: one `fdatasync` of a rewritten 4 KiB page;
//! - `cs_floor_sign`: (c) then one BLS signature: the target's floor.
//!
//! With the `etcd` feature, against a single-node etcd started for the
//! bench: `etcd_vote`, `etcd_event3` on `EtcdVoteHistory` under a taken-over
//! ownership, and the raw floors (d) `d_put`, `d_txn` of the same bytes.
//! Every etcd row is then run alone while etcd's request counters are read:
//! each sends exactly one request, the three-vote event included.
//!
//! Run: `cargo bench --features alpenglow[,etcd] --bench alpenglow_vote`.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, HistoryStorage, RuleMode, Vote, VoteHistory, VoteKind,
};
use slashguard::file::FileVoteHistory;
use slashguard::memory::MemoryVoteHistory;
use slashguard::NodeKeypair;
#[cfg(feature = "etcd")]
use slashguard::{
    etcd::{EtcdIdentity, EtcdVoteHistory, OwnershipOptions},
    Ownership,
};

use common::{baseline, Op, Report, Role, Rounds, Scratch};

const SV: u16 = 50093;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn votes(slot: u64, three: bool) -> Vec<Vote> {
    let v = |kind| Vote {
        slot,
        kind,
        shred_version: SV,
    };
    let mut block = [0u8; 32];
    block[..8].copy_from_slice(&slot.to_le_bytes());
    if three {
        vec![
            v(VoteKind::Notarize(block)),
            v(VoteKind::NotarizeFallback([0xee; 32])),
            v(VoteKind::SkipFallback),
        ]
    } else {
        vec![v(VoteKind::Notarize(block))]
    }
}

fn guard<S: HistoryStorage>(rt: &tokio::runtime::Runtime, store: S, seed: u8) -> AlpenglowGuard<S> {
    let voter = NodeKeypair::from_seed([seed; 32]);
    let registered = derive_voter_key(&voter).expect("derive").public_key();
    let g = AlpenglowGuard::new(store, voter, &registered, RuleMode::Strict).expect("guard");
    let node = g.node();
    rt.block_on(g.storage().create(&VoteHistory::new(node, SV, 0)))
        .expect("start the history");
    g
}

fn vote_op<'a, S: HistoryStorage + 'a>(
    id: String,
    role: Role,
    rt: &'a tokio::runtime::Runtime,
    guard: AlpenglowGuard<S>,
    three: bool,
) -> Op<'a> {
    let mut slot = 0u64;
    let label = format!(
        "{id}: AlpenglowGuard::vote ({})",
        if three {
            "3 votes, one event"
        } else {
            "1 vote"
        }
    );
    Op::new(id, label, role, move |laps| {
        slot += 1;
        let finalized = slot.is_multiple_of(32).then(|| slot - 8);
        let v = votes(slot, three);
        laps.time(|| rt.block_on(guard.vote(&v, finalized)))
            .expect("vote");
    })
}

#[cfg(feature = "etcd")]
fn etcd_ops<'a>(
    rt: &'a tokio::runtime::Runtime,
    etcd: &common::etcd::Etcd,
    bytes: &'a [u8],
    held: &mut Vec<(EtcdIdentity, Ownership)>,
) -> Vec<Op<'a>> {
    let client = etcd.client(rt);
    let mut ops = Vec::new();
    for (seed, three) in [(40u8, false), (41, true)] {
        let node = NodeKeypair::from_seed([seed; 32]).node_id();
        let identity = EtcdIdentity::new(client.clone(), node, OwnershipOptions::new("bench"))
            .expect("etcd identity");
        let ownership = rt.block_on(identity.take_over()).expect("take over");
        let store = rt
            .block_on(EtcdVoteHistory::open(&identity, &ownership))
            .expect("open");
        held.push((identity, ownership));
        let g = guard(rt, store, seed);
        let id = format!("{}_{}", etcd.name, if three { "event3" } else { "vote" });
        ops.push(vote_op(id, Role::Slashguard, rt, g, three));
    }
    ops.extend(common::etcd::raw_ops(rt, etcd, bytes, "alpenglow"));
    ops
}

fn alpenglow_vote(c: &mut Criterion) {
    let scratch = Scratch::new("alpenglow");
    let mut report = Report::new("alpenglow_vote", false, Some(scratch.fs.clone()));
    let rt = runtime();
    #[cfg(feature = "etcd")]
    let etcd_rt = common::etcd::runtime();
    #[cfg(feature = "etcd")]
    let etcds = vec![common::etcd::Etcd::plain()];
    #[cfg(feature = "etcd")]
    let mut held = Vec::new();

    // A history of 32 slots of three votes: about what a validator keeps
    // between two root moves.
    let node = NodeKeypair::from_seed([1; 32]).node_id();
    let mut sample = VoteHistory::new(node, SV, 0);
    for slot in 0..32 {
        let update = slashguard::alpenglow::HistoryUpdate {
            votes: votes(slot, true),
            finalized: None,
        };
        sample = sample
            .apply(&update, RuleMode::Strict)
            .expect("sample")
            .0
            .expect("changed");
    }
    let bytes = sample.encode();

    let dir = scratch.sub("file");
    let open = |seed: u8| {
        FileVoteHistory::create(&dir, NodeKeypair::from_seed([seed; 32]).node_id()).expect("create")
    };
    let key = derive_voter_key(&NodeKeypair::from_seed([9; 32])).expect("derive");
    let key2 = derive_voter_key(&NodeKeypair::from_seed([9; 32])).expect("derive");
    let payload = votes(1, false)[0].to_bytes();
    let payload2 = payload.clone();
    let mut floor = baseline::FloorPage::create(&scratch.sub("baseline-c")).expect("floor page");
    let mut floor2 = baseline::FloorPage::create(&scratch.sub("baseline-cs")).expect("floor page");

    let mut ops = vec![
        vote_op(
            "file_vote".into(),
            Role::Slashguard,
            &rt,
            guard(&rt, open(11), 11),
            false,
        ),
        vote_op(
            "file_event3".into(),
            Role::Slashguard,
            &rt,
            guard(&rt, open(12), 12),
            true,
        ),
        vote_op(
            "memory_vote".into(),
            Role::InMemory,
            &rt,
            guard(&rt, MemoryVoteHistory::new(node), 13),
            false,
        ),
        Op::new(
            "s_bls_sign",
            "(s) one BLS signature (blst, 43-byte payload)",
            Role::Baseline("s"),
            move |laps| {
                laps.time(|| key.sign(&payload));
            },
        ),
        Op::new(
            "c_floor_fdatasync",
            "(c) floor: 4 KiB page rewrite + fdatasync",
            Role::Baseline("c"),
            move |laps| laps.time(|| floor.write()).expect("baseline c"),
        ),
        Op::new(
            "cs_floor_sign",
            "(cs) floor + one BLS signature",
            Role::Baseline("cs"),
            move |laps| {
                laps.time(|| floor2.write().map(|_| key2.sign(&payload2)))
                    .expect("baseline cs");
            },
        ),
    ];
    #[cfg(feature = "etcd")]
    for etcd in &etcds {
        ops.extend(etcd_ops(&etcd_rt, etcd, &bytes, &mut held));
    }
    #[cfg(not(feature = "etcd"))]
    let _ = &bytes;

    common::run_ops(
        c,
        "alpenglow_vote",
        &mut report,
        &mut ops,
        Rounds {
            budget: Duration::from_secs(if cfg!(feature = "etcd") { 30 } else { 15 }),
            warm_up: 20,
            min: 200,
            max: 20_000,
        },
    );
    #[cfg(feature = "etcd")]
    {
        let etcds: Vec<_> = etcds.iter().collect();
        let calls = if common::is_bench_run() { 50 } else { 2 };
        common::etcd::check_round_trips(&mut ops, &etcds, &mut report, calls);
    }
    drop(ops);
    if common::is_bench_run() {
        eprintln!("results: {}", report.file().display());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = alpenglow_vote
}
criterion_main!(benches);
