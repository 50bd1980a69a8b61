//! The two variable-length integers of Agave's compact last-vote forms,
//! canonical only: a value has exactly one accepted encoding, so that what
//! is decoded re-encodes to the same bytes.
//!
//! - **short-vec length** (a u16): 1 to 3 bytes, 7 bits per byte, low
//!   group first, bit 0x80 = more bytes follow. The third byte may not
//!   continue, the value may not exceed 65535, and the last byte may not be
//!   zero unless it is the only one.
//! - **LEB128 varint** (a u64 slot offset): the same scheme with up to 10
//!   bytes; the tenth byte holds only bit 63, so it must be 0 or 1.

use crate::agave::error::CompactProblem;

/// Largest short-vec length.
pub(crate) const SHORT_VEC_MAX: usize = u16::MAX as usize;

const SHORT_VEC_BYTES: usize = 3;
const VARINT_BYTES: usize = 10;

/// Decode a short-vec length from the start of `bytes`: the value and the
/// number of bytes it took.
pub(crate) fn decode_short_u16(bytes: &[u8]) -> Result<(u16, usize), CompactProblem> {
    let mut value: u32 = 0;
    for i in 0..SHORT_VEC_BYTES {
        let &byte = bytes.get(i).ok_or(CompactProblem::Truncated)?;
        if byte == 0 && i > 0 {
            return Err(CompactProblem::RedundantZero);
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = u16::try_from(value).map_err(|_| CompactProblem::Overflow)?;
            return Ok((value, i + 1));
        }
    }
    Err(CompactProblem::TooLong)
}

/// Append the canonical short-vec encoding of `value`.
pub(crate) fn encode_short_u16(out: &mut Vec<u8>, value: u16) {
    encode_groups(out, value.into());
}

/// Decode a LEB128 u64 from the start of `bytes`: the value and the number
/// of bytes it took.
pub(crate) fn decode_varint_u64(bytes: &[u8]) -> Result<(u64, usize), CompactProblem> {
    let mut value: u64 = 0;
    for i in 0..VARINT_BYTES {
        let &byte = bytes.get(i).ok_or(CompactProblem::Truncated)?;
        let group = u64::from(byte & 0x7f);
        // 9 groups of 7 bits leave one bit for the tenth byte; anything
        // more would be shifted out and silently lost.
        if i == VARINT_BYTES - 1 && group > 1 {
            return Err(CompactProblem::Overflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(CompactProblem::RedundantZero);
            }
            return Ok((value, i + 1));
        }
    }
    Err(CompactProblem::TooLong)
}

/// Append the canonical LEB128 encoding of `value`.
pub(crate) fn encode_varint_u64(out: &mut Vec<u8>, value: u64) {
    encode_groups(out, value);
}

fn encode_groups(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompactProblem::*;

    #[test]
    fn short_vec_table() {
        let ok: &[(&[u8], u16, usize)] = &[
            (&[0x00], 0, 1),
            (&[0x7f], 127, 1),
            (&[0x80, 0x01], 128, 2),
            (&[0xff, 0x7f], 16383, 2),
            (&[0x80, 0x80, 0x01], 16384, 3),
            (&[0xff, 0xff, 0x03], 65535, 3),
            // Trailing input is not consumed.
            (&[0x05, 0xff], 5, 1),
        ];
        for &(bytes, value, used) in ok {
            assert_eq!(decode_short_u16(bytes), Ok((value, used)), "{bytes:02x?}");
            let mut out = Vec::new();
            encode_short_u16(&mut out, value);
            assert_eq!(out, bytes[..used], "{value}");
        }
        let bad: &[(&[u8], CompactProblem)] = &[
            (&[], Truncated),
            (&[0x80], Truncated),
            (&[0xff, 0xff], Truncated),
            (&[0x80, 0x00], RedundantZero),
            (&[0x81, 0x00], RedundantZero),
            (&[0x80, 0x80, 0x00], RedundantZero),
            (&[0xff, 0xff, 0x04], Overflow),
            (&[0x80, 0x80, 0x7f], Overflow),
            (&[0x80, 0x80, 0x80], TooLong),
            (&[0xff, 0xff, 0xff, 0x01], TooLong),
        ];
        for &(bytes, problem) in bad {
            assert_eq!(decode_short_u16(bytes), Err(problem), "{bytes:02x?}");
        }
    }

    #[test]
    fn short_vec_every_value_roundtrips() {
        for value in 0..=u16::MAX {
            let mut out = Vec::new();
            encode_short_u16(&mut out, value);
            assert_eq!(decode_short_u16(&out), Ok((value, out.len())));
        }
    }

    #[test]
    fn varint_table() {
        let ok: &[(&[u8], u64)] = &[
            (&[0x00], 0),
            (&[0x01], 1),
            (&[0x7f], 127),
            (&[0x80, 0x01], 128),
            (&[0xe5, 0x8e, 0x26], 624485),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                u64::MAX,
            ),
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                1 << 63,
            ),
        ];
        for &(bytes, value) in ok {
            assert_eq!(
                decode_varint_u64(bytes),
                Ok((value, bytes.len())),
                "{bytes:02x?}"
            );
            let mut out = Vec::new();
            encode_varint_u64(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
        let bad: &[(&[u8], CompactProblem)] = &[
            (&[], Truncated),
            (&[0x80], Truncated),
            (&[0x80, 0x00], RedundantZero),
            (&[0xff, 0x80, 0x00], RedundantZero),
            // Tenth byte with bits that would be shifted out.
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                Overflow,
            ),
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f],
                Overflow,
            ),
            // Tenth byte continues.
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00,
                ],
                TooLong,
            ),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ],
                TooLong,
            ),
            // Zero tenth byte after nine continued zero groups.
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
                RedundantZero,
            ),
        ];
        for &(bytes, problem) in bad {
            assert_eq!(decode_varint_u64(bytes), Err(problem), "{bytes:02x?}");
        }
    }

    #[test]
    fn varint_powers_and_neighbours_roundtrip() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut out = Vec::new();
                encode_varint_u64(&mut out, value);
                assert_eq!(decode_varint_u64(&out), Ok((value, out.len())));
            }
        }
    }
}
