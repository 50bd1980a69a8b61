//! Solana Alpenglow failover on one host (the embedded default: a file
//! lock and one durable vote history file, no server): a primary and a hot
//! spare share one identity and its BLS vote key, and the vote history is
//! written before every vote.
//!
//! Timeline (slots are events, not wall time):
//! 1. the primary owns the identity, starts the history at a finalized
//!    slot, and votes a stream of slots: notarize, skip, fallbacks,
//!    finalize, several votes per event in one durable step;
//! 2. manual handover at slot 8 (`set-identity` on the spare): the primary
//!    is told, stops before its next vote and releases; the spare loads
//!    the history (no file is copied) and votes on. It saw another block
//!    for the primary's last slot: that notarize is refused;
//! 3. at slot 16 the spare records an event and crashes before signing;
//!    the primary takes back over as a standby would, and the recorded
//!    votes can only be re-signed, byte for byte;
//! 4. verdict from the votes that actually left: no slashable pair in any
//!    slot, every signature verifies under the registered key.
//!
//! ```text
//! cargo run --features alpenglow --example alpenglow_failover
//! ```

use std::path::Path;

use slashguard::alpenglow::{
    derive_voter_key, slashable_pair, AlpenglowGuard, HistoryStorage, HistoryUpdate, RuleMode,
    Vote, VoteKind,
};
use slashguard::bls::PublicKey;
use slashguard::failover::{LocalLockPolicy, Takeover};
use slashguard::file::FileVoteHistory;
use slashguard::{FailoverPolicy, NodeId, NodeKeypair, Ownership};

const SHRED_VERSION: u16 = 50093;
const VOTER_SEED: [u8; 32] = [7; 32];

struct Instance {
    name: &'static str,
    ownership: Ownership,
    policy: LocalLockPolicy,
    guard: AlpenglowGuard<FileVoteHistory>,
}

async fn take(
    dir: &Path,
    node: NodeId,
    name: &'static str,
    takeover: Takeover,
    registered: &PublicKey,
) -> Result<Instance, slashguard::Error> {
    let policy = LocalLockPolicy::for_tower(dir, node, name).with_takeover(takeover);
    let ownership = policy.acquire().await?;
    attach(dir, node, name, policy, ownership, registered)
}

/// Open the history under an ownership just acquired, and the guard on it.
fn attach(
    dir: &Path,
    node: NodeId,
    name: &'static str,
    policy: LocalLockPolicy,
    ownership: Ownership,
    registered: &PublicKey,
) -> Result<Instance, slashguard::Error> {
    let store = FileVoteHistory::open_owned(dir, node, &ownership)?;
    // The voter keypair would come from --authorized-voter; the registered
    // key from the vote account.
    let guard = AlpenglowGuard::new(
        store,
        NodeKeypair::from_seed(VOTER_SEED),
        registered,
        RuleMode::Strict,
    )?;
    Ok(Instance {
        name,
        ownership,
        policy,
        guard,
    })
}

/// The votes a node casts for `slot` as it sees it: a block id per view,
/// with skips, fallbacks and finalization mixed in.
fn event(slot: u64, view: u8) -> Vec<Vote> {
    let v = |kind| Vote {
        slot,
        kind,
        shred_version: SHRED_VERSION,
    };
    let block = [slot as u8 ^ view; 32];
    match slot % 4 {
        0 => vec![v(VoteKind::Notarize(block)), v(VoteKind::Finalize)],
        1 => vec![v(VoteKind::Skip)],
        2 => vec![
            v(VoteKind::Notarize(block)),
            v(VoteKind::NotarizeFallback([0xee; 32])),
        ],
        _ => vec![v(VoteKind::Skip), v(VoteKind::NotarizeFallback(block))],
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slashguard::Error> {
    let dir = tempfile::tempdir().map_err(|e| slashguard::Error::Config(e.to_string()))?;
    let node = NodeKeypair::generate().node_id();
    let registered = derive_voter_key(&NodeKeypair::from_seed(VOTER_SEED))
        .map_err(|e| slashguard::Error::Config(e.to_string()))?
        .public_key();
    let mut sent: Vec<(String, Vote, slashguard::bls::Signature)> = Vec::new();
    let mut refused = 0;

    // 1. The primary.
    let mut active = take(
        dir.path(),
        node,
        "primary",
        Takeover::WaitForRelease,
        &registered,
    )
    .await?;
    active.guard.start_history(SHRED_VERSION, 100).await?;
    println!(
        "primary owns {node} (fence {}), history rooted at 100",
        active.ownership.fence()
    );
    for slot in 100..124u64 {
        if slot == 108 {
            // 2. set-identity on the spare.
            let spare_policy = LocalLockPolicy::for_tower(dir.path(), node, "spare")
                .with_takeover(Takeover::RequestHandover);
            let old = active;
            let (spare, reason) = tokio::join!(spare_policy.acquire(), async {
                let reason = old.ownership.lost().await;
                let Instance {
                    ownership,
                    policy,
                    guard,
                    ..
                } = old;
                drop(guard);
                policy.release(ownership).await.map(|_| reason)
            });
            println!(
                "handover at slot {slot}: primary stepped down ({})",
                reason?
            );
            drop(spare?);
            active = take(
                dir.path(),
                node,
                "spare",
                Takeover::WaitForRelease,
                &registered,
            )
            .await?;
            // The spare saw another block for slot 106: refused.
            let other = Vote {
                slot: 106,
                kind: VoteKind::Notarize([0x99; 32]),
                shred_version: SHRED_VERSION,
            };
            match active.guard.vote(&[other], None).await {
                Err(e) if e.is_refusal() => {
                    refused += 1;
                    println!("spare: {other} refused: {e}");
                }
                other => panic!("a conflicting notarize was not refused: {other:?}"),
            }
        }
        if slot == 116 {
            // 3. The spare records an event, then dies before signing.
            let votes = event(slot, 1);
            let update = HistoryUpdate {
                votes: votes.clone(),
                finalized: None,
            };
            active
                .guard
                .storage()
                .apply(&update, RuleMode::Strict)
                .await?;
            println!("spare recorded slot {slot} and crashed before signing");
            drop(active);
            active = take(
                dir.path(),
                node,
                "primary",
                Takeover::WaitForRelease,
                &registered,
            )
            .await?;
            // The primary's own view of slot 116 differs: only what was
            // recorded can be signed.
            match active.guard.vote(&event(slot, 0), None).await {
                Err(e) if e.is_refusal() => {
                    refused += 1;
                    println!("primary: its own view of slot {slot} refused: {e}");
                }
                other => panic!("a conflicting event was not refused: {other:?}"),
            }
            for s in active.guard.vote(&votes, None).await? {
                sent.push((active.name.to_string(), s.vote(), s.signature()));
            }
            continue;
        }
        let view = if active.name == "primary" { 0 } else { 1 };
        let finalized = slot.is_multiple_of(8).then(|| slot - 4);
        match active.guard.vote(&event(slot, view), finalized).await {
            Ok(signed) => {
                for s in signed {
                    sent.push((active.name.to_string(), s.vote(), s.signature()));
                }
            }
            Err(e) if e.is_refusal() => {
                refused += 1;
                println!("{}: slot {slot} refused: {e}", active.name);
            }
            Err(e) => return Err(e),
        }
    }

    // 4. Verdict.
    let mut violations = 0;
    for (i, (_, a, sig)) in sent.iter().enumerate() {
        if !registered.verify(&a.to_bytes(), sig) {
            violations += 1;
        }
        for (_, b, _) in &sent[..i] {
            if a.slot == b.slot && slashable_pair(&a.kind, &b.kind) {
                violations += 1;
                println!("VIOLATION: {a} and {b}");
            }
        }
    }
    println!(
        "{} signatures sent, {refused} refusals, {violations} violations: {}",
        sent.len(),
        if violations == 0 { "SAFE" } else { "UNSAFE" }
    );
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
