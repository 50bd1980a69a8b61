//! A simulated Ledger (Tezos Baking app) behind a Speculos-compatible
//! port, as the signer's device tests configure it.

use blake2::digest::{consts::U32, Digest};
use slashguard::usb::ledger::{BipPath, DerivationType, LedgerHwm};
use slashguard::usb::sim::{LedgerSim, SpeculosServer};
use slashguard::watermark::ChainId;

use super::server::MAINNET;

/// The seed of every simulated Ledger: two of them hold the same key, as
/// a primary's and a backup's device restored from one seed phrase.
pub const SEED: [u8; 32] = [0x5a; 32];

/// A running simulated Ledger and its baking key.
pub struct Ledger {
    pub sim: LedgerSim,
    pub _speculos: SpeculosServer,
    pub addr: String,
    pub pk: [u8; 32],
    pub pkh: String,
}

/// A Ledger with the Tezos Baking app open, the default key authorized,
/// its mainnet watermark at (`level`, 0), behind a Speculos-compatible
/// port.
pub fn ledger(level: u32) -> Ledger {
    let sim = LedgerSim::new(SEED);
    let path = BipPath::tezos_default();
    sim.set_baking_key(Some((DerivationType::Ed25519, path.clone())));
    sim.set_hwm(ChainId(MAINNET), LedgerHwm::at(level), LedgerHwm::at(0));
    let speculos = SpeculosServer::start(sim.clone()).unwrap();
    let pk = sim.public_key(DerivationType::Ed25519, &path);
    let pkh = slashguard::keys::PublicKey::Ed25519(pk).hash().to_string();
    Ledger {
        addr: speculos.addr().to_string(),
        sim,
        _speculos: speculos,
        pk,
        pkh,
    }
}

/// Check an ed25519 signature over blake2b-256 of `data` (what the Tezos
/// Baking app signs), with ed25519-dalek rather than the crate's code.
pub fn verify(pk: &[u8; 32], data: &[u8], sig: &[u8]) {
    let digest = blake2::Blake2b::<U32>::digest(data);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
    vk.verify_strict(&digest, &sig)
        .expect("the signature verifies against the Ledger key");
}

/// The 64 signature bytes of an `edsig`, decoded by hand.
pub fn edsig(b58: &str) -> Vec<u8> {
    let raw = bs58::decode(b58).with_check(None).into_vec().unwrap();
    assert_eq!(&raw[..5], &[0x09, 0xf5, 0xcd, 0x86, 0x12], "edsig prefix");
    raw[5..].to_vec()
}
