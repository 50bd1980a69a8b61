//! The Ledger cases found with the real Tezos Baking app 2.5.1 in Speculos
//! (formats.md section 2), on the simulator that now behaves like it: what
//! the app refuses must not move the host store, and a late or misplaced
//! reply is never taken for the answer to another command.

mod usb_support;

use std::time::Duration;

use slashguard::file::FileWatermarks;
use slashguard::usb::ledger::apdu::{ins, sw, Apdu, P1_FIRST, P1_LAST, P1_NEXT};
use slashguard::usb::ledger::{BipPath, DerivationType, LedgerTimeouts};
use slashguard::usb::sim::{Approval, LedgerSim, SpeculosServer};
use slashguard::usb::transport::ApduTransport;
use slashguard::usb::{
    is_device_refusal, DeviceError, HidApdu, LedgerConfig, LedgerSigner, ProtocolError,
    SpeculosTransport,
};
use slashguard::watermark::{ConsensusKind, Mark, SignerGuard, WatermarkKey};
use slashguard::{Error, GuardedSigner, Refusal, Signer, SignerLimit};
use usb_support::*;

fn device_error(e: &Error) -> Option<DeviceError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(d) = x.downcast_ref::<DeviceError>() {
            return Some(d.clone());
        }
        cur = x.source();
    }
    None
}

fn config(command: Duration, approval: Duration) -> LedgerConfig {
    LedgerConfig {
        timeouts: LedgerTimeouts { command, approval },
        ..LedgerConfig::default()
    }
}

/// A block of exactly `len` bytes (the protocol data is padded).
fn block_of_len(level: u32, len: usize) -> Vec<u8> {
    let mut b = block(CHAIN, level, 0, 1);
    assert!(len >= b.len(), "a block is at least {} bytes", b.len());
    b.resize(len, 0x33);
    b
}

async fn file_baker(
    dir: &tempfile::TempDir,
    sim: &LedgerSim,
) -> GuardedSigner<FileWatermarks, LedgerSigner> {
    let signer = LedgerSigner::connect(
        HidApdu::new(sim.hid()),
        config(Duration::from_secs(5), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    )
}

async fn stored(baker: &GuardedSigner<FileWatermarks, LedgerSigner>, kind: ConsensusKind) -> Mark {
    let key = WatermarkKey {
        chain: CHAIN,
        key: baker.key_hash(),
        kind,
    };
    baker
        .guard()
        .watermark(&key)
        .await
        .unwrap()
        .map_or(Mark { level: 0, round: 0 }, |w| w.mark)
}

fn raw(sim: &LedgerSim, apdu: Apdu) -> Option<(Vec<u8>, u16)> {
    let r = sim.process(&apdu.encode().unwrap())?;
    let (d, s) = r.split_at(r.len() - 2);
    Some((d.to_vec(), u16::from_be_bytes([s[0], s[1]])))
}

#[test]
fn the_simulator_refuses_what_the_app_refuses() {
    let sim = ledger_at(0);
    let path = BipPath::tezos_default().encode();
    let sign = |msg: &[u8]| {
        let (d, s) = raw(&sim, Apdu::baking(ins::SIGN, P1_FIRST, 0, path.clone())).unwrap();
        assert_eq!((d.len(), s), (0, sw::OK), "path packet");
        raw(
            &sim,
            Apdu::baking(ins::SIGN, P1_NEXT | P1_LAST, 0, msg.to_vec()),
        )
        .unwrap()
    };
    // One data packet of at most 235 bytes.
    assert_eq!(sign(&block_of_len(5, 236)).1, sw::WRONG_LENGTH_FOR_INS);
    assert_eq!(sign(&block_of_len(5, 235)).1, sw::OK);
    // Two packets adding up to more than 235 bytes: the same answer.
    let msg = block_of_len(6, 240);
    raw(&sim, Apdu::baking(ins::SIGN, P1_FIRST, 0, path.clone())).unwrap();
    raw(
        &sim,
        Apdu::baking(ins::SIGN, P1_NEXT, 0, msg[..200].to_vec()),
    )
    .unwrap();
    let (_, s) = raw(
        &sim,
        Apdu::baking(ins::SIGN, P1_NEXT | P1_LAST, 0, msg[200..].to_vec()),
    )
    .unwrap();
    assert_eq!(s, sw::WRONG_LENGTH_FOR_INS);
    // Levels with either top bit set: 0x6A80.
    for level in [0x4000_0000u32, 0x7FFF_FFFF] {
        assert_eq!(sign(&attestation(CHAIN, level, 0, 1)).1, sw::WRONG_VALUES);
    }
    // While a prompt is on screen, APDUs are dropped, not queued.
    sim.set_approval(Approval::Manual);
    let s2 = sim.clone();
    let reset = std::thread::spawn(move || {
        raw(
            &s2,
            Apdu::baking(ins::RESET, 0, 0, 500u32.to_be_bytes().to_vec()),
        )
    });
    assert!(sim.wait_for_prompt(Duration::from_secs(20)).is_some());
    assert_eq!(
        raw(&sim, Apdu::baking(ins::DEAUTHORIZE, 0, 0, vec![])),
        None
    );
    assert_eq!(sim.dropped_apdus(), 1);
    sim.press(true);
    assert_eq!(reset.join().unwrap(), Some((vec![], sw::OK)));
    // The dropped DEAUTHORIZE never ran.
    assert!(sim.baking_key().is_some());
}

#[tokio::test]
async fn a_payload_over_235_bytes_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let baker = file_baker(&dir, &sim).await;
    baker.sign(&block_of_len(10, 235)).await.unwrap();
    let signed = sim.signed().len();
    let e = baker.sign(&block_of_len(11, 236)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused(Refusal::Limit(SignerLimit::PayloadTooLong {
                len: 236,
                max: 235,
                ..
            }))
        ),
        "{e:?}"
    );
    assert!(e.is_refusal());
    // Neither the host store nor the device moved; nothing was sent.
    assert_eq!(stored(&baker, ConsensusKind::Block).await.level, 10);
    assert_eq!(sim.hwm().0.mark().level, 10);
    assert_eq!(sim.signed().len(), signed);
    // The next normal request signs.
    baker.sign(&block_of_len(11, 200)).await.unwrap();
}

#[tokio::test]
async fn a_level_the_app_refuses_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    let baker = file_baker(&dir, &sim).await;
    baker.sign(&attestation(CHAIN, 10, 0, 1)).await.unwrap();
    for level in [0x4000_0000u32, 0x7FFF_FFFF] {
        let e = baker
            .sign(&attestation(CHAIN, level, 0, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused(Refusal::Limit(SignerLimit::LevelOutOfRange {
                    limit: 0x4000_0000,
                    ..
                }))
            ),
            "{e:?}"
        );
        assert_eq!(
            stored(&baker, ConsensusKind::Attestation).await.level,
            10,
            "the host store moved to {level}"
        );
    }
    // Normal requests are still signed: the store is not stuck up there.
    baker.sign(&attestation(CHAIN, 11, 0, 1)).await.unwrap();
    assert_eq!(sim.hwm().0.mark().level, 11);
}

#[tokio::test]
async fn a_device_refusal_names_what_the_host_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    // The device is ahead of an empty store (another host signed there).
    let sim = ledger_at(50);
    let baker = file_baker(&dir, &sim).await;
    let e = baker.sign(&block(CHAIN, 20, 0, 1)).await.unwrap_err();
    assert!(is_device_refusal(&e), "{e}");
    assert!(e.is_refusal());
    let text = e.to_string();
    let held = stored(&baker, ConsensusKind::Block).await;
    assert!(
        text.contains(&format!("file store now holds {held}")),
        "{text}"
    );
    match e {
        Error::Refused(Refusal::SignerRefused {
            backend: "file",
            stored,
            key,
            ..
        }) => {
            assert_eq!(stored, Some(held));
            assert_eq!(key.kind, ConsensusKind::Block);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_key_authorized_is_an_operator_error_not_a_retry() {
    let sim = ledger_at(0);
    let signer = ledger_signer(&sim).await;
    sim.set_baking_key(None);
    let e = signer.sign(&block(CHAIN, 5, 0, 1)).await.unwrap_err();
    assert!(!e.is_unavailable(), "{e}");
    assert_eq!(device_error(&e), Some(DeviceError::NotAuthorized));
    assert!(!DeviceError::NotAuthorized.is_transient());
    assert!(e.to_string().contains("authorize"), "{e}");
}

/// A RESET prompt times out on the host; while it is still on screen the
/// operator deauthorizes; then the person approves the RESET. Its late 9000
/// must not be read as DEAUTHORIZE's answer.
async fn late_reply_case(signer: LedgerSigner, sim: &LedgerSim) {
    sim.set_approval(Approval::Manual);
    let e = signer.raise_hwm(CHAIN, 500).await.unwrap_err();
    assert!(
        matches!(device_error(&e), Some(DeviceError::ApprovalTimeout { .. })),
        "{e}"
    );
    assert!(sim.wait_for_prompt(Duration::from_secs(20)).is_some());
    let s2 = signer.clone();
    let deauthorize = tokio::spawn(async move { s2.deauthorize().await });
    // The host's next command reaches the device and is dropped.
    let s3 = sim.clone();
    let dropped = tokio::task::spawn_blocking(move || s3.wait_dropped(1, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(dropped, "the device never saw the host's next command");
    sim.press(true);
    let r = deauthorize.await.unwrap();
    if r.is_ok() {
        assert_eq!(
            sim.baking_key(),
            None,
            "deauthorize() returned Ok while the key is still authorized"
        );
    }
    // Whatever happened, the signer is back in step: a retry is truthful.
    signer.deauthorize().await.unwrap();
    assert_eq!(sim.baking_key(), None);
    assert_eq!(signer.authorized_key().await.unwrap(), None);
    // The RESET was approved: the device says so.
    assert_eq!(signer.device_hwm().await.unwrap().main.level, 500);
}

#[tokio::test]
async fn a_late_reply_is_not_deauthorize_s_answer_over_hid() {
    let sim = ledger_at(100);
    let signer = LedgerSigner::connect(
        HidApdu::new(sim.hid()),
        config(Duration::from_secs(15), Duration::from_secs(1)),
    )
    .await
    .unwrap();
    late_reply_case(signer, &sim).await;
}

#[tokio::test]
async fn a_late_reply_is_not_deauthorize_s_answer_over_speculos() {
    let sim = ledger_at(100);
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let signer = LedgerSigner::connect(
        SpeculosTransport::new(server.addr()),
        config(Duration::from_secs(15), Duration::from_secs(1)),
    )
    .await
    .unwrap();
    late_reply_case(signer, &sim).await;
}

#[tokio::test]
async fn a_sign_path_packet_answered_with_data_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ledger_at(0);
    // The sign of level 11 waits this long once for its reply.
    let signer = LedgerSigner::connect(
        HidApdu::new(sim.hid()),
        config(Duration::from_secs(4), Duration::from_secs(4)),
    )
    .await
    .unwrap();
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("hwm")).unwrap(),
        signer,
    );
    baker.sign(&block(CHAIN, 10, 0, 1)).await.unwrap();
    // The device signs level 11 but its reply (hash and signature, 96
    // bytes) comes only with the reply to the second command after it.
    sim.delay_next_reply(ins::SIGN_WITH_HASH, 2);
    let e = baker.sign(&block(CHAIN, 11, 0, 1)).await.unwrap_err();
    assert!(
        matches!(device_error(&e), Some(DeviceError::Timeout { .. })),
        "{e}"
    );
    assert_eq!(sim.hwm().0.mark().level, 11);
    let signed = sim.signed().len();
    let e = baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap_err();
    assert!(
        matches!(
            device_error(&e),
            Some(DeviceError::Protocol(ProtocolError::BadReply {
                what: "sign (path)",
                ..
            }))
        ),
        "{e}"
    );
    // The message was never sent: the device did not sign level 12.
    assert_eq!(sim.hwm().0.mark().level, 11);
    assert_eq!(sim.signed().len(), signed);
    // Resynchronised, the same request is signed (a repeat for the store).
    let ok = baker.sign(&block(CHAIN, 12, 0, 1)).await.unwrap();
    assert_eq!(sim.hwm().0.mark().level, 12);
    let pk = sim.public_key(DerivationType::Ed25519, &BipPath::tezos_default());
    assert!(verify_ed25519(&pk, &block(CHAIN, 12, 0, 1), &ok.signature));
}

#[tokio::test]
async fn a_signer_checks_before_anything_is_sent() {
    let sim = ledger_at(0);
    let signer = ledger_signer(&sim).await;
    let long = block_of_len(11, 236);
    let req = slashguard::watermark::SignRequest::parse(&long, signer.key_hash()).unwrap();
    assert!(matches!(
        Signer::check(&signer, &req, &long),
        Err(Error::Refused(Refusal::Limit(
            SignerLimit::PayloadTooLong { .. }
        )))
    ));
    let ok = block_of_len(11, 235);
    let req = slashguard::watermark::SignRequest::parse(&ok, signer.key_hash()).unwrap();
    Signer::check(&signer, &req, &ok).unwrap();
}

#[test]
fn the_speculos_server_serves_one_client_and_replies_to_the_newest() {
    let sim = ledger_at(100);
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let version = Apdu::baking(ins::VERSION, 0, 0, vec![]).encode().unwrap();
    let long = Duration::from_secs(20);
    let mut first = SpeculosTransport::new(server.addr());
    let mut second = SpeculosTransport::new(server.addr());
    assert_eq!(first.exchange(&version, long).unwrap().status, sw::OK);
    // A second client replaces the first, whose connection is closed.
    assert_eq!(second.exchange(&version, long).unwrap().status, sw::OK);
    assert!(first.exchange(&version, Duration::from_secs(5)).is_err());
    // The first (now newest again) asks for a RESET nobody approves yet
    // and gives up; the second connects and asks VERSION, which the app
    // drops while the prompt is up; the person approves: the RESET's
    // reply reaches the second client as if it answered VERSION.
    sim.set_approval(Approval::Manual);
    let reset = Apdu::baking(ins::RESET, 0, 0, 500u32.to_be_bytes().to_vec())
        .encode()
        .unwrap();
    assert!(first.exchange(&reset, Duration::from_secs(1)).is_err());
    assert!(sim.wait_for_prompt(long).is_some());
    let s2 = sim.clone();
    let presser = std::thread::spawn(move || {
        assert!(s2.wait_dropped(1, Duration::from_secs(20)));
        s2.press(true)
    });
    // Its old connection was closed when the first reconnected: a new one.
    second.resync().unwrap();
    let reply = second.exchange(&version, long).unwrap();
    assert!(presser.join().unwrap().is_some());
    assert_eq!(
        (reply.data.len(), reply.status),
        (0, sw::OK),
        "VERSION's reply"
    );
    assert_eq!(sim.hwm().0.level, 500);
}
