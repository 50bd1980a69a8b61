//! The Agave `VoteHistoryStorage` adapter through Agave's call sequence on
//! the file backend: stores before each vote, loads back byte for byte
//! after a restart, refuses older files, slashable files, files of another
//! identity, forged files and files in a layout it is not pinned to, and
//! never hands out a file that misses a vote recorded by another path.
//!
//! The files are built here the way Agave builds them: a mirror of Agave's
//! `VoteHistory` struct (hash sets and maps, in hash order) serialized with
//! `bincode` 1.3, the serializer Agave's `SavedVoteHistory::new` calls, and
//! signed with ed25519: an encoder independent of slashguard's.

use std::collections::{HashMap, HashSet};

use serde::ser::{SerializeTuple, Serializer};
use serde::Serialize;
use slashguard::agave::{
    AgaveVoteHistoryStorage, HistoryLayout, SavedVoteHistory, VoteHistoryFileError,
};
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, AlpenglowRefusal, HistoryStorage, RuleMode, Vote, VoteKind,
};
use slashguard::blocking::Blocking;
use slashguard::file::FileVoteHistory;
use slashguard::{Error, NodeId, NodeKeypair, Refusal};

const SV: u16 = 50093;
const SEED: [u8; 32] = [0x51; 32];

/// Agave's `Vote` enum as of agave-votor (bincode: u32 variant).
#[derive(Serialize, Clone, Copy)]
enum EnumVote {
    Notarize { slot: u64, block_id: [u8; 32] },
    Finalize { slot: u64 },
    Skip { slot: u64 },
    NotarizeFallback { slot: u64, block_id: [u8; 32] },
    SkipFallback { slot: u64 },
}

/// A vote as its signed payload (u8 kind, slot, block, u16 shred version).
#[derive(Clone, Copy)]
struct PayloadVote(Vote);

impl Serialize for PayloadVote {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(&v.kind.code())?;
        t.serialize_element(&v.slot)?;
        if let Some(b) = v.kind.block() {
            t.serialize_element(b)?;
        }
        t.serialize_element(&v.shred_version)?;
        t.end()
    }
}

/// Agave's `VoteHistory`, field for field.
#[derive(Serialize)]
struct Mirror<V> {
    node_pubkey: [u8; 32],
    voted: HashSet<u64>,
    voted_notar: HashMap<u64, [u8; 32]>,
    voted_notar_fallback: HashMap<u64, HashSet<[u8; 32]>>,
    voted_skip_fallback: HashSet<u64>,
    skipped: HashSet<u64>,
    its_over: HashSet<u64>,
    votes_cast: HashMap<u64, Vec<V>>,
    notarized_blocks: HashSet<(u64, [u8; 32])>,
    parent_ready_slots: HashMap<u64, HashSet<(u64, [u8; 32])>>,
    root: u64,
}

impl<V> Mirror<V> {
    /// Agave's `VoteHistory::new`.
    fn new(node_pubkey: [u8; 32], root: u64) -> Self {
        Mirror {
            node_pubkey,
            voted: HashSet::new(),
            voted_notar: HashMap::new(),
            voted_notar_fallback: HashMap::new(),
            voted_skip_fallback: HashSet::new(),
            skipped: HashSet::new(),
            its_over: HashSet::new(),
            votes_cast: HashMap::new(),
            notarized_blocks: HashSet::new(),
            parent_ready_slots: HashMap::new(),
            root,
        }
    }

    /// Agave's `add_vote`.
    fn add(&mut self, slot: u64, kind: VoteKind, v: V) {
        match kind {
            VoteKind::Notarize(b) => {
                self.voted.insert(slot);
                self.voted_notar.insert(slot, b);
            }
            VoteKind::Finalize => {
                self.its_over.insert(slot);
            }
            VoteKind::Skip => {
                self.voted.insert(slot);
                self.skipped.insert(slot);
            }
            VoteKind::NotarizeFallback(b) => {
                self.skipped.insert(slot);
                self.voted_notar_fallback.entry(slot).or_default().insert(b);
            }
            VoteKind::SkipFallback => {
                self.skipped.insert(slot);
                self.voted_skip_fallback.insert(slot);
            }
            VoteKind::Genesis(_) => {}
        }
        self.votes_cast.entry(slot).or_default().push(v);
    }
}

/// `SavedVoteHistoryVersions::Current(SavedVoteHistory { signature, data })`,
/// signed with the identity's ed25519 key (`ed25519-dalek` directly).
fn envelope(kp: &Identity, data: Vec<u8>) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    #[derive(Serialize)]
    enum Versions {
        Current { signature: Sig, data: Vec<u8> },
    }
    struct Sig([u8; 64]);
    impl Serialize for Sig {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(64)?;
            for b in &self.0 {
                t.serialize_element(b)?;
            }
            t.end()
        }
    }
    let signature = Sig(kp.0.sign(&data).to_bytes());
    bincode::serialize(&Versions::Current { signature, data }).unwrap()
}

/// An identity keypair, as the test's own ed25519 key.
struct Identity(ed25519_dalek::SigningKey);

impl Identity {
    fn from_seed(seed: [u8; 32]) -> Self {
        Identity(ed25519_dalek::SigningKey::from_bytes(&seed))
    }
    fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }
}

/// Agave's file for `votes` at `root`, in `layout`.
fn agave_file(
    kp: &Identity,
    layout: HistoryLayout,
    root: u64,
    votes: &[(u64, VoteKind)],
) -> Vec<u8> {
    let node_pubkey = *kp.node_id().as_bytes();
    let data = match layout {
        HistoryLayout::VoteEnum => {
            let mut m = Mirror::<EnumVote>::new(node_pubkey, root);
            for &(slot, kind) in votes {
                let v = match kind {
                    VoteKind::Notarize(block_id) => EnumVote::Notarize { slot, block_id },
                    VoteKind::Finalize => EnumVote::Finalize { slot },
                    VoteKind::Skip => EnumVote::Skip { slot },
                    VoteKind::NotarizeFallback(block_id) => {
                        EnumVote::NotarizeFallback { slot, block_id }
                    }
                    VoteKind::SkipFallback => EnumVote::SkipFallback { slot },
                    VoteKind::Genesis(_) => unreachable!(),
                };
                m.add(slot, kind, v);
            }
            m.notarized_blocks.insert((root, [0xcc; 32]));
            bincode::serialize(&m).unwrap()
        }
        _ => {
            let mut m = Mirror::<PayloadVote>::new(node_pubkey, root);
            for &(slot, kind) in votes {
                let v = PayloadVote(Vote {
                    slot,
                    kind,
                    shred_version: SV,
                });
                m.add(slot, kind, v);
            }
            m.parent_ready_slots
                .entry(root + 1)
                .or_default()
                .insert((root, [0xdd; 32]));
            bincode::serialize(&m).unwrap()
        }
    };
    envelope(kp, data)
}

fn node() -> NodeId {
    NodeKeypair::from_seed(SEED).node_id()
}

fn adapter(
    dir: &std::path::Path,
    layout: HistoryLayout,
) -> slashguard::Result<Blocking<AgaveVoteHistoryStorage<FileVoteHistory>>> {
    let store = if FileVoteHistory::data_path(dir, &node()).exists() {
        FileVoteHistory::open(dir, node())?
    } else {
        FileVoteHistory::create(dir, node())?
    };
    Blocking::new(AgaveVoteHistoryStorage::new(store, layout))
}

fn refusal(e: slashguard::agave::AgaveVoteHistoryError) -> AlpenglowRefusal {
    match e {
        slashguard::agave::AgaveVoteHistoryError::Refused(Error::Refused(Refusal::Alpenglow(
            r,
        ))) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn invalid(e: slashguard::agave::AgaveVoteHistoryError) -> VoteHistoryFileError {
    match e {
        slashguard::agave::AgaveVoteHistoryError::Invalid { source, .. } => source,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The votes Agave casts in slots `100..=last`, a mix of every kind.
fn votes_up_to(last: u64) -> Vec<(u64, VoteKind)> {
    let mut out = Vec::new();
    for slot in 100..=last {
        match slot % 3 {
            0 => {
                out.push((slot, VoteKind::Notarize([slot as u8; 32])));
                out.push((slot, VoteKind::Finalize));
            }
            1 => {
                out.push((slot, VoteKind::Skip));
                out.push((slot, VoteKind::SkipFallback));
            }
            _ => {
                out.push((slot, VoteKind::Notarize([slot as u8; 32])));
                out.push((slot, VoteKind::NotarizeFallback([0xee; 32])));
            }
        }
    }
    out
}

#[test]
fn agaves_call_sequence_on_the_file_store_in_both_layouts() {
    for layout in HistoryLayout::ALL {
        let dir = tempfile::tempdir().unwrap();
        let agave = Identity::from_seed(SEED);
        let a = adapter(dir.path(), layout).unwrap();

        // No history yet: not found, and a store is refused until the
        // operator starts one (never an empty history by accident).
        assert!(a.load(&node()).unwrap_err().is_not_found());
        let first = agave_file(&agave, layout, 100, &votes_up_to(100));
        assert!(matches!(
            refusal(a.store(&first).unwrap_err()),
            AlpenglowRefusal::NoHistory { .. }
        ));
        a.block_on(a.inner().start_history(SV, 90))
            .unwrap()
            .unwrap();
        assert!(a.load(&node()).unwrap_err().is_not_found());

        // Store before each vote; load gives back exactly the bytes.
        let mut last = Vec::new();
        for slot in 100..110 {
            last = agave_file(&agave, layout, 100, &votes_up_to(slot));
            assert!(a.store(&last).unwrap().wrote, "{layout} slot {slot}");
            assert_eq!(a.load(&node()).unwrap().encode(), last);
        }
        // The same file again writes nothing.
        assert!(!a.store(&last).unwrap().wrote);
        drop(a);

        // After a restart, the same bytes.
        let a = adapter(dir.path(), layout).unwrap();
        assert_eq!(a.load(&node()).unwrap().encode(), last);
        let h = a
            .block_on(a.inner().storage().load())
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(h.root(), 100);
        assert_eq!(h.last_voted_slot(), Some(109));
        assert_eq!(h.agave_file(), Some(&last[..]));

        // Refused, nothing stored: an older file; a slashable one; a lower
        // root; another identity's; a forged signature.
        assert!(matches!(
            refusal(
                a.store(&agave_file(&agave, layout, 100, &votes_up_to(105)))
                    .unwrap_err()
            ),
            AlpenglowRefusal::HistoryRegressed { slot: 106, .. }
        ));
        let mut slashable = votes_up_to(109);
        slashable.push((109, VoteKind::Finalize));
        assert!(matches!(
            refusal(
                a.store(&agave_file(&agave, layout, 100, &slashable))
                    .unwrap_err()
            ),
            AlpenglowRefusal::Conflict { slot: 109, .. }
        ));
        assert!(matches!(
            refusal(
                a.store(&agave_file(&agave, layout, 99, &votes_up_to(109)))
                    .unwrap_err()
            ),
            AlpenglowRefusal::RootRegressed { .. }
        ));
        let other = Identity::from_seed([0x52; 32]);
        assert!(matches!(
            invalid(
                a.store(&agave_file(&other, layout, 100, &votes_up_to(109)))
                    .unwrap_err()
            ),
            VoteHistoryFileError::ForeignNode { .. }
        ));
        let mut forged = agave_file(&agave, layout, 100, &votes_up_to(110));
        let n = forged.len();
        forged[n - 8] ^= 1; // the root's low byte: signed data changed
        assert!(matches!(
            invalid(a.store(&forged).unwrap_err()),
            VoteHistoryFileError::BadSignature { .. }
        ));
        assert_eq!(a.load(&node()).unwrap().encode(), last);

        // The root moves with the file, older slots are forgotten.
        let moved: Vec<_> = votes_up_to(112)
            .into_iter()
            .filter(|(s, _)| *s >= 108)
            .collect();
        a.store(&agave_file(&agave, layout, 108, &moved)).unwrap();
        let h = a
            .block_on(a.inner().storage().load())
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(h.root(), 108);
        assert!(h.slot(107).is_none());
    }
}

#[test]
fn a_file_in_another_layout_is_refused_naming_the_layouts_known() {
    let dir = tempfile::tempdir().unwrap();
    let agave = Identity::from_seed(SEED);
    let a = adapter(dir.path(), HistoryLayout::VoteEnum).unwrap();
    a.block_on(a.inner().start_history(SV, 90))
        .unwrap()
        .unwrap();
    let payload_file = agave_file(&agave, HistoryLayout::SignedPayload, 100, &votes_up_to(101));
    let err = invalid(a.store(&payload_file).unwrap_err()).to_string();
    assert!(
        err.contains("vote-enum") && err.contains("signed-payload"),
        "{err}"
    );
    assert!(
        err.contains("Firedancer") && err.contains("agave-votor"),
        "{err}"
    );
}

#[test]
fn votes_recorded_by_another_path_are_never_handed_to_agave_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let agave = Identity::from_seed(SEED);
    let layout = HistoryLayout::SignedPayload;
    {
        let a = adapter(dir.path(), layout).unwrap();
        a.block_on(a.inner().start_history(SV, 90))
            .unwrap()
            .unwrap();
        a.store(&agave_file(&agave, layout, 100, &votes_up_to(103)))
            .unwrap();
    }
    // The guard (a second signer on the identity, or an operator's tool)
    // records a skip in slot 104.
    let voter = NodeKeypair::from_seed([0x53; 32]);
    let registered = derive_voter_key(&voter).unwrap().public_key();
    let store = FileVoteHistory::open(dir.path(), node()).unwrap();
    let guard = AlpenglowGuard::new(store, voter, &registered, RuleMode::Strict).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(guard.vote(
        &[Vote {
            slot: 104,
            kind: VoteKind::Skip,
            shred_version: SV,
        }],
        None,
    ))
    .unwrap();
    drop(guard);

    let a = adapter(dir.path(), layout).unwrap();
    // The old file would let the validator notarize 104: not handed out.
    let err = invalid(a.load(&node()).unwrap_err());
    assert!(err.to_string().contains("104"), "{err}");
    // And a file that notarizes 104 is refused as slashable.
    assert!(matches!(
        refusal(
            a.store(&agave_file(&agave, layout, 100, &votes_up_to(104)))
                .unwrap_err()
        ),
        AlpenglowRefusal::Conflict { slot: 104, .. }
    ));
}

#[test]
fn the_decoder_reads_exactly_what_the_independent_encoder_wrote() {
    let agave = Identity::from_seed(SEED);
    for layout in HistoryLayout::ALL {
        let bytes = agave_file(&agave, layout, 100, &votes_up_to(120));
        let saved = SavedVoteHistory::decode(&bytes, layout, &node()).unwrap();
        assert_eq!(saved.encode(), bytes);
        assert_eq!(saved.root(), 100);
        assert_eq!(saved.history().last_voted_slot(), Some(120));
        assert_eq!(saved.votes(SV).len(), votes_up_to(120).len());
        // Detected without being told, as long as the file has votes.
        assert_eq!(
            SavedVoteHistory::decode_any(&bytes, &node())
                .unwrap()
                .layout(),
            layout
        );
    }
}

/// A `vote_history-<identity>.bin` (or tower file) that is not a regular
/// file, such as a named pipe nobody writes to, is refused at once: the
/// read never waits on it (`vote-history show --agave`, `import` and
/// `export`'s check of the target would hang for good).
#[test]
fn a_file_that_is_not_a_regular_file_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let node = node();
    let path = slashguard::agave::vote_history_file_path(dir.path(), &node);
    let tower =
        slashguard::agave::tower_file_path(dir.path(), &node, slashguard::agave::FileKind::V1_9);
    for p in [&path, &tower] {
        let made = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", p.display());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let history = slashguard::agave::load_vote_history(dir.path(), None, &node);
        let tower = slashguard::agave::load_tower(dir.path(), &node);
        let _ = tx.send((history.map(|_| ()), tower.map(|_| ())));
        drop(dir);
    });
    let (history, tower) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("reading a named pipe returned");
    for (what, got) in [("vote history", history), ("tower", tower)] {
        let e = got.expect_err(what).to_string();
        assert!(e.contains("not a regular file"), "{what}: {e}");
    }
}
