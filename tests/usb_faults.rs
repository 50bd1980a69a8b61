//! The fault table: each transport fault during a sign gives a typed error,
//! no signature is released, and neither watermark (the file store's nor
//! the device's) ever goes backwards. After the fault the same signer
//! recovers (after re-plugging, for an unplug).

mod usb_support;

use std::time::Duration;

use slashguard::file::FileWatermarks;
use slashguard::usb::ledger::apdu::{ins, Apdu};
use slashguard::usb::ledger::LedgerTimeouts;
use slashguard::usb::sim::faults::{ApduFault, FaultyApdu, FaultyHid, HidFault};
use slashguard::usb::sim::{LedgerSim, SimApp, SpeculosServer};
use slashguard::usb::{
    DeviceError, HidApdu, LedgerConfig, LedgerSigner, ProtocolError, SpeculosTransport,
};
use slashguard::watermark::{ConsensusKind, Mark, SignerGuard, WatermarkKey};
use slashguard::{Error, GuardedSigner};
use usb_support::*;

fn device_error(e: &Error) -> DeviceError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(d) = x.downcast_ref::<DeviceError>() {
            return d.clone();
        }
        cur = x.source();
    }
    panic!("no DeviceError in {e:?}")
}

fn config() -> LedgerConfig {
    LedgerConfig {
        timeouts: LedgerTimeouts {
            // Each timeout case waits this long once.
            command: Duration::from_secs(1),
            approval: Duration::from_secs(2),
        },
        ..LedgerConfig::default()
    }
}

struct Marks {
    local: Mark,
    device: Mark,
}

async fn marks(baker: &GuardedSigner<FileWatermarks, LedgerSigner>, sim: &LedgerSim) -> Marks {
    let key = WatermarkKey {
        chain: CHAIN,
        key: baker.key_hash(),
        kind: ConsensusKind::Block,
    };
    Marks {
        local: baker
            .guard()
            .watermark(&key)
            .await
            .unwrap()
            .map_or(Mark { level: 0, round: 0 }, |w| w.mark),
        device: sim.hwm().0.mark(),
    }
}

/// Sign level 10, inject the fault into the sign of level 11 (its second
/// reply: the first answers the path packet), then check the table's
/// promises.
async fn run_case(
    name: &str,
    baker: &GuardedSigner<FileWatermarks, LedgerSigner>,
    sim: &LedgerSim,
    arm: impl FnOnce(),
    expect: impl Fn(&DeviceError) -> bool,
) {
    baker.sign(&block(CHAIN, 10, 0, 1)).await.unwrap();
    let before = marks(baker, sim).await;
    let signed_before = sim.signed().len();
    arm();
    let e = baker.sign(&block(CHAIN, 11, 0, 1)).await.expect_err(name);
    let d = device_error(&e);
    assert!(expect(&d), "{name}: unexpected error {d:?}");
    let after = marks(baker, sim).await;
    assert!(after.local >= before.local, "{name}: local mark went back");
    assert!(
        after.device >= before.device,
        "{name}: device mark went back"
    );
    assert_eq!(
        after.local.level, 11,
        "{name}: the store advanced before the device was asked"
    );
    assert!(sim.signed().len() <= signed_before + 1);
    // Other bytes at the mark are refused by the store whatever the device
    // did.
    let e = baker.sign(&block(CHAIN, 11, 0, 2)).await.unwrap_err();
    assert!(e.is_refusal(), "{name}: {e}");
}

async fn hid_baker(
    dir: &tempfile::TempDir,
    name: &str,
) -> (
    GuardedSigner<FileWatermarks, LedgerSigner>,
    LedgerSim,
    slashguard::usb::sim::faults::FaultSwitch<HidFault>,
) {
    let sim = ledger_at(0);
    let (hid, switch) = FaultyHid::new(sim.hid());
    let signer = LedgerSigner::connect(HidApdu::new(hid), config())
        .await
        .unwrap();
    let store = FileWatermarks::create(dir.path().join(name)).unwrap();
    (GuardedSigner::new(store, signer), sim, switch)
}

/// What a case's error must look like.
type Expect = fn(&DeviceError) -> bool;

#[tokio::test]
async fn hid_faults_during_a_sign() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, HidFault, Expect); 4] = [
        ("reply timeout", HidFault::DropReply, |d| {
            matches!(d, DeviceError::Timeout { .. })
        }),
        ("wrong channel", HidFault::WrongChannel, |d| {
            matches!(d, DeviceError::Protocol(ProtocolError::WrongChannel { .. }))
        }),
        ("sequence gap", HidFault::SequenceGap, |d| {
            matches!(
                d,
                DeviceError::Protocol(ProtocolError::SequenceGap {
                    expected: 0,
                    found: 1
                })
            )
        }),
        ("short frame", HidFault::ShortFrame, |d| {
            matches!(
                d,
                DeviceError::Protocol(ProtocolError::ShortFrame { len: 40 })
            )
        }),
    ];
    for (name, fault, expect) in cases {
        let (baker, sim, switch) = hid_baker(&dir, name).await;
        run_case(name, &baker, &sim, || switch.arm(1, fault), expect).await;
        // The device did sign level 11 (the reply was lost on the way):
        // its mark moved up, never down.
        assert_eq!(sim.hwm().0.mark().level, 11, "{name}");
        // The transport recovers: stale reports are drained first.
        baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
        assert_eq!(sim.hwm().0.mark().level, 12, "{name}");
    }
}

#[tokio::test]
async fn unknown_status_word_during_a_sign() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let (apdu, switch) = FaultyApdu::new(HidApdu::new(sim.hid()));
    let signer = LedgerSigner::connect(apdu, config()).await.unwrap();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    );
    run_case(
        "unknown status word",
        &baker,
        &sim,
        || switch.arm(1, ApduFault::StatusWord(0x6F42)),
        |d| *d == DeviceError::UnknownStatus { sw: 0x6F42 },
    )
    .await;
    baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
}

#[tokio::test]
async fn unplugged_during_a_sign_over_hid() {
    let dir = tempfile::tempdir().unwrap();
    let (baker, sim, _switch) = hid_baker(&dir, "hwm").await;
    run_case(
        "unplugged (HID)",
        &baker,
        &sim,
        || sim.unplug_after_next(ins::SIGN_WITH_HASH),
        |d| matches!(d, DeviceError::Unplugged { .. }),
    )
    .await;
    // The device signed and persisted level 11 before losing power.
    assert_eq!(sim.hwm().0.mark().level, 11);
    // Plugged back, PIN entered, app opened: a new session continues above.
    sim.replug();
    sim.unlock();
    sim.open_app(SimApp::Baking);
    // The directory lives as long as the store: a store whose lock file
    // vanishes refuses to write.
    let fresh = tempfile::tempdir().unwrap();
    let store = FileWatermarks::create(fresh.path().join("fresh")).unwrap();
    let again = GuardedSigner::new(store, ledger_signer(&sim).await);
    // Even with a store that forgot everything, the device refuses level 11.
    let e = again.sign(&block(CHAIN, 11, 0, 3)).await.unwrap_err();
    assert!(slashguard::usb::is_device_refusal(&e), "{e}");
    again.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
}

#[tokio::test]
async fn unplugged_during_a_sign_over_speculos() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let signer = LedgerSigner::connect(SpeculosTransport::new(server.addr()), config())
        .await
        .unwrap();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    );
    run_case(
        "unplugged (Speculos)",
        &baker,
        &sim,
        || sim.unplug_after_next(ins::SIGN_WITH_HASH),
        |d| matches!(d, DeviceError::Unplugged { .. }),
    )
    .await;
    // Back: the transport reconnects by itself.
    sim.replug();
    sim.unlock();
    sim.open_app(SimApp::Baking);
    baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
}

#[tokio::test]
async fn speculos_reply_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let signer = LedgerSigner::connect(SpeculosTransport::new(server.addr()), config())
        .await
        .unwrap();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    );
    // A person must approve a reset; nobody does; meanwhile a sign times
    // out behind it (the device answers one request at a time).
    sim.set_approval(slashguard::usb::sim::Approval::Manual);
    run_case(
        "reply timeout (Speculos)",
        &baker,
        &sim,
        || occupy_with_prompt(&sim),
        |d| matches!(d, DeviceError::Timeout { .. }),
    )
    .await;
    // The prompt is answered; the device works again (a new connection).
    sim.press(false);
    baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
}

/// Occupy the device with a RESET prompt nobody answers (sent directly to
/// the device, as by another host), so the next sign gets no reply in time.
fn occupy_with_prompt(sim: &LedgerSim) {
    let s2 = sim.clone();
    std::thread::spawn(move || {
        let reset = Apdu::baking(ins::RESET, 0, 0, 500u32.to_be_bytes().to_vec());
        s2.process(&reset.encode().unwrap())
    });
    assert!(sim.wait_for_prompt(Duration::from_secs(5)).is_some());
}

#[tokio::test]
async fn tezsign_unplugged_during_a_sign() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, dev) = tezsign().await;
    let s = dev.signer("consensus").await.unwrap();
    let tz4 = s.key_hash();
    let baker = GuardedSigner::new(FileWatermarks::create(dir.path().join("hwm")).unwrap(), s);
    baker.sign(&bls_attestation(CHAIN, 10, 0, 1)).await.unwrap();
    sim.unplug_after_next_sign();
    let e = baker
        .sign(&bls_attestation(CHAIN, 11, 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::Unplugged { .. }),
        "{e}"
    );
    // The device persisted its advance before losing power; the store
    // advanced before asking.
    assert_eq!(sim.marks("consensus").unwrap()[2].level, 11);
    let key = WatermarkKey {
        chain: CHAIN,
        key: tz4,
        kind: ConsensusKind::Attestation,
    };
    assert_eq!(
        baker
            .guard()
            .watermark(&key)
            .await
            .unwrap()
            .unwrap()
            .mark
            .level,
        11
    );
    sim.replug();
    let dev2 = slashguard::usb::TezSignDevice::new(sim.transport(), Duration::from_secs(3));
    dev2.unlock(&["consensus"], PASS).await.unwrap();
    let s2 = dev2.signer("consensus").await.unwrap();
    // The repeat of the same bytes passes the store but not the device.
    let again = GuardedSigner::new(FileWatermarks::create(dir.path().join("hwm2")).unwrap(), s2);
    let e = again
        .sign(&bls_attestation(CHAIN, 11, 0, 1))
        .await
        .unwrap_err();
    assert!(slashguard::usb::is_device_refusal(&e));
    again.sign(&bls_attestation(CHAIN, 12, 0, 1)).await.unwrap();
}
