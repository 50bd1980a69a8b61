//! Which vote message a stored tower lets a guard sign, as a pure function:
//! the message must cast exactly the vote the tower ends with, for this
//! node's vote account, authorized by one of the guard's keys, and nothing
//! else the caller did not allow.

use crate::identity::NodeId;
use crate::tower::vote_tx::{VoteMessage, VoteTxError};
use crate::tower::VoteRef;

/// What a guard accepts besides the vote: its vote account, the keys that
/// may authorize the vote, and the programs other instructions may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteBinding {
    /// The node's vote account.
    pub vote_account: NodeId,
    /// The keys the guard signs with (the identity and, when configured,
    /// the authorized voter).
    pub authorities: Vec<NodeId>,
    /// Programs whose instructions may accompany the vote (for example the
    /// compute budget program); empty by default, as Agave's own vote
    /// transactions carry only the vote.
    pub allowed_programs: Vec<NodeId>,
}

/// Why a vote message was not signed. Nothing was signed; retrying the same
/// message is refused again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteRefusal {
    /// The message is not a vote transaction the guard can check.
    #[error("not a checkable vote message: {0}")]
    Malformed(#[from] VoteTxError),
    /// The vote is cast for another vote account.
    #[error("the message votes with vote account {found}, this node's is {expected}")]
    OtherVoteAccount {
        /// The configured vote account.
        expected: NodeId,
        /// The one in the message.
        found: NodeId,
    },
    /// The vote's authority is none of the guard's keys.
    #[error("the vote is authorized by {authority}, which is neither the identity nor the configured authorized voter")]
    UnknownAuthority {
        /// The authority in the message.
        authority: NodeId,
    },
    /// Another instruction calls a program the caller did not allow.
    #[error("instruction {instruction} calls program {program}, which is not allowed beside a vote (VoteGuard::allow_program)")]
    ProgramNotAllowed {
        /// The instruction's position.
        instruction: usize,
        /// Its program.
        program: NodeId,
    },
    /// The message votes for another last slot than the stored tower.
    #[error("the message's last vote is slot {message}, the stored tower's is slot {tower}")]
    OtherSlot {
        /// The tower's last vote slot.
        tower: u64,
        /// The message's last voted slot.
        message: u64,
    },
    /// Same slot, another bank hash: signing it would be a double vote.
    #[error(
        "the message votes slot {slot} with bank hash {message}, the stored tower with {tower}"
    )]
    OtherBankHash {
        /// The slot.
        slot: u64,
        /// The tower's hash (base58).
        tower: String,
        /// The message's hash (base58).
        message: String,
    },
    /// The message's root is ahead of (or absent from) the stored tower's.
    #[error("the message's root {message} is ahead of the stored tower's root {}", describe(.tower))]
    RootAhead {
        /// The tower's root.
        tower: Option<u64>,
        /// The message's root.
        message: u64,
    },
    /// The message votes a slot the stored tower has already rooted.
    #[error("the message votes slot {slot}, at or below the stored tower's root {root}")]
    SlotAtOrBelowRoot {
        /// The slot.
        slot: u64,
        /// The tower's root.
        root: u64,
    },
    /// The message casts a plain vote, which carries no tower to store.
    #[error(
        "a plain Vote carries no tower (lockouts and root): use VoteGuard::vote with the tower"
    )]
    NoTower,
}

fn describe(slot: &Option<u64>) -> String {
    slot.map_or_else(|| "(none)".to_string(), |s| s.to_string())
}

/// The part of the check that needs no tower: vote account, authority and
/// accompanying programs.
pub fn check_message(message: &VoteMessage, binding: &VoteBinding) -> Result<(), VoteRefusal> {
    let vote = message.vote();
    if vote.vote_account != binding.vote_account {
        return Err(VoteRefusal::OtherVoteAccount {
            expected: binding.vote_account,
            found: vote.vote_account,
        });
    }
    if !binding.authorities.contains(&vote.authority) {
        return Err(VoteRefusal::UnknownAuthority {
            authority: vote.authority,
        });
    }
    let vote_index = message.vote_instruction_index();
    for (i, program) in message.other_programs().iter().enumerate() {
        if !binding.allowed_programs.contains(program) {
            let instruction = if i < vote_index { i } else { i + 1 };
            return Err(VoteRefusal::ProgramNotAllowed {
                instruction,
                program: *program,
            });
        }
    }
    Ok(())
}

/// Decide whether `message` may be signed after the tower ending with
/// `tower_vote`, rooted at `tower_root`, was stored: [`check_message`],
/// then the message's last vote must be the tower's (slot and bank hash),
/// its root may not be ahead of the tower's, and no slot it votes may be at
/// or below the tower's root.
pub fn check_vote(
    message: &VoteMessage,
    binding: &VoteBinding,
    tower_vote: VoteRef,
    tower_root: Option<u64>,
) -> Result<(), VoteRefusal> {
    check_message(message, binding)?;
    let vote = message.vote();
    let last = vote.last_vote();
    if last.slot != tower_vote.slot {
        return Err(VoteRefusal::OtherSlot {
            tower: tower_vote.slot,
            message: last.slot,
        });
    }
    if last.hash != tower_vote.hash {
        return Err(VoteRefusal::OtherBankHash {
            slot: last.slot,
            tower: bs58::encode(tower_vote.hash).into_string(),
            message: bs58::encode(last.hash).into_string(),
        });
    }
    if let Some(root) = vote.root() {
        if tower_root.is_none_or(|t| root > t) {
            return Err(VoteRefusal::RootAhead {
                tower: tower_root,
                message: root,
            });
        }
    }
    if let Some(root) = tower_root {
        if let Some(slot) = vote.slots().into_iter().find(|&s| s <= root) {
            return Err(VoteRefusal::SlotAtOrBelowRoot { slot, root });
        }
    }
    Ok(())
}
