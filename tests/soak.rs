//! Soak: repeated random failovers between two validator processes and two
//! baker processes sharing their identities through a real etcd, for a
//! fixed time; then the count of failovers, votes, signatures and
//! violations (which must be 0).
//!
//! CI runs 60 seconds (`cargo test --all-features --test soak`). The long
//! run, 30 minutes, optimized and with the report printed:
//!
//! ```text
//! SLASHGUARD_SOAK_SECS=1800 cargo test --release --all-features --test soak -- --nocapture
//! ```
//!
//! Each round picks one action at random (seeded: the seed is printed, and
//! `SLASHGUARD_TEST_SEED` replays it):
//!
//! - **manual takeover**: the standby gets `TAKEOVER` (Solana's
//!   `set-identity`); the owner must stop;
//! - **kill -9** of the owner; the standby takes over when the lease
//!   expires;
//! - **SIGSTOP** of the owner past its lease TTL, then SIGCONT once the
//!   standby acts: the old owner must not vote or sign for any later slot,
//!   and must stop;
//! - **restart with reclaim when ready**: the standby is restarted as a
//!   primary that reclaims once its (simulated) catch-up is done;
//! - **etcd restart** (one round in eight): etcd is killed for 0.5-2.5 s
//!   and started again on its data; an owner that cannot renew its lease
//!   stops.
//!
//! After each action every process that stopped is started again as a
//! standby (the seed: it comes back under its own identity), and the round
//! ends once an owner votes (or signs) again.

mod common;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/failover_node.rs"]
mod failover_node;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Rng;
use etcd_harness::EtcdCluster;
use failover_node::*;

const TTL_SECS: u64 = 2;
const SLOT_MS: u64 = 100;

#[test]
fn failover_node_entry() {
    failover_node::child_main();
}

struct Site {
    endpoints: Vec<String>,
    epoch_ms: u64,
    events: Events,
    spawned: usize,
}

impl Site {
    fn spawn(&mut self, role: Role, host: usize, mode: Mode) -> Node {
        self.spawned += 1;
        let tag = match role {
            Role::Validator => 'v',
            Role::Baker => 'b',
            Role::Alpenglow => 'a',
        };
        let label = format!("{tag}{}-{}", ["A", "B"][host], self.spawned);
        let spec = NodeSpec {
            role,
            instance: label.clone(),
            mode,
            endpoints: self.endpoints.clone(),
            prefix: "/soak".into(),
            ttl_secs: TTL_SECS,
            slot_ms: SLOT_MS,
            epoch_ms: self.epoch_ms,
            seed: 99,
            variant: (self.spawned % 250) as u8 + 1,
        };
        Node::spawn(&label, spec, &self.events)
    }
}

/// Two processes sharing one identity: hosts A and B.
struct Pair {
    role: Role,
    nodes: [Node; 2],
}

fn acts(line: &str) -> bool {
    line.starts_with("VOTED") || line.starts_with("SIGNED")
}

impl Pair {
    fn poll(&mut self) {
        for n in &mut self.nodes {
            n.poll();
        }
    }

    fn running(&mut self, i: usize) -> bool {
        !self.nodes[i].exited() && !self.nodes[i].has("EXIT")
    }

    /// The one running process that owns the identity; `None` while
    /// none does, or while a loser has not stopped yet.
    fn owner(&mut self) -> Option<usize> {
        self.poll();
        let owners: Vec<usize> = (0..2)
            .filter(|&i| self.nodes[i].has("OWNED") && self.running(i))
            .collect();
        (owners.len() == 1).then(|| owners[0])
    }

    fn standby(&mut self) -> Option<usize> {
        self.poll();
        (0..2).find(|&i| !self.nodes[i].has("OWNED") && self.running(i))
    }

    /// Restart every stopped process as a standby, until an owner acts
    /// after `since` (unix ms). Returns the owner.
    fn settle(&mut self, site: &mut Site, since: u64, timeout: Duration) -> Result<usize, String> {
        let end = Instant::now() + timeout;
        loop {
            self.poll();
            for i in 0..2 {
                if !self.running(i) {
                    self.nodes[i] = site.spawn(self.role, i, Mode::Standby);
                }
            }
            if let Some(o) = self.owner() {
                if self.nodes[o]
                    .seen()
                    .iter()
                    .any(|l| acts(l) && ms_of(l) > since)
                {
                    return Ok(o);
                }
            }
            if Instant::now() > end {
                return Err(format!(
                    "{:?} pair: no owner acting within {timeout:?}; A said:\n{}\nB said:\n{}",
                    self.role,
                    self.nodes[0].seen().join("\n"),
                    self.nodes[1].seen().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    ManualTakeover,
    Kill9,
    Pause,
    ReclaimRestart,
    EtcdRestart,
}

#[test]
fn soak_random_failovers() {
    let secs: u64 = std::env::var("SLASHGUARD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut rng = Rng::from_env("soak");
    let mut etcd = EtcdCluster::single();
    let mut site = Site {
        endpoints: etcd.endpoints(),
        epoch_ms: now_ms(),
        events: Events::default(),
        spawned: 0,
    };
    let mut pairs: Vec<Pair> = [Role::Validator, Role::Baker]
        .into_iter()
        .map(|role| Pair {
            role,
            nodes: [
                site.spawn(role, 0, Mode::TakeOver),
                site.spawn(role, 1, Mode::Standby),
            ],
        })
        .collect();
    let started = Instant::now();
    for p in &mut pairs {
        p.settle(&mut site, 0, Duration::from_secs(60)).unwrap();
    }
    let end = started + Duration::from_secs(secs);
    let mut done: BTreeMap<Action, usize> = BTreeMap::new();
    let mut late_acts: Vec<String> = Vec::new();
    let mut slowest_takeover = Duration::ZERO;
    let mut round = 0;
    while Instant::now() < end {
        round += 1;
        let action = if rng.below(8) == 0 {
            Action::EtcdRestart
        } else {
            [
                Action::ManualTakeover,
                Action::Kill9,
                Action::Pause,
                Action::ReclaimRestart,
            ][rng.below(4) as usize]
        };
        let at = now_ms();
        // Paused owners: (pair, node index, when paused).
        let mut paused: Vec<(usize, usize, u64)> = Vec::new();
        let mut reclaiming: Vec<(usize, usize)> = Vec::new();
        match action {
            Action::EtcdRestart => {
                let down = Duration::from_millis(500 + rng.below(2000));
                etcd.kill(0);
                std::thread::sleep(down);
                etcd.restart(0);
                println!(
                    "[{:>5.1}s] round {round}: etcd down for {down:?}",
                    started.elapsed().as_secs_f64()
                );
            }
            _ => {
                for (pi, p) in pairs.iter_mut().enumerate() {
                    let (Some(o), Some(s)) = (p.owner(), p.standby()) else {
                        continue;
                    };
                    match action {
                        Action::ManualTakeover => p.nodes[s].send("TAKEOVER"),
                        Action::Kill9 => p.nodes[o].kill9(),
                        Action::Pause => {
                            p.nodes[o].pause();
                            paused.push((pi, o, now_ms()));
                        }
                        Action::ReclaimRestart => {
                            p.nodes[s].stop(Duration::from_secs(5));
                            let ready_after_ms = 200 + rng.below(1300);
                            p.nodes[s] = site.spawn(p.role, s, Mode::Reclaim { ready_after_ms });
                            reclaiming.push((pi, s));
                        }
                        Action::EtcdRestart => unreachable!(),
                    }
                }
                println!(
                    "[{:>5.1}s] round {round}: {action:?}",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        for &(pi, s) in &reclaiming {
            pairs[pi].nodes[s].wait_for("OWNED", Duration::from_secs(30));
        }
        if !paused.is_empty() {
            // Resume once the standby acts (the owner's lease expired).
            for &(pi, o, _) in &paused {
                let p = &mut pairs[pi];
                let s = 1 - o;
                let first = p.nodes[s]
                    .try_wait_for(
                        if p.role == Role::Validator {
                            "VOTED"
                        } else {
                            "SIGNED"
                        },
                        Duration::from_secs(20),
                    )
                    .unwrap_or_else(|| {
                        panic!(
                            "{:?}: the standby did not take over from a paused owner",
                            p.role
                        )
                    });
                if p.role == Role::Validator {
                    slowest_takeover =
                        slowest_takeover.max(Duration::from_millis(ms_of(&first) - at));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            let resumed = now_ms();
            for &(pi, o, _) in &paused {
                pairs[pi].nodes[o].resume();
            }
            for &(pi, o, paused_at) in &paused {
                let n = &mut pairs[pi].nodes[o];
                n.wait_for("EXIT", Duration::from_secs(10));
                for l in n.seen() {
                    if acts(l)
                        && ms_of(l) >= resumed
                        && site.epoch_ms + slot_of(l) * SLOT_MS > paused_at
                    {
                        late_acts.push(format!("{}: {l}", n.label));
                    }
                }
            }
        }
        for p in &mut pairs {
            let owner = p.settle(&mut site, at, Duration::from_secs(30)).unwrap();
            if action == Action::Kill9 && p.role == Role::Validator {
                let first = p.nodes[owner]
                    .seen()
                    .iter()
                    .find(|l| l.starts_with("VOTED") && ms_of(l) > at)
                    .cloned()
                    .unwrap();
                slowest_takeover = slowest_takeover.max(Duration::from_millis(ms_of(&first) - at));
            }
        }
        *done.entry(action).or_default() += 1;
        // Let both run a little before the next failure.
        std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
    }
    for p in &mut pairs {
        for n in &mut p.nodes {
            n.stop(Duration::from_secs(5));
        }
    }
    let v = site.events.verdict();
    let failovers = v.owned.len() - 2;
    println!(
        "\nsoak: {:?} in {:?}: {round} rounds {done:?}; {failovers} failovers (acquisitions after the first owners); \
         {} votes, {} signatures; slowest takeover after kill/pause {slowest_takeover:?} (TTL {TTL_SECS} s); \
         violations {} (double votes {}, double signatures {}), acts after fencing {}",
        Duration::from_secs(secs),
        started.elapsed(),
        v.votes,
        v.signatures,
        v.violations(),
        v.double_votes.len(),
        v.double_signatures.len(),
        late_acts.len()
    );
    v.assert_safe();
    assert!(
        late_acts.is_empty(),
        "acted after being fenced: {late_acts:?}"
    );
    assert!(
        failovers >= secs as usize / 10,
        "too few failovers: {failovers}"
    );
    assert!(v.votes > 0 && v.signatures > 0);
}
