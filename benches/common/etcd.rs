//! The etcd part of the benches (feature `etcd`): a real single-node etcd
//! started by the test harness, plain and with mutual TLS, the raw
//! `etcd-client` baselines (d), and a count of the requests each operation
//! sends, read from etcd's own gRPC metrics.
//!
//! Baselines (d), same bytes, same etcd, same runtime as the slashguard rows:
//! - `d_put`: one raw put of the value;
//! - `d_txn`: one raw transaction with one compare (the key's
//!   `mod_revision` equals the one the previous put returned), then the put:
//!   the least an etcd compare-and-set can cost, i.e. one round trip and one
//!   etcd commit (WAL append and fsync).
//!
//! The etcd data directories are on the same disk as the bench scratch
//! directory (the harness creates them under the temp directory; if that is
//! a tmpfs, etcd's fsync costs nothing, which the log line says).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, TlsOptions, Txn, TxnOp,
};
use slashguard::etcd::{EtcdClient, EtcdConfig};

use super::etcd_harness::{ClusterOptions, EtcdCluster};
use super::{FsInfo, Laps, Op, Report, Role};

/// A generous request deadline: on a shared 2-core machine a load spike
/// must not turn into an `Unavailable` error (which would abort the bench).
pub const BENCH_DEADLINE: Duration = Duration::from_secs(2);

/// The runtime of every etcd row, slashguard and raw alike: one worker
/// thread keeps the ownership's lease keep-alive and the gRPC connections
/// running while the bench thread is busy with the disk rows (a
/// current-thread runtime would only run them inside an etcd row, and the
/// lease would expire during the criterion pass of the other rows).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("etcd runtime")
}

/// One running etcd and how to reach it.
pub struct Etcd {
    /// `etcd` or `etcd_tls`: the prefix of its row ids.
    pub name: &'static str,
    /// `_tls` for the TLS etcd, empty otherwise: the suffix of its baseline tags.
    pub suffix: &'static str,
    pub cluster: EtcdCluster,
    config: EtcdConfig,
}

impl Etcd {
    /// Start a single plain-http node.
    pub fn plain() -> Etcd {
        let cluster = EtcdCluster::start(ClusterOptions::plain(1));
        let config = EtcdConfig::builder(cluster.endpoints())
            .key_prefix("/bench")
            .request_deadline(BENCH_DEADLINE)
            .build()
            .expect("etcd config");
        Self::announce("etcd", &cluster);
        Etcd {
            name: "etcd",
            suffix: "",
            cluster,
            config,
        }
    }

    /// Start a single node with mutual TLS, as the Solana failover
    /// procedure configures it.
    pub fn mutual_tls() -> Etcd {
        let cluster = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
        let pki = cluster.pki();
        let config = EtcdConfig::builder([format!("127.0.0.1:{}", cluster.client_port(0))])
            .ca_file(&pki.ca)
            .client_cert(&pki.client_cert, &pki.client_key)
            .key_prefix("/bench")
            .request_deadline(BENCH_DEADLINE)
            .build()
            .expect("etcd TLS config");
        Self::announce("etcd_tls", &cluster);
        Etcd {
            name: "etcd_tls",
            suffix: "_tls",
            cluster,
            config,
        }
    }

    fn announce(name: &str, cluster: &EtcdCluster) {
        eprintln!(
            "{name}: {} (data on {})",
            cluster.endpoint(0),
            FsInfo::of(cluster.scratch_dir()).describe()
        );
    }

    /// A slashguard client (connected: the first request is not timed).
    pub fn client(&self, rt: &tokio::runtime::Runtime) -> EtcdClient {
        rt.block_on(EtcdClient::connect(self.config.clone()))
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.name))
    }

    /// A raw `etcd-client` connection with the same endpoint, TLS material
    /// and leader requirement as the slashguard client.
    pub fn raw_client(&self, rt: &tokio::runtime::Runtime) -> Client {
        let mut options = ConnectOptions::new().with_require_leader(true);
        if self.config.uses_tls() {
            let pki = self.cluster.pki();
            let read = |p: &std::path::Path| std::fs::read(p).expect("read a bench certificate");
            options = options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&pki.ca)))
                    .identity(Identity::from_pem(
                        read(&pki.client_cert),
                        read(&pki.client_key),
                    )),
            );
        }
        rt.block_on(Client::connect(self.config.endpoints(), Some(options)))
            .unwrap_or_else(|e| panic!("{}: raw connect: {e}", self.name))
    }

    /// Unary gRPC requests etcd has started, by method (`Txn`, `Range`,
    /// `Put`, `LeaseGrant`...), from its metrics listener. Streams (the
    /// lease keep-alive, watches) count once when opened, not per message.
    pub fn unary_requests(&self) -> BTreeMap<String, u64> {
        let text = self
            .cluster
            .metrics(0)
            .unwrap_or_else(|| panic!("{}: cannot read etcd's /metrics", self.name));
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("grpc_server_started_total{") else {
                continue;
            };
            if !rest.contains("grpc_type=\"unary\"") {
                continue;
            }
            let method = rest
                .split("grpc_method=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("?");
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a metric value");
            *out.entry(method.to_string()).or_insert(0) += value as u64;
        }
        out
    }
}

/// The raw baselines (d) on `etcd`: a put and a one-compare transaction of
/// `value` under their own keys.
pub fn raw_ops<'a>(
    rt: &'a tokio::runtime::Runtime,
    etcd: &Etcd,
    value: &'a [u8],
    what: &str,
) -> Vec<Op<'a>> {
    let (put_tag, txn_tag) = if etcd.suffix.is_empty() {
        ("d_put", "d_txn")
    } else {
        ("d_put_tls", "d_txn_tls")
    };
    let transport = if etcd.suffix.is_empty() {
        "etcd"
    } else {
        "etcd, mutual TLS"
    };
    let put_client = etcd.raw_client(rt);
    let txn_client = put_client.clone();
    let put_key = format!("/bench-raw/{what}/put");
    let txn_key = format!("/bench-raw/{what}/txn");
    // The first put creates the key, so every timed transaction compares
    // against an existing revision, as a running guard's do.
    let mut last_rev = rt
        .block_on(txn_client.clone().put(txn_key.clone(), value, None))
        .expect("raw put")
        .header()
        .expect("a response header")
        .revision();
    vec![
        Op::new(
            put_tag,
            format!("({put_tag}) raw put of the same bytes ({transport})"),
            Role::Baseline(put_tag),
            move |laps: &mut Laps| {
                let mut c = put_client.clone();
                laps.time(|| rt.block_on(c.put(put_key.clone(), value, None)))
                    .expect("raw etcd put");
            },
        ),
        Op::new(
            txn_tag,
            format!("({txn_tag}) raw txn: one mod_revision compare, then put ({transport})"),
            Role::Baseline(txn_tag),
            move |laps: &mut Laps| {
                let mut c = txn_client.clone();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        txn_key.clone(),
                        CompareOp::Equal,
                        last_rev,
                    )])
                    .and_then([TxnOp::put(txn_key.clone(), value, None)]);
                let resp = laps.time(|| rt.block_on(c.txn(txn))).expect("raw etcd txn");
                assert!(resp.succeeded(), "raw etcd txn: the compare failed");
                last_rev = resp.header().expect("a response header").revision();
            },
        ),
    ]
}

/// Run every etcd row of `ops` `n` times on its own and count, from etcd's
/// metrics, the unary requests each call sent. Every row must send exactly
/// one (the claim of the issue: one round trip, no extra reads, no lock
/// calls on the hot path); anything else aborts the bench. The counts are
/// recorded as `etcd_requests` rows.
///
/// The counters are server-wide, so they also see the background work of
/// the ownerships alive at the time (each keep-alive round reads the owner
/// key: one `Range` per interval). Background requests can only add to a
/// count, so a row is measured up to [`COUNT_ATTEMPTS`] times and its
/// smallest count is the one checked; a hot path with an extra request
/// shows it in every attempt.
pub fn check_round_trips(ops: &mut [Op<'_>], etcds: &[&Etcd], report: &mut Report, n: u64) {
    for op in ops.iter_mut() {
        let Some(etcd) = owner(&op.id, etcds) else {
            continue;
        };
        let mut best: Option<(u64, BTreeMap<String, u64>)> = None;
        let mut attempts = 0;
        while attempts < COUNT_ATTEMPTS && best.as_ref().is_none_or(|b| b.0 != n) {
            attempts += 1;
            let before = etcd.unary_requests();
            let mut scratch = Laps::default();
            for _ in 0..n {
                (op.run)(&mut scratch);
            }
            let after = etcd.unary_requests();
            let delta: BTreeMap<String, u64> = after
                .into_iter()
                .filter_map(|(m, a)| {
                    let d = a - before.get(&m).copied().unwrap_or(0);
                    (d > 0).then_some((m, d))
                })
                .collect();
            let total = delta.values().sum::<u64>();
            eprintln!(
                "{}: attempt {attempts}: {total} etcd requests for {n} calls {delta:?}",
                op.id
            );
            if best.as_ref().is_none_or(|b| total < b.0) {
                best = Some((total, delta));
            }
        }
        let (total, delta) = best.expect("at least one attempt");
        let per_call = total as f64 / n as f64;
        let by_method: BTreeMap<&str, f64> = delta
            .iter()
            .map(|(m, &d)| (m.as_str(), d as f64 / n as f64))
            .collect();
        report.write_line(&serde_json::json!({
            "id": "etcd_requests",
            "op": op.id,
            "label": op.label,
            "calls": n,
            "attempts": attempts,
            "requests_per_call": per_call,
            "by_method": by_method,
        }));
        assert_eq!(
            total, n,
            "{}: {per_call} etcd requests per call ({by_method:?}) in the best of {attempts} attempts; the hot path must be one round trip",
            op.id
        );
    }
}

/// How many times [`check_round_trips`] may measure one row.
pub const COUNT_ATTEMPTS: usize = 5;

/// The etcd an operation runs against, by its id (`etcd_tls_...`,
/// `d_txn_tls`, `etcd_...`, `d_put`...).
fn owner<'e>(id: &str, etcds: &[&'e Etcd]) -> Option<&'e Etcd> {
    let tls = id.starts_with("etcd_tls") || (id.starts_with("d_") && id.ends_with("_tls"));
    let plain = !tls && (id.starts_with("etcd_") || id.starts_with("d_"));
    etcds
        .iter()
        .find(|e| (tls && !e.suffix.is_empty()) || (plain && e.suffix.is_empty()))
        .copied()
}
