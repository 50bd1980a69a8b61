//! [`LedgerSigner`]: the crate's [`Signer`] on a Ledger running the Tezos
//! Baking app, and a [`WatermarkDevice`] for its watermark.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use ed25519_dalek::Verifier as _;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::signer::Signer;
use crate::usb::device_guard::{device_refusal, DeviceMarks, DeviceRule, WatermarkDevice};
use crate::usb::error::DeviceError;
use crate::usb::ledger::rule::check_request;
use crate::usb::ledger::{
    apdu, tezos_signature, AllHwm, AppVersion, BakingApp, BipPath, DerivationType, DeviceMark,
    LedgerPublicKey, LedgerTimeouts,
};
use crate::usb::transport::ApduTransport;
use crate::watermark::{
    ChainId, ConsensusKind, KeyHash, Mark, PayloadHash, SignRequest, WatermarkKey,
};

/// Which key a [`LedgerSigner`] signs with, and its deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Derivation path (default `44'/1729'/0'/0'`).
    pub path: BipPath,
    /// Derivation type (default ed25519).
    pub derivation: DerivationType,
    /// Command and approval deadlines.
    pub timeouts: LedgerTimeouts,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: BipPath::tezos_default(),
            derivation: DerivationType::Ed25519,
            timeouts: LedgerTimeouts::default(),
        }
    }
}

/// Whether the Ledger is waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalState {
    /// Nothing is shown on the device.
    Idle,
    /// The device shows a prompt; slashguard waits until `deadline`, then
    /// fails with [`DeviceError::ApprovalTimeout`].
    Waiting {
        /// What the prompt asks.
        action: String,
        /// When slashguard stops waiting.
        deadline: Instant,
    },
}

type App = BakingApp<Box<dyn ApduTransport>>;

struct Inner {
    app: Mutex<App>,
    config: LedgerConfig,
    public_key: LedgerPublicKey,
    key_hash: KeyHash,
    version: AppVersion,
    approval: watch::Sender<ApprovalState>,
}

/// A Ledger running the Tezos Baking app, signing with one key.
///
/// Every signature goes through the device's own watermark check
/// (SIGN_WITH_HASH; the returned hash must be the hash of the message sent,
/// which rejects a stale reply, and ed25519 signatures are verified against
/// the device key before they are returned; apps too old for
/// SIGN_WITH_HASH get SIGN). Wrap it in a
/// [`GuardedSigner`](crate::GuardedSigner) with a file or etcd store so that
/// slashguard's mark advances durably first.
///
/// Clones share the device. Blocking USB I/O runs on tokio's blocking pool,
/// one exchange at a time.
#[derive(Clone)]
pub struct LedgerSigner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LedgerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LedgerSigner({} at {})",
            self.inner.key_hash, self.inner.config.path
        )
    }
}

fn lock(m: &Mutex<App>) -> std::sync::MutexGuard<'_, App> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<R, DeviceError> + Send + 'static,
) -> Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Signer {
            detail: format!("device task failed: {e}"),
            source: None,
        })?
        .map_err(Error::from)
}

impl LedgerSigner {
    /// Check that the Tezos Baking app is open and read the key at
    /// `config.path`. The key need not be authorized yet (a failover
    /// standby must not be).
    pub async fn connect(
        transport: impl ApduTransport + 'static,
        config: LedgerConfig,
    ) -> Result<Self> {
        let transport: Box<dyn ApduTransport> = Box::new(transport);
        let cfg = config.clone();
        let (app, version, public_key) = blocking(move || {
            let mut app = BakingApp::new(transport, cfg.timeouts);
            let version = app.require_baking_app()?;
            let pk = app.get_public_key(&cfg.path, cfg.derivation)?;
            Ok((app, version, pk))
        })
        .await?;
        let key_hash = public_key.key_hash()?;
        tracing::info!(key = %key_hash, path = %config.path, app = ?version, "Ledger Tezos Baking app connected");
        Ok(LedgerSigner {
            inner: Arc::new(Inner {
                app: Mutex::new(app),
                config,
                public_key,
                key_hash,
                version,
                approval: watch::channel(ApprovalState::Idle).0,
            }),
        })
    }

    /// The key's hash (the same as [`Signer::key_hash`] and
    /// [`WatermarkDevice::key_hash`]).
    pub fn key_hash(&self) -> KeyHash {
        self.inner.key_hash
    }

    /// The key's public key as the app returned it.
    pub fn public_key(&self) -> &LedgerPublicKey {
        &self.inner.public_key
    }

    /// The app version found at connect.
    pub fn app_version(&self) -> AppVersion {
        self.inner.version
    }

    /// Path, derivation and deadlines.
    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// Follow prompts on the device: [`ApprovalState::Waiting`] while a
    /// person must approve (authorize, reset, setup).
    pub fn approval_state(&self) -> watch::Receiver<ApprovalState> {
        self.inner.approval.subscribe()
    }

    /// Run blocking app commands on the device, one caller at a time.
    async fn with_app<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut App) -> std::result::Result<R, DeviceError> + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner.clone();
        blocking(move || f(&mut lock(&inner.app))).await
    }

    async fn with_approval<R: Send + 'static>(
        &self,
        action: String,
        f: impl FnOnce(&mut App) -> std::result::Result<R, DeviceError> + Send + 'static,
    ) -> Result<R> {
        let wait = self.inner.config.timeouts.approval;
        let inner = self.inner.clone();
        let announce = action.clone();
        let r = blocking(move || {
            let mut app = lock(&inner.app);
            // Announced only once this caller holds the device, so the
            // deadline shown is the one that applies.
            tracing::warn!(action = %announce, timeout = ?wait, "waiting for a person to approve on the Ledger");
            inner.approval.send_replace(ApprovalState::Waiting {
                action: announce,
                deadline: Instant::now() + wait,
            });
            let r = f(&mut app);
            inner.approval.send_replace(ApprovalState::Idle);
            r
        })
        .await;
        match &r {
            Ok(_) => tracing::info!(%action, "approved on the Ledger"),
            Err(e) => tracing::warn!(%action, error = %e, "not approved on the Ledger"),
        }
        r
    }

    /// QUERY_ALL_HWM.
    pub async fn device_hwm(&self) -> Result<AllHwm> {
        self.with_app(|app| app.query_all_hwm()).await
    }

    /// The key the device has authorized for baking, if any.
    pub async fn authorized_key(&self) -> Result<Option<(DerivationType, BipPath)>> {
        self.with_app(|app| app.query_auth_key_with_curve()).await
    }

    /// Whether this signer's key is the device's baking key.
    pub async fn is_authorized(&self) -> Result<bool> {
        let cfg = &self.inner.config;
        Ok(self.authorized_key().await? == Some((cfg.derivation, cfg.path.clone())))
    }

    /// AUTHORIZE_BAKING for this key (a person approves on the device).
    pub async fn authorize(&self) -> Result<()> {
        let cfg = self.inner.config.clone();
        let pk = self
            .with_approval(
                format!("authorize {} for baking", self.inner.key_hash),
                move |app| app.authorize_baking(&cfg.path, cfg.derivation),
            )
            .await?;
        self.expect_same_key(&pk)
    }

    /// DEAUTHORIZE: the device will not sign until a key is authorized
    /// again.
    pub async fn deauthorize(&self) -> Result<()> {
        self.with_app(|app| app.deauthorize()).await
    }

    /// SETUP in one approval: main chain `chain`, both watermarks at
    /// `level` (round 0), this key authorized. Refuses, before asking the
    /// device, if either current watermark is above (level, 0), or if the
    /// device already serves another main chain. If both are exactly at
    /// (level, 0) it only authorizes the key (SETUP would clear the
    /// attestation flags there).
    pub async fn setup(&self, chain: ChainId, level: u32) -> Result<()> {
        let cfg = self.inner.config.clone();
        let key = self.inner.key_hash;
        let hwm = self.device_hwm().await?;
        if hwm.main_chain.0 != [0; 4] && hwm.main_chain != chain {
            return Err(Error::Invalid(format!(
                "the Ledger's main chain is {}, not {chain}; refusing to change it",
                hwm.main_chain
            )));
        }
        if !self.check_raise(&hwm, chain, level)? {
            // Both watermarks are already exactly at (level, 0): SETUP would
            // clear their flags. Only the key may be missing.
            if !self.is_authorized().await? {
                self.authorize().await?;
            }
            return Ok(());
        }
        let pk = self
            .with_approval(
                format!("set up baking for {key} on {chain} at level {level}"),
                move |app| app.setup(chain, level, level, &cfg.path, cfg.derivation),
            )
            .await?;
        self.expect_same_key(&pk)?;
        self.verify_raised(chain, level).await
    }

    fn expect_same_key(&self, pk: &LedgerPublicKey) -> Result<()> {
        if pk.key_hash()? != self.inner.key_hash {
            return Err(Error::Signer {
                detail: format!(
                    "the Ledger answered with key {} instead of {}",
                    pk.key_hash()?,
                    self.inner.key_hash
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// `Ok(true)` if RESET/SETUP to `level` is needed, `Ok(false)` if the
    /// watermark is already at or above it everywhere it matters, a refusal
    /// if it would lower anything.
    fn check_raise(&self, hwm: &AllHwm, chain: ChainId, level: u32) -> Result<bool> {
        let target = Mark { level, round: 0 };
        let mut needed = false;
        let mut at_target = false;
        let chains: &[(&str, DeviceMark)] = &[("main", hwm.main), ("test", hwm.test)];
        for (name, m) in chains {
            let mark = Mark {
                level: m.level,
                // An old app does not report its round: assume the worst
                // at its level.
                round: m.round.unwrap_or(u32::MAX),
            };
            if mark > target {
                tracing::warn!(%chain, watermark = name, device = %mark, requested = %target, "refusing to lower the Ledger watermark");
                return Err(device_refusal(
                    WatermarkKey {
                        chain,
                        key: self.inner.key_hash,
                        kind: ConsensusKind::Block,
                    },
                    mark,
                    target,
                )
                .into());
            }
            if mark == target {
                at_target = true;
            } else {
                needed = true;
            }
        }
        if needed && at_target {
            return Err(Error::Invalid(format!(
                "one Ledger watermark is exactly at ({level}, 0) and the other below: \
                 RESET would clear the attestation flag of the first; raise to {} instead",
                level + 1
            )));
        }
        Ok(needed)
    }

    async fn verify_raised(&self, chain: ChainId, level: u32) -> Result<()> {
        let after = self.device_hwm().await?.for_chain(chain);
        if after.level < level {
            return Err(Error::Signer {
                detail: format!(
                    "the Ledger reports level {} after being raised to {level}",
                    after.level
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// Raise both device watermarks to (level, 0) with RESET, after a
    /// person approves. Never lowers: reads the watermarks first and
    /// refuses if either is above (level, 0); does nothing if both are
    /// already at it. Bounded by the approval timeout; while waiting,
    /// [`approval_state`](Self::approval_state) is `Waiting`.
    pub async fn raise_hwm(&self, chain: ChainId, level: u32) -> Result<()> {
        let hwm = self.device_hwm().await?;
        if !self.check_raise(&hwm, chain, level)? {
            tracing::info!(%chain, level, "Ledger watermark already at the requested level");
            return Ok(());
        }
        self.with_approval(
            format!("reset the Ledger high watermark to {level}"),
            move |app| app.reset(level),
        )
        .await?;
        self.verify_raised(chain, level).await
    }
}

#[async_trait]
impl Signer for LedgerSigner {
    fn key_hash(&self) -> KeyHash {
        self.inner.key_hash
    }

    /// Ed25519 and BLS signatures are deterministic; ECDSA (tz2, tz3) is
    /// not assumed to be.
    fn deterministic(&self) -> bool {
        matches!(
            self.inner.key_hash.curve,
            crate::watermark::Curve::Ed25519 | crate::watermark::Curve::Bls
        )
    }

    /// The device's own high watermark moves when it signs.
    fn has_own_watermark(&self) -> bool {
        true
    }

    /// Sign on the device. A refusal by the device watermark comes back as
    /// [`Error::Refused`] when the device mark read right after explains it
    /// (request below it), otherwise as [`Error::Signer`] whose source is
    /// [`DeviceError::RefusedByDeviceWatermark`];
    /// [`is_device_refusal`](crate::usb::is_device_refusal) recognizes both.
    /// The app's documented limits ([`check_request`]): one data packet of
    /// at most 235 bytes, levels below 0x40000000, this signer's key.
    fn check(&self, request: &SignRequest, payload: &[u8]) -> Result<()> {
        Ok(check_request(self.inner.key_hash, request, payload.len())?)
    }

    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let request = SignRequest::parse(payload, self.inner.key_hash)?;
        self.check(&request, payload)?;
        let cfg = self.inner.config.clone();
        let bytes = payload.to_vec();
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut app = lock(&inner.app);
            let signed = match app.sign_with_hash(&cfg.path, cfg.derivation, &bytes) {
                // Apps older than SIGN_WITH_HASH refuse the path packet, before
                // anything is signed: use SIGN (the ed25519 check below still
                // binds the signature to this message).
                Err(DeviceError::Status { sw, .. }) if sw == apdu::sw::INVALID_INS => app
                    .sign(&cfg.path, cfg.derivation, &bytes)
                    .map(|sig| (PayloadHash::of(&bytes), sig)),
                other => other,
            };
            match signed {
                Err(e) if e.is_watermark_refusal() => {
                    let now = app.query_all_hwm().ok();
                    Err((e, now))
                }
                Err(e) => Err((e, None)),
                Ok(ok) => Ok(ok),
            }
        })
        .await
        .map_err(|e| Error::Signer {
            detail: format!("device task failed: {e}"),
            source: None,
        })?;
        let (hash, raw) = match outcome {
            Ok(ok) => ok,
            Err((e, Some(hwm))) => {
                let dev = hwm.for_chain(request.key.chain);
                tracing::warn!(key = %request.key, requested = %request.mark, device_level = dev.level, device_round = ?dev.round, "the Ledger's own watermark refused to sign");
                if let Some(round) = dev.round {
                    let stored = Mark {
                        level: dev.level,
                        round,
                    };
                    if request.mark < stored {
                        return Err(device_refusal(request.key, stored, request.mark).into());
                    }
                }
                return Err(e.into());
            }
            Err((e, None)) => return Err(e.into()),
        };
        let signature = tezos_signature(self.inner.config.derivation, &raw)?;
        if self.inner.key_hash.curve == crate::watermark::Curve::Ed25519 {
            let pk: [u8; 32] = self
                .inner
                .public_key
                .tezos_bytes()?
                .try_into()
                .map_err(|_| DeviceError::bad_reply("public key", "not 32 bytes"))?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .map_err(|e| DeviceError::bad_reply("public key", e.to_string()))?;
            let sig = ed25519_dalek::Signature::from_slice(&signature)
                .map_err(|e| DeviceError::bad_reply("signature", e.to_string()))?;
            vk.verify(&hash.0, &sig).map_err(|_| {
                DeviceError::bad_reply("signature", "does not verify against the device key")
            })?;
        }
        Ok(signature)
    }
}

#[async_trait]
impl WatermarkDevice for LedgerSigner {
    fn key_hash(&self) -> KeyHash {
        self.inner.key_hash
    }

    fn describe(&self) -> String {
        format!(
            "Ledger key {} ({})",
            self.inner.key_hash, self.inner.config.path
        )
    }

    async fn read_marks(&self, chain: ChainId) -> Result<DeviceMarks> {
        let m = self.device_hwm().await?.for_chain(chain);
        let mark = Mark {
            level: m.level,
            round: m.round.unwrap_or(0),
        };
        Ok(DeviceMarks {
            marks: ConsensusKind::ALL.map(|k| (k, mark)),
            rule: DeviceRule::Ledger {
                round_known: m.round.is_some(),
            },
        })
    }

    async fn raise_to(&self, chain: ChainId, level: u32) -> Result<()> {
        self.raise_hwm(chain, level).await
    }
}
