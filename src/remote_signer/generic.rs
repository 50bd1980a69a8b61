//! Generic operations (magic byte 0x03): a pure decoder of the unsigned
//! operation octez asks a key to sign, `0x03 ‖ branch (32) ‖ contents…`,
//! enough to name every content's kind and source and to find where the
//! next one starts. No I/O. Anything it does not understand, down to one
//! byte, is an error that says what and where: the signer refuses it.
//!
//! Only this module knows these layouts; the consensus path (0x11, 0x12,
//! 0x13) never calls it, so a protocol that changes an operation encoding
//! can break generic signing at worst, never baking.
//!
//! Layouts (protocols 023 Seoul and later; integers big-endian, `N` a
//! zarith natural, `Z` a zarith integer; a manager content starts with
//! `source (pkh21) ‖ fee N ‖ counter N ‖ gas_limit N ‖ storage_limit N`):
//!
//! | tag | kind | after the manager fields |
//! |---|---|---|
//! | 107 | reveal | public key ‖ proof option (`00`, or `ff ‖ u32 96 ‖ BLS signature`) |
//! | 108 | transaction | amount N ‖ destination (22) ‖ parameters option (`00`, or `ff ‖ entrypoint ‖ u32 len ‖ Micheline`) |
//! | 109 | origination | balance N ‖ delegate option (`00` / `ff ‖ pkh21`) ‖ code (u32 len) ‖ storage (u32 len) |
//! | 110 | delegation | delegate option |
//! | 111 | register_global_constant | value (u32 len) |
//! | 112 | set_deposits_limit | limit option (`00` / `ff ‖ N`) |
//! | 113 | increase_paid_storage | amount Z ‖ destination (22, originated) |
//! | 114 | update_consensus_key | public key ‖ proof option |
//! | 115 | update_companion_key | public key ‖ proof option |
//! | 158 | transfer_ticket | contents (u32 len) ‖ type (u32 len) ‖ ticketer (22) ‖ amount N ‖ destination (22) ‖ entrypoint (u32 len) |
//!
//! and the voting operations, which have no manager fields: 5 proposals
//! (`source ‖ period i32 ‖ u32 len ‖ 32-byte hashes`), 6 ballot
//! (`source ‖ period i32 ‖ proposal (32) ‖ ballot i8` 0 yay, 1 nay, 2 pass).
//! pkh21 = scheme tag (0 tz1, 1 tz2, 2 tz3, 3 tz4) ‖ 20 bytes; a public
//! key = tag ‖ 32, 33, 33 or 48 bytes; a destination = `00 ‖ pkh21` or
//! `01 ‖ contract hash (20) ‖ 00`; an entrypoint = a tag 0 to 9 (default,
//! root, do, set_delegate, remove_delegate, deposit, stake, unstake,
//! finalize_unstake, set_delegate_parameters) or `ff ‖ u8 len ‖ name`
//! (1 to 31 bytes).

use std::fmt;

use crate::watermark::{Curve, KeyHash};

/// The magic byte of a generic operation.
pub const MAGIC: u8 = 0x03;

/// The most a zarith number may take here (18 bytes, 126 bits: far above
/// any fee, counter or limit the protocol accepts).
const MAX_ZARITH_BYTES: usize = 18;

/// The longest named entrypoint.
const MAX_ENTRYPOINT: usize = 31;

/// Operation kinds this decoder reads in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationKind {
    /// 107.
    Reveal,
    /// 108.
    Transaction,
    /// 109.
    Origination,
    /// 110.
    Delegation,
    /// 111.
    RegisterGlobalConstant,
    /// 112.
    SetDepositsLimit,
    /// 113.
    IncreasePaidStorage,
    /// 114.
    UpdateConsensusKey,
    /// 115.
    UpdateCompanionKey,
    /// 158.
    TransferTicket,
    /// 5 (voting).
    Proposals,
    /// 6 (voting).
    Ballot,
}

impl OperationKind {
    /// Every kind.
    pub const ALL: [OperationKind; 12] = [
        OperationKind::Reveal,
        OperationKind::Transaction,
        OperationKind::Origination,
        OperationKind::Delegation,
        OperationKind::RegisterGlobalConstant,
        OperationKind::SetDepositsLimit,
        OperationKind::IncreasePaidStorage,
        OperationKind::UpdateConsensusKey,
        OperationKind::UpdateCompanionKey,
        OperationKind::TransferTicket,
        OperationKind::Proposals,
        OperationKind::Ballot,
    ];

    /// The content tag.
    pub fn tag(self) -> u8 {
        match self {
            OperationKind::Reveal => 107,
            OperationKind::Transaction => 108,
            OperationKind::Origination => 109,
            OperationKind::Delegation => 110,
            OperationKind::RegisterGlobalConstant => 111,
            OperationKind::SetDepositsLimit => 112,
            OperationKind::IncreasePaidStorage => 113,
            OperationKind::UpdateConsensusKey => 114,
            OperationKind::UpdateCompanionKey => 115,
            OperationKind::TransferTicket => 158,
            OperationKind::Proposals => 5,
            OperationKind::Ballot => 6,
        }
    }

    /// octez's name of the kind (`transaction`, `reveal`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Reveal => "reveal",
            OperationKind::Transaction => "transaction",
            OperationKind::Origination => "origination",
            OperationKind::Delegation => "delegation",
            OperationKind::RegisterGlobalConstant => "register_global_constant",
            OperationKind::SetDepositsLimit => "set_deposits_limit",
            OperationKind::IncreasePaidStorage => "increase_paid_storage",
            OperationKind::UpdateConsensusKey => "update_consensus_key",
            OperationKind::UpdateCompanionKey => "update_companion_key",
            OperationKind::TransferTicket => "transfer_ticket",
            OperationKind::Proposals => "proposals",
            OperationKind::Ballot => "ballot",
        }
    }

    /// The kind named `name` (octez's name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }

    fn is_manager(self) -> bool {
        !matches!(self, OperationKind::Proposals | OperationKind::Ballot)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names of content tags this decoder knows but does not read, so that a
/// refusal can name them.
fn known_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        1 => "seed_nonce_revelation",
        4 => "activate_account",
        9 => "drain_delegate",
        17 => "failing_noop",
        20 => "preattestation",
        21 => "attestation",
        23 => "attestation_with_dal",
        200 => "smart_rollup_originate",
        201 => "smart_rollup_add_messages",
        206 => "smart_rollup_execute_outbox_message",
        230 => "dal_publish_commitment",
        _ => return None,
    })
}

/// A transaction's (or ticket's) destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// An implicit account (tz1..tz4).
    Implicit(KeyHash),
    /// An originated contract (KT1), by its 20-byte hash.
    Originated([u8; 20]),
}

/// The fields every manager operation starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerFields {
    /// Fee, mutez.
    pub fee: u128,
    /// The source's counter.
    pub counter: u128,
    /// Gas limit.
    pub gas_limit: u128,
    /// Storage limit.
    pub storage_limit: u128,
}

/// One decoded content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Its kind.
    pub kind: OperationKind,
    /// Where it starts (its tag byte) in the signed bytes.
    pub offset: usize,
    /// Its source.
    pub source: KeyHash,
    /// Fee, counter and limits (manager operations only).
    pub manager: Option<ManagerFields>,
    /// Amount of a transaction, origination (balance), ticket transfer
    /// (ticket amount) or paid-storage increase.
    pub amount: Option<i128>,
    /// Destination of a transaction, ticket transfer or paid-storage
    /// increase.
    pub destination: Option<Destination>,
}

/// A decoded generic operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericOperation {
    /// The block hash the operation is anchored to.
    pub branch: [u8; 32],
    /// The contents, in order (at least one).
    pub contents: Vec<Content>,
}

/// Why bytes are not a generic operation this decoder understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenericError {
    /// The first byte is not 0x03.
    #[error("magic byte {0:#04x} is not a generic operation (0x03)")]
    NotGeneric(u8),
    /// No bytes after the branch.
    #[error("no operation contents after the branch")]
    Empty,
    /// Bytes end inside a field.
    #[error("{what} truncated at byte {offset}")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Where the bytes ended.
        offset: usize,
    },
    /// A content tag this decoder does not read.
    #[error("content {index} at byte {offset}: {name} (tag {tag}) is not an operation this signer decodes")]
    UnknownKind {
        /// Which content (0 is the first).
        index: usize,
        /// Where its tag is.
        offset: usize,
        /// The tag.
        tag: u8,
        /// octez's name when known, else `unknown operation`.
        name: &'static str,
    },
    /// A field whose value this decoder does not accept.
    #[error("{what} at byte {offset}: {detail}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GenericError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(GenericError::Truncated {
                what,
                offset: self.bytes.len(),
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, GenericError> {
        Ok(self.take(1, what)?[0])
    }

    fn malformed(
        &self,
        what: &'static str,
        offset: usize,
        detail: impl Into<String>,
    ) -> GenericError {
        GenericError::Malformed {
            what,
            offset,
            detail: detail.into(),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GenericError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `u32 length ‖ bytes`.
    fn sized(&mut self, what: &'static str) -> Result<&'a [u8], GenericError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    /// A `bool`: `00` or `ff`, nothing else.
    fn flag(&mut self, what: &'static str) -> Result<bool, GenericError> {
        let at = self.at;
        match self.byte(what)? {
            0x00 => Ok(false),
            0xff => Ok(true),
            b => Err(self.malformed(what, at, format!("option flag {b:#04x} (00 or ff)"))),
        }
    }

    /// The 7-bit groups of a zarith number, least significant first;
    /// `first_bits` of the first byte carry value. Canonical only: no
    /// trailing zero group.
    fn zarith(&mut self, what: &'static str, first_bits: u32) -> Result<u128, GenericError> {
        let at = self.at;
        let mut value: u128 = 0;
        let mut shift = 0u32;
        for i in 0..MAX_ZARITH_BYTES {
            let b = self.byte(what)?;
            let bits = if i == 0 { first_bits } else { 7 };
            let group = u128::from(b & ((1u8 << bits) - 1));
            value |= group << shift;
            shift += bits;
            if b & 0x80 == 0 {
                if i > 0 && group == 0 {
                    return Err(self.malformed(
                        what,
                        at,
                        "non-canonical zarith (trailing zero byte)",
                    ));
                }
                return Ok(value);
            }
        }
        Err(self.malformed(
            what,
            at,
            format!("zarith number longer than {MAX_ZARITH_BYTES} bytes"),
        ))
    }

    fn nat(&mut self, what: &'static str) -> Result<u128, GenericError> {
        self.zarith(what, 7)
    }

    fn int(&mut self, what: &'static str) -> Result<i128, GenericError> {
        let negative = self.bytes.get(self.at).is_some_and(|b| b & 0x40 != 0);
        let magnitude = self.zarith(what, 6)?;
        // 6 + 17 * 7 = 125 bits: always fits.
        let v = magnitude as i128;
        Ok(if negative { -v } else { v })
    }

    fn pkh(&mut self, what: &'static str) -> Result<KeyHash, GenericError> {
        let at = self.at;
        let curve = match self.byte(what)? {
            0 => Curve::Ed25519,
            1 => Curve::Secp256k1,
            2 => Curve::P256,
            3 => Curve::Bls,
            t => {
                return Err(self.malformed(
                    what,
                    at,
                    format!("key hash scheme tag {t} (0 to 3: tz1 to tz4)"),
                ))
            }
        };
        let hash = self.take(20, what)?.try_into().expect("20 bytes");
        Ok(KeyHash { curve, hash })
    }

    fn public_key(&mut self, what: &'static str) -> Result<(), GenericError> {
        let at = self.at;
        let len = match self.byte(what)? {
            0 => 32,
            1 | 2 => 33,
            3 => 48,
            t => {
                return Err(self.malformed(what, at, format!("public key scheme tag {t} (0 to 3)")))
            }
        };
        self.take(len, what).map(|_| ())
    }

    /// `00`, or `ff ‖ u32 96 ‖ BLS signature` (a tz4 proof of possession).
    fn proof(&mut self) -> Result<(), GenericError> {
        if self.flag("proof")? {
            let at = self.at;
            let sig = self.sized("proof")?;
            if sig.len() != 96 {
                return Err(self.malformed(
                    "proof",
                    at,
                    format!("{} bytes, a BLS signature has 96", sig.len()),
                ));
            }
        }
        Ok(())
    }

    fn destination(&mut self, what: &'static str) -> Result<Destination, GenericError> {
        let at = self.at;
        match self.byte(what)? {
            0 => Ok(Destination::Implicit(self.pkh(what)?)),
            1 => {
                let hash = self.take(20, what)?.try_into().expect("20 bytes");
                let pad_at = self.at;
                match self.byte(what)? {
                    0 => Ok(Destination::Originated(hash)),
                    p => Err(self.malformed(what, pad_at, format!("padding byte {p:#04x} (00)"))),
                }
            }
            t => Err(self.malformed(
                what,
                at,
                format!("destination tag {t} (0 implicit, 1 originated; rollups are not decoded)"),
            )),
        }
    }

    fn entrypoint(&mut self) -> Result<(), GenericError> {
        let at = self.at;
        match self.byte("entrypoint")? {
            0..=9 => Ok(()),
            0xff => {
                let n = self.byte("entrypoint")? as usize;
                if n == 0 || n > MAX_ENTRYPOINT {
                    return Err(self.malformed(
                        "entrypoint",
                        at,
                        format!("name of {n} bytes (1 to {MAX_ENTRYPOINT})"),
                    ));
                }
                self.take(n, "entrypoint").map(|_| ())
            }
            t => Err(self.malformed(
                "entrypoint",
                at,
                format!("entrypoint tag {t} (0 to 9, or ff and a name)"),
            )),
        }
    }

    fn content(&mut self, index: usize) -> Result<Content, GenericError> {
        let offset = self.at;
        let tag = self.byte("content tag")?;
        let kind = OperationKind::from_tag(tag).ok_or(GenericError::UnknownKind {
            index,
            offset,
            tag,
            name: known_name(tag).unwrap_or("unknown operation"),
        })?;
        let source = self.pkh("source")?;
        let manager = if kind.is_manager() {
            Some(ManagerFields {
                fee: self.nat("fee")?,
                counter: self.nat("counter")?,
                gas_limit: self.nat("gas_limit")?,
                storage_limit: self.nat("storage_limit")?,
            })
        } else {
            None
        };
        let mut c = Content {
            kind,
            offset,
            source,
            manager,
            amount: None,
            destination: None,
        };
        match kind {
            OperationKind::Reveal
            | OperationKind::UpdateConsensusKey
            | OperationKind::UpdateCompanionKey => {
                self.public_key("public key")?;
                self.proof()?;
            }
            OperationKind::Transaction => {
                c.amount = Some(self.nat("amount")? as i128);
                c.destination = Some(self.destination("destination")?);
                if self.flag("parameters")? {
                    self.entrypoint()?;
                    self.sized("parameters")?;
                }
            }
            OperationKind::Origination => {
                c.amount = Some(self.nat("balance")? as i128);
                if self.flag("delegate")? {
                    self.pkh("delegate")?;
                }
                self.sized("code")?;
                self.sized("storage")?;
            }
            OperationKind::Delegation => {
                if self.flag("delegate")? {
                    self.pkh("delegate")?;
                }
            }
            OperationKind::RegisterGlobalConstant => {
                self.sized("value")?;
            }
            OperationKind::SetDepositsLimit => {
                if self.flag("limit")? {
                    self.nat("limit")?;
                }
            }
            OperationKind::IncreasePaidStorage => {
                c.amount = Some(self.int("amount")?);
                let at = self.at;
                let d = self.destination("destination")?;
                if !matches!(d, Destination::Originated(_)) {
                    return Err(self.malformed(
                        "destination",
                        at,
                        "an implicit account (an originated contract is required)",
                    ));
                }
                c.destination = Some(d);
            }
            OperationKind::TransferTicket => {
                self.sized("ticket contents")?;
                self.sized("ticket type")?;
                self.destination("ticketer")?;
                c.amount = Some(self.nat("ticket amount")? as i128);
                c.destination = Some(self.destination("destination")?);
                let at = self.at;
                let name = self.sized("entrypoint")?;
                if name.len() > MAX_ENTRYPOINT {
                    return Err(self.malformed(
                        "entrypoint",
                        at,
                        format!("name of {} bytes (at most {MAX_ENTRYPOINT})", name.len()),
                    ));
                }
            }
            OperationKind::Proposals => {
                self.take(4, "period")?;
                let at = self.at;
                let list = self.sized("proposals")?;
                if list.is_empty() || list.len() % 32 != 0 {
                    return Err(self.malformed(
                        "proposals",
                        at,
                        format!("{} bytes (a non-empty list of 32-byte hashes)", list.len()),
                    ));
                }
            }
            OperationKind::Ballot => {
                self.take(4, "period")?;
                self.take(32, "proposal")?;
                let at = self.at;
                let b = self.byte("ballot")?;
                if b > 2 {
                    return Err(self.malformed(
                        "ballot",
                        at,
                        format!("ballot {b} (0 yay, 1 nay, 2 pass)"),
                    ));
                }
            }
        }
        Ok(c)
    }
}

/// Decode `data` (magic byte first): every content, to the last byte.
pub fn decode(data: &[u8]) -> Result<GenericOperation, GenericError> {
    let mut r = Reader { bytes: data, at: 0 };
    let magic = r.byte("magic byte")?;
    if magic != MAGIC {
        return Err(GenericError::NotGeneric(magic));
    }
    let branch = r.take(32, "branch")?.try_into().expect("32 bytes");
    if r.at == data.len() {
        return Err(GenericError::Empty);
    }
    let mut contents = Vec::new();
    while r.at < data.len() {
        contents.push(r.content(contents.len())?);
    }
    Ok(GenericOperation { branch, contents })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 20] = [0x11; 20];

    fn src_pkh() -> KeyHash {
        KeyHash {
            curve: Curve::Ed25519,
            hash: SRC,
        }
    }

    /// `03 ‖ branch` then the contents.
    fn op(contents: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x03];
        v.extend_from_slice(&[0xbb; 32]);
        for c in contents {
            v.extend_from_slice(c);
        }
        v
    }

    /// Tag, source tz1 0x11.., fee 1000 (e8 07), counter 5, gas 1527
    /// (f7 0b), storage 257 (81 02).
    fn manager(tag: u8) -> Vec<u8> {
        let mut v = vec![tag, 0x00];
        v.extend_from_slice(&SRC);
        v.extend_from_slice(&[0xe8, 0x07, 0x05, 0xf7, 0x0b, 0x81, 0x02]);
        v
    }

    /// A transfer of 1 tez (c0 84 3d) to tz1 0x22.., no parameters.
    fn transaction() -> Vec<u8> {
        let mut v = manager(108);
        v.extend_from_slice(&[0xc0, 0x84, 0x3d, 0x00, 0x00]);
        v.extend_from_slice(&[0x22; 20]);
        v.push(0x00);
        v
    }

    /// A call of a KT1's named entrypoint `mint` with Micheline `Unit`.
    fn contract_call() -> Vec<u8> {
        let mut v = manager(108);
        v.extend_from_slice(&[0x00, 0x01]);
        v.extend_from_slice(&[0x33; 20]);
        v.extend_from_slice(&[0x00, 0xff, 0xff, 0x04]);
        v.extend_from_slice(b"mint");
        v.extend_from_slice(&[0, 0, 0, 2, 0x03, 0x0b]);
        v
    }

    /// A tz1 reveal (32-byte key), no proof.
    fn reveal() -> Vec<u8> {
        let mut v = manager(107);
        v.push(0x00);
        v.extend_from_slice(&[0x44; 32]);
        v.push(0x00);
        v
    }

    /// A consensus-key update to a tz4 key with its proof.
    fn update_consensus_key() -> Vec<u8> {
        let mut v = manager(114);
        v.push(0x03);
        v.extend_from_slice(&[0x55; 48]);
        v.extend_from_slice(&[0xff, 0, 0, 0, 96]);
        v.extend_from_slice(&[0x66; 96]);
        v
    }

    fn delegation(to: Option<[u8; 20]>) -> Vec<u8> {
        let mut v = manager(110);
        match to {
            None => v.push(0x00),
            Some(h) => {
                v.extend_from_slice(&[0xff, 0x00]);
                v.extend_from_slice(&h);
            }
        }
        v
    }

    fn origination() -> Vec<u8> {
        let mut v = manager(109);
        v.extend_from_slice(&[0x00, 0x00]); // balance 0, no delegate
        v.extend_from_slice(&[0, 0, 0, 3, 1, 2, 3]); // code
        v.extend_from_slice(&[0, 0, 0, 1, 9]); // storage
        v
    }

    fn increase_paid_storage() -> Vec<u8> {
        let mut v = manager(113);
        v.extend_from_slice(&[0xa4, 0x01]); // Z 100: 0x80|36, then 1
        v.push(0x01);
        v.extend_from_slice(&[0x77; 20]);
        v.push(0x00);
        v
    }

    fn transfer_ticket() -> Vec<u8> {
        let mut v = manager(158);
        v.extend_from_slice(&[0, 0, 0, 1, 0xaa]); // contents
        v.extend_from_slice(&[0, 0, 0, 1, 0xbb]); // type
        v.push(0x01);
        v.extend_from_slice(&[0x12; 20]);
        v.push(0x00); // ticketer KT1
        v.push(0x07); // amount 7
        v.push(0x00);
        v.push(0x00);
        v.extend_from_slice(&[0x13; 20]); // destination tz1
        v.extend_from_slice(&[0, 0, 0, 7]);
        v.extend_from_slice(b"default");
        v
    }

    fn ballot() -> Vec<u8> {
        let mut v = vec![6, 0x00];
        v.extend_from_slice(&SRC);
        v.extend_from_slice(&[0, 0, 0, 42]);
        v.extend_from_slice(&[0x99; 32]);
        v.push(1); // nay
        v
    }

    fn proposals() -> Vec<u8> {
        let mut v = vec![5, 0x00];
        v.extend_from_slice(&SRC);
        v.extend_from_slice(&[0, 0, 0, 42, 0, 0, 0, 64]);
        v.extend_from_slice(&[0x98; 64]);
        v
    }

    fn all_vectors() -> Vec<Vec<u8>> {
        vec![
            op(&[&transaction()]),
            op(&[&reveal(), &transaction(), &contract_call()]),
            op(&[&update_consensus_key()]),
            op(&[&delegation(None)]),
            op(&[&delegation(Some([0x88; 20]))]),
            op(&[&origination()]),
            op(&[&increase_paid_storage()]),
            op(&[&transfer_ticket()]),
            op(&[&ballot()]),
            op(&[&proposals()]),
        ]
    }

    #[test]
    fn a_transfer_decodes_field_by_field() {
        let d = decode(&op(&[&transaction()])).unwrap();
        assert_eq!(d.branch, [0xbb; 32]);
        assert_eq!(
            d.contents,
            vec![Content {
                kind: OperationKind::Transaction,
                offset: 33,
                source: src_pkh(),
                manager: Some(ManagerFields {
                    fee: 1000,
                    counter: 5,
                    gas_limit: 1527,
                    storage_limit: 257,
                }),
                amount: Some(1_000_000),
                destination: Some(Destination::Implicit(KeyHash {
                    curve: Curve::Ed25519,
                    hash: [0x22; 20],
                })),
            }]
        );
    }

    #[test]
    fn every_kind_and_a_batch_decode_to_the_last_byte() {
        let kinds: Vec<Vec<OperationKind>> = all_vectors()
            .iter()
            .map(|v| decode(v).unwrap().contents.iter().map(|c| c.kind).collect())
            .collect();
        use OperationKind::*;
        assert_eq!(
            kinds,
            vec![
                vec![Transaction],
                vec![Reveal, Transaction, Transaction],
                vec![UpdateConsensusKey],
                vec![Delegation],
                vec![Delegation],
                vec![Origination],
                vec![IncreasePaidStorage],
                vec![TransferTicket],
                vec![Ballot],
                vec![Proposals],
            ]
        );
        let batch = decode(&op(&[&reveal(), &transaction(), &contract_call()])).unwrap();
        let offsets: Vec<usize> = batch.contents.iter().map(|c| c.offset).collect();
        assert_eq!(
            offsets,
            [
                33,
                33 + reveal().len(),
                33 + reveal().len() + transaction().len()
            ]
        );
        let c = &batch.contents[2];
        assert_eq!(c.destination, Some(Destination::Originated([0x33; 20])));
        assert_eq!(
            decode(&op(&[&increase_paid_storage()])).unwrap().contents[0].amount,
            Some(100)
        );
        assert_eq!(decode(&op(&[&ballot()])).unwrap().contents[0].manager, None);
    }

    #[test]
    fn zarith_vectors() {
        let n = |b: &[u8]| Reader { bytes: b, at: 0 }.nat("n");
        let z = |b: &[u8]| Reader { bytes: b, at: 0 }.int("z");
        assert_eq!(n(&[0x00]), Ok(0));
        assert_eq!(n(&[0x7f]), Ok(127));
        assert_eq!(n(&[0x80, 0x01]), Ok(128));
        assert_eq!(n(&[0xe8, 0x07]), Ok(1000));
        assert_eq!(n(&[0xc0, 0x84, 0x3d]), Ok(1_000_000));
        assert!(n(&[0x80, 0x00]).is_err(), "trailing zero byte");
        assert!(n(&[0x80]).is_err(), "cut");
        assert!(n(&[0xff; 19]).is_err(), "too long");
        assert_eq!(
            n(&[&[0xff; 17][..], &[0x01]].concat()),
            Ok((1u128 << 120) - 1)
        );
        assert_eq!(z(&[0x00]), Ok(0));
        assert_eq!(z(&[0x41]), Ok(-1));
        assert_eq!(z(&[0x3f]), Ok(63));
        assert_eq!(z(&[0x80, 0x01]), Ok(64));
        assert_eq!(z(&[0xa4, 0x01]), Ok(100));
        assert_eq!(z(&[0xc0, 0x01]), Ok(-64));
    }

    #[test]
    fn what_is_not_understood_is_named() {
        let e = |v: Vec<u8>| decode(&v).unwrap_err().to_string();
        // A smart rollup origination after a reveal: named, with its index.
        let mut sr = manager(200);
        sr.extend_from_slice(&[0; 8]);
        assert_eq!(
            e(op(&[&reveal(), &sr])),
            format!(
                "content 1 at byte {}: smart_rollup_originate (tag 200) is not an operation this signer decodes",
                33 + reveal().len()
            )
        );
        assert!(e(op(&[&[250u8, 0, 0][..]])).contains("unknown operation (tag 250)"));
        assert!(e(op(&[&[21u8, 0, 0][..]])).contains("attestation (tag 21)"));
        // A rollup destination, a tz5 source, a bad flag, a bad padding.
        let mut t = transaction();
        t[manager(108).len() + 3] = 3;
        assert!(
            e(op(&[&t])).contains("destination tag 3"),
            "{}",
            e(op(&[&t]))
        );
        let mut t = transaction();
        t[1] = 4;
        assert!(e(op(&[&t])).contains("scheme tag 4"));
        let mut t = transaction();
        *t.last_mut().unwrap() = 0x01;
        assert!(e(op(&[&t])).contains("option flag 0x01"));
        let mut c = contract_call();
        let pad = manager(108).len() + 1 + 1 + 20;
        c[pad] = 0x01;
        assert!(e(op(&[&c])).contains("padding byte 0x01"));
        // A proof that is not 96 bytes, an entrypoint tag 10, a ballot 3.
        let mut u = update_consensus_key();
        let len_at = manager(114).len() + 49 + 4;
        u[len_at] = 95;
        u.pop();
        assert!(e(op(&[&u])).contains("95 bytes"));
        let mut c = contract_call();
        c[manager(108).len() + 1 + 22 + 1] = 10;
        assert!(e(op(&[&c])).contains("entrypoint tag 10"));
        let mut b = ballot();
        *b.last_mut().unwrap() = 3;
        assert!(e(op(&[&b])).contains("ballot 3"));
        // Nothing after the branch; another magic byte.
        assert_eq!(decode(&op(&[])), Err(GenericError::Empty));
        assert_eq!(decode(&[0x13; 40]), Err(GenericError::NotGeneric(0x13)));
        assert!(decode(&[]).is_err());
        // Trailing bytes are a content that does not decode.
        let mut t = op(&[&transaction()]);
        t.push(0x6c);
        assert!(matches!(decode(&t), Err(GenericError::Truncated { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for v in all_vectors() {
            let full = decode(&v).unwrap().contents;
            for cut in 0..v.len() {
                match decode(&v[..cut]) {
                    Err(_) => {}
                    // Cut exactly between two contents of a batch: the
                    // first ones, a shorter batch that is itself valid
                    // (and is what would be signed: the bytes given).
                    Ok(op) => {
                        let k = op.contents.len();
                        assert!(k < full.len(), "{cut}: {v:02x?}");
                        assert_eq!(op.contents[..], full[..k]);
                        assert_eq!(full[k].offset, cut, "a cut inside a content decoded");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&op(&[&tail]));
        }

        #[test]
        fn a_mutated_vector_never_panics(i in 0usize..10, at in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut v = all_vectors().swap_remove(i);
            let at = at % v.len();
            v[at] = byte;
            let _ = decode(&v);
        }
    }
}
