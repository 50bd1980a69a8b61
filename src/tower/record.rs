//! The stored tower record and its canonical, signed encoding.
//!
//! Layout (version 1, integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgTW` |
//! | 1 | version (1) |
//! | 32 | node public key |
//! | 1 | flags: bit 0 last vote present, bit 1 root present |
//! | 8 + 32 | last vote slot and bank hash (if flag 0) |
//! | 8 | root slot (if flag 1) |
//! | 8 | signing time, unix milliseconds |
//! | 4 | length of the validator's tower bytes |
//! | n | the validator's tower bytes (opaque) |
//! | 64 | ed25519 signature by the node over the domain tag and every byte above |

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::FormatError;
use crate::identity::{NodeId, NodeKeypair};

const MAGIC: &[u8; 4] = b"sgTW";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"slashguard/tower/v1";
const FLAG_VOTE: u8 = 1;
const FLAG_ROOT: u8 = 2;

/// Largest validator tower accepted (Agave's are 2-4 KiB; older ones that
/// carry the whole vote state stay far below this).
pub const MAX_TOWER_BYTES: usize = 1 << 20;

/// A vote: the slot and the bank hash voted for. Two different hashes for
/// one slot are a double vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct VoteRef {
    /// The slot voted on.
    pub slot: u64,
    /// The bank hash voted for.
    pub hash: [u8; 32],
}

/// A tower as slashguard stores it: signed by the node identity, so that a
/// store can never be fed a tower of another node or one altered at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct TowerRecord {
    node: NodeId,
    last_vote: Option<VoteRef>,
    root: Option<u64>,
    signed_at_ms: u64,
    tower: Vec<u8>,
    signature: [u8; 64],
    checked: SignatureChecked,
}

/// Whether a record value's signature is already known to verify: set by
/// [`TowerRecord::sign`] (it just made the signature) and
/// [`TowerRecord::decode`] (it just checked it), never by
/// [`TowerRecord::decode_unverified`]. A record's fields are private and
/// never change after construction, so the fact cannot go stale; it spares
/// every store a second ed25519 verification (tens of microseconds for a
/// 2 KiB tower) of a record this process signed itself. It is a property of
/// the value, not of the record, so equality ignores it.
#[derive(Debug, Clone, Copy)]
struct SignatureChecked(bool);

impl PartialEq for SignatureChecked {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SignatureChecked {}

impl std::fmt::Debug for TowerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerRecord")
            .field("node", &self.node)
            .field("last_vote", &self.last_vote.map(|v| v.slot))
            .field("root", &self.root)
            .field("signed_at_ms", &self.signed_at_ms)
            .field("tower_len", &self.tower.len())
            .finish()
    }
}

impl TowerRecord {
    /// Build and sign a record. Fails if the tower is larger than
    /// [`MAX_TOWER_BYTES`] or the root is above the last vote.
    pub fn sign(
        identity: &NodeKeypair,
        last_vote: Option<VoteRef>,
        root: Option<u64>,
        tower: Vec<u8>,
    ) -> Result<Self, FormatError> {
        let signed_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut record = TowerRecord {
            node: identity.node_id(),
            last_vote,
            root,
            signed_at_ms,
            tower,
            signature: [0; 64],
            checked: SignatureChecked(false),
        };
        record.validate()?;
        record.signature = identity.sign(&record.signed_bytes());
        record.checked = SignatureChecked(true);
        Ok(record)
    }

    /// The node this tower belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// The last vote in the tower, if it has voted.
    pub fn last_vote(&self) -> Option<VoteRef> {
        self.last_vote
    }
    /// The last vote's slot, if any.
    pub fn last_vote_slot(&self) -> Option<u64> {
        self.last_vote.map(|v| v.slot)
    }
    /// The root slot, if any.
    pub fn root(&self) -> Option<u64> {
        self.root
    }
    /// When the node signed this record (unix milliseconds).
    pub fn signed_at_ms(&self) -> u64 {
        self.signed_at_ms
    }
    /// The validator's own serialized tower.
    pub fn tower_bytes(&self) -> &[u8] {
        &self.tower
    }
    /// The node's signature over the record.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    fn validate(&self) -> Result<(), FormatError> {
        if self.tower.len() > MAX_TOWER_BYTES {
            return Err(FormatError::InvalidField {
                field: "tower",
                detail: format!("{} bytes exceeds {MAX_TOWER_BYTES}", self.tower.len()),
            });
        }
        if let (Some(root), Some(vote)) = (self.root, self.last_vote) {
            if root > vote.slot {
                return Err(FormatError::InvalidField {
                    field: "root",
                    detail: format!("root {root} is above the last vote {}", vote.slot),
                });
            }
        }
        Ok(())
    }

    /// `true` when the signature verifies under the record's node key
    /// (always computed).
    pub fn verify(&self) -> bool {
        self.node.verify(&self.signed_bytes(), &self.signature)
    }

    /// [`verify`](Self::verify), answered without the computation when this
    /// value was made by [`sign`](Self::sign) or [`decode`](Self::decode).
    pub(crate) fn signature_holds(&self) -> bool {
        self.checked.0 || self.verify()
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + self.encoded_len());
        out.extend_from_slice(DOMAIN);
        self.encode_unsigned(&mut out);
        out
    }

    fn encoded_len(&self) -> usize {
        4 + 1 + 32 + 1 + 40 + 8 + 8 + 4 + self.tower.len() + 64
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.node.as_bytes());
        let flags = if self.last_vote.is_some() {
            FLAG_VOTE
        } else {
            0
        } | if self.root.is_some() { FLAG_ROOT } else { 0 };
        out.push(flags);
        if let Some(v) = self.last_vote {
            out.extend_from_slice(&v.slot.to_le_bytes());
            out.extend_from_slice(&v.hash);
        }
        if let Some(r) = self.root {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&self.signed_at_ms.to_le_bytes());
        out.extend_from_slice(&(self.tower.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.tower);
    }

    /// The canonical encoding, signature last.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decode and verify a record. `expected` is the node the caller's store
    /// belongs to: a record of any other node is refused, as is one whose
    /// signature does not verify.
    pub fn decode(bytes: &[u8], expected: &NodeId) -> Result<Self, FormatError> {
        let mut record = Self::decode_unverified(bytes)?;
        if record.node != *expected {
            return Err(FormatError::ForeignNode {
                expected: expected.to_string(),
                found: record.node.to_string(),
            });
        }
        if !record.verify() {
            return Err(FormatError::BadSignature {
                node: record.node.to_string(),
            });
        }
        record.checked = SignatureChecked(true);
        Ok(record)
    }

    /// Decode without checking node or signature (for inspection tools).
    pub fn decode_unverified(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader { bytes, pos: 0 };
        if bytes.is_empty() {
            return Err(FormatError::Empty);
        }
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let node = NodeId(r.array()?);
        let flags = r.u8()?;
        if flags & !(FLAG_VOTE | FLAG_ROOT) != 0 {
            return Err(FormatError::InvalidField {
                field: "flags",
                detail: format!("unknown bits {flags:#04x}"),
            });
        }
        let last_vote = if flags & FLAG_VOTE != 0 {
            Some(VoteRef {
                slot: r.u64()?,
                hash: r.array()?,
            })
        } else {
            None
        };
        let root = if flags & FLAG_ROOT != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let signed_at_ms = r.u64()?;
        let len = u32::from_le_bytes(r.array()?) as usize;
        if len > MAX_TOWER_BYTES {
            return Err(FormatError::InvalidField {
                field: "tower length",
                detail: format!("{len} exceeds {MAX_TOWER_BYTES}"),
            });
        }
        let tower = r.take(len)?.to_vec();
        let signature = r.array()?;
        if r.pos != bytes.len() {
            return Err(FormatError::TrailingBytes {
                count: bytes.len() - r.pos,
            });
        }
        let record = TowerRecord {
            node,
            last_vote,
            root,
            signed_at_ms,
            tower,
            signature,
            checked: SignatureChecked(false),
        };
        record.validate()?;
        Ok(record)
    }
}

/// A bounds-checked cursor: every read past the end is a `Truncated` error,
/// never a panic.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FormatError::Truncated {
                needed: self.pos.saturating_add(n),
                have: self.bytes.len(),
            }),
        }
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kp: &NodeKeypair) -> TowerRecord {
        TowerRecord::sign(
            kp,
            Some(VoteRef {
                slot: 100,
                hash: [3; 32],
            }),
            Some(68),
            vec![0xAB; 2048],
        )
        .unwrap()
    }

    #[test]
    fn roundtrip() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let r = sample(&kp);
        let bytes = r.encode();
        assert_eq!(TowerRecord::decode(&bytes, &kp.node_id()).unwrap(), r);
        let empty = TowerRecord::sign(&kp, None, None, vec![]).unwrap();
        assert_eq!(
            TowerRecord::decode(&empty.encode(), &kp.node_id()).unwrap(),
            empty
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let bytes = TowerRecord::sign(
            &kp,
            Some(VoteRef {
                slot: 5,
                hash: [1; 32],
            }),
            None,
            vec![7; 40],
        )
        .unwrap()
        .encode();
        for cut in 0..bytes.len() {
            assert!(
                TowerRecord::decode(&bytes[..cut], &kp.node_id()).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                TowerRecord::decode(&b, &kp.node_id()).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn foreign_node_and_version_are_named() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let other = NodeKeypair::from_seed([2; 32]);
        let bytes = sample(&kp).encode();
        assert!(matches!(
            TowerRecord::decode(&bytes, &other.node_id()),
            Err(FormatError::ForeignNode { .. })
        ));
        let mut b = bytes.clone();
        b[4] = 9;
        assert_eq!(
            TowerRecord::decode(&b, &kp.node_id()),
            Err(FormatError::UnsupportedVersion {
                found: 9,
                supported: 1
            })
        );
        assert_eq!(
            TowerRecord::decode(&[], &kp.node_id()),
            Err(FormatError::Empty)
        );
    }

    #[test]
    fn root_above_vote_and_oversized_tower_are_invalid() {
        let kp = NodeKeypair::from_seed([1; 32]);
        assert!(TowerRecord::sign(
            &kp,
            Some(VoteRef {
                slot: 5,
                hash: [0; 32]
            }),
            Some(6),
            vec![]
        )
        .is_err());
        assert!(TowerRecord::sign(&kp, None, None, vec![0; MAX_TOWER_BYTES + 1]).is_err());
    }
}
