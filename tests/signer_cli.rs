//! `slashguard signer` settings from flags and `SLASHGUARD_SIGNER_*`
//! environment variables over the configuration file, as the rest of the
//! CLI takes them: flag, then environment, then file; a list given
//! replaces the file's.

mod signer_support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use signer_support::server::*;

fn check_config(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = command()
        .arg("--json")
        .arg("--config")
        .arg(config)
        .args(["signer", "check-config"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listening(server: &Server, transport: &str) -> Vec<String> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "listening" && v["transport"] == transport)
        .map(|v| v["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn flags_and_environment_override_the_file() {
    let s = Setup::new();
    let config = s.config("", ALL_KEYS);

    // File only.
    let v = check_config(&config, &[], &[]);
    assert_eq!(v["limits"]["max_connections"], 16);
    assert_eq!(v["limits"]["first_request_timeout_ms"], 2000);
    assert_eq!(v["listen"]["tcp"], serde_json::json!(["127.0.0.1:0"]));

    // Environment over the file, flag over the environment; lists replace.
    let other = s.path("elsewhere");
    let v = check_config(
        &config,
        &[
            "--max-connections",
            "5",
            "--listen-tcp",
            "127.0.0.1:7000",
            "--watermarks-file",
            other.to_str().unwrap(),
        ],
        &[
            ("SLASHGUARD_SIGNER_MAX_CONNECTIONS", "9"),
            ("SLASHGUARD_SIGNER_FIRST_REQUEST_TIMEOUT_MS", "750"),
            (
                "SLASHGUARD_SIGNER_LISTEN_HTTP",
                "127.0.0.1:7001,127.0.0.1:7002",
            ),
        ],
    );
    assert_eq!(v["limits"]["max_connections"], 5, "flag over environment");
    assert_eq!(
        v["limits"]["first_request_timeout_ms"], 750,
        "environment over file"
    );
    assert_eq!(v["limits"]["request_timeout_ms"], 3000, "file kept");
    assert_eq!(v["listen"]["tcp"], serde_json::json!(["127.0.0.1:7000"]));
    assert_eq!(
        v["listen"]["http"],
        serde_json::json!(["127.0.0.1:7001", "127.0.0.1:7002"])
    );
    assert_eq!(v["watermarks_file"], other.to_str().unwrap());

    // A bad value from a flag meets the file's checks and names the setting.
    let out = command()
        .arg("--config")
        .arg(&config)
        .args(["signer", "check-config", "--max-connections", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-connections"));
}

#[test]
fn serve_listens_where_the_flags_say_with_their_limits() {
    let s = Setup::new();
    let config = s.config("", ALL_KEYS);
    let sock = s.path("from-flag.sock");
    let server = Server::spawn_with(
        &config,
        true,
        &[
            "--listen-unix",
            sock.to_str().unwrap(),
            "--first-request-timeout-ms",
            "200",
        ],
        &[("SLASHGUARD_SIGNER_LISTEN_TCP", "127.0.0.1:0,127.0.0.1:0")],
    );
    assert_eq!(listening(&server, "unix"), [sock.to_str().unwrap()]);
    assert!(
        !s.path("signer.sock").exists(),
        "the file's socket replaced"
    );
    let tcp = listening(&server, "tcp");
    assert_eq!(tcp.len(), 2, "{tcp:?}");
    for addr in &tcp {
        let mut c = Sock::tcp(addr);
        assert_eq!(c.call(&[2]), [0, 0]);
    }
    let reply = Sock::unix(&sock).call(&sign_request(
        TZ1,
        &attestation(0x13, MAINNET, 5, 0, 1),
        None,
    ));
    assert_eq!(reply[0], 0, "{reply:?}");
    // The flag's first-request deadline: a silent client is dropped.
    let mut silent = TcpStream::connect(&tcp[0]).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut buf).unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
}
