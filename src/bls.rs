//! BLS12-381 signatures, "minimal public key" variant (48-byte public keys
//! in G1, 96-byte signatures in G2), with the proof-of-possession
//! ciphersuite of the IETF BLS signature draft (feature `bls`).
//!
//! Two users share this module:
//!
//! - **Solana Alpenglow votes**: messages signed with
//!   [`SIG_DST`] (`BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`), keys
//!   derived from the authorized voter's ed25519 keypair (see
//!   `alpenglow::derive_voter_key`, feature `alpenglow`), proofs of
//!   possession over `"ALPENGLOW" ‖ vote account ‖ public key`.
//! - **Tezos tz4 keys** (remote signer): the same ciphersuite; a proof of
//!   possession over the public key alone ([`SecretKey::proof_of_possession`]
//!   with an empty prefix).
//!
//! The arithmetic is `blst`'s (the library Agave and Firedancer use). The
//! byte encodings are the usual "ZCash" ones: big-endian coordinates, the top
//! three bits of the first byte flag compression, infinity and the sign.
//! Signing is deterministic: the same key and message always give the same
//! bytes, which is what lets a guard re-sign an identical request.
//!
//! ```
//! use slashguard::bls::SecretKey;
//!
//! let key = SecretKey::key_gen(&[7u8; 32], b"")?;
//! let public = key.public_key();
//! let signature = key.sign(b"message");
//! assert!(public.verify(b"message", &signature));
//! assert!(!public.verify(b"other message", &signature));
//! let pop = key.proof_of_possession(b"");
//! assert!(public.verify_proof_of_possession(b"", &pop));
//! # Ok::<(), slashguard::bls::BlsError>(())
//! ```

use std::fmt;

use blst::min_pk;
use blst::BLST_ERROR;

/// Domain separation tag of message signatures (the POP ciphersuite's
/// signing tag): `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`.
pub const SIG_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Domain separation tag of proofs of possession:
/// `BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Bytes of a compressed public key (G1).
pub const PUBLIC_KEY_BYTES: usize = 48;
/// Bytes of an uncompressed (affine) public key.
pub const PUBLIC_KEY_UNCOMPRESSED_BYTES: usize = 96;
/// Bytes of a compressed signature (G2).
pub const SIGNATURE_BYTES: usize = 96;
/// Bytes of an uncompressed (affine) signature, as Alpenglow's wire format
/// carries it.
pub const SIGNATURE_UNCOMPRESSED_BYTES: usize = 192;
/// Bytes of a secret scalar.
pub const SECRET_KEY_BYTES: usize = 32;

/// Why key material or an encoded point was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlsError {
    /// Key generation needs at least 32 bytes of input key material.
    #[error("BLS key generation needs at least 32 bytes of key material, got {0}")]
    ShortKeyMaterial(usize),
    /// The secret bytes are zero or not below the group order.
    #[error("not a valid BLS secret scalar")]
    BadSecretKey,
    /// The bytes do not encode a point of the right group (wrong length,
    /// flags, not on the curve, not in the subgroup, or infinity).
    #[error("not a valid BLS {what}: {detail}")]
    BadEncoding {
        /// `public key` or `signature`.
        what: &'static str,
        /// What blst reported.
        detail: String,
    },
}

fn bad(what: &'static str, e: BLST_ERROR) -> BlsError {
    BlsError::BadEncoding {
        what,
        detail: format!("{e:?}"),
    }
}

/// A BLS secret key. Not `Clone`, and `Debug` never prints it: move it
/// into the guard that signs with it. The scalar is zeroized on drop
/// (blst's `SecretKey` does it).
pub struct SecretKey {
    inner: min_pk::SecretKey,
}

impl SecretKey {
    /// The IETF `KeyGen` (HKDF-SHA256 with salt `BLS-SIG-KEYGEN-SALT-`,
    /// `blst_keygen`) from `ikm` (at least 32 bytes) and `key_info`
    /// (usually empty). Deterministic.
    pub fn key_gen(ikm: &[u8], key_info: &[u8]) -> Result<Self, BlsError> {
        if ikm.len() < 32 {
            return Err(BlsError::ShortKeyMaterial(ikm.len()));
        }
        let inner = min_pk::SecretKey::key_gen(ikm, key_info)
            .map_err(|_| BlsError::ShortKeyMaterial(ikm.len()))?;
        // KeyGen retries until the scalar is non-zero, so this only fails
        // if blst changes behaviour; refuse rather than sign with zero.
        min_pk::SecretKey::from_bytes(&inner.to_bytes()).map_err(|_| BlsError::BadSecretKey)?;
        Ok(SecretKey { inner })
    }

    /// From the 32-byte big-endian scalar (the IETF `I2OSP` encoding, what
    /// `blst` and Ethereum keystores use). Zero or a value not below the
    /// group order is [`BlsError::BadSecretKey`].
    pub fn from_be_bytes(bytes: &[u8; SECRET_KEY_BYTES]) -> Result<Self, BlsError> {
        min_pk::SecretKey::from_bytes(bytes)
            .map(|inner| SecretKey { inner })
            .map_err(|_| BlsError::BadSecretKey)
    }

    /// From the 32-byte little-endian scalar (Solana's `BlsSecretKey`
    /// bytes, Tezos `BLsk` keys).
    pub fn from_le_bytes(bytes: &[u8; SECRET_KEY_BYTES]) -> Result<Self, BlsError> {
        let mut be = *bytes;
        be.reverse();
        Self::from_be_bytes(&be)
    }

    /// The secret scalar, big-endian. Handle with care.
    pub fn to_be_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        self.inner.to_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.sk_to_pk(),
        }
    }

    /// Sign `message` with [`SIG_DST`]. Deterministic.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            inner: self.inner.sign(message, SIG_DST, &[]),
        }
    }

    /// A proof of possession: a signature with [`POP_DST`] over
    /// `prefix ‖ compressed public key`. With an empty prefix this is the
    /// IETF `PopProve` (Tezos tz4); Alpenglow binds the vote account with
    /// the prefix `"ALPENGLOW" ‖ vote account`.
    pub fn proof_of_possession(&self, prefix: &[u8]) -> Signature {
        let public = self.public_key().to_bytes();
        Signature {
            inner: self.inner.sign(&public, POP_DST, prefix),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key())
    }
}

/// A BLS public key (a G1 point, checked to be in the subgroup and not the
/// identity when decoded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    inner: min_pk::PublicKey,
}

impl PublicKey {
    /// Decode a compressed (48 bytes) or uncompressed (96 bytes) key and
    /// validate it (on the curve, in the subgroup, not infinity).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlsError> {
        min_pk::PublicKey::key_validate(bytes)
            .map(|inner| PublicKey { inner })
            .map_err(|e| bad("public key", e))
    }

    /// The compressed encoding (48 bytes).
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.inner.compress()
    }

    /// The uncompressed encoding (96 bytes, Solana's "affine" form).
    pub fn to_uncompressed(&self) -> [u8; PUBLIC_KEY_UNCOMPRESSED_BYTES] {
        self.inner.serialize()
    }

    /// `true` when `signature` is this key's [`SIG_DST`] signature over
    /// `message` (the signature is group-checked).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        signature
            .inner
            .verify(true, message, SIG_DST, &[], &self.inner, false)
            == BLST_ERROR::BLST_SUCCESS
    }

    /// `true` when `proof` is this key's proof of possession with `prefix`
    /// (see [`SecretKey::proof_of_possession`]).
    pub fn verify_proof_of_possession(&self, prefix: &[u8], proof: &Signature) -> bool {
        proof
            .inner
            .verify(true, &self.to_bytes(), POP_DST, prefix, &self.inner, false)
            == BLST_ERROR::BLST_SUCCESS
    }
}

impl fmt::Display for PublicKey {
    /// Lower-case hex of the compressed key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.to_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A BLS signature (a G2 point).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    inner: min_pk::Signature,
}

impl Signature {
    /// Decode a compressed (96 bytes) or uncompressed (192 bytes)
    /// signature and check that it is in the subgroup.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlsError> {
        min_pk::Signature::sig_validate(bytes, false)
            .map(|inner| Signature { inner })
            .map_err(|e| bad("signature", e))
    }

    /// The compressed encoding (96 bytes).
    pub fn to_bytes(&self) -> [u8; SIGNATURE_BYTES] {
        self.inner.compress()
    }

    /// The uncompressed encoding (192 bytes, as Alpenglow's wire carries
    /// it).
    pub fn to_uncompressed(&self) -> [u8; SIGNATURE_UNCOMPRESSED_BYTES] {
        self.inner.serialize()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in self.to_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_key_material_and_bad_scalars_are_refused() {
        assert_eq!(
            SecretKey::key_gen(&[1; 31], b"").unwrap_err(),
            BlsError::ShortKeyMaterial(31)
        );
        assert_eq!(
            SecretKey::from_be_bytes(&[0; 32]).unwrap_err(),
            BlsError::BadSecretKey
        );
        assert_eq!(
            SecretKey::from_be_bytes(&[0xff; 32]).unwrap_err(),
            BlsError::BadSecretKey
        );
    }

    #[test]
    fn endianness_roundtrip_and_determinism() {
        let key = SecretKey::key_gen(&[3; 64], b"").unwrap();
        let be = key.to_be_bytes();
        let mut le = be;
        le.reverse();
        let again = SecretKey::from_le_bytes(&le).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(key.sign(b"m"), again.sign(b"m"));
        assert_eq!(key.sign(b"m").to_bytes(), key.sign(b"m").to_bytes());
    }

    #[test]
    fn encodings_roundtrip_and_garbage_is_refused() {
        let key = SecretKey::key_gen(&[4; 32], b"").unwrap();
        let pk = key.public_key();
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        assert_eq!(PublicKey::from_bytes(&pk.to_uncompressed()).unwrap(), pk);
        let sig = key.sign(b"x");
        assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
        assert_eq!(Signature::from_bytes(&sig.to_uncompressed()).unwrap(), sig);
        assert!(PublicKey::from_bytes(&[0; 48]).is_err());
        assert!(PublicKey::from_bytes(&pk.to_bytes()[..47]).is_err());
        // The compressed point at infinity is refused as a key.
        let mut inf = [0u8; 48];
        inf[0] = 0xc0;
        assert!(PublicKey::from_bytes(&inf).is_err());
        assert!(Signature::from_bytes(&[0xab; 96]).is_err());
    }

    #[test]
    fn pop_is_bound_to_its_prefix_and_dst() {
        let key = SecretKey::key_gen(&[5; 32], b"").unwrap();
        let pk = key.public_key();
        let pop = key.proof_of_possession(b"ALPENGLOW");
        assert!(pk.verify_proof_of_possession(b"ALPENGLOW", &pop));
        assert!(!pk.verify_proof_of_possession(b"", &pop));
        // A PoP is not a message signature over the key bytes.
        let mut msg = b"ALPENGLOW".to_vec();
        msg.extend_from_slice(&pk.to_bytes());
        assert!(!pk.verify(&msg, &pop));
        assert!(pk.verify(&msg, &key.sign(&msg)));
    }
}
