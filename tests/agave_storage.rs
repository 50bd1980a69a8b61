//! The Agave `TowerStorage` adapter through Agave's call sequence on the
//! file backend: load at start (nothing yet), store before each vote, load
//! back byte for byte, regressions and foreign or forged towers refused,
//! set-identity onto another instance (the old owner can no longer store),
//! and `tower export`'s view of what was stored.

use slashguard::agave::{
    AgaveError, AgaveStorageError, AgaveTower, AgaveTowerStorage, LastVote, Lockout, SavedTower,
    TowerSync,
};
use slashguard::blocking::Blocking;
use slashguard::file::FileTowerStorage;
use slashguard::tower::{TowerBytesKind, TowerStorage};
use slashguard::{Error, NodeKeypair};

const SEED: [u8; 32] = [0x42; 32];

/// The bytes Agave's `store` hands over for a vote at `slot` (the bincode
/// of `SavedTowerVersions::Current`), signed by `kp`.
fn agave_tower(kp: &NodeKeypair, slot: u64, hash: u8, root: u64) -> Vec<u8> {
    let lockouts: Vec<Lockout> = (0..3)
        .map(|i| Lockout {
            slot: slot - 2 + i,
            confirmation_count: 3 - i as u32,
        })
        .collect();
    let mut tower = AgaveTower::new(kp.node_id());
    tower.vote_state.votes = lockouts.clone();
    tower.vote_state.root_slot = Some(root);
    tower.last_vote = LastVote::TowerSync(TowerSync {
        lockouts,
        root: Some(root),
        hash: [hash; 32],
        timestamp: Some(1_700_000_000),
        block_id: [9; 32],
    });
    SavedTower::sign(tower, kp).unwrap().encode()
}

fn adapter(
    dir: &std::path::Path,
    create: bool,
) -> slashguard::Result<Blocking<AgaveTowerStorage<FileTowerStorage>>> {
    let kp = NodeKeypair::from_seed(SEED);
    let storage = if create {
        FileTowerStorage::create(dir, kp.node_id())?
    } else {
        FileTowerStorage::open(dir, kp.node_id())?
    };
    Blocking::new(AgaveTowerStorage::new(storage, kp)?)
}

#[test]
fn agaves_call_sequence_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let agave = NodeKeypair::from_seed(SEED);
    let node = agave.node_id();
    let a = adapter(dir.path(), true).unwrap();

    // Start: nothing stored yet (Agave then builds a new tower).
    assert!(a.load(&node).unwrap_err().is_not_found());

    // Store before each vote; load gives back exactly the bytes.
    let mut last = Vec::new();
    for slot in 100..110 {
        last = agave_tower(&agave, slot, slot as u8, 60);
        a.store(&last).unwrap();
        assert_eq!(a.load(&node).unwrap().encode(), last);
    }
    let record = a
        .block_on(a.inner().storage().load())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(record.tower_kind(), TowerBytesKind::AgaveSavedTower);
    assert_eq!(record.tower_bytes(), &last[..]);
    assert_eq!(record.last_vote_slot(), Some(109));

    // Refused, nothing stored: a regression, another hash at the stored
    // slot, a root moving back, a tower of another node, a forged
    // signature, bytes that are not a tower.
    for (what, bytes) in [
        ("older", agave_tower(&agave, 105, 105, 60)),
        ("other hash", agave_tower(&agave, 109, 1, 60)),
        ("root back", agave_tower(&agave, 110, 110, 59)),
    ] {
        let e = a.store(&bytes).unwrap_err();
        assert!(matches!(e, AgaveStorageError::Refused(_)), "{what}: {e}");
        assert!(!e.is_fenced());
    }
    let stranger = NodeKeypair::from_seed([7; 32]);
    let foreign = agave_tower(&stranger, 120, 1, 60);
    assert!(matches!(
        a.store(&foreign).unwrap_err(),
        AgaveStorageError::InvalidTower {
            source: AgaveError::ForeignNode { .. },
            ..
        }
    ));
    let mut forged = agave_tower(&agave, 120, 1, 60);
    forged[10] ^= 1; // inside the signature
    assert!(matches!(
        a.store(&forged).unwrap_err(),
        AgaveStorageError::InvalidTower {
            source: AgaveError::BadSignature { .. },
            ..
        }
    ));
    let mut trailing = agave_tower(&agave, 120, 1, 60);
    trailing.push(0);
    assert!(matches!(
        a.store(&trailing).unwrap_err(),
        AgaveStorageError::InvalidTower { .. }
    ));
    for cut in [0, 4, 68, 76, 200] {
        assert!(a.store(&agave_tower(&agave, 120, 1, 60)[..cut]).is_err());
    }
    // Agave asking for another identity's tower from this adapter.
    assert!(matches!(
        a.load(&stranger.node_id()).unwrap_err(),
        AgaveStorageError::InvalidTower { .. }
    ));
    assert_eq!(a.load(&node).unwrap().encode(), last);

    // set-identity onto another instance: while this one owns the tower,
    // the other cannot take it.
    // (In this process the file store says so as `AlreadyOpen`; another
    // process gets `Locked`.)
    assert!(matches!(
        adapter(dir.path(), false),
        Err(Error::AlreadyOpen { .. } | Error::Locked { .. })
    ));
    // This instance hands over (drops its store); the new owner loads the
    // exact bytes and goes on voting.
    drop(a);
    let b = adapter(dir.path(), false).unwrap();
    assert_eq!(b.load(&node).unwrap().encode(), last);
    let next = agave_tower(&agave, 110, 110, 61);
    b.store(&next).unwrap();
    // The old owner cannot come back while the new one runs.
    // (In this process the file store says so as `AlreadyOpen`; another
    // process gets `Locked`.)
    assert!(matches!(
        adapter(dir.path(), false),
        Err(Error::AlreadyOpen { .. } | Error::Locked { .. })
    ));
    // `tower export` writes what was stored, as it was.
    let record = b
        .block_on(b.inner().storage().load())
        .unwrap()
        .unwrap()
        .unwrap();
    let exported = SavedTower::from_stored(&record, &NodeKeypair::from_seed(SEED)).unwrap();
    assert_eq!(exported.encode(), next);
}

#[test]
fn an_opaque_record_is_not_an_agave_tower() {
    let dir = tempfile::tempdir().unwrap();
    let kp = NodeKeypair::from_seed(SEED);
    let node = kp.node_id();
    let storage = FileTowerStorage::create(dir.path(), node).unwrap();
    let record = slashguard::tower::TowerRecord::sign(
        &kp,
        Some(slashguard::tower::VoteRef {
            slot: 5,
            hash: [1; 32],
        }),
        None,
        vec![0xAB; 288],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(storage.store(&record, Default::default()))
        .unwrap();
    let a = Blocking::new(AgaveTowerStorage::new(storage, kp).unwrap()).unwrap();
    let e = a.load(&node).unwrap_err();
    assert!(
        matches!(
            e,
            AgaveStorageError::InvalidTower {
                source: AgaveError::OpaqueTower { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("validator's own format"), "{e}");
}
