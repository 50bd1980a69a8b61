//! `signer_daemon`: what the `slashguard signer` daemon adds on top of the
//! library, and how it scales with concurrent bakers.
//!
//! Part 1, one interleaved pass (every operation once per round, in a
//! shuffled order, so disk drift hits every row alike):
//! - `inproc_sign` (baseline): `GuardedSigner::sign` in this process on a
//!   `FileWatermarks` store with a tz1 key: parse, authorize (one write and
//!   one `fdatasync`), ed25519 signature;
//! - `http_sign`: the same request through a real `slashguard signer serve`
//!   process: `POST /keys/<pkh>` on a kept-alive HTTP/1.1 connection;
//! - `tcp_sign`, `unix_sign`: the octez socket protocol (a Sign frame) over
//!   TCP and over the Unix socket.
//!
//! Each transport signs with its own tz1 key (its own watermark entry), so
//! every call advances a level and pays one durable write, like the
//! baseline. The issue's budget: HTTP p50 at most 100 us above the baseline,
//! the socket protocol at most 60 us.
//!
//! With the `etcd` feature, in the same pass: `etcd_http_sign`, the HTTP
//! request on a daemon whose watermarks are in a single-node etcd started
//! for the bench (active owner of its baker), against the raw baselines
//! `d_txn` (one etcd transaction with one compare, see `common::etcd`) and
//! `sign_only` (the ed25519 signature of the same bytes in this process,
//! no store). The issue's budget: `etcd_http_sign` p50 at most 1.2x
//! `d_txn` + `sign_only`.
//!
//! Part 2, throughput: a daemon with 100 tz1 keys, 1, 4, 16 and 64 clients,
//! each on its own kept-alive HTTP connection, each signing attestations at
//! rising levels for its share of the keys: 8 rounds of a 1 s slice per
//! point, interleaved (forward then backward order) so that a shared
//! machine's drift hits every point alike.
//! The clients are tasks of ONE client thread (a current-thread tokio
//! runtime), not one OS thread each: on a 2-core machine 64 blocking client
//! threads would spend the daemon's CPU on their own context switches. Each
//! connection still has one request outstanding at a time, as a baker's.
//!
//! The clients build their requests without allocating per byte and parse
//! replies as bytes: the time measured is the daemon's, not the client's
//! formatting. The daemon does everything it does for a baker (policy,
//! durable watermark before the reply, the decision log line, metrics).
//!
//! Run: `cargo bench --features signer --bench signer_daemon`.

mod common;

#[path = "../tests/signer_support/server.rs"]
#[allow(dead_code)]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use slashguard::file::FileWatermarks;
use slashguard::keys::SoftwareKey;
use slashguard::watermark::Curve;
use slashguard::GuardedSigner;

use common::{Op, Report, Role, Rounds, Scratch};
use server::{attestation, sign_request, Server, Sock, MAINNET};

/// Append the request `POST /keys/<pkh>` with the JSON hex body of `data`
/// to `out` (a lookup table, no allocation per byte).
fn sign_http_request(out: &mut Vec<u8>, addr: &str, pkh: &str, data: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    out.extend_from_slice(b"POST /keys/");
    out.extend_from_slice(pkh.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(addr.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice((2 * data.len() + 2).to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n\"");
    for b in data {
        out.push(D[(b >> 4) as usize]);
        out.push(D[(b & 15) as usize]);
    }
    out.push(b'"');
}

/// If `buf` holds a whole HTTP reply: its status, body range and length.
fn parse_reply(buf: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .expect("status");
    let len: usize = head
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&l[colon + 1..]).ok())?
        })
        .find_map(|v| v.trim().parse().ok())
        .expect("content-length");
    (buf.len() >= head_end + len).then_some((status, head_end..head_end + len))
}

/// One kept-alive HTTP/1.1 connection, written against the protocol text.
struct Http {
    stream: TcpStream,
    addr: String,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl Http {
    fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Http {
            stream,
            addr: addr.to_string(),
            req: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
        }
    }

    /// POST /keys/<pkh>; returns the status and the body.
    fn sign(&mut self, pkh: &str, data: &[u8]) -> (u16, String) {
        sign_http_request(&mut self.req, &self.addr, pkh, data);
        self.stream.write_all(&self.req).expect("send");
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((status, body)) = parse_reply(&self.buf) {
                return (
                    status,
                    String::from_utf8_lossy(&self.buf[body]).into_owned(),
                );
            }
            // Retried on EINTR: the etcd harness's signal handlers may
            // interrupt a blocking read.
            let n = match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.expect("read"),
            };
            assert!(n > 0, "the signer closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The same client as [`Http`] for the throughput runs: a task of the
/// client thread's runtime.
struct AsyncHttp {
    stream: tokio::net::TcpStream,
    addr: String,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl AsyncHttp {
    async fn connect(addr: &str) -> AsyncHttp {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        AsyncHttp {
            stream,
            addr: addr.to_string(),
            req: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
        }
    }

    /// POST /keys/<pkh>; returns the status (and the body when not 200).
    async fn sign(&mut self, pkh: &str, data: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        sign_http_request(&mut self.req, &self.addr, pkh, data);
        self.stream.write_all(&self.req).await.expect("send");
        self.buf.clear();
        loop {
            if let Some((status, body)) = parse_reply(&self.buf) {
                let body = if status == 200 {
                    String::new()
                } else {
                    String::from_utf8_lossy(&self.buf[body]).into_owned()
                };
                return (status, body);
            }
            let n = self.stream.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "the signer closed the connection");
        }
    }
}

/// A signer configuration with `keys` (alias, edsk) on an HTTP, a TCP and a
/// Unix listener, and room for `connections` concurrent clients, with its
/// watermarks in a file.
fn config(dir: &Path, keys: &[(String, String)], connections: usize) -> std::path::PathBuf {
    let d = dir.display();
    config_with(
        dir,
        "",
        &format!("watermarks-file = \"{d}/watermarks\"\n"),
        keys,
        connections,
    )
}

/// As [`config`], with `head` before the `[signer]` table and `store`
/// (the watermark store's lines) in it.
fn config_with(
    dir: &Path,
    head: &str,
    store: &str,
    keys: &[(String, String)],
    connections: usize,
) -> std::path::PathBuf {
    let d = dir.display();
    let secret: Vec<String> = keys
        .iter()
        .map(|(alias, sk)| format!(r#"{{"name":"{alias}","value":"unencrypted:{sk}"}}"#))
        .collect();
    std::fs::write(dir.join("secret_keys"), format!("[{}]", secret.join(","))).expect("keys");
    let mut text = format!(
        r#"{head}[signer]
secret-keys-file = "{d}/secret_keys"
{store}[signer.listen]
http = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
unix = ["{d}/signer.sock"]
[signer.limits]
max-connections = {connections}
# The bench opens its connections before criterion's own pass over the
# in-process baseline: they stay silent for seconds, which the default
# first-request deadline (2 s) would rightly close.
first-request-timeout-ms = 600000
request-timeout-ms = 60000
idle-timeout-ms = 600000
"#
    );
    for (alias, _) in keys {
        text.push_str(&format!("[[signer.keys]]\nkey = \"{alias}\"\n"));
    }
    let path = dir.join("slashguard.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn tz1_keys(n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let k = SoftwareKey::generate(Curve::Ed25519).expect("key");
            (
                format!("key{i}"),
                k.to_b58().to_string(),
                k.public_key().hash().to_string(),
            )
        })
        .collect()
}

fn overhead(c: &mut Criterion, report: &mut Report) {
    let scratch = Scratch::new("signer_server");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // The in-process baseline on the same disk.
    let base_key = SoftwareKey::generate(Curve::Ed25519).expect("key");
    let store = FileWatermarks::create(scratch.sub("inproc").join("watermarks")).expect("store");
    let inproc = GuardedSigner::new(store, base_key);

    let keys = tz1_keys(3);
    let daemon_dir = scratch.sub("daemon");
    let cfg = config(
        &daemon_dir,
        &keys
            .iter()
            .map(|(a, sk, _)| (a.clone(), sk.clone()))
            .collect::<Vec<_>>(),
        16,
    );
    let daemon = Server::create(&cfg);
    let mut http = Http::connect(&daemon.http);
    let mut tcp = Sock::tcp(&daemon.tcp);
    // As the daemon does on its side: requests are one write each.
    if let Sock::Tcp(s) = &tcp {
        s.set_nodelay(true).expect("nodelay");
    }
    let mut unix = Sock::unix(&daemon.unix);
    let (http_pkh, tcp_pkh, unix_pkh) = (keys[0].2.clone(), keys[1].2.clone(), keys[2].2.clone());

    // The etcd rows: a daemon that owns its baker in a bench etcd, the raw
    // transaction and the bare signature (see the module docs).
    #[cfg(feature = "etcd")]
    let etcd_rt = common::etcd::runtime();
    #[cfg(feature = "etcd")]
    let etcd = common::etcd::Etcd::plain();
    #[cfg(feature = "etcd")]
    let etcd_daemon = etcd_daemon(&scratch, &etcd);
    let (mut l_in, mut l_http, mut l_tcp, mut l_unix) = (0u32, 0u32, 0u32, 0u32);
    let mut ops = vec![
        Op::new(
            "inproc_sign",
            "in process: GuardedSigner::sign (parse + authorize + ed25519), FileWatermarks",
            Role::Baseline("inproc"),
            |laps| {
                l_in += 1;
                let p = attestation(0x13, MAINNET, l_in, 0, 0x11);
                laps.time(|| rt.block_on(inproc.sign(&p))).expect("sign");
            },
        ),
        Op::new(
            "http_sign",
            "daemon: POST /keys/<pkh> over kept-alive HTTP/1.1",
            Role::Slashguard,
            |laps| {
                l_http += 1;
                let p = attestation(0x13, MAINNET, l_http, 0, 0x22);
                let (status, body) = laps.time(|| http.sign(&http_pkh, &p));
                assert_eq!(status, 200, "{body}");
            },
        ),
        Op::new(
            "tcp_sign",
            "daemon: socket Sign frame over TCP",
            Role::Slashguard,
            |laps| {
                l_tcp += 1;
                let req = sign_request(&tcp_pkh, &attestation(0x13, MAINNET, l_tcp, 0, 0x33), None);
                let reply = laps.time(|| tcp.call(&req));
                assert_eq!(reply[0], 0, "socket refusal: {reply:?}");
            },
        ),
        Op::new(
            "unix_sign",
            "daemon: socket Sign frame over the Unix socket",
            Role::Slashguard,
            |laps| {
                l_unix += 1;
                let req = sign_request(
                    &unix_pkh,
                    &attestation(0x13, MAINNET, l_unix, 0, 0x44),
                    None,
                );
                let reply = laps.time(|| unix.call(&req));
                assert_eq!(reply[0], 0, "socket refusal: {reply:?}");
            },
        ),
    ];
    #[cfg(feature = "etcd")]
    {
        let (pkh, key) = (etcd_daemon.1.clone(), &etcd_daemon.2);
        let mut client = Http::connect(&etcd_daemon.0.http);
        let mut level = 0u32;
        ops.push(Op::new(
            "etcd_http_sign",
            "daemon on etcd: POST /keys/<pkh> over kept-alive HTTP/1.1",
            Role::Slashguard,
            move |laps| {
                level += 1;
                let p = attestation(0x13, MAINNET, level, 0, 0x55);
                let (status, body) = laps.time(|| client.sign(&pkh, &p));
                assert_eq!(status, 200, "{body}");
            },
        ));
        let mut level = 0u32;
        ops.push(Op::new(
            "sign_only",
            "in process: the ed25519 signature alone (no store)",
            Role::Baseline("sign_only"),
            move |laps| {
                level += 1;
                let p = attestation(0x13, MAINNET, level, 0, 0x66);
                let sig = laps.time(|| key.sign_bytes(&p));
                assert_eq!(sig.len(), 64);
            },
        ));
        // The raw transaction only (its put-only sibling is not compared).
        let value = common::filler(200, 12);
        let value: &'static [u8] = Box::leak(value.into_boxed_slice());
        ops.extend(
            common::etcd::raw_ops(&etcd_rt, &etcd, value, "signer")
                .into_iter()
                .filter(|op| op.id == "d_txn"),
        );
    }
    common::run_ops(
        c,
        "signer_daemon",
        report,
        &mut ops,
        Rounds {
            budget: Duration::from_secs(30),
            warm_up: 50,
            min: 200,
            max: 5_000,
        },
    );
    drop(ops);
    drop(daemon);
    #[cfg(feature = "etcd")]
    drop(etcd_daemon);
}

/// A daemon with one tz1 key whose watermarks are in `etcd`, once it is
/// the active signer of its baker; with the key's hash and the key.
#[cfg(feature = "etcd")]
fn etcd_daemon(scratch: &Scratch, etcd: &common::etcd::Etcd) -> (Server, String, SoftwareKey) {
    let key = SoftwareKey::generate(Curve::Ed25519).expect("key");
    let pkh = key.public_key().hash().to_string();
    let dir = scratch.sub("etcd-daemon");
    let head = format!(
        "instance = \"bench-a\"\n[etcd]\nendpoints = [\"{}\"]\nprefix = \"/bench-signer\"\ntimeout-ms = {}\n",
        etcd.cluster.endpoint(0),
        common::etcd::BENCH_DEADLINE.as_millis()
    );
    let store =
        "store = \"etcd\"\n[signer.ownership]\nname = \"bench-baker\"\nlease-ttl-secs = 10\n";
    let cfg = config_with(
        &dir,
        &head,
        store,
        &[("etcdkey".to_string(), key.to_b58().to_string())],
        16,
    );
    // No `--create` with etcd: there is no file to make.
    let daemon = Server::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !daemon
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.contains("\"event\":\"active\""))
    {
        assert!(
            Instant::now() < deadline,
            "the etcd signer never became active; log: {:#?}",
            daemon.log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, pkh, key)
}

/// The next attestation level of the throughput runs: shared by every
/// client of every run, so each key's levels keep rising whichever client
/// thread signs for it.
static LEVEL: AtomicU32 = AtomicU32::new(1);

/// Signatures per second with `clients` concurrent kept-alive HTTP clients
/// over `keys`, for `time` (every client a task of one thread): the
/// signatures counted and the time they took.
fn throughput(addr: &str, keys: &[String], clients: usize, time: Duration) -> (u64, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        // Every connection open before the clock starts.
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(AsyncHttp::connect(addr).await);
        }
        let start = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(t, mut http)| {
                let mine: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % clients == t)
                    .map(|(_, k)| k.clone())
                    .collect();
                let (stop, done) = (stop.clone(), done.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let level = LEVEL.fetch_add(1, Ordering::Relaxed);
                        let p = attestation(0x13, MAINNET, level, 0, (t % 251) as u8);
                        for k in &mine {
                            let (status, body) = http.sign(k, &p).await;
                            assert_eq!(status, 200, "{body}");
                            done.fetch_add(1, Ordering::Relaxed);
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(time).await;
        stop.store(true, Ordering::Relaxed);
        // Counted up to the stop: the requests still in flight then are
        // answered but not counted (nor timed).
        let n = done.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        for t in tasks {
            t.await.expect("client");
        }
        (n, elapsed)
    })
}

fn scaling(report: &mut Report) {
    if !common::is_bench_run() {
        return;
    }
    let scratch = Scratch::new("signer_scaling");
    let keys = tz1_keys(100);
    let dir = scratch.sub("daemon");
    let cfg = config(
        &dir,
        &keys
            .iter()
            .map(|(a, sk, _)| (a.clone(), sk.clone()))
            .collect::<Vec<_>>(),
        128,
    );
    let daemon = Server::create(&cfg);
    let pkhs: Vec<String> = keys.iter().map(|k| k.2.clone()).collect();
    // Warm up every key once (first write of each entry).
    throughput(&daemon.http, &pkhs, 4, Duration::from_secs(2));
    // Interleaved, like part 1: round after round, each client count for a
    // short slice (forward, then backward order), so that the load of a
    // shared machine drifts over every point alike and the ratios hold.
    const POINTS: [usize; 4] = [1, 4, 16, 64];
    const ROUNDS: usize = 8;
    const SLICE: Duration = Duration::from_secs(1);
    let mut totals = [(0u64, Duration::ZERO); POINTS.len()];
    for round in 0..ROUNDS {
        for k in 0..POINTS.len() {
            let i = if round % 2 == 0 {
                k
            } else {
                POINTS.len() - 1 - k
            };
            let (n, t) = throughput(&daemon.http, &pkhs, POINTS[i], SLICE);
            totals[i].0 += n;
            totals[i].1 += t;
        }
    }
    let rate = |i: usize| totals[i].0 as f64 / totals[i].1.as_secs_f64();
    let base = rate(0);
    for (i, clients) in POINTS.iter().enumerate() {
        let (n, r) = (totals[i].0, rate(i));
        eprintln!(
            "{clients} clients: {n} signatures, {r:.0}/s ({:.1}x one client)",
            r / base
        );
        report.write_line(&serde_json::json!({
            "bench": "signer_daemon",
            "id": "throughput",
            "clients": clients,
            "keys": pkhs.len(),
            "signatures": n,
            "per_s": r,
            "vs_one_client": r / base,
            "rounds": ROUNDS,
            "slice_ms": SLICE.as_millis() as u64,
            "loadavg": common::loadavg(),
        }));
    }
}

fn bench(c: &mut Criterion) {
    let mut report = Report::new("signer_daemon", false, None);
    overhead(c, &mut report);
    scaling(&mut report);
    if common::is_bench_run() {
        eprintln!("results: {}", report.file().display());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
