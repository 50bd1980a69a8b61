//! Structured logs: one JSON object per line on stderr, for every decision
//! (key, kind, level, round, outcome) and every lifecycle event. Never a
//! secret: only key hashes, marks and reasons are written.

use serde_json::{json, Value};
use slashguard::remote_signer::{Released, Withheld};
use slashguard::watermark::KeyHash;

use crate::output::now_ms;

pub fn event(event: &str, mut fields: Value) {
    if let Value::Object(m) = &mut fields {
        m.insert("ts_ms".into(), now_ms().into());
        m.insert("event".into(), event.into());
    }
    eprintln!("{fields}");
}

/// The decision on one sign request.
pub fn decision(transport: &str, pkh: &KeyHash, result: &Result<Released, Withheld>) {
    if let Ok(Released::Generic(g)) = result {
        let operations: Vec<&str> = g
            .operation
            .contents
            .iter()
            .map(|c| c.kind.as_str())
            .collect();
        event(
            "sign",
            json!({
                "transport": transport,
                "key": pkh.to_string(),
                "kind": "generic",
                "operations": operations,
                "outcome": "signed",
            }),
        );
        return;
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
    event("sign", v);
}
