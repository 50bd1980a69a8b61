//! The etcd backends against one real etcd node: conformance, fencing and
//! takeover, damaged values, deadlines, and an etcd restart under the same
//! client objects.

#[path = "common/conformance.rs"]
mod conformance;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::etcd::{
    AcquireMode, EtcdFailover, EtcdTowerStorage, EtcdWatermarks, OwnershipOptions,
};
use slashguard::tower::{StoreMode, TowerStorage, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{encode_entry, ConsensusKind, Mark, SetMode, SignerGuard, Watermark};
use slashguard::{Error, FailoverPolicy, FormatError, NodeKeypair};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_backends_meet_the_contract() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/conformance").await;
    let kp = NodeKeypair::generate();
    let id = identity(&client, kp.node_id(), "a", Duration::from_secs(5));
    let own = id.take_over().await.unwrap();
    let storage = EtcdTowerStorage::open(&id, &own).await.unwrap();
    conformance::tower_storage_contract(&storage, &kp).await;
    // What was acknowledged is what a new owner reads.
    let last = storage.load().await.unwrap();
    let own2 = id.take_over().await.unwrap();
    let reopened = EtcdTowerStorage::open(&id, &own2).await.unwrap();
    assert_eq!(reopened.load().await.unwrap(), last);
    let stale = storage
        .store(&record(&kp, 30, 1, None), StoreMode::Force)
        .await;
    assert!(
        matches!(stale, Err(Error::Fenced { .. })),
        "superseded: {stale:?}"
    );

    let guard = Arc::new(EtcdWatermarks::new(client.clone()));
    conformance::signer_guard_contract(guard.clone(), 8).await;

    // Durable and shared: a second handle with an empty cache sees the same
    // marks, and one with a stale cache is corrected by the compare.
    let other = EtcdWatermarks::new(client.clone());
    assert_eq!(
        other.watermarks().await.unwrap(),
        guard.watermarks().await.unwrap()
    );
    let k = wm_key(9, ConsensusKind::Preattestation);
    guard.authorize_one(&request(k, 10, 0, b"x")).await.unwrap();
    other.watermark(&k).await.unwrap(); // caches level 10
    guard.authorize_one(&request(k, 20, 0, b"x")).await.unwrap();
    let stale = other.authorize_one(&request(k, 15, 0, b"y")).await;
    assert!(matches!(stale, Err(Error::Refused(_))), "{stale:?}");
    assert_eq!(
        other.watermark(&k).await.unwrap().unwrap().mark,
        Mark::level(20)
    );
}

#[tokio::test]
async fn take_over_fences_the_previous_owner_and_names_it() {
    let etcd = EtcdCluster::single();
    let kp = NodeKeypair::generate();
    let a = identity(
        &client(&etcd, "/fence").await,
        kp.node_id(),
        "host-a",
        Duration::from_secs(5),
    );
    let b = identity(
        &client(&etcd, "/fence").await,
        kp.node_id(),
        "host-b",
        Duration::from_secs(5),
    );

    let own_a = a.take_over().await.unwrap();
    let store_a = EtcdTowerStorage::open(&a, &own_a).await.unwrap();
    let guard_a = VoteGuard::new(store_a, kp)
        .unwrap()
        .with_vote_account(VOTE_ACCOUNT);
    let update = |slot| TowerUpdate {
        vote: VoteRef {
            slot,
            hash: [7; 32],
        },
        root: None,
        tower: vec![1; 64],
    };
    let m1 = vote_message(guard_a.node(), &update(1));
    guard_a.vote(update(1), &m1).await.unwrap();
    let status = a.status().await.unwrap().unwrap();
    assert_eq!(status.instance, "host-a");
    assert_eq!(status.fence, own_a.fence());
    assert!(status.ttl_left.is_some());

    let t = Instant::now();
    let own_b = b.take_over().await.unwrap();
    assert!(own_b.fence() > own_a.fence());
    let reason = tokio::time::timeout(Duration::from_secs(2), own_a.lost())
        .await
        .expect("the old owner learns of the takeover at once (watch)");
    assert!(reason.contains("host-b"), "{reason}");
    println!("loss noticed {:?} after the takeover", t.elapsed());

    let m2 = vote_message(guard_a.node(), &update(2));
    match guard_a.vote(update(2), &m2).await {
        Err(Error::Fenced { reason, .. }) => assert!(reason.contains("host-b"), "{reason}"),
        other => panic!("old owner voted: {other:?}"),
    }
    // The new owner reads the acknowledged tower only after its claim.
    let store_b = EtcdTowerStorage::open(&b, &own_b).await.unwrap();
    assert_eq!(
        store_b.load().await.unwrap().unwrap().last_vote_slot(),
        Some(1)
    );
    assert_eq!(b.status().await.unwrap().unwrap().instance, "host-b");
    assert!(!own_b.is_lost());

    // A lost ownership opens nothing; one of another node is not accepted.
    let reopened = EtcdTowerStorage::open(&a, &own_a).await;
    assert!(
        matches!(reopened, Err(Error::Fenced { .. })),
        "{reopened:?}"
    );
    let stranger = identity(
        b.client(),
        NodeKeypair::generate().node_id(),
        "x",
        Duration::from_secs(5),
    );
    let foreign = EtcdTowerStorage::open(&stranger, &own_b).await;
    assert!(matches!(foreign, Err(Error::Invalid(_))), "{foreign:?}");
    assert!(matches!(
        stranger.release(own_b).await,
        Err(Error::Invalid(_))
    ));
}

/// The fence compare alone stops the old owner: its keep-alive task cannot
/// run between the takeover and its store (current-thread runtime, blocked
/// while the other instance takes over on another thread).
#[tokio::test(flavor = "current_thread")]
async fn the_fence_compare_refuses_a_store_the_loss_signal_did_not_stop() {
    let etcd = EtcdCluster::single();
    let kp = NodeKeypair::generate();
    let node = kp.node_id();
    let a = identity(
        &client(&etcd, "/cmp").await,
        node,
        "host-a",
        Duration::from_secs(5),
    );
    let own_a = a.take_over().await.unwrap();
    let store_a = EtcdTowerStorage::open(&a, &own_a).await.unwrap();
    store_a
        .store(&record(&kp, 1, 1, None), StoreMode::Advance)
        .await
        .unwrap();

    let config = config(&etcd, "/cmp");
    let (fence_tx, fence_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = slashguard::etcd::EtcdClient::connect(config).await.unwrap();
            let b = identity(&c, node, "host-b", Duration::from_secs(5));
            let own_b = b.take_over().await.unwrap();
            fence_tx.send(own_b.fence()).unwrap();
            let _ = done_rx.recv();
            drop(own_b);
        });
    });
    // Blocks this runtime: a's keep-alive task does not run meanwhile.
    let fence_b = fence_rx.recv().unwrap();
    assert!(!store_a.is_lost(), "the loss cannot be known yet");
    match store_a
        .store(&record(&kp, 2, 1, None), StoreMode::Advance)
        .await
    {
        Err(Error::Fenced { reason, .. }) => {
            assert!(reason.contains("host-b"), "{reason}");
            assert!(reason.contains(&fence_b.to_string()), "{reason}");
        }
        other => panic!("stored without the fence: {other:?}"),
    }
    assert!(own_a.is_lost());
    done_tx.send(()).unwrap();
    other.join().unwrap();
}

#[tokio::test]
async fn a_standby_takes_over_when_the_owner_dies_or_releases() {
    let etcd = EtcdCluster::single();
    let node = NodeKeypair::generate().node_id();
    let ttl = Duration::from_secs(2);
    let a = identity(&client(&etcd, "/auto").await, node, "primary", ttl);
    let b = EtcdFailover::new(
        identity(&client(&etcd, "/auto").await, node, "standby", ttl),
        AcquireMode::WhenFree(Duration::from_secs(20)),
    );

    // A clean release hands over at once.
    let own_a = a.take_over().await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            let own = b.acquire().await.unwrap();
            (own, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the standby waits while the primary owns it"
    );
    let released = Instant::now();
    a.release(own_a).await.unwrap();
    let (own_b, acquired) = waiting.await.unwrap();
    assert!(
        acquired - released < Duration::from_millis(800),
        "{:?}",
        acquired - released
    );
    b.release(own_b).await.unwrap();
    assert!(a.status().await.unwrap().is_none());

    // A dead owner (its handle gone, no keep-alive) loses it when the lease
    // expires; nobody has to act.
    let own_a = a.take_over().await.unwrap();
    let died = Instant::now();
    drop(own_a);
    let own_b = b.acquire().await.unwrap();
    let waited = died.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "took over a live lease after {waited:?}"
    );
    assert!(waited < ttl + Duration::from_secs(2), "{waited:?}");
    let status = b.identity().status().await.unwrap().unwrap();
    assert_eq!(status.instance, "standby");
    assert_eq!(status.fence, own_b.fence());

    // acquire_when_free gives up with a typed error naming the owner.
    let c = identity(&client(&etcd, "/auto").await, node, "third", ttl);
    match c.acquire_when_free(Duration::from_millis(300)).await {
        Err(Error::Unavailable { detail, .. }) => assert!(detail.contains("standby"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

/// Cut off from etcd, the holder declares the ownership lost before the
/// server can expire its lease, and stores fail from then on.
#[tokio::test]
async fn a_partitioned_holder_knows_it_lost_before_its_lease_expires_on_the_server() {
    let etcd = EtcdCluster::single();
    let upstream = format!("127.0.0.1:{}", etcd.client_port(0))
        .parse()
        .unwrap();
    let proxy = tcp_proxy::TcpProxy::start(upstream).await;
    let config = slashguard::etcd::EtcdConfig::builder([proxy.endpoint()])
        .key_prefix("/partition")
        .request_deadline(RELAXED)
        .build()
        .unwrap();
    let a_client = slashguard::etcd::EtcdClient::connect(config).await.unwrap();
    let kp = NodeKeypair::generate();
    let ttl = Duration::from_secs(2);
    let a = identity(&a_client, kp.node_id(), "host-a", ttl);
    let own_a = a.take_over().await.unwrap();
    let storage = EtcdTowerStorage::open(&a, &own_a).await.unwrap();
    storage
        .store(&record(&kp, 1, 1, None), StoreMode::Advance)
        .await
        .unwrap();
    // A few keep-alive rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!own_a.is_lost());

    let b = identity(
        &client(&etcd, "/partition").await,
        kp.node_id(),
        "host-b",
        ttl,
    );
    proxy.cut();
    let cut = Instant::now();
    let (lost, reason) = tokio::time::timeout(Duration::from_secs(5), async {
        let r = own_a.lost().await;
        (Instant::now(), r)
    })
    .await
    .expect("a partitioned holder notices");
    let expired = eventually(
        Duration::from_secs(10),
        "server-side lease expiry",
        || async { b.status().await.unwrap().is_none().then(Instant::now) },
    )
    .await;
    println!(
        "cut at 0, holder lost at {:?}, server expired the lease at about {:?}",
        lost - cut,
        expired - cut
    );
    assert!(
        lost < expired,
        "the holder learned of the loss after the server expired the lease"
    );
    assert!(reason.contains("keep-alive"), "{reason}");
    let r = storage
        .store(&record(&kp, 2, 1, None), StoreMode::Advance)
        .await;
    assert!(matches!(r, Err(Error::Fenced { .. })), "{r:?}");

    // Even once reachable again, the lost ownership stays lost; a new one
    // must be acquired (its fence is newer).
    proxy.heal();
    let r = storage
        .store(&record(&kp, 2, 1, None), StoreMode::Advance)
        .await;
    assert!(matches!(r, Err(Error::Fenced { .. })), "{r:?}");
    let own_a2 = eventually(
        Duration::from_secs(5),
        "re-acquire after healing",
        || async { a.acquire_when_free(Duration::from_secs(1)).await.ok() },
    )
    .await;
    assert!(own_a2.fence() > own_a.fence());
    let storage2 = EtcdTowerStorage::open(&a, &own_a2).await.unwrap();
    assert_eq!(
        storage2.load().await.unwrap().unwrap().last_vote_slot(),
        Some(1)
    );
}

#[tokio::test]
async fn damaged_or_foreign_values_are_typed_errors_and_never_overwritten() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/dmg").await;
    let mut raw = raw(&etcd).await;
    let keys = client.keys();
    let kp = NodeKeypair::generate();
    let other = NodeKeypair::generate();
    let node = kp.node_id();

    // Tower record.
    let id = identity(&client, node, "a", Duration::from_secs(5));
    let own = id.take_over().await.unwrap();
    let good = record(&kp, 5, 1, None).encode();
    let mut bad_sig = good.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    type Expect = fn(&FormatError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("garbage", b"garbage!".to_vec(), |p| {
            matches!(p, FormatError::BadMagic { .. })
        }),
        ("truncated", good[..good.len() - 10].to_vec(), |p| {
            matches!(p, FormatError::Truncated { .. })
        }),
        ("foreign node", record(&other, 5, 1, None).encode(), |p| {
            matches!(p, FormatError::ForeignNode { .. })
        }),
        ("bad signature", bad_sig, |p| {
            matches!(p, FormatError::BadSignature { .. })
        }),
        ("empty", Vec::new(), |p| matches!(p, FormatError::Empty)),
    ];
    for (what, bytes, expect) in cases {
        raw.put(keys.record(&node), bytes.clone(), None)
            .await
            .unwrap();
        let storage = EtcdTowerStorage::open(&id, &own).await.unwrap();
        match storage.load().await {
            Err(Error::Corrupt { what: key, problem }) => {
                assert!(expect(&problem), "{what}: {problem:?}");
                assert_eq!(key, keys.record(&node));
            }
            other => panic!("{what}: {other:?}"),
        }
        let r = storage
            .store(&record(&kp, 6, 1, None), StoreMode::Advance)
            .await;
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{what}: {r:?}");
        let kept = raw.get(keys.record(&node), None).await.unwrap();
        assert_eq!(kept.kvs()[0].value(), &bytes[..], "{what}: overwritten");
        // Operator recovery may overwrite it on purpose.
        storage
            .store(&record(&kp, 6, 1, None), StoreMode::Force)
            .await
            .unwrap();
        assert_eq!(
            storage.load().await.unwrap().unwrap().last_vote_slot(),
            Some(6)
        );
    }

    // Watermarks.
    let guard = EtcdWatermarks::new(client.clone());
    let k = wm_key(1, ConsensusKind::Attestation);
    let neighbour = wm_key(2, ConsensusKind::Attestation);
    let entry = encode_entry(
        &k,
        &Watermark {
            mark: Mark::level(9),
            payload_hash: None,
            signature: None,
        },
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01garbage".to_vec()),
        ("truncated", entry[..40].to_vec()),
        (
            "another key's entry",
            encode_entry(
                &neighbour,
                &Watermark {
                    mark: Mark::level(1),
                    payload_hash: None,
                    signature: None,
                },
            )
            .to_vec(),
        ),
        ("flipped bit", {
            let mut e = entry;
            e[33] ^= 4;
            e.to_vec()
        }),
    ];
    for (what, bytes) in cases {
        raw.put(keys.watermark(&k), bytes.clone(), None)
            .await
            .unwrap();
        let r = guard.authorize_one(&request(k, 100, 0, b"p")).await;
        assert!(
            matches!(&r, Err(Error::Corrupt { what: key, .. }) if *key == keys.watermark(&k)),
            "{what}: {r:?}"
        );
        assert!(
            matches!(guard.watermark(&k).await, Err(Error::Corrupt { .. })),
            "{what}"
        );
        assert!(
            matches!(guard.watermarks().await, Err(Error::Corrupt { .. })),
            "{what}"
        );
        assert!(matches!(
            guard
                .set_marks(&[(k, Mark::level(200))], SetMode::RaiseOnly)
                .await,
            Err(Error::Corrupt { .. })
        ));
        let kept = raw.get(keys.watermark(&k), None).await.unwrap();
        assert_eq!(kept.kvs()[0].value(), &bytes[..], "{what}: overwritten");
        guard
            .set_marks(&[(k, Mark::level(50))], SetMode::Force)
            .await
            .unwrap();
        assert_eq!(
            guard.watermark(&k).await.unwrap().unwrap().mark,
            Mark::level(50)
        );
    }

    // Owner key: no takeover over something that is not our claim.
    drop(own);
    let id2 = identity(&client, other.node_id(), "a", Duration::from_secs(5));
    for bytes in [b"garbage".to_vec(), b"sgOW".to_vec()] {
        raw.put(keys.owner(&other.node_id()), bytes.clone(), None)
            .await
            .unwrap();
        assert!(matches!(id2.take_over().await, Err(Error::Corrupt { .. })));
        assert!(matches!(
            id2.acquire_when_free(Duration::from_millis(200)).await,
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(id2.status().await, Err(Error::Corrupt { .. })));
        let kept = raw.get(keys.owner(&other.node_id()), None).await.unwrap();
        assert_eq!(kept.kvs()[0].value(), &bytes[..]);
    }
    // A claim of node A planted under node B's owner key is foreign.
    let own_a = id.take_over().await.unwrap();
    let claim_a = raw.get(keys.owner(&node), None).await.unwrap().kvs()[0]
        .value()
        .to_vec();
    raw.put(keys.owner(&other.node_id()), claim_a, None)
        .await
        .unwrap();
    match id2.take_over().await {
        Err(Error::Corrupt {
            problem: FormatError::ForeignNode { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    drop(own_a);
}

#[tokio::test]
async fn a_hung_or_dead_etcd_gives_unavailable_within_the_deadline_and_the_same_objects_recover() {
    let mut etcd = EtcdCluster::single();
    // The default deadline: it is what is under test.
    let client = strict_client(&etcd, "/outage").await;
    let kp = NodeKeypair::generate();
    // Long enough to outlive the outages below (the holder counts the lease
    // as gone after TTL - TTL/4 without an answered keep-alive).
    let ttl = Duration::from_secs(8);
    let id = identity(&client, kp.node_id(), "a", ttl);
    let outage = Instant::now();
    let own = retry("take over", || id.take_over()).await;
    let storage = retry("open", || EtcdTowerStorage::open(&id, &own)).await;
    let guard = EtcdWatermarks::new(client.clone());
    let k = wm_key(3, ConsensusKind::Block);
    let mut slot = 0;
    let mut level = 1;
    store_until_ok(&storage, &kp, &mut slot, "first store").await;
    let first = request(k, level, 0, b"b");
    retry("first authorization", || guard.authorize_one(&first)).await;

    let bound = within_deadline();
    let check_unavailable = |what: &str, r: Result<(), Error>, took: Duration| {
        assert!(matches!(r, Err(Error::Unavailable { .. })), "{what}: {r:?}");
        assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
    };

    // Hung: the process is stopped, connections stay open, nothing answers.
    etcd.pause(0);
    for _ in 0..3 {
        slot += 1;
        level += 1;
        let t = Instant::now();
        let r = storage
            .store(&record(&kp, slot, 1, None), StoreMode::Advance)
            .await;
        check_unavailable("store (hung)", r.map(|_| ()), t.elapsed());
        let t = Instant::now();
        let r = guard.authorize_one(&request(k, level, 0, b"b")).await;
        check_unavailable("authorize (hung)", r.map(|_| ()), t.elapsed());
        let t = Instant::now();
        let r = storage.load().await;
        check_unavailable("load (hung)", r.map(|_| ()), t.elapsed());
    }
    etcd.resume(0);
    let stored = store_until_ok(&storage, &kp, &mut slot, "store after resume").await;
    assert_eq!(stored.fence, own.fence());

    // Dead: connections refused.
    etcd.kill(0);
    for _ in 0..3 {
        slot += 1;
        level += 1;
        let t = Instant::now();
        let r = storage
            .store(&record(&kp, slot, 1, None), StoreMode::Advance)
            .await;
        check_unavailable("store (dead)", r.map(|_| ()), t.elapsed());
        let t = Instant::now();
        let r = guard.authorize_one(&request(k, level, 0, b"b")).await;
        check_unavailable("authorize (dead)", r.map(|_| ()), t.elapsed());
    }
    let t = Instant::now();
    let r = identity(&client, kp.node_id(), "b", ttl).take_over().await;
    assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    assert!(t.elapsed() <= bound * 2, "take over took {:?}", t.elapsed());

    // Back on the same ports and data: the same objects work again, the
    // ownership survived (its keep-alive stream and watch were re-created).
    etcd.restart(0);
    store_until_ok(&storage, &kp, &mut slot, "store after restart").await;
    level += 1;
    eventually(
        Duration::from_secs(5),
        "authorize after restart",
        || async { guard.authorize_one(&request(k, level, 0, b"b")).await.ok() },
    )
    .await;
    println!("outages and restart took {:?}", outage.elapsed());
    // Longer than the local validity of one renewal (TTL - TTL/4): only a
    // keep-alive working again after the restart keeps the ownership.
    tokio::time::sleep(ttl - ttl / 4 + Duration::from_millis(500)).await;
    assert!(!own.is_lost(), "lost: {:?}", own.lost_reason());
    store_until_ok(&storage, &kp, &mut slot, "store after the keep-alive test").await;
    let status = retry("status", || id.status()).await.unwrap();
    assert!(status.ttl_left.is_some());

    // And the restarted etcd's events reach the loss signal again.
    let b = identity(&client, kp.node_id(), "host-b", ttl);
    let _own_b = retry("take over", || b.take_over()).await;
    let reason = tokio::time::timeout(Duration::from_secs(3), own.lost())
        .await
        .unwrap();
    assert!(reason.contains("host-b"), "{reason}");
}

async fn store_until_ok(
    storage: &EtcdTowerStorage,
    kp: &NodeKeypair,
    slot: &mut u64,
    what: &str,
) -> slashguard::tower::StoreReceipt {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        *slot += 1;
        match storage
            .store(&record(kp, *slot, 1, None), StoreMode::Advance)
            .await
        {
            Ok(r) => return r,
            Err(e) => {
                assert!(e.is_unavailable() && Instant::now() < end, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn ownership_options_are_checked() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/opts").await;
    let node = NodeKeypair::generate().node_id();
    let bad = [
        OwnershipOptions::new(""),
        OwnershipOptions::new("x".repeat(256)),
        OwnershipOptions::new("a")
            .lease_ttl(Duration::from_secs(2))
            .safety_margin(Duration::from_secs(3)),
        OwnershipOptions::new("a")
            .lease_ttl(Duration::from_secs(2))
            .keep_alive_interval(Duration::from_secs(2)),
    ];
    for options in bad {
        let r = slashguard::etcd::EtcdIdentity::new(client.clone(), node, options.clone());
        assert!(matches!(r, Err(Error::Config(_))), "{options:?}");
    }
}

mod common;

/// Issue 11 item 2 on etcd: the advance stores the signature with the
/// mark in the same transaction; a repeat returns it (also through a new
/// handle with an empty cache, as after a restart), and a v1 entry (no
/// signature, written by an earlier version) is read without loss.
#[tokio::test]
async fn etcd_keeps_the_released_signature_and_reads_v1_entries() {
    use common::tezos::Consensus;
    use common::NonDeterministicKey;
    use slashguard::watermark::{Curve, PayloadHash, RefusalReason, WatermarkKey};
    use slashguard::{GuardedSigner, Refusal, Signer};

    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/sigs").await;
    let key = NonDeterministicKey::new(7, Curve::Bls);
    let k = WatermarkKey {
        chain: slashguard::watermark::ChainId([0x7a, 0x06, 0xa7, 0x70]),
        key: key.key_hash(),
        kind: ConsensusKind::Attestation,
    };
    let signer = GuardedSigner::new(EtcdWatermarks::new(client.clone()), key);
    let bytes = Consensus::new(k.chain, 700, 0, [1; 32]).attestation(Curve::Bls);
    let first = signer.sign(&bytes).await.unwrap();
    let again = signer.sign(&bytes).await.unwrap();
    assert_eq!(again.signature, first.signature);
    let fresh = GuardedSigner::new(
        EtcdWatermarks::new(client.clone()),
        NonDeterministicKey::new(7, Curve::Bls),
    );
    let after_restart = fresh.sign(&bytes).await.unwrap();
    assert_eq!(after_restart.signature, first.signature);
    let stored = fresh.guard().watermark(&k).await.unwrap().unwrap();
    assert_eq!(
        stored.signature.map(|s| s.as_bytes().to_vec()),
        Some(first.signature.clone())
    );

    // A v1 entry, written by hand: mark and payload hash, no signature.
    let v2 = encode_entry(&k, &stored);
    let mut v1 = v2[..72].to_vec();
    v1[4] = 1;
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let mut raw = raw(&etcd).await;
    raw.put(client.keys().watermark(&k), v1, None)
        .await
        .unwrap();
    let read = EtcdWatermarks::new(client.clone());
    let w = read.watermark(&k).await.unwrap().unwrap();
    assert_eq!(
        (w.mark, w.payload_hash, w.signature),
        (Mark::level(700), Some(PayloadHash::of(&bytes)), None)
    );
    // Its repeat: refused for this non-deterministic signer.
    let nd = GuardedSigner::new(read, NonDeterministicKey::new(7, Curve::Bls));
    match nd.sign(&bytes).await {
        Err(Error::Refused(Refusal::Watermark(w))) => {
            assert_eq!(w.reason, RefusalReason::RepeatWithoutSignature)
        }
        other => panic!("{other:?}"),
    }
    // The next advance writes a v2 entry again.
    let next = Consensus::new(k.chain, 701, 0, [1; 32]).attestation(Curve::Bls);
    let s = nd.sign(&next).await.unwrap();
    let w = nd.guard().watermark(&k).await.unwrap().unwrap();
    assert_eq!(
        w.signature.map(|x| x.as_bytes().to_vec()),
        Some(s.signature)
    );
}

/// A signer with a watermark of its own (as a Ledger or a TezSign): what
/// it signs cannot be taken back, so it must never be asked for bytes the
/// shared store already refuses. Counts how often it is asked.
struct OwnWatermarkSigner {
    key: slashguard::Ed25519Signer,
    asked: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl slashguard::Signer for OwnWatermarkSigner {
    fn key_hash(&self) -> slashguard::watermark::KeyHash {
        self.key.key_hash()
    }
    async fn sign(&self, payload: &[u8]) -> slashguard::Result<Vec<u8>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.key.sign(payload).await
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn has_own_watermark(&self) -> bool {
        true
    }
}

/// Two hosts on one etcd, each with its own device holding the key: the
/// host whose memory of a watermark is stale (it signed at 50, the other
/// host at 110 since) reads etcd before asking its device, so the device
/// is asked neither below the shared mark nor for a repeat (it answers
/// with the other host's stored signature).
#[tokio::test]
async fn a_device_is_not_asked_for_what_etcd_already_refuses_or_holds() {
    use common::tezos::Consensus;
    use slashguard::watermark::{ChainId, Curve};
    use slashguard::{GuardedSigner, Refusal};
    use std::sync::atomic::Ordering::SeqCst;

    let etcd = EtcdCluster::single();
    let device = |seed| {
        Arc::new(OwnWatermarkSigner {
            key: slashguard::Ed25519Signer::from_seed(seed),
            asked: Default::default(),
        })
    };
    let (dev_a, dev_b) = (device([3; 32]), device([3; 32]));
    let client_b = client(&etcd, "/devices").await;
    let guard_a = Arc::new(EtcdWatermarks::new(client(&etcd, "/devices").await));
    let guard_b = Arc::new(EtcdWatermarks::new(client_b.clone()));
    let host_a = GuardedSigner::new(guard_a.clone(), dev_a.clone());
    let host_b = GuardedSigner::new(guard_b.clone(), dev_b.clone());
    let chain = ChainId([0x7a, 0x06, 0xa7, 0x70]);
    let att = |level, fill| Consensus::new(chain, level, 0, [fill; 32]).attestation(Curve::Ed25519);

    host_b.sign(&att(50, 0xb2)).await.unwrap();
    let by_a = host_a.sign(&att(110, 0xa1)).await.unwrap();
    assert_eq!((dev_a.asked.load(SeqCst), dev_b.asked.load(SeqCst)), (1, 1));

    // Host b still remembers 50; etcd holds 110.
    for data in [att(105, 0xb2), att(110, 0xb2), att(50, 0xb2)] {
        match host_b.sign(&data).await {
            Err(Error::Refused(Refusal::Watermark(_))) => {}
            other => panic!("{other:?}"),
        }
    }
    let repeat = host_b.sign(&att(110, 0xa1)).await.unwrap();
    assert_eq!(repeat.signature, by_a.signature, "the stored signature");
    assert_eq!(dev_b.asked.load(SeqCst), 1, "host b's device never asked");
    host_b.sign(&att(111, 0xb2)).await.unwrap();
    assert_eq!(dev_b.asked.load(SeqCst), 2);

    // What host b has just read is final for its device: a damaged
    // attestation entry is refused before the device is asked, and a
    // repair from host a is seen at the next request.
    let wkey = |kind| slashguard::watermark::WatermarkKey {
        chain,
        key: host_b.key_hash(),
        kind,
    };
    let mut etcd_raw = raw(&etcd).await;
    let ka = wkey(ConsensusKind::Attestation);
    let (path_a, rot) = (client_b.keys().watermark(&ka), b"bit rot".to_vec());
    etcd_raw
        .put(path_a.clone(), rot.clone(), None)
        .await
        .unwrap();
    match host_b.sign(&att(112, 0xb2)).await {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(dev_b.asked.load(SeqCst), 2, "not asked over damage");
    guard_a
        .set_marks(&[(ka, Mark::level(115))], SetMode::Force)
        .await
        .unwrap();
    host_b.sign(&att(116, 0xb2)).await.unwrap();
    assert_eq!(dev_b.asked.load(SeqCst), 3);
    // A deleted entry, after host b has seen 116: a regression, refused
    // before the device is asked.
    etcd_raw.delete(path_a, None).await.unwrap();
    match host_b.sign(&att(105, 0xc3)).await {
        Err(Error::Regressed { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(dev_b.asked.load(SeqCst), 3, "not asked over a regression");

    // The cache-only precheck never makes a remembered damage final: a
    // software key on host b's guard meets a damaged preattestation entry,
    // an operator repairs it from host a, and host b signs above it.
    let soft = GuardedSigner::new(
        guard_b.clone(),
        slashguard::Ed25519Signer::from_seed([3; 32]),
    );
    let pre = |level| Consensus::new(chain, level, 0, [0xb2; 32]).preattestation(Curve::Ed25519);
    let k = wkey(ConsensusKind::Preattestation);
    assert_eq!(k.key, soft.key_hash());
    etcd_raw
        .put(client_b.keys().watermark(&k), rot, None)
        .await
        .unwrap();
    match soft.sign(&pre(10)).await {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("{other:?}"),
    }
    guard_a
        .set_marks(&[(k, Mark::level(20))], SetMode::Force)
        .await
        .unwrap();
    soft.sign(&pre(21)).await.unwrap();
    match soft.sign(&pre(20)).await {
        Err(Error::Refused(Refusal::Watermark(_))) => {}
        other => panic!("{other:?}"),
    }
}
