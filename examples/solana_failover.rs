//! Solana validator failover (seed: "Failover Setup"), end to end: a
//! primary and a secondary validator share one identity and one tower.
//!
//! Timeline (in slots; the identity is leader at slots 6-9):
//! 1. the primary owns the identity and votes;
//! 2. manual failover at slot 4: `wait-for-restart-window && set-identity`
//!    on the secondary. The takeover waits until no leader slot is near
//!    (slot 10), then the primary is told, stops before its next vote, and
//!    the secondary loads the tower and votes on;
//! 3. software upgrade: the primary restarts, catches up, and only when
//!    ready reclaims the identity; the secondary stops, and comes back as a
//!    standby under its own secondary identity (the restart cycle is
//!    broken);
//! 4. the primary dies abruptly: the standby detects it and takes over; the
//!    time from the death to the first permitted vote is printed;
//! 5. verdict, from the votes that actually left: every slot voted at most
//!    once, by exactly one instance.
//!
//! Run it on the embedded default (one host, a file lock and one durable
//! tower file, no server):
//!
//! ```text
//! cargo run --example solana_failover                 # 400 ms slots
//! cargo run --example solana_failover -- --slot-ms 50 # faster
//! ```
//!
//! or with the identity and tower in etcd, with the seed's flags (the same
//! flags, parsed by the same definition, as the `slashguard` command's;
//! `--help` lists them):
//!
//! ```text
//! cargo run --features etcd --example solana_failover -- \
//!   --etcd-endpoint 127.0.0.1:2379 [--etcd-endpoint 10.0.0.6:2379 ...] \
//!   [--etcd-cacert-file certs/etcd-ca.pem --etcd-cert-file certs/validator.pem \
//!    --etcd-key-file certs/validator-key.pem [--etcd-domain-name localhost]] \
//!   [--lease-ttl 2] [--slot-ms 400] [--outage-round]
//! ```
//!
//! On loss of the identity every instance stops voting (the default the
//! seed asks for); what it does next is the application's choice: an
//! instance whose identity another instance took stops (here the secondary
//! restarts as a standby); an instance that lost it because the store did
//! not answer logs that (releasing may fail too), goes back to standby and
//! re-acquires the identity once etcd answers and nobody else owns it.
//! `--outage-round` adds a round after the crash in which the operator
//! stops etcd and starts it again; the verdict covers it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slashguard::failover::{Gate, Gated, LocalLockPolicy, Takeover};
use slashguard::file::FileTowerStorage;
use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
use slashguard::{Error, FailoverPolicy, NodeId, NodeKeypair, Ownership, TowerStorage};
use tokio::sync::watch;

const IDENTITY_SEED: [u8; 32] = [42; 32];
/// The slots at which the shared identity is leader (a 4-slot window).
const LEADER_SLOTS: std::ops::RangeInclusive<u64> = 6..=9;
/// How close a leader slot may be for a restart to be unsafe.
const WINDOW_SLOTS: u64 = 3;

#[derive(Clone)]
struct Cluster {
    start: Instant,
    slot: Duration,
    votes: Arc<Mutex<Vec<(u64, &'static str)>>>,
    /// The slot at which every instance stops (moved by the outage round).
    end: Arc<AtomicU64>,
    /// Votes withheld because the store did not answer.
    withheld: Arc<AtomicU64>,
    /// Times any instance acquired the identity.
    acquisitions: Arc<AtomicU64>,
}

impl Cluster {
    fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }
    fn now_slot(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.slot.as_nanos()) as u64
    }
    async fn next_slot(&self) -> u64 {
        let next = self.now_slot() + 1;
        tokio::time::sleep_until((self.start + self.slot * next as u32).into()).await;
        next
    }
    async fn until_slot(&self, slot: u64) {
        while self.now_slot() < slot {
            self.next_slot().await;
        }
    }
    fn say(&self, who: &str, what: impl AsRef<str>) {
        println!("[slot {:>3}] {who:<9} {}", self.now_slot(), what.as_ref());
    }
    fn bank_hash(slot: u64) -> [u8; 32] {
        // Every instance sees the same chain: the bank hash depends on the slot only.
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&slot.to_le_bytes());
        h
    }
    /// Solana's restart window, as the application computes it: open when
    /// no leader slot of the identity is within the next few slots.
    fn restart_window(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                let s = cluster.now_slot();
                let open = !(s..=s + WINDOW_SLOTS).any(|x| LEADER_SLOTS.contains(&x));
                if tx.send(open).is_err() {
                    return;
                }
                cluster.next_slot().await;
            }
        });
        rx
    }
}

/// Where the tower lives, for one instance.
enum Store {
    File(PathBuf),
    #[cfg(feature = "etcd")]
    Etcd(slashguard::etcd::EtcdIdentity),
}

impl Store {
    async fn open(&self, node: NodeId, own: &Ownership) -> Result<Box<dyn TowerStorage>, Error> {
        match self {
            Store::File(dir) => Ok(Box::new(FileTowerStorage::open_owned(dir, node, own)?)),
            #[cfg(feature = "etcd")]
            Store::Etcd(id) => Ok(Box::new(
                slashguard::etcd::EtcdTowerStorage::open(id, own).await?,
            )),
        }
    }
}

/// How an instance gets the identity.
enum How {
    /// First start of the primary.
    FirstStart,
    /// `set-identity`, once the restart window is open.
    SetIdentity(Gate),
    /// A restarted primary: reclaim when ready.
    Reclaim(watch::Receiver<bool>),
    /// A standby: wait until the identity is free.
    Standby,
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
    fn instance(
        &self,
        node: NodeId,
        name: &str,
        how: How,
    ) -> Result<(Box<dyn FailoverPolicy>, Store), Error> {
        match self {
            Site::Local(dir) => {
                let base = LocalLockPolicy::for_tower(dir, node, name)
                    .with_timeout(Duration::from_secs(60));
                let policy: Box<dyn FailoverPolicy> = match how {
                    How::FirstStart | How::Standby => Box::new(base),
                    How::SetIdentity(window) => Box::new(
                        Gated::new(base.with_takeover(Takeover::RequestHandover)).gate(window),
                    ),
                    How::Reclaim(ready) => Box::new(
                        base.with_takeover(Takeover::RequestHandover)
                            .with_readiness(ready),
                    ),
                };
                Ok((policy, Store::File(dir.clone())))
            }
            #[cfg(feature = "etcd")]
            Site::Etcd { client, ttl } => {
                use slashguard::etcd::{AcquireMode, EtcdFailover, EtcdIdentity, OwnershipOptions};
                use slashguard::failover::ReclaimMode;
                let options = OwnershipOptions::new(name)
                    .lease_ttl(*ttl)
                    .poll_interval(Duration::from_millis(25));
                let id = EtcdIdentity::new((**client).clone(), node, options)?;
                let wait = Duration::from_secs(60);
                let policy: Box<dyn FailoverPolicy> = match how {
                    How::FirstStart => {
                        Box::new(EtcdFailover::new(id.clone(), AcquireMode::TakeOver))
                    }
                    How::SetIdentity(window) => Box::new(
                        Gated::new(EtcdFailover::new(id.clone(), AcquireMode::TakeOver))
                            .gate(window),
                    ),
                    How::Reclaim(ready) => Box::new(EtcdFailover::reclaim(
                        id.clone(),
                        ReclaimMode::WhenReady,
                        ready,
                        wait,
                    )),
                    How::Standby => {
                        Box::new(EtcdFailover::new(id.clone(), AcquireMode::WhenFree(wait)))
                    }
                };
                Ok((policy, Store::Etcd(id)))
            }
        }
    }

    /// How long a dead owner keeps the identity, and what bounds it.
    fn detection(&self) -> (Duration, &'static str) {
        match self {
            Site::Local(_) => (
                Duration::ZERO,
                "the kernel drops a dead process's lock at once",
            ),
            #[cfg(feature = "etcd")]
            Site::Etcd { ttl, .. } => (
                *ttl,
                "bound: the lease TTL, etcd's expiry check (every 500 ms) and one round trip",
            ),
        }
    }
}

/// What an instance does after losing the identity.
enum AfterLoss {
    /// Another instance took it (the seed's default: stop).
    Stop,
    /// The store failed under it: wait for the identity to be free again.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Standby(Box<dyn FailoverPolicy>),
}

impl Store {
    /// Decide, once the store answers, whether the loss was a takeover
    /// (stop) or the store failing (go back to standby).
    async fn after_loss(&self, name: &str, cluster: &Cluster) -> Result<AfterLoss, Error> {
        #[cfg(not(feature = "etcd"))]
        let _ = (name, cluster);
        match self {
            // One host: only another instance takes the lock.
            Store::File(_) => Ok(AfterLoss::Stop),
            #[cfg(feature = "etcd")]
            Store::Etcd(id) => {
                use slashguard::etcd::{AcquireMode, EtcdFailover};
                let deadline = Instant::now() + STORE_BACK_WITHIN;
                let owner = loop {
                    match id.status().await {
                        Ok(owner) => break owner,
                        Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                            cluster.next_slot().await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                match owner {
                    Some(o) if o.instance != name => {
                        cluster.say(
                            name,
                            format!("{} owns the identity now: stays stopped", o.instance),
                        );
                        Ok(AfterLoss::Stop)
                    }
                    _ => {
                        cluster.say(
                            name,
                            "etcd answers again and nobody else owns the identity: back to standby, re-acquires it when its old claim has expired",
                        );
                        Ok(AfterLoss::Standby(Box::new(EtcdFailover::new(
                            id.clone(),
                            AcquireMode::WhenFree(STORE_BACK_WITHIN),
                        ))))
                    }
                }
            }
        }
    }
}

/// How long an instance waits for a store that went away to come back.
const STORE_BACK_WITHIN: Duration = Duration::from_secs(120);

/// Why an instance stopped voting.
enum Stopped {
    /// The run is over.
    End,
    /// It lost the identity.
    Lost,
    /// A safety rule refused a vote.
    Refused,
}

/// One validator instance: takes the identity as its policy says, votes
/// until it loses it, reaches the end of the run, or is aborted (a crash).
/// After a loss it stops if another instance took the identity, and goes
/// back to standby if the store failed under it.
async fn run_validator(
    name: &'static str,
    cluster: Cluster,
    mut policy: Box<dyn FailoverPolicy>,
    store: Store,
) -> Result<(), Error> {
    loop {
        let stopped = hold_and_vote(name, &cluster, &*policy, &store).await?;
        if let Stopped::End | Stopped::Refused = stopped {
            return Ok(());
        }
        match store.after_loss(name, &cluster).await? {
            AfterLoss::Stop => return Ok(()),
            AfterLoss::Standby(p) => policy = p,
        }
    }
}

/// Acquire, vote until stopped, release (a failed release is logged: the
/// claim then expires with its lease).
async fn hold_and_vote(
    name: &'static str,
    cluster: &Cluster,
    policy: &dyn FailoverPolicy,
    store: &Store,
) -> Result<Stopped, Error> {
    // A store that does not answer in time (a blip, a busy etcd) is
    // retried; what the policy refuses is final.
    let deadline = Instant::now() + STORE_BACK_WITHIN;
    let ownership = loop {
        match policy.acquire().await {
            Ok(o) => break o,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                cluster.say(
                    name,
                    format!("store did not answer while acquiring the identity, retrying: {e}"),
                );
                cluster.next_slot().await;
            }
            Err(e) => return Err(e),
        }
    };
    cluster.acquisitions.fetch_add(1, Ordering::SeqCst);
    let identity = NodeKeypair::from_seed(IDENTITY_SEED);
    let opened = async {
        let storage = store.open(identity.node_id(), &ownership).await?;
        let tower = storage.load().await?;
        Ok::<_, Error>((storage, tower))
    }
    .await;
    let (storage, tower) = match opened {
        Ok(x) => x,
        Err(e) if e.is_unavailable() => {
            cluster.say(
                name,
                format!("store did not answer while loading the tower: {e}"),
            );
            release(name, cluster, policy, ownership).await;
            return Ok(Stopped::Lost);
        }
        Err(e) => return Err(e),
    };
    let mut last = tower.as_ref().and_then(|t| t.last_vote_slot());
    cluster.say(
        name,
        format!(
            "took identity {} (fence {}), tower's last vote: {}",
            identity.node_id(),
            ownership.fence(),
            last.map_or("none".into(), |s| format!("slot {s}"))
        ),
    );
    let guard = VoteGuard::new(storage, identity)?;
    let stopped = loop {
        // Stop before the next vote once the loss is known.
        if let Some(reason) = ownership.lost_reason() {
            cluster.say(name, format!("lost the identity ({reason}): stops voting"));
            break Stopped::Lost;
        }
        let slot = cluster.now_slot();
        if slot >= cluster.end() {
            break Stopped::End;
        }
        // Never vote a slot twice: the tower already holds the last one.
        if last.is_none_or(|l| slot > l) {
            let update = TowerUpdate {
                vote: VoteRef {
                    slot,
                    hash: Cluster::bank_hash(slot),
                },
                root: slot.checked_sub(31),
                tower: vec![0u8; 2048],
            };
            match guard
                .vote(update, format!("vote slot {slot}").as_bytes())
                .await
            {
                Ok(_) => {
                    cluster.votes.lock().unwrap().push((slot, name));
                    last = Some(slot);
                }
                Err(e) if e.is_unavailable() => {
                    cluster.withheld.fetch_add(1, Ordering::SeqCst);
                    cluster.say(name, format!("vote withheld, store did not answer: {e}"))
                }
                Err(e) if ownership.is_lost() => {
                    cluster.say(
                        name,
                        format!("vote refused after the loss of the identity: {e}"),
                    );
                }
                Err(e) => {
                    cluster.say(name, format!("vote refused, stops voting: {e}"));
                    break Stopped::Refused;
                }
            }
        }
        tokio::select! {
            _ = cluster.next_slot() => {}
            _ = ownership.lost() => {}
        }
    };
    drop(guard);
    release(name, cluster, policy, ownership).await;
    Ok(stopped)
}

/// Give the identity up; when the store does not answer, say so and go on:
/// the claim expires with its lease, and nothing is signed meanwhile.
async fn release(name: &str, cluster: &Cluster, policy: &dyn FailoverPolicy, ownership: Ownership) {
    if let Err(e) = policy.release(ownership).await {
        cluster.say(
            name,
            format!("could not release the identity ({e}); its claim expires with its lease"),
        );
    }
}

#[path = "../src/bin/slashguard/etcd_args.rs"]
mod etcd_args;

/// Solana validator failover demo (the seed's "Failover Setup"): two
/// instances, one identity, one tower; manual failover, software upgrade,
/// crash, and optionally an etcd outage. Runs on one host with a file lock
/// unless an etcd endpoint is given.
#[derive(clap::Parser)]
#[command(name = "solana_failover")]
struct Opts {
    /// Slot time in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    slot_ms: u64,
    /// Lease TTL of the identity in etcd, in seconds (etcd mode).
    #[arg(long, value_name = "SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    lease_ttl: u64,
    /// After the crash round, wait for the operator to stop etcd and start
    /// it again (etcd mode): votes are withheld meanwhile, and the instance
    /// that lost the identity to the outage re-acquires it afterwards.
    #[arg(long)]
    outage_round: bool,
    #[command(flatten)]
    etcd: etcd_args::EtcdArgs,
}

#[cfg(not(feature = "etcd"))]
async fn etcd_site(_: &Opts) -> Result<Site, Box<dyn std::error::Error>> {
    eprintln!(
        "error: --etcd-* flags need the `etcd` feature; rebuild with it:\n  \
         cargo run --features etcd --example solana_failover -- --etcd-endpoint 127.0.0.1:2379"
    );
    std::process::exit(4);
}

#[cfg(feature = "etcd")]
async fn etcd_site(opts: &Opts) -> Result<Site, Box<dyn std::error::Error>> {
    use slashguard::etcd::EtcdClient;
    let ttl = Duration::from_secs(opts.lease_ttl);
    // A fresh prefix per run, so that a rerun against the same etcd starts
    // from an empty tower.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let fresh = format!("/slashguard-demo/{ms}");
    let config = opts.etcd.config(None, None, Some(&fresh))?;
    let client = EtcdClient::connect(config.clone()).await?;
    println!(
        "etcd {:?} ({}), keys under {}, lease TTL {ttl:?} (the library's default is {:?})",
        config.endpoints(),
        if config.uses_tls() {
            "mutual TLS"
        } else {
            "plain"
        },
        config.key_prefix(),
        slashguard::etcd::DEFAULT_LEASE_TTL
    );
    Ok(Site::Etcd {
        client: Box::new(client),
        ttl,
    })
}

/// The outage round: the operator stops etcd and starts it again; the
/// instance that owns the identity withholds its votes meanwhile, and votes
/// again once etcd is back (re-acquiring the identity if its claim lapsed).
/// The summary line, or exit 1 when it did not recover in time.
async fn outage_round(
    cluster: &Cluster,
    site: &Site,
) -> Result<String, Box<dyn std::error::Error>> {
    let (ttl, _) = site.detection();
    cluster.say(
        "operator",
        format!(
            "OUTAGE ROUND: stop etcd now (kill it) and start it again; an outage shorter than the lease TTL ({ttl:?}) minus the safety margin keeps the identity, a longer one loses it (waiting up to {STORE_BACK_WITHIN:?})"
        ),
    );
    let wait_until = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + STORE_BACK_WITHIN;
        while !done() {
            if Instant::now() > deadline {
                println!("FAILED: {what} within {STORE_BACK_WITHIN:?}");
                std::process::exit(1);
            }
            cluster.next_slot().await;
        }
    };
    let withheld = cluster.withheld.load(Ordering::SeqCst);
    let c = cluster.clone();
    wait_until(
        "no outage was observed",
        Box::new(move || c.withheld.load(Ordering::SeqCst) > withheld),
    )
    .await;
    let down_at = cluster.now_slot();
    let acquired = cluster.acquisitions.load(Ordering::SeqCst);
    cluster.say("operator", "etcd is down: votes are withheld");
    let c = cluster.clone();
    wait_until(
        "no vote after the outage",
        Box::new(move || {
            c.votes
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(s, _)| *s > down_at)
        }),
    )
    .await;
    let (back_at, who) = *cluster.votes.lock().unwrap().last().expect("checked above");
    let reacquired = cluster.acquisitions.load(Ordering::SeqCst) > acquired;
    // A few more slots of normal voting, then the run ends.
    cluster.end.store(cluster.now_slot() + 8, Ordering::SeqCst);
    Ok(format!(
        "outage round: votes withheld from slot {down_at} until slot {back_at} ({} slots withheld), then {who} voted again; {}",
        cluster.withheld.load(Ordering::SeqCst) - withheld,
        if reacquired {
            "it had lost the identity to the outage and re-acquired it"
        } else {
            "the outage was shorter than the lease: it kept the identity"
        }
    ))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        std::process::exit(etcd_args::report_error(e.as_ref()));
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // What an operator would graph: store latency, refusals, ownership.
    let metrics = std::sync::Arc::new(slashguard::metrics::MemoryMetrics::new());
    slashguard::metrics::install(metrics.clone());
    let opts: Opts = etcd_args::parse_or_exit();
    let slot_ms = opts.slot_ms;
    let dir = tempfile::tempdir()?;
    let site = if opts.etcd.any_given() {
        etcd_site(&opts).await?
    } else {
        Site::Local(dir.path().into())
    };
    if opts.outage_round && matches!(site, Site::Local(_)) {
        eprintln!("error: --outage-round stops and restarts etcd: it needs --etcd-endpoint");
        std::process::exit(4);
    }
    let node = NodeKeypair::from_seed(IDENTITY_SEED).node_id();
    if let Site::Local(dir) = &site {
        // Provisioning: the node's tower store is created once, before any
        // instance starts; instances only open it (a missing store is an
        // error, never silently a new, empty tower).
        drop(FileTowerStorage::create(dir, node)?);
    }
    let secondary_id = NodeKeypair::from_seed([7; 32]).node_id();
    let cluster = Cluster {
        start: Instant::now(),
        slot: Duration::from_millis(slot_ms),
        votes: Arc::new(Mutex::new(Vec::new())),
        end: Arc::new(AtomicU64::new(u64::MAX)),
        withheld: Arc::default(),
        acquisitions: Arc::default(),
    };
    let slot = cluster.slot;
    let (dead_for, detection) = site.detection();
    // Long enough for the standby to take over after the crash and vote a few slots.
    let crash = 26;
    let end = crash + 8 + ((dead_for + Duration::from_secs(2)).as_nanos() / slot.as_nanos()) as u64;
    if !opts.outage_round {
        cluster.end.store(end, Ordering::SeqCst);
    }
    println!(
        "slashguard Solana failover demo: identity {node}, {slot_ms} ms slots, leader at slots {LEADER_SLOTS:?}, {}",
        match &site {
            Site::Local(d) => format!("tower in {} (one host, file lock)", d.display()),
            #[cfg(feature = "etcd")]
            Site::Etcd { .. } => "tower and ownership in etcd".to_string(),
        }
    );
    let spawn = |name: &'static str, how: How| -> Result<_, Error> {
        let (policy, store) = site.instance(node, name, how)?;
        Ok(tokio::spawn(run_validator(
            name,
            cluster.clone(),
            policy,
            store,
        )))
    };

    // 1. The primary runs.
    let primary = spawn("primary", How::FirstStart)?;
    cluster.say(
        "secondary",
        format!("running as {secondary_id} (its own identity, not voting for the primary's)"),
    );

    // 2. Manual failover: `wait-for-restart-window && set-identity` on the secondary.
    cluster.until_slot(4).await;
    cluster.say(
        "operator",
        "wait-for-restart-window && set-identity on the secondary",
    );
    let window = cluster.restart_window();
    if !*window.borrow() {
        cluster.say(
            "secondary",
            format!("restart window closed: leader slots {LEADER_SLOTS:?} are near; waiting"),
        );
    }
    let asked = Instant::now();
    let secondary = spawn(
        "secondary",
        How::SetIdentity(Gate::restart_window(window, slot * 40)),
    )?;
    primary.await??;
    cluster.say(
        "operator",
        format!(
            "primary has stopped {:?} after set-identity was asked",
            asked.elapsed()
        ),
    );

    // 3. Software upgrade: the primary restarts, catches up for 4 slots, then reclaims.
    cluster.until_slot(14).await;
    cluster.say(
        "primary",
        "restarted with the new software; catching up (not ready)",
    );
    let (ready_tx, ready_rx) = watch::channel(false);
    let restarted = spawn("primary", How::Reclaim(ready_rx))?;
    cluster.until_slot(18).await;
    cluster.say("primary", "caught up: ready, reclaiming the identity");
    ready_tx.send(true)?;
    secondary.await??;
    cluster.say(
        "secondary",
        format!("restarts under its own identity {secondary_id}: standby, waits for the identity to be free"),
    );
    let standby = spawn("secondary", How::Standby)?;

    // 4. The primary dies abruptly.
    cluster.until_slot(crash).await;
    cluster.say("primary", "CRASH (process killed)");
    let died = Instant::now();
    restarted.abort();
    let _ = restarted.await;
    let taken_at = loop {
        if died.elapsed() > dead_for + Duration::from_secs(10) {
            println!("UNSAFE: the standby did not take over in time");
            std::process::exit(1);
        }
        if cluster
            .votes
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(_, who)| *who == "secondary")
        {
            break died.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    cluster.say(
        "secondary",
        format!(
            "first permitted vote {taken_at:?} after the primary died (dead owner detection: {}; {detection})",
            if dead_for.is_zero() { "immediate".to_string() } else { format!("lease TTL {dead_for:?}") }
        ),
    );
    let outage = if opts.outage_round {
        Some(outage_round(&cluster, &site).await?)
    } else {
        None
    };
    standby.await??;

    // 5. Verdict from what actually left the instances.
    let votes = cluster.votes.lock().unwrap().clone();
    let mut per_slot = std::collections::BTreeMap::<u64, Vec<&str>>::new();
    for (slot, who) in &votes {
        per_slot.entry(*slot).or_default().push(who);
    }
    let doubles: Vec<_> = per_slot.iter().filter(|(_, w)| w.len() > 1).collect();
    let by = |n: &str| votes.iter().filter(|(_, w)| *w == n).count();
    println!(
        "\nvotes: {} ({} by primary, {} by secondary); slots without a vote during handovers: {}; takeover after the crash: {taken_at:?}",
        votes.len(),
        by("primary"),
        by("secondary"),
        (1..cluster.end()).filter(|s| !per_slot.contains_key(s)).count()
    );
    let m = metrics.snapshot();
    for ((backend, outcome), l) in &m.tower_store {
        println!(
            "metrics: tower store {backend}/{}: {} stores, mean {:?}, max {:?}",
            outcome.as_str(),
            l.count,
            l.total / l.count.max(1) as u32,
            l.max
        );
    }
    for (holder, (owned, fence)) in &m.ownership {
        println!(
            "metrics: ownership {holder}: {} (fence {fence})",
            if *owned { "owned" } else { "lost" }
        );
    }
    if let Some(o) = &outage {
        println!("{o}");
    }
    if doubles.is_empty() {
        println!(
            "SAFE: every voted slot was voted exactly once, by one instance{}",
            if outage.is_some() {
                ", before, during and after the etcd outage"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        println!("UNSAFE: slots voted more than once: {doubles:?}");
        std::process::exit(1);
    }
}
