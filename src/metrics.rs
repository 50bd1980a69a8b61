//! A metrics hook: what an operator graphs and alerts on.
//!
//! Install one [`Metrics`] implementation per process with [`install`]
//! (a bridge to Prometheus, StatsD, the `metrics` crate, ...); until then
//! nothing is recorded and the hooks cost one atomic load. Every hook
//! receives borrowed, already-computed values (`&'static str` labels,
//! `Copy` keys), so the vote and sign paths allocate nothing for metrics.
//!
//! | hook | called | use it for |
//! |---|---|---|
//! | [`tower_store`](Metrics::tower_store) | after every tower store of a [`VoteGuard`](crate::tower::VoteGuard) | store latency histogram by backend and outcome |
//! | [`authorize`](Metrics::authorize) | after every watermark check of a [`GuardedSigner`](crate::GuardedSigner) | authorize latency histogram |
//! | [`refusal`](Metrics::refusal) | when a safety rule refused | refusals by reason |
//! | [`watermark`](Metrics::watermark) | after a signature at a new mark | current watermark per key |
//! | [`ownership`](Metrics::ownership) | when a failover policy gains or loses an identity | ownership state |
//!
//! [`MemoryMetrics`] records everything in memory (tests, a status page);
//! `prometheus::PrometheusMetrics` (feature `prometheus`) exports to Prometheus.

#[cfg(feature = "prometheus")]
pub mod prometheus;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, Refusal};
use crate::identity::NodeId;
use crate::tower::TowerRefusal;
use crate::watermark::{Mark, WatermarkKey};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// It succeeded (the vote or signature may be released).
    Ok,
    /// A safety rule refused it.
    Refused,
    /// The store or device did not answer in time.
    Unavailable,
    /// Any other failure.
    Failed,
}

impl Outcome {
    /// The outcome of `result`.
    pub fn of<T>(result: &Result<T, Error>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) if e.is_refusal() || matches!(e, Error::Locked { .. }) => Outcome::Refused,
            Err(e) if e.is_unavailable() => Outcome::Unavailable,
            Err(_) => Outcome::Failed,
        }
    }

    /// A label: `ok`, `refused`, `unavailable`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "failed",
        }
    }
}

/// Why a safety rule refused, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefusalReason {
    /// A tower's last vote or root would go backwards.
    TowerRegressed,
    /// Same slot, another bank hash.
    ConflictingVote,
    /// A tower of another node or badly signed.
    TowerInvalid,
    /// Below the stored watermark.
    WatermarkBelow,
    /// Same level and round, another payload.
    DifferentPayload,
    /// At a mark an operator set.
    AtRaisedMark,
    /// A repeat whose signature is not stored, for a non-deterministic
    /// signer.
    RepeatWithoutSignature,
    /// The signing device's own watermark.
    Device,
    /// A documented limit of the signer (payload size, level range,
    /// scheme), checked before any watermark moved.
    SignerLimit,
    /// A failover step that is not safe yet.
    Failover,
    /// This instance no longer owns the identity.
    Fenced,
    /// Another process holds the store.
    Locked,
    /// The store went backwards below what this process wrote or saw.
    StoreRegressed,
    /// An Alpenglow vote the vote history refuses (feature `alpenglow`).
    AlpenglowVote,
    /// A vote message that does not cast the stored tower's vote.
    VoteMessage,
}

impl RefusalReason {
    /// The reason behind `e`, if it is a refusal.
    pub fn of(e: &Error) -> Option<Self> {
        use crate::watermark::RefusalReason as W;
        Some(match e {
            Error::Refused(Refusal::Tower(t)) => match t {
                TowerRefusal::LastVoteRegressed { .. } | TowerRefusal::RootRegressed { .. } => {
                    RefusalReason::TowerRegressed
                }
                TowerRefusal::ConflictingVote { .. } => RefusalReason::ConflictingVote,
                _ => RefusalReason::TowerInvalid,
            },
            Error::Refused(Refusal::Watermark(w)) => match w.reason {
                W::Below => RefusalReason::WatermarkBelow,
                W::DifferentPayload => RefusalReason::DifferentPayload,
                W::AtRaisedMark => RefusalReason::AtRaisedMark,
                W::RepeatWithoutSignature => RefusalReason::RepeatWithoutSignature,
            },
            Error::Refused(Refusal::Device(_) | Refusal::SignerRefused { .. }) => {
                RefusalReason::Device
            }
            Error::Refused(Refusal::Limit(_)) => RefusalReason::SignerLimit,
            Error::Refused(Refusal::Failover(_)) => RefusalReason::Failover,
            #[cfg(feature = "alpenglow")]
            Error::Refused(Refusal::Alpenglow(_)) => RefusalReason::AlpenglowVote,
            Error::Refused(Refusal::Vote(_)) => RefusalReason::VoteMessage,
            Error::Fenced { .. } => RefusalReason::Fenced,
            Error::Locked { .. } => RefusalReason::Locked,
            Error::Regressed { .. } => RefusalReason::StoreRegressed,
            _ => return None,
        })
    }

    /// A label, e.g. `watermark_below`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::TowerRegressed => "tower_regressed",
            RefusalReason::ConflictingVote => "conflicting_vote",
            RefusalReason::TowerInvalid => "tower_invalid",
            RefusalReason::WatermarkBelow => "watermark_below",
            RefusalReason::DifferentPayload => "different_payload",
            RefusalReason::AtRaisedMark => "at_raised_mark",
            RefusalReason::RepeatWithoutSignature => "repeat_without_signature",
            RefusalReason::Device => "device",
            RefusalReason::SignerLimit => "signer_limit",
            RefusalReason::Failover => "failover",
            RefusalReason::Fenced => "fenced",
            RefusalReason::VoteMessage => "vote_message",
            RefusalReason::Locked => "locked",
            RefusalReason::StoreRegressed => "store_regressed",
            RefusalReason::AlpenglowVote => "alpenglow_vote",
        }
    }
}

/// Receives slashguard's measurements. Every method has an empty default:
/// implement the ones you export. Implementations must be cheap and must
/// not block: they run on the vote and sign paths.
pub trait Metrics: Send + Sync {
    /// A tower store finished (`backend`: `file`, `etcd`, `memory`, ...).
    fn tower_store(
        &self,
        backend: &'static str,
        node: &NodeId,
        latency: Duration,
        outcome: Outcome,
    ) {
        let _ = (backend, node, latency, outcome);
    }

    /// A watermark authorization finished.
    fn authorize(
        &self,
        backend: &'static str,
        key: &WatermarkKey,
        latency: Duration,
        outcome: Outcome,
    ) {
        let _ = (backend, key, latency, outcome);
    }

    /// A safety rule refused.
    fn refusal(&self, reason: RefusalReason) {
        let _ = reason;
    }

    /// A signature was released at `mark` for `key` (the current watermark).
    fn watermark(&self, key: &WatermarkKey, mark: Mark) {
        let _ = (key, mark);
    }

    /// An instance gained (`owned`, with its fence) or lost an identity.
    fn ownership(&self, identity: &str, owned: bool, fence: u64) {
        let _ = (identity, owned, fence);
    }
}

impl<T: Metrics + ?Sized> Metrics for Arc<T> {
    fn tower_store(
        &self,
        backend: &'static str,
        node: &NodeId,
        latency: Duration,
        outcome: Outcome,
    ) {
        (**self).tower_store(backend, node, latency, outcome)
    }
    fn authorize(
        &self,
        backend: &'static str,
        key: &WatermarkKey,
        latency: Duration,
        outcome: Outcome,
    ) {
        (**self).authorize(backend, key, latency, outcome)
    }
    fn refusal(&self, reason: RefusalReason) {
        (**self).refusal(reason)
    }
    fn watermark(&self, key: &WatermarkKey, mark: Mark) {
        (**self).watermark(key, mark)
    }
    fn ownership(&self, identity: &str, owned: bool, fence: u64) {
        (**self).ownership(identity, owned, fence)
    }
}

static INSTALLED: OnceLock<Box<dyn Metrics>> = OnceLock::new();

/// Install the process's metrics recorder. Only the first call wins;
/// `false` means one was already installed (and `metrics` was dropped).
pub fn install(metrics: impl Metrics + 'static) -> bool {
    INSTALLED.set(Box::new(metrics)).is_ok()
}

/// The installed recorder, if any.
pub fn installed() -> Option<&'static dyn Metrics> {
    INSTALLED.get().map(|b| b.as_ref())
}

/// Record a refusal, if `result` is one.
pub(crate) fn note_refusal<T>(result: &Result<T, Error>) {
    if let (Some(m), Err(e)) = (installed(), result) {
        if let Some(reason) = RefusalReason::of(e) {
            m.refusal(reason);
        }
    }
}

/// Count, total and largest of a latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many.
    pub count: u64,
    /// Their sum.
    pub total: Duration,
    /// The largest.
    pub max: Duration,
}

impl LatencySummary {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.total += d;
        self.max = self.max.max(d);
    }
}

/// Everything [`MemoryMetrics`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tower store latencies by (backend, outcome).
    pub tower_store: BTreeMap<(&'static str, Outcome), LatencySummary>,
    /// Authorization latencies by (backend, outcome).
    pub authorize: BTreeMap<(&'static str, Outcome), LatencySummary>,
    /// Refusals by reason.
    pub refusals: BTreeMap<RefusalReason, u64>,
    /// The last released mark of each key.
    pub watermarks: BTreeMap<WatermarkKey, Mark>,
    /// Ownership of each identity: (owned, fence).
    pub ownership: BTreeMap<String, (bool, u64)>,
}

/// A [`Metrics`] that keeps summaries in memory; read them with
/// [`snapshot`](Self::snapshot). Memory stays bounded by the number of
/// backends, keys and identities.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    inner: Mutex<Snapshot>,
}

impl MemoryMetrics {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Metrics for MemoryMetrics {
    fn tower_store(
        &self,
        backend: &'static str,
        _node: &NodeId,
        latency: Duration,
        outcome: Outcome,
    ) {
        self.lock()
            .tower_store
            .entry((backend, outcome))
            .or_default()
            .add(latency);
    }
    fn authorize(
        &self,
        backend: &'static str,
        _key: &WatermarkKey,
        latency: Duration,
        outcome: Outcome,
    ) {
        self.lock()
            .authorize
            .entry((backend, outcome))
            .or_default()
            .add(latency);
    }
    fn refusal(&self, reason: RefusalReason) {
        *self.lock().refusals.entry(reason).or_default() += 1;
    }
    fn watermark(&self, key: &WatermarkKey, mark: Mark) {
        let mut s = self.lock();
        let e = s.watermarks.entry(*key).or_insert(mark);
        *e = (*e).max(mark);
    }
    fn ownership(&self, identity: &str, owned: bool, fence: u64) {
        let mut s = self.lock();
        // A late report about an older fence (a handle dropped after a newer
        // acquisition under the same name) does not overwrite the newer one.
        if s.ownership.get(identity).is_some_and(|(_, f)| *f > fence) {
            return;
        }
        s.ownership.insert(identity.to_string(), (owned, fence));
    }
}
