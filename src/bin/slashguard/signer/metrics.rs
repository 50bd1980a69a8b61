//! Prometheus `/metrics` of the signer daemon: the library's metrics hook
//! ([`PrometheusMetrics`]: authorize latency, refusals by safety rule,
//! current watermark per chain, key and kind, ownership) plus the
//! daemon's own families, in one registry:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `slashguard_signer_sign_requests_total` | counter | `transport`, `kind` (a consensus kind, `generic` or `unknown`), `result` (`signed`, `repeat`, or the refusal reason: `watermark`, `policy`, `magic_byte`, `generic_operation`, `unauthenticated`, `bad_request`, `unknown_key`, `unavailable`, `device` (a device key's device failed or is busy), `shutting_down`, `error`, ..., `deadline`) |
//! | `slashguard_signer_sign_seconds` | histogram | `transport`, `kind` |
//! | `slashguard_signer_active` | gauge | 1 while this process signs (active), 0 standby or stopping |
//! | `slashguard_signer_log_write_failures_total` | counter | (none): log lines stderr did not take; a sign decision that cannot be logged releases no signature |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use slashguard::metrics::prometheus::PrometheusMetrics;
use slashguard::metrics::Metrics as _;
use slashguard::remote_signer::{Released, Withheld};
use slashguard::watermark::{Decision, Watermark, WatermarkKey};

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type RequestLabels = [(&'static str, &'static str); 3];
type LatencyLabels = [(&'static str, &'static str); 2];

/// Request latency buckets: 100 µs doubling to about 13 s (past the
/// default request deadline of 10 s).
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// The daemon's registry and families.
pub struct SignerMetrics {
    registry: Registry,
    hook: Arc<PrometheusMetrics>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    active: Gauge,
}

impl SignerMetrics {
    /// Register every family and install the library hook for this
    /// process (the first install wins; a second daemon in one process
    /// would keep the first one's library families).
    pub fn install() -> Arc<Self> {
        let mut registry = Registry::default();
        let hook = Arc::new(PrometheusMetrics::register(&mut registry));
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::new_with_constructor(request_histogram as fn() -> Histogram);
        let active = Gauge::default();
        let r = registry.sub_registry_with_prefix("slashguard_signer");
        r.register(
            "sign_requests",
            "Sign requests by transport, kind and result (signed, repeat, or why not)",
            requests.clone(),
        );
        r.register(
            "sign_seconds",
            "Sign request latency inside the daemon, by transport and kind",
            latency.clone(),
        );
        r.register(
            "active",
            "1 while this process signs (active), 0 while standby or stopping",
            active.clone(),
        );
        r.register(
            "log_write_failures",
            "Log lines that could not be written to stderr (a sign decision that cannot be logged releases no signature)",
            super::log::WRITE_FAILURES.clone(),
        );
        slashguard::metrics::install(hook.clone());
        Arc::new(SignerMetrics {
            registry,
            hook,
            requests,
            latency,
            active,
        })
    }

    /// The current watermarks at start, so that the gauges show them
    /// before the first signature.
    pub fn seed_watermarks(&self, marks: &[(WatermarkKey, Watermark)]) {
        for (key, w) in marks {
            self.hook.watermark(key, w.mark);
        }
    }

    /// One sign decision.
    pub fn sign(
        &self,
        transport: &'static str,
        result: &Result<Released, Withheld>,
        elapsed: Duration,
    ) {
        let kind = match result {
            Ok(Released::Consensus(s)) => s.request.key.kind.as_str(),
            Ok(Released::Generic(_)) => "generic",
            Err(w) => w
                .request
                .as_ref()
                .map_or("unknown", |r| r.key.kind.as_str()),
        };
        let outcome = match result {
            Ok(Released::Consensus(s)) if s.decision == Decision::Repeat => "repeat",
            Ok(_) => "signed",
            Err(w) => w.error.reason(),
        };
        self.requests
            .get_or_create(&[
                ("transport", transport),
                ("kind", kind),
                ("result", outcome),
            ])
            .inc();
        self.latency
            .get_or_create(&[("transport", transport), ("kind", kind)])
            .observe(elapsed.as_secs_f64());
    }

    /// A sign request that hit the request deadline.
    pub fn deadline(&self, transport: &'static str) {
        self.requests
            .get_or_create(&[
                ("transport", transport),
                ("kind", "unknown"),
                ("result", "deadline"),
            ])
            .inc();
    }

    /// Set the active (1) / standby (0) gauge (from the service's state,
    /// at each scrape).
    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a
        // bug in a label, answered with what was written so far.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
