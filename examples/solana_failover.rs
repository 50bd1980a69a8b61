//! Solana validator failover (seed: "Failover Setup"), end to end, on the
//! embedded default: two validator instances on one host share one identity
//! through a file lock and one durable tower file. No server needed.
//!
//! Timeline (in slots):
//! 1. the primary owns the identity and votes;
//! 2. manual failover (`set-identity` on the secondary): the primary is told,
//!    stops before its next vote and releases; the secondary loads the tower
//!    and votes on;
//! 3. software upgrade: the primary restarts, catches up, and only when ready
//!    reclaims the identity; the secondary steps down and comes back as a
//!    standby under its own secondary identity (the restart cycle is broken);
//! 4. the primary dies abruptly: the standby detects it (the kernel drops the
//!    dead process's lock) and takes over;
//! 5. verdict: every slot voted at most once, by exactly one instance.
//!
//! Run: `cargo run --example solana_failover` (400 ms slots) or add
//! `-- --slot-ms 50` to go faster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slashguard::failover::{LocalLockPolicy, Takeover};
use slashguard::file::FileTowerStorage;
use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
use slashguard::{FailoverPolicy, NodeKeypair, TowerStorage};
use tokio::sync::watch;

const IDENTITY_SEED: [u8; 32] = [42; 32];

#[derive(Clone)]
struct Cluster {
    start: Instant,
    slot: Duration,
    votes: Arc<Mutex<Vec<(u64, &'static str)>>>,
}

impl Cluster {
    fn now_slot(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.slot.as_nanos()) as u64
    }
    async fn next_slot(&self) -> u64 {
        let next = self.now_slot() + 1;
        tokio::time::sleep_until((self.start + self.slot * next as u32).into()).await;
        next
    }
    fn say(&self, who: &str, what: impl AsRef<str>) {
        println!("[slot {:>3}] {who:<9} {}", self.now_slot(), what.as_ref());
    }
    fn bank_hash(slot: u64) -> [u8; 32] {
        // Every instance sees the same chain: the bank hash depends on the slot only.
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&slot.to_le_bytes());
        h
    }
}

/// One validator instance owning the identity: votes until it loses
/// ownership, reaches `until`, or is aborted (a crash).
async fn run_validator(
    name: &'static str,
    cluster: Cluster,
    dir: std::path::PathBuf,
    policy: LocalLockPolicy,
    until: u64,
) -> Result<(), slashguard::Error> {
    let ownership = policy.acquire().await?;
    let identity = NodeKeypair::from_seed(IDENTITY_SEED);
    let storage = FileTowerStorage::open_owned(&dir, identity.node_id(), &ownership)?;
    let tower = storage.load().await?;
    let mut last = tower.as_ref().and_then(|t| t.last_vote_slot());
    cluster.say(
        name,
        format!(
            "took identity {} (fence {}), tower last vote {:?}",
            identity.node_id(),
            ownership.fence(),
            last
        ),
    );
    let guard = VoteGuard::new(storage, identity)?;
    loop {
        let slot = tokio::select! {
            s = cluster.next_slot() => s,
            reason = ownership.lost() => {
                cluster.say(name, format!("lost the identity ({reason}): stops voting and exits"));
                break;
            }
        };
        if slot >= until {
            break;
        }
        if last.is_some_and(|l| slot <= l) {
            continue; // already in the tower: never vote a slot twice
        }
        let update = TowerUpdate {
            vote: VoteRef {
                slot,
                hash: Cluster::bank_hash(slot),
            },
            root: slot.checked_sub(31),
            tower: vec![0u8; 2048],
        };
        match guard
            .vote(update, format!("vote slot {slot}").as_bytes())
            .await
        {
            Ok(_) => {
                cluster.votes.lock().unwrap().push((slot, name));
                last = Some(slot);
            }
            Err(e) => {
                cluster.say(name, format!("vote withheld: {e}"));
                break;
            }
        }
    }
    drop(guard);
    policy.release(ownership).await
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--etcd") {
        eprintln!("--etcd: the etcd flavour of this demo arrives with the etcd failover policy; this build runs the embedded default");
        std::process::exit(2);
    }
    let slot_ms: u64 = arg("--slot-ms")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(400);
    let dir = tempfile::tempdir()?;
    let node = NodeKeypair::from_seed(IDENTITY_SEED).node_id();
    let secondary_id = NodeKeypair::from_seed([7; 32]).node_id();
    let cluster = Cluster {
        start: Instant::now(),
        slot: Duration::from_millis(slot_ms),
        votes: Arc::new(Mutex::new(Vec::new())),
    };
    println!(
        "slashguard Solana failover demo: identity {node}, {slot_ms} ms slots, tower in {}",
        dir.path().display()
    );
    let policy = |name: &str| {
        LocalLockPolicy::for_tower(dir.path(), node, name).with_timeout(Duration::from_secs(30))
    };
    let end = 36;

    // 1. The primary runs.
    let primary = tokio::spawn(run_validator(
        "primary",
        cluster.clone(),
        dir.path().into(),
        policy("primary"),
        end,
    ));
    cluster.say(
        "secondary",
        format!("running as {secondary_id} (its own identity, not voting for the primary's)"),
    );

    // 2. Manual failover at slot 6: `set-identity` on the secondary.
    while cluster.now_slot() < 6 {
        cluster.next_slot().await;
    }
    cluster.say("operator", "set-identity on the secondary");
    let asked = Instant::now();
    let secondary = tokio::spawn(run_validator(
        "secondary",
        cluster.clone(),
        dir.path().into(),
        policy("secondary").with_takeover(Takeover::RequestHandover),
        end,
    ));
    primary.await??;
    cluster.say(
        "operator",
        format!(
            "primary has exited {:?} after set-identity",
            asked.elapsed()
        ),
    );

    // 3. Software upgrade: the primary restarts, catches up for 4 slots, then reclaims.
    while cluster.now_slot() < 12 {
        cluster.next_slot().await;
    }
    cluster.say(
        "primary",
        "restarted with the new software; catching up (not ready)",
    );
    let (ready_tx, ready_rx) = watch::channel(false);
    let restarted = tokio::spawn(run_validator(
        "primary",
        cluster.clone(),
        dir.path().into(),
        policy("primary")
            .with_takeover(Takeover::RequestHandover)
            .with_readiness(ready_rx),
        end,
    ));
    while cluster.now_slot() < 16 {
        cluster.next_slot().await;
    }
    cluster.say("primary", "caught up: ready, reclaiming the identity");
    ready_tx.send(true)?;
    secondary.await??;
    cluster.say(
        "secondary",
        format!(
            "restarts under its own identity {secondary_id}: standby, waits for the primary to die"
        ),
    );
    let standby = tokio::spawn(run_validator(
        "secondary",
        cluster.clone(),
        dir.path().into(),
        policy("secondary"),
        end,
    ));

    // 4. The primary dies abruptly at slot 24.
    while cluster.now_slot() < 24 {
        cluster.next_slot().await;
    }
    cluster.say("primary", "CRASH (process killed)");
    let died = Instant::now();
    restarted.abort();
    let _ = restarted.await;
    let taken_at = loop {
        if died.elapsed() > Duration::from_secs(10) {
            println!("UNSAFE: the standby did not take over within 10 s");
            std::process::exit(1);
        }
        if cluster
            .votes
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(_, who)| *who == "secondary")
        {
            break died.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cluster.say(
        "secondary",
        format!("first vote {taken_at:?} after the primary died"),
    );
    standby.await??;

    // 5. Verdict from what actually left the processes.
    let votes = cluster.votes.lock().unwrap().clone();
    let mut per_slot = std::collections::BTreeMap::<u64, Vec<&str>>::new();
    for (slot, who) in &votes {
        per_slot.entry(*slot).or_default().push(who);
    }
    let doubles: Vec<_> = per_slot.iter().filter(|(_, w)| w.len() > 1).collect();
    let by = |n: &str| votes.iter().filter(|(_, w)| *w == n).count();
    println!(
        "\nvotes: {} ({} by primary, {} by secondary); slots without a vote during handovers: {}",
        votes.len(),
        by("primary"),
        by("secondary"),
        (1..end).filter(|s| !per_slot.contains_key(s)).count()
    );
    if doubles.is_empty() {
        println!("SAFE: every voted slot was voted exactly once, by one instance");
        Ok(())
    } else {
        println!("UNSAFE: slots voted more than once: {doubles:?}");
        std::process::exit(1);
    }
}
