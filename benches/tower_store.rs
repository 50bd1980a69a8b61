//! `tower_store`: what a validator pays before every vote, next to what the
//! same bytes cost written the ways it could be written instead.
//!
//! slashguard rows (2 KiB tower, slots increasing by one per store):
//! - `file_save`: `VoteGuard::save` on `FileTowerStorage`: sign the record,
//!   check it, one write and one `fdatasync` into a pre-allocated slot;
//! - `file_store`: `TowerStorage::store` of a record signed just before,
//!   outside the timing (the store alone);
//! - `file_vote`: `VoteGuard::sign_vote_message` on `FileTowerStorage`: the
//!   whole vote path of a TowerSync validator (decode the 31-lockout vote
//!   message, derive and sign the tower record, one write and one
//!   `fdatasync`, sign the message); compare with the floor (c);
//! - `memory_save`, `memory_store`: the same on `MemoryTowerStorage`.
//!
//! Baselines, same encoded record bytes, same directory:
//! - (a) Agave's write as it is: temp file, rename, no fsync (not durable);
//! - (b) the same made durable: temp file, fsync, rename, directory fsync;
//! - (c) the floor: one `fdatasync` of one rewritten, pre-allocated 4 KiB page.
//!
//! With the `etcd` feature, in the same interleaved pass, against a
//! single-node etcd started for the bench (plain, and with mutual TLS):
//! - `etcd_save`, `etcd_store`, `etcd_vote` (and `etcd_tls_*`): the same
//!   three operations on `EtcdTowerStorage`, under an ownership taken with
//!   `EtcdIdentity::take_over`;
//! - (d) the etcd floor, same record bytes, same etcd: `d_put`, one raw put,
//!   and `d_txn`, one raw transaction with one `mod_revision` compare
//!   (`d_put_tls`, `d_txn_tls` over TLS).
//!
//! After the pass, every etcd row is run again on its own while etcd's
//! request counters are read: each must send exactly one request.
//!
//! `SLASHGUARD_BENCH_LOAD=1` runs the disk rows again while a background
//! thread writes 8 MiB chunks with an `fdatasync` after each to the same
//! disk (results in `target/slashguard-bench/tower_store-load.json`).
//!
//! Run: `cargo bench --features etcd --bench tower_store` (see
//! `scripts/bench-table`); without the feature, the etcd rows are left out.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use slashguard::file::FileTowerStorage;
use slashguard::memory::MemoryTowerStorage;
use slashguard::tower::{StoreMode, TowerRecord, TowerUpdate, VoteGuard, VoteRef};
#[cfg(feature = "etcd")]
use slashguard::{
    etcd::{EtcdIdentity, EtcdTowerStorage, OwnershipOptions},
    Ownership,
};
use slashguard::{NodeKeypair, TowerStorage};

use common::{baseline, filler, LoadWriter, Op, Report, Role, Rounds, Scratch};

/// Agave's towers are 2-4 KiB; the issue fixes 2 KiB.
const TOWER_BYTES: usize = 2048;

fn vote(slot: u64) -> VoteRef {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&slot.to_le_bytes());
    VoteRef { slot, hash }
}

fn update(slot: u64, tower: &[u8]) -> TowerUpdate {
    TowerUpdate {
        vote: vote(slot),
        root: slot.checked_sub(31),
        tower: tower.to_vec(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A validator voting through `VoteGuard::save` on one backend.
fn save_op<'a, S: TowerStorage + 'a>(
    name: &str,
    rt: &'a tokio::runtime::Runtime,
    guard: VoteGuard<S>,
    tower: &'a [u8],
) -> Op<'a> {
    let mut slot = 0u64;
    Op::new(
        format!("{name}_save"),
        format!("{name}: VoteGuard::save (sign + store)"),
        Role::backend(name),
        move |laps| {
            slot += 1;
            let u = update(slot, tower);
            laps.time(|| rt.block_on(guard.save(u, StoreMode::Advance)))
                .expect("save");
        },
    )
}

/// A validator voting through `VoteGuard::sign_vote_message`: decode the
/// 31-lockout TowerSync message, derive and sign the tower, store it, sign
/// the message (the message is built untimed).
fn vote_op<'a, S: TowerStorage + 'a>(
    name: &str,
    rt: &'a tokio::runtime::Runtime,
    guard: VoteGuard<S>,
) -> Op<'a> {
    let mut slot = 100u64;
    let node = guard.node();
    Op::new(
        format!("{name}_vote"),
        format!("{name}: VoteGuard::sign_vote_message (decode + store + sign)"),
        Role::backend(name),
        move |laps| {
            slot += 1;
            let message = common::tower_sync_message(node, slot);
            laps.time(|| rt.block_on(guard.sign_vote_message(&message)))
                .expect("vote");
        },
    )
}

/// The bare `TowerStorage::store` of a record signed beforehand (a store
/// must advance, so each store gets a fresh record, signed untimed).
fn store_op<'a, S: TowerStorage + 'a>(
    name: &str,
    rt: &'a tokio::runtime::Runtime,
    storage: S,
    signer: NodeKeypair,
    tower: &'a [u8],
) -> Op<'a> {
    let mut slot = 0u64;
    Op::new(
        format!("{name}_store"),
        format!("{name}: TowerStorage::store (pre-signed)"),
        Role::backend(name),
        move |laps| {
            slot += 1;
            let u = update(slot, tower);
            let record = TowerRecord::sign(&signer, Some(u.vote), u.root, u.tower).expect("sign");
            laps.time(|| rt.block_on(storage.store(&record, StoreMode::Advance)))
                .expect("store");
        },
    )
}

/// The etcd rows on one etcd: save, store and the whole vote path (three
/// identities, each taken over, their ownerships kept in `held`) and the
/// raw baselines (d) on `bytes`.
#[cfg(feature = "etcd")]
fn etcd_ops<'a>(
    rt: &'a tokio::runtime::Runtime,
    etcd: &common::etcd::Etcd,
    tower: &'a [u8],
    bytes: &'a [u8],
    seeds: (u8, u8, u8),
    held: &mut Vec<(EtcdIdentity, Ownership)>,
) -> Vec<Op<'a>> {
    let client = etcd.client(rt);
    let mut open = |kp: &NodeKeypair| {
        let identity =
            EtcdIdentity::new(client.clone(), kp.node_id(), OwnershipOptions::new("bench"))
                .expect("etcd identity");
        let ownership = rt.block_on(identity.take_over()).expect("take over");
        let storage = rt
            .block_on(EtcdTowerStorage::open(&identity, &ownership))
            .expect("open the etcd tower");
        held.push((identity, ownership));
        storage
    };
    let (id_a, id_b) = (
        NodeKeypair::from_seed([seeds.0; 32]),
        NodeKeypair::from_seed([seeds.1; 32]),
    );
    let id_v = NodeKeypair::from_seed([seeds.2; 32]);
    let guard = VoteGuard::new(open(&id_a), id_a).expect("guard");
    let storage = open(&id_b);
    let vote_guard = VoteGuard::new(open(&id_v), id_v)
        .expect("guard")
        .with_vote_account(common::VOTE_ACCOUNT);
    let mut ops = vec![
        save_op(etcd.name, rt, guard, tower),
        store_op(etcd.name, rt, storage, id_b, tower),
        vote_op(etcd.name, rt, vote_guard),
    ];
    ops.extend(common::etcd::raw_ops(rt, etcd, bytes, "tower"));
    ops
}

/// Baselines (a), (b), (c) on `bytes`, in subdirectories of `scratch`.
fn baseline_ops<'a>(scratch: &Scratch, bytes: &'a [u8], name: &'a str) -> Vec<Op<'a>> {
    let dir_a = scratch.sub("baseline-a");
    let dir_b = scratch.sub("baseline-b");
    let mut floor = baseline::FloorPage::create(&scratch.sub("baseline-c")).expect("floor page");
    vec![
        Op::new(
            "a_agave_rename",
            "(a) Agave: temp file + rename, no fsync (not durable)",
            Role::Baseline("a"),
            move |laps| {
                laps.time(|| baseline::agave_rename(&dir_a, name, bytes))
                    .expect("baseline a")
            },
        ),
        Op::new(
            "b_durable_rename",
            "(b) temp file + fsync + rename + dir fsync",
            Role::Baseline("b"),
            move |laps| {
                laps.time(|| baseline::durable_rename(&dir_b, name, bytes))
                    .expect("baseline b")
            },
        ),
        Op::new(
            "c_floor_fdatasync",
            "(c) floor: 4 KiB page rewrite + fdatasync",
            Role::Baseline("c"),
            move |laps| laps.time(|| floor.write()).expect("baseline c"),
        ),
    ]
}

fn tower_store(c: &mut Criterion) {
    let load = common::load_enabled();
    let scratch = Scratch::new(if load { "tower-load" } else { "tower" });
    let mut report = Report::new("tower_store", load, Some(scratch.fs.clone()));
    let rt = runtime();
    // The etcd rows (not in the load variant, which is about the local
    // disk). Declared here so that the etcds, the runtime and the
    // ownerships outlive the operations.
    #[cfg(feature = "etcd")]
    let etcd_rt = common::etcd::runtime();
    #[cfg(feature = "etcd")]
    let etcds = if load {
        Vec::new()
    } else {
        vec![
            common::etcd::Etcd::plain(),
            common::etcd::Etcd::mutual_tls(),
        ]
    };
    #[cfg(feature = "etcd")]
    let mut held = Vec::new();
    let tower = filler(TOWER_BYTES, 1);

    // The exact bytes slashguard writes for such a tower (the record with
    // its signature), so that every row moves the same payload.
    let kp = NodeKeypair::from_seed([10; 32]);
    let u = update(1, &tower);
    let bytes = TowerRecord::sign(&kp, Some(u.vote), u.root, u.tower)
        .expect("sign")
        .encode();
    let agave_name = format!("tower-1_9-{}.bin", kp.node_id());

    let file_dir = scratch.sub("file");
    let open_file =
        |kp: &NodeKeypair| FileTowerStorage::create(&file_dir, kp.node_id()).expect("create");
    let (id_a, id_b) = (
        NodeKeypair::from_seed([11; 32]),
        NodeKeypair::from_seed([12; 32]),
    );
    let file_guard = VoteGuard::new(open_file(&id_a), id_a).expect("guard");
    let file_storage = open_file(&id_b);
    let id_v = NodeKeypair::from_seed([15; 32]);
    let vote_guard = VoteGuard::new(open_file(&id_v), id_v)
        .expect("guard")
        .with_vote_account(common::VOTE_ACCOUNT);

    let mut ops = vec![
        save_op("file", &rt, file_guard, &tower),
        store_op("file", &rt, file_storage, id_b, &tower),
        vote_op("file", &rt, vote_guard),
    ];
    ops.extend(baseline_ops(&scratch, &bytes, &agave_name));
    if !load {
        // No I/O: nothing for the background writer to slow down.
        let (id_c, id_d) = (
            NodeKeypair::from_seed([13; 32]),
            NodeKeypair::from_seed([14; 32]),
        );
        let guard = VoteGuard::new(MemoryTowerStorage::new(id_c.node_id()), id_c).expect("guard");
        ops.push(save_op("memory", &rt, guard, &tower));
        let storage = MemoryTowerStorage::new(id_d.node_id());
        ops.push(store_op("memory", &rt, storage, id_d, &tower));
    }

    #[cfg(feature = "etcd")]
    for (i, etcd) in etcds.iter().enumerate() {
        let seed = 20 + 3 * i as u8;
        ops.extend(etcd_ops(
            &etcd_rt,
            etcd,
            &tower,
            &bytes,
            (seed, seed + 1, seed + 2),
            &mut held,
        ));
    }

    let writer = load.then(|| LoadWriter::start(scratch.path()));
    common::run_ops(
        c,
        if load {
            "tower_store_load"
        } else {
            "tower_store"
        },
        &mut report,
        &mut ops,
        Rounds {
            // Under load a store can take tens of milliseconds: more time
            // gives the 99th percentile enough samples.
            // The etcd rows add a dozen milliseconds per round: more time
            // keeps the sample count up.
            budget: Duration::from_secs(if load {
                60
            } else if cfg!(feature = "etcd") {
                30
            } else {
                15
            }),
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
    if let Some(w) = writer {
        common::record_load(&mut report, w.finish());
    }
    if common::is_bench_run() {
        eprintln!("results: {}", report.file().display());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = tower_store
}
criterion_main!(benches);
