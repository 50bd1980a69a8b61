//! Generic operations (0x03) through a real `slashguard signer serve`:
//! signed only for a key whose policy lists every content's kind, with
//! that key as source; anything else refused with the content named;
//! signatures checked by OpenSSL; consensus watermarks untouched.

mod signer_support;

use signer_support::openssl;
use signer_support::server::*;

/// `03 ‖ branch ‖` the contents.
fn operation(contents: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0x03];
    v.extend_from_slice(&[0xbb; 32]);
    for c in contents {
        v.extend_from_slice(c);
    }
    v
}

/// Tag, source, fee 1000, counter 5, gas 1527, storage 257.
fn manager(tag: u8, source: &str) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&pkh21(source));
    v.extend_from_slice(&[0xe8, 0x07, 0x05, 0xf7, 0x0b, 0x81, 0x02]);
    v
}

/// 1 tez to tz1 0x22.., no parameters.
fn transaction(source: &str) -> Vec<u8> {
    let mut v = manager(108, source);
    v.extend_from_slice(&[0xc0, 0x84, 0x3d, 0x00, 0x00]);
    v.extend_from_slice(&[0x22; 20]);
    v.push(0x00);
    v
}

/// A tz1 reveal of a 32-byte key, no proof.
fn reveal(source: &str) -> Vec<u8> {
    let mut v = manager(107, source);
    v.push(0x00);
    v.extend_from_slice(&[0x44; 32]);
    v.push(0x00);
    v
}

/// A delegation to tz1 0x55...
fn delegation(source: &str) -> Vec<u8> {
    let mut v = manager(110, source);
    v.extend_from_slice(&[0xff, 0x00]);
    v.extend_from_slice(&[0x55; 20]);
    v
}

const KEYS: &str = r#"
[[signer.keys]]
key = "baker1"
generic-operations = ["transaction", "reveal"]
[[signer.keys]]
key = "baker3"
"#;

/// The tagged public key of `pkh` from the socket protocol.
fn public_key(server: &Server, pkh: &str) -> Vec<u8> {
    let mut req = vec![1];
    req.extend_from_slice(&pkh21(pkh));
    let reply = Sock::tcp(&server.tcp).call(&req);
    assert_eq!(reply[0], 0, "{reply:?}");
    reply[1..].to_vec()
}

#[test]
fn generic_operations_are_signed_only_as_each_key_allows() {
    let s = Setup::new();
    let server = Server::create(&s.config("", KEYS));
    let a = server.http.as_str();
    let pk = public_key(&server, TZ1);

    // Allowed: a transfer, and a reveal + transfer batch; over HTTP and
    // the socket; every signature verified independently.
    for op in [
        operation(&[transaction(TZ1)]),
        operation(&[reveal(TZ1), transaction(TZ1)]),
    ] {
        let r = sign_http(a, TZ1, &op);
        assert_eq!(r.status, 200, "{r:?}");
        let b58 = r.json()["signature"].as_str().unwrap().to_string();
        assert!(b58.starts_with("edsig"), "{b58}");
        let raw = bs58::decode(&b58).with_check(None).into_vec().unwrap();
        assert!(openssl::verifies(pk[0], &pk[1..], &op, &raw[5..]));
        let reply = Sock::unix(&server.unix).call(&sign_request(TZ1, &op, None));
        assert_eq!(reply[0], 0, "{reply:?}");
        assert!(openssl::verifies(pk[0], &pk[1..], &op, &reply[1..]));
    }

    // Refused, each naming what: a kind not listed (second content of a
    // batch), another source, a content the decoder does not read, a key
    // that lists no kinds, trailing bytes.
    let refused = |pkh: &str, op: Vec<u8>, words: &str| {
        let r = sign_http(a, pkh, &op);
        assert_eq!(r.status, 403, "{r:?}");
        let msg = r.trace_msg();
        assert!(msg.contains(words), "{words:?} not in {msg:?}");
        let reply = Sock::tcp(&server.tcp).call(&sign_request(pkh, &op, None));
        assert_eq!(reply[0], 1, "refused on the socket too");
    };
    let transfer_len = transaction(TZ1).len();
    refused(
        TZ1,
        operation(&[transaction(TZ1), delegation(TZ1)]),
        &format!(
            "content 1 at byte {} is a delegation, not in this key's allowed operation kinds",
            33 + transfer_len
        ),
    );
    refused(
        TZ1,
        operation(&[transaction(TZ3)]),
        &format!("has source {TZ3}, not this key"),
    );
    let mut rollup = manager(200, TZ1);
    rollup.extend_from_slice(&[0; 16]);
    refused(
        TZ1,
        operation(&[reveal(TZ1), rollup]),
        "smart_rollup_originate (tag 200) is not an operation this signer decodes",
    );
    refused(
        TZ3,
        operation(&[transaction(TZ3)]),
        "signs no generic operations",
    );
    let mut trailing = operation(&[transaction(TZ1)]);
    trailing.push(0x6c);
    refused(TZ1, trailing, "truncated");

    // No consensus watermark moved: the first attestation of the key, at
    // level 1, is signed.
    let att = attestation(0x13, MAINNET, 1, 0, 1);
    assert_eq!(sign_http(a, TZ1, &att).status, 200);
    let generic: Vec<_> = server
        .decisions()
        .into_iter()
        .filter(|d| d["kind"] == "generic")
        .collect();
    assert_eq!(generic.len(), 4, "{generic:?}");
    assert_eq!(
        generic[2]["operations"],
        serde_json::json!(["reveal", "transaction"])
    );
}
