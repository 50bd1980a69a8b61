//! One owner per file: a second process (or a second open in the same
//! process) gets `Error::Locked`, whose message says "held by another
//! process"; the lock goes away with its holder, however the holder dies;
//! and each new owner gets a higher fencing generation.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{child_env, open_retrying, report, spawn_child, ChildProc};
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::{Error, NodeKeypair};

const NODE_SEED: [u8; 32] = [0x17; 32];
const OPEN_LIMIT: Duration = Duration::from_secs(5);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Store a tower whose vote is one above the stored one; returns the fence.
fn store_next(storage: &FileTowerStorage, kp: &NodeKeypair) -> u64 {
    let next = block_on(storage.load())
        .unwrap()
        .and_then(|r| r.last_vote_slot())
        .unwrap_or(0)
        + 1;
    let record = TowerRecord::sign(
        kp,
        Some(VoteRef {
            slot: next,
            hash: [1; 32],
        }),
        None,
        vec![],
    )
    .unwrap();
    block_on(storage.store(&record, StoreMode::Advance))
        .unwrap()
        .fence
}

fn open_tower(dir: &Path) -> slashguard::Result<FileTowerStorage> {
    FileTowerStorage::open(dir, NodeKeypair::from_seed(NODE_SEED).node_id())
}

/// Create the tower and watermark stores the children open.
fn create_stores(dir: &Path) {
    drop(FileTowerStorage::create(dir, NodeKeypair::from_seed(NODE_SEED).node_id()).unwrap());
    drop(FileWatermarks::create(dir.join("hwm")).unwrap());
}

fn open_wm(dir: &Path) -> slashguard::Result<FileWatermarks> {
    FileWatermarks::open(dir.join("hwm"))
}

/// A second open of a store this process already has open: said so,
/// naming the data file, not blamed on another process.
fn assert_open_here<T: std::fmt::Debug>(got: slashguard::Result<T>, data_file: &str) {
    match got {
        Err(e @ Error::AlreadyOpen { .. }) => {
            let text = e.to_string();
            assert!(text.contains("already open in this process"), "{text}");
            assert!(text.contains(data_file), "{text}");
            assert!(!text.contains("another process"), "{text}");
        }
        other => panic!("expected Error::AlreadyOpen, got {other:?}"),
    }
}

fn assert_locked<T: std::fmt::Debug>(got: slashguard::Result<T>, lock_file: &str) {
    match got {
        Err(e @ Error::Locked { .. }) => {
            let Error::Locked { path } = &e else {
                unreachable!()
            };
            assert!(
                path.to_str().unwrap().ends_with(lock_file),
                "lock path {path:?}"
            );
            let text = e.to_string();
            assert!(text.contains("held by another process"), "{text}");
            assert!(!e.is_refusal() && !e.is_unavailable());
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
}

/// Not a test on its own: the body of the child processes the tests below
/// start by re-executing this test binary with `--exact lock_child`. In a
/// normal `cargo test` run the role variable is absent and it returns at
/// once, passing as a no-op.
///
/// Roles: `hold-tower` / `hold-wm` open the store (the tower one also
/// stores, reporting its fence), report `holding`, and keep the store until
/// their stdin closes; `try-tower` / `try-wm` attempt one open and report
/// `locked <message>` or `opened`.
#[test]
fn lock_child() {
    let Some(env) = child_env() else { return };
    let kp = NodeKeypair::from_seed(NODE_SEED);
    // Hold until the parent closes our stdin (or kills us).
    let hold = || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    };
    match env.role.as_str() {
        "hold-tower" => {
            let storage = open_retrying(OPEN_LIMIT, || open_tower(&env.dir));
            let fence = store_next(&storage, &kp);
            report(&format!("holding {fence}"));
            hold();
            drop(storage);
        }
        "hold-wm" => {
            let wm = open_retrying(OPEN_LIMIT, || open_wm(&env.dir));
            report("holding 0");
            hold();
            drop(wm);
        }
        "try-tower" | "try-wm" => {
            let got = if env.role == "try-tower" {
                open_tower(&env.dir).map(drop)
            } else {
                open_wm(&env.dir).map(drop)
            };
            match got {
                Err(e @ Error::Locked { .. }) => report(&format!("locked {e}")),
                Err(e) => report(&format!("error {e}")),
                Ok(()) => report("opened"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn_holder(role: &str, dir: &Path) -> (ChildProc, u64) {
    let mut child = spawn_child("lock_child", role, dir, "", Stdio::piped());
    let line = child.next_line().expect("holder exited before holding");
    let fence = line
        .strip_prefix("holding ")
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("holder said {line:?}"));
    (child, fence)
}

fn ask_child(role: &str, dir: &Path) -> String {
    let mut child = spawn_child("lock_child", role, dir, "", Stdio::null());
    let line = child.next_line().expect("child exited without answering");
    assert!(child.child.wait().unwrap().success());
    line
}

#[test]
fn second_process_is_refused_until_the_holder_exits_or_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    create_stores(dir.path());
    let kp = NodeKeypair::from_seed(NODE_SEED);
    let lock_name = format!("slashguard-tower-{}.lock", kp.node_id());

    // A child holds the tower: this process is refused, clearly.
    let (mut holder, fence1) = spawn_holder("hold-tower", dir.path());
    assert_locked(open_tower(dir.path()), &lock_name);
    // A clean exit releases it.
    drop(holder.child.stdin.take());
    assert!(holder.child.wait().unwrap().success());
    let storage = open_retrying(OPEN_LIMIT, || open_tower(dir.path()));
    let fence2 = store_next(&storage, &kp);
    assert!(fence2 > fence1, "fence {fence2} after {fence1}");

    // This process holds it: a child is refused with the same message.
    let answer = ask_child("try-tower", dir.path());
    assert!(
        answer.starts_with("locked ") && answer.contains("held by another process"),
        "{answer}"
    );
    drop(storage);

    // A holder killed with SIGKILL cannot clean up; the kernel releases
    // the lock and the next owner's fence is higher still.
    let (mut holder, fence3) = spawn_holder("hold-tower", dir.path());
    assert!(fence3 > fence2, "fence {fence3} after {fence2}");
    assert_locked(open_tower(dir.path()), &lock_name);
    assert!(holder.sigkill(), "holder ended before it was killed");
    let storage = open_retrying(OPEN_LIMIT, || open_tower(dir.path()));
    let fence4 = store_next(&storage, &kp);
    assert!(fence4 > fence3, "fence {fence4} after {fence3}");
    // Every store of every owner is there: votes 1, 2, 3, 4.
    assert_eq!(
        block_on(storage.load()).unwrap().unwrap().last_vote_slot(),
        Some(4)
    );
}

#[test]
fn watermark_file_is_owned_by_one_process() {
    let dir = tempfile::tempdir().unwrap();
    create_stores(dir.path());
    let (mut holder, _) = spawn_holder("hold-wm", dir.path());
    assert_locked(open_wm(dir.path()), "hwm.lock");
    assert!(holder.sigkill(), "holder ended before it was killed");
    let wm = open_retrying(OPEN_LIMIT, || open_wm(dir.path()));
    let answer = ask_child("try-wm", dir.path());
    assert!(
        answer.starts_with("locked ") && answer.contains("held by another process"),
        "{answer}"
    );
    drop(wm);
    // Closing stdin also works for the watermark holder.
    let (mut holder, _) = spawn_holder("hold-wm", dir.path());
    assert_locked(open_wm(dir.path()), "hwm.lock");
    holder
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bye")
        .unwrap();
    assert!(holder.child.wait().unwrap().success());
    assert_eq!(ask_child("try-wm", dir.path()), "opened");
}

#[test]
fn second_open_in_one_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    create_stores(dir.path());
    let kp = NodeKeypair::from_seed(NODE_SEED);

    let tower = open_retrying(OPEN_LIMIT, || open_tower(dir.path()));
    assert_open_here(
        open_tower(dir.path()),
        &format!("slashguard-tower-{}.bin", kp.node_id()),
    );
    let wm = open_retrying(OPEN_LIMIT, || open_wm(dir.path()));
    assert_open_here(open_wm(dir.path()), "hwm");

    // Distinct stores in one directory do not share a lock: another
    // node's tower, another watermark file.
    let other = FileTowerStorage::create(dir.path(), NodeKeypair::from_seed([3; 32]).node_id());
    let other_wm = FileWatermarks::create(dir.path().join("hwm2"));
    assert!(other.is_ok() && other_wm.is_ok());

    // Dropping releases.
    drop(tower);
    drop(wm);
    open_retrying(OPEN_LIMIT, || open_tower(dir.path()));
    open_retrying(OPEN_LIMIT, || open_wm(dir.path()));
}

#[test]
fn a_deleted_lock_file_or_another_path_does_not_let_a_second_process_in() {
    let dir = tempfile::tempdir().unwrap();
    create_stores(dir.path());
    let (mut holder, _) = spawn_holder("hold-wm", dir.path());
    // A "stale lock" clean-up while the holder runs: before, the next
    // process created a new lock file, locked it and owned the store too.
    std::fs::remove_file(dir.path().join("hwm.lock")).unwrap();
    assert_locked(open_wm(dir.path()), "hwm");
    let answer = ask_child("try-wm", dir.path());
    assert!(
        answer.starts_with("locked ") && answer.contains("held by another process"),
        "{answer}"
    );
    // Another path to the same inode: a symlinked directory, a hard link.
    let dir_link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
    assert_locked(open_wm(&dir_link), "hwm");
    let hard = dir.path().join("hard");
    std::fs::hard_link(dir.path().join("hwm"), &hard).unwrap();
    assert!(matches!(
        FileWatermarks::open(&hard),
        Err(Error::Locked { .. } | Error::Aliased { .. })
    ));
    assert!(holder.sigkill(), "holder ended before it was killed");
}
