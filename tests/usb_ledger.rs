//! The Ledger backend end to end against the simulator: through HID
//! reports (the boundary the rusb transport implements) and through the
//! Speculos TCP transport and server; the app's watermark rule, prompts,
//! locked device, wrong app.

mod usb_support;

use std::time::Duration;

use slashguard::usb::ledger::{
    AppKind, BakingApp, BipPath, DerivationType, LedgerHwm, LedgerTimeouts,
};
use slashguard::usb::sim::{Approval, LedgerSim, SimApp, SpeculosServer};
use slashguard::usb::{
    is_device_refusal, ApprovalState, DeviceError, HidApdu, LedgerConfig, LedgerSigner,
    SpeculosTransport, WatermarkDevice,
};
use slashguard::{Error, Signer};
use usb_support::*;

fn device_error(e: &Error) -> &DeviceError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(d) = x.downcast_ref::<DeviceError>() {
            return d;
        }
        cur = x.source();
    }
    panic!("no DeviceError in {e:?}")
}

/// The Tenderbake sequence at two levels, and every way the device refuses,
/// through any transport.
async fn sequence(signer: &LedgerSigner, sim: &LedgerSim) {
    let pk = sim.public_key(DerivationType::Ed25519, &BipPath::tezos_default());
    for payload in [
        block(CHAIN, 101, 0, 1),
        preattestation(CHAIN, 101, 0, 1),
        attestation(CHAIN, 101, 0, 1),
        block(CHAIN, 101, 1, 2),
        attestation(CHAIN, 102, 0, 3),
    ] {
        let sig = signer.sign(&payload).await.expect("device signs");
        assert!(verify_ed25519(&pk, &payload, &sig), "signature verifies");
    }
    let (main, _, _) = sim.hwm();
    assert_eq!(
        (main.level, main.round, main.had_attestation),
        (102, 0, true)
    );
    let before = sim.signed().len();
    for (what, payload) in [
        ("attestation again", attestation(CHAIN, 102, 0, 9)),
        (
            "preattestation after attestation",
            preattestation(CHAIN, 102, 0, 9),
        ),
        ("block at the mark", block(CHAIN, 102, 0, 9)),
        ("below", block(CHAIN, 101, 5, 9)),
    ] {
        let e = signer.sign(&payload).await.expect_err(what);
        assert!(is_device_refusal(&e), "{what}: {e}");
    }
    // Below the device mark is explained as a slashguard refusal.
    let e = signer.sign(&block(CHAIN, 90, 0, 9)).await.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.signed().len(), before, "nothing signed after a refusal");
    assert_eq!(sim.hwm().0.level, 102);
}

#[tokio::test]
async fn signs_through_hid_reports() {
    let sim = ledger_at(100);
    let signer = ledger_signer(&sim).await;
    assert_eq!(signer.app_version().kind, AppKind::Baking);
    assert!(signer.is_authorized().await.unwrap());
    sequence(&signer, &sim).await;
}

#[tokio::test]
async fn signs_through_speculos_tcp() {
    let sim = ledger_at(100);
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let signer = LedgerSigner::connect(
        SpeculosTransport::new(server.addr()),
        LedgerConfig {
            timeouts: fast_timeouts(),
            ..LedgerConfig::default()
        },
    )
    .await
    .unwrap();
    sequence(&signer, &sim).await;
    // Every command over TCP too.
    let all = signer.device_hwm().await.unwrap();
    assert_eq!((all.main.level, all.main_chain), (102, CHAIN));
    signer.raise_hwm(CHAIN, 200).await.unwrap();
    assert_eq!(sim.hwm().0.mark().level, 200);
    signer.deauthorize().await.unwrap();
    assert!(!signer.is_authorized().await.unwrap());
    let e = signer.sign(&block(CHAIN, 300, 0, 1)).await.unwrap_err();
    assert_eq!(*device_error(&e), DeviceError::NotAuthorized);
    signer.authorize().await.unwrap();
    signer.sign(&block(CHAIN, 300, 0, 1)).await.unwrap();
}

#[tokio::test]
async fn speculos_transport_with_nobody_listening_is_no_device() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = LedgerSigner::connect(SpeculosTransport::new(addr), LedgerConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::NoDevice { .. }),
        "{e}"
    );
    assert!(e.is_unavailable());
}

#[tokio::test]
async fn setup_for_failover_in_one_approval() {
    // A fresh device: no key, watermark 0. SETUP authorizes the key and
    // sets both marks.
    let sim = LedgerSim::new([3; 32]);
    let signer = ledger_signer(&sim).await;
    assert!(!signer.is_authorized().await.unwrap());
    signer.setup(CHAIN, 5010).await.unwrap();
    assert!(signer.is_authorized().await.unwrap());
    let (main, test, chain) = sim.hwm();
    assert_eq!((main.level, test.level, chain), (5010, 5010, CHAIN));
    assert!(signer.sign(&block(CHAIN, 5010, 0, 1)).await.is_err());
    signer.sign(&block(CHAIN, 5011, 0, 1)).await.unwrap();
    // Setup again at a lower level is refused before the device is asked.
    sim.set_approval(Approval::Manual);
    let e = signer.setup(CHAIN, 5000).await.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.prompt_shown(), None);
    // Another main chain is refused.
    let e = signer
        .setup(slashguard::watermark::ChainId([1, 2, 3, 4]), 9000)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}

#[tokio::test]
async fn reset_waits_for_a_person_and_can_be_refused() {
    let sim = ledger_at(100);
    sim.set_approval(Approval::Manual);
    let signer = ledger_signer(&sim).await;
    let mut state = signer.approval_state();
    assert_eq!(*state.borrow(), ApprovalState::Idle);

    // Approved: the waiting state is visible while the prompt is shown.
    let task = tokio::spawn({
        let s = signer.clone();
        async move { s.raise_hwm(CHAIN, 150).await }
    });
    state.changed().await.unwrap();
    assert!(
        matches!(&*state.borrow(), ApprovalState::Waiting { action, .. } if action.contains("150"))
    );
    let shown = tokio::task::spawn_blocking({
        let sim = sim.clone();
        move || sim.wait_for_prompt(Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert_eq!(shown.as_deref(), Some("Reset HWM to 150"));
    assert!(sim.press(true).is_some());
    task.await.unwrap().unwrap();
    assert_eq!(*signer.approval_state().borrow(), ApprovalState::Idle);
    assert_eq!(sim.hwm().0.mark().level, 150);

    // Rejected on the device.
    let task = tokio::spawn({
        let s = signer.clone();
        async move { s.raise_hwm(CHAIN, 160).await }
    });
    let sim2 = sim.clone();
    tokio::task::spawn_blocking(move || {
        sim2.wait_for_prompt(Duration::from_secs(5)).unwrap();
        sim2.press(false);
    })
    .await
    .unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::UserRejected { .. }),
        "{e}"
    );
    assert_eq!(sim.hwm().0.mark().level, 150);

    // Nobody answers: a typed timeout, then the device is still usable
    // once the stale prompt is answered.
    let impatient = LedgerSigner::connect(
        HidApdu::new(sim.hid()),
        LedgerConfig {
            timeouts: LedgerTimeouts {
                command: Duration::from_secs(3),
                approval: Duration::from_millis(300),
            },
            ..LedgerConfig::default()
        },
    )
    .await
    .unwrap();
    let e = impatient.raise_hwm(CHAIN, 170).await.unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::ApprovalTimeout { .. }),
        "{e}"
    );
    assert!(e.is_unavailable());
    assert_eq!(sim.press(false).as_deref(), Some("Reset HWM to 170"));
    // The device sends its late answer; the next exchange drains it.
    let s2 = sim.clone();
    assert!(
        tokio::task::spawn_blocking(move || s2.wait_idle(Duration::from_secs(5)))
            .await
            .unwrap()
    );
    assert_eq!(impatient.device_hwm().await.unwrap().main.level, 150);
}

#[tokio::test]
async fn raise_never_lowers_and_is_idempotent() {
    let sim = ledger_at(500);
    sim.set_approval(Approval::Manual);
    let signer = ledger_signer(&sim).await;
    let e = signer.raise_hwm(CHAIN, 400).await.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert_eq!(sim.prompt_shown(), None, "the device was never asked");
    // Already there: nothing to approve.
    signer.raise_hwm(CHAIN, 500).await.unwrap();
    assert_eq!(sim.prompt_shown(), None);
    // Through the device trait too.
    let e = signer.raise_to(CHAIN, 499).await.unwrap_err();
    assert!(e.is_refusal());
    let marks = signer.read_marks(CHAIN).await.unwrap();
    assert_eq!(marks.highest().level, 500);
}

#[tokio::test]
async fn locked_device_and_wrong_app_are_named() {
    let sim = ledger_at(100);
    let signer = ledger_signer(&sim).await;
    sim.lock();
    let e = signer.sign(&block(CHAIN, 101, 0, 1)).await.unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::Locked { .. }),
        "{e}"
    );
    assert!(e.is_unavailable());
    sim.unlock();
    sim.open_app(SimApp::Dashboard);
    let e = signer.sign(&block(CHAIN, 101, 0, 1)).await.unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::WrongApp { .. }),
        "{e}"
    );
    sim.open_app(SimApp::Wallet);
    let e = LedgerSigner::connect(HidApdu::new(sim.hid()), LedgerConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::WrongApp { .. }),
        "{e}"
    );
    sim.open_app(SimApp::Baking);
    signer.sign(&block(CHAIN, 101, 0, 1)).await.unwrap();
    assert_eq!(sim.signed().len(), 1);
}

#[tokio::test]
async fn old_apps_report_levels_only() {
    let sim = ledger_at(100);
    sim.set_legacy_hwm_reply(true);
    let signer = ledger_signer(&sim).await;
    let all = signer.device_hwm().await.unwrap();
    assert_eq!((all.main.level, all.main.round), (100, None));
    // An unknown round at the device level counts as the worst for raising.
    sim.set_approval(Approval::Manual);
    assert!(signer.raise_hwm(CHAIN, 100).await.unwrap_err().is_refusal());
}

#[tokio::test]
async fn apps_without_sign_with_hash_get_sign() {
    let sim = ledger_at(100);
    sim.set_sign_with_hash_supported(false);
    let signer = ledger_signer(&sim).await;
    let pk = sim.public_key(DerivationType::Ed25519, &BipPath::tezos_default());
    let p = block(CHAIN, 101, 0, 1);
    assert!(verify_ed25519(&pk, &p, &signer.sign(&p).await.unwrap()));
    assert!(is_device_refusal(
        &signer.sign(&block(CHAIN, 101, 0, 2)).await.unwrap_err()
    ));
    assert_eq!(sim.signed().len(), 1);
}

#[test]
fn test_chain_uses_the_test_watermark() {
    let sim = ledger_at(100);
    sim.set_hwm(CHAIN, LedgerHwm::at(100), LedgerHwm::at(7));
    let mut app = BakingApp::new(HidApdu::new(sim.hid()), fast_timeouts());
    let path = BipPath::tezos_default();
    let other = slashguard::watermark::ChainId([1, 1, 1, 1]);
    app.sign(&path, DerivationType::Ed25519, &block(other, 8, 0, 1))
        .unwrap();
    assert!(app
        .sign(&path, DerivationType::Ed25519, &block(CHAIN, 8, 0, 1))
        .unwrap_err()
        .is_watermark_refusal());
    let (main, test, _) = sim.hwm();
    assert_eq!((main.level, test.level), (100, 8));
}
