//! Strict payloads (issue 11 item 1): every (magic, tag, key scheme,
//! length) combination against a rule written here from formats.md
//! section 1, independently of the parser; companion keys; what a refused
//! payload leaves in the store (nothing).

mod common;

use common::tezos::{z_natural, Block, Consensus};
use common::{TestKey, MAINNET};
use slashguard::memory::MemoryWatermarks;
use slashguard::watermark::{
    ConsensusKind, ConsensusPayload, Curve, KeyRole, Mark, PayloadError, SignerGuard,
};
use slashguard::{Error, GuardedSigner};

const CURVES: [Curve; 4] = [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls];

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The rule, from formats.md: which tags a key of `curve` signs under
/// `magic`, and the exact length of each (None: more than 80, with a DAL
/// bitset).
fn allowed(magic: u8, curve: Curve, tag: u8) -> Option<Option<usize>> {
    let bls = curve == Curve::Bls;
    match (magic, tag, bls) {
        (0x12, 20, false) | (0x13, 21, false) => Some(Some(80)),
        (0x13, 23, false) => Some(None),
        (0x12, 40, true) | (0x13, 41, true) => Some(Some(78)),
        _ => None,
    }
}

/// `len` bytes: magic, chain, branch, tag, then level 5 and round 1 where
/// the tag's layout puts them, a block payload hash, and (past 80 bytes,
/// for tag 23) a well-formed DAL bitset filling the rest.
fn bytes(magic: u8, tag: u8, len: usize) -> Vec<u8> {
    let slot_layout = tag < 40;
    let mut b = Consensus::new(MAINNET, 5, 1, [0xEE; 32]).raw(magic, tag, slot_layout);
    if len > b.len() {
        // A canonical Data_encoding.z of exactly len - b.len() bytes: the
        // number with only bit 6 + 7 * (n - 2) + ... set, i.e. the top
        // group non-zero.
        let n = len - b.len();
        let top_bit = if n == 1 { 0 } else { 6 + 7 * (n - 2) };
        let mut le = vec![0u8; top_bit / 8 + 1];
        le[top_bit / 8] |= 1 << (top_bit % 8);
        let z = z_natural(&le);
        assert_eq!(z.len(), n);
        b.extend_from_slice(&z);
    }
    b.truncate(len);
    b
}

#[test]
fn every_magic_tag_scheme_and_length() {
    let mut accepted = 0;
    for magic in [0x12u8, 0x13] {
        for tag in 0..=255u8 {
            for curve in CURVES {
                for len in 36..=84usize {
                    let b = bytes(magic, tag, len);
                    let got = ConsensusPayload::parse(&b, curve);
                    let kind = ConsensusKind::from_magic(magic).unwrap();
                    let too_short = |needed| PayloadError::TooShort {
                        kind,
                        needed,
                        have: len,
                    };
                    let want = if len < 38 {
                        Err(too_short(38))
                    } else {
                        match allowed(magic, curve, tag) {
                            None => Err(PayloadError::BadTag {
                                offset: 37,
                                tag,
                                magic,
                                curve,
                            }),
                            Some(Some(exact)) if len < exact => Err(too_short(exact)),
                            Some(Some(exact)) if len > exact => Err(PayloadError::WrongLength {
                                kind,
                                tag,
                                expected: exact,
                                have: len,
                            }),
                            Some(None) if len < 80 => Err(too_short(80)),
                            Some(None) if len == 80 => Err(PayloadError::BadDal {
                                offset: 80,
                                value: 0,
                                detail: "missing",
                            }),
                            Some(_) => Ok((kind, Mark { level: 5, round: 1 })),
                        }
                    };
                    match (got, want) {
                        (Ok(p), Ok((kind, mark))) => {
                            assert_eq!(
                                (p.kind, p.mark),
                                (kind, mark),
                                "{magic:#x} {tag} {curve:?} {len}"
                            );
                            assert_eq!(p.tag.map(|t| t.byte()), Some(tag));
                            accepted += 1;
                        }
                        (got, want) => assert_eq!(
                            got.map(|p| (p.kind, p.mark)),
                            want,
                            "{magic:#x} tag {tag} {curve:?} {len} bytes"
                        ),
                    }
                }
            }
        }
    }
    // tz1/tz2/tz3: tag 20 and 21 at 80 bytes, tag 23 at 81..=84 bytes;
    // tz4: tags 40 and 41 at 78 bytes.
    assert_eq!(accepted, 3 * (1 + 1 + 4) + 2);
}

#[test]
fn every_magic_byte() {
    let body = Consensus::new(MAINNET, 5, 1, [0xEE; 32]).attestation(Curve::Ed25519);
    for magic in 0..=255u8 {
        let mut b = body.clone();
        b[0] = magic;
        let got = ConsensusPayload::parse(&b, Curve::Ed25519);
        match magic {
            0x01 | 0x02 => assert_eq!(got, Err(PayloadError::Legacy(magic))),
            0x03 => assert_eq!(got, Err(PayloadError::NotConsensus)),
            // A block header cannot be 80 bytes long.
            0x11 => assert!(matches!(got, Err(PayloadError::TooShort { .. })), "{got:?}"),
            0x12 => assert!(
                matches!(got, Err(PayloadError::BadTag { tag: 21, .. })),
                "{got:?}"
            ),
            0x13 => assert!(got.is_ok(), "{got:?}"),
            m => assert_eq!(got, Err(PayloadError::UnknownMagic(m))),
        }
    }
}

#[test]
fn blocks_with_either_fitness_shape_for_every_scheme() {
    for curve in CURVES {
        for locked in [None, Some(2)] {
            let mut block = Block::new(MAINNET, 4_000_000, 3, [1; 32]);
            block.locked_round = locked;
            block.predecessor_round = 7;
            let b = block.encode();
            let p = ConsensusPayload::parse(&b, curve).unwrap();
            assert_eq!(p.kind, ConsensusKind::Block);
            assert_eq!(
                p.mark,
                Mark {
                    level: 4_000_000,
                    round: 3
                }
            );
            assert_eq!(
                block.fitness().len(),
                if locked.is_some() { 37 } else { 33 }
            );
        }
        // Any other fitness length is refused, naming offset 83.
        for extra in [0usize, 4, 8] {
            let block = Block::new(MAINNET, 10, 0, [1; 32]);
            let mut f = block.fitness();
            f.extend(std::iter::repeat_n(0, extra + 1));
            let got = ConsensusPayload::parse(&block.encode_with_fitness(&f), curve);
            assert!(
                matches!(got, Err(PayloadError::BadFitness { offset: 83, .. })),
                "{got:?}"
            );
        }
    }
}

#[test]
fn dal_bitsets_are_canonical_zarith_naturals() {
    let a = Consensus::new(MAINNET, 9, 0, [2; 32]);
    // Every bitset of up to 16 bits encodes, parses, and re-encodes alike.
    for v in 0u32..=0xFFFF {
        let b = a.attestation_with_dal(&v.to_le_bytes());
        let p = ConsensusPayload::parse(&b, Curve::Ed25519)
            .unwrap_or_else(|e| panic!("bitset {v:#x}: {e}"));
        assert_eq!(p.mark, Mark::level(9));
    }
    // Hand-written: {0..=5} is 0x3f; {6} is 0x80 0x01; {0, 7} is 0x81 0x02.
    assert_eq!(z_natural(&[0x3f]), vec![0x3f]);
    assert_eq!(z_natural(&[0x40]), vec![0x80, 0x01]);
    assert_eq!(z_natural(&[0x81]), vec![0x81, 0x02]);
    assert_eq!(z_natural(&[]), vec![0x00]);
}

#[test]
fn companion_keys_sign_only_tz4_attestations() {
    let c = Consensus::new(MAINNET, 100, 0, [3; 32]);
    let companion = |b: &[u8]| ConsensusPayload::parse_as(b, Curve::Bls, KeyRole::Companion);
    assert!(companion(&c.attestation(Curve::Bls)).is_ok());
    assert_eq!(
        companion(&c.preattestation(Curve::Bls)),
        Err(PayloadError::NotForCompanion {
            offset: 0,
            value: 0x12
        })
    );
    assert_eq!(
        companion(&Block::new(MAINNET, 100, 0, [3; 32]).encode()),
        Err(PayloadError::NotForCompanion {
            offset: 0,
            value: 0x11
        })
    );
    // 0x13 with a tz4 preattestation tag: a bad tag before anything else.
    let mut wrong = c.attestation(Curve::Bls);
    wrong[37] = 40;
    assert!(matches!(
        companion(&wrong),
        Err(PayloadError::BadTag { tag: 40, .. })
    ));
    for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256] {
        assert_eq!(
            ConsensusPayload::parse_as(&c.attestation(curve), curve, KeyRole::Companion),
            Err(PayloadError::CompanionScheme(curve))
        );
    }

    // Declared on the guarded signer; refused for a non-tz4 key.
    assert!(matches!(
        GuardedSigner::new(MemoryWatermarks::new(), TestKey::tz1(1)).with_role(KeyRole::Companion),
        Err(Error::Payload(PayloadError::CompanionScheme(
            Curve::Ed25519
        )))
    ));
    let signer = GuardedSigner::new(MemoryWatermarks::new(), TestKey::tz4(2))
        .with_role(KeyRole::Companion)
        .unwrap();
    assert_eq!(signer.role(), KeyRole::Companion);
    block_on(async {
        signer.sign(&c.attestation(Curve::Bls)).await.unwrap();
        let err = signer
            .sign(&Consensus::new(MAINNET, 101, 0, [3; 32]).preattestation(Curve::Bls))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Payload(PayloadError::NotForCompanion { .. })),
            "{err}"
        );
        // Only the attestation mark exists, keyed by the companion's hash.
        let marks = signer.guard().watermarks().await.unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].0.kind, ConsensusKind::Attestation);
        assert_eq!(marks[0].0.key, signer.key_hash());
    });
}

/// The reproduction of issue 11 item 1: a tz4 key asked to sign
/// slot-bearing bytes (tag 21) at one real (level, round) with different
/// slots. Both were signed before; now both are refused and nothing moves.
#[test]
fn tz4_key_refuses_slot_bearing_attestations_and_moves_nothing() {
    let signer = GuardedSigner::new(MemoryWatermarks::new(), TestKey::tz4(4));
    let mut a = Consensus::new(MAINNET, 500, 0, [9; 32]);
    block_on(async {
        for slot in [1u16, 2] {
            a.slot = slot;
            let err = signer
                .sign(&a.attestation(Curve::Ed25519))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Payload(PayloadError::BadTag {
                        offset: 37,
                        tag: 21,
                        magic: 0x13,
                        curve: Curve::Bls
                    })
                ),
                "{err}"
            );
        }
        for (magic, tag) in [(0x13, 0u8), (0x13, 30), (0x13, 31), (0x13, 20), (0x12, 41)] {
            let b = a.raw(magic, tag, false);
            let err = signer.sign(&b).await.unwrap_err();
            assert!(
                matches!(err, Error::Payload(PayloadError::BadTag { .. })),
                "{tag}: {err}"
            );
        }
        assert!(signer.guard().watermarks().await.unwrap().is_empty());
    });
}
