//! octez-signer's watermark files, read into an interchange
//! [`WatermarkFile`] so a baker moving from octez-signer keeps its marks.
//!
//! What octez-signer (`src/bin_signer/handler.ml`, with
//! `--check-high-watermark`) keeps in its base directory, one JSON file per
//! message kind, named `<kind>_high_watermarks` (its wallet appends `s` to
//! the name `<kind>_high_watermark`):
//!
//! | file | kind |
//! |---|---|
//! | `block_high_watermarks` | block (magic 0x11; 0x01 before Tenderbake) |
//! | `preattestation_high_watermarks` (`preendorsement_...` before the rename) | preattestation (0x12) |
//! | `attestation_high_watermarks` (`endorsement_...` before the rename) | attestation (0x13; 0x02 before Tenderbake) |
//!
//! Each holds an object keyed by chain id (`Net...`), each value an object
//! keyed by public key hash (`tz1..tz4`), each value one mark:
//!
//! ```json
//! { "NetXdQprcVkpaWU":
//!     { "tz1...": { "level": 9000000, "round": 0,
//!                   "hash": "<64 hex digits: blake2b-256 of the bytes signed>",
//!                   "signature": "sig..." } } }
//! ```
//!
//! `level` and `round` are int32 numbers; `round` is absent in marks
//! written before Tenderbake (read as round 0); `signature` is optional and
//! not needed here. The hash is blake2b-256 of the signed bytes, which is
//! slashguard's [`PayloadHash`], so it is carried over.
//!
//! Assumptions, stated because octez documents none of this as a stable
//! format: the layout above is the Data_encoding JSON of the signer's
//! `High_watermark.encoding` (objects for its association lists, hex for
//! bytes, numbers for int32). Anything else in a file (other fields, other
//! types, negative numbers) is refused with the file and the entry named,
//! rather than guessed at. When both the old and the new name of a kind
//! exist, the higher mark of each key is taken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, FormatError, Result};
use crate::watermark::interchange::{from_hex32, Aliases, WatermarkFile};
use crate::watermark::{
    ChainId, ConsensusKind, KeyHash, Mark, PayloadHash, Watermark, WatermarkKey,
};

/// The file names read for each kind, newest name first.
pub const OCTEZ_FILES: [(ConsensusKind, &str); 5] = [
    (ConsensusKind::Block, "block_high_watermarks"),
    (
        ConsensusKind::Preattestation,
        "preattestation_high_watermarks",
    ),
    (
        ConsensusKind::Preattestation,
        "preendorsement_high_watermarks",
    ),
    (ConsensusKind::Attestation, "attestation_high_watermarks"),
    (ConsensusKind::Attestation, "endorsement_high_watermarks"),
];

/// Largest watermark file read (octez keeps one small entry per key).
const MAX_FILE_BYTES: u64 = 16 << 20;

fn bad(path: &Path, field: &'static str, detail: impl Into<String>) -> Error {
    Error::corrupt(
        path.display().to_string(),
        FormatError::InvalidField {
            field,
            detail: detail.into(),
        },
    )
}

/// Marks read from one file.
pub type Marks = Vec<(WatermarkKey, Watermark)>;

/// What an octez-signer import does with entries of a key scheme
/// slashguard does not sign for (for example tz5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownKeys {
    /// Refuse the whole import, naming every such entry (the default).
    #[default]
    Refuse,
    /// Leave them out, import the rest, and name each one left out.
    Skip,
}

/// An entry an import left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The file it is in.
    pub file: PathBuf,
    /// Its chain.
    pub chain: ChainId,
    /// Its key hash, as written.
    pub key: String,
    /// The key's scheme, e.g. `tz5 (ML-DSA-44)`.
    pub scheme: String,
    /// Its message kind.
    pub kind: ConsensusKind,
}

impl std::fmt::Display for SkippedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}/{}/{} ({})",
            self.file.display(),
            self.chain,
            self.key,
            self.kind,
            self.scheme
        )
    }
}

/// What [`read_octez_dir_with`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OctezRead {
    /// The marks of known key schemes.
    pub file: WatermarkFile,
    /// Entries left out ([`UnknownKeys::Skip`]), each named.
    pub skipped: Vec<SkippedEntry>,
}

/// Parse one octez watermark file's text into marks of `kind`. `path`
/// names it in errors. An entry of a key scheme slashguard does not sign
/// for (tz5) is an error naming it; see [`parse_octez_file_with`].
pub fn parse_octez_file(
    text: &str,
    kind: ConsensusKind,
    path: &Path,
) -> Result<Vec<(WatermarkKey, Watermark)>> {
    let (marks, skipped) = parse_octez_file_with(text, kind, path)?;
    match skipped.first() {
        Some(first) => Err(bad(path, "key", unknown_detail(first))),
        None => Ok(marks),
    }
}

fn unknown_detail(e: &SkippedEntry) -> String {
    format!(
        "{}/{} is a {} key hash, which slashguard does not sign for",
        e.chain, e.key, e.scheme
    )
}

/// As [`parse_octez_file`], returning the entries of unknown key schemes
/// apart instead of failing on them.
pub fn parse_octez_file_with(
    text: &str,
    kind: ConsensusKind,
    path: &Path,
) -> Result<(Marks, Vec<SkippedEntry>)> {
    let mut skipped = Vec::new();
    let value: Value = serde_json::from_str(text).map_err(|e| bad(path, "json", e.to_string()))?;
    let chains = value
        .as_object()
        .ok_or_else(|| bad(path, "json", "not a JSON object keyed by chain id"))?;
    let mut out = Vec::new();
    for (chain, keys) in chains {
        let chain: ChainId = chain
            .parse()
            .map_err(|_| bad(path, "chain", format!("{chain:?} is not a chain id")))?;
        let keys = keys.as_object().ok_or_else(|| {
            bad(
                path,
                "chain",
                format!("{chain}: not an object keyed by key hash"),
            )
        })?;
        for (pkh, mark) in keys {
            if let Some(u) = KeyHash::unknown_scheme(pkh) {
                skipped.push(SkippedEntry {
                    file: path.to_path_buf(),
                    chain,
                    key: u.key,
                    scheme: u.scheme,
                    kind,
                });
                continue;
            }
            let key: KeyHash = pkh
                .parse()
                .map_err(|_| bad(path, "key", format!("{pkh:?} is not a tz1..tz4 key hash")))?;
            let at = format!("{chain}/{key}");
            let fields = mark
                .as_object()
                .ok_or_else(|| bad(path, "mark", format!("{at}: not an object")))?;
            if let Some(unknown) = fields
                .keys()
                .find(|k| !matches!(k.as_str(), "level" | "round" | "hash" | "signature"))
            {
                return Err(bad(
                    path,
                    "mark",
                    format!("{at}: unknown field {unknown:?}"),
                ));
            }
            let int = |name: &'static str| -> Result<Option<u32>> {
                match fields.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n <= i32::MAX as u64)
                        .map(|n| Some(n as u32))
                        .ok_or_else(|| {
                            bad(
                                path,
                                name,
                                format!("{at}: {v} is not an int32 level or round ≥ 0"),
                            )
                        }),
                }
            };
            let level =
                int("level")?.ok_or_else(|| bad(path, "level", format!("{at}: missing")))?;
            let round = int("round")?.unwrap_or(0);
            let hash = match fields.get("hash") {
                Some(Value::String(h)) => from_hex32(h).map(PayloadHash).ok_or_else(|| {
                    bad(path, "hash", format!("{at}: {h:?} is not 64 hex digits"))
                })?,
                _ => return Err(bad(path, "hash", format!("{at}: missing or not a string"))),
            };
            if !matches!(
                fields.get("signature"),
                None | Some(Value::Null) | Some(Value::String(_))
            ) {
                return Err(bad(path, "signature", format!("{at}: not a string")));
            }
            out.push((
                WatermarkKey { chain, key, kind },
                Watermark {
                    mark: Mark { level, round },
                    payload_hash: Some(hash),
                    signature: None,
                },
            ));
        }
    }
    Ok((out, skipped))
}

/// Read every octez-signer watermark file in `dir` (its base directory,
/// for example `~/.tezos-signer`) into an interchange file. Missing files
/// hold no marks; `aliases` names keys in the result.
///
/// Errors: [`Error::Invalid`] when `dir` holds none of the files;
/// [`Error::Corrupt`] naming the file and entry when one is not the
/// layout in the [module docs](self); [`Error::Io`].
/// Entries of a key scheme slashguard does not sign for (tz5) refuse the
/// whole read, naming every one; [`read_octez_dir_with`] can skip them.
pub fn read_octez_dir(dir: impl AsRef<Path>, aliases: &Aliases) -> Result<WatermarkFile> {
    Ok(read_octez_dir_with(dir, aliases, UnknownKeys::Refuse)?.file)
}

/// As [`read_octez_dir`]; with [`UnknownKeys::Skip`], entries of unknown
/// key schemes are left out and named in [`OctezRead::skipped`].
///
/// Errors: those of [`read_octez_dir`]; with [`UnknownKeys::Refuse`],
/// [`Error::Invalid`] naming every entry of an unknown key scheme.
pub fn read_octez_dir_with(
    dir: impl AsRef<Path>,
    aliases: &Aliases,
    unknown: UnknownKeys,
) -> Result<OctezRead> {
    let dir = dir.as_ref();
    let mut marks: BTreeMap<WatermarkKey, Watermark> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut found = 0;
    for (kind, name) in OCTEZ_FILES {
        let path = dir.join(name);
        let text = match read_bounded(&path)? {
            Some(t) => t,
            None => continue,
        };
        found += 1;
        let (parsed, left_out) = parse_octez_file_with(&text, kind, &path)?;
        skipped.extend(left_out);
        for (key, wm) in parsed {
            match marks.get(&key) {
                Some(old) if old.mark >= wm.mark => {}
                _ => {
                    marks.insert(key, wm);
                }
            }
        }
    }
    if found == 0 {
        return Err(Error::Invalid(format!(
            "{} holds no octez-signer watermark file ({}); give the signer's base directory",
            dir.display(),
            OCTEZ_FILES.map(|(_, n)| n).join(", ")
        )));
    }
    if unknown == UnknownKeys::Refuse && !skipped.is_empty() {
        let names: Vec<String> = skipped.iter().map(|e| e.to_string()).collect();
        return Err(Error::Invalid(format!(
            "{} holds {} watermark(s) of key schemes slashguard does not sign for: {}; nothing was imported (skip them explicitly to import the rest)",
            dir.display(),
            skipped.len(),
            names.join("; ")
        )));
    }
    for e in &skipped {
        tracing::warn!(entry = %e, "octez-signer watermark of an unknown key scheme left out");
    }
    Ok(OctezRead {
        file: WatermarkFile::new(
            marks,
            aliases,
            Some(format!("octez-signer:{}", dir.display())),
        ),
        skipped,
    })
}

fn read_bounded(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(
            path,
            "file",
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TZ1: &str = "tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU";

    fn hash(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }

    #[test]
    fn reads_the_signers_layout_and_takes_the_higher_of_old_and_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("block_high_watermarks"),
            format!(r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":100,"round":2,"hash":"{}","signature":"sigXX"}}}}}}"#, hash(1)),
        )
        .unwrap();
        // Pre-Tenderbake mark: no round.
        std::fs::write(
            p.join("endorsement_high_watermarks"),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":90,"hash":"{}"}}}}}}"#,
                hash(2)
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("attestation_high_watermarks"),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":95,"round":1,"hash":"{}"}}}}}}"#,
                hash(3)
            ),
        )
        .unwrap();
        let file = read_octez_dir(p, &Aliases::new()).unwrap();
        let got: Vec<_> = file
            .watermarks
            .iter()
            .map(|e| (e.kind, e.level, e.round))
            .collect();
        assert_eq!(
            got,
            vec![
                (ConsensusKind::Block, 100, 2),
                (ConsensusKind::Attestation, 95, 1)
            ]
        );
        assert_eq!(file.watermarks[0].payload_hash, Some(PayloadHash([1; 32])));
    }

    #[test]
    fn unknown_key_schemes_are_named_and_skipped_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let tz5 = bs58::encode([&[6u8, 161, 169][..], &[7; 20]].concat())
            .with_check()
            .into_string();
        std::fs::write(
            dir.path().join("attestation_high_watermarks"),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":95,"round":1,"hash":"{}"}},"{tz5}":{{"level":96,"round":0,"hash":"{}"}}}}}}"#,
                hash(3),
                hash(4)
            ),
        )
        .unwrap();
        // By default: refused whole, naming the entry and its scheme.
        let err = read_octez_dir(dir.path(), &Aliases::new()).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, Error::Invalid(_)), "{shown}");
        assert!(
            shown.contains(&tz5) && shown.contains("tz5 (ML-DSA-44)"),
            "{shown}"
        );
        assert!(shown.contains("attestation_high_watermarks"), "{shown}");
        // Asked to skip: the rest is read, the skipped entry named.
        let read = read_octez_dir_with(dir.path(), &Aliases::new(), UnknownKeys::Skip).unwrap();
        assert_eq!(read.file.watermarks.len(), 1);
        assert_eq!(read.file.watermarks[0].key.to_string(), TZ1);
        assert_eq!(read.skipped.len(), 1);
        assert_eq!(read.skipped[0].key, tz5);
        assert_eq!(read.skipped[0].scheme, "tz5 (ML-DSA-44)");
        assert_eq!(read.skipped[0].kind, ConsensusKind::Attestation);
    }

    #[test]
    fn anything_else_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_octez_dir(dir.path(), &Aliases::new()),
            Err(Error::Invalid(_))
        ));
        let bad_entries = [
            "[]".to_string(),
            r#"{"NotAChain":{}}"#.to_string(),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"tz9nope":{{"level":1,"hash":"{}"}}}}}}"#,
                hash(1)
            ),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":-1,"hash":"{}"}}}}}}"#,
                hash(1)
            ),
            format!(r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":1,"hash":"abc"}}}}}}"#),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"hash":"{}"}}}}}}"#,
                hash(1)
            ),
            format!(
                r#"{{"NetXdQprcVkpaWU":{{"{TZ1}":{{"level":1,"hash":"{}","slot":3}}}}}}"#,
                hash(1)
            ),
        ];
        for text in bad_entries {
            std::fs::write(dir.path().join("block_high_watermarks"), &text).unwrap();
            match read_octez_dir(dir.path(), &Aliases::new()) {
                Err(Error::Corrupt { what, .. }) => {
                    assert!(what.ends_with("block_high_watermarks"), "{what}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
