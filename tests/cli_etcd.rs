//! The `slashguard` binary against real etcd processes (the Debian `etcd`
//! binary; these tests fail, never skip, without it): identity ownership,
//! towers and watermarks in etcd, the seed's TLS flags, and every refusal
//! and exit code that needs a server.

mod cli_support;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cli_support::*;
use etcd_harness::{free_port, ClusterOptions, EtcdCluster};
use serde_json::Value;
use slashguard::agave;
use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, EtcdTowerStorage, OwnershipOptions};
use slashguard::tower::{StoreMode, TowerStorage};
use slashguard::watermark::{Curve, KeyHash};
use slashguard::{Error, NodeKeypair};

fn etcd_args(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in cluster.endpoints() {
        v.push("--etcd-endpoint".to_string());
        v.push(e);
    }
    v.push("--etcd-prefix".into());
    v.push(prefix.into());
    v
}

async fn client(cluster: &EtcdCluster, prefix: &str) -> EtcdClient {
    let config = EtcdConfig::builder(cluster.endpoints())
        .key_prefix(prefix)
        .request_deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    EtcdClient::connect(config).await.unwrap()
}

fn identity(client: &EtcdClient, kp: &NodeKeypair, name: &str) -> EtcdIdentity {
    EtcdIdentity::new(client.clone(), kp.node_id(), OwnershipOptions::new(name)).unwrap()
}

/// One piece of a command line.
trait Part {
    fn add(self, v: &mut Vec<OsString>);
}
impl Part for &str {
    fn add(self, v: &mut Vec<OsString>) {
        v.push(self.into());
    }
}
impl Part for &String {
    fn add(self, v: &mut Vec<OsString>) {
        v.push(self.into());
    }
}
impl Part for &PathBuf {
    fn add(self, v: &mut Vec<OsString>) {
        v.push(self.into());
    }
}
impl Part for &Vec<String> {
    fn add(self, v: &mut Vec<OsString>) {
        v.extend(self.iter().map(OsString::from));
    }
}

macro_rules! argv {
    ($($p:expr),* $(,)?) => {{
        let mut v: Vec<OsString> = Vec::new();
        $( Part::add($p, &mut v); )*
        v
    }};
}

/// `json` off the async test's threads (the binary blocks), with extra
/// environment variables.
async fn run_env(env: Vec<(&'static str, OsString)>, argv: Vec<OsString>, code: i32) -> Value {
    tokio::task::spawn_blocking(move || {
        let mut c = sg();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(argv);
        json(&mut c, code)
    })
    .await
    .unwrap()
}

async fn run_json(argv: Vec<OsString>, code: i32) -> Value {
    run_env(Vec::new(), argv, code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_take_over_release_status_and_towers_in_etcd() {
    let etcd = EtcdCluster::single();
    let prefix = "/cli-identity";
    let args = etcd_args(&etcd, prefix);
    let tmp = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::generate();
    let node = kp.node_id().to_string();
    let kpf = keypair_file(tmp.path(), &kp);
    let agave_new = agave_dir(tmp.path(), "agave", &agave_tower(&kp, 100, 1, 60));
    let c = client(&etcd, prefix).await;

    // Free at first.
    let v = run_json(argv![&args, "identity", "status", "--node", &node], 0).await;
    assert_eq!(v["owned"], false);

    // A running primary owns the identity and has stored a tower.
    let primary = identity(&c, &kp, "primary");
    let own = primary.take_over().await.unwrap();
    let storage = EtcdTowerStorage::open(&primary, &own).await.unwrap();
    let record = agave_tower(&kp, 90, 9, 50).to_record(&kp).unwrap();
    storage.store(&record, StoreMode::Advance).await.unwrap();

    let v = run_json(argv![&args, "identity", "status", "--node", &node], 0).await;
    assert_eq!(v["owner"]["instance"], "primary");
    assert_eq!(v["owner"]["fence"], own.fence());
    assert!(v["owner"]["lease_ttl_left_ms"].as_u64().is_some(), "{v}");

    // Show works without owning; import is refused while it is owned.
    let v = run_json(argv![&args, "tower", "show", "--etcd", "--node", &node], 0).await;
    assert_eq!(v["tower"]["last_vote"]["slot"], 90);
    let v = run_json(
        argv![
            &args,
            "tower",
            "import",
            "--etcd",
            "--keypair",
            &kpf,
            "--from-agave",
            &agave_new
        ],
        2,
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("primary"), "{v}");

    // A restart window that is not there: refused, nothing taken.
    let v = run_json(
        argv![
            &args,
            "identity",
            "take-over",
            "--release",
            "--node",
            &node,
            "--wait-command",
            "exit 3"
        ],
        2,
    )
    .await;
    assert!(
        v["message"].as_str().unwrap().contains("restart window"),
        "{v}"
    );
    assert!(!storage.is_lost());
    storage.store(&record, StoreMode::Advance).await.unwrap();

    // Release naming the wrong owner: refused.
    run_json(
        argv![
            &args,
            "identity",
            "release",
            "--node",
            &node,
            "--expect-instance",
            "someone-else"
        ],
        2,
    )
    .await;
    storage.store(&record, StoreMode::Advance).await.unwrap();

    // Take over after the window (the command exits 0), then release: the
    // primary is fenced at once, and the identity is free.
    let v = run_json(
        argv![
            &args,
            "identity",
            "take-over",
            "--release",
            "--instance",
            "secondary",
            "--node",
            &node,
            "--wait-command",
            "true"
        ],
        0,
    )
    .await;
    assert_eq!(v["previous_owner"]["instance"], "primary");
    assert!(v["fence"].as_u64().unwrap() > own.fence());
    match storage.store(&record, StoreMode::Advance).await {
        Err(Error::Fenced { .. }) => {}
        other => panic!("the primary must be fenced: {other:?}"),
    }
    let v = run_json(argv![&args, "identity", "status", "--node", &node], 0).await;
    assert_eq!(v["owned"], false);

    // Free: import the newer Agave tower into etcd, then export it back.
    run_json(
        argv![
            &args,
            "tower",
            "import",
            "--etcd",
            "--keypair",
            &kpf,
            "--from-agave",
            &agave_new
        ],
        0,
    )
    .await;
    let v = run_json(argv![&args, "tower", "show", "--etcd", "--node", &node], 0).await;
    assert_eq!(v["tower"]["last_vote"]["slot"], 100);
    let out = tmp.path().join("export");
    std::fs::create_dir(&out).unwrap();
    run_json(
        argv![
            &args,
            "tower",
            "export",
            "--etcd",
            "--keypair",
            &kpf,
            "--to-agave",
            &out
        ],
        0,
    )
    .await;
    assert_eq!(
        agave::load_tower(&out, &kp.node_id())
            .unwrap()
            .unwrap()
            .tower()
            .last_voted_slot(),
        Some(100)
    );
    // An older Agave tower does not replace the newer one in etcd.
    let agave_old = agave_dir(tmp.path(), "agave-old", &agave_tower(&kp, 10, 2, 5));
    run_json(
        argv![
            &args,
            "tower",
            "import",
            "--etcd",
            "--keypair",
            &kpf,
            "--from-agave",
            &agave_old
        ],
        2,
    )
    .await;

    // The primary comes back and owns it; `release` frees it, fencing it.
    let own2 = primary.take_over().await.unwrap();
    let storage2 = EtcdTowerStorage::open(&primary, &own2).await.unwrap();
    let v = run_json(
        argv![
            &args,
            "identity",
            "release",
            "--node",
            &node,
            "--expect-instance",
            "primary"
        ],
        0,
    )
    .await;
    assert_eq!(v["released"], true);
    assert!(matches!(
        storage2.store(&record, StoreMode::Force).await,
        Err(Error::Fenced { .. })
    ));
    let v = run_json(argv![&args, "identity", "release", "--node", &node], 0).await;
    assert_eq!(v["released"], false, "already free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_and_hold_until_sigterm() {
    let etcd = EtcdCluster::single();
    let prefix = "/cli-hold";
    let args = etcd_args(&etcd, prefix);
    let kp = NodeKeypair::generate();
    let node = kp.node_id().to_string();
    let c = client(&etcd, prefix).await;
    let primary = identity(&c, &kp, "primary");
    let own = primary.take_over().await.unwrap();

    let mut child = sg_std()
        .args(&args)
        .args([
            "identity",
            "take-over",
            "--hold",
            "--instance",
            "maintenance",
            "--node",
            &node,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        lines.next().unwrap().unwrap()
    })
    .await
    .unwrap();
    assert!(line.contains("holding"), "{line}");
    tokio::time::timeout(Duration::from_secs(5), own.lost())
        .await
        .expect("the primary learns it lost the identity");
    let status = primary.status().await.unwrap().unwrap();
    assert_eq!(status.instance, "maintenance");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        primary.status().await.unwrap().is_none(),
        "released on SIGTERM"
    );
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_in_etcd_and_an_unreachable_etcd() {
    let etcd = EtcdCluster::single();
    let args = etcd_args(&etcd, "/cli-wm");
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyHash {
        curve: Curve::Bls,
        hash: [5; 20],
    };
    let alias = format!("consensus={key}");

    run_json(
        argv![
            &args,
            "watermark",
            "set-level",
            "--etcd",
            "--chain",
            "mainnet",
            "--level",
            "300",
            "--key",
            "consensus",
            "--alias",
            &alias
        ],
        0,
    )
    .await;
    let v = run_json(
        argv![&args, "watermark", "show", "--etcd", "--alias", &alias],
        0,
    )
    .await;
    assert_eq!(v["watermarks"].as_array().unwrap().len(), 3);
    assert!(
        v["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["level"] == 300 && w["alias"] == "consensus"),
        "{v}"
    );
    // Raise-only.
    run_json(
        argv![
            &args,
            "watermark",
            "set-level",
            "--etcd",
            "--chain",
            "mainnet",
            "--level",
            "299",
            "--all",
            "--alias",
            &alias
        ],
        2,
    )
    .await;
    // Export from etcd, import into a file store: the same marks.
    let f = tmp.path().join("wm.json");
    run_json(
        argv![&args, "watermark", "export", "--etcd", "--out", &f],
        0,
    )
    .await;
    let hwm = tmp.path().join("hwm");
    run_json(
        argv![
            "watermark",
            "import",
            "--create",
            "--file",
            &hwm,
            "--in",
            &f
        ],
        0,
    )
    .await;
    let v = run_json(argv!["watermark", "show", "--file", &hwm], 0).await;
    assert_eq!(v["watermarks"].as_array().unwrap().len(), 3);
    // An import below etcd's marks: refused, all or nothing.
    let other = KeyHash {
        curve: Curve::Ed25519,
        hash: [6; 20],
    };
    let low = tmp.path().join("low.json");
    std::fs::write(
        &low,
        format!(
            r#"{{"format":"slashguard-watermarks","version":1,"watermarks":[
              {{"chain":"NetXdQprcVkpaWU","key":"{key}","kind":"block","level":5,"round":0}},
              {{"chain":"NetXdQprcVkpaWU","key":"{other}","kind":"block","level":5,"round":0}}]}}"#
        ),
    )
    .unwrap();
    run_json(
        argv![&args, "watermark", "import", "--etcd", "--in", &low],
        2,
    )
    .await;
    let v = run_json(argv![&args, "watermark", "show", "--etcd"], 0).await;
    assert_eq!(
        v["watermarks"].as_array().unwrap().len(),
        3,
        "nothing imported"
    );

    // Nothing listening: store unavailable (3), within the connect timeout.
    let dead = format!("127.0.0.1:{}", free_port());
    let start = Instant::now();
    let v = run_json(
        argv!["--etcd-endpoint", &dead, "watermark", "show", "--etcd"],
        3,
    )
    .await;
    assert!(v["hint"].as_str().unwrap().contains(&dead), "{v}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // No endpoint at all: bad input (4).
    let v = run_json(
        argv![
            "identity",
            "status",
            "--node",
            "11111111111111111111111111111111"
        ],
        4,
    )
    .await;
    assert!(
        v["hint"].as_str().unwrap().contains("--etcd-endpoint"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_procedures_tls_flags_config_file_and_environment() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let pki = etcd.pki();
    let endpoint = format!("127.0.0.1:{}", etcd.client_port(0));
    let node = NodeKeypair::generate().node_id().to_string();

    // The procedure's flags, one to one.
    let v = run_json(
        argv![
            "--etcd-endpoint",
            &endpoint,
            "--etcd-cacert-file",
            &pki.ca,
            "--etcd-cert-file",
            &pki.client_cert,
            "--etcd-key-file",
            &pki.client_key,
            "identity",
            "status",
            "--node",
            &node
        ],
        0,
    )
    .await;
    assert_eq!(v["owned"], false);

    // The same through a config file, with the endpoint from the environment.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("slashguard.toml");
    std::fs::write(
        &config,
        format!(
            "[etcd]\ncacert-file = {:?}\ncert-file = {:?}\nkey-file = {:?}\ndomain-name = \"localhost\"\n",
            pki.ca, pki.client_cert, pki.client_key
        ),
    )
    .unwrap();
    run_env(
        vec![("SLASHGUARD_ETCD_ENDPOINT", OsString::from(&endpoint))],
        argv!["--config", &config, "identity", "status", "--node", &node],
        0,
    )
    .await;

    // A client certificate etcd does not trust: a configuration problem (4)
    // that says which certificate.
    let v = run_json(
        argv![
            "--etcd-endpoint",
            &endpoint,
            "--etcd-cacert-file",
            &pki.ca,
            "--etcd-cert-file",
            &pki.foreign_cert,
            "--etcd-key-file",
            &pki.foreign_key,
            "identity",
            "status",
            "--node",
            &node
        ],
        4,
    )
    .await;
    assert!(
        v["message"].as_str().unwrap().contains("certificate"),
        "{v}"
    );
    // A missing key file: bad input naming it.
    let v = run_json(
        argv![
            "--etcd-endpoint",
            &endpoint,
            "--etcd-cacert-file",
            &pki.ca,
            "--etcd-cert-file",
            &pki.client_cert,
            "--etcd-key-file",
            "/nonexistent/key.pem",
            "identity",
            "status",
            "--node",
            &node
        ],
        4,
    )
    .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/key.pem"),
        "{v}"
    );
}

/// `tower export` reads a live tower only after fencing its owner: refused
/// while an instance owns the identity; with `--take-over` the owner is
/// fenced, the tower read under the new fence, and the identity released
/// for the validator started on the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_export_refuses_a_live_tower_unless_it_takes_the_identity_over() {
    let etcd = EtcdCluster::single();
    let prefix = "/cli-export-live";
    let args = etcd_args(&etcd, prefix);
    let tmp = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::generate();
    let kpf = keypair_file(tmp.path(), &kp);
    let c = client(&etcd, prefix).await;
    let running = identity(&c, &kp, "running-validator");
    let own = running.take_over().await.unwrap();
    let storage = EtcdTowerStorage::open(&running, &own).await.unwrap();
    let record = agave_tower(&kp, 100, 1, 60).to_record(&kp).unwrap();
    storage.store(&record, StoreMode::Advance).await.unwrap();

    let out = tmp.path().join("export");
    std::fs::create_dir(&out).unwrap();
    let export = |extra: &'static [&'static str]| {
        let mut v = argv![
            &args,
            "tower",
            "export",
            "--etcd",
            "--keypair",
            &kpf,
            "--to-agave",
            &out
        ];
        v.extend(extra.iter().map(OsString::from));
        v
    };
    // Owned by a running validator: refused, nothing written, it still votes.
    let v = run_json(export(&[]), 2).await;
    assert!(
        v["message"].as_str().unwrap().contains("running-validator"),
        "{v}"
    );
    assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    assert!(!own.is_lost());
    storage.store(&record, StoreMode::Advance).await.unwrap();

    // --take-over: fence, read, hand over.
    run_json(export(&["--take-over"]), 0).await;
    assert_eq!(
        agave::load_tower(&out, &kp.node_id())
            .unwrap()
            .unwrap()
            .tower()
            .last_voted_slot(),
        Some(100)
    );
    assert!(matches!(
        storage.store(&record, StoreMode::Advance).await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(running.status().await.unwrap(), None, "handed over: free");
}
