//! What each key may sign, checked from the documented layout alone (magic
//! byte and chain id), before any watermark is touched. A protocol upgrade
//! that changes operation encodings cannot break this check.

use std::collections::BTreeSet;

use crate::watermark::{ChainId, ConsensusKind};

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
}

/// The magic-byte allow list. slashguard signs consensus payloads only, so
/// the list is a subset of 0x11, 0x12, 0x13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicBytes(BTreeSet<u8>);

impl MagicBytes {
    /// Every consensus magic byte: 0x11, 0x12, 0x13.
    pub fn consensus() -> Self {
        MagicBytes(ConsensusKind::ALL.iter().map(|k| k.magic()).collect())
    }

    /// A list of bytes; `Err` names a byte that is not a consensus kind.
    pub fn new(bytes: impl IntoIterator<Item = u8>) -> Result<Self, u8> {
        let set: BTreeSet<u8> = bytes.into_iter().collect();
        match set
            .iter()
            .find(|b| ConsensusKind::from_magic(**b).is_none())
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
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            kinds: ConsensusKind::ALL.into_iter().collect(),
            chains: None,
            role: Role::Consensus,
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
        assert_eq!(MagicBytes::new([0x11, 0x03]), Err(0x03));
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
}
