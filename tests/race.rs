//! Racing signers with different payloads at the same (level, round):
//! exactly one signature per (level, round), and it is a valid signature of
//! the winner's payload.
//!
//! - 8 tokio tasks on a multi-threaded runtime share one `FileWatermarks`
//!   (and, as the reference, one `MemoryWatermarks`) through their own
//!   `GuardedSigner`s of one key.
//! - 4 processes (this test binary re-executed) contend for one watermark
//!   file: each opens it (retrying while it is locked), signs one level with
//!   its own payload, and closes it, level after level.
//!
//! "At least one" per level holds too: each signer walks the levels in
//! order, so a level can only be skipped by everyone if someone signed a
//! higher one without first trying it.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{child_env, consensus, report, spawn_child, Rng, MAINNET};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use slashguard::file::FileWatermarks;
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{ConsensusKind, Curve, Decision, Mark, PayloadHash, SignerGuard};
use slashguard::{Ed25519Signer, Error, GuardedSigner, Refusal, Signer};

const KEY_SEED: [u8; 32] = [0x33; 32];

fn payload(level: u32, round: u32, who: usize) -> Vec<u8> {
    consensus(
        ConsensusKind::Attestation,
        Curve::Ed25519,
        MAINNET,
        level,
        round,
        who as u8 + 1,
    )
}

fn verifies(payload: &[u8], signature: &[u8]) -> bool {
    let key = VerifyingKey::from_bytes(&Ed25519Signer::from_seed(KEY_SEED).public_key()).unwrap();
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify(&PayloadHash::of(payload).0, &sig).is_ok()
}

const TASKS: usize = 8;
const TASK_LEVELS: u32 = 100;
const ROUNDS: u32 = 2;

async fn race_tasks<G: SignerGuard + 'static>(guard: Arc<G>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut handles = Vec::new();
    for who in 0..TASKS {
        let signer = GuardedSigner::new(Arc::clone(&guard), Ed25519Signer::from_seed(KEY_SEED));
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut won = Vec::new();
            for level in 1..=TASK_LEVELS {
                for round in 0..ROUNDS {
                    match signer.sign(&payload(level, round, who)).await {
                        Ok(s) => {
                            assert_eq!(s.decision, Decision::Advanced);
                            won.push((level, round, s.signature));
                        }
                        Err(Error::Refused(Refusal::Watermark(_))) => {}
                        Err(e) => panic!("task {who}: {e}"),
                    }
                    tokio::task::yield_now().await;
                }
            }
            (who, won)
        }));
    }
    let mut winners: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for h in handles {
        let (who, won) = h.await.unwrap();
        for (level, round, sig) in won {
            assert!(
                verifies(&payload(level, round, who), &sig),
                "task {who}: signature at ({level}, {round}) is not of its payload"
            );
            winners.entry((level, round)).or_default().push(who);
        }
    }
    for level in 1..=TASK_LEVELS {
        for round in 0..ROUNDS {
            let w = winners.get(&(level, round)).cloned().unwrap_or_default();
            assert_eq!(w.len(), 1, "({level}, {round}) signed by tasks {w:?}");
        }
    }
    let top = winners[&(TASK_LEVELS, ROUNDS - 1)][0];
    let stored = guard.watermarks().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1.mark,
        Mark {
            level: TASK_LEVELS,
            round: ROUNDS - 1
        }
    );
    assert_eq!(
        stored[0].1.payload_hash,
        Some(PayloadHash::of(&payload(TASK_LEVELS, ROUNDS - 1, top)))
    );
    let mut per_task = [0usize; TASKS];
    for w in winners.values() {
        per_task[w[0]] += 1;
    }
    println!("(level, round) won per task: {per_task:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tasks_racing_on_one_file_store_sign_once_per_mark() {
    let dir = tempfile::tempdir().unwrap();
    let wm = Arc::new(FileWatermarks::create(dir.path().join("hwm")).unwrap());
    runtime().block_on(race_tasks(Arc::clone(&wm)));
    // And that is what is on disk.
    let stored = runtime().block_on(wm.watermarks()).unwrap();
    drop(wm);
    let reopened = FileWatermarks::open(dir.path().join("hwm")).unwrap();
    assert_eq!(runtime().block_on(reopened.watermarks()).unwrap(), stored);
}

#[test]
fn tasks_racing_on_one_memory_store_sign_once_per_mark() {
    runtime().block_on(race_tasks(Arc::new(MemoryWatermarks::new())));
}

const PROCESSES: usize = 4;
const PROCESS_LEVELS: u32 = 200;

/// Not a test on its own: the body of the child processes that
/// `processes_racing_on_one_file_sign_once_per_level` starts by
/// re-executing this test binary with `--exact race_child`. In a normal
/// `cargo test` run the role variable is absent and it returns at once,
/// passing as a no-op.
#[test]
fn race_child() {
    let Some(env) = child_env() else { return };
    assert_eq!(env.role, "race");
    let who: usize = env.arg.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    report("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mut waits = 0u64;
    let mut rng = Rng::new(who as u64 ^ u64::from(std::process::id()) << 8);
    for level in 1..=PROCESS_LEVELS {
        let deadline = Instant::now() + Duration::from_secs(20);
        let wm = loop {
            match FileWatermarks::open(env.dir.join("hwm")) {
                Ok(wm) => break wm,
                Err(Error::Locked { .. }) if Instant::now() < deadline => {
                    waits += 1;
                    // A short random back-off, so that the lock does not
                    // simply go to whoever spins fastest.
                    std::thread::sleep(Duration::from_micros(20 + rng.below(200)));
                }
                Err(e) => panic!("child {who}: open: {e}"),
            }
        };
        let signer = GuardedSigner::new(wm, Ed25519Signer::from_seed(KEY_SEED));
        match rt.block_on(signer.sign(&payload(level, 0, who))) {
            Ok(s) => {
                let hex: String = s.signature.iter().map(|b| format!("{b:02x}")).collect();
                report(&format!("signed {level} {hex}"));
            }
            Err(Error::Refused(Refusal::Watermark(_))) => report(&format!("refused {level}")),
            Err(e) => panic!("child {who}: level {level}: {e}"),
        }
        // Closing the store releases the lock for the others; pausing a
        // little gives them a chance to take it.
        drop(signer);
        std::thread::sleep(Duration::from_micros(rng.below(300)));
    }
    report(&format!("done {waits}"));
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn processes_racing_on_one_file_sign_once_per_level() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    drop(FileWatermarks::create(dir.path().join("hwm")).unwrap());
    let began = Instant::now();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|who| {
            spawn_child(
                "race_child",
                "race",
                dir.path(),
                &who.to_string(),
                Stdio::piped(),
            )
        })
        .collect();
    for c in &mut children {
        assert_eq!(c.next_line().as_deref(), Some("ready"));
    }
    for c in &mut children {
        c.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    let mut signed: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut lock_waits = Vec::new();
    for (who, c) in children.iter_mut().enumerate() {
        let mut answered = 0;
        while let Some(line) = c.next_line() {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["signed", level, sig] => {
                    let level: u32 = level.parse().unwrap();
                    assert!(
                        verifies(&payload(level, 0, who), &unhex(sig)),
                        "child {who}: signature at {level} is not of its payload"
                    );
                    signed.entry(level).or_default().push(who);
                    answered += 1;
                }
                ["refused", _] => answered += 1,
                ["done", waits] => lock_waits.push(waits.parse::<u64>().unwrap()),
                _ => panic!("child {who} said {line:?}"),
            }
        }
        assert!(c.child.wait().unwrap().success(), "child {who} failed");
        assert_eq!(
            answered, PROCESS_LEVELS,
            "child {who} did not answer every level"
        );
    }
    for level in 1..=PROCESS_LEVELS {
        let w = signed.get(&level).cloned().unwrap_or_default();
        assert_eq!(w.len(), 1, "level {level} signed by processes {w:?}");
    }
    let wm = FileWatermarks::open(dir.path().join("hwm")).unwrap();
    let stored = runtime().block_on(wm.watermarks()).unwrap();
    let top = signed[&PROCESS_LEVELS][0];
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1.mark, Mark::level(PROCESS_LEVELS));
    assert_eq!(
        stored[0].1.payload_hash,
        Some(PayloadHash::of(&payload(PROCESS_LEVELS, 0, top)))
    );
    let mut per_process = [0usize; PROCESSES];
    for w in signed.values() {
        per_process[w[0]] += 1;
    }
    println!(
        "{PROCESSES} processes x {PROCESS_LEVELS} levels in {:.1?}: levels won {per_process:?}, lock waits {lock_waits:?}",
        began.elapsed()
    );
    // The processes really contended for the file (a run in which they
    // took turns without ever meeting would prove nothing).
    assert!(
        lock_waits.iter().filter(|&&n| n > 0).count() >= 2,
        "{lock_waits:?}"
    );
}

#[test]
fn signer_key_is_the_one_verified() {
    // The verification helper above would accept nothing if it used another
    // key; check it against a signature made here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = payload(1, 0, 0);
    let sig = rt
        .block_on(Ed25519Signer::from_seed(KEY_SEED).sign(&p))
        .unwrap();
    assert!(verifies(&p, &sig));
    assert!(!verifies(&payload(1, 0, 1), &sig));
}
