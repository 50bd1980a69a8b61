//! Software keys: public vectors for tz1, tz2 and tz3, octez's encrypted
//! key vectors, the `secret_keys` file, typed errors, and every signature
//! checked by OpenSSL.

mod signer_support;

use std::path::PathBuf;

use signer_support::{bls, openssl};
use slashguard::keys::{self, KeyError, PublicKey, SecretKeysFile, SoftwareKey};
use slashguard::watermark::Curve;
use zeroize::Zeroizing;

/// (secret, public, hash): octez sandbox accounts (bootstrap1, alice,
/// bootstrap2) and the tz2/tz3 keys of Signatory's integration tests.
const VECTORS: [(&str, &str, &str); 5] = [
    (
        "edsk3gUfUPyBSfrS9CCgmCiQsTCHGkviBDusMxDJstFtojtc1zcpsh",
        "edpkuBknW28nW72KG6RoHtYW7p12T6GKc7nAbwYX5m8Wd9sDVC9yav",
        "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx",
    ),
    (
        "edsk3QoqBuvdamxouPhin7swCvkQNgq4jP5KZPbwWNnwdZpSpJiEbq",
        "edpkvGfYw3LyB1UcCahKQk4rF2tvbMUk8GFiTuMjL75uGXrpvKXhjn",
        "tz1VSUr8wwNhLAzempoch5d6hLRiTh8Cjcjb",
    ),
    (
        "spsk1XYsTqUsd7LaLs9a8qpmCvLVJeLEZEXkeAZS5dwcKgUZhv3cYw",
        "sppk7cvVVMRRtYTdriTB6KQqpXZt9TUwSTcpMWq4FwpvG2eVZ56UuHP",
        "tz2QPsZoZse4eeahhg5DdfnBDB4VbU1PwgxN",
    ),
    (
        "p2sk2rUMnnnFPQCB7DBozkCZrFhiZ87ddrpAHbRcww7dwU2WHYUbci",
        // The listing gives another key's p2pk beside this secret; this is
        // the one OpenSSL derives from it, and its hash is the listed tz3.
        "p2pk65pxFqFj1N66zRRQtdbEJWHMH5hRv4WsRkaGWQJtZ5bv8nVx6Dg",
        "tz3ZbCsUveF3Q6WUNkThT1wyJyhPunanaAXK",
    ),
    (
        "edsk39qAm1fiMjgmPkw1EgQYkMzkJezLNewd7PLNHTkr6w9XA2zdfo",
        "edpktzNbDAUjUk697W7gYg2CRuBQjyPxbEg8dLccYYwKSKvkPvjtV9",
        "tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN",
    ),
];

/// octez `src/lib_signer_backends/test/test_encrypted.ml`: each encrypted
/// key and its plain form, password `ahThie5H`.
const ENCRYPTED: [(&str, &str); 9] = [
    (
        "edesk1oGXxunJ5FTGpQ6o1xdop8VGKdT36Fj7LwWF9HLjzEqaCC4V6tdRVN1jaeJTfCHS8bYf7U2YhMK2yW6jSUy",
        "edsk3kMNLNdzLPbbABASDLARft8JRZ3Wpwibn8SMAb4KmuWSMJmAFd",
    ),
    (
        "edesk1s4xEifbUdUkghHHimbNUuyQ4eidDVJdc8JtPRUon758hBqZNZsQxadUDFRSRiUdLoFqBG35HAiLKafyczw",
        "edsk3Kqr8VHRx9kmR8Pj5qRGcmvQH34cForiMaMz1Ahhq5DkZp7FxJ",
    ),
    (
        "edesk1zY5jEs4QXrF9tXxFq1mfW9PkatdRxCKQ2Q598y5LLz65nQj4eWxefYFp8YLerya1haRdGe5NWckHDb5ApM",
        "edsk2mBu4w9sMGhryvvXK53dXgpcNdZWi8pJQ1QL2rAgRPrE5y12az",
    ),
    (
        "spesk2CXQHDbzrcNatRzmg83Dto6kX6BWwpP2zGs4Zks9LDsXzaX6mAYRj5ZrrdgyZQap4DS9YRRLNSpaVC2TSsk",
        "spsk24attf9uuQ7PUKFHxTm6E3TMqB6SPkFiMbXPBur7JNrvupW2xg",
    ),
    (
        "spesk1upiFp23osWSUTgHcx8DCVpTrMr9xtdqVQkQDWj5sFG7vqcWLDaNv9AKKcF27Nb266YfuAGF2hEbcyAxHmK",
        "spsk2H32XfWL7MkW58r76q6Yu5tJg77YGgVyjwq7EvLUHhn4JmAtEG",
    ),
    (
        "spesk1w7d68hzTWJusk5Xn5oz8EgDXbotDW9BXb5ksFjr8Jd94Kxnu5yKAhgRszojhMUoJ1EEt5BtPpGpkgCjELq",
        "spsk3KQ56REAUGc6Gn87xCRnWyPwR2Un667vegQVuU16ZcgNyLCooh",
    ),
    (
        "p2esk2JMFpR9yaSpgsaKQYLqFnv16t4gowJ4cgjj7D7iMfoaJz2vZuH7Tdi11MrX6FC2yhfs2nvy5VRxAvzH1STE",
        "p2sk2YQcwF5h7qgRztocEMrfizUwZaM41f4v7zWneiig2Y5AxajqYC",
    ),
    (
        "p2esk1nfobVL73mY5Y18W8Ltb3Vm6Nf5Th7trN3yA3ucyyP4AH93XfyRatkh9AxxaDtnju1EtArykjroEQHDT97k",
        "p2sk2XiSoQC9tvejVBDJyvkbHUq2kvcQHdJJ2wM8rii228DkjKV2b5",
    ),
    (
        "p2esk2Ge1jrVak7NhxksimzaQjRCTLx5vxUZ4Akgq3spGQLx6N41h6aKXeEYDgxN5eztnPwD6QiCHCfVAKXLPNm8",
        "p2sk3ZsfsEaxDNn74orv91Ruu35fomzF373aT9ForA4fDo54c47o6H",
    ),
];

fn attestation(level: u32) -> Vec<u8> {
    let mut p = vec![0u8; 80];
    p[0] = 0x13;
    p[1..5].copy_from_slice(&[0x7a, 0x06, 0xa7, 0x70]);
    p[37] = 0x15;
    p[40..44].copy_from_slice(&level.to_be_bytes());
    p
}

#[test]
fn public_vectors_derive_the_published_keys_and_hashes() {
    for (sk, pk, pkh) in VECTORS {
        let key: SoftwareKey = sk.parse().unwrap();
        assert_eq!(key.public_key().to_string(), pk, "{sk}");
        assert_eq!(key.public_key().hash().to_string(), pkh, "{sk}");
        assert_eq!(key.to_b58().as_str(), sk, "the secret key round-trips");
        let parsed: PublicKey = pk.parse().unwrap();
        assert_eq!(parsed, key.public_key());
        // With the octez URI scheme, too.
        let key2: SoftwareKey = format!("unencrypted:{sk}").parse().unwrap();
        assert_eq!(key2.public_key(), key.public_key());
    }
}

#[test]
fn every_scheme_signs_deterministically_and_openssl_verifies() {
    for (sk, _, _) in VECTORS {
        let key: SoftwareKey = sk.parse().unwrap();
        let pk = key.public_key();
        for level in [1u32, 77, 4_000_000] {
            let msg = attestation(level);
            let sig = key.sign_bytes(&msg);
            assert_eq!(sig, key.sign_bytes(&msg), "{sk}: deterministic");
            assert!(pk.verify(&msg, &sig));
            assert!(
                openssl::verifies(pk.curve().tag(), pk.as_bytes(), &msg, &sig),
                "OpenSSL rejects the signature of {sk}"
            );
            let mut other = msg.clone();
            other[79] ^= 1;
            assert!(!pk.verify(&other, &sig));
            assert!(!openssl::verifies(
                pk.curve().tag(),
                pk.as_bytes(),
                &other,
                &sig
            ));
            if pk.curve() == Curve::Secp256k1 {
                assert!(sig[32..] <= openssl::SECP256K1_HALF_ORDER[..], "low S");
            }
            let b58 = keys::signature_to_b58(pk.curve(), &sig).unwrap();
            let prefix = match pk.curve() {
                Curve::Ed25519 => "edsig",
                Curve::Secp256k1 => "spsig1",
                _ => "p2sig",
            };
            assert!(b58.starts_with(prefix), "{b58}");
            assert_eq!(keys::signature_from_b58(&b58).unwrap(), sig);
        }
    }
}

#[test]
fn generated_keys_of_every_scheme_verify_with_openssl() {
    for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256] {
        let key = SoftwareKey::generate(curve).unwrap();
        let msg = attestation(5);
        let sig = key.sign_bytes(&msg);
        let pk = key.public_key();
        assert_eq!(pk.curve(), curve);
        assert!(openssl::verifies(curve.tag(), pk.as_bytes(), &msg, &sig));
        let back: SoftwareKey = key.to_b58().parse().unwrap();
        assert_eq!(back.public_key(), pk);
    }
}

#[test]
fn a_high_s_secp256k1_signature_is_rejected() {
    let key: SoftwareKey = VECTORS[2].0.parse().unwrap();
    let msg = attestation(9);
    let sig = key.sign_bytes(&msg);
    // Flip S to n - S: still a valid ECDSA signature, but high.
    use k256::elliptic_curve::PrimeField;
    let s = k256::Scalar::from_repr(k256::FieldBytes::clone_from_slice(&sig[32..])).unwrap();
    let high = [&sig[..32], &(-s).to_bytes()[..]].concat();
    assert!(openssl::verifies(
        1,
        key.public_key().as_bytes(),
        &msg,
        &high
    ));
    assert!(
        !key.public_key().verify(&msg, &high),
        "octez rejects high S"
    );
}

#[test]
fn octez_encrypted_vectors_decrypt() {
    for (enc, plain) in ENCRYPTED {
        let key = keys::decrypt(&format!("encrypted:{enc}"), b"ahThie5H")
            .unwrap_or_else(|e| panic!("{enc}: {e}"));
        assert_eq!(key.to_b58().as_str(), plain);
    }
}

#[test]
fn encryption_round_trips_and_refuses_a_wrong_password() {
    for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256] {
        let key = SoftwareKey::generate(curve).unwrap();
        let enc = keys::encrypt(&key, b"correct horse");
        let back = keys::decrypt(&enc, b"correct horse").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let e = keys::decrypt(&enc, b"wrong").unwrap_err();
        assert!(matches!(e, KeyError::WrongPassword), "{e}");
    }
}

#[test]
fn damaged_and_foreign_values_get_typed_errors() {
    // One character changed: the base58 checksum no longer matches.
    let mut damaged = ENCRYPTED[0].0.to_string();
    damaged.replace_range(20..21, if &damaged[20..21] == "a" { "b" } else { "a" });
    let e = keys::decrypt(&damaged, b"ahThie5H").unwrap_err();
    assert!(matches!(e, KeyError::Base58 { .. }), "{e}");
    // A chain id is not a key.
    let e = "NetXdQprcVkpaWU".parse::<SoftwareKey>().unwrap_err();
    assert!(matches!(e, KeyError::UnknownPrefix { .. }), "{e}");
    assert!(e.to_string().contains("Net"), "{e}");
    // A tz5 key hash where a public key is expected.
    let tz5 = bs58::encode([&[0x06, 0xa1, 0xa9][..], &[3; 20]].concat())
        .with_check()
        .into_string();
    assert!(tz5.starts_with("tz5"));
    let e = tz5.parse::<PublicKey>().unwrap_err();
    assert!(
        e.to_string().contains("tz5") && e.to_string().contains("ML-DSA"),
        "{e}"
    );
    // A zero secp256k1 scalar is not a key.
    let zero = bs58::encode([&[0x11, 0xa2, 0xe0, 0xc9][..], &[0; 32]].concat())
        .with_check()
        .into_string();
    let e = zero.parse::<SoftwareKey>().unwrap_err();
    assert!(matches!(e, KeyError::InvalidKey { .. }), "{e}");
    // No error message ever repeats the secret.
    let e = keys::decrypt(ENCRYPTED[0].0, b"nope").unwrap_err();
    assert!(!e.to_string().contains("nope"));
}

#[test]
fn the_secret_keys_file_loads_plain_and_encrypted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret_keys");
    let text = format!(
        r#"[ {{ "name": "plain", "value": "unencrypted:{}" }},
            {{ "name": "sealed", "value": "encrypted:{}" }},
            {{ "name": "ledger", "value": "ledger://prefer-ringed-camel/ed25519/0h/0h" }},
            {{ "name": "remote", "value": "remote:tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx" }} ]"#,
        VECTORS[0].0, ENCRYPTED[3].0
    );
    std::fs::write(&path, text).unwrap();
    let file = SecretKeysFile::read(&path).unwrap();
    assert_eq!(
        file.aliases().collect::<Vec<_>>(),
        ["plain", "sealed", "ledger", "remote"]
    );
    let never =
        || -> Result<Zeroizing<Vec<u8>>, KeyError> { panic!("no password for a plain key") };
    let plain = file.load("plain", never).unwrap();
    assert_eq!(plain.public_key().hash().to_string(), VECTORS[0].2);
    let pw = || Ok(Zeroizing::new(b"ahThie5H".to_vec()));
    let sealed = file.load("sealed", pw).unwrap();
    assert_eq!(sealed.to_b58().as_str(), ENCRYPTED[3].1);
    let e = file
        .load("sealed", || Ok(Zeroizing::new(b"bad".to_vec())))
        .unwrap_err();
    assert!(matches!(e.root(), KeyError::WrongPassword), "{e}");
    assert!(e.to_string().contains("sealed"), "{e}");
    let e = file
        .load("sealed", || Err(KeyError::NoPassword("none set".into())))
        .unwrap_err();
    assert!(matches!(e.root(), KeyError::NoPassword(_)), "{e}");
    for alias in ["ledger", "remote"] {
        let e = file.load(alias, pw).unwrap_err();
        assert!(matches!(e.root(), KeyError::UnsupportedUri { .. }), "{e}");
    }
    let e = file.load("missing", pw).unwrap_err();
    assert!(matches!(e, KeyError::NoSuchAlias { .. }), "{e}");
}

#[test]
fn a_damaged_secret_keys_file_is_refused() {
    for text in [
        "",
        "[{\"name\": \"a\"",
        "{\"name\":1}",
        "[{\"name\":\"a\",\"value\":\"x\"},{\"name\":\"a\",\"value\":\"y\"}]",
    ] {
        let e = SecretKeysFile::parse(text, PathBuf::from("secret_keys")).unwrap_err();
        assert!(matches!(e, KeyError::Damaged { .. }), "{text:?}: {e}");
    }
    let e = SecretKeysFile::read("/nonexistent/secret_keys").unwrap_err();
    assert!(matches!(e, KeyError::Io { .. }), "{e}");
}

/// remote-signer.md section 5: a public tz4 vector.
const TZ4: (&str, &str, &str) = (
    "BLsk2snGqdSb7qBDhKbc62AxbZXJycDvA5QmeYYhB7Nb3wFuMMbq9x",
    "BLpk1pn59Bwwi9K5VjubG4jphCVhdqWfji8GkV8eBXJCEYNMqE6s5LHv5W13zWtMey6Qipg5yCUD",
    "tz4QZtotXaZibHhGUUELAedaoHr8sPMw72fW",
);

/// octez's encrypted BLS vectors; their test cycles through its password
/// list, so each has its own (found by trying that list).
const BLS_ENCRYPTED: [(&str, &str, &str); 3] = [
    (
        "BLesk1ExnCaFxVcGFvKFQrPs2AADo2KpukB6bhA8SLASRzZ58uqvSNUNyzdNdya5NPgE1BAFwcN3wtyFv76r1GJ9",
        "BLsk1o1S8oAG76r3o3aJr1gbVhNdDnAMsdy1yMfwHLWwUHfAeyEXHV",
        "ahThie5H",
    ),
    (
        "BLesk1c92TTyYAbkt5Aa2g2puGZHy1M9hQVX7um7PYpxfsjbaaiYsqR2ahArH53WGSvbvzUBizgPipMyfmh8bCs5",
        "BLsk1ootrVQmMBgcnXDKdyBR2M5tXwZh2TRVcinBJwMhCYVDRm3K1N",
        "aVah7eid",
    ),
    (
        "BLesk1yLinYLYYxq947JSbwt4s94xZb6azZz8AD8myiU67mQpKA2bLxYwq8QhYTrsCdXTtLSLyYnVL5EQAuubYjJ",
        "BLsk1rgztT2EBdQ2vtyXkTzgwmEjabvZri3c7tLHQtDmgH695mcWUt",
        "Hihohh1n",
    ),
];

/// A tz4 attestation: no slot, level at 38, 78 bytes.
fn tz4_attestation(level: u32) -> Vec<u8> {
    let mut p = vec![0u8; 78];
    p[0] = 0x13;
    p[1..5].copy_from_slice(&[0x7a, 0x06, 0xa7, 0x70]);
    p[37] = 0x29;
    p[38..42].copy_from_slice(&level.to_be_bytes());
    p
}

#[test]
fn tz4_keys_derive_the_published_vector_and_verify_independently() {
    let (sk, pk, pkh) = TZ4;
    let key: SoftwareKey = sk.parse().unwrap();
    assert_eq!(key.curve(), Curve::Bls);
    assert_eq!(key.public_key().to_string(), pk);
    assert_eq!(key.public_key().hash().to_string(), pkh);
    assert_eq!(key.to_b58().as_str(), sk);
    assert_eq!(pk.parse::<PublicKey>().unwrap(), key.public_key());
    let msg = tz4_attestation(12);
    let sig = key.sign_bytes(&msg);
    assert_eq!(sig.len(), 96);
    assert_eq!(sig, key.sign_bytes(&msg), "deterministic");
    assert!(key.public_key().verify(&msg, &sig));
    assert!(
        bls::verifies(key.public_key().as_bytes(), &msg, &sig),
        "bls12_381 rejects it"
    );
    assert!(!bls::verifies(
        key.public_key().as_bytes(),
        &tz4_attestation(13),
        &sig
    ));
    let b58 = keys::signature_to_b58(Curve::Bls, &sig).unwrap();
    assert!(b58.starts_with("BLsig"), "{b58}");
    assert_eq!(keys::signature_from_b58(&b58).unwrap(), sig);
    let pop = key.proof_of_possession().unwrap();
    assert!(key.public_key().verify_proof_of_possession(&pop));
    assert!(bls::proves_possession(key.public_key().as_bytes(), &pop));
    assert!(
        !key.public_key().verify(key.public_key().as_bytes(), &pop),
        "POP and SIG tags differ"
    );
    // Generated keys too.
    let g = SoftwareKey::generate(Curve::Bls).unwrap();
    let s = g.sign_bytes(&msg);
    assert!(bls::verifies(g.public_key().as_bytes(), &msg, &s));
    assert_eq!(
        g.to_b58().parse::<SoftwareKey>().unwrap().public_key(),
        g.public_key()
    );
    let enc = keys::encrypt(&g, b"pw");
    assert_eq!(
        keys::decrypt(&enc, b"pw").unwrap().public_key(),
        g.public_key()
    );
    assert!(enc.starts_with("BLesk"), "{enc}");
}

#[test]
fn octez_encrypted_bls_vectors_decrypt() {
    for (enc, plain, pw) in BLS_ENCRYPTED {
        let key = keys::decrypt(&format!("encrypted:{enc}"), pw.as_bytes())
            .unwrap_or_else(|e| panic!("{enc}: {e}"));
        assert_eq!(key.to_b58().as_str(), plain);
    }
}

#[tokio::test]
async fn software_keys_sign_behind_a_guarded_signer() {
    use slashguard::memory::MemoryWatermarks;
    use slashguard::GuardedSigner;
    for (sk, _, _) in VECTORS {
        let key: SoftwareKey = sk.parse().unwrap();
        let pk = key.public_key();
        let signer = GuardedSigner::new(MemoryWatermarks::new(), key);
        let msg = attestation(100);
        let first = signer.sign(&msg).await.unwrap();
        assert!(openssl::verifies(
            pk.curve().tag(),
            pk.as_bytes(),
            &msg,
            &first.signature
        ));
        // A repeat returns the same bytes (deterministic nonces).
        assert_eq!(signer.sign(&msg).await.unwrap().signature, first.signature);
        let mut lower = attestation(99);
        lower[79] = 1;
        assert!(signer.sign(&lower).await.unwrap_err().is_refusal());
    }
}
