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
//!
//! or with the identity and the vote history in etcd, with the seed's
//! flags (the crash then waits for the dead owner's lease to expire):
//!
//! ```text
//! cargo run --features alpenglow,etcd --example alpenglow_failover -- \
//!   --etcd 127.0.0.1:2379 [--etcd-cacert-file certs/etcd-ca.pem \
//!   --etcd-cert-file certs/validator.pem --etcd-key-file certs/validator-key.pem \
//!   [--etcd-domain localhost]] [--lease-ttl 2]
//! ```

use std::path::PathBuf;
use std::time::Duration;

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

type Guard = AlpenglowGuard<Box<dyn HistoryStorage>>;

struct Instance {
    name: &'static str,
    ownership: Ownership,
    policy: Box<dyn FailoverPolicy>,
    guard: Guard,
}

/// How an instance gets the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Take it now (first start, or `set-identity`).
    TakeOver,
    /// Wait until the owner is gone (after a crash).
    WhenFree,
}

/// The shared backend: one host with a file lock, or etcd.
enum Site {
    Local(PathBuf),
    #[cfg(feature = "etcd")]
    Etcd {
        client: Box<slashguard::etcd::EtcdClient>,
        ttl: Duration,
    },
}

impl Site {
    /// Acquire the identity as `name`, open its vote history under that
    /// ownership and put the guard on it.
    async fn take(
        &self,
        node: NodeId,
        name: &'static str,
        how: How,
        registered: &PublicKey,
    ) -> Result<Instance, slashguard::Error> {
        let (policy, ownership, store): (
            Box<dyn FailoverPolicy>,
            Ownership,
            Box<dyn HistoryStorage>,
        ) = match self {
            Site::Local(dir) => {
                let takeover = match how {
                    How::TakeOver => Takeover::RequestHandover,
                    How::WhenFree => Takeover::WaitForRelease,
                };
                let policy = LocalLockPolicy::for_tower(dir, node, name)
                    .with_takeover(takeover)
                    .with_timeout(Duration::from_secs(60));
                let ownership = policy.acquire().await?;
                let store = FileVoteHistory::open_owned(dir, node, &ownership)?;
                (Box::new(policy), ownership, Box::new(store))
            }
            #[cfg(feature = "etcd")]
            Site::Etcd { client, ttl } => {
                use slashguard::etcd::{
                    AcquireMode, EtcdFailover, EtcdIdentity, EtcdVoteHistory, OwnershipOptions,
                };
                let options = OwnershipOptions::new(name)
                    .lease_ttl(*ttl)
                    .poll_interval(Duration::from_millis(25));
                let id = EtcdIdentity::new((**client).clone(), node, options)?;
                let mode = match how {
                    How::TakeOver => AcquireMode::TakeOver,
                    How::WhenFree => AcquireMode::WhenFree(Duration::from_secs(60)),
                };
                let policy = EtcdFailover::new(id.clone(), mode);
                let ownership = policy.acquire().await?;
                let store = EtcdVoteHistory::open(&id, &ownership).await?;
                (Box::new(policy), ownership, Box::new(store))
            }
        };
        // The voter keypair would come from --authorized-voter; the
        // registered key from the vote account.
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

#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[cfg(not(feature = "etcd"))]
async fn etcd_site() -> Result<Site, slashguard::Error> {
    eprintln!(
        "--etcd needs the `etcd` feature:\n  \
         cargo run --features alpenglow,etcd --example alpenglow_failover -- --etcd 127.0.0.1:2379"
    );
    std::process::exit(2);
}

#[cfg(feature = "etcd")]
async fn etcd_site() -> Result<Site, slashguard::Error> {
    use slashguard::etcd::{EtcdClient, EtcdConfig};
    let config_err = |e: &dyn std::fmt::Display| slashguard::Error::Config(e.to_string());
    let endpoints: Vec<String> = arg("--etcd")
        .map(|e| e.split(',').map(String::from).collect())
        .unwrap_or_default();
    let ttl = Duration::from_secs(
        arg("--lease-ttl")
            .map(|s| s.parse::<u64>())
            .transpose()
            .map_err(|e| config_err(&e))?
            .unwrap_or(2),
    );
    // A fresh prefix per run: a rerun starts without a history.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("/slashguard-alpenglow-demo/{ms}");
    let mut config = EtcdConfig::builder(endpoints.clone()).key_prefix(prefix.clone());
    if let Some(ca) = arg("--etcd-cacert-file") {
        config = config.ca_file(ca);
    }
    match (arg("--etcd-cert-file"), arg("--etcd-key-file")) {
        (Some(cert), Some(key)) => config = config.client_cert(cert, key),
        (None, None) => {}
        _ => {
            return Err(config_err(
                &"--etcd-cert-file and --etcd-key-file go together",
            ))
        }
    }
    if let Some(domain) = arg("--etcd-domain") {
        config = config.tls_domain(domain);
    }
    let config = config.build()?;
    let client = EtcdClient::connect(config).await?;
    println!("etcd {endpoints:?}, keys under {prefix}, lease TTL {ttl:?}");
    Ok(Site::Etcd {
        client: Box::new(client),
        ttl,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slashguard::Error> {
    let dir = tempfile::tempdir().map_err(|e| slashguard::Error::Config(e.to_string()))?;
    let site = if std::env::args().any(|a| a == "--etcd") {
        etcd_site().await?
    } else {
        Site::Local(dir.path().to_path_buf())
    };
    let node = NodeKeypair::generate().node_id();
    let registered = derive_voter_key(&NodeKeypair::from_seed(VOTER_SEED))
        .map_err(|e| slashguard::Error::Config(e.to_string()))?
        .public_key();
    let mut sent: Vec<(String, Vote, slashguard::bls::Signature)> = Vec::new();
    let mut refused = 0;

    // 0. The operator creates the (empty) store once; every instance after
    // opens it, so a history file that went missing is refused, never
    // read as "never voted".
    if let Site::Local(dir) = &site {
        drop(FileVoteHistory::create(dir, node)?);
    }
    // 1. The primary.
    let mut active = site
        .take(node, "primary", How::TakeOver, &registered)
        .await?;
    active.guard.start_history(SHRED_VERSION, 100).await?;
    println!(
        "primary owns {node} (fence {}), history rooted at 100",
        active.ownership.fence()
    );
    for slot in 100..124u64 {
        if slot == 108 {
            // 2. set-identity on the spare.
            let old = active;
            let (spare, reason) = tokio::join!(
                site.take(node, "spare", How::TakeOver, &registered),
                async {
                    let reason = old.ownership.lost().await;
                    let Instance {
                        ownership,
                        policy,
                        guard,
                        ..
                    } = old;
                    drop(guard);
                    // On etcd the identity is already the spare's:
                    // releasing a lost ownership has nothing left to do.
                    let _ = policy.release(ownership).await;
                    reason
                }
            );
            active = spare?;
            println!("handover at slot {slot}: primary stepped down ({reason})");
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
            let crashed = std::time::Instant::now();
            drop(active);
            active = site
                .take(node, "primary", How::WhenFree, &registered)
                .await?;
            println!(
                "primary took the identity back {:?} after the crash",
                crashed.elapsed()
            );
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
