//! The embedded default in one page: a Solana validator loop that stores its
//! tower before every vote, and a Tezos baker that advances its watermark
//! before every signature, both on the file backends. It prints what it did
//! and what it refused.
//!
//! Run: `cargo run --example quickstart`

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
use slashguard::{Ed25519Signer, GuardedSigner, NodeKeypair};

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
    println!("\nvalidator {}", identity.node_id());
    let storage = FileTowerStorage::create(dir.path(), identity.node_id())?;
    let validator = VoteGuard::new(storage, identity)?;
    for slot in 100..105u64 {
        let update = TowerUpdate {
            vote: VoteRef {
                slot,
                hash: [slot as u8; 32],
            },
            root: slot.checked_sub(32),
            tower: vec![0u8; 2048],
        };
        let signed = validator
            .vote(update, format!("vote {slot}").as_bytes())
            .await?;
        println!(
            "  slot {slot}: tower durable (sequence {}), vote signed",
            signed.receipt().sequence
        );
    }
    let stale = TowerUpdate {
        vote: VoteRef {
            slot: 103,
            hash: [103; 32],
        },
        root: None,
        tower: vec![],
    };
    match validator.vote(stale, b"replayed vote").await {
        Err(e) => println!("  slot 103 again: REFUSED ({e})"),
        Ok(_) => unreachable!("a regressing tower must be refused"),
    }
    let fork = TowerUpdate {
        vote: VoteRef {
            slot: 104,
            hash: [0xEE; 32],
        },
        root: Some(72),
        tower: vec![],
    };
    match validator.vote(fork, b"vote for another fork").await {
        Err(e) => println!("  slot 104 other hash: REFUSED ({e})"),
        Ok(_) => unreachable!("a second hash at one slot must be refused"),
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
