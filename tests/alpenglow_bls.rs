//! The BLS vote key and signatures checked against independent
//! implementations: the IETF KeyGen re-done with `hkdf`, the key and
//! signature recomputed and verified with the pure-Rust `bls12_381`
//! (zkcrypto) pairing, and Anza's `solana-bls-signatures` (what Agave
//! derives its Alpenglow key with).

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{pairing, G1Affine, G2Affine, G2Projective, Scalar};
use sha2::{Digest, Sha256};
use slashguard::alpenglow::{derive_voter_key, pop_prefix, Vote, VoteKind, BLS_DERIVATION_MESSAGE};
use slashguard::bls::{SecretKey, POP_DST, SIG_DST};
use slashguard::NodeKeypair;

/// IETF BLS KeyGen (draft 4+, `blst_keygen`) from the spec, with `hkdf`.
fn ietf_keygen(ikm: &[u8]) -> Scalar {
    let mut salt = Sha256::digest(b"BLS-SIG-KEYGEN-SALT-").to_vec();
    loop {
        let mut ikm0 = ikm.to_vec();
        ikm0.push(0);
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&salt), &ikm0);
        let mut okm = [0u8; 48];
        hk.expand(&[0, 48], &mut okm).unwrap();
        // OS2IP(OKM) mod r: big-endian 48 bytes into a little-endian wide
        // buffer.
        let mut wide = [0u8; 64];
        for (i, b) in okm.iter().rev().enumerate() {
            wide[i] = *b;
        }
        let sk = Scalar::from_bytes_wide(&wide);
        if sk != Scalar::zero() {
            return sk;
        }
        salt = Sha256::digest(&salt).to_vec();
    }
}

fn hash(msg: &[u8], dst: &[u8]) -> G2Affine {
    let p = <G2Projective as HashToCurve<ExpandMsgXmd<sha2_09::Sha256>>>::hash_to_curve(msg, dst);
    G2Affine::from(p)
}

fn sample_votes() -> Vec<Vote> {
    vec![
        Vote {
            slot: 459_652_999,
            kind: VoteKind::Notarize([0x5a; 32]),
            shred_version: 50093,
        },
        Vote {
            slot: u64::MAX,
            kind: VoteKind::Finalize,
            shred_version: 0,
        },
        Vote {
            slot: 0,
            kind: VoteKind::Skip,
            shred_version: u16::MAX,
        },
        Vote {
            slot: 1,
            kind: VoteKind::NotarizeFallback([0; 32]),
            shred_version: 1,
        },
        Vote {
            slot: 2,
            kind: VoteKind::SkipFallback,
            shred_version: 2,
        },
        Vote {
            slot: 3,
            kind: VoteKind::Genesis([0xff; 32]),
            shred_version: 3,
        },
    ]
}

#[test]
fn keygen_public_key_and_signatures_match_bls12_381() {
    for seed in [[0u8; 32], [1; 32], [0xfe; 32]] {
        let voter = NodeKeypair::from_seed(seed);
        let key = derive_voter_key(&voter).unwrap();
        // The ed25519 signature over the derivation message is the IKM.
        let mut ikm = Vec::new();
        {
            use ed25519_dalek::Signer as _;
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            ikm.extend_from_slice(&sk.sign(BLS_DERIVATION_MESSAGE).to_bytes());
        }
        let sk = ietf_keygen(&ikm);
        let mut be = sk.to_bytes();
        be.reverse();
        assert_eq!(key.to_be_bytes(), be, "KeyGen scalar");

        let pk = G1Affine::from(G1Affine::generator() * sk);
        assert_eq!(
            key.public_key().to_bytes(),
            pk.to_compressed(),
            "public key"
        );
        assert_eq!(key.public_key().to_uncompressed(), pk.to_uncompressed());

        for vote in sample_votes() {
            let msg = vote.to_bytes();
            let sig = key.sign(&msg);
            let h = hash(&msg, SIG_DST);
            let expected = G2Affine::from(h * sk);
            assert_eq!(sig.to_bytes(), expected.to_compressed(), "{vote}");
            assert_eq!(sig.to_uncompressed(), expected.to_uncompressed(), "{vote}");
            // The pairing equation, with the other library's arithmetic.
            let decoded = G2Affine::from_compressed(&sig.to_bytes()).unwrap();
            assert_eq!(pairing(&pk, &h), pairing(&G1Affine::generator(), &decoded));
        }

        // Proof of possession over "ALPENGLOW" ‖ vote account ‖ public key.
        let account = [0x42; 32];
        let pop = key.proof_of_possession(&pop_prefix(&account));
        let mut msg = pop_prefix(&account);
        msg.extend_from_slice(&pk.to_compressed());
        let expected = G2Affine::from(hash(&msg, POP_DST) * sk);
        assert_eq!(pop.to_bytes(), expected.to_compressed());
        assert!(key
            .public_key()
            .verify_proof_of_possession(&pop_prefix(&account), &pop));
    }
}

#[test]
fn derivation_and_signatures_match_anzas_crate() {
    use solana_bls_signatures::{Pubkey as AnzaPubkey, SecretKey as AnzaSecret};
    for seed in [[3u8; 32], [9; 32]] {
        let voter = NodeKeypair::from_seed(seed);
        let ours = derive_voter_key(&voter).unwrap();
        let ikm = {
            use ed25519_dalek::Signer as _;
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .sign(BLS_DERIVATION_MESSAGE)
                .to_bytes()
        };
        // `derive_from_signer(signer, b"alpenglow")` is `derive` of the
        // signer's signature over "bls-key-derive-alpenglow".
        let theirs = AnzaSecret::derive(&ikm).unwrap();
        let their_pk: AnzaPubkey =
            solana_bls_signatures::pubkey::PubkeyProjective::from_secret(&theirs).into();
        assert_eq!(
            their_pk.0,
            ours.public_key().to_uncompressed(),
            "same public key"
        );
        let theirs_le: solana_bls_signatures::secret_bytes::SecretBytes<32> = (&theirs).into();
        let mut le = [0u8; 32];
        le.copy_from_slice(theirs_le.as_slice());
        let mut be = le;
        be.reverse();
        assert_eq!(ours.to_be_bytes(), be, "same secret scalar");
        assert_eq!(
            SecretKey::from_le_bytes(&le).unwrap().public_key(),
            ours.public_key()
        );
        for vote in sample_votes() {
            let msg = vote.to_bytes();
            let their_sig: solana_bls_signatures::Signature = theirs.sign(&msg).into();
            assert_eq!(
                their_sig.0[..],
                ours.sign(&msg).to_uncompressed()[..],
                "{vote}"
            );
        }
    }
}
