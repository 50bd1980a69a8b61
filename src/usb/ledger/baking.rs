//! A client for the Tezos Baking app: every command, over any
//! [`ApduTransport`].

use std::time::Duration;

use crate::usb::error::DeviceError;
use crate::usb::ledger::apdu::{check_status, ins, Apdu, CommandKind, P1_FIRST, P1_LAST, P1_NEXT};
use crate::usb::ledger::keys::LedgerPublicKey;
use crate::usb::ledger::rule::LEVEL_LIMIT;
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
pub struct BakingApp<T> {
    transport: T,
    timeouts: LedgerTimeouts,
}

const MAX_CHUNK: usize = 255;

impl<T: ApduTransport> BakingApp<T> {
    /// Talk to the app through `transport`.
    pub fn new(transport: T, timeouts: LedgerTimeouts) -> Self {
        BakingApp {
            transport,
            timeouts,
        }
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
        let d = self.run(
            Apdu::baking(ins::VERSION, 0, 0, vec![]),
            CommandKind::Other,
            "version",
        )?;
        if d.len() < 4 {
            return Err(DeviceError::bad_reply(
                "version",
                format!("{} bytes", d.len()),
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
        let d = self.run(
            Apdu::baking(ins::GET_PUBLIC_KEY, 0, derivation.p2(), path.encode()),
            CommandKind::Other,
            "get public key",
        )?;
        public_key_reply(&d, derivation, "get public key")
    }

    /// AUTHORIZE_BAKING: make `path` the baking key. A person must approve
    /// on the device within the approval timeout.
    pub fn authorize_baking(
        &mut self,
        path: &BipPath,
        derivation: DerivationType,
    ) -> Result<LedgerPublicKey, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::AUTHORIZE_BAKING, 0, derivation.p2(), path.encode()),
            CommandKind::Approval,
            "authorize baking",
        )?;
        public_key_reply(&d, derivation, "authorize baking")
    }

    /// QUERY_AUTH_KEY: the authorized key's path (`None` when no key is
    /// authorized).
    pub fn query_auth_key(&mut self) -> Result<Option<BipPath>, DeviceError> {
        let d = self.run(
            Apdu::baking(ins::QUERY_AUTH_KEY, 0, 0, vec![]),
            CommandKind::Other,
            "query authorized key",
        )?;
        path_reply(&d, "query authorized key")
    }

    /// QUERY_AUTH_KEY_WITH_CURVE: the authorized key's derivation type and
    /// path (`None` when no key is authorized).
    pub fn query_auth_key_with_curve(
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
    /// and the failover helper do.
    pub fn reset(&mut self, level: u32) -> Result<(), DeviceError> {
        check_level(level)?;
        self.run(
            Apdu::baking(ins::RESET, 0, 0, level.to_be_bytes().to_vec()),
            CommandKind::Approval,
            &format!("reset the high watermark to {level}"),
        )?;
        Ok(())
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
        let d = self.run(
            Apdu::baking(ins::SETUP, 0, derivation.p2(), data),
            CommandKind::Approval,
            &format!("set up baking on {main_chain} at level {main_level}"),
        )?;
        public_key_reply(&d, derivation, "setup")
    }

    /// DEAUTHORIZE: forget the baking key.
    pub fn deauthorize(&mut self) -> Result<(), DeviceError> {
        self.run(
            Apdu::baking(ins::DEAUTHORIZE, 0, 0, vec![]),
            CommandKind::Other,
            "deauthorize",
        )?;
        Ok(())
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
        self.run(
            Apdu::baking(ins, P1_FIRST, derivation.p2(), path.encode()),
            CommandKind::Sign,
            "sign (path)",
        )?;
        let chunks: Vec<&[u8]> = message.chunks(MAX_CHUNK).collect();
        let last = chunks.len() - 1;
        let mut reply = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let p1 = if i == last {
                P1_NEXT | P1_LAST
            } else {
                P1_NEXT
            };
            reply = self.run(
                Apdu::baking(ins, p1, derivation.p2(), chunk.to_vec()),
                CommandKind::Sign,
                "sign",
            )?;
        }
        Ok(reply)
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
        let d = self.sign_packets(ins::SIGN, path, derivation, message)?;
        if d.is_empty() {
            return Err(DeviceError::bad_reply("sign", "no signature"));
        }
        Ok(d)
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
        let d = self.sign_packets(ins::SIGN_WITH_HASH, path, derivation, message)?;
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
        Ok((hash, d[32..].to_vec()))
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
