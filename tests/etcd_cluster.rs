//! A three-member etcd cluster on loopback: a member dies, then the
//! leader dies, then a majority is gone and comes back. Stores and
//! authorizations continue after each election, nothing acknowledged is
//! lost, the loss of quorum is a typed `Unavailable` within the deadline,
//! and the same client objects work again afterwards.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_harness::{ClusterOptions, EtcdCluster};
use etcd_util::*;
use slashguard::etcd::{EtcdTowerStorage, EtcdWatermarks};
use slashguard::tower::{StoreMode, TowerStorage};
use slashguard::watermark::{ConsensusKind, Mark, SignerGuard};
use slashguard::{Error, NodeKeypair};

/// What the background writer saw.
#[derive(Default)]
struct Seen {
    acked_slots: Vec<u64>,
    acked_levels: Vec<u32>,
    unavailable: usize,
    slowest: Duration,
    last_ack: Option<Instant>,
    /// Longest time without an acknowledged store (the election window).
    longest_gap: Duration,
}

/// Stores slot n and authorizes level n (consensus key and companion key
/// in one batch) in a loop. Every call must return within the deadline
/// bound; any error other than `Unavailable` fails the test.
async fn writer(
    storage: Arc<EtcdTowerStorage>,
    guard: Arc<EtcdWatermarks>,
    kp: NodeKeypair,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    progress: Arc<AtomicUsize>,
) {
    let keys = [
        wm_key(1, ConsensusKind::Attestation),
        wm_key(2, ConsensusKind::Attestation),
    ];
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let t = Instant::now();
        let stored = storage
            .store(&record(&kp, n, 1, None), StoreMode::Advance)
            .await;
        let took_store = t.elapsed();
        let t = Instant::now();
        let payload = n.to_le_bytes();
        let batch = [
            request(keys[0], n as u32, 0, &payload),
            request(keys[1], n as u32, 0, &payload),
        ];
        let authorized = guard.authorize(&batch).await;
        let took_auth = t.elapsed();
        {
            let mut s = seen.lock().unwrap();
            s.slowest = s.slowest.max(took_store).max(took_auth);
            assert!(
                took_store <= within_deadline() && took_auth <= within_deadline(),
                "a call took {took_store:?} / {took_auth:?}"
            );
            match stored {
                Ok(_) => {
                    s.acked_slots.push(n);
                    let now = Instant::now();
                    if let Some(last) = s.last_ack {
                        s.longest_gap = s.longest_gap.max(now - last);
                    }
                    s.last_ack = Some(now);
                }
                Err(Error::Unavailable { .. }) => s.unavailable += 1,
                Err(e) => panic!("store of slot {n}: {e}"),
            }
            match authorized {
                Ok(_) => s.acked_levels.push(n as u32),
                Err(Error::Unavailable { .. }) => s.unavailable += 1,
                Err(e) => panic!("authorize level {n}: {e}"),
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the writer acknowledged `more` further stores.
async fn acked_more(seen: &Mutex<Seen>, more: usize, what: &str) -> Duration {
    let start = seen.lock().unwrap().acked_slots.len();
    let t = Instant::now();
    eventually(Duration::from_secs(20), what, || async {
        (seen.lock().unwrap().acked_slots.len() >= start + more).then_some(())
    })
    .await;
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_member_loss_leader_loss_and_quorum_loss() {
    let mut etcd = EtcdCluster::start(ClusterOptions::plain(3));
    // The default deadline: it is what is under test.
    let client = strict_client(&etcd, "/cluster").await;
    let kp = NodeKeypair::from_seed([5; 32]);
    // Outlives the elections and the quorum outage below.
    let id = identity(&client, kp.node_id(), "primary", Duration::from_secs(12));
    let own = retry("take over", || id.take_over()).await;
    let storage = Arc::new(retry("open", || EtcdTowerStorage::open(&id, &own)).await);
    let guard = Arc::new(EtcdWatermarks::new(client.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let progress = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(writer(
        storage.clone(),
        guard.clone(),
        NodeKeypair::from_seed([5; 32]),
        stop.clone(),
        seen.clone(),
        progress.clone(),
    ));

    acked_more(&seen, 20, "steady state").await;

    // One follower dies.
    let leader = etcd.leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    etcd.kill(follower);
    let t = acked_more(&seen, 20, "stores with a follower down").await;
    println!("20 stores with a follower down in {t:?}");
    etcd.restart(follower);

    // The leader dies: an election, then stores continue.
    let leader = etcd.leader(Duration::from_secs(10));
    let killed = Instant::now();
    etcd.kill(leader);
    acked_more(&seen, 1, "first store after the leader died").await;
    println!(
        "first acknowledged store {:?} after the leader died",
        killed.elapsed()
    );
    acked_more(&seen, 20, "stores after the election").await;
    etcd.restart(leader);
    etcd.wait_healthy();

    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let (max_slot, max_level) = {
        let s = seen.lock().unwrap();
        println!(
            "{} stores acknowledged, {} unavailable answers, longest gap {:?}, slowest call {:?}",
            s.acked_slots.len(),
            s.unavailable,
            s.longest_gap,
            s.slowest
        );
        (
            *s.acked_slots.iter().max().unwrap(),
            *s.acked_levels.iter().max().unwrap(),
        )
    };

    // Nothing acknowledged was lost: read back through fresh handles.
    let fresh_client = etcd_util::client(&etcd, "/cluster").await;
    let fresh = EtcdWatermarks::new(fresh_client);
    let stored = storage
        .load()
        .await
        .unwrap()
        .unwrap()
        .last_vote_slot()
        .unwrap();
    assert!(
        stored >= max_slot,
        "tower at {stored}, acknowledged {max_slot}"
    );
    for k in [1, 2] {
        let w = fresh
            .watermark(&wm_key(k, ConsensusKind::Attestation))
            .await
            .unwrap()
            .unwrap();
        assert!(
            w.mark >= Mark::level(max_level),
            "{k}: {:?} < {max_level}",
            w.mark
        );
    }

    // A majority is gone: typed Unavailable within the deadline, every time.
    let leader = etcd.leader(Duration::from_secs(10));
    let a = (leader + 1) % 3;
    let b = (leader + 2) % 3;
    etcd.kill(a);
    etcd.kill(b);
    let mut slot = stored;
    let mut level = max_level;
    for _ in 0..5 {
        slot += 1;
        level += 1;
        let t = Instant::now();
        let r = storage
            .store(&record(&kp, slot, 1, None), StoreMode::Advance)
            .await;
        let took = t.elapsed();
        assert!(
            matches!(r, Err(Error::Unavailable { .. })),
            "store without quorum: {r:?}"
        );
        assert!(
            took <= within_deadline(),
            "store without quorum took {took:?}"
        );
        let t = Instant::now();
        let r = guard
            .authorize_one(&request(
                wm_key(1, ConsensusKind::Attestation),
                level,
                0,
                b"q",
            ))
            .await;
        let took = t.elapsed();
        assert!(
            matches!(r, Err(Error::Unavailable { .. })),
            "authorize without quorum: {r:?}"
        );
        assert!(
            took <= within_deadline(),
            "authorize without quorum took {took:?}"
        );
    }

    // The majority comes back: the same objects work again.
    etcd.restart_no_wait(a);
    etcd.restart(b);
    etcd.wait_healthy();
    let back = Instant::now();
    let slot = std::cell::Cell::new(slot);
    let level = std::cell::Cell::new(level);
    eventually(
        Duration::from_secs(10),
        "store after quorum is back",
        || async {
            slot.set(slot.get() + 1);
            let r = record(&kp, slot.get(), 1, None);
            storage.store(&r, StoreMode::Advance).await.ok()
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "authorize after quorum is back",
        || async {
            level.set(level.get() + 1);
            let k = wm_key(1, ConsensusKind::Attestation);
            guard
                .authorize_one(&request(k, level.get(), 0, b"q"))
                .await
                .ok()
        },
    )
    .await;
    println!("service back {:?} after quorum", back.elapsed());
    assert!(!own.is_lost(), "ownership lost: {:?}", own.lost_reason());
}
