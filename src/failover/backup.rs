//! Tezos backup activation (seed "Safe Failover Procedure", steps 1-5) as a
//! guarded sequence: a backup baker's guard refuses every signature until
//! the primary is shown to be down and every alias's watermark is raised to
//! max(last level known to the store, observed chain level) + margin.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::failover::{FailoverRefusal, Ownership};
use crate::watermark::{
    ChainId, ConsensusKind, Decision, KeyHash, Mark, SetMode, SignRequest, SignerGuard, Watermark,
    WatermarkKey,
};

/// Default safety margin above the highest known level (the seed's "+10").
pub const DEFAULT_MARGIN: u32 = 10;

/// Evidence that the primary can no longer sign.
#[derive(Debug)]
pub enum PrimaryDown {
    /// This instance holds the identity through a
    /// [`FailoverPolicy`](crate::FailoverPolicy): the primary's lock was
    /// released or its lease expired. The ownership is kept by the guard;
    /// if it is lost later, signing stops.
    Acquired(Ownership),
    /// The operator asserts the primary is unreachable (fire, theft). The
    /// guard checks that `wait_blocks` block times have passed since the
    /// primary's last known signature, so queued signatures have landed.
    OperatorAsserted {
        /// When the primary's last signature was seen (block explorer).
        last_signature_at: SystemTime,
        /// The chain's block time.
        block_time: Duration,
        /// Blocks to wait (the seed: 2-3 blocks, or 2-3 minutes).
        wait_blocks: u32,
    },
}

/// How the primary baker is kept from signing once this backup activates
/// on a lease-bound ownership (etcd) as evidence. Losing that ownership
/// stops the primary only if its signing depends on it; the backup cannot
/// see the primary's configuration, so the operator declares it with
/// [`BackupGuard::primary_fencing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrimaryFencing {
    /// The primary authorizes through the same shared watermarks as this
    /// backup (`EtcdWatermarks` on the same cluster and prefix): cut off
    /// from them it cannot sign, and what it signed is in them.
    SharedWatermarks,
    /// The primary's signers are fenced by their ownership of the same
    /// identity ([`GuardedSigner::with_ownership`](crate::GuardedSigner::with_ownership)):
    /// they stop before the primary's lease can expire on the server,
    /// hence before this backup can acquire it.
    Ownership,
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationReport {
    /// The level every alias's watermark was raised to (round 0).
    pub level: u32,
    /// The highest level the store knew for any alias before activation.
    pub last_known_level: Option<u32>,
    /// The chain level the operator or node observed.
    pub observed_level: u32,
    /// Each alias, its key and its highest stored mark before activation.
    pub aliases: Vec<(String, KeyHash, Option<Mark>)>,
}

/// A signing device of a backup baker (a Ledger, a TezSign key) that
/// takes part in [`BackupGuard::activate`]: it must not be able to sign
/// before activation (the seed's "pre-authorized backup" mistake), and
/// activation arms it with its own watermark raised to the activation
/// level.
///
/// Implemented for `LedgerSigner` and `TezSignSigner` (feature `usb`).
/// Register devices with [`BackupGuard::device`], which also adds the
/// device's key as an alias, so that the check runs on every activation.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::{Duration, SystemTime};
/// use slashguard::failover::{BackupDevice, BackupGuard, FailoverRefusal, PrimaryDown};
/// use slashguard::memory::MemoryWatermarks;
/// use slashguard::watermark::{ChainId, KeyHash};
/// use slashguard::{Ed25519Signer, Error, Refusal, Signer};
///
/// /// A device that signs once "authorized" (a stand-in for a Ledger).
/// struct Device { key: KeyHash, authorized: AtomicBool }
///
/// #[async_trait::async_trait]
/// impl BackupDevice for &'static Device {
///     fn key_hash(&self) -> KeyHash { self.key }
///     fn describe(&self) -> String { "test device".into() }
///     async fn ensure_standby(&self) -> slashguard::Result<()> {
///         if self.authorized.load(Ordering::SeqCst) {
///             return Err(FailoverRefusal::PreAuthorized { detail: "authorized".into() }.into());
///         }
///         Ok(())
///     }
///     async fn arm(&self, _chain: ChainId, _level: u32) -> slashguard::Result<()> {
///         self.authorized.store(true, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let key = Ed25519Signer::generate().key_hash();
/// let device: &'static Device = Box::leak(Box::new(Device { key, authorized: AtomicBool::new(true) }));
/// let guard = BackupGuard::new(MemoryWatermarks::new(), ChainId([0x7a, 0x06, 0xa7, 0x70]))
///     .device("consensus", device);
/// let evidence = || PrimaryDown::OperatorAsserted {
///     last_signature_at: SystemTime::now() - Duration::from_secs(600),
///     block_time: Duration::from_secs(8),
///     wait_blocks: 3,
/// };
/// // Left authorized: refused before anything changes.
/// let err = guard.activate(evidence(), 1000).await.unwrap_err();
/// assert!(matches!(err, Error::Refused(Refusal::Failover(FailoverRefusal::PreAuthorized { .. }))));
/// device.authorized.store(false, Ordering::SeqCst);
/// guard.activate(evidence(), 1000).await?;
/// assert!(device.authorized.load(Ordering::SeqCst), "armed by the activation");
/// # Ok::<(), slashguard::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait BackupDevice: Send + Sync {
    /// The key the device signs with.
    fn key_hash(&self) -> KeyHash;

    /// A name for logs and reports.
    fn describe(&self) -> String;

    /// Fail with [`FailoverRefusal::PreAuthorized`] if the device could
    /// sign already (it was authorized before activation). Changes
    /// nothing.
    async fn ensure_standby(&self) -> Result<()>;

    /// Make the device able to sign, with its own watermark raised to
    /// (`level`, 0) on `chain` for every kind. Called once the store's
    /// watermarks are raised; never lowers the device's watermark.
    async fn arm(&self, chain: ChainId, level: u32) -> Result<()>;
}

#[async_trait]
impl<T: BackupDevice + ?Sized> BackupDevice for Box<T> {
    fn key_hash(&self) -> KeyHash {
        (**self).key_hash()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn ensure_standby(&self) -> Result<()> {
        (**self).ensure_standby().await
    }
    async fn arm(&self, chain: ChainId, level: u32) -> Result<()> {
        (**self).arm(chain, level).await
    }
}

struct Device {
    name: String,
    device: Box<dyn BackupDevice>,
}

enum State {
    Standby,
    Active(Option<Ownership>),
}

/// A watermark guard for a backup baker: refuses to authorize anything
/// until [`activate`](BackupGuard::activate) succeeded.
///
/// ```
/// use slashguard::failover::{BackupGuard, PrimaryDown};
/// use slashguard::memory::MemoryWatermarks;
/// use slashguard::watermark::ChainId;
/// use slashguard::{Ed25519Signer, GuardedSigner, Signer};
/// use std::time::{Duration, SystemTime};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let key = Ed25519Signer::generate();
/// let chain = ChainId([0x7a, 0x06, 0xa7, 0x70]);
/// let guard = BackupGuard::new(MemoryWatermarks::new(), chain).alias("consensus", key.key_hash());
/// let baker = GuardedSigner::new(&guard, key);
///
/// // A tz1 attestation (0x13, chain, branch, tag 21, slot, level, round,
/// // block payload hash): level at bytes 40..44.
/// let mut attestation = vec![0x13];
/// attestation.extend_from_slice(&chain.0);
/// attestation.extend_from_slice(&[0x5c; 32]);
/// attestation.push(21);
/// attestation.extend_from_slice(&3u16.to_be_bytes());
/// attestation.extend_from_slice(&1005u32.to_be_bytes());
/// attestation.extend_from_slice(&0u32.to_be_bytes());
/// attestation.extend_from_slice(&[0xa1; 32]);
/// assert!(baker.sign(&attestation).await.unwrap_err().is_refusal()); // not activated
///
/// // Emergency: primary unreachable, its last signature 3 minutes ago, chain at level 1000.
/// let evidence = PrimaryDown::OperatorAsserted {
///     last_signature_at: SystemTime::now() - Duration::from_secs(180),
///     block_time: Duration::from_secs(8),
///     wait_blocks: 3,
/// };
/// let report = guard.activate(evidence, 1000).await?;
/// assert_eq!(report.level, 1010);
/// assert!(baker.sign(&attestation).await.is_err()); // 1005 is below the raised mark
/// attestation[40..44].copy_from_slice(&1011u32.to_be_bytes());
/// baker.sign(&attestation).await?;
/// # Ok::<(), slashguard::Error>(())
/// # }).unwrap();
/// ```
pub struct BackupGuard<G> {
    inner: G,
    chain: ChainId,
    aliases: Vec<(String, KeyHash)>,
    devices: Vec<Device>,
    // Devices this guard armed in an activation that then failed further
    // on: a retry must not take their authorization for a pre-authorized
    // device.
    armed: Mutex<Vec<bool>>,
    margin: u32,
    primary_fencing: Option<PrimaryFencing>,
    state: RwLock<State>,
}

impl<G: SignerGuard> BackupGuard<G> {
    /// A standby guard over `inner` for `chain`; add every signing alias.
    pub fn new(inner: G, chain: ChainId) -> Self {
        BackupGuard {
            inner,
            chain,
            aliases: Vec::new(),
            devices: Vec::new(),
            armed: Mutex::new(Vec::new()),
            margin: DEFAULT_MARGIN,
            primary_fencing: None,
            state: RwLock::new(State::Standby),
        }
    }

    /// Add a signing alias (for example `consensus` and `companion`).
    pub fn alias(mut self, name: impl Into<String>, key: KeyHash) -> Self {
        self.aliases.push((name.into(), key));
        self
    }

    /// Add a signing alias whose key lives on `device`: activation first
    /// checks that the device cannot sign yet
    /// ([`FailoverRefusal::PreAuthorized`] otherwise, before anything is
    /// changed), and after raising the store's watermarks arms the device
    /// at the same level. Use this rather than [`alias`](Self::alias) for
    /// every device key, so that the check cannot be forgotten.
    pub fn device(mut self, name: impl Into<String>, device: impl BackupDevice + 'static) -> Self {
        let name = name.into();
        self.aliases.push((name.clone(), device.key_hash()));
        self.devices.push(Device {
            name,
            device: Box::new(device),
        });
        self.armed
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(false);
        self
    }

    /// The margin added above the highest known level (default 10).
    pub fn margin(mut self, margin: u32) -> Self {
        self.margin = margin;
        self
    }

    /// Declare how the primary is stopped from signing once it lost its
    /// ownership: required before [`activate`](Self::activate) accepts a
    /// lease-bound ownership (from etcd) as evidence.
    pub fn primary_fencing(mut self, fencing: PrimaryFencing) -> Self {
        self.primary_fencing = Some(fencing);
        self
    }

    /// The guard underneath.
    pub fn inner(&self) -> &G {
        &self.inner
    }

    /// `true` once activated (and ownership, if any, not lost).
    pub async fn is_active(&self) -> bool {
        matches!(&*self.state.read().await, State::Active(o) if o.as_ref().is_none_or(|o| !o.is_lost()))
    }

    fn keys(&self, key: KeyHash) -> impl Iterator<Item = WatermarkKey> + '_ {
        ConsensusKind::ALL
            .into_iter()
            .map(move |kind| WatermarkKey {
                chain: self.chain,
                key,
                kind,
            })
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device checks [`activate`](Self::activate) runs first: fails
    /// with [`FailoverRefusal::PreAuthorized`] if a device registered with
    /// [`device`](Self::device) can sign already. Changes nothing; run it
    /// while preparing a backup, before the primary is confirmed down, so
    /// that a refusal does not cost the evidence.
    pub async fn check_devices(&self) -> Result<()> {
        let armed = self.armed().clone();
        for (d, armed) in self.devices.iter().zip(&armed) {
            // Armed by an earlier, unfinished activation of this guard.
            if *armed {
                continue;
            }
            if let Err(e) = d.device.ensure_standby().await {
                tracing::warn!(alias = %d.name, device = %d.device.describe(), error = %e, "backup device refused for activation");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Check the evidence, check that no backup device can sign yet, raise
    /// every alias's watermark for every kind to max(last known level,
    /// `observed_level`) + margin, durably and all at once, arm the
    /// devices at that level, then allow signing.
    ///
    /// Refusals ([`FailoverRefusal`]): `PrimaryStillActive` (the ownership
    /// given as evidence is already lost), `PrimaryUnfenced` (the evidence
    /// is a lease-bound ownership, from etcd, and
    /// [`primary_fencing`](Self::primary_fencing) was not declared: a
    /// primary cut off from etcd only could keep signing on its own
    /// watermarks), `WaitLonger` (an operator
    /// assertion too soon after the primary's last signature),
    /// `PreAuthorized` (a device registered with
    /// [`device`](Self::device) was authorized before activation). Nothing
    /// is changed on a refusal. If arming a device fails, the store's
    /// watermarks stay raised (raising is always safe), the guard stays in
    /// standby, and activation may be run again.
    pub async fn activate(
        &self,
        evidence: PrimaryDown,
        observed_level: u32,
    ) -> Result<ActivationReport> {
        if self.aliases.is_empty() {
            return Err(Error::Invalid(
                "backup activation needs at least one alias".into(),
            ));
        }
        let mut state = self.state.write().await;
        let ownership = match evidence {
            PrimaryDown::Acquired(o) => {
                if let Some(reason) = o.lost_reason() {
                    return Err(FailoverRefusal::PrimaryStillActive {
                        detail: format!("ownership already lost: {reason}"),
                    }
                    .into());
                }
                // A lease can be lost by a primary that runs on, cut off
                // from the store that holds it: its loss proves nothing
                // unless the primary's signing depends on it.
                if o.is_lease_bound() && self.primary_fencing.is_none() {
                    let detail = "the evidence is an ownership in a shared store (a lease in etcd): a primary cut off from etcd only loses it but, on watermarks of its own, keeps signing. Either share the watermarks (both sides on EtcdWatermarks of the same cluster and prefix) or fence the primary's signers with GuardedSigner::with_ownership, then declare which with BackupGuard::primary_fencing(PrimaryFencing::SharedWatermarks | PrimaryFencing::Ownership); otherwise stop the primary yourself and use PrimaryDown::OperatorAsserted".to_string();
                    tracing::warn!(chain = %self.chain, %detail, "backup activation refused");
                    return Err(FailoverRefusal::PrimaryUnfenced { detail }.into());
                }
                Some(o)
            }
            PrimaryDown::OperatorAsserted {
                last_signature_at,
                block_time,
                wait_blocks,
            } => {
                let needed = block_time.saturating_mul(wait_blocks);
                let waited = SystemTime::now()
                    .duration_since(last_signature_at)
                    .unwrap_or(Duration::ZERO);
                if waited < needed {
                    return Err(FailoverRefusal::WaitLonger {
                        remaining: needed - waited,
                        blocks: wait_blocks,
                    }
                    .into());
                }
                None
            }
        };
        self.check_devices().await?;
        let mut aliases = Vec::new();
        let mut last_known: Option<u32> = None;
        for (name, key) in &self.aliases {
            let mut highest: Option<Mark> = None;
            for wk in self.keys(*key) {
                if let Some(w) = self.inner.watermark(&wk).await? {
                    highest = highest.max(Some(w.mark));
                }
            }
            last_known = last_known.max(highest.map(|m| m.level));
            aliases.push((name.clone(), *key, highest));
        }
        let base = last_known.unwrap_or(0).max(observed_level);
        let level = base
            .checked_add(self.margin)
            .filter(|l| *l <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::Invalid(format!("level {base} + margin {} overflows", self.margin))
            })?;
        let marks: Vec<(WatermarkKey, Mark)> = self
            .aliases
            .iter()
            .flat_map(|(_, k)| self.keys(*k))
            .map(|wk| (wk, Mark::level(level)))
            .collect();
        self.inner.set_marks(&marks, SetMode::RaiseOnly).await?;
        tracing::info!(chain = %self.chain, level, ?last_known, observed_level, aliases = self.aliases.len(), "backup watermarks raised");
        for (i, d) in self.devices.iter().enumerate() {
            if let Err(e) = d.device.arm(self.chain, level).await {
                tracing::warn!(alias = %d.name, device = %d.device.describe(), level, error = %e, "backup device not armed: activation stopped (watermarks stay raised)");
                return Err(e);
            }
            self.armed()[i] = true;
            tracing::info!(alias = %d.name, device = %d.device.describe(), level, "backup device armed");
        }
        tracing::info!(chain = %self.chain, level, "backup activated: signing allowed");
        *state = State::Active(ownership);
        Ok(ActivationReport {
            level,
            last_known_level: last_known,
            observed_level,
            aliases,
        })
    }
}

impl<G> BackupGuard<G> {
    fn check_active(&self, state: &State) -> Result<()> {
        match state {
            State::Standby => Err(FailoverRefusal::NotActivated.into()),
            State::Active(Some(o)) if o.is_lost() => Err(Error::Fenced {
                identity: self
                    .aliases
                    .iter()
                    .map(|(n, k)| format!("{n}={k}"))
                    .collect::<Vec<_>>()
                    .join(","),
                reason: o.lost_reason().unwrap_or_default(),
            }),
            State::Active(_) => Ok(()),
        }
    }
}

#[async_trait]
impl<G: SignerGuard> SignerGuard for BackupGuard<G> {
    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        let state = self.state.read().await;
        self.check_active(&state)?;
        self.inner.authorize(requests).await
    }
    // A standby or fenced backup refuses before any signer is asked.
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let state = self.state.read().await;
        self.check_active(&state)?;
        self.inner.precheck(request).await
    }
    // A standby answers "standby", not whatever the store's read says.
    async fn reload(&self, key: &WatermarkKey) -> Result<()> {
        self.check_active(&*self.state.read().await)?;
        self.inner.reload(key).await
    }
    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        self.inner.watermark(key).await
    }
    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        self.inner.watermarks().await
    }
    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        self.inner.set_marks(marks, mode).await
    }
    fn keeps_signatures(&self) -> bool {
        self.inner.keeps_signatures()
    }
    // A stored signature is of bytes already authorized while this guard
    // was active (or before); returning it again releases nothing new, but
    // a standby or fenced backup releases nothing at all.
    async fn stored_signature(
        &self,
        request: &SignRequest,
    ) -> Result<Option<crate::watermark::StoredSignature>> {
        match &*self.state.read().await {
            State::Active(Some(o)) if o.is_lost() => Ok(None),
            State::Active(_) => self.inner.stored_signature(request).await,
            State::Standby => Ok(None),
        }
    }
}
