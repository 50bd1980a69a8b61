//! Crash test for the Alpenglow vote history file: a child process votes
//! an increasing sequence of slots through `AlpenglowGuard` (three votes
//! per event, the root following 64 slots behind, so records span two
//! pages) and reports each acknowledged event; the parent kills it with
//! SIGKILL at a random moment, opens the history and checks that it holds
//! exactly the last acknowledged event or the one in flight, never an
//! older history, a partial event or garbage.
//!
//! Kills: 150, or `SLASHGUARD_CRASH_KILLS`. `SLASHGUARD_TEST_SEED` replays.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{child_env, open_retrying, report, spawn_child, Rng};
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, RuleMode, SlotVotes, Vote, VoteHistory, VoteKind,
};
use slashguard::file::{FileVoteHistory, Recovery};
use slashguard::{FormatError, NodeKeypair};

const NODE_SEED: [u8; 32] = [0x43; 32];
const VOTER_SEED: [u8; 32] = [0x44; 32];
const SV: u16 = 9;
const OPEN_LIMIT: Duration = Duration::from_secs(5);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn block(n: u64) -> [u8; 32] {
    let mut b = [0xA7; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

/// The event the child casts for slot `n`, and the root it moves to.
fn event(n: u64) -> (Vec<Vote>, u64) {
    let v = |kind| Vote {
        slot: n,
        kind,
        shred_version: SV,
    };
    (
        vec![
            v(VoteKind::Notarize(block(n))),
            v(VoteKind::NotarizeFallback([0xee; 32])),
            v(VoteKind::SkipFallback),
        ],
        n.saturating_sub(64),
    )
}

fn expected_slot(n: u64) -> SlotVotes {
    SlotVotes {
        notarize: Some(block(n)),
        notarize_fallback: vec![[0xee; 32]],
        skip_fallback: true,
        ..SlotVotes::default()
    }
}

fn node() -> slashguard::NodeId {
    NodeKeypair::from_seed(NODE_SEED).node_id()
}

#[test]
fn crash_child() {
    let Some(env) = child_env() else { return };
    let deadline = Instant::now() + Duration::from_secs(20);
    let rt = rt();
    let store = open_retrying(OPEN_LIMIT, || FileVoteHistory::open(&env.dir, node()));
    let voter = NodeKeypair::from_seed(VOTER_SEED);
    let registered = derive_voter_key(&voter).unwrap().public_key();
    let guard = AlpenglowGuard::new(store, voter, &registered, RuleMode::Strict).unwrap();
    let start = rt
        .block_on(guard.load())
        .unwrap()
        .expect("the parent started the history")
        .last_voted_slot()
        .unwrap_or(0);
    report(&format!("start {start}"));
    let mut n = start;
    while Instant::now() < deadline {
        n += 1;
        let (votes, root) = event(n);
        // `vote` returns only after the event is durably recorded.
        rt.block_on(guard.vote(&votes, Some(root))).unwrap();
        report(&format!("acked {n}"));
    }
}

/// Open the history and check it is exactly the one after event `n`.
fn load(dir: &Path) -> (u64, Recovery) {
    let store = open_retrying(OPEN_LIMIT, || FileVoteHistory::open(dir, node()));
    let h: VoteHistory = rt()
        .block_on(slashguard::alpenglow::HistoryStorage::load(&store))
        .unwrap()
        .expect("history");
    let n = h.last_voted_slot().unwrap_or(0);
    assert_eq!(h.root(), event(n).1, "root of the history after event {n}");
    let slots: Vec<u64> = h.slots().map(|(s, _)| s).collect();
    let want: Vec<u64> = (h.root().max(1)..=n).collect();
    assert_eq!(slots, want, "slots of the history after event {n}");
    for (s, votes) in h.slots() {
        assert_eq!(votes, &expected_slot(s), "slot {s} after event {n}");
    }
    (n, store.recovery().clone())
}

fn kills() -> usize {
    std::env::var("SLASHGUARD_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

fn parse(line: &str, word: &str) -> Option<u64> {
    line.strip_prefix(word)?.trim().parse().ok()
}

#[test]
fn vote_history_survives_sigkill() {
    let mut rng = Rng::from_env("alpenglow");
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = FileVoteHistory::create(dir.path(), node()).unwrap();
        slashguard::alpenglow::HistoryStorage::create(&store, &VoteHistory::new(node(), SV, 0))
            .await
            .unwrap();
    });
    let kills = kills();
    let (mut previous, mut in_flight, mut torn) = (0u64, 0, 0);
    for i in 0..kills {
        let mut child = spawn_child("crash_child", "alpenglow", dir.path(), "", Stdio::null());
        match child.next_line() {
            Some(line) => assert_eq!(parse(&line, "start "), Some(previous), "kill {i}"),
            None => panic!("kill {i}: child exited before starting"),
        }
        std::thread::sleep(Duration::from_micros(rng.below(30_001)));
        assert!(
            child.sigkill(),
            "kill {i}: child ended before it was killed"
        );
        let mut acked = previous;
        while let Some(line) = child.next_line() {
            if let Some(n) = parse(&line, "acked ") {
                assert_eq!(n, acked + 1, "kill {i}: acknowledgements out of order");
                acked = n;
            }
        }
        let (loaded, recovery) = load(dir.path());
        assert!(
            loaded == acked || loaded == acked + 1,
            "kill {i}: loaded {loaded}, but {acked} was acknowledged"
        );
        if loaded == acked + 1 {
            in_flight += 1;
        }
        if let Recovery::DamagedSlot { problem, .. } = &recovery {
            if *problem != FormatError::Empty {
                // Only the interrupted write can be damaged: one of its two
                // copies (format v2). Its twin then holds either the old
                // record of that slot or the whole in-flight event, which
                // may be loaded: it was never acknowledged. The bound above
                // (acked or acked + 1) is what must hold.
                torn += 1;
            }
        }
        previous = loaded;
    }
    println!(
        "alpenglow: {kills} SIGKILLs; in-flight event found {in_flight} times; torn slot \
         recovered {torn} times; last slot {previous}"
    );
    assert!(kills == 0 || previous > 0, "the children never voted");
}
