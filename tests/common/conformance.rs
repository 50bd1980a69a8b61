//! The contract every `TowerStorage` and `SignerGuard` backend must meet,
//! written once and run against each backend (memory, file, etcd, device).
//! Include with `#[path = "common/conformance.rs"] mod conformance;`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use slashguard::tower::{StoreMode, TowerRecord, TowerRefusal, TowerStorage, VoteRef};
use slashguard::watermark::{
    ChainId, ConsensusKind, Curve, Decision, KeyHash, Mark, PayloadHash, RefusalReason, SetMode,
    SignRequest, SignerGuard, WatermarkKey,
};
use slashguard::{Error, NodeKeypair, Refusal};

fn tower_refusal(e: &Error) -> Option<&TowerRefusal> {
    match e {
        Error::Refused(Refusal::Tower(r)) => Some(r),
        _ => None,
    }
}

fn watermark_reason(e: &Error) -> Option<RefusalReason> {
    match e {
        Error::Refused(Refusal::Watermark(r)) => Some(r.reason),
        _ => None,
    }
}

fn record(id: &NodeKeypair, slot: u64, hash: u8, root: Option<u64>) -> TowerRecord {
    TowerRecord::sign(
        id,
        Some(VoteRef {
            slot,
            hash: [hash; 32],
        }),
        root,
        vec![hash; 300],
    )
    .unwrap()
}

/// Run the tower storage contract on an EMPTY store of `identity`'s node.
pub async fn tower_storage_contract<S: TowerStorage>(store: &S, identity: &NodeKeypair) {
    assert_eq!(store.node(), identity.node_id());
    assert!(
        store.load().await.unwrap().is_none(),
        "a new store is empty"
    );

    let r10 = record(identity, 10, 1, Some(2));
    let first = store.store(&r10, StoreMode::Advance).await.unwrap();
    assert_eq!(store.load().await.unwrap().as_ref(), Some(&r10));

    // A retried store of the same vote is allowed.
    let again = store.store(&r10, StoreMode::Advance).await.unwrap();
    assert!(again.sequence > first.sequence, "receipts advance");

    let r12 = record(identity, 12, 1, Some(3));
    store.store(&r12, StoreMode::Advance).await.unwrap();

    // Refusals leave the stored tower as it was.
    type Expect = fn(&TowerRefusal) -> bool;
    let cases: Vec<(TowerRecord, Expect)> = vec![
        (record(identity, 11, 1, Some(3)), |r| {
            matches!(r, TowerRefusal::LastVoteRegressed { stored: 12, .. })
        }),
        (record(identity, 12, 9, Some(3)), |r| {
            matches!(r, TowerRefusal::ConflictingVote { slot: 12 })
        }),
        (record(identity, 13, 1, Some(2)), |r| {
            matches!(r, TowerRefusal::RootRegressed { stored: 3, .. })
        }),
        (
            record(&NodeKeypair::from_seed([0xEE; 32]), 99, 1, None),
            |r| matches!(r, TowerRefusal::ForeignNode { .. }),
        ),
    ];
    for (i, (bad, expected)) in cases.into_iter().enumerate() {
        let err = store.store(&bad, StoreMode::Advance).await.unwrap_err();
        assert!(tower_refusal(&err).is_some_and(expected), "case {i}: {err}");
        assert!(err.is_refusal());
        assert_eq!(
            store.load().await.unwrap().as_ref(),
            Some(&r12),
            "case {i} changed the store"
        );
    }

    // A record whose signature does not verify is refused even when forced.
    let mut bytes = record(identity, 20, 1, Some(3)).encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let forged = TowerRecord::decode_unverified(&bytes).unwrap();
    for mode in [StoreMode::Advance, StoreMode::Force] {
        let err = store.store(&forged, mode).await.unwrap_err();
        assert!(
            matches!(tower_refusal(&err), Some(TowerRefusal::BadSignature { .. })),
            "{err}"
        );
    }
    assert_eq!(store.load().await.unwrap().as_ref(), Some(&r12));

    // Force is the operator's way back.
    let older = record(identity, 5, 7, None);
    store.store(&older, StoreMode::Force).await.unwrap();
    assert_eq!(store.load().await.unwrap().as_ref(), Some(&older));
}

/// A key of the contract's chain.
pub fn key(n: u8, kind: ConsensusKind) -> WatermarkKey {
    WatermarkKey {
        chain: ChainId([1, 2, 3, 4]),
        key: KeyHash {
            curve: Curve::Ed25519,
            hash: [n; 20],
        },
        kind,
    }
}

/// A request for `key` at (level, round) with payload variant `p`.
pub fn request(key: WatermarkKey, level: u32, round: u32, p: u8) -> SignRequest {
    SignRequest {
        key,
        mark: Mark { level, round },
        payload_hash: PayloadHash([p; 32]),
        signature: None,
    }
}

/// Run the watermark guard contract on an EMPTY store. `tasks` concurrent
/// callers race at each level in the last part.
pub async fn signer_guard_contract<G: SignerGuard + 'static>(guard: Arc<G>, tasks: usize) {
    use ConsensusKind::*;
    let a = key(1, Attestation);
    assert!(guard.watermark(&a).await.unwrap().is_none());
    assert_eq!(
        guard.authorize_one(&request(a, 100, 0, 1)).await.unwrap(),
        Decision::Advanced
    );
    assert_eq!(
        guard.authorize_one(&request(a, 100, 0, 1)).await.unwrap(),
        Decision::Repeat,
        "identical request"
    );
    let table = [
        (request(a, 100, 0, 2), Some(RefusalReason::DifferentPayload)),
        (request(a, 99, 5, 1), Some(RefusalReason::Below)),
        (request(a, 100, 1, 3), None),
        (request(a, 100, 0, 1), Some(RefusalReason::Below)),
        (request(a, 101, 0, 4), None),
    ];
    for (i, (req, expected)) in table.into_iter().enumerate() {
        let got = guard.authorize_one(&req).await;
        match expected {
            None => assert_eq!(got.unwrap(), Decision::Advanced, "row {i}"),
            Some(reason) => {
                assert_eq!(watermark_reason(&got.unwrap_err()), Some(reason), "row {i}")
            }
        }
    }
    let w = guard.watermark(&a).await.unwrap().unwrap();
    assert_eq!(
        (w.mark, w.payload_hash),
        (
            Mark {
                level: 101,
                round: 0
            },
            Some(PayloadHash([4; 32]))
        )
    );

    // Kinds and keys are independent; attestation does not block a block.
    let b = key(1, Block);
    assert_eq!(
        guard.authorize_one(&request(b, 50, 0, 1)).await.unwrap(),
        Decision::Advanced
    );

    // A batch is all or nothing.
    let c = key(2, Attestation);
    let err = guard
        .authorize(&[request(c, 500, 0, 1), request(a, 90, 0, 1)])
        .await
        .unwrap_err();
    assert_eq!(watermark_reason(&err), Some(RefusalReason::Below));
    assert!(
        guard.watermark(&c).await.unwrap().is_none(),
        "the passing half of a refused batch must not advance"
    );
    let both = guard
        .authorize(&[request(c, 500, 0, 1), request(a, 500, 0, 1)])
        .await
        .unwrap();
    assert_eq!(both, vec![Decision::Advanced, Decision::Advanced]);
    let dup = guard
        .authorize(&[request(c, 501, 0, 1), request(c, 502, 0, 1)])
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Invalid(_)), "{dup}");

    // Operator marks: raise-only by default, exactly-at-mark blocked.
    let d = key(3, Preattestation);
    guard
        .set_marks(&[(d, Mark::level(700))], SetMode::RaiseOnly)
        .await
        .unwrap();
    assert_eq!(
        watermark_reason(
            &guard
                .authorize_one(&request(d, 700, 0, 1))
                .await
                .unwrap_err()
        ),
        Some(RefusalReason::AtRaisedMark)
    );
    let lower = guard
        .set_marks(&[(d, Mark::level(600))], SetMode::RaiseOnly)
        .await
        .unwrap_err();
    assert!(lower.is_refusal(), "{lower}");
    assert_eq!(
        guard.watermark(&d).await.unwrap().unwrap().mark,
        Mark::level(700)
    );
    guard
        .set_marks(&[(d, Mark::level(600))], SetMode::Force)
        .await
        .unwrap();
    assert_eq!(
        guard.authorize_one(&request(d, 650, 0, 1)).await.unwrap(),
        Decision::Advanced
    );

    let listed: HashSet<WatermarkKey> = guard
        .watermarks()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, HashSet::from([a, b, c, d]));

    // Racing: at each level, `tasks` callers with different payloads; exactly one wins.
    let e = key(4, Attestation);
    for level in 1..=20u32 {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let g = guard.clone();
                tokio::spawn(
                    async move { g.authorize_one(&request(e, level, 0, t as u8 + 1)).await },
                )
            })
            .collect();
        let mut wins = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(Decision::Advanced) => wins += 1,
                Ok(Decision::Repeat) => panic!("different payloads cannot repeat"),
                Err(err) => assert!(err.is_refusal(), "level {level}: {err}"),
            }
        }
        assert_eq!(wins, 1, "level {level}: exactly one signature");
    }
}
