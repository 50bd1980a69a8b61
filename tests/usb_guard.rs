//! The device watermark as part of the safety story: a file store in front
//! of a device (the local mark advances first, then the device checks
//! again), the device-only guard, and the failover helper.

mod usb_support;

use std::sync::Arc;

use slashguard::file::FileWatermarks;
use slashguard::usb::ledger::LedgerHwm;
use slashguard::usb::sim::Approval;
use slashguard::usb::{
    is_device_refusal, raise_for_failover, DeviceError, DeviceWatermarks, WatermarkDevice,
    DEFAULT_MARGIN,
};
use slashguard::watermark::{ConsensusKind, Decision, Mark, SetMode, SignerGuard, WatermarkKey};
use slashguard::{Error, GuardedSigner, Signer};
use usb_support::*;

fn m(level: u32, round: u32) -> Mark {
    Mark { level, round }
}

fn key(k: slashguard::watermark::KeyHash, kind: ConsensusKind) -> WatermarkKey {
    WatermarkKey {
        chain: CHAIN,
        key: k,
        kind,
    }
}

#[tokio::test]
async fn device_refuses_when_its_mark_is_higher() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(1000);
    let ledger = ledger_signer(&sim).await;
    let k = ledger.key_hash();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        ledger,
    );

    // The local store is empty and lets 500 through; the device does not.
    let e = baker.sign(&block(CHAIN, 500, 0, 1)).await.unwrap_err();
    assert!(is_device_refusal(&e), "{e}");
    assert!(
        e.is_refusal(),
        "a device watermark refusal is a refusal through GuardedSigner: {e}"
    );
    // The local mark advanced first; the device neither signed nor moved.
    let local = baker
        .guard()
        .watermark(&key(k, ConsensusKind::Block))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.mark, m(500, 0));
    assert!(sim.signed().is_empty());
    assert_eq!(sim.hwm().0.mark(), m(1000, 0));
    // Both must agree: above both, it signs.
    let s = baker.sign(&block(CHAIN, 1001, 0, 1)).await.unwrap();
    assert_eq!(s.decision, Decision::Advanced);
    assert_eq!(sim.signed().len(), 1);
}

#[tokio::test]
async fn local_mark_advanced_but_device_never_signed_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(100);
    let ledger = ledger_signer(&sim).await;
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        ledger,
    );
    let a = attestation(CHAIN, 101, 0, 1);
    sim.lock();
    let e = baker.sign(&a).await.unwrap_err();
    assert!(e.to_string().contains("locked"), "{e}");
    assert!(sim.signed().is_empty());
    sim.unlock();
    // The same request again: a repeat for the store, a first signature for
    // the device.
    let s = baker.sign(&a).await.unwrap();
    assert_eq!(s.decision, Decision::Repeat);
    assert_eq!(sim.signed(), vec![a.clone()]);
    // Other bytes at that mark are refused locally; the device is not asked.
    let e = baker
        .sign(&attestation(CHAIN, 101, 0, 2))
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.signed().len(), 1);
    // The device refuses a repeat of what it already signed: no second
    // signature of the same mark comes out of the device.
    assert!(is_device_refusal(&baker.sign(&a).await.unwrap_err()));
}

#[tokio::test]
async fn the_store_protects_what_a_power_cut_takes_from_the_ledger() {
    // The app's "HWM disabled in flash" setting: the mark lives in RAM.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let sim = ledger_at(100);
    sim.set_hwm_in_ram_only(true);
    {
        let baker = GuardedSigner::new(
            FileWatermarks::create(&path).unwrap(),
            ledger_signer(&sim).await,
        );
        baker.sign(&block(CHAIN, 150, 0, 1)).await.unwrap();
    }
    sim.unplug();
    sim.replug();
    sim.unlock();
    sim.open_app(slashguard::usb::sim::SimApp::Baking);
    assert_eq!(sim.hwm().0.mark(), m(100, 0), "the device forgot level 150");
    let baker = GuardedSigner::new(
        FileWatermarks::open(&path).unwrap(),
        ledger_signer(&sim).await,
    );
    // The device alone would sign another block at 150; the store refuses.
    let e = baker.sign(&block(CHAIN, 150, 0, 2)).await.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.signed().len(), 1);
}

#[tokio::test]
async fn device_only_guard_prechecks_and_the_device_decides() {
    let sim = ledger_at(100);
    let ledger = ledger_signer(&sim).await;
    let k = ledger.key_hash();
    let guard = DeviceWatermarks::new(ledger.clone(), CHAIN);
    let baker = GuardedSigner::new(guard, ledger);
    // Certainly refused: below, or a block at the mark. The device is
    // not asked to sign.
    for p in [block(CHAIN, 99, 0, 1), block(CHAIN, 100, 0, 1)] {
        assert!(baker.sign(&p).await.unwrap_err().is_refusal());
    }
    // At the mark, an attestation is up to the device (its flag is clear).
    baker.sign(&attestation(CHAIN, 100, 0, 1)).await.unwrap();
    let e = baker
        .sign(&attestation(CHAIN, 100, 0, 2))
        .await
        .unwrap_err();
    assert!(is_device_refusal(&e), "{e}");
    assert_eq!(sim.signed().len(), 1);
    // What the guard reports, and what it will not do.
    let marks = baker.guard().watermarks().await.unwrap();
    assert_eq!(marks.len(), 3);
    assert!(marks
        .iter()
        .all(|(_, w)| w.mark == m(100, 0) && w.payload_hash.is_none()));
    let other = key(k, ConsensusKind::Block);
    assert!(matches!(
        baker
            .guard()
            .set_marks(&[(other, m(200, 0))], SetMode::Force)
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        baker
            .guard()
            .set_marks(&[(other, m(200, 1))], SetMode::RaiseOnly)
            .await,
        Err(Error::Invalid(_))
    ));
    baker
        .guard()
        .set_marks(&[(other, m(200, 0))], SetMode::RaiseOnly)
        .await
        .unwrap();
    assert_eq!(sim.hwm().0.mark(), m(200, 0));
}

#[tokio::test]
async fn tezsign_behind_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, dev) = tezsign().await;
    let consensus = dev.signer("consensus").await.unwrap();
    let tz4 = consensus.key_hash();
    consensus.raise_to(CHAIN, 300).await.unwrap();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        consensus,
    );
    let e = baker
        .sign(&bls_attestation(CHAIN, 250, 0, 1))
        .await
        .unwrap_err();
    assert!(is_device_refusal(&e), "{e}");
    let local = baker
        .guard()
        .watermark(&key(tz4, ConsensusKind::Attestation))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.mark, m(250, 0));
    assert!(sim.signed().is_empty());
    let s = baker
        .sign(&bls_attestation(CHAIN, 301, 0, 1))
        .await
        .unwrap();
    assert!(sim.verify(&tz4, &bls_attestation(CHAIN, 301, 0, 1), &s.signature));
}

#[tokio::test]
async fn failover_raises_every_alias_and_the_store_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileWatermarks::create(dir.path().join("hwm")).unwrap();
    let (sim, dev) = tezsign().await;
    let consensus = dev.signer("consensus").await.unwrap();
    let companion = dev.signer("companion").await.unwrap();
    consensus
        .sign(&bls_attestation(CHAIN, 4990, 1, 1))
        .await
        .unwrap();

    let devices: [&dyn WatermarkDevice; 2] = [&consensus, &companion];
    let report = raise_for_failover(&devices, Some(&store), CHAIN, 5000, DEFAULT_MARGIN)
        .await
        .unwrap();
    assert_eq!(report.target, 5010);
    assert!(report.devices.iter().all(|d| d.changed));
    for alias in ["consensus", "companion"] {
        assert_eq!(sim.marks(alias).unwrap(), [m(5010, 0); 3], "{alias}");
    }
    for k in [consensus.key_hash(), companion.key_hash()] {
        for kind in ConsensusKind::ALL {
            let w = store.watermark(&key(k, kind)).await.unwrap().unwrap();
            assert_eq!((w.mark, w.payload_hash), (m(5010, 0), None));
        }
    }
    // Idempotent: nothing to change the second time.
    let again = raise_for_failover(&devices, Some(&store), CHAIN, 5000, DEFAULT_MARGIN)
        .await
        .unwrap();
    assert!(again.devices.iter().all(|d| !d.changed));

    // Never lowers: one device above the target refuses the whole call
    // before anything (device or store) changes.
    companion.raise_to(CHAIN, 6000).await.unwrap();
    let e = raise_for_failover(&devices, Some(&store), CHAIN, 5100, DEFAULT_MARGIN)
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.marks("consensus").unwrap(), [m(5010, 0); 3]);
    let w = store
        .watermark(&key(consensus.key_hash(), ConsensusKind::Block))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.mark, m(5010, 0));
}

#[tokio::test]
async fn failover_refuses_when_the_store_is_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileWatermarks::create(dir.path().join("hwm")).unwrap();
    let (sim, dev) = tezsign().await;
    let consensus = dev.signer("consensus").await.unwrap();
    store
        .set_marks(
            &[(key(consensus.key_hash(), ConsensusKind::Block), m(9000, 0))],
            SetMode::RaiseOnly,
        )
        .await
        .unwrap();
    let devices: [&dyn WatermarkDevice; 1] = [&consensus];
    let e = raise_for_failover(&devices, Some(&store), CHAIN, 5000, 10)
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(
        sim.marks("consensus").unwrap(),
        [m(0, 0); 3],
        "device untouched"
    );
}

#[tokio::test]
async fn failover_on_a_ledger_waits_for_approval() {
    let sim = ledger_at(4000);
    sim.set_hwm(CHAIN, LedgerHwm::at(4000), LedgerHwm::at(0));
    sim.set_approval(Approval::Manual);
    let ledger = Arc::new(ledger_signer(&sim).await);
    let task = tokio::spawn({
        let l = ledger.clone();
        async move {
            let devices: [&dyn WatermarkDevice; 1] = [&l];
            raise_for_failover(&devices, None, CHAIN, 5000, 10).await
        }
    });
    let sim2 = sim.clone();
    let prompt = tokio::task::spawn_blocking(move || {
        let p = sim2.wait_for_prompt(std::time::Duration::from_secs(5));
        sim2.press(true);
        p
    })
    .await
    .unwrap();
    assert_eq!(prompt.as_deref(), Some("Reset HWM to 5010"));
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.target, 5010);
    let (main, test, _) = sim.hwm();
    assert_eq!((main.mark(), test.mark()), (m(5010, 0), m(5010, 0)));
    // A rejected prompt is a typed error and leaves the device as it was.
    let task = tokio::spawn({
        let l = ledger.clone();
        async move { l.raise_to(CHAIN, 6000).await }
    });
    let sim2 = sim.clone();
    tokio::task::spawn_blocking(move || {
        sim2.wait_for_prompt(std::time::Duration::from_secs(5));
        sim2.press(false);
    })
    .await
    .unwrap();
    let e = task.await.unwrap().unwrap_err();
    let rejected = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<DeviceError>());
    assert!(
        matches!(rejected, Some(DeviceError::UserRejected { .. })),
        "{e}"
    );
    assert_eq!(sim.hwm().0.mark(), m(5010, 0));
}

#[tokio::test]
async fn guarded_sign_with_many_tasks_signs_each_mark_once() {
    // Racing tasks through one store and one device: each level is signed
    // exactly once, whatever the interleaving.
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let baker = Arc::new(GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        ledger_signer(&sim).await,
    ));
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let b = baker.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for level in 1..=10 {
                if b.sign(&block(CHAIN, level, 0, t)).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let signed = sim.signed();
    assert_eq!(signed.len(), total);
    let mut levels: Vec<u32> = signed
        .iter()
        .map(|p| u32::from_be_bytes(p[5..9].try_into().unwrap()))
        .collect();
    let n = levels.len();
    levels.dedup();
    assert_eq!(levels.len(), n, "a level was signed twice: {levels:?}");
    assert!(levels.windows(2).all(|w| w[0] < w[1]));
}
