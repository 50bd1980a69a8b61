//! Tezos baker safe failover (seed: "Safe Failover Procedure"), end to end:
//! a primary and a backup baker share their watermarks and the baker's
//! ownership; then the emergency flow, where the active baker is
//! unreachable.
//!
//! Each seed step is a slashguard call; each "common mistake" is tried and
//! shown refused. The run ends with a verdict computed from the signatures
//! that actually left: no (key, kind, level, round) signed twice.
//!
//! ```text
//! cargo run --example tezos_failover                        # one host: a watermark file and a file lock
//! cargo run --example tezos_failover -- --block-ms 50       # faster
//! cargo run --features etcd --example tezos_failover -- --etcd 127.0.0.1:2379 \
//!   [--etcd-cacert-file F --etcd-cert-file F --etcd-key-file F --etcd-domain NAME]
//! cargo run --features sim --example tezos_failover -- --device ledger    # or tezsign
//! ```
//!
//! `--etcd` shares the watermarks (`EtcdWatermarks`) and the baker's
//! ownership (`EtcdIdentity`: the backup confirms the primary is down
//! through its lease). `--device ledger|tezsign` signs with the simulated
//! devices of `slashguard::usb::sim` instead of software keys: the backup
//! device must not be authorized before activation, and activation arms
//! it with its own watermark raised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use slashguard::failover::{BackupDevice, BackupGuard, LocalLockPolicy, PrimaryDown, Takeover};
use slashguard::file::FileWatermarks;
use slashguard::watermark::{ChainId, KeyHash, SignerGuard};
use slashguard::{Ed25519Signer, Error, FailoverPolicy, GuardedSigner, Ownership, Signer};

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
        println!("[level {}] {who:<9} {}", self.level(), what.as_ref());
    }
}

/// A (pre)attestation; tz4 (BLS) keys carry no slot.
fn consensus_payload(magic: u8, level: u32, round: u32, who: &str, bls: bool) -> Vec<u8> {
    // magic, chain, branch(32), tag, [slot(2)], level, round, block payload hash(32)
    let mut b = vec![magic];
    b.extend_from_slice(&CHAIN.0);
    b.extend_from_slice(&[who.len() as u8; 32]);
    b.push(if magic == 0x12 { 20 } else { 21 });
    if !bls {
        b.extend_from_slice(&[0, 1]);
    }
    b.extend_from_slice(&level.to_be_bytes());
    b.extend_from_slice(&round.to_be_bytes());
    b.extend_from_slice(&[0x5A; 32]);
    b
}

/// Any signer, software or device, behind one type.
struct DynSigner(Box<dyn Signer>);

#[async_trait]
impl Signer for DynSigner {
    fn key_hash(&self) -> KeyHash {
        self.0.key_hash()
    }
    async fn sign(&self, payload: &[u8]) -> slashguard::Result<Vec<u8>> {
        self.0.sign(payload).await
    }
    fn check(
        &self,
        request: &slashguard::watermark::SignRequest,
        payload: &[u8],
    ) -> slashguard::Result<()> {
        self.0.check(request, payload)
    }
}

/// An alias, its signer, and its device if it has one.
type Alias = (&'static str, DynSigner, Option<Box<dyn BackupDevice>>);

/// A baker's keys.
struct Keys {
    bls: bool,
    aliases: Vec<Alias>,
    /// The operator's handle on a Ledger (to deauthorize it).
    #[cfg(feature = "sim")]
    ledger: Option<slashguard::usb::LedgerSigner>,
}

impl Keys {
    fn software() -> Keys {
        Keys {
            #[cfg(feature = "sim")]
            ledger: None,
            bls: false,
            aliases: vec![
                (
                    "consensus",
                    DynSigner(Box::new(Ed25519Signer::from_seed([11; 32]))),
                    None,
                ),
                (
                    "companion",
                    DynSigner(Box::new(Ed25519Signer::from_seed([12; 32]))),
                    None,
                ),
            ],
        }
    }

    /// Register every alias with a backup guard (devices as devices).
    fn guard<G: SignerGuard>(&mut self, store: G) -> (BackupGuard<G>, Vec<DynSigner>) {
        let mut guard = BackupGuard::new(store, CHAIN);
        let mut signers = Vec::new();
        for (name, signer, device) in self.aliases.drain(..) {
            guard = match device {
                Some(d) => guard.device(name, d),
                None => guard.alias(name, signer.key_hash()),
            };
            signers.push(signer);
        }
        (guard, signers)
    }

    fn signers(self) -> Vec<DynSigner> {
        self.aliases.into_iter().map(|(_, s, _)| s).collect()
    }
}

/// Which keys: software, or one of the simulated devices.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Software,
    #[cfg(feature = "sim")]
    Ledger,
    #[cfg(feature = "sim")]
    TezSign,
}

/// A fresh set of keys for `role`: the same keys on every machine (a
/// backup Ledger restored from the same words, a cloned TezSign card).
/// `pre_authorized`: a Ledger left authorized for baking (the mistake).
async fn keys(kind: KeyKind, role: &str, pre_authorized: bool) -> Result<Keys, Error> {
    let _ = (role, pre_authorized);
    match kind {
        KeyKind::Software => Ok(Keys::software()),
        #[cfg(feature = "sim")]
        KeyKind::Ledger => {
            use slashguard::usb::ledger::{BipPath, DerivationType, LedgerHwm};
            use slashguard::usb::sim::LedgerSim;
            use slashguard::usb::{HidApdu, LedgerConfig, LedgerSigner};
            let sim = LedgerSim::new([5; 32]);
            if role == "primary" {
                sim.set_hwm(
                    CHAIN,
                    LedgerHwm::at(START_LEVEL - 1),
                    LedgerHwm::at(START_LEVEL - 1),
                );
            }
            if role == "primary" || pre_authorized {
                sim.set_baking_key(Some((DerivationType::Ed25519, BipPath::tezos_default())));
            }
            let ledger =
                LedgerSigner::connect(HidApdu::new(sim.hid()), LedgerConfig::default()).await?;
            // The simulator lives as long as its transport.
            Ok(Keys {
                bls: false,
                aliases: vec![(
                    "consensus",
                    DynSigner(Box::new(ledger.clone())),
                    (role != "primary").then(|| Box::new(ledger.clone()) as Box<dyn BackupDevice>),
                )],
                ledger: Some(ledger),
            })
        }
        #[cfg(feature = "sim")]
        KeyKind::TezSign => {
            use slashguard::usb::sim::TezSignSim;
            use slashguard::usb::TezSignDevice;
            let sim = TezSignSim::new(b"passphrase");
            sim.add_key("consensus", [1; 32]);
            sim.add_key("companion", [2; 32]);
            let device = TezSignDevice::new(sim.transport(), Duration::from_secs(3));
            device
                .unlock(&["consensus", "companion"], b"passphrase")
                .await?;
            let mut aliases = Vec::new();
            for alias in ["consensus", "companion"] {
                let s = device.signer(alias).await?;
                let as_device =
                    (role != "primary").then(|| Box::new(s.clone()) as Box<dyn BackupDevice>);
                aliases.push((alias, DynSigner(Box::new(s)), as_device));
            }
            Ok(Keys {
                bls: true,
                aliases,
                ledger: None,
            })
        }
    }
}

/// Bake until `until_level`. Levels at or below the raised watermark are
/// refused by the guard and skipped, as a real baker does.
async fn bake<G: SignerGuard>(
    who: &'static str,
    chain: &Chain,
    signers: &[GuardedSigner<G, DynSigner>],
    bls: bool,
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
                match s.sign(&consensus_payload(magic, level, 0, who, bls)).await {
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

fn args() -> Vec<String> {
    std::env::args().collect()
}

fn arg(name: &str) -> Option<String> {
    let args = args();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Where the watermarks and the ownership live.
enum Site {
    Local {
        dir: tempfile::TempDir,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        primary: slashguard::etcd::EtcdIdentity,
        backup: slashguard::etcd::EtcdIdentity,
        emergency: Box<slashguard::etcd::EtcdClient>,
    },
}

impl Site {
    fn path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("watermarks")
    }
}

#[cfg(not(feature = "etcd"))]
async fn etcd_site() -> Result<Site, Box<dyn std::error::Error>> {
    eprintln!(
        "--etcd needs the `etcd` feature; rebuild with it:\n  \
         cargo run --features etcd --example tezos_failover -- --etcd 127.0.0.1:2379"
    );
    std::process::exit(2);
}

#[cfg(feature = "etcd")]
async fn etcd_site() -> Result<Site, Box<dyn std::error::Error>> {
    use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, OwnershipOptions};
    let args = args();
    let endpoints: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--etcd")
        .filter_map(|(i, _)| args.get(i + 1))
        .flat_map(|v| v.split(',').map(String::from))
        .collect();
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = arg("--etcd-prefix").unwrap_or_else(|| format!("/slashguard-demo/{ms}"));
    let mut config = EtcdConfig::builder(endpoints.clone()).key_prefix(prefix.clone());
    if let Some(ca) = arg("--etcd-cacert-file") {
        config = config.ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (arg("--etcd-cert-file"), arg("--etcd-key-file")) {
        config = config.client_cert(cert, key);
    }
    if let Some(domain) = arg("--etcd-domain") {
        config = config.tls_domain(domain);
    }
    let config = config.build()?;
    // One connection per machine.
    let connect = || EtcdClient::connect(config.clone());
    let (p, b, e) = (connect().await?, connect().await?, connect().await?);
    // The baker's identity in etcd: 32 bytes both machines agree on.
    let node = slashguard::NodeKeypair::from_seed([0xBA; 32]).node_id();
    let options = |name: &str| OwnershipOptions::new(name).lease_ttl(Duration::from_secs(2));
    println!(
        "etcd {endpoints:?} ({}), keys under {prefix}",
        if config.uses_tls() {
            "mutual TLS"
        } else {
            "plain"
        }
    );
    Ok(Site::Etcd {
        primary: EtcdIdentity::new(p, node, options("primary"))?,
        backup: EtcdIdentity::new(b, node, options("backup"))?,
        emergency: Box::new(e),
    })
}

fn key_kind() -> Result<KeyKind, Box<dyn std::error::Error>> {
    match arg("--device").as_deref() {
        None => Ok(KeyKind::Software),
        #[cfg(feature = "sim")]
        Some("ledger") => Ok(KeyKind::Ledger),
        #[cfg(feature = "sim")]
        Some("tezsign") => Ok(KeyKind::TezSign),
        #[cfg(not(feature = "sim"))]
        Some(_) => {
            eprintln!(
                "--device needs the `usb` feature (the simulated devices); rebuild with it:\n  \
                 cargo run --features sim --example tezos_failover -- --device ledger"
            );
            std::process::exit(2);
        }
        #[cfg(feature = "sim")]
        Some(other) => Err(format!("--device {other}: use ledger or tezsign").into()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let block_ms: u64 = arg("--block-ms")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let kind = key_kind()?;
    let site = if args().iter().any(|a| a == "--etcd") {
        etcd_site().await?
    } else {
        Site::Local {
            dir: tempfile::tempdir()?,
        }
    };
    let chain = Chain {
        start: Instant::now(),
        block: Duration::from_millis(block_ms),
    };
    let log: Log = Arc::default();
    let primary_keys = keys(kind, "primary", false).await?;
    println!(
        "slashguard Tezos failover demo: chain {CHAIN}, {block_ms} ms blocks, {}, keys: {}\n",
        match &site {
            Site::Local { dir } => format!(
                "watermarks in {} (one host, file lock)",
                Site::path(dir).display()
            ),
            #[cfg(feature = "etcd")]
            Site::Etcd { .. } => "watermarks and ownership in etcd".into(),
        },
        primary_keys
            .aliases
            .iter()
            .map(|(n, s, _)| format!("{n} {}", s.key_hash()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bls = primary_keys.bls;

    // --- Safe failover ------------------------------------------------------
    let (owned, primary_store): (Ownership, Box<dyn SignerGuard>) = match &site {
        Site::Local { dir } => {
            let path = Site::path(dir);
            let owned = LocalLockPolicy::new(FileWatermarks::lock_path(&path), "primary")
                .acquire()
                .await?;
            // The primary's first start: it creates the store.
            let store = FileWatermarks::create_owned(&path, &owned)?;
            (owned, Box::new(store))
        }
        #[cfg(feature = "etcd")]
        Site::Etcd { primary, .. } => {
            let owned = primary.take_over().await?;
            let store = slashguard::etcd::EtcdWatermarks::new(primary.client().clone());
            (owned, Box::new(store))
        }
    };
    let primary: Vec<_> = primary_keys
        .signers()
        .into_iter()
        .map(|s| GuardedSigner::new(&primary_store, s))
        .collect();
    chain.say(
        "primary",
        format!("baking (owns the baker, fence {})", owned.fence()),
    );
    bake("primary", &chain, &primary, bls, &log, chain.level() + 5).await;

    chain.say(
        "operator",
        "MISTAKE: start the backup while the primary runs",
    );
    let refused = match &site {
        Site::Local { dir } => {
            LocalLockPolicy::new(FileWatermarks::lock_path(&Site::path(dir)), "backup")
                .with_timeout(chain.block)
                .acquire()
                .await
                .err()
        }
        #[cfg(feature = "etcd")]
        Site::Etcd { backup, .. } => backup.confirm_primary_down(chain.block).await.err(),
    };
    match refused {
        Some(e) => chain.say("backup", format!("REFUSED: {e}")),
        None => panic!("two owners of one baker"),
    }

    chain.say(
        "operator",
        "step 2: tezbake stop on the primary (verified stopped); step 3: its signer unplugged",
    );
    drop(primary);
    drop(primary_store);
    match &site {
        Site::Local { .. } => drop(owned),
        #[cfg(feature = "etcd")]
        Site::Etcd { primary, .. } => primary.release(owned).await?,
    }

    // The backup's signer: with a device, left authorized by mistake.
    let mut backup_keys = keys(kind, "backup", true).await?;
    chain.say(
        "operator",
        "step 1: the backup confirms the primary is down",
    );
    let (evidence, backup_store): (PrimaryDown, Box<dyn SignerGuard>) = match &site {
        Site::Local { dir } => {
            let path = Site::path(dir);
            let owned = LocalLockPolicy::new(FileWatermarks::lock_path(&path), "backup")
                .with_takeover(Takeover::WaitForRelease)
                .acquire()
                .await?;
            chain.say("backup", "the primary's lock is free: it is down");
            let store = FileWatermarks::open_owned(&path, &owned)?;
            (PrimaryDown::Acquired(owned), Box::new(store))
        }
        #[cfg(feature = "etcd")]
        Site::Etcd { backup, .. } => {
            let evidence = backup.confirm_primary_down(Duration::from_secs(10)).await?;
            chain.say(
                "backup",
                "the primary released its ownership in etcd: it is down",
            );
            let store = slashguard::etcd::EtcdWatermarks::new(backup.client().clone());
            (evidence, Box::new(store))
        }
    };
    #[cfg(feature = "sim")]
    let backup_ledger = backup_keys.ledger.take();
    let (guard, signers) = backup_keys.guard(backup_store);
    let backup: Vec<_> = signers
        .into_iter()
        .map(|s| GuardedSigner::new(&guard, s))
        .collect();

    chain.say("backup", "MISTAKE: sign before raising the HWM");
    match backup[0]
        .sign(&consensus_payload(
            0x13,
            chain.level() + 1,
            0,
            "backup",
            bls,
        ))
        .await
    {
        Err(e) => chain.say("backup", format!("REFUSED: {e}")),
        Ok(_) => panic!("signed without a raised watermark"),
    }
    if kind != KeyKind::Software {
        chain.say(
            "backup",
            "checks that the backup device cannot sign yet (not authorized for baking)",
        );
        match guard.check_devices().await {
            Err(e) => {
                chain.say(
                    "backup",
                    format!("REFUSED (pre-authorized backup signer): {e}"),
                );
                #[cfg(feature = "sim")]
                if let Some(ledger) = &backup_ledger {
                    ledger.deauthorize().await?;
                    chain.say("operator", "deauthorizes the backup Ledger");
                }
                guard.check_devices().await?;
                chain.say("backup", "the backup device cannot sign yet");
            }
            Ok(()) => chain.say("backup", "no backup device can sign yet"),
        }
    }
    let observed = chain.level();
    chain.say(
        "operator",
        format!("step 4: current block level {observed}"),
    );
    let report = guard.activate(evidence, observed).await?;
    chain.say(
        "backup",
        format!(
            "step 5: HWM of {} raised to {} (store knew {:?}, chain {observed}){}",
            report
                .aliases
                .iter()
                .map(|a| a.0.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            report.level,
            report.last_known_level,
            if kind == KeyKind::Software {
                ""
            } else {
                "; devices armed at that level"
            }
        ),
    );
    chain.say("backup", "step 6-7: baking");
    bake("backup", &chain, &backup, bls, &log, report.level + 4).await;
    drop(backup);
    drop(guard);

    // --- Emergency: the active baker is unreachable ------------------------
    println!();
    let last_signature = SystemTime::now();
    let emergency_store: Box<dyn SignerGuard> = match &site {
        Site::Local { dir } => {
            chain.say("operator", "EMERGENCY: the active baker is unreachable (fire, theft); a spare machine with an empty store takes over");
            Box::new(FileWatermarks::create(
                dir.path().join("emergency-watermarks"),
            )?)
        }
        #[cfg(feature = "etcd")]
        Site::Etcd { emergency, .. } => {
            chain.say("operator", "EMERGENCY: the active baker is unreachable; a spare machine takes over with the shared store");
            Box::new(slashguard::etcd::EtcdWatermarks::new((**emergency).clone()))
        }
    };
    let mut emergency_keys = keys(kind, "spare", false).await?;
    let (guard, signers) = emergency_keys.guard(emergency_store);
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
            "waited 3 blocks; HWM raised to {} (store knew {:?}, explorer level {observed}); baking",
            report.level, report.last_known_level
        ),
    );
    let emergency: Vec<_> = signers
        .into_iter()
        .map(|s| GuardedSigner::new(&guard, s))
        .collect();
    bake("emergency", &chain, &emergency, bls, &log, report.level + 4).await;

    // --- Verdict -------------------------------------------------------------
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
