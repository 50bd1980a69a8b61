//! Names of what a watermark is kept for: chain, key and kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A Tezos chain id (4 bytes; shown as `Net...` in base58check).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(pub [u8; 4]);

const CHAIN_PREFIX: [u8; 3] = [87, 82, 0];

/// The signature scheme of a Tezos key; it decides the payload layout
/// (BLS attestations carry no slot) and the address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Curve {
    /// tz1
    Ed25519,
    /// tz2
    Secp256k1,
    /// tz3
    P256,
    /// tz4 (BLS12-381)
    Bls,
}

impl Curve {
    fn prefix(self) -> [u8; 3] {
        match self {
            Curve::Ed25519 => [6, 161, 159],
            Curve::Secp256k1 => [6, 161, 161],
            Curve::P256 => [6, 161, 164],
            Curve::Bls => [6, 161, 166],
        }
    }

    /// The one-byte tag used in slashguard's stored formats.
    pub fn tag(self) -> u8 {
        match self {
            Curve::Ed25519 => 0,
            Curve::Secp256k1 => 1,
            Curve::P256 => 2,
            Curve::Bls => 3,
        }
    }

    /// Inverse of [`Curve::tag`].
    pub fn from_tag(tag: u8) -> Option<Curve> {
        [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls]
            .into_iter()
            .find(|c| c.tag() == tag)
    }
}

/// A Tezos public key hash (`tz1...`, `tz4...`): 20 bytes and a scheme.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash {
    /// The key's signature scheme.
    pub curve: Curve,
    /// blake2b-160 of the public key.
    pub hash: [u8; 20],
}

/// The three kinds of consensus message, each with its own watermark.
/// Attestations with and without DAL content are one kind: keeping them
/// apart would allow both at one (level, round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusKind {
    /// Magic byte 0x11.
    Block,
    /// Magic byte 0x12.
    Preattestation,
    /// Magic byte 0x13.
    Attestation,
}

impl ConsensusKind {
    /// Every kind, in magic-byte order.
    pub const ALL: [ConsensusKind; 3] = [
        ConsensusKind::Block,
        ConsensusKind::Preattestation,
        ConsensusKind::Attestation,
    ];

    /// The watermark (magic) byte.
    pub fn magic(self) -> u8 {
        match self {
            ConsensusKind::Block => 0x11,
            ConsensusKind::Preattestation => 0x12,
            ConsensusKind::Attestation => 0x13,
        }
    }

    /// Inverse of [`ConsensusKind::magic`].
    pub fn from_magic(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.magic() == b)
    }

    /// `block`, `preattestation` or `attestation` (also a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusKind::Block => "block",
            ConsensusKind::Preattestation => "preattestation",
            ConsensusKind::Attestation => "attestation",
        }
    }
}

impl fmt::Display for ConsensusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one watermark is kept for: (chain, key, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WatermarkKey {
    /// The chain.
    pub chain: ChainId,
    /// The signing key.
    pub key: KeyHash,
    /// The message kind.
    pub kind: ConsensusKind,
}

impl fmt::Display for WatermarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.chain, self.key, self.kind)
    }
}

fn b58check(prefix: &[u8], body: &[u8]) -> String {
    let mut v = prefix.to_vec();
    v.extend_from_slice(body);
    bs58::encode(v).with_check().into_string()
}

fn from_b58check<const N: usize>(s: &str, prefix: &[u8]) -> Option<[u8; N]> {
    let v = bs58::decode(s).with_check(None).into_vec().ok()?;
    let body = v.strip_prefix(prefix)?;
    body.try_into().ok()
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b58check(&CHAIN_PREFIX, &self.0))
    }
}
impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({self})")
    }
}
impl FromStr for ChainId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        from_b58check(s, &CHAIN_PREFIX)
            .map(ChainId)
            .ok_or_else(|| Error::Invalid(format!("{s:?} is not a Tezos chain id (Net...)")))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b58check(&self.curve.prefix(), &self.hash))
    }
}
impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}
/// A Tezos key hash of a scheme slashguard does not sign for (for
/// example tz5, ML-DSA-44, which cannot be a consensus key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} is a {scheme} key hash; slashguard guards tz1, tz2, tz3 and tz4 keys only")]
pub struct UnknownScheme {
    /// The key hash as written.
    pub key: String,
    /// The scheme's name, e.g. `tz5 (ML-DSA-44)`.
    pub scheme: String,
}

/// Known key hash prefixes of schemes this crate does not sign for.
const OTHER_SCHEMES: [([u8; 3], &str); 1] = [([6, 161, 169], "tz5 (ML-DSA-44)")];

impl KeyHash {
    /// `Some` when `s` is a well-formed Tezos key hash (20 bytes behind a
    /// 3-byte `06a1..` prefix, checksum valid) of a scheme other than
    /// tz1..tz4, naming the scheme.
    pub fn unknown_scheme(s: &str) -> Option<UnknownScheme> {
        let v = bs58::decode(s).with_check(None).into_vec().ok()?;
        if v.len() != 23 || v[..2] != [6, 161] {
            return None;
        }
        let prefix = [v[0], v[1], v[2]];
        if [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls]
            .iter()
            .any(|c| c.prefix() == prefix)
        {
            return None;
        }
        let scheme = OTHER_SCHEMES
            .iter()
            .find(|(p, _)| *p == prefix)
            .map_or_else(
                || {
                    format!(
                        "unknown scheme (prefix {:02x}{:02x}{:02x})",
                        v[0], v[1], v[2]
                    )
                },
                |(_, name)| (*name).to_string(),
            );
        Some(UnknownScheme {
            key: s.to_string(),
            scheme,
        })
    }
}

impl FromStr for KeyHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls]
            .into_iter()
            .find_map(|curve| from_b58check(s, &curve.prefix()).map(|hash| KeyHash { curve, hash }))
            .ok_or_else(|| match KeyHash::unknown_scheme(s) {
                Some(u) => Error::Invalid(u.to_string()),
                None => Error::Invalid(format!("{s:?} is not a Tezos key hash (tz1..tz4)")),
            })
    }
}

macro_rules! serde_via_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_string!(ChainId);
serde_via_string!(KeyHash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_addresses() {
        // Mainnet's chain id bytes 7a06a770 are NetXdQprcVkpaWU.
        assert_eq!(
            ChainId([0x7a, 0x06, 0xa7, 0x70]).to_string(),
            "NetXdQprcVkpaWU"
        );
        assert_eq!(
            "NetXdQprcVkpaWU".parse::<ChainId>().unwrap(),
            ChainId([0x7a, 0x06, 0xa7, 0x70])
        );
        for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls] {
            let k = KeyHash {
                curve,
                hash: [0x42; 20],
            };
            let s = k.to_string();
            assert!(s.starts_with("tz"), "{s}");
            assert_eq!(s.parse::<KeyHash>().unwrap(), k);
        }
        assert_eq!(
            KeyHash {
                curve: Curve::Ed25519,
                hash: [0; 20]
            }
            .to_string(),
            "tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU"
        );
        assert!("tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyV"
            .parse::<KeyHash>()
            .is_err());
        // A tz5 (ML-DSA-44) key hash is reported by its scheme's name.
        let tz5 = b58check(&[6, 161, 169], &[0; 20]);
        assert!(tz5.starts_with("tz5"), "{tz5}");
        let err = tz5.parse::<KeyHash>().unwrap_err().to_string();
        assert!(err.contains("tz5 (ML-DSA-44)"), "{err}");
        assert_eq!(
            KeyHash::unknown_scheme(&tz5).unwrap().scheme,
            "tz5 (ML-DSA-44)"
        );
        assert!(KeyHash::unknown_scheme("tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU").is_none());
    }
}
