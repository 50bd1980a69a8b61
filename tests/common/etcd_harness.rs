//! Real etcd processes for tests and benches: a single node or an N-member
//! cluster of the Debian `etcd` binary (`/usr/bin/etcd`, or
//! `$SLASHGUARD_ETCD_BIN`) on free loopback ports, with temporary data
//! directories, optional mutual TLS exactly as the Solana failover procedure
//! configures it, and helpers to kill, restart, pause and resume members.
//!
//! Every process is started in its own process group and killed (group and
//! all) when the [`EtcdCluster`] is dropped, which also happens when a test
//! panics. Health and leadership are read over a plain-HTTP metrics listener
//! (`--listen-metrics-urls`), so the harness needs no TLS client of its own.
//!
//! Include it with `#[path = "common/etcd_harness.rs"] mod etcd_harness;`
//! (or `../tests/common/etcd_harness.rs` from a bench).
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Where the etcd binary is expected unless `SLASHGUARD_ETCD_BIN` says otherwise.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// The etcd binary to run. Panics, naming the fix, when it is missing: the
/// etcd tests must fail, not skip, on a machine without etcd.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("SLASHGUARD_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN));
    if !path.is_file() {
        panic!(
            "etcd not found at {}: install it with `apt-get install etcd-server` \
             (Debian, etcd 3.4), or point SLASHGUARD_ETCD_BIN at an etcd 3.4+ binary",
            path.display()
        );
    }
    path
}

/// Where `etcdctl` is expected unless `SLASHGUARD_ETCDCTL_BIN` says otherwise.
pub const DEFAULT_ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// The etcdctl binary (snapshots, deletes as an operator would type them).
/// Panics, naming the fix, when it is missing.
pub fn etcdctl_binary() -> PathBuf {
    let path = std::env::var_os("SLASHGUARD_ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCDCTL_BIN));
    if !path.is_file() {
        panic!(
            "etcdctl not found at {}: install it with `apt-get install etcd-client` \
             (Debian, etcd 3.4), or point SLASHGUARD_ETCDCTL_BIN at an etcdctl 3.4+ binary",
            path.display()
        );
    }
    path
}

/// Certificates for one test: a CA, a server certificate, a good client
/// certificate, a client certificate from another CA, an expired one and a
/// nearly expired one. All PEM files in one directory.
pub struct TestPki {
    /// The directory holding every file.
    pub dir: PathBuf,
    /// The CA that signs the server and the good client certificates.
    pub ca: PathBuf,
    /// Server certificate and key.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// A client certificate signed by `ca`.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by another CA.
    pub foreign_cert: PathBuf,
    /// Its key.
    pub foreign_key: PathBuf,
    /// The other CA.
    pub foreign_ca: PathBuf,
    /// A client certificate signed by `ca` that expired a day ago.
    pub expired_cert: PathBuf,
    /// Its key.
    pub expired_key: PathBuf,
    ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    /// Generate everything under `dir`. The server certificate carries the
    /// names in `server_names` (DNS names or IP addresses).
    pub fn generate(dir: &Path, server_names: &[&str]) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>,
                    names: &[&str],
                    server: bool,
                    validity: Option<(i64, i64)>| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(
                DnType::CommonName,
                if server { "etcd" } else { "validator" },
            );
            params.extended_key_usages = if server {
                // etcd's own gateway dials the server with this certificate.
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            } else {
                vec![ExtendedKeyUsagePurpose::ClientAuth]
            };
            if let Some((from, to)) = validity {
                params.not_before = unix_to_datetime(from);
                params.not_after = unix_to_datetime(to);
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_pem, ca_issuer) = ca("slashguard test CA");
        let (foreign_ca_pem, foreign_issuer) = ca("some other CA");
        let (server_pem, server_key) = leaf(&ca_issuer, server_names, true, None);
        let (client_pem, client_key) = leaf(&ca_issuer, &[], false, None);
        let (foreign_pem, foreign_key) = leaf(&foreign_issuer, &[], false, None);
        let now = now_unix();
        let (expired_pem, expired_key) = leaf(
            &ca_issuer,
            &[],
            false,
            Some((now - 30 * 86_400, now - 86_400)),
        );
        TestPki {
            dir: dir.to_path_buf(),
            ca: write("ca.pem", ca_pem),
            server_cert: write("etcd.pem", server_pem),
            server_key: write("etcd-key.pem", server_key),
            client_cert: write("validator.pem", client_pem),
            client_key: write("validator-key.pem", client_key),
            foreign_cert: write("foreign.pem", foreign_pem),
            foreign_key: write("foreign-key.pem", foreign_key),
            foreign_ca: write("foreign-ca.pem", foreign_ca_pem),
            expired_cert: write("expired.pem", expired_pem),
            expired_key: write("expired-key.pem", expired_key),
            ca_issuer,
        }
    }

    /// A client certificate signed by the test CA, valid from an hour ago
    /// until `valid_for` from now; returns (cert, key) paths.
    pub fn short_lived_client(&self, name: &str, valid_for: Duration) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = now_unix();
        params.not_before = unix_to_datetime(now - 3600);
        params.not_after = unix_to_datetime(now + valid_for.as_secs() as i64);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        let c = self.dir.join(format!("{name}.pem"));
        let k = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn unix_to_datetime(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of members (1 for a single node).
    pub members: usize,
    /// Serve clients over https with `--client-cert-auth`, as the Solana
    /// failover procedure does; the names are the server certificate's.
    pub tls_server_names: Option<Vec<String>>,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
}

impl ClusterOptions {
    /// `n` members, plain http.
    pub fn plain(n: usize) -> Self {
        ClusterOptions {
            members: n,
            tls_server_names: None,
            extra_args: Vec::new(),
        }
    }

    /// One member started as the Solana failover procedure starts it:
    /// mutual TLS and revision auto-compaction. The server certificate
    /// carries `names` (the procedure uses `localhost` and `127.0.0.1`).
    pub fn mutual_tls(names: &[&str]) -> Self {
        ClusterOptions {
            members: 1,
            tls_server_names: Some(names.iter().map(|s| s.to_string()).collect()),
            extra_args: [
                "--auto-compaction-retention",
                "2",
                "--auto-compaction-mode",
                "revision",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster (or single node). Dropping it kills every member.
pub struct EtcdCluster {
    // Dropped last (field order): the data directories outlive the processes.
    members: Vec<Member>,
    options: ClusterOptions,
    pki: Option<TestPki>,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// How long a member may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl EtcdCluster {
    /// A single plain-http node.
    pub fn single() -> EtcdCluster {
        Self::start(ClusterOptions::plain(1))
    }

    /// Start a cluster and wait until every member is healthy and a leader
    /// is elected. Ports are found by binding port 0; if etcd loses a race
    /// for one, the whole cluster is started again on new ports.
    pub fn start(options: ClusterOptions) -> EtcdCluster {
        let bin = etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("slashguard-etcd-")
            .tempdir()
            .unwrap();
        let pki = options.tls_server_names.as_ref().map(|names| {
            let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            TestPki::generate(&dir.path().join("pki"), &names)
        });
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            options,
            pki,
            bin,
            dir,
        };
        let mut last_failure = String::new();
        for attempt in 0..4 {
            cluster.kill_all();
            cluster.members = (0..cluster.options.members)
                .map(|i| {
                    let name = format!("m{i}-{attempt}");
                    Member {
                        data_dir: cluster.dir.path().join(&name),
                        log: cluster.dir.path().join(format!("{name}.log")),
                        name,
                        client_port: free_port(),
                        peer_port: free_port(),
                        metrics_port: free_port(),
                        child: None,
                    }
                })
                .collect();
            for i in 0..cluster.members.len() {
                cluster.spawn(i);
            }
            match cluster.wait_until(START_TIMEOUT, |c| c.all_healthy()) {
                Ok(()) => return cluster,
                Err(e) => {
                    let bind_race = (0..cluster.members.len())
                        .any(|i| cluster.log(i).contains("address already in use"));
                    last_failure = format!("{e}\n{}", cluster.logs());
                    if !bind_race {
                        break;
                    }
                }
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    fn spawn(&mut self, i: usize) {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", m.metrics_port))
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(format!("slashguard-test-{}", std::process::id()))
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(pki) = &self.pki {
            // Exactly the flags of the failover procedure.
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&pki.ca);
        }
        cmd.args(&self.options.extra_args);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.members[i].child = Some(child);
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The certificates, when started with TLS.
    pub fn pki(&self) -> &TestPki {
        self.pki.as_ref().expect("cluster started without TLS")
    }

    /// Client URL of member `i` (`http://127.0.0.1:port` or https).
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Process id of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(|c| c.id())
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL member `i` (a crash) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` and wait for it to exit (a clean stop).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start member `i` again on its ports with its data directory, and
    /// wait until it is healthy (it needs a quorum for that).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still runs");
        self.spawn(i);
        self.wait_until(START_TIMEOUT, |c| c.healthy(i))
            .unwrap_or_else(|e| panic!("member {i} did not come back: {e}\n{}", self.logs()));
    }

    /// Start member `i` again without waiting (use when it cannot be
    /// healthy alone, e.g. while restarting a majority).
    pub fn restart_no_wait(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still runs");
        self.spawn(i);
    }

    /// Wait until every running member is healthy.
    pub fn wait_healthy(&self) {
        self.wait_until(START_TIMEOUT, |c| c.all_healthy())
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Run `etcdctl <args>` against member `i` as an operator would (API
    /// v3, plain http only), and return its standard output. Panics with
    /// etcdctl's output when it fails.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> String {
        assert!(
            self.pki.is_none(),
            "etcdctl helper supports plain http only"
        );
        let out = Command::new(etcdctl_binary())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint(i)))
            .arg("--command-timeout=20s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `etcdctl snapshot save <path>` from member `i`.
    pub fn snapshot_save(&self, i: usize, path: &Path) {
        self.etcdctl(i, &["snapshot", "save", path.to_str().unwrap()]);
    }

    /// Replace the data of stopped member `i` (of a single-member cluster)
    /// with `snapshot`, as an operator restores a backup with Debian's etcd
    /// 3.4: `etcdctl snapshot restore` into a NEW data directory (which has
    /// no `--bump-revision`), which the member uses from its next
    /// [`restart`](Self::restart). Revisions restart from the snapshot's.
    pub fn restore_snapshot(&mut self, i: usize, snapshot: &Path) {
        assert_eq!(self.members.len(), 1, "restore is for a single member");
        assert!(self.members[i].child.is_none(), "stop member {i} first");
        let m = &self.members[i];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let data_dir = (0..)
            .map(|n| self.dir.path().join(format!("{}-restored-{n}", m.name)))
            .find(|d| !d.exists())
            .unwrap();
        let out = Command::new(etcdctl_binary())
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", m.name))
            .arg("--initial-cluster-token")
            .arg(format!("slashguard-test-{}", std::process::id()))
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl snapshot restore failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.members[i].data_dir = data_dir;
    }

    /// SIGSTOP member `i` (a hung process: connections stay open, nothing
    /// answers).
    pub fn pause(&self, i: usize) {
        let pid = self.pid(i).expect("member not running");
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        wait_until_stopped(pid);
    }

    /// SIGCONT member `i`.
    pub fn resume(&self, i: usize) {
        let pid = self.pid(i).expect("member not running");
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    }

    /// The index of the current leader among running members, waiting up to
    /// `timeout` for one.
    pub fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_some() {
                    if let Some(m) = self.http_get(i, "/metrics") {
                        if m.lines().any(|l| l.trim() == "etcd_server_is_leader 1") {
                            return i;
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("no etcd leader within {timeout:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `true` when member `i` answers its health check positively.
    pub fn healthy(&self, i: usize) -> bool {
        self.members[i].child.is_some()
            && self
                .http_get(i, "/health")
                .is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    fn all_healthy(&self) -> bool {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .all(|i| self.healthy(i))
    }

    fn wait_until(&self, timeout: Duration, ok: impl Fn(&Self) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ok(self) {
                return Ok(());
            }
            for (i, m) in self.members.iter().enumerate() {
                if let Some(child) = &m.child {
                    // A member that exited will never become healthy.
                    if nix::sys::wait::waitpid(
                        Pid::from_raw(child.id() as i32),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    )
                    .is_ok_and(|s| !matches!(s, nix::sys::wait::WaitStatus::StillAlive))
                    {
                        return Err(format!("etcd member {i} exited"));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("etcd not healthy within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn http_get(&self, i: usize, path: &str) -> Option<String> {
        let addr = ("127.0.0.1", self.members[i].metrics_port);
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    /// The Prometheus metrics text of member `i` (`/metrics` on its plain
    /// metrics listener), or `None` if it does not answer. The benches count
    /// requests per operation from its `grpc_server_started_total`.
    pub fn metrics(&self, i: usize) -> Option<String> {
        self.http_get(i, "/metrics")
    }

    /// The log of member `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let log = self.log(i);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- etcd member {i} ({}) log tail:\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kill(SIGSTOP)` returns before every thread of the target has stopped: a
/// thread running on another core finishes its time slice first, and under
/// load an "already paused" etcd (or node process) could still answer one
/// request. Wait until /proc shows every thread stopped (bounded: a test
/// that cannot pause a process fails here rather than later with a
/// misleading assertion).
pub fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie (it exited before the signal): nothing runs.
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let stopped = !tasks.is_empty()
            && tasks.iter().all(|t| {
                std::fs::read_to_string(t.join("stat"))
                    .ok()
                    .and_then(|st| {
                        st.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().starts_with(['T', 't', 'Z', 'X']))
                    })
                    .unwrap_or(true)
            });
        if stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop within 5 s of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
