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
//! cargo run --features etcd --example tezos_failover -- --etcd-endpoint 127.0.0.1:2379 \
//!   [--etcd-cacert-file F --etcd-cert-file F --etcd-key-file F --etcd-domain-name NAME] \
//!   [--outage-round]
//! cargo run --features sim --example tezos_failover -- --device ledger    # or tezsign
//! ```
//!
//! The etcd flags are the `slashguard` command's (one shared definition;
//! `--help` lists them). `--etcd-endpoint` shares the watermarks (`EtcdWatermarks`) and the baker's
//! ownership (`EtcdIdentity`: the backup confirms the primary is down
//! through its lease). `--device ledger|tezsign` signs with the simulated
//! devices of `slashguard::usb::sim` instead of software keys: the backup
//! device must not be authorized before activation, and activation arms
//! it with its own watermark raised. `--outage-round` (etcd) adds a round
//! in which the operator stops etcd and starts it again while the backup
//! bakes: signatures are withheld meanwhile; if the backup lost its
//! ownership to the outage it confirms again that the primary is down and
//! re-activates (raising the watermarks again) before signing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use slashguard::failover::{
    BackupDevice, BackupGuard, LocalLockPolicy, PrimaryDown, PrimaryFencing, Takeover,
};
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
        // Both sites share the primary's watermarks (one file under one
        // lock, or etcd): a primary cut off from them cannot sign.
        let mut guard =
            BackupGuard::new(store, CHAIN).primary_fencing(PrimaryFencing::SharedWatermarks);
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

/// How a call to [`bake`] ended.
#[derive(Default)]
struct Baked {
    /// Requests signed.
    signed: u32,
    /// Requests withheld because the store did not answer.
    withheld: u32,
    /// The ownership behind the signer was lost (the guard refuses).
    lost: Option<String>,
}

/// Bake until `until_level`. Levels at or below the raised watermark are
/// refused by the guard and skipped, as a real baker does; a store that
/// does not answer withholds that level's signatures, and baking goes on.
async fn bake<G: SignerGuard>(
    who: &'static str,
    chain: &Chain,
    signers: &[GuardedSigner<G, DynSigner>],
    bls: bool,
    log: &Log,
    until_level: u32,
) -> Baked {
    let mut refused = 0;
    let mut baked = Baked::default();
    loop {
        let level = chain.next_level().await;
        if level >= until_level {
            break;
        }
        let mut withheld_here = 0;
        for s in signers {
            for magic in [0x12, 0x13] {
                match s.sign(&consensus_payload(magic, level, 0, who, bls)).await {
                    Ok(_) => {
                        baked.signed += 1;
                        log.lock().unwrap().push((
                            who.into(),
                            s.key_hash().to_string(),
                            magic,
                            level,
                            0,
                        ))
                    }
                    Err(e @ Error::Fenced { .. }) => {
                        chain.say(who, format!("lost the ownership, stops signing: {e}"));
                        baked.lost = Some(e.to_string());
                        return baked;
                    }
                    Err(e) if e.is_refusal() => {
                        if refused == 0 {
                            chain.say(who, format!("refused (skipping until above the HWM): {e}"));
                        }
                        refused += 1;
                    }
                    Err(e) if e.is_unavailable() => {
                        if withheld_here == 0 {
                            chain.say(
                                who,
                                format!("signature withheld, store did not answer: {e}"),
                            );
                        }
                        withheld_here += 1;
                        baked.withheld += 1;
                    }
                    Err(e) => {
                        chain.say(who, format!("signature withheld, stopping: {e}"));
                        return baked;
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
    baked
}

#[path = "../src/bin/slashguard/etcd_args.rs"]
mod etcd_args;

/// Tezos baker failover demo (the seed's "Safe Failover Procedure"): a
/// primary and a backup baker, the common mistakes refused, then the
/// emergency flow. Runs on one host with a watermark file and a file lock
/// unless an etcd endpoint is given.
#[derive(clap::Parser)]
#[command(name = "tezos_failover")]
struct Opts {
    /// Block time in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    block_ms: u64,
    /// Sign with a simulated device instead of software keys: ledger or
    /// tezsign (feature `usb`).
    #[arg(long, value_name = "DEVICE", value_parser = ["ledger", "tezsign"])]
    device: Option<String>,
    /// While the backup bakes, wait for the operator to stop etcd and start
    /// it again (etcd mode); the verdict covers the outage.
    #[arg(long)]
    outage_round: bool,
    #[command(flatten)]
    etcd: etcd_args::EtcdArgs,
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
async fn etcd_site(_: &Opts) -> Result<Site, Box<dyn std::error::Error>> {
    eprintln!(
        "error: --etcd-* flags need the `etcd` feature; rebuild with it:\n  \
         cargo run --features etcd --example tezos_failover -- --etcd-endpoint 127.0.0.1:2379"
    );
    std::process::exit(4);
}

#[cfg(feature = "etcd")]
async fn etcd_site(opts: &Opts) -> Result<Site, Box<dyn std::error::Error>> {
    use slashguard::etcd::{EtcdClient, EtcdIdentity, OwnershipOptions};
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let fresh = format!("/slashguard-demo/{ms}");
    let config = opts.etcd.config(None, None, Some(&fresh))?;
    // One connection per machine.
    let connect = || EtcdClient::connect(config.clone());
    let (p, b, e) = (connect().await?, connect().await?, connect().await?);
    // The baker's identity in etcd: 32 bytes both machines agree on.
    let node = slashguard::NodeKeypair::from_seed([0xBA; 32]).node_id();
    let options = |name: &str| OwnershipOptions::new(name).lease_ttl(Duration::from_secs(2));
    println!(
        "etcd {:?} ({}), keys under {}",
        config.endpoints(),
        if config.uses_tls() {
            "mutual TLS"
        } else {
            "plain"
        },
        config.key_prefix()
    );
    Ok(Site::Etcd {
        primary: EtcdIdentity::new(p, node, options("primary"))?,
        backup: EtcdIdentity::new(b, node, options("backup"))?,
        emergency: Box::new(e),
    })
}

fn key_kind(opts: &Opts) -> Result<KeyKind, Box<dyn std::error::Error>> {
    match opts.device.as_deref() {
        None => Ok(KeyKind::Software),
        #[cfg(feature = "sim")]
        Some("ledger") => Ok(KeyKind::Ledger),
        #[cfg(feature = "sim")]
        Some("tezsign") => Ok(KeyKind::TezSign),
        #[cfg(not(feature = "sim"))]
        Some(_) => {
            eprintln!(
                "error: --device needs the `sim` feature (the simulated devices); rebuild with it:\n  \
                 cargo run --features sim --example tezos_failover -- --device ledger"
            );
            std::process::exit(4);
        }
        #[cfg(feature = "sim")]
        Some(other) => Err(format!("--device {other}: use ledger or tezsign").into()),
    }
}

/// The outage round, while the backup bakes: the operator stops etcd and
/// starts it again. Signatures are withheld meanwhile; a backup that lost
/// its ownership to the outage confirms again that the primary is down
/// (the ownership is free once its old lease expired) and re-activates,
/// which raises the watermarks again, before it signs. The summary line,
/// or exit 1 when it did not recover in time.
async fn outage_round<G: SignerGuard>(
    chain: &Chain,
    site: &Site,
    guard: &BackupGuard<G>,
    backup: &[GuardedSigner<&BackupGuard<G>, DynSigner>],
    bls: bool,
    log: &Log,
) -> Result<String, Box<dyn std::error::Error>> {
    const WITHIN: Duration = Duration::from_secs(120);
    chain.say(
        "operator",
        format!(
            "OUTAGE ROUND: stop etcd now (kill it) and start it again (waiting up to {WITHIN:?})"
        ),
    );
    let deadline = Instant::now() + WITHIN;
    let mut withheld = 0;
    let mut reactivated = None;
    let mut down_at = None;
    loop {
        if Instant::now() > deadline {
            println!("FAILED: the backup did not sign through an etcd outage within {WITHIN:?}");
            std::process::exit(1);
        }
        let baked = bake("backup", chain, backup, bls, log, chain.level() + 2).await;
        withheld += baked.withheld;
        if baked.withheld > 0 && down_at.is_none() {
            down_at = Some(chain.level());
            chain.say("operator", "etcd is down: signatures are withheld");
        }
        if down_at.is_some() && baked.signed > 0 {
            break;
        }
        if baked.lost.is_some() {
            reactivated = Some(reactivate(chain, site, guard).await?);
        }
    }
    let back_at = chain.level();
    bake("backup", chain, backup, bls, log, back_at + 3).await;
    Ok(format!(
        "outage round: {withheld} signatures withheld from level {} until level {back_at}; {}",
        down_at.unwrap_or(back_at),
        match reactivated {
            Some(level) => format!("the backup lost its ownership to the outage, confirmed the primary down again and re-activated with the HWM raised to {level}"),
            None => "the outage was shorter than the lease: the backup kept its ownership".into(),
        }
    ))
}

/// Back to standby after losing the ownership: wait for etcd and a free
/// ownership, then activate again. The level the HWM was raised to.
async fn reactivate<G: SignerGuard>(
    chain: &Chain,
    site: &Site,
    guard: &BackupGuard<G>,
) -> Result<u32, Box<dyn std::error::Error>> {
    #[cfg(feature = "etcd")]
    if let Site::Etcd { backup, .. } = site {
        chain.say(
            "backup",
            "back to standby: waits for etcd and a free ownership",
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let tried = async {
                let evidence = backup.confirm_primary_down(Duration::from_secs(10)).await?;
                guard.activate(evidence, chain.level()).await
            }
            .await;
            match tried {
                Ok(report) => {
                    chain.say(
                        "backup",
                        format!(
                            "re-activated: the ownership is ours again, HWM raised to {}",
                            report.level
                        ),
                    );
                    return Ok(report.level);
                }
                Err(e) if Instant::now() < deadline && (e.is_unavailable() || e.is_refusal()) => {
                    chain.say("backup", format!("not yet: {e}"));
                    chain.next_level().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let _ = (chain, site, guard);
    Err("only an ownership in etcd can be lost to an outage".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        std::process::exit(etcd_args::report_error(e.as_ref()));
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let opts: Opts = etcd_args::parse_or_exit();
    let block_ms = opts.block_ms;
    let kind = key_kind(&opts)?;
    let site = if opts.etcd.any_given() {
        etcd_site(&opts).await?
    } else {
        if opts.outage_round {
            eprintln!("error: --outage-round stops and restarts etcd: it needs --etcd-endpoint");
            std::process::exit(4);
        }
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
        Site::Etcd { primary, .. } => {
            // etcd may be down right now: the claim then expires with its
            // lease, which the backup waits for.
            if let Err(e) = primary.release(owned).await {
                chain.say(
                    "primary",
                    format!("could not release the ownership ({e}); it expires with its lease"),
                );
            }
        }
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
    let outage = if opts.outage_round {
        Some(outage_round(&chain, &site, &guard, &backup, bls, &log).await?)
    } else {
        None
    };
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
    if let Some(o) = &outage {
        println!("{o}");
    }
    if doubles.is_empty() {
        println!(
            "SAFE: no (key, kind, level, round) was signed twice{}",
            if outage.is_some() {
                ", before, during and after the etcd outage"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        println!("UNSAFE: signed twice: {doubles:?}");
        std::process::exit(1);
    }
}
