//! Torn-write test: damage the on-disk file of each file backend at every
//! byte offset and reopen it. Loading must return the newest intact record,
//! or, when the damage is in the slot holding the newest record, the older
//! intact one with `recovery()` naming the damaged slot and the reason (what
//! an interrupted write leaves), or a typed `Error::Corrupt` saying what is
//! wrong. A damaged record is never returned as valid.
//!
//! Passes, for the tower file and the watermark file:
//! 1. flip one byte at every offset of a file holding two records;
//! 2. the same with the older slot already damaged (both slots damaged);
//! 3. truncate the file at every offset;
//! 4. tear each of the last two writes at every offset: the slot holds the
//!    new record's bytes up to the offset and the old record's after it.
//!
//! The expected outcome of every case is derived from the documented slot
//! layout (`src/file/slots.rs`): magic 4, version 1, reserved 3, sequence 8,
//! slot size 4, payload length 4, payload, CRC-32 4, zero padding.

mod common;

use std::path::{Path, PathBuf};

use slashguard::file::{FileTowerStorage, FileWatermarks, Recovery};
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::watermark::{
    ConsensusKind, Curve, KeyHash, Mark, PayloadHash, SignRequest, SignerGuard, Watermark,
    WatermarkKey,
};
use slashguard::{Error, FormatError, NodeKeypair};

const HEADER: usize = 24;
const TRAILER: usize = 4;
const MASK: u8 = 0xFF;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What opening found: the state loaded, the recovery report, and whether
/// the store refuses writes because that state may be older than the last
/// acknowledged one (`Error::Damaged`).
type Loader = Box<dyn Fn(&Path) -> slashguard::Result<(usize, Recovery, bool)>>;

/// A file backend under test: its data file, the file's bytes after each
/// write (index = sequence = state), and a loader that opens the store and
/// says which known state it holds (panicking on anything else: garbage).
struct Subject {
    name: &'static str,
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    snapshots: Vec<Vec<u8>>,
    load: Loader,
}

impl Subject {
    /// Put `bytes` in the data file and open the store. The file is
    /// rewritten in place, not truncated and refilled: ext4 flushes a file
    /// replaced that way on close, which would make this test I/O bound.
    fn load_bytes(&self, bytes: &[u8]) -> slashguard::Result<(usize, Recovery, bool)> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.data)
            .unwrap();
        f.write_all_at(bytes, 0).unwrap();
        if f.metadata().unwrap().len() != bytes.len() as u64 {
            f.set_len(bytes.len() as u64).unwrap();
        }
        drop(f);
        (self.load)(&self.root)
    }
}

fn tower_subject() -> Subject {
    let dir = common::fast_tempdir();
    let root = dir.path().to_path_buf();
    let kp = NodeKeypair::from_seed([9; 32]);
    let node = kp.node_id();
    let mut states: Vec<Option<TowerRecord>> = vec![None];
    let mut snapshots = Vec::new();
    let storage = FileTowerStorage::create(&root, node).unwrap();
    let data = storage.path().to_path_buf();
    snapshots.push(std::fs::read(&data).unwrap());
    for n in 1..=3u64 {
        let r = TowerRecord::sign(
            &kp,
            Some(VoteRef {
                slot: n * 10,
                hash: [n as u8; 32],
            }),
            Some(n),
            vec![n as u8; 800 + 100 * n as usize],
        )
        .unwrap();
        block_on(storage.store(&r, StoreMode::Advance)).unwrap();
        states.push(Some(r));
        snapshots.push(std::fs::read(&data).unwrap());
    }
    drop(storage);
    let load: Loader = Box::new(move |dir| {
        let s = FileTowerStorage::open(dir, node)?;
        let record = block_on(s.load())?;
        let state = states
            .iter()
            .position(|st| *st == record)
            .unwrap_or_else(|| panic!("loaded a record that was never stored: {record:?}"));
        let fenced = block_on(s.is_damaged())?;
        Ok((state, s.recovery().clone(), fenced))
    });
    Subject {
        name: "tower",
        _dir: dir,
        root,
        data,
        snapshots,
        load,
    }
}

fn watermark_subject() -> Subject {
    let dir = common::fast_tempdir();
    let root = dir.path().to_path_buf();
    let data = root.join("hwm");
    let mut states: Vec<Vec<(WatermarkKey, Watermark)>> = vec![vec![]];
    let mut snapshots = Vec::new();
    let wm = FileWatermarks::create(&data).unwrap();
    snapshots.push(std::fs::read(&data).unwrap());
    // Write n advances n keys, so that every state has its own length.
    for n in 1..=3u32 {
        let batch: Vec<SignRequest> = (0..n)
            .map(|i| {
                let key = KeyHash {
                    curve: Curve::Ed25519,
                    hash: [i as u8; 20],
                };
                let bytes = common::consensus(
                    ConsensusKind::Attestation,
                    Curve::Ed25519,
                    common::MAINNET,
                    n * 10,
                    0,
                    i as u8,
                );
                SignRequest::parse(&bytes, key).unwrap()
            })
            .collect();
        block_on(wm.authorize(&batch)).unwrap();
        states.push(block_on(wm.watermarks()).unwrap());
        snapshots.push(std::fs::read(&data).unwrap());
    }
    assert_eq!(states[3][2].1.mark, Mark::level(30));
    assert_ne!(states[3][2].1.payload_hash, Some(PayloadHash([0; 32])));
    drop(wm);
    let load: Loader = Box::new(move |_| {
        let wm = FileWatermarks::open(&data)?;
        let table = block_on(wm.watermarks())?;
        let state = states
            .iter()
            .position(|st| *st == table)
            .unwrap_or_else(|| panic!("loaded a table that was never stored: {table:?}"));
        let fenced = block_on(wm.is_damaged())?;
        Ok((state, wm.recovery().clone(), fenced))
    });
    let data = root.join("hwm");
    Subject {
        name: "watermarks",
        _dir: dir,
        root,
        data,
        snapshots,
        load,
    }
}

/// What a damaged slot must be reported as.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    Exact(FormatError),
    Checksum,
    Field(&'static str),
    /// Any reason but `Empty` (a torn slot is never mistaken for an unused one).
    Any,
}

impl Problem {
    fn matches(&self, p: &FormatError) -> bool {
        match self {
            Problem::Exact(want) => want == p,
            Problem::Checksum => matches!(p, FormatError::Checksum { .. }),
            Problem::Field(f) => matches!(p, FormatError::InvalidField { field, .. } if field == f),
            Problem::Any => *p != FormatError::Empty,
        }
    }
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn seq_of(slot: &[u8]) -> u64 {
    u64::from_le_bytes(slot[8..16].try_into().unwrap())
}

/// The problem a single flipped byte at `r` in an intact slot causes, in the
/// order the slot decoder checks; `None` when `r` is in the padding, which
/// no record covers.
fn flip_problem(pristine: &[u8], damaged: &[u8], r: usize) -> Option<Problem> {
    let covered = HEADER + le32(pristine, 20) + TRAILER;
    if r >= covered {
        return None;
    }
    Some(match r {
        0..4 => Problem::Exact(FormatError::BadMagic {
            found: damaged[..4].to_vec(),
        }),
        4 => Problem::Exact(FormatError::UnsupportedVersion {
            found: damaged[4],
            supported: 3,
        }),
        16..20 => Problem::Field("slot size"),
        20..24 if HEADER + le32(damaged, 20) + TRAILER > damaged.len() => {
            Problem::Field("payload length")
        }
        _ => Problem::Checksum,
    })
}

fn is_version(p: &Problem) -> bool {
    matches!(p, Problem::Exact(FormatError::UnsupportedVersion { .. }))
}

/// Expected result of opening a damaged file.
#[derive(Debug)]
enum Want {
    /// This state, with every copy of both slots intact.
    Clean(usize),
    /// This state, the given slot reported damaged (or its copies
    /// disagreeing), and whether the store is fenced.
    Recovered(usize, usize, Problem, bool),
    /// `Error::Corrupt` with this problem.
    Corrupt(Problem),
}

/// Besides the state: a store is fenced exactly when expected, and never
/// loads a state older than the newest acknowledged one without being
/// fenced (every `Recovered` older than the newest says `true`).
fn check(
    subject: &Subject,
    case: &str,
    got: slashguard::Result<(usize, Recovery, bool)>,
    want: &Want,
) {
    let ctx = format!("{}: {case}: want {want:?}, got {got:?}", subject.name);
    match (want, &got) {
        (Want::Clean(s), Ok((state, Recovery::Clean, fenced))) => {
            assert_eq!(state, s, "{ctx}");
            assert!(!fenced, "{ctx}: a clean file is not fenced");
        }
        (
            Want::Recovered(s, slot, p, want_fenced),
            Ok((state, Recovery::DamagedSlot { slot: ds, problem }, fenced)),
        ) => {
            assert_eq!((state, ds), (s, slot), "{ctx}");
            assert!(p.matches(problem), "{ctx}");
            assert_eq!(fenced, want_fenced, "{ctx}: fenced");
        }
        (Want::Corrupt(p), Err(Error::Corrupt { what, problem })) => {
            assert!(p.matches(problem), "{ctx}");
            assert!(what.contains(subject.data.to_str().unwrap()), "{ctx}");
        }
        _ => panic!("{ctx}"),
    }
}

/// The pristine file (format version 3, four regions of `size` bytes:
/// slot 0 copy 0, slot 0 copy 1, slot 1 copy 0, slot 1 copy 1): slot 0
/// holds state 3, the newest (sequence 4), slot 1 state 2 (sequence 3).
fn layout(subject: &Subject) -> (Vec<u8>, usize) {
    let file = subject.snapshots[3].clone();
    let size = file.len() / 4;
    assert_eq!(file[4], 3, "format version 3");
    let seqs: Vec<u64> = (0..4).map(|r| seq_of(&file[r * size..])).collect();
    assert_eq!(seqs, [4, 4, 3, 3]);
    (file, size)
}

fn region(file: &[u8], size: usize, r: usize) -> &[u8] {
    &file[r * size..][..size]
}

/// One flipped byte anywhere: in the padding nothing; in a record, the copy
/// is read from its twin, reported, and the store is NOT fenced (the
/// acknowledged record survived); a version byte refuses the file.
fn flip_every_offset(subject: &Subject) {
    let (file, size) = layout(subject);
    check(
        subject,
        "pristine",
        subject.load_bytes(&file),
        &Want::Clean(3),
    );
    for o in 0..file.len() {
        let (r, off) = (o / size, o % size);
        let mut bytes = file.clone();
        bytes[o] ^= MASK;
        let want = match flip_problem(region(&file, size, r), region(&bytes, size, r), off) {
            None => Want::Clean(3),
            // A version this build does not know is not taken for damage.
            Some(p) if is_version(&p) => Want::Corrupt(p),
            Some(p) => Want::Recovered(3, r / 2, p, false),
        };
        check(
            subject,
            &format!("flip at {o}"),
            subject.load_bytes(&bytes),
            &want,
        );
    }
}

/// One copy of the newest slot already damaged, then one more flip
/// anywhere: if it damages the twin, no copy of the newest record is left
/// and the store loads the older slot FENCED (before this format, that was
/// a silent rollback); elsewhere the newest record is still read.
fn flip_with_one_newest_copy_damaged(subject: &Subject) {
    let (mut file, size) = layout(subject);
    let pre = HEADER + 1; // region 0 = slot 0 copy 0, the newest record
    file[pre] ^= MASK;
    check(
        subject,
        "newest copy 0 damaged",
        subject.load_bytes(&file),
        &Want::Recovered(3, 0, Problem::Checksum, false),
    );
    let pristine = &subject.snapshots[3];
    for o in 0..file.len() {
        let (r, off) = (o / size, o % size);
        let mut bytes = file.clone();
        bytes[o] ^= MASK;
        let problem = flip_problem(region(pristine, size, r), region(&bytes, size, r), off);
        let want = match (r, problem) {
            (_, Some(p)) if is_version(&p) => Want::Corrupt(p),
            (0, _) if o == pre => Want::Clean(3), // flipped back
            // Region 0 damaged further: still read from region 1.
            (0, _) => Want::Recovered(3, 0, Problem::Any, false),
            // The twin damaged too: the older slot, fenced.
            (1, Some(_)) => Want::Recovered(2, 0, Problem::Checksum, true),
            // Anywhere else: slot 0's damaged copy is what is reported.
            _ => Want::Recovered(3, 0, Problem::Checksum, false),
        };
        check(
            subject,
            &format!("flip at {o}, newest copy 0 damaged"),
            subject.load_bytes(&bytes),
            &want,
        );
    }
}

fn truncate_every_offset(subject: &Subject) {
    let (file, _) = layout(subject);
    for cut in 0..file.len() {
        let want = if cut == 0 {
            Want::Corrupt(Problem::Exact(FormatError::Empty))
        } else if cut.is_multiple_of(8192) {
            // Whole pages, but the headers' slot size does not fit.
            Want::Corrupt(Problem::Field("slots"))
        } else {
            Want::Corrupt(Problem::Field("file length"))
        };
        check(
            subject,
            &format!("truncated to {cut}"),
            subject.load_bytes(&file[..cut]),
            &want,
        );
    }
}

/// Write `w` (2 or 3) interrupted after `k` bytes, for every k: the write
/// is one contiguous range, copy 0 of its slot (and the zero padding of
/// its region), then copy 1 in the next region. A torn copy is read from
/// its twin; the store is never fenced (the other slot, the last
/// acknowledged record, is intact in both copies).
fn tear_write(subject: &Subject, w: usize) {
    let before = &subject.snapshots[w - 1];
    let after = &subject.snapshots[w];
    let size = after.len() / 4;
    assert_eq!(before.len(), after.len(), "no growth in this test");
    let slot = if seq_of(&after[..size]) == w as u64 + 1 {
        0
    } else {
        1
    };
    let (old, new) = (
        region(before, size, 2 * slot),
        region(after, size, 2 * slot),
    );
    let first_diff = old.iter().zip(new).position(|(a, b)| a != b).unwrap();
    let covered = HEADER + le32(new, 20) + TRAILER;
    // Where copy `k` bytes in stands: not reached, torn, or complete.
    let stage = |k: usize| {
        if k <= first_diff {
            0
        } else if k >= covered {
            2
        } else {
            1
        }
    };
    let base = 2 * slot * size;
    for k in 0..=size + covered {
        let mut bytes = before.clone();
        bytes[base..base + k].copy_from_slice(&after[base..base + k]);
        let (k0, k1) = (k.min(size), k.saturating_sub(size));
        let copies = Problem::Field("copies");
        let want = match (stage(k0), stage(k1)) {
            (0, _) => Want::Clean(w - 1),
            (1, _) => Want::Recovered(w - 1, slot, Problem::Any, false),
            (2, 0) => Want::Recovered(w, slot, copies, false),
            (2, 1) => Want::Recovered(w, slot, Problem::Any, false),
            _ => Want::Clean(w),
        };
        check(
            subject,
            &format!("write {w} torn at {k}"),
            subject.load_bytes(&bytes),
            &want,
        );
    }
}

fn run(subject: Subject) {
    let t = std::time::Instant::now();
    flip_every_offset(&subject);
    flip_with_one_newest_copy_damaged(&subject);
    truncate_every_offset(&subject);
    tear_write(&subject, 2);
    tear_write(&subject, 3);
    println!(
        "{}: {} offsets x 5 passes in {:.1?}",
        subject.name,
        subject.snapshots[3].len(),
        t.elapsed()
    );
}

#[test]
fn tower_file_damaged_at_every_offset() {
    run(tower_subject());
}

#[test]
fn watermark_file_damaged_at_every_offset() {
    run(watermark_subject());
}
