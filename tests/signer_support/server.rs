//! A real `slashguard signer serve` process on loopback ports, and minimal
//! HTTP and socket clients written against the protocol text (not against
//! the crate's own codecs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// bootstrap1 (tz1), plain.
pub const TZ1_SK: &str = "edsk3gUfUPyBSfrS9CCgmCiQsTCHGkviBDusMxDJstFtojtc1zcpsh";
pub const TZ1: &str = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
/// octez's encrypted secp256k1 vector (password `ahThie5H`).
pub const TZ2_ESK: &str =
    "spesk2CXQHDbzrcNatRzmg83Dto6kX6BWwpP2zGs4Zks9LDsXzaX6mAYRj5ZrrdgyZQap4DS9YRRLNSpaVC2TSsk";
pub const TZ2_SK: &str = "spsk24attf9uuQ7PUKFHxTm6E3TMqB6SPkFiMbXPBur7JNrvupW2xg";
pub const PASSWORD: &str = "ahThie5H";
/// Signatory's tz3 test key, plain.
pub const TZ3_SK: &str = "p2sk2rUMnnnFPQCB7DBozkCZrFhiZ87ddrpAHbRcww7dwU2WHYUbci";
pub const TZ3: &str = "tz3ZbCsUveF3Q6WUNkThT1wyJyhPunanaAXK";

pub const MAINNET: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];

/// Generous: the machine is shared and debug builds are slow.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A tz1/tz2/tz3 (pre)attestation: magic, chain, branch, tag, slot, level,
/// round, payload hash.
pub fn attestation(magic: u8, chain: [u8; 4], level: u32, round: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 80];
    p[0] = magic;
    p[1..5].copy_from_slice(&chain);
    p[37] = if magic == 0x12 { 0x14 } else { 0x15 };
    p[38..40].copy_from_slice(&[0, 1]);
    p[40..44].copy_from_slice(&level.to_be_bytes());
    p[44..48].copy_from_slice(&round.to_be_bytes());
    p
}

/// A Tenderbake block header: shell header with a 33-byte fitness
/// (version 02, level, no locked round, predecessor round 0, `round`),
/// then the protocol data (payload hash and round, proof-of-work nonce,
/// no seed nonce hash, per-block votes).
pub fn block(chain: [u8; 4], level: u32, round: u32) -> Vec<u8> {
    let mut p = vec![0u8; 83];
    p[0] = 0x11;
    p[1..5].copy_from_slice(&chain);
    p[5..9].copy_from_slice(&level.to_be_bytes());
    p[9] = 1; // proto level
    let mut fitness = vec![0, 0, 0, 1, 0x02, 0, 0, 0, 4];
    fitness.extend_from_slice(&level.to_be_bytes());
    fitness.extend_from_slice(&[0, 0, 0, 0]); // no locked round
    fitness.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]); // -1 - predecessor round
    fitness.extend_from_slice(&[0, 0, 0, 4]);
    fitness.extend_from_slice(&round.to_be_bytes());
    assert_eq!(fitness.len(), 33);
    p.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
    p.extend_from_slice(&fitness);
    p.extend_from_slice(&[0x42; 32]); // context
    p.extend_from_slice(&[0x24; 32]); // payload hash
    p.extend_from_slice(&round.to_be_bytes()); // payload round
    p.extend_from_slice(&[0; 8]); // proof-of-work nonce
    p.push(0); // no seed nonce hash
    p.push(0); // per-block votes
    p
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A temporary signer setup: the secret_keys file (tz1 plain, tz2
/// encrypted, tz3 plain), the password file, the watermark file.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = format!(
            r#"[{{"name":"baker1","value":"unencrypted:{TZ1_SK}"}},
               {{"name":"baker2","value":"encrypted:{TZ2_ESK}"}},
               {{"name":"baker3","value":"unencrypted:{TZ3_SK}"}}]"#
        );
        std::fs::write(dir.path().join("secret_keys"), keys).unwrap();
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        Setup { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config file: the base settings plus `extra` lines in [signer]
    /// and `keys` as [[signer.keys]] tables.
    pub fn config(&self, extra: &str, keys: &str) -> PathBuf {
        self.config_with_limits(extra, DEFAULT_LIMITS, keys)
    }

    /// As [`config`](Self::config), with `limits` as the body of the
    /// [signer.limits] table.
    pub fn config_with_limits(&self, extra: &str, limits: &str, keys: &str) -> PathBuf {
        let d = self.dir.path().display();
        let text = format!(
            r#"[signer]
secret-keys-file = "{d}/secret_keys"
password-file = "{d}/password"
watermarks-file = "{d}/watermarks"
{extra}
[signer.listen]
http = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
unix = ["{d}/signer.sock"]
[signer.limits]
{limits}
{keys}"#
        );
        let path = self.dir.path().join("slashguard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The [signer.limits] of [`Setup::config`].
pub const DEFAULT_LIMITS: &str = "max-body-bytes = 4096
max-connections = 16
request-timeout-ms = 3000
idle-timeout-ms = 3000";

pub const ALL_KEYS: &str = r#"
[[signer.keys]]
key = "baker1"
[[signer.keys]]
key = "baker2"
[[signer.keys]]
key = "baker3"
"#;

/// The binary with a clean environment.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slashguard"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLASHGUARD_") {
            c.env_remove(k);
        }
    }
    c
}

/// A running signer.
pub struct Server {
    child: Child,
    pub http: String,
    pub tcp: String,
    pub unix: PathBuf,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Start on an existing watermark file (see [`Server::create`]).
    pub fn start(config: &Path) -> Server {
        Self::spawn(config, false)
    }

    /// Start, creating the watermark file (first start).
    pub fn create(config: &Path) -> Server {
        Self::spawn(config, true)
    }

    fn spawn(config: &Path, create: bool) -> Server {
        Self::spawn_with(config, create, &[], &[])
    }

    /// Start with extra `signer serve` arguments and environment
    /// variables.
    pub fn spawn_with(config: &Path, create: bool, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = command()
            .arg("--config")
            .arg(config)
            .args(["signer", "serve"])
            .args(create.then_some("--create"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start slashguard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let (mut http, mut tcp, mut unix) = (None, None, None);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "the signer did not become ready; log: {:#?}",
                        log.lock().unwrap()
                    );
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match (v["event"].as_str(), v["transport"].as_str()) {
                (Some("listening"), Some("http")) => http = v["address"].as_str().map(String::from),
                (Some("listening"), Some("tcp")) => tcp = v["address"].as_str().map(String::from),
                (Some("listening"), Some("unix")) => {
                    unix = v["address"].as_str().map(PathBuf::from)
                }
                (Some("ready"), _) => break,
                _ => {}
            }
        }
        Server {
            child,
            http: http.expect("http address"),
            tcp: tcp.expect("tcp address"),
            unix: unix.expect("unix path"),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the signer did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sign decisions logged so far.
    pub fn decisions(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "sign")
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    /// The `msg` of the first error of an octez error trace.
    pub fn trace_msg(&self) -> String {
        let v = self.json();
        assert_eq!(v[0]["kind"], "temporary", "{v}");
        assert_eq!(v[0]["id"], "failure", "{v}");
        v[0]["msg"].as_str().unwrap().to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn http(addr: &str, method: &str, target: &str, body: Option<&str>) -> HttpReply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_http(&raw)
}

pub fn parse_http(raw: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string());
    HttpReply {
        status,
        content_type,
        body: body.to_string(),
    }
}

pub fn sign_http(addr: &str, pkh: &str, data: &[u8]) -> HttpReply {
    http(
        addr,
        "POST",
        &format!("/keys/{pkh}"),
        Some(&format!("\"{}\"", hex(data))),
    )
}

/// A socket connection (TCP or Unix).
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn tcp(addr: &str) -> Sock {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Sock::Tcp(s)
    }
    pub fn unix(path: &Path) -> Sock {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Sock::Unix(s)
    }
    pub fn send_raw(&mut self, bytes: &[u8]) {
        match self {
            Sock::Tcp(s) => s.write_all(bytes).unwrap(),
            Sock::Unix(s) => s.write_all(bytes).unwrap(),
        }
    }
    /// Read one reply frame's payload; `None` when the server closed.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        let r: &mut dyn Read = match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
        };
        r.read_exact(&mut len).ok()?;
        let mut payload = vec![0u8; u16::from_be_bytes(len) as usize];
        r.read_exact(&mut payload).ok()?;
        Some(payload)
    }
    /// Send one request frame and read the reply frame.
    pub fn call(&mut self, request: &[u8]) -> Vec<u8> {
        let mut f = (request.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(request);
        self.send_raw(&f);
        self.read_frame().expect("a reply frame")
    }
}

/// The 21-byte binary key hash of a `tz...` address.
pub fn pkh21(tz: &str) -> Vec<u8> {
    let raw = bs58::decode(tz).with_check(None).into_vec().unwrap();
    let tag = match &tz[..3] {
        "tz1" => 0,
        "tz2" => 1,
        "tz3" => 2,
        "tz4" => 3,
        _ => panic!("{tz}"),
    };
    let mut v = vec![tag];
    v.extend_from_slice(&raw[3..]);
    v
}

/// A Sign request (tag 0) for a tz1..tz3 key.
pub fn sign_request(tz: &str, data: &[u8], auth: Option<&[u8]>) -> Vec<u8> {
    let mut r = vec![0];
    r.extend_from_slice(&pkh21(tz));
    r.extend_from_slice(&(data.len() as u32).to_be_bytes());
    r.extend_from_slice(data);
    if let Some(a) = auth {
        r.extend_from_slice(a);
    }
    r
}
