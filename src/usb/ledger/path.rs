//! Key selection on a Ledger: the BIP32 path and the derivation type
//! (the APDU's P2).

use std::fmt;
use std::str::FromStr;

use crate::usb::error::DeviceError;
use crate::watermark::Curve;

/// Set on a path component for hardened derivation (`'`).
pub const HARDENED: u32 = 0x8000_0000;

/// Most components the Tezos apps accept.
pub const MAX_COMPONENTS: usize = 10;

/// A BIP32 derivation path such as `44'/1729'/0'/0'`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BipPath(Vec<u32>);

impl BipPath {
    /// From raw components (hardened bit included); at most 10.
    pub fn new(components: Vec<u32>) -> Result<Self, DeviceError> {
        if components.len() > MAX_COMPONENTS {
            return Err(DeviceError::Invalid(format!(
                "a BIP32 path has at most {MAX_COMPONENTS} components, got {}",
                components.len()
            )));
        }
        Ok(BipPath(components))
    }

    /// The Tezos default account path `44'/1729'/0'/0'`.
    pub fn tezos_default() -> Self {
        BipPath(vec![44 | HARDENED, 1729 | HARDENED, HARDENED, HARDENED])
    }

    /// The components.
    pub fn components(&self) -> &[u32] {
        &self.0
    }

    /// Wire form: count (1 byte) then each component big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 4 * self.0.len());
        v.push(self.0.len() as u8);
        for c in &self.0 {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v
    }

    /// Parse the wire form at the start of `bytes`; returns the path and
    /// the bytes it used.
    pub fn decode_prefix(bytes: &[u8]) -> Option<(Self, usize)> {
        let &count = bytes.first()?;
        let count = count as usize;
        if count > MAX_COMPONENTS || bytes.len() < 1 + 4 * count {
            return None;
        }
        let comps = bytes[1..1 + 4 * count]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some((BipPath(comps), 1 + 4 * count))
    }
}

impl fmt::Display for BipPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for c in &self.0 {
            if c & HARDENED != 0 {
                write!(f, "/{}'", c & !HARDENED)?;
            } else {
                write!(f, "/{c}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for BipPath {
    type Err = DeviceError;
    /// `m/44'/1729'/0'/0'`, `44'/1729'/0'/0'` or with `h` for hardened.
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let body = s.strip_prefix("m/").unwrap_or(s);
        let mut comps = Vec::new();
        for part in body.split('/').filter(|p| !p.is_empty()) {
            let (num, hard) = match part.strip_suffix('\'').or_else(|| part.strip_suffix('h')) {
                Some(n) => (n, true),
                None => (part, false),
            };
            let n: u32 = num
                .parse()
                .ok()
                .filter(|n| n & HARDENED == 0)
                .ok_or_else(|| {
                    DeviceError::Invalid(format!("bad BIP32 path component {part:?} in {s:?}"))
                })?;
            comps.push(if hard { n | HARDENED } else { n });
        }
        BipPath::new(comps)
    }
}

/// The derivation type byte (APDU P2) of the Tezos apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DerivationType {
    /// 0: ed25519 (SLIP-10), a tz1 key.
    Ed25519,
    /// 1: secp256k1, a tz2 key.
    Secp256k1,
    /// 2: P-256, a tz3 key.
    P256,
    /// 3: BIP32-Ed25519, a tz1 key.
    Bip32Ed25519,
    /// 4: BLS12-381, a tz4 key.
    Bls12_381,
}

impl DerivationType {
    /// The P2 byte.
    pub fn p2(self) -> u8 {
        match self {
            DerivationType::Ed25519 => 0,
            DerivationType::Secp256k1 => 1,
            DerivationType::P256 => 2,
            DerivationType::Bip32Ed25519 => 3,
            DerivationType::Bls12_381 => 4,
        }
    }

    /// Inverse of [`p2`](Self::p2).
    pub fn from_p2(b: u8) -> Option<Self> {
        [
            DerivationType::Ed25519,
            DerivationType::Secp256k1,
            DerivationType::P256,
            DerivationType::Bip32Ed25519,
            DerivationType::Bls12_381,
        ]
        .into_iter()
        .find(|d| d.p2() == b)
    }

    /// The Tezos signature scheme of keys derived this way.
    pub fn curve(self) -> Curve {
        match self {
            DerivationType::Ed25519 | DerivationType::Bip32Ed25519 => Curve::Ed25519,
            DerivationType::Secp256k1 => Curve::Secp256k1,
            DerivationType::P256 => Curve::P256,
            DerivationType::Bls12_381 => Curve::Bls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_text_and_wire_forms() {
        let p: BipPath = "m/44'/1729'/0'/0'".parse().unwrap();
        assert_eq!(p, BipPath::tezos_default());
        assert_eq!(p.to_string(), "m/44'/1729'/0'/0'");
        assert_eq!("44h/1729h/0h/0h".parse::<BipPath>().unwrap(), p);
        let wire = p.encode();
        assert_eq!(
            wire,
            [4, 0x80, 0, 0, 44, 0x80, 0, 0x06, 0xc1, 0x80, 0, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(BipPath::decode_prefix(&wire), Some((p, 17)));
        assert!(BipPath::decode_prefix(&wire[..16]).is_none());
        assert!("m/44'/x".parse::<BipPath>().is_err());
        assert!("m/2147483648".parse::<BipPath>().is_err());
        assert!("1/2/3/4/5/6/7/8/9/10/11".parse::<BipPath>().is_err());
    }
}
