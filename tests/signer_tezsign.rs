//! TezSign keys behind the remote-signer service, in process: the
//! library's `SignerService` (what `slashguard signer serve` runs) with a
//! file watermark store and TezSign keys on the crate's simulated gadget
//! (its bulk interfaces, frames and watermark rules).
//!
//! Why in process: the TezSign simulator is reachable only through the
//! `BulkTransport` trait inside the test process (the gadget speaks USB
//! bulk transfers; there is no emulator protocol over a socket, as Speculos
//! has for the Ledger), and the daemon must not carry a test-only
//! transport. The daemon's own device code is exercised with a Ledger over
//! Speculos in `signer_device.rs`; everything after the key is opened
//! (queue, guard, service, error mapping) is the same for both devices.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use slashguard::file::FileWatermarks;
use slashguard::keys::{PublicKey, SoftwareKey};
use slashguard::remote_signer::generic::OperationKind;
use slashguard::remote_signer::{
    KeyPolicy, MagicBytes, Released, Role, ServedKey, ServiceOptions, SignCall, SignerService,
};
use slashguard::usb::sim::TezSignSim;
use slashguard::usb::{DeviceQueue, QueuedSigner, TezSignDevice};
use slashguard::watermark::{ConsensusKind, Curve, KeyHash};

const MAINNET: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];
const PASS: &[u8] = b"correct horse";

/// A tz4 (pre)attestation: magic, chain, branch, tag 40/41, level, round,
/// block payload hash (no slot).
fn bls_att(magic: u8, level: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 78];
    p[0] = magic;
    p[1..5].copy_from_slice(&MAINNET);
    p[37] = if magic == 0x12 { 40 } else { 41 };
    p[38..42].copy_from_slice(&level.to_be_bytes());
    p[42..46].copy_from_slice(&0u32.to_be_bytes());
    p
}

/// A Tenderbake block header at `level`, round 0 (33-byte fitness).
fn block(level: u32) -> Vec<u8> {
    let mut p = vec![0u8; 83];
    p[0] = 0x11;
    p[1..5].copy_from_slice(&MAINNET);
    p[5..9].copy_from_slice(&level.to_be_bytes());
    let mut fitness = vec![0, 0, 0, 1, 0x02, 0, 0, 0, 4];
    fitness.extend_from_slice(&level.to_be_bytes());
    fitness.extend_from_slice(&[0, 0, 0, 0]);
    fitness.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    fitness.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0]);
    p.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
    p.extend_from_slice(&fitness);
    p.extend_from_slice(&[0x24; 32]);
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&[0, 0]);
    p
}

struct Rig {
    sim: TezSignSim,
    device: TezSignDevice,
    consensus: (KeyHash, PublicKey),
    companion: (KeyHash, PublicKey),
    service: SignerService<FileWatermarks>,
    _dir: tempfile::TempDir,
}

async fn served(
    device: &TezSignDevice,
    queue: &DeviceQueue,
    alias: &str,
) -> (ServedKey, KeyHash, PublicKey) {
    let status = device.key_status(alias).await.unwrap();
    let public: PublicKey = status.bl_pubkey.parse().unwrap();
    let signer = device.signer(alias).await.unwrap();
    let tz4 = signer.key_hash();
    let key = ServedKey::device(
        QueuedSigner::new(signer, queue.clone()),
        public,
        format!("tezsign alias {alias}"),
    )
    .unwrap();
    (key, tz4, public)
}

/// A gadget with a consensus and a companion key, both unlocked, served
/// by one service on a file store; both keys share the gadget's queue.
async fn rig(options: ServiceOptions, consensus_ops: &[OperationKind]) -> Rig {
    let sim = TezSignSim::new(PASS);
    for (alias, seed) in [("consensus", [3; 32]), ("companion", [4; 32])] {
        let bls = SoftwareKey::generate(Curve::Bls).unwrap();
        let pk: [u8; 48] = bls.public_key().as_bytes().try_into().unwrap();
        sim.add_key_with_public_key(alias, seed, pk);
    }
    let device = TezSignDevice::new(sim.transport(), Duration::from_secs(2));
    device
        .unlock(&["consensus", "companion"], PASS)
        .await
        .unwrap();
    let queue = DeviceQueue::new("tezsign", Duration::from_secs(5));
    let (ck, ch, cp) = served(&device, &queue, "consensus").await;
    let (pk, ph, pp) = served(&device, &queue, "companion").await;
    let dir = tempfile::tempdir().unwrap();
    let store = FileWatermarks::create(dir.path().join("watermarks")).unwrap();
    let service = SignerService::new(
        Arc::new(store),
        vec![
            (
                ck,
                KeyPolicy {
                    operations: consensus_ops.iter().copied().collect(),
                    ..KeyPolicy::default()
                },
            ),
            (
                pk,
                KeyPolicy {
                    role: Role::Companion,
                    kinds: BTreeSet::from([ConsensusKind::Attestation]),
                    ..KeyPolicy::default()
                },
            ),
        ],
        options,
    );
    Rig {
        sim,
        device,
        consensus: (ch, cp),
        companion: (ph, pp),
        service,
        _dir: dir,
    }
}

fn call(pkh: KeyHash, data: &[u8]) -> SignCall<'_> {
    SignCall {
        pkh,
        data,
        authentication: None,
        version: Some(3),
    }
}

impl Rig {
    async fn signed(&self, pkh: KeyHash, data: &[u8]) -> Vec<u8> {
        match self.service.handle_sign(call(pkh, data)).await {
            Ok(Released::Consensus(s)) => {
                assert!(
                    self.sim.verify(&pkh, data, &s.signature),
                    "the device's signature"
                );
                s.signature
            }
            Ok(other) => panic!("{other:?}"),
            Err(w) => panic!("{}: {}", w.error.status(), w.error),
        }
    }

    /// A refusal: (HTTP status, reason, what the client reads).
    async fn withheld(&self, pkh: KeyHash, data: &[u8]) -> (u16, &'static str, String) {
        let w = self
            .service
            .handle_sign(call(pkh, data))
            .await
            .expect_err("withheld");
        (
            w.error.status(),
            w.error.reason(),
            w.error.trace()[0].msg.clone(),
        )
    }

    fn signed_count(&self) -> usize {
        self.sim.signed().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tezsign_keys_sign_through_the_store_and_the_device() {
    let r = rig(ServiceOptions::default(), &[]).await;
    let (tz4, public) = r.consensus;
    assert_eq!(
        r.service.public_key(&tz4).unwrap(),
        public,
        "the key the device reported"
    );

    let b = r.signed(tz4, &block(10)).await;
    let p = r.signed(tz4, &bls_att(0x12, 10, 1)).await;
    let a = r.signed(tz4, &bls_att(0x13, 10, 1)).await;
    // The companion co-signs the same attestation bytes.
    r.signed(r.companion.0, &bls_att(0x13, 10, 1)).await;
    assert_eq!(r.signed_count(), 4);

    // Repeats: the stored signature, the device not asked (TezSign itself
    // refuses any repeat).
    assert_eq!(r.signed(tz4, &block(10)).await, b);
    assert_eq!(r.signed(tz4, &bls_att(0x12, 10, 1)).await, p);
    assert_eq!(r.signed(tz4, &bls_att(0x13, 10, 1)).await, a);
    assert_eq!(r.signed_count(), 4);

    // Below the mark, or other bytes at it: refused by the store.
    let (status, reason, msg) = r.withheld(tz4, &bls_att(0x13, 9, 1)).await;
    assert_eq!((status, reason), (409, "watermark"), "{msg}");
    let (status, _, _) = r.withheld(tz4, &bls_att(0x13, 10, 2)).await;
    assert_eq!(status, 409);
    // The companion signs attestations only.
    let (status, reason, _) = r.withheld(r.companion.0, &block(11)).await;
    assert_eq!((status, reason), (403, "policy"));
    assert_eq!(r.signed_count(), 4);

    // The device's own mark, raised behind the store's back: it refuses
    // what the store allows, and the client is told it was the device.
    let raised = r
        .device
        .key_status("consensus")
        .await
        .map(|s| s.last_attestation_level)
        .unwrap();
    assert_eq!(raised, 10);
    {
        use slashguard::usb::WatermarkDevice as _;
        let s = r.device.signer("consensus").await.unwrap();
        s.raise_to(slashguard::watermark::ChainId(MAINNET), 50)
            .await
            .unwrap();
    }
    let (status, _, msg) = r.withheld(tz4, &bls_att(0x13, 20, 1)).await;
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("signing device"), "{msg}");
    r.signed(tz4, &bls_att(0x13, 51, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_or_unplugged_tezsign_fails_clearly_and_nothing_is_signed_twice() {
    let r = rig(ServiceOptions::default(), &[]).await;
    let tz4 = r.consensus.0;
    r.signed(tz4, &bls_att(0x13, 10, 1)).await;

    // Locked.
    r.sim.lock_key("consensus");
    let (status, reason, msg) = r.withheld(tz4, &bls_att(0x13, 11, 1)).await;
    assert_eq!((status, reason), (503, "device"), "{msg}");
    assert!(msg.contains("locked"), "{msg}");
    r.device.unlock(&["consensus"], PASS).await.unwrap();
    r.signed(tz4, &bls_att(0x13, 11, 1)).await;

    // Unplugged; plugged back, its keys locked until unlocked.
    r.sim.unplug();
    let (status, reason, msg) = r.withheld(tz4, &bls_att(0x13, 12, 1)).await;
    assert_eq!((status, reason), (503, "device"), "{msg}");
    assert!(msg.contains("unplugged"), "{msg}");
    r.sim.replug();
    let (status, _, msg) = r.withheld(tz4, &bls_att(0x13, 12, 1)).await;
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("locked"), "{msg}");
    r.device.unlock(&["consensus"], PASS).await.unwrap();
    r.signed(tz4, &bls_att(0x13, 12, 1)).await;

    // Power lost after the device signed and persisted, before it
    // replied: nothing released; the retry is refused by the device.
    r.sim.unplug_after_next_sign();
    let before = r.signed_count();
    let (status, _, msg) = r.withheld(tz4, &bls_att(0x13, 13, 1)).await;
    assert_eq!(status, 503, "{msg}");
    assert_eq!(r.signed_count(), before + 1, "the device did sign");
    r.sim.replug();
    r.device.unlock(&["consensus"], PASS).await.unwrap();
    let (status, _, msg) = r.withheld(tz4, &bls_att(0x13, 13, 1)).await;
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("signing device"), "{msg}");
    assert_eq!(r.signed_count(), before + 1, "not signed twice");
    r.signed(tz4, &bls_att(0x13, 14, 1)).await;

    let mut seen = BTreeSet::new();
    for (key, m) in r.sim.signed() {
        assert!(
            seen.insert((key, m[0], m[38..42].to_vec())),
            "signed twice: {m:02x?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_the_keys_of_one_tezsign_take_turns() {
    let r = Arc::new(rig(ServiceOptions::default(), &[]).await);
    let (tz4, companion) = (r.consensus.0, r.companion.0);
    let mut tasks = Vec::new();
    for level in 20..30u32 {
        for pkh in [tz4, companion] {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                let data = bls_att(0x13, level, 1);
                let result = r.service.handle_sign(call(pkh, &data)).await;
                (pkh, level, result.map(|s| s.signature().to_vec()))
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        let (pkh, level, result) = t.await.unwrap();
        match result {
            Ok(sig) => {
                assert!(r.sim.verify(&pkh, &bls_att(0x13, level, 1), &sig));
                ok += 1;
            }
            // A lower level that came after a higher one.
            Err(w) => assert_eq!(w.error.status(), 409, "{}", w.error),
        }
    }
    assert!(ok >= 2, "each key signed something");
    for key in [tz4, companion] {
        let levels: Vec<u32> = r
            .sim
            .signed()
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, m)| u32::from_be_bytes(m[38..42].try_into().unwrap()))
            .collect();
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_signs_no_generic_operation_and_checks_its_public_key() {
    let r = rig(
        ServiceOptions {
            magic_bytes: MagicBytes::consensus_and_generic(),
            allow_proof_of_possession: true,
            ..ServiceOptions::default()
        },
        &[OperationKind::Transaction],
    )
    .await;
    let tz4 = r.consensus.0;
    // 0x03 ‖ branch ‖ a transaction by the key.
    let mut op = vec![0x03];
    op.extend_from_slice(&[0xbb; 32]);
    op.extend_from_slice(&[108, 3]);
    op.extend_from_slice(&tz4.hash);
    op.extend_from_slice(&[0xe8, 0x07, 0x05, 0xf7, 0x0b, 0x81, 0x02]);
    op.extend_from_slice(&[0xc0, 0x84, 0x3d, 0x00, 0x00]);
    op.extend_from_slice(&[0x22; 20]);
    op.push(0x00);
    let (status, _, msg) = r.withheld(tz4, &op).await;
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("signing device"), "{msg}");
    assert!(r.sim.signed().is_empty());
    // The simulated gadget reports no proof of possession.
    let e = r.service.prove_possession(&tz4, None).unwrap_err();
    assert_eq!(e.status(), 400, "{e}");

    // A public key that is not the device key's is refused up front.
    let signer = r.device.signer("consensus").await.unwrap();
    let e = ServedKey::device(
        QueuedSigner::new(signer, DeviceQueue::new("x", Duration::from_secs(1))),
        r.companion.1,
        "tezsign alias consensus",
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not the key"), "{e}");
}
