//! The stored form of one watermark entry, shared by the file and etcd
//! backends. Each entry names its own key, so a value found under the wrong
//! key (or a foreign one) is detected, and carries a CRC so garbage is never
//! taken for a mark.
//!
//! Version 2 (written by this build, 173 bytes):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgWM` |
//! | 1 | version (2) |
//! | 4 | chain id |
//! | 1 | curve tag (0 ed25519, 1 secp256k1, 2 p256, 3 bls) |
//! | 20 | public key hash |
//! | 1 | kind (the magic byte: 0x11, 0x12, 0x13) |
//! | 4 | level, little-endian |
//! | 4 | round, little-endian |
//! | 1 | 1 if a payload hash follows as meaningful, else 0 |
//! | 32 | payload hash (zeros when absent) |
//! | 1 | signature length: 0 (none) to 96; non-zero only with a payload hash |
//! | 96 | the signature released at this mark, zero-padded |
//! | 4 | CRC-32 of every byte above, little-endian |
//!
//! Version 1 (76 bytes, read, never written) is the same without the two
//! signature fields: its entries carry no signature. A repeat of such an
//! entry's message is re-signed by a deterministic signer and refused for
//! any other (see [`Signer::deterministic`](crate::Signer::deterministic)).

use crate::error::FormatError;
use crate::watermark::{
    ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadHash, StoredSignature, Watermark,
    WatermarkKey, MAX_SIGNATURE_LEN,
};

const MAGIC: &[u8; 4] = b"sgWM";
const VERSION: u8 = 2;
const V1: u8 = 1;

/// Encoded size of one entry as written (version 2).
pub const ENTRY_LEN: usize = 173;
/// Encoded size of a version-1 entry (still read).
pub const ENTRY_V1_LEN: usize = 76;

/// Offset of the fields that v2 added (after the payload hash).
const SIG_AT: usize = 72;

/// Encode one entry (version 2).
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
        // A signature belongs to the message at the mark: never stored
        // without its payload hash.
        if let Some(sig) = wm.signature {
            let b = sig.as_bytes();
            out[SIG_AT] = b.len() as u8;
            out[SIG_AT + 1..SIG_AT + 1 + b.len()].copy_from_slice(b);
        }
    }
    let body = ENTRY_LEN - 4;
    let crc = crc32fast::hash(&out[..body]);
    out[body..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The length of the entry that starts `bytes`, from its version byte:
/// [`ENTRY_LEN`] for version 2, [`ENTRY_V1_LEN`] for version 1.
pub fn entry_len(bytes: &[u8]) -> Result<usize, FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    if bytes.len() < 5 {
        return Err(FormatError::Truncated {
            needed: 5,
            have: bytes.len(),
        });
    }
    if &bytes[0..4] != MAGIC {
        return Err(FormatError::BadMagic {
            found: bytes[0..4].to_vec(),
        });
    }
    match bytes[4] {
        VERSION => Ok(ENTRY_LEN),
        V1 => Ok(ENTRY_V1_LEN),
        found => Err(FormatError::UnsupportedVersion {
            found,
            supported: VERSION,
        }),
    }
}

/// Decode one entry of version 2 or 1. With `expected`, an entry for
/// another key is refused as [`FormatError::InvalidField`] on `key`.
pub fn decode_entry(
    bytes: &[u8],
    expected: Option<&WatermarkKey>,
) -> Result<(WatermarkKey, Watermark), FormatError> {
    let len = match entry_len(bytes) {
        Err(FormatError::Truncated { have, .. }) => {
            return Err(FormatError::Truncated {
                needed: ENTRY_V1_LEN,
                have,
            })
        }
        other => other?,
    };
    if bytes.len() < len {
        return Err(FormatError::Truncated {
            needed: len,
            have: bytes.len(),
        });
    }
    if bytes.len() > len {
        return Err(FormatError::TrailingBytes {
            count: bytes.len() - len,
        });
    }
    let body = len - 4;
    let stored = u32::from_le_bytes(fixed(&bytes[body..]));
    let computed = crc32fast::hash(&bytes[..body]);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    let invalid = |field, detail: String| FormatError::InvalidField { field, detail };
    let curve =
        Curve::from_tag(bytes[9]).ok_or_else(|| invalid("curve", format!("tag {}", bytes[9])))?;
    let kind = ConsensusKind::from_magic(bytes[30])
        .ok_or_else(|| invalid("kind", format!("byte {:#04x}", bytes[30])))?;
    let key = WatermarkKey {
        chain: ChainId(fixed(&bytes[5..9])),
        key: KeyHash {
            curve,
            hash: fixed(&bytes[10..30]),
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
        level: u32::from_le_bytes(fixed(&bytes[31..35])),
        round: u32::from_le_bytes(fixed(&bytes[35..39])),
    };
    let payload_hash = match bytes[39] {
        0 => None,
        1 => Some(PayloadHash(fixed(&bytes[40..72]))),
        b => return Err(invalid("payload hash flag", format!("{b}"))),
    };
    let signature = if len == ENTRY_LEN {
        let n = usize::from(bytes[SIG_AT]);
        let field = &bytes[SIG_AT + 1..SIG_AT + 1 + MAX_SIGNATURE_LEN];
        if n > MAX_SIGNATURE_LEN {
            return Err(invalid(
                "signature length",
                format!("{n} > {MAX_SIGNATURE_LEN}"),
            ));
        }
        if field[n..].iter().any(|b| *b != 0) {
            return Err(invalid("signature", "padding is not zero".to_string()));
        }
        match (n, payload_hash) {
            (0, _) => None,
            (_, None) => {
                return Err(invalid(
                    "signature",
                    "a signature without the payload hash it signs".to_string(),
                ))
            }
            (n, Some(_)) => StoredSignature::new(&field[..n]),
        }
    } else {
        None
    };
    Ok((
        key,
        Watermark {
            mark,
            payload_hash,
            signature,
        },
    ))
}

fn fixed<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
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
            signature: None,
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
