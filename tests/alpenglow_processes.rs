//! Racing processes on ONE Alpenglow identity: exactly one vote per
//! slashable decision.
//!
//! Several OS processes (this test binary re-executed, see
//! `common::spawn_child`, test `race_child`) share one identity and one BLS
//! vote key. Process k walks slots 1..=SLOTS as fast as it can and asks its
//! `AlpenglowGuard` for votes that conflict with the other processes': a
//! first-round vote (Notarize(s, a block only k knows) or Skip(s)), then a
//! second one (Finalize, SkipFallback or NotarizeFallback(s, its block)).
//! Ownership moves between them all the time:
//!
//! - file store: the processes open (or create) `FileVoteHistory` in one
//!   shared directory; a lock refusal is a typed error (`Locked`,
//!   `StoreExists`) and the process retries; each holds the store for a few
//!   votes and then drops it;
//! - etcd: each process `take_over`s the identity (stealing it from whoever
//!   holds it, mid-turn or not), votes a few, and releases it; a vote after
//!   being stolen from is `Fenced`.
//!
//! Once in each run the parent SIGKILLs one process (while it may hold the
//! store) and starts it again from slot 1.
//!
//! Each process reports every signature it got (`SIGNED <slot> <kind>
//! <block hex|-> <signature hex> <payload hex>`). The parent fails on: a
//! slashable pair (the crate's `slashable_pair`) among all the votes signed
//! for one slot by all processes; a signature the registered BLS key does
//! not verify (checked with the independent zkcrypto `bls12_381`, see
//! `signer_support/bls.rs`); a signed vote missing from the final stored
//! history; any error other than the typed refusals above. And it checks
//! that the race was real: votes were signed by at least two processes, and
//! some vote was signed by two processes (an identical repeat, allowed),
//! and the conflicting ones were refused.
//!
//! That the test can fail was checked by breaking things on purpose:
//! (1) `SLASHGUARD_AG_RACE_UNGUARDED=1` makes the children sign without
//! the guard: both tests fail on a slashable pair (slot 1, Skip vs
//! Notarize); (2) with the file store's two OS locks disabled
//! (`OwnerLock::try_acquire` and `slots::lock_inode` treating `WouldBlock`
//! as success) the file test fails: the processes' creates and opens
//! collide (`FAIL open: I/O ... No such file or directory`, `corrupt ...
//! empty`). Disabling the etcd owner compare alone does not make the etcd
//! test fail, by design: the record's `mod_revision` compare still
//! serializes the writers.

mod common;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;
#[allow(dead_code)] // only the signature check is used here
#[path = "signer_support/bls.rs"]
mod independent_bls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{child_env, report, spawn_child};
use etcd_harness::EtcdCluster;
use slashguard::alpenglow::{
    derive_voter_key, slashable_pair, AlpenglowGuard, AlpenglowRefusal, HistoryStorage, RuleMode,
    Vote, VoteHistory, VoteKind,
};
use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, EtcdVoteHistory, OwnershipOptions};
use slashguard::file::FileVoteHistory;
use slashguard::{Error, NodeKeypair, Refusal};

/// The shared identity (whose history is raced for) and its authorized
/// voter (whose derived BLS key signs).
const NODE_SEED: [u8; 32] = [0x33; 32];
const VOTER_SEED: [u8; 32] = [0x44; 32];
const SHRED_VERSION: u16 = 4242;
const PROCS: usize = 4;
const SLOTS: u64 = 30;
/// Votes a process casts per turn of ownership, at most.
const TURN: u64 = 4;
/// A child that cannot finish in this long reports FAIL: only reached when
/// something is stuck, never a measure of speed.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// The parent's bound on the whole run.
const RUN_LIMIT: Duration = Duration::from_secs(90);
const UNGUARDED: &str = "SLASHGUARD_AG_RACE_UNGUARDED";

fn node() -> slashguard::NodeId {
    NodeKeypair::from_seed(NODE_SEED).node_id()
}

fn registered() -> slashguard::bls::PublicKey {
    derive_voter_key(&NodeKeypair::from_seed(VOTER_SEED))
        .unwrap()
        .public_key()
}

fn guard<S: HistoryStorage>(store: S) -> AlpenglowGuard<S> {
    AlpenglowGuard::new(
        store,
        NodeKeypair::from_seed(VOTER_SEED),
        &registered(),
        RuleMode::Slashable,
    )
    .unwrap()
}

/// The block process k sees in `slot` (no other process sees it).
fn block(k: usize, slot: u64) -> [u8; 32] {
    let mut b = [k as u8 + 1; 32];
    b[..8].copy_from_slice(&slot.to_le_bytes());
    b
}

/// Process k's votes, in order: two per slot, each its own event.
fn schedule(k: usize) -> Vec<Vote> {
    let mut out = Vec::new();
    for slot in 1..=SLOTS {
        let first = if (slot + k as u64).is_multiple_of(2) {
            VoteKind::Notarize(block(k, slot))
        } else {
            VoteKind::Skip
        };
        let second = match (slot * 7 + k as u64) % 3 {
            0 => VoteKind::Finalize,
            1 => VoteKind::SkipFallback,
            _ => VoteKind::NotarizeFallback(block(k, slot)),
        };
        for kind in [first, second] {
            out.push(Vote {
                slot,
                kind,
                shred_version: SHRED_VERSION,
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn report_signed(vote: &Vote, signature: &[u8]) {
    let block = vote.kind.block().map_or("-".to_string(), |b| hex(b));
    report(&format!(
        "SIGNED {} {} {block} {} {}",
        vote.slot,
        vote.kind.name(),
        hex(signature),
        hex(&vote.to_bytes())
    ));
}

// ---------------------------------------------------------------- children

/// The file whose appearance starts the race: the parent makes it once
/// every process reported READY, so that no process gets through the
/// slots before the others have started (process start-up on a loaded
/// machine takes longer than a whole run of votes).
fn go_file(dir: &Path) -> PathBuf {
    dir.join("go")
}

/// Report READY and wait (bounded) for the parent's start signal.
async fn ready_set_go(dir: &Path) -> bool {
    report("READY");
    let end = Instant::now() + CHILD_LIMIT;
    while !go_file(dir).exists() {
        if Instant::now() > end {
            report("FAIL no start signal");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Entry point of the child processes; does nothing as a normal test.
#[test]
fn race_child() {
    let Some(env) = child_env() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut args = env.arg.split(' ');
    let k: usize = args.next().unwrap().parse().unwrap();
    match env.role.as_str() {
        "file" => rt.block_on(file_child(k, &env.dir)),
        "etcd" => {
            let endpoints = args.next().unwrap().split(',').map(String::from).collect();
            rt.block_on(etcd_child(k, &env.dir, endpoints))
        }
        other => panic!("unknown role {other}"),
    }
}

/// How a turn of ownership ended.
enum TurnEnd {
    /// The turn's votes were asked for.
    Budget,
    /// Ownership was lost mid-turn (etcd): take it again.
    Lost,
    /// Something else: reported as FAIL, the child stops.
    Failed,
}

/// Ask for up to `budget` votes of `plan` from `*next` on; advance `*next`
/// past every vote answered (signed or refused as a conflict).
async fn vote_turn<S: HistoryStorage>(
    guard: &AlpenglowGuard<S>,
    plan: &[Vote],
    next: &mut usize,
    budget: u64,
) -> TurnEnd {
    let unguarded = std::env::var_os(UNGUARDED)
        .is_some()
        .then(|| derive_voter_key(&NodeKeypair::from_seed(VOTER_SEED)).unwrap());
    for _ in 0..budget {
        let Some(vote) = plan.get(*next) else {
            return TurnEnd::Budget;
        };
        if let Some(key) = &unguarded {
            // The sabotage that shows the verdict can fail: no history.
            report_signed(vote, &key.sign(&vote.to_bytes()).to_bytes());
            *next += 1;
            continue;
        }
        match guard.vote(&[*vote], None).await {
            Ok(signed) => {
                for s in signed {
                    report_signed(&s.vote(), &s.signature().to_bytes());
                }
                *next += 1;
            }
            Err(Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::Conflict { .. }))) => {
                report(&format!("REFUSED {} {}", vote.slot, vote.kind.name()));
                *next += 1;
            }
            Err(Error::Fenced { .. }) => {
                report("FENCED");
                return TurnEnd::Lost;
            }
            // A loaded machine may miss the etcd deadline: nothing was
            // signed; retry the same vote under a new ownership.
            Err(e) if e.is_unavailable() => {
                report("UNAVAILABLE");
                return TurnEnd::Lost;
            }
            Err(e) => {
                report(&format!("FAIL vote {vote:?}: {e}"));
                return TurnEnd::Failed;
            }
        }
    }
    TurnEnd::Budget
}

/// A turn length and pause from a per-process sequence, so processes fall
/// in and out of step.
fn jitter(state: &mut u64) -> (u64, Duration) {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let r = *state >> 33;
    (1 + r % TURN, Duration::from_micros((r >> 8) % 3000))
}

/// Open the shared file store, or create it if nobody has; `None` while
/// another process holds it (typed refusals only).
fn open_or_create(dir: &Path) -> Result<Option<FileVoteHistory>, Error> {
    match FileVoteHistory::open(dir, node()) {
        Ok(s) => Ok(Some(s)),
        Err(Error::Locked { .. }) => Ok(None),
        Err(Error::StoreMissing { .. }) => match FileVoteHistory::create(dir, node()) {
            Ok(s) => Ok(Some(s)),
            // Another process created it (or holds it) first.
            Err(Error::StoreExists { .. } | Error::Locked { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

async fn file_child(k: usize, dir: &Path) {
    let plan = schedule(k);
    let mut next = 0;
    let mut rng = k as u64 + std::process::id() as u64;
    let (mut turns, mut busy) = (0u64, 0u64);
    if !ready_set_go(dir).await {
        return;
    }
    let end = Instant::now() + CHILD_LIMIT;
    while next < plan.len() {
        if Instant::now() > end {
            report(&format!(
                "FAIL starved at vote {next} after {busy} refusals"
            ));
            return;
        }
        let store = match open_or_create(dir) {
            Ok(Some(s)) => s,
            Ok(None) => {
                busy += 1;
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
            Err(e) => return report(&format!("FAIL open: {e}")),
        };
        turns += 1;
        let g = guard(store);
        match g.load().await {
            Ok(Some(_)) => {}
            // Created and not started yet (its creator may have been
            // killed in between): start from genesis, the only evidence.
            Ok(None) => {
                if let Err(e) = g.start_history(SHRED_VERSION, 0).await {
                    return report(&format!("FAIL start: {e}"));
                }
            }
            Err(e) => return report(&format!("FAIL load: {e}")),
        }
        let (budget, pause) = jitter(&mut rng);
        if let TurnEnd::Failed | TurnEnd::Lost = vote_turn(&g, &plan, &mut next, budget).await {
            return report("FAIL turn");
        }
        drop(g);
        tokio::time::sleep(pause).await;
    }
    report(&format!("DONE {k} turns={turns} busy={busy}"));
}

async fn etcd_child(k: usize, dir: &Path, endpoints: Vec<String>) {
    let config = EtcdConfig::builder(endpoints)
        .key_prefix("/ag-race")
        .request_deadline(etcd_util::RELAXED)
        .build()
        .unwrap();
    let client = EtcdClient::connect(config).await.unwrap();
    let id = EtcdIdentity::new(
        client,
        node(),
        OwnershipOptions::new(format!("racer-{k}-{}", std::process::id()))
            .lease_ttl(Duration::from_secs(5)),
    )
    .unwrap();
    let plan = schedule(k);
    let mut next = 0;
    let mut rng = k as u64 + std::process::id() as u64;
    let (mut turns, mut lost) = (0u64, 0u64);
    if !ready_set_go(dir).await {
        return;
    }
    let end = Instant::now() + CHILD_LIMIT;
    while next < plan.len() {
        if Instant::now() > end {
            report(&format!("FAIL starved at vote {next} after {lost} losses"));
            return;
        }
        let own = match id.take_over().await {
            Ok(o) => o,
            Err(e) if e.is_unavailable() => {
                lost += 1;
                continue;
            }
            Err(e) => return report(&format!("FAIL take over: {e}")),
        };
        turns += 1;
        let (budget, pause) = jitter(&mut rng);
        let ended = async {
            // Stolen between the claim and here: Fenced, take it again.
            let store = EtcdVoteHistory::open(&id, &own).await?;
            let g = guard(store);
            if g.load().await?.is_none() {
                match g.start_history(SHRED_VERSION, 0).await {
                    Ok(_) => {}
                    // Another process started it after we read none: it
                    // owned the identity in between, so ours is lost.
                    Err(Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::HistoryExists {
                        ..
                    }))) => return Ok(TurnEnd::Lost),
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, Error>(vote_turn(&g, &plan, &mut next, budget).await)
        }
        .await;
        match ended {
            Ok(TurnEnd::Budget) => {}
            Ok(TurnEnd::Lost) => lost += 1,
            Ok(TurnEnd::Failed) => return,
            Err(Error::Fenced { .. }) => {
                report("FENCED");
                lost += 1;
            }
            Err(e) if e.is_unavailable() => lost += 1,
            Err(e) => return report(&format!("FAIL open: {e}")),
        }
        // Give it up (a no-op where it was already stolen); a release that
        // times out leaves the claim to its lease, which others steal.
        let _ = id.release(own).await;
        tokio::time::sleep(pause).await;
    }
    report(&format!("DONE {k} turns={turns} lost={lost}"));
}

// ------------------------------------------------------------------ parent

/// One signature a process reported.
#[derive(Debug)]
struct Signed {
    process: usize,
    label: String,
    vote: Vote,
    signature: Vec<u8>,
}

/// Run PROCS children of `role`, SIGKILL the first one once it signed a few
/// votes and start it again, and collect every line, by child label.
fn run_children(role: &str, dir: &Path, extra: &str) -> BTreeMap<String, Vec<String>> {
    let (tx, rx) = mpsc::channel::<(String, Option<String>)>();
    let spawn = |label: String, k: usize| {
        let arg = format!("{k} {extra}");
        let mut child = spawn_child("race_child", role, dir, arg.trim(), Stdio::null());
        let pid = child.pid();
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Some(line) = child.next_line() {
                if tx.send((label.clone(), Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((label, None));
            // `child` is reaped on drop.
        });
        pid
    };
    let mut pids: BTreeMap<String, u32> = (0..PROCS)
        .map(|k| (k.to_string(), spawn(k.to_string(), k)))
        .collect();
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut open = PROCS;
    let mut killed = false;
    let end = Instant::now() + RUN_LIMIT;
    while open > 0 {
        let left = end.saturating_duration_since(Instant::now());
        let (label, line) = match rx.recv_timeout(left) {
            Ok(m) => m,
            Err(_) => {
                for pid in pids.values() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                panic!("children not done within {RUN_LIMIT:?}: {lines:#?}");
            }
        };
        let Some(line) = line else {
            open -= 1;
            pids.remove(&label);
            continue;
        };
        let seen = lines.entry(label.clone()).or_default();
        seen.push(line);
        if !go_file(dir).exists()
            && lines
                .values()
                .filter(|l| l.iter().any(|l| l == "READY"))
                .count()
                == PROCS
        {
            std::fs::write(go_file(dir), b"").unwrap();
        }
        let seen = lines.get_mut(&label).unwrap();
        // Kill process 0 mid-run, possibly while it holds the store or
        // the identity, then start it again (from slot 1).
        if !killed && label == "0" && seen.iter().filter(|l| l.starts_with("SIGNED")).count() >= 3 {
            killed = true;
            let pid = pids["0"];
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            seen.push("KILLED".into());
            pids.insert("0-restarted".into(), spawn("0-restarted".into(), 0));
            open += 1;
        }
    }
    assert!(killed, "process 0 never signed 3 votes: {lines:#?}");
    lines
}

/// The checks shared by both backends; returns the signatures.
fn verdict(what: &str, lines: &BTreeMap<String, Vec<String>>) -> Vec<Signed> {
    let mut signed = Vec::new();
    let mut refused = 0;
    let mut fenced = 0;
    for (label, log) in lines {
        let process: usize = label.split('-').next().unwrap().parse().unwrap();
        let killed = log.iter().any(|l| l == "KILLED");
        if !killed {
            assert!(
                log.iter().any(|l| l.starts_with("DONE")),
                "{what}: process {label} did not finish:\n{}",
                log.join("\n")
            );
        }
        for l in log {
            let f: Vec<&str> = l.split(' ').collect();
            match f[0] {
                "SIGNED" => {
                    let parsed = (f.len() == 6)
                        .then(|| Some((unhex(f[4])?, Vote::parse(&unhex(f[5])?).ok()?)))
                        .flatten();
                    let Some((signature, vote)) = parsed else {
                        // Only the last line of a killed process may be cut.
                        assert!(killed, "{what}: bad line from {label}: {l}");
                        continue;
                    };
                    let block = vote.kind.block().map_or("-".to_string(), |b| hex(b));
                    assert_eq!(
                        (f[1], f[2], f[3]),
                        (
                            vote.slot.to_string().as_str(),
                            vote.kind.name(),
                            block.as_str()
                        ),
                        "{what}: the line does not describe its payload: {l}"
                    );
                    signed.push(Signed {
                        process,
                        label: label.clone(),
                        vote,
                        signature,
                    });
                }
                "REFUSED" => refused += 1,
                "FENCED" => fenced += 1,
                "FAIL" => panic!("{what}: process {label}: {l}\n{}", log.join("\n")),
                _ => {}
            }
        }
    }

    // No slashable pair in any slot, across all processes.
    let mut by_slot: BTreeMap<u64, Vec<&Signed>> = BTreeMap::new();
    for s in &signed {
        by_slot.entry(s.vote.slot).or_default().push(s);
    }
    for (slot, votes) in &by_slot {
        for (i, a) in votes.iter().enumerate() {
            for b in &votes[i + 1..] {
                assert!(
                    !slashable_pair(&a.vote.kind, &b.vote.kind),
                    "{what}: slashable pair in slot {slot}: {} signed by process {}, {} by process {}",
                    a.vote.kind,
                    a.label,
                    b.vote.kind,
                    b.label
                );
            }
        }
    }

    // Every signature verifies against the registered key, checked by an
    // implementation other than the one that signed (once per distinct
    // payload: BLS signing is deterministic, so a repeat must be the same
    // bytes).
    let public = registered().to_bytes();
    let mut by_payload: BTreeMap<Vec<u8>, (&Vec<u8>, BTreeSet<usize>)> = BTreeMap::new();
    for s in &signed {
        let e = by_payload
            .entry(s.vote.to_bytes())
            .or_insert((&s.signature, BTreeSet::new()));
        assert_eq!(e.0, &s.signature, "{what}: two signatures of {:?}", s.vote);
        e.1.insert(s.process);
    }
    for (payload, (signature, _)) in &by_payload {
        assert!(
            independent_bls::verifies(&public, payload, signature),
            "{what}: signature of {} does not verify against the registered key",
            hex(payload)
        );
    }

    // The race was real.
    let signers: BTreeSet<usize> = signed.iter().map(|s| s.process).collect();
    let shared = by_payload.values().filter(|(_, p)| p.len() > 1).count();
    println!(
        "{what}: {} signatures of {} votes in {} slots by processes {signers:?}; \
         {shared} votes signed by more than one process; {refused} conflicts refused; \
         {fenced} fenced",
        signed.len(),
        by_payload.len(),
        by_slot.len()
    );
    assert!(signers.len() >= 2, "{what}: one process signed everything");
    assert!(shared > 0, "{what}: no vote was signed by two processes");
    assert!(
        refused > 0,
        "{what}: no conflicting vote was ever asked for"
    );
    signed
}

/// Every signed vote is in the stored history (recorded before signing).
fn assert_recorded(what: &str, history: &VoteHistory, signed: &[Signed]) {
    for s in signed {
        let kinds = history
            .slot(s.vote.slot)
            .map(|v| v.kinds())
            .unwrap_or_default();
        assert!(
            kinds.contains(&s.vote.kind),
            "{what}: {:?} signed by process {} is not in the history ({kinds:?})",
            s.vote,
            s.label
        );
    }
}

#[test]
fn racing_processes_on_the_file_store_sign_one_vote_per_slashable_decision() {
    let dir = tempfile::tempdir().unwrap();
    let dir: PathBuf = dir.path().into();
    let lines = run_children("file", &dir, "");
    let signed = verdict("file store", &lines);
    let history = FileVoteHistory::read_unlocked(&dir, node())
        .unwrap()
        .expect("a history");
    assert_recorded("file store", &history, &signed);
}

#[test]
fn racing_processes_taking_over_in_etcd_sign_one_vote_per_slashable_decision() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let lines = run_children("etcd", dir.path(), &etcd.endpoints().join(","));
    let signed = verdict("etcd", &lines);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = rt.block_on(async {
        let client = etcd_util::client(&etcd, "/ag-race").await;
        EtcdVoteHistory::read_unfenced(&client, node())
            .await
            .unwrap()
            .expect("a history")
    });
    assert_recorded("etcd", &history, &signed);
}
