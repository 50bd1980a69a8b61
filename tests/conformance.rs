//! Every always-built backend against the shared contract.

#[path = "common/conformance.rs"]
mod conformance;

use std::sync::Arc;

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::memory::{MemoryTowerStorage, MemoryWatermarks};
use slashguard::watermark::{ConsensusKind, Decision, SignerGuard};
use slashguard::{NodeKeypair, TowerStorage};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backends_meet_the_contract() {
    let id = NodeKeypair::from_seed([1; 32]);
    conformance::tower_storage_contract(&MemoryTowerStorage::new(id.node_id()), &id).await;
    conformance::signer_guard_contract(Arc::new(MemoryWatermarks::new()), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backends_meet_the_contract_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let id = NodeKeypair::from_seed([1; 32]);
    let store = FileTowerStorage::create(dir.path(), id.node_id()).unwrap();
    conformance::tower_storage_contract(&store, &id).await;
    let last = store.load().await.unwrap();
    drop(store);
    let reopened = FileTowerStorage::open(dir.path(), id.node_id()).unwrap();
    assert_eq!(
        reopened.load().await.unwrap(),
        last,
        "what was acknowledged survives a reopen"
    );

    let path = dir.path().join("wm");
    let guard = Arc::new(FileWatermarks::create(&path).unwrap());
    conformance::signer_guard_contract(guard.clone(), 8).await;
    let before = guard.watermarks().await.unwrap();
    drop(guard);
    let reopened = FileWatermarks::open(&path).unwrap();
    assert_eq!(reopened.watermarks().await.unwrap(), before);
    let a = conformance::key(1, ConsensusKind::Attestation);
    assert_eq!(
        reopened
            .authorize_one(&conformance::request(a, 500, 0, 1))
            .await
            .unwrap(),
        Decision::Repeat,
        "the payload hash survives too"
    );
}
