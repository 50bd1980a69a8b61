//! A Prometheus bridge for the [`Metrics`] hook (feature `prometheus`):
//! every hook becomes a metric family in a `prometheus_client` registry
//! that the caller owns and serves (OpenMetrics text).
//!
//! | family | type | labels |
//! |---|---|---|
//! | `slashguard_tower_store_seconds` | histogram | `backend`, `outcome` |
//! | `slashguard_authorize_seconds` | histogram | `backend`, `outcome` |
//! | `slashguard_refusals_total` | counter | `reason` ([`RefusalReason::as_str`]) |
//! | `slashguard_watermark_level`, `slashguard_watermark_round` | gauge | `chain`, `key`, `kind` |
//! | `slashguard_ownership_owned`, `slashguard_ownership_fence` | gauge | `identity` |
//!
//! Label sets stay bounded by the backends, keys, kinds and identities of
//! the process, as the hook's contract promises.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use slashguard::metrics::prometheus::PrometheusMetrics;
//!
//! let mut registry = Registry::default();
//! let metrics = std::sync::Arc::new(PrometheusMetrics::register(&mut registry));
//! slashguard::metrics::install(metrics.clone());
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{Metrics, Outcome, RefusalReason};
use crate::identity::NodeId;
use crate::watermark::{Mark, WatermarkKey};

type Labels2 = [(&'static str, &'static str); 2];
type KeyLabels = [(&'static str, String); 3];
type IdentityLabels = [(&'static str, String); 1];

/// Latency buckets from 50 µs doubling to about 1.6 s: an fdatasync, an
/// etcd round trip and a USB device all land inside.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The [`Metrics`] hook as Prometheus families (see the module docs).
pub struct PrometheusMetrics {
    tower_store: Family<Labels2, Histogram, fn() -> Histogram>,
    authorize: Family<Labels2, Histogram, fn() -> Histogram>,
    refusals: Family<[(&'static str, &'static str); 1], Counter>,
    level: Family<KeyLabels, Gauge>,
    round: Family<KeyLabels, Gauge>,
    owned: Family<IdentityLabels, Gauge>,
    fence: Family<IdentityLabels, Gauge<u64, AtomicU64>>,
}

impl PrometheusMetrics {
    /// Register the families in `registry` (under `slashguard_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = PrometheusMetrics {
            tower_store: Family::new_with_constructor(latency_histogram),
            authorize: Family::new_with_constructor(latency_histogram),
            refusals: Family::default(),
            level: Family::default(),
            round: Family::default(),
            owned: Family::default(),
            fence: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("slashguard");
        r.register(
            "tower_store_seconds",
            "Tower store latency by backend and outcome",
            m.tower_store.clone(),
        );
        r.register(
            "authorize_seconds",
            "Watermark authorization latency by backend and outcome",
            m.authorize.clone(),
        );
        r.register(
            "refusals",
            "Requests a safety rule refused, by reason",
            m.refusals.clone(),
        );
        r.register(
            "watermark_level",
            "Level of the last released signature (the current watermark) per chain, key and kind",
            m.level.clone(),
        );
        r.register(
            "watermark_round",
            "Round of the last released signature per chain, key and kind",
            m.round.clone(),
        );
        r.register(
            "ownership_owned",
            "1 while this instance owns the identity, 0 after it lost or released it",
            m.owned.clone(),
        );
        r.register(
            "ownership_fence",
            "The fence of the identity's last ownership change seen by this instance",
            m.fence.clone(),
        );
        m
    }

    fn key_labels(key: &WatermarkKey) -> KeyLabels {
        [
            ("chain", key.chain.to_string()),
            ("key", key.key.to_string()),
            ("kind", key.kind.to_string()),
        ]
    }
}

impl Metrics for PrometheusMetrics {
    fn tower_store(
        &self,
        backend: &'static str,
        _node: &NodeId,
        latency: Duration,
        outcome: Outcome,
    ) {
        self.tower_store
            .get_or_create(&[("backend", backend), ("outcome", outcome.as_str())])
            .observe(latency.as_secs_f64());
    }

    fn authorize(
        &self,
        backend: &'static str,
        _key: &WatermarkKey,
        latency: Duration,
        outcome: Outcome,
    ) {
        self.authorize
            .get_or_create(&[("backend", backend), ("outcome", outcome.as_str())])
            .observe(latency.as_secs_f64());
    }

    fn refusal(&self, reason: RefusalReason) {
        self.refusals
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    fn watermark(&self, key: &WatermarkKey, mark: Mark) {
        let labels = Self::key_labels(key);
        let level = self.level.get_or_create(&labels);
        let round = self.round.get_or_create(&labels);
        // The hook reports released marks; a late report of an older one
        // (two requests finishing out of order) must not lower the gauge.
        let current = Mark {
            level: u32::try_from(level.get()).unwrap_or(0),
            round: u32::try_from(round.get()).unwrap_or(0),
        };
        if mark >= current {
            level.set(i64::from(mark.level));
            round.set(i64::from(mark.round));
        }
    }

    fn ownership(&self, identity: &str, owned: bool, fence: u64) {
        let labels = [("identity", identity.to_string())];
        let f = self.fence.get_or_create(&labels);
        // A late report about an older fence does not overwrite a newer one.
        if fence < f.get() {
            return;
        }
        f.set(fence);
        self.owned.get_or_create(&labels).set(i64::from(owned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermark::{ChainId, ConsensusKind, Curve, KeyHash};

    fn text(registry: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    }

    #[test]
    fn every_hook_shows_as_a_family() {
        let mut registry = Registry::default();
        let m = PrometheusMetrics::register(&mut registry);
        let key = WatermarkKey {
            chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
            key: KeyHash {
                curve: Curve::Ed25519,
                hash: [1; 20],
            },
            kind: ConsensusKind::Attestation,
        };
        m.authorize("file", &key, Duration::from_micros(300), Outcome::Ok);
        m.refusal(RefusalReason::WatermarkBelow);
        m.refusal(RefusalReason::WatermarkBelow);
        m.watermark(
            &key,
            Mark {
                level: 10,
                round: 2,
            },
        );
        m.watermark(&key, Mark { level: 9, round: 5 });
        m.ownership("tz1x", true, 7);
        m.ownership("tz1x", false, 6);
        m.tower_store(
            "etcd",
            &NodeId([0; 32]),
            Duration::from_millis(2),
            Outcome::Refused,
        );
        let t = text(&registry);
        let labels = format!(
            "chain=\"NetXdQprcVkpaWU\",key=\"{}\",kind=\"attestation\"",
            key.key
        );
        for line in [
            "slashguard_authorize_seconds_count{backend=\"file\",outcome=\"ok\"} 1".to_string(),
            "slashguard_refusals_total{reason=\"watermark_below\"} 2".to_string(),
            format!("slashguard_watermark_level{{{labels}}} 10"),
            format!("slashguard_watermark_round{{{labels}}} 2"),
            "slashguard_ownership_owned{identity=\"tz1x\"} 1".to_string(),
            "slashguard_ownership_fence{identity=\"tz1x\"} 7".to_string(),
            "slashguard_tower_store_seconds_count{backend=\"etcd\",outcome=\"refused\"} 1"
                .to_string(),
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in\n{t}");
        }
    }
}
