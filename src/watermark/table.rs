//! An in-memory table of watermarks with the batch rule applied to it. The
//! memory and file backends keep one of these under a lock: they plan a
//! change, make it durable, and only then apply it.

use std::collections::BTreeMap;

use crate::error::{Error, FormatError, Result};
use crate::watermark::{
    decide, decode_entry, encode_entry, entry_len, Decision, Mark, SetMode, SignRequest, Watermark,
    WatermarkKey, ENTRY_LEN,
};

/// Watermarks by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatermarkTable {
    map: BTreeMap<WatermarkKey, Watermark>,
}

/// The changes a batch would make, not yet applied.
pub type Changes = Vec<(WatermarkKey, Watermark)>;

impl WatermarkTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored watermark for `key`.
    pub fn get(&self, key: &WatermarkKey) -> Option<&Watermark> {
        self.map.get(key)
    }

    /// Every stored watermark, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&WatermarkKey, &Watermark)> {
        self.map.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Decide a batch: every request passes, or none does. Two requests for
    /// one key in a batch are invalid (they could not both be signed).
    pub fn plan_authorize(&self, requests: &[SignRequest]) -> Result<(Vec<Decision>, Changes)> {
        reject_duplicate_keys(requests.iter().map(|r| &r.key))?;
        let mut decisions = Vec::with_capacity(requests.len());
        let mut changes = Vec::new();
        for r in requests {
            let d = decide(self.map.get(&r.key), r)?;
            if d == Decision::Advanced {
                changes.push((r.key, Watermark::after(r)));
            }
            decisions.push(d);
        }
        Ok((decisions, changes))
    }

    /// Plan setting marks directly (operator raise or import). In
    /// [`SetMode::RaiseOnly`] a mark below the stored one refuses the whole
    /// batch. A mark equal to the stored one clears its payload hash and
    /// signature (the caller knows no payload there, or another one: none
    /// may be repeated); an entry already without a payload hash is left as
    /// it is.
    pub fn plan_set(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<Changes> {
        reject_duplicate_keys(marks.iter().map(|(k, _)| k))?;
        let mut changes = Vec::new();
        for (key, mark) in marks {
            let stored = self.map.get(key);
            if mode == SetMode::RaiseOnly {
                if let Some(s) = stored {
                    if *mark < s.mark {
                        return Err(crate::watermark::WatermarkRefusal {
                            key: *key,
                            stored: Box::new(*s),
                            requested: *mark,
                            reason: crate::watermark::RefusalReason::Below,
                        }
                        .into());
                    }
                    if *mark == s.mark && s.payload_hash.is_none() {
                        continue;
                    }
                }
            }
            changes.push((*key, Watermark::raised(*mark)));
        }
        Ok(changes)
    }

    /// Apply planned changes (after they are durable).
    pub fn apply(&mut self, changes: &Changes) {
        for (k, w) in changes {
            self.map.insert(*k, *w);
        }
    }

    /// Encode the table with `changes` applied, without applying them.
    pub fn encode_with(&self, changes: &Changes) -> Vec<u8> {
        let mut merged = self.map.clone();
        for (k, w) in changes {
            merged.insert(*k, *w);
        }
        let mut out = Vec::with_capacity(4 + merged.len() * ENTRY_LEN);
        out.extend_from_slice(&(merged.len() as u32).to_le_bytes());
        for (k, w) in &merged {
            out.extend_from_slice(&encode_entry(k, w));
        }
        out
    }

    /// Decode a table written by [`encode_with`](Self::encode_with).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < 4 {
            return Err(FormatError::Truncated {
                needed: 4,
                have: bytes.len(),
            });
        }
        let count = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        // Entries of version 1 (76 bytes) and 2 (173 bytes) may be mixed: a
        // table written before the upgrade holds only v1 entries, and is
        // rewritten whole (as v2) on its next change.
        let mut body = &bytes[4..];
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let len = match entry_len(body) {
                Err(FormatError::Empty) => {
                    return Err(FormatError::Truncated {
                        needed: bytes.len() + crate::watermark::ENTRY_V1_LEN,
                        have: bytes.len(),
                    })
                }
                other => other?,
            };
            if body.len() < len {
                return Err(FormatError::Truncated {
                    needed: bytes.len() - body.len() + len,
                    have: bytes.len(),
                });
            }
            let (chunk, rest) = body.split_at(len);
            body = rest;
            let (k, w) = decode_entry(chunk, None)?;
            if map.insert(k, w).is_some() {
                return Err(FormatError::InvalidField {
                    field: "key",
                    detail: format!("{k} appears twice"),
                });
            }
        }
        if !body.is_empty() {
            return Err(FormatError::TrailingBytes { count: body.len() });
        }
        Ok(WatermarkTable { map })
    }
}

fn reject_duplicate_keys<'a>(keys: impl Iterator<Item = &'a WatermarkKey>) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if !seen.insert(*k) {
            return Err(Error::Invalid(format!("{k} appears twice in one batch")));
        }
    }
    Ok(())
}
