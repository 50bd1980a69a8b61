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

/// `EtcdWatermarks::fenced`, what the `slashguard signer` daemon signs
/// through with `store = "etcd"`: the watermarks are shared, and only the
/// baker's current owner may move them. Once another signer owns the baker,
/// the old owner's handle refuses (`Fenced`) and leaves etcd untouched,
/// while the new owner keeps to the old owner's marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_watermarks_move_only_under_the_bakers_current_owner() {
    use slashguard::etcd::EtcdWatermarks;
    use slashguard::watermark::SignerGuard;
    use slashguard::NodeId;

    let etcd = EtcdCluster::single();
    let prefix = "/fenced-watermarks";
    let node = NodeId::tezos_baker("fenced-baker");
    let (ca, cb) = (client(&etcd, prefix).await, client(&etcd, prefix).await);
    let (ida, idb) = (
        identity(&ca, node, "host-a", TTL),
        identity(&cb, node, "host-b", TTL),
    );
    let key = wm_key(1, ConsensusKind::Attestation);
    let shared = EtcdWatermarks::new(ca.clone());

    let own_a = ida.take_over().await.unwrap();
    let a = shared.fenced(&ida, &own_a).unwrap();
    assert_eq!(a.fence(), Some(own_a.fence()));
    a.authorize(&[request(key, 10, 0, b"a10")]).await.unwrap();

    // host-b takes the baker (an operator's take-over: host-a's lease is
    // still alive, so only the fence stops it).
    let own_b = idb.take_over().await.unwrap();
    let e = a
        .authorize(&[request(key, 11, 0, b"a11")])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    assert!(own_a.is_lost());
    let e = a
        .set_marks(
            &[(
                key,
                slashguard::watermark::Mark {
                    level: 20,
                    round: 0,
                },
            )],
            slashguard::watermark::SetMode::RaiseOnly,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    assert_eq!(
        shared.watermark(&key).await.unwrap().unwrap().mark.level,
        10,
        "nothing written by the old owner"
    );
    // A lost ownership gives no new handle either.
    assert!(matches!(
        shared.fenced(&ida, &own_a),
        Err(Error::Fenced { .. })
    ));

    // host-b, on the same watermarks: not at host-a's mark with other
    // bytes; above it, yes.
    let b = EtcdWatermarks::new(cb.clone())
        .fenced(&idb, &own_b)
        .unwrap();
    let e = b
        .authorize(&[request(key, 10, 0, b"b10")])
        .await
        .unwrap_err();
    assert!(e.is_refusal() && !matches!(e, Error::Fenced { .. }), "{e}");
    b.authorize(&[request(key, 11, 0, b"b11")]).await.unwrap();

    // Another identity's ownership, or another prefix, fences nothing here.
    let other = identity(&ca, NodeId::tezos_baker("other-baker"), "host-a", TTL);
    let own_other = other.take_over().await.unwrap();
    assert!(matches!(
        EtcdWatermarks::new(client(&etcd, "/elsewhere").await).fenced(&other, &own_other),
        Err(Error::Invalid(_))
    ));
}
