//! Byte-exact vectors, written by hand from the protocol descriptions in
//! formats.md sections 2 and 3: every Ledger APDU the client sends, a
//! single-frame and a multi-frame HID exchange, and TezSign frames (good
//! ones and bad parity, wrong magic, truncated payload, oversized length),
//! protobuf payloads and the readiness probe.

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message as _;
use slashguard::usb::ledger::{
    parse_all_hwm, AppKind, BakingApp, BipPath, DerivationType, DeviceMark, HidApdu, LedgerTimeouts,
};
use slashguard::usb::tezsign::proto::{
    ErrorReply, OkReply, Request, RequestPayload, Response, ResponsePayload, SetLevelRequest,
    StatusRequest,
};
use slashguard::usb::tezsign::{parse_readiness, Frame, FrameError, FrameStream, FrameType};
use slashguard::usb::transport::{ApduReply, ApduTransport, HidReports};
use slashguard::usb::{DeviceError, ProtocolError};
use slashguard::watermark::ChainId;

/// Replays scripted replies and records what was sent.
#[derive(Default)]
struct Script {
    sent: Vec<Vec<u8>>,
    replies: VecDeque<Vec<u8>>,
}

impl ApduTransport for &mut Script {
    fn exchange(&mut self, apdu: &[u8], _t: Duration) -> Result<ApduReply, DeviceError> {
        self.sent.push(apdu.to_vec());
        ApduReply::from_raw(&self.replies.pop_front().expect("a scripted reply"))
    }
}

#[derive(Default)]
struct ScriptHid {
    written: Vec<Vec<u8>>,
    to_read: VecDeque<Vec<u8>>,
}

impl HidReports for &mut ScriptHid {
    fn write_report(&mut self, r: &[u8; 64], _t: Duration) -> Result<(), DeviceError> {
        self.written.push(r.to_vec());
        Ok(())
    }
    fn read_report(&mut self, t: Duration) -> Result<Vec<u8>, DeviceError> {
        self.to_read.pop_front().ok_or(DeviceError::Timeout {
            during: "script".into(),
            after: t,
        })
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn report(hexstr: &str) -> Vec<u8> {
    let mut r = hex(hexstr);
    assert!(r.len() <= 64);
    r.resize(64, 0);
    r
}

const PATH: &str = "04 8000002c 800006c1 80000000 80000000";

fn app(s: &mut Script) -> BakingApp<&mut Script> {
    BakingApp::new(s, LedgerTimeouts::default())
}

#[test]
fn every_baking_app_apdu() {
    let path = BipPath::tezos_default();
    let ed = DerivationType::Ed25519;
    let mut s = Script::default();
    let pk_reply = format!("21 02 {} 9000", "ab".repeat(32));
    for r in [
        "01 02 05 00 9000".to_string(),  // version
        pk_reply.clone(),                // get public key
        pk_reply.clone(),                // authorize
        format!("00 {PATH} 9000"),       // ... read back
        format!("{PATH} 9000"),          // query auth key
        format!("00 {PATH} 9000"),       // ... with curve
        "00001392 00000002 9000".into(), // main hwm
        "00001392 00000002 00000000 00000000 7a06a770 9000".into(),
        "00001392 00000000 7a06a770 9000".into(), // old 12-byte reply
        "9000".into(),                            // reset
        "000003e8 00000000 000003e8 00000000 7a06a770 9000".into(), // ... read back
        pk_reply.clone(),                         // setup
        "00001392 00000000 00001392 00000000 7a06a770 9000".into(), // ... read back
        format!("00 {PATH} 9000"),                // ... and the key
        "9000".into(),                            // deauthorize
        "00 00 9000".into(),                      // ... read back
        "9000".into(),                            // sign: path
        format!("{} 9000", "cd".repeat(64)),      // sign: message
        "9000".into(),                            // sign with hash: path
        format!("{} {} 9000", "00".repeat(32), "ef".repeat(64)),
    ] {
        s.replies.push_back(hex(&r));
    }
    let mut a = app(&mut s);
    let v = a.version().unwrap();
    assert_eq!(
        (v.kind, v.major, v.minor, v.patch),
        (AppKind::Baking, 2, 5, 0)
    );
    let pk = a.get_public_key(&path, ed).unwrap();
    assert_eq!(pk.tezos_bytes().unwrap(), vec![0xab; 32]);
    a.authorize_baking(&path, ed).unwrap();
    assert_eq!(a.query_auth_key().unwrap(), Some(path.clone()));
    assert_eq!(
        a.query_auth_key_with_curve().unwrap(),
        Some((ed, path.clone()))
    );
    assert_eq!(
        a.query_main_hwm().unwrap(),
        DeviceMark {
            level: 5010,
            round: Some(2)
        }
    );
    let all = a.query_all_hwm().unwrap();
    assert_eq!(all.main.round, Some(2));
    assert_eq!(all.main_chain, ChainId([0x7a, 0x06, 0xa7, 0x70]));
    let old = a.query_all_hwm().unwrap();
    assert_eq!(
        old.main,
        DeviceMark {
            level: 5010,
            round: None
        }
    );
    assert_eq!(old.test.level, 0);
    a.reset(1000).unwrap();
    a.setup(ChainId([0x7a, 0x06, 0xa7, 0x70]), 5010, 5010, &path, ed)
        .unwrap();
    a.deauthorize().unwrap();
    // A 3-byte message is enough to show the packets; the app would
    // refuse it, the scripted replies do not.
    assert_eq!(a.sign(&path, ed, &[0x13, 1, 2]).unwrap(), vec![0xcd; 64]);
    // The hash in the reply must be the message's: a script with zeros is
    // a stale reply and is refused.
    assert!(matches!(
        a.sign_with_hash(&path, DerivationType::Secp256k1, &[0x11, 1]),
        Err(DeviceError::Protocol(ProtocolError::BadReply { .. }))
    ));
    let expect = [
        "80 00 00 00 00".to_string(),
        format!("80 02 00 00 11 {PATH}"),
        format!("80 01 00 00 11 {PATH}"),
        "80 0d 00 00 00".into(),
        "80 07 00 00 00".into(),
        "80 0d 00 00 00".into(),
        "80 08 00 00 00".into(),
        "80 0b 00 00 00".into(),
        "80 0b 00 00 00".into(),
        "80 06 00 00 04 000003e8".into(),
        "80 0b 00 00 00".into(),
        format!("80 0a 00 00 1d 7a06a770 00001392 00001392 {PATH}"),
        "80 0b 00 00 00".into(),
        "80 0d 00 00 00".into(),
        "80 0c 00 00 00".into(),
        "80 0d 00 00 00".into(),
        format!("80 04 00 00 11 {PATH}"),
        "80 04 81 00 03 13 01 02".into(),
        format!("80 0f 00 01 11 {PATH}"),
        "80 0f 81 01 02 11 01".into(),
    ];
    assert_eq!(s.sent.len(), expect.len());
    for (i, (sent, want)) in s.sent.iter().zip(expect.iter()).enumerate() {
        assert_eq!(*sent, hex(want), "APDU #{i}");
    }
}

#[test]
fn sign_takes_one_data_packet_of_at_most_235_bytes() {
    let mut s = Script::default();
    for r in ["9000", &format!("{} 9000", "cd".repeat(64))] {
        s.replies.push_back(hex(r));
    }
    let msg: Vec<u8> = (0..235u32).map(|i| i as u8).collect();
    app(&mut s)
        .sign(&BipPath::tezos_default(), DerivationType::Ed25519, &msg)
        .unwrap();
    assert_eq!(s.sent.len(), 2);
    assert_eq!(s.sent[1][..5], hex("80 04 81 00 eb"));
    assert_eq!(s.sent[1][5..], msg[..]);
    // 236 bytes: refused before anything is sent (the app answers 0x917E).
    let mut s = Script::default();
    let e = app(&mut s)
        .sign(
            &BipPath::tezos_default(),
            DerivationType::Ed25519,
            &[0x11; 236],
        )
        .unwrap_err();
    assert_eq!(
        e,
        DeviceError::Limit(slashguard::SignerLimit::PayloadTooLong {
            signer: "the Ledger Tezos Baking app",
            len: 236,
            max: 235
        })
    );
    assert!(s.sent.is_empty());
}

#[test]
fn a_reply_that_does_not_fit_its_command_forces_a_resync() {
    let path = BipPath::tezos_default();
    let ed = DerivationType::Ed25519;
    let mut s = Script::default();
    for r in [
        // A stale 96-byte reply answers the sign path packet.
        format!("{} 9000", "ab".repeat(96)),
        // Resync: the path packet's own late 9000, then VERSION's reply.
        "9000".into(),
        "01 02 05 01 9000".into(),
        // DEAUTHORIZE answered with data: a protocol error.
        "00 9000".into(),
        // Resync, then a late 9000 taken for DEAUTHORIZE's: the read-back
        // shows the key still authorized.
        "01 02 05 01 9000".into(),
        "9000".into(),
        format!("00 {PATH} 9000"),
        // Resync, then a signature of the wrong length.
        "01 02 05 01 9000".into(),
        "9000".into(),
        format!("{} 9000", "cd".repeat(63)),
    ] {
        s.replies.push_back(hex(&r));
    }
    let mut a = app(&mut s);
    let e = a.sign(&path, ed, &[0x13, 1, 2]).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Protocol(ProtocolError::BadReply {
                what: "sign (path)",
                ..
            })
        ),
        "{e:?}"
    );
    assert!(a.needs_resync());
    let e = a.deauthorize().unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Protocol(ProtocolError::BadReply {
                what: "deauthorize",
                ..
            })
        ),
        "{e:?}"
    );
    let e = a.deauthorize().unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Protocol(ProtocolError::NotApplied {
                command: "deauthorize",
                ..
            })
        ),
        "{e:?}"
    );
    let e = a.sign(&path, ed, &[0x13, 1, 2]).unwrap_err();
    assert!(matches!(e, DeviceError::Protocol(_)), "{e:?}");
    assert!(a.needs_resync());
    let expect = [
        format!("80 04 00 00 11 {PATH}"),
        "80 00 00 00 00".into(),
        "80 00 00 00 00".into(),
        "80 0c 00 00 00".into(),
        "80 00 00 00 00".into(),
        "80 0c 00 00 00".into(),
        "80 0d 00 00 00".into(),
        "80 00 00 00 00".into(),
        format!("80 04 00 00 11 {PATH}"),
        "80 04 81 00 03 13 01 02".into(),
    ];
    assert_eq!(s.sent.len(), expect.len(), "{:02x?}", s.sent);
    for (i, (sent, want)) in s.sent.iter().zip(expect.iter()).enumerate() {
        assert_eq!(*sent, hex(want), "APDU #{i}");
    }
}

/// While the link is being resynchronised, the firmware's own answers to
/// VERSION (PIN screen, dashboard) and another app's VERSION are reported
/// as what they are, not as a protocol error; the link stays marked for
/// resynchronisation until VERSION answers for the Tezos Baking app.
#[test]
fn a_resync_reports_a_locked_device_and_the_wrong_app() {
    let path = BipPath::tezos_default();
    let ed = DerivationType::Ed25519;
    let mut s = Script::default();
    for r in [
        // A stale signature answers the path packet: out of step.
        format!("{} 9000", "ab".repeat(64)),
        // Resync: PIN screen.
        "5515".into(),
        // Resync: dashboard.
        "6e01".into(),
        // Resync: the Tezos Wallet app, four times.
        "00 02 01 00 9000".into(),
        "00 02 01 00 9000".into(),
        "00 02 01 00 9000".into(),
        "00 02 01 00 9000".into(),
        // Resync: the Baking app, then the query itself.
        "01 02 05 01 9000".into(),
        format!("{} 9000", "00".repeat(20)),
    ] {
        s.replies.push_back(hex(&r));
    }
    let mut a = app(&mut s);
    assert!(matches!(
        a.sign(&path, ed, &[0x13, 1, 2]).unwrap_err(),
        DeviceError::Protocol(_)
    ));
    assert!(a.needs_resync());
    let e = a.query_all_hwm().unwrap_err();
    assert!(matches!(e, DeviceError::Locked { .. }), "{e:?}");
    assert!(a.needs_resync());
    let e = a.query_all_hwm().unwrap_err();
    assert!(matches!(e, DeviceError::WrongApp { .. }), "{e:?}");
    assert!(a.needs_resync());
    let e = a.query_all_hwm().unwrap_err();
    assert!(matches!(e, DeviceError::WrongApp { .. }), "{e:?}");
    assert!(e.to_string().contains("kind 0"), "{e}");
    assert!(a.needs_resync());
    assert_eq!(a.query_all_hwm().unwrap().main.level, 0);
    assert!(!a.needs_resync());
    assert!(s.replies.is_empty());
}

#[test]
fn query_all_hwm_reply_lengths() {
    assert!(parse_all_hwm(&[0; 20]).is_ok());
    assert!(parse_all_hwm(&[0; 12]).is_ok());
    for bad in [0, 8, 16, 19, 21] {
        assert!(matches!(
            parse_all_hwm(&vec![0; bad]),
            Err(DeviceError::Protocol(ProtocolError::BadReply { .. }))
        ));
    }
}

#[test]
fn single_frame_hid_exchange() {
    // QUERY_ALL_HWM on channel 0x0101: one report each way.
    let mut hid = ScriptHid::default();
    hid.to_read.push_back(report(
        "0101 05 0000 0016 00001392 00000003 00000010 00000000 7a06a770 9000",
    ));
    let all = BakingApp::new(HidApdu::new(&mut hid), LedgerTimeouts::default())
        .query_all_hwm()
        .unwrap();
    assert_eq!((all.main.level, all.main.round), (5010, Some(3)));
    assert_eq!(all.test.level, 16);
    assert_eq!(
        hid.written,
        vec![report("0101 05 0000 0005 80 0b 00 00 00")]
    );
}

#[test]
fn multi_frame_hid_exchange_both_ways() {
    // SIGN_WITH_HASH of a 100-byte message: the APDU (105 bytes) takes two
    // reports (57 + 48 data bytes), the reply (32 + 64 + 2 = 98 bytes) two
    // (57 + 41).
    let msg: Vec<u8> = (0..100u8).collect();
    let hash = slashguard::watermark::PayloadHash::of(&msg).0;
    let mut hid = ScriptHid::default();
    hid.to_read.push_back(report("0101 05 0000 0002 9000"));
    let mut reply = hash.to_vec();
    reply.extend([0x5a; 64]);
    reply.extend([0x90, 0x00]);
    let mut r0 = hex("0101 05 0000 0062");
    r0.extend(&reply[..57]);
    let mut r1 = hex("0101 05 0001");
    r1.extend(&reply[57..]);
    r1.resize(64, 0);
    hid.to_read.push_back(r0);
    hid.to_read.push_back(r1);
    let (h, sig) = BakingApp::new(HidApdu::new(&mut hid), LedgerTimeouts::default())
        .sign_with_hash(&BipPath::tezos_default(), DerivationType::Ed25519, &msg)
        .unwrap();
    assert_eq!(h.0, hash);
    assert_eq!(sig, vec![0x5a; 64]);

    assert_eq!(hid.written.len(), 3);
    assert_eq!(
        hid.written[0],
        report(&format!("0101 05 0000 0016 80 0f 00 00 11 {PATH}"))
    );
    let mut w1 = hex("0101 05 0000 0069 80 0f 81 00 64");
    w1.extend(&msg[..52]);
    assert_eq!(hid.written[1], w1);
    let mut w2 = hex("0101 05 0001");
    w2.extend(&msg[52..]);
    w2.resize(64, 0);
    assert_eq!(hid.written[2], w2);
}

#[test]
fn tezsign_frames() {
    let id: [u8; 16] = core::array::from_fn(|i| i as u8);
    // Request{status: {}} is field 3, length 0: 1a 00. XOR of 00..0f is 0,
    // so the parity is 56 ^ 01 ^ 02 = 55.
    let req = Frame::new(FrameType::Request, id, hex("1a 00"));
    let wire = hex("56 01 000102030405060708090a0b0c0d0e0f 02000000 55 1a00");
    assert_eq!(req.encode().unwrap(), wire);
    assert_eq!(Frame::decode(&wire).unwrap(), req);
    assert_eq!(
        Request {
            payload: Some(RequestPayload::Status(StatusRequest {}))
        }
        .encode_to_vec(),
        hex("1a 00")
    );
    for (kind, parity, ty) in [
        (FrameType::Accept, "55", "03"),
        (FrameType::Response, "54", "02"),
    ] {
        let f = Frame::new(kind, id, vec![]);
        assert_eq!(
            f.encode().unwrap(),
            hex(&format!(
                "56 {ty} 000102030405060708090a0b0c0d0e0f 00000000 {parity}"
            ))
        );
    }
    assert_eq!(
        Frame::new(FrameType::Retry, [0; 16], vec![])
            .encode()
            .unwrap(),
        hex("56 04 00000000000000000000000000000000 00000000 52")
    );
    assert_eq!(
        Frame::new(FrameType::KeepAlive, [0; 16], vec![])
            .encode()
            .unwrap(),
        hex("56 05 00000000000000000000000000000000 00000000 53")
    );

    // Bad parity.
    let mut bad = wire.clone();
    bad[22] = 0x54;
    assert_eq!(
        Frame::decode(&bad),
        Err(FrameError::BadParity {
            found: 0x54,
            computed: 0x55
        })
    );
    // Wrong magic (checked before parity).
    let mut bad = wire.clone();
    bad[0] = 0x57;
    assert_eq!(Frame::decode(&bad), Err(FrameError::BadMagic(0x57)));
    // Truncated payload: size 2, one byte present.
    assert_eq!(
        Frame::decode(&wire[..24]),
        Err(FrameError::Truncated {
            needed: 25,
            have: 24
        })
    );
    // Truncated header.
    assert_eq!(
        Frame::decode(&wire[..10]),
        Err(FrameError::Truncated {
            needed: 23,
            have: 10
        })
    );
    // Oversized length: 2 MiB (00 00 20 00 little-endian), parity fixed up.
    let over = hex("56 01 000102030405060708090a0b0c0d0e0f 00002000 77");
    assert_eq!(
        Frame::decode(&over),
        Err(FrameError::Oversized(0x0020_0000))
    );
    // Unknown type 0x06 (parity 56 ^ 06 ^ 02 = 52).
    assert_eq!(
        Frame::decode(&hex(
            "56 06 000102030405060708090a0b0c0d0e0f 02000000 52 1a00"
        )),
        Err(FrameError::UnknownType(6))
    );
    // A stream refuses the oversized header instead of waiting for 2 MiB.
    let mut s = FrameStream::new();
    s.extend(&over);
    assert_eq!(s.next_frame(), Err(FrameError::Oversized(0x0020_0000)));
}

#[test]
fn tezsign_protobuf_payloads() {
    // SetLevel{key_id "consensus", level 5010}: field 9 (4a), length 14;
    // inside: field 1 string (0a 09 ...), field 3 varint 5010 (18 92 27).
    let set = Request {
        payload: Some(RequestPayload::SetLevel(SetLevelRequest {
            key_id: "consensus".into(),
            level: 5010,
        })),
    };
    assert_eq!(
        set.encode_to_vec(),
        hex("4a 0e 0a 09 636f6e73656e737573 18 9227")
    );
    // Error{33, "stale watermark"}: field 16 is tag 82 01.
    let err = hex("8201 13 08 21 12 0f 7374616c652077617465726d61726b");
    assert_eq!(
        Response::decode(err.as_slice()).unwrap().payload,
        Some(ResponsePayload::Error(ErrorReply {
            code: 33,
            message: "stale watermark".into()
        }))
    );
    // Ok{true}: field 15 is tag 7a.
    assert_eq!(
        Response::decode(hex("7a 02 08 01").as_slice())
            .unwrap()
            .payload,
        Some(ResponsePayload::Ok(OkReply { ok: true }))
    );
}

#[test]
fn tezsign_readiness_probe() {
    let r = parse_readiness(&hex("545a5347 0100 01 00")).unwrap();
    assert_eq!((r.protocol_version, r.ready), (1, true));
    let r = parse_readiness(&hex("545a5347 0100 00")).unwrap();
    assert!(!r.ready);
    assert!(parse_readiness(&hex("545a5348 0100 01 00")).is_err());
    assert!(parse_readiness(&hex("545a5347 0100")).is_err());
}
