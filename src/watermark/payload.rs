//! Parsing the bytes a baker asks to sign. Offsets are those of
//! `shared/reference/formats.md` section 1; the parser is told the key's
//! scheme, because BLS attestations omit the slot and guessing from the
//! length is not safe.

use crate::watermark::{ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadHash, WatermarkKey};

/// Why bytes cannot be guarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// No bytes.
    #[error("empty payload")]
    Empty,
    /// Shorter than the layout of its kind.
    #[error("{kind} payload too short: {have} bytes, need at least {needed}")]
    TooShort {
        /// The kind the magic byte announced.
        kind: ConsensusKind,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        have: usize,
    },
    /// Pre-Tenderbake block or endorsement (0x01, 0x02): never signed.
    #[error("legacy pre-Tenderbake payload (magic {0:#04x}) refused")]
    Legacy(u8),
    /// A generic operation (0x03) has no watermark; a guarded consensus
    /// signer does not sign it.
    #[error(
        "generic operation (magic 0x03) carries no watermark; not signed by a consensus guard"
    )]
    NotConsensus,
    /// Any other first byte.
    #[error("unknown magic byte {0:#04x}")]
    UnknownMagic(u8),
    /// A level or round outside Tezos' int32 range.
    #[error("{field} {value} out of range (Tezos uses non-negative int32)")]
    OutOfRange {
        /// `level` or `round`.
        field: &'static str,
        /// The raw value.
        value: u32,
    },
    /// A block whose fitness is too short to hold a round.
    #[error("block fitness of {0} bytes cannot hold a round")]
    BadFitness(u32),
}

/// The consensus fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusPayload {
    /// Block, preattestation or attestation.
    pub kind: ConsensusKind,
    /// The chain it is for.
    pub chain: ChainId,
    /// Its (level, round).
    pub mark: Mark,
    /// blake2b-256 of all its bytes.
    pub payload_hash: PayloadHash,
}

/// A request to sign: the watermark key plus the position and identity of
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignRequest {
    /// What the watermark is kept for.
    pub key: WatermarkKey,
    /// The requested (level, round).
    pub mark: Mark,
    /// blake2b-256 of the bytes to sign.
    pub payload_hash: PayloadHash,
}

impl SignRequest {
    /// Parse `bytes` as a consensus payload to be signed by `key`.
    pub fn parse(bytes: &[u8], key: KeyHash) -> Result<Self, PayloadError> {
        let p = ConsensusPayload::parse(bytes, key.curve)?;
        Ok(SignRequest {
            key: WatermarkKey {
                chain: p.chain,
                key,
                kind: p.kind,
            },
            mark: p.mark,
            payload_hash: p.payload_hash,
        })
    }
}

const BLOCK_FITNESS_AT: usize = 83;

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("length checked"))
}

fn in_range(field: &'static str, value: u32) -> Result<u32, PayloadError> {
    if value > i32::MAX as u32 {
        Err(PayloadError::OutOfRange { field, value })
    } else {
        Ok(value)
    }
}

impl ConsensusPayload {
    /// Parse a consensus payload signed by a key of scheme `curve`.
    pub fn parse(bytes: &[u8], curve: Curve) -> Result<Self, PayloadError> {
        let &magic = bytes.first().ok_or(PayloadError::Empty)?;
        let kind = match magic {
            0x01 | 0x02 => return Err(PayloadError::Legacy(magic)),
            0x03 => return Err(PayloadError::NotConsensus),
            m => ConsensusKind::from_magic(m).ok_or(PayloadError::UnknownMagic(m))?,
        };
        let need = |needed: usize| {
            if bytes.len() < needed {
                Err(PayloadError::TooShort {
                    kind,
                    needed,
                    have: bytes.len(),
                })
            } else {
                Ok(())
            }
        };
        // Every kind carries the chain id at 1..5.
        need(5)?;
        let chain = ChainId(bytes[1..5].try_into().expect("length checked"));
        let (level, round) = match kind {
            ConsensusKind::Block => {
                need(BLOCK_FITNESS_AT + 4)?;
                let fitness_len = be32(bytes, BLOCK_FITNESS_AT);
                if fitness_len < 4 {
                    return Err(PayloadError::BadFitness(fitness_len));
                }
                let fitness_end = (BLOCK_FITNESS_AT + 4)
                    .checked_add(fitness_len as usize)
                    .ok_or(PayloadError::BadFitness(fitness_len))?;
                need(fitness_end)?;
                (be32(bytes, 5), be32(bytes, fitness_end - 4))
            }
            ConsensusKind::Preattestation | ConsensusKind::Attestation => {
                // magic chain(4) branch(32) tag(1) [slot(2)] level(4) round(4) payload_hash(32)
                let level_at = if curve == Curve::Bls { 38 } else { 40 };
                need(level_at + 8 + 32)?;
                (be32(bytes, level_at), be32(bytes, level_at + 4))
            }
        };
        Ok(ConsensusPayload {
            kind,
            chain,
            mark: Mark {
                level: in_range("level", level)?,
                round: in_range("round", round)?,
            },
            payload_hash: PayloadHash::of(bytes),
        })
    }
}
