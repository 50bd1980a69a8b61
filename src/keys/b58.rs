//! Tezos base58check: the version prefixes of keys, key hashes and
//! signatures (octez `lib_crypto/base58.ml`; hex values in
//! `shared/reference/remote-signer.md` section 5), and naming a prefix this
//! build does not read instead of calling it garbage.

use crate::keys::KeyError;

/// A base58check prefix and what it encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The version bytes before the payload.
    pub bytes: &'static [u8],
    /// Payload length.
    pub len: usize,
    /// The human prefix (`edsk`, `tz1`, ...).
    pub name: &'static str,
}

macro_rules! prefixes {
    ($($id:ident = [$($b:expr),*], $len:expr, $name:expr;)*) => {
        $(pub(crate) const $id: Prefix = Prefix { bytes: &[$($b),*], len: $len, name: $name };)*
    };
}

prefixes! {
    ED25519_SEED = [0x0d, 0x0f, 0x3a, 0x07], 32, "edsk";
    ED25519_SECRET = [0x2b, 0xf6, 0x4e, 0x07], 64, "edsk";
    ED25519_PUBLIC = [0x0d, 0x0f, 0x25, 0xd9], 32, "edpk";
    ED25519_SIG = [0x09, 0xf5, 0xcd, 0x86, 0x12], 64, "edsig";
    ED25519_ENCRYPTED = [0x07, 0x5a, 0x3c, 0xb3, 0x29], 56, "edesk";
    SECP256K1_SECRET = [0x11, 0xa2, 0xe0, 0xc9], 32, "spsk";
    SECP256K1_PUBLIC = [0x03, 0xfe, 0xe2, 0x56], 33, "sppk";
    SECP256K1_SIG = [0x0d, 0x73, 0x65, 0x13, 0x3f], 64, "spsig1";
    SECP256K1_ENCRYPTED = [0x09, 0xed, 0xf1, 0xae, 0x96], 56, "spesk";
    P256_SECRET = [0x10, 0x51, 0xee, 0xbd], 32, "p2sk";
    P256_PUBLIC = [0x03, 0xb2, 0x8b, 0x7f], 33, "p2pk";
    P256_SIG = [0x36, 0xf0, 0x2c, 0x34], 64, "p2sig";
    P256_ENCRYPTED = [0x09, 0x30, 0x39, 0x73, 0xab], 56, "p2esk";
    GENERIC_SIG = [0x04, 0x82, 0x2b], 64, "sig";
    BLS_SECRET = [0x03, 0x96, 0xc0, 0x28], 32, "BLsk";
    BLS_PUBLIC = [0x06, 0x95, 0x87, 0xcc], 48, "BLpk";
    BLS_SIG = [0x28, 0xab, 0x40, 0xcf], 96, "BLsig";
    BLS_ENCRYPTED = [0x02, 0x05, 0x1e, 0x35, 0x19], 56, "BLesk";
    TZ5 = [0x06, 0xa1, 0xa9], 20, "tz5";
}

/// Prefixes that exist in Tezos but that this build cannot use, with the
/// reason given to the operator.
const NOT_SUPPORTED: &[(Prefix, &str)] = &[(TZ5, "tz5 (ML-DSA-44) keys cannot be consensus keys")];

/// Encode `payload` under `prefix`.
pub(crate) fn encode(prefix: Prefix, payload: &[u8]) -> String {
    debug_assert_eq!(payload.len(), prefix.len);
    let mut v = Vec::with_capacity(prefix.bytes.len() + payload.len());
    v.extend_from_slice(prefix.bytes);
    v.extend_from_slice(payload);
    bs58::encode(v).with_check().into_string()
}

/// Decode `text` as one of `accepted`, returning which one and its payload.
/// `what` names the expected thing in errors ("secret key", ...).
pub(crate) fn decode(
    text: &str,
    accepted: &[Prefix],
    what: &'static str,
) -> Result<(Prefix, Vec<u8>), KeyError> {
    let raw = bs58::decode(text.trim())
        .with_check(None)
        .into_vec()
        .map_err(|e| KeyError::Base58 {
            what,
            detail: e.to_string(),
        })?;
    for p in accepted {
        if let Some(body) = raw.strip_prefix(p.bytes) {
            if body.len() == p.len {
                return Ok((*p, body.to_vec()));
            }
        }
    }
    for (p, why) in NOT_SUPPORTED {
        if raw.strip_prefix(p.bytes).is_some_and(|b| b.len() == p.len) {
            return Err(KeyError::Unsupported {
                what,
                prefix: p.name,
                reason: why,
            });
        }
    }
    Err(KeyError::UnknownPrefix {
        what,
        found: text.trim().chars().take(5).collect(),
        expected: accepted
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_give_the_documented_human_prefixes() {
        // An all-zero payload under each prefix starts with its name.
        for p in [
            ED25519_SEED,
            ED25519_SECRET,
            ED25519_PUBLIC,
            ED25519_SIG,
            ED25519_ENCRYPTED,
            SECP256K1_SECRET,
            SECP256K1_PUBLIC,
            SECP256K1_SIG,
            SECP256K1_ENCRYPTED,
            P256_SECRET,
            P256_PUBLIC,
            P256_SIG,
            P256_ENCRYPTED,
            GENERIC_SIG,
            BLS_SECRET,
            BLS_PUBLIC,
            BLS_SIG,
            BLS_ENCRYPTED,
            TZ5,
        ] {
            for fill in [0u8, 0xff] {
                let s = encode(p, &vec![fill; p.len]);
                assert!(s.starts_with(p.name), "{} gave {s}", p.name);
            }
        }
    }

    #[test]
    fn unsupported_and_unknown_prefixes_are_named() {
        let tz5 = encode(TZ5, &[7; 20]);
        let e = decode(&tz5, &[ED25519_PUBLIC], "public key").unwrap_err();
        assert!(
            matches!(e, KeyError::Unsupported { prefix: "tz5", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("ML-DSA"), "{e}");
        let chain = bs58::encode([0x57, 0x52, 0x00, 1, 2, 3, 4])
            .with_check()
            .into_string();
        let e = decode(&chain, &[ED25519_SEED], "secret key").unwrap_err();
        assert!(matches!(e, KeyError::UnknownPrefix { .. }), "{e}");
        let e = decode(
            "edsk3gUfUPyBSfrS9CCgmCiQsTCHGkviBDusMxDJstFtojtc1zcpsX",
            &[ED25519_SEED],
            "secret key",
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::Base58 { .. }), "{e}");
    }
}
