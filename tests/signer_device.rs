//! `slashguard signer serve`, the real binary in its own process, serving a
//! key held by a Ledger running Tezos Baking, reached over the Speculos
//! emulator's TCP APDU protocol (the transport the real emulator speaks;
//! here the crate's simulated device behind a real port, driven by the
//! test: unplugged, locked, slow). A baker-like HTTP client signs blocks,
//! preattestations and attestations; every signature is checked with
//! ed25519-dalek over blake2b-256 of the bytes, apart from the crate.

mod signer_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use signer_support::ledger::*;
use signer_support::server::*;
use slashguard::usb::ledger::apdu::ins;
use slashguard::usb::ledger::{BipPath, DerivationType};
use slashguard::usb::sim::{LedgerSim, SimApp};

/// Request deadline 8 s, device commands 1 s: a device error comes well
/// before the deadline even on a slow machine.
const LIMITS: &str = "max-body-bytes = 4096
max-connections = 32
request-timeout-ms = 8000
idle-timeout-ms = 8000";

fn device_key(l: &Ledger, extra: &str) -> String {
    format!(
        r#"
[[signer.keys]]
device = "ledger"
speculos = "{}"
pkh = "{}"
timeout-ms = 1000
{extra}
"#,
        l.addr, l.pkh
    )
}

/// The 64 signature bytes of the `edsig` in a sign reply.
fn signature(reply: &HttpReply) -> Vec<u8> {
    edsig(reply.json()["signature"].as_str().unwrap())
}

fn att(level: u32, fill: u8) -> Vec<u8> {
    attestation(0x13, MAINNET, level, 0, fill)
}

fn preatt(level: u32, fill: u8) -> Vec<u8> {
    attestation(0x12, MAINNET, level, 0, fill)
}

/// Sign, expecting a signature, checked.
fn signed(server: &Server, l: &Ledger, data: &[u8]) -> Vec<u8> {
    let r = sign_http(&server.http, &l.pkh, data);
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = signature(&r);
    verify(&l.pk, data, &sig);
    sig
}

/// Sign, expecting a refusal with this status whose message has `words`.
fn withheld(server: &Server, l: &Ledger, data: &[u8], status: u16, words: &str) -> String {
    let r = sign_http(&server.http, &l.pkh, data);
    assert_eq!(r.status, status, "{}", r.body);
    let msg = r.trace_msg();
    assert!(msg.contains(words), "{msg:?} lacks {words:?}");
    msg
}

/// No (kind, level, round) signed twice with different bytes by the
/// device, and no level of a kind below an earlier one.
fn assert_nothing_signed_twice(sim: &LedgerSim) {
    let mut seen: BTreeMap<(u8, u32, u32), Vec<u8>> = BTreeMap::new();
    for m in sim.signed() {
        let (level, round) = match m[0] {
            // The round is the fitness's last 4 bytes (length at 83).
            0x11 => {
                let len = u32::from_be_bytes(m[83..87].try_into().unwrap()) as usize;
                let at = 87 + len - 4;
                (
                    u32::from_be_bytes(m[5..9].try_into().unwrap()),
                    u32::from_be_bytes(m[at..at + 4].try_into().unwrap()),
                )
            }
            _ => (
                u32::from_be_bytes(m[40..44].try_into().unwrap()),
                u32::from_be_bytes(m[44..48].try_into().unwrap()),
            ),
        };
        if let Some(earlier) = seen.insert((m[0], level, round), m.clone()) {
            panic!(
                "the device signed ({:#04x}, {level}, {round}) twice: {earlier:02x?} and {m:02x?}",
                m[0]
            );
        }
    }
}

fn check_config(config: &std::path::Path) -> (std::process::ExitStatus, serde_json::Value) {
    let out = command()
        .arg("--json")
        .arg("--config")
        .arg(config)
        .args(["signer", "check-config"])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status, v)
}

/// Blocks, preattestations and attestations signed on the device through
/// HTTP, each released once the file store holds it: a repeat returns the
/// same signature without asking the device; below the watermark, or
/// other bytes at a signed mark, are refused by the store before the
/// device is asked; the app's documented limits are precise refusals.
#[test]
fn a_ledger_key_signs_blocks_and_attestations_behind_both_watermarks() {
    let l = ledger(100);
    let s = Setup::new();
    let config = s.config_with_limits("", LIMITS, &device_key(&l, ""));

    // check-config opens the device as serve will.
    let (status, v) = check_config(&config);
    assert!(status.success(), "{v}");
    let key = &v["keys"][0];
    assert_eq!(key["pkh"], l.pkh.as_str(), "{v}");
    assert_eq!(key["device"]["reachable"], true, "{v}");
    assert_eq!(key["device"]["version"], "Tezos Baking 2.5.0", "{v}");
    assert_eq!(key["device"]["ready"], true, "authorized: {v}");

    let server = Server::create(&config);
    let started: Vec<_> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "device")
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["pkh"], l.pkh.as_str());

    // The public key the baker checks signatures with.
    let r = http(&server.http, "GET", &format!("/keys/{}", l.pkh), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let edpk = r.json()["public_key"].as_str().unwrap().to_string();
    let raw = bs58::decode(&edpk).with_check(None).into_vec().unwrap();
    assert_eq!(&raw[4..], &l.pk, "GET /keys answers the device's key");

    // One Tenderbake level: block, preattestation, attestation.
    let blk = block(MAINNET, 101, 0);
    let b = signed(&server, &l, &blk);
    let p = signed(&server, &l, &preatt(101, 1));
    let a = signed(&server, &l, &att(101, 1));
    assert_eq!(l.sim.signed().len(), 3);

    // Repeats: the stored signatures, the device not asked (the app itself
    // would refuse any repeat).
    assert_eq!(signed(&server, &l, &blk), b);
    assert_eq!(signed(&server, &l, &preatt(101, 1)), p);
    assert_eq!(signed(&server, &l, &att(101, 1)), a);
    assert_eq!(l.sim.signed().len(), 3, "repeats never reach the device");

    // Below the mark, or other bytes at it: refused, the device not asked.
    let msg = withheld(&server, &l, &att(100, 1), 409, "refused");
    assert!(msg.contains("below") || msg.contains("watermark"), "{msg}");
    withheld(&server, &l, &att(101, 2), 409, "refused");
    withheld(&server, &l, &block(MAINNET, 99, 3), 409, "refused");
    assert_eq!(l.sim.signed().len(), 3);

    // The app's limits: one data packet of at most 235 bytes, levels below
    // 0x40000000. Refused before any watermark moved.
    let mut big = block(MAINNET, 102, 0);
    big.extend_from_slice(&[0x77; 200]);
    assert!(big.len() > 235);
    withheld(&server, &l, &big, 409, "235");
    withheld(&server, &l, &att(0x4000_0000, 1), 409, "1073741824");
    assert_eq!(l.sim.signed().len(), 3);
    // Nothing moved for them: level 102 still signs.
    signed(&server, &l, &block(MAINNET, 102, 0));
    signed(&server, &l, &att(102, 1));

    // The device's own watermark is the second line: raised behind the
    // store's back (another host signed on this device), it refuses what
    // the store would allow, and the store's mark is reported.
    let (mut main, test, chain) = l.sim.hwm();
    main.level = 150;
    main.round = 0;
    main.had_attestation = true;
    l.sim.set_hwm(chain, main, test);
    let msg = withheld(&server, &l, &att(120, 1), 409, "refused");
    assert!(msg.contains("device"), "{msg}");
    assert_eq!(l.sim.signed().len(), 5);
    signed(&server, &l, &att(151, 1));
    assert_nothing_signed_twice(&l.sim);

    let decisions = server.decisions();
    assert!(decisions.iter().any(|d| d["reason"] == "watermark"));
    server.terminate();
}

/// The device unplugged, locked, on the dashboard, slow, or losing power
/// between signing and replying: each a 503 that says which, nothing
/// released, nothing signed twice, and signing resumes once the device is
/// back, without restarting the signer.
#[test]
fn a_ledger_that_goes_away_mid_run_fails_clearly_and_comes_back() {
    let l = ledger(100);
    let s = Setup::new();
    let config = s.config_with_limits("", LIMITS, &device_key(&l, ""));
    let server = Server::create(&config);
    signed(&server, &l, &att(101, 1));

    // Unplugged.
    l.sim.unplug();
    withheld(&server, &l, &att(102, 1), 503, "unplugged");
    // Plugged back: it boots on the PIN screen, then the dashboard.
    l.sim.replug();
    withheld(&server, &l, &att(102, 1), 503, "locked");
    l.sim.unlock();
    withheld(&server, &l, &att(102, 1), 503, "Tezos Baking app");
    l.sim.open_app(SimApp::Baking);
    signed(&server, &l, &att(102, 1));
    assert_eq!(l.sim.signed().len(), 2);

    // Power lost after the device signed, before its reply left it: the
    // signature is lost, never released; the device's mark moved, the
    // store's did not. The retry is refused by the device, not signed
    // again.
    l.sim.unplug_after_next(ins::SIGN_WITH_HASH);
    withheld(&server, &l, &att(103, 1), 503, "unplugged");
    assert_eq!(l.sim.signed().len(), 3, "the device did sign");
    l.sim.replug();
    l.sim.unlock();
    l.sim.open_app(SimApp::Baking);
    let msg = withheld(&server, &l, &att(103, 1), 409, "refused");
    assert!(msg.contains("device"), "{msg}");
    assert_eq!(l.sim.signed().len(), 3, "not signed twice");
    signed(&server, &l, &att(104, 1));

    // A device slower than the command timeout: "did not answer in time";
    // it had not signed (only the path packet arrived), so the retry, once
    // it is idle again, signs.
    l.sim.set_processing_delay(Duration::from_millis(2500));
    withheld(&server, &l, &att(105, 1), 503, "did not answer in time");
    l.sim.set_processing_delay(Duration::ZERO);
    assert!(l.sim.wait_idle(Duration::from_secs(30)));
    signed(&server, &l, &att(105, 1));

    // A late reply: the device signs, its reply comes only after the
    // signer gave up (delivered with the next APDU, to whoever listens
    // then). It is never taken for another command's reply: the next
    // requests resynchronise (a few may fail on the way, each a 503 that
    // says so), and the late signature is never released.
    l.sim.delay_next_reply(ins::SIGN_WITH_HASH, 1);
    withheld(&server, &l, &att(106, 1), 503, "did not answer in time");
    let mut tries = 0;
    loop {
        tries += 1;
        let r = sign_http(&server.http, &l.pkh, &att(107, 1));
        if r.status == 200 {
            verify(&l.pk, &att(107, 1), &signature(&r));
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        let msg = r.trace_msg();
        assert!(
            msg.contains("did not fit the request") || msg.contains("did not answer in time"),
            "{msg}"
        );
        assert!(tries < 6, "still failing after {tries} tries: {msg}");
    }
    // The device signed 106; the store never released it: refused now.
    withheld(&server, &l, &att(106, 1), 409, "refused");
    signed(&server, &l, &att(108, 1));

    assert_nothing_signed_twice(&l.sim);
    // Every signature released is one the device made, once.
    let released: Vec<_> = server
        .decisions()
        .into_iter()
        .filter(|d| d["outcome"] == "signed")
        .map(|d| d["level"].as_u64().unwrap())
        .collect();
    assert_eq!(released, vec![101, 102, 104, 105, 107, 108], "{released:?}");
    server.terminate();
}

/// Concurrent requests for the device key take turns at the device (it
/// never sees an APDU while it works on another); behind a hung device,
/// requests that cannot be answered within the request deadline are
/// refused at once as "device busy" rather than left to wait; a re-plug
/// clears it.
#[test]
fn requests_for_a_ledger_key_take_turns_and_a_hung_device_makes_them_busy() {
    let l = ledger(200);
    let s = Setup::new();
    let config = s.config_with_limits("", LIMITS, &device_key(&l, ""));
    let server = Server::create(&config);
    signed(&server, &l, &att(201, 1));

    // Ten at once, every level above the mark, each device command slow
    // enough (40 ms) that overlapping APDUs would collide.
    l.sim.set_processing_delay(Duration::from_millis(40));
    let dropped = l.sim.dropped_apdus();
    let replies: Vec<(u32, HttpReply)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (202..212)
            .map(|level| {
                let (addr, pkh) = (server.http.clone(), l.pkh.clone());
                scope.spawn(move || (level, sign_http(&addr, &pkh, &att(level, 1))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ok = 0;
    for (level, r) in &replies {
        match r.status {
            200 => {
                verify(&l.pk, &att(*level, 1), &signature(r));
                ok += 1;
            }
            // A lower level that reached the store or the device after a
            // higher one.
            409 => assert!(r.trace_msg().contains("refused"), "{}", r.body),
            other => panic!("level {level}: {other} {}", r.body),
        }
    }
    assert!(ok >= 1, "{replies:?}");
    assert_eq!(
        l.sim.dropped_apdus(),
        dropped,
        "an APDU reached the device while it was busy"
    );
    let levels: Vec<u32> = l
        .sim
        .signed()
        .iter()
        .map(|m| u32::from_be_bytes(m[40..44].try_into().unwrap()))
        .collect();
    assert!(
        levels.windows(2).all(|w| w[0] < w[1]),
        "the device signed in turn, never below itself: {levels:?}"
    );

    // A hung device: each command times out after 1 s, so the estimate of
    // one operation is 1 s and the line's budget (0.9 x 8 s) holds about
    // seven. Twelve requests at once: the late ones are refused as busy.
    l.sim.set_processing_delay(Duration::from_secs(3600));
    let before = l.sim.signed().len();
    withheld(&server, &l, &att(300, 1), 503, "did not answer in time");
    let start = Instant::now();
    let replies: Vec<HttpReply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (301..313)
            .map(|level| {
                let (addr, pkh) = (server.http.clone(), l.pkh.clone());
                scope.spawn(move || sign_http(&addr, &pkh, &att(level, 1)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut busy = 0;
    for r in &replies {
        assert_eq!(r.status, 503, "{}", r.body);
        let msg = r.trace_msg();
        if msg.contains("device busy") {
            busy += 1;
        } else {
            assert!(
                msg.contains("did not answer in time") || msg.contains("deadline exceeded"),
                "{msg}"
            );
        }
    }
    assert!(busy >= 1, "no request was refused as busy: {replies:?}");
    assert_eq!(l.sim.signed().len(), before, "a hung device signs nothing");
    let waited = start.elapsed();

    // The operator re-plugs it: signing resumes.
    l.sim.set_processing_delay(Duration::ZERO);
    l.sim.unplug();
    l.sim.replug();
    l.sim.unlock();
    l.sim.open_app(SimApp::Baking);
    let mut tries = 0;
    loop {
        tries += 1;
        let r = sign_http(&server.http, &l.pkh, &att(320, 1));
        if r.status == 200 {
            verify(&l.pk, &att(320, 1), &signature(&r));
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(tries < 6, "{}", r.body);
    }
    assert_nothing_signed_twice(&l.sim);
    let metrics = http(&server.http, "GET", "/metrics", None).body;
    assert!(
        metrics.contains("result=\"device\""),
        "device failures are counted apart: {metrics}"
    );
    eprintln!("{busy} of 12 refused as busy; the burst was answered within {waited:?}");
    server.terminate();
}

/// A device that answers with another key than the configured pkh, or
/// does not answer, stops the start with a clear error; check-config
/// reports it.
#[test]
fn the_signer_does_not_start_without_its_device_or_with_another_key() {
    let l = ledger(100);
    let s = Setup::new();
    let other = slashguard::keys::PublicKey::Ed25519(
        LedgerSim::new([1; 32]).public_key(DerivationType::Ed25519, &BipPath::tezos_default()),
    )
    .hash()
    .to_string();
    let wrong = format!(
        r#"
[[signer.keys]]
device = "ledger"
speculos = "{}"
pkh = "{other}"
"#,
        l.addr
    );
    let config = s.config_with_limits("", LIMITS, &wrong);
    let out = command()
        .arg("--config")
        .arg(&config)
        .args(["signer", "serve", "--create"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&l.pkh) && err.contains(&other), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
    assert!(!s.path("watermarks").exists(), "the store was not created");

    // Nobody on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let gone = format!("\n[[signer.keys]]\ndevice = \"ledger\"\nspeculos = \"{addr}\"\n");
    let config = s.config_with_limits("", LIMITS, &gone);
    let (status, v) = check_config(&config);
    assert_eq!(status.code(), Some(3), "{v}");
    assert!(v["message"].as_str().unwrap().contains("NOT usable"), "{v}");
    let out = command()
        .arg("--config")
        .arg(&config)
        .args(["signer", "serve", "--create"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Speculos"), "{err}");

    // Settings a device key cannot have.
    for (keys, words) in [
        (
            format!("\n[[signer.keys]]\ndevice = \"ledger\"\nspeculos = \"{addr}\"\nserial = \"0001\"\n"),
            "keep one",
        ),
        (
            format!("\n[[signer.keys]]\ndevice = \"ledger\"\nspeculos = \"{addr}\"\ngeneric-operations = [\"transaction\"]\n"),
            "consensus operations only",
        ),
        (
            "\n[[signer.keys]]\ndevice = \"tezsign\"\n".to_string(),
            "alias",
        ),
        (
            format!("\n[[signer.keys]]\ndevice = \"tezsign\"\nalias = \"consensus\"\npkh = \"{}\"\n", l.pkh),
            "tz4",
        ),
        (
            format!("\n[[signer.keys]]\ndevice = \"ledger\"\nspeculos = \"{addr}\"\ntimeout-ms = 4000\n"),
            "less than half",
        ),
        (
            "\n[[signer.keys]]\nkey = \"baker1\"\nalias = \"consensus\"\n".to_string(),
            "for device keys",
        ),
    ] {
        let config = s.config_with_limits("", LIMITS, &keys);
        let (status, v) = check_config(&config);
        assert_eq!(status.code(), Some(4), "{keys}: {v}");
        assert!(v["message"].as_str().unwrap().contains(words), "{keys}: {v}");
    }
}
