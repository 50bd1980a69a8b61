//! The failover policies on etcd, in one process against a real etcd:
//! reclaim on restart (never, when ready, immediately), the restart-window
//! gate of a manual takeover, and the backup's "confirm the primary is
//! down" step.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::time::{Duration, Instant};

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::etcd::{AcquireMode, EtcdFailover, EtcdWatermarks};
use slashguard::failover::{
    BackupGuard, FailoverRefusal, Gate, Gated, PrimaryDown, PrimaryFencing, ReclaimMode,
};
use slashguard::watermark::{ConsensusKind, Mark, SignerGuard};
use slashguard::{Error, FailoverPolicy, NodeKeypair, Refusal};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(2);

fn failover_refusal(e: &Error) -> Option<&FailoverRefusal> {
    match e {
        Error::Refused(Refusal::Failover(r)) => Some(r),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_modes_of_a_restarting_primary() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/reclaim").await;
    let node = NodeKeypair::from_seed([21; 32]).node_id();
    let secondary = identity(&client, node, "secondary", TTL);
    let primary = identity(&client, node, "primary", TTL);

    // --- when ready (the default): nothing happens until ready.
    let own_s = secondary.take_over().await.unwrap();
    let (ready_tx, ready_rx) = watch::channel(false);
    let policy = EtcdFailover::reclaim(
        primary.clone(),
        ReclaimMode::default(),
        ready_rx,
        Duration::from_secs(10),
    );
    let reclaim = tokio::spawn(async move { policy.acquire().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !own_s.is_lost(),
        "a primary that is not ready must not knock out the secondary"
    );
    assert_eq!(
        primary.status().await.unwrap().unwrap().instance,
        "secondary"
    );
    let ready_at = Instant::now();
    ready_tx.send(true).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), own_s.lost())
        .await
        .expect("the secondary learns it lost the identity");
    assert!(reason.contains("primary"), "{reason}");
    let own_p = reclaim.await.unwrap().unwrap();
    assert!(own_p.fence() > own_s.fence());
    println!("reclaimed {:?} after ready", ready_at.elapsed());

    // --- never: the restarted instance waits as a standby, and gets the
    // identity only once the owner releases it.
    let policy = EtcdFailover::reclaim(
        secondary.clone(),
        ReclaimMode::Never,
        watch::channel(true).1,
        Duration::from_millis(600),
    );
    assert_eq!(
        policy.inner().mode(),
        AcquireMode::WhenFree(Duration::from_millis(600))
    );
    let err = policy.acquire().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(!own_p.is_lost(), "a standby never knocks the owner out");
    let standby = tokio::spawn({
        let secondary = secondary.clone();
        async move {
            EtcdFailover::reclaim(
                secondary,
                ReclaimMode::Never,
                watch::channel(false).1,
                Duration::from_secs(10),
            )
            .acquire()
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    primary.release(own_p).await.unwrap();
    let own_s = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(own_s.holder(), "secondary");

    // --- immediately: ready or not.
    let policy = EtcdFailover::reclaim(
        primary.clone(),
        ReclaimMode::Immediately,
        watch::channel(false).1,
        Duration::from_secs(10),
    );
    assert!(policy.gates().is_empty());
    let started = Instant::now();
    let own_p = policy.acquire().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::timeout(Duration::from_secs(3), own_s.lost())
        .await
        .unwrap();
    assert!(!own_p.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_gate_that_stays_closed_is_a_typed_refusal_and_touches_nothing() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/gate").await;
    let node = NodeKeypair::from_seed([22; 32]).node_id();
    let secondary = identity(&client, node, "secondary", TTL);
    let own_s = secondary.take_over().await.unwrap();
    let fence = own_s.fence();

    let (ready_tx, ready_rx) = watch::channel(false);
    let spare = ready_rx.clone();
    let policy = EtcdFailover::reclaim(
        identity(&client, node, "primary", TTL),
        ReclaimMode::WhenReady,
        ready_rx,
        Duration::from_millis(400),
    );
    let started = Instant::now();
    let err = policy.acquire().await.unwrap_err();
    let waited = started.elapsed();
    match failover_refusal(&err) {
        Some(FailoverRefusal::GateClosed { gate, .. }) => assert_eq!(gate, "readiness"),
        other => panic!("expected GateClosed, got {other:?} ({err})"),
    }
    assert!(err.is_refusal());
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // A dropped signal fails at once rather than at the timeout.
    drop(ready_tx);
    let started = Instant::now();
    let policy = EtcdFailover::reclaim(
        identity(&client, node, "primary", TTL),
        ReclaimMode::WhenReady,
        spare,
        Duration::from_secs(30),
    );
    let err = policy.acquire().await.unwrap_err();
    assert!(
        matches!(failover_refusal(&err), Some(FailoverRefusal::GateClosed { detail, .. }) if detail.contains("dropped")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!own_s.is_lost());
    let status = secondary.status().await.unwrap().unwrap();
    assert_eq!(
        (status.instance.as_str(), status.fence),
        ("secondary", fence)
    );
}

/// Solana's `wait-for-restart-window && set-identity`: the manual takeover
/// waits until the application says no leader slot is near.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_takeover_waits_for_the_restart_window() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/window").await;
    let node = NodeKeypair::from_seed([23; 32]).node_id();
    let own_p = identity(&client, node, "primary", TTL)
        .take_over()
        .await
        .unwrap();

    let (window_tx, window_rx) = watch::channel(false);
    let set_identity = Gated::new(EtcdFailover::new(
        identity(&client, node, "secondary", TTL),
        AcquireMode::TakeOver,
    ))
    .gate(Gate::restart_window(window_rx, Duration::from_secs(10)));
    let asked = Instant::now();
    let takeover = tokio::spawn(async move { set_identity.acquire().await });
    // A leader slot is near for 600 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!own_p.is_lost(), "took over inside a leader window");
    window_tx.send(true).unwrap();
    let own_s = tokio::time::timeout(Duration::from_secs(5), takeover)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(600));
    let reason = tokio::time::timeout(Duration::from_secs(3), own_p.lost())
        .await
        .unwrap();
    assert!(reason.contains("secondary"), "{reason}");
    assert!(own_s.fence() > own_p.fence());
}

/// Tezos backup, step 1 through etcd: the backup is refused while the
/// primary owns the identity, and once the primary is gone it holds the
/// identity and raises the shared watermarks above what the primary
/// signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_confirms_the_primary_is_down_through_its_lease() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/backup").await;
    let node = NodeKeypair::from_seed([24; 32]).node_id();
    let primary = identity(&client, node, "primary", TTL);
    let own_p = primary.take_over().await.unwrap();
    // The primary signed an attestation at 7000 through the shared store.
    let key = wm_key(5, ConsensusKind::Attestation);
    let store = EtcdWatermarks::new(client.clone());
    store
        .authorize(&[request(key, 7000, 0, b"primary")])
        .await
        .unwrap();

    let backup = identity(&client, node, "backup", TTL);
    let started = Instant::now();
    let err = backup
        .confirm_primary_down(Duration::from_millis(500))
        .await
        .unwrap_err();
    match failover_refusal(&err) {
        Some(FailoverRefusal::PrimaryStillActive { detail }) => {
            assert!(
                detail.contains("primary") && detail.contains("lease"),
                "{detail}"
            )
        }
        other => panic!("expected PrimaryStillActive, got {other:?} ({err})"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!own_p.is_lost(), "refusing changes nothing");

    // The primary dies (its handle is dropped, nothing released): the
    // backup gets the identity once the lease expires.
    drop(own_p);
    let died = Instant::now();
    let evidence = backup
        .confirm_primary_down(Duration::from_secs(10))
        .await
        .unwrap();
    println!("primary confirmed down {:?} after it died", died.elapsed());
    assert!(matches!(evidence, PrimaryDown::Acquired(_)));

    // The primary signs through the same etcd watermarks.
    let guard = BackupGuard::new(EtcdWatermarks::new(client.clone()), key.chain)
        .primary_fencing(PrimaryFencing::SharedWatermarks)
        .alias("consensus", key.key);
    let report = guard.activate(evidence, 6990).await.unwrap();
    assert_eq!(report.last_known_level, Some(7000));
    assert_eq!(report.level, 7010);
    // The primary's store sees the raised marks: it cannot sign 7001.
    let err = store
        .authorize(&[request(key, 7001, 0, b"primary")])
        .await
        .unwrap_err();
    assert!(err.is_refusal(), "{err}");
    let w = store.watermark(&key).await.unwrap().unwrap();
    assert_eq!(w.mark, Mark::level(7010));
}
