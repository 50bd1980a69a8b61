//! The TezSign backend end to end against the simulator, through the bulk
//! boundary the rusb transport implements: per-key per-kind watermarks,
//! raise-only set level, locked keys, interface rules, acknowledgements,
//! retries, keep-alives, duplicate ids, readiness, bad frames.

mod usb_support;

use std::time::Duration;

use slashguard::usb::sim::TezSignSim;
use slashguard::usb::tezsign::proto::{
    RequestPayload, SetLevelRequest, SignRequest, StatusRequest,
};
use slashguard::usb::tezsign::{FrameError, TezSignClient};
use slashguard::usb::{
    is_device_refusal, DeviceError, ProtocolError, TezSignDevice, TezSignInterface, WatermarkDevice,
};
use slashguard::watermark::Mark;
use slashguard::{Error, Signer};
use usb_support::*;

fn m(level: u32, round: u32) -> Mark {
    Mark { level, round }
}

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

#[tokio::test]
async fn per_key_per_kind_strictly_greater() {
    let (sim, dev) = tezsign().await;
    let consensus = dev.signer("consensus").await.unwrap();
    let companion = dev.signer("companion").await.unwrap();
    assert_ne!(consensus.key_hash(), companion.key_hash());
    assert!(consensus.key_hash().to_string().starts_with("tz4"));

    for p in [
        bls_block(CHAIN, 10, 0, 1),
        bls_preattestation(CHAIN, 10, 0, 1),
        bls_attestation(CHAIN, 10, 0, 1),
        bls_attestation(CHAIN, 10, 1, 1),
    ] {
        let sig = consensus.sign(&p).await.unwrap();
        assert!(sim.verify(&consensus.key_hash(), &p, &sig));
    }
    // Kinds are independent; the companion key has its own marks.
    companion
        .sign(&bls_attestation(CHAIN, 10, 0, 1))
        .await
        .unwrap();
    assert_eq!(
        sim.marks("consensus").unwrap(),
        [m(10, 0), m(10, 0), m(10, 1)]
    );
    assert_eq!(sim.marks("companion").unwrap()[2], m(10, 0));

    // Same (level, round) again, even the same bytes: refused (strictly
    // greater), and explained as a refusal.
    for p in [
        bls_attestation(CHAIN, 10, 1, 1),
        bls_block(CHAIN, 10, 0, 2),
        bls_preattestation(CHAIN, 9, 5, 1),
    ] {
        let e = consensus.sign(&p).await.unwrap_err();
        assert!(e.is_refusal(), "{e}");
        assert!(is_device_refusal(&e));
    }
    assert_eq!(sim.signed().len(), 5);

    // The marks read back through the device trait.
    let marks = consensus.read_marks(CHAIN).await.unwrap();
    assert_eq!(
        marks.mark(slashguard::watermark::ConsensusKind::Attestation),
        m(10, 1)
    );
}

#[tokio::test]
async fn set_level_only_raises() {
    let (sim, dev) = tezsign().await;
    let s = dev.signer("consensus").await.unwrap();
    s.sign(&bls_attestation(CHAIN, 50, 3, 1)).await.unwrap();
    // Lowering: refused by slashguard before the device is asked ...
    let e = s.raise_to(CHAIN, 40).await.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    // ... and by the device itself when asked directly.
    let mut client = TezSignClient::new(sim.transport(), Duration::from_secs(3));
    let e = client.set_level("consensus", 40).unwrap_err();
    assert!(matches!(e, DeviceError::WouldLower { .. }), "{e}");
    assert_eq!(sim.marks("consensus").unwrap()[2], m(50, 3));
    // Raising: every kind to (level, 0).
    s.raise_to(CHAIN, 60).await.unwrap();
    assert_eq!(sim.marks("consensus").unwrap(), [m(60, 0); 3]);
    // Idempotent.
    s.raise_to(CHAIN, 60).await.unwrap();
    // Nothing at the set mark; above it is fine.
    assert!(s
        .sign(&bls_attestation(CHAIN, 60, 0, 1))
        .await
        .unwrap_err()
        .is_refusal());
    s.sign(&bls_attestation(CHAIN, 60, 1, 1)).await.unwrap();
    // Unknown alias and locked key.
    assert!(matches!(
        client.set_level("nope", 99),
        Err(DeviceError::KeyNotFound { .. })
    ));
    sim.lock_key("companion");
    assert!(matches!(
        client.set_level("companion", 99),
        Err(DeviceError::Locked { .. })
    ));
}

#[tokio::test]
async fn locked_keys_neither_sign_nor_report_marks() {
    let (sim, dev) = tezsign().await;
    let s = dev.signer("consensus").await.unwrap();
    sim.lock_key("consensus");
    let e = s.sign(&bls_attestation(CHAIN, 1, 0, 1)).await.unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::Locked { .. }),
        "{e}"
    );
    assert!(e.is_unavailable());
    assert!(matches!(
        device_error(&s.read_marks(CHAIN).await.unwrap_err()),
        DeviceError::Locked { .. }
    ));
    let e = dev.unlock(&["consensus"], b"wrong").await.unwrap_err();
    assert!(matches!(device_error(&e), DeviceError::Locked { .. }));
    dev.unlock(&["consensus"], PASS).await.unwrap();
    s.sign(&bls_attestation(CHAIN, 1, 0, 1)).await.unwrap();
}

#[test]
fn sign_only_on_the_signing_interface() {
    let sim = TezSignSim::new(PASS);
    let tz4 = sim.add_key("consensus", [1; 32]);
    let mut c = TezSignClient::new(sim.transport(), Duration::from_secs(3));
    c.unlock(&["consensus"], PASS).unwrap();
    let sign = RequestPayload::Sign(SignRequest {
        tz4: tz4.to_string(),
        message: bls_attestation(CHAIN, 5, 0, 1),
    });
    assert!(matches!(
        c.call(TezSignInterface::Management, sign.clone()),
        Err(DeviceError::Remote { code: 1001, .. })
    ));
    let set = RequestPayload::SetLevel(SetLevelRequest {
        key_id: "consensus".into(),
        level: 3,
    });
    assert!(matches!(
        c.call(TezSignInterface::Signing, set),
        Err(DeviceError::Remote { code: 98, .. })
    ));
    assert!(sim.signed().is_empty());
    c.call(TezSignInterface::Signing, sign).unwrap();
    c.call(
        TezSignInterface::Management,
        RequestPayload::Status(StatusRequest {}),
    )
    .unwrap();
    assert_eq!(c.version().unwrap(), "slashguard-sim 1");
}

#[test]
fn retry_keepalive_duplicates_and_split_reads() {
    let sim = TezSignSim::new(PASS);
    let tz4 = sim.add_key("consensus", [1; 32]);
    let mut c = TezSignClient::new(sim.transport(), Duration::from_secs(3));
    c.unlock(&["consensus"], PASS).unwrap();
    // Frames split over 7-byte reads, a keep-alive before every response.
    sim.set_max_read(7);
    sim.set_keepalive(true);
    // A lost request: the device asks for a retry, the client resends.
    sim.lose_next_request();
    c.sign(&tz4, &bls_attestation(CHAIN, 1, 0, 1)).unwrap();
    // The same request frame received twice: the copy is dropped, one
    // signature only.
    sim.duplicate_next_request();
    c.sign(&tz4, &bls_attestation(CHAIN, 2, 0, 1)).unwrap();
    assert_eq!(sim.signed().len(), 2);
    // A response sent twice: the second copy is ignored by the next call.
    sim.duplicate_next_response();
    c.sign(&tz4, &bls_attestation(CHAIN, 3, 0, 1)).unwrap();
    let sig = c.sign(&tz4, &bls_attestation(CHAIN, 4, 0, 1)).unwrap();
    assert!(sim.verify(&tz4, &bls_attestation(CHAIN, 4, 0, 1), &sig));
    assert_eq!(sim.signed().len(), 4);
}

#[test]
fn bad_frames_are_typed_errors_and_the_next_call_recovers() {
    let sim = TezSignSim::new(PASS);
    let tz4 = sim.add_key("consensus", [1; 32]);
    let mut c = TezSignClient::new(sim.transport(), Duration::from_secs(3));
    c.unlock(&["consensus"], PASS).unwrap();
    // A header with a bad parity before the response.
    let mut bad = vec![0x56, 0x02];
    bad.extend([0; 16]);
    bad.extend([0, 0, 0, 0]);
    bad.push(0x00);
    sim.garbage_before_next_response(bad);
    let e = c.sign(&tz4, &bls_attestation(CHAIN, 1, 0, 1)).unwrap_err();
    assert_eq!(
        e,
        DeviceError::Protocol(ProtocolError::Frame(FrameError::BadParity {
            found: 0,
            computed: 0x54
        }))
    );
    // The device did sign (its mark moved); nothing was released here.
    assert_eq!(sim.marks("consensus").unwrap()[2], m(1, 0));
    sim.garbage_before_next_response(vec![0x42]);
    assert_eq!(
        c.status().unwrap_err(),
        DeviceError::Protocol(ProtocolError::Frame(FrameError::BadMagic(0x42)))
    );
    c.sign(&tz4, &bls_attestation(CHAIN, 2, 0, 1)).unwrap();
}

#[test]
fn readiness_is_probed_per_interface() {
    let sim = TezSignSim::new(PASS);
    sim.add_key("consensus", [1; 32]);
    sim.set_ready(false);
    let mut c = TezSignClient::new(sim.transport(), Duration::from_secs(3));
    assert!(matches!(
        c.status(),
        Err(DeviceError::NotReady { interface: 0 })
    ));
    assert!(!c.probe(TezSignInterface::Management).unwrap().ready);
    sim.set_ready(true);
    assert_eq!(c.status().unwrap().len(), 1);
}

#[tokio::test]
async fn unplugged_and_unknown_alias() {
    let (sim, dev) = tezsign().await;
    assert!(matches!(
        device_error(&dev.signer("nope").await.unwrap_err()),
        DeviceError::KeyNotFound { .. }
    ));
    let s = dev.signer("consensus").await.unwrap();
    sim.unplug();
    let e = s.sign(&bls_attestation(CHAIN, 1, 0, 1)).await.unwrap_err();
    assert!(
        matches!(device_error(&e), DeviceError::Unplugged { .. }),
        "{e}"
    );
    assert!(e.is_unavailable());
    // Plugged back: keys are locked until unlocked again.
    sim.replug();
    let fresh = TezSignDevice::new(sim.transport(), Duration::from_secs(3));
    let s = fresh.signer("consensus").await.unwrap();
    assert!(s
        .sign(&bls_attestation(CHAIN, 1, 0, 1))
        .await
        .unwrap_err()
        .is_unavailable());
    fresh.unlock(&["consensus"], PASS).await.unwrap();
    s.sign(&bls_attestation(CHAIN, 1, 0, 1)).await.unwrap();
}

#[tokio::test]
async fn tezsign_checks_the_scheme_before_anything_moves() {
    use slashguard::watermark::{Curve, KeyHash, SignRequest};
    use slashguard::{Refusal, SignerLimit};
    let (_sim, dev) = tezsign().await;
    let s = dev.signer("consensus").await.unwrap();
    let payload = bls_attestation(CHAIN, 5, 0, 1);
    let own = SignRequest::parse(&payload, s.key_hash()).unwrap();
    s.check(&own, &payload).unwrap();
    // A tz1 request (another key, another scheme) is refused by the check.
    let tz1 = KeyHash {
        curve: Curve::Ed25519,
        hash: [3; 20],
    };
    let other = attestation(CHAIN, 5, 0, 1);
    let req = SignRequest::parse(&other, tz1).unwrap();
    assert!(matches!(
        s.check(&req, &other),
        Err(Error::Refused(Refusal::Limit(SignerLimit::Scheme { .. })))
    ));
}
