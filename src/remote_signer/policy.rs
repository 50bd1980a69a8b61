//! What each key may sign, checked from the documented layout alone (magic
//! byte and chain id), before any watermark is touched. A protocol upgrade
//! that changes operation encodings cannot break this check. Generic
//! operations (0x03), when a key allows some kinds, are checked apart by
//! [`KeyPolicy::check_generic`] with the [`generic`]
//! decoder; the consensus check never uses it.

use std::collections::BTreeSet;

use crate::remote_signer::generic::{self, GenericError, GenericOperation, OperationKind};
use crate::watermark::{ChainId, ConsensusKind, KeyHash};

/// The role of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// A consensus key: blocks, preattestations and attestations as its
    /// policy allows.
    #[default]
    Consensus,
    /// A tz4 baker's companion key: attestations only (it co-signs the
    /// DAL-carrying attestation of its consensus key).
    Companion,
}

/// Why a policy refused, before any watermark was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    /// The magic byte is not on the allow list (`-M`).
    #[error("magic byte {0:#04X} not allowed")]
    MagicByte(u8),
    /// The key is not allowed this kind.
    #[error("this key does not sign {0}s (not in its allowed kinds)")]
    Kind(ConsensusKind),
    /// A companion key asked for anything but an attestation.
    #[error("a companion key signs attestations only, not {0}s")]
    Companion(ConsensusKind),
    /// The chain is not allowed for this key.
    #[error("chain {0} is not allowed for this key")]
    Chain(ChainId),
    /// A generic operation (0x03) this key may not sign.
    #[error("generic operation refused: {0}")]
    Generic(GenericRefusal),
}

/// Why a generic operation (0x03) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenericRefusal {
    /// The key's policy lists no operation kinds.
    #[error("this key signs no generic operations (its policy lists no operation kinds)")]
    NoneAllowed,
    /// The key is held by a device, which signs consensus operations only.
    #[error("this key is held by a signing device, which signs consensus operations only")]
    DeviceKey,
    /// A content the decoder does not understand (named in the error).
    #[error("{0}")]
    NotUnderstood(GenericError),
    /// A content of a kind the key's policy does not list.
    #[error(
        "content {index} at byte {offset} is a {kind}, not in this key's allowed operation kinds"
    )]
    Kind {
        /// Which content (0 is the first).
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Its kind.
        kind: OperationKind,
    },
    /// A content whose source is another key.
    #[error("content {index} at byte {offset} ({kind}) has source {source_key}, not this key")]
    Source {
        /// Which content.
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Its kind.
        kind: OperationKind,
        /// The source it names.
        source_key: KeyHash,
    },
}

/// The magic-byte allow list: a subset of the consensus bytes 0x11, 0x12,
/// 0x13 and the generic-operation byte 0x03.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicBytes(BTreeSet<u8>);

impl MagicBytes {
    /// Every consensus magic byte: 0x11, 0x12, 0x13.
    pub fn consensus() -> Self {
        MagicBytes(ConsensusKind::ALL.iter().map(|k| k.magic()).collect())
    }

    /// The consensus bytes and 0x03 (generic operations).
    pub fn consensus_and_generic() -> Self {
        let mut m = Self::consensus();
        m.0.insert(generic::MAGIC);
        m
    }

    /// A list of bytes; `Err` names a byte that is neither a consensus
    /// kind nor 0x03.
    pub fn new(bytes: impl IntoIterator<Item = u8>) -> Result<Self, u8> {
        let set: BTreeSet<u8> = bytes.into_iter().collect();
        match set
            .iter()
            .find(|b| **b != generic::MAGIC && ConsensusKind::from_magic(**b).is_none())
        {
            Some(b) => Err(*b),
            None => Ok(MagicBytes(set)),
        }
    }

    /// `Ok` when `data`'s first byte is on the list.
    pub fn check(&self, data: &[u8]) -> Result<(), PolicyRefusal> {
        let b = data.first().copied().unwrap_or(0);
        if self.0.contains(&b) {
            Ok(())
        } else {
            Err(PolicyRefusal::MagicByte(b))
        }
    }

    /// The bytes on the list.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().copied()
    }

    /// Whether `b` is on the list.
    pub fn contains(&self, b: u8) -> bool {
        self.0.contains(&b)
    }
}

/// The policy of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Kinds it signs.
    pub kinds: BTreeSet<ConsensusKind>,
    /// Chains it signs for; `None` for any (each chain has its own
    /// watermarks either way).
    pub chains: Option<BTreeSet<ChainId>>,
    /// Its role.
    pub role: Role,
    /// Generic-operation (0x03) kinds it signs; empty (the default) for
    /// none.
    pub operations: BTreeSet<OperationKind>,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            kinds: ConsensusKind::ALL.into_iter().collect(),
            chains: None,
            role: Role::Consensus,
            operations: BTreeSet::new(),
        }
    }
}

impl KeyPolicy {
    /// Check `data` (magic byte first) against the policy. Data whose
    /// magic byte is no consensus kind, or too short to hold a chain id,
    /// passes here and is refused by the payload parser.
    pub fn check(&self, data: &[u8]) -> Result<(), PolicyRefusal> {
        let Some(kind) = data.first().and_then(|b| ConsensusKind::from_magic(*b)) else {
            return Ok(());
        };
        if self.role == Role::Companion && kind != ConsensusKind::Attestation {
            return Err(PolicyRefusal::Companion(kind));
        }
        if !self.kinds.contains(&kind) {
            return Err(PolicyRefusal::Kind(kind));
        }
        if let (Some(chains), Some(id)) = (&self.chains, data.get(1..5)) {
            let chain = ChainId(id.try_into().expect("4 bytes"));
            if !chains.contains(&chain) {
                return Err(PolicyRefusal::Chain(chain));
            }
        }
        Ok(())
    }

    /// Check a generic operation (`data` starting with 0x03) for the key
    /// `signer`: every content decoded, of an allowed kind, with `signer`
    /// as its source. The first content that fails is named.
    pub fn check_generic(
        &self,
        data: &[u8],
        signer: &KeyHash,
    ) -> Result<GenericOperation, PolicyRefusal> {
        let refuse = |r| PolicyRefusal::Generic(r);
        if self.operations.is_empty() {
            return Err(refuse(GenericRefusal::NoneAllowed));
        }
        let op = generic::decode(data).map_err(|e| refuse(GenericRefusal::NotUnderstood(e)))?;
        for (index, c) in op.contents.iter().enumerate() {
            if !self.operations.contains(&c.kind) {
                return Err(refuse(GenericRefusal::Kind {
                    index,
                    offset: c.offset,
                    kind: c.kind,
                }));
            }
            // One signature covers the whole batch, and it is the
            // source's: a content of another source is not this key's to
            // sign.
            if c.source != *signer {
                return Err(refuse(GenericRefusal::Source {
                    index,
                    offset: c.offset,
                    kind: c.kind,
                    source_key: c.source,
                }));
            }
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(magic: u8, chain: [u8; 4]) -> Vec<u8> {
        let mut p = vec![magic];
        p.extend_from_slice(&chain);
        p.extend_from_slice(&[0; 75]);
        p
    }

    #[test]
    fn magic_bytes() {
        let m = MagicBytes::consensus();
        for b in [0x11, 0x12, 0x13] {
            assert_eq!(m.check(&[b]), Ok(()));
        }
        assert_eq!(m.check(&[0x03]), Err(PolicyRefusal::MagicByte(3)));
        assert_eq!(m.check(&[]), Err(PolicyRefusal::MagicByte(0)));
        assert_eq!(
            PolicyRefusal::MagicByte(3).to_string(),
            "magic byte 0x03 not allowed"
        );
        let only_blocks = MagicBytes::new([0x11]).unwrap();
        assert!(only_blocks.check(&[0x13]).is_err());
        assert_eq!(MagicBytes::new([0x11, 0x01]), Err(0x01));
        assert!(MagicBytes::new([0x11, 0x03]).unwrap().contains(0x03));
        assert!(!MagicBytes::consensus().contains(0x03));
    }

    #[test]
    fn kinds_chains_and_roles() {
        let main = [0x7a, 0x06, 0xa7, 0x70];
        let other = [1, 2, 3, 4];
        let any = KeyPolicy::default();
        for m in [0x11, 0x12, 0x13] {
            assert_eq!(any.check(&payload(m, other)), Ok(()));
        }
        let p = KeyPolicy {
            kinds: [ConsensusKind::Attestation].into(),
            chains: Some([ChainId(main)].into()),
            role: Role::Consensus,
            operations: BTreeSet::new(),
        };
        assert_eq!(p.check(&payload(0x13, main)), Ok(()));
        assert_eq!(
            p.check(&payload(0x11, main)),
            Err(PolicyRefusal::Kind(ConsensusKind::Block))
        );
        assert_eq!(
            p.check(&payload(0x13, other)),
            Err(PolicyRefusal::Chain(ChainId(other)))
        );
        let companion = KeyPolicy {
            role: Role::Companion,
            ..KeyPolicy::default()
        };
        assert_eq!(companion.check(&payload(0x13, main)), Ok(()));
        for (m, k) in [
            (0x11, ConsensusKind::Block),
            (0x12, ConsensusKind::Preattestation),
        ] {
            assert_eq!(
                companion.check(&payload(m, main)),
                Err(PolicyRefusal::Companion(k))
            );
        }
    }

    /// `03 ‖ branch ‖` a delegation and a reveal by `source` (tz1).
    fn batch(source: [u8; 20], first_tag: u8) -> Vec<u8> {
        let mut v = vec![0x03];
        v.extend_from_slice(&[0xbb; 32]);
        v.extend_from_slice(&[first_tag, 0x00]);
        v.extend_from_slice(&source);
        v.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x00]); // fee..limits, no delegate
        v.extend_from_slice(&[107, 0x00]);
        v.extend_from_slice(&source);
        v.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        v.push(0x00);
        v.extend_from_slice(&[0x44; 32]);
        v.push(0x00);
        v
    }

    #[test]
    fn generic_operations_every_content_checked() {
        use crate::watermark::Curve;
        let me = KeyHash {
            curve: Curve::Ed25519,
            hash: [7; 20],
        };
        let ok = batch([7; 20], 110);
        // No kinds listed: nothing generic is signed.
        assert_eq!(
            KeyPolicy::default().check_generic(&ok, &me),
            Err(PolicyRefusal::Generic(GenericRefusal::NoneAllowed))
        );
        let p = KeyPolicy {
            operations: [OperationKind::Delegation, OperationKind::Reveal].into(),
            ..KeyPolicy::default()
        };
        let op = p.check_generic(&ok, &me).unwrap();
        assert_eq!(op.contents.len(), 2);
        // The second content of a batch is checked too.
        let only_delegation = KeyPolicy {
            operations: [OperationKind::Delegation].into(),
            ..KeyPolicy::default()
        };
        let e = only_delegation.check_generic(&ok, &me).unwrap_err();
        assert_eq!(
            e.to_string(),
            "generic operation refused: content 1 at byte 60 is a reveal, not in this key's allowed operation kinds"
        );
        // Another source.
        let e = p.check_generic(&batch([8; 20], 110), &me).unwrap_err();
        assert!(
            matches!(
                e,
                PolicyRefusal::Generic(GenericRefusal::Source { index: 0, .. })
            ),
            "{e}"
        );
        // Not understood: named.
        let e = p.check_generic(&batch([7; 20], 17), &me).unwrap_err();
        assert!(e.to_string().contains("failing_noop (tag 17)"), "{e}");
        // The consensus check lets 0x03 through untouched (the magic-byte
        // list decides), and never decodes it.
        assert_eq!(KeyPolicy::default().check(&ok), Ok(()));
    }
}
