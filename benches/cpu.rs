//! `cpu`: what a store and an authorization cost with the I/O taken out,
//! piece by piece and in total, for the budget of 50 microseconds
//! per store or authorize (2 KiB tower).
//!
//! Tower store (what `FileTowerStorage::store` computes around its one
//! write and `fdatasync`, and what `VoteGuard` adds):
//! - `tower_sign`: build and ed25519-sign the record (`TowerRecord::sign`);
//! - `tower_check_store`: the ordering rule and signature check every store
//!   applies (`check_store`) to a record this process signed;
//! - `tower_verify`: the ed25519 verification of a record (what
//!   `check_store` costs for a record decoded without verification);
//! - `tower_encode`: the canonical encoding (`TowerRecord::encode`);
//! - `slot_crc32`: the slot's CRC-32 over header and record;
//! - `tower_store_total`: all of the above plus the in-memory copy the store
//!   keeps: a file store minus its `pwrite` and `fdatasync`;
//! - `memory_save`: `VoteGuard::save` on `MemoryTowerStorage` (the real code
//!   path of a store without I/O);
//! - `vote_tx_decode`: `VoteMessage::decode` of a legacy TowerSync message
//!   with 31 lockouts (the budget: under 3 us);
//! - `memory_vote`: `VoteGuard::sign_vote_message` on `MemoryTowerStorage`.
//! - `fail_closed_checks`: what the fail-closed file format adds to every
//!   store besides its one write and `fdatasync`: the owner-lock identity
//!   check (`OwnerLock::check_held`, one `lstat`) and building the slot's
//!   second copy (format v2 writes every slot twice; issue budget: 5 us).
//!
//! Watermark authorization:
//! - `payload_parse_tz1` / `_tz4`: `SignRequest::parse` (includes blake2b-256);
//! - `table_plan`: `WatermarkTable::plan_authorize` on a baker's table (two
//!   keys, three kinds);
//! - `table_encode_crc32`: the table with the change applied, encoded, CRC'd;
//! - `authorize_total`: parse + plan + encode + CRC + apply: a file
//!   authorization minus its `pwrite` and `fdatasync`;
//! - `ed25519_sign_tz1`: what `Ed25519Signer::sign` adds after it;
//! - `memory_guarded_sign`: `GuardedSigner::sign` on `MemoryWatermarks`.
//!
//! Run: `cargo bench --bench cpu`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use slashguard::memory::{MemoryTowerStorage, MemoryWatermarks};
use slashguard::tower::vote_tx::VoteMessage;
use slashguard::tower::{check_store, StoreMode, TowerRecord, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{
    ChainId, ConsensusKind, Mark, SetMode, SignRequest, WatermarkKey, WatermarkTable,
};
use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair, Signer};

use common::{filler, Report, Role};

const TOWER_BYTES: usize = 2048;
const MAINNET: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);
/// The slot file's header (magic, version, sequence, sizes).
const SLOT_HEADER: usize = 24;

fn vote(slot: u64) -> VoteRef {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&slot.to_le_bytes());
    VoteRef { slot, hash }
}

/// A tz1 attestation with DAL content (82 bytes), as in `watermark_authorize`.
fn attestation_tz1(level: u32) -> Vec<u8> {
    let mut b = vec![0x13];
    b.extend_from_slice(&MAINNET.0);
    b.extend_from_slice(&filler(32, 3));
    b.push(23);
    b.extend_from_slice(&17u16.to_be_bytes());
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&filler(32, 4));
    b.extend_from_slice(&[0x83, 0x01]);
    b
}

/// The tz4 form: tag 41, no slot, no DAL bitset (78 bytes).
fn attestation_tz4(level: u32) -> Vec<u8> {
    let mut b = vec![0x13];
    b.extend_from_slice(&MAINNET.0);
    b.extend_from_slice(&filler(32, 3));
    b.push(41);
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&filler(32, 4));
    b
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn tower_cpu(c: &mut Criterion, report: &mut Report) {
    let mut g = common::cpu_group(c, "cpu");
    let kp = NodeKeypair::from_seed([31; 32]);
    let node = kp.node_id();
    let tower = filler(TOWER_BYTES, 1);
    let sign = |slot: u64, tower: Vec<u8>| {
        TowerRecord::sign(&kp, Some(vote(slot)), slot.checked_sub(31), tower).expect("sign")
    };
    let prev = sign(1_000, tower.clone());
    let next = sign(1_001, tower.clone());

    let mut slot = 0u64;
    report.bench(
        &mut g,
        "tower_sign",
        "tower record: build + ed25519 sign (2 KiB)",
        Role::Cpu,
        |iters, laps| {
            let towers: Vec<Vec<u8>> = (0..iters).map(|_| tower.clone()).collect();
            for t in towers {
                slot += 1;
                std::hint::black_box(laps.time(|| sign(slot, t)));
            }
        },
    );
    report.bench(
        &mut g,
        "tower_check_store",
        "tower store rule: check_store (record signed here)",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                laps.time(|| check_store(&node, Some(&prev), &next, StoreMode::Advance))
                    .expect("check");
            }
        },
    );
    report.bench(
        &mut g,
        "tower_verify",
        "tower record: ed25519 verify (2 KiB)",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                assert!(laps.time(|| next.verify()));
            }
        },
    );
    report.bench(
        &mut g,
        "tower_encode",
        "tower record: encode",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                std::hint::black_box(laps.time(|| next.encode()));
            }
        },
    );
    let slot_bytes = filler(SLOT_HEADER + next.encode().len(), 5);
    report.bench(
        &mut g,
        "slot_crc32",
        "slot CRC-32 (header + record)",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                std::hint::black_box(laps.time(|| crc32fast::hash(&slot_bytes)));
            }
        },
    );

    // The file store's whole computation, in its order, minus the I/O.
    let mut stored = prev.clone();
    let mut slot = 1_001u64;
    let mut buf = Vec::with_capacity(8192);
    report.bench(
        &mut g,
        "tower_store_total",
        "tower store CPU total: sign + check + encode + CRC + keep (no I/O)",
        Role::Cpu,
        |iters, laps| {
            let towers: Vec<Vec<u8>> = (0..iters).map(|_| tower.clone()).collect();
            for t in towers {
                slot += 1;
                laps.time(|| {
                    let record = sign(slot, t);
                    check_store(&node, Some(&stored), &record, StoreMode::Advance).expect("check");
                    let encoded = record.encode();
                    buf.clear();
                    buf.extend_from_slice(&[0u8; SLOT_HEADER]);
                    buf.extend_from_slice(&encoded);
                    let crc = crc32fast::hash(&buf);
                    buf.extend_from_slice(&crc.to_le_bytes());
                    stored = record.clone();
                });
            }
        },
    );

    // The vote path's own CPU: decoding the message a TowerSync validator
    // signs (31 lockouts), and the whole sign_vote_message without I/O.
    let message = common::tower_sync_message(node, 1_000);
    report.bench(
        &mut g,
        "vote_tx_decode",
        "vote message decode: legacy TowerSync, 31 lockouts",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                laps.time(|| VoteMessage::decode(std::hint::black_box(&message)))
                    .expect("decode");
            }
        },
    );
    let voter = NodeKeypair::from_seed([33; 32]);
    let voter_node = voter.node_id();
    let vote_guard = VoteGuard::new(MemoryTowerStorage::new(voter_node), voter)
        .expect("guard")
        .with_vote_account(common::VOTE_ACCOUNT);
    let vote_rt = runtime();
    let mut slot = 100u64;
    report.bench(
        &mut g,
        "memory_vote",
        "VoteGuard::sign_vote_message on MemoryTowerStorage (decode + derive + sign + keep + sign)",
        Role::Cpu,
        |iters, laps| {
            let messages: Vec<Vec<u8>> = (0..iters)
                .map(|_| {
                    slot += 1;
                    common::tower_sync_message(voter_node, slot)
                })
                .collect();
            for m in messages {
                laps.time(|| vote_rt.block_on(vote_guard.sign_vote_message(&m)))
                    .expect("vote");
            }
        },
    );

    // Format v2's per-store additions, measured on a real held lock.
    let dir = tempfile::tempdir().expect("tempdir");
    let owner =
        slashguard::file::OwnerLock::try_acquire(dir.path().join("bench.lock")).expect("lock");
    let slot_bytes = vec![0x5au8; SLOT_HEADER + TOWER_BYTES + 4];
    report.bench(
        &mut g,
        "fail_closed_checks",
        "fail-closed additions per file store: lock identity check + second slot copy (2 KiB)",
        Role::Cpu,
        |iters, laps| {
            let mut twin = vec![0u8; slot_bytes.len()];
            for _ in 0..iters {
                laps.time(|| {
                    owner.check_held().expect("held");
                    twin.copy_from_slice(std::hint::black_box(&slot_bytes));
                });
                std::hint::black_box(&twin);
            }
        },
    );

    let rt = runtime();
    let id = NodeKeypair::from_seed([32; 32]);
    let guard = VoteGuard::new(MemoryTowerStorage::new(id.node_id()), id).expect("guard");
    let mut slot = 0u64;
    report.bench(
        &mut g,
        "memory_save",
        "VoteGuard::save on MemoryTowerStorage (sign + check + keep)",
        Role::Cpu,
        |iters, laps| {
            let updates: Vec<TowerUpdate> = (0..iters)
                .map(|_| {
                    slot += 1;
                    TowerUpdate {
                        vote: vote(slot),
                        root: slot.checked_sub(31),
                        tower: tower.clone(),
                    }
                })
                .collect();
            for u in updates {
                laps.time(|| rt.block_on(guard.save(u, StoreMode::Advance)))
                    .expect("save");
            }
        },
    );
    g.finish();
}

fn watermark_cpu(c: &mut Criterion, report: &mut Report) {
    let mut g = common::cpu_group(c, "cpu");
    let signer = Ed25519Signer::from_seed([41; 32]);
    let tz1 = signer.key_hash();
    let companion = Ed25519Signer::from_seed([42; 32]).key_hash();
    let tz4 = slashguard::watermark::KeyHash {
        curve: slashguard::watermark::Curve::Bls,
        hash: [4; 20],
    };

    let p1 = attestation_tz1(1000);
    let p4 = attestation_tz4(1000);
    report.bench(
        &mut g,
        "payload_parse_tz1",
        "payload parse + blake2b-256, tz1 attestation (82 B)",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                laps.time(|| SignRequest::parse(&p1, tz1)).expect("parse");
            }
        },
    );
    report.bench(
        &mut g,
        "payload_parse_tz4",
        "payload parse + blake2b-256, tz4 attestation (78 B)",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                laps.time(|| SignRequest::parse(&p4, tz4)).expect("parse");
            }
        },
    );

    // A running baker's table: two keys, a mark for each kind.
    let mut table = WatermarkTable::new();
    let marks: Vec<(WatermarkKey, Mark)> = [tz1, companion]
        .iter()
        .flat_map(|&key| {
            ConsensusKind::ALL.map(|kind| {
                (
                    WatermarkKey {
                        chain: MAINNET,
                        key,
                        kind,
                    },
                    Mark::level(999),
                )
            })
        })
        .collect();
    let changes = table.plan_set(&marks, SetMode::RaiseOnly).expect("plan");
    table.apply(&changes);
    let request = SignRequest::parse(&p1, tz1).expect("parse");
    report.bench(
        &mut g,
        "table_plan",
        "watermark rule: plan_authorize on a 6-entry table",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                std::hint::black_box(laps.time(|| table.plan_authorize(&[request]))).expect("plan");
            }
        },
    );
    let (_, changes) = table.plan_authorize(&[request]).expect("plan");
    report.bench(
        &mut g,
        "table_encode_crc32",
        "watermark table: encode with the change + CRC-32",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                std::hint::black_box(laps.time(|| {
                    let bytes = table.encode_with(&changes);
                    crc32fast::hash(&bytes)
                }));
            }
        },
    );

    let mut level = 1000u32;
    let mut live = table.clone();
    report.bench(
        &mut g,
        "authorize_total",
        "authorize CPU total: parse + plan + encode + CRC + apply (no I/O)",
        Role::Cpu,
        |iters, laps| {
            let payloads: Vec<Vec<u8>> = (0..iters)
                .map(|_| {
                    level += 1;
                    attestation_tz1(level)
                })
                .collect();
            for p in &payloads {
                laps.time(|| {
                    let request = SignRequest::parse(p, tz1).expect("parse");
                    let (_, changes) = live.plan_authorize(&[request]).expect("plan");
                    let bytes = live.encode_with(&changes);
                    std::hint::black_box(crc32fast::hash(&bytes));
                    live.apply(&changes);
                });
            }
        },
    );

    let rt = runtime();
    report.bench(
        &mut g,
        "ed25519_sign_tz1",
        "Ed25519Signer::sign (blake2b + ed25519), after the guard",
        Role::Cpu,
        |iters, laps| {
            for _ in 0..iters {
                laps.time(|| rt.block_on(signer.sign(&p1))).expect("sign");
            }
        },
    );

    let guarded = GuardedSigner::new(MemoryWatermarks::new(), Ed25519Signer::from_seed([43; 32]));
    let mut level = 0u32;
    report.bench(
        &mut g,
        "memory_guarded_sign",
        "GuardedSigner::sign on MemoryWatermarks (parse + authorize + sign)",
        Role::Cpu,
        |iters, laps| {
            let payloads: Vec<Vec<u8>> = (0..iters)
                .map(|_| {
                    level += 1;
                    attestation_tz1(level)
                })
                .collect();
            for p in &payloads {
                laps.time(|| rt.block_on(guarded.sign(p))).expect("sign");
            }
        },
    );
    g.finish();
}

fn cpu(c: &mut Criterion) {
    let mut report = Report::new("cpu", false, None);
    tower_cpu(c, &mut report);
    watermark_cpu(c, &mut report);
    if common::is_bench_run() {
        eprintln!("results: {}", report.file().display());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = cpu
}
criterion_main!(benches);
