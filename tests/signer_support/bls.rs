//! Verify tz4 signatures with the zkcrypto `bls12_381` crate, an
//! implementation independent of `blst` that made them: hash to G2 with
//! the ciphersuite's tag, then the pairing equation.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{pairing, G1Affine, G2Affine, G2Projective};

const SIG_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

fn verify_with(dst: &[u8], public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(pk), Ok(sig)) = (
        <[u8; 48]>::try_from(public_key),
        <[u8; 96]>::try_from(signature),
    ) else {
        return false;
    };
    let pk = G1Affine::from_compressed(&pk);
    let sig = G2Affine::from_compressed(&sig);
    if pk.is_none().into() || sig.is_none().into() {
        return false;
    }
    let (pk, sig) = (pk.unwrap(), sig.unwrap());
    let h =
        <G2Projective as HashToCurve<ExpandMsgXmd<sha2_09::Sha256>>>::hash_to_curve(message, dst);
    pairing(&pk, &G2Affine::from(h)) == pairing(&G1Affine::generator(), &sig)
}

/// A tz4 signature of `message` (the bytes themselves).
pub fn verifies(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    verify_with(SIG_DST, public_key, message, signature)
}

/// A tz4 proof of possession: the POP tag over the public key.
pub fn proves_possession(public_key: &[u8], proof: &[u8]) -> bool {
    verify_with(POP_DST, public_key, public_key, proof)
}
