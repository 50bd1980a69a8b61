//! Running the real `slashguard` binary, and the fixtures its tests share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use slashguard::agave::{self, AgaveTower, LastVote, Lockout, SavedTower, TowerSync};
use slashguard::tower::StoreMode;
use slashguard::NodeKeypair;

/// Every environment variable the binary reads: cleared so the host's
/// settings cannot leak into a test.
const ENV: [&str; 11] = [
    "SLASHGUARD_CONFIG",
    "SLASHGUARD_ETCD_ENDPOINT",
    "SLASHGUARD_ETCD_CACERT_FILE",
    "SLASHGUARD_ETCD_CERT_FILE",
    "SLASHGUARD_ETCD_KEY_FILE",
    "SLASHGUARD_ETCD_DOMAIN_NAME",
    "SLASHGUARD_ETCD_PREFIX",
    "SLASHGUARD_ETCD_TIMEOUT_MS",
    "SLASHGUARD_ALIAS_FILE",
    "SLASHGUARD_INSTANCE",
    "SLASHGUARD_CHAIN",
];

/// The binary, with a clean environment.
pub fn sg() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_slashguard"));
    for v in ENV {
        c.env_remove(v);
    }
    c
}

/// The same as a std command (for a child the test signals).
pub fn sg_std() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_slashguard"));
    for v in ENV {
        c.env_remove(v);
    }
    c
}

/// Run, require exit code `code`, and return the output. On a mismatch
/// the panic shows stdout and stderr.
pub fn expect(cmd: &mut assert_cmd::Command, code: i32) -> Output {
    let out = cmd.output().expect("the binary runs");
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run with --json, require `code`, parse stdout.
pub fn json(cmd: &mut assert_cmd::Command, code: i32) -> Value {
    let out = expect(cmd.arg("--json"), code);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"));
    assert_eq!(v["ok"], Value::Bool(code == 0), "{v}");
    if code != 0 {
        assert_eq!(v["exit_code"], code, "{v}");
        assert!(
            v["hint"].is_string(),
            "every failure says what to do next: {v}"
        );
    }
    v
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Write the keypair of `seed` as a Solana keypair file in `dir` (the
/// secret never leaves a `NodeKeypair`, so tests keep the seed they made it
/// from).
pub fn keypair_file(dir: &Path, seed: [u8; 32]) -> PathBuf {
    let kp = NodeKeypair::from_seed(seed);
    let mut all = seed.to_vec();
    all.extend_from_slice(kp.node_id().as_bytes());
    let text = format!(
        "[{}]",
        all.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let p = dir.join(format!("{}.json", kp.node_id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// A signed Agave tower whose last vote is `slot` (hash [h; 32]), root `root`.
pub fn agave_tower(kp: &NodeKeypair, slot: u64, h: u8, root: u64) -> SavedTower {
    let mut tower = AgaveTower::new(kp.node_id());
    tower.vote_state.root_slot = Some(root);
    tower.last_vote = LastVote::TowerSync(TowerSync {
        lockouts: vec![Lockout {
            slot,
            confirmation_count: 1,
        }],
        root: Some(root),
        hash: [h; 32],
        timestamp: None,
        block_id: [h; 32],
    });
    SavedTower::sign(tower, kp).unwrap()
}

/// A fresh Agave tower directory holding that tower.
pub fn agave_dir(parent: &Path, name: &str, tower: &SavedTower) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    agave::write_tower_durable(&dir, tower, StoreMode::Force).unwrap();
    dir
}
