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
//! Part 2, throughput: a daemon with 100 tz1 keys, 1, 4, 16 and 64 clients,
//! each on its own kept-alive HTTP connection, each signing attestations at
//! rising levels for its share of the keys, for a fixed time per point.
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
use server::{attestation, hex, sign_request, Server, Sock, MAINNET};

/// One kept-alive HTTP/1.1 connection, written against the protocol text.
struct Http {
    stream: TcpStream,
    addr: String,
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
            buf: Vec::with_capacity(4096),
        }
    }

    /// POST /keys/<pkh>; returns the status and the body.
    fn sign(&mut self, pkh: &str, data: &[u8]) -> (u16, String) {
        let body = format!("\"{}\"", hex(data));
        let req = format!(
            "POST /keys/{pkh} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).expect("send");
        self.read_reply()
    }

    fn read_reply(&mut self) -> (u16, String) {
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the signer closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .expect("content-length");
        while self.buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the signer closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + len]).to_string();
        (status, body)
    }
}

/// A signer configuration with `keys` (alias, edsk) on an HTTP, a TCP and a
/// Unix listener, and room for `connections` concurrent clients.
fn config(dir: &Path, keys: &[(String, String)], connections: usize) -> std::path::PathBuf {
    let d = dir.display();
    let secret: Vec<String> = keys
        .iter()
        .map(|(alias, sk)| format!(r#"{{"name":"{alias}","value":"unencrypted:{sk}"}}"#))
        .collect();
    std::fs::write(dir.join("secret_keys"), format!("[{}]", secret.join(","))).expect("keys");
    let mut text = format!(
        r#"[signer]
secret-keys-file = "{d}/secret_keys"
watermarks-file = "{d}/watermarks"
[signer.listen]
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
    let mut unix = Sock::unix(&daemon.unix);
    let (http_pkh, tcp_pkh, unix_pkh) = (keys[0].2.clone(), keys[1].2.clone(), keys[2].2.clone());

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
}

/// The next attestation level of the throughput runs: shared by every
/// client of every run, so each key's levels keep rising whichever client
/// thread signs for it.
static LEVEL: AtomicU32 = AtomicU32::new(1);

/// Signatures per second with `clients` concurrent kept-alive HTTP clients
/// over `keys`, for `secs` seconds.
fn throughput(addr: &str, keys: &[String], clients: usize, secs: u64) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let mine: Vec<String> = keys
                .iter()
                .enumerate()
                .filter(|(i, _)| i % clients == t)
                .map(|(_, k)| k.clone())
                .collect();
            let (stop, done, addr) = (stop.clone(), done.clone(), addr.to_string());
            std::thread::spawn(move || {
                let mut http = Http::connect(&addr);
                while !stop.load(Ordering::Relaxed) {
                    let level = LEVEL.fetch_add(1, Ordering::Relaxed);
                    for k in &mine {
                        let p = attestation(0x13, MAINNET, level, 0, (t % 251) as u8);
                        let (status, body) = http.sign(k, &p);
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
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    let n = done.load(Ordering::Relaxed);
    (n, n as f64 / start.elapsed().as_secs_f64())
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
    throughput(&daemon.http, &pkhs, 4, 2);
    let mut one = None;
    for clients in [1usize, 4, 16, 64] {
        let (n, rate) = throughput(&daemon.http, &pkhs, clients, 8);
        let base = *one.get_or_insert(rate);
        eprintln!(
            "{clients} clients: {n} signatures, {rate:.0}/s ({:.1}x one client)",
            rate / base
        );
        report.write_line(&serde_json::json!({
            "bench": "signer_daemon",
            "id": "throughput",
            "clients": clients,
            "keys": pkhs.len(),
            "signatures": n,
            "per_s": rate,
            "vs_one_client": rate / base,
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
