//! Where slashguard keeps its data in etcd. See `docs/etcd-layout.md`.

use crate::identity::NodeId;
use crate::watermark::WatermarkKey;

/// The key layout under one prefix:
///
/// | key | value |
/// |---|---|
/// | `<prefix>/tower/<node>/owner` | the owner claim of the node identity (attached to the owner's lease) |
/// | `<prefix>/tower/<node>/record` | the node-signed tower record |
/// | `<prefix>/tower/<node>/alpenglow` | the Alpenglow vote history (CRC'd) |
/// | `<prefix>/wm/<chain>/<key hash>/<kind>` | one watermark entry (173 bytes, CRC'd; 76-byte v1 entries are still read) |
///
/// `<node>` is the base58 node public key, `<chain>` the `Net...` chain id,
/// `<key hash>` the `tz1..tz4` address and `<kind>` one of `block`,
/// `preattestation`, `attestation`. The owner key's `mod_revision` is the
/// fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdKeys {
    prefix: String,
}

impl EtcdKeys {
    /// The layout under `prefix` (as normalized by
    /// [`EtcdConfig`](super::EtcdConfig): no trailing `/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        EtcdKeys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The owner claim of `node`.
    pub fn owner(&self, node: &NodeId) -> String {
        format!("{}/tower/{node}/owner", self.prefix)
    }

    /// The tower record of `node`.
    pub fn record(&self, node: &NodeId) -> String {
        format!("{}/tower/{node}/record", self.prefix)
    }

    /// The Alpenglow vote history of `node` (feature `alpenglow`), fenced
    /// by the same owner key as its tower.
    pub fn vote_history(&self, node: &NodeId) -> String {
        format!("{}/tower/{node}/alpenglow", self.prefix)
    }

    /// The watermark of `key`.
    pub fn watermark(&self, key: &WatermarkKey) -> String {
        format!("{}/wm/{}/{}/{}", self.prefix, key.chain, key.key, key.kind)
    }

    /// The prefix of every watermark key (ends with `/`).
    pub fn watermarks(&self) -> String {
        format!("{}/wm/", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermark::{ChainId, ConsensusKind, Curve, KeyHash};

    #[test]
    fn layout() {
        let keys = EtcdKeys::new("/sg/");
        let node = NodeId([0; 32]);
        assert_eq!(
            keys.owner(&node),
            "/sg/tower/11111111111111111111111111111111/owner"
        );
        assert_eq!(
            keys.record(&node),
            "/sg/tower/11111111111111111111111111111111/record"
        );
        let wm = WatermarkKey {
            chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
            key: KeyHash {
                curve: Curve::Ed25519,
                hash: [0; 20],
            },
            kind: ConsensusKind::Attestation,
        };
        let k = keys.watermark(&wm);
        assert!(k.starts_with("/sg/wm/NetXdQprcVkpaWU/tz1"), "{k}");
        assert!(k.ends_with("/attestation"));
        assert!(k.starts_with(&keys.watermarks()));
    }
}
