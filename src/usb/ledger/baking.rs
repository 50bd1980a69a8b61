//! A client for the Tezos Baking app: every command, over any
//! [`ApduTransport`].

use std::time::Duration;

use crate::limit::SignerLimit;
use crate::usb::error::{DeviceError, ProtocolError};
use crate::usb::ledger::apdu;
use crate::usb::ledger::apdu::{check_status, ins, Apdu, CommandKind, P1_FIRST, P1_LAST, P1_NEXT};
use crate::usb::ledger::keys::{tezos_signature, LedgerPublicKey};
use crate::usb::ledger::rule::{LEDGER_SIGNER, LEVEL_LIMIT, MAX_SIGN_DATA};
use crate::usb::ledger::{BipPath, DerivationType};
use crate::usb::transport::{ApduReply, ApduTransport};
use crate::watermark::{ChainId, PayloadHash};

/// Which Tezos app answered VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// 0: Tezos Wallet.
    Wallet,
    /// 1: Tezos Baking.
    Baking,
    /// Something else.
    Other(u8),
}

/// The app's answer to VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppVersion {
    /// Which app.
    pub kind: AppKind,
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Patch version.
    pub patch: u8,
}

/// One chain's watermark as QUERY_ALL_HWM reports it (without the
/// attestation flags, which no command reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMark {
    /// Highest level.
    pub level: u32,
    /// Round at that level; `None` from old apps that reply levels only.
    pub round: Option<u32>,
}

/// The answer to QUERY_ALL_HWM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllHwm {
    /// Watermark of the main chain (or of every chain while no main chain
    /// is set).
    pub main: DeviceMark,
    /// Watermark of every other chain.
    pub test: DeviceMark,
    /// The main chain id; all zeros means "not set".
    pub main_chain: ChainId,
}

impl AllHwm {
    /// The watermark the device applies to `chain`.
    pub fn for_chain(&self, chain: ChainId) -> DeviceMark {
        if chain == self.main_chain || self.main_chain.0 == [0; 4] {
            self.main
        } else {
            self.test
        }
    }
}

/// Deadlines for Ledger commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTimeouts {
    /// Any command that needs no person (sign included).
    pub command: Duration,
    /// A command a person must approve on the device (authorize, reset,
    /// setup).
    pub approval: Duration,
}

impl Default for LedgerTimeouts {
    fn default() -> Self {
        LedgerTimeouts {
            command: Duration::from_secs(10),
            approval: Duration::from_secs(120),
        }
    }
}

/// The Tezos Baking app over a transport. Every method is one or more
/// blocking APDU exchanges, each bounded by [`LedgerTimeouts`].
///
/// Replies are checked against their command: a reply of the wrong shape
/// (length, data where none is due) is a [`ProtocolError`], and every
/// state-changing command (authorize, setup, reset, deauthorize) is
/// verified by reading the state back before it is reported done. After any
/// such error, a timeout or an unplug, the next command first
/// resynchronises: the transport drops what the device already sent
/// ([`ApduTransport::resync`]) and VERSION must come back as VERSION.
pub struct BakingApp<T> {
    transport: T,
    timeouts: LedgerTimeouts,
    needs_resync: bool,
}

/// How many times a resynchronisation re-queries before giving up.
const RESYNC_TRIES: usize = 4;

impl<T: ApduTransport> BakingApp<T> {
    /// Talk to the app through `transport`.
    pub fn new(transport: T, timeouts: LedgerTimeouts) -> Self {
        BakingApp {
            transport,
            timeouts,
            needs_resync: false,
        }
    }

    /// Whether the next command resynchronises first.
    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// Run `f`, resynchronising first if an earlier command left the host
    /// out of step, and marking the link for resynchronisation if `f`
    /// fails in a way that may have.
    fn synced<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, DeviceError>,
    ) -> Result<R, DeviceError> {
        if self.needs_resync {
            self.resync()?;
        }
        let r = f(self);
        if let Err(e) = &r {
            if e.desyncs() {
                self.needs_resync = true;
            }
        }
        r
    }

    /// Drain or reconnect, then ask VERSION until VERSION answers: a late
    /// reply still on its way is consumed here, and recognised as not
    /// VERSION's (its shape differs: VERSION alone answers 4 bytes with
    /// app kind 1).
    pub fn resync(&mut self) -> Result<(), DeviceError> {
        let mut last = None;
        let mut other_app = true;
        for _ in 0..RESYNC_TRIES {
            self.transport.resync()?;
            let apdu = Apdu::baking(ins::VERSION, 0, 0, vec![]).encode()?;
            let reply = self.transport.exchange(&apdu, self.timeouts.command)?;
            if reply.status == apdu::sw::OK && reply.data.len() == 4 && reply.data[0] == 1 {
                tracing::debug!("resynchronised with the Ledger");
                self.needs_resync = false;
                return Ok(());
            }
            // The firmware's own answers (PIN screen, no app or another
            // app open) say why VERSION cannot answer: reported as such,
            // and the link stays marked for resynchronisation (if this was
            // a late reply after all, the next command asks again).
            if reply.data.is_empty()
                && matches!(
                    reply.status,
                    apdu::sw::LOCKED_DEVICE
                        | apdu::sw::APP_NOT_OPEN
                        | apdu::sw::APP_NOT_OPEN_OLD
                        | apdu::sw::WRONG_CLASS
                )
            {
                return Err(check_status(reply.status, CommandKind::Other, "version")
                    .err()
                    .unwrap_or(DeviceError::UnknownStatus { sw: reply.status }));
            }
            tracing::warn!(
                len = reply.data.len(),
                status = reply.status,
                "discarded a reply that is not VERSION's while resynchronising with the Ledger"
            );
            other_app &= reply.status == apdu::sw::OK && reply.data.len() == 4;
            last = Some(reply);
        }
        // Every try got a VERSION answer of another app (a late reply
        // does not come back four times): the Tezos Baking app is not
        // the one open.
        if let Some(r) = last.as_ref().filter(|_| other_app) {
            return Err(DeviceError::WrongApp {
                detail: format!(
                    "VERSION answers app kind {} version {}.{}.{}, not Tezos Baking",
                    r.data[0], r.data[1], r.data[2], r.data[3]
                ),
            });
        }
        Err(DeviceError::bad_reply(
            "resynchronise",
            format!(
                "the device kept answering VERSION with other replies (last: {:?})",
                last
            ),
        ))
    }

    /// The deadlines in use.
    pub fn timeouts(&self) -> LedgerTimeouts {
        self.timeouts
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn run(&mut self, apdu: Apdu, kind: CommandKind, action: &str) -> Result<Vec<u8>, DeviceError> {
        let timeout = match kind {
            CommandKind::Approval => self.timeouts.approval,
            _ => self.timeouts.command,
        };
        let reply: ApduReply = match self.transport.exchange(&apdu.encode()?, timeout) {
            Err(DeviceError::Timeout { after, .. }) if kind == CommandKind::Approval => {
                return Err(DeviceError::ApprovalTimeout {
                    action: action.to_string(),
                    after,
                })
            }
            other => other?,
        };
        check_status(reply.status, kind, action)?;
        Ok(reply.data)
    }

    /// VERSION: which app, which version.
    pub fn version(&mut self) -> Result<AppVersion, DeviceError> {
        self.synced(|app| app.version_once())
    }

    fn version_once(&mut self) -> Result<AppVersion, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::VERSION, 0, 0, vec![]),
            CommandKind::Other,
            "version",
        )?;
        if d.len() != 4 {
            return Err(DeviceError::bad_reply(
                "version",
                format!("{} bytes (expected 4)", d.len()),
            ));
        }
        let kind = match d[0] {
            0 => AppKind::Wallet,
            1 => AppKind::Baking,
            k => AppKind::Other(k),
        };
        Ok(AppVersion {
            kind,
            major: d[1],
            minor: d[2],
            patch: d[3],
        })
    }

    /// VERSION, failing with [`DeviceError::WrongApp`] unless the Tezos
    /// Baking app answers.
    pub fn require_baking_app(&mut self) -> Result<AppVersion, DeviceError> {
        let v = self.version()?;
        if v.kind != AppKind::Baking {
            return Err(DeviceError::WrongApp {
                detail: format!(
                    "the open app is {:?} {}.{}.{}, not Tezos Baking",
                    v.kind, v.major, v.minor, v.patch
                ),
            });
        }
        Ok(v)
    }

    /// GET_PUBLIC_KEY: the key at `path`, without a prompt.
    pub fn get_public_key(
        &mut self,
        path: &BipPath,
        derivation: DerivationType,
    ) -> Result<LedgerPublicKey, DeviceError> {
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::GET_PUBLIC_KEY, 0, derivation.p2(), path.encode()),
                CommandKind::Other,
                "get public key",
            )?;
            public_key_reply(&d, derivation, "get public key")
        })
    }

    /// AUTHORIZE_BAKING: make `path` the baking key. A person must approve
    /// on the device within the approval timeout. Done only once the device
    /// reports `path` as its authorized key.
    pub fn authorize_baking(
        &mut self,
        path: &BipPath,
        derivation: DerivationType,
    ) -> Result<LedgerPublicKey, DeviceError> {
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::AUTHORIZE_BAKING, 0, derivation.p2(), path.encode()),
                CommandKind::Approval,
                "authorize baking",
            )?;
            let pk = public_key_reply(&d, derivation, "authorize baking")?;
            app.expect_key("authorize baking", Some((derivation, path.clone())))?;
            Ok(pk)
        })
    }

    /// Read the authorized key back after `command`.
    fn expect_key(
        &mut self,
        command: &'static str,
        want: Option<(DerivationType, BipPath)>,
    ) -> Result<(), DeviceError> {
        let now = self.query_auth_key_with_curve_once()?;
        if now != want {
            return Err(ProtocolError::NotApplied {
                command,
                detail: format!(
                    "the authorized key is {}, expected {}",
                    describe_key(&now),
                    describe_key(&want)
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Read both watermarks back after `command`: each at least (level, 0)
    /// (higher if a signature came in between).
    fn expect_hwm(
        &mut self,
        command: &'static str,
        main_level: u32,
        test_level: u32,
        chain: Option<ChainId>,
    ) -> Result<AllHwm, DeviceError> {
        let now = self.query_all_hwm_once()?;
        let short = |m: DeviceMark, level: u32| m.level < level;
        let wrong_chain = chain.is_some_and(|c| c != now.main_chain);
        if short(now.main, main_level) || short(now.test, test_level) || wrong_chain {
            return Err(ProtocolError::NotApplied {
                command,
                detail: format!(
                    "the device reports main level {} and test level {} on main chain {}, expected at least {main_level} and {test_level}{}",
                    now.main.level,
                    now.test.level,
                    now.main_chain,
                    chain.map(|c| format!(" on {c}")).unwrap_or_default()
                ),
            }
            .into());
        }
        Ok(now)
    }

    /// QUERY_AUTH_KEY: the authorized key's path (`None` when no key is
    /// authorized).
    pub fn query_auth_key(&mut self) -> Result<Option<BipPath>, DeviceError> {
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::QUERY_AUTH_KEY, 0, 0, vec![]),
                CommandKind::Other,
                "query authorized key",
            )?;
            path_reply(&d, "query authorized key")
        })
    }

    /// QUERY_AUTH_KEY_WITH_CURVE: the authorized key's derivation type and
    /// path (`None` when no key is authorized).
    pub fn query_auth_key_with_curve(
        &mut self,
    ) -> Result<Option<(DerivationType, BipPath)>, DeviceError> {
        self.synced(|app| app.query_auth_key_with_curve_once())
    }

    fn query_auth_key_with_curve_once(
        &mut self,
    ) -> Result<Option<(DerivationType, BipPath)>, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::QUERY_AUTH_KEY_WITH_CURVE, 0, 0, vec![]),
            CommandKind::Other,
            "query authorized key with curve",
        )?;
        let (&curve, rest) = d
            .split_first()
            .ok_or_else(|| DeviceError::bad_reply("query authorized key with curve", "empty"))?;
        let Some(path) = path_reply(rest, "query authorized key with curve")? else {
            return Ok(None);
        };
        let dt = DerivationType::from_p2(curve).ok_or_else(|| {
            DeviceError::bad_reply("query authorized key with curve", format!("curve {curve}"))
        })?;
        Ok(Some((dt, path)))
    }

    /// QUERY_MAIN_HWM: the main chain's (level, round).
    pub fn query_main_hwm(&mut self) -> Result<DeviceMark, DeviceError> {
        self.synced(|app| app.query_main_hwm_once())
    }

    fn query_main_hwm_once(&mut self) -> Result<DeviceMark, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::QUERY_MAIN_HWM, 0, 0, vec![]),
            CommandKind::Other,
            "query main watermark",
        )?;
        match d.len() {
            8 => Ok(DeviceMark {
                level: be32(&d, 0),
                round: Some(be32(&d, 4)),
            }),
            4 => Ok(DeviceMark {
                level: be32(&d, 0),
                round: None,
            }),
            n => Err(DeviceError::bad_reply(
                "query main watermark",
                format!("{n} bytes"),
            )),
        }
    }

    /// QUERY_ALL_HWM: both watermarks and the main chain id. Reads the
    /// 20-byte reply of current apps and the 12-byte reply of old ones.
    pub fn query_all_hwm(&mut self) -> Result<AllHwm, DeviceError> {
        self.synced(|app| app.query_all_hwm_once())
    }

    fn query_all_hwm_once(&mut self) -> Result<AllHwm, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::QUERY_ALL_HWM, 0, 0, vec![]),
            CommandKind::Other,
            "query all watermarks",
        )?;
        parse_all_hwm(&d)
    }

    /// RESET: set the main and test watermarks to (level, 0). A person must
    /// approve on the device. The app lets RESET lower the watermark; this
    /// method does not check, [`LedgerSigner`](crate::usb::LedgerSigner)
    /// and the failover helper do. Done only once both watermarks read back
    /// at (level, 0) or above.
    pub fn reset(&mut self, level: u32) -> Result<(), DeviceError> {
        check_level(level)?;
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::RESET, 0, 0, level.to_be_bytes().to_vec()),
                CommandKind::Approval,
                &format!("reset the high watermark to {level}"),
            )?;
            expect_empty(&d, "reset")?;
            app.expect_hwm("reset", level, level, None)?;
            Ok(())
        })
    }

    /// SETUP: main chain id, both watermarks and the baking key in one
    /// approval. Returns the key.
    pub fn setup(
        &mut self,
        main_chain: ChainId,
        main_level: u32,
        test_level: u32,
        path: &BipPath,
        derivation: DerivationType,
    ) -> Result<LedgerPublicKey, DeviceError> {
        check_level(main_level)?;
        check_level(test_level)?;
        let mut data = Vec::with_capacity(12 + 41);
        data.extend_from_slice(&main_chain.0);
        data.extend_from_slice(&main_level.to_be_bytes());
        data.extend_from_slice(&test_level.to_be_bytes());
        data.extend_from_slice(&path.encode());
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::SETUP, 0, derivation.p2(), data),
                CommandKind::Approval,
                &format!("set up baking on {main_chain} at level {main_level}"),
            )?;
            let pk = public_key_reply(&d, derivation, "setup")?;
            app.expect_hwm("setup", main_level, test_level, Some(main_chain))?;
            app.expect_key("setup", Some((derivation, path.clone())))?;
            Ok(pk)
        })
    }

    /// DEAUTHORIZE: forget the baking key. Done only once the device
    /// reports no authorized key.
    pub fn deauthorize(&mut self) -> Result<(), DeviceError> {
        self.synced(|app| {
            let d = app.run(
                Apdu::baking(ins::DEAUTHORIZE, 0, 0, vec![]),
                CommandKind::Other,
                "deauthorize",
            )?;
            expect_empty(&d, "deauthorize")?;
            app.expect_key("deauthorize", None)
        })
    }

    fn sign_packets(
        &mut self,
        ins: u8,
        path: &BipPath,
        derivation: DerivationType,
        message: &[u8],
    ) -> Result<Vec<u8>, DeviceError> {
        if message.is_empty() {
            return Err(DeviceError::Invalid("empty message to sign".into()));
        }
        // The app reads the message from one data packet (P1 0x81) of at
        // most MAX_SIGN_DATA bytes; it answers 0x917E to more. Refused here,
        // before anything is sent.
        if message.len() > MAX_SIGN_DATA {
            return Err(SignerLimit::PayloadTooLong {
                signer: LEDGER_SIGNER,
                len: message.len(),
                max: MAX_SIGN_DATA,
            }
            .into());
        }
        let d = self.run(
            Apdu::baking(ins, P1_FIRST, derivation.p2(), path.encode()),
            CommandKind::Sign,
            "sign (path)",
        )?;
        // The path packet is answered with a bare 9000. Data here is a late
        // reply to an earlier command (a signature, say): stop before the
        // message is sent.
        expect_empty(&d, "sign (path)")?;
        self.run(
            Apdu::baking(ins, P1_NEXT | P1_LAST, derivation.p2(), message.to_vec()),
            CommandKind::Sign,
            "sign",
        )
    }

    /// SIGN: the device checks its watermark, advances it and signs. A
    /// refusal by the watermark is [`DeviceError::RefusedByDeviceWatermark`].
    /// Returns the app's signature bytes (see
    /// [`tezos_signature`](crate::usb::ledger::tezos_signature)).
    pub fn sign(
        &mut self,
        path: &BipPath,
        derivation: DerivationType,
        message: &[u8],
    ) -> Result<Vec<u8>, DeviceError> {
        self.synced(|app| {
            let d = app.sign_packets(ins::SIGN, path, derivation, message)?;
            if d.is_empty() {
                return Err(DeviceError::bad_reply("sign", "no signature"));
            }
            // A signature of the wrong length for the curve is not this
            // command's reply.
            tezos_signature(derivation, &d)?;
            Ok(d)
        })
    }

    /// SIGN_WITH_HASH: like [`sign`](Self::sign), and the reply carries the
    /// blake2b-256 hash the device signed, which binds the reply to this
    /// message (checked here).
    pub fn sign_with_hash(
        &mut self,
        path: &BipPath,
        derivation: DerivationType,
        message: &[u8],
    ) -> Result<(PayloadHash, Vec<u8>), DeviceError> {
        self.synced(|app| {
            let d = app.sign_packets(ins::SIGN_WITH_HASH, path, derivation, message)?;
            if d.len() <= 32 {
                return Err(DeviceError::bad_reply(
                    "sign with hash",
                    format!("{} bytes", d.len()),
                ));
            }
            let hash = PayloadHash(d[..32].try_into().expect("length checked"));
            if hash != PayloadHash::of(message) {
                return Err(DeviceError::bad_reply(
                    "sign with hash",
                    "the device signed another message than the one sent (stale reply?)",
                ));
            }
            tezos_signature(derivation, &d[32..])?;
            Ok((hash, d[32..].to_vec()))
        })
    }
}

fn expect_empty(d: &[u8], what: &'static str) -> Result<(), DeviceError> {
    if d.is_empty() {
        Ok(())
    } else {
        Err(DeviceError::bad_reply(
            what,
            format!(
                "{} bytes of data where none is due (a late reply to an earlier command?)",
                d.len()
            ),
        ))
    }
}

fn describe_key(k: &Option<(DerivationType, BipPath)>) -> String {
    match k {
        None => "none".into(),
        Some((d, p)) => format!("{p} ({d:?})"),
    }
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().expect("length checked"))
}

fn check_level(level: u32) -> Result<(), DeviceError> {
    if level >= LEVEL_LIMIT {
        return Err(DeviceError::Invalid(format!(
            "level {level} has a top bit set; the Ledger accepts levels below {LEVEL_LIMIT}"
        )));
    }
    Ok(())
}

/// Parse a QUERY_ALL_HWM reply (20 bytes, or 12 from old apps).
pub fn parse_all_hwm(d: &[u8]) -> Result<AllHwm, DeviceError> {
    match d.len() {
        20 => Ok(AllHwm {
            main: DeviceMark {
                level: be32(d, 0),
                round: Some(be32(d, 4)),
            },
            test: DeviceMark {
                level: be32(d, 8),
                round: Some(be32(d, 12)),
            },
            main_chain: ChainId(d[16..20].try_into().expect("length checked")),
        }),
        12 => Ok(AllHwm {
            main: DeviceMark {
                level: be32(d, 0),
                round: None,
            },
            test: DeviceMark {
                level: be32(d, 4),
                round: None,
            },
            main_chain: ChainId(d[8..12].try_into().expect("length checked")),
        }),
        n => Err(DeviceError::bad_reply(
            "query all watermarks",
            format!("{n} bytes (expected 20, or 12 from old apps)"),
        )),
    }
}

fn public_key_reply(
    d: &[u8],
    derivation: DerivationType,
    what: &'static str,
) -> Result<LedgerPublicKey, DeviceError> {
    match d.split_first() {
        Some((&len, rest)) if len as usize == rest.len() && len > 0 => Ok(LedgerPublicKey {
            derivation,
            raw: rest.to_vec(),
        }),
        _ => Err(DeviceError::bad_reply(what, format!("{} bytes", d.len()))),
    }
}

fn path_reply(d: &[u8], what: &'static str) -> Result<Option<BipPath>, DeviceError> {
    match BipPath::decode_prefix(d) {
        Some((p, used)) if used == d.len() => Ok(if p.components().is_empty() {
            None
        } else {
            Some(p)
        }),
        _ => Err(DeviceError::bad_reply(what, format!("{} bytes", d.len()))),
    }
}
