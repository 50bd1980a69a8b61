//! Agave tower files: byte-exact vectors, a cross-check against an
//! independent bincode 1.x model of Agave's types (which also plays Agave's
//! loader), truncation at every offset, a table of bad inputs, a property
//! test, files on disk and conversions to and from tower records.

mod mirror;

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signer as _, SigningKey};
use proptest::prelude::*;
use slashguard::agave::{
    load_tower, read_tower_file, tower_file_name, tower_file_path, write_tower_durable, AgaveError,
    AgaveTower, BlockTimestamp, CompactProblem, EnvelopeFormat, EpochCredits, F64Bits, FileKind,
    LastVote, Lockout, PriorVoter, PriorVoters, SavedTower, TowerLayout, TowerSync, Vote,
    VoteState, VoteStateUpdate, MAX_TOWER_FILE_BYTES,
};
use slashguard::tower::{StoreMode, TowerRecord, TowerRefusal, VoteRef};
use slashguard::{Error, FormatError, NodeId, NodeKeypair, Refusal};

// ---------------------------------------------------------------- vectors

fn keypair(seed: u8) -> NodeKeypair {
    NodeKeypair::from_seed([seed; 32])
}

const ROOT: u64 = 345_000_000;

fn lockouts_above(root: u64) -> Vec<Lockout> {
    (0..31u64)
        .map(|i| Lockout {
            slot: root + 1 + 2 * i + i / 10,
            confirmation_count: 31 - i as u32,
        })
        .collect()
}

/// What Agave 2.3 and later write: only votes and root in the vote state,
/// a TowerSync last vote.
fn modern_tower(node: NodeId) -> AgaveTower {
    let lockouts = lockouts_above(ROOT);
    let last = lockouts.last().unwrap().slot;
    let mut tower = AgaveTower::new(node);
    tower.vote_state.votes = lockouts.clone();
    tower.vote_state.root_slot = Some(ROOT);
    tower.last_vote = LastVote::TowerSync(TowerSync {
        lockouts,
        root: Some(ROOT),
        hash: [0xab; 32],
        timestamp: Some(1_750_000_000),
        block_id: [0xcd; 32],
    });
    tower.last_timestamp = BlockTimestamp {
        slot: last,
        timestamp: 1_750_000_000,
    };
    tower
}

/// An older writer: the whole on-chain vote state, well over 3 KiB.
fn full_tower(node: NodeId) -> AgaveTower {
    let mut tower = modern_tower(node);
    let mut prior = PriorVoters::default();
    for (i, entry) in prior.buf.iter_mut().take(5).enumerate() {
        *entry = PriorVoter {
            pubkey: [i as u8 + 1; 32],
            start_epoch: 500 + i as u64,
            end_epoch: 501 + i as u64,
        };
    }
    prior.idx = 4;
    prior.is_empty = false;
    tower.vote_state = VoteState {
        node_pubkey: *node.as_bytes(),
        authorized_withdrawer: [9; 32],
        commission: 7,
        votes: lockouts_above(ROOT),
        root_slot: Some(ROOT),
        authorized_voters: BTreeMap::from([
            (798, [0x11; 32]),
            (799, [0x12; 32]),
            (800, [0x13; 32]),
        ]),
        prior_voters: prior,
        epoch_credits: (736..800)
            .map(|epoch| EpochCredits {
                epoch,
                credits: epoch * 400_000,
                prev_credits: (epoch - 1) * 400_000,
            })
            .collect(),
        last_timestamp: BlockTimestamp {
            slot: ROOT + 60,
            timestamp: 1_749_999_990,
        },
    };
    tower.last_vote = last_vote_variant(&tower, 1);
    tower
}

/// The tower's lockouts as last vote of the given tag.
fn last_vote_variant(tower: &AgaveTower, tag: u32) -> LastVote {
    let lockouts = tower.vote_state.votes.clone();
    let root = tower.vote_state.root_slot;
    let hash = [0xab; 32];
    let timestamp = Some(1_750_000_000);
    match tag {
        0 => LastVote::Vote(Vote {
            slots: lockouts.iter().map(|l| l.slot).collect(),
            hash,
            timestamp,
        }),
        1 => LastVote::VoteStateUpdate(VoteStateUpdate {
            lockouts,
            root,
            hash,
            timestamp,
        }),
        2 => LastVote::CompactVoteStateUpdate(VoteStateUpdate {
            lockouts,
            root,
            hash,
            timestamp: None,
        }),
        _ => LastVote::TowerSync(TowerSync {
            lockouts,
            root,
            hash,
            timestamp,
            block_id: [0xcd; 32],
        }),
    }
}

/// Every vector: (name, envelope, tower).
fn vectors() -> Vec<(String, EnvelopeFormat, AgaveTower, NodeKeypair)> {
    let mut out = Vec::new();
    for (name, build) in [
        ("modern", modern_tower as fn(NodeId) -> AgaveTower),
        ("full", full_tower),
    ] {
        for tag in 0..4 {
            let kp = keypair(1);
            let mut tower = build(kp.node_id());
            tower.last_vote = last_vote_variant(&tower, tag);
            out.push((
                format!("{name}/tag{tag}"),
                EnvelopeFormat::Current,
                tower,
                kp,
            ));
        }
        for format in [EnvelopeFormat::V1_7_14, EnvelopeFormat::Legacy] {
            let kp = keypair(1);
            let mut tower = build(kp.node_id());
            tower.last_vote = last_vote_variant(&tower, 0);
            out.push((format!("{name}/{format:?}"), format, tower, kp));
        }
    }
    let kp = keypair(3);
    out.push((
        "new-empty".into(),
        EnvelopeFormat::Current,
        AgaveTower::new(kp.node_id()),
        kp,
    ));
    out
}

fn file_of(format: EnvelopeFormat, tower: &AgaveTower, kp: &NodeKeypair) -> Vec<u8> {
    SavedTower::sign_as(format, tower.clone(), kp)
        .unwrap()
        .encode()
}

/// Offsets inside the tower data, computed from the layout of formats.md
/// section 4b (independently of the encoder).
fn vote_state_len(s: &VoteState) -> usize {
    32 + 32
        + 1
        + 8
        + 12 * s.votes.len()
        + if s.root_slot.is_some() { 9 } else { 1 }
        + 8
        + 40 * s.authorized_voters.len()
        + 32 * 48
        + 8
        + 1
        + 8
        + 24 * s.epoch_credits.len()
        + 16
}

fn last_vote_at(tower: &AgaveTower) -> usize {
    32 + 8 + 8 + vote_state_len(&tower.vote_state)
}

const DATA_AT: usize = 4 + 64 + 8;

/// A current-envelope file around `data`, signed by `seed`'s key (so that
/// mutated data reaches the decoder with a valid signature).
fn signed_file(seed: u8, data: &[u8]) -> Vec<u8> {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let mut out = 1u32.to_le_bytes().to_vec();
    out.extend_from_slice(&key.sign(data).to_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

// ---------------------------------------------------------------- mirror

fn to_mirror(t: &AgaveTower) -> mirror::Tower1_14_11 {
    let lockouts = |ls: &[Lockout]| -> VecDeque<mirror::Lockout> {
        ls.iter()
            .map(|l| mirror::Lockout {
                slot: l.slot,
                confirmation_count: l.confirmation_count,
            })
            .collect()
    };
    let s = &t.vote_state;
    let vote_state = mirror::VoteState1_14_11 {
        node_pubkey: s.node_pubkey,
        authorized_withdrawer: s.authorized_withdrawer,
        commission: s.commission,
        votes: lockouts(&s.votes),
        root_slot: s.root_slot,
        authorized_voters: s.authorized_voters.clone(),
        prior_voters: mirror::CircBuf {
            buf: s
                .prior_voters
                .buf
                .map(|p| (p.pubkey, p.start_epoch, p.end_epoch)),
            idx: s.prior_voters.idx,
            is_empty: s.prior_voters.is_empty,
        },
        epoch_credits: s
            .epoch_credits
            .iter()
            .map(|c| (c.epoch, c.credits, c.prev_credits))
            .collect(),
        last_timestamp: mirror::BlockTimestamp {
            slot: s.last_timestamp.slot,
            timestamp: s.last_timestamp.timestamp,
        },
    };
    let update = |u: &VoteStateUpdate| mirror::VoteStateUpdate {
        lockouts: lockouts(&u.lockouts),
        root: u.root,
        hash: u.hash,
        timestamp: u.timestamp,
    };
    let last_vote = match &t.last_vote {
        LastVote::Vote(v) => mirror::VoteTransaction::Vote(mirror::Vote {
            slots: v.slots.clone(),
            hash: v.hash,
            timestamp: v.timestamp,
        }),
        LastVote::VoteStateUpdate(u) => mirror::VoteTransaction::VoteStateUpdate(update(u)),
        LastVote::CompactVoteStateUpdate(u) => {
            mirror::VoteTransaction::CompactVoteStateUpdate(update(u))
        }
        LastVote::TowerSync(s) => mirror::VoteTransaction::TowerSync(mirror::TowerSync {
            lockouts: lockouts(&s.lockouts),
            root: s.root,
            hash: s.hash,
            timestamp: s.timestamp,
            block_id: s.block_id,
        }),
        other => panic!("unknown last vote {other:?}"),
    };
    mirror::Tower1_14_11 {
        node_pubkey: *t.node_pubkey.as_bytes(),
        threshold_depth: t.threshold_depth,
        threshold_size: t.threshold_size.get(),
        vote_state,
        last_vote,
        last_timestamp: mirror::BlockTimestamp {
            slot: t.last_timestamp.slot,
            timestamp: t.last_timestamp.timestamp,
        },
    }
}

fn mirror_bytes(t: &AgaveTower, layout: TowerLayout) -> Vec<u8> {
    let m = to_mirror(t);
    match layout {
        TowerLayout::V1_14_11 => bincode::serialize(&m).unwrap(),
        TowerLayout::V1_7_14 => {
            let mirror::VoteTransaction::Vote(last_vote) = m.last_vote else {
                panic!("1.7.14 holds a plain vote")
            };
            bincode::serialize(&mirror::Tower1_7_14 {
                node_pubkey: m.node_pubkey,
                threshold_depth: m.threshold_depth,
                threshold_size: m.threshold_size,
                vote_state: m.vote_state,
                last_vote,
                last_timestamp: m.last_timestamp,
            })
            .unwrap()
        }
    }
}

/// bincode of the mirror equals our encoding, and bincode reads our
/// encoding back to the same mirror.
fn cross_check(t: &AgaveTower, layout: TowerLayout) {
    let ours = t.encode(layout).unwrap();
    assert_eq!(mirror_bytes(t, layout), ours, "bincode disagrees");
    let back: mirror::Tower1_14_11 = match layout {
        TowerLayout::V1_14_11 => bincode::deserialize(&ours).unwrap(),
        TowerLayout::V1_7_14 => bincode::deserialize::<mirror::Tower1_7_14>(&ours)
            .unwrap()
            .into(),
    };
    // Compared through bincode so that a NaN threshold compares by bits.
    assert_eq!(
        bincode::serialize(&back).unwrap(),
        bincode::serialize(&to_mirror(t)).unwrap()
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn hand_assembled_bytes_decode_field_by_field() {
    // Every field written out by hand from formats.md section 4b.
    let mut b = Vec::new();
    b.extend_from_slice(&[1; 32]); // node_pubkey
    b.extend_from_slice(&8u64.to_le_bytes()); // threshold_depth
    b.extend_from_slice(&(2.0f64 / 3.0).to_le_bytes()); // threshold_size
    b.extend_from_slice(&[2; 32]); // vote_state.node_pubkey
    b.extend_from_slice(&[3; 32]); // authorized_withdrawer
    b.push(5); // commission
    b.extend_from_slice(&1u64.to_le_bytes()); // votes: 1
    b.extend_from_slice(&10u64.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    b.push(1); // root_slot: Some(9)
    b.extend_from_slice(&9u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // authorized_voters: 1
    b.extend_from_slice(&7u64.to_le_bytes());
    b.extend_from_slice(&[4; 32]);
    b.extend_from_slice(&[0; 32 * 48]); // prior_voters ring
    b.extend_from_slice(&31u64.to_le_bytes()); // idx
    b.push(1); // is_empty
    b.extend_from_slice(&1u64.to_le_bytes()); // epoch_credits: 1
    for v in [7u64, 100, 50] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&10u64.to_le_bytes()); // vote_state.last_timestamp
    b.extend_from_slice(&1000i64.to_le_bytes());
    b.extend_from_slice(&3u32.to_le_bytes()); // last_vote: TowerSync
    b.extend_from_slice(&9u64.to_le_bytes()); // root
    b.push(1); // short-vec: 1 lockout
    b.extend_from_slice(&[1, 2]); // offset 1 (slot 10), confirmation 2
    b.extend_from_slice(&[5; 32]); // hash
    b.push(1); // timestamp Some(1000)
    b.extend_from_slice(&1000i64.to_le_bytes());
    b.extend_from_slice(&[6; 32]); // block_id
    b.extend_from_slice(&10u64.to_le_bytes()); // last_timestamp
    b.extend_from_slice(&1000i64.to_le_bytes());

    let tower = AgaveTower::decode(&b, TowerLayout::V1_14_11).unwrap();
    let lockout = Lockout {
        slot: 10,
        confirmation_count: 2,
    };
    let want = AgaveTower {
        node_pubkey: NodeId([1; 32]),
        threshold_depth: 8,
        threshold_size: F64Bits::from_f64(2.0 / 3.0),
        vote_state: VoteState {
            node_pubkey: [2; 32],
            authorized_withdrawer: [3; 32],
            commission: 5,
            votes: vec![lockout],
            root_slot: Some(9),
            authorized_voters: BTreeMap::from([(7, [4; 32])]),
            prior_voters: PriorVoters::default(),
            epoch_credits: vec![EpochCredits {
                epoch: 7,
                credits: 100,
                prev_credits: 50,
            }],
            last_timestamp: BlockTimestamp {
                slot: 10,
                timestamp: 1000,
            },
        },
        last_vote: LastVote::TowerSync(TowerSync {
            lockouts: vec![lockout],
            root: Some(9),
            hash: [5; 32],
            timestamp: Some(1000),
            block_id: [6; 32],
        }),
        last_timestamp: BlockTimestamp {
            slot: 10,
            timestamp: 1000,
        },
    };
    assert_eq!(tower, want);
    assert_eq!(tower.encode(TowerLayout::V1_14_11).unwrap(), b);
    assert_eq!(tower.threshold_size.get(), 2.0 / 3.0);
    cross_check(&tower, TowerLayout::V1_14_11);
}

#[test]
fn every_vector_roundtrips_byte_for_byte_and_matches_bincode() {
    for (name, format, tower, kp) in vectors() {
        let layout = format.layout();
        cross_check(&tower, layout);
        let data = tower.encode(layout).unwrap();
        assert_eq!(AgaveTower::decode(&data, layout).unwrap(), tower, "{name}");
        let file = file_of(format, &tower, &kp);
        let saved = SavedTower::decode(&file, format.file_kind(), &kp.node_id()).unwrap();
        assert_eq!(saved.format(), format, "{name}");
        assert_eq!(saved.tower(), &tower, "{name}");
        assert_eq!(saved.encode(), file, "{name}");
        assert_eq!(saved.data(), &data[..], "{name}");
        // The envelope, through bincode of the mirror.
        let signature = (
            saved.signature()[..32].try_into().unwrap(),
            saved.signature()[32..].try_into().unwrap(),
        );
        let envelope = mirror::SavedTower {
            signature,
            data: data.clone(),
        };
        let want = match format {
            EnvelopeFormat::Current => {
                bincode::serialize(&mirror::SavedTowerVersions::Current(envelope))
            }
            EnvelopeFormat::V1_7_14 => {
                bincode::serialize(&mirror::SavedTowerVersions::V1_17_14(envelope))
            }
            _ => bincode::serialize(&envelope),
        }
        .unwrap();
        assert_eq!(file, want, "{name}");
    }
}

#[test]
fn vectors_have_the_expected_sizes() {
    let kp = keypair(1);
    let full = full_tower(kp.node_id())
        .encode(TowerLayout::V1_14_11)
        .unwrap();
    assert!(
        full.len() > 3 * 1024,
        "full vote state is {} bytes",
        full.len()
    );
    for (_, format, tower, _) in vectors() {
        let data = tower.encode(format.layout()).unwrap();
        let tail = data.len() - last_vote_at(&tower) - 16;
        let lockouts = tower.vote_state.votes.len();
        let want = match &tower.last_vote {
            _ if format.layout() == TowerLayout::V1_7_14 => 8 + 8 * lockouts + 32 + 9,
            LastVote::Vote(_) => 4 + 8 + 8 * lockouts + 32 + 9,
            LastVote::VoteStateUpdate(_) => 4 + 8 + 12 * lockouts + 9 + 32 + 9,
            // Root, a one-byte count, 31 two-byte lockouts, hash, no timestamp.
            LastVote::CompactVoteStateUpdate(_) => 4 + 8 + 1 + 2 * lockouts + 32 + 1,
            LastVote::TowerSync(_) if lockouts == 0 => 4 + 8 + 1 + 32 + 1 + 32,
            LastVote::TowerSync(_) => 4 + 8 + 1 + 2 * lockouts + 32 + 9 + 32,
            other => panic!("{other:?}"),
        };
        assert_eq!(tail, want, "{:?}", tower.last_vote.tag());
    }
}

#[test]
fn what_slashguard_signs_agaves_loader_accepts() {
    for (name, format, tower, kp) in vectors() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedTower::sign_as(format, tower.clone(), &kp).unwrap();
        let path = tower_file_path(dir.path(), &kp.node_id(), format.file_kind());
        std::fs::write(&path, saved.encode()).unwrap();
        let loaded = mirror::agave_load(dir.path(), kp.node_id().as_bytes())
            .unwrap_or_else(|e| panic!("{name}: Agave would refuse: {e}"));
        assert_eq!(
            bincode::serialize(&loaded).unwrap(),
            bincode::serialize(&to_mirror(&tower)).unwrap(),
            "{name}"
        );
        // And refuses it for another node, or once a byte of data changes.
        let other = keypair(2);
        std::fs::rename(
            &path,
            tower_file_path(dir.path(), &other.node_id(), format.file_kind()),
        )
        .unwrap();
        assert!(mirror::agave_load(dir.path(), other.node_id().as_bytes()).is_err());
    }
}

#[test]
fn truncation_at_every_offset_is_a_typed_error() {
    for (name, format, tower, kp) in vectors() {
        let file = file_of(format, &tower, &kp);
        let kind = format.file_kind();
        for cut in 0..file.len() {
            match SavedTower::decode(&file[..cut], kind, &kp.node_id()) {
                Err(AgaveError::Empty) => assert_eq!(cut, 0),
                Err(AgaveError::Truncated { .. }) => {}
                other => panic!("{name}: cut {cut}: {other:?}"),
            }
        }
        let data = tower.encode(format.layout()).unwrap();
        for cut in 0..data.len() {
            match AgaveTower::decode(&data[..cut], format.layout()) {
                Err(AgaveError::Truncated { .. } | AgaveError::AbsurdLength { .. }) => {}
                other => panic!("{name}: data cut {cut}: {other:?}"),
            }
        }
    }
    // Inside a validly signed envelope the same errors come out, at file
    // offsets.
    let kp = keypair(1);
    let data = modern_tower(kp.node_id())
        .encode(TowerLayout::V1_14_11)
        .unwrap();
    for cut in (0..data.len()).step_by(7) {
        let inner = AgaveTower::decode(&data[..cut], TowerLayout::V1_14_11).unwrap_err();
        let outer =
            SavedTower::decode(&signed_file(1, &data[..cut]), FileKind::V1_9, &kp.node_id())
                .unwrap_err();
        match (inner, outer) {
            (AgaveError::Truncated { offset: a, .. }, AgaveError::Truncated { offset: b, .. })
            | (
                AgaveError::AbsurdLength { offset: a, .. },
                AgaveError::AbsurdLength { offset: b, .. },
            ) => assert_eq!(a + DATA_AT, b, "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

/// One bad input: a mutation of the modern tower's data (re-signed) and a
/// check of the error.
type Mutation = (
    &'static str,
    fn(&AgaveTower, &mut Vec<u8>),
    fn(&AgaveError) -> bool,
);

#[test]
fn bad_inputs_get_their_own_error() {
    let kp = keypair(1);
    let tower = modern_tower(kp.node_id());
    let data = tower.encode(TowerLayout::V1_14_11).unwrap();
    let lv = last_vote_at(&tower);
    // TowerSync: tag, root, count (31: one byte), then lockouts.
    let count_at = lv + 4 + 8;
    assert_eq!(data[count_at], 31);

    let table: Vec<Mutation> = vec![
        (
            "last vote tag 4",
            |t, d| d[last_vote_at(t)..last_vote_at(t) + 4].copy_from_slice(&4u32.to_le_bytes()),
            |e| {
                matches!(
                    e,
                    AgaveError::BadTag {
                        field: "last_vote tag",
                        found: 4,
                        ..
                    }
                )
            },
        ),
        (
            "last vote tag u32::MAX",
            |t, d| d[last_vote_at(t)..last_vote_at(t) + 4].fill(0xff),
            |e| {
                matches!(
                    e,
                    AgaveError::BadTag {
                        found: u32::MAX,
                        ..
                    }
                )
            },
        ),
        (
            "root option tag 2",
            |_, d| d[32 + 8 + 8 + 65 + 8 + 12 * 31] = 2,
            |e| {
                matches!(
                    e,
                    AgaveError::BadTag {
                        field: "vote_state.root_slot",
                        found: 2,
                        ..
                    }
                )
            },
        ),
        (
            "is_empty 2",
            |_, d| d[32 + 8 + 8 + 65 + 8 + 12 * 31 + 9 + 8 + 32 * 48 + 8] = 2,
            |e| {
                matches!(
                    e,
                    AgaveError::BadTag {
                        field: "vote_state.prior_voters.is_empty",
                        found: 2,
                        ..
                    }
                )
            },
        ),
        (
            "timestamp option tag 7",
            |_, d| {
                let at = d.len() - 16 - 32 - 9;
                d[at] = 7
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadTag {
                        field: "last_vote.timestamp",
                        found: 7,
                        ..
                    }
                )
            },
        ),
        (
            "short-vec count with a redundant zero byte",
            |t, d| {
                let at = last_vote_at(t) + 12;
                d.splice(at..at + 1, [0x9f, 0x00]);
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadShortVec {
                        problem: CompactProblem::RedundantZero,
                        ..
                    }
                )
            },
        ),
        (
            "short-vec count continuing on its third byte",
            |t, d| {
                let at = last_vote_at(t) + 12;
                d.splice(at..at + 1, [0x9f, 0x80, 0x80]);
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadShortVec {
                        problem: CompactProblem::TooLong,
                        ..
                    }
                )
            },
        ),
        (
            "short-vec count above 65535",
            |t, d| {
                let at = last_vote_at(t) + 12;
                d.splice(at..at + 1, [0x9f, 0x80, 0x04]);
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadShortVec {
                        problem: CompactProblem::Overflow,
                        ..
                    }
                )
            },
        ),
        (
            "short-vec count of 65535 lockouts in a few KiB",
            |t, d| {
                let at = last_vote_at(t) + 12;
                d.splice(at..at + 1, [0xff, 0xff, 0x03]);
            },
            |e| matches!(e, AgaveError::AbsurdLength { count: 65535, .. }),
        ),
        (
            "varint slot offset with a redundant zero byte",
            |t, d| {
                let at = last_vote_at(t) + 13;
                assert_eq!(d[at], 1);
                d.splice(at..at + 1, [0x81, 0x00]);
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadVarint {
                        problem: CompactProblem::RedundantZero,
                        ..
                    }
                )
            },
        ),
        (
            "varint slot offset wider than u64",
            |t, d| {
                let at = last_vote_at(t) + 13;
                d.splice(
                    at..at + 1,
                    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                );
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadVarint {
                        problem: CompactProblem::Overflow,
                        ..
                    }
                )
            },
        ),
        (
            "varint slot offset of 11 bytes",
            |t, d| {
                let at = last_vote_at(t) + 13;
                d.splice(at..at + 1, [0x80; 10].into_iter().chain([0x01]));
            },
            |e| {
                matches!(
                    e,
                    AgaveError::BadVarint {
                        problem: CompactProblem::TooLong,
                        ..
                    }
                )
            },
        ),
        (
            "slot offsets that overflow u64",
            |t, d| {
                let at = last_vote_at(t) + 4;
                d[at..at + 8].copy_from_slice(&(u64::MAX - 5).to_le_bytes());
            },
            // Offsets 1, 2, 2, 2, ... from u64::MAX - 5: the fourth overflows.
            |e| matches!(e, AgaveError::SlotOverflow { index: 3, .. }),
        ),
        (
            "votes count u64::MAX",
            |_, d| d[32 + 8 + 8 + 65..32 + 8 + 8 + 65 + 8].fill(0xff),
            |e| {
                matches!(
                    e,
                    AgaveError::AbsurdLength {
                        field: "vote_state.votes",
                        count: u64::MAX,
                        ..
                    }
                )
            },
        ),
        (
            "votes count 2^40",
            |_, d| {
                d[32 + 8 + 8 + 65..32 + 8 + 8 + 65 + 8].copy_from_slice(&(1u64 << 40).to_le_bytes())
            },
            |e| {
                matches!(
                    e,
                    AgaveError::AbsurdLength {
                        count: 0x100_0000_0000,
                        ..
                    }
                )
            },
        ),
        (
            "authorized voters count 2^32",
            |_, d| {
                let at = 32 + 8 + 8 + 65 + 8 + 12 * 31 + 9;
                d[at..at + 8].copy_from_slice(&(1u64 << 32).to_le_bytes())
            },
            |e| {
                matches!(
                    e,
                    AgaveError::AbsurdLength {
                        field: "vote_state.authorized_voters",
                        ..
                    }
                )
            },
        ),
        (
            "epoch credits count 1000",
            |_, d| {
                let at = 32 + 8 + 8 + 65 + 8 + 12 * 31 + 9 + 8 + 32 * 48 + 8 + 1;
                d[at..at + 8].copy_from_slice(&1000u64.to_le_bytes())
            },
            |e| {
                matches!(
                    e,
                    AgaveError::AbsurdLength {
                        field: "vote_state.epoch_credits",
                        count: 1000,
                        ..
                    }
                )
            },
        ),
        (
            "trailing byte inside the signed data",
            |_, d| d.push(0),
            |e| matches!(e, AgaveError::TrailingData { count: 1, .. }),
        ),
    ];
    for (name, mutate, expected) in table {
        let mut bad = data.clone();
        mutate(&tower, &mut bad);
        let err = AgaveTower::decode(&bad, TowerLayout::V1_14_11).unwrap_err();
        assert!(expected(&err), "{name}: got {err:?}");
        // Signed by the node, the file is refused with the same error.
        let file_err =
            SavedTower::decode(&signed_file(1, &bad), FileKind::V1_9, &kp.node_id()).unwrap_err();
        assert!(expected(&file_err), "{name}: file gave {file_err:?}");
        // And the crate error says corrupt.
        assert!(
            matches!(Error::from(file_err), Error::Corrupt { .. }),
            "{name}"
        );
    }
}

#[test]
fn bad_envelopes_signatures_and_nodes() {
    let kp = keypair(1);
    let other = keypair(2);
    let tower = modern_tower(kp.node_id());
    let file = file_of(EnvelopeFormat::Current, &tower, &kp);
    let decode = |bytes: &[u8]| SavedTower::decode(bytes, FileKind::V1_9, &kp.node_id());

    assert_eq!(decode(&[]), Err(AgaveError::Empty));
    for variant in [2u32, 7, u32::MAX] {
        let mut b = file.clone();
        b[..4].copy_from_slice(&variant.to_le_bytes());
        assert_eq!(
            decode(&b),
            Err(AgaveError::BadTag {
                field: "envelope variant",
                offset: 0,
                found: variant
            })
        );
    }
    // Variant 0 with current-layout data: the last vote's tag is read as
    // the start of a plain vote's slot count.
    let mut b = file.clone();
    b[..4].copy_from_slice(&0u32.to_le_bytes());
    assert!(decode(&b).is_err());

    // A data length beyond the file, up to u64::MAX: no allocation.
    for len in [file.len() as u64, 1 << 40, u64::MAX] {
        let mut b = file.clone();
        b[68..76].copy_from_slice(&len.to_le_bytes());
        assert!(
            matches!(decode(&b), Err(AgaveError::Truncated { field: "data", offset: 76, needed, .. }) if needed == len),
            "len {len}"
        );
    }
    let mut b = file.clone();
    b.push(0);
    assert_eq!(
        decode(&b),
        Err(AgaveError::TrailingBytes {
            offset: file.len(),
            count: 1
        })
    );

    // Bad signature: a flipped signature bit, or data changed after signing.
    let mut b = file.clone();
    b[10] ^= 1;
    assert_eq!(
        decode(&b),
        Err(AgaveError::BadSignature { node: kp.node_id() })
    );
    let mut b = file.clone();
    b[DATA_AT + 32 + 8 + 8 + 64] ^= 0x55; // commission
    assert_eq!(
        decode(&b),
        Err(AgaveError::BadSignature { node: kp.node_id() })
    );
    // A non-canonical signature (s not reduced) is refused as Agave's strict
    // verification does.
    let mut b = file.clone();
    b[4 + 63] |= 0xf0;
    assert_eq!(
        decode(&b),
        Err(AgaveError::BadSignature { node: kp.node_id() })
    );

    // Foreign node: another node's valid file.
    let foreign = file_of(
        EnvelopeFormat::Current,
        &modern_tower(other.node_id()),
        &other,
    );
    assert_eq!(
        decode(&foreign),
        Err(AgaveError::ForeignNode {
            expected: kp.node_id(),
            found: other.node_id()
        })
    );
    // Our tower signed by another key.
    let data = tower.encode(TowerLayout::V1_14_11).unwrap();
    assert_eq!(
        decode(&signed_file(2, &data)),
        Err(AgaveError::BadSignature { node: kp.node_id() })
    );
    // decode_unverified reads it anyway, verify() then says no.
    let unverified = SavedTower::decode_unverified(&signed_file(2, &data), FileKind::V1_9).unwrap();
    assert!(unverified.verify().is_err());

    // Crate errors: corrupt, with the shared variants where they fit.
    assert!(matches!(
        Error::from(decode(&foreign).unwrap_err()),
        Error::Corrupt {
            problem: FormatError::ForeignNode { .. },
            ..
        }
    ));
}

#[test]
fn unencodable_towers_are_refused_not_mangled() {
    let kp = keypair(1);
    let mut tower = modern_tower(kp.node_id());
    if let LastVote::TowerSync(sync) = &mut tower.last_vote {
        sync.lockouts.swap(0, 1);
    }
    assert!(matches!(
        SavedTower::sign(tower.clone(), &kp),
        Err(AgaveError::Unencodable { .. })
    ));
    assert!(matches!(
        SavedTower::sign_as(EnvelopeFormat::Legacy, modern_tower(kp.node_id()), &kp),
        Err(AgaveError::Unencodable {
            field: "last_vote",
            ..
        })
    ));
    assert!(matches!(
        Error::from(SavedTower::sign(tower, &kp).unwrap_err()),
        Error::Invalid(_)
    ));
}

// ------------------------------------------------------------ property

fn arb_lockout() -> impl Strategy<Value = Lockout> {
    (any::<u64>(), any::<u32>()).prop_map(|(slot, confirmation_count)| Lockout {
        slot,
        confirmation_count,
    })
}

/// Compact lockouts: non-decreasing slots from the root (or 0), counts
/// that fit a byte; deltas small or large so varints of every width occur.
fn arb_compact() -> impl Strategy<Value = (Vec<Lockout>, Option<u64>)> {
    let delta = prop_oneof![0u64..4, 0u64..200, 0u64..(1 << 20), 0u64..(1 << 56)];
    (
        proptest::option::of(0u64..(1 << 62)),
        proptest::collection::vec((delta, any::<u8>()), 0..40),
    )
        .prop_map(|(root, deltas)| {
            let mut slot = root.unwrap_or(0);
            let lockouts = deltas
                .into_iter()
                .map(|(d, c)| {
                    slot += d;
                    Lockout {
                        slot,
                        confirmation_count: c.into(),
                    }
                })
                .collect();
            (lockouts, root)
        })
}

fn arb_last_vote() -> impl Strategy<Value = LastVote> {
    let ts = proptest::option::of(any::<i64>());
    prop_oneof![
        (
            proptest::collection::vec(any::<u64>(), 0..40),
            any::<[u8; 32]>(),
            ts.clone()
        )
            .prop_map(|(slots, hash, timestamp)| LastVote::Vote(Vote {
                slots,
                hash,
                timestamp
            })),
        (
            proptest::collection::vec(arb_lockout(), 0..40),
            proptest::option::of(any::<u64>()),
            any::<[u8; 32]>(),
            ts.clone()
        )
            .prop_map(
                |(lockouts, root, hash, timestamp)| LastVote::VoteStateUpdate(VoteStateUpdate {
                    lockouts,
                    root,
                    hash,
                    timestamp
                })
            ),
        (arb_compact(), any::<[u8; 32]>(), ts.clone()).prop_map(
            |((lockouts, root), hash, timestamp)| {
                LastVote::CompactVoteStateUpdate(VoteStateUpdate {
                    lockouts,
                    root,
                    hash,
                    timestamp,
                })
            }
        ),
        (arb_compact(), any::<[u8; 32]>(), ts, any::<[u8; 32]>()).prop_map(
            |((lockouts, root), hash, timestamp, block_id)| LastVote::TowerSync(TowerSync {
                lockouts,
                root,
                hash,
                timestamp,
                block_id
            })
        ),
    ]
}

fn arb_vote_state() -> impl Strategy<Value = VoteState> {
    let prior = (
        proptest::array::uniform32((any::<[u8; 32]>(), any::<u64>(), any::<u64>()).prop_map(
            |(pubkey, s, e)| PriorVoter {
                pubkey,
                start_epoch: s,
                end_epoch: e,
            },
        )),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(buf, idx, is_empty)| PriorVoters { buf, idx, is_empty });
    (
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u8>()),
        proptest::collection::vec(arb_lockout(), 0..40),
        proptest::option::of(any::<u64>()),
        proptest::collection::btree_map(any::<u64>(), any::<[u8; 32]>(), 0..5),
        prior,
        proptest::collection::vec(any::<(u64, u64, u64)>(), 0..70),
        (any::<u64>(), any::<i64>()),
    )
        .prop_map(
            |(
                (node_pubkey, authorized_withdrawer, commission),
                votes,
                root_slot,
                authorized_voters,
                prior_voters,
                credits,
                (slot, timestamp),
            )| {
                VoteState {
                    node_pubkey,
                    authorized_withdrawer,
                    commission,
                    votes,
                    root_slot,
                    authorized_voters,
                    prior_voters,
                    epoch_credits: credits
                        .into_iter()
                        .map(|(epoch, credits, prev_credits)| EpochCredits {
                            epoch,
                            credits,
                            prev_credits,
                        })
                        .collect(),
                    last_timestamp: BlockTimestamp { slot, timestamp },
                }
            },
        )
}

fn arb_tower() -> impl Strategy<Value = AgaveTower> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
        arb_vote_state(),
        arb_last_vote(),
        (any::<u64>(), any::<i64>()),
    )
        .prop_map(
            |(node, depth, size, vote_state, last_vote, (slot, timestamp))| AgaveTower {
                node_pubkey: NodeId(node),
                threshold_depth: depth,
                threshold_size: F64Bits(size),
                vote_state,
                last_vote,
                last_timestamp: BlockTimestamp { slot, timestamp },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_towers_roundtrip_and_match_bincode(tower in arb_tower()) {
        let data = tower.encode(TowerLayout::V1_14_11).unwrap();
        let back = AgaveTower::decode(&data, TowerLayout::V1_14_11).unwrap();
        prop_assert_eq!(&back, &tower);
        prop_assert_eq!(back.encode(TowerLayout::V1_14_11).unwrap(), data.clone());
        cross_check(&tower, TowerLayout::V1_14_11);
        if matches!(tower.last_vote, LastVote::Vote(_)) {
            cross_check(&tower, TowerLayout::V1_7_14);
            let old = tower.encode(TowerLayout::V1_7_14).unwrap();
            prop_assert_eq!(AgaveTower::decode(&old, TowerLayout::V1_7_14).unwrap(), tower);
        }
    }

    #[test]
    fn random_signed_files_roundtrip(tower in arb_tower(), seed in any::<u8>()) {
        let kp = keypair(seed);
        let tower = AgaveTower { node_pubkey: kp.node_id(), ..tower };
        let file = SavedTower::sign(tower.clone(), &kp).unwrap().encode();
        let saved = SavedTower::decode(&file, FileKind::V1_9, &kp.node_id()).unwrap();
        prop_assert_eq!(saved.tower(), &tower);
        prop_assert_eq!(saved.encode(), file);
    }
}

// ---------------------------------------------------------------- files

#[test]
fn file_names_are_agaves() {
    let node = keypair(1).node_id();
    let b58 = bs58::encode(node.as_bytes()).into_string();
    assert_eq!(
        tower_file_name(&node, FileKind::V1_9),
        format!("tower-1_9-{b58}.bin")
    );
    assert_eq!(
        tower_file_name(&node, FileKind::Legacy),
        format!("tower-{b58}.bin")
    );
}

fn tower_at(kp: &NodeKeypair, last: u64, hash: u8, root: u64) -> SavedTower {
    let mut tower = AgaveTower::new(kp.node_id());
    let lockouts = vec![
        Lockout {
            slot: root + 1,
            confirmation_count: 2,
        },
        Lockout {
            slot: last,
            confirmation_count: 1,
        },
    ];
    tower.vote_state.votes = lockouts.clone();
    tower.vote_state.root_slot = Some(root);
    tower.last_vote = LastVote::TowerSync(TowerSync {
        lockouts,
        root: Some(root),
        hash: [hash; 32],
        timestamp: None,
        block_id: [hash; 32],
    });
    SavedTower::sign(tower, kp).unwrap()
}

#[test]
fn durable_write_then_load_as_agave_does() {
    let kp = keypair(1);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_tower(dir.path(), &kp.node_id()).unwrap(), None);

    // Only a pre-1.9 file: it is what loads.
    let mut old = modern_tower(kp.node_id());
    old.last_vote = last_vote_variant(&old, 0);
    let legacy = SavedTower::sign_as(EnvelopeFormat::Legacy, old, &kp).unwrap();
    std::fs::write(
        tower_file_path(dir.path(), &kp.node_id(), FileKind::Legacy),
        legacy.encode(),
    )
    .unwrap();
    assert_eq!(
        load_tower(dir.path(), &kp.node_id()).unwrap(),
        Some(legacy.clone())
    );

    // A newer current tower written durably takes precedence.
    let newer = tower_at(&kp, ROOT + 100, 1, ROOT + 10);
    let path = write_tower_durable(dir.path(), &newer, StoreMode::Advance).unwrap();
    assert_eq!(
        path,
        tower_file_path(dir.path(), &kp.node_id(), FileKind::V1_9)
    );
    assert_eq!(std::fs::read(&path).unwrap(), newer.encode());
    assert_eq!(
        load_tower(dir.path(), &kp.node_id()).unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        read_tower_file(&path, FileKind::V1_9, &kp.node_id()).unwrap(),
        newer
    );
    let loaded = mirror::agave_load(dir.path(), kp.node_id().as_bytes()).unwrap();
    assert_eq!(loaded.vote_state.root_slot, Some(ROOT + 10));
    // No temporary file left behind.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            tower_file_name(&kp.node_id(), FileKind::V1_9),
            tower_file_name(&kp.node_id(), FileKind::Legacy)
        ]
    );
}

#[test]
fn durable_write_never_moves_a_tower_backwards_unless_forced() {
    let kp = keypair(1);
    let dir = tempfile::tempdir().unwrap();
    let current = tower_at(&kp, 500, 1, 400);
    write_tower_durable(dir.path(), &current, StoreMode::Advance).unwrap();
    let path = tower_file_path(dir.path(), &kp.node_id(), FileKind::V1_9);

    let cases = [
        (tower_at(&kp, 499, 1, 400), "older vote"),
        (tower_at(&kp, 500, 2, 400), "same slot, other hash"),
        (tower_at(&kp, 600, 1, 399), "older root"),
    ];
    for (candidate, name) in &cases {
        let err = write_tower_durable(dir.path(), candidate, StoreMode::Advance).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused(Refusal::Tower(
                    TowerRefusal::LastVoteRegressed { stored: 500, .. }
                        | TowerRefusal::ConflictingVote { slot: 500 }
                        | TowerRefusal::RootRegressed { stored: 400, .. }
                ))
            ),
            "{name}: {err:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), current.encode(), "{name}");
    }
    // The same tower again is fine (a retried export), a newer one too.
    write_tower_durable(dir.path(), &current, StoreMode::Advance).unwrap();
    let newer = tower_at(&kp, 501, 1, 400);
    write_tower_durable(dir.path(), &newer, StoreMode::Advance).unwrap();
    // Force overwrites with an older one.
    write_tower_durable(dir.path(), &cases[0].0, StoreMode::Force).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), cases[0].0.encode());

    // A damaged existing file: refused unless forced.
    std::fs::write(&path, b"not a tower").unwrap();
    assert!(matches!(
        write_tower_durable(dir.path(), &newer, StoreMode::Advance),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a tower");
    write_tower_durable(dir.path(), &newer, StoreMode::Force).unwrap();
    assert_eq!(load_tower(dir.path(), &kp.node_id()).unwrap(), Some(newer));
}

#[test]
fn durable_write_refuses_what_agave_would_not_load() {
    let kp = keypair(1);
    let dir = tempfile::tempdir().unwrap();
    let mut old = modern_tower(kp.node_id());
    old.last_vote = last_vote_variant(&old, 0);
    let legacy = SavedTower::sign_as(EnvelopeFormat::Legacy, old, &kp).unwrap();
    assert!(matches!(
        write_tower_durable(dir.path(), &legacy, StoreMode::Force),
        Err(Error::Invalid(_))
    ));
    let data = modern_tower(kp.node_id())
        .encode(TowerLayout::V1_14_11)
        .unwrap();
    let forged = SavedTower::decode_unverified(&signed_file(2, &data), FileKind::V1_9).unwrap();
    assert!(matches!(
        write_tower_durable(dir.path(), &forged, StoreMode::Force),
        Err(Error::Invalid(_))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn reading_refuses_oversized_foreign_and_missing_files() {
    let kp = keypair(1);
    let other = keypair(2);
    let dir = tempfile::tempdir().unwrap();
    let path = tower_file_path(dir.path(), &kp.node_id(), FileKind::V1_9);
    assert!(matches!(
        read_tower_file(&path, FileKind::V1_9, &kp.node_id()),
        Err(Error::Io { .. })
    ));
    std::fs::write(&path, vec![0u8; MAX_TOWER_FILE_BYTES + 1]).unwrap();
    assert!(matches!(
        load_tower(dir.path(), &kp.node_id()),
        Err(Error::Corrupt {
            problem: FormatError::InvalidField { field: "file", .. },
            ..
        })
    ));
    // Another node's file under our name.
    std::fs::write(&path, tower_at(&other, 10, 1, 5).encode()).unwrap();
    assert!(matches!(
        load_tower(dir.path(), &kp.node_id()),
        Err(Error::Corrupt {
            problem: FormatError::ForeignNode { .. },
            ..
        })
    ));
}

// ---------------------------------------------------------- conversion

#[test]
fn file_to_record_and_back_is_byte_exact() {
    let kp = keypair(1);
    let saved = SavedTower::sign(modern_tower(kp.node_id()), &kp).unwrap();
    let record = saved.to_record(&kp).unwrap();
    let last = lockouts_above(ROOT).last().unwrap().slot;
    assert_eq!(
        record.last_vote(),
        Some(VoteRef {
            slot: last,
            hash: [0xab; 32]
        })
    );
    assert_eq!(record.root(), Some(ROOT));
    assert_eq!(record.tower_bytes(), saved.data());
    // Through the record's own encoding, as a store keeps it.
    let stored = TowerRecord::decode(&record.encode(), &kp.node_id()).unwrap();
    let back = SavedTower::from_record(&stored, &kp).unwrap();
    assert_eq!(back.encode(), saved.encode());
}

#[test]
fn old_envelopes_convert_to_the_current_one() {
    let kp = keypair(1);
    for format in [EnvelopeFormat::V1_7_14, EnvelopeFormat::Legacy] {
        let mut tower = full_tower(kp.node_id());
        tower.last_vote = last_vote_variant(&tower, 0);
        let saved = SavedTower::sign_as(format, tower.clone(), &kp).unwrap();
        let record = saved.to_record(&kp).unwrap();
        assert_eq!(record.last_vote_slot(), tower.last_voted_slot());
        assert_eq!(record.root(), Some(ROOT));
        let back = SavedTower::from_record(&record, &kp).unwrap();
        assert_eq!(back.format(), EnvelopeFormat::Current);
        assert_eq!(back.tower(), &tower);
    }
}

#[test]
fn conversions_check_node_signature_and_consistency() {
    let kp = keypair(1);
    let other = keypair(2);
    let saved = SavedTower::sign(modern_tower(kp.node_id()), &kp).unwrap();
    assert!(matches!(
        saved.to_record(&other),
        Err(AgaveError::ForeignNode { .. })
    ));
    let record = saved.to_record(&kp).unwrap();
    assert!(matches!(
        SavedTower::from_record(&record, &other),
        Err(AgaveError::ForeignNode { .. })
    ));
    // A record whose summary does not match its tower bytes.
    let wrong_vote = TowerRecord::sign(
        &kp,
        Some(VoteRef {
            slot: 1,
            hash: [0; 32],
        }),
        Some(0),
        saved.data().to_vec(),
    )
    .unwrap();
    assert!(matches!(
        SavedTower::from_record(&wrong_vote, &kp),
        Err(AgaveError::RecordMismatch {
            field: "last vote",
            ..
        })
    ));
    let wrong_root = TowerRecord::sign(
        &kp,
        record.last_vote(),
        Some(ROOT - 1),
        saved.data().to_vec(),
    )
    .unwrap();
    assert!(matches!(
        SavedTower::from_record(&wrong_root, &kp),
        Err(AgaveError::RecordMismatch { field: "root", .. })
    ));
    // A record holding something else than an Agave tower.
    let opaque = TowerRecord::sign(&kp, record.last_vote(), record.root(), vec![0; 2048]).unwrap();
    assert!(SavedTower::from_record(&opaque, &kp).is_err());
    // A record of our node holding another node's tower.
    let foreign = SavedTower::sign(modern_tower(other.node_id()), &other).unwrap();
    let smuggled = TowerRecord::sign(
        &kp,
        record.last_vote(),
        record.root(),
        foreign.data().to_vec(),
    )
    .unwrap();
    assert!(matches!(
        SavedTower::from_record(&smuggled, &kp),
        Err(AgaveError::ForeignNode { .. })
    ));
    // A file with a bad signature never becomes a record.
    let mut file = saved.encode();
    file[10] ^= 1;
    let forged = SavedTower::decode_unverified(&file, FileKind::V1_9).unwrap();
    assert!(matches!(
        forged.to_record(&kp),
        Err(AgaveError::BadSignature { .. })
    ));
}

#[test]
fn tower_update_for_the_vote_guard() {
    let kp = keypair(1);
    assert_eq!(AgaveTower::new(kp.node_id()).tower_update().unwrap(), None);
    let tower = modern_tower(kp.node_id());
    let update = tower.tower_update().unwrap().unwrap();
    assert_eq!(Some(update.vote), tower.last_vote_ref());
    assert_eq!(update.root, Some(ROOT));
    assert_eq!(
        AgaveTower::decode(&update.tower, TowerLayout::V1_14_11).unwrap(),
        tower
    );
}
