//! Public keys and signatures as the Tezos Ledger apps return them, turned
//! into Tezos forms.

use blake2::digest::{consts::U20, Digest};

use crate::usb::error::DeviceError;
use crate::usb::ledger::DerivationType;
use crate::watermark::KeyHash;

/// A public key as a Tezos Ledger app returns it (after its length byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPublicKey {
    /// How it was derived.
    pub derivation: DerivationType,
    /// The app's bytes: for ed25519 a prefix byte then 32 bytes; for
    /// secp256k1 and P-256 an uncompressed (65) or compressed (33) point.
    pub raw: Vec<u8>,
}

impl LedgerPublicKey {
    /// The key in Tezos form: 32 bytes (ed25519), 33 compressed bytes
    /// (secp256k1, P-256), or as given (BLS).
    pub fn tezos_bytes(&self) -> Result<Vec<u8>, DeviceError> {
        let raw = &self.raw;
        let bad = |why: &str| {
            DeviceError::bad_reply(
                "public key",
                format!("{why}: {} bytes for {:?}", raw.len(), self.derivation),
            )
        };
        match self.derivation {
            DerivationType::Ed25519 | DerivationType::Bip32Ed25519 => match raw.len() {
                33 => Ok(raw[1..].to_vec()),
                32 => Ok(raw.clone()),
                _ => Err(bad("not an ed25519 key")),
            },
            DerivationType::Secp256k1 | DerivationType::P256 => match (raw.len(), raw.first()) {
                (65, Some(0x04)) => {
                    let mut c = Vec::with_capacity(33);
                    c.push(0x02 | (raw[64] & 1));
                    c.extend_from_slice(&raw[1..33]);
                    Ok(c)
                }
                (33, Some(0x02 | 0x03)) => Ok(raw.clone()),
                _ => Err(bad("not an elliptic-curve point")),
            },
            DerivationType::Bls12_381 => {
                if raw.is_empty() {
                    Err(bad("empty"))
                } else {
                    Ok(raw.clone())
                }
            }
        }
    }

    /// The key's hash (tz1..tz4): blake2b-160 of [`tezos_bytes`](Self::tezos_bytes).
    pub fn key_hash(&self) -> Result<KeyHash, DeviceError> {
        let bytes = self.tezos_bytes()?;
        let mut h = blake2::Blake2b::<U20>::new();
        h.update(&bytes);
        Ok(KeyHash {
            curve: self.derivation.curve(),
            hash: h.finalize().into(),
        })
    }
}

/// A signature in Tezos form: ed25519 as is (64 bytes), secp256k1 and
/// P-256 from the app's DER (whose first byte may carry parity bits) to
/// r‖s (64 bytes), BLS as is.
pub fn tezos_signature(derivation: DerivationType, raw: &[u8]) -> Result<Vec<u8>, DeviceError> {
    match derivation {
        DerivationType::Ed25519 | DerivationType::Bip32Ed25519 => {
            if raw.len() == 64 {
                Ok(raw.to_vec())
            } else {
                Err(DeviceError::bad_reply(
                    "signature",
                    format!("ed25519 signature of {} bytes", raw.len()),
                ))
            }
        }
        DerivationType::Secp256k1 | DerivationType::P256 => der_to_compact(raw),
        DerivationType::Bls12_381 => Ok(raw.to_vec()),
    }
}

fn der_to_compact(raw: &[u8]) -> Result<Vec<u8>, DeviceError> {
    let bad = |d: &str| DeviceError::bad_reply("signature", format!("DER: {d}"));
    if raw.len() < 8 || raw[0] & 0xFC != 0x30 {
        return Err(bad("no sequence"));
    }
    if raw[1] as usize != raw.len() - 2 {
        return Err(bad("sequence length"));
    }
    let mut out = Vec::with_capacity(64);
    let mut at = 2;
    for _ in 0..2 {
        if raw.get(at) != Some(&0x02) {
            return Err(bad("no integer"));
        }
        let len = *raw.get(at + 1).ok_or_else(|| bad("truncated"))? as usize;
        let int = raw
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| bad("truncated"))?;
        let int = match int {
            [0, rest @ ..] if len == 33 => rest,
            _ if len <= 32 => int,
            _ => return Err(bad("integer too long")),
        };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        at += 2 + len;
    }
    if at != raw.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_signatures_become_64_bytes() {
        // r with a leading zero (33 bytes), s short (31 bytes), parity bit set.
        let mut der = vec![0x31, 0, 0x02, 33, 0];
        der.extend([0x81; 32]);
        der.extend([0x02, 31]);
        der.extend([0x11; 31]);
        der[1] = (der.len() - 2) as u8;
        let c = tezos_signature(DerivationType::Secp256k1, &der).unwrap();
        assert_eq!(&c[..32], &[0x81; 32]);
        assert_eq!(c[32], 0);
        assert_eq!(&c[33..], &[0x11; 31]);
        assert!(tezos_signature(DerivationType::P256, &der[..der.len() - 1]).is_err());
        assert!(tezos_signature(DerivationType::Ed25519, &[0; 63]).is_err());
    }

    #[test]
    fn public_key_forms() {
        let ed = LedgerPublicKey {
            derivation: DerivationType::Ed25519,
            raw: [&[0x02][..], &[7; 32]].concat(),
        };
        assert_eq!(ed.tezos_bytes().unwrap(), vec![7; 32]);
        assert!(ed.key_hash().unwrap().to_string().starts_with("tz1"));
        let mut un = vec![0x04];
        un.extend([1; 32]);
        un.extend([3; 32]);
        let k = LedgerPublicKey {
            derivation: DerivationType::Secp256k1,
            raw: un,
        };
        let c = k.tezos_bytes().unwrap();
        assert_eq!(c[0], 0x03);
        assert_eq!(&c[1..], &[1; 32]);
        assert!(k.key_hash().unwrap().to_string().starts_with("tz2"));
        let bad = LedgerPublicKey {
            derivation: DerivationType::P256,
            raw: vec![0x05; 33],
        };
        assert!(bad.tezos_bytes().is_err());
    }
}
