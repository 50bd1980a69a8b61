//! Shared helpers for the usb_* tests: consensus payloads built from the
//! layouts of formats.md section 1, and simulator set-ups.
#![allow(dead_code)]

use std::time::Duration;

use slashguard::usb::ledger::{BipPath, DerivationType, LedgerHwm, LedgerTimeouts};
use slashguard::usb::sim::{LedgerSim, TezSignSim};
use slashguard::usb::{HidApdu, LedgerConfig, LedgerSigner, TezSignDevice};
use slashguard::watermark::ChainId;

/// Mainnet's chain id.
pub const CHAIN: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);
pub const PASS: &[u8] = b"correct horse";

/// A Tenderbake block header at (level, round); `salt` varies the bytes.
pub fn block(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    let mut v = vec![0x11];
    v.extend_from_slice(&chain.0);
    v.extend_from_slice(&level.to_be_bytes());
    v.push(1); // proto level
    v.extend_from_slice(&[salt; 32]); // predecessor
    v.extend_from_slice(&[0; 8]); // timestamp
    v.push(4); // validation passes
    v.extend_from_slice(&[2; 32]); // operations hash
    assert_eq!(v.len(), 83);
    // fitness: version 2, level, locked round (none), predecessor round, round
    let mut fitness = vec![0, 0, 0, 1, 2];
    fitness.extend_from_slice(&[0, 0, 0, 4]);
    fitness.extend_from_slice(&level.to_be_bytes());
    fitness.extend_from_slice(&[0, 0, 0, 0]);
    fitness.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]); // -1 - predecessor round 0
    fitness.extend_from_slice(&[0, 0, 0, 4]);
    fitness.extend_from_slice(&round.to_be_bytes());
    v.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
    v.extend_from_slice(&fitness);
    v.extend_from_slice(&[salt; 40]); // protocol data
    v
}

fn consensus(
    magic: u8,
    tag: u8,
    chain: ChainId,
    level: u32,
    round: u32,
    bls: bool,
    salt: u8,
) -> Vec<u8> {
    let mut v = vec![magic];
    v.extend_from_slice(&chain.0);
    v.extend_from_slice(&[9; 32]); // branch
    v.push(tag);
    if !bls {
        v.extend_from_slice(&[0, 7]); // slot
    }
    v.extend_from_slice(&level.to_be_bytes());
    v.extend_from_slice(&round.to_be_bytes());
    v.extend_from_slice(&[salt; 32]); // block payload hash
    v
}

/// An attestation (tag 21) for a tz1..tz3 key.
pub fn attestation(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    consensus(0x13, 21, chain, level, round, false, salt)
}

/// A preattestation (tag 20) for a tz1..tz3 key.
pub fn preattestation(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    consensus(0x12, 20, chain, level, round, false, salt)
}

/// An attestation for a tz4 key (tag 41, no slot).
pub fn bls_attestation(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    consensus(0x13, 41, chain, level, round, true, salt)
}

/// A preattestation for a tz4 key (tag 40, no slot).
pub fn bls_preattestation(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    consensus(0x12, 40, chain, level, round, true, salt)
}

/// A block for a tz4 key (same layout as any block).
pub fn bls_block(chain: ChainId, level: u32, round: u32, salt: u8) -> Vec<u8> {
    block(chain, level, round, salt)
}

pub fn fast_timeouts() -> LedgerTimeouts {
    LedgerTimeouts {
        // Generous: replies come at once; only a loaded CI machine is slow.
        command: Duration::from_secs(3),
        approval: Duration::from_secs(5),
    }
}

/// A simulated Ledger whose default key is authorized and whose main chain
/// watermark is at (level, 0).
pub fn ledger_at(level: u32) -> LedgerSim {
    let sim = LedgerSim::new([7; 32]);
    sim.set_hwm(CHAIN, LedgerHwm::at(level), LedgerHwm::at(level));
    sim.set_baking_key(Some((DerivationType::Ed25519, BipPath::tezos_default())));
    sim
}

pub async fn ledger_signer(sim: &LedgerSim) -> LedgerSigner {
    LedgerSigner::connect(
        HidApdu::new(sim.hid()),
        LedgerConfig {
            timeouts: fast_timeouts(),
            ..LedgerConfig::default()
        },
    )
    .await
    .expect("connect to the simulated Ledger")
}

/// A simulated TezSign with `consensus` and `companion`, unlocked.
pub async fn tezsign() -> (TezSignSim, TezSignDevice) {
    let sim = TezSignSim::new(PASS);
    sim.add_key("consensus", [1; 32]);
    sim.add_key("companion", [2; 32]);
    let dev = TezSignDevice::new(sim.transport(), Duration::from_secs(3));
    dev.unlock(&["consensus", "companion"], PASS)
        .await
        .expect("unlock");
    (sim, dev)
}

/// Verify an ed25519 signature of a payload (blake2b-256 of it, as Tezos).
pub fn verify_ed25519(pk: &[u8; 32], payload: &[u8], sig: &[u8]) -> bool {
    use ed25519_dalek::Verifier as _;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
    vk.verify(&slashguard::watermark::PayloadHash::of(payload).0, &sig)
        .is_ok()
}
