//! Crash test: a child process stores an increasing sequence in a file
//! backend and reports each acknowledged store; the parent kills it with
//! SIGKILL at a random moment, opens the store and checks that it holds the
//! last acknowledged record or the one in flight (never an older one, never
//! garbage), then starts the next child on the same file.
//!
//! The watermark child runs several concurrent clients on one store, each
//! with its own keys and its own sequence, so that the kills also land in
//! group commits (several clients' advances in one write): each client's
//! keys must hold its last acknowledged level or the one in flight.
//!
//! Records span two pages, so a SIGKILL can also land between the pages of
//! one write; the test counts how often a torn slot was found and recovered.
//!
//! What SIGKILL proves is process-crash atomicity: the page cache survives.
//! Power loss (lost, reordered or torn sectors) is modelled by the
//! torn-write test, which damages the file at every offset.
//!
//! Kills per backend: 300, or `SLASHGUARD_CRASH_KILLS`. The RNG seed is
//! printed; `SLASHGUARD_TEST_SEED` replays a run.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{child_env, consensus, open_retrying, report, spawn_child, Rng, MAINNET};
use slashguard::file::{FileTowerStorage, FileWatermarks, Recovery};
use slashguard::tower::{TowerStorage, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{
    ConsensusKind, Curve, KeyHash, Mark, PayloadHash, SignRequest, SignerGuard,
};
use slashguard::{FormatError, NodeKeypair};

const NODE_SEED: [u8; 32] = [0x42; 32];
/// Watermark keys in the table: 60 entries make a table of 4564 bytes, so
/// every write spans two pages.
const KEYS: usize = 60;
/// Concurrent watermark clients; client `c` authorizes the keys `i` with
/// `i % CLIENTS == c`, all of them in one batch, level after level.
const CLIENTS: usize = 4;
const OPEN_LIMIT: Duration = Duration::from_secs(5);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The n-th tower the child stores: every field is a function of n, so the
/// parent can tell an exact record from a mixed or stale one.
fn tower_update(n: u64) -> TowerUpdate {
    let mut hash = [0xA7; 32];
    hash[..8].copy_from_slice(&n.to_le_bytes());
    let len = 5000 + (n % 97) as usize * 20;
    TowerUpdate {
        vote: VoteRef { slot: n, hash },
        root: Some(n / 2),
        tower: (0..len)
            .map(|i| (n as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
            .collect(),
    }
}

fn wm_key(i: usize) -> KeyHash {
    KeyHash {
        curve: Curve::Ed25519,
        hash: [i as u8; 20],
    }
}

fn wm_payload(i: usize, level: u32) -> Vec<u8> {
    consensus(
        ConsensusKind::Attestation,
        Curve::Ed25519,
        MAINNET,
        level,
        0,
        (i as u8) ^ (level as u8),
    )
}

fn client_keys(c: usize) -> impl Iterator<Item = usize> {
    (c..KEYS).step_by(CLIENTS)
}

fn wm_batch(c: usize, level: u32) -> Vec<SignRequest> {
    client_keys(c)
        .map(|i| SignRequest::parse(&wm_payload(i, level), wm_key(i)).unwrap())
        .collect()
}

/// Not a test on its own: the body of the child processes that
/// `tower_survives_sigkill` and `watermarks_survive_sigkill` start by
/// re-executing this test binary with `--exact crash_child`. In a normal
/// `cargo test` run the role variable is absent and it returns at once,
/// passing as a no-op.
#[test]
fn crash_child() {
    let Some(env) = child_env() else { return };
    // Bounded, in case the parent never kills (it always does within 30 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let rt = rt();
    match env.role.as_str() {
        "tower" => {
            let kp = NodeKeypair::from_seed(NODE_SEED);
            let storage = open_retrying(OPEN_LIMIT, || {
                FileTowerStorage::open(&env.dir, kp.node_id())
            });
            let guard = VoteGuard::new(storage, kp)
                .unwrap()
                .with_vote_account(common::VOTE_ACCOUNT);
            let start = rt
                .block_on(guard.load())
                .unwrap()
                .and_then(|r| r.last_vote_slot())
                .unwrap_or(0);
            report(&format!("start 0 {start}"));
            let mut n = start;
            while Instant::now() < deadline {
                n += 1;
                // `vote` returns only after the tower is durably stored.
                let update = tower_update(n);
                let message = common::vote_message(guard.node(), &update);
                rt.block_on(guard.vote(update, &message)).unwrap();
                report(&format!("acked 0 {n}"));
            }
        }
        "watermarks" => {
            let wm = open_retrying(OPEN_LIMIT, || FileWatermarks::open(env.dir.join("hwm")));
            let table = rt.block_on(wm.watermarks()).unwrap();
            let wm = std::sync::Arc::new(wm);
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let start = table
                        .iter()
                        .find(|(k, _)| k.key == wm_key(c))
                        .map_or(0, |(_, w)| w.mark.level);
                    report(&format!("start {c} {start}"));
                    let wm = std::sync::Arc::clone(&wm);
                    async move {
                        let mut level = start;
                        while Instant::now() < deadline {
                            level += 1;
                            // Returns only after the advance is durable
                            // (possibly in one write with other clients').
                            wm.authorize(&wm_batch(c, level)).await.unwrap();
                            report(&format!("acked {c} {level}"));
                        }
                    }
                })
                .collect();
            rt.block_on(async {
                let tasks: Vec<_> = clients.into_iter().map(tokio::spawn).collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

/// Open the tower store and check that it holds exactly the n-th record.
fn load_tower(dir: &Path) -> (Vec<u64>, Recovery) {
    let kp = NodeKeypair::from_seed(NODE_SEED);
    let storage = open_retrying(OPEN_LIMIT, || FileTowerStorage::open(dir, kp.node_id()));
    let record = rt().block_on(storage.load()).unwrap();
    let n = match record {
        None => 0,
        Some(r) => {
            let n = r.last_vote_slot().expect("every stored tower has a vote");
            let want = tower_update(n);
            assert_eq!(r.last_vote(), Some(want.vote), "vote of record {n}");
            assert_eq!(r.root(), want.root, "root of record {n}");
            assert!(r.tower_bytes() == want.tower, "tower bytes of record {n}");
            n
        }
    };
    // A killed process writes the two copies one after the other: at most
    // one is torn, so the store never opens fenced.
    assert!(
        !rt().block_on(storage.is_damaged()).unwrap(),
        "fenced after a SIGKILL"
    );
    (vec![n], storage.recovery().clone())
}

/// Open the watermark store and check, for each client, that every key of
/// it is at the same level (a batch is all-or-nothing) with exactly the
/// payload of that level.
fn load_watermarks(dir: &Path) -> (Vec<u64>, Recovery) {
    let wm = open_retrying(OPEN_LIMIT, || FileWatermarks::open(dir.join("hwm")));
    assert!(
        !rt().block_on(wm.is_damaged()).unwrap(),
        "fenced after a SIGKILL"
    );
    let table = rt().block_on(wm.watermarks()).unwrap();
    let levels = (0..CLIENTS)
        .map(|c| {
            let mut level = None;
            for i in client_keys(c) {
                let stored = table.iter().find(|(k, _)| k.key == wm_key(i));
                let here = stored.map_or(0, |(_, w)| w.mark.level);
                let level = *level.get_or_insert(here);
                assert_eq!(
                    here, level,
                    "client {c}, key {i}: a batch was stored in part"
                );
                if let Some((_, w)) = stored {
                    assert_eq!(w.mark, Mark::level(level), "key {i}");
                    assert_eq!(
                        w.payload_hash,
                        Some(PayloadHash::of(&wm_payload(i, level))),
                        "key {i} at level {level}: payload of another request"
                    );
                }
            }
            level.unwrap_or(0) as u64
        })
        .collect();
    assert!(table.len() <= KEYS, "keys nobody authorized");
    (levels, wm.recovery().clone())
}

fn kills() -> usize {
    std::env::var("SLASHGUARD_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// `word <client> <n>`: a client's start or acknowledgement.
fn parse(line: &str, word: &str) -> Option<(usize, u64)> {
    let mut parts = line.strip_prefix(word)?.split_whitespace();
    let c = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    Some((c, n))
}

fn crash_loop(role: &str, clients: usize, load: fn(&Path) -> (Vec<u64>, Recovery)) {
    let mut rng = Rng::from_env(role);
    let dir = tempfile::tempdir().unwrap();
    // The stores exist before the first child: opening never creates.
    let kp = NodeKeypair::from_seed(NODE_SEED);
    drop(FileTowerStorage::create(dir.path(), kp.node_id()).unwrap());
    drop(FileWatermarks::create(dir.path().join("hwm")).unwrap());
    let kills = kills();
    let began = Instant::now();
    let mut previous = vec![0u64; clients];
    let (mut in_flight, mut torn, mut stores, mut early) = (0, 0, 0u64, 0);
    for i in 0..kills {
        let mut child = spawn_child("crash_child", role, dir.path(), "", Stdio::null());
        let mut started = vec![false; clients];
        // Most kills land in the store loop; one in eight lands anywhere
        // from process start (open, lock, file creation or growth).
        let in_loop = rng.below(8) != 0;
        if in_loop {
            for _ in 0..clients {
                match child
                    .next_line()
                    .as_deref()
                    .and_then(|l| parse(l, "start "))
                {
                    Some((c, start)) => {
                        assert_eq!(
                            start, previous[c],
                            "kill {i}: the child loaded another value for client {c} than the parent did"
                        );
                        started[c] = true;
                    }
                    None => panic!("kill {i}: child {} did not start", child.pid()),
                }
            }
        } else {
            early += 1;
        }
        let delay = if in_loop { 30_000 } else { 3_000 };
        std::thread::sleep(Duration::from_micros(rng.below(delay + 1)));
        let pid = child.pid();
        assert!(
            child.sigkill(),
            "kill {i}: child {pid} ended before it was killed (see its stderr)"
        );

        let mut acked = previous.clone();
        while let Some(line) = child.next_line() {
            if let Some((c, start)) = parse(&line, "start ") {
                assert_eq!(
                    start, previous[c],
                    "kill {i}: client {c} started from {start}"
                );
                started[c] = true;
            } else if let Some((c, n)) = parse(&line, "acked ") {
                assert!(
                    started[c],
                    "kill {i}: client {c} acknowledged before it started"
                );
                assert_eq!(
                    n,
                    acked[c] + 1,
                    "kill {i}: client {c}: acknowledgements out of order"
                );
                acked[c] = n;
            }
        }
        let (loaded, recovery) = load(dir.path());
        for c in 0..clients {
            assert!(
                loaded[c] == acked[c] || loaded[c] == acked[c] + 1,
                "kill {i}, client {c}: loaded {}, but {} was acknowledged (older record or garbage)",
                loaded[c],
                acked[c]
            );
            if loaded[c] == acked[c] + 1 {
                in_flight += 1;
            }
            stores += acked[c] - previous[c];
        }
        if let Recovery::DamagedSlot { problem, .. } = &recovery {
            if *problem != FormatError::Empty {
                // Only the interrupted write can be damaged: one of its two
                // copies (the other then holds the old record of that slot,
                // or the whole in-flight record, which may be loaded: it was
                // never acknowledged). The bound above already holds.
                torn += 1;
            }
        }
        previous = loaded;
    }
    let elapsed = began.elapsed();
    println!(
        "{role}: {kills} SIGKILLs ({early} early) in {elapsed:.1?} ({:.1?} per kill); \
         {stores} acknowledged stores by {clients} client(s); in-flight record found {in_flight} times; \
         torn slot recovered {torn} times; final values {previous:?}",
        elapsed / kills.max(1) as u32
    );
    assert!(
        kills == 0 || previous.iter().all(|&p| p > 0),
        "a client never stored anything"
    );
}

#[test]
fn tower_survives_sigkill() {
    crash_loop("tower", 1, load_tower);
}

#[test]
fn watermarks_survive_sigkill() {
    crash_loop("watermarks", CLIENTS, load_watermarks);
}
