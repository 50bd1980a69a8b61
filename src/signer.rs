//! Never-sign-below-HWM: a signer that releases signature bytes only after
//! its watermark advance is durable.

use std::sync::Arc;

use async_trait::async_trait;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::error::{Error, Refusal, Result};
use crate::failover::Ownership;
use crate::watermark::{Curve, Decision, KeyHash, PayloadHash, SignRequest, SignerGuard};

/// Something that can sign Tezos payloads with one key: a software key, a
/// remote signer, an HSM or a USB device. Implement it for your backend and
/// wrap it in a [`GuardedSigner`]; never hand the unwrapped signer to the
/// baker.
#[async_trait]
pub trait Signer: Send + Sync {
    /// The key's public key hash.
    fn key_hash(&self) -> KeyHash;

    /// Sign `payload` (the full bytes, magic byte included) the way the key's
    /// scheme signs Tezos payloads.
    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>>;

    /// Cheap pre-check: would this signer refuse this request (size, level range, scheme, kind)? Called before the watermark moves.
    // Parameter names are part of the documented signature; the default
    // uses neither.
    #[allow(unused_variables)]
    fn check(&self, request: &SignRequest, payload: &[u8]) -> Result<()> {
        Ok(())
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
/// [`sign`](GuardedSigner::sign): parse, check and advance the watermark
/// durably in one atomic step, then sign.
///
/// # Example
///
/// ```
/// use slashguard::memory::MemoryWatermarks;
/// use slashguard::{Ed25519Signer, GuardedSigner};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signer = GuardedSigner::new(MemoryWatermarks::new(), Ed25519Signer::generate());
/// let mut attestation = vec![0u8; 80];
/// attestation[0] = 0x13; // attestation
/// attestation[40..44].copy_from_slice(&100u32.to_be_bytes()); // level 100, round 0
/// signer.sign(&attestation).await.unwrap();
/// // The identical request may be signed again (same message) ...
/// signer.sign(&attestation).await.unwrap();
/// // ... but other bytes at the same (level, round) are refused.
/// attestation[79] = 1;
/// assert!(signer.sign(&attestation).await.unwrap_err().is_refusal());
/// # });
/// ```
pub struct GuardedSigner<G, S> {
    guard: G,
    signer: S,
    ownership: Option<Arc<Ownership>>,
}

impl<G: SignerGuard, S: Signer> GuardedSigner<G, S> {
    /// Guard `signer` with the watermarks in `guard`.
    pub fn new(guard: G, signer: S) -> Self {
        GuardedSigner {
            guard,
            signer,
            ownership: None,
        }
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

    /// Sign a consensus payload if, and only if, its watermark advance (or
    /// repeat) is durable first. Legacy, generic and unknown payloads are
    /// refused with [`Error::Payload`](crate::Error::Payload).
    pub async fn sign(&self, payload: &[u8]) -> Result<GuardedSignature> {
        let key = self.signer.key_hash();
        let request = SignRequest::parse(payload, key)?;
        self.check_ownership(&request, "before authorizing")?;
        // What the signer documents it would refuse must not move the mark:
        // a store left ahead of what was signed refuses every normal
        // request at or below it until an operator lowers it.
        self.signer.check(&request, payload)?;
        let backend = self.guard.backend();
        let span = tracing::debug_span!("authorize", %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend);
        let start = std::time::Instant::now();
        let result =
            tracing::Instrument::instrument(self.guard.authorize_one(&request), span).await;
        let latency = start.elapsed();
        if let Some(m) = crate::metrics::installed() {
            m.authorize(
                backend,
                &request.key,
                latency,
                crate::metrics::Outcome::of(&result),
            );
        }
        crate::metrics::note_refusal(&result);
        let decision = match result {
            Ok(d) => d,
            Err(e) => {
                let reason = crate::metrics::RefusalReason::of(&e).map(|r| r.as_str());
                tracing::warn!(key = %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend, latency_us = latency.as_micros() as u64, reason, error = %e, "signature withheld");
                return Err(e);
            }
        };
        // The signer's own error passes through unchanged: a device refusing
        // by its own watermark is a refusal, an unplugged device is
        // unavailable. The watermark has advanced either way, which is safe:
        // the same bytes can still be signed later as a repeat.
        let signed = self.signer.sign(payload).await;
        crate::metrics::note_refusal(&signed);
        let signature = match signed {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key = %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, error = %e, "signer failed after the watermark advanced; nothing released");
                return Err(self.with_stored_mark(&request, e).await);
            }
        };
        // Lost while authorizing or signing: the signature is dropped.
        self.check_ownership(&request, "before releasing the signature")?;
        if let Some(m) = crate::metrics::installed() {
            m.watermark(&request.key, request.mark);
        }
        tracing::debug!(key = %key, kind = %request.key.kind, level = request.mark.level, round = request.mark.round, backend, latency_us = latency.as_micros() as u64, ?decision, "signed");
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
