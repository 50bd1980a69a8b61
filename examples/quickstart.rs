//! The embedded default in one page: a Solana validator loop that stores its
//! tower before every vote, and a Tezos baker that advances its watermark
//! before every signature, both on the file backends. It prints what it did
//! and what it refused.
//!
//! Run: `cargo run --example quickstart`

use slashguard::agave::{LastVote, Lockout, TowerSync};
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::vote_tx::{CastVote, VoteKind};
use slashguard::tower::VoteGuard;
use slashguard::{Ed25519Signer, GuardedSigner, NodeId, NodeKeypair};

fn attestation(level: u32, round: u32, branch: u8) -> Vec<u8> {
    // magic, chain id, branch(32), op tag, slot(2), level, round, payload hash(32)
    let mut b = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
    b.extend_from_slice(&[branch; 32]);
    b.push(21);
    b.extend_from_slice(&[0, 7]);
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&round.to_be_bytes());
    b.extend_from_slice(&[0xAA; 32]);
    b
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slashguard::Error> {
    let dir = tempfile::tempdir().map_err(|e| slashguard::Error::Config(e.to_string()))?;
    println!("state directory: {}", dir.path().display());

    // --- Solana: write tower before vote -------------------------------
    let identity = NodeKeypair::generate();
    let node = identity.node_id();
    let vote_account = NodeId([0x5a; 32]);
    println!("\nvalidator {node}, vote account {vote_account}");
    let storage = FileTowerStorage::create(dir.path(), node)?;
    let validator = VoteGuard::new(storage, identity)?.with_vote_account(vote_account);
    // The TowerSync vote transaction a validator sends for `slot` (its
    // message: what the identity signs). The guard reads the tower from it.
    let vote_message = |slot: u64, hash: [u8; 32], account: NodeId| {
        // The last three slots, the oldest with the most confirmations.
        let lockouts = (0..3u64)
            .map(|i| Lockout {
                slot: slot - 2 + i,
                confirmation_count: 3 - i as u32,
            })
            .collect();
        let sync = TowerSync {
            lockouts,
            root: Some(slot - 32),
            hash,
            timestamp: None,
            block_id: [7; 32],
        };
        let vote = CastVote {
            kind: VoteKind::TowerSync,
            vote_account: account,
            authority: node,
            vote: LastVote::TowerSync(sync),
            switch_proof: None,
        };
        vote.to_legacy_message(node, [0xb1; 32])
            .expect("a valid tower encodes")
    };
    for slot in 100..105u64 {
        let message = vote_message(slot, [slot as u8; 32], vote_account);
        let signed = validator.sign_vote_message(&message).await?;
        println!(
            "  slot {slot}: tower durable (sequence {}), vote signed",
            signed.receipt().sequence
        );
    }
    let refusals = [
        ("slot 103 again", vote_message(103, [103; 32], vote_account)),
        (
            "slot 104 other hash",
            vote_message(104, [0xEE; 32], vote_account),
        ),
        (
            "slot 105, another vote account",
            vote_message(105, [105; 32], NodeId([1; 32])),
        ),
    ];
    for (what, message) in refusals {
        match validator.sign_vote_message(&message).await {
            Err(e) => println!("  {what}: REFUSED ({e})"),
            Ok(_) => unreachable!("{what} must be refused"),
        }
    }

    // --- Tezos: never sign below the high watermark ---------------------
    let baker = GuardedSigner::new(
        FileWatermarks::create(dir.path().join("watermarks"))?,
        Ed25519Signer::generate(),
    );
    println!("\nbaker {}", baker.key_hash());
    for (level, round, branch) in [
        (5000, 0, 1),
        (5000, 1, 1),
        (5001, 0, 1),
        (5001, 0, 1),
        (5001, 0, 2),
        (5000, 3, 1),
    ] {
        match baker.sign(&attestation(level, round, branch)).await {
            Ok(s) => println!(
                "  attestation level {level} round {round}: signed ({:?})",
                s.decision
            ),
            Err(e) => println!("  attestation level {level} round {round}: REFUSED ({e})"),
        }
    }
    Ok(())
}
