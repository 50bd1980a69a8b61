//! The value of an owner key: who claims a node identity, under which
//! lease, since when.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `sgOW` |
//! | 1 | version (2; 1 has no nonce) |
//! | 32 | node public key |
//! | 8 | etcd lease id, little-endian |
//! | 8 | claim time, unix milliseconds, little-endian |
//! | 16 | random instance nonce (version 2 only) |
//! | 1 | length n of the instance name |
//! | n | instance name, UTF-8 |
//! | 4 | CRC-32 of every byte above, little-endian |
//!
//! The nonce makes every claim's bytes unique over the life of an etcd
//! cluster, which its revisions are not (a snapshot restore hands them out
//! again): fences compare these bytes as well as the revision. Version 1
//! claims (written by older releases) are still read, so that a running
//! older owner is named and can be taken over; new claims are version 2.

use crate::error::FormatError;
use crate::identity::NodeId;

const MAGIC: &[u8; 4] = b"sgOW";
const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const NONCE_LEN: usize = 16;

/// Longest instance name, in bytes.
pub const MAX_INSTANCE_LEN: usize = 255;

/// An owner claim as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerClaim {
    pub(crate) node: NodeId,
    pub(crate) lease: i64,
    pub(crate) since_ms: u64,
    /// 128 random bits chosen for this claim (zero in a version 1 claim).
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) instance: String,
}

impl OwnerClaim {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let name = self.instance.as_bytes();
        debug_assert!(
            name.len() <= MAX_INSTANCE_LEN,
            "checked by OwnershipOptions"
        );
        let mut out = Vec::with_capacity(4 + 1 + 32 + 8 + 8 + NONCE_LEN + 1 + name.len() + 4);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(&self.lease.to_le_bytes());
        out.extend_from_slice(&self.since_ms.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(name.len().min(MAX_INSTANCE_LEN) as u8);
        out.extend_from_slice(&name[..name.len().min(MAX_INSTANCE_LEN)]);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode a claim found under the owner key of `expected`.
    pub(crate) fn decode(bytes: &[u8], expected: &NodeId) -> Result<Self, FormatError> {
        const FIXED_1: usize = 4 + 1 + 32 + 8 + 8 + 1;
        if bytes.is_empty() {
            return Err(FormatError::Empty);
        }
        let head = bytes.get(..4).unwrap_or(bytes);
        if head != &MAGIC[..head.len()] {
            return Err(FormatError::BadMagic {
                found: head.to_vec(),
            });
        }
        if bytes.len() < FIXED_1 + 4 {
            return Err(FormatError::Truncated {
                needed: FIXED_1 + 4,
                have: bytes.len(),
            });
        }
        let fixed = match bytes[4] {
            VERSION => FIXED_1 + NONCE_LEN,
            VERSION_1 => FIXED_1,
            found => {
                return Err(FormatError::UnsupportedVersion {
                    found,
                    supported: VERSION,
                })
            }
        };
        if bytes.len() < fixed + 4 {
            return Err(FormatError::Truncated {
                needed: fixed + 4,
                have: bytes.len(),
            });
        }
        let name_len = bytes[fixed - 1] as usize;
        let body_len = fixed + name_len;
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
        let mut nonce = [0; NONCE_LEN];
        if fixed > FIXED_1 {
            nonce.copy_from_slice(field(53, 53 + NONCE_LEN));
        }
        let instance = std::str::from_utf8(field(fixed, body_len))
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
            nonce,
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
            nonce: *b"0123456789abcdef",
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

    /// A version 1 claim, as older releases wrote it, byte by byte.
    #[test]
    fn reads_version_1() {
        let node = NodeId([7; 32]);
        let mut v1 = b"sgOW\x01".to_vec();
        v1.extend_from_slice(&[7; 32]);
        v1.extend_from_slice(&0x1234_i64.to_le_bytes());
        v1.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        v1.push(1);
        v1.push(b'a');
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let claim = OwnerClaim::decode(&v1, &node).unwrap();
        assert_eq!(claim.lease, 0x1234);
        assert_eq!(claim.instance, "a");
        assert_eq!(claim.nonce, [0; 16]);
        // Re-encoded it is a version 2 claim: other bytes.
        assert_ne!(claim.encode(), v1);
        assert_eq!(claim.encode()[4], 2);
    }

    /// Two claims that differ only in their nonce differ in their bytes.
    #[test]
    fn the_nonce_makes_the_bytes_unique() {
        let a = OwnerClaim {
            node: NodeId([1; 32]),
            lease: 5,
            since_ms: 9,
            nonce: [1; 16],
            instance: "x".into(),
        };
        let b = OwnerClaim {
            nonce: [2; 16],
            ..a.clone()
        };
        assert_ne!(a.encode(), b.encode());
        assert_eq!(a.encode().len(), 4 + 1 + 32 + 8 + 8 + 16 + 1 + 1 + 4);
    }
}
