//! `--require-authentication`: the client signs `0x04 0x01 ‖ pkh21 ‖ data`
//! with a key of its own; the signer accepts the request when one of its
//! authorized keys verifies that signature.

use crate::keys::PublicKey;
use crate::watermark::KeyHash;

/// The 21-byte binary key hash: scheme tag then the 20-byte hash.
pub fn pkh21(pkh: &KeyHash) -> [u8; 21] {
    let mut out = [0u8; 21];
    out[0] = pkh.curve.tag();
    out[1..].copy_from_slice(&pkh.hash);
    out
}

/// The bytes an authentication signature covers for a request to sign
/// `data` (magic byte included) with `pkh`.
pub fn message(pkh: &KeyHash, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 + 21 + data.len());
    m.extend_from_slice(&[0x04, 0x01]);
    m.extend_from_slice(&pkh21(pkh));
    m.extend_from_slice(data);
    m
}

/// The authorized key that verifies `signature` for this request, if any.
pub fn verify<'a>(
    authorized: &'a [PublicKey],
    pkh: &KeyHash,
    data: &[u8],
    signature: &[u8],
) -> Option<&'a PublicKey> {
    let m = message(pkh, data);
    authorized.iter().find(|k| k.verify(&m, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftwareKey;

    #[test]
    fn authentication_message_layout() {
        let pkh: KeyHash = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap();
        let m = message(&pkh, &[0x13, 0xaa]);
        assert_eq!(&m[..3], &[0x04, 0x01, 0x00]);
        assert_eq!(&m[3..23], &pkh.hash);
        assert_eq!(&m[23..], &[0x13, 0xaa]);
        assert_eq!(m.len(), 25);
    }

    #[test]
    fn only_an_authorized_key_over_the_exact_request_verifies() {
        let client = SoftwareKey::generate(crate::watermark::Curve::P256).unwrap();
        let other = SoftwareKey::generate(crate::watermark::Curve::Ed25519).unwrap();
        let pkh: KeyHash = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap();
        let data = [0x11, 1, 2, 3];
        let sig = client.sign_bytes(&message(&pkh, &data));
        let keys = [other.public_key(), client.public_key()];
        assert_eq!(verify(&keys, &pkh, &data, &sig), Some(&keys[1]));
        assert_eq!(verify(&keys[..1], &pkh, &data, &sig), None);
        assert_eq!(verify(&keys, &pkh, &[0x11, 1, 2, 4], &sig), None);
        let other_pkh = other.public_key().hash();
        assert_eq!(verify(&keys, &other_pkh, &data, &sig), None);
    }
}
