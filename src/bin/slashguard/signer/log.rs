//! Structured logs: one JSON object per line on stderr, for every decision
//! (key, kind, level, round, outcome) and every lifecycle event. Never a
//! secret: only key hashes, marks and reasons are written.
//!
//! Each line is formatted in memory and written with ONE `write` call.
//! Stderr is unbuffered: `eprintln!("{value}")` of a JSON value issues one
//! `write` per token (about 70 for a decision line), each a system call
//! that also wakes whoever reads the log; on a signer that was most of the
//! time a sign request spent inside the daemon. One write of a line under
//! `PIPE_BUF` (4 KiB) is also atomic on a pipe, so lines never interleave.
//! The write stays synchronous and comes before the reply: a released
//! signature's line is already with the log reader (or the file) when the
//! baker gets the signature.

use std::io::Write;
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};
use slashguard::remote_signer::{Released, Withheld};
use slashguard::watermark::KeyHash;

use crate::output::now_ms;

/// Log lines that could not be written (stderr closed or failing):
/// exported as `slashguard_signer_log_write_failures_total`, so that a
/// log that stops is seen even though it cannot say so itself.
pub static WRITE_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The line of `event` with `fields`, newline included.
fn line(event: &str, mut fields: Value) -> Vec<u8> {
    if let Value::Object(m) = &mut fields {
        m.insert("ts_ms".into(), now_ms().into());
        m.insert("event".into(), event.into());
    }
    // Serializing a `Value` into memory cannot fail (its keys are strings).
    let mut out = serde_json::to_vec(&fields).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Write one line with one call; a failure is counted and returned.
fn write_line(line: &[u8]) -> std::io::Result<()> {
    let r = std::io::stderr().lock().write_all(line);
    if r.is_err() {
        WRITE_FAILURES.inc();
    }
    r
}

/// A lifecycle event. Best effort: a failed write is counted in
/// [`WRITE_FAILURES`] (the event changes nothing that is signed).
pub fn event(event: &str, fields: Value) {
    let _ = write_line(&line(event, fields));
}

/// The fields of the decision line on one sign request.
fn decision_fields(transport: &str, pkh: &KeyHash, result: &Result<Released, Withheld>) -> Value {
    if let Ok(Released::Generic(g)) = result {
        let operations: Vec<&str> = g
            .operation
            .contents
            .iter()
            .map(|c| c.kind.as_str())
            .collect();
        return json!({
            "transport": transport,
            "key": pkh.to_string(),
            "kind": "generic",
            "operations": operations,
            "outcome": "signed",
        });
    }
    let request = match result {
        Ok(Released::Consensus(s)) => Some(&s.request),
        Ok(Released::Generic(_)) => None,
        Err(w) => w.request.as_ref(),
    };
    let mut v = json!({
        "transport": transport,
        "key": pkh.to_string(),
        "kind": request.map(|r| r.key.kind.to_string()),
        "chain": request.map(|r| r.key.chain.to_string()),
        "level": request.map(|r| r.mark.level),
        "round": request.map(|r| r.mark.round),
    });
    match result {
        Ok(Released::Consensus(s)) => {
            v["outcome"] = "signed".into();
            v["decision"] = format!("{:?}", s.decision).into();
        }
        Ok(Released::Generic(_)) => {}
        Err(w) => {
            v["outcome"] = "withheld".into();
            v["status"] = w.error.status().into();
            v["reason"] = w.error.reason().into();
            v["error"] = w.error.to_string().into();
        }
    }
    v
}

/// Log the decision on one sign request, before its reply. `Err` when the
/// line could not be written: the caller then releases no signature (a
/// signature is never out without its line; the watermark that advanced
/// makes a retry of the same bytes a repeat, logged then).
pub fn decision(
    transport: &str,
    pkh: &KeyHash,
    result: &Result<Released, Withheld>,
) -> std::io::Result<()> {
    write_line(&line("sign", decision_fields(transport, pkh, result)))
}

/// The error text a client gets when its decision could not be logged.
pub const UNLOGGED: &str =
    "slashguard: signer error: the decision could not be logged, so no signature was released (check the signer's stderr; slashguard_signer_log_write_failures_total counts these)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_and_one_newline() {
        let l = line("ready", json!({"keys": ["tz1x"], "note": "a\nb"}));
        assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(l.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v["event"], "ready");
        assert_eq!(v["note"], "a\nb");
        assert!(v["ts_ms"].as_u64().is_some());
    }
}
