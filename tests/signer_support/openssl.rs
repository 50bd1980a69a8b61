//! Verify Tezos signatures with the OpenSSL command line, an implementation
//! independent of the RustCrypto and dalek crates that made them.

use std::process::Command;

use blake2::digest::{consts::U32, Digest};

fn blake2b_256(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake2::Blake2b::<U32>::new();
    h.update(bytes);
    h.finalize().into()
}

/// SubjectPublicKeyInfo DER of a tagged Tezos public key (tag 0, 1, 2).
fn spki(tag: u8, key: &[u8]) -> Vec<u8> {
    let head: &[u8] = match tag {
        0 => &[
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ],
        1 => &[
            0x30, 0x36, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a, 0x03, 0x22, 0x00,
        ],
        2 => &[
            0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
        ],
        _ => panic!("no SPKI for tag {tag}"),
    };
    [head, key].concat()
}

fn der_int(x: &[u8]) -> Vec<u8> {
    let mut x = x;
    while x.len() > 1 && x[0] == 0 {
        x = &x[1..];
    }
    let mut v = vec![0x02];
    if x[0] & 0x80 != 0 {
        v.push(x.len() as u8 + 1);
        v.push(0);
    } else {
        v.push(x.len() as u8);
    }
    v.extend_from_slice(x);
    v
}

fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    let body = [der_int(&sig[..32]), der_int(&sig[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// `true` when OpenSSL accepts `signature` as the Tezos signature of
/// `message` by the key `tag ‖ key` (tag 0 ed25519, 1 secp256k1, 2 P-256).
pub fn verifies(tag: u8, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    assert_eq!(
        signature.len(),
        64,
        "Tezos signatures of tz1..tz3 are 64 bytes"
    );
    let dir = tempfile::tempdir().unwrap();
    let digest = blake2b_256(message);
    std::fs::write(dir.path().join("pub.der"), spki(tag, key)).unwrap();
    std::fs::write(dir.path().join("digest"), digest).unwrap();
    let sig = if tag == 0 {
        signature.to_vec()
    } else {
        ecdsa_der(signature)
    };
    std::fs::write(dir.path().join("sig"), sig).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir.path()).args([
        "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", "pub.der", "-in", "digest",
        "-sigfile", "sig",
    ]);
    if tag == 0 {
        // Ed25519 signs the 32-byte digest as its message.
        cmd.arg("-rawin");
    }
    let out = cmd.output().expect(
        "the openssl command is needed for independent signature checks (apt-get install openssl)",
    );
    out.status.success()
}

/// secp256k1's group order divided by two: a low-S signature has S <= this.
pub const SECP256K1_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];
