//! A record file of two pre-allocated slots written alternately, each slot
//! kept in two copies (format version 3).
//!
//! Each store writes the new record into both copies of the slot that does
//! not hold the current one (one `pwrite`: the two copies are neighbouring
//! page-aligned regions, so the disk sees one contiguous write) and calls
//! `fdatasync` once. The file's size never changes in the steady state, so
//! the sync flushes data only. A crash mid-write can damage only the slot
//! being written; the checksum rejects it and the other slot, the last
//! acknowledged record, is loaded. An acknowledged record damaged later in
//! one copy is read from its twin; only a slot with no intact copy left is
//! ambiguous (an interrupted write, or an acknowledged record damaged twice),
//! and then the store opens fenced (`Loaded::damage`). A slot of a format
//! version this build does not know is never skipped: opening fails with
//! [`FormatError::UnsupportedVersion`]. Version 1 files (two slots, one copy
//! each) and version 2 files (the copies half a file apart) are read, and
//! rewritten as version 3 when opened for writing.
//!
//! File: `[slot 0 copy 0][slot 0 copy 1][slot 1 copy 0][slot 1 copy 1]`,
//! each `S` bytes (version 2: `[s0 c0][s1 c0][s0 c1][s1 c1]`). Slot layout
//! (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic, per record kind |
//! | 1 | format version (3; 2 or 1 in old files) |
//! | 3 | reserved, zero |
//! | 8 | sequence number (+1 per write) |
//! | 4 | slot size `S` (a quarter of the file; half in version 1) |
//! | 4 | payload length |
//! | n | payload |
//! | 4 | CRC-32 of header and payload |

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, FormatError, Result};

/// The format this build writes: two slots, two neighbouring copies each.
const VERSION: u8 = 3;
/// An older build's format: the same four regions, each slot's copies
/// half a file apart. Read, and rewritten as [`VERSION`] by its owner.
const VERSION_2: u8 = 2;
/// The oldest builds' format: two slots, one copy each. Read, and
/// rewritten as [`VERSION`] by its owner.
const VERSION_1: u8 = 1;

/// The region (`0..4`, each a quarter of the file) holding `copy` of
/// `slot` in a file of `version` 2 or 3.
fn region(version: u8, slot: usize, copy: usize) -> usize {
    if version == VERSION_2 {
        copy * 2 + slot
    } else {
        slot * 2 + copy
    }
}
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
    /// The file should be rewritten at once by its owner: a file of an
    /// older version, or a current one with a damaged or stale copy (so that a record
    /// now held in one copy only is made whole again).
    pub(crate) rewrite: bool,
    /// Set when the loaded record may be older than the last acknowledged
    /// one: the store must refuse every write until an operator recovers.
    pub(crate) damage: Option<String>,
}

/// Where slots are written: the file in production, a simulated disk with
/// a volatile cache in the power-loss tests. It is the seam at which the
/// commit protocol is proven: only what `sync_data` covered survives.
pub(crate) trait Medium: Sized {
    /// Write all of `buf` at `offset` (it may sit in a volatile cache).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Make every earlier write durable.
    fn sync_data(&self) -> std::io::Result<()>;
    /// Replace the whole file with larger slots holding `payload` at `seq`.
    fn grow(file: &mut SlotFile<Self>, payload: &[u8], seq: u64) -> Result<u64>;
}

impl Medium for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn grow(file: &mut SlotFile<File>, payload: &[u8], seq: u64) -> Result<u64> {
        // An older-version file whose record still fits is rewritten at
        // its size.
        let size = if HEADER + payload.len() + TRAILER <= file.slot_size {
            file.slot_size
        } else {
            slot_size_for(payload.len()).max(file.slot_size * 2)
        };
        tracing::info!(path = %file.path.display(), from = file.slot_size, to = size, "record outgrew its slot: rewriting the file with larger slots");
        // Poisoned until the reopened file replaces `file`: once the rename
        // is done, `file.medium` is the old, unlinked inode, and a write to it
        // would be acknowledged yet lost at the next open.
        file.poisoned = true;
        let new = SlotFile::create(&file.path, file.magic, payload, seq, size)?;
        // The old inode's claim goes first: the new one has another number.
        file.registered = None;
        let (fresh, _) = SlotFile::from_locked_file(new, &file.path, file.magic)?;
        *file = fresh;
        Ok(file.seq)
    }
}

/// An open slot file. Not `Sync`: callers serialize writes behind a mutex.
pub(crate) struct SlotFile<M = File> {
    medium: M,
    path: PathBuf,
    magic: [u8; 4],
    slot_size: usize,
    seq: u64,
    active: usize,
    // Set after a failed write or sync: the page cache may no longer match
    // the disk, so no further write is attempted until the file is reopened.
    poisoned: bool,
    // The file's format version: an older one is rewritten by the next
    // write.
    version: u8,
    buf: Vec<u8>,
    // This process's claim on the file (none for simulated disks).
    registered: Option<Registered>,
    // Injected sync faults of this path, in tests (`file::sim`).
    #[cfg(feature = "sim")]
    faults: Option<std::sync::Arc<crate::file::sim::DiskFaults>>,
}

fn slot_size_for(payload: usize) -> usize {
    (HEADER + payload + TRAILER).div_ceil(PAGE).max(1) * PAGE
}

fn encode_slot(buf: &mut Vec<u8>, magic: [u8; 4], seq: u64, slot_size: usize, payload: &[u8]) {
    encode_slot_version(buf, magic, VERSION, seq, slot_size, payload);
}

fn encode_slot_version(
    buf: &mut Vec<u8>,
    magic: [u8; 4],
    version: u8,
    seq: u64,
    slot_size: usize,
    payload: &[u8],
) {
    buf.clear();
    buf.extend_from_slice(&magic);
    buf.extend_from_slice(&[version, 0, 0, 0]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(slot_size as u32).to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Decode one slot; `Ok((seq, payload))` only when it is intact.
fn decode_slot(slot: &[u8], magic: [u8; 4], version: u8) -> Result<(u64, &[u8]), FormatError> {
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
    if slot[4] != version {
        return Err(FormatError::UnsupportedVersion {
            found: slot[4],
            supported: version,
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

/// Refuse to create a store over anything already at `path`.
pub(crate) fn exists_refusal(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(Error::StoreExists {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Refuse a path that is a symbolic link: one store must be reached by
/// one name, or two names would get two lock files (two fences).
pub(crate) fn refuse_symlink(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Aliased {
            path: path.to_path_buf(),
            detail: "is a symbolic link; open the store by its real path".into(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The data files (device, inode) open in this process: a second open of
/// one file, by whatever path, says "already open in this process" instead
/// of blaming another process.
static OPEN_HERE: Mutex<BTreeSet<(u64, u64)>> = Mutex::new(BTreeSet::new());

/// This process's claim on one data file, released on drop.
#[derive(Debug)]
pub(crate) struct Registered((u64, u64));

impl Registered {
    fn claim(id: (u64, u64), path: &Path) -> Result<Self> {
        let mut open = OPEN_HERE.lock().unwrap_or_else(|p| p.into_inner());
        if !open.insert(id) {
            return Err(Error::AlreadyOpen {
                path: path.to_path_buf(),
            });
        }
        Ok(Registered(id))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        OPEN_HERE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// [`Error::AlreadyOpen`] when the file at `path` is open as a store in
/// this process (checked before the owner lock, whose refusal would
/// otherwise blame another process).
pub(crate) fn refuse_open_here(path: &Path) -> Result<()> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    let open = OPEN_HERE.lock().unwrap_or_else(|p| p.into_inner());
    if open.contains(&(m.dev(), m.ino())) {
        return Err(Error::AlreadyOpen {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Take the exclusive lock on the data file's own inode: whatever path or
/// link reaches the file, and even if its `.lock` sidecar was deleted, a
/// second owner is refused here.
fn lock_inode(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Which format the file's bytes are in, from the version bytes of the
/// slot headers at the offsets where any format puts one. A version newer
/// than this build's anywhere is never skipped as damage: a newer build
/// wrote it, and it may hold the newest record. Versions 2 and 3 share the
/// four region offsets; the version most headers name wins (a damaged
/// header can name the other one; its checksum then fails, and the wrong
/// choice could only make intact copies fail their version check, which
/// fences or refuses, never loads an older record silently). A tie is
/// refused.
fn detect_version(bytes: &[u8], magic: [u8; 4]) -> Result<u8, FormatError> {
    let len = bytes.len();
    let four_regions = len.is_multiple_of(4 * PAGE);
    let mut offsets = vec![(0, true), (len / 2, true)];
    if four_regions {
        offsets.extend([(len / 4, false), (3 * len / 4, false)]);
    }
    let mut seen_v1 = false;
    let (mut v2, mut v3) = (0, 0);
    for (at, v1_header) in offsets {
        let Some(head) = bytes.get(at..at + 5) else {
            continue;
        };
        if head[..4] != magic {
            continue;
        }
        match head[4] {
            VERSION if four_regions => v3 += 1,
            VERSION_2 if four_regions => v2 += 1,
            VERSION_1 if v1_header => seen_v1 = true,
            found if found > VERSION => {
                return Err(FormatError::UnsupportedVersion {
                    found,
                    supported: VERSION,
                })
            }
            _ => {}
        }
    }
    Ok(match (v2, v3) {
        (0, 0) if seen_v1 => VERSION_1,
        (v2, v3) if v3 > v2 => VERSION,
        (v2, v3) if v2 > v3 => VERSION_2,
        (0, 0) => VERSION,
        (v2, v3) => {
            return Err(FormatError::InvalidField {
                field: "format version",
                detail: format!(
                    "{v2} slot headers say version 2 and {v3} say version 3: no build writes that"
                ),
            })
        }
    })
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

fn check_length(len: usize, what: &str) -> Result<()> {
    if len == 0 {
        return Err(Error::corrupt(what, FormatError::Empty));
    }
    if !len.is_multiple_of(2 * PAGE) || len > 4 * MAX_SLOT {
        return Err(Error::corrupt(
            what,
            FormatError::InvalidField {
                field: "file length",
                detail: format!("{len} bytes is not two whole slots"),
            },
        ));
    }
    Ok(())
}

impl SlotFile {
    /// Create a new file at `path` holding `initial`; refuses with
    /// [`Error::StoreExists`] when something is already there. The caller
    /// must hold the owner lock for `path`.
    pub(crate) fn create_new(
        path: &Path,
        magic: [u8; 4],
        initial: &[u8],
    ) -> Result<(Self, Loaded)> {
        exists_refusal(path)?;
        let file = Self::create(path, magic, initial, 0, slot_size_for(initial.len()))?;
        Self::from_locked_file(file, path, magic)
    }

    /// Write a fresh file beside `path` and rename it into place: used at
    /// creation and when a record outgrows its slot (both rare). Returns
    /// the new file, open and locked: the lock on its inode is taken before
    /// the rename, so no instant exists where the file at `path` is
    /// unlocked.
    fn create(
        path: &Path,
        magic: [u8; 4],
        payload: &[u8],
        seq: u64,
        slot_size: usize,
    ) -> Result<File> {
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
        refuse_symlink(&tmp)?;
        // Both slots hold the record (sequence numbers `seq`, `seq + 1`), in
        // both copies: a version 2 or 3 file has no never-written slot, so a
        // slot without an intact copy is always damage.
        let mut first = Vec::new();
        encode_slot(&mut first, magic, seq, slot_size, payload);
        let mut second = Vec::new();
        encode_slot(&mut second, magic, seq + 1, slot_size, payload);
        let io = |e| Error::io(&tmp, e);
        // Not truncated before it is locked: a leftover being prepared by
        // someone else must not be cut under them.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .map_err(io)?;
        lock_inode(&file, &tmp)?;
        file.set_len(0).map_err(io)?;
        for (slot, buf) in [&first, &second].into_iter().enumerate() {
            for copy in 0..2 {
                let at = region(VERSION, slot, copy) * slot_size;
                FileExt::write_all_at(&file, buf, at as u64).map_err(io)?;
            }
        }
        file.set_len(4 * slot_size as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(path)?;
        Ok(file)
    }

    /// Read the current record without the owner lock and without
    /// writing anything (inspection tools). `Ok(None)` when the file does
    /// not exist. A write in progress can only tear the slot it writes, so
    /// this returns the last completed record, or the one just completed.
    pub(crate) fn read_snapshot(path: &Path, magic: [u8; 4]) -> Result<Option<Loaded>> {
        let what = path.display().to_string();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        check_length(len, &what)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io(path, e))?;
        let (_, loaded) = SlotFile::from_image(file, &bytes, path, magic)?;
        Ok(Some(loaded))
    }

    /// Open the existing file at `path`, locking its inode. The caller must
    /// hold the owner lock for `path`. Refuses a symbolic link, a file with
    /// more than one hard link, a file open as a store elsewhere in this
    /// process ([`Error::AlreadyOpen`]) or locked by another process
    /// ([`Error::Locked`]).
    pub(crate) fn open(path: &Path, magic: [u8; 4]) -> Result<(Self, Loaded)> {
        refuse_symlink(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::StoreMissing {
                    path: path.to_path_buf(),
                    hint: "the data file vanished while opening it".into(),
                },
                _ => Error::io(path, e),
            })?;
        Self::from_file(file, path, magic)
    }

    fn from_file(file: File, path: &Path, magic: [u8; 4]) -> Result<(Self, Loaded)> {
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let registered = Registered::claim((meta.dev(), meta.ino()), path)?;
        lock_inode(&file, path)?;
        let (mut slots, loaded) = Self::read_locked(file, path, magic)?;
        slots.registered = Some(registered);
        Ok((slots, loaded))
    }

    /// Make the file whole at once: a version 1 or 2 file is rewritten as
    /// version 3 (through the create + rename path), a version 3 file
    /// with a damaged or stale copy gets the loaded record written again.
    /// Never while fenced: that is for the operator's recovery write.
    /// Called by the store once the payload decoded: a file whose record is
    /// not ours (another node's tower) is never rewritten.
    pub(crate) fn rewrite_if_needed(&mut self, loaded: &Loaded) -> Result<()> {
        if loaded.rewrite && loaded.damage.is_none() {
            let from = self.version;
            self.write(&loaded.payload)?;
            tracing::info!(path = %self.path.display(), from_version = from, seq = self.seq, "rewrote the record file whole");
        }
        Ok(())
    }

    /// [`from_file`](Self::from_file) for a file whose inode this process
    /// already locked (just created).
    fn from_locked_file(file: File, path: &Path, magic: [u8; 4]) -> Result<(Self, Loaded)> {
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let registered = Registered::claim((meta.dev(), meta.ino()), path)?;
        let (mut slots, loaded) = Self::read_locked(file, path, magic)?;
        slots.registered = Some(registered);
        Ok((slots, loaded))
    }

    fn read_locked(file: File, path: &Path, magic: [u8; 4]) -> Result<(Self, Loaded)> {
        let what = path.display().to_string();
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        // A second name for the same inode would come with a second `.lock`
        // sidecar and its own generation: two fences for one file.
        if meta.nlink() > 1 {
            return Err(Error::Aliased {
                path: path.to_path_buf(),
                detail: format!(
                    "has {} hard links; a store's data file must have exactly one name (remove the other links)",
                    meta.nlink()
                ),
            });
        }
        let len = meta.len() as usize;
        check_length(len, &what)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io(path, e))?;
        SlotFile::from_image(file, &bytes, path, magic)
    }
}

impl<M: Medium> SlotFile<M> {
    /// Decide the current record from the file's bytes (length already
    /// checked to be two whole slots).
    pub(crate) fn from_image(
        medium: M,
        bytes: &[u8],
        path: &Path,
        magic: [u8; 4],
    ) -> Result<(Self, Loaded)> {
        let what = path.display().to_string();
        match detect_version(bytes, magic).map_err(|p| Error::corrupt(&what, p))? {
            VERSION_1 => Self::from_image_v1(medium, bytes, path, magic),
            version => Self::from_image_two_copies(medium, bytes, path, magic, version),
        }
    }

    /// A version 2 or 3 file: two slots, two copies each.
    fn from_image_two_copies(
        medium: M,
        bytes: &[u8],
        path: &Path,
        magic: [u8; 4],
        version: u8,
    ) -> Result<(Self, Loaded)> {
        let what = path.display().to_string();
        let size = bytes.len() / 4;
        // Indexed by `slot * 2 + copy`, whatever the version's layout.
        let copy = |slot: usize, copy: usize| {
            let r = region(version, slot, copy);
            decode_slot(&bytes[r * size..][..size], magic, version)
        };
        let copies = [copy(0, 0), copy(0, 1), copy(1, 0), copy(1, 1)];
        let mut recovery = Recovery::Clean;
        // Each slot: the intact copy with the higher sequence (the copies
        // differ only after an interrupted write, whose new record may be
        // loaded: it was never acknowledged, so either is correct).
        let mut slots: [Option<(u64, &[u8])>; 2] = [None, None];
        for (slot, best) in slots.iter_mut().enumerate() {
            for r in [2 * slot, 2 * slot + 1] {
                match &copies[r] {
                    Ok((seq, payload)) => {
                        if let Some((other, _)) = best {
                            if *other != *seq && recovery == Recovery::Clean {
                                recovery = Recovery::DamagedSlot {
                                    slot,
                                    problem: FormatError::InvalidField {
                                        field: "copies",
                                        detail: format!(
                                            "the copies hold sequences {other} and {seq}"
                                        ),
                                    },
                                };
                            }
                        }
                        if best.is_none_or(|(other, _)| *seq > other) {
                            *best = Some((*seq, payload));
                        }
                    }
                    Err(problem) => {
                        if recovery == Recovery::Clean {
                            recovery = Recovery::DamagedSlot {
                                slot,
                                problem: problem.clone(),
                            };
                        }
                    }
                }
            }
        }
        let problem_of = |slot: usize| match (&copies[2 * slot], &copies[2 * slot + 1]) {
            (Err(p), _) | (_, Err(p)) => p.to_string(),
            _ => "intact".to_string(),
        };
        let (active, seq, payload, damage) = match slots {
            [Some((sa, pa)), Some((sb, pb))] => {
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
                    (0, sa, pa, None)
                } else {
                    (1, sb, pb, None)
                }
            }
            // No copy of one slot is intact. That slot held either an
            // interrupted write (never acknowledged) or an acknowledged
            // record damaged in both copies: the bytes cannot tell which.
            [Some((sa, pa)), None] => (0, sa, pa, Some(1)),
            [None, Some((sb, pb))] => (1, sb, pb, Some(0)),
            [None, None] => {
                return Err(Error::corrupt(
                    what,
                    FormatError::InvalidField {
                        field: "slots",
                        detail: format!("slot 0: {}; slot 1: {}", problem_of(0), problem_of(1)),
                    },
                ))
            }
        };
        let damage = damage.map(|slot| {
            tracing::error!(path = %what, slot, "no intact copy of a slot: the other slot (sequence {seq}) may be older than the last acknowledged record; writes refused until an operator recovers");
            format!(
                "neither copy of slot {slot} is intact ({}); the other slot (sequence {seq}) was loaded, but the damaged slot may have held a newer, acknowledged record, so the loaded state may be older than what was signed or voted",
                problem_of(slot)
            )
        });
        if damage.is_none() && recovery != Recovery::Clean {
            if let Recovery::DamagedSlot { slot, problem } = &recovery {
                tracing::warn!(path = %what, slot, %problem, "damaged or stale copy ignored: the record was read from its twin; rewriting");
            }
        }
        let loaded = Loaded {
            payload: payload.to_vec(),
            rewrite: recovery != Recovery::Clean || version != VERSION,
            recovery,
            damage,
        };
        Ok((
            SlotFile {
                medium,
                path: path.to_path_buf(),
                magic,
                slot_size: size,
                seq,
                active,
                poisoned: false,
                version,
                buf: Vec::with_capacity(2 * size),
                registered: None,
                #[cfg(feature = "sim")]
                faults: crate::file::sim::DiskFaults::lookup(path),
            },
            loaded,
        ))
    }

    /// A version 1 file: two slots, one copy each.
    fn from_image_v1(
        medium: M,
        bytes: &[u8],
        path: &Path,
        magic: [u8; 4],
    ) -> Result<(Self, Loaded)> {
        let what = path.display().to_string();
        let slot_size = bytes.len() / 2;
        let a = decode_slot(&bytes[..slot_size], magic, VERSION_1);
        let b = decode_slot(&bytes[slot_size..], magic, VERSION_1);
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
        // Any other damage is ambiguous: an interrupted write that was never
        // acknowledged (harmless) and an acknowledged record damaged later
        // (bit rot, a misdirected write: loading the other slot would roll
        // back one acknowledged advance) look the same. Fail closed.
        let damage = match &recovery {
            Recovery::DamagedSlot { slot, problem } if *problem != FormatError::Empty => {
                tracing::error!(path = %what, slot, %problem, "damaged slot: the other slot (sequence {seq}) may be older than the last acknowledged record; writes refused until an operator recovers");
                Some(format!(
                    "slot {slot} failed its check ({problem}); the other slot (sequence {seq}) was loaded, but the damaged slot may have held a newer, acknowledged record, so the loaded state may be older than what was signed or voted"
                ))
            }
            _ => None,
        };
        let loaded = Loaded {
            payload: payload.to_vec(),
            recovery,
            damage,
            rewrite: true,
        };
        Ok((
            SlotFile {
                medium,
                path: path.to_path_buf(),
                magic,
                slot_size,
                seq,
                active,
                poisoned: false,
                version: VERSION_1,
                buf: Vec::with_capacity(slot_size),
                registered: None,
                #[cfg(feature = "sim")]
                faults: crate::file::sim::DiskFaults::lookup(path),
            },
            loaded,
        ))
    }

    /// The medium's `fdatasync`, after the injected faults of tests.
    fn sync(&self) -> std::io::Result<()> {
        #[cfg(feature = "sim")]
        if let Some(faults) = &self.faults {
            faults.before_sync()?;
        }
        self.medium.sync_data()
    }

    /// The sequence number of the current record.
    #[cfg_attr(not(feature = "alpenglow"), allow(dead_code))]
    pub(crate) fn sequence(&self) -> u64 {
        self.seq
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
        if self.version != VERSION || HEADER + payload.len() + TRAILER > self.slot_size {
            return M::grow(self, payload, seq);
        }
        let target = self.active ^ 1;
        // Both copies in ONE write: copy 0, zero padding to the end of its
        // region, copy 1 in the next region; then ONE fdatasync. The disk
        // sees one contiguous range, as cheap to flush as a single copy.
        encode_slot(&mut self.buf, self.magic, seq, self.slot_size, payload);
        let record = self.buf.len();
        self.buf.resize(self.slot_size + record, 0);
        self.buf.copy_within(..record, self.slot_size);
        let at = (region(VERSION, target, 0) * self.slot_size) as u64;
        let result = self
            .medium
            .write_all_at(&self.buf, at)
            .and_then(|_| self.sync());
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
}

/// Power loss, simulated at the [`Medium`] seam: a disk whose writes sit in
/// a volatile cache until `sync_data`, and a crash that keeps the durable
/// image plus any part of the unsynced writes (none, all, or torn at any
/// byte). SIGKILL tests cannot show this: the page cache outlives a killed
/// process. These tests fail if a store acknowledges before its sync.
#[cfg(test)]
mod power_loss {
    use std::sync::{Arc, Mutex};

    use super::*;

    const MAGIC: [u8; 4] = *b"sgTT";

    #[derive(Default)]
    struct Disk {
        durable: Vec<u8>,
        volatile: Vec<u8>,
        unsynced: Vec<(usize, Vec<u8>)>,
        fail_next_sync: bool,
        ignore_syncs: bool,
    }

    #[derive(Clone, Default)]
    struct SimDisk(Arc<Mutex<Disk>>);

    impl Medium for SimDisk {
        fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            let mut d = self.0.lock().unwrap();
            let at = offset as usize;
            d.volatile[at..at + buf.len()].copy_from_slice(buf);
            d.unsynced.push((at, buf.to_vec()));
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            let mut d = self.0.lock().unwrap();
            if std::mem::take(&mut d.fail_next_sync) {
                return Err(std::io::Error::other("power cut during fdatasync"));
            }
            if !d.ignore_syncs {
                d.durable = d.volatile.clone();
                d.unsynced.clear();
            }
            Ok(())
        }
        fn grow(_: &mut SlotFile<Self>, _: &[u8], _: u64) -> Result<u64> {
            Err(Error::Invalid("the simulated disk does not grow".into()))
        }
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    impl SimDisk {
        /// A new file: both slots hold the empty record, the newer
        /// (sequence 1) in slot 1, each in two copies.
        fn new(slot_size: usize) -> Self {
            let mut image = vec![0u8; 4 * slot_size];
            let mut buf = Vec::new();
            for slot in 0..2 {
                encode_slot(&mut buf, MAGIC, slot as u64, slot_size, b"");
                for copy in 0..2 {
                    let at = region(VERSION, slot, copy) * slot_size;
                    image[at..][..buf.len()].copy_from_slice(&buf);
                }
            }
            SimDisk(Arc::new(Mutex::new(Disk {
                durable: image.clone(),
                volatile: image,
                ..Disk::default()
            })))
        }

        /// The image after a power cut: the durable bytes, then each
        /// unsynced write either lost, kept, torn at a random byte, or
        /// scattered: a disk may persist the sectors of one write in any
        /// order, so each 512-byte sector is kept or lost on its own, and
        /// one of them may be torn.
        fn crash(&self, rng: &mut Rng) -> Vec<u8> {
            const SECTOR: usize = 512;
            let d = self.0.lock().unwrap();
            let mut image = d.durable.clone();
            for (at, bytes) in &d.unsynced {
                let kept = match rng.below(4) {
                    0 => 0,
                    1 => bytes.len(),
                    2 => rng.below(bytes.len() as u64) as usize,
                    _ => {
                        for (i, sector) in bytes.chunks(SECTOR).enumerate() {
                            let n = match rng.below(5) {
                                0 | 1 => 0,
                                2 => rng.below(sector.len() as u64) as usize,
                                _ => sector.len(),
                            };
                            let o = at + i * SECTOR;
                            image[o..o + n].copy_from_slice(&sector[..n]);
                        }
                        0
                    }
                };
                image[*at..*at + kept].copy_from_slice(&bytes[..kept]);
            }
            image
        }

        fn reboot(image: Vec<u8>, ignore_syncs: bool) -> Self {
            SimDisk(Arc::new(Mutex::new(Disk {
                durable: image.clone(),
                volatile: image,
                ignore_syncs,
                ..Disk::default()
            })))
        }
    }

    /// The record acknowledged at `seq` (1: the new file's empty record).
    fn expected(seq: u64) -> Vec<u8> {
        if seq <= 1 {
            Vec::new()
        } else {
            payload(seq)
        }
    }

    fn payload(seq: u64) -> Vec<u8> {
        // Lengths vary so that a torn write can straddle old and new content.
        let len = 8 + (seq as usize * 37) % 900;
        let mut p = seq.to_le_bytes().to_vec();
        p.resize(len, (seq % 251) as u8);
        p
    }

    /// Run `rounds` of: boot, store some records, maybe start one more and
    /// lose power during its sync, cut power at a random moment, reboot.
    /// Returns the number of rounds in which an acknowledged record was lost.
    fn run(rounds: usize, ignore_syncs: bool, seed: u64) -> usize {
        let path = Path::new("sim");
        let mut rng = Rng(seed);
        let mut disk = SimDisk::new(4096);
        disk.0.lock().unwrap().ignore_syncs = ignore_syncs;
        let mut acked = 1u64;
        let mut lost = 0;
        for _ in 0..rounds {
            let image = disk.0.lock().unwrap().durable.clone();
            let (mut file, loaded) = SlotFile::from_image(disk.clone(), &image, path, MAGIC)
                .expect("every image after a crash opens");
            assert_eq!(
                loaded.payload,
                expected(acked),
                "loaded exactly the record of its sequence"
            );
            for _ in 0..rng.below(4) {
                let seq = file.write(&payload(acked + 1)).unwrap();
                acked = seq;
            }
            let in_flight = rng.below(2) == 0;
            if in_flight {
                disk.0.lock().unwrap().fail_next_sync = true;
                assert!(file.write(&payload(acked + 1)).is_err());
            }
            let after = disk.crash(&mut rng);
            disk = SimDisk::reboot(after.clone(), ignore_syncs);
            match SlotFile::from_image(disk.clone(), &after, path, MAGIC) {
                Ok((f, loaded)) if f.seq == acked => assert_eq!(loaded.payload, expected(acked)),
                Ok((f, loaded)) if in_flight && f.seq == acked + 1 => {
                    assert_eq!(loaded.payload, payload(acked + 1));
                    acked += 1;
                }
                Ok((f, _)) if f.seq < acked => {
                    lost += 1;
                    acked = f.seq;
                }
                Ok((f, _)) => panic!("loaded sequence {} after acknowledging {acked}", f.seq),
                Err(_) => {
                    // Nothing intact: only possible when syncs were skipped.
                    assert!(ignore_syncs, "a crash left no intact slot");
                    return lost + 1;
                }
            }
        }
        lost
    }

    #[test]
    fn acknowledged_records_survive_power_loss_at_any_moment() {
        for seed in 1..=20u64 {
            assert_eq!(run(300, false, seed * 0x9E37_79B9), 0, "seed {seed}");
        }
    }

    /// After a power cut at a random moment, the last acknowledged record
    /// is damaged (bit rot, a misdirected write) at a random byte: in one
    /// copy, in both, or the other slot is. An image that opens never
    /// yields a state older than the last acknowledged one without fencing
    /// the store (`Loaded::damage`), and one damaged copy is recovered from
    /// its twin without fencing.
    #[test]
    fn damaging_an_acknowledged_slot_never_loads_an_older_state_silently() {
        let path = Path::new("sim");
        let (mut twin_recovered, mut older_fenced, mut refused) = (0, 0, 0);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed * 0x2545_F491);
            let disk = SimDisk::new(4096);
            let image = disk.0.lock().unwrap().durable.clone();
            let (mut file, _) = SlotFile::from_image(disk.clone(), &image, path, MAGIC).unwrap();
            let mut acked = 1;
            for _ in 0..200 {
                for _ in 0..1 + rng.below(3) {
                    acked = file.write(&payload(acked + 1)).unwrap();
                }
                // Sometimes a write in flight when the power goes.
                if rng.below(2) == 0 {
                    disk.0.lock().unwrap().fail_next_sync = true;
                    assert!(file.write(&payload(acked + 1)).is_err());
                }
                let mut after = disk.crash(&mut rng);
                let size = after.len() / 4;
                let acked_slot = file.active;
                let case = rng.below(4);
                let one_copy =
                    |slot: usize, rng: &mut Rng| region(VERSION, slot, rng.below(2) as usize);
                let regions: Vec<usize> = match case {
                    0 => vec![one_copy(acked_slot, &mut rng)],
                    1 => vec![
                        region(VERSION, acked_slot, 0),
                        region(VERSION, acked_slot, 1),
                    ],
                    2 => vec![one_copy(acked_slot ^ 1, &mut rng)],
                    _ => vec![0, 1, 2, 3],
                };
                for r in &regions {
                    // Inside the record: header, payload start or CRC area.
                    let at = r * size + rng.below((HEADER + 8) as u64) as usize;
                    after[at] ^= 1 << rng.below(8);
                }
                match SlotFile::from_image(disk.clone(), &after, path, MAGIC) {
                    Ok((f, loaded)) => {
                        if f.seq < acked {
                            assert!(
                                loaded.damage.is_some(),
                                "seed {seed}: loaded sequence {} after acknowledging {acked}, not fenced",
                                f.seq
                            );
                            older_fenced += 1;
                        } else {
                            assert!(f.seq <= acked + 1, "a sequence never written");
                            if case == 0 && loaded.damage.is_none() {
                                twin_recovered += 1;
                            }
                        }
                    }
                    // Nothing intact: refused, nothing loaded.
                    Err(Error::Corrupt { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
                // Carry on from the undamaged image.
                let clean = disk.0.lock().unwrap().durable.clone();
                let (f, _) = SlotFile::from_image(disk.clone(), &clean, path, MAGIC).unwrap();
                file = f;
                acked = file.seq;
            }
        }
        // The harness is not blind: each outcome happened.
        assert!(
            older_fenced > 0 && twin_recovered > 0 && refused > 0,
            "{older_fenced} {twin_recovered} {refused}"
        );
    }

    /// A version 1 file (two slots, one copy) is read, and its first write
    /// goes through growth (not available on the simulated disk): the
    /// version 1 layout is never written in place.
    #[test]
    fn version_1_files_are_read_and_never_written_in_place() {
        let size = 4096;
        let mut image = vec![0u8; 2 * size];
        let mut buf = Vec::new();
        encode_slot_version(&mut buf, MAGIC, VERSION_1, 7, size, b"old");
        image[..buf.len()].copy_from_slice(&buf);
        encode_slot_version(&mut buf, MAGIC, VERSION_1, 8, size, b"newer");
        image[size..][..buf.len()].copy_from_slice(&buf);
        let disk = SimDisk::reboot(image.clone(), false);
        let (mut f, loaded) =
            SlotFile::from_image(disk.clone(), &image, Path::new("v1"), MAGIC).unwrap();
        assert_eq!((f.seq, loaded.payload.as_slice()), (8, &b"newer"[..]));
        assert!(loaded.rewrite && loaded.damage.is_none());
        assert!(f.write(b"next").is_err(), "rewritten via growth only");
        assert_eq!(disk.0.lock().unwrap().volatile, image);
        // A damaged newer slot in a version 1 file is ambiguous: fenced.
        let mut damaged = image.clone();
        damaged[size + 30] ^= 1;
        let (f, loaded) = SlotFile::from_image(disk, &damaged, Path::new("v1"), MAGIC).unwrap();
        assert_eq!(f.seq, 7);
        assert!(loaded.damage.is_some());
    }

    /// A disk whose `fdatasync` never returns (until released, so that the
    /// test can end): the store's call returns `Unavailable` within its
    /// deadline, the runtime keeps running other tasks meanwhile (on a
    /// current-thread runtime one blocked worker would stop everything),
    /// and the store refuses every later call. On runtimes without a timer
    /// (no `enable_time`): the deadline must not need one.
    #[test]
    fn a_hung_sync_returns_unavailable_within_the_deadline() {
        use tokio::runtime::Builder;
        type Make = fn() -> tokio::runtime::Runtime;
        let runtimes: [(&str, Make); 4] = [
            ("current-thread, nothing enabled", || {
                Builder::new_current_thread().build().unwrap()
            }),
            ("current-thread, enable_all", || {
                Builder::new_current_thread().enable_all().build().unwrap()
            }),
            ("multi-thread, nothing enabled", || {
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .build()
                    .unwrap()
            }),
            ("multi-thread, io only", || {
                Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_io()
                    .build()
                    .unwrap()
            }),
        ];
        for (name, make) in runtimes {
            hung_sync_on(name, make());
        }
    }

    fn hung_sync_on(name: &str, rt: tokio::runtime::Runtime) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::time::{Duration, Instant};

        use crate::file::worker::Worker;

        #[derive(Clone)]
        struct HungDisk(Arc<(Mutex<bool>, std::sync::Condvar)>);
        impl Medium for HungDisk {
            fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
                Ok(())
            }
            fn sync_data(&self) -> std::io::Result<()> {
                let (released, cv) = &*self.0;
                let mut r = released.lock().unwrap();
                while !*r {
                    r = cv.wait(r).unwrap();
                }
                Ok(())
            }
            fn grow(_: &mut SlotFile<Self>, _: &[u8], _: u64) -> Result<u64> {
                Err(Error::Invalid("no growth here".into()))
            }
        }

        let disk = HungDisk(Arc::new((Mutex::new(false), std::sync::Condvar::new())));
        let image = SimDisk::new(4096).0.lock().unwrap().durable.clone();
        let (file, _) =
            SlotFile::from_image(disk.clone(), &image, Path::new("hung"), MAGIC).unwrap();
        let mut worker = Worker::new(file, "hung".into());
        let deadline = Duration::from_millis(300);
        worker.set_deadline(deadline);
        // Stands for an etcd keep-alive on the same runtime: a task woken
        // every 10 ms by a thread (no tokio timer: the runtime may have none).
        let ticks = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let clock = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && tx.send(()).is_ok() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        rt.block_on(async {
            let t = Arc::clone(&ticks);
            let ticker = tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    t.fetch_add(1, Ordering::Relaxed);
                }
            });
            let began = Instant::now();
            let got = worker.run(|f| f.write(b"vote")).await;
            let took = began.elapsed();
            assert!(
                matches!(got, Err(Error::Unavailable { .. })),
                "{name}: {got:?}"
            );
            assert!(
                took >= deadline && took < deadline * 5,
                "{name}: took {took:?}"
            );
            assert!(
                ticks.load(Ordering::Relaxed) >= 5,
                "{name}: the runtime was blocked during the hung write"
            );
            // Out of service until reopened, at once (no second wait).
            let began = Instant::now();
            let again = worker.run(|f| Ok(f.seq)).await;
            assert!(
                matches!(again, Err(Error::Unavailable { .. })),
                "{name}: {again:?}"
            );
            assert!(began.elapsed() < deadline, "{name}");
            ticker.abort();
        });
        stop.store(true, Ordering::Relaxed);
        clock.join().unwrap();
        // Let the stuck thread finish.
        let (released, cv) = &*disk.0;
        *released.lock().unwrap() = true;
        cv.notify_all();
    }

    #[test]
    fn the_check_catches_a_store_that_acknowledges_before_its_sync() {
        // Negative control: the same harness, with syncs that do nothing,
        // must observe acknowledged records being lost.
        let lost: usize = (1..=5u64).map(|seed| run(300, true, seed)).sum();
        assert!(lost > 0, "the power-loss check is blind");
    }
}
