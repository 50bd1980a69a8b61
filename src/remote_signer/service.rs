//! The signer's request handling, apart from any transport: the checks in
//! order (known key, version, magic byte, authentication, policy, all
//! before any watermark is touched), then [`GuardedSigner::sign`].
//! HTTP and the socket protocol both call it.
//!
//! A service signs in *terms*: one for good ([`SignerService::new`], a
//! signer alone on its watermarks), or one per ownership of the baker
//! ([`SignerService::standby`], then [`activate`](SignerService::activate)
//! each time this process becomes the active signer, with the ownership
//! every key's [`GuardedSigner`] is fenced by).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::RwLock;

use crate::failover::Ownership;
use crate::keys::{PublicKey, SoftwareKey};
use crate::remote_signer::auth;
use crate::remote_signer::policy::{KeyPolicy, MagicBytes, PolicyRefusal};
use crate::remote_signer::trace::TraceError;
use crate::watermark::{Decision, KeyHash, SignRequest, SignerGuard};
use crate::{Error, GuardedSigner};

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
            ServiceError::Policy(_) => "policy",
            ServiceError::NotEnabled(_) => "not_enabled",
            ServiceError::UnknownKey(_) => "unknown_key",
            ServiceError::Refused(_) => "watermark",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::Standby(_) => "standby",
            ServiceError::Fenced(_) => "fenced",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::Failed(_) => "error",
        }
    }

    /// The octez error trace.
    pub fn trace(&self) -> Vec<TraceError> {
        let msg = match self {
            // octez's own wording, which operators grep for.
            ServiceError::Policy(p @ PolicyRefusal::MagicByte(_)) => p.to_string(),
            e => format!("slashguard: {e}"),
        };
        vec![TraceError::failure(msg)]
    }

    fn from_guard(e: Error) -> Self {
        match e {
            Error::Payload(p) => ServiceError::BadRequest(p.to_string()),
            e @ Error::Fenced { .. } => ServiceError::Fenced(e),
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
    /// Shared by the guarded signers of every term.
    key: Arc<SoftwareKey>,
    public: PublicKey,
    policy: KeyPolicy,
    /// tz4 only, computed once at start.
    proof_of_possession: Option<Vec<u8>>,
}

/// One term of signing: a guard and a guarded signer per key, fenced by
/// the term's ownership when there is one.
struct Term<G: ?Sized> {
    guard: Arc<G>,
    ownership: Option<Arc<Ownership>>,
    signers: BTreeMap<KeyHash, GuardedSigner<Arc<G>, Arc<SoftwareKey>>>,
}

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
    /// A service for `keys` that signs at once and for good, on the
    /// watermark store `guard` (a signer alone on its watermarks: a file
    /// store, whose lock decides which process signs).
    pub fn new(
        guard: Arc<G>,
        keys: Vec<(SoftwareKey, KeyPolicy)>,
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
    /// another host, and signs only while it owns it.
    pub fn standby(
        keys: Vec<(SoftwareKey, KeyPolicy)>,
        options: ServiceOptions,
        reason: impl Into<String>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(key, policy)| {
                let public = key.public_key();
                let proof_of_possession = key.proof_of_possession();
                (
                    public.hash(),
                    Entry {
                        key: Arc::new(key),
                        public,
                        policy,
                        proof_of_possession,
                    },
                )
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
                let signer = GuardedSigner::new(guard.clone(), e.key.clone());
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
        let entry = self
            .keys
            .get(&call.pkh)
            .ok_or_else(|| withheld(ServiceError::UnknownKey(call.pkh)))?;
        if let Some(v) = call.version {
            if !VERSIONS.contains(&v) {
                return Err(withheld(ServiceError::BadRequest(format!(
                    "unsupported signature version {v} (this signer accepts {} to {})",
                    VERSIONS.start(),
                    VERSIONS.end()
                ))));
            }
        }
        if call.data.is_empty() {
            return Err(withheld(ServiceError::BadRequest("nothing to sign".into())));
        }
        self.options
            .magic_bytes
            .check(call.data)
            .map_err(|p| withheld(p.into()))?;
        if let Some(authorized) = &self.options.authorized_keys {
            let sig = call
                .authentication
                .ok_or_else(|| withheld(ServiceError::Unauthenticated))?;
            auth::verify(authorized, &call.pkh, call.data, sig)
                .ok_or_else(|| withheld(ServiceError::BadAuthentication))?;
        }
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

    /// The public key of a served key.
    pub fn public_key(&self, pkh: &KeyHash) -> Result<PublicKey, ServiceError> {
        self.keys
            .get(pkh)
            .map(|e| e.public)
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
        let proof = entry.proof_of_possession.clone().ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "{pkh} is not a tz4 key: it has no proof of possession"
            ))
        })?;
        if public_key.is_some_and(|k| k != entry.public.as_bytes()) {
            return Err(ServiceError::BadRequest(
                "the public key given is not this key's (override keys are not supported)".into(),
            ));
        }
        Ok(proof)
    }

    /// Ready to sign: the active signer (its ownership, if any, not lost),
    /// keys loaded, the store answers.
    pub async fn health(&self) -> Result<(), String> {
        let guard = match &*self.state.read().await {
            State::Closed => return Err("shutting down".into()),
            State::Standby(why) => return Err(format!("standby: not the active signer ({why})")),
            State::Active(t) => {
                if let Some(why) = t.ownership.as_ref().and_then(|o| o.lost_reason()) {
                    return Err(format!("standby: not the active signer (fenced: {why})"));
                }
                t.guard.clone()
            }
        };
        if self.keys.is_empty() {
            return Err("no keys loaded".into());
        }
        // Asked without the state lock: a slow store does not hold up a
        // change of term.
        guard
            .watermarks()
            .await
            .map(|_| ())
            .map_err(|e| format!("watermark store: {e}"))
    }

    /// Stop signing for good: wait for the signatures in flight, then
    /// refuse every later request with [`ServiceError::ShuttingDown`]. The
    /// term's guarded signers (and their hold on its ownership) are
    /// dropped, so the caller can release the ownership next.
    pub async fn close(&self) {
        *self.state.write().await = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
