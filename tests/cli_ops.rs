//! The `slashguard` command as an operator meets it under pressure (issue
//! 13), against a real etcd: an outage while holding the identity, a dead
//! holder after etcd restarts, configuration files used from another
//! directory, and misconfigurations that must say what they are.

mod cli_support;
#[path = "common/etcd_harness.rs"]
mod etcd_harness;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_support::*;
use etcd_harness::{ClusterOptions, EtcdCluster};
use slashguard::{NodeKeypair, Signer};

/// Generous: the machine is shared and busy.
const WITHIN: Duration = Duration::from_secs(60);

fn etcd_args(cluster: &EtcdCluster) -> Vec<String> {
    vec![
        "--etcd-endpoint".into(),
        cluster.endpoint(0),
        "--etcd-prefix".into(),
        "/cli-ops".into(),
    ]
}

/// `take-over --hold` while etcd dies: exit 3 "unavailable", not exit 2
/// "another instance took it over". After etcd restarts, the dead holder's
/// claim is shown with its deadline, as expiring, not as a live owner.
#[test]
fn holding_through_an_etcd_outage_says_the_store_is_unavailable() {
    let mut etcd = EtcdCluster::single();
    let args = etcd_args(&etcd);
    let node = NodeKeypair::generate().node_id().to_string();
    let mut child = sg_std()
        .args(&args)
        .args([
            "identity",
            "take-over",
            "--hold",
            "--instance",
            "maintenance",
        ])
        .args(["--node", &node])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("holding"), "{first}");
    etcd.kill(0);
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still holding without etcd");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(3), "{rest}");
    assert!(rest.contains("etcd is unavailable"), "{rest}");
    assert!(!rest.contains("another instance took it over"), "{rest}");

    // etcd restores the dead holder's lease with its whole TTL.
    etcd.restart(0);
    let out = expect(
        sg().args(&args)
            .args(["identity", "status", "--node", &node]),
        0,
    );
    let text = stdout(&out);
    assert!(text.contains("owner      maintenance"), "{text}");
    assert!(text.contains("expiring at 20"), "{text}");
    assert!(text.contains("Z ("), "ISO 8601 UTC: {text}");
    assert!(!text.contains("renewed while the owner lives"), "{text}");
}

/// A configuration file's relative certificate paths are relative to the
/// file, so the command works from any directory; `--etcd-timeout-ms`
/// bounds the connection check (not a fixed 3 s).
#[test]
fn config_paths_are_relative_to_the_file_and_the_timeout_is_honored() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let pki = etcd.pki();
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("etc");
    std::fs::create_dir_all(conf_dir.join("certs")).unwrap();
    for (from, to) in [
        (&pki.ca, "etcd-ca.pem"),
        (&pki.client_cert, "validator.pem"),
        (&pki.client_key, "validator-key.pem"),
    ] {
        std::fs::copy(from, conf_dir.join("certs").join(to)).unwrap();
    }
    let config = conf_dir.join("slashguard.toml");
    std::fs::write(
        &config,
        format!(
            "[etcd]\nendpoints = [\"127.0.0.1:{}\"]\ncacert-file = \"certs/etcd-ca.pem\"\ncert-file = \"certs/validator.pem\"\nkey-file = \"certs/validator-key.pem\"\n",
            etcd.client_port(0)
        ),
    )
    .unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let node = NodeKeypair::generate().node_id().to_string();
    let v = json(
        sg().current_dir(&elsewhere)
            .arg("--config")
            .arg(&config)
            .args(["identity", "status", "--node", &node]),
        0,
    );
    assert_eq!(v["owned"], false);

    // An address that swallows packets is not needed: a listener that
    // never answers the TLS handshake holds the check until its deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let out = expect(
        sg().args(["--etcd-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--etcd-timeout-ms", "300"])
            .args(["identity", "status", "--node", &node]),
        3,
    );
    let took = started.elapsed();
    assert!(
        stderr(&out).contains("unavailable") || stderr(&out).contains("answer"),
        "{}",
        stderr(&out)
    );
    // The fixed check took 3 s; 300 ms plus process start must be well below.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    drop(silent);
}

/// A file watermark store with `consensus` at block 1000/2 and `companion`
/// at 900/0 on mainnet, via `set-level`.
fn two_keys(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    let h = dir.join("wm");
    let consensus = slashguard::Ed25519Signer::from_seed([1; 32])
        .key_hash()
        .to_string();
    let companion = slashguard::Ed25519Signer::from_seed([2; 32])
        .key_hash()
        .to_string();
    for (key, level, create) in [(&consensus, "1000", true), (&companion, "900", false)] {
        let mut c = sg();
        c.args(["watermark", "set-level", "--chain", "mainnet", "--file"])
            .arg(&h)
            .args(["--level", level, "--key", key]);
        if create {
            c.arg("--create");
        }
        expect(&mut c, 0);
    }
    (h, consensus, companion)
}

/// `set-level` refusals say what was refused (nothing was being signed);
/// `--keep-higher` raises the others and reports both; `--force` lowering
/// shows what it lowers and needs `yes` on stdin or `--yes`; no answer
/// refuses.
#[test]
fn set_level_says_what_it_refused_keeps_higher_and_confirms_lowering() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, consensus, companion) = two_keys(tmp.path());
    let set_at = |level: &str, extra: &[&str]| {
        let mut c = sg();
        c.args(["watermark", "set-level", "--chain", "mainnet", "--file"])
            .arg(&h)
            .args(["--level", level, "--all", "--alias"])
            .arg(format!("consensus={consensus}"))
            .arg("--alias")
            .arg(format!("companion={companion}"))
            .args(extra);
        c
    };
    let set = |extra: &[&str]| set_at("950", extra);
    let out = expect(&mut set(&[]), 2);
    let err = stderr(&out);
    assert!(!err.contains("refused to sign"), "{err}");
    assert!(err.contains("not raised to level 950"), "{err}");
    assert!(err.contains("already above it"), "{err}");
    assert!(err.contains("--keep-higher"), "{err}");

    let v = json(&mut set(&["--keep-higher"]), 0);
    assert_eq!(v["kept_higher"], 3, "{v}");
    let text = stdout(&expect(&mut set(&["--keep-higher"]), 0));
    assert!(text.contains("kept (above level 950)"), "{text}");

    // --force: no stdin answer refuses and changes nothing.
    let out = expect(&mut set_at("800", &["--force"]), 2);
    let err = stderr(&out);
    assert!(err.contains("will LOWER"), "{err}");
    assert!(err.contains("not confirmed"), "{err}");
    let v = json(sg().args(["watermark", "show", "--file"]).arg(&h), 0);
    assert!(v.to_string().contains("1000"), "unchanged: {v}");
    // `yes` on stdin lowers, and the output says which marks were lowered.
    let out = expect(set_at("800", &["--force"]).write_stdin("yes\n"), 0);
    assert!(stdout(&out).contains("(LOWERED)"), "{}", stdout(&out));
    // --yes without --force is a usage error.
    expect(&mut set(&["--yes"]), 4);
}

/// A `--wait-command` that is not installed is a configuration error (4),
/// not "not in a restart window" (2).
#[test]
fn a_missing_wait_command_is_a_configuration_error() {
    let etcd = EtcdCluster::single();
    let node = NodeKeypair::generate().node_id().to_string();
    let out = expect(
        sg().args(etcd_args(&etcd))
            .args(["identity", "take-over", "--release", "--node", &node])
            .args([
                "--wait-command",
                "agave-validator-not-installed wait-for-restart-window",
            ]),
        4,
    );
    let err = stderr(&out);
    assert!(
        err.contains("could not be run (exit 127: command not found)"),
        "{err}"
    );
    assert!(!err.contains("restart window was not reached"), "{err}");
}

/// Two TLS mistakes of the procedure's setup are configuration errors
/// (exit 4) that name the likely cause, not "transport error" or a
/// retryable "broken pipe" (exit 3).
#[test]
fn tls_misconfigurations_name_their_cause() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let pki = etcd.pki();
    let endpoint = format!("127.0.0.1:{}", etcd.client_port(0));
    let node = NodeKeypair::generate().node_id().to_string();

    // The validator's certificate with the key of another certificate.
    let out = expect(
        sg().args(["--etcd-endpoint", &endpoint, "--etcd-cacert-file"])
            .arg(&pki.ca)
            .arg("--etcd-cert-file")
            .arg(&pki.client_cert)
            .arg("--etcd-key-file")
            .arg(&pki.foreign_key)
            .args(["identity", "status", "--node", &node]),
        4,
    );
    let err = stderr(&out);
    assert!(
        err.contains("does not belong to the client certificate"),
        "{err}"
    );
    assert!(!err.contains("transport error: transport error"), "{err}");

    // No TLS flags against etcd serving TLS.
    let out = expect(
        sg().args(["--etcd-endpoint", &endpoint])
            .args(["identity", "status", "--node", &node]),
        4,
    );
    let err = stderr(&out);
    assert!(err.contains("most likely serves TLS"), "{err}");
    assert!(err.contains("--etcd-cacert-file"), "{err}");
}

/// `slashguard doctor`: one line per check; all green on a sound mutual-TLS
/// setup with an owned identity and stores; a failing check names itself,
/// and the exit code is the failure's (here 4, a key of another
/// certificate; 3, etcd stopped).
#[test]
fn doctor_checks_a_configuration_end_to_end() {
    let mut etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let (ca, cert, key, foreign_key) = {
        let p = etcd.pki();
        (
            p.ca.clone(),
            p.client_cert.clone(),
            p.client_key.clone(),
            p.foreign_key.clone(),
        )
    };
    let endpoint = format!("127.0.0.1:{}", etcd.client_port(0));
    let tmp = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::generate();
    let node = kp.node_id().to_string();
    let (wm, _, _) = two_keys(tmp.path());
    let tls = |key: &std::path::Path| {
        let mut c = sg();
        c.args(["--etcd-endpoint", &endpoint, "--etcd-prefix", "/doctor"])
            .arg("--etcd-cacert-file")
            .arg(&ca)
            .arg("--etcd-cert-file")
            .arg(&cert)
            .arg("--etcd-key-file")
            .arg(key);
        c
    };
    let out = expect(
        tls(&key)
            .args([
                "doctor",
                "--etcd-stores",
                "--node",
                &node,
                "--watermark-file",
            ])
            .arg(&wm),
        0,
    );
    let text = stdout(&out);
    for line in [
        "ok   certificates       readable and consistent",
        "ok   etcd               reachable at",
        "ok   identity           ",
        "is free: nobody owns it",
        "ok   tower (etcd)       healthy",
        "ok   watermarks (etcd)  healthy",
        "ok   watermarks (file)  healthy, 6 marks; highest 1000/0",
        "all 7 checks passed",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }

    // A key of another certificate: the certificates check fails (4).
    let out = expect(tls(&foreign_key).args(["doctor"]), 4);
    let text = stdout(&out);
    assert!(text.contains("FAIL certificates"), "{text}");
    assert!(
        stderr(&out).contains("1 of 1 checks failed: certificates"),
        "{}",
        stderr(&out)
    );

    // etcd down: unavailable (3); the file store is still checked.
    etcd.kill(0);
    let out = expect(
        tls(&key)
            .args(["--etcd-timeout-ms", "1000", "doctor", "--watermark-file"])
            .arg(&wm),
        3,
    );
    let text = stdout(&out);
    assert!(text.contains("FAIL etcd"), "{text}");
    assert!(text.contains("ok   watermarks (file)"), "{text}");
}
