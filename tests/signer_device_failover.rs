//! A baker's key on two Ledgers, one per host, behind two real
//! `slashguard signer serve` processes sharing their watermarks in one real
//! etcd: the seed's "pre-authorized backup device" mistake made on
//! purpose. The backup host's Ledger holds the same key with its own
//! watermark still at 0, as a device set up once and left in a drawer; the
//! primary signs through HTTP and the TCP socket protocol, is killed, and
//! the backup takes over by itself. The shared watermark, not the backup
//! device's, decides: nothing at or below what the primary signed reaches
//! the backup's device, a repeat of the primary's exact bytes gets the
//! primary's signature back, and the backup's device signs only above.
//! Every signature is checked with ed25519-dalek over blake2b-256 of the
//! bytes, apart from the crate.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
mod signer_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_harness::EtcdCluster;
use signer_support::ledger::*;
use signer_support::server::*;

/// The baker's ownership lease.
const LEASE_SECS: u64 = 3;
/// Every wait on a condition: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(120);

/// Host `name`'s configuration: its own Ledger, the shared etcd.
fn config(setup: &Setup, name: &str, etcd: &str, l: &Ledger) -> PathBuf {
    let d = setup.dir.path().display();
    let text = format!(
        r#"instance = "{name}"
[etcd]
endpoints = ["{etcd}"]
prefix = "/device-failover"
timeout-ms = 2000
[signer]
store = "etcd"
[signer.ownership]
name = "device-baker"
lease-ttl-secs = {LEASE_SECS}
[signer.listen]
http = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
unix = ["{d}/signer.sock"]
[signer.limits]
request-timeout-ms = 8000
idle-timeout-ms = 8000
[[signer.keys]]
device = "ledger"
speculos = "{addr}"
pkh = "{pkh}"
timeout-ms = 1000
"#,
        addr = l.addr,
        pkh = l.pkh,
    );
    let path = setup.path("slashguard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sign over HTTP, expecting a signature, checked.
fn signed_http(server: &Server, l: &Ledger, data: &[u8]) -> Vec<u8> {
    let r = sign_http(&server.http, &l.pkh, data);
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = edsig(r.json()["signature"].as_str().unwrap());
    verify(&l.pk, data, &sig);
    sig
}

/// Sign over the TCP socket protocol, expecting a success reply (tag 0:
/// the raw signature), checked.
fn signed_socket(server: &Server, l: &Ledger, data: &[u8]) -> Vec<u8> {
    let mut sock = Sock::tcp(&server.tcp);
    let reply = sock.call(&sign_request(&l.pkh, data, None));
    assert_eq!(reply[0], 0, "a success reply: {reply:02x?}");
    let sig = reply[1..].to_vec();
    assert_eq!(sig.len(), 64, "{reply:02x?}");
    verify(&l.pk, data, &sig);
    sig
}

/// Sign over HTTP, expecting a refusal with this status.
fn withheld(server: &Server, l: &Ledger, data: &[u8], status: u16) -> String {
    let r = sign_http(&server.http, &l.pkh, data);
    assert_eq!(r.status, status, "{}", r.body);
    r.trace_msg()
}

fn att(level: u32, fill: u8) -> Vec<u8> {
    attestation(0x13, MAINNET, level, 0, fill)
}

fn preatt(level: u32, fill: u8) -> Vec<u8> {
    attestation(0x12, MAINNET, level, 0, fill)
}

/// A block at (`level`, 0) with another predecessor than [`block`]'s, as
/// a second baker host would build it.
fn other_block(level: u32) -> Vec<u8> {
    let mut b = block(MAINNET, level, 0);
    b[10..42].fill(0xb2);
    b
}

/// (kind tag, level, round) of a consensus payload.
type Mark = (u8, u32, u32);

/// What was released for each mark: the payload and its signature.
type Released = BTreeMap<Mark, (Vec<u8>, Vec<u8>)>;

/// (kind, level, round) of a consensus payload the Ledger signed.
fn mark(m: &[u8]) -> Mark {
    match m[0] {
        0x11 => {
            // The round is the fitness's last 4 bytes (length at 83).
            let len = u32::from_be_bytes(m[83..87].try_into().unwrap()) as usize;
            let at = 87 + len - 4;
            (
                m[0],
                u32::from_be_bytes(m[5..9].try_into().unwrap()),
                u32::from_be_bytes(m[at..at + 4].try_into().unwrap()),
            )
        }
        _ => (
            m[0],
            u32::from_be_bytes(m[40..44].try_into().unwrap()),
            u32::from_be_bytes(m[44..48].try_into().unwrap()),
        ),
    }
}

/// Wait (bounded) until `server` logged `event`.
fn wait_event(server: &Server, event: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["event"] == event);
        if seen {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never logged {event:?}; log: {:#?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_backup_ledger_left_behind_signs_nothing_the_primary_signed() {
    let etcd = EtcdCluster::single();
    let endpoint = etcd.endpoint(0);
    let primary = ledger(100);
    // The backup device: same key, its watermark never moved.
    let backup = ledger(0);
    assert_eq!(primary.pkh, backup.pkh, "one key on both devices");
    let (setup_a, setup_b) = (Setup::new(), Setup::new());

    let a = Server::start(&config(&setup_a, "host-a", &endpoint, &primary));
    wait_event(&a, "active");
    let b = Server::start(&config(&setup_b, "host-b", &endpoint, &backup));
    let r = withheld(&b, &backup, &att(101, 0xb2), 503);
    assert!(r.contains("standby: not the active signer"), "{r}");

    // The primary signs levels 101..=110 through both protocols.
    let mut released = Released::new();
    for level in 101..=110 {
        for data in [
            block(MAINNET, level, 0),
            preatt(level, 0xa1),
            att(level, 0xa1),
        ] {
            let sig = if level % 2 == 0 {
                signed_socket(&a, &primary, &data)
            } else {
                signed_http(&a, &primary, &data)
            };
            released.insert(mark(&data), (data, sig));
        }
    }
    assert_eq!(primary.sim.signed().len(), 30);
    // A repeat over the socket protocol: the stored signature, the device
    // not asked.
    let last = att(110, 0xa1);
    assert_eq!(signed_socket(&a, &primary, &last), released[&mark(&last)].1);
    assert_eq!(primary.sim.signed().len(), 30);
    assert!(backup.sim.signed().is_empty());

    // The primary host dies; the backup takes over by itself.
    let killed = Instant::now();
    drop(a);
    wait_event(&b, "active");
    assert!(
        killed.elapsed() < Duration::from_secs(4 * LEASE_SECS + 10),
        "took over within the lease bound: {:?}",
        killed.elapsed()
    );

    // Other bytes at what the primary signed, and below it: refused by the
    // shared watermark before the backup's device is asked (its own
    // watermark would let them through).
    for data in [
        att(110, 0xb2),
        preatt(110, 0xb2),
        other_block(110),
        att(105, 0xb2),
        att(1, 0xb2),
    ] {
        let msg = withheld(&b, &backup, &data, 409);
        assert!(msg.contains("refused"), "{msg}");
    }
    assert!(
        backup.sim.signed().is_empty(),
        "nothing at or below the primary's marks reached the backup device"
    );
    // The primary's exact bytes: the primary's signature, from etcd.
    for data in [att(110, 0xa1), preatt(110, 0xa1)] {
        assert_eq!(signed_http(&b, &backup, &data), released[&mark(&data)].1);
    }
    assert!(backup.sim.signed().is_empty());

    // Above: the backup's device signs, through both protocols.
    for level in 111..=112 {
        for data in [
            block(MAINNET, level, 0),
            preatt(level, 0xb2),
            att(level, 0xb2),
        ] {
            let sig = if level % 2 == 0 {
                signed_socket(&b, &backup, &data)
            } else {
                signed_http(&b, &backup, &data)
            };
            assert!(
                released.insert(mark(&data), (data, sig)).is_none(),
                "a new mark"
            );
        }
    }
    assert_eq!(backup.sim.signed().len(), 6);

    // Across both devices: no (kind, level, round) signed with two payloads.
    let mut seen: BTreeMap<(u8, u32, u32), Vec<u8>> = BTreeMap::new();
    for m in primary.sim.signed().into_iter().chain(backup.sim.signed()) {
        if let Some(earlier) = seen.insert(mark(&m), m.clone()) {
            assert_eq!(earlier, m, "signed twice at {:?}", mark(&m));
            panic!("the devices signed {:?} twice", mark(&m));
        }
    }
    b.terminate();
}
