//! The watermark ordering rule, as a pure function.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::watermark::{SignRequest, WatermarkKey};

/// A consensus position: (level, round), ordered by level then round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    /// Block level.
    pub level: u32,
    /// Tenderbake round within the level.
    pub round: u32,
}

impl Mark {
    /// A mark at `level`, round 0.
    pub fn level(level: u32) -> Self {
        Mark { level, round: 0 }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(level {}, round {})", self.level, self.round)
    }
}

/// blake2b-256 of the full bytes signed: the identity of a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PayloadHash(pub [u8; 32]);

impl PayloadHash {
    /// Hash `bytes` with blake2b-256.
    pub fn of(bytes: &[u8]) -> Self {
        use blake2::digest::{consts::U32, Digest};
        let mut h = blake2::Blake2b::<U32>::new();
        h.update(bytes);
        PayloadHash(h.finalize().into())
    }
}

impl fmt::Debug for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

/// Most bytes of a stored signature: a BLS (tz4) signature is 96 bytes,
/// ed25519, secp256k1 and P-256 signatures 64.
pub const MAX_SIGNATURE_LEN: usize = 96;

/// The signature released for the message at a mark, kept with the mark so
/// that a repeat returns the very same bytes (as octez-signer does). A
/// fixed buffer keeps [`Watermark`] `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredSignature {
    len: u8,
    bytes: [u8; MAX_SIGNATURE_LEN],
}

impl StoredSignature {
    /// `None` when `bytes` is empty or longer than [`MAX_SIGNATURE_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes.len() > MAX_SIGNATURE_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_SIGNATURE_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(StoredSignature {
            len: bytes.len() as u8,
            bytes: buf,
        })
    }

    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for StoredSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredSignature({} bytes, ", self.len)?;
        for b in self.as_bytes().iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

impl Serialize for StoredSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex: String = self.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for StoredSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad =
            || serde::de::Error::custom(format!("signature {s:?} is not 1 to 96 bytes of hex"));
        if s.len() % 2 != 0 || !s.is_ascii() {
            return Err(bad());
        }
        let bytes = (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        StoredSignature::new(&bytes).ok_or_else(bad)
    }
}

/// A stored high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Watermark {
    /// The highest (level, round) signed or set.
    pub mark: Mark,
    /// The hash of the message signed at `mark`; `None` when the mark was
    /// set by an operator (a raised watermark), in which case nothing at
    /// exactly `mark` may be signed.
    pub payload_hash: Option<PayloadHash>,
    /// The signature stored with the message at `mark`, returned for a
    /// repeat without signing again. `None` for a mark set by an operator,
    /// for an entry written before signatures were stored (format v1), and
    /// for a guard that authorizes before signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<StoredSignature>,
}

impl Watermark {
    /// A mark set by an operator: no payload may be signed (or repeated) at
    /// exactly `mark`.
    pub fn raised(mark: Mark) -> Self {
        Watermark {
            mark,
            payload_hash: None,
            signature: None,
        }
    }

    /// The stored signature of exactly `request`'s message, if any.
    pub fn signature_of(&self, request: &SignRequest) -> Option<StoredSignature> {
        (self.mark == request.mark && self.payload_hash == Some(request.payload_hash))
            .then_some(self.signature)
            .flatten()
    }
}

/// What an authorization permitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The watermark advanced to the request's mark.
    Advanced,
    /// The identical message was authorized before: signing it again yields
    /// the same message, so it is not a double sign. The watermark did not
    /// move.
    Repeat,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The requested mark is below the stored one.
    Below,
    /// Same (level, round), different message.
    DifferentPayload,
    /// Same (level, round) as a mark an operator set: nothing at it may be
    /// signed.
    AtRaisedMark,
    /// The same message was authorized at this mark, but the signature
    /// released for it is not stored (an entry of format v1, or a mark
    /// moved by another writer) and this signer is not deterministic:
    /// signing again would give a second, different signature.
    RepeatWithoutSignature,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::Below => "below the watermark",
            RefusalReason::DifferentPayload => "same level and round, different payload",
            RefusalReason::AtRaisedMark => "at a watermark an operator raised",
            RefusalReason::RepeatWithoutSignature => {
                "a repeat whose released signature is not stored, for a signer that is not deterministic"
            }
        })
    }
}

/// A signature request refused by the watermark rule. It names both marks
/// so the log explains itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused to sign {key} at {requested}: {reason}, stored watermark {stored}", stored = .stored.mark)]
pub struct WatermarkRefusal {
    /// The watermark's key.
    pub key: WatermarkKey,
    /// What is stored (boxed: a stored watermark carries a signature
    /// buffer, and errors stay small).
    pub stored: Box<Watermark>,
    /// What was asked for.
    pub requested: Mark,
    /// Why it was refused.
    pub reason: RefusalReason,
}

/// The rule: allowed iff the request's (level, round) is strictly above the
/// stored mark, or equals it with the same payload hash (a repeat).
pub fn decide(
    stored: Option<&Watermark>,
    request: &SignRequest,
) -> Result<Decision, WatermarkRefusal> {
    let Some(stored) = stored else {
        return Ok(Decision::Advanced);
    };
    let refuse = |reason| WatermarkRefusal {
        key: request.key,
        stored: Box::new(*stored),
        requested: request.mark,
        reason,
    };
    match request.mark.cmp(&stored.mark) {
        std::cmp::Ordering::Greater => Ok(Decision::Advanced),
        std::cmp::Ordering::Less => Err(refuse(RefusalReason::Below)),
        std::cmp::Ordering::Equal => match stored.payload_hash {
            Some(h) if h == request.payload_hash => Ok(Decision::Repeat),
            Some(_) => Err(refuse(RefusalReason::DifferentPayload)),
            None => Err(refuse(RefusalReason::AtRaisedMark)),
        },
    }
}

impl Watermark {
    /// The watermark after `request` is authorized.
    pub fn after(request: &SignRequest) -> Self {
        Watermark {
            mark: request.mark,
            payload_hash: Some(request.payload_hash),
            signature: request.signature,
        }
    }
}
