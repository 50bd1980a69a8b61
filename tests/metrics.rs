//! The metrics hook sees every store, authorization and refusal of the
//! guards, with the backend, and the current watermark per key. (Its own
//! test binary: the recorder is process-wide.)

use std::sync::Arc;

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::metrics::{install, MemoryMetrics, Outcome, RefusalReason};
use slashguard::tower::{StoreMode, TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{ChainId, ConsensusKind, Mark, WatermarkKey};
use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair, Signer};

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

/// A tz1 attestation (0x13, tag 21, 80 bytes); `last` is the last byte
/// of its block payload hash.
fn attestation(level: u32, last: u8) -> Vec<u8> {
    let mut a = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
    a.extend_from_slice(&[0xA5; 32]); // branch
    a.push(21); // attestation
    a.extend_from_slice(&7u16.to_be_bytes()); // slot
    a.extend_from_slice(&level.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes()); // round
    a.extend_from_slice(&[0x5B; 31]); // block payload hash ...
    a.push(last);
    a
}

#[tokio::test]
async fn guards_report_latency_refusals_and_marks() {
    let recorder = Arc::new(MemoryMetrics::new());
    assert!(install(recorder.clone()));
    assert!(
        !install(MemoryMetrics::new()),
        "only the first recorder is installed"
    );

    let dir = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::generate();
    let storage = FileTowerStorage::create(dir.path(), kp.node_id()).unwrap();
    let guard = VoteGuard::new(storage, kp)
        .unwrap()
        .with_vote_account(VOTE_ACCOUNT);
    let update = |slot| TowerUpdate {
        vote: VoteRef {
            slot,
            hash: [1; 32],
        },
        root: None,
        tower: vec![0; 64],
    };
    for slot in [10, 11] {
        let message = vote_message(guard.node(), &update(slot));
        guard.vote(update(slot), &message).await.unwrap();
    }
    // A regressing tower: refused by the store.
    assert!(guard
        .save(update(5), StoreMode::Advance)
        .await
        .unwrap_err()
        .is_refusal());
    // A vote below one this guard released: refused before the store is
    // asked (counted as a refusal, not as a store).
    let message = vote_message(guard.node(), &update(5));
    assert!(guard
        .vote(update(5), &message)
        .await
        .unwrap_err()
        .is_refusal());

    let signer = Ed25519Signer::generate();
    let key = WatermarkKey {
        chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
        key: signer.key_hash(),
        kind: ConsensusKind::Attestation,
    };
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    );
    baker.sign(&attestation(100, 0)).await.unwrap();
    baker.sign(&attestation(101, 0)).await.unwrap();
    assert!(baker
        .sign(&attestation(100, 0))
        .await
        .unwrap_err()
        .is_refusal());
    assert!(baker
        .sign(&attestation(101, 1))
        .await
        .unwrap_err()
        .is_refusal());

    let s = recorder.snapshot();
    assert_eq!(s.tower_store[&("file", Outcome::Ok)].count, 2);
    assert_eq!(s.tower_store[&("file", Outcome::Refused)].count, 1);
    assert!(s.tower_store[&("file", Outcome::Ok)].max > std::time::Duration::ZERO);
    assert_eq!(s.authorize[&("file", Outcome::Ok)].count, 2);
    assert_eq!(s.authorize[&("file", Outcome::Refused)].count, 2);
    assert_eq!(s.refusals[&RefusalReason::TowerRegressed], 2);
    assert_eq!(s.refusals[&RefusalReason::WatermarkBelow], 1);
    assert_eq!(s.refusals[&RefusalReason::DifferentPayload], 1);
    assert_eq!(s.watermarks[&key], Mark::level(101));

    // Ownership state: gained with its fence, then lost.
    let (owned, notifier) = slashguard::Ownership::new(7, "validator-a", None);
    assert_eq!(recorder.snapshot().ownership["validator-a"], (true, 7));
    notifier.lose("taken over by validator-b");
    notifier.lose("reported twice");
    assert!(owned.is_lost());
    assert_eq!(recorder.snapshot().ownership["validator-a"], (false, 7));
}
