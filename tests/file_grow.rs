//! Records that outgrow their slot: the file is rewritten with larger slots
//! (through a temporary file renamed into place), nothing is lost, and no
//! other file is touched.

mod common;

use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::watermark::{ConsensusKind, Curve, KeyHash, SignRequest, SignerGuard};
use slashguard::NodeKeypair;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn batch(keys: usize, level: u32) -> Vec<SignRequest> {
    (0..keys)
        .map(|i| {
            let key = KeyHash {
                curve: Curve::Ed25519,
                hash: [i as u8; 20],
            };
            let bytes = common::consensus(
                ConsensusKind::Block,
                Curve::Ed25519,
                common::MAINNET,
                level,
                0,
                i as u8,
            );
            SignRequest::parse(&bytes, key).unwrap()
        })
        .collect()
}

#[test]
fn tower_grows_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::from_seed([4; 32]);
    let storage = FileTowerStorage::create(dir.path(), kp.node_id()).unwrap();
    let path = storage.path().to_path_buf();
    let initial = std::fs::metadata(&path).unwrap().len();
    let mut last_seq = 0;
    for (slot, size) in [
        (1u64, 100usize),
        (2, 100_000),
        (3, 10),
        (4, 300_000),
        (5, 10),
    ] {
        let r = TowerRecord::sign(
            &kp,
            Some(VoteRef {
                slot,
                hash: [slot as u8; 32],
            }),
            None,
            vec![slot as u8; size],
        )
        .unwrap();
        let receipt = block_on(storage.store(&r, StoreMode::Advance)).unwrap();
        assert!(receipt.sequence > last_seq, "sequence must keep growing");
        last_seq = receipt.sequence;
        assert_eq!(block_on(storage.load()).unwrap().as_ref(), Some(&r));
    }
    let grown = std::fs::metadata(&path).unwrap().len();
    assert!(
        grown > initial && grown >= 2 * 300_000,
        "{initial} -> {grown}"
    );
    drop(storage);
    let storage = FileTowerStorage::open(dir.path(), kp.node_id()).unwrap();
    let r = block_on(storage.load()).unwrap().unwrap();
    assert_eq!(r.last_vote_slot(), Some(5));
    // Only the store's own files are left: no temporary file.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let node = kp.node_id();
    assert_eq!(
        names,
        [
            format!("slashguard-tower-{node}.bin"),
            format!("slashguard-tower-{node}.lock")
        ]
    );
}

/// Two watermark files that differ only in their extension ("signer.a",
/// "signer.b") must not share the temporary file a growing store writes:
/// two processes growing at once would rename each other's table into
/// place. Here a file standing where a shared temporary would be must come
/// out untouched.
#[test]
fn growing_a_store_touches_no_other_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileWatermarks::create(dir.path().join("signer.a")).unwrap();
    let b = FileWatermarks::create(dir.path().join("signer.b")).unwrap();
    let bystander = dir.path().join("signer.grow");
    std::fs::write(&bystander, b"someone else's file").unwrap();

    // 100 entries of 76 bytes do not fit the first 4 KiB slot.
    block_on(a.authorize(&batch(100, 1))).unwrap();
    block_on(b.authorize(&batch(80, 2))).unwrap();
    assert_eq!(std::fs::read(&bystander).unwrap(), b"someone else's file");

    drop((a, b));
    let a = FileWatermarks::open(dir.path().join("signer.a")).unwrap();
    let b = FileWatermarks::open(dir.path().join("signer.b")).unwrap();
    let (ta, tb) = (
        block_on(a.watermarks()).unwrap(),
        block_on(b.watermarks()).unwrap(),
    );
    assert_eq!(ta.len(), 100);
    assert!(ta.iter().all(|(_, w)| w.mark.level == 1));
    assert_eq!(tb.len(), 80);
    assert!(tb.iter().all(|(_, w)| w.mark.level == 2));
}
