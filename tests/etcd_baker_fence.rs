//! "Only the owner of a baker signs", against a real etcd: a primary baker
//! on watermarks of its own, fenced by its etcd ownership
//! (`GuardedSigner::with_ownership`), is cut off from etcd only (a TCP
//! proxy between it and etcd is cut). The backup confirms it down, activates
//! and signs; the primary, still running and still asked to sign, must
//! have signed nothing from the moment the backup owns the identity.

mod common;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consensus;
use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::etcd::{EtcdClient, EtcdConfig};
use slashguard::failover::{BackupGuard, PrimaryFencing};
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{ChainId, ConsensusKind, Curve};
use slashguard::{Ed25519Signer, Error, GuardedSigner, NodeKeypair};

const CHAIN: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);
const TTL: Duration = Duration::from_secs(2);

/// One attempt of the primary: the level, whether a signature was
/// released, the error, and when the call returned.
struct Attempt {
    level: u32,
    signed: bool,
    error: Option<String>,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_etcd_signs_nothing_once_the_backup_owns_the_baker() {
    let etcd = EtcdCluster::single();
    let prefix = "/baker-fence";
    let node = NodeKeypair::from_seed([71; 32]).node_id();
    let upstream = format!("127.0.0.1:{}", etcd.client_port(0))
        .parse()
        .unwrap();
    let proxy = tcp_proxy::TcpProxy::start(upstream).await;
    let primary_client = EtcdClient::connect(
        EtcdConfig::builder([proxy.endpoint()])
            .key_prefix(prefix)
            .request_deadline(RELAXED)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let primary_id = identity(&primary_client, node, "primary", TTL);
    let ownership = primary_id.take_over().await.unwrap();

    // The primary: its own watermarks, its signer fenced by its ownership.
    let primary = Arc::new(
        GuardedSigner::new(MemoryWatermarks::new(), Ed25519Signer::from_seed([72; 32]))
            .with_ownership(ownership),
    );
    let key = primary.key_hash();
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let baking = tokio::spawn({
        let (primary, attempts, stop) = (primary.clone(), attempts.clone(), stop.clone());
        async move {
            let mut level = 100;
            while !stop.load(Ordering::SeqCst) {
                let payload = consensus(
                    ConsensusKind::Attestation,
                    Curve::Ed25519,
                    CHAIN,
                    level,
                    0,
                    1,
                );
                let r = primary.sign(&payload).await;
                attempts.lock().unwrap().push(Attempt {
                    level,
                    signed: r.is_ok(),
                    error: r.err().map(|e| match e {
                        Error::Fenced { .. } => "fenced".to_string(),
                        e => e.to_string(),
                    }),
                    at: Instant::now(),
                });
                level += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    eventually(Duration::from_secs(10), "the primary signs", || async {
        (attempts.lock().unwrap().iter().filter(|a| a.signed).count() >= 5).then_some(())
    })
    .await;

    // Cut the primary off from etcd only: it keeps running and signing
    // requests keep coming.
    proxy.cut();
    let backup_id = identity(&client(&etcd, prefix).await, node, "backup", TTL);
    let evidence = backup_id
        .confirm_primary_down(Duration::from_secs(30))
        .await
        .unwrap();
    let acquired = Instant::now();
    let observed = attempts.lock().unwrap().last().unwrap().level;
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN)
        .alias("consensus", key)
        .primary_fencing(PrimaryFencing::Ownership);
    let report = guard.activate(evidence, observed).await.unwrap();
    let backup = GuardedSigner::new(&guard, Ed25519Signer::from_seed([72; 32]));
    backup
        .sign(&consensus(
            ConsensusKind::Attestation,
            Curve::Ed25519,
            CHAIN,
            report.level + 1,
            0,
            2,
        ))
        .await
        .unwrap();

    // The primary is still asked to sign for a while.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    baking.await.unwrap();

    let attempts = attempts.lock().unwrap();
    let late: Vec<u32> = attempts
        .iter()
        .filter(|a| a.signed && a.at >= acquired)
        .map(|a| a.level)
        .collect();
    assert!(
        late.is_empty(),
        "the primary signed levels {late:?} after the backup owned the baker"
    );
    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.at >= acquired).collect();
    assert!(after.len() >= 10, "the primary kept being asked to sign");
    assert!(
        after.iter().all(|a| a.error.as_deref() == Some("fenced")),
        "every later request is refused as fenced: {:?}",
        after.iter().map(|a| &a.error).collect::<Vec<_>>()
    );
    // Once refused, never signed again (nothing between loss and acquisition either).
    let first_refusal = attempts.iter().position(|a| !a.signed).unwrap();
    assert!(
        attempts[first_refusal..].iter().all(|a| !a.signed),
        "signed again after a refusal"
    );
    assert!(primary.ownership().unwrap().is_lost());
}
