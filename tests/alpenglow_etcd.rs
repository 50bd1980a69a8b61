//! The Alpenglow vote history in a real etcd: the storage contract, one
//! transaction per event, takeover fencing (the `set-identity` sequence
//! without copying a file), and damaged values.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::time::Duration;

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, AlpenglowRefusal, Check, HistoryStorage, HistoryUpdate,
    RuleMode, Vote, VoteHistory, VoteKind,
};
use slashguard::etcd::EtcdVoteHistory;
use slashguard::{Error, NodeKeypair, Refusal};

const SV: u16 = 7;

fn v(slot: u64, kind: VoteKind) -> Vote {
    Vote {
        slot,
        kind,
        shred_version: SV,
    }
}

fn guard(store: EtcdVoteHistory, voter: [u8; 32]) -> AlpenglowGuard<EtcdVoteHistory> {
    let kp = NodeKeypair::from_seed(voter);
    let registered = derive_voter_key(&kp).unwrap().public_key();
    AlpenglowGuard::new(store, kp, &registered, RuleMode::Strict).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_etcd_meets_the_contract() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/ag").await;
    let node = NodeKeypair::generate().node_id();
    let id = identity(&client, node, "a", Duration::from_secs(5));
    let own = id.take_over().await.unwrap();
    let store = EtcdVoteHistory::open(&id, &own).await.unwrap();
    assert_eq!(store.load().await.unwrap(), None);
    let update = HistoryUpdate {
        votes: vec![v(5, VoteKind::Skip)],
        finalized: None,
    };
    let err = store.apply(&update, RuleMode::Slashable).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::NoHistory { .. }))
        ),
        "{err}"
    );

    store.create(&VoteHistory::new(node, SV, 0)).await.unwrap();
    let err = store
        .create(&VoteHistory::new(node, SV, 9))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::HistoryExists { .. }))
        ),
        "{err}"
    );

    let first = store.apply(&update, RuleMode::Slashable).await.unwrap();
    assert!(first.wrote);
    // Three votes of one event: one transaction (etcd's revision moves by one).
    let batch = HistoryUpdate {
        votes: vec![
            v(6, VoteKind::Notarize([1; 32])),
            v(5, VoteKind::SkipFallback),
            v(6, VoteKind::Finalize),
        ],
        finalized: None,
    };
    let applied = store.apply(&batch, RuleMode::Slashable).await.unwrap();
    assert_eq!(applied.receipt.sequence, first.receipt.sequence + 1);
    // A repeat makes no write.
    let again = store.apply(&batch, RuleMode::Slashable).await.unwrap();
    assert!(!again.wrote);
    assert_eq!(again.checks, vec![Check::SameData; 3]);
    assert_eq!(again.receipt, applied.receipt);

    // What a new handle reads under the fence, and without it.
    let reopened = EtcdVoteHistory::open(&id, &own).await.unwrap();
    let h = reopened.load().await.unwrap().unwrap();
    assert_eq!(h.slot(6).unwrap().notarize, Some([1; 32]));
    assert_eq!(
        EtcdVoteHistory::read_unfenced(&client, node).await.unwrap(),
        Some(h)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_fences_the_old_voter_and_the_new_one_follows_its_history() {
    let etcd = EtcdCluster::single();
    let node = NodeKeypair::generate().node_id();
    let voter = [5u8; 32];
    let a_id = identity(
        &client(&etcd, "/ag").await,
        node,
        "primary",
        Duration::from_secs(5),
    );
    let b_id = identity(
        &client(&etcd, "/ag").await,
        node,
        "spare",
        Duration::from_secs(5),
    );

    let a_own = a_id.take_over().await.unwrap();
    let a = guard(EtcdVoteHistory::open(&a_id, &a_own).await.unwrap(), voter);
    a.start_history(SV, 100).await.unwrap();
    let signed = a
        .vote(&[v(101, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap();

    // set-identity on the spare: it takes the identity over and reads the
    // primary's history from etcd; no file is copied.
    let b_own = b_id.take_over().await.unwrap();
    let b = guard(EtcdVoteHistory::open(&b_id, &b_own).await.unwrap(), voter);
    assert_eq!(
        b.load().await.unwrap().unwrap().slot(101).unwrap().notarize,
        Some([1; 32])
    );
    let err = b.vote(&[v(101, VoteKind::Skip)], None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::Conflict {
                slot: 101,
                ..
            }))
        ),
        "{err}"
    );
    // The same vote again is the same bytes.
    let resent = b
        .vote(&[v(101, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap();
    assert_eq!(resent[0].signature(), signed[0].signature());
    b.vote(&[v(102, VoteKind::Skip)], None).await.unwrap();

    // The old primary is fenced: nothing it asks for is signed.
    let err = a
        .vote(&[v(102, VoteKind::Notarize([2; 32]))], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("spare"), "{err}");
    // Nor a vote it never cast before.
    let err = a.vote(&[v(103, VoteKind::Skip)], None).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_value_is_corrupt_and_never_overwritten() {
    let etcd = EtcdCluster::single();
    let client = client(&etcd, "/ag").await;
    let node = NodeKeypair::generate().node_id();
    let id = identity(&client, node, "a", Duration::from_secs(5));
    let own = id.take_over().await.unwrap();
    let store = EtcdVoteHistory::open(&id, &own).await.unwrap();
    store.create(&VoteHistory::new(node, SV, 0)).await.unwrap();
    let key = client.keys().vote_history(&node);
    let mut bytes = VoteHistory::new(node, SV, 0).encode();
    bytes[40] ^= 1;
    raw(&etcd)
        .await
        .put(key.clone(), bytes.clone(), None)
        .await
        .unwrap();

    let store = EtcdVoteHistory::open(&id, &own).await.unwrap();
    assert!(matches!(store.load().await, Err(Error::Corrupt { .. })));
    let update = HistoryUpdate {
        votes: vec![v(1, VoteKind::Skip)],
        finalized: None,
    };
    assert!(matches!(
        store.apply(&update, RuleMode::Slashable).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.create(&VoteHistory::new(node, SV, 0)).await,
        Err(Error::Corrupt { .. })
    ));
    let kept = raw(&etcd).await.get(key, None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), &bytes[..]);
}

#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

/// etcd-only partition: the primary is cut off from etcd (not from the
/// cluster); it withholds every vote, the standby takes over once the
/// lease is gone and follows the history, and the healed primary is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_partition_withholds_votes_and_the_standby_follows_the_history() {
    let etcd = EtcdCluster::single();
    let upstream = format!("127.0.0.1:{}", etcd.client_port(0))
        .parse()
        .unwrap();
    let proxy = tcp_proxy::TcpProxy::start(upstream).await;
    let config = slashguard::etcd::EtcdConfig::builder([proxy.endpoint()])
        .key_prefix("/ag-part")
        .request_deadline(RELAXED)
        .build()
        .unwrap();
    let a_client = slashguard::etcd::EtcdClient::connect(config).await.unwrap();
    let node = NodeKeypair::generate().node_id();
    let ttl = Duration::from_secs(2);
    let a_id = identity(&a_client, node, "primary", ttl);
    let a_own = a_id.take_over().await.unwrap();
    let a = guard(EtcdVoteHistory::open(&a_id, &a_own).await.unwrap(), [6; 32]);
    a.start_history(SV, 0).await.unwrap();
    a.vote(&[v(1, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap();

    proxy.cut();
    let cut = std::time::Instant::now();
    let err = a
        .vote(&[v(2, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap_err();
    assert!(
        err.is_unavailable() || matches!(err, Error::Fenced { .. }),
        "{err}"
    );
    assert!(
        cut.elapsed() < RELAXED + Duration::from_secs(1),
        "{:?}",
        cut.elapsed()
    );

    let b_id = identity(&client(&etcd, "/ag-part").await, node, "standby", ttl);
    let b_own = b_id
        .acquire_when_free(Duration::from_secs(15))
        .await
        .unwrap();
    let b = guard(EtcdVoteHistory::open(&b_id, &b_own).await.unwrap(), [6; 32]);
    let err = b.vote(&[v(1, VoteKind::Skip)], None).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
    b.vote(&[v(2, VoteKind::Notarize([2; 32]))], None)
        .await
        .unwrap();

    proxy.heal();
    let err = a
        .vote(&[v(2, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let err = a.vote(&[v(3, VoteKind::Skip)], None).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}

/// Agave's `VoteHistoryStorage` on etcd: the file stored by the primary is
/// what the spare loads after `set-identity` (no `scp`), and the primary's
/// next store is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agave_adapter_hands_the_file_to_the_spare_and_fences_the_primary() {
    use slashguard::agave::{
        AgaveVoteHistory, AgaveVoteHistoryStorage, HistoryLayout, SavedVote, SavedVoteHistory,
    };
    let etcd = EtcdCluster::single();
    let kp = NodeKeypair::from_seed([71; 32]);
    let node = kp.node_id();
    let layout = HistoryLayout::SignedPayload;
    let file = |last: u64| {
        let mut h = AgaveVoteHistory::new(node, 10);
        for slot in 11..=last {
            h.add_vote(SavedVote {
                slot,
                kind: VoteKind::Skip,
                shred_version: Some(SV),
            });
        }
        SavedVoteHistory::sign(h, layout, &kp).unwrap().encode()
    };
    let a_id = identity(
        &client(&etcd, "/agv").await,
        node,
        "primary",
        Duration::from_secs(5),
    );
    let b_id = identity(
        &client(&etcd, "/agv").await,
        node,
        "spare",
        Duration::from_secs(5),
    );

    let a_own = a_id.take_over().await.unwrap();
    let a =
        AgaveVoteHistoryStorage::new(EtcdVoteHistory::open(&a_id, &a_own).await.unwrap(), layout);
    a.start_history(SV, 10).await.unwrap();
    a.store(&file(12)).await.unwrap();
    assert_eq!(a.load(&node).await.unwrap().encode(), file(12));

    let b_own = b_id.take_over().await.unwrap();
    let b =
        AgaveVoteHistoryStorage::new(EtcdVoteHistory::open(&b_id, &b_own).await.unwrap(), layout);
    assert_eq!(b.load(&node).await.unwrap().encode(), file(12));
    let err = a.store(&file(13)).await.unwrap_err();
    assert!(err.is_fenced(), "{err}");
    b.store(&file(13)).await.unwrap();
    assert_eq!(b.load(&node).await.unwrap().encode(), file(13));
    drop((a, a_own));
}
