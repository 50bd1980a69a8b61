//! Property tests: random sequences of signing requests, batches, operator
//! raises, malformed payloads and (for the file backend) reopenings, run
//! through `GuardedSigner` against `MemoryWatermarks` and `FileWatermarks`.
//!
//! Every released signature is logged, and after every step:
//! - never two different signatures (or signed messages) for one
//!   (key, chain, kind, level, round);
//! - never a signature below the highest mark signed before for that
//!   (key, chain, kind), nor below a mark an operator raised it to, nor at
//!   that raised mark unless it repeats a message signed there before;
//! - each decision and the whole stored table equal those of a reference
//!   model written here independently of the crate's rule.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{consensus, TestKey, MAINNET, TESTNET};
use proptest::prelude::*;
use slashguard::file::FileWatermarks;
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{
    ChainId, ConsensusKind, Decision, Mark, PayloadHash, RefusalReason, SetMode, SignRequest,
    SignerGuard, Watermark, WatermarkKey,
};
use slashguard::{Error, GuardedSigner, Refusal, Signer};

const CHAINS: [ChainId; 2] = [MAINNET, TESTNET];
const KINDS: [ConsensusKind; 3] = ConsensusKind::ALL;

/// Signer 0 and 2 are tz1 keys, signer 1 a tz4 key (other payload offsets).
fn key_of(signer: usize) -> TestKey {
    match signer {
        0 => TestKey::tz1(1),
        1 => TestKey::tz4(2),
        _ => TestKey::tz1(3),
    }
}

/// One request: (signer, chain, kind, level, round, payload variant).
type Req = (usize, usize, usize, u32, u32, u8);

#[derive(Debug, Clone)]
enum Step {
    /// One payload through `GuardedSigner::sign`.
    Sign(Req),
    /// Several requests authorized in one batch, then signed.
    Batch(Vec<Req>),
    /// `set_marks(.., RaiseOnly)`: (signer, chain, kind, level, round).
    Raise(Vec<(usize, usize, usize, u32, u32)>),
    /// A payload cut to `len` bytes (at most to one byte short of what the
    /// parser needs): must be refused and change nothing.
    Truncated(Req, usize),
    /// Drop every handle and open the store again (file backend only).
    Reopen,
}

fn req() -> impl Strategy<Value = Req> {
    (0..3usize, 0..2usize, 0..3usize, 1..7u32, 0..3u32, 0..3u8)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => req().prop_map(Step::Sign),
        2 => prop::collection::vec(req(), 1..4).prop_map(Step::Batch),
        2 => prop::collection::vec((0..3usize, 0..2usize, 0..3usize, 1..7u32, 0..3u32), 1..3)
            .prop_map(Step::Raise),
        1 => (req(), 0..200usize).prop_map(|(r, len)| Step::Truncated(r, len)),
        1 => Just(Step::Reopen),
    ]
}

fn payload_of(r: &Req) -> Vec<u8> {
    let &(signer, chain, kind, level, round, variant) = r;
    consensus(
        KINDS[kind],
        key_of(signer).key_hash().curve,
        CHAINS[chain],
        level,
        round,
        variant,
    )
}

fn wkey(signer: usize, chain: usize, kind: usize) -> WatermarkKey {
    WatermarkKey {
        chain: CHAINS[chain],
        key: key_of(signer).key_hash(),
        kind: KINDS[kind],
    }
}

/// The reference model: per key, the mark and the bytes signed there
/// (`None` after an operator raise).
#[derive(Default, Clone)]
struct Model(BTreeMap<WatermarkKey, (Mark, Option<Vec<u8>>)>);

impl Model {
    fn decide(
        &self,
        key: &WatermarkKey,
        mark: Mark,
        bytes: &[u8],
    ) -> Result<Decision, RefusalReason> {
        match self.0.get(key) {
            None => Ok(Decision::Advanced),
            Some((m, _)) if mark > *m => Ok(Decision::Advanced),
            Some((m, _)) if mark < *m => Err(RefusalReason::Below),
            Some((_, Some(signed))) if signed == bytes => Ok(Decision::Repeat),
            Some((_, Some(_))) => Err(RefusalReason::DifferentPayload),
            Some((_, None)) => Err(RefusalReason::AtRaisedMark),
        }
    }

    fn table(&self) -> Vec<(WatermarkKey, Watermark)> {
        self.0
            .iter()
            .map(|(k, (mark, bytes))| {
                (
                    *k,
                    Watermark {
                        mark: *mark,
                        payload_hash: bytes.as_deref().map(PayloadHash::of),
                    },
                )
            })
            .collect()
    }
}

/// Every signature that left a signer, checked as it leaves.
#[derive(Default)]
struct Log {
    released: HashMap<(WatermarkKey, Mark), (Vec<u8>, Vec<u8>)>,
    highest_signed: HashMap<WatermarkKey, Mark>,
    highest_raised: HashMap<WatermarkKey, Mark>,
}

impl Log {
    fn release(&mut self, key: WatermarkKey, mark: Mark, bytes: &[u8], signature: &[u8]) {
        if let Some((b, s)) = self.released.get(&(key, mark)) {
            assert_eq!(
                b, bytes,
                "two different messages signed for {key} at {mark}"
            );
            assert_eq!(s, signature, "two different signatures for {key} at {mark}");
        }
        if let Some(&top) = self.highest_signed.get(&key) {
            assert!(
                mark >= top,
                "signed {key} at {mark} below {top} signed before"
            );
        }
        if let Some(&raised) = self.highest_raised.get(&key) {
            assert!(
                mark >= raised,
                "signed {key} at {mark} below raised {raised}"
            );
            assert!(
                mark > raised || self.released.contains_key(&(key, mark)),
                "signed {key} at the raised mark {mark}"
            );
        }
        self.released
            .insert((key, mark), (bytes.to_vec(), signature.to_vec()));
        let top = self.highest_signed.entry(key).or_insert(mark);
        *top = (*top).max(mark);
    }

    fn raised(&mut self, key: WatermarkKey, mark: Mark) {
        let top = self.highest_raised.entry(key).or_insert(mark);
        *top = (*top).max(mark);
    }
}

struct Harness {
    guard: Arc<dyn SignerGuard>,
    signers: Vec<GuardedSigner<Arc<dyn SignerGuard>, TestKey>>,
}

impl Harness {
    fn new(guard: Arc<dyn SignerGuard>) -> Harness {
        let signers = (0..3)
            .map(|i| GuardedSigner::new(Arc::clone(&guard), key_of(i)))
            .collect();
        Harness { guard, signers }
    }
}

enum Backend {
    Memory,
    File(tempfile::TempDir),
}

impl Backend {
    fn open(&self) -> Arc<dyn SignerGuard> {
        match self {
            Backend::Memory => Arc::new(MemoryWatermarks::new()),
            // Reopened after a simulated restart: the first open creates.
            Backend::File(dir) => {
                let path = dir.path().join("hwm");
                Arc::new(if path.exists() {
                    FileWatermarks::open(path).unwrap()
                } else {
                    FileWatermarks::create(path).unwrap()
                })
            }
        }
    }
}

fn refusal_reason(e: &Error) -> RefusalReason {
    match e {
        Error::Refused(Refusal::Watermark(w)) => w.reason,
        other => panic!("expected a watermark refusal, got {other}"),
    }
}

async fn run(backend: Backend, steps: Vec<Step>) {
    let mut h = Harness::new(backend.open());
    let mut model = Model::default();
    let mut log = Log::default();
    for step in steps {
        match &step {
            Step::Sign(r) => {
                let bytes = payload_of(r);
                let key = wkey(r.0, r.1, r.2);
                let mark = Mark {
                    level: r.3,
                    round: r.4,
                };
                let want = model.decide(&key, mark, &bytes);
                match (h.signers[r.0].sign(&bytes).await, want) {
                    (Ok(sig), Ok(d)) => {
                        assert_eq!(sig.decision, d, "{step:?}");
                        assert_eq!((sig.request.key, sig.request.mark), (key, mark));
                        log.release(key, mark, &bytes, &sig.signature);
                        model.0.insert(key, (mark, Some(bytes)));
                    }
                    (Err(e), Err(reason)) => assert_eq!(refusal_reason(&e), reason, "{step:?}"),
                    (got, want) => panic!("{step:?}: got {got:?}, model says {want:?}"),
                }
            }
            Step::Batch(rs) => {
                let payloads: Vec<Vec<u8>> = rs.iter().map(payload_of).collect();
                let requests: Vec<SignRequest> = rs
                    .iter()
                    .zip(&payloads)
                    .map(|(r, b)| SignRequest::parse(b, key_of(r.0).key_hash()).unwrap())
                    .collect();
                let mut keys: Vec<_> = requests.iter().map(|q| q.key).collect();
                keys.sort();
                keys.dedup();
                let got = h.guard.authorize(&requests).await;
                if keys.len() < requests.len() {
                    assert!(matches!(got, Err(Error::Invalid(_))), "{step:?}: {got:?}");
                    continue;
                }
                let want: Result<Vec<Decision>, RefusalReason> = requests
                    .iter()
                    .zip(&payloads)
                    .map(|(q, b)| model.decide(&q.key, q.mark, b))
                    .collect();
                match (got, want) {
                    (Ok(ds), Ok(want)) => {
                        assert_eq!(ds, want, "{step:?}");
                        // A batch signer signs each payload once authorized.
                        for ((r, q), b) in rs.iter().zip(&requests).zip(&payloads) {
                            let sig = key_of(r.0).sign(b).await.unwrap();
                            log.release(q.key, q.mark, b, &sig);
                            model.0.insert(q.key, (q.mark, Some(b.clone())));
                        }
                    }
                    (Err(e), Err(reason)) => assert_eq!(refusal_reason(&e), reason, "{step:?}"),
                    (got, want) => panic!("{step:?}: got {got:?}, model says {want:?}"),
                }
            }
            Step::Raise(ms) => {
                let marks: Vec<(WatermarkKey, Mark)> = ms
                    .iter()
                    .map(|&(s, c, k, level, round)| (wkey(s, c, k), Mark { level, round }))
                    .collect();
                let mut keys: Vec<_> = marks.iter().map(|m| m.0).collect();
                keys.sort();
                keys.dedup();
                let got = h.guard.set_marks(&marks, SetMode::RaiseOnly).await;
                if keys.len() < marks.len() {
                    assert!(matches!(got, Err(Error::Invalid(_))), "{step:?}: {got:?}");
                    continue;
                }
                let lowers = marks
                    .iter()
                    .any(|(k, m)| model.0.get(k).is_some_and(|(stored, _)| m < stored));
                match got {
                    Ok(()) => {
                        assert!(!lowers, "{step:?}: a lowering raise was accepted");
                        for (k, m) in marks {
                            log.raised(k, m);
                            if model.0.get(&k).is_none_or(|(stored, _)| m > *stored) {
                                model.0.insert(k, (m, None));
                            }
                        }
                    }
                    Err(e) => {
                        assert!(lowers, "{step:?}: refused: {e}");
                        assert_eq!(refusal_reason(&e), RefusalReason::Below);
                    }
                }
            }
            Step::Truncated(r, len) => {
                let bytes = payload_of(r);
                // A block is parsed up to the end of its fitness (the fields
                // after it are covered by the payload hash only).
                let needed = if KINDS[r.2] == ConsensusKind::Block {
                    87 + 33
                } else {
                    bytes.len()
                };
                let cut = &bytes[..(*len).min(needed - 1)];
                let got = h.signers[r.0].sign(cut).await;
                assert!(matches!(got, Err(Error::Payload(_))), "{step:?}: {got:?}");
            }
            Step::Reopen => {
                if let Backend::File(_) = backend {
                    drop(h);
                    h = Harness::new(backend.open());
                }
            }
        }
        assert_eq!(
            h.guard.watermarks().await.unwrap(),
            model.table(),
            "table after {step:?}"
        );
    }
    if let Backend::File(_) = backend {
        drop(h);
        h = Harness::new(backend.open());
        assert_eq!(
            h.guard.watermarks().await.unwrap(),
            model.table(),
            "after the last reopen"
        );
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn memory_backend_never_double_signs(steps in prop::collection::vec(step(), 1..80)) {
        block_on(run(Backend::Memory, steps));
    }

    #[test]
    fn file_backend_never_double_signs(steps in prop::collection::vec(step(), 1..80)) {
        // Reopening is what is tested here, not durability: in memory
        // when the host allows, so that 192 cases x 80 steps stay fast.
        block_on(run(Backend::File(common::fast_tempdir()), steps));
    }
}

/// The generator is not vacuous: over a fixed set of sequences, many
/// signatures are released and every refusal reason occurs.
#[test]
fn generated_sequences_exercise_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for _ in 0..64 {
        let steps = prop::collection::vec(step(), 40..80)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut model = Model::default();
        for s in &steps {
            if let Step::Sign(r) = s {
                let key = wkey(r.0, r.1, r.2);
                let mark = Mark {
                    level: r.3,
                    round: r.4,
                };
                let bytes = payload_of(r);
                let d = model.decide(&key, mark, &bytes);
                *outcomes.entry(format!("{d:?}")).or_default() += 1;
                if d.is_ok() {
                    model.0.insert(key, (mark, Some(bytes)));
                }
            }
            if let Step::Raise(ms) = s {
                let marks: Vec<_> = ms
                    .iter()
                    .map(|&(sg, c, k, level, round)| (wkey(sg, c, k), Mark { level, round }))
                    .collect();
                let lowers = marks
                    .iter()
                    .any(|(k, m)| model.0.get(k).is_some_and(|(st, _)| m < st));
                for (key, m) in marks.into_iter().filter(|_| !lowers) {
                    if model.0.get(&key).is_none_or(|(st, _)| m > *st) {
                        model.0.insert(key, (m, None));
                    }
                }
            }
        }
    }
    for outcome in [
        "Ok(Advanced)",
        "Ok(Repeat)",
        "Err(Below)",
        "Err(DifferentPayload)",
        "Err(AtRaisedMark)",
    ] {
        assert!(
            outcomes.get(outcome).copied().unwrap_or(0) >= 8,
            "{outcome} too rare: {outcomes:?}"
        );
    }
}
