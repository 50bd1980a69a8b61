//! The Alpenglow vote history file fails closed like the tower file (issue
//! 10 for vote histories): a history file that was deleted or renamed is
//! refused with `StoreMissing`, never read as "never voted" (which let a
//! restarted validator start a fresh history and vote a slot again); a
//! deleted lock file fences the next write; a damaged newest record fences
//! every vote until the operator accepts the older one. Real files on a
//! real file system; the hung `fdatasync` is in the unit tests of
//! `src/file/vote_history.rs` (a disk cannot be made to hang on demand).

use std::path::Path;

use slashguard::alpenglow::{
    AlpenglowRefusal, HistoryStorage, HistoryUpdate, RuleMode, Vote, VoteHistory, VoteKind,
};
use slashguard::file::{FileTowerStorage, FileVoteHistory};
use slashguard::{Error, NodeId, NodeKeypair, Refusal};

const SV: u16 = 77;

fn node() -> NodeId {
    NodeKeypair::from_seed([31; 32]).node_id()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn v(slot: u64, kind: VoteKind) -> Vote {
    Vote {
        slot,
        kind,
        shred_version: SV,
    }
}

fn vote(store: &FileVoteHistory, votes: Vec<Vote>) -> slashguard::Result<bool> {
    let update = HistoryUpdate {
        votes,
        finalized: None,
    };
    rt().block_on(store.apply(&update, RuleMode::Strict))
        .map(|a| a.wrote)
}

/// A store with a history rooted at 10 and a notarize vote in slots 11..=13.
fn voted_store(dir: &Path) {
    let store = FileVoteHistory::create(dir, node()).unwrap();
    rt().block_on(store.create(&VoteHistory::new(node(), SV, 10)))
        .unwrap();
    for slot in 11..=13 {
        assert!(vote(&store, vec![v(slot, VoteKind::Notarize([slot as u8; 32]))]).unwrap());
    }
}

fn missing_hint(got: slashguard::Result<FileVoteHistory>) -> String {
    match got {
        Err(Error::StoreMissing { hint, .. }) => hint,
        other => panic!("expected StoreMissing, got {other:?}"),
    }
}

#[test]
fn a_deleted_history_file_is_refused_never_read_as_no_history() {
    let dir = tempfile::tempdir().unwrap();
    voted_store(dir.path());
    let path = FileVoteHistory::data_path(dir.path(), &node());
    std::fs::remove_file(&path).unwrap();

    // Before: `open` gave an empty store, `load` said "no history", and a
    // new history from a lower root let slot 12 be voted again.
    let hint = missing_hint(FileVoteHistory::open(dir.path(), node()));
    assert!(hint.contains("moved away or lost"), "{hint}");
    assert!(hint.contains("vote-history import"), "{hint}");
    assert!(matches!(
        FileVoteHistory::read_unlocked(dir.path(), node()),
        Err(Error::StoreMissing { .. })
    ));
    // The refusal created nothing.
    assert!(!path.exists());
}

#[test]
fn a_renamed_history_file_is_refused_until_it_is_put_back() {
    let dir = tempfile::tempdir().unwrap();
    voted_store(dir.path());
    let path = FileVoteHistory::data_path(dir.path(), &node());
    let aside = dir.path().join("history.bak");
    std::fs::rename(&path, &aside).unwrap();
    missing_hint(FileVoteHistory::open(dir.path(), node()));
    std::fs::rename(&aside, &path).unwrap();
    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    let h = rt().block_on(store.load()).unwrap().unwrap();
    assert_eq!(h.last_voted_slot(), Some(13));
    // The votes it holds are still enforced.
    let err = vote(&store, vec![v(12, VoteKind::Skip)]).unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::Conflict {
            slot: 12,
            ..
        }))
    ));
}

#[test]
fn a_directory_without_a_history_says_so_and_creation_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let hint = missing_hint(FileVoteHistory::open(dir.path(), node()));
    assert!(hint.contains("no vote history was ever created"), "{hint}");
    // Nothing at all was created, not even the lock file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // An identity that kept only a tower here: the lock file exists, and
    // the hint says what that does and does not show.
    drop(FileTowerStorage::create(dir.path(), node()).unwrap());
    let hint = missing_hint(FileVoteHistory::open(dir.path(), node()));
    assert!(hint.contains("tower or vote history"), "{hint}");

    let store = FileVoteHistory::create(dir.path(), node()).unwrap();
    // Created empty: votes wait for the operator's first history.
    let err = vote(&store, vec![v(5, VoteKind::Skip)]).unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::NoHistory { .. }))
    ));
    drop(store);
    assert!(matches!(
        FileVoteHistory::create(dir.path(), node()),
        Err(Error::StoreExists { .. })
    ));
    assert_eq!(
        FileVoteHistory::read_unlocked(dir.path(), node()).unwrap(),
        None
    );
}

#[test]
fn a_deleted_lock_file_fences_the_next_vote() {
    let dir = tempfile::tempdir().unwrap();
    voted_store(dir.path());
    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    std::fs::remove_file(FileTowerStorage::lock_path(dir.path(), &node())).unwrap();
    let err = vote(&store, vec![v(14, VoteKind::Skip)]).unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    // A repeat of a recorded vote writes nothing and is still answered.
    assert!(!vote(&store, vec![v(13, VoteKind::Notarize([13; 32]))]).unwrap());
}

#[path = "common/slot_image.rs"]
mod slot_image;

/// Flip a byte in both copies of the newest slot.
fn damage_newest_slot(path: &Path) {
    slot_image::damage_newest_slot(path, 2);
}

#[test]
fn a_damaged_newest_record_fences_votes_until_the_operator_accepts_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    voted_store(dir.path());
    damage_newest_slot(&FileVoteHistory::data_path(dir.path(), &node()));

    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    assert!(rt().block_on(store.is_damaged()).unwrap());
    // The older record (votes up to 12) was loaded; before, a second,
    // different notarize of slot 13 was then recorded and signed.
    let older = rt().block_on(store.load()).unwrap().unwrap();
    assert_eq!(older.last_voted_slot(), Some(12));
    let damaged = |e: Error| match e {
        Error::Damaged { recover, .. } => {
            assert!(
                recover.contains("slashguard vote-history accept-older"),
                "{recover}"
            );
        }
        other => panic!("expected Damaged, got {other:?}"),
    };
    damaged(vote(&store, vec![v(13, VoteKind::Notarize([99; 32]))]).unwrap_err());
    // Every vote, not only ones in the lost slot: the operator alone knows
    // how far the lost record went.
    damaged(vote(&store, vec![v(500, VoteKind::Skip)]).unwrap_err());
    damaged(
        FileVoteHistory::read_unlocked(dir.path(), node())
            .map(|_| ())
            .unwrap_err(),
    );

    assert_eq!(rt().block_on(store.accept_older()).unwrap(), Some(older));
    assert!(!rt().block_on(store.is_damaged()).unwrap());
    assert!(vote(&store, vec![v(500, VoteKind::Skip)]).unwrap());
    drop(store);
    // Durable: the reopened file is clean.
    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    assert!(!rt().block_on(store.is_damaged()).unwrap());
    assert_eq!(
        rt().block_on(store.load())
            .unwrap()
            .unwrap()
            .last_voted_slot(),
        Some(500)
    );
}
