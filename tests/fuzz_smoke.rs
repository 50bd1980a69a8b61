//! The cargo-fuzz bodies (`fuzz/bodies/`) run over a few thousand random
//! and mutated inputs, so that the ordinary test suite catches a panic in
//! a parser even where `cargo fuzz` (nightly) is not available.

mod common;

include!("../fuzz/bodies/agave_tower.rs");
include!("../fuzz/bodies/tezos_payload.rs");
include!("../fuzz/bodies/vote_tx.rs");

use slashguard::agave::{
    AgaveTower, EnvelopeFormat, FileKind, LastVote, Lockout, SavedTower, TowerLayout, TowerSync,
    Vote, VoteStateUpdate,
};
use slashguard::NodeKeypair;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Bytes that matter to length prefixes, tags and varints.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff, 0x04];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        // Half the time near the end, where the last vote and its compact
        // encodings live (the vote state's fixed ring fills the middle).
        let at = if rng.below(2) == 0 {
            b.len() - 1 - rng.below(b.len().min(160))
        } else {
            rng.below(b.len())
        };
        match rng.below(8) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => b.truncate(at),
            3 => b.insert(at, rng.next() as u8),
            4 => {
                b.remove(at);
            }
            5 => {
                // An 8-byte little-endian field set to an edge value.
                let v: u64 = [0, 1, u64::MAX, 1 << 32, 65535, u64::MAX / 2][rng.below(6)];
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            6 => {
                // Widen a byte into a two-byte form of the same value (a
                // non-canonical varint or short-vec length when it is one).
                b[at] |= 0x80;
                b.insert(at + 1, 0);
            }
            _ => {
                let len = rng.below(16);
                let extra = rng.bytes(len);
                b.splice(at..at, extra);
            }
        }
    }
    b
}

/// Tower `data` of every last-vote variant, with the envelope it goes in.
fn seeds() -> Vec<(EnvelopeFormat, Vec<u8>)> {
    let kp = NodeKeypair::from_seed([5; 32]);
    let lockouts: Vec<Lockout> = (0..31)
        .map(|i| Lockout {
            slot: 1000 + 3 * i + i * i * 50,
            confirmation_count: 31 - i as u32,
        })
        .collect();
    let mut tower = AgaveTower::new(kp.node_id());
    tower.vote_state.votes = lockouts.clone();
    tower.vote_state.root_slot = Some(999);
    let votes = [
        LastVote::Vote(Vote {
            slots: lockouts.iter().map(|l| l.slot).collect(),
            hash: [1; 32],
            timestamp: Some(7),
        }),
        LastVote::VoteStateUpdate(VoteStateUpdate {
            lockouts: lockouts.clone(),
            root: Some(999),
            hash: [2; 32],
            timestamp: None,
        }),
        LastVote::CompactVoteStateUpdate(VoteStateUpdate {
            lockouts: lockouts.clone(),
            root: None,
            hash: [3; 32],
            timestamp: Some(-1),
        }),
        LastVote::TowerSync(TowerSync {
            lockouts,
            root: Some(999),
            hash: [4; 32],
            timestamp: Some(1_750_000_000),
            block_id: [5; 32],
        }),
    ];
    let mut out = Vec::new();
    for vote in votes {
        let plain = matches!(vote, LastVote::Vote(_));
        tower.last_vote = vote;
        let formats: &[EnvelopeFormat] = if plain {
            &[
                EnvelopeFormat::Current,
                EnvelopeFormat::V1_7_14,
                EnvelopeFormat::Legacy,
            ]
        } else {
            &[EnvelopeFormat::Current]
        };
        for &format in formats {
            let saved = SavedTower::sign_as(format, tower.clone(), &kp).unwrap();
            out.push((format, saved.data().to_vec()));
        }
    }
    out
}

/// `data` in the envelope of `format`, with a length that matches it.
fn envelope(format: EnvelopeFormat, signature: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = match format {
        EnvelopeFormat::Current => 1u32.to_le_bytes().to_vec(),
        EnvelopeFormat::V1_7_14 => 0u32.to_le_bytes().to_vec(),
        _ => Vec::new(),
    };
    out.extend_from_slice(signature);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// `data` alone, or in its envelope (so that a mutated tower still reaches
/// the tower decoder; `decode_unverified` does not check the signature).
fn wrap(rng: &mut Rng, format: EnvelopeFormat, data: Vec<u8>) -> Vec<u8> {
    if rng.below(2) == 0 {
        return data;
    }
    envelope(format, &rng.bytes(64), &data)
}

#[test]
fn agave_tower_body_survives_random_and_mutated_inputs() {
    let mut rng = Rng(0x5eed_0000_a9a7_0001);
    let seeds = seeds();
    let mut decoded = 0;
    for (format, data) in &seeds {
        agave_tower(data);
        let wrapped = wrap(&mut rng, *format, data.clone());
        agave_tower(&wrapped);
    }
    for i in 0..3000 {
        let input = if i % 10 == 0 {
            let len = rng.below(200);
            rng.bytes(len)
        } else {
            let (format, data) = &seeds[rng.below(seeds.len())];
            let mutated = mutate(&mut rng, data);
            wrap(&mut rng, *format, mutated)
        };
        agave_tower(&input);
        let layouts = [TowerLayout::V1_7_14, TowerLayout::V1_14_11];
        let kinds = [FileKind::V1_9, FileKind::Legacy];
        if layouts
            .iter()
            .any(|&l| AgaveTower::decode(&input, l).is_ok())
            || kinds
                .iter()
                .any(|&k| SavedTower::decode_unverified(&input, k).is_ok())
        {
            decoded += 1;
        }
    }
    // The mutations keep some inputs valid, so the round-trip assertions in
    // the body were exercised, not only the error paths.
    assert!(decoded > 50, "only {decoded} mutated inputs decoded");
}

/// Real encodings of every accepted layout (tests/common/tezos.rs).
fn tezos_seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    use common::tezos::{Block, Consensus};
    use slashguard::watermark::Curve;
    let chain = slashguard::watermark::ChainId([0x7a, 0x06, 0xa7, 0x70]);
    let mut c = Consensus::new(chain, 1000, 2, rng.bytes(32).try_into().unwrap());
    c.branch = rng.bytes(32).try_into().unwrap();
    c.slot = 3;
    let mut locked = Block::new(chain, 5000, 1, [4; 32]);
    locked.locked_round = Some(0);
    locked.predecessor_round = 2;
    vec![
        c.attestation(Curve::Ed25519),
        c.preattestation(Curve::Ed25519),
        c.attestation_with_dal(&[0x81, 0x02, 0x40]),
        c.attestation(Curve::Bls),
        c.preattestation(Curve::Bls),
        Block::new(chain, 5000, 1, [3; 32]).encode(),
        locked.encode(),
    ]
}

#[test]
fn tezos_payload_body_survives_random_and_mutated_inputs() {
    let mut rng = Rng(0x5eed_0000_7e20_0001);
    let seeds = tezos_seeds(&mut rng);
    for seed in &seeds {
        assert!(
            tezos_payload(seed) > 0,
            "a real encoding is accepted: {seed:02x?}"
        );
    }
    let mut accepted = 0;
    for i in 0..6000 {
        let input = if i % 10 == 0 {
            let len = rng.below(160);
            rng.bytes(len)
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        accepted += usize::from(tezos_payload(&input) > 0);
    }
    // Mutations that keep the layout (a level, a hash byte) are accepted
    // and round-trip; the rest is refused without a panic.
    assert!(accepted > 300, "only {accepted} mutated inputs accepted");
}

/// Vote messages of every voting instruction, identity and separate
/// voter, legacy and v0 (with an unused lookup table).
fn vote_tx_seeds() -> Vec<Vec<u8>> {
    use slashguard::tower::vote_tx::{CastVote, VoteKind};
    use slashguard::NodeId;
    let lockouts: Vec<Lockout> = (0..31)
        .map(|i| Lockout {
            slot: 1000 + i * i,
            confirmation_count: 31 - i as u32,
        })
        .collect();
    let update = VoteStateUpdate {
        lockouts: lockouts.clone(),
        root: Some(999),
        hash: [2; 32],
        timestamp: Some(1_750_000_000),
    };
    let mut out = Vec::new();
    for tag in [2, 6, 8, 9, 12, 13, 14, 15] {
        let kind = VoteKind::from_tag(tag).unwrap();
        let vote = match tag {
            2 | 6 => LastVote::Vote(Vote {
                slots: lockouts.iter().map(|l| l.slot).collect(),
                hash: [1; 32],
                timestamp: None,
            }),
            8 | 9 => LastVote::VoteStateUpdate(update.clone()),
            12 | 13 => LastVote::CompactVoteStateUpdate(update.clone()),
            _ => LastVote::TowerSync(TowerSync {
                lockouts: lockouts.clone(),
                root: None,
                hash: [4; 32],
                timestamp: Some(-5),
                block_id: [5; 32],
            }),
        };
        for authority in [NodeId([1; 32]), NodeId([2; 32])] {
            let cast = CastVote {
                kind,
                vote_account: NodeId([9; 32]),
                authority,
                vote: vote.clone(),
                switch_proof: kind.is_switch().then_some([3; 32]),
            };
            let legacy = cast.to_legacy_message(NodeId([1; 32]), [7; 32]).unwrap();
            let mut v0 = vec![0x80];
            v0.extend_from_slice(&legacy);
            v0.push(1);
            v0.extend_from_slice(&[0x44; 32]);
            v0.extend_from_slice(&[1, 0, 1, 1]);
            out.push(legacy);
            out.push(v0);
        }
    }
    out
}

#[test]
fn vote_tx_body_survives_random_and_mutated_inputs() {
    use slashguard::tower::vote_tx::VoteMessage;
    let mut rng = Rng(0x5eed_0000_707e_0001);
    let seeds = vote_tx_seeds();
    for seed in &seeds {
        assert!(VoteMessage::decode(seed).is_ok());
        vote_tx(seed);
    }
    let mut decoded = 0;
    for i in 0..4000 {
        let input = if i % 10 == 0 {
            let len = rng.below(300);
            rng.bytes(len)
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        vote_tx(&input);
        decoded += usize::from(VoteMessage::decode(&input).is_ok());
    }
    assert!(decoded > 50, "only {decoded} mutated inputs decoded");
}

/// Not a test: writes the seeds above as a starting corpus for cargo-fuzz
/// (`fuzz/corpus/<target>/`, ignored by git). Run with
/// `cargo test --test fuzz_smoke -- --ignored write_fuzz_corpus`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut rng = Rng(1);
    let agave = seeds()
        .into_iter()
        .flat_map(|(format, data)| {
            let file = envelope(format, &[0; 64], &data);
            [data, file]
        })
        .collect::<Vec<_>>();
    for (target, inputs) in [
        ("agave_tower", agave),
        ("tezos_payload", tezos_seeds(&mut rng)),
        ("vote_tx", vote_tx_seeds()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }
}
