//! A TezSign gadget, simulated: its two bulk interfaces with frames,
//! acknowledgements, retries, keep-alives and duplicate-id dropping, the
//! readiness probe, and the signer's rules (per key and per kind, strictly
//! greater (level, round), persisted before the reply; raise-only set
//! level; locked keys; sign only on interface 0, never on interface 1).
//!
//! It sits behind [`BulkTransport`], like the rusb transport. TezSign keys
//! are BLS (tz4); this simulator has no BLS implementation, so its
//! "signature" is a 96-byte keyed blake2b tag of the message, checked with
//! [`TezSignSim::verify`]. It exercises the protocol and the watermark
//! rules, not the cryptography.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blake2::digest::{consts::U20, consts::U32, Digest};
use prost::Message as _;

use crate::usb::error::DeviceError;
use crate::usb::tezsign::frame::{Frame, FrameStream, FrameType, MessageId};
use crate::usb::tezsign::proto::{
    code, ErrorReply, KeyStatus, LockResponse, LockState, OkReply, PerKeyResult, Request,
    RequestPayload, Response, ResponsePayload, SignResponse, StatusResponse, UnlockResponse,
    VersionResponse,
};
use crate::usb::tezsign::{READY_MAGIC, READY_REQUEST, READY_REQUEST_TYPE};
use crate::usb::transport::{BulkTransport, ControlIn, TezSignInterface};
use crate::watermark::{ConsensusKind, ConsensusPayload, Curve, KeyHash, Mark};

struct SimKey {
    alias: String,
    tz4: KeyHash,
    /// The BLS public key the status reports, when the test gave one.
    public: Option<[u8; 48]>,
    secret: [u8; 32],
    unlocked: bool,
    marks: [Mark; 3],
}

#[derive(Default)]
struct Iface {
    inbox: FrameStream,
    pending: VecDeque<(MessageId, Vec<u8>)>,
    outbox: VecDeque<u8>,
}

struct State {
    keys: Vec<SimKey>,
    passphrase: Vec<u8>,
    unplugged: bool,
    ready: bool,
    ifaces: [Iface; 2],
    max_read: usize,
    lose_next_request: bool,
    keepalive_before_response: bool,
    duplicate_next_request: bool,
    duplicate_next_response: bool,
    garbage_before_next_response: Option<Vec<u8>>,
    unplug_after_next_sign: bool,
    signed: Vec<(KeyHash, Vec<u8>)>,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// The simulated gadget. Clones are the same device.
#[derive(Clone)]
pub struct TezSignSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TezSignSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TezSignSim")
    }
}

fn kind_index(k: ConsensusKind) -> usize {
    match k {
        ConsensusKind::Block => 0,
        ConsensusKind::Preattestation => 1,
        ConsensusKind::Attestation => 2,
    }
}

fn tag(secret: &[u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut a = blake2::Blake2b512::new();
    a.update(b"tezsign sim signature 1");
    a.update(secret);
    a.update(msg);
    let mut b = blake2::Blake2b::<U32>::new();
    b.update(b"tezsign sim signature 2");
    b.update(secret);
    b.update(msg);
    [a.finalize().to_vec(), b.finalize().to_vec()].concat()
}

fn error(code: u32, message: impl Into<String>) -> ResponsePayload {
    ResponsePayload::Error(ErrorReply {
        code,
        message: message.into(),
    })
}

impl TezSignSim {
    /// A gadget with no keys whose master passphrase is `passphrase`.
    pub fn new(passphrase: &[u8]) -> Self {
        TezSignSim {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    keys: Vec::new(),
                    passphrase: passphrase.to_vec(),
                    unplugged: false,
                    ready: true,
                    ifaces: Default::default(),
                    max_read: 512,
                    lose_next_request: false,
                    keepalive_before_response: false,
                    duplicate_next_request: false,
                    duplicate_next_response: false,
                    garbage_before_next_response: None,
                    unplug_after_next_sign: false,
                    signed: Vec::new(),
                }),
                cond: Condvar::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a locked key `alias` derived from `seed`; returns its tz4.
    pub fn add_key(&self, alias: &str, seed: [u8; 32]) -> KeyHash {
        let mut h = blake2::Blake2b::<U20>::new();
        h.update(b"tezsign sim public key");
        h.update(seed);
        let tz4 = KeyHash {
            curve: Curve::Bls,
            hash: h.finalize().into(),
        };
        self.state().keys.push(SimKey {
            alias: alias.to_string(),
            tz4,
            public: None,
            secret: seed,
            unlocked: false,
            marks: [Mark { level: 0, round: 0 }; 3],
        });
        tz4
    }

    /// Add a locked key `alias` whose status reports `public_key` (48
    /// bytes, a compressed BLS public key the test made) as its `BLpk`, and
    /// whose tz4 is that key's hash. Its signatures are still the
    /// simulator's tags (see the module docs), checked with
    /// [`verify`](Self::verify), not with `public_key`.
    pub fn add_key_with_public_key(
        &self,
        alias: &str,
        seed: [u8; 32],
        public_key: [u8; 48],
    ) -> KeyHash {
        let mut h = blake2::Blake2b::<U20>::new();
        h.update(public_key);
        let tz4 = KeyHash {
            curve: Curve::Bls,
            hash: h.finalize().into(),
        };
        self.state().keys.push(SimKey {
            alias: alias.to_string(),
            tz4,
            public: Some(public_key),
            secret: seed,
            unlocked: false,
            marks: [Mark { level: 0, round: 0 }; 3],
        });
        tz4
    }

    /// Whether `sig` is this device's signature of `msg` by `tz4`.
    pub fn verify(&self, tz4: &KeyHash, msg: &[u8], sig: &[u8]) -> bool {
        let st = self.state();
        st.keys
            .iter()
            .find(|k| k.tz4 == *tz4)
            .is_some_and(|k| tag(&k.secret, msg) == sig)
    }

    /// The watermarks of `alias`: block, preattestation, attestation.
    pub fn marks(&self, alias: &str) -> Option<[Mark; 3]> {
        self.state()
            .keys
            .iter()
            .find(|k| k.alias == alias)
            .map(|k| k.marks)
    }

    /// Lock a key (as after a reboot).
    pub fn lock_key(&self, alias: &str) {
        if let Some(k) = self.state().keys.iter_mut().find(|k| k.alias == alias) {
            k.unlocked = false;
        }
    }

    /// Every message signed, with its key.
    pub fn signed(&self) -> Vec<(KeyHash, Vec<u8>)> {
        self.state().signed.clone()
    }

    /// Whether the readiness probe answers "ready".
    pub fn set_ready(&self, ready: bool) {
        self.state().ready = ready;
    }

    /// Largest bulk read answered (default 512, a high-speed packet);
    /// smaller values split frames over many reads.
    pub fn set_max_read(&self, n: usize) {
        self.state().max_read = n.max(1);
    }

    /// Drop the next request frame as if it was corrupted in transit and
    /// ask the host to resend (a retry frame).
    pub fn lose_next_request(&self) {
        self.state().lose_next_request = true;
    }

    /// Send a keep-alive frame before each response.
    pub fn set_keepalive(&self, on: bool) {
        self.state().keepalive_before_response = on;
    }

    /// Treat the next request frame as received twice (the second copy has
    /// the id of one in flight and must be dropped).
    pub fn duplicate_next_request(&self) {
        self.state().duplicate_next_request = true;
    }

    /// Send the next response twice.
    pub fn duplicate_next_response(&self) {
        self.state().duplicate_next_response = true;
    }

    /// Send `bytes` before the next response (a desynchronized stream).
    pub fn garbage_before_next_response(&self, bytes: Vec<u8>) {
        self.state().garbage_before_next_response = Some(bytes);
    }

    /// The next sign is made and persisted, then the device loses power
    /// before replying.
    pub fn unplug_after_next_sign(&self) {
        self.state().unplug_after_next_sign = true;
    }

    /// Pull the cable.
    pub fn unplug(&self) {
        let mut st = self.state();
        Self::power_off(&mut st);
        self.shared.cond.notify_all();
    }

    fn power_off(st: &mut State) {
        st.unplugged = true;
        st.ifaces = Default::default();
        // Keys are locked after power loss; watermarks were persisted.
        for k in &mut st.keys {
            k.unlocked = false;
        }
    }

    /// Plug it back (keys stay locked until unlocked).
    pub fn replug(&self) {
        self.state().unplugged = false;
    }

    /// A bulk transport to this device (what the rusb transport is to a
    /// real one).
    pub fn transport(&self) -> SimBulk {
        SimBulk { sim: self.clone() }
    }

    fn handle(
        &self,
        st: &mut State,
        iface: TezSignInterface,
        payload: &[u8],
    ) -> Option<ResponsePayload> {
        let req = match Request::decode(payload) {
            Ok(Request { payload: Some(p) }) => p,
            _ => return Some(error(1, "bad protobuf")),
        };
        match (iface, &req) {
            (
                TezSignInterface::Signing,
                RequestPayload::Sign(_) | RequestPayload::Status(_) | RequestPayload::Version(_),
            ) => {}
            (TezSignInterface::Signing, _) => {
                return Some(error(
                    code::WRONG_INTERFACE_SIGNING,
                    "wrong interface: use management (IF1) for this request",
                ))
            }
            (TezSignInterface::Management, RequestPayload::Sign(_)) => {
                return Some(error(
                    code::WRONG_INTERFACE_MANAGEMENT,
                    "wrong interface: use sign (IF0) for signing",
                ))
            }
            _ => {}
        }
        Some(match req {
            RequestPayload::Status(_) => ResponsePayload::Status(StatusResponse {
                keys: st.keys.iter().map(status_of).collect(),
            }),
            RequestPayload::Version(_) => ResponsePayload::Version(VersionResponse {
                version: "slashguard-sim 1".into(),
            }),
            RequestPayload::Unlock(u) => {
                let results = u
                    .key_ids
                    .iter()
                    .map(|id| {
                        let ok_pass = u.passphrase == st.passphrase;
                        match st.keys.iter_mut().find(|k| k.alias == *id) {
                            Some(k) if ok_pass => {
                                k.unlocked = true;
                                per_key(id, None)
                            }
                            Some(_) => per_key(id, Some("bad passphrase")),
                            None => per_key(id, Some("unknown key")),
                        }
                    })
                    .collect();
                ResponsePayload::Unlock(UnlockResponse { results })
            }
            RequestPayload::Lock(l) => {
                let results = l
                    .key_ids
                    .iter()
                    .map(|id| match st.keys.iter_mut().find(|k| k.alias == *id) {
                        Some(k) => {
                            k.unlocked = false;
                            per_key(id, None)
                        }
                        None => per_key(id, Some("unknown key")),
                    })
                    .collect();
                ResponsePayload::Lock(LockResponse { results })
            }
            RequestPayload::SetLevel(s) => {
                let Some(k) = st.keys.iter_mut().find(|k| k.alias == s.key_id) else {
                    return Some(error(
                        code::SET_LEVEL_FAILED,
                        format!("set_level for key={} error: unknown key", s.key_id),
                    ));
                };
                if !k.unlocked {
                    return Some(error(
                        code::SET_LEVEL_FAILED,
                        format!("set_level for key={} error: key locked", s.key_id),
                    ));
                }
                if let Some((i, m)) = k
                    .marks
                    .iter()
                    .enumerate()
                    .find(|(_, m)| s.level <= m.level as u64)
                {
                    return Some(error(
                        code::SET_LEVEL_FAILED,
                        format!(
                            "set_level for key={} error: level must be greater than current {} level (current={})",
                            s.key_id,
                            ConsensusKind::ALL[i],
                            m.level
                        ),
                    ));
                }
                let level = u32::try_from(s.level).unwrap_or(u32::MAX);
                k.marks = [Mark { level, round: 0 }; 3];
                ResponsePayload::Ok(OkReply { ok: true })
            }
            RequestPayload::Sign(s) => {
                let Some(i) = st.keys.iter().position(|k| k.tz4.to_string() == s.tz4) else {
                    return Some(error(code::KEY_NOT_FOUND, "key not found"));
                };
                let Ok(p) = ConsensusPayload::parse(&s.message, Curve::Bls) else {
                    return Some(error(code::BAD_PAYLOAD, "bad payload"));
                };
                let k = &mut st.keys[i];
                if !k.unlocked {
                    return Some(error(code::KEY_LOCKED, "key is locked"));
                }
                let slot = &mut k.marks[kind_index(p.kind)];
                if p.mark <= *slot {
                    return Some(error(code::STALE_WATERMARK, "stale watermark"));
                }
                *slot = p.mark;
                let sig = tag(&k.secret, &s.message);
                let tz4 = k.tz4;
                st.signed.push((tz4, s.message));
                if st.unplug_after_next_sign {
                    st.unplug_after_next_sign = false;
                    Self::power_off(st);
                    return None;
                }
                ResponsePayload::Sign(SignResponse { signature: sig })
            }
        })
    }
}

fn per_key(id: &str, err: Option<&str>) -> PerKeyResult {
    PerKeyResult {
        key_id: id.to_string(),
        ok: err.is_none(),
        error: err.unwrap_or_default().to_string(),
    }
}

fn status_of(k: &SimKey) -> KeyStatus {
    let (m, state) = if k.unlocked {
        (k.marks, LockState::Unlocked)
    } else {
        ([Mark { level: 0, round: 0 }; 3], LockState::Locked)
    };
    KeyStatus {
        key_id: k.alias.clone(),
        lock_state: state as i32,
        tz4: k.tz4.to_string(),
        bl_pubkey: k.public.map(|p| blpk(&p)).unwrap_or_default(),
        pop: String::new(),
        last_block_level: m[0].level as u64,
        last_preattestation_level: m[1].level as u64,
        last_attestation_level: m[2].level as u64,
        last_block_round: m[0].round,
        last_preattestation_round: m[1].round,
        last_attestation_round: m[2].round,
        state_corrupted: false,
    }
}

/// `BLpk...`: base58check with the prefix 06 95 87 cc.
fn blpk(public: &[u8; 48]) -> String {
    let mut v = vec![0x06, 0x95, 0x87, 0xcc];
    v.extend_from_slice(public);
    bs58::encode(v).with_check().into_string()
}

fn push_frame(out: &mut VecDeque<u8>, f: Frame) {
    if let Ok(bytes) = f.encode() {
        out.extend(bytes);
    }
}

/// Bulk transfers to and from a [`TezSignSim`].
pub struct SimBulk {
    sim: TezSignSim,
}

fn unplugged() -> DeviceError {
    DeviceError::Unplugged {
        detail: "simulated TezSign unplugged".into(),
    }
}

impl BulkTransport for SimBulk {
    fn write_bulk(
        &mut self,
        interface: TezSignInterface,
        data: &[u8],
        _timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let mut st = self.sim.state();
        if st.unplugged {
            return Err(unplugged());
        }
        let dup = std::mem::take(&mut st.duplicate_next_request);
        let lose = std::mem::take(&mut st.lose_next_request);
        let i = interface.number() as usize;
        st.ifaces[i].inbox.extend(data);
        if dup {
            st.ifaces[i].inbox.extend(data);
        }
        let mut lost_one = false;
        loop {
            let frame = match st.ifaces[i].inbox.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    st.ifaces[i].inbox.resync();
                    continue;
                }
            };
            if frame.kind != FrameType::Request {
                continue;
            }
            if lose && !lost_one {
                lost_one = true;
                push_frame(
                    &mut st.ifaces[i].outbox,
                    Frame::new(FrameType::Retry, [0; 16], vec![]),
                );
                continue;
            }
            if st.ifaces[i].pending.iter().any(|(id, _)| *id == frame.id) {
                // Duplicate of a request in flight: dropped, as the device does.
                continue;
            }
            push_frame(
                &mut st.ifaces[i].outbox,
                Frame::new(FrameType::Accept, frame.id, vec![]),
            );
            st.ifaces[i].pending.push_back((frame.id, frame.payload));
        }
        self.sim.shared.cond.notify_all();
        Ok(data.len())
    }

    fn read_bulk(
        &mut self,
        interface: TezSignInterface,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.sim.state();
        let i = interface.number() as usize;
        while let Some((id, payload)) = {
            if st.unplugged {
                return Err(unplugged());
            }
            st.ifaces[i].pending.pop_front()
        } {
            let Some(resp) = self.sim.handle(&mut st, interface, &payload) else {
                self.sim.shared.cond.notify_all();
                return Err(unplugged());
            };
            let bytes = Response {
                payload: Some(resp),
            }
            .encode_to_vec();
            let keepalive = st.keepalive_before_response;
            let garbage = st.garbage_before_next_response.take();
            let twice = std::mem::take(&mut st.duplicate_next_response);
            let out = &mut st.ifaces[i].outbox;
            if keepalive {
                push_frame(out, Frame::new(FrameType::KeepAlive, [0; 16], vec![]));
            }
            if let Some(g) = garbage {
                out.extend(g);
            }
            for _ in 0..if twice { 2 } else { 1 } {
                push_frame(out, Frame::new(FrameType::Response, id, bytes.clone()));
            }
        }
        loop {
            if st.unplugged {
                return Err(unplugged());
            }
            let n = st.ifaces[i].outbox.len().min(buf.len()).min(st.max_read);
            if n > 0 {
                for (slot, b) in buf.iter_mut().zip(st.ifaces[i].outbox.drain(..n)) {
                    *slot = b;
                }
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DeviceError::timeout(
                    format!("a bulk read on the simulated TezSign {interface}"),
                    timeout,
                ));
            }
            st = self
                .sim
                .shared
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn control_in(
        &mut self,
        request: ControlIn,
        _timeout: Duration,
    ) -> Result<Vec<u8>, DeviceError> {
        let st = self.sim.state();
        if st.unplugged {
            return Err(unplugged());
        }
        if request.request_type != READY_REQUEST_TYPE
            || request.request != READY_REQUEST
            || request.index > 1
        {
            return Err(DeviceError::Io {
                detail: format!("control request {request:?} stalled"),
            });
        }
        let mut r = READY_MAGIC.to_vec();
        r.extend_from_slice(&1u16.to_le_bytes());
        r.push(st.ready as u8);
        r.push(0);
        r.truncate(request.length as usize);
        Ok(r)
    }
}
