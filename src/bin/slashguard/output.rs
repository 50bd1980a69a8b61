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
