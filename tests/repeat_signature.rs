//! A repeat returns the signature that was released (issue 11 item 2), and
//! an equal mark imported with another payload leaves nothing to repeat
//! (issue 10 item 8). Signers here are NOT deterministic unless said: each
//! call signs with a fresh random nonce, so a second signature of the same
//! bytes is visible.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use common::tezos::Consensus;
use common::{consensus, NonDeterministicKey, Rng, TestKey, MAINNET, TESTNET};
use slashguard::file::FileWatermarks;
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::interchange::{import, Aliases, ImportMode, WatermarkFile};
use slashguard::watermark::{
    ConsensusKind, Curve, Decision, Mark, PayloadHash, RefusalReason, SetMode, SignerGuard,
    StoredSignature, Watermark, WatermarkKey,
};
use slashguard::{Error, GuardedSigner, Refusal, Signer};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn refusal_reason(e: &Error) -> Option<RefusalReason> {
    match e {
        Error::Refused(Refusal::Watermark(w)) => Some(w.reason),
        _ => None,
    }
}

#[test]
fn a_repeat_returns_the_stored_signature_without_signing_again() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let payload = Consensus::new(MAINNET, 100, 0, [1; 32]).attestation(Curve::Bls);
    let first = {
        let signer = GuardedSigner::new(
            FileWatermarks::create(&path).unwrap(),
            NonDeterministicKey::new(1, Curve::Bls),
        );
        let first = rt.block_on(signer.sign(&payload)).unwrap();
        assert_eq!(first.decision, Decision::Advanced);
        assert_eq!(first.signature.len(), 96, "the BLS budget is used whole");
        let again = rt.block_on(signer.sign(&payload)).unwrap();
        assert_eq!(again.decision, Decision::Repeat);
        assert_eq!(again.signature, first.signature);
        assert_eq!(signer_calls(&signer), 1, "a repeat does not sign again");
        first
    };
    // After a restart, from the file.
    let signer = GuardedSigner::new(
        FileWatermarks::open(&path).unwrap(),
        NonDeterministicKey::new(1, Curve::Bls),
    );
    let again = rt.block_on(signer.sign(&payload)).unwrap();
    assert_eq!(again.signature, first.signature);
    assert_eq!(signer_calls(&signer), 0);
    let stored = rt
        .block_on(signer.guard().watermark(&first.request.key))
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.signature.map(|s| s.as_bytes().to_vec()),
        Some(first.signature)
    );
}

fn signer_calls<G: SignerGuard>(s: &GuardedSigner<G, NonDeterministicKey>) -> usize {
    s.signer().calls.load(Ordering::SeqCst)
}

/// A store written before signatures were kept (format v1: no signature
/// with the mark): a repeat is refused for a non-deterministic signer and
/// re-signed by a deterministic one.
#[test]
fn a_repeat_without_a_stored_signature() {
    let rt = rt();
    let payload = Consensus::new(MAINNET, 100, 0, [1; 32]).attestation(Curve::Ed25519);
    let nd = NonDeterministicKey::new(2, Curve::Ed25519);
    let key = WatermarkKey {
        chain: MAINNET,
        key: nd.key_hash(),
        kind: ConsensusKind::Attestation,
    };
    let old_entry = Watermark {
        mark: Mark::level(100),
        payload_hash: Some(PayloadHash::of(&payload)),
        signature: None,
    };
    // What a v1 table holds, written as such (see bad_input.rs for the
    // hand-written v1 bytes); here through the table's own path.
    let store = MemoryWatermarks::new();
    rt.block_on(store.authorize(&[slashguard::watermark::SignRequest::new(
        key,
        old_entry.mark,
        old_entry.payload_hash.unwrap(),
    )]))
    .unwrap();
    assert_eq!(rt.block_on(store.watermark(&key)).unwrap(), Some(old_entry));
    let signer = GuardedSigner::new(store, nd);
    let err = rt.block_on(signer.sign(&payload)).unwrap_err();
    assert_eq!(
        refusal_reason(&err),
        Some(RefusalReason::RepeatWithoutSignature),
        "{err}"
    );
    assert!(err.is_refusal());

    // A deterministic signer re-signs: the same bytes, the same signature.
    let det = TestKey::tz1(2);
    let store = MemoryWatermarks::new();
    let req = slashguard::watermark::SignRequest::parse(&payload, det.key_hash()).unwrap();
    rt.block_on(store.authorize(&[req])).unwrap();
    let signer = GuardedSigner::new(store, det);
    let a = rt.block_on(signer.sign(&payload)).unwrap();
    let b = rt.block_on(signer.sign(&payload)).unwrap();
    assert_eq!(
        (a.decision, b.decision),
        (Decision::Repeat, Decision::Repeat)
    );
    assert_eq!(a.signature, b.signature);
}

/// Property: with a non-deterministic signer, never two different
/// signatures for one (key, chain, kind, level, round), whatever the order
/// of requests, repeats and restarts (the file store reopened).
#[test]
fn never_two_signatures_for_one_position_across_restarts() {
    let rt = rt();
    let mut rng = Rng::from_env("never_two_signatures_for_one_position_across_restarts");
    for case in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hwm");
        let curve = [Curve::Ed25519, Curve::Bls][case % 2];
        let mut released: BTreeMap<(ConsensusKind, u64, u32, u32), Vec<u8>> = BTreeMap::new();
        let mut signer = GuardedSigner::new(
            FileWatermarks::create(&path).unwrap(),
            NonDeterministicKey::new(3, curve),
        );
        for _ in 0..150 {
            if rng.below(12) == 0 {
                drop(signer);
                signer = GuardedSigner::new(
                    FileWatermarks::open(&path).unwrap(),
                    NonDeterministicKey::new(3, curve),
                );
            }
            let kind = ConsensusKind::ALL[rng.below(3) as usize];
            let chain_i = rng.below(2);
            let chain = [MAINNET, TESTNET][chain_i as usize];
            let level = 10 + rng.below(6) as u32;
            let round = rng.below(2) as u32;
            let variant = rng.below(2) as u8;
            let bytes = consensus(kind, curve, chain, level, round, variant);
            match rt.block_on(signer.sign(&bytes)) {
                Ok(s) => {
                    let prev = released.insert((kind, chain_i, level, round), s.signature.clone());
                    if let Some(prev) = prev {
                        assert_eq!(
                            prev, s.signature,
                            "two signatures at {kind} {level}/{round} (case {case})"
                        );
                    }
                }
                Err(e) => assert!(e.is_refusal(), "{e}"),
            }
        }
        assert!(released.len() > 5, "the run signed something");
    }
}

/// Issue 10 item 8: after importing the primary's (300, 0, hash X), the
/// store refuses its own different payload Y at (300, 0), though it had
/// signed Y there itself; and after an equal mark set with no hash, its
/// own earlier payload is not repeated either.
#[test]
fn an_imported_equal_mark_with_another_hash_leaves_nothing_to_repeat() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let signer = GuardedSigner::new(FileWatermarks::create(&path).unwrap(), TestKey::tz4(5));
    let x = Consensus::new(MAINNET, 300, 0, [0xAA; 32]).attestation(Curve::Bls);
    let y = Consensus::new(MAINNET, 300, 0, [0xBB; 32]).attestation(Curve::Bls);
    let key = WatermarkKey {
        chain: MAINNET,
        key: signer.key_hash(),
        kind: ConsensusKind::Attestation,
    };
    rt.block_on(signer.sign(&y)).unwrap();
    // The primary's interchange file: (300, 0, X).
    let file = WatermarkFile::new(
        [(
            key,
            Watermark {
                mark: Mark::level(300),
                payload_hash: Some(PayloadHash::of(&x)),
                signature: None,
            },
        )],
        &Aliases::new(),
        Some("primary".into()),
    );
    let report = rt
        .block_on(import(signer.guard(), &file, ImportMode::RaiseOnly))
        .unwrap();
    assert_eq!(
        report.set.len(),
        1,
        "an equal mark with another hash is set"
    );
    for attempt in [&y, &x] {
        let err = rt.block_on(signer.sign(attempt)).unwrap_err();
        assert_eq!(
            refusal_reason(&err),
            Some(RefusalReason::AtRaisedMark),
            "{err}"
        );
    }
    // After a restart too.
    drop(signer);
    let signer = GuardedSigner::new(FileWatermarks::open(&path).unwrap(), TestKey::tz4(5));
    let err = rt.block_on(signer.sign(&y)).unwrap_err();
    assert_eq!(
        refusal_reason(&err),
        Some(RefusalReason::AtRaisedMark),
        "{err}"
    );
    let stored = rt
        .block_on(signer.guard().watermark(&key))
        .unwrap()
        .unwrap();
    assert_eq!(stored, Watermark::raised(Mark::level(300)));

    // The same file naming the store's own payload leaves it repeatable.
    let z = Consensus::new(MAINNET, 301, 0, [0xCC; 32]).attestation(Curve::Bls);
    let signed = rt.block_on(signer.sign(&z)).unwrap();
    let same = WatermarkFile::new(
        [(
            key,
            Watermark {
                mark: Mark::level(301),
                payload_hash: Some(PayloadHash::of(&z)),
                signature: None,
            },
        )],
        &Aliases::new(),
        None,
    );
    let report = rt
        .block_on(import(signer.guard(), &same, ImportMode::RaiseOnly))
        .unwrap();
    assert_eq!(report.unchanged, vec![key]);
    assert_eq!(
        rt.block_on(signer.sign(&z)).unwrap().signature,
        signed.signature
    );

    // set_marks at the stored mark (an operator's set-level) clears it.
    rt.block_on(
        signer
            .guard()
            .set_marks(&[(key, Mark::level(301))], SetMode::RaiseOnly),
    )
    .unwrap();
    let err = rt.block_on(signer.sign(&z)).unwrap_err();
    assert_eq!(
        refusal_reason(&err),
        Some(RefusalReason::AtRaisedMark),
        "{err}"
    );
}

#[test]
fn stored_signature_bounds() {
    assert!(StoredSignature::new(&[]).is_none());
    assert!(StoredSignature::new(&[1; 97]).is_none());
    let s = StoredSignature::new(&[7; 96]).unwrap();
    assert_eq!(s.as_bytes(), &[7; 96][..]);
}
