//! The signed envelope of an Agave tower file (`docs/agave-tower.md`):
//! `u32 variant` (absent in pre-1.9 files), a 64-byte ed25519 signature by
//! the node over `data`, `u64 len`, `data`. The node key itself is not in
//! the envelope; it is the tower's first field and the file's name.

use std::fmt;

use crate::agave::error::AgaveError;
use crate::agave::tower::{AgaveTower, TowerLayout};
use crate::agave::wire::{self, Input};
use crate::identity::{NodeId, NodeKeypair};

/// Which of Agave's two tower file names bytes come from; the name decides
/// the envelope, because the bytes alone cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `tower-1_9-<node>.bin`: the envelope starts with a u32 variant.
    V1_9,
    /// `tower-<node>.bin`, written before Agave 1.9: no variant, data in
    /// the 1.7.14 layout. Agave reads it only when the `tower-1_9` file
    /// does not exist.
    Legacy,
}

/// The envelope of a decoded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EnvelopeFormat {
    /// `tower-1_9` file, variant 1, data in the 1.14.11 layout: what every
    /// current Agave writes.
    Current,
    /// `tower-1_9` file, variant 0, data in the 1.7.14 layout.
    V1_7_14,
    /// `tower-<node>.bin`: no variant, data in the 1.7.14 layout.
    Legacy,
}

impl EnvelopeFormat {
    /// The layout of the tower `data` inside.
    pub fn layout(self) -> TowerLayout {
        match self {
            EnvelopeFormat::Current => TowerLayout::V1_14_11,
            EnvelopeFormat::V1_7_14 | EnvelopeFormat::Legacy => TowerLayout::V1_7_14,
        }
    }

    /// The file name this envelope belongs under.
    pub fn file_kind(self) -> FileKind {
        match self {
            EnvelopeFormat::Current | EnvelopeFormat::V1_7_14 => FileKind::V1_9,
            EnvelopeFormat::Legacy => FileKind::Legacy,
        }
    }

    fn variant(self) -> Option<u32> {
        match self {
            EnvelopeFormat::Current => Some(1),
            EnvelopeFormat::V1_7_14 => Some(0),
            EnvelopeFormat::Legacy => None,
        }
    }
}

/// A decoded Agave tower file: envelope, signed `data`, and the tower it
/// holds.
///
/// A value is either decoded from bytes or signed by the node identity
/// ([`sign`](Self::sign)); its `data` and tower always agree, so
/// [`encode`](Self::encode) gives back exactly the bytes it was decoded
/// from.
#[derive(Clone, PartialEq, Eq)]
pub struct SavedTower {
    format: EnvelopeFormat,
    signature: [u8; 64],
    data: Vec<u8>,
    tower: AgaveTower,
}

impl fmt::Debug for SavedTower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedTower")
            .field("format", &self.format)
            .field("node", &self.tower.node_pubkey)
            .field("last_voted_slot", &self.tower.last_voted_slot())
            .field("root", &self.tower.root())
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Bytes of the envelope around `data`.
pub(crate) const ENVELOPE_OVERHEAD: usize = 4 + 64 + 8;

impl SavedTower {
    /// Decode and verify a tower file of node `expected`, as Agave's loader
    /// does: a tower of another node is [`AgaveError::ForeignNode`], a
    /// signature that does not verify (strictly) under `expected` is
    /// [`AgaveError::BadSignature`]. Stricter than Agave: bytes after the
    /// envelope and any non-canonical encoding are refused, so that
    /// [`encode`](Self::encode) returns `bytes` unchanged.
    pub fn decode(bytes: &[u8], kind: FileKind, expected: &NodeId) -> Result<Self, AgaveError> {
        let saved = Self::decode_unverified(bytes, kind)?;
        if saved.node() != *expected {
            return Err(AgaveError::ForeignNode {
                expected: *expected,
                found: saved.node(),
            });
        }
        saved.verify()?;
        Ok(saved)
    }

    /// Decode without checking node or signature (for inspection tools and
    /// fuzzing). Check [`verify`](Self::verify) before trusting it.
    pub fn decode_unverified(bytes: &[u8], kind: FileKind) -> Result<Self, AgaveError> {
        if bytes.is_empty() {
            return Err(AgaveError::Empty);
        }
        let mut input = Input::new(bytes, 0);
        let format = match kind {
            FileKind::Legacy => EnvelopeFormat::Legacy,
            FileKind::V1_9 => {
                let offset = input.offset();
                match input.u32("envelope variant")? {
                    0 => EnvelopeFormat::V1_7_14,
                    1 => EnvelopeFormat::Current,
                    found => {
                        return Err(AgaveError::BadTag {
                            field: "envelope variant",
                            offset,
                            found,
                        })
                    }
                }
            }
        };
        let signature = input.array("signature")?;
        let data = input.bytes("data")?;
        let data_at = input.offset() - data.len();
        input.finish(|offset, count| AgaveError::TrailingBytes { offset, count })?;
        let tower = AgaveTower::decode_at(data, format.layout(), data_at)?;
        Ok(SavedTower {
            format,
            signature,
            data: data.to_vec(),
            tower,
        })
    }

    /// Sign `tower` with the node identity in the envelope current Agave
    /// writes ([`EnvelopeFormat::Current`]). The tower must be the
    /// identity's own ([`AgaveError::ForeignNode`] otherwise) and encodable.
    ///
    /// Only a well-formed tower of the identity's own node can be signed
    /// this way: the identity never signs bytes chosen by the caller.
    pub fn sign(tower: AgaveTower, identity: &NodeKeypair) -> Result<Self, AgaveError> {
        Self::sign_as(EnvelopeFormat::Current, tower, identity)
    }

    /// [`sign`](Self::sign) in a chosen envelope (an older format, for a
    /// node that still runs an old release or for tests).
    pub fn sign_as(
        format: EnvelopeFormat,
        tower: AgaveTower,
        identity: &NodeKeypair,
    ) -> Result<Self, AgaveError> {
        if tower.node_pubkey != identity.node_id() {
            return Err(AgaveError::ForeignNode {
                expected: identity.node_id(),
                found: tower.node_pubkey,
            });
        }
        let data = tower.encode(format.layout())?;
        let signature = identity.sign(&data);
        Ok(SavedTower {
            format,
            signature,
            data,
            tower,
        })
    }

    /// Check the signature over `data` under the tower's node key, strictly
    /// (as Agave's `Signature::verify` does).
    pub fn verify(&self) -> Result<(), AgaveError> {
        let node = self.node();
        if node.verify_strict(&self.data, &self.signature) {
            Ok(())
        } else {
            Err(AgaveError::BadSignature { node })
        }
    }

    /// The file's bytes: envelope and data, exactly as decoded or as Agave
    /// would write them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + self.data.len());
        if let Some(variant) = self.format.variant() {
            wire::put_u32(&mut out, variant);
        }
        out.extend_from_slice(&self.signature);
        wire::put_len(&mut out, self.data.len());
        out.extend_from_slice(&self.data);
        out
    }

    /// The envelope format.
    pub fn format(&self) -> EnvelopeFormat {
        self.format
    }
    /// The node the tower belongs to.
    pub fn node(&self) -> NodeId {
        self.tower.node_pubkey
    }
    /// The signature over [`data`](Self::data).
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    /// The signed tower bytes, in the envelope's layout.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The decoded tower.
    pub fn tower(&self) -> &AgaveTower {
        &self.tower
    }
    /// The decoded tower, by value.
    pub fn into_tower(self) -> AgaveTower {
        self.tower
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agave::{LastVote, Lockout, TowerSync, Vote};

    fn tower(kp: &NodeKeypair) -> AgaveTower {
        let mut t = AgaveTower::new(kp.node_id());
        t.last_vote = LastVote::TowerSync(TowerSync {
            lockouts: vec![Lockout {
                slot: 12,
                confirmation_count: 1,
            }],
            root: Some(3),
            hash: [4; 32],
            timestamp: Some(1_700_000_000),
            block_id: [5; 32],
        });
        t.vote_state.root_slot = Some(3);
        t
    }

    #[test]
    fn current_envelope_layout_and_roundtrip() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let saved = SavedTower::sign(tower(&kp), &kp).unwrap();
        let bytes = saved.encode();
        assert_eq!(bytes[..4], 1u32.to_le_bytes());
        assert_eq!(bytes[4..68], saved.signature()[..]);
        assert_eq!(bytes[68..76], (saved.data().len() as u64).to_le_bytes());
        assert_eq!(bytes[76..], saved.data()[..]);
        assert!(kp.node_id().verify(saved.data(), saved.signature()));
        let back = SavedTower::decode(&bytes, FileKind::V1_9, &kp.node_id()).unwrap();
        assert_eq!(back, saved);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn old_envelopes_roundtrip() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let mut t = tower(&kp);
        t.last_vote = LastVote::Vote(Vote {
            slots: vec![11, 12],
            hash: [4; 32],
            timestamp: None,
        });
        for (format, kind, header) in [
            (EnvelopeFormat::V1_7_14, FileKind::V1_9, 4),
            (EnvelopeFormat::Legacy, FileKind::Legacy, 0),
        ] {
            let saved = SavedTower::sign_as(format, t.clone(), &kp).unwrap();
            let bytes = saved.encode();
            assert_eq!(bytes.len(), header + 64 + 8 + saved.data().len());
            let back = SavedTower::decode(&bytes, kind, &kp.node_id()).unwrap();
            assert_eq!(back.format(), format);
            assert_eq!(back.encode(), bytes);
        }
    }

    #[test]
    fn another_nodes_tower_is_not_signed() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let other = NodeKeypair::from_seed([2; 32]);
        assert_eq!(
            SavedTower::sign(tower(&other), &kp),
            Err(AgaveError::ForeignNode {
                expected: kp.node_id(),
                found: other.node_id()
            })
        );
    }
}
