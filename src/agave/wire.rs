//! bincode 1.x primitives, read strictly: little-endian fixed-width
//! integers, `u64` length prefixes, one-byte `Option`/`bool` tags that must
//! be 0 or 1. Reading goes through the crate's bounds-checked
//! [`Reader`](crate::tower::Reader), so running off the end is an error, and
//! every length prefix is checked against the bytes that remain before
//! anything is allocated.

use crate::agave::compact;
use crate::agave::error::{AgaveError, CompactProblem};
use crate::tower::Reader;

/// A cursor over bytes being decoded. Offsets in errors are `base` plus the
/// position, so that the tower `data` inside a file reports file offsets.
pub(crate) struct Input<'a> {
    reader: Reader<'a>,
    base: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8], base: usize) -> Self {
        Input {
            reader: Reader { bytes, pos: 0 },
            base,
        }
    }

    /// The absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.reader.pos)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.reader.bytes.len() - self.reader.pos
    }

    fn rest(&self) -> &'a [u8] {
        &self.reader.bytes[self.reader.pos..]
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], AgaveError> {
        let (offset, have) = (self.offset(), self.remaining());
        self.reader.take(n).map_err(|_| AgaveError::Truncated {
            field,
            offset,
            needed: n as u64,
            have,
        })
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], AgaveError> {
        let bytes = self.take(N, field)?;
        Ok(bytes.try_into().expect("take returns N bytes"))
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, AgaveError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, AgaveError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, AgaveError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, AgaveError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// A `bool` or an `Option` tag: exactly 0 or 1, as bincode 1.x demands.
    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, AgaveError> {
        let offset = self.offset();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err(AgaveError::BadTag {
                field,
                offset,
                found: found.into(),
            }),
        }
    }

    pub(crate) fn option_u64(&mut self, field: &'static str) -> Result<Option<u64>, AgaveError> {
        Ok(if self.flag(field)? {
            Some(self.u64(field)?)
        } else {
            None
        })
    }

    pub(crate) fn option_i64(&mut self, field: &'static str) -> Result<Option<i64>, AgaveError> {
        Ok(if self.flag(field)? {
            Some(self.i64(field)?)
        } else {
            None
        })
    }

    /// A u64 element count, refused unless `count * min_element` bytes
    /// remain: the caller may then allocate `count` elements, which is
    /// never more than the input's length.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_element: usize,
    ) -> Result<usize, AgaveError> {
        let offset = self.offset();
        let count = self.u64(field)?;
        self.bounded(field, offset, count, min_element)
    }

    /// A short-vec element count (1 to 3 bytes, canonical only), bounded
    /// like [`count`](Self::count).
    pub(crate) fn short_count(
        &mut self,
        field: &'static str,
        min_element: usize,
    ) -> Result<usize, AgaveError> {
        let offset = self.offset();
        let (count, used) =
            compact::decode_short_u16(self.rest()).map_err(|problem| match problem {
                CompactProblem::Truncated => AgaveError::Truncated {
                    field,
                    offset,
                    needed: (self.remaining() + 1) as u64,
                    have: self.remaining(),
                },
                problem => AgaveError::BadShortVec {
                    field,
                    offset,
                    problem,
                },
            })?;
        self.take(used, field)?;
        self.bounded(field, offset, count.into(), min_element)
    }

    /// A LEB128 u64 (canonical only).
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64, AgaveError> {
        let offset = self.offset();
        let (value, used) =
            compact::decode_varint_u64(self.rest()).map_err(|problem| match problem {
                CompactProblem::Truncated => AgaveError::Truncated {
                    field,
                    offset,
                    needed: (self.remaining() + 1) as u64,
                    have: self.remaining(),
                },
                problem => AgaveError::BadVarint {
                    field,
                    offset,
                    problem,
                },
            })?;
        self.take(used, field)?;
        Ok(value)
    }

    fn bounded(
        &self,
        field: &'static str,
        offset: usize,
        count: u64,
        min_element: usize,
    ) -> Result<usize, AgaveError> {
        let needed = count.saturating_mul(min_element as u64);
        match usize::try_from(count) {
            Ok(n) if needed <= self.remaining() as u64 => Ok(n),
            _ => Err(AgaveError::AbsurdLength {
                field,
                offset,
                count,
                needed,
                have: self.remaining(),
            }),
        }
    }

    /// A u64-length-prefixed byte string.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], AgaveError> {
        let offset = self.offset();
        let len = self.u64(field)?;
        let have = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= have => self.take(n, field),
            _ => Err(AgaveError::Truncated {
                field,
                offset: offset + 8,
                needed: len,
                have,
            }),
        }
    }

    /// Nothing may follow; `trailing` builds the error naming the section.
    pub(crate) fn finish(
        self,
        trailing: impl FnOnce(usize, usize) -> AgaveError,
    ) -> Result<(), AgaveError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(trailing(self.offset(), count)),
        }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A bincode length prefix (`usize` is a u64 on the wire).
pub(crate) fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u64(out, len as u64);
}

pub(crate) fn put_flag(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

pub(crate) fn put_option_u64(out: &mut Vec<u8>, v: Option<u64>) {
    put_flag(out, v.is_some());
    if let Some(v) = v {
        put_u64(out, v);
    }
}

pub(crate) fn put_option_i64(out: &mut Vec<u8>, v: Option<i64>) {
    put_flag(out, v.is_some());
    if let Some(v) = v {
        put_i64(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_must_be_zero_or_one() {
        for (byte, want) in [(0u8, Ok(false)), (1, Ok(true))] {
            assert_eq!(Input::new(&[byte], 0).flag("f"), want);
        }
        assert_eq!(
            Input::new(&[2], 10).flag("f"),
            Err(AgaveError::BadTag {
                field: "f",
                offset: 10,
                found: 2
            })
        );
    }

    #[test]
    fn counts_are_bounded_by_the_input() {
        let mut bytes = 3u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 24]);
        assert_eq!(Input::new(&bytes, 0).count("v", 8), Ok(3));
        assert!(matches!(
            Input::new(&bytes, 0).count("v", 9),
            Err(AgaveError::AbsurdLength {
                count: 3,
                needed: 27,
                have: 24,
                ..
            })
        ));
        let huge = u64::MAX.to_le_bytes();
        assert!(matches!(
            Input::new(&huge, 0).count("v", 12),
            Err(AgaveError::AbsurdLength {
                needed: u64::MAX,
                ..
            })
        ));
        // A byte string's length is checked against the input the same way.
        assert!(matches!(
            Input::new(&huge, 0).bytes("data"),
            Err(AgaveError::Truncated {
                needed: u64::MAX,
                offset: 8,
                ..
            })
        ));
    }

    #[test]
    fn truncation_names_field_and_offset() {
        let mut input = Input::new(&[1, 2, 3], 100);
        assert_eq!(input.u8("a"), Ok(1));
        assert_eq!(
            input.u64("b"),
            Err(AgaveError::Truncated {
                field: "b",
                offset: 101,
                needed: 8,
                have: 2
            })
        );
    }
}
