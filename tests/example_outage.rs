//! The examples as real processes against a real etcd that is killed and
//! started again in the middle of the run (issue 13: "runs survive store
//! outages"): the run must end with exit 0 and a SAFE verdict that covers
//! the outage, and the examples' flags are the `slashguard` command's.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_harness::{ClusterOptions, EtcdCluster};

/// Generous: the machine is shared and busy.
const LINE_WITHIN: Duration = Duration::from_secs(120);

/// An example binary built next to this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .unwrap();
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --all-features` builds the examples \
         (or run `cargo build --all-features --examples` first)",
        path.display()
    );
    path
}

/// A running example whose stdout lines arrive on a channel.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(name: &str, args: &[String]) -> Run {
        let mut child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing `what`.
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + LINE_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {what:?} in:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Wait for the exit; the whole output.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + LINE_WITHIN;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the example did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_args(etcd: &EtcdCluster) -> Vec<String> {
    let pki = etcd.pki();
    [
        "--etcd-endpoint".to_string(),
        format!("127.0.0.1:{}", etcd.client_port(0)),
        "--etcd-cacert-file".into(),
        pki.ca.display().to_string(),
        "--etcd-cert-file".into(),
        pki.client_cert.display().to_string(),
        "--etcd-key-file".into(),
        pki.client_key.display().to_string(),
    ]
    .to_vec()
}

/// Solana: etcd is killed after the crash round, while the secondary owns
/// the identity, long enough for the lease to lapse, then started again.
/// The secondary withholds its votes, fails to release the lost identity
/// (logged, not fatal), goes back to standby and re-acquires it.
#[test]
fn solana_failover_survives_an_etcd_outage() {
    let mut etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let mut args = tls_args(&etcd);
    // Requests get 1 s (the flag is the CLI's): the machine running the
    // tests is shared; the outage is what must make them fail.
    args.extend(
        [
            "--slot-ms",
            "60",
            "--etcd-timeout-ms",
            "1000",
            "--outage-round",
        ]
        .map(String::from),
    );
    let mut run = Run::start("solana_failover", &args);
    run.wait_for("OUTAGE ROUND");
    etcd.kill(0);
    run.wait_for("vote withheld");
    // The lease lapses on the client's side (TTL minus the safety margin).
    run.wait_for("lost the identity");
    run.wait_for("could not release the identity");
    etcd.restart(0);
    run.wait_for("re-acquires it");
    let (status, out) = run.finish();
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(out.contains("outage round: votes withheld"), "{out}");
    assert!(out.contains("re-acquired it"), "{out}");
    assert!(
        out.contains("\nSAFE: ") && out.contains("etcd outage"),
        "{out}"
    );
    assert!(!out.contains("UNSAFE"), "{out}");
}

/// Tezos: etcd is killed while the backup bakes with its ownership in
/// etcd, long enough for the lease to lapse, then started again. The backup
/// withholds its signatures, confirms the primary down again and
/// re-activates (watermarks raised again) before it signs.
#[test]
fn tezos_failover_survives_an_etcd_outage() {
    let mut etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let mut args = tls_args(&etcd);
    args.extend(
        [
            "--block-ms",
            "60",
            "--etcd-timeout-ms",
            "1000",
            "--outage-round",
        ]
        .map(String::from),
    );
    let mut run = Run::start("tezos_failover", &args);
    run.wait_for("OUTAGE ROUND");
    etcd.kill(0);
    run.wait_for("signature withheld, store did not answer");
    run.wait_for("lost the ownership");
    etcd.restart(0);
    run.wait_for("re-activated");
    let (status, out) = run.finish();
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(out.contains("outage round: "), "{out}");
    assert!(out.contains("confirmed the primary down again"), "{out}");
    assert!(
        out.contains("\nSAFE: ") && out.contains("etcd outage"),
        "{out}"
    );
}

/// The examples take the command's flags and checks: `--help` prints and
/// exits 0 without running the demo; an unknown flag and a bad number exit
/// 4 with a message naming the flag; a TLS flag without an endpoint or a
/// certificate without its key never falls back to the file mode.
#[test]
fn the_examples_check_their_flags() {
    for name in ["solana_failover", "tezos_failover"] {
        let run = |args: &[&str]| {
            let out = Command::new(example(name))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, _) = run(&["--help"]);
        assert_eq!(code, Some(0), "{name} --help");
        assert!(
            out.contains("--etcd-endpoint") && out.contains("--etcd-timeout-ms"),
            "{out}"
        );
        assert!(!out.contains("SAFE"), "--help ran the demo: {out}");

        let (code, out, err) = run(&["--etdc", "127.0.0.1:2379"]);
        assert_eq!(code, Some(4), "{name} unknown flag: {out}{err}");
        assert!(err.contains("unexpected argument '--etdc'"), "{err}");
        assert!(out.is_empty(), "ran anyway: {out}");

        let ms = if name == "solana_failover" {
            "--slot-ms"
        } else {
            "--block-ms"
        };
        let (code, _, err) = run(&[ms, "4O"]);
        assert_eq!(code, Some(4), "{name} bad number");
        assert!(
            err.contains(&format!("invalid value '4O' for '{ms}")),
            "{err}"
        );
        assert!(!err.contains("ParseIntError"), "{err}");

        let (code, out, err) = run(&["--etcd-cacert-file", "/nonexistent/ca.pem"]);
        assert_ne!(
            code,
            Some(0),
            "{name} ran the file mode with a TLS flag: {out}"
        );
        assert!(err.contains("no etcd endpoint given"), "{err}");

        let (code, out, err) = run(&[
            "--etcd-endpoint",
            "127.0.0.1:1",
            "--etcd-cert-file",
            "c.pem",
        ]);
        assert_ne!(code, Some(0), "{name}: {out}");
        assert!(
            err.contains("--etcd-cert-file and --etcd-key-file go together"),
            "{err}"
        );
    }
}
