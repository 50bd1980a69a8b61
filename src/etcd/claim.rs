//! The value of an owner key: who claims a node identity, under which
//! lease, since when.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgOW` |
//! | 1 | version (1) |
//! | 32 | node public key |
//! | 8 | etcd lease id, little-endian |
//! | 8 | claim time, unix milliseconds, little-endian |
//! | 1 | length n of the instance name |
//! | n | instance name, UTF-8 |
//! | 4 | CRC-32 of every byte above, little-endian |

use crate::error::FormatError;
use crate::identity::NodeId;

const MAGIC: &[u8; 4] = b"sgOW";
const VERSION: u8 = 1;

/// Longest instance name, in bytes.
pub const MAX_INSTANCE_LEN: usize = 255;

/// An owner claim as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerClaim {
    pub(crate) node: NodeId,
    pub(crate) lease: i64,
    pub(crate) since_ms: u64,
    pub(crate) instance: String,
}

impl OwnerClaim {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let name = self.instance.as_bytes();
        debug_assert!(
            name.len() <= MAX_INSTANCE_LEN,
            "checked by OwnershipOptions"
        );
        let mut out = Vec::with_capacity(4 + 1 + 32 + 8 + 8 + 1 + name.len() + 4);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(&self.lease.to_le_bytes());
        out.extend_from_slice(&self.since_ms.to_le_bytes());
        out.push(name.len().min(MAX_INSTANCE_LEN) as u8);
        out.extend_from_slice(&name[..name.len().min(MAX_INSTANCE_LEN)]);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode a claim found under the owner key of `expected`.
    pub(crate) fn decode(bytes: &[u8], expected: &NodeId) -> Result<Self, FormatError> {
        const FIXED: usize = 4 + 1 + 32 + 8 + 8 + 1;
        if bytes.is_empty() {
            return Err(FormatError::Empty);
        }
        let head = bytes.get(..4).unwrap_or(bytes);
        if head != &MAGIC[..head.len()] {
            return Err(FormatError::BadMagic {
                found: head.to_vec(),
            });
        }
        if bytes.len() < FIXED + 4 {
            return Err(FormatError::Truncated {
                needed: FIXED + 4,
                have: bytes.len(),
            });
        }
        if bytes[4] != VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: bytes[4],
                supported: VERSION,
            });
        }
        let name_len = bytes[FIXED - 1] as usize;
        let body_len = FIXED + name_len;
        let total = body_len + 4;
        if bytes.len() < total {
            return Err(FormatError::Truncated {
                needed: total,
                have: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(FormatError::TrailingBytes {
                count: bytes.len() - total,
            });
        }
        let field = |from: usize, to: usize| &bytes[from..to];
        let stored = u32::from_le_bytes(field(body_len, total).try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[..body_len]);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        let node = NodeId(field(5, 37).try_into().expect("32 bytes"));
        let lease = i64::from_le_bytes(field(37, 45).try_into().expect("8 bytes"));
        let since_ms = u64::from_le_bytes(field(45, 53).try_into().expect("8 bytes"));
        let instance = std::str::from_utf8(field(FIXED, body_len))
            .map_err(|e| FormatError::InvalidField {
                field: "instance",
                detail: e.to_string(),
            })?
            .to_string();
        if node != *expected {
            return Err(FormatError::ForeignNode {
                expected: expected.to_string(),
                found: node.to_string(),
            });
        }
        Ok(OwnerClaim {
            node,
            lease,
            since_ms,
            instance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let node = NodeId([7; 32]);
        let claim = OwnerClaim {
            node,
            lease: 0x1234_5678_9abc,
            since_ms: 1_700_000_000_000,
            instance: "validator-a".into(),
        };
        let bytes = claim.encode();
        assert_eq!(OwnerClaim::decode(&bytes, &node).unwrap(), claim);
        for cut in 0..bytes.len() {
            assert!(
                OwnerClaim::decode(&bytes[..cut], &node).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(OwnerClaim::decode(&b, &node).is_err(), "flip {i}");
        }
        assert!(matches!(
            OwnerClaim::decode(&bytes, &NodeId([8; 32])),
            Err(FormatError::ForeignNode { .. })
        ));
    }
}
