//! `slashguard signer serve` as a separate process: protocol conformance
//! over HTTP, TCP and a Unix socket, signatures checked by OpenSSL, bad
//! input, authentication, policy, and shutdown.

mod signer_support;

use std::io::{Read, Write};
use std::time::Duration;

use signer_support::openssl;
use signer_support::server::*;

/// The key hash of octez's encrypted secp256k1 vector (`TZ2_SK`).
const TZ2: &str = "tz2BshCti5CiYFqXBMt4LrRBpWgGghm2DLXF";

fn b58_body(s: &str, prefix_len: usize) -> Vec<u8> {
    let raw = bs58::decode(s).with_check(None).into_vec().unwrap();
    raw[prefix_len..].to_vec()
}

/// The public key of `pkh` from `GET /keys/<pkh>`, as (tag, bytes).
fn public_key(addr: &str, pkh: &str) -> (u8, Vec<u8>) {
    let r = http(addr, "GET", &format!("/keys/{pkh}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    let pk = r.json()["public_key"].as_str().unwrap().to_string();
    let tag = match &pk[..4] {
        "edpk" => 0,
        "sppk" => 1,
        "p2pk" => 2,
        other => panic!("{other}"),
    };
    (tag, b58_body(&pk, 4))
}

/// The raw signature of a `{"signature": ...}` reply, checked by OpenSSL.
fn verified(addr: &str, pkh: &str, data: &[u8], reply: &HttpReply) -> Vec<u8> {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let b58 = reply.json()["signature"].as_str().unwrap().to_string();
    let (tag, key) = public_key(addr, pkh);
    let (prefix, len) = match tag {
        0 => ("edsig", 5),
        1 => ("spsig1", 5),
        _ => ("p2sig", 4),
    };
    assert!(b58.starts_with(prefix), "{b58}");
    let sig = b58_body(&b58, len);
    assert!(
        openssl::verifies(tag, &key, data, &sig),
        "OpenSSL rejects {b58}"
    );
    sig
}

#[test]
fn check_config_loads_every_key_and_names_each_problem() {
    let s = Setup::new();
    let cfg = s.config("", ALL_KEYS);
    let out = command()
        .arg("--json")
        .arg("--config")
        .arg(&cfg)
        .args(["signer", "check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkhs: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["pkh"].as_str().unwrap())
        .collect();
    assert_eq!(pkhs, [TZ1, TZ2, TZ3]);
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for secret in [TZ1_SK, TZ2_SK, TZ3_SK, PASSWORD] {
        assert!(!all.contains(secret), "a secret was printed");
    }

    let fails = |extra: &str, keys: &str, expect: &str| {
        let cfg = s.config(extra, keys);
        let out = command()
            .arg("--config")
            .arg(&cfg)
            .args(["signer", "check-config"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{expect}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "expected {expect:?} in {err}");
    };
    std::fs::write(s.path("password"), "wrong\n").unwrap();
    fails("", ALL_KEYS, "wrong password");
    std::fs::write(s.path("password"), format!("{PASSWORD}\n")).unwrap();
    // A huge connection limit is refused, not a panic or a truncation.
    let huge = s.config("", ALL_KEYS);
    let text = std::fs::read_to_string(&huge)
        .unwrap()
        .replace("max-connections = 16", "max-connections = 1000000000");
    std::fs::write(&huge, text).unwrap();
    let out = command()
        .arg("--config")
        .arg(&huge)
        .args(["signer", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-connections must be at most"), "{err}");
    fails(
        "",
        "[[signer.keys]]\nkey = \"nobody\"\n",
        "no key named \"nobody\"",
    );
    fails(
        "magic-bytes = [0x01]",
        ALL_KEYS,
        "consensus payloads (0x11, 0x12, 0x13) and generic operations (0x03)",
    );
    fails(
        "magic-bytes = [0x03]",
        ALL_KEYS,
        "no key lists generic-operations",
    );
    fails(
        "magic-bytes = [0x11]",
        "[[signer.keys]]\nkey = \"baker1\"\ngeneric-operations = [\"transaction\"]\n",
        "does not allow 0x03",
    );
    fails(
        "",
        "[[signer.keys]]\nkey = \"baker1\"\ngeneric-operations = [\"transfer\"]\n",
        "unknown generic operation kind \"transfer\"",
    );
    fails(
        "require-authentication = true",
        ALL_KEYS,
        "authorized-keys is empty",
    );
    fails(
        "",
        "[[signer.keys]]\nkey = \"baker1\"\nrole = \"companion\"\n",
        "companion key is a tz4",
    );
    fails(
        "",
        "[[signer.keys]]\nkey = \"baker1\"\nkinds = [\"vote\"]\n",
        "unknown kind",
    );
    std::fs::write(
        s.path("secret_keys"),
        r#"[{"name":"nano","value":"ledger://prefer-ringed-camel/bip25519/0h/1h"}]"#,
    )
    .unwrap();
    fails(
        "",
        "[[signer.keys]]\nkey = \"nano\"\n",
        "not a software key",
    );
    std::fs::write(s.path("secret_keys"), "[{\"name\": ").unwrap();
    fails("", ALL_KEYS, "damaged secret keys file");
    // A restart without --create on a missing file is refused, and names
    // the first-start flag.
    let fresh = Setup::new();
    let out = command()
        .arg("--config")
        .arg(fresh.config("", ALL_KEYS))
        .args(["signer", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--create"));
    let out = command().args(["signer", "check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [signer] section"));
}

#[test]
fn check_config_says_a_lost_watermark_file_must_be_restored_not_recreated() {
    let s = Setup::new();
    let cfg = s.config("", ALL_KEYS);
    let check = || {
        command()
            .arg("--config")
            .arg(&cfg)
            .args(["signer", "check-config"])
            .output()
            .unwrap()
    };
    // Never created: the first-start advice.
    let out = check();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--create"));
    // Created once, then the data file is lost (its lock file remains).
    let server = Server::create(&cfg);
    assert!(server.terminate().success());
    std::fs::remove_file(s.path("watermarks")).unwrap();
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("was lost"), "{err}");
    assert!(err.contains("restore"), "{err}");
    assert!(err.contains("set-level"), "{err}");
    assert!(err.contains("current level + 10"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
}

#[test]
fn the_unix_socket_is_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let server = Server::create(&s.config("", ALL_KEYS));
    let mode = std::fs::metadata(&server.unix)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(server.terminate().success());
}

#[test]
fn http_endpoints_conform_and_every_signature_verifies() {
    let s = Setup::new();
    let server = Server::create(&s.config("", ALL_KEYS));
    let a = server.http.as_str();

    let r = http(a, "GET", "/authorized_keys", None);
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let r = http(a, "GET", &format!("/keys/{TZ1}"), None);
    assert_eq!(
        r.body,
        r#"{"public_key":"edpkuBknW28nW72KG6RoHtYW7p12T6GKc7nAbwYX5m8Wd9sDVC9yav"}"#
    );
    let r = http(a, "GET", "/healthz", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["ready"], true);

    for (i, pkh) in [TZ1, TZ2, TZ3].into_iter().enumerate() {
        let fill = i as u8;
        // A block, a preattestation and an attestation at level 100.
        for data in [
            block(MAINNET, 100, 0),
            attestation(0x12, MAINNET, 100, 0, fill),
            attestation(0x13, MAINNET, 100, 0, fill),
        ] {
            let first = verified(a, pkh, &data, &sign_http(a, pkh, &data));
            // A repeat of the same bytes returns the same signature.
            let again = verified(a, pkh, &data, &sign_http(a, pkh, &data));
            assert_eq!(first, again, "{pkh}: a repeat gets the same signature");
        }
        // Below the watermark: 409 with an octez error trace.
        let low = attestation(0x13, MAINNET, 99, 5, fill);
        let r = sign_http(a, pkh, &low);
        assert_eq!(r.status, 409, "{r:?}");
        assert!(r.trace_msg().contains("refused"), "{}", r.trace_msg());
        // Other bytes at the signed (level, round): 409 too.
        let other = attestation(0x13, MAINNET, 100, 0, 0xee);
        assert_eq!(sign_http(a, pkh, &other).status, 409);
        // Higher: signed. The query parameters octez sends are accepted.
        let next = attestation(0x13, MAINNET, 101, 0, fill);
        let r = http(
            a,
            "POST",
            &format!("/keys/{pkh}?version=3"),
            Some(&format!("\"{}\"", hex(&next))),
        );
        verified(a, pkh, &next, &r);
    }

    // Disabled by default, and named.
    let r = http(a, "GET", "/known_keys", None);
    assert_eq!(r.status, 403);
    let r = http(a, "GET", &format!("/bls_prove_possession/{TZ1}"), None);
    assert_eq!(r.status, 403);
    assert!(r.trace_msg().contains("not enabled"), "{}", r.trace_msg());
    let r = http(a, "GET", "/nope", None);
    assert_eq!(r.status, 404);
    r.trace_msg();
    let r = http(a, "DELETE", &format!("/keys/{TZ1}"), None);
    assert_eq!(r.status, 405);

    // Every decision is logged with key, kind, level and round.
    let d = server.decisions();
    let refused = d
        .iter()
        .find(|v| v["outcome"] == "withheld" && v["key"] == TZ1 && v["level"] == 99)
        .expect("the refusal is logged");
    assert_eq!(refused["kind"], "attestation");
    assert_eq!(refused["round"], 5);
    assert_eq!(refused["status"], 409);
    assert_eq!(refused["reason"], "watermark");
    assert!(d
        .iter()
        .any(|v| v["outcome"] == "signed" && v["key"] == TZ3 && v["kind"] == "block"));
    let log = server.log.lock().unwrap().join("\n");
    for secret in [TZ1_SK, TZ2_SK, TZ3_SK, PASSWORD] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn socket_tags_conform_over_tcp_and_unix() {
    let s = Setup::new();
    let server = Server::create(&s.config("allow-list-known-keys = true", ALL_KEYS));
    let (tag, tz1_key) = public_key(&server.http, TZ1);
    assert_eq!(tag, 0);

    let mut c = Sock::tcp(&server.tcp);
    // Tag 2 Authorized_keys: `00 01 02` -> `00 02 00 00` (no authentication).
    c.send_raw(&[0x00, 0x01, 0x02]);
    assert_eq!(c.read_frame().unwrap(), [0x00, 0x00]);
    // Tag 1 Public_key: `00 ‖ tag ‖ key`.
    let mut req = vec![1];
    req.extend_from_slice(&pkh21(TZ1));
    let r = c.call(&req);
    assert_eq!(r[0], 0);
    assert_eq!(r[1], 0);
    assert_eq!(&r[2..], &tz1_key[..]);
    // Tag 0 Sign: `00 ‖ 64-byte signature`, on the same connection.
    let data = attestation(0x13, MAINNET, 7, 0, 1);
    let mut f = sign_request(TZ1, &data, None);
    let len = (f.len() as u16).to_be_bytes();
    f.splice(0..0, len);
    c.send_raw(&f);
    let mut len = [0u8; 2];
    let r = c.read_frame().unwrap();
    len.copy_from_slice(&(r.len() as u16).to_be_bytes());
    assert_eq!(len, [0x00, 0x41], "reply frame `00 41 00 <signature>`");
    assert_eq!(r[0], 0);
    assert!(openssl::verifies(0, &tz1_key, &data, &r[1..]));
    // The repeat returns the same signature; below the mark: an error reply.
    assert_eq!(c.call(&sign_request(TZ1, &data, None)), r);
    let e = c.call(&sign_request(
        TZ1,
        &attestation(0x13, MAINNET, 6, 0, 1),
        None,
    ));
    assert_eq!(e[0], 1, "error reply");
    let total = u32::from_be_bytes(e[1..5].try_into().unwrap()) as usize;
    assert_eq!(total, e.len() - 5);
    let doc_len = u32::from_be_bytes(e[5..9].try_into().unwrap()) as usize;
    assert_eq!(doc_len, total - 4);
    let text = String::from_utf8_lossy(&e);
    assert!(
        text.contains("kind") && text.contains("temporary") && text.contains("refused"),
        "{text}"
    );
    // Tags 3 and 4 (deterministic nonces): refused with a reason.
    for tag in [3u8, 4] {
        let mut req = vec![tag];
        req.extend_from_slice(&pkh21(TZ1));
        req.extend_from_slice(&[0, 0, 0, 1, 0x42]);
        let e = c.call(&req);
        assert_eq!(e[0], 1);
        assert!(String::from_utf8_lossy(&e).contains("deterministic nonces"));
    }
    // Tag 5: not supported (`00 00`).
    let mut req = vec![5];
    req.extend_from_slice(&pkh21(TZ1));
    assert_eq!(c.call(&req), [0x00, 0x00]);
    // Tag 6 Known_keys (allowed here): `00 ‖ u32 63 ‖ 3 x pkh21`.
    let r = c.call(&[6]);
    assert_eq!(&r[..5], &[0, 0, 0, 0, 63]);
    let mut keys: Vec<Vec<u8>> = r[5..].chunks(21).map(|c| c.to_vec()).collect();
    keys.sort();
    let mut expected = vec![pkh21(TZ1), pkh21(TZ2), pkh21(TZ3)];
    expected.sort();
    assert_eq!(keys, expected);
    // Tag 7 proof of possession: not enabled here, an error.
    let mut req = vec![7, 3];
    req.extend_from_slice(&[1; 20]);
    req.push(0);
    let e = c.call(&req);
    assert_eq!(e[0], 1);
    assert!(String::from_utf8_lossy(&e).contains("not enabled"));
    // An unknown tag, an unknown key: errors, and the connection goes on.
    assert_eq!(c.call(&[8])[0], 1);
    let mut req = vec![1, 0];
    req.extend_from_slice(&[9; 20]);
    let e = c.call(&req);
    assert_eq!(e[0], 1);
    assert!(String::from_utf8_lossy(&e).contains("unknown key"));
    assert_eq!(c.call(&[2]), [0x00, 0x00]);

    // The Unix socket speaks the same protocol; tz2 and tz3 there.
    let mut u = Sock::unix(&server.unix);
    for pkh in [TZ2, TZ3] {
        let (tag, key) = public_key(&server.http, pkh);
        let data = attestation(0x12, MAINNET, 8, 1, 2);
        let r = u.call(&sign_request(pkh, &data, None));
        assert_eq!(r[0], 0, "{}", String::from_utf8_lossy(&r));
        assert_eq!(r.len(), 65);
        assert!(openssl::verifies(tag, &key, &data, &r[1..]), "{pkh}");
    }
    let d = server.decisions();
    assert!(d.iter().any(|v| v["transport"] == "unix"
        && v["key"] == TZ3
        && v["kind"] == "preattestation"
        && v["level"] == 8
        && v["round"] == 1));
    assert!(d
        .iter()
        .any(|v| v["transport"] == "tcp" && v["outcome"] == "withheld" && v["level"] == 6));
}

#[test]
fn bad_input_is_refused_nothing_is_signed_and_the_server_keeps_serving() {
    let s = Setup::new();
    let server = Server::create(&s.config("", ALL_KEYS));
    let a = server.http.as_str();
    let path = format!("/keys/{TZ1}");
    let level = 500;
    let good = attestation(0x13, MAINNET, level, 0, 7);

    // Malformed JSON, odd hex, not hex, empty, wrong version, bad query.
    for (target, body) in [
        (path.clone(), "{\"not\": \"a string\"}".to_string()),
        (path.clone(), format!("\"{}", hex(&good))),
        (path.clone(), format!("\"{}0\"", hex(&good))),
        (path.clone(), format!("\"zz{}\"", hex(&good))),
        (path.clone(), "\"\"".to_string()),
        (
            format!("{path}?version=9"),
            format!("\"{}\"", hex(&attestation(0x13, MAINNET, level, 0, 1))),
        ),
        (
            format!("{path}?authentication=nonsense"),
            format!("\"{}\"", hex(&attestation(0x13, MAINNET, level, 0, 2))),
        ),
        (
            format!("{path}?colour=blue"),
            format!("\"{}\"", hex(&attestation(0x13, MAINNET, level, 0, 3))),
        ),
        // A short attestation: no level to check, so not signed.
        (
            path.clone(),
            format!(
                "\"{}\"",
                hex(&attestation(0x13, MAINNET, level, 0, 4)[..60])
            ),
        ),
    ] {
        let r = http(a, "POST", &target, Some(&body));
        assert_eq!(r.status, 400, "{target} {body}: {r:?}");
        r.trace_msg();
    }
    // Magic bytes outside the allow list (generic operation, legacy): 403.
    for magic in [0x03u8, 0x01, 0x02, 0x05] {
        let mut d = attestation(0x13, MAINNET, level, 0, 5);
        d[0] = magic;
        let r = sign_http(a, TZ1, &d);
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(
            r.trace_msg(),
            format!("magic byte 0x{magic:02X} not allowed")
        );
    }
    // Unknown key: 404; not a key hash: 400.
    let r = sign_http(a, "tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN", &good);
    assert_eq!(r.status, 404);
    assert!(r.trace_msg().contains("unknown key"));
    assert_eq!(sign_http(a, "tz1nothing", &good).status, 400);
    // Oversize body: 413, by length header and by actual bytes.
    let big = format!("\"{}\"", "13".repeat(4096));
    assert_eq!(http(a, "POST", &path, Some(&big)).status, 413);
    {
        let mut st = std::net::TcpStream::connect(a).unwrap();
        st.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        st.write_all(head.as_bytes()).unwrap();
        let chunk = "a".repeat(3000);
        for _ in 0..3 {
            let _ = st.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        let _ = st.write_all(b"0\r\n\r\n");
        let mut raw = Vec::new();
        let _ = st.read_to_end(&mut raw);
        assert_eq!(parse_http(&raw).status, 413);
    }

    // Socket: a data length beyond the frame, a bad key hash tag, a truncated
    // request: error replies; then the connection still serves.
    let mut c = Sock::tcp(&server.tcp);
    let mut req = vec![0];
    req.extend_from_slice(&pkh21(TZ1));
    req.extend_from_slice(&1000u32.to_be_bytes());
    req.extend_from_slice(&good);
    assert_eq!(c.call(&req)[0], 1);
    let mut req = vec![0, 9];
    req.extend_from_slice(&[0; 20]);
    assert_eq!(c.call(&req)[0], 1);
    assert_eq!(c.call(&[0, 0, 1])[0], 1);
    assert_eq!(c.call(&[])[0], 1);
    assert_eq!(c.call(&[2]), [0, 0]);

    // Slow clients: one sends half an HTTP header, one half a frame, and
    // both hold their connection; the server serves others meanwhile and
    // then drops them.
    let mut slow_http = std::net::TcpStream::connect(a).unwrap();
    slow_http.write_all(b"POST /keys/").unwrap();
    let mut slow_sock = std::net::TcpStream::connect(&server.tcp).unwrap();
    slow_sock.write_all(&[0x00]).unwrap();
    assert_eq!(http(a, "GET", "/authorized_keys", None).status, 200);
    for st in [&mut slow_http, &mut slow_sock] {
        st.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = Vec::new();
        // The server closes the connection (with or without a 408 reply).
        let _ = st.read_to_end(&mut buf);
        assert!(
            buf.is_empty() || String::from_utf8_lossy(&buf).contains("408"),
            "{buf:?}"
        );
    }

    // Nothing above touched the watermark: the good request at that very
    // level is signed now.
    verified(a, TZ1, &good, &sign_http(a, TZ1, &good));
    assert_eq!(http(a, "GET", "/healthz", None).status, 200);
    let signed: Vec<_> = server
        .decisions()
        .into_iter()
        .filter(|v| v["outcome"] == "signed")
        .collect();
    assert_eq!(
        signed.len(),
        1,
        "only the good request was signed: {signed:?}"
    );
}

#[test]
fn authentication_and_policy_are_checked_before_the_watermark() {
    use slashguard::keys::SoftwareKey;
    use slashguard::watermark::Curve;
    let s = Setup::new();
    let client = SoftwareKey::generate(Curve::P256).unwrap();
    let stranger = SoftwareKey::generate(Curve::Ed25519).unwrap();
    let extra = format!(
        "require-authentication = true\nauthorized-keys = [\"{}\"]\nmagic-bytes = [0x11, 0x13]",
        client.public_key()
    );
    let keys = r#"
[[signer.keys]]
key = "baker1"
kinds = ["attestation"]
chains = ["NetXdQprcVkpaWU"]
[[signer.keys]]
key = "baker3"
"#;
    let server = Server::create(&s.config(&extra, keys));
    let a = server.http.as_str();
    let auth_of = |k: &SoftwareKey, pkh: &str, data: &[u8]| {
        let mut m = vec![0x04, 0x01];
        m.extend_from_slice(&pkh21(pkh));
        m.extend_from_slice(data);
        k.sign_bytes(&m)
    };
    let b58_sig = |sig: &[u8]| {
        let mut v = vec![0x04, 0x82, 0x2b];
        v.extend_from_slice(sig);
        bs58::encode(v).with_check().into_string()
    };
    let r = http(a, "GET", "/authorized_keys", None);
    assert_eq!(
        r.json()["authorized_keys"][0],
        client.public_key().hash().to_string()
    );

    let data = attestation(0x13, MAINNET, 40, 0, 1);
    let post = |pkh: &str, data: &[u8], sig: Option<&[u8]>| {
        let q = sig
            .map(|s| format!("?authentication={}", b58_sig(s)))
            .unwrap_or_default();
        http(
            a,
            "POST",
            &format!("/keys/{pkh}{q}"),
            Some(&format!("\"{}\"", hex(data))),
        )
    };
    // Missing: 401; a stranger's: 403; the client's over other bytes: 403.
    assert_eq!(post(TZ1, &data, None).status, 401);
    assert_eq!(
        post(TZ1, &data, Some(&auth_of(&stranger, TZ1, &data))).status,
        403
    );
    let other = attestation(0x13, MAINNET, 40, 0, 2);
    assert_eq!(
        post(TZ1, &data, Some(&auth_of(&client, TZ1, &other))).status,
        403
    );
    assert_eq!(
        post(TZ1, &data, Some(&auth_of(&client, TZ3, &data))).status,
        403
    );
    // Policy: baker1 signs attestations on mainnet only; 0x12 is not on -M.
    let blk = block(MAINNET, 40, 0);
    let r = post(TZ1, &blk, Some(&auth_of(&client, TZ1, &blk)));
    assert_eq!(r.status, 403);
    assert!(r.trace_msg().contains("block"), "{}", r.trace_msg());
    let elsewhere = attestation(0x13, [1, 2, 3, 4], 40, 0, 1);
    let r = post(TZ1, &elsewhere, Some(&auth_of(&client, TZ1, &elsewhere)));
    assert_eq!(r.status, 403);
    assert!(r.trace_msg().contains("chain"));
    let pre = attestation(0x12, MAINNET, 40, 0, 1);
    let r = post(TZ3, &pre, Some(&auth_of(&client, TZ3, &pre)));
    assert_eq!(r.trace_msg(), "magic byte 0x12 not allowed");
    // None of that touched a watermark: the authenticated request at the
    // same level is signed.
    verified(
        a,
        TZ1,
        &data,
        &post(TZ1, &data, Some(&auth_of(&client, TZ1, &data))),
    );

    // The socket protocol: the authorized key list, and the raw signature
    // appended to the Sign request.
    let mut c = Sock::tcp(&server.tcp);
    let r = c.call(&[2]);
    assert_eq!(&r[..6], &[0, 1, 0, 0, 0, 21]);
    assert_eq!(r[6], 2, "a tz3 client key");
    let d3 = attestation(0x13, MAINNET, 41, 0, 3);
    let e = c.call(&sign_request(TZ3, &d3, None));
    assert_eq!(e[0], 1);
    let e = c.call(&sign_request(TZ3, &d3, Some(&auth_of(&stranger, TZ3, &d3))));
    assert_eq!(e[0], 1);
    let ok = c.call(&sign_request(TZ3, &d3, Some(&auth_of(&client, TZ3, &d3))));
    assert_eq!(ok[0], 0, "{}", String::from_utf8_lossy(&ok));
    let (tag, key) = public_key(a, TZ3);
    assert!(openssl::verifies(tag, &key, &d3, &ok[1..]));
    let reasons: Vec<String> = server
        .decisions()
        .iter()
        .filter_map(|v| v["reason"].as_str().map(String::from))
        .collect();
    for r in [
        "unauthenticated",
        "bad_authentication",
        "policy",
        "magic_byte",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} not logged: {reasons:?}"
        );
    }
}

#[test]
fn sigterm_stops_the_signer_and_releases_the_store() {
    let s = Setup::new();
    let server = Server::create(&s.config("", ALL_KEYS));
    let data = attestation(0x13, MAINNET, 70, 0, 1);
    verified(
        &server.http,
        TZ1,
        &data,
        &sign_http(&server.http, TZ1, &data),
    );
    let unix = server.unix.clone();
    let log = server.log.clone();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let lines = log.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("\"shutting_down\"")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("\"stopped\"")), "{lines:?}");
    assert!(!unix.exists(), "the socket file is removed");
    // The lock is released and the mark survived.
    let store = slashguard::file::FileWatermarks::open(s.path("watermarks")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let marks = rt
        .block_on(slashguard::SignerGuard::watermarks(&store))
        .unwrap();
    assert!(
        marks
            .iter()
            .any(|(k, w)| k.key.to_string() == TZ1 && w.mark.level == 70),
        "{marks:?}"
    );
    drop(store);
    // A restart refuses what is below the mark: nothing is forgotten.
    let server = Server::start(&s.config("", ALL_KEYS));
    let low = attestation(0x13, MAINNET, 69, 0, 1);
    assert_eq!(sign_http(&server.http, TZ1, &low).status, 409);
}

/// A tz4 (pre)attestation: no slot, level at 38, round at 42, 78 bytes.
fn tz4_attestation(magic: u8, level: u32, round: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 78];
    p[0] = magic;
    p[1..5].copy_from_slice(&MAINNET);
    p[37] = if magic == 0x12 { 0x28 } else { 0x29 };
    p[38..42].copy_from_slice(&level.to_be_bytes());
    p[42..46].copy_from_slice(&round.to_be_bytes());
    p
}

#[test]
fn tz4_consensus_and_companion_keys_over_http_and_the_versioned_socket_request() {
    use signer_support::bls;
    use slashguard::keys::SoftwareKey;
    const TZ4_SK: &str = "BLsk2snGqdSb7qBDhKbc62AxbZXJycDvA5QmeYYhB7Nb3wFuMMbq9x";
    const TZ4: &str = "tz4QZtotXaZibHhGUUELAedaoHr8sPMw72fW";
    const COMPANION_SK: &str = "BLsk1o1S8oAG76r3o3aJr1gbVhNdDnAMsdy1yMfwHLWwUHfAeyEXHV";
    let companion: SoftwareKey = COMPANION_SK.parse().unwrap();
    let companion_pkh = companion.public_key().hash().to_string();
    let s = Setup::new();
    std::fs::write(
        s.path("secret_keys"),
        format!(
            r#"[{{"name":"consensus","value":"unencrypted:{TZ4_SK}"}},
               {{"name":"companion","value":"unencrypted:{COMPANION_SK}"}}]"#
        ),
    )
    .unwrap();
    let keys = "[[signer.keys]]\nkey = \"consensus\"\n[[signer.keys]]\nkey = \"companion\"\nrole = \"companion\"\n";
    let server = Server::create(&s.config("allow-proof-of-possession = true", keys));
    let a = server.http.as_str();
    let pk_of = |pkh: &str| {
        let r = http(a, "GET", &format!("/keys/{pkh}"), None);
        let pk = r.json()["public_key"].as_str().unwrap().to_string();
        assert!(pk.starts_with("BLpk"), "{pk}");
        b58_body(&pk, 4)
    };
    let pk = pk_of(TZ4);
    let cpk = pk_of(&companion_pkh);
    let sig_of = |r: &HttpReply| {
        assert_eq!(r.status, 200, "{r:?}");
        let b = r.json()["signature"].as_str().unwrap().to_string();
        assert!(b.starts_with("BLsig"), "{b}");
        b58_body(&b, 4)
    };

    // HTTP, as an octez 25 baker sends it (version=3).
    let pre = tz4_attestation(0x12, 300, 0, 1);
    let att = tz4_attestation(0x13, 300, 0, 1);
    for data in [&pre, &att] {
        let r = http(
            a,
            "POST",
            &format!("/keys/{TZ4}?version=3"),
            Some(&format!("\"{}\"", hex(data))),
        );
        assert!(
            bls::verifies(&pk, data, &sig_of(&r)),
            "bls12_381 rejects the tz4 signature"
        );
    }
    // The companion co-signs the very same attestation bytes, under its own
    // watermark; it signs nothing else.
    let r = sign_http(a, &companion_pkh, &att);
    assert!(bls::verifies(&cpk, &att, &sig_of(&r)));
    for data in [tz4_attestation(0x12, 301, 0, 1), block(MAINNET, 301, 0)] {
        let r = sign_http(a, &companion_pkh, &data);
        assert_eq!(r.status, 403, "{r:?}");
        assert!(r.trace_msg().contains("companion"), "{}", r.trace_msg());
    }
    // Below the consensus key's mark: 409.
    assert_eq!(
        sign_http(a, TZ4, &tz4_attestation(0x13, 299, 0, 1)).status,
        409
    );

    // The socket protocol's versioned key hash: `00 03 03 <20> <version>`.
    let mut c = Sock::tcp(&server.tcp);
    let data = tz4_attestation(0x13, 302, 1, 2);
    let mut req = vec![0x00, 0x03];
    req.extend_from_slice(&pkh21(TZ4));
    req.push(3);
    req.extend_from_slice(&(data.len() as u32).to_be_bytes());
    req.extend_from_slice(&data);
    let r = c.call(&req);
    assert_eq!(
        r.len(),
        97,
        "`00 61 00 <96-byte signature>`: {}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(r[0], 0);
    assert!(bls::verifies(&pk, &data, &r[1..]));
    // Public_key: `00 03 <48 bytes>`.
    let mut req = vec![1];
    req.extend_from_slice(&pkh21(TZ4));
    let r = c.call(&req);
    assert_eq!(&r[..2], &[0, 3]);
    assert_eq!(&r[2..], &pk[..]);

    // Proofs of possession, allowed here.
    let r = http(a, "GET", &format!("/bls_prove_possession/{TZ4}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    let pop = b58_body(r.json()["bls_prove_possession"].as_str().unwrap(), 4);
    assert!(bls::proves_possession(&pk, &pop));
    let pk_b58 = http(a, "GET", &format!("/keys/{TZ4}"), None).json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http(
        a,
        "GET",
        &format!("/bls_prove_possession/{TZ4}?bls_pk={pk_b58}"),
        None,
    );
    assert_eq!(r.status, 200);
    let other_b58 = http(a, "GET", &format!("/keys/{companion_pkh}"), None).json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http(
        a,
        "GET",
        &format!("/bls_prove_possession/{TZ4}?bls_pk={other_b58}"),
        None,
    );
    assert_eq!(r.status, 400);
    let mut req = vec![7];
    req.extend_from_slice(&pkh21(TZ4));
    req.push(0);
    let r = c.call(&req);
    assert_eq!(r[0], 0);
    assert!(bls::proves_possession(&pk, &r[1..]));
    assert_eq!(r.len(), 97);
    let d = server.decisions();
    assert!(d.iter().any(|v| v["key"] == TZ4
        && v["transport"] == "tcp"
        && v["level"] == 302
        && v["round"] == 1));
}
