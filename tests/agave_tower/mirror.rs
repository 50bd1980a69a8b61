//! An independent model of Agave's tower types as serde structs, serialized
//! by bincode 1.x exactly as Agave does, and a loader that follows Agave's
//! `FileTowerStorage::load`. It shares no code with `slashguard::agave`:
//! the compact forms are written here as serde tuples, the way Solana's
//! `short_vec` and `serde_varint` do it.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Lockout {
    pub slot: u64,
    pub confirmation_count: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BlockTimestamp {
    pub slot: u64,
    pub timestamp: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CircBuf {
    pub buf: [([u8; 32], u64, u64); 32],
    pub idx: u64,
    pub is_empty: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VoteState1_14_11 {
    pub node_pubkey: [u8; 32],
    pub authorized_withdrawer: [u8; 32],
    pub commission: u8,
    pub votes: VecDeque<Lockout>,
    pub root_slot: Option<u64>,
    pub authorized_voters: BTreeMap<u64, [u8; 32]>,
    pub prior_voters: CircBuf,
    pub epoch_credits: Vec<(u64, u64, u64)>,
    pub last_timestamp: BlockTimestamp,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Vote {
    pub slots: Vec<u64>,
    pub hash: [u8; 32],
    pub timestamp: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VoteStateUpdate {
    pub lockouts: VecDeque<Lockout>,
    pub root: Option<u64>,
    pub hash: [u8; 32],
    pub timestamp: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TowerSync {
    pub lockouts: VecDeque<Lockout>,
    pub root: Option<u64>,
    pub hash: [u8; 32],
    pub timestamp: Option<i64>,
    pub block_id: [u8; 32],
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum VoteTransaction {
    Vote(Vote),
    VoteStateUpdate(VoteStateUpdate),
    #[serde(with = "compact_update")]
    CompactVoteStateUpdate(VoteStateUpdate),
    #[serde(with = "compact_sync")]
    TowerSync(TowerSync),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Tower1_14_11 {
    pub node_pubkey: [u8; 32],
    pub threshold_depth: u64,
    pub threshold_size: f64,
    pub vote_state: VoteState1_14_11,
    pub last_vote: VoteTransaction,
    pub last_timestamp: BlockTimestamp,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Tower1_7_14 {
    pub node_pubkey: [u8; 32],
    pub threshold_depth: u64,
    pub threshold_size: f64,
    pub vote_state: VoteState1_14_11,
    pub last_vote: Vote,
    pub last_timestamp: BlockTimestamp,
}

impl From<Tower1_7_14> for Tower1_14_11 {
    fn from(t: Tower1_7_14) -> Self {
        Tower1_14_11 {
            node_pubkey: t.node_pubkey,
            threshold_depth: t.threshold_depth,
            threshold_size: t.threshold_size,
            vote_state: t.vote_state,
            last_vote: VoteTransaction::Vote(t.last_vote),
            last_timestamp: t.last_timestamp,
        }
    }
}

/// serde has no `[u8; 64]`; two halves serialize identically.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SavedTower {
    pub signature: ([u8; 32], [u8; 32]),
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SavedTowerVersions {
    V1_17_14(SavedTower),
    Current(SavedTower),
}

/// What Agave's loader does with a tower directory: the `tower-1_9` file
/// if it opens, else the pre-1.9 file; strict ed25519 verification of
/// `data` under the node key; bincode of the tower; node check.
pub fn agave_load(dir: &Path, node: &[u8; 32]) -> Result<Tower1_14_11, String> {
    let b58 = bs58::encode(node).into_string();
    let (saved, current) = match File::open(dir.join(format!("tower-1_9-{b58}.bin"))) {
        Ok(file) => match bincode::deserialize_from(BufReader::new(file)) {
            Ok(SavedTowerVersions::Current(s)) => (s, true),
            Ok(SavedTowerVersions::V1_17_14(s)) => (s, false),
            Err(e) => return Err(format!("envelope: {e}")),
        },
        Err(_) => {
            let file =
                File::open(dir.join(format!("tower-{b58}.bin"))).map_err(|e| e.to_string())?;
            let saved: SavedTower = bincode::deserialize_from(BufReader::new(file))
                .map_err(|e| format!("legacy envelope: {e}"))?;
            (saved, false)
        }
    };
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&saved.signature.0);
    signature[32..].copy_from_slice(&saved.signature.1);
    let key = ed25519_dalek::VerifyingKey::from_bytes(node).map_err(|e| e.to_string())?;
    key.verify_strict(
        &saved.data,
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| "InvalidSignature".to_string())?;
    let tower: Tower1_14_11 = if current {
        bincode::deserialize(&saved.data).map_err(|e| format!("tower: {e}"))?
    } else {
        bincode::deserialize::<Tower1_7_14>(&saved.data)
            .map_err(|e| format!("tower 1.7.14: {e}"))?
            .into()
    };
    if tower.node_pubkey != *node {
        return Err("WrongTower".into());
    }
    Ok(tower)
}

// ---- the compact forms ----

#[derive(Serialize, Deserialize)]
struct LockoutOffset {
    #[serde(with = "varint")]
    offset: u64,
    confirmation_count: u8,
}

#[derive(Serialize, Deserialize)]
struct CompactUpdate {
    root: u64,
    #[serde(with = "short_vec")]
    lockout_offsets: Vec<LockoutOffset>,
    hash: [u8; 32],
    timestamp: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct CompactSync {
    root: u64,
    #[serde(with = "short_vec")]
    lockout_offsets: Vec<LockoutOffset>,
    hash: [u8; 32],
    timestamp: Option<i64>,
    block_id: [u8; 32],
}

fn to_offsets(
    root: Option<u64>,
    lockouts: &VecDeque<Lockout>,
) -> Result<Vec<LockoutOffset>, String> {
    let mut previous = root.unwrap_or_default();
    lockouts
        .iter()
        .map(|l| {
            let offset = l.slot.checked_sub(previous).ok_or("decreasing lockout")?;
            previous = l.slot;
            let confirmation_count =
                u8::try_from(l.confirmation_count).map_err(|_| "confirmation count")?;
            Ok(LockoutOffset {
                offset,
                confirmation_count,
            })
        })
        .collect()
}

fn from_offsets(
    root: u64,
    offsets: Vec<LockoutOffset>,
) -> Result<(Option<u64>, VecDeque<Lockout>), String> {
    let root = (root != u64::MAX).then_some(root);
    let mut slot = root.unwrap_or_default();
    let lockouts = offsets
        .into_iter()
        .map(|o| {
            slot = slot.checked_add(o.offset).ok_or("Invalid lockout offset")?;
            Ok(Lockout {
                slot,
                confirmation_count: o.confirmation_count.into(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((root, lockouts))
}

mod compact_update {
    use super::*;
    use serde::{de, ser, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(u: &VoteStateUpdate, s: S) -> Result<S::Ok, S::Error> {
        CompactUpdate {
            root: u.root.unwrap_or(u64::MAX),
            lockout_offsets: to_offsets(u.root, &u.lockouts).map_err(ser::Error::custom)?,
            hash: u.hash,
            timestamp: u.timestamp,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VoteStateUpdate, D::Error> {
        let c = CompactUpdate::deserialize(d)?;
        let (root, lockouts) =
            from_offsets(c.root, c.lockout_offsets).map_err(de::Error::custom)?;
        Ok(VoteStateUpdate {
            lockouts,
            root,
            hash: c.hash,
            timestamp: c.timestamp,
        })
    }
}

mod compact_sync {
    use super::*;
    use serde::{de, ser, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &TowerSync, s: S) -> Result<S::Ok, S::Error> {
        CompactSync {
            root: t.root.unwrap_or(u64::MAX),
            lockout_offsets: to_offsets(t.root, &t.lockouts).map_err(ser::Error::custom)?,
            hash: t.hash,
            timestamp: t.timestamp,
            block_id: t.block_id,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TowerSync, D::Error> {
        let c = CompactSync::deserialize(d)?;
        let (root, lockouts) =
            from_offsets(c.root, c.lockout_offsets).map_err(de::Error::custom)?;
        Ok(TowerSync {
            lockouts,
            root,
            hash: c.hash,
            timestamp: c.timestamp,
            block_id: c.block_id,
        })
    }
}

/// 7-bit groups, low first, 0x80 = more follow; as serde tuple elements.
fn groups(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

mod short_vec {
    use std::marker::PhantomData;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::{self, SerializeTuple};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
        let len = u16::try_from(items.len()).map_err(|_| ser::Error::custom("too long"))?;
        let mut tuple = s.serialize_tuple(items.len() + 3)?;
        for byte in super::groups(len.into()) {
            tuple.serialize_element(&byte)?;
        }
        for item in items {
            tuple.serialize_element(item)?;
        }
        tuple.end()
    }

    struct ShortVecVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ShortVecVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a short-vec")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut len: u32 = 0;
            for i in 0..=3 {
                if i == 3 {
                    return Err(de::Error::custom("length longer than 3 bytes"));
                }
                let byte: u8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("eof in length"))?;
                if byte == 0 && i > 0 {
                    return Err(de::Error::custom("alias encoding"));
                }
                len |= u32::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if len > u32::from(u16::MAX) {
                return Err(de::Error::custom("length overflows u16"));
            }
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(
                    seq.next_element()?
                        .ok_or_else(|| de::Error::custom("eof in elements"))?,
                );
            }
            Ok(items)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_tuple(usize::MAX, ShortVecVisitor(PhantomData))
    }
}

mod varint {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        let bytes = super::groups(*value);
        let mut tuple = s.serialize_tuple(bytes.len())?;
        for byte in bytes {
            tuple.serialize_element(&byte)?;
        }
        tuple.end()
    }

    struct VarintVisitor;

    impl<'de> Visitor<'de> for VarintVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a LEB128 u64")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            let mut value = 0u64;
            let mut shift = 0u32;
            while shift < 64 {
                let byte: u8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("eof in varint"))?;
                let group = u64::from(byte & 0x7f);
                if shift == 63 && group > 1 {
                    return Err(de::Error::custom("last byte truncated"));
                }
                value |= group << shift;
                if byte & 0x80 == 0 {
                    if byte == 0 && shift != 0 {
                        return Err(de::Error::custom("trailing zeros"));
                    }
                    return Ok(value);
                }
                shift += 7;
            }
            Err(de::Error::custom("left shift overflows"))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_tuple(10, VarintVisitor)
    }
}
