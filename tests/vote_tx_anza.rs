//! Vote transactions built with Anza's own crates (`solana-vote-interface`,
//! `solana-message`, `solana-pubkey`, `solana-hash`), for every voting
//! instruction, legacy and v0, with and without root and timestamp, with the
//! identity as voter and with a separate authorized voter: slashguard's
//! decoder reads what Agave writes, Anza's decoder reads what slashguard's
//! builder writes, and the guard signs each message exactly when it casts
//! the stored tower's vote.

use std::collections::VecDeque;

use slashguard::agave::{LastVote, Lockout, TowerSync, Vote, VoteStateUpdate};
use slashguard::memory::MemoryTowerStorage;
use slashguard::tower::vote_tx::{CastVote, MessageVersion, VoteKind, VoteMessage, VoteTxError};
use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef, VoteRefusal};
use slashguard::{Error, NodeId, NodeKeypair, Refusal};
use solana_hash::Hash;
use solana_message::v0;
use solana_message::{AddressLookupTableAccount, Instruction, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_vote_interface::instruction as vi;
use solana_vote_interface::instruction::VoteInstruction;
use solana_vote_interface::state as vs;

const KINDS: [VoteKind; 8] = [
    VoteKind::Vote,
    VoteKind::VoteSwitch,
    VoteKind::UpdateVoteState,
    VoteKind::UpdateVoteStateSwitch,
    VoteKind::CompactUpdateVoteState,
    VoteKind::CompactUpdateVoteStateSwitch,
    VoteKind::TowerSync,
    VoteKind::TowerSyncSwitch,
];

fn pk(id: NodeId) -> Pubkey {
    Pubkey::new_from_array(id.0)
}

fn hash(bytes: [u8; 32]) -> Hash {
    Hash::new_from_array(bytes)
}

/// One case: the tower's lockouts, root, hash, timestamp, block id.
#[derive(Clone)]
struct Case {
    kind: VoteKind,
    lockouts: Vec<(u64, u32)>,
    root: Option<u64>,
    hash: [u8; 32],
    timestamp: Option<i64>,
    block_id: [u8; 32],
    proof: [u8; 32],
}

impl Case {
    fn new(kind: VoteKind, root: Option<u64>, timestamp: Option<i64>) -> Self {
        Case {
            kind,
            lockouts: vec![(101, 4), (102, 3), (105, 2), (230, 1)],
            root,
            hash: [0xa1; 32],
            timestamp,
            block_id: [0xb1; 32],
            proof: [0xc1; 32],
        }
    }

    fn last(&self) -> VoteRef {
        VoteRef {
            slot: self.lockouts.last().unwrap().0,
            hash: self.hash,
        }
    }

    fn anza_lockouts(&self) -> VecDeque<vs::Lockout> {
        self.lockouts
            .iter()
            .map(|&(s, c)| vs::Lockout::new_with_confirmation_count(s, c))
            .collect()
    }

    /// The instruction as Agave builds it.
    fn anza_instruction(&self, vote_account: NodeId, authority: NodeId) -> Instruction {
        let (v, a) = (&pk(vote_account), &pk(authority));
        let proof = hash(self.proof);
        let vote = vs::Vote {
            slots: self.lockouts.iter().map(|l| l.0).collect(),
            hash: hash(self.hash),
            timestamp: self.timestamp,
        };
        let update = vs::VoteStateUpdate {
            lockouts: self.anza_lockouts(),
            root: self.root,
            hash: hash(self.hash),
            timestamp: self.timestamp,
        };
        let sync = vs::TowerSync {
            lockouts: self.anza_lockouts(),
            root: self.root,
            hash: hash(self.hash),
            timestamp: self.timestamp,
            block_id: hash(self.block_id),
        };
        match self.kind {
            VoteKind::Vote => vi::vote(v, a, vote),
            VoteKind::VoteSwitch => vi::vote_switch(v, a, vote, proof),
            VoteKind::UpdateVoteState => vi::update_vote_state(v, a, update),
            VoteKind::UpdateVoteStateSwitch => vi::update_vote_state_switch(v, a, update, proof),
            VoteKind::CompactUpdateVoteState => vi::compact_update_vote_state(v, a, update),
            VoteKind::CompactUpdateVoteStateSwitch => {
                vi::compact_update_vote_state_switch(v, a, update, proof)
            }
            VoteKind::TowerSync => vi::tower_sync(v, a, sync),
            VoteKind::TowerSyncSwitch => vi::tower_sync_switch(v, a, sync, proof),
        }
    }

    /// What slashguard's decoder must read from it.
    fn expected(&self, vote_account: NodeId, authority: NodeId) -> CastVote {
        let lockouts: Vec<Lockout> = self
            .lockouts
            .iter()
            .map(|&(slot, confirmation_count)| Lockout {
                slot,
                confirmation_count,
            })
            .collect();
        let update = VoteStateUpdate {
            lockouts: lockouts.clone(),
            root: self.root,
            hash: self.hash,
            timestamp: self.timestamp,
        };
        let vote = match self.kind {
            VoteKind::Vote | VoteKind::VoteSwitch => LastVote::Vote(Vote {
                slots: self.lockouts.iter().map(|l| l.0).collect(),
                hash: self.hash,
                timestamp: self.timestamp,
            }),
            VoteKind::UpdateVoteState | VoteKind::UpdateVoteStateSwitch => {
                LastVote::VoteStateUpdate(update)
            }
            VoteKind::CompactUpdateVoteState | VoteKind::CompactUpdateVoteStateSwitch => {
                LastVote::CompactVoteStateUpdate(update)
            }
            _ => LastVote::TowerSync(TowerSync {
                lockouts,
                root: self.root,
                hash: self.hash,
                timestamp: self.timestamp,
                block_id: self.block_id,
            }),
        };
        CastVote {
            kind: self.kind,
            vote_account,
            authority,
            vote,
            switch_proof: self.kind.is_switch().then_some(self.proof),
        }
    }
}

fn legacy_bytes(ix: Instruction, payer: NodeId) -> Vec<u8> {
    let mut message = solana_message::Message::new(&[ix], Some(&pk(payer)));
    message.recent_blockhash = hash([0xee; 32]);
    bincode::serialize(&VersionedMessage::Legacy(message)).unwrap()
}

fn v0_bytes(ix: Instruction, payer: NodeId, tables: &[AddressLookupTableAccount]) -> Vec<u8> {
    let message = v0::Message::try_compile(&pk(payer), &[ix], tables, hash([0xee; 32])).unwrap();
    bincode::serialize(&VersionedMessage::V0(message)).unwrap()
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for kind in KINDS {
        for root in [None, Some(100)] {
            for timestamp in [None, Some(1_750_000_123)] {
                // A plain vote has no root.
                if kind.is_plain() && root.is_some() {
                    continue;
                }
                out.push(Case::new(kind, root, timestamp));
            }
        }
    }
    out
}

#[test]
fn slashguard_reads_every_anza_vote_transaction() {
    let identity = NodeKeypair::from_seed([1; 32]).node_id();
    let voter = NodeKeypair::from_seed([2; 32]).node_id();
    let vote_account = NodeId([9; 32]);
    let mut checked = 0;
    for case in cases() {
        for authority in [identity, voter] {
            let ix = case.anza_instruction(vote_account, authority);
            let signers: Vec<NodeId> = if authority == identity {
                vec![identity]
            } else {
                vec![identity, voter]
            };
            for (version, bytes) in [
                (MessageVersion::Legacy, legacy_bytes(ix.clone(), identity)),
                (MessageVersion::V0, v0_bytes(ix.clone(), identity, &[])),
            ] {
                let decoded = VoteMessage::decode(&bytes)
                    .unwrap_or_else(|e| panic!("{:?} {version:?}: {e}", case.kind));
                assert_eq!(decoded.version(), version);
                assert_eq!(decoded.vote(), &case.expected(vote_account, authority));
                assert_eq!(decoded.signers(), &signers[..]);
                assert_eq!(decoded.recent_blockhash(), [0xee; 32]);
                assert_eq!(decoded.vote().last_vote(), case.last());
                if !case.kind.is_plain() {
                    assert_eq!(decoded.vote().root(), case.root);
                }
                assert_eq!(decoded.vote().timestamp(), case.timestamp);
                for cut in 0..bytes.len() {
                    assert!(VoteMessage::decode(&bytes[..cut]).is_err());
                }
                checked += 1;
            }
        }
    }
    // Plain votes: no root, two timestamps; the others: two roots, two timestamps.
    assert_eq!(checked, 2 * 2 * (2 * 2 + 6 * 4));
}

#[test]
fn anza_reads_what_slashguards_builder_writes() {
    let identity = NodeKeypair::from_seed([1; 32]).node_id();
    let voter = NodeKeypair::from_seed([2; 32]).node_id();
    let vote_account = NodeId([9; 32]);
    for case in cases() {
        for authority in [identity, voter] {
            let ours = case
                .expected(vote_account, authority)
                .to_legacy_message(identity, [0xee; 32])
                .unwrap();
            let VersionedMessage::Legacy(message) =
                bincode::deserialize::<VersionedMessage>(&ours).unwrap()
            else {
                panic!("not legacy");
            };
            let theirs = legacy_bytes(case.anza_instruction(vote_account, authority), identity);
            let VersionedMessage::Legacy(reference) =
                bincode::deserialize::<VersionedMessage>(&theirs).unwrap()
            else {
                panic!("not legacy");
            };
            assert_eq!(message.header, reference.header, "{:?}", case.kind);
            assert_eq!(message.signer_keys(), reference.signer_keys());
            let ix = &message.instructions[0];
            let accounts: Vec<_> = ix
                .accounts
                .iter()
                .map(|&i| message.account_keys[i as usize])
                .collect();
            let reference_ix = &reference.instructions[0];
            let reference_accounts: Vec<_> = reference_ix
                .accounts
                .iter()
                .map(|&i| reference.account_keys[i as usize])
                .collect();
            assert_eq!(accounts, reference_accounts);
            assert_eq!(ix.data, reference_ix.data, "{:?}", case.kind);
            let parsed: VoteInstruction = bincode::deserialize(&ix.data).unwrap();
            assert_eq!(
                parsed.last_voted_slot(),
                Some(case.last().slot),
                "{:?}",
                case.kind
            );
        }
    }
}

#[test]
fn a_vote_account_from_a_lookup_table_is_refused() {
    let identity = NodeKeypair::from_seed([1; 32]).node_id();
    let vote_account = NodeId([9; 32]);
    let table = AddressLookupTableAccount {
        key: Pubkey::new_from_array([0x77; 32]),
        addresses: vec![pk(vote_account)],
    };
    for kind in KINDS {
        let case = Case::new(kind, None, None);
        let bytes = v0_bytes(
            case.anza_instruction(vote_account, identity),
            identity,
            std::slice::from_ref(&table),
        );
        assert_eq!(
            VoteMessage::decode(&bytes),
            Err(VoteTxError::LookupTableAccount {
                instruction: 0,
                position: 0
            }),
            "{kind:?}"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn vote_refusal(e: Error) -> VoteRefusal {
    match e {
        Error::Refused(Refusal::Vote(r)) => r,
        other => panic!("expected a vote refusal, got {other}"),
    }
}

/// Each Anza-built message is signed exactly when it casts the stored
/// tower's vote, by exactly the guard's keys that it requires, and every
/// signature verifies over the message bytes.
#[test]
fn the_guard_signs_anza_messages_exactly_when_they_match_the_tower() {
    let rt = runtime();
    let vote_account = NodeId([9; 32]);
    for case in cases() {
        for separate_voter in [false, true] {
            for v0 in [false, true] {
                let identity = NodeKeypair::from_seed([1; 32]);
                let voter = NodeKeypair::from_seed([2; 32]);
                let (node, voter_id) = (identity.node_id(), voter.node_id());
                let authority = if separate_voter { voter_id } else { node };
                let ix = case.anza_instruction(vote_account, authority);
                let bytes = if v0 {
                    v0_bytes(ix, node, &[])
                } else {
                    legacy_bytes(ix, node)
                };
                let guard = VoteGuard::new(MemoryTowerStorage::new(node), identity)
                    .unwrap()
                    .with_authorized_voter(voter)
                    .with_vote_account(vote_account);
                let update = |vote: VoteRef, root: Option<u64>| TowerUpdate {
                    vote,
                    root,
                    tower: vec![1, 2, 3],
                };
                let last = case.last();
                let root = case.root.or(Some(100));
                rt.block_on(async {
                    // Another bank hash, another slot: refused before any store.
                    let other_hash = VoteRef {
                        hash: [0; 32],
                        ..last
                    };
                    let e = guard
                        .vote(update(other_hash, root), &bytes)
                        .await
                        .unwrap_err();
                    assert!(matches!(
                        vote_refusal(e),
                        VoteRefusal::OtherBankHash { slot: 230, .. }
                    ));
                    let other_slot = VoteRef { slot: 231, ..last };
                    let e = guard
                        .vote(update(other_slot, root), &bytes)
                        .await
                        .unwrap_err();
                    assert!(matches!(
                        vote_refusal(e),
                        VoteRefusal::OtherSlot {
                            tower: 231,
                            message: 230
                        }
                    ));
                    assert_eq!(guard.load().await.unwrap(), None);
                    // A tower rooted below the message's root: refused.
                    if let Some(r) = case.root {
                        let e = guard
                            .vote(update(last, Some(r - 1)), &bytes)
                            .await
                            .unwrap_err();
                        assert!(matches!(vote_refusal(e), VoteRefusal::RootAhead { .. }));
                    }

                    // The matching tower: stored, then signed.
                    let signed = if case.kind.is_plain() {
                        let e = guard.sign_vote_message(&bytes).await.unwrap_err();
                        assert_eq!(vote_refusal(e), VoteRefusal::NoTower);
                        guard.vote(update(last, root), &bytes).await.unwrap()
                    } else {
                        guard.sign_vote_message(&bytes).await.unwrap()
                    };
                    assert_eq!(signed.vote(), last);
                    let want: Vec<NodeId> = if separate_voter {
                        vec![node, voter_id]
                    } else {
                        vec![node]
                    };
                    let got: Vec<NodeId> = signed.signatures().iter().map(|s| s.0).collect();
                    assert_eq!(got, want);
                    for (key, signature) in signed.signatures() {
                        assert!(key.verify(&bytes, signature));
                    }
                    let stored = guard.load().await.unwrap().unwrap();
                    assert_eq!(stored.last_vote(), Some(last));
                    assert_eq!(
                        stored.released_message(),
                        Some(slashguard::tower::message_hash(&bytes))
                    );
                    // The byte-identical message again: signed again.
                    let again = guard
                        .vote(update(last, stored.root()), &bytes)
                        .await
                        .unwrap();
                    assert_eq!(again.signatures(), signed.signatures());
                });
            }
        }
    }
}
