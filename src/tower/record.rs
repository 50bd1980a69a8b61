//! The stored tower record and its canonical, signed encoding.
//!
//! Layout (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgTW` |
//! | 1 | version (1 or 2) |
//! | 32 | node public key |
//! | 1 | flags: bit 0 last vote present, bit 1 root present, bit 2 (version 2) released message hash present |
//! | 1 | (version 2 only) what the tower bytes are: 0 opaque, 1 Agave tower `data`, 2 a whole Agave tower file |
//! | 8 + 32 | last vote slot and bank hash (if flag 0) |
//! | 8 | root slot (if flag 1) |
//! | 32 | blake2b-256 of the vote message released with this tower (if flag 2) |
//! | 8 | signing time, unix milliseconds |
//! | 4 | length of the validator's tower bytes |
//! | n | the validator's tower bytes |
//! | 64 | ed25519 signature by the node over the domain tag and every byte above |
//!
//! A record without a released message whose tower bytes are opaque is
//! written as version 1, byte for byte as before version 2 existed; every
//! other record is version 2. Both versions load, so stores written by
//! earlier releases open without loss.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::FormatError;
use crate::identity::{NodeId, NodeKeypair};

const MAGIC: &[u8; 4] = b"sgTW";
const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const DOMAIN: &[u8] = b"slashguard/tower/v1";
const FLAG_VOTE: u8 = 1;
const FLAG_ROOT: u8 = 2;
const FLAG_MESSAGE: u8 = 4;

/// What a record's tower bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TowerBytesKind {
    /// The validator's own serialization, unknown to slashguard (records
    /// stored by [`VoteGuard::vote`](crate::tower::VoteGuard::vote) and
    /// every record written before this field existed).
    #[default]
    Opaque,
    /// An Agave tower's bincode `data` in the current (1.14.11) layout,
    /// without a file envelope ([`SavedTower::to_record`](crate::agave::SavedTower::to_record),
    /// [`VoteGuard::sign_vote_message`](crate::tower::VoteGuard::sign_vote_message)).
    AgaveTowerData,
    /// A whole Agave tower file (envelope, node signature and data) exactly
    /// as Agave wrote it ([`AgaveTowerStorage`](crate::agave::AgaveTowerStorage)).
    AgaveSavedTower,
}

impl TowerBytesKind {
    fn byte(self) -> u8 {
        match self {
            TowerBytesKind::Opaque => 0,
            TowerBytesKind::AgaveTowerData => 1,
            TowerBytesKind::AgaveSavedTower => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => TowerBytesKind::Opaque,
            1 => TowerBytesKind::AgaveTowerData,
            2 => TowerBytesKind::AgaveSavedTower,
            _ => return None,
        })
    }
}

/// The hash a record keeps of the vote message released with it
/// (blake2b-256), so that exactly that message may be signed again.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    use blake2::digest::{consts::U32, Digest};
    blake2::Blake2b::<U32>::digest(message).into()
}

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
    released: Option<[u8; 32]>,
    kind: TowerBytesKind,
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
            .field("released", &self.released.is_some())
            .field("kind", &self.kind)
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
        Self::sign_as(
            identity,
            last_vote,
            root,
            tower,
            TowerBytesKind::Opaque,
            None,
        )
    }

    /// [`sign`](Self::sign) a record whose tower bytes are of `kind`, and
    /// that keeps the [`message_hash`] of the vote message released with
    /// it, if any.
    pub fn sign_as(
        identity: &NodeKeypair,
        last_vote: Option<VoteRef>,
        root: Option<u64>,
        tower: Vec<u8>,
        kind: TowerBytesKind,
        released: Option<[u8; 32]>,
    ) -> Result<Self, FormatError> {
        let signed_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut record = TowerRecord {
            node: identity.node_id(),
            last_vote,
            root,
            released,
            kind,
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
    /// The [`message_hash`] of the vote message released with this tower,
    /// when the record was stored to release one.
    pub fn released_message(&self) -> Option<[u8; 32]> {
        self.released
    }
    /// What the tower bytes hold.
    pub fn tower_kind(&self) -> TowerBytesKind {
        self.kind
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
        4 + 1 + 32 + 1 + 1 + 40 + 8 + 32 + 8 + 4 + self.tower.len() + 64
    }

    fn version(&self) -> u8 {
        if self.released.is_none() && self.kind == TowerBytesKind::Opaque {
            VERSION_1
        } else {
            VERSION_2
        }
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        let version = self.version();
        out.extend_from_slice(MAGIC);
        out.push(version);
        out.extend_from_slice(self.node.as_bytes());
        let flags = if self.last_vote.is_some() {
            FLAG_VOTE
        } else {
            0
        } | if self.root.is_some() { FLAG_ROOT } else { 0 }
            | if self.released.is_some() {
                FLAG_MESSAGE
            } else {
                0
            };
        out.push(flags);
        if version == VERSION_2 {
            out.push(self.kind.byte());
        }
        if let Some(v) = self.last_vote {
            out.extend_from_slice(&v.slot.to_le_bytes());
            out.extend_from_slice(&v.hash);
        }
        if let Some(r) = self.root {
            out.extend_from_slice(&r.to_le_bytes());
        }
        if let Some(m) = self.released {
            out.extend_from_slice(&m);
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
        if version != VERSION_1 && version != VERSION_2 {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION_2,
            });
        }
        let node = NodeId(r.array()?);
        let flags = r.u8()?;
        let known = if version == VERSION_1 {
            FLAG_VOTE | FLAG_ROOT
        } else {
            FLAG_VOTE | FLAG_ROOT | FLAG_MESSAGE
        };
        if flags & !known != 0 {
            return Err(FormatError::InvalidField {
                field: "flags",
                detail: format!("unknown bits {flags:#04x} in a version {version} record"),
            });
        }
        let kind = if version == VERSION_2 {
            let byte = r.u8()?;
            TowerBytesKind::from_byte(byte).ok_or_else(|| FormatError::InvalidField {
                field: "tower kind",
                detail: format!("unknown kind {byte}"),
            })?
        } else {
            TowerBytesKind::Opaque
        };
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
        let released = if flags & FLAG_MESSAGE != 0 {
            Some(r.array()?)
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
            released,
            kind,
            signed_at_ms,
            tower,
            signature,
            checked: SignatureChecked(false),
        };
        // One encoding per record: a version 2 record that version 1 could
        // hold is not one this crate writes.
        if record.version() != version {
            return Err(FormatError::InvalidField {
                field: "version",
                detail: "a version 2 record without a released message or tower kind".into(),
            });
        }
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
                supported: 2
            })
        );
        assert_eq!(
            TowerRecord::decode(&[], &kp.node_id()),
            Err(FormatError::Empty)
        );
    }

    #[test]
    fn version_1_bytes_are_unchanged_and_version_2_roundtrips() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let vote = Some(VoteRef {
            slot: 100,
            hash: [3; 32],
        });
        let v1 = TowerRecord::sign(&kp, vote, Some(68), vec![1, 2]).unwrap();
        let bytes = v1.encode();
        assert_eq!(bytes[4], 1);
        // The version 1 layout, field by field: nothing moved.
        assert_eq!(bytes.len(), 4 + 1 + 32 + 1 + 40 + 8 + 8 + 4 + 2 + 64);
        assert_eq!(bytes[37], FLAG_VOTE | FLAG_ROOT);
        assert_eq!(bytes[38..46], 100u64.to_le_bytes());
        assert_eq!(v1.released_message(), None);
        assert_eq!(v1.tower_kind(), TowerBytesKind::Opaque);
        for (kind, released) in [
            (TowerBytesKind::Opaque, Some(message_hash(b"m"))),
            (TowerBytesKind::AgaveTowerData, None),
            (TowerBytesKind::AgaveSavedTower, Some([9; 32])),
        ] {
            let r = TowerRecord::sign_as(&kp, vote, Some(68), vec![1, 2], kind, released).unwrap();
            let bytes = r.encode();
            assert_eq!(bytes[4], 2);
            let back = TowerRecord::decode(&bytes, &kp.node_id()).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.released_message(), released);
            assert_eq!(back.tower_kind(), kind);
            for cut in 0..bytes.len() {
                assert!(TowerRecord::decode(&bytes[..cut], &kp.node_id()).is_err());
            }
        }
        // A version 2 header around a version 1 record is not canonical.
        let mut fake = bytes[..37].to_vec();
        fake[4] = 2;
        fake.push(bytes[37]);
        fake.push(0);
        fake.extend_from_slice(&bytes[38..]);
        assert!(matches!(
            TowerRecord::decode_unverified(&fake),
            Err(FormatError::InvalidField {
                field: "version",
                ..
            })
        ));
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
