//! Alpenglow failover end to end: real validator processes (this binary
//! re-executed, see `common/failover_node.rs`, role `alpenglow`) sharing
//! one identity and its vote history through a real etcd. Each process
//! notarizes a block only it sees, so a slot voted by two processes is a
//! slashable pair; the verdict fails on any.

mod common;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/failover_node.rs"]
mod failover_node;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use etcd_harness::EtcdCluster;
use failover_node::*;

const TTL: Duration = Duration::from_secs(2);
/// See `failover_e2e.rs`: etcd's expiry check, a poll, a claim, a history
/// read and a store, on a loaded machine running debug builds.
const MARGIN: Duration = Duration::from_millis(1500);
const SLOT_MS: u64 = 100;

#[test]
fn failover_node_entry() {
    failover_node::child_main();
}

static VARIANT: AtomicU8 = AtomicU8::new(1);

struct Site {
    endpoints: Vec<String>,
    prefix: String,
    epoch_ms: u64,
    events: Events,
}

impl Site {
    fn new(etcd: &EtcdCluster, prefix: &str) -> Site {
        Site {
            endpoints: etcd.endpoints(),
            prefix: prefix.into(),
            epoch_ms: now_ms(),
            events: Events::default(),
        }
    }

    fn node(&self, instance: &str, mode: Mode) -> Node {
        let spec = NodeSpec {
            role: Role::Alpenglow,
            instance: instance.into(),
            mode,
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            ttl_secs: TTL.as_secs(),
            slot_ms: SLOT_MS,
            epoch_ms: self.epoch_ms,
            seed: 91,
            variant: VARIANT.fetch_add(1, Ordering::Relaxed),
        };
        Node::spawn(&format!("a-{instance}"), spec, &self.events)
    }

    fn verdict(&self, what: &str) -> Verdict {
        let v = self.events.verdict();
        println!("{what}: {} votes, {} violations", v.votes, v.violations());
        v
    }
}

#[test]
fn kill_9_the_primary_the_standby_follows_its_history_within_the_ttl() {
    let etcd = EtcdCluster::single();
    let site = Site::new(&etcd, "/ag-kill9");
    let mut primary = site.node("primary", Mode::TakeOver);
    primary.wait_for("OWNED", Duration::from_secs(30));
    primary.wait_for("VOTED", Duration::from_secs(10));
    let mut standby = site.node("standby", Mode::Standby);
    standby.wait_for("START", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(700));

    let killed = now_ms();
    primary.kill9();
    let first = standby.wait_for("VOTED", TTL + MARGIN + Duration::from_secs(5));
    let after = Duration::from_millis(ms_of(&first) - killed);
    println!("primary killed; standby's first Alpenglow vote {after:?} later (TTL {TTL:?})");
    assert!(after <= TTL + MARGIN, "takeover took {after:?}");
    std::thread::sleep(Duration::from_secs(1));
    standby.stop(Duration::from_secs(5));
    let v = site.verdict("alpenglow kill -9");
    v.assert_safe();
    assert!(v.votes >= 10, "{v:?}");
}

#[test]
fn sigstop_the_primary_past_its_ttl_then_sigcont_it_signs_nothing_more() {
    let etcd = EtcdCluster::single();
    let site = Site::new(&etcd, "/ag-sigstop");
    let mut primary = site.node("primary", Mode::TakeOver);
    primary.wait_for("OWNED", Duration::from_secs(30));
    primary.wait_for("VOTED", Duration::from_secs(10));
    let mut standby = site.node("standby", Mode::Standby);
    standby.wait_for("START", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    let paused = now_ms();
    primary.pause();
    standby.wait_for("VOTED", TTL + MARGIN + Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let resumed = now_ms();
    primary.resume();
    primary.wait_for("EXIT", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    standby.stop(Duration::from_secs(5));

    let after: Vec<String> = site
        .events
        .of("a-primary")
        .into_iter()
        .filter(|l| ms_of_any(l).is_some_and(|ms| ms >= resumed))
        .collect();
    println!("primary after SIGCONT:\n  {}", after.join("\n  "));
    let late: Vec<&String> = after
        .iter()
        .filter(|l| l.starts_with("VOTED") && site.epoch_ms + slot_of(l) * SLOT_MS > paused)
        .collect();
    assert!(
        late.is_empty(),
        "the paused primary voted after resuming: {late:?}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("LOST") || l.contains(" fenced ")),
        "the primary did not learn it lost the identity: {after:?}"
    );
    site.verdict("alpenglow SIGSTOP/SIGCONT").assert_safe();
}

/// The unix ms of an event line, for lines that carry one.
fn ms_of_any(line: &str) -> Option<u64> {
    let k = line.split(' ').next()?;
    ["VOTED", "REFUSED", "LOST", "EXIT"]
        .contains(&k)
        .then(|| ms_of(line))
}
