//! A Ledger running the Tezos Baking app, simulated: the device side of
//! HID framing and APDUs, and the app's rules (one watermark per chain with
//! the attestation flags, an authorized key, prompts a person approves or
//! rejects, a PIN lock, the app not being open, power loss).
//!
//! It sits behind [`HidReports`] (like the rusb transport) and behind a
//! Speculos-compatible TCP server ([`SpeculosServer`](crate::usb::sim::SpeculosServer)).
//! Keys are ed25519 (derivation types 0 and 3), derived from the
//! simulator's seed and the path; signatures are real ed25519 signatures of
//! blake2b-256 of the message, as the app makes them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blake2::digest::{consts::U32, Digest};
use ed25519_dalek::{Signer as _, SigningKey};

use crate::usb::error::DeviceError;
use crate::usb::ledger::apdu::{ins, sw, Apdu, CLA, P1_FIRST, P1_LAST, P1_NEXT};
use crate::usb::ledger::hid::{encode_frames, FrameAssembler};
use crate::usb::ledger::rule::{LedgerHwm, LEVEL_LIMIT, MAX_SIGN_DATA};
use crate::usb::ledger::{BipPath, DerivationType};
use crate::usb::transport::{HidReports, HID_REPORT_LEN};
use crate::watermark::{ChainId, ConsensusPayload, PayloadHash};

/// What the simulated Ledger shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimApp {
    /// The Tezos Baking app.
    Baking,
    /// The Tezos Wallet app (answers VERSION with kind 0).
    Wallet,
    /// The dashboard: no app open (answers 0x6E01).
    Dashboard,
}

/// How the simulated person answers prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Approves at once.
    Approve,
    /// Rejects at once (0x6985).
    Reject,
    /// Waits until [`LedgerSim::press`] (or forever).
    Manual,
}

struct SignCtx {
    ins: u8,
    derivation: DerivationType,
    path: BipPath,
    msg: Vec<u8>,
}

struct State {
    app: SimApp,
    locked: bool,
    unplugged: bool,
    generation: u64,
    busy: bool,
    seed: [u8; 32],
    version: [u8; 3],
    legacy_hwm_reply: bool,
    no_sign_with_hash: bool,
    hwm_in_ram_only: bool,
    main_chain: ChainId,
    main: LedgerHwm,
    test: LedgerHwm,
    persisted: (LedgerHwm, LedgerHwm),
    baking_key: Option<(DerivationType, BipPath)>,
    approval: Approval,
    prompt: Option<String>,
    press: Option<bool>,
    sign: Option<SignCtx>,
    outbox: VecDeque<Vec<u8>>,
    in_flight: usize,
    signed: Vec<Vec<u8>>,
    unplug_after: Option<u8>,
    dropped: usize,
    delay_after: Option<(u8, usize)>,
    held: Option<(usize, Vec<u8>)>,
    processing: Duration,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// The simulated device. Clones are the same device.
#[derive(Clone)]
pub struct LedgerSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LedgerSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerSim")
    }
}

fn derive_key(seed: &[u8; 32], derivation: DerivationType, path: &BipPath) -> SigningKey {
    let mut h = blake2::Blake2b::<U32>::new();
    h.update(b"slashguard ledger sim");
    h.update(seed);
    h.update([derivation.p2()]);
    h.update(path.encode());
    SigningKey::from_bytes(&h.finalize().into())
}

fn reply(data: &[u8], status: u16) -> Vec<u8> {
    let mut v = data.to_vec();
    v.extend_from_slice(&status.to_be_bytes());
    v
}

fn status(s: u16) -> Vec<u8> {
    reply(&[], s)
}

impl LedgerSim {
    /// An unlocked device with the Tezos Baking app 2.5.0 open, no key
    /// authorized, every watermark at 0, prompts approved.
    pub fn new(seed: [u8; 32]) -> Self {
        LedgerSim {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    app: SimApp::Baking,
                    locked: false,
                    unplugged: false,
                    generation: 0,
                    busy: false,
                    seed,
                    version: [2, 5, 0],
                    legacy_hwm_reply: false,
                    no_sign_with_hash: false,
                    hwm_in_ram_only: false,
                    main_chain: ChainId([0; 4]),
                    main: LedgerHwm::default(),
                    test: LedgerHwm::default(),
                    persisted: (LedgerHwm::default(), LedgerHwm::default()),
                    baking_key: None,
                    approval: Approval::Approve,
                    prompt: None,
                    press: None,
                    sign: None,
                    outbox: VecDeque::new(),
                    in_flight: 0,
                    signed: Vec::new(),
                    unplug_after: None,
                    dropped: 0,
                    delay_after: None,
                    held: None,
                    processing: Duration::ZERO,
                }),
                cond: Condvar::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>, t: Duration) -> MutexGuard<'a, State> {
        self.shared
            .cond
            .wait_timeout(g, t)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// A HID report transport to this device (what the rusb transport is
    /// to a real one).
    pub fn hid(&self) -> SimHid {
        SimHid {
            sim: self.clone(),
            asm: FrameAssembler::any_channel(),
        }
    }

    /// Take one APDU from a transport, as the device does: dropped (never
    /// answered) while a prompt is on screen, otherwise answered on a
    /// thread of its own, the reply handed to `deliver` (`None`: the device
    /// lost power instead of answering). A reply held back by
    /// [`delay_next_reply`](Self::delay_next_reply) is handed to `deliver`
    /// first: it reaches whoever listens now, as with Speculos, which
    /// sends every reply to its newest client.
    pub(crate) fn submit(
        &self,
        raw: Vec<u8>,
        deliver: impl Fn(Option<Vec<u8>>) + Send + 'static,
    ) -> Submitted {
        let (gen, late, processing) = {
            let mut st = self.state();
            if st.unplugged {
                return Submitted::Unplugged;
            }
            if st.busy {
                st.dropped += 1;
                self.shared.cond.notify_all();
                return Submitted::Dropped;
            }
            st.busy = true;
            st.in_flight += 1;
            let late = match st.held.take() {
                Some((n, r)) if n > 1 => {
                    st.held = Some((n - 1, r));
                    None
                }
                other => other.map(|(_, r)| r),
            };
            (st.generation, late, st.processing)
        };
        // `deliver` takes the state lock itself: never call it holding one.
        if late.is_some() {
            deliver(late);
        }
        let sim = self.clone();
        std::thread::spawn(move || {
            // Busy meanwhile: APDUs that arrive are dropped.
            if !processing.is_zero() {
                std::thread::sleep(processing);
            }
            let st = sim.state();
            if st.unplugged || st.generation != gen {
                // Power lost while it worked: nothing was done, and no
                // reply will ever come (the loss itself was seen by the
                // transports when it happened).
                let mut st = st;
                st.in_flight -= 1;
                sim.shared.cond.notify_all();
                return;
            }
            let (mut st, out) = sim.answer(st, &raw);
            let lost = st.unplugged || st.generation != gen;
            if !lost {
                st.busy = false;
            }
            let out = if lost { None } else { out };
            let send = match out {
                Some(reply)
                    if st
                        .delay_after
                        .is_some_and(|(i, _)| is_final_packet(&raw, i)) =>
                {
                    let later = st.delay_after.take().map_or(1, |(_, n)| n);
                    st.held = Some((later, reply));
                    None
                }
                other => Some(other),
            };
            drop(st);
            if let Some(reply) = send {
                deliver(reply);
            }
            let mut st = sim.state();
            st.in_flight -= 1;
            sim.shared.cond.notify_all();
        });
        Submitted::Accepted
    }

    /// Answer one APDU (data then status word), applying the app's rules.
    /// `None` when the device is unplugged (or gets unplugged while
    /// answering), or when a prompt is on screen: the app drops APDUs then,
    /// it does not queue them. Blocks while its own [`Approval::Manual`]
    /// prompt waits.
    pub fn process(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut st = self.state();
        if st.unplugged {
            return None;
        }
        if st.busy {
            st.dropped += 1;
            self.shared.cond.notify_all();
            return None;
        }
        st.busy = true;
        let gen = st.generation;
        let (mut st, out) = self.answer(st, raw);
        if st.generation == gen {
            st.busy = false;
        }
        self.shared.cond.notify_all();
        if st.unplugged || st.generation != gen {
            return None;
        }
        out
    }

    fn answer<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        raw: &[u8],
    ) -> (MutexGuard<'a, State>, Option<Vec<u8>>) {
        if st.locked {
            return (st, Some(status(sw::LOCKED_DEVICE)));
        }
        match st.app {
            SimApp::Dashboard => return (st, Some(status(sw::APP_NOT_OPEN))),
            SimApp::Wallet => {
                let out = match Apdu::decode(raw) {
                    Ok(a) if a.cla == CLA && a.ins == ins::VERSION => reply(&[0, 3, 0, 0], sw::OK),
                    Ok(a) if a.cla == CLA => status(sw::INVALID_INS),
                    _ => status(sw::WRONG_CLASS),
                };
                return (st, Some(out));
            }
            SimApp::Baking => {}
        }
        let apdu = match Apdu::decode(raw) {
            Ok(a) => a,
            Err(_) => return (st, Some(status(sw::WRONG_LENGTH))),
        };
        if apdu.cla != CLA {
            return (st, Some(status(sw::WRONG_CLASS)));
        }
        let derivation = DerivationType::from_p2(apdu.p2);
        match apdu.ins {
            ins::VERSION => {
                let v = st.version;
                (st, Some(reply(&[1, v[0], v[1], v[2]], sw::OK)))
            }
            ins::GET_PUBLIC_KEY => {
                let out = match (derivation, full_path(&apdu.data)) {
                    (Some(d), Some(p)) => pubkey_reply(&st.seed, d, &p),
                    (None, _) => status(sw::WRONG_PARAM),
                    _ => status(sw::PARSE_ERROR),
                };
                (st, Some(out))
            }
            ins::AUTHORIZE_BAKING => {
                let (Some(d), Some(p)) = (derivation, full_path(&apdu.data)) else {
                    return (st, Some(status(sw::PARSE_ERROR)));
                };
                if !signable(d) {
                    return (st, Some(status(sw::WRONG_PARAM)));
                }
                let (mut st, ok) = self.prompt(st, format!("Authorize baking with {p}"));
                let out = match ok {
                    None => return (st, None),
                    Some(false) => status(sw::REJECTED),
                    Some(true) => {
                        st.baking_key = Some((d, p.clone()));
                        pubkey_reply(&st.seed, d, &p)
                    }
                };
                (st, Some(out))
            }
            ins::RESET => {
                if apdu.data.len() != 4 {
                    return (st, Some(status(sw::WRONG_LENGTH_FOR_INS)));
                }
                let level = u32::from_be_bytes(apdu.data[..4].try_into().expect("4"));
                if level >= LEVEL_LIMIT {
                    return (st, Some(status(sw::PARSE_ERROR)));
                }
                let (mut st, ok) = self.prompt(st, format!("Reset HWM to {level}"));
                let out = match ok {
                    None => return (st, None),
                    Some(false) => status(sw::REJECTED),
                    Some(true) => {
                        st.main.reset(level);
                        st.test.reset(level);
                        st.persisted = (st.main, st.test);
                        status(sw::OK)
                    }
                };
                (st, Some(out))
            }
            ins::SETUP => {
                let d = &apdu.data;
                let parsed = (d.len() > 12).then(|| full_path(&d[12..])).flatten();
                let (Some(dt), Some(p)) = (derivation, parsed) else {
                    return (st, Some(status(sw::PARSE_ERROR)));
                };
                let chain = ChainId(d[0..4].try_into().expect("4"));
                let main = u32::from_be_bytes(d[4..8].try_into().expect("4"));
                let test = u32::from_be_bytes(d[8..12].try_into().expect("4"));
                if main >= LEVEL_LIMIT || test >= LEVEL_LIMIT {
                    return (st, Some(status(sw::WRONG_VALUES)));
                }
                if !signable(dt) {
                    return (st, Some(status(sw::WRONG_PARAM)));
                }
                let (mut st, ok) =
                    self.prompt(st, format!("Setup {chain} main {main} test {test} key {p}"));
                let out = match ok {
                    None => return (st, None),
                    Some(false) => status(sw::REJECTED),
                    Some(true) => {
                        st.main_chain = chain;
                        st.main = LedgerHwm::at(main);
                        st.test = LedgerHwm::at(test);
                        st.persisted = (st.main, st.test);
                        st.baking_key = Some((dt, p.clone()));
                        pubkey_reply(&st.seed, dt, &p)
                    }
                };
                (st, Some(out))
            }
            ins::QUERY_AUTH_KEY => {
                let out = match &st.baking_key {
                    Some((_, p)) => reply(&p.encode(), sw::OK),
                    None => reply(&[0], sw::OK),
                };
                (st, Some(out))
            }
            ins::QUERY_AUTH_KEY_WITH_CURVE => {
                let out = match &st.baking_key {
                    Some((d, p)) => reply(&[&[d.p2()][..], &p.encode()].concat(), sw::OK),
                    None => reply(&[0, 0], sw::OK),
                };
                (st, Some(out))
            }
            ins::QUERY_MAIN_HWM => {
                let m = st.main;
                let out = reply(
                    &[m.level.to_be_bytes(), m.round.to_be_bytes()].concat(),
                    sw::OK,
                );
                (st, Some(out))
            }
            ins::QUERY_ALL_HWM => {
                let (m, t, c) = (st.main, st.test, st.main_chain);
                let out = if st.legacy_hwm_reply {
                    reply(
                        &[&m.level.to_be_bytes()[..], &t.level.to_be_bytes(), &c.0].concat(),
                        sw::OK,
                    )
                } else {
                    reply(
                        &[
                            &m.level.to_be_bytes()[..],
                            &m.round.to_be_bytes(),
                            &t.level.to_be_bytes(),
                            &t.round.to_be_bytes(),
                            &c.0,
                        ]
                        .concat(),
                        sw::OK,
                    )
                };
                (st, Some(out))
            }
            ins::DEAUTHORIZE => {
                st.baking_key = None;
                (st, Some(status(sw::OK)))
            }
            ins::SIGN_WITH_HASH if st.no_sign_with_hash => (st, Some(status(sw::INVALID_INS))),
            ins::SIGN | ins::SIGN_WITH_HASH => self.sign_packet(st, apdu, derivation),
            _ => (st, Some(status(sw::INVALID_INS))),
        }
    }

    fn sign_packet<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        apdu: Apdu,
        derivation: Option<DerivationType>,
    ) -> (MutexGuard<'a, State>, Option<Vec<u8>>) {
        if apdu.p1 == P1_FIRST {
            let (Some(d), Some(p)) = (derivation, full_path(&apdu.data)) else {
                st.sign = None;
                return (st, Some(status(sw::PARSE_ERROR)));
            };
            st.sign = Some(SignCtx {
                ins: apdu.ins,
                derivation: d,
                path: p,
                msg: Vec::new(),
            });
            return (st, Some(status(sw::OK)));
        }
        if apdu.p1 & !P1_LAST != P1_NEXT {
            st.sign = None;
            return (st, Some(status(sw::WRONG_PARAM)));
        }
        match &mut st.sign {
            // The app keeps the message in one buffer of MAX_SIGN_DATA
            // bytes: more is "wrong length for this instruction".
            Some(ctx) if ctx.ins == apdu.ins && ctx.msg.len() + apdu.data.len() > MAX_SIGN_DATA => {
                st.sign = None;
                return (st, Some(status(sw::WRONG_LENGTH_FOR_INS)));
            }
            Some(ctx) if ctx.ins == apdu.ins => ctx.msg.extend_from_slice(&apdu.data),
            _ => {
                st.sign = None;
                return (st, Some(status(sw::WRONG_PARAM)));
            }
        }
        if apdu.p1 & P1_LAST == 0 {
            return (st, Some(status(sw::OK)));
        }
        let ctx = st.sign.take().expect("checked above");
        let out = self.finish_sign(&mut st, ctx);
        if st.unplug_after == Some(apdu.ins) {
            // Power lost after the device signed and advanced its mark, before
            // the reply left it.
            st.unplug_after = None;
            Self::power_off(&mut st);
            self.shared.cond.notify_all();
            return (st, None);
        }
        (st, Some(out))
    }

    fn finish_sign(&self, st: &mut State, ctx: SignCtx) -> Vec<u8> {
        if !signable(ctx.derivation) {
            return status(sw::WRONG_PARAM);
        }
        if st.baking_key.as_ref() != Some(&(ctx.derivation, ctx.path.clone())) {
            return status(sw::SECURITY);
        }
        let Ok(p) = ConsensusPayload::parse(&ctx.msg, ctx.derivation.curve()) else {
            return status(sw::PARSE_ERROR);
        };
        let main = p.chain == st.main_chain || st.main_chain.0 == [0; 4];
        let hwm = if main { &mut st.main } else { &mut st.test };
        if !hwm.permits(p.kind, p.mark) {
            return status(sw::WRONG_VALUES);
        }
        hwm.record(p.kind, p.mark);
        if !st.hwm_in_ram_only {
            st.persisted = (st.main, st.test);
        }
        let key = derive_key(&st.seed, ctx.derivation, &ctx.path);
        let hash = PayloadHash::of(&ctx.msg);
        let sig = key.sign(&hash.0).to_bytes();
        st.signed.push(ctx.msg);
        if ctx.ins == ins::SIGN_WITH_HASH {
            reply(&[&hash.0[..], &sig].concat(), sw::OK)
        } else {
            reply(&sig, sw::OK)
        }
    }

    fn prompt<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        what: String,
    ) -> (MutexGuard<'a, State>, Option<bool>) {
        match st.approval {
            Approval::Approve => (st, Some(true)),
            Approval::Reject => (st, Some(false)),
            Approval::Manual => {
                let gen = st.generation;
                st.prompt = Some(what);
                st.press = None;
                self.shared.cond.notify_all();
                loop {
                    if st.unplugged || st.generation != gen {
                        st.prompt = None;
                        return (st, None);
                    }
                    if let Some(p) = st.press.take() {
                        st.prompt = None;
                        return (st, Some(p));
                    }
                    st = self.wait(st, Duration::from_millis(50));
                }
            }
        }
    }

    fn power_off(st: &mut State) {
        st.unplugged = true;
        st.generation += 1;
        st.busy = false;
        st.outbox.clear();
        st.held = None;
        st.sign = None;
        st.prompt = None;
        if st.hwm_in_ram_only {
            // The app's "HWM disabled in flash" setting: what only lived in
            // RAM is gone.
            (st.main, st.test) = st.persisted;
        }
    }

    /// The person's answer to the prompt on screen (if any). Returns the
    /// prompt that was answered, once the app has finished the command the
    /// prompt belonged to (bounded: 2 s). Returning earlier let a test's
    /// next command reach an app still busy with it, which drops it, as
    /// the real app does; that made a test fail about one run in fifty.
    pub fn press(&self, approve: bool) -> Option<String> {
        let mut st = self.state();
        let p = st.prompt.clone()?;
        st.press = Some(approve);
        self.shared.cond.notify_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        while (st.press.is_some() || st.prompt.is_some() || st.busy)
            && !st.unplugged
            && Instant::now() < deadline
        {
            st = self.wait(st, Duration::from_millis(20));
        }
        Some(p)
    }

    /// The prompt on screen, if a command waits for a person.
    pub fn prompt_shown(&self) -> Option<String> {
        self.state().prompt.clone()
    }

    /// Wait up to `t` for a prompt to appear.
    pub fn wait_for_prompt(&self, t: Duration) -> Option<String> {
        let deadline = Instant::now() + t;
        let mut st = self.state();
        loop {
            if let Some(p) = st.prompt.clone() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.wait(st, left.min(Duration::from_millis(20)));
        }
    }

    /// Wait up to `t` until every request received over HID has been
    /// answered (its reply queued); `false` on timeout.
    pub fn wait_idle(&self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        let mut st = self.state();
        while st.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.wait(st, left);
        }
        true
    }

    /// How prompts are answered.
    pub fn set_approval(&self, a: Approval) {
        self.state().approval = a;
    }

    /// Lock (PIN screen): every APDU answers 0x5515.
    pub fn lock(&self) {
        self.state().locked = true;
    }

    /// Enter the PIN.
    pub fn unlock(&self) {
        self.state().locked = false;
    }

    /// Open an app (or go to the dashboard).
    pub fn open_app(&self, app: SimApp) {
        self.state().app = app;
    }

    /// Pull the cable: pending requests get no answer; transports fail
    /// with [`DeviceError::Unplugged`]. With
    /// [`set_hwm_in_ram_only`](Self::set_hwm_in_ram_only) the watermark
    /// falls back to its last persisted value.
    pub fn unplug(&self) {
        let mut st = self.state();
        Self::power_off(&mut st);
        self.shared.cond.notify_all();
    }

    /// Plug it back: the device boots locked, on the dashboard.
    pub fn replug(&self) {
        let mut st = self.state();
        st.unplugged = false;
        st.locked = true;
        st.app = SimApp::Dashboard;
    }

    /// Whether the cable is pulled.
    pub fn is_unplugged(&self) -> bool {
        self.state().unplugged
    }

    /// The next final packet of instruction `ins` is processed (the device
    /// signs and advances its mark), then the device loses power before
    /// replying.
    pub fn unplug_after_next(&self, ins: u8) {
        self.state().unplug_after = Some(ins);
    }

    /// A slow reply: the next final packet of instruction `ins` is
    /// processed (the device signs and advances its mark), but its reply
    /// leaves the device only when the `later`-th APDU after it arrives
    /// (1: the next one), just before that APDU's own reply, and goes to
    /// whoever listens then (Speculos sends every reply to its newest
    /// client). The host has given up on it by then.
    pub fn delay_next_reply(&self, ins: u8, later: usize) {
        self.state().delay_after = Some((ins, later.max(1)));
    }

    /// A slow (or, longer than the host's timeout, a stuck) device: every
    /// APDU handed over by a transport takes `t` before the device answers
    /// it (and signs, if it is a sign); APDUs that arrive meanwhile are
    /// dropped, as the app drops them while it works. The reply goes to
    /// whoever listens when it is ready (with Speculos, the newest client).
    pub fn set_processing_delay(&self, t: Duration) {
        self.state().processing = t;
    }

    /// How many APDUs the device dropped (never answered) because a prompt
    /// was on screen or it was still working on another.
    pub fn dropped_apdus(&self) -> usize {
        self.state().dropped
    }

    /// Wait up to `t` until at least `n` APDUs have been dropped.
    pub fn wait_dropped(&self, n: usize, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        let mut st = self.state();
        while st.dropped < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.wait(st, left);
        }
        true
    }

    /// Model the app's "HWM disabled in flash" setting: signatures advance
    /// the watermark in RAM only, lost at the next power loss.
    pub fn set_hwm_in_ram_only(&self, on: bool) {
        self.state().hwm_in_ram_only = on;
    }

    /// Answer QUERY_ALL_HWM like old apps (12 bytes, no rounds).
    pub fn set_legacy_hwm_reply(&self, on: bool) {
        self.state().legacy_hwm_reply = on;
    }

    /// Behave like apps older than SIGN_WITH_HASH (0x6D00 for it).
    pub fn set_sign_with_hash_supported(&self, on: bool) {
        self.state().no_sign_with_hash = !on;
    }

    /// The main and test watermarks (with their flags) and the main chain.
    pub fn hwm(&self) -> (LedgerHwm, LedgerHwm, ChainId) {
        let st = self.state();
        (st.main, st.test, st.main_chain)
    }

    /// Set the device state directly (test setup without prompts).
    pub fn set_hwm(&self, chain: ChainId, main: LedgerHwm, test: LedgerHwm) {
        let mut st = self.state();
        st.main_chain = chain;
        st.main = main;
        st.test = test;
        st.persisted = (main, test);
    }

    /// Authorize a key directly (test setup without prompts).
    pub fn set_baking_key(&self, key: Option<(DerivationType, BipPath)>) {
        self.state().baking_key = key;
    }

    /// The authorized key.
    pub fn baking_key(&self) -> Option<(DerivationType, BipPath)> {
        self.state().baking_key.clone()
    }

    /// Every message the device signed, in order.
    pub fn signed(&self) -> Vec<Vec<u8>> {
        self.state().signed.clone()
    }

    /// The ed25519 public key of `path` (32 bytes).
    pub fn public_key(&self, derivation: DerivationType, path: &BipPath) -> [u8; 32] {
        derive_key(&self.state().seed, derivation, path)
            .verifying_key()
            .to_bytes()
    }
}

fn signable(d: DerivationType) -> bool {
    matches!(d, DerivationType::Ed25519 | DerivationType::Bip32Ed25519)
}

fn full_path(data: &[u8]) -> Option<BipPath> {
    match BipPath::decode_prefix(data) {
        Some((p, used)) if used == data.len() && !p.components().is_empty() => Some(p),
        _ => None,
    }
}

fn pubkey_reply(seed: &[u8; 32], d: DerivationType, p: &BipPath) -> Vec<u8> {
    if !signable(d) {
        return status(sw::WRONG_PARAM);
    }
    let pk = derive_key(seed, d, p).verifying_key().to_bytes();
    let mut data = vec![33, 0x02];
    data.extend_from_slice(&pk);
    reply(&data, sw::OK)
}

/// What became of an APDU handed to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Being answered.
    Accepted,
    /// Dropped: a prompt is on screen.
    Dropped,
    /// The device is unplugged.
    Unplugged,
}

/// Whether `raw` is the last packet (P1 bit 0x80) of instruction `ins`.
fn is_final_packet(raw: &[u8], ins: u8) -> bool {
    raw.len() >= 5 && raw[1] == ins && raw[2] & P1_LAST != 0
}

/// HID reports to and from a [`LedgerSim`]. Every transport of one device
/// shares its one stream of replies, as a USB device has.
pub struct SimHid {
    sim: LedgerSim,
    asm: FrameAssembler,
}

impl HidReports for SimHid {
    fn write_report(
        &mut self,
        report: &[u8; HID_REPORT_LEN],
        _timeout: Duration,
    ) -> Result<(), DeviceError> {
        let gen = {
            let st = self.sim.state();
            if st.unplugged {
                return Err(DeviceError::Unplugged {
                    detail: "simulated Ledger unplugged".into(),
                });
            }
            st.generation
        };
        match self.asm.push(report) {
            Ok(Some(apdu)) => {
                let channel = self.asm.channel().unwrap_or(0);
                self.asm = FrameAssembler::any_channel();
                let sim = self.sim.clone();
                // Replies are queued as reports (the device echoes the
                // channel), unless the device lost power meanwhile.
                let deliver = move |raw: Option<Vec<u8>>| {
                    let Some(frames) = raw.and_then(|r| encode_frames(channel, &r).ok()) else {
                        return;
                    };
                    let mut st = sim.state();
                    if st.generation == gen && !st.unplugged {
                        st.outbox.extend(frames.iter().map(|f| f.to_vec()));
                    }
                    sim.shared.cond.notify_all();
                };
                if self.sim.submit(apdu, deliver) == Submitted::Unplugged {
                    return Err(DeviceError::Unplugged {
                        detail: "simulated Ledger unplugged".into(),
                    });
                }
            }
            Ok(None) => {}
            // A device drops frames it cannot place.
            Err(_) => self.asm = FrameAssembler::any_channel(),
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Vec<u8>, DeviceError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.sim.state();
        loop {
            if st.unplugged {
                return Err(DeviceError::Unplugged {
                    detail: "simulated Ledger unplugged".into(),
                });
            }
            if let Some(r) = st.outbox.pop_front() {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DeviceError::timeout(
                    "a HID report from the simulated Ledger",
                    timeout,
                ));
            }
            st = self.sim.wait(st, left);
        }
    }
}
