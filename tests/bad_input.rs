//! Bad input, as tables: damaged or foreign stored files, malformed
//! payloads, invalid towers. Each row names the exact typed error; nothing
//! panics, and nothing stored is lost or changed by the failed call.

mod common;

use std::path::Path;

use common::TestKey;
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::memory::MemoryTowerStorage;
use slashguard::tower::{
    StoreMode, TowerRecord, TowerStorage, TowerUpdate, VoteGuard, VoteRef, MAX_TOWER_BYTES,
};
use slashguard::watermark::{
    encode_entry, ChainId, ConsensusKind, Curve, KeyHash, Mark, PayloadError, PayloadHash,
    SignerGuard, Watermark, WatermarkKey,
};
use slashguard::{Ed25519Signer, Error, FormatError, GuardedSigner, NodeKeypair};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ------------------------------------------------------ stored files --

const TOWER_MAGIC: &[u8; 4] = b"sgTF";
const WM_MAGIC: &[u8; 4] = b"sgWF";
const SLOT: usize = 4096;

/// One slot as documented in `src/file/slots.rs`.
fn slot(magic: &[u8; 4], version: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = magic.to_vec();
    b.extend_from_slice(&[version, 0, 0, 0]);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(SLOT as u32).to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(SLOT, 0);
    b
}

fn two_slots(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    [a, b].concat()
}

/// A file whose newest slot holds `payload`, the other one an older,
/// empty record (as a freshly created file has).
fn file_with(magic: &[u8; 4], payload: &[u8], empty: &[u8]) -> Vec<u8> {
    two_slots(slot(magic, 1, 0, empty), slot(magic, 1, 1, payload))
}

fn kp() -> NodeKeypair {
    NodeKeypair::from_seed([5; 32])
}

fn record_bytes() -> Vec<u8> {
    TowerRecord::sign(
        &kp(),
        Some(VoteRef {
            slot: 500,
            hash: [7; 32],
        }),
        Some(400),
        vec![0xAB; 64],
    )
    .unwrap()
    .encode()
}

/// Offsets in a record with vote and root (see `src/tower/record.rs`).
const REC_VERSION: usize = 4;
const REC_ROOT: usize = 4 + 1 + 32 + 1 + 40;
const REC_TOWER_LEN: usize = REC_ROOT + 8 + 8;

fn with(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes
}

fn wm_key(i: u8) -> WatermarkKey {
    WatermarkKey {
        chain: ChainId([1, 2, 3, 4]),
        key: KeyHash {
            curve: Curve::Ed25519,
            hash: [i; 20],
        },
        kind: ConsensusKind::Block,
    }
}

fn entry(i: u8) -> Vec<u8> {
    encode_entry(
        &wm_key(i),
        &Watermark {
            mark: Mark::level(100),
            payload_hash: Some(PayloadHash([i; 32])),
            signature: None,
        },
    )
    .to_vec()
}

/// An entry with byte `at` set to `value` and its CRC recomputed, so that
/// only the field check can reject it.
fn entry_resealed(at: usize, value: u8) -> Vec<u8> {
    let mut e = entry(1);
    e[at] = value;
    reseal(e)
}

fn reseal(mut e: Vec<u8>) -> Vec<u8> {
    let n = e.len() - 4;
    let crc = crc32fast::hash(&e[..n]);
    e[n..].copy_from_slice(&crc.to_le_bytes());
    e
}

/// A version-1 entry (76 bytes, no signature), written by hand from the
/// layout builds before the signature field wrote.
fn entry_v1(i: u8) -> Vec<u8> {
    let mut e = b"sgWM".to_vec();
    e.push(1); // version
    e.extend_from_slice(&[1, 2, 3, 4]); // chain
    e.push(0); // ed25519
    e.extend_from_slice(&[i; 20]);
    e.push(0x11); // block
    e.extend_from_slice(&100u32.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.push(1);
    e.extend_from_slice(&[i; 32]);
    e.extend_from_slice(&[0; 4]);
    reseal(e)
}

fn table(count: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut t = count.to_le_bytes().to_vec();
    for e in entries {
        t.extend_from_slice(e);
    }
    t
}

type Matcher = fn(&FormatError) -> bool;

fn check_file<T: std::fmt::Debug>(
    name: &str,
    path: &Path,
    bytes: &[u8],
    open: impl Fn() -> slashguard::Result<T>,
    want: Matcher,
) {
    std::fs::write(path, bytes).unwrap();
    match open() {
        Err(Error::Corrupt { what, problem }) => {
            assert!(want(&problem), "{name}: wrong problem {problem:?}");
            assert!(what.contains(path.to_str().unwrap()), "{name}: {what}");
        }
        other => panic!("{name}: expected Error::Corrupt, got {other:?}"),
    }
    // A failed open loses nothing: the file is as it was.
    assert_eq!(std::fs::read(path).unwrap(), bytes, "{name}: file changed");
}

#[test]
fn bad_tower_files() {
    use FormatError::*;
    let dir = tempfile::tempdir().unwrap();
    let node = kp().node_id();
    let path = dir.path().join(format!("slashguard-tower-{node}.bin"));
    let rec = record_bytes();
    let tampered = {
        let mut r = rec.clone();
        let at = r.len() - 64 - 1;
        r[at] ^= 1; // last byte of the opaque tower: the signature breaks
        r
    };
    let foreign = {
        let other = NodeKeypair::from_seed([6; 32]);
        TowerRecord::sign(&other, None, None, vec![1, 2, 3])
            .unwrap()
            .encode()
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<u8>, Matcher)> = vec![
        ("empty file", vec![], |p| *p == Empty),
        ("not two whole slots", vec![0x5A; 100], |p| matches!(p, InvalidField { field: "file length", .. })),
        ("all zeros", vec![0; 2 * SLOT], |p| matches!(p, InvalidField { field: "slots", detail } if detail == "slot 0: empty; slot 1: empty")),
        ("foreign node's tower", file_with(TOWER_MAGIC, &foreign, &[]),
            |p| matches!(p, ForeignNode { expected, found } if *expected == kp().node_id().to_string() && *found != *expected)),
        ("bad signature", file_with(TOWER_MAGIC, &tampered, &[]), |p| matches!(p, BadSignature { .. })),
        ("slot version 2 in the newest slot", two_slots(slot(TOWER_MAGIC, 1, 1, &[]), slot(TOWER_MAGIC, 2, 2, &rec)),
            |p| *p == UnsupportedVersion { found: 2, supported: 1 }),
        ("slot version 0 in the older slot", two_slots(slot(TOWER_MAGIC, 0, 1, &[]), slot(TOWER_MAGIC, 1, 2, &rec)),
            |p| *p == UnsupportedVersion { found: 0, supported: 1 }),
        ("record version 3", file_with(TOWER_MAGIC, &with(rec.clone(), REC_VERSION, &[3]), &[]),
            |p| *p == UnsupportedVersion { found: 3, supported: 2 }),
        ("watermark file in place of a tower file", file_with(WM_MAGIC, &rec, &[]),
            |p| matches!(p, InvalidField { field: "slots", detail } if detail.contains("bad magic"))),
        ("unknown record magic", file_with(TOWER_MAGIC, &with(rec.clone(), 0, b"XXXX"), &[]),
            |p| *p == BadMagic { found: b"XXXX".to_vec() }),
        ("record cut short", file_with(TOWER_MAGIC, &rec[..rec.len() - 1], &[]), |p| matches!(p, Truncated { .. })),
        ("record with a trailing byte", file_with(TOWER_MAGIC, &[&rec[..], &[0]].concat(), &[]),
            |p| *p == TrailingBytes { count: 1 }),
        ("root above the vote", file_with(TOWER_MAGIC, &with(rec.clone(), REC_ROOT, &600u64.to_le_bytes()), &[]),
            |p| matches!(p, InvalidField { field: "root", .. })),
        ("tower length beyond the limit", file_with(TOWER_MAGIC, &with(rec.clone(), REC_TOWER_LEN, &u32::MAX.to_le_bytes()), &[]),
            |p| matches!(p, InvalidField { field: "tower length", .. })),
        ("unknown flag bits", file_with(TOWER_MAGIC, &with(rec.clone(), 37, &[0x07]), &[]),
            |p| matches!(p, InvalidField { field: "flags", .. })),
        ("both slots claim one sequence", two_slots(slot(TOWER_MAGIC, 1, 4, &[]), slot(TOWER_MAGIC, 1, 4, &rec)),
            |p| matches!(p, InvalidField { field: "sequence", .. })),
        ("slot size field lies", {
            let mut f = file_with(TOWER_MAGIC, &rec, &[]);
            f[16..20].copy_from_slice(&8192u32.to_le_bytes());
            f[SLOT + 16..SLOT + 20].copy_from_slice(&8192u32.to_le_bytes());
            f
        }, |p| matches!(p, InvalidField { field: "slots", detail } if detail.contains("slot size"))),
    ];
    for (name, bytes, want) in rows {
        check_file(
            name,
            &path,
            &bytes,
            || FileTowerStorage::open(dir.path(), node),
            want,
        );
    }
    // The control row: the same construction with an intact record opens.
    std::fs::write(&path, file_with(TOWER_MAGIC, &rec, &[])).unwrap();
    let storage = FileTowerStorage::open(dir.path(), node).unwrap();
    assert_eq!(
        block_on(storage.load()).unwrap().unwrap().last_vote_slot(),
        Some(500)
    );
}

#[test]
fn bad_watermark_files() {
    use FormatError::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let empty = table(0, &[]);
    let mut bad_crc = entry(1);
    bad_crc[50] ^= 1;
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<u8>, Matcher)> = vec![
        ("empty file", vec![], |p| *p == Empty),
        ("tower file in place of a watermark file", file_with(TOWER_MAGIC, &empty, &empty),
            |p| matches!(p, InvalidField { field: "slots", detail } if detail.contains("bad magic"))),
        ("slot version 2", two_slots(slot(WM_MAGIC, 1, 1, &empty), slot(WM_MAGIC, 2, 2, &empty)),
            |p| *p == UnsupportedVersion { found: 2, supported: 1 }),
        ("table shorter than its count", file_with(WM_MAGIC, &[0, 0], &empty), |p| *p == Truncated { needed: 4, have: 2 }),
        ("count above the entries", file_with(WM_MAGIC, &table(2, &[entry(1)]), &empty),
            |p| *p == Truncated { needed: 4 + 173 + 76, have: 4 + 173 }),
        ("count below the entries", file_with(WM_MAGIC, &table(1, &[entry(1), entry(2)]), &empty),
            |p| *p == TrailingBytes { count: 173 }),
        ("entry with a bad checksum", file_with(WM_MAGIC, &table(1, &[bad_crc]), &empty), |p| matches!(p, Checksum { .. })),
        ("entry version 3", file_with(WM_MAGIC, &table(1, &[entry_resealed(4, 3)]), &empty),
            |p| *p == UnsupportedVersion { found: 3, supported: 2 }),
        ("entry with a 97-byte signature", file_with(WM_MAGIC, &table(1, &[entry_resealed(72, 97)]), &empty),
            |p| matches!(p, InvalidField { field: "signature length", .. })),
        ("entry with a signature but no payload hash",
            file_with(WM_MAGIC, &table(1, &[reseal(with(with(entry(1), 39, &[0]), 72, &[64]))]), &empty),
            |p| matches!(p, InvalidField { field: "signature", .. })),
        ("entry with bytes past its signature", file_with(WM_MAGIC, &table(1, &[entry_resealed(72 + 1 + 95, 1)]), &empty),
            |p| matches!(p, InvalidField { field: "signature", .. })),
        ("v1 entry cut to 75 bytes", file_with(WM_MAGIC, &table(1, &[entry_v1(1)[..75].to_vec()]), &empty),
            |p| matches!(p, Truncated { .. })),
        ("entry with unknown magic", file_with(WM_MAGIC, &table(1, &[entry_resealed(0, b'X')]), &empty),
            |p| matches!(p, BadMagic { .. })),
        ("entry with unknown curve", file_with(WM_MAGIC, &table(1, &[entry_resealed(9, 9)]), &empty),
            |p| matches!(p, InvalidField { field: "curve", .. })),
        ("entry with legacy kind 0x02", file_with(WM_MAGIC, &table(1, &[entry_resealed(30, 0x02)]), &empty),
            |p| matches!(p, InvalidField { field: "kind", .. })),
        ("entry with payload-hash flag 2", file_with(WM_MAGIC, &table(1, &[entry_resealed(39, 2)]), &empty),
            |p| matches!(p, InvalidField { field: "payload hash flag", .. })),
        ("one key twice", file_with(WM_MAGIC, &table(2, &[entry(1), entry(1)]), &empty),
            |p| matches!(p, InvalidField { field: "key", .. })),
    ];
    for (name, bytes, want) in rows {
        check_file(name, &path, &bytes, || FileWatermarks::open(&path), want);
    }
    // Control row: an intact two-entry table opens.
    std::fs::write(
        &path,
        file_with(WM_MAGIC, &table(2, &[entry(1), entry(2)]), &empty),
    )
    .unwrap();
    let wm = FileWatermarks::open(&path).unwrap();
    assert_eq!(block_on(wm.watermarks()).unwrap().len(), 2);
    drop(wm);
    // A table written before the upgrade (v1 entries), mixed with a v2
    // one, opens without loss; v1 entries carry no signature.
    std::fs::write(
        &path,
        file_with(WM_MAGIC, &table(2, &[entry_v1(1), entry(2)]), &empty),
    )
    .unwrap();
    let wm = FileWatermarks::open(&path).unwrap();
    let got = block_on(wm.watermarks()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.mark, Mark::level(100));
    assert_eq!(got[0].1.payload_hash, Some(PayloadHash([1; 32])));
    assert_eq!(got[0].1.signature, None);
}

// ---------------------------------------------------------- payloads --

fn attestation(curve: Curve, level: u32, round: u32) -> Vec<u8> {
    common::consensus(
        ConsensusKind::Attestation,
        curve,
        common::MAINNET,
        level,
        round,
        1,
    )
}

fn block(level: u32, round: u32) -> Vec<u8> {
    common::consensus(
        ConsensusKind::Block,
        Curve::Ed25519,
        common::MAINNET,
        level,
        round,
        1,
    )
}

/// A block whose fitness length field says `len`.
fn block_fitness_len(len: u32) -> Vec<u8> {
    with(block(10, 0), 83, &len.to_be_bytes())
}

#[test]
fn bad_payloads_are_typed_errors_and_change_nothing() {
    use ConsensusKind::*;
    use PayloadError::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hwm");
    let tz1 = GuardedSigner::new(
        FileWatermarks::create(&path).unwrap(),
        Ed25519Signer::from_seed([1; 32]),
    );
    // Something stored first, to see that nothing changes.
    block_on(tz1.sign(&attestation(Curve::Ed25519, 50, 0))).unwrap();
    let before = block_on(tz1.guard().watermarks()).unwrap();
    let file_before = std::fs::read(&path).unwrap();
    let tz4 = GuardedSigner::new(slashguard::memory::MemoryWatermarks::new(), TestKey::tz4(2));

    let too_short = |kind, needed, have| TooShort { kind, needed, have };
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<u8>, Curve, PayloadError)> = vec![
        ("empty", vec![], Curve::Ed25519, Empty),
        ("magic 0x00", vec![0x00; 100], Curve::Ed25519, UnknownMagic(0x00)),
        ("magic 0x04", vec![0x04; 100], Curve::Ed25519, UnknownMagic(0x04)),
        ("magic 0x05 (michelson data)", vec![0x05; 100], Curve::Ed25519, UnknownMagic(0x05)),
        ("magic 0x14", vec![0x14; 100], Curve::Ed25519, UnknownMagic(0x14)),
        ("magic 0xff", vec![0xff; 100], Curve::Ed25519, UnknownMagic(0xff)),
        ("legacy block 0x01", with(block(10, 0), 0, &[0x01]), Curve::Ed25519, Legacy(0x01)),
        ("legacy endorsement 0x02", with(attestation(Curve::Ed25519, 10, 0), 0, &[0x02]), Curve::Ed25519, Legacy(0x02)),
        ("generic operation 0x03", with(attestation(Curve::Ed25519, 10, 0), 0, &[0x03]), Curve::Ed25519, NotConsensus),
        ("block: magic only", vec![0x11], Curve::Ed25519, too_short(Block, 5, 1)),
        ("block: chain id cut", vec![0x11, 1, 2, 3], Curve::Ed25519, too_short(Block, 5, 4)),
        ("block: no fitness length", block(10, 0)[..86].to_vec(), Curve::Ed25519, too_short(Block, 87, 86)),
        ("block: fitness cut", block(10, 0)[..100].to_vec(), Curve::Ed25519, too_short(Block, 120, 100)),
        ("block: fitness of 0 bytes", block_fitness_len(0), Curve::Ed25519, BadFitness { offset: 83, value: 0, detail: "length is neither 33 nor 37" }),
        ("block: fitness of 3 bytes", block_fitness_len(3), Curve::Ed25519, BadFitness { offset: 83, value: 3, detail: "length is neither 33 nor 37" }),
        ("block: fitness longer than the payload", block_fitness_len(u32::MAX), Curve::Ed25519,
            BadFitness { offset: 83, value: u32::MAX, detail: "length is neither 33 nor 37" }),
        ("block: level above i32::MAX", block(1 << 31, 0), Curve::Ed25519, OutOfRange { field: "level", offset: 5, value: 1 << 31 }),
        ("block: round above i32::MAX", block(10, u32::MAX), Curve::Ed25519, OutOfRange { field: "round", offset: 116, value: u32::MAX }),
        ("preattestation tz1 cut", common::consensus(Preattestation, Curve::Ed25519, common::MAINNET, 60, 0, 1)[..79].to_vec(),
            Curve::Ed25519, too_short(Preattestation, 80, 79)),
        ("preattestation tz4 cut", common::consensus(Preattestation, Curve::Bls, common::MAINNET, 60, 0, 1)[..77].to_vec(),
            Curve::Bls, too_short(Preattestation, 78, 77)),
        ("attestation tz1 cut", attestation(Curve::Ed25519, 60, 0)[..79].to_vec(), Curve::Ed25519, too_short(Attestation, 80, 79)),
        ("attestation tz4 cut", attestation(Curve::Bls, 60, 0)[..77].to_vec(), Curve::Bls, too_short(Attestation, 78, 77)),
        ("attestation: chain id only", attestation(Curve::Ed25519, 60, 0)[..5].to_vec(), Curve::Ed25519, too_short(Attestation, 38, 5)),
        ("attestation tz1: level above i32::MAX", attestation(Curve::Ed25519, 0x8000_0000, 0), Curve::Ed25519,
            OutOfRange { field: "level", offset: 40, value: 0x8000_0000 }),
        ("attestation tz1: round above i32::MAX", attestation(Curve::Ed25519, 60, 0xFFFF_FFFF), Curve::Ed25519,
            OutOfRange { field: "round", offset: 44, value: 0xFFFF_FFFF }),
        ("attestation tz4: level above i32::MAX", attestation(Curve::Bls, 0xFFFF_FFFF, 0), Curve::Bls,
            OutOfRange { field: "level", offset: 38, value: 0xFFFF_FFFF }),
        ("preattestation tz4: round above i32::MAX", common::consensus(Preattestation, Curve::Bls, common::MAINNET, 60, 1 << 31, 1),
            Curve::Bls, OutOfRange { field: "round", offset: 42, value: 1 << 31 }),
    ];
    for (name, bytes, curve, want) in rows {
        let got = if curve == Curve::Bls {
            block_on(tz4.sign(&bytes))
        } else {
            block_on(tz1.sign(&bytes))
        };
        match got {
            Err(e @ Error::Payload(_)) => {
                let Error::Payload(p) = &e else {
                    unreachable!()
                };
                assert_eq!(*p, want, "{name}");
                assert!(!e.is_refusal() && !e.is_unavailable(), "{name}");
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{name}: expected Error::Payload({want:?}), got {other:?}"),
        }
    }
    assert_eq!(block_on(tz1.guard().watermarks()).unwrap(), before);
    assert!(block_on(tz4.guard().watermarks()).unwrap().is_empty());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file_before,
        "a bad payload touched the file"
    );
    // The guard still works after all that.
    block_on(tz1.sign(&attestation(Curve::Ed25519, 51, 0))).unwrap();
}

// ------------------------------------------------------------ towers --

#[test]
fn invalid_tower_updates_are_refused_before_any_store() {
    let dir = tempfile::tempdir().unwrap();
    let id = kp();
    let storage = FileTowerStorage::create(dir.path(), id.node_id()).unwrap();
    let guard = VoteGuard::new(storage, id)
        .unwrap()
        .with_vote_account(common::VOTE_ACCOUNT);
    let ok = TowerUpdate {
        vote: VoteRef {
            slot: 10,
            hash: [1; 32],
        },
        root: Some(5),
        tower: vec![0; 100],
    };
    block_on(guard.vote(ok.clone(), &common::vote_message(guard.node(), &ok))).unwrap();
    let stored = block_on(guard.load()).unwrap();

    let rows = [
        (
            "tower above the size limit",
            TowerUpdate {
                vote: VoteRef {
                    slot: 11,
                    hash: [1; 32],
                },
                tower: vec![0; MAX_TOWER_BYTES + 1],
                ..ok.clone()
            },
        ),
        (
            "root above the vote",
            TowerUpdate {
                vote: VoteRef {
                    slot: 11,
                    hash: [1; 32],
                },
                root: Some(12),
                ..ok.clone()
            },
        ),
    ];
    for (name, update) in rows {
        match block_on(guard.vote(update.clone(), &common::vote_message(guard.node(), &update))) {
            Err(Error::Invalid(text)) => {
                assert!(text.starts_with("tower update"), "{name}: {text}")
            }
            other => panic!("{name}: expected Error::Invalid, got {other:?}"),
        }
        match block_on(guard.save(update, StoreMode::Force)) {
            Err(Error::Invalid(_)) => {}
            other => panic!("{name} (forced): expected Error::Invalid, got {other:?}"),
        }
        assert_eq!(block_on(guard.load()).unwrap(), stored, "{name}");
    }

    // A guard over another node's storage cannot be built.
    let other = MemoryTowerStorage::new(NodeKeypair::from_seed([8; 32]).node_id());
    assert!(matches!(
        VoteGuard::new(other, kp()),
        Err(Error::Invalid(_))
    ));
}
