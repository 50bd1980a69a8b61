//! The stored form of one watermark entry, shared by the file and etcd
//! backends. Each entry names its own key, so a value found under the wrong
//! key (or a foreign one) is detected, and carries a CRC so garbage is never
//! taken for a mark.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgWM` |
//! | 1 | version (1) |
//! | 4 | chain id |
//! | 1 | curve tag (0 ed25519, 1 secp256k1, 2 p256, 3 bls) |
//! | 20 | public key hash |
//! | 1 | kind (the magic byte: 0x11, 0x12, 0x13) |
//! | 4 | level, little-endian |
//! | 4 | round, little-endian |
//! | 1 | 1 if a payload hash follows as meaningful, else 0 |
//! | 32 | payload hash (zeros when absent) |
//! | 4 | CRC-32 of every byte above, little-endian |

use crate::error::FormatError;
use crate::watermark::{
    ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadHash, Watermark, WatermarkKey,
};

const MAGIC: &[u8; 4] = b"sgWM";
const VERSION: u8 = 1;

/// Encoded size of one entry.
pub const ENTRY_LEN: usize = 76;

/// Encode one entry.
pub fn encode_entry(key: &WatermarkKey, wm: &Watermark) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0..4].copy_from_slice(MAGIC);
    out[4] = VERSION;
    out[5..9].copy_from_slice(&key.chain.0);
    out[9] = key.key.curve.tag();
    out[10..30].copy_from_slice(&key.key.hash);
    out[30] = key.kind.magic();
    out[31..35].copy_from_slice(&wm.mark.level.to_le_bytes());
    out[35..39].copy_from_slice(&wm.mark.round.to_le_bytes());
    if let Some(h) = wm.payload_hash {
        out[39] = 1;
        out[40..72].copy_from_slice(&h.0);
    }
    let crc = crc32fast::hash(&out[..72]);
    out[72..76].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decode one entry. With `expected`, an entry for another key is refused as
/// [`FormatError::InvalidField`] on `key`.
pub fn decode_entry(
    bytes: &[u8],
    expected: Option<&WatermarkKey>,
) -> Result<(WatermarkKey, Watermark), FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    if bytes.len() < ENTRY_LEN {
        return Err(FormatError::Truncated {
            needed: ENTRY_LEN,
            have: bytes.len(),
        });
    }
    if bytes.len() > ENTRY_LEN {
        return Err(FormatError::TrailingBytes {
            count: bytes.len() - ENTRY_LEN,
        });
    }
    if &bytes[0..4] != MAGIC {
        return Err(FormatError::BadMagic {
            found: bytes[0..4].to_vec(),
        });
    }
    if bytes[4] != VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: bytes[4],
            supported: VERSION,
        });
    }
    let stored = u32::from_le_bytes(bytes[72..76].try_into().expect("fixed size"));
    let computed = crc32fast::hash(&bytes[..72]);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    let invalid = |field, detail: String| FormatError::InvalidField { field, detail };
    let curve =
        Curve::from_tag(bytes[9]).ok_or_else(|| invalid("curve", format!("tag {}", bytes[9])))?;
    let kind = ConsensusKind::from_magic(bytes[30])
        .ok_or_else(|| invalid("kind", format!("byte {:#04x}", bytes[30])))?;
    let key = WatermarkKey {
        chain: ChainId(bytes[5..9].try_into().expect("fixed size")),
        key: KeyHash {
            curve,
            hash: bytes[10..30].try_into().expect("fixed size"),
        },
        kind,
    };
    if let Some(exp) = expected {
        if *exp != key {
            return Err(invalid(
                "key",
                format!("entry is for {key}, expected {exp}"),
            ));
        }
    }
    let mark = Mark {
        level: u32::from_le_bytes(bytes[31..35].try_into().expect("fixed size")),
        round: u32::from_le_bytes(bytes[35..39].try_into().expect("fixed size")),
    };
    let payload_hash = match bytes[39] {
        0 => None,
        1 => Some(PayloadHash(bytes[40..72].try_into().expect("fixed size"))),
        b => return Err(invalid("payload hash flag", format!("{b}"))),
    };
    Ok((key, Watermark { mark, payload_hash }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WatermarkKey {
        WatermarkKey {
            chain: ChainId([1, 2, 3, 4]),
            key: KeyHash {
                curve: Curve::Bls,
                hash: [9; 20],
            },
            kind: ConsensusKind::Attestation,
        }
    }

    #[test]
    fn roundtrip_and_every_corruption_detected() {
        let wm = Watermark {
            mark: Mark {
                level: 77,
                round: 2,
            },
            payload_hash: Some(PayloadHash([5; 32])),
        };
        let bytes = encode_entry(&key(), &wm);
        assert_eq!(decode_entry(&bytes, Some(&key())).unwrap(), (key(), wm));
        for cut in 0..ENTRY_LEN {
            assert!(decode_entry(&bytes[..cut], None).is_err());
        }
        for i in 0..ENTRY_LEN {
            for bit in 0..8 {
                let mut b = bytes;
                b[i] ^= 1 << bit;
                assert!(decode_entry(&b, Some(&key())).is_err(), "flip {i}.{bit}");
            }
        }
        let mut other = key();
        other.kind = ConsensusKind::Block;
        assert!(matches!(
            decode_entry(&bytes, Some(&other)),
            Err(FormatError::InvalidField { field: "key", .. })
        ));
    }
}
