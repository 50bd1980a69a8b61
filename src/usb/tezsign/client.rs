//! A TezSign client: request/response over frames, with acknowledgements,
//! retries, keep-alives and the readiness probe, over any
//! [`BulkTransport`].

use std::time::{Duration, Instant};

use prost::Message as _;
use rand_core::RngCore as _;

use crate::usb::error::{DeviceError, ProtocolError};
use crate::usb::tezsign::frame::{Frame, FrameStream, FrameType, MessageId};
use crate::usb::tezsign::proto::{
    code, KeyStatus, LockRequest, LockState, PerKeyResult, Request, RequestPayload, Response,
    ResponsePayload, SetLevelRequest, SignRequest, StatusRequest, UnlockRequest, VersionRequest,
};
use crate::usb::transport::{remaining, BulkTransport, ControlIn, TezSignInterface};
use crate::watermark::{ConsensusKind, KeyHash, Mark};

/// bmRequestType of the readiness probe: IN, vendor, interface. (The
/// TezSign host sources use 0xC1; formats.md's 0x81 would be a standard
/// request, which the gadget does not answer.)
pub const READY_REQUEST_TYPE: u8 = 0xC1;
/// bRequest of the readiness probe.
pub const READY_REQUEST: u8 = 0x5A;
/// The readiness reply's magic.
pub const READY_MAGIC: &[u8; 4] = b"TZSG";
/// The framing protocol version this client speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The answer to the readiness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Framing protocol version.
    pub protocol_version: u16,
    /// Whether the interface's handler is running.
    pub ready: bool,
}

/// Parse a readiness reply: "TZSG", version (u16 little-endian), ready flag.
pub fn parse_readiness(reply: &[u8]) -> Result<Readiness, DeviceError> {
    if reply.len() < 7 || &reply[..4] != READY_MAGIC {
        return Err(DeviceError::bad_reply(
            "readiness probe",
            format!("{:02x?}", &reply[..reply.len().min(8)]),
        ));
    }
    Ok(Readiness {
        protocol_version: u16::from_le_bytes([reply[4], reply[5]]),
        ready: reply[6] == 1,
    })
}

/// A TezSign device. Every call is blocking and bounded by the client's
/// timeout. Sign, status and version go to the signing interface,
/// everything else to the management interface; each interface is probed
/// for readiness before its first request.
pub struct TezSignClient<B> {
    bulk: B,
    timeout: Duration,
    streams: [FrameStream; 2],
    ready: [bool; 2],
}

const READ_CHUNK: usize = 512;

impl<B: BulkTransport> TezSignClient<B> {
    /// A client whose requests each get `timeout`.
    pub fn new(bulk: B, timeout: Duration) -> Self {
        TezSignClient {
            bulk,
            timeout,
            streams: [FrameStream::new(), FrameStream::new()],
            ready: [false; 2],
        }
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut B {
        &mut self.bulk
    }

    /// The readiness probe of one interface.
    pub fn probe(&mut self, interface: TezSignInterface) -> Result<Readiness, DeviceError> {
        let reply = self.bulk.control_in(
            ControlIn {
                request_type: READY_REQUEST_TYPE,
                request: READY_REQUEST,
                value: 0,
                index: interface.number() as u16,
                length: 8,
            },
            self.timeout,
        )?;
        parse_readiness(&reply)
    }

    fn ensure_ready(&mut self, interface: TezSignInterface) -> Result<(), DeviceError> {
        let i = interface.number() as usize;
        if self.ready[i] {
            return Ok(());
        }
        let r = self.probe(interface)?;
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(DeviceError::bad_reply(
                "readiness probe",
                format!(
                    "protocol version {} (this client speaks {PROTOCOL_VERSION})",
                    r.protocol_version
                ),
            ));
        }
        if !r.ready {
            return Err(DeviceError::NotReady {
                interface: interface.number(),
            });
        }
        self.ready[i] = true;
        Ok(())
    }

    fn write_all(
        &mut self,
        interface: TezSignInterface,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), DeviceError> {
        let mut at = 0;
        while at < bytes.len() {
            let left = remaining(deadline, self.timeout, "the tezsign request write")?;
            let n = self.bulk.write_bulk(interface, &bytes[at..], left)?;
            if n == 0 {
                return Err(DeviceError::Io {
                    detail: "bulk write accepted no bytes".into(),
                });
            }
            at += n;
        }
        Ok(())
    }

    /// Send one request and wait for its response. Error responses become
    /// typed [`DeviceError`]s.
    pub fn call(
        &mut self,
        interface: TezSignInterface,
        payload: RequestPayload,
    ) -> Result<ResponsePayload, DeviceError> {
        self.ensure_ready(interface)?;
        let deadline = Instant::now() + self.timeout;
        let mut id: MessageId = [0; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        let request = Frame::new(
            FrameType::Request,
            id,
            Request {
                payload: Some(payload),
            }
            .encode_to_vec(),
        )
        .encode()
        .map_err(ProtocolError::from)?;
        self.write_all(interface, &request, deadline)?;
        let i = interface.number() as usize;
        let mut accepted = false;
        let mut buf = [0u8; READ_CHUNK];
        loop {
            loop {
                let frame = match self.streams[i].next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        self.streams[i].clear();
                        return Err(ProtocolError::Frame(e).into());
                    }
                };
                match frame.kind {
                    FrameType::Accept if frame.id == id => accepted = true,
                    FrameType::Retry if !accepted => {
                        tracing::debug!(%interface, "tezsign asked for a retry; resending");
                        self.write_all(interface, &request, deadline)?;
                    }
                    FrameType::Response if frame.id == id => {
                        let r = Response::decode(frame.payload.as_slice())
                            .map_err(|e| ProtocolError::Decode(e.to_string()))?;
                        return match r.payload {
                            Some(ResponsePayload::Error(e)) => Err(map_error(e.code, e.message)),
                            Some(p) => Ok(p),
                            None => Err(DeviceError::bad_reply("tezsign", "empty response")),
                        };
                    }
                    other => {
                        tracing::debug!(?other, "ignored a tezsign frame for another exchange")
                    }
                }
            }
            let left = remaining(deadline, self.timeout, "the tezsign response")?;
            let n = self.bulk.read_bulk(interface, &mut buf, left)?;
            self.streams[i].extend(&buf[..n]);
        }
    }

    /// Every key with its lock state and watermarks.
    pub fn status(&mut self) -> Result<Vec<KeyStatus>, DeviceError> {
        match self.call(
            TezSignInterface::Signing,
            RequestPayload::Status(StatusRequest {}),
        )? {
            ResponsePayload::Status(s) => Ok(s.keys),
            other => Err(unexpected("status", &other)),
        }
    }

    /// The status of one alias.
    pub fn key_status(&mut self, alias: &str) -> Result<KeyStatus, DeviceError> {
        self.status()?
            .into_iter()
            .find(|k| k.key_id == alias)
            .ok_or_else(|| DeviceError::KeyNotFound {
                detail: format!("no key alias {alias:?} on the tezsign"),
            })
    }

    /// The firmware version (uses the assumed version message, see
    /// [`proto`](crate::usb::tezsign::proto)).
    pub fn version(&mut self) -> Result<String, DeviceError> {
        match self.call(
            TezSignInterface::Signing,
            RequestPayload::Version(VersionRequest {}),
        )? {
            ResponsePayload::Version(v) => Ok(v.version),
            other => Err(unexpected("version", &other)),
        }
    }

    /// Sign `message` with the tz4 key `tz4`. The device checks its own
    /// per-kind watermark, persists the advance, then signs; a refusal is
    /// [`DeviceError::RefusedByDeviceWatermark`].
    pub fn sign(&mut self, tz4: &KeyHash, message: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let req = RequestPayload::Sign(SignRequest {
            tz4: tz4.to_string(),
            message: message.to_vec(),
        });
        match self.call(TezSignInterface::Signing, req)? {
            ResponsePayload::Sign(s) if !s.signature.is_empty() => Ok(s.signature),
            other => Err(unexpected("sign", &other)),
        }
    }

    /// Raise every kind of `alias` to (level, 0). The device refuses
    /// unless `level` is above every kind's current level; that refusal is
    /// [`DeviceError::WouldLower`].
    pub fn set_level(&mut self, alias: &str, level: u64) -> Result<(), DeviceError> {
        let req = RequestPayload::SetLevel(SetLevelRequest {
            key_id: alias.to_string(),
            level,
        });
        match self.call(TezSignInterface::Management, req)? {
            ResponsePayload::Ok(o) if o.ok => Ok(()),
            other => Err(unexpected("set level", &other)),
        }
    }

    /// Unlock `aliases` with the master passphrase. Per-key results.
    pub fn unlock(
        &mut self,
        aliases: &[&str],
        passphrase: &[u8],
    ) -> Result<Vec<PerKeyResult>, DeviceError> {
        let req = RequestPayload::Unlock(UnlockRequest {
            key_ids: aliases.iter().map(|s| s.to_string()).collect(),
            passphrase: passphrase.to_vec(),
        });
        match self.call(TezSignInterface::Management, req)? {
            ResponsePayload::Unlock(u) => Ok(u.results),
            other => Err(unexpected("unlock", &other)),
        }
    }

    /// Lock `aliases`.
    pub fn lock(&mut self, aliases: &[&str]) -> Result<Vec<PerKeyResult>, DeviceError> {
        let req = RequestPayload::Lock(LockRequest {
            key_ids: aliases.iter().map(|s| s.to_string()).collect(),
        });
        match self.call(TezSignInterface::Management, req)? {
            ResponsePayload::Lock(u) => Ok(u.results),
            other => Err(unexpected("lock", &other)),
        }
    }
}

fn unexpected(what: &'static str, got: &ResponsePayload) -> DeviceError {
    let name = match got {
        ResponsePayload::Unlock(_) => "unlock",
        ResponsePayload::Lock(_) => "lock",
        ResponsePayload::Status(_) => "status",
        ResponsePayload::Sign(_) => "sign (empty)",
        ResponsePayload::Version(_) => "version",
        ResponsePayload::Ok(_) => "ok",
        ResponsePayload::Error(_) => "error",
    };
    DeviceError::bad_reply(what, format!("got a {name} response"))
}

/// Map a TezSign error response to a typed error.
pub fn map_error(code: u32, message: String) -> DeviceError {
    match code {
        code::KEY_NOT_FOUND => DeviceError::KeyNotFound { detail: message },
        code::KEY_LOCKED => DeviceError::Locked {
            detail: format!("{message}; unlock the key on the tezsign (management interface)"),
        },
        code::STALE_WATERMARK => DeviceError::RefusedByDeviceWatermark {
            detail: format!("tezsign error 33: {message}"),
        },
        code::BAD_PAYLOAD => DeviceError::BadPayload { detail: message },
        code::SET_LEVEL_FAILED if message.contains("locked") => DeviceError::Locked {
            detail: format!("{message}; unlock the key before setting its level"),
        },
        code::SET_LEVEL_FAILED if message.contains("unknown key") => {
            DeviceError::KeyNotFound { detail: message }
        }
        code::SET_LEVEL_FAILED => DeviceError::WouldLower {
            detail: format!("tezsign error 80: {message}"),
        },
        _ => DeviceError::Remote { code, message },
    }
}

/// The watermark of each kind in a key status. Fails for a locked key
/// (the device reports zeros then) and for a key whose watermark file is
/// damaged.
pub fn status_marks(status: &KeyStatus) -> Result<[(ConsensusKind, Mark); 3], DeviceError> {
    if status.lock_state != LockState::Unlocked as i32 {
        return Err(DeviceError::Locked {
            detail: format!(
                "tezsign key {:?} is locked: its watermarks cannot be read; unlock it first",
                status.key_id
            ),
        });
    }
    if status.state_corrupted {
        return Err(DeviceError::bad_reply(
            "status",
            format!(
                "tezsign reports the watermark state of {:?} as corrupted",
                status.key_id
            ),
        ));
    }
    // A level beyond u32 is beyond every Tezos level: saturate (refuses all).
    let lvl = |l: u64| u32::try_from(l).unwrap_or(u32::MAX);
    Ok([
        (
            ConsensusKind::Block,
            Mark {
                level: lvl(status.last_block_level),
                round: status.last_block_round,
            },
        ),
        (
            ConsensusKind::Preattestation,
            Mark {
                level: lvl(status.last_preattestation_level),
                round: status.last_preattestation_round,
            },
        ),
        (
            ConsensusKind::Attestation,
            Mark {
                level: lvl(status.last_attestation_level),
                round: status.last_attestation_round,
            },
        ),
    ])
}
