//! A record file of two pre-allocated slots written alternately.
//!
//! Each store writes the new record into the slot that does not hold the
//! current one and calls `fdatasync` once. The file's size never changes in
//! the steady state, so the sync flushes data only. A crash mid-write can
//! damage only the slot being written; the checksum rejects it and the
//! other slot, the last acknowledged record, is loaded. A slot of a format
//! version this build does not know is never skipped that way: opening
//! fails with [`FormatError::UnsupportedVersion`].
//!
//! Slot layout (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic, per record kind |
//! | 1 | format version (1) |
//! | 3 | reserved, zero |
//! | 8 | sequence number (+1 per write) |
//! | 4 | slot size (half the file) |
//! | 4 | payload length |
//! | n | payload |
//! | 4 | CRC-32 of header and payload |

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, FormatError, Result};

const VERSION: u8 = 1;
const HEADER: usize = 24;
const TRAILER: usize = 4;
/// Slot sizes are multiples of this, so slots start on page boundaries.
const PAGE: usize = 4096;
const MAX_SLOT: usize = 64 << 20;

/// What loading found besides the record it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Both slots were intact.
    Clean,
    /// The other slot was damaged (a write interrupted by a crash leaves
    /// exactly this); the intact one was loaded. The next write overwrites
    /// the damaged slot.
    DamagedSlot {
        /// Which slot (0 or 1).
        slot: usize,
        /// What was wrong with it.
        problem: FormatError,
    },
}

pub(crate) struct Loaded {
    pub(crate) payload: Vec<u8>,
    pub(crate) recovery: Recovery,
}

/// An open slot file. Not `Sync`: callers serialize writes behind a mutex.
pub(crate) struct SlotFile {
    file: File,
    path: PathBuf,
    magic: [u8; 4],
    slot_size: usize,
    seq: u64,
    active: usize,
    // Set after a failed write or sync: the page cache may no longer match
    // the disk, so no further write is attempted until the file is reopened.
    poisoned: bool,
    buf: Vec<u8>,
}

fn slot_size_for(payload: usize) -> usize {
    (HEADER + payload + TRAILER).div_ceil(PAGE).max(1) * PAGE
}

fn encode_slot(buf: &mut Vec<u8>, magic: [u8; 4], seq: u64, slot_size: usize, payload: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&magic);
    buf.extend_from_slice(&[VERSION, 0, 0, 0]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(slot_size as u32).to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Decode one slot; `Ok((seq, payload))` only when it is intact.
fn decode_slot(slot: &[u8], magic: [u8; 4]) -> Result<(u64, &[u8]), FormatError> {
    if slot.iter().all(|&b| b == 0) {
        return Err(FormatError::Empty);
    }
    if slot.len() < HEADER + TRAILER {
        return Err(FormatError::Truncated {
            needed: HEADER + TRAILER,
            have: slot.len(),
        });
    }
    if slot[..4] != magic {
        return Err(FormatError::BadMagic {
            found: slot[..4].to_vec(),
        });
    }
    if slot[4] != VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: slot[4],
            supported: VERSION,
        });
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().expect("fixed"));
    let size = u32::from_le_bytes(slot[16..20].try_into().expect("fixed")) as usize;
    let len = u32::from_le_bytes(slot[20..24].try_into().expect("fixed")) as usize;
    if size != slot.len() {
        return Err(FormatError::InvalidField {
            field: "slot size",
            detail: format!("header says {size}, file holds {}", slot.len()),
        });
    }
    let end = HEADER
        .checked_add(len)
        .filter(|&e| e + TRAILER <= slot.len())
        .ok_or_else(|| FormatError::InvalidField {
            field: "payload length",
            detail: format!("{len} does not fit a slot of {}", slot.len()),
        })?;
    let stored = u32::from_le_bytes(slot[end..end + TRAILER].try_into().expect("fixed"));
    let computed = crc32fast::hash(&slot[..end]);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    Ok((seq, &slot[HEADER..end]))
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl SlotFile {
    /// Open `path`, or create it holding `initial` if it does not exist.
    /// The caller must hold the owner lock for `path`.
    pub(crate) fn open_or_create(
        path: &Path,
        magic: [u8; 4],
        initial: &[u8],
    ) -> Result<(Self, Loaded)> {
        match std::fs::metadata(path) {
            Ok(_) => Self::open(path, magic),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create(path, magic, initial, 0, slot_size_for(initial.len()))?;
                Self::open(path, magic)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Write a fresh file beside `path` and rename it into place: used at
    /// creation and when a record outgrows its slot (both rare).
    fn create(
        path: &Path,
        magic: [u8; 4],
        payload: &[u8],
        seq: u64,
        slot_size: usize,
    ) -> Result<()> {
        if slot_size > MAX_SLOT {
            return Err(Error::Invalid(format!(
                "record of {} bytes exceeds the file backend's limit",
                payload.len()
            )));
        }
        // Appended, not substituted for the extension: "hwm.a" and "hwm.b"
        // must not share a temporary file, or two stores growing at once
        // would rename each other's records into place.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".grow");
        let tmp = PathBuf::from(tmp);
        let mut buf = Vec::new();
        encode_slot(&mut buf, magic, seq, slot_size, payload);
        let io = |e| Error::io(&tmp, e);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.write_all_at(&buf, 0).map_err(io)?;
        file.set_len(2 * slot_size as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(path)
    }

    fn open(path: &Path, magic: [u8; 4]) -> Result<(Self, Loaded)> {
        let what = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        if len == 0 {
            return Err(Error::corrupt(what, FormatError::Empty));
        }
        if !len.is_multiple_of(2 * PAGE) || len > 2 * MAX_SLOT {
            return Err(Error::corrupt(
                what,
                FormatError::InvalidField {
                    field: "file length",
                    detail: format!("{len} bytes is not two whole slots"),
                },
            ));
        }
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io(path, e))?;
        let slot_size = len / 2;
        let a = decode_slot(&bytes[..slot_size], magic);
        let b = decode_slot(&bytes[slot_size..], magic);
        // An unknown version is not damage: a newer build wrote that slot,
        // and it may hold the newest record. Skipping it as if a write had
        // been torn would silently load an older record (after a downgrade,
        // a lower watermark: a double sign).
        for slot in [&a, &b] {
            if let Err(problem @ FormatError::UnsupportedVersion { .. }) = slot {
                return Err(Error::corrupt(what, problem.clone()));
            }
        }
        let (active, seq, payload, recovery) = match (a, b) {
            (Ok((sa, pa)), Ok((sb, pb))) => {
                if sa == sb {
                    return Err(Error::corrupt(
                        what,
                        FormatError::InvalidField {
                            field: "sequence",
                            detail: format!("both slots hold sequence {sa}"),
                        },
                    ));
                }
                if sa > sb {
                    (0, sa, pa, Recovery::Clean)
                } else {
                    (1, sb, pb, Recovery::Clean)
                }
            }
            (Ok((sa, pa)), Err(problem)) => (0, sa, pa, Recovery::DamagedSlot { slot: 1, problem }),
            (Err(problem), Ok((sb, pb))) => (1, sb, pb, Recovery::DamagedSlot { slot: 0, problem }),
            (Err(pa), Err(pb)) => {
                return Err(Error::corrupt(
                    what,
                    FormatError::InvalidField {
                        field: "slots",
                        detail: format!("slot 0: {pa}; slot 1: {pb}"),
                    },
                ))
            }
        };
        // A never-written second slot is the normal state of a new file.
        if let Recovery::DamagedSlot { slot, problem } = &recovery {
            if *problem != FormatError::Empty {
                tracing::warn!(path = %what, slot, %problem, "damaged slot ignored (an interrupted write leaves this); loaded sequence {seq}");
            }
        }
        let loaded = Loaded {
            payload: payload.to_vec(),
            recovery,
        };
        Ok((
            SlotFile {
                file,
                path: path.to_path_buf(),
                magic,
                slot_size,
                seq,
                active,
                poisoned: false,
                buf: Vec::with_capacity(slot_size),
            },
            loaded,
        ))
    }

    /// Durably replace the current record with `payload`: one write and one
    /// `fdatasync` into the inactive slot. Returns the new sequence.
    pub(crate) fn write(&mut self, payload: &[u8]) -> Result<u64> {
        if self.poisoned {
            return Err(Error::Unavailable {
                backend: "file",
                detail: format!(
                    "{}: an earlier write failed; reopen the store to recover",
                    self.path.display()
                ),
                source: None,
            });
        }
        let seq = self.seq + 1;
        if HEADER + payload.len() + TRAILER > self.slot_size {
            return self.grow(payload, seq);
        }
        let target = self.active ^ 1;
        encode_slot(&mut self.buf, self.magic, seq, self.slot_size, payload);
        let offset = (target * self.slot_size) as u64;
        let result = self
            .file
            .write_all_at(&self.buf, offset)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = result {
            self.poisoned = true;
            return Err(Error::Unavailable {
                backend: "file",
                detail: format!("write to {} failed", self.path.display()),
                source: Some(Box::new(e)),
            });
        }
        self.active = target;
        self.seq = seq;
        Ok(seq)
    }

    fn grow(&mut self, payload: &[u8], seq: u64) -> Result<u64> {
        let size = slot_size_for(payload.len()).max(self.slot_size * 2);
        tracing::info!(path = %self.path.display(), from = self.slot_size, to = size, "record outgrew its slot: rewriting the file with larger slots");
        // Poisoned until the reopened file replaces `self`: once the rename
        // is done, `self.file` is the old, unlinked inode, and a write to it
        // would be acknowledged yet lost at the next open.
        self.poisoned = true;
        Self::create(&self.path, self.magic, payload, seq, size)?;
        let (fresh, _) = Self::open(&self.path, self.magic)?;
        *self = fresh;
        Ok(seq)
    }
}
