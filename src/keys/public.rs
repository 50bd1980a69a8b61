//! Public keys and signatures of tz1, tz2 and tz3: their encodings and
//! verification of Tezos signatures (over blake2b-256 of the bytes).

use std::fmt;
use std::str::FromStr;

use crate::keys::b58::{self, Prefix};
use crate::keys::KeyError;
use crate::watermark::{Curve, KeyHash, PayloadHash};

/// A public key of a software-supported scheme.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// tz1: the 32-byte ed25519 key (`edpk`).
    Ed25519([u8; 32]),
    /// tz2: the 33-byte compressed secp256k1 point (`sppk`).
    Secp256k1([u8; 33]),
    /// tz3: the 33-byte compressed P-256 point (`p2pk`).
    P256([u8; 33]),
    /// tz4: the 48-byte compressed BLS12-381 G1 point (`BLpk`).
    Bls([u8; 48]),
}

impl PublicKey {
    /// The scheme.
    pub fn curve(&self) -> Curve {
        match self {
            PublicKey::Ed25519(_) => Curve::Ed25519,
            PublicKey::Secp256k1(_) => Curve::Secp256k1,
            PublicKey::P256(_) => Curve::P256,
            PublicKey::Bls(_) => Curve::Bls,
        }
    }

    /// The key bytes without a tag.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            PublicKey::Ed25519(k) => k,
            PublicKey::Secp256k1(k) | PublicKey::P256(k) => k,
            PublicKey::Bls(k) => k,
        }
    }

    /// octez's binary form: scheme tag (0, 1, 2, 3) then the key.
    pub fn to_tagged_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.curve().tag()];
        v.extend_from_slice(self.as_bytes());
        v
    }

    /// The key hash (`tz1...`): blake2b-160 of the key bytes.
    pub fn hash(&self) -> KeyHash {
        use blake2::digest::{consts::U20, Digest};
        let mut h = blake2::Blake2b::<U20>::new();
        h.update(self.as_bytes());
        KeyHash {
            curve: self.curve(),
            hash: h.finalize().into(),
        }
    }

    fn prefix(&self) -> Prefix {
        match self {
            PublicKey::Ed25519(_) => b58::ED25519_PUBLIC,
            PublicKey::Secp256k1(_) => b58::SECP256K1_PUBLIC,
            PublicKey::P256(_) => b58::P256_PUBLIC,
            PublicKey::Bls(_) => b58::BLS_PUBLIC,
        }
    }

    /// From compressed bytes of a scheme, checking the point is valid.
    pub fn from_bytes(curve: Curve, bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |detail: String| KeyError::InvalidKey {
            what: "public key",
            detail,
        };
        match curve {
            Curve::Ed25519 => {
                let k: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("ed25519 key of {} bytes", bytes.len())))?;
                ed25519_dalek::VerifyingKey::from_bytes(&k).map_err(|e| bad(e.to_string()))?;
                Ok(PublicKey::Ed25519(k))
            }
            Curve::Secp256k1 => {
                let k: [u8; 33] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("secp256k1 key of {} bytes", bytes.len())))?;
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&k).map_err(|e| bad(e.to_string()))?;
                Ok(PublicKey::Secp256k1(k))
            }
            Curve::P256 => {
                let k: [u8; 33] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("P-256 key of {} bytes", bytes.len())))?;
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&k).map_err(|e| bad(e.to_string()))?;
                Ok(PublicKey::P256(k))
            }
            Curve::Bls => {
                let k: [u8; 48] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("BLS key of {} bytes", bytes.len())))?;
                crate::bls::PublicKey::from_bytes(&k).map_err(|e| bad(e.to_string()))?;
                Ok(PublicKey::Bls(k))
            }
        }
    }

    /// Verify a Tezos signature of `message`: for tz1..tz3 (64 bytes) the
    /// scheme's verification of blake2b-256(`message`), ECDSA signatures
    /// with a high S rejected as octez rejects them; for tz4 (96 bytes)
    /// BLS min-pk verification of `message` itself (proof-of-possession
    /// ciphersuite).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if let PublicKey::Bls(k) = self {
            let (Ok(pk), Ok(sig)) = (
                crate::bls::PublicKey::from_bytes(k),
                crate::bls::Signature::from_bytes(signature),
            ) else {
                return false;
            };
            return signature.len() == crate::bls::SIGNATURE_BYTES && pk.verify(message, &sig);
        }
        let digest = PayloadHash::of(message).0;
        match self {
            PublicKey::Ed25519(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                ed25519_dalek::VerifyingKey::from_bytes(k)
                    .is_ok_and(|vk| vk.verify_strict(&digest, &sig).is_ok())
            }
            PublicKey::Secp256k1(k) => {
                use k256::ecdsa::signature::hazmat::PrehashVerifier;
                let Ok(sig) = k256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                sig.normalize_s().is_none()
                    && k256::ecdsa::VerifyingKey::from_sec1_bytes(k)
                        .is_ok_and(|vk| vk.verify_prehash(&digest, &sig).is_ok())
            }
            PublicKey::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                p256::ecdsa::VerifyingKey::from_sec1_bytes(k)
                    .is_ok_and(|vk| vk.verify_prehash(&digest, &sig).is_ok())
            }
            PublicKey::Bls(_) => false,
        }
    }

    /// Verify a tz4 proof of possession (over the public key itself).
    pub fn verify_proof_of_possession(&self, proof: &[u8]) -> bool {
        let PublicKey::Bls(k) = self else {
            return false;
        };
        let (Ok(pk), Ok(sig)) = (
            crate::bls::PublicKey::from_bytes(k),
            crate::bls::Signature::from_bytes(proof),
        ) else {
            return false;
        };
        proof.len() == crate::bls::SIGNATURE_BYTES && pk.verify_proof_of_possession(b"", &sig)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b58::encode(self.prefix(), self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (p, body) = b58::decode(
            s,
            &[
                b58::ED25519_PUBLIC,
                b58::SECP256K1_PUBLIC,
                b58::P256_PUBLIC,
                b58::BLS_PUBLIC,
            ],
            "public key",
        )?;
        let curve = if p == b58::ED25519_PUBLIC {
            Curve::Ed25519
        } else if p == b58::SECP256K1_PUBLIC {
            Curve::Secp256k1
        } else if p == b58::P256_PUBLIC {
            Curve::P256
        } else {
            Curve::Bls
        };
        PublicKey::from_bytes(curve, &body)
    }
}

/// The base58check form of a signature of `curve` (`edsig`, `spsig1`,
/// `p2sig`, `BLsig`), as octez-signer returns it.
pub fn signature_to_b58(curve: Curve, signature: &[u8]) -> Result<String, KeyError> {
    let prefix = match curve {
        Curve::Ed25519 => b58::ED25519_SIG,
        Curve::Secp256k1 => b58::SECP256K1_SIG,
        Curve::P256 => b58::P256_SIG,
        Curve::Bls => b58::BLS_SIG,
    };
    if signature.len() != prefix.len {
        return Err(KeyError::InvalidKey {
            what: "signature",
            detail: format!("{} bytes, expected {}", signature.len(), prefix.len),
        });
    }
    Ok(b58::encode(prefix, signature))
}

/// The bytes of a signature in any of `edsig`, `spsig1`, `p2sig`, the
/// generic `sig` form (64 bytes), or `BLsig` (96 bytes).
pub fn signature_from_b58(text: &str) -> Result<Vec<u8>, KeyError> {
    let (_, body) = b58::decode(
        text,
        &[
            b58::ED25519_SIG,
            b58::SECP256K1_SIG,
            b58::P256_SIG,
            b58::GENERIC_SIG,
            b58::BLS_SIG,
        ],
        "signature",
    )?;
    Ok(body)
}
