//! The one-host failover policy: handover, crash detection, readiness gate,
//! no flapping, bounded waits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slashguard::failover::{LocalLockPolicy, Takeover};
use slashguard::file::FileTowerStorage;
use slashguard::tower::{StoreMode, TowerRecord, VoteRef};
use slashguard::{Error, FailoverPolicy, NodeKeypair, TowerStorage};
use tokio::sync::watch;

fn policy(dir: &std::path::Path, name: &str) -> LocalLockPolicy {
    let node = NodeKeypair::from_seed([3; 32]).node_id();
    LocalLockPolicy::for_tower(dir, node, name).with_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn handover_tells_the_owner_and_waits_for_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let id = NodeKeypair::from_seed([3; 32]);
    let primary = policy(dir.path(), "primary");
    let owned = primary.acquire().await.unwrap();
    let store = FileTowerStorage::create_owned(dir.path(), id.node_id(), &owned).unwrap();
    let rec = TowerRecord::sign(
        &id,
        Some(VoteRef {
            slot: 5,
            hash: [5; 32],
        }),
        None,
        vec![],
    )
    .unwrap();
    store.store(&rec, StoreMode::Advance).await.unwrap();

    let secondary = policy(dir.path(), "secondary").with_takeover(Takeover::RequestHandover);
    let taker = tokio::spawn(async move { secondary.acquire().await });
    let reason = tokio::time::timeout(Duration::from_secs(5), owned.lost())
        .await
        .expect("owner is told");
    assert!(reason.contains("secondary"), "{reason}");
    // Until the owner releases, the secondary cannot have the identity, and
    // the owner's store keeps the lock even after the ownership is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!taker.is_finished(), "secondary must wait for the release");
    let first_fence = owned.fence();
    primary.release(owned).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!taker.is_finished(), "the open store still holds the lock");
    drop(store);
    let taken = tokio::time::timeout(Duration::from_secs(5), taker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(taken.fence() > first_fence);
    let store = FileTowerStorage::open_owned(dir.path(), id.node_id(), &taken).unwrap();
    assert_eq!(
        store.load().await.unwrap().unwrap().last_vote_slot(),
        Some(5),
        "tower carried over"
    );
}

#[tokio::test]
async fn a_killed_owner_process_is_detected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeKeypair::from_seed([3; 32]).node_id();
    let lock = FileTowerStorage::lock_path(dir.path(), &node);
    std::fs::write(&lock, [0u8; 8]).unwrap();
    // Another process holds the lock: a shell opens it as fd 9, locks it with
    // util-linux flock(1) (the same flock(2) lock), then becomes `sleep`, so
    // the killed process is the only holder.
    let script = format!(
        "exec 9>>'{}' && flock -n 9 && exec sleep 60",
        lock.display()
    );
    let mut holder = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("sh");
    let standby = policy(dir.path(), "standby").with_poll_interval(Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(async move { standby.acquire().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the owner is alive: the standby waits"
    );
    holder.kill().unwrap();
    let killed = Instant::now();
    holder.wait().unwrap();
    let owned = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "took over {took:?} after the kill"
    );
    assert!(!owned.is_lost());
}

#[tokio::test]
async fn a_restarting_primary_waits_for_readiness_before_asking() {
    let dir = tempfile::tempdir().unwrap();
    let secondary = policy(dir.path(), "secondary");
    let owned = secondary.acquire().await.unwrap();
    let (ready_tx, ready_rx) = watch::channel(false);
    let primary = policy(dir.path(), "primary")
        .with_takeover(Takeover::RequestHandover)
        .with_readiness(ready_rx);
    let reclaim = tokio::spawn(async move { primary.acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !owned.is_lost(),
        "a primary that is not ready must not knock out the secondary"
    );
    ready_tx.send(true).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), owned.lost())
        .await
        .unwrap();
    assert!(reason.contains("primary"));
    drop(owned);
    let taken = tokio::time::timeout(Duration::from_secs(5), reclaim)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(taken.holder(), "primary");
}

#[tokio::test]
async fn a_standby_yields_to_a_pending_handover_request() {
    let dir = tempfile::tempdir().unwrap();
    let owner_policy = policy(dir.path(), "old");
    let owned = owner_policy.acquire().await.unwrap();
    let requester = policy(dir.path(), "new").with_takeover(Takeover::RequestHandover);
    let standby = policy(dir.path(), "standby");
    let req = tokio::spawn(async move { requester.acquire().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stby = tokio::spawn(async move { standby.acquire().await });
    owned.lost().await;
    drop(owned);
    let winner = tokio::time::timeout(Duration::from_secs(5), req)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(winner.holder(), "new");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !stby.is_finished(),
        "the standby must not race the requester"
    );
    assert!(
        !winner.is_lost(),
        "no flapping: the standby made no request"
    );
    drop(winner);
    let got = tokio::time::timeout(Duration::from_secs(5), stby)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.holder(), "standby");
}

#[tokio::test]
async fn acquire_is_bounded_by_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let _owned = policy(dir.path(), "a").acquire().await.unwrap();
    let started = Instant::now();
    let err = policy(dir.path(), "b")
        .with_timeout(Duration::from_millis(250))
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A timed-out handover request is withdrawn: the owner is not knocked out later.
    let _ = policy(dir.path(), "c")
        .with_takeover(Takeover::RequestHandover)
        .with_timeout(Duration::from_millis(1))
        .acquire()
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !_owned.is_lost(),
        "a withdrawn request must not be acted on"
    );
}
