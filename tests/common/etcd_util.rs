//! Helpers shared by the etcd tests: clients for a harness cluster, sample
//! records and requests, and the conformance checks every `TowerStorage`
//! and `SignerGuard` must pass (run against the memory backends too, so the
//! checks themselves are known to be right).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, OwnershipOptions};
use slashguard::tower::{StoreMode, TowerRecord, TowerRefusal, TowerStorage, VoteRef};
use slashguard::watermark::{
    ChainId, ConsensusKind, Curve, Decision, KeyHash, Mark, PayloadHash, RefusalReason, SetMode,
    SignRequest, SignerGuard, WatermarkKey,
};
use slashguard::{Error, NodeId, NodeKeypair, Refusal};

use crate::etcd_harness::EtcdCluster;

/// Deadline used by most tests: the library default.
pub const DEADLINE: Duration = slashguard::etcd::DEFAULT_REQUEST_DEADLINE;

/// Upper bound asserted for "returns within the deadline": the deadline
/// plus generous slack for a loaded 2-core machine. A safety property,
/// not a benchmark.
pub fn within_deadline() -> Duration {
    DEADLINE + Duration::from_millis(300)
}

/// A config for every endpoint of `cluster` (plain http), with `prefix`.
pub fn config(cluster: &EtcdCluster, prefix: &str) -> EtcdConfig {
    EtcdConfig::builder(cluster.endpoints())
        .key_prefix(prefix)
        .build()
        .unwrap()
}

/// A connected client for `cluster`.
pub async fn client(cluster: &EtcdCluster, prefix: &str) -> EtcdClient {
    EtcdClient::connect(config(cluster, prefix)).await.unwrap()
}

/// An identity handle for `node` as `instance`, with lease `ttl`.
pub fn identity(client: &EtcdClient, node: NodeId, instance: &str, ttl: Duration) -> EtcdIdentity {
    EtcdIdentity::new(
        client.clone(),
        node,
        OwnershipOptions::new(instance).lease_ttl(ttl),
    )
    .unwrap()
}

/// A raw etcd-client connection, to plant values behind slashguard's back.
pub async fn raw(cluster: &EtcdCluster) -> etcd_client::Client {
    etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap()
}

/// A signed record voting `slot` for hash `[h; 32]`.
pub fn record(kp: &NodeKeypair, slot: u64, h: u8, root: Option<u64>) -> TowerRecord {
    TowerRecord::sign(
        kp,
        Some(VoteRef {
            slot,
            hash: [h; 32],
        }),
        root,
        vec![h; 256],
    )
    .unwrap()
}

/// A watermark key of a tz4 (BLS) consensus key `n`.
pub fn wm_key(n: u8, kind: ConsensusKind) -> WatermarkKey {
    WatermarkKey {
        chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
        key: KeyHash {
            curve: Curve::Bls,
            hash: [n; 20],
        },
        kind,
    }
}

/// A request for `key` at (level, round) with a payload identified by `payload`.
pub fn request(key: WatermarkKey, level: u32, round: u32, payload: &[u8]) -> SignRequest {
    SignRequest {
        key,
        mark: Mark { level, round },
        payload_hash: PayloadHash::of(payload),
    }
}

/// Poll `f` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tower_refusal(r: Result<impl std::fmt::Debug, Error>) -> TowerRefusal {
    match r {
        Err(Error::Refused(Refusal::Tower(t))) => t,
        other => panic!("expected a tower refusal, got {other:?}"),
    }
}

fn wm_refusal(r: Result<impl std::fmt::Debug, Error>) -> RefusalReason {
    match r {
        Err(Error::Refused(Refusal::Watermark(w))) => w.reason,
        other => panic!("expected a watermark refusal, got {other:?}"),
    }
}

/// The rules every tower storage must apply. `storage` must be empty and
/// belong to `kp`'s node.
pub async fn tower_conformance<S: TowerStorage>(storage: &S, kp: &NodeKeypair) {
    assert_eq!(storage.node(), kp.node_id());
    assert!(storage.load().await.unwrap().is_none(), "starts empty");

    let r10 = record(kp, 10, 1, Some(2));
    let first = storage.store(&r10, StoreMode::Advance).await.unwrap();
    assert_eq!(storage.load().await.unwrap(), Some(r10.clone()));
    // Repeat of the identical record: accepted.
    let again = storage.store(&r10, StoreMode::Advance).await.unwrap();
    assert!(again.sequence > first.sequence, "{again:?} after {first:?}");
    assert_eq!(again.fence, first.fence);

    // Ordering refusals; nothing changes.
    assert!(matches!(
        tower_refusal(
            storage
                .store(&record(kp, 9, 1, Some(2)), StoreMode::Advance)
                .await
        ),
        TowerRefusal::LastVoteRegressed {
            stored: 10,
            requested: Some(9)
        }
    ));
    assert!(matches!(
        tower_refusal(
            storage
                .store(&record(kp, 10, 2, Some(2)), StoreMode::Advance)
                .await
        ),
        TowerRefusal::ConflictingVote { slot: 10 }
    ));
    assert!(matches!(
        tower_refusal(
            storage
                .store(&record(kp, 11, 1, Some(1)), StoreMode::Advance)
                .await
        ),
        TowerRefusal::RootRegressed {
            stored: 2,
            requested: Some(1)
        }
    ));
    assert!(matches!(
        tower_refusal(
            storage
                .store(&record(kp, 11, 1, None), StoreMode::Advance)
                .await
        ),
        TowerRefusal::RootRegressed {
            requested: None,
            ..
        }
    ));
    let stranger = NodeKeypair::from_seed([0xEE; 32]);
    for mode in [StoreMode::Advance, StoreMode::Force] {
        assert!(matches!(
            tower_refusal(storage.store(&record(&stranger, 50, 1, None), mode).await),
            TowerRefusal::ForeignNode { .. }
        ));
    }
    assert_eq!(storage.load().await.unwrap(), Some(r10.clone()));

    // Advancing works; Force may go back (operator recovery).
    let r12 = record(kp, 12, 1, Some(5));
    storage.store(&r12, StoreMode::Advance).await.unwrap();
    assert_eq!(storage.load().await.unwrap(), Some(r12));
    let r3 = record(kp, 3, 9, None);
    storage.store(&r3, StoreMode::Force).await.unwrap();
    assert_eq!(storage.load().await.unwrap(), Some(r3));
}

/// The rules every watermark store must apply. Keys of consensus key
/// numbers `base` and `base + 1` must be unused in `guard`.
pub async fn watermark_conformance<G: SignerGuard>(guard: &G, base: u8) {
    let k1 = wm_key(base, ConsensusKind::Attestation);
    let k2 = wm_key(base + 1, ConsensusKind::Attestation);
    let kb = wm_key(base, ConsensusKind::Block);
    assert_eq!(guard.watermark(&k1).await.unwrap(), None);

    let a = request(k1, 10, 0, b"A");
    assert_eq!(guard.authorize_one(&a).await.unwrap(), Decision::Advanced);
    // The identical request again: a repeat, allowed.
    assert_eq!(guard.authorize_one(&a).await.unwrap(), Decision::Repeat);
    // Same (level, round), other payload: the double sign.
    assert_eq!(
        wm_refusal(guard.authorize_one(&request(k1, 10, 0, b"B")).await),
        RefusalReason::DifferentPayload
    );
    assert_eq!(
        wm_refusal(guard.authorize_one(&request(k1, 9, 5, b"A")).await),
        RefusalReason::Below
    );
    // Kinds are independent.
    assert_eq!(
        guard
            .authorize_one(&request(kb, 3, 0, b"blk"))
            .await
            .unwrap(),
        Decision::Advanced
    );
    assert_eq!(
        guard
            .authorize_one(&request(k1, 10, 1, b"B"))
            .await
            .unwrap(),
        Decision::Advanced
    );

    // A batch is all or nothing.
    let before = guard.watermark(&k1).await.unwrap();
    let batch = [request(k1, 11, 0, b"C"), request(k2, 11, 0, b"C")];
    assert_eq!(
        guard.authorize(&batch).await.unwrap(),
        vec![Decision::Advanced, Decision::Advanced]
    );
    assert_eq!(
        guard.watermark(&k2).await.unwrap().unwrap().mark,
        Mark {
            level: 11,
            round: 0
        }
    );
    let mixed = [request(k1, 12, 0, b"D"), request(k2, 10, 0, b"D")];
    assert_eq!(
        wm_refusal(guard.authorize(&mixed).await),
        RefusalReason::Below
    );
    assert_eq!(
        guard.watermark(&k1).await.unwrap().unwrap().mark,
        Mark {
            level: 11,
            round: 0
        },
        "the refused batch advanced nothing"
    );
    let _ = before;
    let dup = [request(k1, 13, 0, b"E"), request(k1, 14, 0, b"E")];
    assert!(matches!(
        guard.authorize(&dup).await,
        Err(Error::Invalid(_))
    ));

    // Operator marks: raise only by default; nothing is signed at a raised mark.
    assert!(matches!(
        guard
            .set_marks(&[(k1, Mark::level(5))], SetMode::RaiseOnly)
            .await,
        Err(Error::Refused(_))
    ));
    guard
        .set_marks(
            &[(k1, Mark::level(20)), (k2, Mark::level(20))],
            SetMode::RaiseOnly,
        )
        .await
        .unwrap();
    assert_eq!(
        wm_refusal(guard.authorize_one(&request(k1, 20, 0, b"F")).await),
        RefusalReason::AtRaisedMark
    );
    assert_eq!(
        guard
            .authorize_one(&request(k1, 20, 1, b"F"))
            .await
            .unwrap(),
        Decision::Advanced
    );
    guard
        .set_marks(&[(k1, Mark::level(4))], SetMode::Force)
        .await
        .unwrap();
    assert_eq!(
        guard.watermark(&k1).await.unwrap().unwrap().mark,
        Mark::level(4)
    );
    let all = guard.watermarks().await.unwrap();
    for k in [k1, k2, kb] {
        assert!(all.iter().any(|(key, _)| *key == k), "{k} listed");
    }
}
