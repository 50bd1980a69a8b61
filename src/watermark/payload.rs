//! Parsing the bytes a baker asks to sign, exactly. Offsets, tags and
//! lengths are those of `shared/reference/formats.md` section 1: the
//! operation tag at byte 37 says the layout of a (pre)attestation, and it
//! must agree with the magic byte and the key's scheme; lengths are exact.
//! Anything a baker does not send is a typed [`PayloadError`] naming the
//! byte and its value, and moves no watermark.

use crate::watermark::{ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadHash, WatermarkKey};

/// The operation tags a signer is asked to sign (byte 37 of a
/// (pre)attestation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationTag {
    /// 20: preattestation of a tz1/tz2/tz3 key (with a slot).
    Preattestation,
    /// 21: attestation of a tz1/tz2/tz3 key (with a slot).
    Attestation,
    /// 23: attestation with DAL content of a tz1/tz2/tz3 key.
    AttestationWithDal,
    /// 40: preattestation of a tz4 key (no slot).
    BlsPreattestation,
    /// 41: attestation of a tz4 key (no slot, no DAL content).
    BlsAttestation,
}

impl OperationTag {
    /// The tag byte.
    pub fn byte(self) -> u8 {
        match self {
            OperationTag::Preattestation => 20,
            OperationTag::Attestation => 21,
            OperationTag::AttestationWithDal => 23,
            OperationTag::BlsPreattestation => 40,
            OperationTag::BlsAttestation => 41,
        }
    }

    /// The tags a key of `curve` may sign under the magic byte of `kind`;
    /// none for blocks.
    pub fn allowed(kind: ConsensusKind, curve: Curve) -> &'static [OperationTag] {
        use OperationTag::*;
        match (kind, curve) {
            (ConsensusKind::Block, _) => &[],
            (ConsensusKind::Preattestation, Curve::Bls) => &[BlsPreattestation],
            (ConsensusKind::Attestation, Curve::Bls) => &[BlsAttestation],
            (ConsensusKind::Preattestation, _) => &[Preattestation],
            (ConsensusKind::Attestation, _) => &[Attestation, AttestationWithDal],
        }
    }

    /// Whether the layout carries a 2-byte slot before the level.
    pub fn has_slot(self) -> bool {
        !matches!(
            self,
            OperationTag::BlsPreattestation | OperationTag::BlsAttestation
        )
    }
}

/// What a key signs for. A companion key is declared as such by the
/// operator ([`GuardedSigner::with_role`](crate::GuardedSigner::with_role)),
/// never guessed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyRole {
    /// A consensus (baking) key: blocks, preattestations and attestations.
    #[default]
    Consensus,
    /// The companion key of a tz4 baker: only tz4 attestations (magic 0x13,
    /// tag 41, 78 bytes), never blocks or preattestations.
    Companion,
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::Consensus => "consensus",
            KeyRole::Companion => "companion",
        })
    }
}

/// Why bytes cannot be guarded. Every variant that concerns a byte names
/// its offset and value.
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
    /// Not exactly the length its tag gives.
    #[error("{kind} with tag {tag} must be {expected} bytes long, got {have} (bytes from offset {expected} on are not part of it)")]
    WrongLength {
        /// The kind the magic byte announced.
        kind: ConsensusKind,
        /// The operation tag at byte 37.
        tag: u8,
        /// The exact length of that layout.
        expected: usize,
        /// Bytes given.
        have: usize,
    },
    /// Pre-Tenderbake block or endorsement (0x01, 0x02): never signed.
    #[error("legacy pre-Tenderbake payload (magic {0:#04x} at byte 0) refused")]
    Legacy(u8),
    /// A generic operation (0x03) has no watermark; a guarded consensus
    /// signer does not sign it.
    #[error(
        "generic operation (magic 0x03 at byte 0) carries no watermark; not signed by a consensus guard"
    )]
    NotConsensus,
    /// Any other first byte.
    #[error("unknown magic byte {0:#04x} at byte 0")]
    UnknownMagic(u8),
    /// The operation tag (byte 37) is not one a key of this scheme signs
    /// under this magic byte (for example 0x13 with a preattestation tag, a
    /// slot-bearing tag for a tz4 key, aggregates 30/31, tag 0).
    #[error("operation tag {tag} at byte {offset} is not signed by a {curve:?} key under magic {magic:#04x}")]
    BadTag {
        /// Always 37.
        offset: usize,
        /// The tag found.
        tag: u8,
        /// The magic byte.
        magic: u8,
        /// The key's scheme.
        curve: Curve,
    },
    /// A level or round outside Tezos' int32 range.
    #[error("{field} {value} at byte {offset} out of range (Tezos uses non-negative int32)")]
    OutOfRange {
        /// `level` or `round`.
        field: &'static str,
        /// Where it is.
        offset: usize,
        /// The raw value.
        value: u32,
    },
    /// A block whose fitness is not the documented Tenderbake shape
    /// (`02`, level, optional locked round, -1 - predecessor round, round:
    /// 33 or 37 bytes).
    #[error("block fitness: {detail} (value {value:#x} at byte {offset})")]
    BadFitness {
        /// Where the offending field starts.
        offset: usize,
        /// Its value.
        value: u32,
        /// What is wrong.
        detail: &'static str,
    },
    /// The DAL content of a tag-23 attestation is not one canonical,
    /// non-negative `Data_encoding.z` number ending where the payload ends.
    #[error("DAL bitset: {detail} (byte {value:#04x} at offset {offset})")]
    BadDal {
        /// The offending byte.
        offset: usize,
        /// Its value.
        value: u8,
        /// What is wrong.
        detail: &'static str,
    },
    /// A companion key is asked for something other than a tz4
    /// attestation (magic 0x13, tag 41).
    #[error(
        "a companion key signs only tz4 attestations (0x13, tag 41); byte {offset} is {value:#04x}"
    )]
    NotForCompanion {
        /// 0 (magic) or 37 (tag).
        offset: usize,
        /// The byte found.
        value: u8,
    },
    /// A companion key must be a tz4 (BLS) key.
    #[error("a companion key must be a tz4 key, not {0:?}")]
    CompanionScheme(Curve),
}

/// The consensus fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusPayload {
    /// Block, preattestation or attestation.
    pub kind: ConsensusKind,
    /// The operation tag of a (pre)attestation; `None` for blocks.
    pub tag: Option<OperationTag>,
    /// The chain it is for.
    pub chain: ChainId,
    /// Its (level, round).
    pub mark: Mark,
    /// blake2b-256 of all its bytes.
    pub payload_hash: PayloadHash,
}

/// A request to sign: the watermark key plus the position and identity of
/// the message, and (once signed) the signature to store with the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignRequest {
    /// What the watermark is kept for.
    pub key: WatermarkKey,
    /// The requested (level, round).
    pub mark: Mark,
    /// blake2b-256 of the bytes to sign.
    pub payload_hash: PayloadHash,
    /// The signature produced for these bytes (not yet released). A store
    /// that advances keeps it with the mark, so that a repeat returns these
    /// very bytes. `None` when authorizing before signing.
    pub signature: Option<crate::watermark::StoredSignature>,
}

impl SignRequest {
    /// Parse `bytes` as a consensus payload to be signed by the consensus
    /// key `key`.
    pub fn parse(bytes: &[u8], key: KeyHash) -> Result<Self, PayloadError> {
        Self::parse_as(bytes, key, KeyRole::Consensus)
    }

    /// Parse `bytes` as a payload to be signed by `key` in `role`.
    pub fn parse_as(bytes: &[u8], key: KeyHash, role: KeyRole) -> Result<Self, PayloadError> {
        let p = ConsensusPayload::parse_as(bytes, key.curve, role)?;
        Ok(SignRequest {
            key: WatermarkKey {
                chain: p.chain,
                key,
                kind: p.kind,
            },
            mark: p.mark,
            payload_hash: p.payload_hash,
            signature: None,
        })
    }

    /// A request without a signature (to authorize before signing).
    pub fn new(key: WatermarkKey, mark: Mark, payload_hash: PayloadHash) -> Self {
        SignRequest {
            key,
            mark,
            payload_hash,
            signature: None,
        }
    }
}

/// Offset of the length prefix of a block's fitness.
pub const BLOCK_FITNESS_AT: usize = 83;
/// Offset of the operation tag of a (pre)attestation.
pub const TAG_AT: usize = 37;
/// Exact length of a tag 20/21 (pre)attestation.
pub const SLOT_ATTESTATION_LEN: usize = 80;
/// Exact length of a tag 40/41 (tz4) (pre)attestation.
pub const BLS_ATTESTATION_LEN: usize = 78;

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn in_range(field: &'static str, offset: usize, value: u32) -> Result<u32, PayloadError> {
    if value > i32::MAX as u32 {
        Err(PayloadError::OutOfRange {
            field,
            offset,
            value,
        })
    } else {
        Ok(value)
    }
}

/// Check that `bytes` is exactly one canonical, non-negative
/// `Data_encoding.z` number: the first byte holds a continuation bit (7),
/// the sign (6) and 6 value bits; later bytes a continuation bit and 7 value
/// bits; the last byte has no continuation bit and, unless it is the only
/// byte, is not zero (a trailing zero group is not canonical). `base` is
/// the offset of `bytes` in the payload, for errors.
pub fn check_dal_bitset(bytes: &[u8], base: usize) -> Result<(), PayloadError> {
    let bad = |i: usize, detail| PayloadError::BadDal {
        offset: base + i,
        value: bytes.get(i).copied().unwrap_or(0),
        detail,
    };
    let Some(&first) = bytes.first() else {
        return Err(bad(0, "missing"));
    };
    if first & 0x40 != 0 {
        return Err(bad(0, "negative (sign bit set)"));
    }
    let end = match bytes.iter().position(|b| b & 0x80 == 0) {
        Some(end) => end,
        None => return Err(bad(bytes.len() - 1, "number does not end in the payload")),
    };
    if end + 1 != bytes.len() {
        return Err(bad(end + 1, "bytes after the number"));
    }
    if end > 0 && bytes[end] == 0 {
        return Err(bad(end, "not canonical (trailing zero group)"));
    }
    Ok(())
}

impl ConsensusPayload {
    /// Parse a consensus payload signed by a consensus key of scheme
    /// `curve`.
    pub fn parse(bytes: &[u8], curve: Curve) -> Result<Self, PayloadError> {
        Self::parse_as(bytes, curve, KeyRole::Consensus)
    }

    /// Parse a payload signed by a key of scheme `curve` in `role`.
    pub fn parse_as(bytes: &[u8], curve: Curve, role: KeyRole) -> Result<Self, PayloadError> {
        let &magic = bytes.first().ok_or(PayloadError::Empty)?;
        let kind = match magic {
            0x01 | 0x02 => return Err(PayloadError::Legacy(magic)),
            0x03 => return Err(PayloadError::NotConsensus),
            m => ConsensusKind::from_magic(m).ok_or(PayloadError::UnknownMagic(m))?,
        };
        if role == KeyRole::Companion {
            if curve != Curve::Bls {
                return Err(PayloadError::CompanionScheme(curve));
            }
            if kind != ConsensusKind::Attestation {
                return Err(PayloadError::NotForCompanion {
                    offset: 0,
                    value: magic,
                });
            }
        }
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
        let chain = ChainId([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let (tag, level, round) = match kind {
            ConsensusKind::Block => {
                need(BLOCK_FITNESS_AT + 4)?;
                let level = in_range("level", 5, be32(bytes, 5))?;
                let round = check_fitness(bytes, level, need)?;
                (None, level, round)
            }
            ConsensusKind::Preattestation | ConsensusKind::Attestation => {
                // magic chain(4) branch(32) tag(1) [slot(2)] level(4) round(4) payload_hash(32) [dal]
                need(TAG_AT + 1)?;
                let byte = bytes[TAG_AT];
                let tag = OperationTag::allowed(kind, curve)
                    .iter()
                    .copied()
                    .find(|t| t.byte() == byte)
                    .ok_or(PayloadError::BadTag {
                        offset: TAG_AT,
                        tag: byte,
                        magic,
                        curve,
                    })?;
                if role == KeyRole::Companion && tag != OperationTag::BlsAttestation {
                    return Err(PayloadError::NotForCompanion {
                        offset: TAG_AT,
                        value: byte,
                    });
                }
                let fixed = if tag.has_slot() {
                    SLOT_ATTESTATION_LEN
                } else {
                    BLS_ATTESTATION_LEN
                };
                need(fixed)?;
                if tag == OperationTag::AttestationWithDal {
                    check_dal_bitset(&bytes[fixed..], fixed)?;
                } else if bytes.len() != fixed {
                    return Err(PayloadError::WrongLength {
                        kind,
                        tag: byte,
                        expected: fixed,
                        have: bytes.len(),
                    });
                }
                let level_at = if tag.has_slot() { 40 } else { 38 };
                let level = in_range("level", level_at, be32(bytes, level_at))?;
                let round = in_range("round", level_at + 4, be32(bytes, level_at + 4))?;
                (Some(tag), level, round)
            }
        };
        Ok(ConsensusPayload {
            kind,
            tag,
            chain,
            mark: Mark { level, round },
            payload_hash: PayloadHash::of(bytes),
        })
    }
}

/// Check a block's fitness (a list of length-prefixed items at
/// [`BLOCK_FITNESS_AT`]): `02`, the block's level, an optional locked round,
/// -1 - predecessor round, round. Returns the round.
fn check_fitness(
    bytes: &[u8],
    level: u32,
    need: impl Fn(usize) -> Result<(), PayloadError>,
) -> Result<u32, PayloadError> {
    let bad = |offset, value, detail| PayloadError::BadFitness {
        offset,
        value,
        detail,
    };
    let len = be32(bytes, BLOCK_FITNESS_AT);
    if len != 33 && len != 37 {
        return Err(bad(BLOCK_FITNESS_AT, len, "length is neither 33 nor 37"));
    }
    let start = BLOCK_FITNESS_AT + 4;
    need(start + len as usize)?;
    // Each item: (offset of its length prefix, expected length).
    let mut at = start;
    let mut item = |expected: &[u32], detail| {
        let n = be32(bytes, at);
        if !expected.contains(&n) {
            return Err(bad(at, n, detail));
        }
        let value_at = at + 4;
        at = value_at + n as usize;
        Ok((value_at, n))
    };
    let (v_at, _) = item(&[1], "version item is not 1 byte")?;
    if bytes[v_at] != 0x02 {
        return Err(bad(v_at, u32::from(bytes[v_at]), "version is not 02"));
    }
    let (l_at, _) = item(&[4], "level item is not 4 bytes")?;
    if be32(bytes, l_at) != level {
        return Err(bad(
            l_at,
            be32(bytes, l_at),
            "level differs from the header's",
        ));
    }
    let locked_len = if len == 37 { 4 } else { 0 };
    let (lr_at, _) = item(&[locked_len], "locked round item has the wrong length")?;
    if locked_len == 4 {
        in_range("locked round", lr_at, be32(bytes, lr_at))?;
    }
    let (p_at, _) = item(&[4], "predecessor round item is not 4 bytes")?;
    if be32(bytes, p_at) as i32 >= 0 {
        return Err(bad(
            p_at,
            be32(bytes, p_at),
            "-1 - predecessor round is not negative",
        ));
    }
    let (r_at, _) = item(&[4], "round item is not 4 bytes")?;
    in_range("round", r_at, be32(bytes, r_at))
}
