//! A small, pure encoder of the Tezos consensus payloads a baker sends to
//! its signer, from their fields (`shared/reference/formats.md` section 1).
//! Tests, benches and examples build their payloads with it, so that none
//! of them signs bytes that no baker produces. It is written from the
//! documented layout, independently of the crate's parser.
#![allow(dead_code)]

use slashguard::watermark::{ChainId, Curve};

/// The fields of a (pre)attestation.
#[derive(Debug, Clone, Copy)]
pub struct Consensus {
    pub chain: ChainId,
    /// Hash of the block the operation is built on.
    pub branch: [u8; 32],
    /// Only in the tz1/tz2/tz3 layout (tags 20, 21, 23).
    pub slot: u16,
    pub level: u32,
    pub round: u32,
    pub block_payload_hash: [u8; 32],
}

impl Consensus {
    pub fn new(chain: ChainId, level: u32, round: u32, block_payload_hash: [u8; 32]) -> Self {
        Consensus {
            chain,
            branch: [0xA5; 32],
            slot: 7,
            level,
            round,
            block_payload_hash,
        }
    }

    fn encode(&self, magic: u8, tag: u8) -> Vec<u8> {
        let mut b = vec![magic];
        b.extend_from_slice(&self.chain.0);
        b.extend_from_slice(&self.branch);
        b.push(tag);
        if tag < 40 {
            b.extend_from_slice(&self.slot.to_be_bytes());
        }
        b.extend_from_slice(&self.level.to_be_bytes());
        b.extend_from_slice(&self.round.to_be_bytes());
        b.extend_from_slice(&self.block_payload_hash);
        b
    }

    /// 0x12 with tag 20 (tz1..tz3, 80 bytes) or 40 (tz4, 78 bytes).
    pub fn preattestation(&self, curve: Curve) -> Vec<u8> {
        self.encode(0x12, if curve == Curve::Bls { 40 } else { 20 })
    }

    /// 0x13 with tag 21 (tz1..tz3, 80 bytes) or 41 (tz4, 78 bytes).
    pub fn attestation(&self, curve: Curve) -> Vec<u8> {
        self.encode(0x13, if curve == Curve::Bls { 41 } else { 21 })
    }

    /// 0x13 with tag 23 (tz1..tz3 only): the attestation then the DAL
    /// bitset as `Data_encoding.z`. `bits` is the bitset, little-endian
    /// (bit i of the number is bit i%8 of byte i/8).
    pub fn attestation_with_dal(&self, bits: &[u8]) -> Vec<u8> {
        let mut b = self.encode(0x13, 23);
        b.extend_from_slice(&z_natural(bits));
        b
    }

    /// Raw: any magic and tag, in the layout the tag implies (for tests of
    /// what must be refused).
    pub fn raw(&self, magic: u8, tag: u8, slot_layout: bool) -> Vec<u8> {
        let mut b = vec![magic];
        b.extend_from_slice(&self.chain.0);
        b.extend_from_slice(&self.branch);
        b.push(tag);
        if slot_layout {
            b.extend_from_slice(&self.slot.to_be_bytes());
        }
        b.extend_from_slice(&self.level.to_be_bytes());
        b.extend_from_slice(&self.round.to_be_bytes());
        b.extend_from_slice(&self.block_payload_hash);
        b
    }
}

/// `Data_encoding.z` of a non-negative number given little-endian: the
/// first byte holds 6 value bits, the sign bit (6, zero here) and a
/// continuation bit (7); every later byte 7 value bits and a continuation
/// bit. Canonical: no group past the highest set bit.
pub fn z_natural(le: &[u8]) -> Vec<u8> {
    let nbits = le
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| **b != 0)
        .map_or(0, |(i, b)| i * 8 + 8 - b.leading_zeros() as usize);
    let bit = |i: usize| (le.get(i / 8).copied().unwrap_or(0) >> (i % 8)) & 1;
    let take = |from: usize, n: usize| (0..n).fold(0u8, |acc, j| acc | (bit(from + j) << j));
    let mut out = vec![take(0, 6)];
    let mut at = 6;
    while at < nbits {
        *out.last_mut().unwrap() |= 0x80;
        out.push(take(at, 7));
        at += 7;
    }
    out
}

/// The fields of a Tenderbake block header as signed (magic 0x11).
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub chain: ChainId,
    pub level: u32,
    pub proto_level: u8,
    pub predecessor: [u8; 32],
    pub timestamp: i64,
    pub validation_passes: u8,
    pub operations_hash: [u8; 32],
    pub locked_round: Option<u32>,
    pub predecessor_round: u32,
    pub round: u32,
    pub context: [u8; 32],
    pub payload_hash: [u8; 32],
}

impl Block {
    pub fn new(chain: ChainId, level: u32, round: u32, payload_hash: [u8; 32]) -> Self {
        Block {
            chain,
            level,
            proto_level: 2,
            predecessor: [0xB1; 32],
            timestamp: 1_700_000_000,
            validation_passes: 4,
            operations_hash: [0xB2; 32],
            locked_round: None,
            predecessor_round: 0,
            round,
            context: [0xB3; 32],
            payload_hash,
        }
    }

    /// The fitness: a list of length-prefixed items `02`, level, locked
    /// round (empty when none), -1 - predecessor round, round.
    pub fn fitness(&self) -> Vec<u8> {
        let locked = self.locked_round.map(u32::to_be_bytes);
        let pred = (-1i32 - self.predecessor_round as i32).to_be_bytes();
        let mut f = Vec::new();
        for item in [
            &[0x02][..],
            &self.level.to_be_bytes()[..],
            locked.as_ref().map_or(&[][..], |l| &l[..]),
            &pred[..],
            &self.round.to_be_bytes()[..],
        ] {
            f.extend_from_slice(&(item.len() as u32).to_be_bytes());
            f.extend_from_slice(item);
        }
        f
    }

    /// 0x11, the shell header, then the Tenderbake protocol data without
    /// its signature.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_fitness(&self.fitness())
    }

    /// As [`encode`](Self::encode), with the fitness bytes given.
    pub fn encode_with_fitness(&self, fitness: &[u8]) -> Vec<u8> {
        let mut b = vec![0x11];
        b.extend_from_slice(&self.chain.0);
        b.extend_from_slice(&self.level.to_be_bytes());
        b.push(self.proto_level);
        b.extend_from_slice(&self.predecessor);
        b.extend_from_slice(&self.timestamp.to_be_bytes());
        b.push(self.validation_passes);
        b.extend_from_slice(&self.operations_hash);
        b.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
        b.extend_from_slice(fitness);
        b.extend_from_slice(&self.context);
        b.extend_from_slice(&self.payload_hash); // payload hash
        b.extend_from_slice(&0u32.to_be_bytes()); // payload round
        b.extend_from_slice(&[0; 8]); // proof of work nonce
        b.push(0); // no seed nonce hash
        b.push(0); // per-block votes
        b
    }
}
