//! The file stores fail closed (issue 10, items 1-3): a damaged newest
//! slot never silently rolls a store back, one data file has one owner
//! whatever path reaches it, and a missing data file is never re-created
//! empty. Each test reproduces a double sign or double vote that the code
//! before these changes allowed.

mod common;

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::watermark::{
    ConsensusKind, Curve, KeyHash, Mark, SetMode, SignRequest, SignerGuard, WatermarkKey,
};
use slashguard::{Error, NodeKeypair};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn key(i: u8) -> KeyHash {
    KeyHash {
        curve: Curve::Ed25519,
        hash: [i; 20],
    }
}

fn attestation(k: u8, level: u32, variant: u8) -> SignRequest {
    let bytes = common::consensus(
        ConsensusKind::Attestation,
        Curve::Ed25519,
        common::MAINNET,
        level,
        0,
        variant,
    );
    SignRequest::parse(&bytes, key(k)).unwrap()
}

use common::slot_image::{damage_newest_slot, older_format, region};

fn is_damaged<T: std::fmt::Debug>(got: &slashguard::Result<T>) -> bool {
    match got {
        Err(e @ Error::Damaged { recover, .. }) => {
            assert!(e.is_refusal(), "{e}");
            assert!(recover.contains("slashguard "), "names a command: {e}");
            true
        }
        _ => false,
    }
}

#[test]
fn a_damaged_acknowledged_watermark_slot_fences_until_every_key_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let wm = FileWatermarks::create(&path).unwrap();
    block_on(wm.authorize(&[attestation(1, 100, 1), attestation(2, 100, 1)])).unwrap();
    // Acknowledged: (200, 0) with payload 1, for both keys.
    block_on(wm.authorize(&[attestation(1, 200, 1), attestation(2, 200, 1)])).unwrap();
    drop(wm);
    // One damaged copy: read from its twin, rewritten, nothing refused.
    damage_newest_slot(&path, 1);
    let wm = FileWatermarks::open(&path).unwrap();
    assert!(!block_on(wm.is_damaged()).unwrap());
    assert!(block_on(wm.authorize(&[attestation(1, 200, 2)])).is_err());
    drop(wm);
    // Both copies: the older slot is all that is left; fenced.
    damage_newest_slot(&path, 2);

    let wm = FileWatermarks::open(&path).unwrap();
    assert!(block_on(wm.is_damaged()).unwrap());
    // Before: the older slot (level 100) was loaded silently and a second,
    // different attestation at the signed level 200 was authorized.
    let second = block_on(wm.authorize(&[attestation(1, 200, 2)]));
    assert!(is_damaged(&second), "{second:?}");
    // Even a repeat or a higher level: every authorization waits for the
    // operator, who alone knows how far the lost record went.
    assert!(is_damaged(&block_on(
        wm.authorize(&[attestation(1, 5000, 1)])
    )));
    // Inspection refuses to pass a possibly stale table on.
    assert!(is_damaged(&FileWatermarks::read_unlocked(&path)));
    // A raise that leaves a stored key out does not lift it.
    let all_kinds = |k: u8, level: u32| {
        ConsensusKind::ALL.map(|kind| {
            (
                WatermarkKey {
                    chain: common::MAINNET,
                    key: key(k),
                    kind,
                },
                Mark::level(level),
            )
        })
    };
    let partial = block_on(wm.set_marks(&all_kinds(1, 210), SetMode::RaiseOnly));
    assert!(is_damaged(&partial), "{partial:?}");
    // The operator's raise of every key (`watermark set-level --all`).
    let mut every: Vec<_> = all_kinds(1, 210).to_vec();
    every.extend(all_kinds(2, 210));
    block_on(wm.set_marks(&every, SetMode::RaiseOnly)).unwrap();
    assert!(!block_on(wm.is_damaged()).unwrap());
    assert!(block_on(wm.authorize(&[attestation(1, 200, 2)])).is_err());
    block_on(wm.authorize(&[attestation(1, 211, 1)])).unwrap();
    drop(wm);
    // Written durably: the reopened file is clean and keeps the raise.
    let wm = FileWatermarks::open(&path).unwrap();
    assert!(!block_on(wm.is_damaged()).unwrap());
    let k2 = WatermarkKey {
        chain: common::MAINNET,
        key: key(2),
        kind: ConsensusKind::Attestation,
    };
    assert_eq!(
        block_on(wm.watermark(&k2)).unwrap().unwrap().mark,
        Mark::level(210)
    );
}

fn tower(kp: &NodeKeypair, slot: u64, hash: u8) -> TowerRecord {
    TowerRecord::sign(
        kp,
        Some(VoteRef {
            slot,
            hash: [hash; 32],
        }),
        None,
        vec![hash; 64],
    )
    .unwrap()
}

#[test]
fn a_damaged_acknowledged_tower_slot_fences_until_accept_older() {
    let dir = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::from_seed([5; 32]);
    let s = FileTowerStorage::create(dir.path(), kp.node_id()).unwrap();
    block_on(s.store(&tower(&kp, 10, 1), StoreMode::Advance)).unwrap();
    block_on(s.store(&tower(&kp, 20, 1), StoreMode::Advance)).unwrap();
    let path = s.path().to_path_buf();
    drop(s);
    damage_newest_slot(&path, 2);

    let s = FileTowerStorage::open(dir.path(), kp.node_id()).unwrap();
    // Before: slot 10 loaded silently, and a vote for slot 20 with another
    // bank hash was stored (a double vote).
    let second = block_on(s.store(&tower(&kp, 20, 2), StoreMode::Advance));
    assert!(is_damaged(&second), "{second:?}");
    assert!(is_damaged(&block_on(
        s.store(&tower(&kp, 30, 1), StoreMode::Force)
    )));
    assert!(is_damaged(&FileTowerStorage::read_unlocked(
        dir.path(),
        kp.node_id()
    )));
    let accepted = block_on(s.accept_older()).unwrap().unwrap();
    assert_eq!(accepted.last_vote_slot(), Some(10));
    block_on(s.store(&tower(&kp, 30, 1), StoreMode::Advance)).unwrap();
    drop(s);
    let s = FileTowerStorage::open(dir.path(), kp.node_id()).unwrap();
    assert!(!block_on(s.is_damaged()).unwrap());
    assert_eq!(
        block_on(s.load()).unwrap().unwrap().last_vote_slot(),
        Some(30)
    );
}

#[test]
fn a_moved_away_store_is_refused_not_recreated_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let wm = FileWatermarks::create(&path).unwrap();
    block_on(wm.authorize(&[attestation(1, 1000, 1)])).unwrap();
    drop(wm);
    std::fs::rename(&path, dir.path().join("moved")).unwrap();
    // Before: opened as "never signed", then signed at level 10.
    match FileWatermarks::open(&path) {
        Err(Error::StoreMissing { hint, .. }) => {
            assert!(hint.contains("shows a store was opened there"), "{hint}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!path.exists(), "a refused open created nothing");
    assert!(matches!(
        FileWatermarks::read_unlocked(&path),
        Err(Error::StoreMissing { .. })
    ));
    // Never created there: also refused, with another hint.
    assert!(matches!(
        FileWatermarks::open(dir.path().join("never")),
        Err(Error::StoreMissing { .. })
    ));
    assert!(!dir.path().join("never.lock").exists());
    // Creating over an existing store is refused.
    std::fs::rename(dir.path().join("moved"), &path).unwrap();
    assert!(matches!(
        FileWatermarks::create(&path),
        Err(Error::StoreExists { .. })
    ));

    let kp = NodeKeypair::from_seed([6; 32]);
    let s = FileTowerStorage::create(dir.path(), kp.node_id()).unwrap();
    block_on(s.store(&tower(&kp, 1000, 1), StoreMode::Advance)).unwrap();
    let data = s.path().to_path_buf();
    drop(s);
    std::fs::remove_file(&data).unwrap();
    assert!(matches!(
        FileTowerStorage::open(dir.path(), kp.node_id()),
        Err(Error::StoreMissing { .. })
    ));
    assert!(!data.exists());
}

#[test]
fn a_deleted_lock_file_gives_no_second_owner_and_stops_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let first = FileWatermarks::create(&path).unwrap();
    // A "stale lock" clean-up while the owner runs.
    std::fs::remove_file(FileWatermarks::lock_path(&path)).unwrap();
    // Before: a second open succeeded (two owners, both signed).
    match FileWatermarks::open(&path) {
        Err(e @ Error::AlreadyOpen { .. }) => {
            assert!(e.to_string().contains("already open in this process"))
        }
        other => panic!("{other:?}"),
    }
    // The first owner notices before its next write.
    match block_on(first.authorize(&[attestation(1, 10, 1)])) {
        Err(Error::Fenced { reason, .. }) => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn symlinked_and_hard_linked_data_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    drop(FileWatermarks::create(&path).unwrap());
    let sym = dir.path().join("via-symlink");
    std::os::unix::fs::symlink(&path, &sym).unwrap();
    assert!(matches!(
        FileWatermarks::open(&sym),
        Err(Error::Aliased { .. })
    ));
    let hard = dir.path().join("via-hardlink");
    std::fs::hard_link(&path, &hard).unwrap();
    // Either name: one file with two names would get two lock files.
    for p in [&path, &hard] {
        match FileWatermarks::open(p) {
            Err(e @ Error::Aliased { .. }) => assert!(e.to_string().contains("hard links")),
            other => panic!("{other:?}"),
        }
    }
    std::fs::remove_file(&hard).unwrap();
    // The original, by its one name, while open: a second open through
    // a symlinked directory reaches the same inode and is refused.
    let open = FileWatermarks::open(&path).unwrap();
    let dir_link = dir.path().join("dir-link");
    std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
    assert!(matches!(
        FileWatermarks::open(dir_link.join("hwm")),
        Err(Error::AlreadyOpen { .. })
    ));
    drop(open);
}

/// Stores written by older builds (format version 1: one copy per slot;
/// version 2: the copies half a file apart) open without loss, are
/// rewritten as version 3 by their owner at once, and keep working; their
/// damage is judged by their own format's rules (a damaged newest slot of a
/// version 2 file with no intact copy still fences).
#[test]
fn files_of_older_formats_open_without_loss_and_are_upgraded() {
    let node = NodeKeypair::from_seed([9; 32]);
    let record = |slot: u64| {
        TowerRecord::sign(
            &node,
            Some(VoteRef {
                slot,
                hash: [slot as u8; 32],
            }),
            None,
            vec![slot as u8; 700],
        )
        .unwrap()
    };
    let is_v3 = |bytes: &[u8]| {
        let size = bytes.len() / 4;
        (0..4).all(|r| bytes[r * size + 4] == 3)
            && bytes[region(3, 0, 0) * size + 8..][..8] == bytes[region(3, 0, 1) * size + 8..][..8]
    };
    for version in [1u8, 2] {
        // Towers.
        let dir = tempfile::tempdir().unwrap();
        let store = FileTowerStorage::create(dir.path(), node.node_id()).unwrap();
        for slot in 1..=3 {
            block_on(store.store(&record(slot), StoreMode::Advance)).unwrap();
        }
        drop(store);
        let data = FileTowerStorage::data_path(dir.path(), &node.node_id());
        let old = older_format(&std::fs::read(&data).unwrap(), version);
        std::fs::write(&data, &old).unwrap();
        let store = FileTowerStorage::open(dir.path(), node.node_id()).unwrap();
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(
            loaded.last_vote().map(|v| v.slot),
            Some(3),
            "version {version}"
        );
        assert!(
            is_v3(&std::fs::read(&data).unwrap()),
            "version {version} rewritten as 3"
        );
        block_on(store.store(&record(4), StoreMode::Advance)).unwrap();
        // An older record is still refused after the upgrade.
        assert!(block_on(store.store(&record(2), StoreMode::Advance)).is_err());
        drop(store);
        let store = FileTowerStorage::open(dir.path(), node.node_id()).unwrap();
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(loaded.last_vote().map(|v| v.slot), Some(4));
        drop(store);

        // Watermarks.
        let path = dir.path().join("hwm");
        let wm = FileWatermarks::create(&path).unwrap();
        block_on(wm.authorize(&[attestation(1, 100, 1)])).unwrap();
        block_on(wm.authorize(&[attestation(1, 200, 1)])).unwrap();
        drop(wm);
        let old = older_format(&std::fs::read(&path).unwrap(), version);
        std::fs::write(&path, &old).unwrap();
        let wm = FileWatermarks::open(&path).unwrap();
        assert!(
            is_v3(&std::fs::read(&path).unwrap()),
            "version {version} rewritten as 3"
        );
        // The acknowledged (200, 0) survived: a different payload there is
        // refused, the same one is a repeat.
        assert!(block_on(wm.authorize(&[attestation(1, 200, 2)])).is_err());
        block_on(wm.authorize(&[attestation(1, 200, 1)])).unwrap();
        block_on(wm.authorize(&[attestation(1, 201, 1)])).unwrap();
    }

    // A version 2 file whose newest slot has no intact copy: fenced, as
    // version 2 always was, not upgraded over the damage.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let wm = FileWatermarks::create(&path).unwrap();
    block_on(wm.authorize(&[attestation(1, 100, 1)])).unwrap();
    block_on(wm.authorize(&[attestation(1, 200, 1)])).unwrap();
    drop(wm);
    let mut old = older_format(&std::fs::read(&path).unwrap(), 2);
    let size = old.len() / 4;
    let seq = |b: &[u8], r: usize| u64::from_le_bytes(b[r * size + 8..][..8].try_into().unwrap());
    let newest = usize::from(seq(&old, region(2, 1, 0)) > seq(&old, region(2, 0, 0)));
    for c in 0..2 {
        old[region(2, newest, c) * size + 30] ^= 0x40;
    }
    std::fs::write(&path, &old).unwrap();
    let wm = FileWatermarks::open(&path).unwrap();
    assert!(block_on(wm.is_damaged()).unwrap());
    assert!(is_damaged(&block_on(
        wm.authorize(&[attestation(1, 200, 2)])
    )));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        old,
        "nothing written over the damage"
    );
}
