//! The watermark interchange file: a versioned JSON document that carries
//! watermarks from one store to another (file, etcd, a device's marks, an
//! octez-signer's files), per chain, key and kind, with the operator's
//! alias of each key where one is known.
//!
//! ```json
//! {
//!   "format": "slashguard-watermarks",
//!   "version": 1,
//!   "source": "file:/var/lib/baker/hwm",
//!   "exported_at_ms": 1767225600000,
//!   "watermarks": [
//!     { "chain": "NetXdQprcVkpaWU", "key": "tz4...", "alias": "consensus",
//!       "kind": "attestation", "level": 9000000, "round": 0,
//!       "payload_hash": "5f0c...e1" }
//!   ]
//! }
//! ```
//!
//! - `format` and `version` come first and are checked before anything
//!   else: a file of another format or a newer version is refused, never
//!   half read.
//! - `kind` is `block`, `preattestation` or `attestation`; `level` and
//!   `round` are Tezos int32 values (0 to 2^31-1); `payload_hash` (64 hex
//!   digits, blake2b-256 of the bytes signed) and `alias` are optional.
//! - Unknown fields, a (chain, key, kind) listed twice, or one key with two
//!   aliases are errors: an interchange file is checked whole before any
//!   mark is imported.
//!
//! Import ([`import`]) sets the marks in ONE
//! [`set_marks`](SignerGuard::set_marks) batch, so it is all or nothing.
//! An imported mark carries no payload hash: nothing at exactly that
//! (level, round) can be signed afterwards, only above it. That holds for
//! a mark equal to the stored one too, unless the file names the same
//! payload hash the store holds there (then the entry is left as it is).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, FormatError, Result};
use crate::watermark::{
    ChainId, ConsensusKind, KeyHash, Mark, PayloadHash, RefusalReason, SetMode, SignerGuard,
    Watermark, WatermarkKey, WatermarkRefusal,
};

/// The `format` field of every interchange file.
pub const FORMAT: &str = "slashguard-watermarks";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Operator names of keys (`consensus`, `companion`, a TezSign alias, an
/// octez alias), one per key.
pub type Aliases = BTreeMap<KeyHash, String>;

/// One watermark in an interchange file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkEntry {
    /// The chain (`Net...`).
    pub chain: ChainId,
    /// The key (`tz1..tz4`).
    pub key: KeyHash,
    /// The operator's name for the key, if one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The message kind.
    pub kind: ConsensusKind,
    /// The level.
    pub level: u32,
    /// The round.
    pub round: u32,
    /// blake2b-256 of the message signed at this mark, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_hash")]
    pub payload_hash: Option<PayloadHash>,
}

impl WatermarkEntry {
    /// The (chain, key, kind) this entry is for.
    pub fn watermark_key(&self) -> WatermarkKey {
        WatermarkKey {
            chain: self.chain,
            key: self.key,
            kind: self.kind,
        }
    }

    /// The (level, round).
    pub fn mark(&self) -> Mark {
        Mark {
            level: self.level,
            round: self.round,
        }
    }
}

/// A whole interchange file. Build one with [`WatermarkFile::new`], read
/// one with [`WatermarkFile::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for files this build writes.
    pub version: u32,
    /// Where the marks came from (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When they were read (unix milliseconds, informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at_ms: Option<u64>,
    /// The watermarks, ordered by chain, key and kind.
    pub watermarks: Vec<WatermarkEntry>,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::watermark::PayloadHash;

    pub(super) fn serialize<S: Serializer>(
        h: &Option<PayloadHash>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match h {
            Some(h) => s.serialize_str(&super::to_hex(&h.0)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<PayloadHash>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            super::from_hex32(&s).map(PayloadHash).ok_or_else(|| {
                serde::de::Error::custom(format!("payload_hash {s:?} is not 64 hex digits"))
            })
        })
        .transpose()
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn invalid(what: &str, field: &'static str, detail: impl Into<String>) -> Error {
    Error::corrupt(
        what,
        FormatError::InvalidField {
            field,
            detail: detail.into(),
        },
    )
}

/// Largest level or round a Tezos payload carries (int32).
const MAX_TEZOS_INT: u32 = i32::MAX as u32;

impl WatermarkFile {
    /// A file holding `marks`, with the alias of each key from `aliases`,
    /// ordered by (chain, key, kind). `source` says where they came from.
    pub fn new(
        marks: impl IntoIterator<Item = (WatermarkKey, Watermark)>,
        aliases: &Aliases,
        source: Option<String>,
    ) -> Self {
        let sorted: BTreeMap<WatermarkKey, Watermark> = marks.into_iter().collect();
        let watermarks = sorted
            .into_iter()
            .map(|(k, w)| WatermarkEntry {
                chain: k.chain,
                key: k.key,
                alias: aliases.get(&k.key).cloned(),
                kind: k.kind,
                level: w.mark.level,
                round: w.mark.round,
                payload_hash: w.payload_hash,
            })
            .collect();
        WatermarkFile {
            format: FORMAT.to_string(),
            version: VERSION,
            source,
            exported_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            watermarks,
        }
    }

    /// The file as pretty-printed JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plain data always serializes");
        s.push('\n');
        s
    }

    /// Read and check a file; `what` names it in errors (a path).
    ///
    /// Errors: [`Error::Corrupt`] naming `what` and the problem when the
    /// text is not JSON, not an interchange file, of an unsupported
    /// version ([`FormatError::UnsupportedVersion`]), has unknown fields,
    /// a level or round beyond int32, a (chain, key, kind) twice, or one
    /// key under two aliases.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(what, "json", e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid(what, "json", "not a JSON object"))?;
        match obj.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(invalid(
                    what,
                    "format",
                    format!("expected {FORMAT:?}, found {other:?}"),
                ))
            }
        }
        match obj.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(Error::corrupt(
                    what,
                    FormatError::UnsupportedVersion {
                        found: v.min(255) as u8,
                        supported: VERSION as u8,
                    },
                ))
            }
            None => return Err(invalid(what, "version", "missing or not a number")),
        }
        let file: WatermarkFile = serde_json::from_value(value)
            .map_err(|e| invalid(what, "watermarks", e.to_string()))?;
        file.check(what)?;
        Ok(file)
    }

    fn check(&self, what: &str) -> Result<()> {
        let mut seen = BTreeSet::new();
        let mut names: Aliases = BTreeMap::new();
        for e in &self.watermarks {
            if e.level > MAX_TEZOS_INT || e.round > MAX_TEZOS_INT {
                return Err(invalid(
                    what,
                    "level",
                    format!(
                        "{} at {} is beyond Tezos int32 levels and rounds",
                        e.watermark_key(),
                        e.mark()
                    ),
                ));
            }
            if !seen.insert(e.watermark_key()) {
                return Err(invalid(
                    what,
                    "watermarks",
                    format!("{} is listed twice", e.watermark_key()),
                ));
            }
            if let Some(alias) = &e.alias {
                if let Some(prev) = names.insert(e.key, alias.clone()) {
                    if prev != *alias {
                        return Err(invalid(
                            what,
                            "alias",
                            format!("{} is named both {prev:?} and {alias:?}", e.key),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every (key, mark) in the file.
    pub fn marks(&self) -> Vec<(WatermarkKey, Mark)> {
        self.watermarks
            .iter()
            .map(|e| (e.watermark_key(), e.mark()))
            .collect()
    }

    /// The aliases the file names.
    pub fn aliases(&self) -> Aliases {
        self.watermarks
            .iter()
            .filter_map(|e| e.alias.clone().map(|a| (e.key, a)))
            .collect()
    }
}

/// Every watermark of `guard` as an interchange file.
///
/// Errors: those of [`SignerGuard::watermarks`].
pub async fn export(
    guard: &dyn SignerGuard,
    aliases: &Aliases,
    source: Option<String>,
) -> Result<WatermarkFile> {
    let marks = guard.watermarks().await?;
    Ok(WatermarkFile::new(marks, aliases, source))
}

/// How [`import`] treats a mark the store already holds above the file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Refuse the whole import if any mark in the file is below the
    /// stored one (the default: an older file than the store is usually a
    /// mistake worth a look).
    #[default]
    RaiseOnly,
    /// Import the marks above the stored ones and keep the stored marks
    /// that are higher (a merge that never lowers anything).
    KeepHigher,
    /// Set every mark exactly as in the file, lowering where it is lower
    /// (operator recovery only).
    Force,
}

/// What an import changed, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Marks set: (key, stored before, set to).
    pub set: Vec<(WatermarkKey, Option<Mark>, Mark)>,
    /// Marks equal to the stored ones, left as they are: with the same
    /// payload hash as the file's (that message may still be repeated), or
    /// already without one. An equal mark with another or no payload hash
    /// is in [`set`](Self::set): its stored payload is cleared.
    pub unchanged: Vec<WatermarkKey>,
    /// Marks below the stored ones, kept by [`ImportMode::KeepHigher`]:
    /// (key, stored, in the file).
    pub kept_higher: Vec<(WatermarkKey, Mark, Mark)>,
}

impl ImportReport {
    /// Entries that lowered a stored mark (only in [`ImportMode::Force`]).
    pub fn lowered(&self) -> impl Iterator<Item = &(WatermarkKey, Option<Mark>, Mark)> {
        self.set
            .iter()
            .filter(|(_, before, after)| before.is_some_and(|b| b > *after))
    }
}

/// Import `file` into `guard` in ONE [`set_marks`](SignerGuard::set_marks)
/// batch: all marks are set, or none is.
///
/// The stored marks are read first to plan and report; the batch itself
/// re-checks every mark atomically, so a mark raised by a signer in the
/// meantime is never lowered by the import (except in
/// [`ImportMode::Force`]).
///
/// Errors: [`Error::Refused`] naming the first mark that would go down
/// (in [`ImportMode::RaiseOnly`]; nothing is changed); the errors of the
/// backend's `set_marks` (for etcd, at most
/// [`MAX_BATCH`](crate::etcd::MAX_BATCH) entries per import).
pub async fn import(
    guard: &dyn SignerGuard,
    file: &WatermarkFile,
    mode: ImportMode,
) -> Result<ImportReport> {
    let stored: BTreeMap<WatermarkKey, Watermark> = guard.watermarks().await?.into_iter().collect();
    let mut report = ImportReport::default();
    let mut batch = Vec::new();
    for entry in &file.watermarks {
        let (key, mark) = (entry.watermark_key(), entry.mark());
        let before = stored.get(&key).map(|w| w.mark);
        // An equal mark is left as it is only when the file names the very
        // payload the store holds there; with another or no payload hash it
        // is set again, which clears the stored payload hash and signature:
        // nothing at that mark may then be repeated (issue 10 item 8).
        let same_payload = stored
            .get(&key)
            .is_some_and(|w| w.payload_hash.is_some() && w.payload_hash == entry.payload_hash);
        match (before, mode) {
            (Some(b), ImportMode::RaiseOnly | ImportMode::KeepHigher)
                if b == mark && (same_payload || stored[&key].payload_hash.is_none()) =>
            {
                report.unchanged.push(key)
            }
            (Some(b), ImportMode::RaiseOnly) if b > mark => {
                tracing::warn!(%key, stored = %b, file = %mark, "import refused: it would lower a watermark");
                return Err(WatermarkRefusal {
                    key,
                    stored: Box::new(stored[&key]),
                    requested: mark,
                    reason: RefusalReason::Below,
                }
                .into());
            }
            (Some(b), ImportMode::KeepHigher) if b > mark => {
                report.kept_higher.push((key, b, mark))
            }
            _ => {
                report.set.push((key, before, mark));
                batch.push((key, mark));
            }
        }
    }
    let set_mode = if mode == ImportMode::Force {
        SetMode::Force
    } else {
        SetMode::RaiseOnly
    };
    guard.set_marks(&batch, set_mode).await?;
    tracing::info!(
        set = report.set.len(),
        unchanged = report.unchanged.len(),
        kept_higher = report.kept_higher.len(),
        ?mode,
        "watermarks imported"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryWatermarks;
    use crate::watermark::Curve;

    fn key(kind: ConsensusKind, b: u8) -> WatermarkKey {
        WatermarkKey {
            chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
            key: KeyHash {
                curve: Curve::Bls,
                hash: [b; 20],
            },
            kind,
        }
    }

    fn wm(level: u32, round: u32) -> Watermark {
        Watermark {
            mark: Mark { level, round },
            payload_hash: Some(PayloadHash([0xab; 32])),
            signature: None,
        }
    }

    #[test]
    fn roundtrip_keeps_every_field() {
        let mut aliases = Aliases::new();
        aliases.insert(key(ConsensusKind::Block, 1).key, "consensus".into());
        let file = WatermarkFile::new(
            [
                (key(ConsensusKind::Block, 1), wm(10, 2)),
                (
                    key(ConsensusKind::Attestation, 2),
                    Watermark {
                        mark: Mark::level(7),
                        payload_hash: None,
                        signature: None,
                    },
                ),
            ],
            &aliases,
            Some("test".into()),
        );
        let text = file.to_json();
        assert!(text.contains("\"alias\": \"consensus\""), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert_eq!(WatermarkFile::from_json(&text, "t").unwrap(), file);
    }

    #[test]
    fn bad_files_are_refused_with_their_problem() {
        let good = WatermarkFile::new(
            [(key(ConsensusKind::Block, 1), wm(10, 2))],
            &Aliases::new(),
            None,
        )
        .to_json();
        let cases = [
            ("not json", "json".to_string()),
            ("[]", "json".to_string()),
            (
                r#"{"format":"other","version":1,"watermarks":[]}"#,
                "format".into(),
            ),
            (
                &good.replace("\"version\": 1", "\"version\": 2"),
                "version".into(),
            ),
            (
                &good.replace("\"level\": 10", "\"level\": 2147483648"),
                "level".into(),
            ),
            (
                &good.replace("\"level\": 10", "\"level\": -1"),
                "watermarks".into(),
            ),
            (
                &good.replace("\"round\": 2", "\"round\": 2, \"extra\": 1"),
                "watermarks".into(),
            ),
            (&good.replace(&"ab".repeat(32), "zz"), "watermarks".into()),
            (
                &good.replace("\"kind\": \"block\"", "\"kind\": \"endorsement\""),
                "watermarks".into(),
            ),
        ];
        for (text, field) in cases {
            let err = WatermarkFile::from_json(text, "f").unwrap_err();
            let shown = err.to_string();
            match err {
                Error::Corrupt {
                    problem: FormatError::InvalidField { field: f, .. },
                    ..
                } => {
                    assert_eq!(f, field, "{text}: {shown}")
                }
                Error::Corrupt {
                    problem: FormatError::UnsupportedVersion { found: 2, .. },
                    ..
                } => {
                    assert_eq!(field, "version")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let mut twice = WatermarkFile::from_json(&good, "f").unwrap();
        twice.watermarks.push(twice.watermarks[0].clone());
        let text = serde_json::to_string(&twice).unwrap();
        assert!(matches!(
            WatermarkFile::from_json(&text, "f"),
            Err(Error::Corrupt {
                problem: FormatError::InvalidField {
                    field: "watermarks",
                    ..
                },
                ..
            })
        ));
    }

    #[tokio::test]
    async fn import_is_all_or_nothing_and_raise_only() {
        let store = MemoryWatermarks::new();
        let a = key(ConsensusKind::Block, 1);
        let b = key(ConsensusKind::Attestation, 1);
        store
            .set_marks(&[(a, Mark::level(100))], SetMode::Force)
            .await
            .unwrap();
        let file = WatermarkFile::new(
            [
                (
                    a,
                    Watermark {
                        mark: Mark::level(50),
                        payload_hash: None,
                        signature: None,
                    },
                ),
                (b, wm(60, 0)),
            ],
            &Aliases::new(),
            None,
        );
        let err = import(&store, &file, ImportMode::RaiseOnly)
            .await
            .unwrap_err();
        assert!(err.is_refusal(), "{err}");
        assert_eq!(store.watermark(&b).await.unwrap(), None, "nothing imported");

        let r = import(&store, &file, ImportMode::KeepHigher).await.unwrap();
        assert_eq!(r.kept_higher, vec![(a, Mark::level(100), Mark::level(50))]);
        assert_eq!(
            store.watermark(&a).await.unwrap().unwrap().mark,
            Mark::level(100)
        );
        assert_eq!(
            store.watermark(&b).await.unwrap().unwrap().mark,
            Mark::level(60)
        );

        let r = import(&store, &file, ImportMode::Force).await.unwrap();
        assert_eq!(r.lowered().count(), 1);
        assert_eq!(
            store.watermark(&a).await.unwrap().unwrap().mark,
            Mark::level(50)
        );
    }
}
