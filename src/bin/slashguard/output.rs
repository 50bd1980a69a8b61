//! What a command prints: text for people, one JSON object for scripts.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::exit::Failure;

/// The result of a command, in both forms.
pub struct Report {
    pub human: String,
    pub json: Value,
}

impl Report {
    pub fn new(human: impl Into<String>, json: Value) -> Self {
        Report {
            human: human.into(),
            json,
        }
    }
}

/// Print a success. JSON output always carries `"ok": true`.
pub fn print_report(report: Report, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let mut obj = match report.json {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("result".into(), other);
                m
            }
        };
        obj.insert("ok".into(), Value::Bool(true));
        let _ = writeln!(out, "{}", Value::Object(obj));
    } else {
        let text = report.human.trim_end();
        if !text.is_empty() {
            let _ = writeln!(out, "{text}");
        }
    }
}

/// Print a failure: always on stderr, and as JSON on stdout with --json.
pub fn print_failure(f: &Failure, json: bool) {
    eprintln!("slashguard: {f}");
    if json {
        let v = json!({
            "ok": false,
            "exit_code": f.code as i32,
            "error": f.code.name(),
            "message": f.message,
            "hint": f.next_step(),
        });
        println!("{v}");
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A unix-milliseconds time as ISO 8601 UTC, e.g. `2026-12-02T11:20:03.123Z`.
pub fn iso(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        at_ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A time for people: ISO 8601 UTC and how long ago, e.g.
/// `2026-12-02T11:20:03.123Z (3s ago)`.
pub fn when(at_ms: u64) -> String {
    format!("{} ({})", iso(at_ms), age(at_ms))
}

/// "3m 12s ago" style, for a unix-milliseconds time.
pub fn age(at_ms: u64) -> String {
    let now = now_ms();
    if at_ms > now {
        return format!(
            "{} in the future (clock skew?)",
            short(Duration::from_millis(at_ms - now))
        );
    }
    format!("{} ago", short(Duration::from_millis(now - at_ms)))
}

pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::iso;

    #[test]
    fn iso_8601_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(1_796_182_905_494), "2026-12-02T03:41:45.494Z");
        assert_eq!(iso(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(iso(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }
}
