//! Stored state that goes backwards under a running instance, with a real
//! etcd and the operator's own tool (`etcdctl`): a snapshot restored with
//! Debian's etcd 3.4 (`etcdctl snapshot restore`, which reuses revisions),
//! and a deleted key. Neither may give a second owner a fence that matches,
//! nor let a process sign or vote below what it already did.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::time::Duration;

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::etcd::{EtcdTowerStorage, EtcdWatermarks};
use slashguard::tower::{StoreMode, TowerStorage};
use slashguard::watermark::{ConsensusKind, Mark, SetMode, SignerGuard};
use slashguard::{Error, NodeKeypair};

/// Long enough that no lease expires and no keep-alive round is due while
/// a test restores etcd: what is under test is the fence compare itself.
const LONG_TTL: Duration = Duration::from_secs(60);

/// Put a dummy key until etcd's next write gets revision `target`: the
/// revision an earlier owner's write had before the restore.
async fn pad_to(raw: &mut etcd_client::Client, target: i64) {
    loop {
        let now = raw.get("/pad", None).await.unwrap();
        let rev = now.header().unwrap().revision();
        assert!(
            rev < target,
            "test set-up: etcd is at revision {rev}, past {target}"
        );
        if rev + 1 == target {
            return;
        }
        raw.put("/pad", "x", None).await.unwrap();
    }
}

async fn mod_revision(raw: &mut etcd_client::Client, key: &str) -> Option<i64> {
    let r = raw.get(key, None).await.unwrap();
    r.kvs().first().map(|kv| kv.mod_revision())
}

/// Save a snapshot, let the test go on, then restore it (stop, restore into
/// a new data directory, start on it) as the README tells operators NOT to
/// do under running instances.
fn stop_and_restore(etcd: &mut EtcdCluster, snapshot: &std::path::Path) {
    etcd.stop(0);
    etcd.restore_snapshot(0, snapshot);
    etcd.restart(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_snapshot_restore_the_old_owner_cannot_store_while_a_standby_owns_the_identity() {
    let mut etcd = EtcdCluster::single();
    let snapshot = etcd.scratch_dir().join("before.db");
    let prefix = "/restore-tower";
    let kp = NodeKeypair::from_seed([61; 32]);
    let node = kp.node_id();
    let mut raw = raw(&etcd).await;
    raw.put("/unrelated", "x", None).await.unwrap();
    etcd.snapshot_save(0, &snapshot);

    // The primary takes the identity and votes, after the snapshot.
    let client_a = client(&etcd, prefix).await;
    let primary = identity(&client_a, node, "primary", LONG_TTL);
    let own_a = primary.take_over().await.unwrap();
    let fence = own_a.fence() as i64;
    let tower_a = EtcdTowerStorage::open(&primary, &own_a).await.unwrap();
    for slot in 10..13 {
        tower_a
            .store(&record(&kp, slot, 1, None), StoreMode::Advance)
            .await
            .unwrap();
    }

    // The operator restores the older snapshot under the running primary.
    stop_and_restore(&mut etcd, &snapshot);
    let mut raw = etcd_util::raw(&etcd).await;
    // The standby's claim lands at exactly the primary's fence revision.
    pad_to(&mut raw, fence).await;
    let client_b = client(&etcd, prefix).await;
    let standby = identity(&client_b, node, "standby", LONG_TTL);
    let own_b = standby.take_over().await.unwrap();
    assert_eq!(
        own_b.fence() as i64,
        fence,
        "test set-up: the standby's claim must reuse the primary's fence revision"
    );

    // The old primary's next vote: its fence revision matches, but the
    // identity is the standby's. It must be refused.
    let next = record(&kp, 13, 1, None);
    let stale = retry_unavailable(|| tower_a.store(&next, StoreMode::Advance)).await;
    match stale {
        Err(Error::Fenced { reason, .. }) => {
            assert!(reason.contains("standby"), "{reason}");
        }
        other => panic!("the old owner stored while the standby owns the identity: {other:?}"),
    }
    assert!(own_a.is_lost(), "the refusal marks the ownership lost");
    // Nothing of the old owner's reached etcd; the standby stores.
    let tower_b = EtcdTowerStorage::open(&standby, &own_b).await.unwrap();
    assert_eq!(tower_b.load().await.unwrap(), None);
    tower_b
        .store(&record(&kp, 14, 2, None), StoreMode::Advance)
        .await
        .unwrap();
    // The old owner's release must not delete the standby's claim either.
    primary.release(own_a).await.unwrap();
    let owner = standby.status().await.unwrap().expect("still owned");
    assert_eq!(owner.instance, "standby");
    assert!(!own_b.is_lost());
}

/// Retry while etcd (just restarted) answers `Unavailable`.
async fn retry_unavailable<T, F, Fut>(mut f: F) -> slashguard::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = slashguard::Result<T>>,
{
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Err(e) if e.is_unavailable() && std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_snapshot_restore_a_stale_watermark_compare_and_set_is_refused() {
    let mut etcd = EtcdCluster::single();
    let snapshot = etcd.scratch_dir().join("before.db");
    let prefix = "/restore-wm";
    let key = wm_key(62, ConsensusKind::Attestation);
    let wm_a = EtcdWatermarks::new(client(&etcd, prefix).await);
    let path = wm_a.keys().watermark(&key);
    wm_a.authorize_one(&request(key, 90, 0, b"a90"))
        .await
        .unwrap();
    etcd.snapshot_save(0, &snapshot);
    // Signer A signs X at (100, 0), after the snapshot.
    wm_a.authorize_one(&request(key, 100, 0, b"X"))
        .await
        .unwrap();
    let mut raw = raw(&etcd).await;
    let a_rev = mod_revision(&mut raw, &path).await.unwrap();

    stop_and_restore(&mut etcd, &snapshot);
    let mut raw = etcd_util::raw(&etcd).await;
    pad_to(&mut raw, a_rev).await;
    // Signer B (another host sharing the keys) sees (90, 0) and signs Y at
    // (100, 0): its write reuses the revision of A's.
    let wm_b = EtcdWatermarks::new(client(&etcd, prefix).await);
    wm_b.authorize_one(&request(key, 100, 0, b"Y"))
        .await
        .unwrap();
    assert_eq!(
        mod_revision(&mut raw, &path).await,
        Some(a_rev),
        "test set-up: B's entry must reuse the revision of A's"
    );

    // A's identical re-request of X would be a repeat against its cached
    // entry at that revision: a second payload at (100, 0). Refused.
    let x = request(key, 100, 0, b"X");
    let again = retry_unavailable(|| wm_a.authorize_one(&x)).await;
    match again {
        Err(e) if e.is_refusal() => {}
        other => panic!("A signed X at (100, 0) after B signed Y there: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_watermark_key_is_refused_not_believed() {
    let etcd = EtcdCluster::single();
    let prefix = "/deleted-wm";
    let key = wm_key(63, ConsensusKind::Block);
    let wm = EtcdWatermarks::new(client(&etcd, prefix).await);
    let path = wm.keys().watermark(&key);
    wm.authorize_one(&request(key, 100, 0, b"block 100"))
        .await
        .unwrap();

    etcd.etcdctl(0, &["del", &path]);

    let err = wm
        .authorize_one(&request(key, 90, 0, b"block 90"))
        .await
        .expect_err("authorized (90, 0) after (100, 0) because the key was deleted");
    match &err {
        Error::Regressed {
            what,
            floor,
            found,
            recovery,
        } => {
            assert!(what.contains(&path), "{what}");
            assert!(floor.contains("100"), "{floor}");
            assert!(found.contains("missing"), "{found}");
            assert!(
                recovery.contains("slashguard watermark set-level"),
                "{recovery}"
            );
        }
        other => panic!("not a regression: {other:?}"),
    }
    assert!(err.is_refusal());
    // Above the floor too, until an operator repairs the key: the store is
    // not trusted.
    assert!(matches!(
        wm.authorize_one(&request(key, 101, 0, b"block 101")).await,
        Err(Error::Regressed { .. })
    ));
    assert!(matches!(
        wm.watermark(&key).await,
        Err(Error::Regressed { .. })
    ));
    assert!(matches!(
        wm.watermarks().await,
        Err(Error::Regressed { .. })
    ));
    assert!(
        etcd.etcdctl(0, &["get", &path]).trim().is_empty(),
        "nothing was written"
    );

    // The recovery: an operator raises the key (another process).
    let operator = EtcdWatermarks::new(client(&etcd, prefix).await);
    operator
        .set_marks(&[(key, Mark::level(110))], SetMode::RaiseOnly)
        .await
        .unwrap();
    assert!(wm
        .authorize_one(&request(key, 100, 0, b"block 100"))
        .await
        .unwrap_err()
        .is_refusal());
    wm.authorize_one(&request(key, 111, 0, b"block 111"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_watermark_value_is_refused_not_believed() {
    let etcd = EtcdCluster::single();
    let prefix = "/older-wm";
    let key = wm_key(64, ConsensusKind::Preattestation);
    let wm = EtcdWatermarks::new(client(&etcd, prefix).await);
    let path = wm.keys().watermark(&key);
    wm.authorize_one(&request(key, 90, 0, b"p90"))
        .await
        .unwrap();
    let mut raw = raw(&etcd).await;
    let old = raw.get(path.as_str(), None).await.unwrap().kvs()[0]
        .value()
        .to_vec();
    wm.authorize_one(&request(key, 100, 0, b"p100"))
        .await
        .unwrap();
    // A backup of the key put back by hand.
    raw.put(path.as_str(), old, None).await.unwrap();
    assert!(matches!(
        wm.authorize_one(&request(key, 95, 0, b"p95")).await,
        Err(Error::Regressed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tower_record_is_refused_not_believed() {
    let etcd = EtcdCluster::single();
    let prefix = "/deleted-tower";
    let kp = NodeKeypair::from_seed([65; 32]);
    let node = kp.node_id();
    let client = client(&etcd, prefix).await;
    let id = identity(&client, node, "validator", LONG_TTL);
    let own = id.take_over().await.unwrap();
    let tower = EtcdTowerStorage::open(&id, &own).await.unwrap();
    tower
        .store(&record(&kp, 100, 1, Some(50)), StoreMode::Advance)
        .await
        .unwrap();

    etcd.etcdctl(0, &["del", &client.keys().record(&node)]);

    match tower.load().await {
        Err(Error::Regressed {
            found, recovery, ..
        }) => {
            assert!(found.contains("no tower"), "{found}");
            assert!(recovery.contains("slashguard tower import"), "{recovery}");
        }
        other => panic!("a deleted tower was believed: {other:?}"),
    }
    assert!(matches!(
        tower
            .store(&record(&kp, 90, 2, Some(50)), StoreMode::Advance)
            .await,
        Err(Error::Regressed { .. })
    ));
    assert!(
        etcd.etcdctl(0, &["get", &client.keys().record(&node)])
            .trim()
            .is_empty(),
        "nothing was written"
    );
    assert!(!own.is_lost(), "a regression is not a loss of ownership");
}
