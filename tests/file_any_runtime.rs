//! The file stores on runtimes without a timer: their deadline must not
//! need tokio's time driver (before, a call panicked inside tokio with
//! "timers are disabled" on a runtime built without `enable_time`).

mod common;

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::watermark::{
    ConsensusKind, Curve, Decision, KeyHash, Mark, SetMode, SignRequest, SignerGuard, WatermarkKey,
};
use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair};
use tokio::runtime::{Builder, Runtime};

fn key(i: u8) -> KeyHash {
    KeyHash {
        curve: Curve::Ed25519,
        hash: [i; 20],
    }
}

fn attestation_bytes(level: u32, variant: u8) -> Vec<u8> {
    common::consensus(
        ConsensusKind::Attestation,
        Curve::Ed25519,
        common::MAINNET,
        level,
        0,
        variant,
    )
}

fn attestation(k: u8, level: u32, variant: u8) -> SignRequest {
    SignRequest::parse(&attestation_bytes(level, variant), key(k)).unwrap()
}

fn record(kp: &NodeKeypair, slot: u64) -> TowerRecord {
    TowerRecord::sign(
        kp,
        Some(VoteRef {
            slot,
            hash: [slot as u8; 32],
        }),
        None,
        vec![7; 300],
    )
    .unwrap()
}

/// Open, write, read, refuse and reopen both file stores on `rt`, from the
/// runtime's own thread and from spawned tasks.
fn exercise(rt: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let kp = NodeKeypair::from_seed([3; 32]);

    rt.block_on(async {
        let wm = std::sync::Arc::new(FileWatermarks::create(&path).unwrap());
        assert_eq!(
            wm.authorize(&[attestation(1, 10, 1)]).await.unwrap(),
            vec![Decision::Advanced]
        );
        // A conflicting payload at the signed mark is refused.
        let refused = wm.authorize(&[attestation(1, 10, 2)]).await.unwrap_err();
        assert!(refused.is_refusal(), "{refused}");
        // Concurrent tasks, each on its own key.
        let tasks: Vec<_> = (2..6u8)
            .map(|k| {
                let wm = std::sync::Arc::clone(&wm);
                tokio::spawn(async move {
                    for level in 1..=5 {
                        wm.authorize(&[attestation(k, level, k)]).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let raised = WatermarkKey {
            chain: common::MAINNET,
            key: key(9),
            kind: ConsensusKind::Attestation,
        };
        wm.set_marks(&[(raised, Mark::level(50))], SetMode::RaiseOnly)
            .await
            .unwrap();
        assert_eq!(wm.watermarks().await.unwrap().len(), 6);
        assert!(!wm.is_damaged().await.unwrap());

        // The guarded signer end to end.
        let signer = Ed25519Signer::from_seed([4; 32]);
        let guarded = GuardedSigner::new(std::sync::Arc::clone(&wm), signer);
        let signed = guarded.sign(&attestation_bytes(20, 1)).await.unwrap();
        assert_eq!(signed.decision, Decision::Advanced);

        let storage = FileTowerStorage::create(dir.path(), kp.node_id()).unwrap();
        storage
            .store(&record(&kp, 5), StoreMode::Advance)
            .await
            .unwrap();
        storage
            .store(&record(&kp, 6), StoreMode::Advance)
            .await
            .unwrap();
        assert!(storage
            .store(&record(&kp, 4), StoreMode::Advance)
            .await
            .is_err());
        drop(storage);
        drop(guarded);
        drop(wm);
    });

    // Reopened (on the same runtime): what was acknowledged is there.
    rt.block_on(async {
        let wm = FileWatermarks::open(&path).unwrap();
        let marks = wm.watermarks().await.unwrap();
        assert_eq!(marks.len(), 7);
        let storage = FileTowerStorage::open(dir.path(), kp.node_id()).unwrap();
        let tower = storage.load().await.unwrap().unwrap();
        assert_eq!(tower.last_vote_slot(), Some(6));
    });
}

#[test]
fn file_stores_work_on_a_current_thread_runtime_without_timers() {
    exercise(&Builder::new_current_thread().build().unwrap());
}

#[test]
fn file_stores_work_on_a_multi_thread_runtime_without_timers() {
    exercise(
        &Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap(),
    );
    // Only the I/O driver, as some applications build it.
    exercise(
        &Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .unwrap(),
    );
}
