//! Node identities: an ed25519 public key shown in base58, as Solana does,
//! and the keypair that signs towers and votes.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A node identity: an ed25519 public key (Solana's node pubkey).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The raw 32 public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verify an ed25519 signature by this node over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    }

    /// Verify an ed25519 signature by this node over `message` strictly
    /// (no small-order keys, canonical `R`), as Agave's `Signature::verify`
    /// checks the signature of its tower and vote history files.
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(&self.0)
            .and_then(|key| {
                key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            })
            .is_ok()
    }

    /// The identity under which the signers of the Tezos baker `name` (an
    /// operator's name for it, the same on every host) share ownership in
    /// etcd: blake2b-256 of `slashguard tezos baker`, a zero byte and the
    /// name. It is not a public key: nothing is signed with it; it only
    /// names the owner key (`slashguard identity status --baker NAME`).
    pub fn tezos_baker(name: &str) -> NodeId {
        use blake2::digest::{consts::U32, Digest};
        let mut h = blake2::Blake2b::<U32>::new();
        h.update(b"slashguard tezos baker\0");
        h.update(name.as_bytes());
        NodeId(h.finalize().into())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| Error::Invalid(format!("node id {s:?} is not base58: {e}")))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Invalid(format!("node id {s:?} is not 32 bytes")))?;
        Ok(NodeId(arr))
    }
}

/// The secret half of a node identity. It is deliberately not `Clone` and
/// its `Debug` never prints the secret: move it into the guard that signs
/// with it, so that no other code path can produce a vote.
pub struct NodeKeypair {
    key: SigningKey,
}

impl NodeKeypair {
    /// A fresh random keypair (tests, examples, secondary identities).
    pub fn generate() -> Self {
        NodeKeypair {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// From the 32-byte ed25519 secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKeypair {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Read a Solana CLI keypair file: a JSON array of 64 numbers (secret
    /// seed then public key). The public half must match the seed.
    pub fn read_solana_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bytes = parse_json_byte_array(&text).ok_or_else(|| {
            Error::Config(format!(
                "{} is not a Solana keypair file (a JSON array of 64 numbers)",
                path.display()
            ))
        })?;
        let seed: [u8; 32] = bytes[..32].try_into().expect("length checked");
        let kp = NodeKeypair::from_seed(seed);
        if kp.node_id().0[..] != bytes[32..] {
            return Err(Error::Config(format!(
                "{}: public key does not match the secret key",
                path.display()
            )));
        }
        Ok(kp)
    }

    /// The public identity.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Sign `message` (crate-internal: signatures leave only through guards).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKeypair({})", self.node_id())
    }
}

fn parse_json_byte_array(text: &str) -> Option<Vec<u8>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    let bytes: Option<Vec<u8>> = inner.split(',').map(|n| n.trim().parse().ok()).collect();
    bytes.filter(|b| b.len() == 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base58_roundtrip_and_errors() {
        let kp = NodeKeypair::from_seed([7; 32]);
        let id = kp.node_id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("not-base58-0OIl".parse::<NodeId>().is_err());
        assert!("abc".parse::<NodeId>().is_err());
    }

    /// Every host derives the same identity from the same name; the vector
    /// is blake2b-256 as Python's `hashlib.blake2b(digest_size=32)` computes it.
    #[test]
    fn a_baker_name_gives_a_fixed_identity() {
        let id = NodeId::tezos_baker("my-baker");
        assert_eq!(
            id.0,
            [
                0x08, 0x3d, 0xe7, 0x04, 0xf7, 0xe1, 0x82, 0x22, 0x03, 0x3e, 0xe8, 0xc5, 0xbe, 0x9c,
                0x70, 0xe1, 0xdc, 0xfe, 0x86, 0x93, 0x05, 0x62, 0xbc, 0x9a, 0xca, 0x87, 0x32, 0x95,
                0x9e, 0xb5, 0x08, 0x43
            ]
        );
        assert_eq!(
            id.to_string(),
            "ZB1VF7Y6rGCVdVRKJsW8rh9PG4F2qAFPxGbKb3QToVt"
        );
        assert_ne!(NodeId::tezos_baker("my-baker2"), id);
    }

    #[test]
    fn signatures_verify_only_for_their_message() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let sig = kp.sign(b"vote");
        assert!(kp.node_id().verify(b"vote", &sig));
        assert!(!kp.node_id().verify(b"vot3", &sig));
        assert!(!NodeKeypair::from_seed([2; 32])
            .node_id()
            .verify(b"vote", &sig));
    }

    #[test]
    fn solana_keypair_file() {
        let kp = NodeKeypair::from_seed([9; 32]);
        let mut all = [9u8; 32].to_vec();
        all.extend_from_slice(kp.node_id().as_bytes());
        let json = format!(
            "[{}]",
            all.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.json");
        std::fs::write(&p, json).unwrap();
        assert_eq!(
            NodeKeypair::read_solana_json(&p).unwrap().node_id(),
            kp.node_id()
        );
        std::fs::write(&p, "[1,2,3]").unwrap();
        assert!(matches!(
            NodeKeypair::read_solana_json(&p),
            Err(Error::Config(_))
        ));
    }
}
