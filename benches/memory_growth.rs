//! `memory_growth`: is memory after 1,000,000 stores the same as after 1,000?
//!
//! Each backend runs in its own child process (so one backend's allocations
//! cannot hide or inflate another's), does 1,000 operations, reads its
//! resident set size from `/proc/self/status`, does the rest up to
//! 1,000,000, and reads it again:
//! - `file_tower`: `VoteGuard::save` of a 2 KiB tower on `FileTowerStorage`,
//!   through the blocking facade Agave would use;
//! - `memory_tower`: the same on `MemoryTowerStorage`;
//! - `file_watermarks`: `GuardedSigner::sign` (tz1 attestation) on
//!   `FileWatermarks`;
//! - `memory_watermarks`: the same on `MemoryWatermarks`.
//!
//! The file backends are placed on tmpfs (`/dev/shm`) so that a million
//! stores take CPU time, not a million disk flushes: the code path is the
//! same, only `fdatasync` returns at once.
//!
//! Verdict: growth of at most 256 KiB between the two readings. A leak of one
//! byte per store would show as about 1 MiB.
//!
//! `cargo bench --bench memory_growth` does the full run (two to four minutes
//! on two cores, more on a busy machine); `cargo test --benches` does 20 then 60 operations, to
//! keep the code path tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use slashguard::blocking::Blocking;
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::memory::{MemoryTowerStorage, MemoryWatermarks};
use slashguard::tower::{StoreMode, TowerStorage, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::SignerGuard;
use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair};

const BACKENDS: [&str; 4] = [
    "file_tower",
    "memory_tower",
    "file_watermarks",
    "memory_watermarks",
];
const ALLOWED_GROWTH_KIB: i64 = 256;

/// `VmRSS` and `VmHWM` (peak) of this process, in KiB.
fn rss_kib() -> (i64, i64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tower_ops<S: TowerStorage>(storage: S, identity: NodeKeypair) -> impl FnMut(u64) {
    let guard = Blocking::new(VoteGuard::new(storage, identity).expect("guard")).expect("runtime");
    let tower = common::filler(2048, 1);
    move |slot| {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&slot.to_le_bytes());
        let update = TowerUpdate {
            vote: VoteRef { slot, hash },
            root: slot.checked_sub(31),
            tower: tower.clone(),
        };
        guard.save(update, StoreMode::Advance).expect("save");
    }
}

fn watermark_ops<G: SignerGuard>(guard: G) -> impl FnMut(u64) {
    let signer = Blocking::new(GuardedSigner::new(guard, Ed25519Signer::from_seed([5; 32])))
        .expect("runtime");
    move |level| {
        // tz1 attestation: magic, chain, branch, tag, slot, level, round, payload hash
        let mut p = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
        p.extend_from_slice(&[3; 32]);
        p.push(21);
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&(level as u32).to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&[4; 32]);
        signer.sign(&p).expect("sign");
    }
}

/// The child: run one backend and print one JSON line on stdout.
fn child(backend: &str, dir: &Path, first: u64, total: u64) {
    let identity = NodeKeypair::from_seed([9; 32]);
    let node = identity.node_id();
    let mut op: Box<dyn FnMut(u64)> = match backend {
        "file_tower" => Box::new(tower_ops(
            // A later child continues the store an earlier one created.
            if FileTowerStorage::data_path(dir, &node).exists() {
                FileTowerStorage::open(dir, node)
            } else {
                FileTowerStorage::create(dir, node)
            }
            .expect("open"),
            identity,
        )),
        "memory_tower" => Box::new(tower_ops(MemoryTowerStorage::new(node), identity)),
        "file_watermarks" => Box::new(watermark_ops(
            if dir.join("hwm").exists() {
                FileWatermarks::open(dir.join("hwm"))
            } else {
                FileWatermarks::create(dir.join("hwm"))
            }
            .expect("open"),
        )),
        "memory_watermarks" => Box::new(watermark_ops(MemoryWatermarks::new())),
        other => panic!("unknown backend {other}"),
    };
    let start = Instant::now();
    for i in 1..=first {
        op(i);
    }
    let (rss_first, _) = rss_kib();
    for i in first + 1..=total {
        op(i);
    }
    let (rss_total, peak) = rss_kib();
    let row = serde_json::json!({
        "backend": backend,
        "ops_first": first,
        "rss_first_kib": rss_first,
        "ops_total": total,
        "rss_total_kib": rss_total,
        "peak_kib": peak,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{row}");
}

fn shm_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        eprintln!("no /dev/shm: the file backends run on the build disk (slow)");
        common::results_dir()
    };
    base.join(format!("slashguard-memory-growth-{}", std::process::id()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let arg = |i: usize| args.get(pos + i).expect("--child BACKEND DIR FIRST TOTAL");
        let first = arg(3).parse().expect("FIRST");
        let total = arg(4).parse().expect("TOTAL");
        child(arg(1), Path::new(arg(2)), first, total);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("memory_growth: benchmark");
        return;
    }

    let full = common::is_bench_run();
    let (first, total) = if full { (1_000, 1_000_000) } else { (20, 60) };
    let scratch = common::Scratch::at(shm_dir());
    let mut report = common::Report::new("memory_growth", false, Some(scratch.fs.clone()));
    let exe = std::env::current_exe().expect("own executable");

    eprintln!("memory_growth: {first} then {total} operations per backend, one process each");
    let children: Vec<_> = BACKENDS
        .iter()
        .map(|&backend| {
            let dir = scratch.sub(backend);
            let child = Command::new(&exe)
                .arg("--child")
                .arg(backend)
                .arg(&dir)
                .arg(first.to_string())
                .arg(total.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a child");
            (backend, child)
        })
        .collect();

    let mut missed = Vec::new();
    for (backend, child) in children {
        let out = child.wait_with_output().expect("wait for a child");
        assert!(out.status.success(), "{backend}: child failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut row: serde_json::Value = serde_json::from_str(text.trim()).expect("child JSON");
        let growth = row["rss_total_kib"].as_i64().expect("rss")
            - row["rss_first_kib"].as_i64().expect("rss");
        let ok = growth <= ALLOWED_GROWTH_KIB;
        println!(
            "{backend:>18}: RSS {} KiB after {first}, {} KiB after {total} ({growth:+} KiB, peak {} KiB, {:.0} s): {}",
            row["rss_first_kib"],
            row["rss_total_kib"],
            row["peak_kib"],
            row["seconds"].as_f64().unwrap_or(0.0),
            if ok { "no growth" } else { "GROWS" }
        );
        row["id"] = format!("memory_growth_{backend}").into();
        row["role"] = "memory".into();
        row["growth_kib"] = growth.into();
        row["allowed_growth_kib"] = ALLOWED_GROWTH_KIB.into();
        row["verdict"] = (if ok { "pass" } else { "miss" }).into();
        report.write_line(&row);
        if !ok {
            missed.push(backend);
        }
    }
    if full && !missed.is_empty() {
        eprintln!("memory grows with the number of stores: {missed:?}");
        std::process::exit(1);
    }
}
