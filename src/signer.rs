//! Never-sign-below-HWM: a signer that releases signature bytes only after
//! its watermark advance is durable.

use std::sync::Arc;

use async_trait::async_trait;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::error::{Error, Refusal, Result};
use crate::failover::Ownership;
use crate::watermark::{
    Curve, Decision, KeyHash, KeyRole, PayloadError, PayloadHash, RefusalReason, SignRequest,
    SignerGuard, StoredSignature, Watermark, WatermarkRefusal,
};

/// Something that can sign Tezos payloads with one key: a software key, a
/// remote signer, an HSM or a USB device. Implement it for your backend and
/// wrap it in a [`GuardedSigner`]; never hand the unwrapped signer to the
/// baker.
#[async_trait]
pub trait Signer: Send + Sync {
    /// The key's public key hash.
    fn key_hash(&self) -> KeyHash;

    /// Sign `payload` (the full bytes, magic byte included) the way the key's
    /// scheme signs Tezos payloads. At most
    /// [`MAX_SIGNATURE_LEN`](crate::watermark::MAX_SIGNATURE_LEN) bytes.
    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>>;

    /// Whether signing the same bytes twice always gives the same
    /// signature (ed25519 and BLS do; ECDSA in an HSM or KMS usually draws
    /// a random nonce). A repeat whose stored signature is missing is
    /// re-signed only for a deterministic signer, and refused otherwise.
    /// The default, `false`, is the safe answer.
    fn deterministic(&self) -> bool {
        false
    }

    /// Whether the signer keeps a watermark of its own that moves when it
    /// signs (the Ledger Tezos Baking app, TezSign): a signature it made
    /// cannot be taken back, even if it is never released. The guard is
    /// then read afresh ([`SignerGuard::reload`]) before such a signer is
    /// asked, so that what the store already refuses or holds a signature
    /// for (another host signed it before a failover) never reaches the
    /// device. The default, `false`, suits software keys, for which an
    /// unreleased signature costs only CPU time.
    fn has_own_watermark(&self) -> bool {
        false
    }

    /// Cheap pre-check: would this signer refuse this request (size, level range, scheme, kind)? Called before the watermark moves.
    // Parameter names are part of the documented signature; the default
    // uses neither.
    #[allow(unused_variables)]
    fn check(&self, request: &SignRequest, payload: &[u8]) -> Result<()> {
        Ok(())
    }
}

// One key shared by several guarded signers (a remote signer builds new
// ones, fenced by a new ownership, each time it becomes active again).
#[async_trait]
impl<S: Signer + ?Sized> Signer for Arc<S> {
    fn key_hash(&self) -> KeyHash {
        (**self).key_hash()
    }
    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        (**self).sign(payload).await
    }
    fn deterministic(&self) -> bool {
        (**self).deterministic()
    }
    fn has_own_watermark(&self) -> bool {
        (**self).has_own_watermark()
    }
    fn check(&self, request: &SignRequest, payload: &[u8]) -> Result<()> {
        (**self).check(request, payload)
    }
}

/// A software ed25519 (tz1) key, for tests, examples and remote-signer
/// deployments that keep keys in memory. Signs blake2b-256 of the payload,
/// as Tezos does.
pub struct Ed25519Signer {
    key: SigningKey,
    hash: KeyHash,
}

impl Ed25519Signer {
    /// From a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let hash = blake2b_160(key.verifying_key().as_bytes());
        Ed25519Signer {
            key,
            hash: KeyHash {
                curve: Curve::Ed25519,
                hash,
            },
        }
    }

    /// A random key.
    pub fn generate() -> Self {
        Self::from_seed(SigningKey::generate(&mut rand_core::OsRng).to_bytes())
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({})", self.hash)
    }
}

fn blake2b_160(bytes: &[u8]) -> [u8; 20] {
    use blake2::digest::{consts::U20, Digest};
    let mut h = blake2::Blake2b::<U20>::new();
    h.update(bytes);
    h.finalize().into()
}

#[async_trait]
impl Signer for Ed25519Signer {
    fn key_hash(&self) -> KeyHash {
        self.hash
    }
    fn deterministic(&self) -> bool {
        true
    }
    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let digest = PayloadHash::of(payload);
        Ok(self.key.sign(&digest.0).to_bytes().to_vec())
    }
}

/// What a [`GuardedSigner`] released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedSignature {
    /// The parsed request.
    pub request: SignRequest,
    /// Whether the watermark advanced or this was a repeat of the same bytes.
    pub decision: Decision,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// A signer behind a watermark guard. The only way to a signature is
/// [`sign`](GuardedSigner::sign): parse exactly, sign (nothing released
/// yet), then advance the watermark durably WITH the signature in one
/// atomic step, then release. A repeat of the same bytes at the stored mark
/// returns the signature stored with it, never a second one.
///
/// # Example
///
/// ```
/// use slashguard::memory::MemoryWatermarks;
/// use slashguard::{Ed25519Signer, GuardedSigner};
///
/// // A tz1 attestation as a baker sends it (formats.md section 1):
/// // 0x13, chain id, branch, tag 21, slot, level, round, block payload hash.
/// fn attestation(level: u32, block_payload_hash: u8) -> Vec<u8> {
///     let mut b = vec![0x13, 0x7a, 0x06, 0xa7, 0x70]; // mainnet
///     b.extend_from_slice(&[0x5c; 32]); // branch
///     b.push(21); // attestation
///     b.extend_from_slice(&3u16.to_be_bytes()); // slot
///     b.extend_from_slice(&level.to_be_bytes());
///     b.extend_from_slice(&0u32.to_be_bytes()); // round
///     b.extend_from_slice(&[block_payload_hash; 32]);
///     b
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signer = GuardedSigner::new(MemoryWatermarks::new(), Ed25519Signer::generate());
/// let first = signer.sign(&attestation(100, 0xa1)).await.unwrap();
/// // The identical request returns the signature released the first time ...
/// let again = signer.sign(&attestation(100, 0xa1)).await.unwrap();
/// assert_eq!(again.signature, first.signature);
/// // ... but other bytes at the same (level, round) are refused.
/// assert!(signer.sign(&attestation(100, 0xb2)).await.unwrap_err().is_refusal());
/// # });
/// ```
pub struct GuardedSigner<G, S> {
    guard: G,
    signer: S,
    role: KeyRole,
    ownership: Option<Arc<Ownership>>,
}

impl<G: SignerGuard, S: Signer> GuardedSigner<G, S> {
    /// Guard `signer`, a consensus key, with the watermarks in `guard`.
    pub fn new(guard: G, signer: S) -> Self {
        GuardedSigner {
            guard,
            signer,
            role: KeyRole::Consensus,
            ownership: None,
        }
    }

    /// Declare what the key signs for. A [`KeyRole::Companion`] key signs
    /// only tz4 attestations (0x13, tag 41); it must be a tz4 key.
    ///
    /// Errors: [`Error::Payload`] ([`PayloadError::CompanionScheme`]) for a
    /// companion that is not a tz4 key.
    pub fn with_role(mut self, role: KeyRole) -> Result<Self> {
        let curve = self.signer.key_hash().curve;
        if role == KeyRole::Companion && curve != Curve::Bls {
            return Err(PayloadError::CompanionScheme(curve).into());
        }
        self.role = role;
        Ok(self)
    }

    /// What the key signs for.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// Sign only while `ownership` (of the baker's identity, from a
    /// [`FailoverPolicy`](crate::FailoverPolicy)) holds: it is checked
    /// before the watermark is authorized and again before the signature
    /// is released, and once it is lost nothing more is signed
    /// ([`Error::Fenced`]). Use it for an active baker whose watermarks are
    /// not shared with its backup (file watermarks under a
    /// `LocalLockPolicy` or etcd ownership): a lease-bound ownership is
    /// lost before the lease can expire on the server, so the primary
    /// stops before a backup can take the identity. Share one ownership
    /// between the signers of a baker with an `Arc`.
    pub fn with_ownership(mut self, ownership: impl Into<Arc<Ownership>>) -> Self {
        self.ownership = Some(ownership.into());
        self
    }

    /// The ownership fencing this signer, if any.
    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_deref()
    }

    /// The ownership step of [`sign`](Self::sign), run before authorize and
    /// before release: [`Error::Fenced`] once the ownership is lost.
    fn check_ownership(&self, request: &SignRequest, stage: &str) -> Result<()> {
        let Some(own) = &self.ownership else {
            return Ok(());
        };
        let Some(reason) = own.lost_reason() else {
            return Ok(());
        };
        let key = self.signer.key_hash();
        tracing::warn!(key = %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, holder = own.holder(), fence = own.fence(), %reason, stage, "signature withheld: ownership lost");
        let err = Error::Fenced {
            identity: key.to_string(),
            reason: format!(
                "{} lost ownership (fence {}) {stage}: {reason}",
                own.holder(),
                own.fence()
            ),
        };
        let result = Err(err);
        crate::metrics::note_refusal(&result);
        result
    }

    /// The watermark store.
    pub fn guard(&self) -> &G {
        &self.guard
    }

    /// The key this signer signs with.
    pub fn key_hash(&self) -> KeyHash {
        self.signer.key_hash()
    }

    /// The wrapped signer (to inspect it; signing through it directly
    /// bypasses the guard).
    pub fn signer(&self) -> &S {
        &self.signer
    }

    /// Sign a consensus payload if, and only if, its watermark advance (or
    /// repeat) is durable before the signature leaves. Payloads a baker
    /// does not send are refused with [`Error::Payload`]; a repeat returns
    /// the stored signature; a repeat whose signature is not stored, for a
    /// signer that is not [deterministic](Signer::deterministic), is
    /// refused ([`RefusalReason::RepeatWithoutSignature`]).
    pub async fn sign(&self, payload: &[u8]) -> Result<GuardedSignature> {
        let request = SignRequest::parse_as(payload, self.signer.key_hash(), self.role)?;
        self.check_ownership(&request, "before authorizing")?;
        // What the signer documents it would refuse (size, level range,
        // scheme) is refused before anything else.
        self.signer.check(&request, payload)?;
        // A signer with a watermark of its own cannot take a signature
        // back: the store is read afresh first (etcd: one read; the file
        // and memory stores hold the truth already), so that a repeat is
        // answered, and a refusal made, without asking the device.
        if self.signer.has_own_watermark() {
            self.guard.reload(&request.key).await?;
        }
        // 1. The same bytes were signed at this mark: the same signature.
        if let Some(stored) = self.guard.stored_signature(&request).await? {
            return self.release(request, Decision::Repeat, stored.as_bytes().to_vec());
        }
        // What the guard already knows it will refuse, the signer is not
        // asked to sign.
        self.precheck(&request).await?;
        // A guard that keeps no signature (a device's own watermark) is
        // asked first, as the device moves its mark when it signs.
        if !self.guard.keeps_signatures() {
            let decision = self.authorize(&request).await?;
            if decision == Decision::Repeat && !self.signer.deterministic() {
                return Err(self.repeat_refused(&request));
            }
            let signature = self.sign_unreleased(&request, payload).await?;
            return self.release(request, decision, signature);
        }
        // 2. Sign; nothing is released yet.
        let fresh = self.sign_unreleased(&request, payload).await?;
        let stored = StoredSignature::new(&fresh).ok_or_else(|| Error::Signer {
            detail: format!(
                "{} returned a signature of {} bytes; 1 to {} are expected",
                request.key.key,
                fresh.len(),
                crate::watermark::MAX_SIGNATURE_LEN
            ),
            source: None,
        })?;
        let request = SignRequest {
            signature: Some(stored),
            ..request
        };
        // 3. One durable step: the mark, the payload hash and the signature.
        let decision = self.authorize(&request).await?;
        // 4. Release: the fresh signature after an advance, the stored one
        // for a repeat.
        let signature = match decision {
            Decision::Advanced => fresh,
            Decision::Repeat => self.repeat_signature(&request, fresh).await?,
        };
        self.release(request, decision, signature)
    }

    /// The guard's precheck; a refusal is reported as the authorization's
    /// would be (metrics outcome, refusal count, log).
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let start = std::time::Instant::now();
        let result = self.guard.precheck(request).await;
        if result.is_err() {
            self.report_refusal(request, start.elapsed(), &result);
        }
        result
    }

    fn report_refusal<T>(
        &self,
        request: &SignRequest,
        latency: std::time::Duration,
        result: &Result<T>,
    ) {
        let backend = self.guard.backend();
        if let Some(m) = crate::metrics::installed() {
            m.authorize(
                backend,
                &request.key,
                latency,
                crate::metrics::Outcome::of(result),
            );
        }
        crate::metrics::note_refusal(result);
        if let Err(e) = result {
            let reason = crate::metrics::RefusalReason::of(e).map(|r| r.as_str());
            tracing::warn!(key = %request.key.key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend, latency_us = latency.as_micros() as u64, reason, error = %e, "signature withheld");
        }
    }

    /// `authorize_one` with its span, metrics and refusal log.
    async fn authorize(&self, request: &SignRequest) -> Result<Decision> {
        let key = request.key.key;
        let backend = self.guard.backend();
        let span = tracing::debug_span!("authorize", %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend);
        let start = std::time::Instant::now();
        let result = tracing::Instrument::instrument(self.guard.authorize_one(request), span).await;
        let latency = start.elapsed();
        if result.is_ok() {
            if let Some(m) = crate::metrics::installed() {
                m.authorize(
                    backend,
                    &request.key,
                    latency,
                    crate::metrics::Outcome::of(&result),
                );
            }
        } else {
            self.report_refusal(request, latency, &result);
        }
        result
    }

    /// Ask the signer. Its own error passes through unchanged: a device
    /// refusing by its own watermark is a refusal, an unplugged device is
    /// unavailable. Nothing is released on an error.
    async fn sign_unreleased(&self, request: &SignRequest, payload: &[u8]) -> Result<Vec<u8>> {
        let signed = self.signer.sign(payload).await;
        crate::metrics::note_refusal(&signed);
        match signed {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::warn!(key = %request.key.key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, error = %e, "signer failed; nothing released");
                Err(self.with_stored_mark(request, e).await)
            }
        }
    }

    /// The signature to release for an authorized repeat: the stored one;
    /// else the fresh one only if the signer is deterministic (then they
    /// are equal); else a refusal.
    async fn repeat_signature(&self, request: &SignRequest, fresh: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(stored) = self.guard.stored_signature(request).await? {
            return Ok(stored.as_bytes().to_vec());
        }
        if self.signer.deterministic() {
            return Ok(fresh);
        }
        let refusal = self.repeat_refused(request);
        tracing::warn!(key = %request.key.key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, error = %refusal, "signature withheld");
        Err(refusal)
    }

    fn repeat_refused(&self, request: &SignRequest) -> Error {
        WatermarkRefusal {
            key: request.key,
            stored: Box::new(Watermark {
                mark: request.mark,
                payload_hash: Some(request.payload_hash),
                signature: None,
            }),
            requested: request.mark,
            reason: RefusalReason::RepeatWithoutSignature,
        }
        .into()
    }

    /// Release a signature, unless the ownership was lost while the store
    /// was asked or the signer signed: then it is dropped.
    fn release(
        &self,
        request: SignRequest,
        decision: Decision,
        signature: Vec<u8>,
    ) -> Result<GuardedSignature> {
        self.check_ownership(&request, "before releasing the signature")?;
        if let Some(m) = crate::metrics::installed() {
            m.watermark(&request.key, request.mark);
        }
        tracing::debug!(key = %request.key.key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend = self.guard.backend(), ?decision, "signed");
        Ok(GuardedSignature {
            request,
            decision,
            signature,
        })
    }

    /// A refusal by the signer (a device with its own watermark or limits)
    /// after the store was asked, reported with what the store now holds.
    /// Other errors pass through unchanged.
    async fn with_stored_mark(&self, request: &SignRequest, e: Error) -> Error {
        let Error::Refused(refusal) = e else {
            return e;
        };
        match self.guard.watermark(&request.key).await {
            Ok(stored) => Error::Refused(Refusal::SignerRefused {
                refusal: Box::new(refusal),
                backend: self.guard.backend(),
                key: request.key,
                stored: stored.map(|w| w.mark),
            }),
            Err(read) => {
                tracing::warn!(key = %request.key, error = %read, "could not read the store's mark after the signer refused");
                Error::Refused(refusal)
            }
        }
    }
}
