//! Mutual TLS exactly as the Solana failover procedure configures etcd
//! (`--cert-file --key-file --client-cert-auth --trusted-ca-file`, https
//! URLs), with certificates made by the test.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::path::Path;
use std::time::Duration;

use etcd_harness::{ClusterOptions, EtcdCluster, TestPki};
use etcd_util::*;
use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdTowerStorage, EtcdWatermarks};
use slashguard::tower::{StoreMode, TowerStorage};
use slashguard::watermark::{ConsensusKind, Decision, SignerGuard};
use slashguard::{Error, NodeKeypair};

fn tls_config(
    etcd: &EtcdCluster,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> slashguard::Result<EtcdConfig> {
    // The procedure passes a bare ip:port endpoint; TLS comes from the CA.
    let mut b = EtcdConfig::builder([format!("127.0.0.1:{}", etcd.client_port(0))])
        .ca_file(ca)
        .request_deadline(RELAXED);
    if let Some((c, k)) = cert {
        b = b.client_cert(c, k);
    }
    b.build()
}

fn config_error(r: slashguard::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Config(m)) => {
            println!("config error: {m}");
            m
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_with_the_procedures_certificates_works() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let pki = etcd.pki();
    let config = tls_config(&etcd, &pki.ca, Some((&pki.client_cert, &pki.client_key))).unwrap();
    assert!(config.endpoints()[0].starts_with("https://"));
    let client = EtcdClient::connect(config).await.unwrap();

    let kp = NodeKeypair::generate();
    let id = identity(&client, kp.node_id(), "primary", Duration::from_secs(5));
    let own = id.take_over().await.unwrap();
    let storage = EtcdTowerStorage::open(&id, &own).await.unwrap();
    storage
        .store(&record(&kp, 1, 1, None), StoreMode::Advance)
        .await
        .unwrap();
    assert_eq!(
        storage.load().await.unwrap().unwrap().last_vote_slot(),
        Some(1)
    );
    let guard = EtcdWatermarks::new(client);
    let k = wm_key(1, ConsensusKind::Attestation);
    assert_eq!(
        guard.authorize_one(&request(k, 5, 0, b"a")).await.unwrap(),
        Decision::Advanced
    );
    id.release(own).await.unwrap();
}

#[tokio::test]
async fn refused_clients_get_a_clear_error() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["localhost", "127.0.0.1"]));
    let pki = etcd.pki();

    // No client certificate.
    let m = config_error(EtcdClient::connect(tls_config(&etcd, &pki.ca, None).unwrap()).await);
    assert!(m.contains("presents no certificate"), "{m}");

    // A certificate from another CA: accepted locally with a warning (the
    // server may trust more CAs than ours), refused by the server.
    let config = tls_config(&etcd, &pki.ca, Some((&pki.foreign_cert, &pki.foreign_key))).unwrap();
    let m = config_error(EtcdClient::connect(config).await);
    assert!(
        m.contains("refused") && m.contains("does not verify against the CA file"),
        "{m}"
    );

    // An expired certificate: refused at construction, naming the date.
    let m = config_error(tls_config(
        &etcd,
        &pki.ca,
        Some((&pki.expired_cert, &pki.expired_key)),
    ));
    assert!(m.contains("expired at") && m.contains("expired.pem"), "{m}");

    // One that expires after construction: the server refuses it, and the
    // error says why.
    let (cert, key) = pki.short_lived_client("short-lived", Duration::from_secs(2));
    let config = tls_config(&etcd, &pki.ca, Some((&cert, &key))).unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let m = config_error(EtcdClient::connect(config).await);
    assert!(m.contains("expired at"), "{m}");

    // A server this client does not trust.
    let config = tls_config(
        &etcd,
        &pki.foreign_ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .unwrap();
    let m = config_error(EtcdClient::connect(config).await);
    assert!(m.contains("server's certificate is not accepted"), "{m}");
}

#[tokio::test]
async fn etcd_addressed_by_ip_with_a_named_certificate_needs_the_domain_override() {
    let etcd = EtcdCluster::start(ClusterOptions::mutual_tls(&["etcd.internal"]));
    let pki = etcd.pki();
    let builder = || {
        EtcdConfig::builder([etcd.endpoint(0)])
            .request_deadline(RELAXED)
            .ca_file(&pki.ca)
            .client_cert(&pki.client_cert, &pki.client_key)
    };
    let m = config_error(EtcdClient::connect(builder().build().unwrap()).await);
    assert!(m.contains("TLS domain name"), "{m}");
    let client = EtcdClient::connect(builder().tls_domain("etcd.internal").build().unwrap())
        .await
        .unwrap();
    let guard = EtcdWatermarks::new(client);
    let k = wm_key(2, ConsensusKind::Block);
    guard.authorize_one(&request(k, 1, 0, b"b")).await.unwrap();
}

#[test]
fn certificate_files_are_checked_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&dir.path().join("pki"), &["localhost"]);
    let b = || EtcdConfig::builder(["127.0.0.1:2379"]);
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = dir.path().join("text.pem");
    std::fs::write(&text, "hello").unwrap();

    let m = config_error(b().ca_file(&missing).build());
    assert!(
        m.contains("CA file") && m.contains("missing.pem") && m.contains("cannot read"),
        "{m}"
    );
    let m = config_error(b().ca_file(dir.path()).build());
    assert!(m.contains("cannot read"), "{m}");
    let m = config_error(b().ca_file(&garbage).build());
    assert!(
        m.contains("garbage.pem") && m.contains("not valid PEM"),
        "{m}"
    );
    let m = config_error(b().ca_file(&text).build());
    assert!(m.contains("holds no PEM certificate"), "{m}");
    let m = config_error(
        b().ca_file(&pki.ca)
            .client_cert(&missing, &pki.client_key)
            .build(),
    );
    assert!(
        m.contains("client certificate file") && m.contains("missing.pem"),
        "{m}"
    );
    let m = config_error(
        b().ca_file(&pki.ca)
            .client_cert(&pki.client_cert, &text)
            .build(),
    );
    assert!(
        m.contains("client key file") && m.contains("no PEM private key"),
        "{m}"
    );
    // Swapped certificate and key.
    let m = config_error(
        b().ca_file(&pki.ca)
            .client_cert(&pki.client_key, &pki.client_cert)
            .build(),
    );
    assert!(m.contains("swapped"), "{m}");
    // The key as CA.
    let m = config_error(b().ca_file(&pki.client_key).build());
    assert!(m.contains("CA file"), "{m}");
    // Good files build.
    let config = b()
        .ca_file(&pki.ca)
        .client_cert(&pki.client_cert, &pki.client_key)
        .build()
        .unwrap();
    assert!(config.uses_tls());
    assert!(!format!("{config:?}").contains("PRIVATE KEY"));
}
