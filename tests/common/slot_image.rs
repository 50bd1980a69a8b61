//! The file backends' on-disk layout, as the tests that damage a data file
//! need it (`docs/file-format.md`): four regions of a quarter of the file
//! each; version 3 puts slot `s` copy `c` in region `2s + c`, version 2 in
//! region `2c + s`. The sequence number is bytes 8..16 of a region. Each
//! test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;

/// The region holding `copy` of `slot` in a file whose first header says
/// version `version`.
pub fn region(version: u8, slot: usize, copy: usize) -> usize {
    match version {
        3 => 2 * slot + copy,
        2 => 2 * copy + slot,
        v => panic!("no two-copy layout in format version {v}"),
    }
}

/// Flip one payload byte in `copies` (1 or 2) of the copies of the slot
/// holding the newest record (the acknowledged one): bit rot, or a
/// misdirected write.
pub fn damage_newest_slot(path: &Path, copies: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let size = bytes.len() / 4;
    let version = bytes[4];
    assert_eq!(version, 3, "files are written in format version 3");
    let seq = |r: usize| u64::from_le_bytes(bytes[r * size + 8..r * size + 16].try_into().unwrap());
    let newest = usize::from(seq(region(version, 1, 0)) > seq(region(version, 0, 0)));
    for c in 0..copies {
        bytes[region(version, newest, c) * size + 30] ^= 0x40;
    }
    std::fs::write(path, bytes).unwrap();
}

/// The same records as the version 3 image `v3`, laid out as an older
/// build wrote them: version 2 (four regions, copies half a file apart) or
/// version 1 (two regions, one copy each), headers and checksums redone.
pub fn older_format(v3: &[u8], version: u8) -> Vec<u8> {
    assert_eq!(v3[4], 3, "a version 3 image");
    let size = v3.len() / 4;
    let copy = |slot: usize, c: usize| -> Vec<u8> {
        let r = &v3[region(3, slot, c) * size..][..size];
        let len = u32::from_le_bytes(r[20..24].try_into().unwrap()) as usize;
        let mut out = r.to_vec();
        out[4] = version;
        let crc = crc32fast::hash(&out[..24 + len]);
        out[24 + len..28 + len].copy_from_slice(&crc.to_le_bytes());
        out
    };
    match version {
        2 => (0..4).flat_map(|r| copy(r % 2, r / 2)).collect(),
        1 => (0..2).flat_map(|s| copy(s, 0)).collect(),
        v => panic!("no format version {v}"),
    }
}
