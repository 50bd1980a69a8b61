//! Tezos baker safe failover (seed: "Safe Failover Procedure"), end to end,
//! on the embedded default: a primary and a backup baker on one host share a
//! watermark file through a file lock; then the emergency flow, where the
//! primary is unreachable and the backup has only its own store.
//!
//! Each seed step is a slashguard call; each "common mistake" is tried and
//! shown refused. The run ends with a verdict computed from the signatures
//! that actually left: no (key, kind, level, round) signed twice.
//!
//! Run: `cargo run --example tezos_failover` (add `-- --block-ms 50` to go faster).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use slashguard::failover::{BackupGuard, LocalLockPolicy, PrimaryDown, Takeover};
use slashguard::file::FileWatermarks;
use slashguard::watermark::{ChainId, SignerGuard};
use slashguard::{Ed25519Signer, FailoverPolicy, GuardedSigner, Signer};

const CHAIN: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);
const START_LEVEL: u32 = 8_000_000;

type Log = Arc<Mutex<Vec<(String, String, u8, u32, u32)>>>; // who, key, magic, level, round

#[derive(Clone)]
struct Chain {
    start: Instant,
    block: Duration,
}

impl Chain {
    fn level(&self) -> u32 {
        START_LEVEL + (self.start.elapsed().as_nanos() / self.block.as_nanos()) as u32
    }
    async fn next_level(&self) -> u32 {
        let next = self.level() + 1;
        let at = self.start + self.block * (next - START_LEVEL);
        tokio::time::sleep_until(at.into()).await;
        next
    }
    fn say(&self, who: &str, what: impl AsRef<str>) {
        println!("[level {}] {who:<8} {}", self.level(), what.as_ref());
    }
}

fn consensus_payload(magic: u8, level: u32, round: u32, who: &str) -> Vec<u8> {
    // magic, chain, branch(32), tag, slot(2), level, round, block payload hash(32)
    let mut b = vec![magic];
    b.extend_from_slice(&CHAIN.0);
    b.extend_from_slice(&[who.len() as u8; 32]);
    b.push(if magic == 0x12 { 20 } else { 21 });
    b.extend_from_slice(&[0, 1]);
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&round.to_be_bytes());
    b.extend_from_slice(&[0x5A; 32]);
    b
}

/// Bake with both aliases until `until_level`. Levels at or below the raised
/// watermark are refused by the guard and skipped, as a real baker does.
async fn bake<G: SignerGuard>(
    who: &'static str,
    chain: &Chain,
    signers: &[GuardedSigner<&G, Ed25519Signer>],
    log: &Log,
    until_level: u32,
) {
    let mut refused = 0;
    loop {
        let level = chain.next_level().await;
        if level >= until_level {
            break;
        }
        for s in signers {
            for magic in [0x12, 0x13] {
                match s.sign(&consensus_payload(magic, level, 0, who)).await {
                    Ok(_) => log.lock().unwrap().push((
                        who.into(),
                        s.key_hash().to_string(),
                        magic,
                        level,
                        0,
                    )),
                    Err(e) if e.is_refusal() => {
                        if refused == 0 {
                            chain.say(who, format!("refused (skipping until above the HWM): {e}"));
                        }
                        refused += 1;
                    }
                    Err(e) => {
                        chain.say(who, format!("signature withheld, stopping: {e}"));
                        return;
                    }
                }
            }
        }
    }
    if refused > 0 {
        chain.say(
            who,
            format!("{refused} requests refused below the HWM in all"),
        );
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let block_ms: u64 = arg("--block-ms")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("watermarks");
    let chain = Chain {
        start: Instant::now(),
        block: Duration::from_millis(block_ms),
    };
    let log: Log = Arc::default();
    let consensus_seed = [11; 32];
    let companion_seed = [12; 32];
    let keys = || {
        (
            Ed25519Signer::from_seed(consensus_seed),
            Ed25519Signer::from_seed(companion_seed),
        )
    };
    println!(
        "slashguard Tezos failover demo: chain {CHAIN}, {block_ms} ms blocks, watermarks in {}",
        path.display()
    );
    println!(
        "consensus {}  companion {}\n",
        keys().0.key_hash(),
        keys().1.key_hash()
    );

    // --- Safe failover on one host --------------------------------------
    let lock = FileWatermarks::lock_path(&path);
    let primary_policy = LocalLockPolicy::new(&lock, "primary");
    let owned = primary_policy.acquire().await?;
    let primary_store = FileWatermarks::open_owned(&path, &owned)?;
    let (c, p) = keys();
    let primary = [
        GuardedSigner::new(&primary_store, c),
        GuardedSigner::new(&primary_store, p),
    ];
    chain.say("primary", "baking");
    bake("primary", &chain, &primary, &log, chain.level() + 5).await;

    chain.say(
        "operator",
        "MISTAKE: start the backup while the primary runs",
    );
    let backup_policy =
        LocalLockPolicy::new(&lock, "backup").with_takeover(Takeover::WaitForRelease);
    match backup_policy
        .clone()
        .with_timeout(Duration::from_millis(block_ms))
        .acquire()
        .await
    {
        Err(e) => chain.say("backup", format!("REFUSED: {e}")),
        Ok(_) => panic!("two owners of one watermark file"),
    }

    chain.say(
        "operator",
        "step 2: tezbake stop on the primary (verified stopped)",
    );
    drop(primary);
    drop(primary_store);
    primary_policy.release(owned).await?;

    chain.say(
        "operator",
        "step 1/3: backup confirms the primary is down (its lock is free)",
    );
    let owned = backup_policy.acquire().await?;
    let (c, p) = keys();
    let guard = BackupGuard::new(FileWatermarks::open_owned(&path, &owned)?, CHAIN)
        .alias("consensus", c.key_hash())
        .alias("companion", p.key_hash());
    let backup = [GuardedSigner::new(&guard, c), GuardedSigner::new(&guard, p)];

    chain.say("backup", "MISTAKE: sign before raising the HWM");
    match backup[0]
        .sign(&consensus_payload(0x13, chain.level() + 1, 0, "backup"))
        .await
    {
        Err(e) => chain.say("backup", format!("REFUSED: {e}")),
        Ok(_) => panic!("signed without a raised watermark"),
    }
    let observed = chain.level();
    chain.say(
        "operator",
        format!("step 4: current block level {observed}"),
    );
    let report = guard
        .activate(PrimaryDown::Acquired(owned), observed)
        .await?;
    chain.say(
        "backup",
        format!(
        "step 5: HWM of consensus and companion raised to {} (store knew {:?}, chain {observed})",
        report.level, report.last_known_level
    ),
    );
    chain.say("backup", "step 6-7: baking");
    bake("backup", &chain, &backup, &log, report.level + 4).await;
    drop(backup);

    // --- Emergency: primary unreachable, backup on another host ---------
    println!();
    let last_signature = SystemTime::now();
    chain.say("operator", "EMERGENCY: the active baker is unreachable (fire, theft); a spare machine with an empty store takes over");
    let emergency_store = FileWatermarks::open(dir.path().join("emergency-watermarks"))?;
    let (c, p) = keys();
    let guard = BackupGuard::new(emergency_store, CHAIN)
        .alias("consensus", c.key_hash())
        .alias("companion", p.key_hash());
    let evidence = |at| PrimaryDown::OperatorAsserted {
        last_signature_at: at,
        block_time: chain.block,
        wait_blocks: 3,
    };
    chain.say("operator", "MISTAKE: rush, activate right away");
    match guard
        .activate(evidence(last_signature), chain.level())
        .await
    {
        Err(e) => chain.say("emergency", format!("REFUSED: {e}")),
        Ok(_) => panic!("activated without waiting"),
    }
    tokio::time::sleep(chain.block * 3).await;
    let observed = chain.level();
    let report = guard.activate(evidence(last_signature), observed).await?;
    chain.say(
        "emergency",
        format!(
            "waited 3 blocks; HWM raised to {} (explorer level {observed}); baking",
            report.level
        ),
    );
    let emergency = [GuardedSigner::new(&guard, c), GuardedSigner::new(&guard, p)];
    bake("emergency", &chain, &emergency, &log, report.level + 4).await;

    // --- Verdict -----------------------------------------------------------
    let log = log.lock().unwrap().clone();
    let mut seen = BTreeMap::<(String, u8, u32, u32), Vec<String>>::new();
    for (who, key, magic, level, round) in &log {
        seen.entry((key.clone(), *magic, *level, *round))
            .or_default()
            .push(who.clone());
    }
    let doubles: Vec<_> = seen.iter().filter(|(_, w)| w.len() > 1).collect();
    let by = |n: &str| log.iter().filter(|e| e.0 == n).count();
    println!(
        "\nsignatures: {} (primary {}, backup {}, emergency {})",
        log.len(),
        by("primary"),
        by("backup"),
        by("emergency")
    );
    if doubles.is_empty() {
        println!("SAFE: no (key, kind, level, round) was signed twice");
        Ok(())
    } else {
        println!("UNSAFE: signed twice: {doubles:?}");
        std::process::exit(1);
    }
}
