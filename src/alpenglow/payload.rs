//! The bytes an Alpenglow vote signs (Agave 4.2+ `VotePayloadToSign`,
//! Firedancer's `ag_vote_payload_bytes_to_sign`), parsed exactly.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | kind: 1 Notarize, 2 Finalize, 3 Skip, 4 NotarizeFallback, 5 SkipFallback, 6 Genesis |
//! | 8 | slot, u64 little-endian |
//! | 32 | block id (kinds 1, 4 and 6 only) |
//! | 2 | shred version, u16 little-endian |
//!
//! A block vote is 43 bytes, a slot vote 11. Anything else (another length,
//! an unknown kind, a certificate kind 7-12, the pre-4.2 bincode layout) is
//! a [`PayloadError`]: the guard never signs bytes it cannot attribute to one
//! vote.

/// A block id (Agave's `Hash` of the block's last shred Merkle root).
pub type BlockId = [u8; 32];

/// Length of a slot vote payload (Finalize, Skip, SkipFallback).
pub const SLOT_VOTE_LEN: usize = 11;
/// Length of a block vote payload (Notarize, NotarizeFallback, Genesis).
pub const BLOCK_VOTE_LEN: usize = 43;

/// One Alpenglow vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// First-round vote for a block (kind 1).
    Notarize(BlockId),
    /// Second-round vote that the slot's notarized block is final (kind 2).
    Finalize,
    /// First-round vote to skip the slot (kind 3).
    Skip,
    /// Fallback vote for a block that may be notarized (kind 4).
    NotarizeFallback(BlockId),
    /// Fallback vote to skip the slot (kind 5).
    SkipFallback,
    /// The migration's genesis vote for a block (kind 6, once).
    Genesis(BlockId),
}

impl VoteKind {
    /// The kind byte.
    pub fn code(&self) -> u8 {
        match self {
            VoteKind::Notarize(_) => 1,
            VoteKind::Finalize => 2,
            VoteKind::Skip => 3,
            VoteKind::NotarizeFallback(_) => 4,
            VoteKind::SkipFallback => 5,
            VoteKind::Genesis(_) => 6,
        }
    }

    /// The block this vote is for, if it is a block vote.
    pub fn block(&self) -> Option<&BlockId> {
        match self {
            VoteKind::Notarize(b) | VoteKind::NotarizeFallback(b) | VoteKind::Genesis(b) => Some(b),
            VoteKind::Finalize | VoteKind::Skip | VoteKind::SkipFallback => None,
        }
    }

    /// Agave's name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            VoteKind::Notarize(_) => "Notarize",
            VoteKind::Finalize => "Finalize",
            VoteKind::Skip => "Skip",
            VoteKind::NotarizeFallback(_) => "NotarizeFallback",
            VoteKind::SkipFallback => "SkipFallback",
            VoteKind::Genesis(_) => "Genesis",
        }
    }
}

impl std::fmt::Display for VoteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.block() {
            Some(b) => write!(f, "{}({})", self.name(), bs58::encode(b).into_string()),
            None => f.write_str(self.name()),
        }
    }
}

/// A vote and the cluster it is for: exactly what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vote {
    /// The slot voted on.
    pub slot: u64,
    /// What is voted.
    pub kind: VoteKind,
    /// The cluster's shred version.
    pub shred_version: u16,
}

/// Why bytes are not an Alpenglow vote payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlpenglowPayloadError {
    /// No bytes.
    #[error("empty Alpenglow vote payload")]
    Empty,
    /// A kind byte that is not a vote (0, a certificate 7-12, or above).
    #[error("unknown Alpenglow vote kind {0} (votes are 1-6)")]
    UnknownKind(u8),
    /// The length does not match the kind.
    #[error("{kind} payload of {len} bytes (it must be {expected})")]
    Length {
        /// The kind's name.
        kind: &'static str,
        /// Bytes given.
        len: usize,
        /// Bytes that kind has.
        expected: usize,
    },
}

impl Vote {
    /// Parse the signed bytes: 11 bytes for a slot vote, 43 for a block
    /// vote, nothing else.
    pub fn parse(bytes: &[u8]) -> Result<Vote, AlpenglowPayloadError> {
        let (&code, _) = bytes.split_first().ok_or(AlpenglowPayloadError::Empty)?;
        let (name, block_vote) = match code {
            1 => ("Notarize", true),
            2 => ("Finalize", false),
            3 => ("Skip", false),
            4 => ("NotarizeFallback", true),
            5 => ("SkipFallback", false),
            6 => ("Genesis", true),
            other => return Err(AlpenglowPayloadError::UnknownKind(other)),
        };
        let expected = if block_vote {
            BLOCK_VOTE_LEN
        } else {
            SLOT_VOTE_LEN
        };
        if bytes.len() != expected {
            return Err(AlpenglowPayloadError::Length {
                kind: name,
                len: bytes.len(),
                expected,
            });
        }
        let slot = u64::from_le_bytes(bytes[1..9].try_into().expect("length checked"));
        let block = || -> BlockId { bytes[9..41].try_into().expect("length checked") };
        let kind = match code {
            1 => VoteKind::Notarize(block()),
            2 => VoteKind::Finalize,
            3 => VoteKind::Skip,
            4 => VoteKind::NotarizeFallback(block()),
            5 => VoteKind::SkipFallback,
            _ => VoteKind::Genesis(block()),
        };
        let sv = &bytes[expected - 2..];
        Ok(Vote {
            slot,
            kind,
            shred_version: u16::from_le_bytes([sv[0], sv[1]]),
        })
    }

    /// The signed bytes (the inverse of [`parse`](Self::parse)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOCK_VOTE_LEN);
        out.push(self.kind.code());
        out.extend_from_slice(&self.slot.to_le_bytes());
        if let Some(b) = self.kind.block() {
            out.extend_from_slice(b);
        }
        out.extend_from_slice(&self.shred_version.to_le_bytes());
        out
    }
}

impl std::fmt::Display for Vote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at slot {}", self.kind, self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Byte vectors written by hand from the documented layout, for every
    /// kind at boundary slots and shred versions.
    #[test]
    fn vectors_for_every_kind() {
        let b = [0xab; 32];
        let cases: Vec<(&str, Vote)> = vec![
            (
                "01 0000000000000000 abababababababababababababababababababababababababababababababab 0000",
                Vote { slot: 0, kind: VoteKind::Notarize(b), shred_version: 0 },
            ),
            (
                "02 ffffffffffffffff ffff",
                Vote { slot: u64::MAX, kind: VoteKind::Finalize, shred_version: u16::MAX },
            ),
            (
                "03 0100000000000000 0100",
                Vote { slot: 1, kind: VoteKind::Skip, shred_version: 1 },
            ),
            (
                "04 87bf651b00000000 abababababababababababababababababababababababababababababababab 3412",
                // Alpenglow's mainnet genesis slot 459,652,999 = 0x1b65bf87.
                Vote { slot: 459_652_999, kind: VoteKind::NotarizeFallback(b), shred_version: 0x1234 },
            ),
            (
                "05 feffffffffffffff 0080",
                Vote { slot: u64::MAX - 1, kind: VoteKind::SkipFallback, shred_version: 0x8000 },
            ),
            (
                "06 0000000000000080 abababababababababababababababababababababababababababababababab feff",
                Vote { slot: 1 << 63, kind: VoteKind::Genesis(b), shred_version: 0xfffe },
            ),
        ];
        for (bytes, vote) in cases {
            let bytes = hex(bytes);
            assert_eq!(Vote::parse(&bytes).unwrap(), vote, "{vote}");
            assert_eq!(vote.to_bytes(), bytes, "{vote}");
        }
    }

    #[test]
    fn malformed_lengths_and_kinds_are_refused() {
        assert_eq!(Vote::parse(&[]), Err(AlpenglowPayloadError::Empty));
        for kind in [0u8, 7, 8, 12, 13, 0x80, 0xff] {
            let mut p = vec![kind];
            p.resize(SLOT_VOTE_LEN, 0);
            assert_eq!(
                Vote::parse(&p),
                Err(AlpenglowPayloadError::UnknownKind(kind))
            );
            p.resize(BLOCK_VOTE_LEN, 0);
            assert_eq!(
                Vote::parse(&p),
                Err(AlpenglowPayloadError::UnknownKind(kind))
            );
        }
        for kind in 1u8..=6 {
            let block = matches!(kind, 1 | 4 | 6);
            let expected = if block { BLOCK_VOTE_LEN } else { SLOT_VOTE_LEN };
            for len in 1..=BLOCK_VOTE_LEN + 2 {
                let mut p = vec![kind];
                p.resize(len, 0);
                let r = Vote::parse(&p);
                if len == expected {
                    assert!(r.is_ok(), "kind {kind} len {len}");
                } else {
                    assert!(
                        matches!(r, Err(AlpenglowPayloadError::Length { len: l, expected: e, .. }) if l == len && e == expected),
                        "kind {kind} len {len}: {r:?}"
                    );
                }
            }
        }
        // A slot vote padded to block length, and the pre-4.2 bincode enum
        // layout (u32 tag), are both refused.
        let mut padded = hex("02 0100000000000000 0000");
        padded.resize(BLOCK_VOTE_LEN, 0);
        assert!(Vote::parse(&padded).is_err());
        assert!(Vote::parse(&hex("00000000 0100000000000000")).is_err());
    }
}
