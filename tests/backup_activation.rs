//! Tezos backup activation: each of the seed's "common mistakes" is refused,
//! and activation raises every alias and kind to max(store, chain) + margin.

use std::time::{Duration, Instant, SystemTime};

use slashguard::failover::{
    BackupGuard, FailoverRefusal, LocalLockPolicy, LossNotifier, PrimaryDown, PrimaryFencing,
    Takeover,
};
use slashguard::file::FileWatermarks;
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{ChainId, ConsensusKind, Mark, SetMode, SignerGuard, WatermarkKey};
use slashguard::{Ed25519Signer, Error, FailoverPolicy, GuardedSigner, Ownership, Refusal, Signer};

const CHAIN: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);

fn attestation(level: u32, round: u32) -> Vec<u8> {
    let mut b = vec![0u8; 80];
    b[0] = 0x13;
    b[1..5].copy_from_slice(&CHAIN.0);
    b[40..44].copy_from_slice(&level.to_be_bytes());
    b[44..48].copy_from_slice(&round.to_be_bytes());
    b
}

fn long_ago() -> PrimaryDown {
    PrimaryDown::OperatorAsserted {
        last_signature_at: SystemTime::now() - Duration::from_secs(600),
        block_time: Duration::from_secs(8),
        wait_blocks: 3,
    }
}

fn failover_refusal(e: &Error) -> Option<&FailoverRefusal> {
    match e {
        Error::Refused(Refusal::Failover(r)) => Some(r),
        _ => None,
    }
}

#[tokio::test]
async fn signing_before_activation_is_refused() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).alias("consensus", key.key_hash());
    let baker = GuardedSigner::new(&guard, key);
    let err = baker.sign(&attestation(100, 0)).await.unwrap_err();
    assert_eq!(failover_refusal(&err), Some(&FailoverRefusal::NotActivated));
    assert!(
        guard.inner().watermarks().await.unwrap().is_empty(),
        "nothing recorded"
    );
}

#[tokio::test]
async fn rushing_an_emergency_failover_is_refused() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).alias("consensus", key.key_hash());
    let evidence = PrimaryDown::OperatorAsserted {
        last_signature_at: SystemTime::now() - Duration::from_secs(5),
        block_time: Duration::from_secs(8),
        wait_blocks: 3,
    };
    let err = guard.activate(evidence, 1000).await.unwrap_err();
    match failover_refusal(&err) {
        Some(FailoverRefusal::WaitLonger {
            remaining,
            blocks: 3,
        }) => {
            assert!(
                *remaining > Duration::from_secs(15) && *remaining <= Duration::from_secs(19),
                "{remaining:?}"
            )
        }
        other => panic!("expected WaitLonger, got {other:?} ({err})"),
    }
    assert!(!guard.is_active().await);
    assert!(
        guard.inner().watermarks().await.unwrap().is_empty(),
        "no mark raised on refusal"
    );
}

#[tokio::test]
async fn activation_raises_every_alias_and_kind_above_store_and_chain() {
    let consensus = Ed25519Signer::from_seed([1; 32]);
    let companion = Ed25519Signer::from_seed([2; 32]);
    let store = MemoryWatermarks::new();
    // The shared store knows the primary signed a block at 1200 with the consensus key.
    let k = |key, kind| WatermarkKey {
        chain: CHAIN,
        key,
        kind,
    };
    store
        .set_marks(
            &[(
                k(consensus.key_hash(), ConsensusKind::Block),
                Mark {
                    level: 1200,
                    round: 3,
                },
            )],
            SetMode::RaiseOnly,
        )
        .await
        .unwrap();
    let guard = BackupGuard::new(store, CHAIN)
        .alias("consensus", consensus.key_hash())
        .alias("companion", companion.key_hash());
    let report = guard.activate(long_ago(), 1100).await.unwrap();
    assert_eq!(report.level, 1210, "max(1200 known, 1100 observed) + 10");
    assert_eq!(report.last_known_level, Some(1200));
    for key in [consensus.key_hash(), companion.key_hash()] {
        for kind in ConsensusKind::ALL {
            let w = guard
                .inner()
                .watermark(&k(key, kind))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(w.mark, Mark::level(1210), "{key} {kind}");
            assert_eq!(w.payload_hash, None);
        }
    }
    let baker = GuardedSigner::new(&guard, consensus);
    assert!(
        baker
            .sign(&attestation(1210, 0))
            .await
            .unwrap_err()
            .is_refusal(),
        "at the raised mark"
    );
    assert!(
        baker
            .sign(&attestation(1150, 0))
            .await
            .unwrap_err()
            .is_refusal(),
        "below it"
    );
    baker.sign(&attestation(1210, 1)).await.unwrap();
    baker.sign(&attestation(1211, 0)).await.unwrap();
}

#[tokio::test]
async fn chain_level_wins_when_store_is_behind_and_margin_is_configurable() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN)
        .alias("consensus", key.key_hash())
        .margin(3);
    assert_eq!(guard.activate(long_ago(), 5000).await.unwrap().level, 5003);
}

#[tokio::test]
async fn level_overflow_is_a_typed_error() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).alias("consensus", key.key_hash());
    let err = guard
        .activate(long_ago(), i32::MAX as u32 - 5)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(!guard.is_active().await);
}

#[tokio::test]
async fn lost_ownership_refuses_activation_and_later_signatures() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).alias("consensus", key.key_hash());
    let (lost, notifier) = Ownership::new(1, "backup", None);
    notifier.lose("primary came back");
    let err = guard
        .activate(PrimaryDown::Acquired(lost), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            failover_refusal(&err),
            Some(FailoverRefusal::PrimaryStillActive { .. })
        ),
        "{err}"
    );

    let (owned, notifier) = Ownership::new(2, "backup", None);
    guard
        .activate(PrimaryDown::Acquired(owned), 10)
        .await
        .unwrap();
    let baker = GuardedSigner::new(&guard, key);
    baker.sign(&attestation(21, 0)).await.unwrap();
    notifier.lose("taken over by primary");
    let err = baker.sign(&attestation(22, 0)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}

#[tokio::test]
async fn backup_cannot_start_while_primary_owns_the_watermarks_on_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watermarks");
    let primary_policy = LocalLockPolicy::new(FileWatermarks::lock_path(&path), "primary");
    let primary_owned = primary_policy.acquire().await.unwrap();
    let primary = FileWatermarks::create_owned(&path, &primary_owned).unwrap();

    // The backup's store cannot even be opened (in this one-process test,
    // the refusal says the store is open here), and its policy times out.
    assert!(matches!(
        FileWatermarks::open(&path),
        Err(Error::AlreadyOpen { .. })
    ));
    let backup_policy = LocalLockPolicy::new(FileWatermarks::lock_path(&path), "backup")
        .with_timeout(Duration::from_millis(200))
        .with_takeover(Takeover::WaitForRelease);
    assert!(matches!(
        backup_policy.acquire().await,
        Err(Error::Locked { .. })
    ));

    // Primary stops (step 2 of the seed): now the backup acquires and activates.
    drop(primary);
    primary_policy.release(primary_owned).await.unwrap();
    let owned = backup_policy
        .with_timeout(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap();
    let key = Ed25519Signer::from_seed([1; 32]);
    let store = FileWatermarks::open_owned(&path, &owned).unwrap();
    let guard = BackupGuard::new(store, CHAIN).alias("consensus", key.key_hash());
    let report = guard
        .activate(PrimaryDown::Acquired(owned), 300)
        .await
        .unwrap();
    assert_eq!(report.level, 310);
    GuardedSigner::new(&guard, key)
        .sign(&attestation(311, 0))
        .await
        .unwrap();
}

#[cfg(feature = "usb")]
mod usb_support;

/// The seed's "pre-authorized backup signer" mistake, on the Ledger
/// simulator: activation refuses a backup Ledger that can already bake,
/// before changing anything, and arms one that cannot.
#[cfg(feature = "usb")]
mod devices {
    use super::*;
    use crate::usb_support;
    use slashguard::usb::ledger::{BipPath, DerivationType, LedgerHwm};
    use slashguard::usb::sim::LedgerSim;
    use slashguard::usb::{HidApdu, LedgerConfig, LedgerSigner};
    use std::time::Duration;

    async fn backup_ledger(sim: &LedgerSim) -> LedgerSigner {
        LedgerSigner::connect(
            HidApdu::new(sim.hid()),
            LedgerConfig {
                timeouts: usb_support::fast_timeouts(),
                ..LedgerConfig::default()
            },
        )
        .await
        .unwrap()
    }

    fn ledger_sim(level: u32) -> LedgerSim {
        let sim = LedgerSim::new([7; 32]);
        sim.set_hwm(CHAIN, LedgerHwm::at(level), LedgerHwm::at(level));
        sim
    }

    #[tokio::test]
    async fn a_pre_authorized_backup_ledger_is_refused_and_nothing_changes() {
        let sim = ledger_sim(900);
        sim.set_baking_key(Some((DerivationType::Ed25519, BipPath::tezos_default())));
        let ledger = backup_ledger(&sim).await;
        let key = ledger.key_hash();
        let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).device("consensus", ledger);
        let err = guard.activate(long_ago(), 1000).await.unwrap_err();
        match failover_refusal(&err) {
            Some(FailoverRefusal::PreAuthorized { detail }) => {
                assert!(detail.contains("this key"), "{detail}")
            }
            other => panic!("expected PreAuthorized, got {other:?} ({err})"),
        }
        assert!(!guard.is_active().await);
        assert!(guard.inner().watermarks().await.unwrap().is_empty());
        assert_eq!(sim.hwm().0.level, 900, "device watermark untouched");

        // Another key authorized on the device is refused too.
        let other: BipPath = "m/44'/1729'/1'/0'".parse().unwrap();
        sim.set_baking_key(Some((DerivationType::Ed25519, other)));
        let err = guard.activate(long_ago(), 1000).await.unwrap_err();
        assert!(
            matches!(
                failover_refusal(&err),
                Some(FailoverRefusal::PreAuthorized { .. })
            ),
            "{err}"
        );

        // The operator deauthorizes it: activation arms it, with the
        // device's watermark set to the activation level and the key
        // authorized, and the backup bakes above it.
        sim.set_baking_key(None);
        let report = guard.activate(long_ago(), 1000).await.unwrap();
        assert_eq!(report.level, 1010);
        assert_eq!(sim.hwm().0.level, 1010);
        assert_eq!(
            sim.baking_key(),
            Some((DerivationType::Ed25519, BipPath::tezos_default()))
        );
        let baker = GuardedSigner::new(&guard, backup_ledger(&sim).await);
        assert_eq!(baker.key_hash(), key);
        assert!(baker.sign(&attestation(1010, 0)).await.is_err());
        baker.sign(&attestation(1011, 0)).await.unwrap();
        assert_eq!(sim.signed().len(), 1);
    }

    #[tokio::test]
    async fn a_device_armed_before_a_failed_step_is_not_taken_for_pre_authorized() {
        // Two devices: the second refuses to be armed (its watermark is
        // above the target). The first was armed (authorized) by this
        // guard; once the second is fixed, activation completes.
        let first = ledger_sim(0);
        let second = LedgerSim::new([9; 32]);
        second.set_hwm(CHAIN, LedgerHwm::at(5000), LedgerHwm::at(5000));
        let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN)
            .device("consensus", backup_ledger(&first).await)
            .device("companion", backup_ledger(&second).await);
        let err = guard.activate(long_ago(), 1000).await.unwrap_err();
        assert!(err.is_refusal(), "device above the target: {err}");
        assert!(first.baking_key().is_some(), "first device armed");
        assert!(!guard.is_active().await);
        second.set_hwm(CHAIN, LedgerHwm::at(0), LedgerHwm::at(0));
        let report =
            tokio::time::timeout(Duration::from_secs(10), guard.activate(long_ago(), 1000))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(report.level, 1020, "store was already raised to 1010");
        assert!(guard.is_active().await);
        assert_eq!(first.hwm().0.level, 1020);
        assert_eq!(second.hwm().0.level, 1020);
    }

    #[tokio::test]
    async fn tezsign_aliases_are_armed_with_the_activation_level() {
        let (sim, dev) = usb_support::tezsign().await;
        let consensus = dev.signer("consensus").await.unwrap();
        let companion = dev.signer("companion").await.unwrap();
        let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN)
            .device("consensus", consensus)
            .device("companion", companion);
        let report = guard.activate(long_ago(), 3000).await.unwrap();
        assert_eq!(report.level, 3010);
        for alias in ["consensus", "companion"] {
            assert!(
                sim.marks(alias).unwrap().iter().all(|m| m.level == 3010),
                "{alias}"
            );
        }
    }
}

/// An ownership bounded by a lease, as etcd grants (valid for a minute).
fn lease_bound(fence: u64) -> (Ownership, LossNotifier) {
    let (o, n) = Ownership::new(fence, "backup", None);
    n.valid_until(
        Instant::now() + Duration::from_secs(60),
        SystemTime::now() + Duration::from_secs(60),
    );
    assert!(o.is_lease_bound());
    (o, n)
}

#[tokio::test]
async fn a_lease_bound_evidence_needs_the_primarys_fencing_declared() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let guard = BackupGuard::new(MemoryWatermarks::new(), CHAIN).alias("consensus", key.key_hash());
    let (owned, _n) = lease_bound(4);
    let err = guard
        .activate(PrimaryDown::Acquired(owned), 10)
        .await
        .unwrap_err();
    match failover_refusal(&err) {
        Some(FailoverRefusal::PrimaryUnfenced { detail }) => {
            assert!(detail.contains("GuardedSigner::with_ownership"), "{detail}");
            assert!(detail.contains("primary_fencing"), "{detail}");
        }
        _ => panic!("not PrimaryUnfenced: {err}"),
    }
    assert!(!guard.is_active().await);
    let wk = WatermarkKey {
        chain: CHAIN,
        key: key.key_hash(),
        kind: ConsensusKind::Attestation,
    };
    assert_eq!(
        guard.inner().watermark(&wk).await.unwrap(),
        None,
        "nothing raised"
    );

    // A local lock is not lease-bound: its holder is the running process.
    let (local, _n) = Ownership::new(5, "backup", None);
    assert!(!local.is_lease_bound());

    // Declared: accepted.
    let guard = guard.primary_fencing(PrimaryFencing::Ownership);
    let (owned, _n) = lease_bound(6);
    guard
        .activate(PrimaryDown::Acquired(owned), 10)
        .await
        .unwrap();
    assert!(guard.is_active().await);
}

/// Loses the ownership while it signs (between authorize and release).
struct LosingSigner {
    inner: Ed25519Signer,
    notifier: LossNotifier,
}

#[async_trait::async_trait]
impl Signer for LosingSigner {
    fn key_hash(&self) -> slashguard::watermark::KeyHash {
        self.inner.key_hash()
    }
    async fn sign(&self, payload: &[u8]) -> slashguard::Result<Vec<u8>> {
        self.notifier.lose("taken over while signing");
        self.inner.sign(payload).await
    }
}

#[tokio::test]
async fn a_signer_fenced_by_its_ownership_signs_nothing_once_it_is_lost() {
    let key = Ed25519Signer::from_seed([1; 32]);
    let hash = key.key_hash();
    let store = MemoryWatermarks::new();
    let (own, notifier) = Ownership::new(1, "primary", None);
    let baker = GuardedSigner::new(&store, key).with_ownership(own);
    baker.sign(&attestation(10, 0)).await.unwrap();
    notifier.lose("the backup took the baker over");
    let err = baker.sign(&attestation(11, 0)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(
        err.to_string().contains("the backup took the baker over"),
        "{err}"
    );
    let wk = WatermarkKey {
        chain: CHAIN,
        key: hash,
        kind: ConsensusKind::Attestation,
    };
    assert_eq!(
        store.watermark(&wk).await.unwrap().unwrap().mark,
        Mark::level(10),
        "checked before authorize: the mark did not move"
    );

    // Lost while the device signs: the signature is not released.
    let store = MemoryWatermarks::new();
    let (own, notifier) = Ownership::new(2, "primary", None);
    let baker = GuardedSigner::new(
        &store,
        LosingSigner {
            inner: Ed25519Signer::from_seed([1; 32]),
            notifier,
        },
    )
    .with_ownership(own);
    let err = baker.sign(&attestation(20, 0)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("before releasing"), "{err}");
    let err = baker.sign(&attestation(21, 0)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}
