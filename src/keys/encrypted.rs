//! octez's `encrypted:` secret keys: salt(8) ‖ MAC(16) ‖ ciphertext(32),
//! the key being PBKDF2-HMAC-SHA512(password, salt, 32768 iterations, 32
//! bytes) and the cipher XSalsa20-Poly1305 with an all-zero nonce
//! (libsodium's `crypto_secretbox_easy` layout: the MAC comes first).

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use zeroize::Zeroizing;

use crate::keys::b58::{self, Prefix};
use crate::keys::software::SoftwareKey;
use crate::keys::KeyError;
use crate::watermark::Curve;

const ITERATIONS: u32 = 32768;
const SALT: usize = 8;

fn derive(password: &[u8], salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, ITERATIONS, key.as_mut());
    key
}

fn prefix_of(curve: Curve) -> Prefix {
    match curve {
        Curve::Ed25519 => b58::ED25519_ENCRYPTED,
        Curve::Secp256k1 => b58::SECP256K1_ENCRYPTED,
        Curve::P256 => b58::P256_ENCRYPTED,
        Curve::Bls => b58::BLS_ENCRYPTED,
    }
}

/// Decrypt an `edesk`, `spesk`, `p2esk` or `BLesk` key (with or without the
/// `encrypted:` scheme) with `password`.
///
/// Errors: [`KeyError::WrongPassword`] when the MAC does not verify (a
/// wrong password, or a damaged ciphertext: the two cannot be told apart);
/// [`KeyError::Base58`] for a damaged encoding (bad checksum);
/// [`KeyError::Unsupported`] / [`KeyError::UnknownPrefix`] for other schemes.
pub fn decrypt(text: &str, password: &[u8]) -> Result<SoftwareKey, KeyError> {
    let text = text.trim();
    let text = text.strip_prefix("encrypted:").unwrap_or(text);
    let (p, body) = b58::decode(
        text,
        &[
            b58::ED25519_ENCRYPTED,
            b58::SECP256K1_ENCRYPTED,
            b58::P256_ENCRYPTED,
            b58::BLS_ENCRYPTED,
        ],
        "encrypted secret key",
    )?;
    let curve = if p == b58::ED25519_ENCRYPTED {
        Curve::Ed25519
    } else if p == b58::SECP256K1_ENCRYPTED {
        Curve::Secp256k1
    } else if p == b58::P256_ENCRYPTED {
        Curve::P256
    } else {
        Curve::Bls
    };
    let (salt, sealed) = body.split_at(SALT);
    let key = derive(password, salt);
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(&[0u8; 24].into(), sealed)
            .map_err(|_| KeyError::WrongPassword)?,
    );
    SoftwareKey::from_secret_bytes(curve, &plain)
}

/// Encrypt `key` under `password` with a fresh random salt, in the form
/// octez-client writes after `encrypted:`.
pub fn encrypt(key: &SoftwareKey, password: &[u8]) -> String {
    let mut salt = [0u8; SALT];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    encrypt_with_salt(key, password, salt)
}

fn encrypt_with_salt(key: &SoftwareKey, password: &[u8], salt: [u8; SALT]) -> String {
    let k = derive(password, &salt);
    let cipher = XSalsa20Poly1305::new(k.as_ref().into());
    let sealed = cipher
        .encrypt(&[0u8; 24].into(), &key.secret_bytes()[..])
        .expect("secretbox encryption of 32 bytes cannot fail");
    let mut body = Zeroizing::new(salt.to_vec());
    body.extend_from_slice(&sealed);
    b58::encode(prefix_of(key.curve()), &body)
}
