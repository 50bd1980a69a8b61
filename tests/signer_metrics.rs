//! Prometheus `/metrics` scraped from a real `slashguard signer serve`
//! process, on its HTTP listener and on a dedicated metrics listener, and
//! read line by line.

mod signer_support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use signer_support::server::*;

/// Add a metrics listener to a generated config.
fn with_metrics_listener(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replacen(
        "[signer.listen]\n",
        "[signer.listen]\nmetrics = [\"127.0.0.1:0\"]\n",
        1,
    );
    std::fs::write(config, text).unwrap();
}

fn metrics_address(server: &Server) -> String {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "listening" && v["transport"] == "metrics")
        .and_then(|v| v["address"].as_str().map(String::from))
        .expect("a metrics listener in the log")
}

/// Scrape `/metrics` and parse every sample line into `series -> value`,
/// failing on anything that is not a comment, a sample or the EOF marker.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let r = http(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{r:?}"
    );
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{}", r.body);
    let mut out = BTreeMap::new();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    out
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_count_requests_refusals_latency_and_show_each_watermark() {
    let s = Setup::new();
    let config = s.config("", ALL_KEYS);
    with_metrics_listener(&config);
    let server = Server::create(&config);
    let metrics = metrics_address(&server);

    // Before any request: active, no watermark yet.
    let m = scrape(&server.http);
    assert_eq!(value(&m, "slashguard_signer_active"), 1.0);
    assert!(!m
        .keys()
        .any(|k| k.starts_with("slashguard_watermark_level")));

    let a = server.http.as_str();
    let att = attestation(0x13, MAINNET, 100, 2, 1);
    assert_eq!(sign_http(a, TZ1, &att).status, 200);
    assert_eq!(sign_http(a, TZ1, &att).status, 200, "a repeat");
    let low = attestation(0x13, MAINNET, 99, 0, 1);
    assert_eq!(sign_http(a, TZ1, &low).status, 409);
    let mut generic = att.clone();
    generic[0] = 0x03;
    assert_eq!(
        Sock::tcp(&server.tcp).call(&sign_request(TZ1, &generic, None))[0],
        1
    );
    let blk = block(MAINNET, 50, 0);
    assert_eq!(
        Sock::unix(&server.unix).call(&sign_request(TZ3, &blk, None))[0],
        0
    );

    let m = scrape(&server.http);
    let req = |t: &str, k: &str, r: &str| {
        format!("slashguard_signer_sign_requests_total{{transport=\"{t}\",kind=\"{k}\",result=\"{r}\"}}")
    };
    assert_eq!(value(&m, &req("http", "attestation", "signed")), 1.0);
    assert_eq!(value(&m, &req("http", "attestation", "repeat")), 1.0);
    assert_eq!(value(&m, &req("http", "attestation", "watermark")), 1.0);
    assert_eq!(value(&m, &req("tcp", "unknown", "magic_byte")), 1.0);
    assert_eq!(value(&m, &req("unix", "block", "signed")), 1.0);
    // Latency histograms: every request observed, buckets cumulative.
    let count = "slashguard_signer_sign_seconds_count{transport=\"http\",kind=\"attestation\"}";
    assert_eq!(value(&m, count), 3.0);
    let inf: Vec<f64> = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("slashguard_signer_sign_seconds_bucket{")
                && k.contains("le=\"+Inf\"")
                && k.contains("transport=\"http\"")
                && k.contains("kind=\"attestation\"")
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(inf, [3.0]);
    assert!(m
        .keys()
        .any(|k| k.starts_with("slashguard_authorize_seconds_bucket")));
    // Refusals by safety rule, from the library's hook.
    assert_eq!(
        value(&m, "slashguard_refusals_total{reason=\"watermark_below\"}"),
        1.0
    );
    // The current watermark per chain, key and kind.
    let wm = |name: &str, key: &str, kind: &str| {
        format!("slashguard_{name}{{chain=\"NetXdQprcVkpaWU\",key=\"{key}\",kind=\"{kind}\"}}")
    };
    assert_eq!(value(&m, &wm("watermark_level", TZ1, "attestation")), 100.0);
    assert_eq!(value(&m, &wm("watermark_round", TZ1, "attestation")), 2.0);
    assert_eq!(value(&m, &wm("watermark_level", TZ3, "block")), 50.0);

    // The dedicated listener serves the same exposition, and nothing else.
    let from_metrics = scrape(&metrics);
    assert_eq!(
        value(&from_metrics, &req("http", "attestation", "signed")),
        1.0
    );
    assert_eq!(
        http(&metrics, "GET", &format!("/keys/{TZ1}"), None).status,
        404
    );
    assert_eq!(http(a, "POST", "/metrics", Some("\"\"")).status, 405);

    // After a restart the gauges show the stored marks before any request.
    drop(server);
    let server = Server::start(&config);
    let m = scrape(&server.http);
    assert_eq!(value(&m, &wm("watermark_level", TZ1, "attestation")), 100.0);
    assert_eq!(value(&m, &wm("watermark_level", TZ3, "block")), 50.0);
}
