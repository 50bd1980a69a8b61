//! Helpers shared by the etcd tests: clients for a harness cluster, sample
//! records and requests, polling.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, OwnershipOptions};
use slashguard::tower::{TowerRecord, VoteRef};
use slashguard::watermark::{
    ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadHash, SignRequest, WatermarkKey,
};
use slashguard::{NodeId, NodeKeypair};

use crate::etcd_harness::EtcdCluster;

/// The library's default request deadline: used where the deadline itself
/// is under test.
pub const DEADLINE: Duration = slashguard::etcd::DEFAULT_REQUEST_DEADLINE;

/// The deadline of clients in tests about something else: generous, so
/// that a loaded machine (etcd fsyncs every write) does not turn into
/// spurious `Unavailable` errors.
pub const RELAXED: Duration = Duration::from_secs(2);

/// Upper bound asserted for "returns within the deadline": the deadline
/// plus generous slack for a loaded 2-core machine. A safety property,
/// not a benchmark.
pub fn within_deadline() -> Duration {
    DEADLINE + Duration::from_millis(300)
}

/// A config for every endpoint of `cluster` (plain http), with `prefix`
/// and the relaxed deadline.
pub fn config(cluster: &EtcdCluster, prefix: &str) -> EtcdConfig {
    EtcdConfig::builder(cluster.endpoints())
        .key_prefix(prefix)
        .request_deadline(RELAXED)
        .build()
        .unwrap()
}

/// A connected client for `cluster`, relaxed deadline.
pub async fn client(cluster: &EtcdCluster, prefix: &str) -> EtcdClient {
    EtcdClient::connect(config(cluster, prefix)).await.unwrap()
}

/// A connected client for `cluster` with the default deadline.
pub async fn strict_client(cluster: &EtcdCluster, prefix: &str) -> EtcdClient {
    let config = EtcdConfig::builder(cluster.endpoints())
        .key_prefix(prefix)
        .build()
        .unwrap();
    assert_eq!(config.request_deadline(), DEADLINE);
    retry("connect", || EtcdClient::connect(config.clone())).await
}

/// Run `f` until it is not `Unavailable` (a loaded machine may miss a short
/// deadline during set-up), for at most 10 s.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = slashguard::Result<T>>,
{
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_unavailable() && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
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
        signature: None,
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
