//! `watermark_authorize`: what a baker pays before every signature.
//!
//! slashguard rows (level increasing by one per authorization; each guard's
//! table already holds a mark for every kind of its keys, as a running
//! baker's does):
//! - `file_authorize_tz1`: `SignerGuard::authorize` of one tz1 attestation
//!   (with DAL content, 82 bytes) on `FileWatermarks`;
//! - `file_authorize_tz4`: the same for a tz4 (BLS) attestation (78 bytes);
//! - `file_authorize_batch`: consensus and companion key (both tz4) in one
//!   all-or-nothing batch;
//! - `file_guarded_sign_tz1`: `GuardedSigner::sign` with an `Ed25519Signer`,
//!   end to end: parse, blake2b, authorize, sign;
//! - `memory_*`: the same on `MemoryWatermarks`;
//! - `file_concurrent_<N>` for N = 1, 4, 16, 64: one round of N concurrent
//!   clients (tasks), each authorizing one tz4 attestation, over 100 keys
//!   (a key's level rises by one every 100 requests), on one
//!   `FileWatermarks`. The row's time is the whole round: throughput is N
//!   divided by it. Concurrent authorizations share `fdatasync`s (group
//!   commit), so the round grows far slower than N.
//!
//! Baseline (c) again, in the same run: one `fdatasync` of one rewritten,
//! pre-allocated 4 KiB page in the same directory.
//!
//! With the `etcd` feature, in the same interleaved pass, the same four
//! rows on `EtcdWatermarks` against a single-node etcd started for the
//! bench (`etcd_*`), and with mutual TLS (`etcd_tls_*`), and the etcd floor
//! (d) on a 76-byte value, the size of one stored watermark entry: `d_put`
//! (one raw put) and `d_txn` (one raw transaction with one `mod_revision`
//! compare), plain and TLS. After the pass every etcd row is run again on
//! its own while etcd's request counters are read: each must send exactly
//! one request (a batch is one transaction too).
//!
//! `SLASHGUARD_BENCH_LOAD=1` runs the disk rows under the background writer
//! (see `tower_store`).
//!
//! Run: `cargo bench --features etcd --bench watermark_authorize`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use slashguard::file::FileWatermarks;
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{ChainId, ConsensusKind, Curve, KeyHash, Mark, SetMode, SignRequest};
use slashguard::{Ed25519Signer, GuardedSigner, Signer, SignerGuard};

use common::{baseline, LoadWriter, Op, Report, Role, Rounds, Scratch};

const MAINNET: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);

fn tz4(byte: u8) -> KeyHash {
    KeyHash {
        curve: Curve::Bls,
        hash: [byte; 20],
    }
}

/// An attestation as a baker sends it to its signer: magic 0x13, chain id,
/// branch, operation tag, [slot (not for tz4)], level, round, block payload
/// hash, and for tz1 the DAL content bitset of an `attestation_with_dal`.
fn attestation(curve: Curve, level: u32) -> Vec<u8> {
    let mut b = vec![0x13];
    b.extend_from_slice(&MAINNET.0);
    b.extend_from_slice(&common::filler(32, 3)); // branch
    if curve == Curve::Bls {
        b.push(41); // tz4 attestation (no slot)
    } else {
        b.push(23); // attestation_with_dal
        b.extend_from_slice(&17u16.to_be_bytes()); // slot
    }
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // round
    b.extend_from_slice(&common::filler(32, 4)); // block payload hash
    if curve != Curve::Bls {
        b.extend_from_slice(&[0x83, 0x01]); // DAL attested slots (zarith bitset)
    }
    b
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Give `guard` a mark for every kind of every key, as a running baker has.
fn prefill(rt: &tokio::runtime::Runtime, guard: &impl SignerGuard, keys: &[KeyHash]) {
    let marks: Vec<_> = keys
        .iter()
        .flat_map(|&key| {
            ConsensusKind::ALL.map(|kind| {
                (
                    slashguard::watermark::WatermarkKey {
                        chain: MAINNET,
                        key,
                        kind,
                    },
                    Mark::level(0),
                )
            })
        })
        .collect();
    rt.block_on(guard.set_marks(&marks, SetMode::RaiseOnly))
        .expect("prefill");
}

/// The rows of one backend: `open(name)` gives a fresh guard per row.
fn guard_ops<'a, G: SignerGuard + 'a>(
    rt: &'a tokio::runtime::Runtime,
    name: &str,
    mut open: impl FnMut(&str) -> G,
) -> Vec<Op<'a>> {
    let tz1 = Ed25519Signer::from_seed([21; 32]).key_hash();
    let rows: [(&str, &str, Vec<KeyHash>); 3] = [
        ("authorize_tz1", "authorize, one tz1 key", vec![tz1]),
        ("authorize_tz4", "authorize, one tz4 key", vec![tz4(1)]),
        (
            "authorize_batch",
            "authorize, consensus + companion batch",
            vec![tz4(2), tz4(3)],
        ),
    ];
    let mut ops = Vec::new();
    for (row, label, keys) in rows {
        let guard = open(row);
        prefill(rt, &guard, &keys);
        let mut level = 0u32;
        ops.push(Op::new(
            format!("{name}_{row}"),
            format!("{name}: {label}"),
            Role::backend(name),
            move |laps| {
                level += 1;
                // Parsed outside the timing: this row is the guard alone.
                let batch: Vec<SignRequest> = keys
                    .iter()
                    .map(|&k| SignRequest::parse(&attestation(k.curve, level), k).expect("parse"))
                    .collect();
                laps.time(|| rt.block_on(guard.authorize(&batch)))
                    .expect("authorize");
            },
        ));
    }

    let signer = GuardedSigner::new(open("guarded_sign"), Ed25519Signer::from_seed([22; 32]));
    prefill(rt, signer.guard(), &[signer.key_hash()]);
    let mut level = 0u32;
    ops.push(Op::new(
        format!("{name}_guarded_sign_tz1"),
        format!("{name}: GuardedSigner::sign, Ed25519Signer (parse + authorize + sign)"),
        Role::backend(name),
        move |laps| {
            level += 1;
            let payload = attestation(Curve::Ed25519, level);
            laps.time(|| rt.block_on(signer.sign(&payload)))
                .expect("sign");
        },
    ));
    ops
}

/// The group-commit rows (see the module docs).
fn concurrent_ops<'a>(rt: &'a tokio::runtime::Runtime, dir: &Path) -> Vec<Op<'a>> {
    const KEYS: u64 = 100;
    let keys: Vec<KeyHash> = (0..KEYS).map(|i| tz4(100 + i as u8)).collect();
    let mut ops = Vec::new();
    for clients in [1u64, 4, 16, 64] {
        let guard = Arc::new(
            FileWatermarks::create(dir.join(format!("concurrent_{clients}.hwm"))).expect("create"),
        );
        prefill(rt, guard.as_ref(), &keys);
        let keys = keys.clone();
        // Requests made so far: request n is for key n % 100 at level
        // n / 100 + 1, so the clients of a round never share a key.
        let mut made = 0u64;
        ops.push(Op::new(
            format!("file_concurrent_{clients}"),
            format!("file: {clients} concurrent clients over {KEYS} keys, one authorization each (round)"),
            Role::backend("file"),
            move |laps| {
                // Parsed outside the timing.
                let requests: Vec<SignRequest> = (made..made + clients)
                    .map(|n| {
                        let key = keys[(n % KEYS) as usize];
                        let level = (n / KEYS) as u32 + 1;
                        SignRequest::parse(&attestation(key.curve, level), key).expect("parse")
                    })
                    .collect();
                made += clients;
                laps.time(|| {
                    rt.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for request in requests {
                            let guard = Arc::clone(&guard);
                            tasks.spawn(async move { guard.authorize(&[request]).await });
                        }
                        while let Some(done) = tasks.join_next().await {
                            done.expect("client task").expect("authorize");
                        }
                    })
                });
            },
        ));
    }
    ops
}

fn watermark_authorize(c: &mut Criterion) {
    let load = common::load_enabled();
    let scratch = Scratch::new(if load { "watermark-load" } else { "watermark" });
    let mut report = Report::new("watermark_authorize", load, Some(scratch.fs.clone()));
    let rt = runtime();
    // The etcd rows, not in the load variant (see `tower_store`); the
    // etcds and their runtime outlive the operations.
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
    let entry = common::filler(slashguard::watermark::ENTRY_LEN, 5);

    let dir = scratch.sub("file");
    let mut ops = guard_ops(&rt, "file", |name| {
        FileWatermarks::create(dir.join(format!("{name}.hwm"))).expect("create")
    });
    ops.extend(concurrent_ops(&rt, &scratch.sub("concurrent")));
    let mut floor = baseline::FloorPage::create(&scratch.sub("baseline-c")).expect("floor page");
    ops.push(Op::new(
        "c_floor_fdatasync",
        "(c) floor: 4 KiB page rewrite + fdatasync",
        Role::Baseline("c"),
        move |laps| laps.time(|| floor.write()).expect("baseline c"),
    ));
    if !load {
        ops.extend(guard_ops(&rt, "memory", |_| MemoryWatermarks::new()));
    }

    #[cfg(feature = "etcd")]
    for etcd in &etcds {
        let client = etcd.client(&etcd_rt);
        ops.extend(guard_ops(&etcd_rt, etcd.name, |_| {
            slashguard::etcd::EtcdWatermarks::new(client.clone())
        }));
        ops.extend(common::etcd::raw_ops(&etcd_rt, etcd, &entry, "watermark"));
    }

    let writer = load.then(|| LoadWriter::start(scratch.path()));
    common::run_ops(
        c,
        if load {
            "watermark_authorize_load"
        } else {
            "watermark_authorize"
        },
        &mut report,
        &mut ops,
        Rounds {
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
    targets = watermark_authorize
}
criterion_main!(benches);
