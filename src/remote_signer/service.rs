//! The signer's request handling, apart from any transport: the checks in
//! order (known key, version, magic byte, authentication, policy, all
//! before any watermark is touched), then [`GuardedSigner::sign`].
//! HTTP and the socket protocol both call [`SignerService::handle_sign`],
//! which sends a generic operation (0x03) to its own path and everything
//! else to [`SignerService::sign`], by the first byte alone.
//!
//! A service signs in *terms*: one for good ([`SignerService::new`], a
//! signer alone on its watermarks), or one per ownership of the baker
//! ([`SignerService::standby`], then [`activate`](SignerService::activate)
//! each time this process becomes the active signer, with the ownership
//! every key's [`GuardedSigner`] is fenced by).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, RwLock};
// tokio's clock, so that tests can move it.
use tokio::time::Instant;

use crate::failover::Ownership;
use crate::keys::PublicKey;
use crate::remote_signer::auth;
use crate::remote_signer::generic::{self, GenericOperation};
use crate::remote_signer::policy::{GenericRefusal, KeyPolicy, MagicBytes, PolicyRefusal};
use crate::remote_signer::served_key::ServedKey;
use crate::remote_signer::trace::TraceError;
use crate::signer::Signer;
use crate::watermark::{Decision, KeyHash, SignRequest, SignerGuard};
use crate::{Error, GuardedSigner};

/// How long one store probe of [`SignerService::health`] answers for:
/// `/healthz` is not authenticated, so however often it is asked, the
/// store (an etcd range read of every watermark) is asked at most this
/// often per term. The ownership and shutdown checks stay live.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Signature versions a client may ask for (octez 25 bakers send 3; only
/// tz4 signatures depend on it).
pub const VERSIONS: std::ops::RangeInclusive<u8> = 0..=3;

/// Settings of the whole service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The magic-byte allow list (`-M`).
    pub magic_bytes: MagicBytes,
    /// `Some`: every sign request must be authenticated by one of these
    /// keys (`--require-authentication`).
    pub authorized_keys: Option<Vec<PublicKey>>,
    /// Whether `known_keys` lists the keys.
    pub allow_list_known_keys: bool,
    /// Whether `bls_prove_possession` answers for tz4 keys.
    pub allow_proof_of_possession: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            magic_bytes: MagicBytes::consensus(),
            authorized_keys: None,
            allow_list_known_keys: false,
            allow_proof_of_possession: false,
        }
    }
}

/// Why a request got no signature. Each maps to an HTTP status and an
/// octez error trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Malformed request (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Authentication required and absent (401).
    #[error("authentication required: sign the request with an authorized key")]
    Unauthenticated,
    /// No authorized key verifies the authentication (403).
    #[error("authentication refused: no authorized key verifies the request's signature")]
    BadAuthentication,
    /// The key's or the service's policy refused (403).
    #[error("refused by policy: {0}")]
    Policy(#[from] PolicyRefusal),
    /// The operator did not enable this endpoint (403).
    #[error("{0} is not enabled on this signer")]
    NotEnabled(&'static str),
    /// The key is not served here (404).
    #[error("unknown key {0}")]
    UnknownKey(KeyHash),
    /// A watermark (or another safety rule) refused (409).
    #[error("refused: {0}")]
    Refused(Error),
    /// The service is shutting down; nothing more is signed (503).
    #[error("shutting down: no more signatures from this process")]
    ShuttingDown,
    /// This process is not the active signer of its baker: another host's
    /// signer owns it, or this one waits to take it over (503). Ask the
    /// other signer.
    #[error("standby: not the active signer ({0})")]
    Standby(String),
    /// This process lost the ownership of its baker (taken over, lease
    /// expired while paused or cut off from etcd) before the signature
    /// could be released; nothing was released (503).
    #[error("standby: not the active signer: {0}")]
    Fenced(Error),
    /// The device that holds the key did not sign: unplugged, locked, the
    /// wrong app open, no answer in time, a reply that did not fit the
    /// request, busy with earlier requests, or the key not authorized on
    /// it (503). Nothing was released; the device's client resynchronises
    /// before its next command, so a retry starts from a known state.
    /// Refusals by the device's own watermark or documented limits are
    /// [`Refused`](Self::Refused), not this.
    #[error("device: {0}")]
    Device(Error),
    /// The store did not answer (503); a retry may succeed.
    #[error("unavailable: {0}")]
    Unavailable(Error),
    /// Anything else (500).
    #[error("signer error: {0}")]
    Failed(Error),
}

impl ServiceError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_) => 400,
            ServiceError::Unauthenticated => 401,
            ServiceError::BadAuthentication
            | ServiceError::Policy(_)
            | ServiceError::NotEnabled(_) => 403,
            ServiceError::UnknownKey(_) => 404,
            ServiceError::Refused(_) => 409,
            ServiceError::ShuttingDown
            | ServiceError::Standby(_)
            | ServiceError::Fenced(_)
            | ServiceError::Device(_)
            | ServiceError::Unavailable(_) => 503,
            ServiceError::Failed(_) => 500,
        }
    }

    /// A short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Unauthenticated => "unauthenticated",
            ServiceError::BadAuthentication => "bad_authentication",
            ServiceError::Policy(PolicyRefusal::MagicByte(_)) => "magic_byte",
            ServiceError::Policy(PolicyRefusal::Generic(_)) => "generic_operation",
            ServiceError::Policy(_) => "policy",
            ServiceError::NotEnabled(_) => "not_enabled",
            ServiceError::UnknownKey(_) => "unknown_key",
            ServiceError::Refused(_) => "watermark",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::Standby(_) => "standby",
            ServiceError::Fenced(_) => "fenced",
            ServiceError::Device(_) => "device",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::Failed(_) => "error",
        }
    }

    /// The octez error trace sent to the client: the text of
    /// [`public_message`](Self::public_message).
    pub fn trace(&self) -> Vec<TraceError> {
        vec![TraceError::failure(self.public_message())]
    }

    /// What the client is told. Anyone who can reach a listener reads it,
    /// authenticated or not, so store and internal failures are told in
    /// generic words (the [`Display`](std::fmt::Display) text, with file
    /// paths, etcd keys, instance names and operator commands, goes to the
    /// signer's log only). Refusals the baker acts on keep their precise,
    /// non-secret reason: the watermark (key, requested and stored
    /// marks), the policy, the signer's documented limits.
    pub fn public_message(&self) -> String {
        use crate::Refusal;
        match self {
            // octez's own wording, which operators grep for.
            ServiceError::Policy(p @ PolicyRefusal::MagicByte(_)) => p.to_string(),
            ServiceError::Refused(e) => match e {
                Error::Refused(r @ (Refusal::Watermark(_) | Refusal::Limit(_))) => {
                    format!("slashguard: refused: {r}")
                }
                // The store allowed it; the device's own rule did not.
                Error::Refused(Refusal::SignerRefused { refusal, .. }) => {
                    format!("slashguard: refused by the signing device: {refusal}")
                }
                Error::Fenced { .. } => {
                    "slashguard: refused: this signer does not own the key's watermarks any more (fenced); nothing was signed".into()
                }
                Error::Damaged { .. } => {
                    "slashguard: refused: the watermark store is damaged; nothing is signed until the operator recovers it".into()
                }
                Error::Regressed { .. } => {
                    "slashguard: refused: the watermark store went backwards; nothing is signed until the operator repairs it".into()
                }
                e => format!(
                    "slashguard: refused by a safety rule ({}); nothing was signed",
                    crate::metrics::RefusalReason::of(e).map_or("other", |r| r.as_str())
                ),
            },
            ServiceError::Unavailable(e) => {
                let backend = match e {
                    Error::Unavailable { backend, .. } => backend,
                    _ => "watermark",
                };
                format!("slashguard: unavailable: the {backend} store did not answer; nothing was signed, a retry may succeed")
            }
            // Who owns the baker now, why this one stands by or lost it
            // (etcd errors, owner instances), is for the log.
            ServiceError::Standby(_) => "slashguard: standby: not the active signer".into(),
            ServiceError::Fenced(_) => {
                "slashguard: standby: not the active signer (this signer lost the ownership of its baker; nothing was released)".into()
            }
            ServiceError::Failed(_) => {
                "slashguard: signer error: no signature was released (the signer's log has the details)"
                    .into()
            }
            ServiceError::Device(e) => device_message(e),
            e => format!("slashguard: {e}"),
        }
    }

    fn from_guard(e: Error) -> Self {
        match e {
            Error::Payload(p) => ServiceError::BadRequest(p.to_string()),
            e @ Error::Fenced { .. } => ServiceError::Fenced(e),
            e if is_device_failure(&e) => ServiceError::Device(e),
            e if e.is_refusal() => ServiceError::Refused(e),
            e if e.is_unavailable() => ServiceError::Unavailable(e),
            e => ServiceError::Failed(e),
        }
    }
}

/// A sign request, from either transport.
#[derive(Debug, Clone, Copy)]
pub struct SignCall<'a> {
    /// The key asked for.
    pub pkh: KeyHash,
    /// The bytes to sign, magic byte first.
    pub data: &'a [u8],
    /// The raw authentication signature.
    pub authentication: Option<&'a [u8]>,
    /// The signature version asked for.
    pub version: Option<u8>,
}

/// A released signature.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature bytes (64 for tz1..tz3).
    pub signature: Vec<u8>,
    /// The parsed request.
    pub request: SignRequest,
    /// Advanced, or a repeat of the same bytes.
    pub decision: Decision,
}

/// A released signature of a generic operation (0x03): no watermark is
/// involved.
#[derive(Debug, Clone)]
pub struct SignedOperation {
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// The decoded operation that was signed.
    pub operation: GenericOperation,
}

/// What [`SignerService::handle_sign`] released.
#[derive(Debug, Clone)]
pub enum Released {
    /// A consensus payload, behind its watermark.
    Consensus(Signed),
    /// A generic operation the key's policy allows.
    Generic(SignedOperation),
}

impl Released {
    /// The signature bytes.
    pub fn signature(&self) -> &[u8] {
        match self {
            Released::Consensus(s) => &s.signature,
            Released::Generic(g) => &g.signature,
        }
    }
}

/// A withheld signature, with what was understood of the request (for the
/// log line).
#[derive(Debug)]
pub struct Withheld {
    /// Why.
    pub error: ServiceError,
    /// The parsed request, when the bytes parsed.
    pub request: Option<SignRequest>,
}

struct Entry {
    /// Its signer is shared by the guarded signers of every term.
    key: ServedKey,
    policy: KeyPolicy,
}

/// One term of signing: a guard and a guarded signer per key, fenced by
/// the term's ownership when there is one.
struct Term<G: ?Sized> {
    guard: Arc<G>,
    ownership: Option<Arc<Ownership>>,
    signers: BTreeMap<KeyHash, GuardedSigner<Arc<G>, Arc<dyn Signer>>>,
    /// The term's last store probe and when it was made; concurrent
    /// probes wait for one answer instead of each asking the store.
    health_probe: ProbeCache,
}

/// A store probe's answer and when it was asked.
type HealthProbe = (Instant, Result<(), String>);

/// A term's last store probe, shared by concurrent `/healthz` callers.
type ProbeCache = Arc<Mutex<Option<HealthProbe>>>;

/// Whether the service signs.
enum State<G: ?Sized> {
    Active(Term<G>),
    /// Not the active signer, and why.
    Standby(String),
    /// For good (shutdown).
    Closed,
}

/// The keys, their policies and the watermark store behind one signer
/// process.
pub struct SignerService<G: ?Sized> {
    keys: BTreeMap<KeyHash, Entry>,
    options: ServiceOptions,
    /// Every signature holds a read lock from its first check to its
    /// release; a change of state (a new term, standby, close) takes the
    /// write lock, so it waits for the signatures in flight and none
    /// starts on the old state after.
    state: RwLock<State<G>>,
}

impl<G: SignerGuard + ?Sized + 'static> SignerService<G> {
    /// A service for `keys` (software keys, or [`ServedKey`]s of either
    /// kind) that signs at once and for good, on the watermark store
    /// `guard` (a signer alone on its watermarks: a file store, whose lock
    /// decides which process signs).
    pub fn new<K: Into<ServedKey>>(
        guard: Arc<G>,
        keys: Vec<(K, KeyPolicy)>,
        options: ServiceOptions,
    ) -> Self {
        let service = Self::standby(keys, options, "not started");
        let term = service.term(guard, None);
        SignerService {
            state: RwLock::new(State::Active(term)),
            ..service
        }
    }

    /// A service for `keys` that signs nothing (every sign request gets
    /// [`ServiceError::Standby`] with `reason`) until
    /// [`activate`](Self::activate): a signer that shares its baker with
    /// another host, and signs only while it owns it. Give each key once:
    /// of two entries with one key hash only the last is served (the
    /// `slashguard signer` command refuses such a configuration, device
    /// keys included once their devices have answered).
    pub fn standby<K: Into<ServedKey>>(
        keys: Vec<(K, KeyPolicy)>,
        options: ServiceOptions,
        reason: impl Into<String>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(key, policy)| {
                let key: ServedKey = key.into();
                (key.key_hash(), Entry { key, policy })
            })
            .collect();
        SignerService {
            keys,
            options,
            state: RwLock::new(State::Standby(reason.into())),
        }
    }

    fn term(&self, guard: Arc<G>, ownership: Option<Arc<Ownership>>) -> Term<G> {
        let signers = self
            .keys
            .iter()
            .map(|(pkh, e)| {
                let signer = GuardedSigner::new(guard.clone(), e.key.signer());
                let signer = match &ownership {
                    Some(o) => signer.with_ownership(o.clone()),
                    None => signer,
                };
                (*pkh, signer)
            })
            .collect();
        Term {
            guard,
            ownership,
            signers,
            health_probe: Arc::default(),
        }
    }

    /// Begin a term: sign on `guard` while `ownership` (of the baker, from
    /// a [`FailoverPolicy`](crate::FailoverPolicy)) holds; every key's
    /// [`GuardedSigner`] is fenced by it
    /// ([`with_ownership`](GuardedSigner::with_ownership)), so once it is
    /// lost nothing more is released ([`ServiceError::Fenced`]) even
    /// before [`stand_by`](Self::stand_by) is called. `guard` should be
    /// fenced by the same ownership (an
    /// `EtcdWatermarks::fenced` handle, feature `etcd`). Waits for the signatures in flight of the
    /// previous state. `false`, and nothing changes, once the service is
    /// closed.
    pub async fn activate(&self, guard: Arc<G>, ownership: Arc<Ownership>) -> bool {
        let term = self.term(guard, Some(ownership));
        let mut state = self.state.write().await;
        if matches!(*state, State::Closed) {
            return false;
        }
        *state = State::Active(term);
        true
    }

    /// End the term: wait for the signatures in flight, then answer every
    /// sign request with [`ServiceError::Standby`] and `reason`, until the
    /// next [`activate`](Self::activate). A closed service stays closed.
    pub async fn stand_by(&self, reason: impl Into<String>) {
        let mut state = self.state.write().await;
        if !matches!(*state, State::Closed) {
            *state = State::Standby(reason.into());
        }
    }

    /// `true` while a term is running and its ownership, if any, is not
    /// known to be lost.
    pub async fn is_active(&self) -> bool {
        match &*self.state.read().await {
            State::Active(t) => t.ownership.as_ref().is_none_or(|o| !o.is_lost()),
            State::Standby(_) | State::Closed => false,
        }
    }

    /// The keys served.
    pub fn key_hashes(&self) -> Vec<KeyHash> {
        self.keys.keys().copied().collect()
    }

    /// The keys served, with what holds them.
    pub fn served_keys(&self) -> impl Iterator<Item = &ServedKey> {
        self.keys.values().map(|e| &e.key)
    }

    /// The options.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// Sign, if every check passes and the watermark advance (or repeat)
    /// is durable.
    pub async fn sign(&self, call: SignCall<'_>) -> Result<Signed, Withheld> {
        let request = self
            .keys
            .get(&call.pkh)
            .and_then(|_| SignRequest::parse(call.data, call.pkh).ok());
        let withheld = |error| Withheld { error, request };
        let state = self.state.read().await;
        let term = match &*state {
            State::Active(term) => term,
            State::Standby(why) => return Err(withheld(ServiceError::Standby(why.clone()))),
            State::Closed => return Err(withheld(ServiceError::ShuttingDown)),
        };
        let entry = self.admit(&call).map_err(withheld)?;
        entry
            .policy
            .check(call.data)
            .map_err(|p| withheld(p.into()))?;
        let signer = term
            .signers
            .get(&call.pkh)
            .ok_or_else(|| withheld(ServiceError::UnknownKey(call.pkh)))?;
        let signed = signer
            .sign(call.data)
            .await
            .map_err(|e| withheld(ServiceError::from_guard(e)))?;
        drop(state);
        Ok(Signed {
            signature: signed.signature,
            request: signed.request,
            decision: signed.decision,
        })
    }

    /// The checks every sign request passes first, in octez's order: key
    /// known, version, magic byte, authentication.
    fn admit(&self, call: &SignCall<'_>) -> Result<&Entry, ServiceError> {
        let entry = self
            .keys
            .get(&call.pkh)
            .ok_or(ServiceError::UnknownKey(call.pkh))?;
        if let Some(v) = call.version {
            if !VERSIONS.contains(&v) {
                return Err(ServiceError::BadRequest(format!(
                    "unsupported signature version {v} (this signer accepts {} to {})",
                    VERSIONS.start(),
                    VERSIONS.end()
                )));
            }
        }
        if call.data.is_empty() {
            return Err(ServiceError::BadRequest("nothing to sign".into()));
        }
        self.options.magic_bytes.check(call.data)?;
        if let Some(authorized) = &self.options.authorized_keys {
            let sig = call.authentication.ok_or(ServiceError::Unauthenticated)?;
            auth::verify(authorized, &call.pkh, call.data, sig)
                .ok_or(ServiceError::BadAuthentication)?;
        }
        Ok(entry)
    }

    /// A sign request from either transport: a generic operation (first
    /// byte 0x03) is decoded and checked against the key's allowed
    /// operation kinds, then signed without a watermark, by the active
    /// signer only (as consensus payloads are); anything else goes to
    /// [`sign`](Self::sign), which never decodes operations.
    pub async fn handle_sign(&self, call: SignCall<'_>) -> Result<Released, Withheld> {
        if call.data.first() != Some(&generic::MAGIC) {
            return self.sign(call).await.map(Released::Consensus);
        }
        let withheld = |error| Withheld {
            error,
            request: None,
        };
        let state = self.state.read().await;
        match &*state {
            State::Active(term) => {
                if let Some(why) = term.ownership.as_ref().and_then(|o| o.lost_reason()) {
                    return Err(withheld(ServiceError::Standby(format!("fenced: {why}"))));
                }
            }
            State::Standby(why) => return Err(withheld(ServiceError::Standby(why.clone()))),
            State::Closed => return Err(withheld(ServiceError::ShuttingDown)),
        }
        let entry = self.admit(&call).map_err(withheld)?;
        // A device signs consensus operations only: refused before the
        // operation is even decoded.
        let Some(key) = entry.key.software_key() else {
            return Err(withheld(
                PolicyRefusal::Generic(GenericRefusal::DeviceKey).into(),
            ));
        };
        let operation = entry
            .policy
            .check_generic(call.data, &call.pkh)
            .map_err(|p| withheld(p.into()))?;
        let signature = key.sign_bytes(call.data);
        drop(state);
        Ok(Released::Generic(SignedOperation {
            signature,
            operation,
        }))
    }

    /// The public key of a served key.
    pub fn public_key(&self, pkh: &KeyHash) -> Result<PublicKey, ServiceError> {
        self.keys
            .get(pkh)
            .map(|e| e.key.public_key())
            .ok_or(ServiceError::UnknownKey(*pkh))
    }

    /// The hashes of the authorized keys, or `None` when authentication is
    /// not required.
    pub fn authorized_keys(&self) -> Option<Vec<KeyHash>> {
        self.options
            .authorized_keys
            .as_ref()
            .map(|k| k.iter().map(|p| p.hash()).collect())
    }

    /// The served keys, when the operator allows listing them.
    pub fn known_keys(&self) -> Result<Vec<KeyHash>, ServiceError> {
        if self.options.allow_list_known_keys {
            Ok(self.key_hashes())
        } else {
            Err(ServiceError::NotEnabled("listing known keys"))
        }
    }

    /// The tz4 proof of possession of a served key, when the operator
    /// allows it. `public_key`, when given, must be the key's own.
    pub fn prove_possession(
        &self,
        pkh: &KeyHash,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, ServiceError> {
        if !self.options.allow_proof_of_possession {
            return Err(ServiceError::NotEnabled("proof of possession"));
        }
        let entry = self.keys.get(pkh).ok_or(ServiceError::UnknownKey(*pkh))?;
        let proof = match (entry.key.proof_of_possession(), entry.key.device_name()) {
            (Some(p), _) => p.to_vec(),
            (None, Some(_)) => {
                return Err(ServiceError::BadRequest(format!(
                    "{pkh} is held by a device that reported no proof of possession"
                )))
            }
            (None, None) => {
                return Err(ServiceError::BadRequest(format!(
                    "{pkh} is not a tz4 key: it has no proof of possession"
                )))
            }
        };
        if public_key.is_some_and(|k| k != entry.key.public_key().as_bytes()) {
            return Err(ServiceError::BadRequest(
                "the public key given is not this key's (override keys are not supported)".into(),
            ));
        }
        Ok(proof)
    }

    /// Ready to sign: the active signer (its ownership, if any, not lost),
    /// keys loaded, the store answers. The `Err` text is for anyone who
    /// asks (`/healthz` is not authenticated): who owns the baker, why this
    /// signer stands by and the store's error are in the signer's log.
    pub async fn health(&self) -> Result<(), String> {
        let (guard, probe) = self.active_term().await?;
        if self.keys.is_empty() {
            return Err("no keys loaded".into());
        }
        let answer = Self::probe_store(&guard, &probe).await;
        // The term may have ended, or its ownership been lost, while the
        // store was asked (a slow etcd is when leases expire): ready only
        // if the same term is still the active one.
        let (_, now) = self.active_term().await?;
        if !Arc::ptr_eq(&now, &probe) {
            return Err("standby: not the active signer".into());
        }
        answer
    }

    /// The active term's guard and probe cache, or why there is none.
    async fn active_term(&self) -> Result<(Arc<G>, ProbeCache), String> {
        match &*self.state.read().await {
            State::Closed => Err("shutting down".into()),
            State::Standby(_) => Err("standby: not the active signer".into()),
            State::Active(t) => {
                if t.ownership.as_ref().is_some_and(|o| o.is_lost()) {
                    return Err("standby: not the active signer (fenced)".into());
                }
                Ok((t.guard.clone(), t.health_probe.clone()))
            }
        }
    }

    /// Ask the store whether it answers, at most once per
    /// [`HEALTH_PROBE_INTERVAL`] per term.
    async fn probe_store(guard: &Arc<G>, probe: &Mutex<Option<HealthProbe>>) -> Result<(), String> {
        // Asked without the state lock: a slow store does not hold up a
        // change of term. At most one probe per interval reaches the
        // store; callers meanwhile share its answer.
        let mut last = probe.lock().await;
        if let Some((at, answer)) = &*last {
            if at.elapsed() < HEALTH_PROBE_INTERVAL {
                return answer.clone();
            }
        }
        let answer = guard.watermarks().await.map(|_| ()).map_err(|e| {
            let backend = match e {
                Error::Unavailable { backend, .. } => backend,
                _ => "watermark",
            };
            format!("{backend} store: not answering (the signer's log has the details)")
        });
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// Stop signing for good: wait for the signatures in flight, then
    /// refuse every later request with [`ServiceError::ShuttingDown`]. The
    /// term's guarded signers (and their hold on its ownership) are
    /// dropped, so the caller can release the ownership next.
    pub async fn close(&self) {
        *self.state.write().await = State::Closed;
    }
}

/// Whether `e` is a failure of the device that holds the key (not a
/// refusal by its watermark or limits, which stay refusals): a
/// [`DeviceError`](crate::usb::DeviceError) anywhere in its chain.
#[cfg(feature = "usb")]
fn is_device_failure(e: &Error) -> bool {
    !e.is_refusal() && device_error(e).is_some()
}

#[cfg(not(feature = "usb"))]
fn is_device_failure(_: &Error) -> bool {
    false
}

#[cfg(feature = "usb")]
fn device_error(e: &Error) -> Option<&crate::usb::DeviceError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(d) = c.downcast_ref::<crate::usb::DeviceError>() {
            return Some(d);
        }
        cur = c.source();
    }
    None
}

/// What a client is told of a device failure: what state the device is
/// in, in words an operator acts on, without serials, paths or addresses
/// (those are in the signer's log).
#[cfg(feature = "usb")]
fn device_message(e: &Error) -> String {
    use crate::usb::DeviceError as D;
    let retry = ", a retry may succeed";
    let (what, retry) = match device_error(e) {
        Some(D::NoDevice { .. } | D::Unplugged { .. }) => {
            ("the signing device is unplugged or not found", retry)
        }
        Some(D::Locked { .. }) => ("the signing device (or its key) is locked", retry),
        Some(D::WrongApp { .. }) => (
            "the Ledger does not run the Tezos Baking app (open it on the device)",
            retry,
        ),
        Some(D::Timeout { .. } | D::ApprovalTimeout { .. }) => {
            ("the signing device did not answer in time", retry)
        }
        Some(D::Backlog { .. }) => (
            "device busy: earlier requests to this device would not all be answered within the request deadline",
            retry,
        ),
        Some(D::Busy { .. }) => ("the signing device is claimed by another process", retry),
        Some(D::NotReady { .. }) => ("the signing device is still starting", retry),
        Some(D::Protocol(_)) => (
            "the signing device's reply did not fit the request (a late or damaged reply); the link is resynchronised before the next request",
            retry,
        ),
        Some(D::NotAuthorized) => (
            "the key is not authorized for baking on the Ledger; an operator must authorize it on the device",
            "",
        ),
        Some(D::KeyNotFound { .. }) => ("the key is not on the signing device", ""),
        Some(D::PermissionDenied { .. }) => ("this host may not open the signing device", ""),
        _ => ("the signing device failed", retry),
    };
    format!("slashguard: unavailable: {what}; nothing was signed{retry}")
}

#[cfg(not(feature = "usb"))]
fn device_message(_: &Error) -> String {
    "slashguard: unavailable: the signing device failed; nothing was signed".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftwareKey;
    use crate::memory::MemoryWatermarks;
    use crate::watermark::{ConsensusKind, Curve, WatermarkKey};

    fn attestation(level: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; 80];
        p[0] = 0x13;
        p[1..5].copy_from_slice(&[0x7a, 0x06, 0xa7, 0x70]);
        p[37] = 0x15;
        p[40..44].copy_from_slice(&level.to_be_bytes());
        p[44..48].copy_from_slice(&0u32.to_be_bytes());
        p
    }

    type Service = SignerService<MemoryWatermarks>;

    fn service(options: ServiceOptions) -> (Service, KeyHash, Arc<MemoryWatermarks>) {
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let pkh = key.public_key().hash();
        let guard = Arc::new(MemoryWatermarks::new());
        (
            SignerService::new(guard.clone(), vec![(key, KeyPolicy::default())], options),
            pkh,
            guard,
        )
    }

    fn call(pkh: KeyHash, data: &[u8]) -> SignCall<'_> {
        SignCall {
            pkh,
            data,
            authentication: None,
            version: None,
        }
    }

    async fn level(guard: &MemoryWatermarks, pkh: KeyHash) -> Option<u32> {
        let key = WatermarkKey {
            chain: crate::watermark::ChainId([0x7a, 0x06, 0xa7, 0x70]),
            key: pkh,
            kind: ConsensusKind::Attestation,
        };
        guard.watermark(&key).await.unwrap().map(|w| w.mark.level)
    }

    #[tokio::test]
    async fn refusals_before_the_watermark_leave_it_untouched() {
        let client = SoftwareKey::generate(Curve::P256).unwrap();
        let (s, pkh, guard) = service(ServiceOptions {
            authorized_keys: Some(vec![client.public_key()]),
            ..ServiceOptions::default()
        });
        let data = attestation(10, 1);
        let e = s.sign(call(pkh, &data)).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::Unauthenticated));
        assert_eq!(e.request.unwrap().mark.level, 10, "parsed for the log");
        let bad = SignCall {
            authentication: Some(&[0; 64]),
            ..call(pkh, &data)
        };
        assert!(matches!(
            s.sign(bad).await.unwrap_err().error,
            ServiceError::BadAuthentication
        ));
        let v9 = SignCall {
            version: Some(9),
            ..call(pkh, &data)
        };
        assert_eq!(s.sign(v9).await.unwrap_err().error.status(), 400);
        let mut generic = data.clone();
        generic[0] = 0x03;
        let e = s.sign(call(pkh, &generic)).await.unwrap_err().error;
        assert_eq!((e.status(), e.reason()), (403, "magic_byte"));
        let other = SoftwareKey::generate(Curve::Ed25519)
            .unwrap()
            .public_key()
            .hash();
        assert_eq!(
            s.sign(call(other, &data)).await.unwrap_err().error.status(),
            404
        );
        assert_eq!(
            level(&guard, pkh).await,
            None,
            "no refusal touched the watermark"
        );
        let auth = client.sign_bytes(&auth::message(&pkh, &data));
        let ok = SignCall {
            authentication: Some(&auth),
            ..call(pkh, &data)
        };
        s.sign(ok).await.unwrap();
        assert_eq!(level(&guard, pkh).await, Some(10));
    }

    #[tokio::test]
    async fn after_close_nothing_is_signed() {
        let (s, pkh, guard) = service(ServiceOptions::default());
        let first = attestation(5, 1);
        s.sign(call(pkh, &first)).await.unwrap();
        assert!(s.health().await.is_ok());
        s.close().await;
        let e = s
            .sign(call(pkh, &attestation(6, 1)))
            .await
            .unwrap_err()
            .error;
        assert!(matches!(e, ServiceError::ShuttingDown));
        assert_eq!(e.status(), 503);
        // Not even a repeat of the signed bytes.
        assert!(s.sign(call(pkh, &first)).await.is_err());
        assert_eq!(level(&guard, pkh).await, Some(5));
        assert!(s.health().await.is_err());
    }

    #[tokio::test]
    async fn close_waits_for_a_signature_in_flight() {
        let (s, pkh, _) = service(ServiceOptions::default());
        let s = Arc::new(s);
        // Hold the gate as a signature in flight does.
        let in_flight = s.state.read().await;
        let closer = {
            let s = s.clone();
            tokio::spawn(async move { s.close().await })
        };
        tokio::task::yield_now().await;
        assert!(
            !closer.is_finished(),
            "close waits for the signature in flight"
        );
        drop(in_flight);
        closer.await.unwrap();
        assert!(s.sign(call(pkh, &attestation(1, 1))).await.is_err());
    }

    /// A standby signs nothing; a term fenced by an ownership signs until
    /// the ownership is lost, then nothing more, even before `stand_by`.
    #[tokio::test]
    async fn signs_only_during_a_term_whose_ownership_holds() {
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let pkh = key.public_key().hash();
        let guard = Arc::new(MemoryWatermarks::new());
        let s: Service = SignerService::standby(
            vec![(key, KeyPolicy::default())],
            ServiceOptions::default(),
            "waiting for the baker",
        );
        let e = s.sign(call(pkh, &attestation(5, 1))).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::Standby(_)));
        assert_eq!((e.error.status(), e.error.reason()), (503, "standby"));
        assert!(e
            .error
            .to_string()
            .starts_with("standby: not the active signer"));
        assert_eq!(e.request.unwrap().mark.level, 5, "parsed for the log");
        assert!(s.health().await.unwrap_err().contains("standby"));
        assert!(!s.is_active().await);

        let (own, notifier) = Ownership::new(7, "host-a", None);
        assert!(s.activate(guard.clone(), Arc::new(own)).await);
        assert!(s.is_active().await);
        s.health().await.unwrap();
        s.sign(call(pkh, &attestation(5, 1))).await.unwrap();
        assert_eq!(level(&guard, pkh).await, Some(5));

        // Lost (taken over, lease expired): fenced before the watermark.
        notifier.lose("taken over by host-b");
        let e = s.sign(call(pkh, &attestation(6, 1))).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::Fenced(_)), "{:?}", e.error);
        assert_eq!((e.error.status(), e.error.reason()), (503, "fenced"));
        assert!(e
            .error
            .to_string()
            .starts_with("standby: not the active signer"));
        assert!(e.error.to_string().contains("taken over by host-b"));
        assert_eq!(level(&guard, pkh).await, Some(5), "not moved");
        assert!(s.health().await.unwrap_err().contains("fenced"));
        assert!(!s.is_active().await);

        s.stand_by("lost the baker").await;
        let e = s.sign(call(pkh, &attestation(7, 1))).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::Standby(ref w) if w == "lost the baker"));

        // A new term signs again, above what the old one signed.
        let (own, _notifier) = Ownership::new(9, "host-a", None);
        assert!(s.activate(guard.clone(), Arc::new(own)).await);
        assert!(s.sign(call(pkh, &attestation(5, 2))).await.is_err());
        s.sign(call(pkh, &attestation(8, 1))).await.unwrap();

        // Closed is for good: no later term.
        s.close().await;
        let (own, _notifier) = Ownership::new(11, "host-a", None);
        assert!(!s.activate(guard.clone(), Arc::new(own)).await);
        s.stand_by("again").await;
        let e = s.sign(call(pkh, &attestation(9, 1))).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::ShuttingDown));
    }

    /// A change of term waits for the signature in flight, like close.
    #[tokio::test]
    async fn stand_by_waits_for_a_signature_in_flight() {
        let (s, pkh, _) = service(ServiceOptions::default());
        let s = Arc::new(s);
        let in_flight = s.state.read().await;
        let change = {
            let s = s.clone();
            tokio::spawn(async move { s.stand_by("lost").await })
        };
        tokio::task::yield_now().await;
        assert!(!change.is_finished());
        drop(in_flight);
        change.await.unwrap();
        let e = s.sign(call(pkh, &attestation(1, 1))).await.unwrap_err();
        assert!(matches!(e.error, ServiceError::Standby(_)));
    }
    /// A store that fails every authorization with a chosen error.
    struct Failing(std::sync::Mutex<Option<Error>>);

    #[async_trait::async_trait]
    impl SignerGuard for Failing {
        async fn authorize(&self, _: &[SignRequest]) -> crate::Result<Vec<Decision>> {
            Err(self.0.lock().unwrap().take().expect("one call"))
        }
        async fn watermark(
            &self,
            _: &WatermarkKey,
        ) -> crate::Result<Option<crate::watermark::Watermark>> {
            Ok(None)
        }
        async fn watermarks(
            &self,
        ) -> crate::Result<Vec<(WatermarkKey, crate::watermark::Watermark)>> {
            Ok(Vec::new())
        }
        async fn set_marks(
            &self,
            _: &[(WatermarkKey, crate::watermark::Mark)],
            _: crate::watermark::SetMode,
        ) -> crate::Result<()> {
            Ok(())
        }
    }

    /// A store whose `watermarks` (the health probe) is counted and can
    /// be made to fail.
    #[derive(Default)]
    struct Probed {
        probes: std::sync::atomic::AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        /// Held by a test: a probe waits for it, as on a slow store.
        gate: tokio::sync::Mutex<()>,
        inner: MemoryWatermarks,
    }

    #[async_trait::async_trait]
    impl SignerGuard for Probed {
        async fn authorize(&self, r: &[SignRequest]) -> crate::Result<Vec<Decision>> {
            self.inner.authorize(r).await
        }
        async fn watermark(
            &self,
            k: &WatermarkKey,
        ) -> crate::Result<Option<crate::watermark::Watermark>> {
            self.inner.watermark(k).await
        }
        async fn watermarks(
            &self,
        ) -> crate::Result<Vec<(WatermarkKey, crate::watermark::Watermark)>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.probes.fetch_add(1, SeqCst);
            drop(self.gate.lock().await);
            tokio::task::yield_now().await;
            if self.down.load(SeqCst) {
                return Err(Error::Unavailable {
                    backend: "etcd",
                    detail: "no leader at 10.9.8.7:2379".into(),
                    source: None,
                });
            }
            self.inner.watermarks().await
        }
        async fn set_marks(
            &self,
            m: &[(WatermarkKey, crate::watermark::Mark)],
            mode: crate::watermark::SetMode,
        ) -> crate::Result<()> {
            self.inner.set_marks(m, mode).await
        }
    }

    /// A service with one software key on a [`Probed`] store.
    fn probed_service() -> (Arc<Probed>, Arc<SignerService<Probed>>) {
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let store = Arc::new(Probed::default());
        let s = Arc::new(SignerService::new(
            store.clone(),
            vec![(key, KeyPolicy::default())],
            ServiceOptions::default(),
        ));
        (store, s)
    }

    /// `/healthz` is not authenticated: a flood of it reaches the store
    /// at most once per interval, a store failure shows within one
    /// interval, and a new term probes afresh.
    #[tokio::test(start_paused = true)]
    async fn health_probes_the_store_at_most_once_per_interval() {
        use std::sync::atomic::Ordering::SeqCst;
        let (store, s) = probed_service();
        let asks: Vec<_> = (0..100)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.health().await })
            })
            .collect();
        for a in asks {
            assert_eq!(a.await.unwrap(), Ok(()));
        }
        assert_eq!(store.probes.load(SeqCst), 1, "one probe for 100 asks");

        store.down.store(true, SeqCst);
        assert_eq!(
            s.health().await,
            Ok(()),
            "within the interval: the last answer"
        );
        assert_eq!(store.probes.load(SeqCst), 1);
        tokio::time::advance(HEALTH_PROBE_INTERVAL).await;
        let e = s.health().await.unwrap_err();
        assert_eq!(
            e, "etcd store: not answering (the signer's log has the details)",
            "no address leaks"
        );
        assert_eq!(store.probes.load(SeqCst), 2);
        assert_eq!(s.health().await, Err(e), "the failure is kept too");
        assert_eq!(store.probes.load(SeqCst), 2);

        // A new term (a takeover) does not inherit the old answer.
        store.down.store(false, SeqCst);
        let (own, _notifier) = Ownership::new(8, "host-a", None);
        assert!(s.activate(store.clone(), Arc::new(own)).await);
        assert_eq!(s.health().await, Ok(()));
        assert_eq!(store.probes.load(SeqCst), 3);
        // Standing by answers at once, without the store.
        s.stand_by("lost").await;
        assert!(s.health().await.unwrap_err().contains("standby"));
        assert_eq!(store.probes.load(SeqCst), 3);
    }

    /// A probe that answers after the term ended (stand-by, or the
    /// ownership lost) does not report the signer ready.
    #[tokio::test]
    async fn health_is_not_ready_when_the_term_ends_during_the_probe() {
        use std::sync::atomic::Ordering::SeqCst;
        let (store, s) = probed_service();
        let (own, notifier) = Ownership::new(8, "host-a", None);
        let own = Arc::new(own);
        for end in ["stand-by", "lost"] {
            assert!(s.activate(store.clone(), own.clone()).await);
            let before = store.probes.load(SeqCst);
            let held = store.gate.lock().await;
            let probe = tokio::spawn({
                let s = s.clone();
                async move { s.health().await }
            });
            while store.probes.load(SeqCst) == before {
                tokio::task::yield_now().await;
            }
            // The store is being asked; the term ends meanwhile.
            match end {
                "stand-by" => s.stand_by("lost the election").await,
                _ => notifier.lose("lease expired"),
            }
            drop(held);
            let e = probe.await.unwrap().unwrap_err();
            assert!(e.contains("standby"), "{end}: {e}");
        }
    }

    const SECRET_PATH: &str = "/srv/secret-place/watermarks";

    async fn reply_to(error: Error) -> (ServiceError, String) {
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let pkh = key.public_key().hash();
        let s = SignerService::new(
            Arc::new(Failing(std::sync::Mutex::new(Some(error)))),
            vec![(key, KeyPolicy::default())],
            ServiceOptions::default(),
        );
        let e = s
            .sign(call(pkh, &attestation(7, 1)))
            .await
            .unwrap_err()
            .error;
        let trace = e.trace();
        assert_eq!(trace.len(), 1);
        let msg = trace[0].msg.clone();
        (e, msg)
    }

    #[tokio::test]
    async fn store_and_internal_failures_reach_the_client_in_generic_words() {
        let io = || std::io::Error::other("disk on fire at /dev/sdz");
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::io(SECRET_PATH, io()), 500, "signer error"),
            (
                Error::Corrupt {
                    what: SECRET_PATH.into(),
                    problem: crate::FormatError::Truncated {
                        needed: 10,
                        have: 1,
                    },
                },
                500,
                "signer error",
            ),
            (
                Error::Locked {
                    path: SECRET_PATH.into(),
                },
                500,
                "signer error",
            ),
            (
                Error::Unavailable {
                    backend: "etcd",
                    detail: format!("10.9.8.7:2379 refused, lock {SECRET_PATH}"),
                    source: Some(Box::new(io())),
                },
                503,
                "the etcd store did not answer",
            ),
            (
                Error::Damaged {
                    path: SECRET_PATH.into(),
                    detail: "slot 1 bad".into(),
                    recover: format!("slashguard watermark set-level --file {SECRET_PATH}"),
                },
                409,
                "damaged",
            ),
            (
                Error::Regressed {
                    what: SECRET_PATH.into(),
                    floor: "10".into(),
                    found: "nothing".into(),
                    recovery: format!("restore {SECRET_PATH}"),
                },
                409,
                "went backwards",
            ),
            (
                Error::Fenced {
                    identity: "tz1...".into(),
                    reason: "owned by backup@host-b.internal since revision 12".into(),
                },
                503,
                "standby: not the active signer",
            ),
        ];
        for (error, status, words) in cases {
            let detail = error.to_string();
            let (e, msg) = reply_to(error).await;
            assert_eq!(e.status(), status, "{detail}");
            assert!(msg.contains(words), "{msg:?} for {detail}");
            for secret in [
                "secret-place",
                "/dev/sdz",
                "10.9.8.7",
                "host-b",
                "set-level",
            ] {
                assert!(!msg.contains(secret), "{msg:?} leaks {secret:?}");
            }
            // The full detail is still there for the log.
            assert!(e.to_string().len() > msg.len() / 2);
        }
    }

    #[tokio::test]
    async fn refusals_the_baker_acts_on_keep_their_precise_reason() {
        let (s, pkh, _) = service(ServiceOptions::default());
        s.sign(call(pkh, &attestation(10, 1))).await.unwrap();
        let e = s
            .sign(call(pkh, &attestation(9, 1)))
            .await
            .unwrap_err()
            .error;
        let msg = &e.trace()[0].msg;
        assert_eq!(e.status(), 409);
        assert!(msg.contains(&pkh.to_string()), "{msg}");
        assert!(msg.contains("stored watermark"), "{msg}");
        let (e, msg) = reply_to(Error::Refused(crate::Refusal::Limit(
            crate::SignerLimit::PayloadTooLong {
                signer: "Ledger",
                len: 300,
                max: 235,
            },
        )))
        .await;
        assert_eq!(e.status(), 409);
        assert!(msg.contains("at most 235 bytes"), "{msg}");
        // Policy and magic-byte refusals are unchanged.
        let mut generic = attestation(9, 1);
        generic[0] = 0x03;
        let e = s.sign(call(pkh, &generic)).await.unwrap_err().error;
        assert_eq!(e.trace()[0].msg, "magic byte 0x03 not allowed");
    }

    /// `03 ‖ branch ‖` one transaction by `source` (fee 1000, counter 5,
    /// gas 1527, storage 257, 1 tez to tz1 0x22..).
    fn transfer(source: &KeyHash) -> Vec<u8> {
        let mut v = vec![0x03];
        v.extend_from_slice(&[0xbb; 32]);
        v.extend_from_slice(&[108, source.curve as u8]);
        v.extend_from_slice(&source.hash);
        v.extend_from_slice(&[0xe8, 0x07, 0x05, 0xf7, 0x0b, 0x81, 0x02]);
        v.extend_from_slice(&[0xc0, 0x84, 0x3d, 0x00, 0x00]);
        v.extend_from_slice(&[0x22; 20]);
        v.push(0x00);
        v
    }

    #[tokio::test]
    async fn a_generic_operation_is_signed_only_as_the_policy_allows_and_moves_no_watermark() {
        use crate::remote_signer::generic::OperationKind;
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let public = key.public_key();
        let pkh = public.hash();
        let other = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let other_pkh = other.public_key().hash();
        let guard = Arc::new(MemoryWatermarks::new());
        let allow = KeyPolicy {
            operations: [OperationKind::Transaction].into(),
            ..KeyPolicy::default()
        };
        let s = SignerService::new(
            guard.clone(),
            vec![(key, allow), (other, KeyPolicy::default())],
            ServiceOptions {
                magic_bytes: MagicBytes::consensus_and_generic(),
                ..ServiceOptions::default()
            },
        );
        let op = transfer(&pkh);
        let r = s.handle_sign(call(pkh, &op)).await.unwrap();
        let Released::Generic(g) = &r else {
            panic!("{r:?}")
        };
        assert!(public.verify(&op, r.signature()));
        assert_eq!(g.operation.contents[0].source, pkh);
        assert!(guard.watermarks().await.unwrap().is_empty(), "no watermark");
        // The other key lists no kinds; a transfer of another source; the
        // consensus path still works through the same entry point.
        let e = s
            .handle_sign(call(other_pkh, &transfer(&other_pkh)))
            .await
            .unwrap_err()
            .error;
        assert_eq!((e.status(), e.reason()), (403, "generic_operation"));
        assert!(e.trace()[0].msg.contains("signs no generic operations"));
        let e = s
            .handle_sign(call(pkh, &transfer(&other_pkh)))
            .await
            .unwrap_err()
            .error;
        assert!(e.trace()[0].msg.contains("not this key"), "{e}");
        let r = s.handle_sign(call(pkh, &attestation(3, 1))).await.unwrap();
        assert!(matches!(r, Released::Consensus(_)));
        // `sign` itself never takes the generic path.
        assert!(s.sign(call(pkh, &op)).await.is_err());
        // Without 0x03 on the magic-byte list nothing generic is signed.
        let (strict, strict_pkh, _) = service(ServiceOptions::default());
        let e = strict
            .handle_sign(call(strict_pkh, &transfer(&strict_pkh)))
            .await
            .unwrap_err()
            .error;
        assert_eq!(e.reason(), "magic_byte");
        // After close, nothing generic either.
        s.close().await;
        let e = s.handle_sign(call(pkh, &op)).await.unwrap_err().error;
        assert!(matches!(e, ServiceError::ShuttingDown));
    }

    #[tokio::test]
    async fn a_standby_tells_clients_only_that_it_stands_by() {
        let key = SoftwareKey::generate(Curve::Ed25519).unwrap();
        let pkh = key.public_key().hash();
        let s: Service = SignerService::standby(
            vec![(key, KeyPolicy::default())],
            ServiceOptions::default(),
            "waiting for the baker: owned by backup@host-b.internal, etcd 10.9.8.7:2379",
        );
        let e = s
            .sign(call(pkh, &attestation(1, 1)))
            .await
            .unwrap_err()
            .error;
        assert_eq!((e.status(), e.reason()), (503, "standby"));
        let msg = &e.trace()[0].msg;
        assert_eq!(msg, "slashguard: standby: not the active signer");
        assert!(e.to_string().contains("host-b"), "the log keeps it");
        let health = s.health().await.unwrap_err();
        assert_eq!(health, "standby: not the active signer");
    }
}
