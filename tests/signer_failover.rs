//! `slashguard signer` with its watermarks in etcd, shared by a primary
//! and a backup host: automatic, safe failover, end to end.
//!
//! One real etcd; two real `slashguard signer serve` processes (hosts `a`
//! and `b`) serving the same keys for the same baker, each reaching etcd
//! through a TCP proxy of its own (so that one can be cut off from etcd
//! alone); a baker-like client driving blocks, preattestations and
//! attestations at rising levels through both HTTP URLs: the signer that
//! signed last first, then the other. The bytes sent to each host differ
//! (another predecessor, branch and payload hash, as two baker hosts would
//! build them), so a (key, chain, kind, level, round) signed by both hosts
//! is a double signature.
//!
//! Scenarios: kill -9 of the active signer; SIGSTOP of the active signer
//! past its lease, then SIGCONT; the active signer cut off from etcd only.
//! Each asserts that
//! - no (key, chain, kind, level, round) is signed with two payloads: from
//!   the replies the client got AND from both servers' decision logs (which
//!   also show signatures whose reply never reached the client);
//! - every signature the client got verifies with the key's public key;
//! - the client's longest time without a signature stays under 4 leases +
//!   10 s (a generous bound: a failover takes about one lease);
//! - the signer that lost the baker signs nothing more and answers
//!   "standby: not the active signer" (503).

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
mod signer_support;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blake2::digest::{consts::U20, consts::U32, Digest};
use etcd_harness::EtcdCluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use signer_support::server::{attestation, block, hex, parse_http, HttpReply, Server, Setup};
use tcp_proxy::TcpProxy;

/// The baker's ownership lease.
const LEASE: Duration = Duration::from_secs(3);
/// The longest the client may go without a signature.
const GAP_BOUND: Duration = Duration::from_secs(4 * 3 + 10);
/// Every wait on a condition: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(120);
/// The client's HTTP timeout: a stopped signer never answers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Mainnet.
const CHAIN: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];
const CHAIN_B58: &str = "NetXdQprcVkpaWU";
const BAKER: &str = "failover-baker";
const HOSTS: [&str; 2] = ["host-a", "host-b"];
/// The bytes each host is asked to sign differ by this fill.
const VARIANT: [u8; 2] = [0xa1, 0xb2];

/// A chain the client never uses: the old active signer signs one
/// attestation on it, far ahead, before the fault; the new one must keep
/// to that mark.
const PROBE_CHAIN: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
const PROBE_LEVEL: u32 = 500_000;

/// One host at a time: each scenario runs an etcd and two signers, and the
/// machine has few cores.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------- hosts

struct Host {
    setup: Setup,
    proxy: TcpProxy,
    server: Option<Server>,
}

impl Host {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    fn config(&self, name: &str) -> PathBuf {
        let d = self.setup.dir.path().display();
        let text = format!(
            r#"instance = "{name}"
[etcd]
endpoints = ["{endpoint}"]
prefix = "/signer-failover"
timeout-ms = 2000
[signer]
secret-keys-file = "{d}/secret_keys"
password-file = "{d}/password"
store = "etcd"
allow-list-known-keys = true
[signer.ownership]
name = "{BAKER}"
lease-ttl-secs = {lease}
[signer.listen]
http = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
unix = ["{d}/signer.sock"]
[signer.limits]
request-timeout-ms = 6000
idle-timeout-ms = 6000
[[signer.keys]]
key = "baker1"
[[signer.keys]]
key = "baker2"
"#,
            endpoint = self.proxy.endpoint(),
            lease = LEASE.as_secs(),
        );
        let path = self.setup.path("slashguard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// An etcd, two hosts (not started) and the runtime of their proxies
/// (dropped in this order: the signers stop before etcd).
struct Rig {
    hosts: Vec<Host>,
    _etcd: EtcdCluster,
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    fn new() -> Rig {
        let etcd = EtcdCluster::single();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let upstream: SocketAddr = format!("127.0.0.1:{}", etcd.client_port(0))
            .parse()
            .unwrap();
        let hosts = (0..2)
            .map(|_| Host {
                setup: Setup::new(),
                proxy: rt.block_on(TcpProxy::start(upstream)),
                server: None,
            })
            .collect();
        Rig {
            hosts,
            _etcd: etcd,
            _rt: rt,
        }
    }

    fn start(&mut self, i: usize) {
        let config = self.hosts[i].config(HOSTS[i]);
        self.hosts[i].server = Some(Server::start(&config));
    }

    fn http(&self, i: usize) -> String {
        self.hosts[i].server().http.clone()
    }

    fn pid(&self, i: usize) -> i32 {
        self.hosts[i].server().pid()
    }

    /// Wait until host `i` logged `event` (bounded).
    fn wait_event(&self, i: usize, event: &str) -> Value {
        self.wait_event_since(i, event, 0)
    }

    /// Wait until host `i` logged `event` at `since_ms` (unix ms) or later.
    fn wait_event_since(&self, i: usize, event: &str, since_ms: u64) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = events(self.hosts[i].server())
                .into_iter()
                .find(|v| v["event"] == event && v["ts_ms"].as_u64().unwrap() >= since_ms)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {event:?}; log: {:#?}",
                HOSTS[i],
                self.hosts[i].server().log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start host `a`, wait until it signs for the baker, then host `b`
    /// (a standby).
    fn start_both(&mut self) {
        self.start(0);
        self.wait_event(0, "active");
        self.start(1);
        let h = get(&self.http(1), "/healthz").expect("host-b answers");
        assert_eq!(h.status, 503, "{}", h.body);
        assert!(h.body.contains("standby"), "{}", h.body);
    }
}

/// The wall clock in unix milliseconds, as the signers' logs stamp events.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn events(server: &Server) -> Vec<Value> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

// ---------------------------------------------------------------- http

/// One HTTP/1.1 request with bounded connect and read times.
fn request(addr: &str, method: &str, target: &str, body: &str) -> Result<HttpReply, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, CLIENT_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    if raw.is_empty() {
        return Err("connection closed without a reply".into());
    }
    Ok(parse_http(&raw))
}

fn get(addr: &str, target: &str) -> Result<HttpReply, String> {
    request(addr, "GET", target, "")
}

fn post_sign(addr: &str, pkh: &str, data: &[u8]) -> Result<HttpReply, String> {
    request(
        addr,
        "POST",
        &format!("/keys/{pkh}"),
        &format!("\"{}\"", hex(data)),
    )
}

// ---------------------------------------------------------------- keys

fn b58check(s: &str) -> Vec<u8> {
    bs58::decode(s).with_check(None).into_vec().unwrap()
}

/// A served key: its address and public key, as the signers give them,
/// the key checked to hash to the address.
#[derive(Clone)]
struct Key {
    pkh: String,
    /// 0 ed25519 (tz1), 1 secp256k1 (tz2).
    tag: u8,
    public: Vec<u8>,
    /// What this key signs.
    kinds: &'static [&'static str],
}

fn keys(addr: &str) -> Vec<Key> {
    let known = get(addr, "/known_keys").unwrap().json();
    let mut out = Vec::new();
    for pkh in known["known_keys"].as_array().unwrap() {
        let pkh = pkh.as_str().unwrap().to_string();
        let pk = get(addr, &format!("/keys/{pkh}")).unwrap().json();
        let pk = b58check(pk["public_key"].as_str().unwrap());
        let (tag, public) = match &pkh[..3] {
            "tz1" => (0, pk[4..].to_vec()),
            "tz2" => (1, pk[4..].to_vec()),
            other => panic!("unexpected key {other}"),
        };
        let hash: [u8; 20] = blake2::Blake2b::<U20>::digest(&public).into();
        assert_eq!(b58check(&pkh)[3..], hash, "{pkh} is its public key's hash");
        // The tz1 key bakes blocks too; the tz2 key only attests.
        let kinds: &'static [&'static str] = if tag == 0 {
            &["block", "preattestation", "attestation"]
        } else {
            &["preattestation", "attestation"]
        };
        out.push(Key {
            pkh,
            tag,
            public,
            kinds,
        });
    }
    assert_eq!(out.len(), 2, "two keys served");
    out
}

/// The payload a host is asked to sign.
fn payload(kind: &str, level: u32, variant: u8) -> Vec<u8> {
    match kind {
        "block" => {
            let mut b = block(CHAIN, level, 0);
            b[10..42].fill(variant); // the predecessor
            b
        }
        "preattestation" => attestation(0x12, CHAIN, level, 0, variant),
        "attestation" => attestation(0x13, CHAIN, level, 0, variant),
        _ => unreachable!(),
    }
}

/// `true` when `signature` is `key`'s Tezos signature of `data`
/// (blake2b-256 of the bytes, then the scheme).
fn verifies(key: &Key, data: &[u8], signature: &[u8]) -> bool {
    let digest: [u8; 32] = blake2::Blake2b::<U32>::digest(data).into();
    let Ok(sig) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    match key.tag {
        0 => {
            use ed25519_dalek::Verifier;
            let pk = ed25519_dalek::VerifyingKey::from_bytes(key.public[..].try_into().unwrap())
                .unwrap();
            pk.verify(&digest, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_ok()
        }
        _ => {
            use k256::ecdsa::signature::hazmat::PrehashVerifier;
            let pk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public).unwrap();
            match k256::ecdsa::Signature::from_slice(&sig) {
                Ok(s) => pk.verify_prehash(&digest, &s).is_ok(),
                Err(_) => false,
            }
        }
    }
}

// ---------------------------------------------------------------- baker

#[derive(Debug, Clone)]
enum Outcome {
    Signed(Vec<u8>),
    Refused(u16, String),
    NoReply(String),
}

#[derive(Debug, Clone)]
struct Attempt {
    seq: u64,
    host: usize,
    key: usize,
    kind: &'static str,
    level: u32,
    payload: Vec<u8>,
    outcome: Outcome,
    at: Instant,
}

#[derive(Default)]
struct BakerState {
    /// Requests numbered before they are sent.
    seq: u64,
    attempts: Vec<Attempt>,
    stop: bool,
}

/// A baker-like client on its own thread.
struct Baker {
    state: Arc<Mutex<BakerState>>,
    thread: Option<JoinHandle<()>>,
}

impl Baker {
    fn start(urls: [String; 2], keys: Vec<Key>) -> Baker {
        let state: Arc<Mutex<BakerState>> = Arc::default();
        let thread = std::thread::spawn({
            let state = state.clone();
            move || bake(urls, keys, state)
        });
        Baker {
            state,
            thread: Some(thread),
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().unwrap().attempts.clone()
    }

    fn signed_by(&self, host: usize, since: u64) -> usize {
        self.state
            .lock()
            .unwrap()
            .attempts
            .iter()
            .filter(|a| a.host == host && a.seq >= since && matches!(a.outcome, Outcome::Signed(_)))
            .count()
    }

    /// Wait until host `host` signed `n` requests numbered `since` or later.
    fn wait_signed(&self, host: usize, since: u64, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.signed_by(host, since) < n {
            assert!(
                Instant::now() < deadline,
                "{} signed only {} of {n} requests; last attempts: {:#?}",
                HOSTS[host],
                self.signed_by(host, since),
                self.attempts().iter().rev().take(12).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `n` requests were signed, by either host.
    fn wait_signed_any(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.signed_by(0, 0) + self.signed_by(1, 0) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests signed",
                self.signed_by(0, 0) + self.signed_by(1, 0)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `f` between two requests, given the host that signed last (the
    /// active one, as the client sees it), and return the number the next
    /// request will carry (every request numbered below was sent before)
    /// and that host.
    fn between_requests(&self, f: impl FnOnce(usize)) -> (u64, usize) {
        let s = self.state.lock().unwrap();
        let active = s
            .attempts
            .iter()
            .rev()
            .find(|a| matches!(a.outcome, Outcome::Signed(_)))
            .map_or(0, |a| a.host);
        f(active);
        (s.seq, active)
    }

    fn stop(mut self) -> Vec<Attempt> {
        self.state.lock().unwrap().stop = true;
        if let Some(t) = self.thread.take() {
            t.join().expect("the baker thread");
        }
        self.attempts()
    }
}

impl Drop for Baker {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
        }
    }
}

fn bake(urls: [String; 2], keys: Vec<Key>, state: Arc<Mutex<BakerState>>) {
    let mut preferred = 0;
    let mut level = 1000u32;
    loop {
        let mut signed = 0;
        for (k, key) in keys.iter().enumerate() {
            for &kind in key.kinds {
                for host in [preferred, 1 - preferred] {
                    let seq = {
                        let mut s = state.lock().unwrap();
                        if s.stop {
                            return;
                        }
                        s.seq += 1;
                        s.seq - 1
                    };
                    let data = payload(kind, level, VARIANT[host]);
                    let outcome = match post_sign(&urls[host], &key.pkh, &data) {
                        Ok(r) if r.status == 200 => {
                            let b = b58check(r.json()["signature"].as_str().unwrap());
                            Outcome::Signed(b[b.len() - 64..].to_vec())
                        }
                        Ok(r) => Outcome::Refused(r.status, r.body),
                        Err(e) => Outcome::NoReply(e),
                    };
                    let ok = matches!(outcome, Outcome::Signed(_));
                    state.lock().unwrap().attempts.push(Attempt {
                        seq,
                        host,
                        key: k,
                        kind,
                        level,
                        payload: data,
                        outcome,
                        at: Instant::now(),
                    });
                    if ok {
                        preferred = host;
                        signed += 1;
                        break;
                    }
                }
            }
        }
        level += 1;
        // A level every ~100 ms at most; slower while nobody signs (the
        // refusals come back at once).
        std::thread::sleep(Duration::from_millis(if signed == 0 { 200 } else { 100 }));
    }
}

// ---------------------------------------------------------------- checks

/// (key, chain, kind, level, round)
type Tuple = (String, String, String, u32, u32);

/// Every safety and liveness assertion over a finished run.
fn verdict(rig: &Rig, keys: &[Key], attempts: &[Attempt]) {
    // 1. The client's view: one payload per tuple, every signature valid.
    let mut by_tuple: BTreeMap<Tuple, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut signed = 0;
    for a in attempts {
        if let Outcome::Signed(sig) = &a.outcome {
            let key = &keys[a.key];
            assert!(
                verifies(key, &a.payload, sig),
                "{} returned a signature of {} {} {} that does not verify with {}",
                HOSTS[a.host],
                key.pkh,
                a.kind,
                a.level,
                key.pkh
            );
            by_tuple
                .entry((key.pkh.clone(), CHAIN_B58.into(), a.kind.into(), a.level, 0))
                .or_default()
                .insert(a.payload.clone());
            signed += 1;
        }
    }
    let doubles: Vec<_> = by_tuple.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "signed twice with other bytes: {doubles:?}"
    );

    // 2. The servers' view: a tuple signed by both hosts was signed with
    // two payloads (each host is only ever asked for its own variant).
    // (A repeat releases the signature stored with the mark: the same
    // bytes, whichever host first signed them.)
    let mut hosts_of: BTreeMap<Tuple, BTreeSet<usize>> = BTreeMap::new();
    for (i, h) in rig.hosts.iter().enumerate() {
        for d in h.server().decisions() {
            if d["outcome"] == "signed" && d["decision"] == "Advanced" {
                let t = (
                    d["key"].as_str().unwrap().to_string(),
                    d["chain"].as_str().unwrap().to_string(),
                    d["kind"].as_str().unwrap().to_string(),
                    d["level"].as_u64().unwrap() as u32,
                    d["round"].as_u64().unwrap() as u32,
                );
                hosts_of.entry(t).or_default().insert(i);
            }
        }
    }
    let doubles: Vec<_> = hosts_of.iter().filter(|(_, h)| h.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "signed by both hosts (two payloads): {doubles:?}"
    );
    assert!(
        hosts_of.len() >= by_tuple.len(),
        "every signature the client got is in a server's log"
    );

    // 3. Liveness: the longest stretch without a signature, from the
    // first one to the end of the run.
    let times: Vec<Instant> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Signed(_)))
        .map(|a| a.at)
        .collect();
    let end = attempts.last().map(|a| a.at).unwrap();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([end - *times.last().unwrap()])
        .max()
        .unwrap();
    let no_reply: Vec<&String> = attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::NoReply(e) => Some(e),
            _ => None,
        })
        .collect();
    println!(
        "{signed} signatures, {} tuples, longest time without a signature {gap:?}, {} requests without a reply {:?}",
        by_tuple.len(),
        no_reply.len(),
        no_reply.first()
    );
    assert!(
        gap <= GAP_BOUND,
        "the client went {gap:?} without a signature (bound {GAP_BOUND:?})"
    );
}

/// Host `i` refuses as a standby: HTTP 503 with an octez error trace
/// saying so, and the socket protocol's error reply, for new payloads and
/// for conflicting ones at levels already signed.
fn assert_standby(rig: &Rig, i: usize, keys: &[Key], levels: &[u32]) {
    let server = rig.hosts[i].server();
    for &level in levels {
        for key in keys {
            for &kind in key.kinds {
                let data = payload(kind, level, VARIANT[i]);
                let r = post_sign(&server.http, &key.pkh, &data).expect("an answer");
                assert_eq!(r.status, 503, "{} {kind} {level}: {}", HOSTS[i], r.body);
                let msg = r.trace_msg();
                assert!(
                    msg.contains("standby: not the active signer"),
                    "{}: {msg}",
                    HOSTS[i]
                );
            }
        }
    }
    // The socket protocol: an error reply (tag 1) with the same message.
    let key = keys.iter().find(|k| k.tag == 0).unwrap();
    let data = payload("attestation", levels[0], VARIANT[i]);
    let mut sock = signer_support::server::Sock::tcp(&server.tcp);
    let reply = sock.call(&signer_support::server::sign_request(&key.pkh, &data, None));
    assert_eq!(reply[0], 1, "an error reply");
    assert!(
        String::from_utf8_lossy(&reply).contains("standby: not the active signer"),
        "{reply:?}"
    );
    let h = get(&server.http, "/healthz").unwrap();
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.json()["ready"], false);
}

/// The levels the client reached.
fn levels(attempts: &[Attempt]) -> (u32, u32) {
    let lo = attempts.iter().map(|a| a.level).min().unwrap();
    let hi = attempts.iter().map(|a| a.level).max().unwrap();
    (lo, hi)
}

/// Before the fault: the active host `a` signs an attestation on the
/// probe chain, far above the client's levels. Its signature.
fn probe_before(rig: &Rig, keys: &[Key]) -> Vec<u8> {
    let data = attestation(0x13, PROBE_CHAIN, PROBE_LEVEL, 0, VARIANT[0]);
    let r = post_sign(&rig.http(0), &keys[0].pkh, &data).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let b = b58check(r.json()["signature"].as_str().unwrap());
    b[b.len() - 64..].to_vec()
}

/// After the failover: the new active host `new` keeps to what host `a`
/// signed before the fault, which it knows only from the shared
/// watermarks. Other bytes at that mark and below are refused (409); the
/// same bytes get the very signature host `a` released.
fn probe_after(rig: &Rig, keys: &[Key], new: usize, signed_by_a: &[u8]) {
    for level in [PROBE_LEVEL, PROBE_LEVEL - 1] {
        let data = attestation(0x13, PROBE_CHAIN, level, 0, 0xc3);
        let r = post_sign(&rig.http(new), &keys[0].pkh, &data).unwrap();
        assert_eq!(r.status, 409, "{} at {level}: {}", HOSTS[new], r.body);
    }
    let data = attestation(0x13, PROBE_CHAIN, PROBE_LEVEL, 0, VARIANT[0]);
    let r = post_sign(&rig.http(new), &keys[0].pkh, &data).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let b = b58check(r.json()["signature"].as_str().unwrap());
    assert_eq!(&b[b.len() - 64..], signed_by_a, "the stored signature");
}

fn healthy(rig: &Rig, i: usize) {
    let h = get(&rig.http(i), "/healthz").unwrap();
    assert_eq!(h.status, 200, "{}: {}", HOSTS[i], h.body);
    assert_eq!(h.json()["ready"], true);
}

// ---------------------------------------------------------------- tests

/// Both signers up (host `a` active, host `b` a standby), the probe
/// signed by host `a`, and the client signing through the active signer.
fn warmed_up() -> (Rig, Vec<Key>, Vec<u8>, Baker) {
    let mut rig = Rig::new();
    rig.start_both();
    healthy(&rig, 0);
    let keys = keys(&rig.http(0));
    let probe = probe_before(&rig, &keys);
    let baker = Baker::start([rig.http(0), rig.http(1)], keys.clone());
    baker.wait_signed_any(20);
    (rig, keys, probe, baker)
}

#[test]
fn kill_9_of_the_active_signer_the_backup_takes_over_within_the_lease() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (rig, keys, probe, baker) = warmed_up();

    let (killed, old) = baker.between_requests(|old| {
        kill(Pid::from_raw(rig.pid(old)), Signal::SIGKILL).unwrap();
    });
    let new = 1 - old;
    baker.wait_signed(new, killed, 20);
    let attempts = baker.stop();
    probe_after(&rig, &keys, new, &probe);
    healthy(&rig, new);
    verdict(&rig, &keys, &attempts);
}

#[test]
fn a_signer_stopped_past_its_lease_signs_nothing_after_it_resumes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (rig, keys, probe, baker) = warmed_up();

    // Stopped between two requests of the client, and seen stopped before
    // the client sends another: every request numbered from `stopped` on
    // reached it while it was stopped, or after.
    let mut pid = 0;
    let (stopped, old) = baker.between_requests(|old| {
        pid = rig.pid(old);
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        etcd_harness::wait_until_stopped(pid as u32);
    });
    let new = 1 - old;
    baker.wait_signed(new, stopped, 20);
    // Well past the stopped signer's lease (the other one only got the
    // baker once it expired).
    std::thread::sleep(LEASE);
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    // On resume it finds its lease gone, whatever it was doing.
    rig.wait_event(old, "fenced");
    baker.wait_signed(new, stopped, 30);
    let attempts = baker.stop();

    // Nothing that reached host-a from the stop on was signed: not the
    // requests queued while it was stopped, not the ones after.
    let late: BTreeSet<(String, String, u32)> = attempts
        .iter()
        .filter(|a| a.host == old && a.seq >= stopped)
        .map(|a| (keys[a.key].pkh.clone(), a.kind.to_string(), a.level))
        .collect();
    let signed_late: Vec<Value> = rig.hosts[old]
        .server()
        .decisions()
        .into_iter()
        .filter(|d| d["outcome"] == "signed")
        .filter(|d| {
            late.contains(&(
                d["key"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
                d["level"].as_u64().unwrap() as u32,
            ))
        })
        .collect();
    assert!(
        signed_late.is_empty(),
        "{} signed after it was stopped past its lease: {signed_late:#?}",
        HOSTS[old]
    );
    // What the client got back from host-a from the stop on: no reply
    // (stopped), or a standby refusal.
    for a in attempts
        .iter()
        .filter(|a| a.host == old && a.seq >= stopped)
    {
        match &a.outcome {
            Outcome::NoReply(_) => {}
            Outcome::Refused(503, body) if body.contains("standby: not the active signer") => {}
            other => panic!("{} answered {other:?} after it was stopped", HOSTS[old]),
        }
    }
    let refused_late = rig.hosts[old]
        .server()
        .decisions()
        .into_iter()
        .filter(|d| matches!(d["reason"].as_str(), Some("fenced" | "standby")))
        .count();
    assert!(
        refused_late > 0 || late.is_empty(),
        "the requests queued at the stopped signer were answered as fenced or standby"
    );
    // Asked directly now: conflicting bytes at levels host-b signed, and
    // new levels.
    let (lo, hi) = levels(&attempts);
    assert_standby(&rig, old, &keys, &[lo, (lo + hi) / 2, hi, hi + 1, hi + 50]);
    probe_after(&rig, &keys, new, &probe);
    healthy(&rig, new);
    verdict(&rig, &keys, &attempts);
}

#[test]
fn a_signer_cut_off_from_etcd_only_is_replaced_and_stays_fenced() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (rig, keys, probe, baker) = warmed_up();

    // The active signer still serves the client; only its way to etcd is
    // cut.
    let cut_ms = unix_ms();
    let (cut, old) = baker.between_requests(|old| rig.hosts[old].proxy.cut());
    let new = 1 - old;
    let new_active = rig.wait_event_since(new, "active", cut_ms);
    baker.wait_signed(new, cut, 20);
    let old_fenced = rig.wait_event_since(old, "fenced", cut_ms);
    // The cut-off signer signed nothing once the other one owned the baker
    // (it stops at its lease's safety margin, before the lease can expire
    // in etcd).
    let new_since = new_active["ts_ms"].as_u64().unwrap();
    let late: Vec<Value> = rig.hosts[old]
        .server()
        .decisions()
        .into_iter()
        .filter(|d| d["outcome"] == "signed" && d["ts_ms"].as_u64().unwrap() >= new_since)
        .collect();
    assert!(
        late.is_empty(),
        "{} signed after {} took the baker: {late:#?}",
        HOSTS[old],
        HOSTS[new]
    );
    assert!(
        old_fenced["ts_ms"].as_u64().unwrap() <= new_since + 2000 * LEASE.as_secs(),
        "the cut-off signer saw the loss: {old_fenced}"
    );
    let attempts_so_far = baker.attempts();
    let (lo, hi) = levels(&attempts_so_far);
    assert_standby(&rig, old, &keys, &[lo, hi, hi + 1]);
    probe_after(&rig, &keys, new, &probe);

    // etcd reachable again: the old signer stays a standby, the new one
    // keeps signing.
    rig.hosts[old].proxy.heal();
    let (healed, _) = baker.between_requests(|_| {});
    baker.wait_signed(new, healed, 20);
    let attempts = baker.stop();
    let (_, hi) = levels(&attempts);
    assert_standby(&rig, old, &keys, &[hi, hi + 1]);
    healthy(&rig, new);
    assert!(
        attempts
            .iter()
            .filter(|a| a.host == old && a.seq >= healed)
            .all(|a| !matches!(a.outcome, Outcome::Signed(_))),
        "the old signer signed nothing after the heal"
    );
    verdict(&rig, &keys, &attempts);
}

#[test]
fn sigterm_of_the_active_signer_releases_the_baker_after_its_last_signature() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (rig, keys, probe, baker) = warmed_up();

    // While the client signs through it.
    let (_, old) = baker.between_requests(|old| {
        kill(Pid::from_raw(rig.pid(old)), Signal::SIGTERM).unwrap();
    });
    let new = 1 - old;
    rig.wait_event(old, "stopped");
    let a_events = events(rig.hosts[old].server());
    let at = |name: &str| {
        a_events
            .iter()
            .position(|v| v["event"] == name)
            .unwrap_or_else(|| panic!("{} logged no {name:?}: {a_events:#?}", HOSTS[old]))
    };
    // In order: the signal, the release of the baker, the end; nothing
    // signed after the release.
    let (down, released, stopped) = (at("shutting_down"), at("released"), at("stopped"));
    assert!(down < released && released < stopped);
    assert!(
        a_events[released..]
            .iter()
            .all(|v| !(v["event"] == "sign" && v["outcome"] == "signed")),
        "the stopped signer signed after releasing the baker"
    );
    let down_ms = a_events[down]["ts_ms"].as_u64().unwrap();
    let new_active = rig.wait_event_since(new, "active", down_ms);
    println!(
        "{} signed for the baker {} ms after {} got SIGTERM (lease {LEASE:?})",
        HOSTS[new],
        new_active["ts_ms"].as_u64().unwrap() - down_ms,
        HOSTS[old]
    );
    let (since, _) = baker.between_requests(|_| {});
    baker.wait_signed(new, since, 20);
    let attempts = baker.stop();
    probe_after(&rig, &keys, new, &probe);
    healthy(&rig, new);
    verdict(&rig, &keys, &attempts);
}

#[test]
fn operator_commands_check_config_status_and_a_manual_takeover_with_a_margin() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut rig = Rig::new();
    rig.start(0);
    rig.wait_event(0, "active");
    let config = rig.hosts[1].config(HOSTS[1]);
    let out = signer_support::server::command()
        .args(["--json", "--config"])
        .arg(&config)
        .args(["signer", "check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["store"], "etcd", "{v}");
    assert_eq!(v["etcd"]["baker"], BAKER, "{v}");
    assert_eq!(v["etcd"]["owner"]["instance"], HOSTS[0], "{v}");
    assert_eq!(v["etcd"]["instance"], HOSTS[1], "{v}");

    // The operator's view of the same ownership, by the baker's name.
    let out = signer_support::server::command()
        .args(["--json", "--config"])
        .arg(&config)
        .args(["identity", "status", "--baker", BAKER])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["owner"]["instance"], HOSTS[0], "{s}");
    assert_eq!(s["node"], v["etcd"]["identity"], "{s}");

    // Ambiguous or incomplete store settings are refused (exit 4), naming
    // the fix.
    let text = std::fs::read_to_string(&config).unwrap();
    for (edit, expected) in [
        (
            text.replace(
                "store = \"etcd\"",
                "store = \"etcd\"\nwatermarks-file = \"/tmp/x\"",
            ),
            "remove watermarks-file",
        ),
        (
            text.replace(
                &format!("[signer.ownership]\nname = \"{BAKER}\"\nlease-ttl-secs = 3\n"),
                "",
            ),
            "needs [signer.ownership]",
        ),
        (
            text.replace("lease-ttl-secs = 3", "lease-ttl-secs = 0"),
            "lease-ttl-secs",
        ),
        (
            text.replace("store = \"etcd\"", "store = \"zookeeper\""),
            "zookeeper",
        ),
        (
            text.replace("store = \"etcd\"", ""),
            "is for store = \"etcd\"",
        ),
    ] {
        assert_ne!(edit, text, "the edit for {expected:?} changed the file");
        let path = rig.hosts[1].setup.path("bad.toml");
        std::fs::write(&path, &edit).unwrap();
        let out = signer_support::server::command()
            .arg("--config")
            .arg(&path)
            .args(["signer", "check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{expected}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // The seed's manual sequence, forced from the command line: hold the
    // baker (the signer is fenced), raise every key with a margin, let go
    // (the signer takes the baker again and keeps above the margin).
    let http = rig.http(0);
    let tz1 = keys(&http).into_iter().find(|k| k.tag == 0).unwrap();
    let signed = post_sign(&http, &tz1.pkh, &payload("attestation", 100, VARIANT[0])).unwrap();
    assert_eq!(signed.status, 200, "{}", signed.body);
    let mut hold = signer_support::server::command()
        .args(["--instance", "operator", "--config"])
        .arg(&config)
        .args(["identity", "take-over", "--baker", BAKER, "--hold"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    rig.wait_event(0, "fenced");
    let r = post_sign(&http, &tz1.pkh, &payload("attestation", 101, VARIANT[0])).unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    let out = signer_support::server::command()
        .arg("--config")
        .arg(&config)
        .args([
            "watermark",
            "set-level",
            "--etcd",
            "--chain",
            "mainnet",
            "--all",
        ])
        .args(["--level", "110"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kill(Pid::from_raw(hold.id() as i32), Signal::SIGTERM).unwrap();
    assert!(hold.wait().unwrap().success());
    let deadline = Instant::now() + DEADLINE;
    while events(rig.hosts[0].server())
        .iter()
        .filter(|v| v["event"] == "active")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "host-a never took the baker back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (level, status) in [(105, 409), (110, 409), (111, 200)] {
        let r = post_sign(&http, &tz1.pkh, &payload("attestation", level, VARIANT[0])).unwrap();
        assert_eq!(r.status, status, "level {level}: {}", r.body);
    }

    // --create has nothing to create in etcd.
    let out = signer_support::server::command()
        .arg("--config")
        .arg(&config)
        .args(["signer", "serve", "--create"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--create"));
}
