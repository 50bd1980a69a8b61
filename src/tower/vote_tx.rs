//! Solana vote transactions: the message a validator asks to sign, decoded
//! far enough to know exactly which vote it casts. Pure: no I/O, no
//! allocation beyond the input's size, a typed error for every malformed
//! input and never a panic.
//!
//! What is read (facts in `docs/vote-transactions.md`):
//!
//! - a legacy message, or a v0 message (prefix byte `0x80`) with its
//!   address-table lookups; other versions are refused;
//! - exactly one instruction of the vote program that casts a vote (`Vote`,
//!   `VoteSwitch`, `UpdateVoteState`(`Switch`),
//!   `CompactUpdateVoteState`(`Switch`), `TowerSync`(`Switch`)); its body is
//!   read by the same code that reads an Agave tower file's last vote;
//! - that instruction's accounts, which must all be written in the message
//!   itself (a v0 lookup-table account cannot be checked from the message
//!   alone): the vote account (writable), the authority (a required signer)
//!   and, for `Vote`/`VoteSwitch`, the SlotHashes and Clock sysvars.
//!
//! Stricter than the chain where the chain is lax: trailing bytes after the
//! message or after the vote's data, non-canonical short-vec lengths,
//! duplicate account keys, extra accounts on the vote instruction, vote
//! program instructions that do not vote, and towers that Agave could not
//! have built (more than 31 lockouts, unordered slots or confirmation
//! counts, a root at or above the first lockout) are refused.

use crate::agave::{AgaveError, CompactProblem, LastVote, Lockout};
use crate::identity::NodeId;
use crate::tower::VoteRef;

/// The vote program, `Vote111111111111111111111111111111111111111`.
pub const VOTE_PROGRAM_ID: NodeId = NodeId([
    0x07, 0x61, 0x48, 0x1d, 0x35, 0x74, 0x74, 0xbb, 0x7c, 0x4d, 0x76, 0x24, 0xeb, 0xd3, 0xbd, 0xb3,
    0xd8, 0x35, 0x5e, 0x73, 0xd1, 0x10, 0x43, 0xfc, 0x0d, 0xa3, 0x53, 0x80, 0x00, 0x00, 0x00, 0x00,
]);

/// The SlotHashes sysvar, `SysvarS1otHashes111111111111111111111111111`.
pub const SLOT_HASHES_SYSVAR_ID: NodeId = NodeId([
    0x06, 0xa7, 0xd5, 0x17, 0x19, 0x2f, 0x0a, 0xaf, 0xc6, 0xf2, 0x65, 0xe3, 0xfb, 0x77, 0xcc, 0x7a,
    0xda, 0x82, 0xc5, 0x29, 0xd0, 0xbe, 0x3b, 0x13, 0x6e, 0x2d, 0x00, 0x55, 0x20, 0x00, 0x00, 0x00,
]);

/// The Clock sysvar, `SysvarC1ock11111111111111111111111111111111`.
pub const CLOCK_SYSVAR_ID: NodeId = NodeId([
    0x06, 0xa7, 0xd5, 0x17, 0x18, 0xc7, 0x74, 0xc9, 0x28, 0x56, 0x63, 0x98, 0x69, 0x1d, 0x5e, 0xb6,
    0x8b, 0x5e, 0xb8, 0xa3, 0x9b, 0x4b, 0x6d, 0x5c, 0x73, 0x55, 0x5b, 0x21, 0x00, 0x00, 0x00, 0x00,
]);

/// Most lockouts a tower holds (Agave's `MAX_LOCKOUT_HISTORY`).
pub const MAX_LOCKOUTS: usize = 31;

const KEY_LEN: usize = 32;
/// Account indexes are one byte: no message can name more accounts.
const MAX_ACCOUNTS: usize = 256;

/// The message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageVersion {
    /// No prefix byte: what Agave's voting service sends.
    Legacy,
    /// Prefix `0x80`, with address-table lookups.
    V0,
}

/// Which vote instruction cast the vote (its wire tag in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// `Vote` (2): slots and a hash.
    Vote,
    /// `VoteSwitch` (6).
    VoteSwitch,
    /// `UpdateVoteState` (8): the whole tower, lockouts in full.
    UpdateVoteState,
    /// `UpdateVoteStateSwitch` (9).
    UpdateVoteStateSwitch,
    /// `CompactUpdateVoteState` (12): the whole tower, compact.
    CompactUpdateVoteState,
    /// `CompactUpdateVoteStateSwitch` (13).
    CompactUpdateVoteStateSwitch,
    /// `TowerSync` (14): the whole tower, compact, with the block id.
    TowerSync,
    /// `TowerSyncSwitch` (15).
    TowerSyncSwitch,
}

impl VoteKind {
    /// The instruction's tag (the first four bytes of its data).
    pub fn tag(self) -> u32 {
        match self {
            VoteKind::Vote => 2,
            VoteKind::VoteSwitch => 6,
            VoteKind::UpdateVoteState => 8,
            VoteKind::UpdateVoteStateSwitch => 9,
            VoteKind::CompactUpdateVoteState => 12,
            VoteKind::CompactUpdateVoteStateSwitch => 13,
            VoteKind::TowerSync => 14,
            VoteKind::TowerSyncSwitch => 15,
        }
    }

    /// The kind of a voting tag; `None` for every other vote instruction.
    pub fn from_tag(tag: u32) -> Option<Self> {
        Some(match tag {
            2 => VoteKind::Vote,
            6 => VoteKind::VoteSwitch,
            8 => VoteKind::UpdateVoteState,
            9 => VoteKind::UpdateVoteStateSwitch,
            12 => VoteKind::CompactUpdateVoteState,
            13 => VoteKind::CompactUpdateVoteStateSwitch,
            14 => VoteKind::TowerSync,
            15 => VoteKind::TowerSyncSwitch,
            _ => return None,
        })
    }

    /// `true` for the variants that carry a switching proof hash.
    pub fn is_switch(self) -> bool {
        matches!(
            self,
            VoteKind::VoteSwitch
                | VoteKind::UpdateVoteStateSwitch
                | VoteKind::CompactUpdateVoteStateSwitch
                | VoteKind::TowerSyncSwitch
        )
    }

    /// `true` for the plain `Vote`/`VoteSwitch`, which carry slots and no
    /// tower (no lockouts, no root).
    pub fn is_plain(self) -> bool {
        matches!(self, VoteKind::Vote | VoteKind::VoteSwitch)
    }

    /// The tag of the tower file's last-vote variant with the same body.
    fn last_vote_tag(self) -> u32 {
        match self {
            VoteKind::Vote | VoteKind::VoteSwitch => 0,
            VoteKind::UpdateVoteState | VoteKind::UpdateVoteStateSwitch => 1,
            VoteKind::CompactUpdateVoteState | VoteKind::CompactUpdateVoteStateSwitch => 2,
            VoteKind::TowerSync | VoteKind::TowerSyncSwitch => 3,
        }
    }

    fn account_count(self) -> usize {
        if self.is_plain() {
            4
        } else {
            2
        }
    }
}

/// The one vote a message casts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastVote {
    /// Which instruction.
    pub kind: VoteKind,
    /// The vote account voted with (the instruction's first account).
    pub vote_account: NodeId,
    /// The authority the vote program checks: the instruction's last
    /// account, always a required signer of the message.
    pub authority: NodeId,
    /// The vote itself, in the tower file's form: slots or lockouts, root,
    /// bank hash, timestamp and (TowerSync) block id.
    pub vote: LastVote,
    /// The switching proof hash of a `*Switch` variant.
    pub switch_proof: Option<[u8; 32]>,
}

impl CastVote {
    /// The newest slot voted and the bank hash voted for it.
    pub fn last_vote(&self) -> VoteRef {
        VoteRef {
            // Never empty: the decoder refuses a vote without slots.
            slot: self.vote.last_voted_slot().unwrap_or(0),
            hash: self.vote.hash(),
        }
    }

    /// The root the vote states (`None` for plain votes and for towers
    /// without a root).
    pub fn root(&self) -> Option<u64> {
        match &self.vote {
            LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => u.root,
            LastVote::TowerSync(s) => s.root,
            _ => None,
        }
    }

    /// The lockouts of a tower vote; `None` for a plain vote.
    pub fn lockouts(&self) -> Option<&[Lockout]> {
        match &self.vote {
            LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => Some(&u.lockouts),
            LastVote::TowerSync(s) => Some(&s.lockouts),
            _ => None,
        }
    }

    /// The slots voted: the lockouts' slots, or a plain vote's slots.
    pub fn slots(&self) -> Vec<u64> {
        match &self.vote {
            LastVote::Vote(v) => v.slots.clone(),
            _ => self
                .lockouts()
                .unwrap_or_default()
                .iter()
                .map(|l| l.slot)
                .collect(),
        }
    }

    /// The vote's unix timestamp, if it carries one.
    pub fn timestamp(&self) -> Option<i64> {
        self.vote.timestamp()
    }

    /// The block id of a TowerSync vote.
    pub fn block_id(&self) -> Option<[u8; 32]> {
        match &self.vote {
            LastVote::TowerSync(s) => Some(s.block_id),
            _ => None,
        }
    }
}

impl CastVote {
    /// A `TowerSync` that votes only `vote`: one lockout at its slot, the
    /// root when it is below that slot, no timestamp, a zero block id. The
    /// smallest vote message for a [`TowerUpdate`](crate::tower::TowerUpdate)
    /// (tests, examples, and callers that sign a vote for a tower they
    /// keep elsewhere); a validator sends its real lockouts instead.
    pub fn tower_sync_for(
        vote: VoteRef,
        root: Option<u64>,
        vote_account: NodeId,
        authority: NodeId,
    ) -> Self {
        CastVote {
            kind: VoteKind::TowerSync,
            vote_account,
            authority,
            vote: LastVote::TowerSync(crate::agave::TowerSync {
                lockouts: vec![Lockout {
                    slot: vote.slot,
                    confirmation_count: 1,
                }],
                root: root.filter(|&r| r < vote.slot),
                hash: vote.hash,
                timestamp: None,
                block_id: [0; 32],
            }),
            switch_proof: None,
        }
    }

    /// The legacy message that casts this vote, laid out as Agave's voting
    /// service builds it: `fee_payer` (the node identity) signs first, the
    /// authority second when it is another key, then the vote account, the
    /// sysvars of a plain vote, and the vote program. For tests, examples
    /// and validators that build their own vote messages.
    ///
    /// Fails when the vote cannot be encoded, or its form or switch proof
    /// does not match [`kind`](Self::kind).
    pub fn to_legacy_message(
        &self,
        fee_payer: NodeId,
        recent_blockhash: [u8; 32],
    ) -> Result<Vec<u8>, AgaveError> {
        let unencodable = |detail: String| AgaveError::Unencodable {
            field: "vote instruction",
            detail,
        };
        if self.vote.tag() != self.kind.last_vote_tag() {
            return Err(unencodable(format!(
                "{:?} does not carry a last vote of variant {}",
                self.kind,
                self.vote.tag()
            )));
        }
        if self.kind.is_switch() != self.switch_proof.is_some() {
            return Err(unencodable(format!(
                "{:?} with{} a switch proof",
                self.kind,
                if self.switch_proof.is_some() {
                    ""
                } else {
                    "out"
                }
            )));
        }
        let mut keys = vec![fee_payer];
        let separate_authority = self.authority != fee_payer;
        if separate_authority {
            keys.push(self.authority);
        }
        let signers = keys.len();
        keys.push(self.vote_account);
        let mut accounts = vec![signers as u8];
        if self.kind.is_plain() {
            keys.extend([SLOT_HASHES_SYSVAR_ID, CLOCK_SYSVAR_ID]);
            accounts.extend([signers as u8 + 1, signers as u8 + 2]);
        }
        accounts.push(if separate_authority { 1 } else { 0 });
        keys.push(VOTE_PROGRAM_ID);
        if keys[1..].contains(&fee_payer) || keys[signers..].contains(&self.authority) {
            return Err(unencodable(
                "the fee payer or authority is also the vote account or a program".into(),
            ));
        }
        let mut data = self.kind.tag().to_le_bytes().to_vec();
        crate::agave::write_vote_body(&self.vote, &mut data)?;
        if let Some(proof) = self.switch_proof {
            data.extend_from_slice(&proof);
        }
        let data_len = u16::try_from(data.len())
            .map_err(|_| unencodable(format!("{} bytes of vote data", data.len())))?;

        let mut out = Vec::with_capacity(3 + 1 + 32 * keys.len() + 32 + 8 + data.len());
        out.extend([
            signers as u8,
            u8::from(separate_authority),
            (keys.len() - signers - 1) as u8,
        ]);
        crate::agave::encode_short_u16(&mut out, keys.len() as u16);
        for key in &keys {
            out.extend_from_slice(key.as_bytes());
        }
        out.extend_from_slice(&recent_blockhash);
        out.push(1);
        out.push((keys.len() - 1) as u8);
        crate::agave::encode_short_u16(&mut out, accounts.len() as u16);
        out.extend_from_slice(&accounts);
        crate::agave::encode_short_u16(&mut out, data_len);
        out.extend_from_slice(&data);
        Ok(out)
    }
}

/// A decoded vote transaction message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteMessage {
    version: MessageVersion,
    signers: Vec<NodeId>,
    recent_blockhash: [u8; 32],
    vote: CastVote,
    vote_index: usize,
    other_programs: Vec<NodeId>,
}

impl VoteMessage {
    /// Decode the bytes a validator asks to sign (the message, not the
    /// wire transaction with its signatures in front).
    pub fn decode(bytes: &[u8]) -> Result<Self, VoteTxError> {
        decode(bytes)
    }

    /// Legacy or v0.
    pub fn version(&self) -> MessageVersion {
        self.version
    }

    /// The required signers in message order: the fee payer first. A
    /// signature is needed from each.
    pub fn signers(&self) -> &[NodeId] {
        &self.signers
    }

    /// The recent blockhash the transaction is valid for.
    pub fn recent_blockhash(&self) -> [u8; 32] {
        self.recent_blockhash
    }

    /// The vote the message casts.
    pub fn vote(&self) -> &CastVote {
        &self.vote
    }

    /// The position of the vote instruction among the instructions.
    pub fn vote_instruction_index(&self) -> usize {
        self.vote_index
    }

    /// The program of every other instruction, in order.
    pub fn other_programs(&self) -> &[NodeId] {
        &self.other_programs
    }
}

/// Why a message is not a vote transaction slashguard can check.
///
/// Offsets count from the first byte of the message; `instruction` is an
/// instruction's position in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteTxError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// A field runs past the end of the message.
    #[error("truncated: {field} at offset {offset} needs {needed} bytes, {have} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs (at least).
        needed: usize,
        /// Bytes left.
        have: usize,
    },
    /// A short-vec length that is not canonical or overflows.
    #[error("{field} at offset {offset}: bad short-vec length ({problem})")]
    BadLength {
        /// The sequence.
        field: &'static str,
        /// Where the length starts.
        offset: usize,
        /// What is wrong.
        problem: CompactProblem,
    },
    /// A versioned message of a version other than 0.
    #[error("message version {version} is not supported (legacy and v0 are)")]
    UnsupportedVersion {
        /// The version read from the prefix byte.
        version: u8,
    },
    /// The header's counts do not fit the account keys.
    #[error("bad message header: {detail}")]
    BadHeader {
        /// What is inconsistent.
        detail: String,
    },
    /// The same account key appears twice.
    #[error("account key {key} appears twice (indexes {first} and {second})")]
    DuplicateAccount {
        /// The key.
        key: NodeId,
        /// Its first index.
        first: usize,
        /// Its second index.
        second: usize,
    },
    /// An instruction names a program that is not a static account key, or
    /// the fee payer.
    #[error("instruction {instruction}: program index {index} is not a program account")]
    BadProgramIndex {
        /// The instruction.
        instruction: usize,
        /// The index read.
        index: u8,
    },
    /// An instruction names an account beyond the message's accounts.
    #[error(
        "instruction {instruction}: account index {index} is out of range ({accounts} accounts)"
    )]
    BadAccountIndex {
        /// The instruction.
        instruction: usize,
        /// The index read.
        index: u8,
        /// Accounts the message has (static and looked up).
        accounts: usize,
    },
    /// Bytes after the complete message.
    #[error("{count} trailing bytes after the message at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// No instruction of the message casts a vote.
    #[error("the message casts no vote (no vote program instruction that votes)")]
    NoVote,
    /// More than one instruction casts a vote.
    #[error("instructions {first} and {second} both cast a vote; a vote message casts one")]
    SeveralVotes {
        /// The first.
        first: usize,
        /// The second.
        second: usize,
    },
    /// A vote program instruction that does not vote (a withdrawal, an
    /// authorization, ...): never signed by a vote guard.
    #[error(
        "instruction {instruction} is vote program instruction {tag}, which does not cast a vote"
    )]
    NotAVote {
        /// The instruction.
        instruction: usize,
        /// Its tag (`u32::MAX` when its data is shorter than a tag).
        tag: u32,
    },
    /// The vote instruction has another number of accounts than its kind.
    #[error("vote instruction {instruction} ({kind:?}) has {found} accounts, expected {expected}")]
    VoteAccounts {
        /// The instruction.
        instruction: usize,
        /// Its kind.
        kind: VoteKind,
        /// Accounts it should name.
        expected: usize,
        /// Accounts it names.
        found: usize,
    },
    /// An account of the vote instruction comes from an address-table
    /// lookup: what it is cannot be known from the message.
    #[error(
        "vote instruction {instruction}: account {position} is loaded from an address lookup \
         table and cannot be checked; vote with a legacy message or static keys"
    )]
    LookupTableAccount {
        /// The instruction.
        instruction: usize,
        /// The position among the instruction's accounts.
        position: usize,
    },
    /// A `Vote`/`VoteSwitch` instruction without the SlotHashes or Clock
    /// sysvar where the vote program expects it.
    #[error("vote instruction {instruction}: account {position} is {found}, expected the {expected} sysvar")]
    WrongSysvar {
        /// The instruction.
        instruction: usize,
        /// The position among its accounts.
        position: usize,
        /// What is there.
        found: NodeId,
        /// Which sysvar belongs there.
        expected: &'static str,
    },
    /// The vote account is not writable in the message.
    #[error("vote account {account} is not writable in the message")]
    VoteAccountReadonly {
        /// The vote account.
        account: NodeId,
    },
    /// The vote's authority is not a required signer of the message.
    #[error("vote authority {authority} is not a required signer of the message")]
    AuthorityNotSigner {
        /// The authority.
        authority: NodeId,
    },
    /// The vote instruction's data does not decode.
    #[error("vote instruction {instruction} data: {source}")]
    VoteData {
        /// The instruction.
        instruction: usize,
        /// What is wrong, offsets from the start of the instruction data.
        source: AgaveError,
    },
    /// Bytes after the vote instruction's data (the chain ignores them; a
    /// guard signs only what it understood).
    #[error("vote instruction {instruction}: {count} trailing bytes after the vote data")]
    TrailingVoteData {
        /// The instruction.
        instruction: usize,
        /// How many.
        count: usize,
    },
    /// The vote is not one Agave's tower could have cast.
    #[error("vote instruction {instruction}: {detail}")]
    ImpossibleVote {
        /// The instruction.
        instruction: usize,
        /// What is impossible.
        detail: String,
    },
}

/// A bounds-checked cursor with message offsets in its errors.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], VoteTxError> {
        let have = self.remaining();
        if n > have {
            return Err(VoteTxError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                have,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, VoteTxError> {
        Ok(self.take(1, field)?[0])
    }

    fn key(&mut self, field: &'static str) -> Result<NodeId, VoteTxError> {
        let bytes = self.take(KEY_LEN, field)?;
        Ok(NodeId(bytes.try_into().expect("take returns 32 bytes")))
    }

    /// A short-vec length, checked against the bytes that remain at
    /// `min_element` bytes per element before anything is allocated.
    fn len(&mut self, field: &'static str, min_element: usize) -> Result<usize, VoteTxError> {
        let offset = self.pos;
        let (len, used) = crate::agave::decode_short_u16(&self.bytes[self.pos..]).map_err(
            |problem| match problem {
                CompactProblem::Truncated => VoteTxError::Truncated {
                    field,
                    offset,
                    needed: self.remaining() + 1,
                    have: self.remaining(),
                },
                problem => VoteTxError::BadLength {
                    field,
                    offset,
                    problem,
                },
            },
        )?;
        self.pos += used;
        let len = usize::from(len);
        let needed = len * min_element;
        if needed > self.remaining() {
            return Err(VoteTxError::Truncated {
                field,
                offset: self.pos,
                needed,
                have: self.remaining(),
            });
        }
        Ok(len)
    }

    /// A short-vec of bytes.
    fn byte_vec(&mut self, field: &'static str) -> Result<&'a [u8], VoteTxError> {
        let len = self.len(field, 1)?;
        self.take(len, field)
    }
}

/// One instruction as written: indexes and data, not yet resolved.
struct RawInstruction<'a> {
    program: u8,
    accounts: &'a [u8],
    data: &'a [u8],
}

fn decode(bytes: &[u8]) -> Result<VoteMessage, VoteTxError> {
    if bytes.is_empty() {
        return Err(VoteTxError::Empty);
    }
    let mut c = Cursor { bytes, pos: 0 };
    let version = if bytes[0] & 0x80 != 0 {
        let version = c.u8("version prefix")? & 0x7f;
        if version != 0 {
            return Err(VoteTxError::UnsupportedVersion { version });
        }
        MessageVersion::V0
    } else {
        MessageVersion::Legacy
    };
    let required = usize::from(c.u8("header.num_required_signatures")?);
    let readonly_signed = usize::from(c.u8("header.num_readonly_signed_accounts")?);
    let readonly_unsigned = usize::from(c.u8("header.num_readonly_unsigned_accounts")?);
    let key_count = c.len("account_keys", KEY_LEN)?;
    let mut keys = Vec::with_capacity(key_count);
    for _ in 0..key_count {
        keys.push(c.key("account_keys")?);
    }
    let recent_blockhash = c
        .take(32, "recent_blockhash")?
        .try_into()
        .expect("take returns 32 bytes");
    // At least a program index and two empty short-vecs each.
    let instruction_count = c.len("instructions", 3)?;
    let mut raw = Vec::with_capacity(instruction_count);
    for _ in 0..instruction_count {
        raw.push(RawInstruction {
            program: c.u8("instruction.program_id_index")?,
            accounts: c.byte_vec("instruction.accounts")?,
            data: c.byte_vec("instruction.data")?,
        });
    }
    let mut looked_up = 0usize;
    if version == MessageVersion::V0 {
        let tables = c.len("address_table_lookups", KEY_LEN + 2)?;
        for _ in 0..tables {
            c.key("address_table_lookup.account_key")?;
            looked_up += c.byte_vec("address_table_lookup.writable_indexes")?.len();
            looked_up += c.byte_vec("address_table_lookup.readonly_indexes")?.len();
        }
    }
    if c.remaining() != 0 {
        return Err(VoteTxError::TrailingBytes {
            offset: c.pos,
            count: c.remaining(),
        });
    }

    check_header(
        required,
        readonly_signed,
        readonly_unsigned,
        &keys,
        looked_up,
    )?;
    let total = keys.len() + looked_up;
    let writable = |index: usize| {
        if index < required {
            index < required - readonly_signed
        } else {
            index < keys.len() - readonly_unsigned
        }
    };

    let mut vote: Option<(usize, CastVote)> = None;
    let mut other_programs = Vec::new();
    for (instruction, ix) in raw.iter().enumerate() {
        let program_index = usize::from(ix.program);
        if program_index == 0 || program_index >= keys.len() {
            return Err(VoteTxError::BadProgramIndex {
                instruction,
                index: ix.program,
            });
        }
        if let Some(&index) = ix.accounts.iter().find(|&&a| usize::from(a) >= total) {
            return Err(VoteTxError::BadAccountIndex {
                instruction,
                index,
                accounts: total,
            });
        }
        let program = keys[program_index];
        if program != VOTE_PROGRAM_ID {
            other_programs.push(program);
            continue;
        }
        let cast = decode_vote(instruction, ix, &keys, required, writable)?;
        if let Some((first, _)) = vote {
            return Err(VoteTxError::SeveralVotes {
                first,
                second: instruction,
            });
        }
        vote = Some((instruction, cast));
    }
    let (vote_index, vote) = vote.ok_or(VoteTxError::NoVote)?;
    Ok(VoteMessage {
        version,
        signers: keys[..required].to_vec(),
        recent_blockhash,
        vote,
        vote_index,
        other_programs,
    })
}

fn check_header(
    required: usize,
    readonly_signed: usize,
    readonly_unsigned: usize,
    keys: &[NodeId],
    looked_up: usize,
) -> Result<(), VoteTxError> {
    let bad = |detail: String| Err(VoteTxError::BadHeader { detail });
    if required == 0 {
        return bad("no required signature (a message needs a fee payer)".into());
    }
    if readonly_signed >= required {
        return bad(format!(
            "{readonly_signed} read-only signers of {required}: the fee payer must be writable"
        ));
    }
    if keys.len() < required {
        return bad(format!(
            "{required} required signatures but only {} account keys",
            keys.len()
        ));
    }
    if readonly_unsigned > keys.len() - required {
        return bad(format!(
            "{readonly_unsigned} read-only unsigned accounts but only {} unsigned keys",
            keys.len() - required
        ));
    }
    if keys.len() + looked_up > MAX_ACCOUNTS {
        return bad(format!(
            "{} accounts exceed the {MAX_ACCOUNTS} one-byte indexes can name",
            keys.len() + looked_up
        ));
    }
    for (second, key) in keys.iter().enumerate() {
        if let Some(first) = keys[..second].iter().position(|k| k == key) {
            return Err(VoteTxError::DuplicateAccount {
                key: *key,
                first,
                second,
            });
        }
    }
    Ok(())
}

fn decode_vote(
    instruction: usize,
    ix: &RawInstruction<'_>,
    keys: &[NodeId],
    required: usize,
    writable: impl Fn(usize) -> bool,
) -> Result<CastVote, VoteTxError> {
    let tag = ix
        .data
        .get(..4)
        .map(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")));
    let kind = tag
        .and_then(VoteKind::from_tag)
        .ok_or(VoteTxError::NotAVote {
            instruction,
            tag: tag.unwrap_or(u32::MAX),
        })?;
    let expected = kind.account_count();
    if ix.accounts.len() != expected {
        return Err(VoteTxError::VoteAccounts {
            instruction,
            kind,
            expected,
            found: ix.accounts.len(),
        });
    }
    let mut accounts = Vec::with_capacity(expected);
    for (position, &index) in ix.accounts.iter().enumerate() {
        let index = usize::from(index);
        let key = keys.get(index).ok_or(VoteTxError::LookupTableAccount {
            instruction,
            position,
        })?;
        accounts.push((index, *key));
    }
    if kind.is_plain() {
        for (position, id, name) in [
            (1, SLOT_HASHES_SYSVAR_ID, "SlotHashes"),
            (2, CLOCK_SYSVAR_ID, "Clock"),
        ] {
            if accounts[position].1 != id {
                return Err(VoteTxError::WrongSysvar {
                    instruction,
                    position,
                    found: accounts[position].1,
                    expected: name,
                });
            }
        }
    }
    let (vote_index, vote_account) = accounts[0];
    if !writable(vote_index) {
        return Err(VoteTxError::VoteAccountReadonly {
            account: vote_account,
        });
    }
    let (authority_index, authority) = accounts[expected - 1];
    if authority_index >= required {
        return Err(VoteTxError::AuthorityNotSigner { authority });
    }

    let (vote, rest) = crate::agave::read_vote_body(&ix.data[4..], 4, kind.last_vote_tag())
        .map_err(|source| VoteTxError::VoteData {
            instruction,
            source,
        })?;
    let (switch_proof, rest) = if kind.is_switch() {
        if rest.len() < 32 {
            return Err(VoteTxError::VoteData {
                instruction,
                source: AgaveError::Truncated {
                    field: "switch_proof_hash",
                    offset: ix.data.len() - rest.len(),
                    needed: 32,
                    have: rest.len(),
                },
            });
        }
        let (proof, rest) = rest.split_at(32);
        (Some(proof.try_into().expect("32 bytes")), rest)
    } else {
        (None, rest)
    };
    if !rest.is_empty() {
        return Err(VoteTxError::TrailingVoteData {
            instruction,
            count: rest.len(),
        });
    }
    check_shape(&vote).map_err(|detail| VoteTxError::ImpossibleVote {
        instruction,
        detail,
    })?;
    Ok(CastVote {
        kind,
        vote_account,
        authority,
        vote,
        switch_proof,
    })
}

/// The shape of a vote Agave's tower can cast (the vote program refuses
/// the others): slots strictly increasing; for a tower, at most 31
/// lockouts, confirmation counts strictly decreasing from at most 31 to at
/// least 1, and a root below the first lockout.
fn check_shape(vote: &LastVote) -> Result<(), String> {
    let increasing = |slots: &mut dyn Iterator<Item = u64>| {
        let mut previous: Option<u64> = None;
        for slot in slots {
            if previous.is_some_and(|p| p >= slot) {
                return Err(format!(
                    "slot {slot} follows slot {} (slots must strictly increase)",
                    previous.unwrap_or_default()
                ));
            }
            previous = Some(slot);
        }
        previous
            .map(|_| ())
            .ok_or("the vote holds no slot".to_string())
    };
    let (lockouts, root) = match vote {
        LastVote::Vote(v) => return increasing(&mut v.slots.iter().copied()),
        LastVote::VoteStateUpdate(u) | LastVote::CompactVoteStateUpdate(u) => (&u.lockouts, u.root),
        LastVote::TowerSync(s) => (&s.lockouts, s.root),
    };
    if lockouts.len() > MAX_LOCKOUTS {
        return Err(format!(
            "{} lockouts exceed the tower's {MAX_LOCKOUTS}",
            lockouts.len()
        ));
    }
    increasing(&mut lockouts.iter().map(|l| l.slot))?;
    let mut previous = MAX_LOCKOUTS as u32 + 1;
    for lockout in lockouts {
        let count = lockout.confirmation_count;
        if count == 0 || count >= previous {
            return Err(format!(
                "confirmation count {count} at slot {} (counts must strictly decrease from at most {MAX_LOCKOUTS} to at least 1)",
                lockout.slot
            ));
        }
        previous = count;
    }
    if let (Some(root), Some(first)) = (root, lockouts.first()) {
        if root >= first.slot {
            return Err(format!(
                "root {root} is not below the first lockout slot {}",
                first.slot
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agave::{TowerSync, Vote, VoteStateUpdate};

    fn key(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn lockouts(n: u64) -> Vec<Lockout> {
        (0..n)
            .map(|i| Lockout {
                slot: 100 + i * 3,
                confirmation_count: (n - i) as u32,
            })
            .collect()
    }

    fn tower_sync(authority: NodeId) -> CastVote {
        CastVote {
            kind: VoteKind::TowerSync,
            vote_account: key(9),
            authority,
            vote: LastVote::TowerSync(TowerSync {
                lockouts: lockouts(3),
                root: Some(90),
                hash: [7; 32],
                timestamp: Some(1_700_000_000),
                block_id: [8; 32],
            }),
            switch_proof: None,
        }
    }

    /// Every voting variant, each with the identity as authority.
    fn every_kind() -> Vec<CastVote> {
        let update = VoteStateUpdate {
            lockouts: lockouts(31),
            root: None,
            hash: [3; 32],
            timestamp: None,
        };
        let mut out = Vec::new();
        for kind in [2u32, 6, 8, 9, 12, 13, 14, 15].map(|t| VoteKind::from_tag(t).unwrap()) {
            let vote = match kind.last_vote_tag() {
                0 => LastVote::Vote(Vote {
                    slots: vec![5, 6, 9],
                    hash: [1; 32],
                    timestamp: Some(-3),
                }),
                1 => LastVote::VoteStateUpdate(update.clone()),
                2 => LastVote::CompactVoteStateUpdate(update.clone()),
                _ => tower_sync(key(1)).vote,
            };
            out.push(CastVote {
                kind,
                vote_account: key(9),
                authority: key(1),
                vote,
                switch_proof: kind.is_switch().then_some([4; 32]),
            });
        }
        out
    }

    /// The TowerSync message of formats.md section 6, byte by byte.
    #[test]
    fn hand_written_tower_sync_vector() {
        let mut m = vec![1, 0, 1]; // header: payer signs, program read-only
        m.push(3);
        m.extend_from_slice(&[1; 32]); // identity: fee payer and authority
        m.extend_from_slice(&[9; 32]); // vote account
        m.extend_from_slice(VOTE_PROGRAM_ID.as_bytes());
        m.extend_from_slice(&[0xbb; 32]); // recent blockhash
        m.extend_from_slice(&[1, 2, 2, 1, 0]); // 1 instruction, program 2, accounts [1, 0]
        let mut data = 14u32.to_le_bytes().to_vec();
        data.extend_from_slice(&90u64.to_le_bytes()); // root
        data.extend_from_slice(&[3, 10, 3, 3, 2, 3, 1]); // 100/3, 103/2, 106/1
        data.extend_from_slice(&[7; 32]);
        data.push(1);
        data.extend_from_slice(&1_700_000_000i64.to_le_bytes());
        data.extend_from_slice(&[8; 32]);
        m.push(data.len() as u8);
        m.extend_from_slice(&data);

        let msg = VoteMessage::decode(&m).unwrap();
        assert_eq!(msg.version(), MessageVersion::Legacy);
        assert_eq!(msg.signers(), &[key(1)]);
        assert_eq!(msg.recent_blockhash(), [0xbb; 32]);
        assert_eq!(msg.vote(), &tower_sync(key(1)));
        let vote = msg.vote();
        assert_eq!(
            vote.last_vote(),
            VoteRef {
                slot: 106,
                hash: [7; 32]
            }
        );
        assert_eq!(vote.root(), Some(90));
        assert_eq!(vote.slots(), vec![100, 103, 106]);
        assert_eq!(vote.timestamp(), Some(1_700_000_000));
        assert_eq!(vote.block_id(), Some([8; 32]));
        // The builder writes the same bytes.
        assert_eq!(
            tower_sync(key(1)).to_legacy_message(key(1), [0xbb; 32]),
            Ok(m)
        );
    }

    #[test]
    fn every_kind_roundtrips_with_either_authority() {
        for vote in every_kind() {
            for authority in [key(1), key(2)] {
                let vote = CastVote {
                    authority,
                    ..vote.clone()
                };
                let bytes = vote.to_legacy_message(key(1), [5; 32]).unwrap();
                let msg = VoteMessage::decode(&bytes).unwrap();
                assert_eq!(msg.vote(), &vote, "{:?}", vote.kind);
                let signers: &[NodeId] = if authority == key(1) {
                    &[key(1)]
                } else {
                    &[key(1), key(2)]
                };
                assert_eq!(msg.signers(), signers);
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for vote in every_kind() {
            let bytes = vote.to_legacy_message(key(1), [5; 32]).unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    VoteMessage::decode(&bytes[..cut]).is_err(),
                    "{:?} cut {cut}",
                    vote.kind
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(matches!(
                VoteMessage::decode(&long),
                Err(VoteTxError::TrailingBytes { count: 1, .. })
            ));
        }
    }

    /// The byte offset of the vote instruction's data length in a
    /// message built by `to_legacy_message`.
    fn data_len_at(bytes: &[u8]) -> usize {
        let keys = bytes[3] as usize;
        let accounts = bytes[4 + 32 * keys + 32 + 2] as usize;
        4 + 32 * keys + 32 + 3 + accounts
    }

    #[test]
    fn trailing_vote_data_is_refused() {
        let bytes = tower_sync(key(1))
            .to_legacy_message(key(1), [5; 32])
            .unwrap();
        let at = data_len_at(&bytes);
        let mut long = bytes.clone();
        long[at] += 1;
        long.push(0);
        assert_eq!(
            VoteMessage::decode(&long),
            Err(VoteTxError::TrailingVoteData {
                instruction: 0,
                count: 1
            })
        );
    }

    fn v0(legacy: &[u8], lookups: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = vec![0x80];
        out.extend_from_slice(legacy);
        out.push(lookups.len() as u8);
        for (k, w, r) in lookups {
            out.extend_from_slice(&[*k; 32]);
            out.push(w.len() as u8);
            out.extend_from_slice(w);
            out.push(r.len() as u8);
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn v0_static_vote_decodes_and_lookup_vote_is_refused() {
        let legacy = tower_sync(key(1))
            .to_legacy_message(key(1), [5; 32])
            .unwrap();
        let msg = VoteMessage::decode(&v0(&legacy, &[])).unwrap();
        assert_eq!(msg.version(), MessageVersion::V0);
        assert_eq!(msg.vote(), &tower_sync(key(1)));
        // Lookups present but not used by the vote: still fine.
        let msg = VoteMessage::decode(&v0(&legacy, &[(0x44, &[0], &[1])])).unwrap();
        assert_eq!(msg.vote().vote_account, key(9));
        // The vote account comes from a lookup table (index 3 = the first
        // looked-up account): refused.
        let mut looked = legacy.clone();
        let at = data_len_at(&looked) - 2; // accounts [1, 0]
        looked[at] = 3;
        assert_eq!(
            VoteMessage::decode(&v0(&looked, &[(0x44, &[0], &[])])),
            Err(VoteTxError::LookupTableAccount {
                instruction: 0,
                position: 0
            })
        );
        // Without the table the index is out of range.
        assert!(matches!(
            VoteMessage::decode(&v0(&looked, &[])),
            Err(VoteTxError::BadAccountIndex { index: 3, .. })
        ));
        // Other versions.
        let mut v1 = v0(&legacy, &[]);
        v1[0] = 0x81;
        assert_eq!(
            VoteMessage::decode(&v1),
            Err(VoteTxError::UnsupportedVersion { version: 1 })
        );
        // Truncation of a v0 message at every offset.
        let full = v0(&legacy, &[(0x44, &[0, 1], &[2])]);
        for cut in 0..full.len() {
            assert!(VoteMessage::decode(&full[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn structural_refusals() {
        let good = tower_sync(key(1))
            .to_legacy_message(key(1), [5; 32])
            .unwrap();
        let ix = data_len_at(&good) - 5; // instruction count byte
                                         // Two vote instructions.
        let mut two = good[..ix].to_vec();
        two.push(2);
        let one = &good[ix + 1..];
        two.extend_from_slice(one);
        two.extend_from_slice(one);
        assert_eq!(
            VoteMessage::decode(&two),
            Err(VoteTxError::SeveralVotes {
                first: 0,
                second: 1
            })
        );
        // The authority is not a signer: header says no signature at all,
        // or the authority index points at the unsigned vote account.
        let mut unsigned = good.clone();
        unsigned[data_len_at(&good) - 1] = 1; // accounts [1, 1]
        assert!(matches!(
            VoteMessage::decode(&unsigned),
            Err(VoteTxError::AuthorityNotSigner { .. })
        ));
        let mut zero = good.clone();
        zero[0] = 0;
        assert!(matches!(
            VoteMessage::decode(&zero),
            Err(VoteTxError::BadHeader { .. })
        ));
        // A withdrawal (tag 3) is not a vote.
        let mut withdraw = good.clone();
        withdraw[data_len_at(&good) + 1] = 3;
        assert_eq!(
            VoteMessage::decode(&withdraw),
            Err(VoteTxError::NotAVote {
                instruction: 0,
                tag: 3
            })
        );
        // Another program: no vote at all.
        let mut other = good.clone();
        other[4 + 64..4 + 96].copy_from_slice(&[0x33; 32]);
        assert_eq!(VoteMessage::decode(&other), Err(VoteTxError::NoVote));
        // Duplicate keys.
        let mut dup = good.clone();
        dup[4 + 32..4 + 64].copy_from_slice(&[1; 32]);
        assert!(matches!(
            VoteMessage::decode(&dup),
            Err(VoteTxError::DuplicateAccount { .. })
        ));
        // A non-canonical short-vec length.
        let mut alias = good[..3].to_vec();
        alias.extend_from_slice(&[0x83, 0x00]);
        alias.extend_from_slice(&good[4..]);
        assert!(matches!(
            VoteMessage::decode(&alias),
            Err(VoteTxError::BadLength { .. })
        ));
        // The program may not be the fee payer.
        let mut payer_program = good.clone();
        payer_program[ix + 1] = 0;
        assert!(matches!(
            VoteMessage::decode(&payer_program),
            Err(VoteTxError::BadProgramIndex { index: 0, .. })
        ));
    }

    #[test]
    fn impossible_towers_are_refused() {
        let bad = [
            lockouts(32),
            vec![
                Lockout {
                    slot: 5,
                    confirmation_count: 2,
                },
                Lockout {
                    slot: 5,
                    confirmation_count: 1,
                },
            ],
            vec![
                Lockout {
                    slot: 5,
                    confirmation_count: 1,
                },
                Lockout {
                    slot: 6,
                    confirmation_count: 1,
                },
            ],
            vec![Lockout {
                slot: 5,
                confirmation_count: 0,
            }],
            vec![Lockout {
                slot: 5,
                confirmation_count: 32,
            }],
            vec![],
        ];
        for lockouts in bad {
            let mut vote = tower_sync(key(1));
            if let LastVote::TowerSync(s) = &mut vote.vote {
                s.root = None;
                s.lockouts = lockouts;
            }
            let bytes = vote.to_legacy_message(key(1), [5; 32]).unwrap();
            assert!(matches!(
                VoteMessage::decode(&bytes),
                Err(VoteTxError::ImpossibleVote { .. })
            ));
        }
        let mut vote = tower_sync(key(1));
        if let LastVote::TowerSync(s) = &mut vote.vote {
            s.root = Some(100);
        }
        // The compact form cannot even express a root above the first
        // lockout; at the first lockout it is refused by shape.
        let bytes = vote.to_legacy_message(key(1), [5; 32]).unwrap();
        assert!(matches!(
            VoteMessage::decode(&bytes),
            Err(VoteTxError::ImpossibleVote { .. })
        ));
        // A plain vote's slots must increase.
        let mut plain = every_kind()[0].clone();
        plain.vote = LastVote::Vote(Vote {
            slots: vec![6, 5],
            hash: [0; 32],
            timestamp: None,
        });
        let bytes = plain.to_legacy_message(key(1), [5; 32]).unwrap();
        assert!(matches!(
            VoteMessage::decode(&bytes),
            Err(VoteTxError::ImpossibleVote { .. })
        ));
    }

    #[test]
    fn plain_vote_needs_its_sysvars() {
        let plain = every_kind()[0].clone();
        let good = plain.to_legacy_message(key(1), [5; 32]).unwrap();
        // Keys: payer, vote account, SlotHashes, Clock, program.
        let mut swapped = good.clone();
        swapped[4 + 64..4 + 96].copy_from_slice(CLOCK_SYSVAR_ID.as_bytes());
        swapped[4 + 96..4 + 128].copy_from_slice(SLOT_HASHES_SYSVAR_ID.as_bytes());
        assert!(matches!(
            VoteMessage::decode(&swapped),
            Err(VoteTxError::WrongSysvar {
                position: 1,
                expected: "SlotHashes",
                ..
            })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let seed = tower_sync(key(2))
            .to_legacy_message(key(1), [5; 32])
            .unwrap();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = seed.clone();
            let at = (x % b.len() as u64) as usize;
            b[at] = (x >> 32) as u8;
            if x & 1 == 0 {
                b.truncate(((x >> 8) % (b.len() as u64 + 1)) as usize);
            }
            let _ = VoteMessage::decode(&b);
        }
    }
}
