//! Validator and baker processes sharing one identity through etcd, for the
//! failover end-to-end tests and the soak.
//!
//! A node is the test binary re-executed (`--exact failover_node_entry`)
//! with its [`NodeSpec`] in `SLASHGUARD_FAILOVER_NODE`. It takes the
//! identity as its mode says, then votes (validator) or signs (baker) at
//! every slot of a clock shared by every node (`epoch` + n x `slot`), and
//! stops as soon as it loses the identity (the default the seed asks for).
//! It reports every event on stdout, one line each, with its wall-clock
//! time in unix milliseconds:
//!
//! | line | meaning |
//! |---|---|
//! | `START <instance> <mode> <ms>` | process started |
//! | `READY <ms>` | (reclaim mode) the application reports it caught up |
//! | `OWNED <fence> <ms>` | this node owns the identity |
//! | `ACTIVATED <level> <ms>` | (baker) watermarks raised, signing allowed above `level` |
//! | `VOTED <slot> <ms>` | a vote signature left the guard |
//! | `SIGNED <key> <kind> <level> <round> <ms>` | a baker signature left the guard |
//! | `REFUSED <slot or level> <ms> <why> <error>` | the guard withheld a vote or signature |
//! | `LOST <ms> <reason>` | the node learned it lost the identity |
//! | `EXIT <ms> <why>` | the node stopped |
//!
//! It reads commands on stdin: `TAKEOVER` (a standby takes the identity
//! over, Solana's `set-identity`) and `STOP` (release and exit).
//!
//! The parent counts the lines of every node with [`Events`]: a slot voted
//! twice or a (key, kind, level, round) signed twice is a violation.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use slashguard::etcd::{
    AcquireMode, EtcdClient, EtcdConfig, EtcdFailover, EtcdIdentity, EtcdTowerStorage,
    EtcdWatermarks, OwnershipOptions,
};
use slashguard::failover::{BackupGuard, PrimaryDown, PrimaryFencing, ReclaimMode};
use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
use slashguard::watermark::{ChainId, ConsensusKind, Curve};
use slashguard::Signer;
use slashguard::{Ed25519Signer, Error, FailoverPolicy, GuardedSigner, NodeKeypair, Ownership};
use tokio::sync::{mpsc as tmpsc, watch};

use crate::common::consensus;

/// The environment variable carrying a child's spec.
pub const NODE_ENV: &str = "SLASHGUARD_FAILOVER_NODE";

/// Mainnet's chain id, for the bakers.
pub const CHAIN: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Solana validator: a tower in etcd, one vote per slot.
    Validator,
    /// A Tezos baker: shared watermarks in etcd, an attestation for two
    /// keys and a block per level, behind a `BackupGuard`.
    Baker,
}

/// How a node gets the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Take it at once (a first start, or a manual takeover).
    TakeOver,
    /// Wait until it is free; `TAKEOVER` on stdin takes it over.
    Standby,
    /// A restarted primary: reclaim when ready, the application reporting
    /// ready this many milliseconds after start.
    Reclaim {
        /// Simulated catch-up time.
        ready_after_ms: u64,
    },
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::TakeOver => f.write_str("takeover"),
            Mode::Standby => f.write_str("standby"),
            Mode::Reclaim { ready_after_ms } => write!(f, "reclaim:{ready_after_ms}"),
        }
    }
}

/// Everything a node needs to know.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Validator or baker.
    pub role: Role,
    /// Instance name (shown to the other instances).
    pub instance: String,
    /// How it gets the identity.
    pub mode: Mode,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// Lease TTL, whole seconds.
    pub ttl_secs: u64,
    /// Slot (and block) duration.
    pub slot_ms: u64,
    /// Origin of the shared slot clock, unix ms.
    pub epoch_ms: u64,
    /// Seed of the shared identity.
    pub seed: u8,
    /// Varies the payloads this process signs, so that two processes
    /// signing one level sign two different messages.
    pub variant: u8,
}

impl NodeSpec {
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            match self.role {
                Role::Validator => "validator",
                Role::Baker => "baker",
            },
            self.instance,
            self.mode,
            self.endpoints.join(","),
            self.prefix,
            self.ttl_secs,
            self.slot_ms,
            self.epoch_ms,
            self.seed,
            self.variant
        )
    }

    fn decode(s: &str) -> NodeSpec {
        let f: Vec<&str> = s.split('|').collect();
        assert_eq!(f.len(), 10, "bad node spec {s:?}");
        NodeSpec {
            role: match f[0] {
                "validator" => Role::Validator,
                "baker" => Role::Baker,
                other => panic!("bad role {other}"),
            },
            instance: f[1].to_string(),
            mode: match f[2] {
                "takeover" => Mode::TakeOver,
                "standby" => Mode::Standby,
                r => Mode::Reclaim {
                    ready_after_ms: r
                        .strip_prefix("reclaim:")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("bad mode {r}")),
                },
            },
            endpoints: f[3].split(',').map(String::from).collect(),
            prefix: f[4].to_string(),
            ttl_secs: f[5].parse().unwrap(),
            slot_ms: f[6].parse().unwrap(),
            epoch_ms: f[7].parse().unwrap(),
            seed: f[8].parse().unwrap(),
            variant: f[9].parse().unwrap(),
        }
    }

    /// The slot at unix time `ms`.
    pub fn slot_at(&self, ms: u64) -> u64 {
        ms.saturating_sub(self.epoch_ms) / self.slot_ms
    }

    /// When `slot` starts, unix ms.
    pub fn slot_start(&self, slot: u64) -> u64 {
        self.epoch_ms + slot * self.slot_ms
    }
}

fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Run as a node if the environment says so; `false` otherwise.
pub fn child_main() -> bool {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return false;
    };
    // libtest printed "test failover_node_entry ... " without a newline.
    println!();
    let spec = NodeSpec::decode(&spec);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let why = rt.block_on(run(spec));
    emit(format!("EXIT {} {why}", now_ms()));
    // Background tasks (keep-alive of a lost ownership) end with the runtime.
    rt.shutdown_timeout(Duration::from_millis(200));
    true
}

enum Cmd {
    TakeOver,
    Stop,
}

fn commands() -> tmpsc::UnboundedReceiver<Cmd> {
    let (tx, rx) = tmpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let cmd = match line.trim() {
                "TAKEOVER" => Cmd::TakeOver,
                "STOP" => Cmd::Stop,
                _ => continue,
            };
            if tx.send(cmd).is_err() {
                break;
            }
        }
    });
    rx
}

async fn connect(spec: &NodeSpec) -> Option<EtcdClient> {
    // Short enough that a vote is withheld quickly when etcd is away,
    // long enough for a loaded 2-core machine.
    let config = EtcdConfig::builder(spec.endpoints.clone())
        .key_prefix(spec.prefix.clone())
        .request_deadline(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match EtcdClient::connect(config.clone()).await {
            Ok(c) => return Some(c),
            Err(e) if Instant::now() < end => {
                emit(format!("WAIT {} connect: {e}", now_ms()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                emit(format!("FAIL {} connect: {e}", now_ms()));
                return None;
            }
        }
    }
}

/// Take the identity over, retrying while etcd is unavailable (an
/// election, a restart).
async fn take_over(id: &EtcdIdentity) -> Result<Ownership, Error> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match id.take_over().await {
            Err(e) if e.is_unavailable() && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

/// Get the identity as the mode says; `None` when told to stop first.
async fn acquire(
    spec: &NodeSpec,
    id: &EtcdIdentity,
    cmds: &mut tmpsc::UnboundedReceiver<Cmd>,
) -> Result<Option<Ownership>, Error> {
    match spec.mode {
        Mode::TakeOver => take_over(id).await.map(Some),
        Mode::Standby => {
            let standby =
                EtcdFailover::new(id.clone(), AcquireMode::WhenFree(Duration::from_secs(3600)));
            tokio::select! {
                r = standby.acquire() => r.map(Some),
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::TakeOver) => {
                        emit(format!("SETIDENTITY {}", now_ms()));
                        take_over(id).await.map(Some)
                    }
                    Some(Cmd::Stop) | None => Ok(None),
                },
            }
        }
        Mode::Reclaim { ready_after_ms } => {
            let (ready_tx, ready_rx) = watch::channel(false);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ready_after_ms)).await;
                emit(format!("READY {}", now_ms()));
                let _ = ready_tx.send(true);
                // Stay ready for as long as the process lives.
                std::future::pending::<()>().await;
            });
            let policy = EtcdFailover::reclaim(
                id.clone(),
                ReclaimMode::WhenReady,
                ready_rx,
                Duration::from_secs(120),
            );
            let end = Instant::now() + Duration::from_secs(120);
            let reclaim = async {
                loop {
                    match policy.acquire().await {
                        Err(e) if e.is_unavailable() && Instant::now() < end => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        other => return other,
                    }
                }
            };
            tokio::select! {
                r = reclaim => r.map(Some),
                _ = async { while let Some(Cmd::TakeOver) = cmds.recv().await {} } => Ok(None),
            }
        }
    }
}

async fn run(spec: NodeSpec) -> String {
    emit(format!(
        "START {} {} {}",
        spec.instance,
        spec.mode,
        now_ms()
    ));
    let mut cmds = commands();
    let Some(client) = connect(&spec).await else {
        return "no etcd".into();
    };
    let node = match spec.role {
        Role::Validator => NodeKeypair::from_seed([spec.seed; 32]).node_id(),
        // The baker's identity: any 32 bytes both bakers agree on.
        Role::Baker => NodeKeypair::from_seed([spec.seed.wrapping_add(128); 32]).node_id(),
    };
    let options = OwnershipOptions::new(spec.instance.clone())
        .lease_ttl(Duration::from_secs(spec.ttl_secs))
        .poll_interval(Duration::from_millis(50));
    let id = EtcdIdentity::new(client.clone(), node, options).unwrap();
    let own = match acquire(&spec, &id, &mut cmds).await {
        Ok(Some(o)) => o,
        Ok(None) => return "stopped before owning".into(),
        Err(e) => return format!("could not acquire: {e}"),
    };
    emit(format!("OWNED {} {}", own.fence(), now_ms()));
    match spec.role {
        Role::Validator => validate(&spec, &id, own, &mut cmds).await,
        Role::Baker => bake(&spec, client, own, &mut cmds).await,
    }
}

fn update(slot: u64) -> TowerUpdate {
    TowerUpdate {
        vote: VoteRef {
            slot,
            // Every instance sees the same chain.
            hash: {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&slot.to_le_bytes());
                h
            },
        },
        root: slot.checked_sub(32),
        tower: vec![1; 512],
    }
}

async fn sleep_until_ms(ms: u64) {
    let now = now_ms();
    if ms > now {
        tokio::time::sleep(Duration::from_millis(ms - now)).await;
    }
}

async fn validate(
    spec: &NodeSpec,
    id: &EtcdIdentity,
    own: Ownership,
    cmds: &mut tmpsc::UnboundedReceiver<Cmd>,
) -> String {
    let storage = loop {
        match EtcdTowerStorage::open(id, &own).await {
            Ok(s) => break s,
            Err(e) if e.is_unavailable() && !own.is_lost() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => {
                emit(format!("LOST {} cannot open the tower: {e}", now_ms()));
                return "lost before the first vote".into();
            }
        }
    };
    let guard = VoteGuard::new(storage, NodeKeypair::from_seed([spec.seed; 32])).unwrap();
    let mut last = loop {
        match guard.load().await {
            Ok(t) => break t.and_then(|t| t.last_vote_slot()),
            Err(e) if e.is_unavailable() && !own.is_lost() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => {
                emit(format!("LOST {} cannot load the tower: {e}", now_ms()));
                return "lost before the first vote".into();
            }
        }
    };
    loop {
        // Stop before the next vote once the loss is known.
        if let Some(reason) = own.lost_reason() {
            emit(format!("LOST {} {reason}", now_ms()));
            return "stopped: identity lost".into();
        }
        let slot = spec.slot_at(now_ms());
        if last.is_none_or(|l| slot > l) {
            match guard.vote(update(slot), b"vote").await {
                Ok(_) => {
                    emit(format!("VOTED {slot} {}", now_ms()));
                    last = Some(slot);
                }
                Err(e) => {
                    let kind = match &e {
                        Error::Fenced { .. } => "fenced",
                        e if e.is_unavailable() => "unavailable",
                        _ => "other",
                    };
                    emit(format!("REFUSED {slot} {} {kind} {e}", now_ms()));
                }
            }
        }
        tokio::select! {
            _ = sleep_until_ms(spec.slot_start(slot + 1)) => {}
            _ = own.lost() => {}
            cmd = cmds.recv() => if let Some(Cmd::Stop) | None = cmd {
                drop(guard);
                let _ = id.release(own).await;
                return "stopped by the operator".into();
            },
        }
    }
}

async fn bake(
    spec: &NodeSpec,
    client: EtcdClient,
    own: Ownership,
    cmds: &mut tmpsc::UnboundedReceiver<Cmd>,
) -> String {
    let keys = [
        Ed25519Signer::from_seed([spec.seed.wrapping_add(1); 32]),
        Ed25519Signer::from_seed([spec.seed.wrapping_add(2); 32]),
    ];
    // Every baker signs through the same etcd watermarks.
    let guard = BackupGuard::new(EtcdWatermarks::new(client), CHAIN)
        .primary_fencing(PrimaryFencing::SharedWatermarks)
        .alias("consensus", keys[0].key_hash())
        .alias("companion", keys[1].key_hash());
    let observed = spec.slot_at(now_ms()) as u32;
    let raised = match guard.activate(PrimaryDown::Acquired(own), observed).await {
        Ok(r) => r.level,
        Err(e) => {
            emit(format!("LOST {} activation failed: {e}", now_ms()));
            return "activation failed".into();
        }
    };
    emit(format!("ACTIVATED {raised} {}", now_ms()));
    let [consensus_key, companion_key] = keys;
    let signers = [
        (GuardedSigner::new(&guard, consensus_key), true),
        (GuardedSigner::new(&guard, companion_key), false),
    ];
    let mut level = raised;
    loop {
        if !guard.is_active().await {
            emit(format!(
                "LOST {} the ownership behind the guard is lost",
                now_ms()
            ));
            return "stopped: identity lost".into();
        }
        let now = spec.slot_at(now_ms()) as u32;
        if now > level {
            level = now;
            'level: for (signer, bakes_blocks) in &signers {
                let kinds: &[ConsensusKind] = if *bakes_blocks {
                    &[ConsensusKind::Block, ConsensusKind::Attestation]
                } else {
                    &[ConsensusKind::Attestation]
                };
                for kind in kinds {
                    let payload = consensus(*kind, Curve::Ed25519, CHAIN, level, 0, spec.variant);
                    match signer.sign(&payload).await {
                        Ok(_) => emit(format!(
                            "SIGNED {} {kind} {level} 0 {}",
                            signer.key_hash(),
                            now_ms()
                        )),
                        Err(e) => {
                            let why = match &e {
                                Error::Fenced { .. } => "fenced",
                                e if e.is_refusal() => "refused",
                                e if e.is_unavailable() => "unavailable",
                                _ => "other",
                            };
                            emit(format!("REFUSED {level} {} {why} {e}", now_ms()));
                            if matches!(e, Error::Fenced { .. }) {
                                break 'level;
                            }
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = sleep_until_ms(spec.slot_start(u64::from(level) + 1)) => {}
            cmd = cmds.recv() => if let Some(Cmd::Stop) | None = cmd {
                // The guard owns the ownership: dropping it lets the lease
                // expire (a baker's clean stop would release it).
                return "stopped by the operator".into();
            },
        }
    }
}

/// Every line of every node, in arrival order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<(String, String)>>>);

impl Events {
    /// Record a line on behalf of `label` (a signer in the test process).
    pub fn push(&self, label: &str, line: String) {
        self.0.lock().unwrap().push((label.to_string(), line));
    }

    /// A snapshot of (node label, line).
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The lines of one node.
    pub fn of(&self, label: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(l, _)| l == label)
            .map(|(_, line)| line)
            .collect()
    }

    /// Count votes, signatures and violations over every node.
    pub fn verdict(&self) -> Verdict {
        let mut votes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut sigs: BTreeMap<SignatureKey, Vec<String>> = BTreeMap::new();
        let mut owned = Vec::new();
        for (label, line) in self.all() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.first().copied() {
                Some("VOTED") => votes
                    .entry(f[1].parse().unwrap())
                    .or_default()
                    .push(label.clone()),
                Some("SIGNED") => sigs
                    .entry((
                        f[1].to_string(),
                        f[2].to_string(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    ))
                    .or_default()
                    .push(label.clone()),
                Some("OWNED") => owned.push((label.clone(), f[2].parse::<u64>().unwrap())),
                _ => {}
            }
        }
        Verdict {
            votes: votes.values().map(Vec::len).sum(),
            signatures: sigs.values().map(Vec::len).sum(),
            double_votes: votes.into_iter().filter(|(_, w)| w.len() > 1).collect(),
            double_signatures: sigs.into_iter().filter(|(_, w)| w.len() > 1).collect(),
            owned,
        }
    }
}

/// (key, kind, level, round) of a baker signature.
pub type SignatureKey = (String, String, u32, u32);

/// What the nodes did, counted from their own lines.
#[derive(Debug)]
pub struct Verdict {
    /// Vote signatures that left a guard.
    pub votes: usize,
    /// Baker signatures that left a guard.
    pub signatures: usize,
    /// Slots voted more than once, and by whom.
    pub double_votes: Vec<(u64, Vec<String>)>,
    /// (key, kind, level, round) signed more than once, and by whom.
    pub double_signatures: Vec<(SignatureKey, Vec<String>)>,
    /// Every acquisition: (node, unix ms).
    pub owned: Vec<(String, u64)>,
}

impl Verdict {
    /// Violations of the two safety rules.
    pub fn violations(&self) -> usize {
        self.double_votes.len() + self.double_signatures.len()
    }

    /// Panic with the details if any rule was broken.
    pub fn assert_safe(&self) {
        assert!(
            self.violations() == 0,
            "UNSAFE: double votes {:?}, double signatures {:?}",
            self.double_votes,
            self.double_signatures
        );
    }
}

/// A running node, killed (after SIGCONT) when dropped.
pub struct Node {
    /// Label in [`Events`].
    pub label: String,
    /// What it was started with.
    pub spec: NodeSpec,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Node {
    /// Start a node labelled `label`; its lines go to `events` too.
    pub fn spawn(label: &str, spec: NodeSpec, events: &Events) -> Node {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "failover_node_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(NODE_ENV, spec.encode())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let events = events.clone();
        let name = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() || line.starts_with("test ") || line.starts_with("running ") {
                    continue;
                }
                events.0.lock().unwrap().push((name.clone(), line.clone()));
                let _ = tx.send(line);
            }
        });
        Node {
            label: label.to_string(),
            spec,
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The next line starting with `prefix`, waiting at most `timeout`.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        self.try_wait_for(prefix, timeout).unwrap_or_else(|| {
            panic!(
                "{}: no {prefix} line within {timeout:?}; it said:\n{}",
                self.label,
                self.seen.join("\n")
            )
        })
    }

    /// Like [`wait_for`](Self::wait_for), `None` on timeout.
    pub fn try_wait_for(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Read what arrived so far without waiting.
    pub fn poll(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Every line read so far (by [`poll`](Self::poll) and the waits).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// `true` if a line starting with `prefix` was read.
    pub fn has(&self, prefix: &str) -> bool {
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    /// Send a command line on stdin.
    pub fn send(&mut self, cmd: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{cmd}");
            let _ = s.flush();
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGSTOP (a hung process: sockets open, nothing runs), and wait
    /// until every thread of it has stopped.
    pub fn pause(&self) {
        kill(self.pid(), Signal::SIGSTOP).unwrap();
        crate::etcd_harness::wait_until_stopped(self.child.id());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
    }

    /// `true` once the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Ask it to stop, and wait at most `timeout` before killing it.
    pub fn stop(&mut self, timeout: Duration) {
        self.send("STOP");
        let end = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() > end {
                self.kill9();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The unix ms at the end of an event line (`VOTED <slot> <ms>`,
/// `OWNED <fence> <ms>`, ...): the field after the first for most lines,
/// the last for `SIGNED`.
pub fn ms_of(line: &str) -> u64 {
    let f: Vec<&str> = line.split(' ').collect();
    let i = match f[0] {
        "SIGNED" => 5,
        "READY" | "LOST" | "EXIT" | "SETIDENTITY" => 1,
        "START" => 3,
        _ => 2,
    };
    f[i].parse()
        .unwrap_or_else(|_| panic!("no time in {line:?}"))
}

/// The slot of a `VOTED` line or the level of a `SIGNED` line.
pub fn slot_of(line: &str) -> u64 {
    let f: Vec<&str> = line.split(' ').collect();
    match f[0] {
        "VOTED" | "REFUSED" => f[1].parse().unwrap(),
        "SIGNED" => f[3].parse().unwrap(),
        _ => panic!("no slot in {line:?}"),
    }
}
