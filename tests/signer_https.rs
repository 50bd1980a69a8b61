//! HTTPS on a real `slashguard signer serve`: a certificate from the
//! configuration, the octez HTTP routes over TLS, a signature verified by
//! OpenSSL, a plain-HTTP client on the HTTPS port refused without harm,
//! and the configuration's TLS checks.

mod signer_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use signer_support::openssl;
use signer_support::server::*;

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it:
/// (CA PEM, certificate file, key file).
fn pki(dir: &Path) -> (String, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "signer test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join("signer.pem"), dir.join("signer-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (ca_pem, c, k)
}

fn tls_config(certificate: &Path, key: &Path) -> String {
    format!(
        "[signer.tls]\ncertificate-file = \"{}\"\nkey-file = \"{}\"\n",
        certificate.display(),
        key.display()
    )
}

fn with_https_listener(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "[signer.listen]\n",
        "[signer.listen]\nhttps = [\"127.0.0.1:0\"]\n",
        1,
    );
    std::fs::write(config, text).unwrap();
}

/// One HTTPS request trusting only `ca_pem`.
fn https(addr: &str, ca_pem: &str, method: &str, target: &str, body: &str) -> HttpReply {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A server closing without close_notify is an error to rustls after
    // the reply was read in full; the reply is what matters.
    let _ = tls.read_to_end(&mut raw);
    parse_http(&raw)
}

fn https_address(server: &Server) -> String {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "listening" && v["transport"] == "https")
        .and_then(|v| v["address"].as_str().map(String::from))
        .expect("an https listener in the log")
}

#[test]
fn the_octez_routes_over_https_with_the_configured_certificate() {
    let s = Setup::new();
    let (ca, cert, key) = pki(s.dir.path());
    let config = s.config("", &format!("{}{ALL_KEYS}", tls_config(&cert, &key)));
    with_https_listener(&config);
    let server = Server::create(&config);
    let a = https_address(&server);

    let r = https(&a, &ca, "GET", "/authorized_keys", "");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    let data = attestation(0x13, MAINNET, 40, 0, 1);
    let r = https(
        &a,
        &ca,
        "POST",
        &format!("/keys/{TZ1}"),
        &format!("\"{}\"", hex(&data)),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let b58 = r.json()["signature"].as_str().unwrap().to_string();
    let raw = bs58::decode(&b58).with_check(None).into_vec().unwrap();
    let pk = https(&a, &ca, "GET", &format!("/keys/{TZ1}"), "").json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let pk = bs58::decode(&pk).with_check(None).into_vec().unwrap();
    assert!(openssl::verifies(0, &pk[4..], &data, &raw[5..]));
    // The watermark is the same one as over plain HTTP.
    assert_eq!(
        sign_http(&server.http, TZ1, &attestation(0x13, MAINNET, 39, 0, 1)).status,
        409
    );

    // Plain HTTP on the HTTPS port: no handshake, nothing served, and the
    // listener goes on.
    let mut plain = TcpStream::connect(&a).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    plain
        .write_all(b"GET /authorized_keys HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // The log line may trail the closed connection: wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"tls_handshake_failed\""))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no tls_handshake_failed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(https(&a, &ca, "GET", "/authorized_keys", "").status, 200);
}

#[test]
fn tls_settings_are_checked() {
    let s = Setup::new();
    let (_, cert, key) = pki(s.dir.path());
    let check = |config: &Path| {
        let out = command()
            .arg("--config")
            .arg(config)
            .args(["signer", "check-config"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // TLS without an https listener, an https listener without TLS.
    let c = s.config("", &format!("{}{ALL_KEYS}", tls_config(&cert, &key)));
    let (code, err) = check(&c);
    assert_eq!(code, Some(4));
    assert!(
        err.contains("no [signer.listen] https listener uses it"),
        "{err}"
    );
    let c = s.config("", ALL_KEYS);
    with_https_listener(&c);
    let (code, err) = check(&c);
    assert_eq!(code, Some(4));
    assert!(err.contains("needs [signer.tls]"), "{err}");
    // A key file that is no key, and a key of another certificate.
    std::fs::create_dir_all(s.path("other")).unwrap();
    let (_, _, other_key) = pki(&s.path("other"));
    for (k, words) in [
        (&cert, "no readable PEM private key"),
        (&other_key, "does not fit"),
    ] {
        let c = s.config("", &format!("{}{ALL_KEYS}", tls_config(&cert, k)));
        with_https_listener(&c);
        let (code, err) = check(&c);
        assert_eq!(code, Some(4), "{err}");
        assert!(err.contains(words), "{words:?} not in {err}");
        assert!(!err.contains("PRIVATE KEY"), "no key material: {err}");
    }
    // The flags give the same settings.
    let c = s.config("", ALL_KEYS);
    let out = command()
        .arg("--config")
        .arg(&c)
        .args(["signer", "check-config", "--listen-https", "127.0.0.1:0"])
        .arg("--tls-certificate-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Clients that start a TLS handshake and stall inside it do not hold the
/// HTTPS listener's slots until the request deadline: under pressure they
/// are reclaimed after the grace, and a real client is served.
#[test]
fn clients_stalling_inside_the_handshake_cannot_lock_the_listener() {
    let s = Setup::new();
    let (ca, cert, key) = pki(s.dir.path());
    // Deadlines far too long to rescue anything during the test.
    let limits = "max-body-bytes = 4096
max-connections = 4
first-request-timeout-ms = 60000
request-timeout-ms = 60000
idle-timeout-ms = 60000";
    let config = s.config_with_limits(
        "",
        limits,
        &format!("{}{ALL_KEYS}", tls_config(&cert, &key)),
    );
    with_https_listener(&config);
    let server = Server::create(&config);
    let a = https_address(&server);
    // The first byte of a TLS record (handshake), then nothing.
    let stalled: Vec<_> = (0..12)
        .map(|_| {
            let mut c = TcpStream::connect(&a).unwrap();
            c.write_all(&[0x16]).unwrap();
            c
        })
        .collect();
    let start = std::time::Instant::now();
    let r = https(&a, &ca, "GET", "/authorized_keys", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    drop(stalled);
}
