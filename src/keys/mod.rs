//! Software Tezos keys (feature `keys`): tz1 (ed25519), tz2 (secp256k1),
//! tz3 (P-256) and tz4 (BLS12-381, on [`bls`](crate::bls)) secret keys
//! that implement [`Signer`](crate::Signer),
//! their base58check encodings, and octez-client's `secret_keys` file,
//! unencrypted and `encrypted:`.
//!
//! tz1..tz3 sign blake2b-256 of the payload with a deterministic nonce;
//! tz4 signs the payload itself (BLS is deterministic): a repeated request
//! yields the same signature bytes.
//!
//! ```
//! use slashguard::keys::SoftwareKey;
//!
//! let key: SoftwareKey = "edsk3gUfUPyBSfrS9CCgmCiQsTCHGkviBDusMxDJstFtojtc1zcpsh".parse().unwrap();
//! assert_eq!(key.public_key().hash().to_string(), "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx");
//! let sig = key.sign_bytes(b"\x13payload");
//! assert!(key.public_key().verify(b"\x13payload", &sig));
//! ```

pub(crate) mod b58;
mod encrypted;
mod public;
mod secret_keys;
mod software;

use std::path::PathBuf;

pub use encrypted::{decrypt, encrypt};
pub use public::{signature_from_b58, signature_to_b58, PublicKey};
pub use secret_keys::SecretKeysFile;
pub use software::SoftwareKey;

/// Why a key could not be read. Never carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not base58check, or the checksum does not match (a damaged value).
    #[error("{what}: not valid base58check ({detail}); the value is damaged or mistyped")]
    Base58 {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// A prefix that Tezos defines but this build cannot use.
    #[error("{what}: {prefix} keys are not supported: {reason}")]
    Unsupported {
        /// What was being decoded.
        what: &'static str,
        /// The human prefix (`tz5`, `BLsk`, ...).
        prefix: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A prefix that is none of those expected.
    #[error("{what}: unknown prefix {found:?}... (expected one of {expected})")]
    UnknownPrefix {
        /// What was being decoded.
        what: &'static str,
        /// The first characters of the value.
        found: String,
        /// The accepted prefixes.
        expected: String,
    },
    /// Decoded, but not a valid key or signature of its scheme.
    #[error("invalid {what}: {detail}")]
    InvalidKey {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The encrypted key's MAC does not verify: a wrong password (or a
    /// ciphertext damaged in a way base58check did not catch).
    #[error("wrong password (the encrypted key does not decrypt with it)")]
    WrongPassword,
    /// An encrypted key, and no password configured.
    #[error("the key is encrypted and no password is configured ({0})")]
    NoPassword(String),
    /// The `secret_keys` file is not the JSON list octez-client writes.
    #[error("{path}: damaged secret keys file: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No entry of that name.
    #[error("no key named {alias:?} in {path}")]
    NoSuchAlias {
        /// The alias asked for.
        alias: String,
        /// The file.
        path: PathBuf,
    },
    /// A URI scheme that is not a software key (`remote:`, `ledger:`, ...).
    #[error("secret key URI scheme {scheme:?} is not a software key (only unencrypted: and encrypted: are loaded)")]
    UnsupportedUri {
        /// The scheme.
        scheme: String,
    },
    /// The error concerns this alias.
    #[error("key {alias:?}: {source}")]
    InAlias {
        /// The alias.
        alias: String,
        /// What went wrong.
        #[source]
        source: Box<KeyError>,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    /// The innermost error (without the alias wrapper).
    pub fn root(&self) -> &KeyError {
        match self {
            KeyError::InAlias { source, .. } => source.root(),
            e => e,
        }
    }
}
