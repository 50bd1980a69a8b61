//! Several processes against one etcd: a paused owner cannot store or sign
//! after a standby took over, and racing signer processes get exactly one
//! authorization per (level, round).
//!
//! Child processes are this test binary re-executed (`--exact
//! child_process_entry`) with their role in `SLASHGUARD_ETCD_CHILD`; they
//! report on stdout, one line per event, and the parent counts the lines.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_harness::EtcdCluster;
use etcd_util::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdTowerStorage, EtcdWatermarks};
use slashguard::tower::{TowerStorage, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{ConsensusKind, PayloadHash, SignerGuard};
use slashguard::{Error, NodeKeypair};

/// The vote account of the test validator.
const VOTE_ACCOUNT: slashguard::NodeId = slashguard::NodeId([0x5a; 32]);

/// The smallest vote message casting `update`'s vote, paid and authorized
/// by `node`.
fn vote_message(node: slashguard::NodeId, update: &TowerUpdate) -> Vec<u8> {
    slashguard::tower::vote_tx::CastVote::tower_sync_for(
        update.vote,
        update.root,
        VOTE_ACCOUNT,
        node,
    )
    .to_legacy_message(node, [0; 32])
    .unwrap()
}

const ROLE: &str = "SLASHGUARD_ETCD_CHILD";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

/// Entry point of the child processes. Does nothing when run as a normal
/// test (no role in the environment).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // libtest printed "test child_process_entry ... " without a newline:
    // start the reports on a line of their own.
    println!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match role.as_str() {
        "owner" => rt.block_on(owner_child()),
        "racer" => rt.block_on(racer_child()),
        other => panic!("unknown child role {other}"),
    }
}

/// A child process, killed if the test ends first.
struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl ChildProc {
    fn spawn(role: &str, vars: &[(&str, String)]) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        ChildProc { child, lines: rx }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The next line starting with `prefix`, waiting up to `timeout`.
    fn wait_for(&self, prefix: &str, timeout: Duration, seen: &mut Vec<String>) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {prefix} line within {timeout:?}; child said:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Every line received until `timeout` passes or the child ends.
    fn drain(&self, timeout: Duration, seen: &mut Vec<String>) {
        let end = Instant::now() + timeout;
        while let Ok((_, line)) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            seen.push(line);
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn update(slot: u64) -> TowerUpdate {
    TowerUpdate {
        vote: VoteRef {
            slot,
            hash: [slot as u8; 32],
        },
        root: None,
        tower: vec![3; 128],
    }
}

/// Owns the identity, then votes every 20 ms and reports each outcome:
/// `VOTED <slot> <unix ms>`, `REFUSED <slot> <unix ms> <kind> <error>`,
/// `LOST <reason>`.
async fn owner_child() {
    let endpoints: Vec<String> = env("ETCD_ENDPOINTS").split(',').map(String::from).collect();
    let config = EtcdConfig::builder(endpoints)
        .key_prefix(env("ETCD_PREFIX"))
        .request_deadline(RELAXED)
        .build()
        .unwrap();
    let client = EtcdClient::connect(config).await.unwrap();
    let seed: [u8; 32] = [env("NODE_SEED").parse::<u8>().unwrap(); 32];
    let kp = NodeKeypair::from_seed(seed);
    let ttl = Duration::from_secs(env("LEASE_TTL").parse().unwrap());
    let id = identity(&client, kp.node_id(), "host-a", ttl);
    let own = Arc::new(id.take_over().await.unwrap());
    let storage = EtcdTowerStorage::open(&id, &own).await.unwrap();
    let guard = VoteGuard::new(storage, kp)
        .unwrap()
        .with_vote_account(VOTE_ACCOUNT);
    println!("READY {}", own.fence());
    let watcher = own.clone();
    tokio::spawn(async move {
        let reason = watcher.lost().await;
        println!("LOST {reason}");
    });
    let mut refused_after_loss = 0;
    for slot in 1.. {
        let message = vote_message(guard.node(), &update(slot));
        match guard.vote(update(slot), &message).await {
            Ok(_) => println!("VOTED {slot} {}", now_ms()),
            Err(e) => {
                let kind = match &e {
                    Error::Fenced { .. } => "fenced",
                    Error::Unavailable { .. } => "unavailable",
                    _ => "other",
                };
                println!("REFUSED {slot} {} {kind} {e}", now_ms());
                if own.is_lost() {
                    refused_after_loss += 1;
                }
            }
        }
        if refused_after_loss >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("EXIT");
}

#[test]
fn a_paused_owner_cannot_store_or_sign_after_a_standby_took_over() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = EtcdCluster::single();
    let ttl = 2u64;
    let seed = 42u8;
    let a = ChildProc::spawn(
        "owner",
        &[
            ("ETCD_ENDPOINTS", etcd.endpoints().join(",")),
            ("ETCD_PREFIX", "/paused".into()),
            ("NODE_SEED", seed.to_string()),
            ("LEASE_TTL", ttl.to_string()),
        ],
    );
    let mut log = Vec::new();
    let ready = a.wait_for("READY", Duration::from_secs(20), &mut log);
    let fence_a: u64 = ready[6..].parse().unwrap();
    for _ in 0..5 {
        a.wait_for("VOTED", Duration::from_secs(5), &mut log);
    }

    // A hangs (SIGSTOP), past its lease TTL.
    kill(a.pid(), Signal::SIGSTOP).unwrap();
    let paused = Instant::now();
    a.drain(Duration::from_millis(200), &mut log);
    let voted_before: Vec<u64> = log
        .iter()
        .filter_map(|l| l.strip_prefix("VOTED "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let last_a = *voted_before.iter().max().unwrap();

    // The standby takes over without a human once A's lease expired, and
    // reads A's acknowledged tower.
    let kp = NodeKeypair::from_seed([seed; 32]);
    // B's ownership stays alive (its keep-alive runs on `rt`) to the end.
    let (own_b, _guard_b, b_slot) = rt.block_on(async {
        let client = client(&etcd, "/paused").await;
        let b = identity(&client, kp.node_id(), "host-b", Duration::from_secs(ttl));
        let own_b = b.acquire_when_free(Duration::from_secs(20)).await.unwrap();
        let waited = paused.elapsed();
        assert!(
            waited >= Duration::from_millis(1000),
            "lease of a paused owner ended after {waited:?}"
        );
        let storage = EtcdTowerStorage::open(&b, &own_b).await.unwrap();
        let tower = storage.load().await.unwrap().unwrap();
        assert!(
            tower.last_vote_slot().unwrap() >= last_a,
            "acknowledged votes of A lost"
        );
        let b_slot = tower.last_vote_slot().unwrap() + 100;
        let guard = VoteGuard::new(storage, NodeKeypair::from_seed([seed; 32]))
            .unwrap()
            .with_vote_account(VOTE_ACCOUNT);
        let message = vote_message(guard.node(), &update(b_slot));
        guard.vote(update(b_slot), &message).await.unwrap();
        (own_b, guard, b_slot)
    });
    assert!(own_b.fence() > fence_a);

    // A wakes up: it must neither store nor sign.
    let resumed_ms = now_ms();
    kill(a.pid(), Signal::SIGCONT).unwrap();
    a.wait_for("EXIT", Duration::from_secs(15), &mut log);
    let after: Vec<&String> = log
        .iter()
        .filter(|l| {
            let mut f = l.split(' ');
            matches!(f.next(), Some("VOTED" | "REFUSED"))
                && f.nth(1)
                    .and_then(|t| t.parse::<u128>().ok())
                    .is_some_and(|t| t >= resumed_ms)
        })
        .collect();
    println!(
        "A after resuming:\n{}",
        after
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        after.iter().all(|l| l.starts_with("REFUSED")),
        "A voted after B took over:\n{after:?}"
    );
    assert!(
        after.iter().filter(|l| l.contains(" fenced ")).count() >= 5,
        "{after:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("LOST ")),
        "A never learned of the loss"
    );

    // B's tower is intact.
    rt.block_on(async {
        let mut raw = raw(&etcd).await;
        let keys = client(&etcd, "/paused").await.keys();
        let v = raw.get(keys.record(&kp.node_id()), None).await.unwrap();
        let r = slashguard::tower::TowerRecord::decode(v.kvs()[0].value(), &kp.node_id()).unwrap();
        assert_eq!(r.last_vote_slot(), Some(b_slot));
    });
}

/// Races for the watermarks of one consensus key and its companion key:
/// TASKS tasks sharing one store, each authorizing every level once with
/// its own payload. Reports `WIN <level> <round> <proc> <task>`, and
/// `FAIL <level> <kind> <error>` for anything but a refusal.
async fn racer_child() {
    let endpoints: Vec<String> = env("ETCD_ENDPOINTS").split(',').map(String::from).collect();
    // This test is about exclusion, not latency: a loaded machine must not
    // turn into deadline failures.
    let config = EtcdConfig::builder(endpoints)
        .key_prefix(env("ETCD_PREFIX"))
        .request_deadline(RELAXED)
        .build()
        .unwrap();
    let client = EtcdClient::connect(config).await.unwrap();
    let proc_id: usize = env("RACER").parse().unwrap();
    let levels: u32 = env("LEVELS").parse().unwrap();
    let tasks: usize = env("TASKS").parse().unwrap();
    let start_at: u128 = env("START_AT").parse().unwrap();
    let guard = Arc::new(EtcdWatermarks::new(client));
    let wait = start_at.saturating_sub(now_ms()) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let guard = guard.clone();
        handles.push(tokio::spawn(async move {
            let keys = [
                wm_key(7, ConsensusKind::Attestation),
                wm_key(8, ConsensusKind::Attestation),
            ];
            let mut refused = 0u32;
            for level in 1..=levels {
                let payload = format!("p{proc_id}-t{task}-l{level}");
                let batch = [
                    request(keys[0], level, 0, payload.as_bytes()),
                    request(keys[1], level, 0, payload.as_bytes()),
                ];
                match guard.authorize(&batch).await {
                    Ok(_) => println!("WIN {level} 0 {proc_id} {task}"),
                    Err(Error::Refused(_)) => refused += 1,
                    Err(e) => println!("FAIL {level} {e}"),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for h in handles {
        refused += h.await.unwrap();
    }
    println!("DONE {proc_id} refused={refused}");
}

#[test]
fn racing_signer_processes_get_exactly_one_authorization_per_level() {
    const PROCS: usize = 4;
    const TASKS: usize = 4;
    const LEVELS: u32 = 1000;
    let etcd = EtcdCluster::single();
    let start_at = now_ms() + 2500;
    let started = Instant::now();
    let racers: Vec<ChildProc> = (0..PROCS)
        .map(|i| {
            ChildProc::spawn(
                "racer",
                &[
                    ("ETCD_ENDPOINTS", etcd.endpoints().join(",")),
                    ("ETCD_PREFIX", "/race".into()),
                    ("RACER", i.to_string()),
                    ("LEVELS", LEVELS.to_string()),
                    ("TASKS", TASKS.to_string()),
                    ("START_AT", start_at.to_string()),
                ],
            )
        })
        .collect();
    let mut lines = Vec::new();
    for r in &racers {
        let mut log = Vec::new();
        r.wait_for("DONE", Duration::from_secs(240), &mut log);
        lines.extend(log);
    }
    println!(
        "{PROCS} processes x {TASKS} tasks x {LEVELS} levels in {:?}",
        started.elapsed() - Duration::from_millis(2500)
    );

    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    let mut winners: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.starts_with("WIN ")) {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[2], "0", "{l}");
        winners
            .entry(f[1].parse().unwrap())
            .or_default()
            .push((f[3].parse().unwrap(), f[4].parse().unwrap()));
    }
    for (level, w) in &winners {
        assert_eq!(
            w.len(),
            1,
            "level {level} authorized {} times: {w:?}",
            w.len()
        );
    }
    // A level without a winner is only acceptable where a task failed
    // (no answer in time): it then has no signature at all, never two.
    let failed_levels: BTreeSet<u32> = failures
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    for level in 1..=LEVELS {
        assert!(
            winners.contains_key(&level) || failed_levels.contains(&level),
            "level {level} has no winner and no failure"
        );
    }
    assert!(
        failures.len() <= 5,
        "too many failures on a healthy etcd: {failures:?}"
    );
    let processes: BTreeSet<usize> = winners.values().map(|w| w[0].0).collect();
    println!(
        "wins per process: {:?}, failures: {}",
        (0..PROCS)
            .map(|p| winners.values().filter(|w| w[0].0 == p).count())
            .collect::<Vec<_>>(),
        failures.len()
    );
    assert!(
        processes.len() >= 2,
        "no real race: one process won every level"
    );

    // The store agrees with the logs: the last level's entry is its
    // winner's payload, for both keys.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let guard = EtcdWatermarks::new(client(&etcd, "/race").await);
        let (last, w) = winners.iter().next_back().unwrap();
        let (p, t) = w[0];
        let expected = PayloadHash::of(format!("p{p}-t{t}-l{last}").as_bytes());
        for k in [7, 8] {
            let stored = guard
                .watermark(&wm_key(k, ConsensusKind::Attestation))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.mark.level, *last);
            assert_eq!(stored.payload_hash, Some(expected));
        }
    });
}
