//! `SoftwareKey`: a tz1, tz2, tz3 or tz4 secret key in memory that signs
//! as Tezos does (tz1..tz3: the scheme's signature of blake2b-256 of the
//! bytes; tz4: BLS min-pk of the bytes themselves), deterministically for
//! every scheme (RFC 8032 for ed25519, RFC 6979 for both ECDSA curves,
//! low-S for secp256k1, BLS by construction), so a repeated request gets
//! the very same signature.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::keys::b58;
use crate::keys::public::PublicKey;
use crate::keys::KeyError;
use crate::signer::Signer;
use crate::watermark::{Curve, KeyHash, PayloadHash};

enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    Secp256k1(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Bls(crate::bls::SecretKey),
}

/// A software secret key (tz1, tz2, tz3 or tz4). Its secret is never printed
/// (`Debug` shows the key hash) and is zeroed when dropped (the curve
/// crates zeroize their signing keys).
pub struct SoftwareKey {
    secret: Secret,
    public: PublicKey,
    hash: KeyHash,
}

impl SoftwareKey {
    /// From the 32 secret bytes of a scheme: the ed25519 seed, the
    /// big-endian ECDSA scalar, or the little-endian BLS scalar (as octez
    /// stores it); zero and values at or above the group order are
    /// refused.
    pub fn from_secret_bytes(curve: Curve, bytes: &[u8]) -> std::result::Result<Self, KeyError> {
        let bad = |detail: String| KeyError::InvalidKey {
            what: "secret key",
            detail,
        };
        let (secret, public) = match curve {
            Curve::Ed25519 => {
                let seed: &[u8; 32] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("ed25519 seed of {} bytes", bytes.len())))?;
                let k = ed25519_dalek::SigningKey::from_bytes(seed);
                let p = PublicKey::Ed25519(k.verifying_key().to_bytes());
                (Secret::Ed25519(k), p)
            }
            Curve::Secp256k1 => {
                let k = k256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| {
                    bad("not a secp256k1 scalar (zero, or not below the group order)".into())
                })?;
                let point = k.verifying_key().to_encoded_point(true);
                let p = PublicKey::Secp256k1(
                    point
                        .as_bytes()
                        .try_into()
                        .map_err(|_| bad("point encoding".into()))?,
                );
                (Secret::Secp256k1(k), p)
            }
            Curve::P256 => {
                let k = p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| {
                    bad("not a P-256 scalar (zero, or not below the group order)".into())
                })?;
                let point = k.verifying_key().to_encoded_point(true);
                let p = PublicKey::P256(
                    point
                        .as_bytes()
                        .try_into()
                        .map_err(|_| bad("point encoding".into()))?,
                );
                (Secret::P256(k), p)
            }
            Curve::Bls => {
                let le: &[u8; 32] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("BLS scalar of {} bytes", bytes.len())))?;
                let k = crate::bls::SecretKey::from_le_bytes(le).map_err(|_| {
                    bad("not a BLS12-381 scalar (zero, or not below the group order)".into())
                })?;
                let p = PublicKey::Bls(k.public_key().to_bytes());
                (Secret::Bls(k), p)
            }
        };
        let hash = public.hash();
        Ok(SoftwareKey {
            secret,
            public,
            hash,
        })
    }

    /// A new random key of `curve`.
    pub fn generate(curve: Curve) -> std::result::Result<Self, KeyError> {
        if curve == Curve::Bls {
            // The IETF KeyGen from 32 random bytes: always a valid scalar.
            let ikm = Zeroizing::new({
                let mut b = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
                b
            });
            let k = crate::bls::SecretKey::key_gen(ikm.as_ref(), b"").map_err(|e| {
                KeyError::InvalidKey {
                    what: "secret key",
                    detail: e.to_string(),
                }
            })?;
            let mut le = Zeroizing::new(k.to_be_bytes());
            le.reverse();
            return Self::from_secret_bytes(Curve::Bls, le.as_ref());
        }
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, bytes.as_mut());
            match Self::from_secret_bytes(curve, bytes.as_ref()) {
                // A scalar at or above the order: draw again (probability
                // about 2^-128 for secp256k1, 2^-32 for P-256).
                Err(KeyError::InvalidKey { .. }) if curve != Curve::Ed25519 => continue,
                other => return other,
            }
        }
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The scheme.
    pub fn curve(&self) -> Curve {
        self.public.curve()
    }

    /// The 32 secret bytes (for writing an octez `secret_keys` file).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(match &self.secret {
            Secret::Ed25519(k) => k.to_bytes(),
            Secret::Secp256k1(k) => k.to_bytes().into(),
            Secret::P256(k) => k.to_bytes().into(),
            Secret::Bls(k) => {
                let mut le = k.to_be_bytes();
                le.reverse();
                le
            }
        })
    }

    /// The tz4 proof of possession (a BLS signature of the public key with
    /// the POP tag), 96 bytes; `None` for other schemes.
    pub fn proof_of_possession(&self) -> Option<Vec<u8>> {
        match &self.secret {
            Secret::Bls(k) => Some(k.proof_of_possession(b"").to_bytes().to_vec()),
            _ => None,
        }
    }

    /// The unencrypted base58check form (`edsk`, `spsk`, `p2sk`, `BLsk`),
    /// as in an `unencrypted:` secret key URI.
    pub fn to_b58(&self) -> Zeroizing<String> {
        let prefix = match self.curve() {
            Curve::Ed25519 => b58::ED25519_SEED,
            Curve::Secp256k1 => b58::SECP256K1_SECRET,
            Curve::P256 => b58::P256_SECRET,
            Curve::Bls => b58::BLS_SECRET,
        };
        Zeroizing::new(b58::encode(prefix, self.secret_bytes().as_ref()))
    }

    /// Sign `message` as Tezos does: for tz1..tz3 the scheme's signature
    /// of blake2b-256(`message`), 64 bytes; for tz4 the BLS signature of
    /// `message` itself, 96 bytes.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        if let Secret::Bls(k) = &self.secret {
            return k.sign(message).to_bytes().to_vec();
        }
        let digest = PayloadHash::of(message).0;
        match &self.secret {
            Secret::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&digest).to_bytes().to_vec()
            }
            Secret::Secp256k1(k) => {
                use k256::ecdsa::signature::hazmat::PrehashSigner;
                let sig: k256::ecdsa::Signature = k
                    .sign_prehash(&digest)
                    .expect("a 32-byte prehash is always accepted");
                // octez verification rejects a high S.
                sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
            }
            Secret::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(&digest)
                    .expect("a 32-byte prehash is always accepted");
                sig.to_bytes().to_vec()
            }
            Secret::Bls(_) => unreachable!("handled above"),
        }
    }
}

impl FromStr for SoftwareKey {
    type Err = KeyError;
    /// An unencrypted secret key: `edsk` (seed or 64-byte form), `spsk`,
    /// `p2sk` or `BLsk`, with or without the `unencrypted:` scheme.
    fn from_str(s: &str) -> std::result::Result<Self, KeyError> {
        let s = s.trim();
        let s = s.strip_prefix("unencrypted:").unwrap_or(s);
        let (p, body) = b58::decode(
            s,
            &[
                b58::ED25519_SEED,
                b58::ED25519_SECRET,
                b58::SECP256K1_SECRET,
                b58::P256_SECRET,
                b58::BLS_SECRET,
            ],
            "secret key",
        )?;
        let body = Zeroizing::new(body);
        if p == b58::ED25519_SECRET {
            // seed ‖ public key: the public half must match the seed.
            let key = Self::from_secret_bytes(Curve::Ed25519, &body[..32])?;
            if key.public.as_bytes() != &body[32..] {
                return Err(KeyError::InvalidKey {
                    what: "secret key",
                    detail: "the 64-byte edsk's public half does not match its seed".into(),
                });
            }
            return Ok(key);
        }
        let curve = if p == b58::ED25519_SEED {
            Curve::Ed25519
        } else if p == b58::SECP256K1_SECRET {
            Curve::Secp256k1
        } else if p == b58::P256_SECRET {
            Curve::P256
        } else {
            Curve::Bls
        };
        Self::from_secret_bytes(curve, &body)
    }
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SoftwareKey({})", self.hash)
    }
}

#[async_trait]
impl Signer for SoftwareKey {
    fn key_hash(&self) -> KeyHash {
        self.hash
    }
    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        Ok(self.sign_bytes(payload))
    }
}
