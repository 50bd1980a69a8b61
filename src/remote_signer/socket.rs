//! The TCP and Unix-socket protocol of octez's signer: `u16` big-endian
//! length frames; a request is a tag byte (0 to 7) and its body; a reply
//! is `00 ‖ value` or `01 ‖ error trace`. Pure: no I/O.

use crate::remote_signer::auth::pkh21;
use crate::remote_signer::trace::{self, TraceError};
use crate::watermark::{Curve, KeyHash};

/// The largest frame payload (the length is a `u16`).
pub const MAX_FRAME: usize = u16::MAX as usize;

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Tag 0.
    Sign {
        /// The key.
        pkh: KeyHash,
        /// The signature version (tz4 keys only carry one).
        version: Option<u8>,
        /// The bytes to sign.
        data: Vec<u8>,
        /// The raw authentication signature, if any.
        authentication: Option<Vec<u8>>,
    },
    /// Tag 1.
    PublicKey(KeyHash),
    /// Tag 2.
    AuthorizedKeys,
    /// Tag 3 (with `hash: false`) and 4 (`hash: true`).
    DeterministicNonce {
        /// Tag 4: the nonce's hash.
        hash: bool,
        /// The key.
        pkh: KeyHash,
        /// The data.
        data: Vec<u8>,
        /// The raw authentication signature, if any.
        authentication: Option<Vec<u8>>,
    },
    /// Tag 5.
    SupportsDeterministicNonces(KeyHash),
    /// Tag 6.
    KnownKeys,
    /// Tag 7.
    ProvePossession {
        /// The key.
        pkh: KeyHash,
        /// An override public key.
        public_key: Option<Box<[u8; 48]>>,
    },
}

/// Why a frame is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An empty frame.
    #[error("empty request")]
    Empty,
    /// An unknown request tag.
    #[error("unknown request tag {0}")]
    UnknownTag(u8),
    /// Shorter than its fields.
    #[error("request truncated: {0}")]
    Truncated(&'static str),
    /// A key hash of an unknown or unsupported scheme.
    #[error("{0}")]
    BadKeyHash(String),
    /// Bytes that are no field.
    #[error("{0}")]
    Malformed(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (h, t) = self.bytes.split_at(n);
        self.bytes = t;
        Ok(h)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn pkh21(&mut self) -> Result<KeyHash, DecodeError> {
        let tag = self.u8("key hash")?;
        let hash: [u8; 20] = self.take(20, "key hash")?.try_into().expect("20 bytes");
        let curve = match Curve::from_tag(tag) {
            Some(c) => c,
            None if tag == 4 => {
                return Err(DecodeError::BadKeyHash(
                    "tz5 (ML-DSA-44) keys cannot be consensus keys".into(),
                ))
            }
            None => {
                return Err(DecodeError::BadKeyHash(format!(
                    "unknown key hash tag {tag}"
                )))
            }
        };
        Ok(KeyHash { curve, hash })
    }
    fn data(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32("data length")? as usize;
        Ok(self.take(n, "data")?.to_vec())
    }
    /// The optional raw authentication signature: the rest of the frame.
    fn authentication(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let rest = std::mem::take(&mut self.bytes);
        match rest.len() {
            0 => Ok(None),
            64 | 96 => Ok(Some(rest.to_vec())),
            n => Err(DecodeError::Malformed(format!(
                "{n} trailing bytes are not a signature (64 or 96 bytes)"
            ))),
        }
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the request",
                self.bytes.len()
            )))
        }
    }
}

/// Decode one frame's payload as a request.
pub fn decode_request(frame: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader { bytes: frame };
    let tag = r.u8("tag").map_err(|_| DecodeError::Empty)?;
    let req = match tag {
        0 => {
            // The versioned key hash: tz4 is `03 ‖ pkh21 ‖ version`.
            let (pkh, version) = if r.bytes.first() == Some(&3) {
                r.u8("key hash")?;
                let pkh = r.pkh21()?;
                if pkh.curve != Curve::Bls {
                    return Err(DecodeError::BadKeyHash(
                        "a versioned (tz4) key hash that is not tz4".into(),
                    ));
                }
                (pkh, Some(r.u8("version")?))
            } else {
                (r.pkh21()?, None)
            };
            let data = r.data()?;
            let authentication = r.authentication()?;
            Request::Sign {
                pkh,
                version,
                data,
                authentication,
            }
        }
        1 => Request::PublicKey(r.pkh21()?),
        2 => Request::AuthorizedKeys,
        3 | 4 => {
            let pkh = r.pkh21()?;
            let data = r.data()?;
            let authentication = r.authentication()?;
            Request::DeterministicNonce {
                hash: tag == 4,
                pkh,
                data,
                authentication,
            }
        }
        5 => Request::SupportsDeterministicNonces(r.pkh21()?),
        6 => Request::KnownKeys,
        7 => {
            let pkh = r.pkh21()?;
            let public_key = match r.u8("option tag")? {
                0x00 => None,
                0xff => Some(Box::new(
                    r.take(48, "BLS public key")?.try_into().expect("48 bytes"),
                )),
                t => {
                    return Err(DecodeError::Malformed(format!(
                        "option tag {t:#04x} (expected 00 or ff)"
                    )))
                }
            };
            Request::ProvePossession { pkh, public_key }
        }
        t => return Err(DecodeError::UnknownTag(t)),
    };
    r.end()?;
    Ok(req)
}

fn push_pkh(out: &mut Vec<u8>, pkh: &KeyHash) {
    out.extend_from_slice(&pkh21(pkh));
}

fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Encode a request as a client sends it (without the frame length).
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    match req {
        Request::Sign {
            pkh,
            version,
            data,
            authentication,
        } => {
            out.push(0);
            if pkh.curve == Curve::Bls {
                out.push(3);
                push_pkh(&mut out, pkh);
                out.push(version.unwrap_or(0));
            } else {
                push_pkh(&mut out, pkh);
            }
            push_data(&mut out, data);
            if let Some(a) = authentication {
                out.extend_from_slice(a);
            }
        }
        Request::PublicKey(pkh) => {
            out.push(1);
            push_pkh(&mut out, pkh);
        }
        Request::AuthorizedKeys => out.push(2),
        Request::DeterministicNonce {
            hash,
            pkh,
            data,
            authentication,
        } => {
            out.push(if *hash { 4 } else { 3 });
            push_pkh(&mut out, pkh);
            push_data(&mut out, data);
            if let Some(a) = authentication {
                out.extend_from_slice(a);
            }
        }
        Request::SupportsDeterministicNonces(pkh) => {
            out.push(5);
            push_pkh(&mut out, pkh);
        }
        Request::KnownKeys => out.push(6),
        Request::ProvePossession { pkh, public_key } => {
            out.push(7);
            push_pkh(&mut out, pkh);
            match public_key {
                None => out.push(0),
                Some(k) => {
                    out.push(0xff);
                    out.extend_from_slice(&k[..]);
                }
            }
        }
    }
    out
}

/// Prefix `payload` with its `u16` length; `None` if it cannot travel.
pub fn frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    Some(out)
}

/// A success reply: `00 ‖ value`.
pub fn ok_reply(value: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(value);
    out
}

/// An error reply: `01 ‖ trace`.
pub fn error_reply(errors: &[TraceError]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&trace::to_binary(errors));
    out
}

/// The value of an Authorized_keys reply: `00` without authentication,
/// else `01 ‖ u32 total ‖ pkh21*`.
pub fn authorized_keys_value(keys: Option<&[KeyHash]>) -> Vec<u8> {
    match keys {
        None => vec![0],
        Some(k) => {
            let mut out = vec![1];
            out.extend_from_slice(&key_list(k));
            out
        }
    }
}

/// `u32 total ‖ pkh21*` (Known_keys, and Authorized_keys after its tag).
pub fn key_list(keys: &[KeyHash]) -> Vec<u8> {
    let mut out = ((keys.len() * 21) as u32).to_be_bytes().to_vec();
    for k in keys {
        push_pkh(&mut out, k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz1() -> KeyHash {
        "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap()
    }

    #[test]
    fn authorized_keys_request_and_reply_vectors() {
        // remote-signer.md section 3: `00 01 02` -> `00 02 00 00`.
        let req = frame(&encode_request(&Request::AuthorizedKeys)).unwrap();
        assert_eq!(req, [0x00, 0x01, 0x02]);
        assert_eq!(decode_request(&req[2..]), Ok(Request::AuthorizedKeys));
        let reply = frame(&ok_reply(&authorized_keys_value(None))).unwrap();
        assert_eq!(reply, [0x00, 0x02, 0x00, 0x00]);
    }

    #[test]
    fn sign_request_vector_tz1() {
        let k = tz1();
        let mut bytes = vec![0x00, 0x00];
        bytes.extend_from_slice(&k.hash);
        bytes.extend_from_slice(&[0, 0, 0, 3, 0x11, 0xab, 0xcd]);
        let req = Request::Sign {
            pkh: k,
            version: None,
            data: vec![0x11, 0xab, 0xcd],
            authentication: None,
        };
        assert_eq!(encode_request(&req), bytes);
        assert_eq!(decode_request(&bytes), Ok(req));
        // With a raw 64-byte authentication signature appended.
        let mut with_auth = bytes.clone();
        with_auth.extend_from_slice(&[9; 64]);
        assert!(matches!(
            decode_request(&with_auth),
            Ok(Request::Sign { authentication: Some(a), .. }) if a == vec![9; 64]
        ));
        // The reply: `00 41 00 <64-byte signature>`.
        let reply = frame(&ok_reply(&[5; 64])).unwrap();
        assert_eq!(&reply[..3], &[0x00, 0x41, 0x00]);
        assert_eq!(reply.len(), 67);
    }

    #[test]
    fn sign_request_vector_tz4_is_versioned() {
        let k = KeyHash {
            curve: Curve::Bls,
            hash: [0x44; 20],
        };
        let req = Request::Sign {
            pkh: k,
            version: Some(2),
            data: vec![0x13],
            authentication: None,
        };
        let bytes = encode_request(&req);
        let mut expected = vec![0x00, 0x03, 0x03];
        expected.extend_from_slice(&[0x44; 20]);
        expected.extend_from_slice(&[0x02, 0, 0, 0, 1, 0x13]);
        assert_eq!(bytes, expected);
        assert_eq!(decode_request(&bytes), Ok(req));
    }

    #[test]
    fn other_request_vectors() {
        let k = tz1();
        let mut pk = vec![0x01, 0x00];
        pk.extend_from_slice(&k.hash);
        assert_eq!(decode_request(&pk), Ok(Request::PublicKey(k)));
        assert_eq!(encode_request(&Request::PublicKey(k)), pk);
        assert_eq!(decode_request(&[6]), Ok(Request::KnownKeys));
        let mut sup = vec![5, 0];
        sup.extend_from_slice(&k.hash);
        assert_eq!(
            decode_request(&sup),
            Ok(Request::SupportsDeterministicNonces(k))
        );
        let mut nonce = vec![4, 0];
        nonce.extend_from_slice(&k.hash);
        nonce.extend_from_slice(&[0, 0, 0, 1, 0x42]);
        assert_eq!(
            decode_request(&nonce),
            Ok(Request::DeterministicNonce {
                hash: true,
                pkh: k,
                data: vec![0x42],
                authentication: None
            })
        );
        let mut pop = vec![7, 3];
        pop.extend_from_slice(&[1; 20]);
        pop.push(0);
        assert!(matches!(
            decode_request(&pop),
            Ok(Request::ProvePossession {
                public_key: None,
                ..
            })
        ));
        let mut pop_pk = pop.clone();
        *pop_pk.last_mut().unwrap() = 0xff;
        pop_pk.extend_from_slice(&[2; 48]);
        let decoded = decode_request(&pop_pk).unwrap();
        assert_eq!(encode_request(&decoded), pop_pk);
    }

    #[test]
    fn bad_requests_are_typed() {
        assert_eq!(decode_request(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_request(&[8]), Err(DecodeError::UnknownTag(8)));
        assert!(matches!(
            decode_request(&[1, 0, 1]),
            Err(DecodeError::Truncated(_))
        ));
        let mut tz5 = vec![1, 4];
        tz5.extend_from_slice(&[0; 20]);
        assert!(decode_request(&tz5)
            .unwrap_err()
            .to_string()
            .contains("tz5"));
        let mut long = vec![0, 0];
        long.extend_from_slice(&[0; 20]);
        long.extend_from_slice(&[0, 0, 0, 9, 1]);
        assert!(matches!(
            decode_request(&long),
            Err(DecodeError::Truncated("data"))
        ));
        let mut trailing = vec![2, 0];
        assert!(matches!(
            decode_request(&trailing),
            Err(DecodeError::Malformed(_))
        ));
        trailing.truncate(1);
        let mut odd_auth = vec![0, 0];
        odd_auth.extend_from_slice(&[0; 20]);
        odd_auth.extend_from_slice(&[0, 0, 0, 1, 0x11, 1, 2, 3]);
        assert!(matches!(
            decode_request(&odd_auth),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(frame(&vec![0; MAX_FRAME + 1]), None);
        assert_eq!(frame(&vec![0; MAX_FRAME]).unwrap().len(), MAX_FRAME + 2);
    }

    #[test]
    fn key_lists() {
        let k = tz1();
        let v = authorized_keys_value(Some(&[k]));
        assert_eq!(&v[..5], &[1, 0, 0, 0, 21]);
        assert_eq!(v[5], 0);
        assert_eq!(&v[6..], &k.hash);
        assert_eq!(key_list(&[]), vec![0, 0, 0, 0]);
        let e = error_reply(&[TraceError::failure("x")]);
        assert_eq!(e[0], 1);
        assert_eq!(&e[1..], &trace::to_binary(&[TraceError::failure("x")])[..]);
    }
}
