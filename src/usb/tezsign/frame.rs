//! TezSign frames on the bulk endpoints.
//!
//! | bytes | field |
//! |---|---|
//! | 0 | magic 0x56 |
//! | 1 | type: 1 request, 2 response, 3 accept, 4 retry, 5 keep-alive |
//! | 2..18 | message id (random per request; a response carries its request's) |
//! | 18..22 | payload size, u32 little-endian |
//! | 22 | parity: XOR of bytes 0..22 |
//! | 23.. | payload (a protobuf message) |

/// First byte of every frame.
pub const MAGIC: u8 = 0x56;
/// Header length.
pub const HEADER_LEN: usize = 23;
/// Largest payload slashguard accepts. TezSign messages are a few hundred
/// bytes (a sign request carries one consensus operation); anything larger
/// is a desynchronized stream, not a message.
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// A 16-byte message id.
pub type MessageId = [u8; 16];

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x01: a request (host to device).
    Request,
    /// 0x02: the response to the request with the same id.
    Response,
    /// 0x03: the device has taken the request with this id.
    Accept,
    /// 0x04: resend every request not yet accepted.
    Retry,
    /// 0x05: nothing but liveness.
    KeepAlive,
}

impl FrameType {
    /// The type byte.
    pub fn byte(self) -> u8 {
        match self {
            FrameType::Request => 0x01,
            FrameType::Response => 0x02,
            FrameType::Accept => 0x03,
            FrameType::Retry => 0x04,
            FrameType::KeepAlive => 0x05,
        }
    }

    /// Inverse of [`byte`](Self::byte).
    pub fn from_byte(b: u8) -> Option<Self> {
        [
            FrameType::Request,
            FrameType::Response,
            FrameType::Accept,
            FrameType::Retry,
            FrameType::KeepAlive,
        ]
        .into_iter()
        .find(|t| t.byte() == b)
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first byte is not 0x56.
    #[error("bad magic {0:#04x} (expected 0x56)")]
    BadMagic(u8),
    /// The parity byte does not match the header.
    #[error("header parity {found:#04x}, computed {computed:#04x}")]
    BadParity {
        /// Parity byte received.
        found: u8,
        /// XOR of the header bytes received.
        computed: u8,
    },
    /// A type byte outside 1..=5.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The size field exceeds [`MAX_PAYLOAD`].
    #[error("payload size {0} exceeds the {MAX_PAYLOAD}-byte limit")]
    Oversized(u32),
    /// Fewer bytes than the header, or than header plus payload.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// Bytes after a complete frame.
    #[error("{0} bytes after the frame")]
    TrailingBytes(usize),
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub kind: FrameType,
    /// Its message id.
    pub id: MessageId,
    /// Its payload.
    pub payload: Vec<u8>,
}

fn parity(header: &[u8]) -> u8 {
    header[..HEADER_LEN - 1].iter().fold(0, |x, b| x ^ b)
}

/// Header fields, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub kind: FrameType,
    /// Message id.
    pub id: MessageId,
    /// Payload size.
    pub size: u32,
}

impl Header {
    /// Validate and decode the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Header, FrameError> {
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Truncated {
                needed: HEADER_LEN,
                have: bytes.len(),
            });
        }
        if bytes[0] != MAGIC {
            return Err(FrameError::BadMagic(bytes[0]));
        }
        let computed = parity(bytes);
        if bytes[HEADER_LEN - 1] != computed {
            return Err(FrameError::BadParity {
                found: bytes[HEADER_LEN - 1],
                computed,
            });
        }
        let kind = FrameType::from_byte(bytes[1]).ok_or(FrameError::UnknownType(bytes[1]))?;
        let size = u32::from_le_bytes(bytes[18..22].try_into().expect("length checked"));
        if size > MAX_PAYLOAD {
            return Err(FrameError::Oversized(size));
        }
        Ok(Header {
            kind,
            id: bytes[2..18].try_into().expect("length checked"),
            size,
        })
    }
}

impl Frame {
    /// A frame of `kind` with `id` and `payload`.
    pub fn new(kind: FrameType, id: MessageId, payload: Vec<u8>) -> Self {
        Frame { kind, id, payload }
    }

    /// Wire bytes. Fails only for payloads over [`MAX_PAYLOAD`].
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let size = u32::try_from(self.payload.len())
            .ok()
            .filter(|s| *s <= MAX_PAYLOAD)
            .ok_or(FrameError::Oversized(
                self.payload.len().min(u32::MAX as usize) as u32,
            ))?;
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.push(MAGIC);
        v.push(self.kind.byte());
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&size.to_le_bytes());
        v.push(parity(&v));
        v.extend_from_slice(&self.payload);
        Ok(v)
    }

    /// Decode exactly one frame from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let h = Header::decode(bytes)?;
        let end = HEADER_LEN + h.size as usize;
        if bytes.len() < end {
            return Err(FrameError::Truncated {
                needed: end,
                have: bytes.len(),
            });
        }
        if bytes.len() > end {
            return Err(FrameError::TrailingBytes(bytes.len() - end));
        }
        Ok(Frame {
            kind: h.kind,
            id: h.id,
            payload: bytes[HEADER_LEN..end].to_vec(),
        })
    }
}

/// Splits a byte stream (bulk reads of any size) into frames.
#[derive(Debug, Default)]
pub struct FrameStream {
    buf: Vec<u8>,
}

impl FrameStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the device.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Forget everything held (after an error).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the
    /// error of a bad header (the caller decides whether to
    /// [`resync`](Self::resync) or give up).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            if let Some(&b) = self.buf.first() {
                if b != MAGIC {
                    return Err(FrameError::BadMagic(b));
                }
            }
            return Ok(None);
        }
        let h = Header::decode(&self.buf)?;
        let end = HEADER_LEN + h.size as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(Frame {
            kind: h.kind,
            id: h.id,
            payload,
        }))
    }

    /// Drop bytes up to the next magic byte after the first (what the
    /// device does after a bad header). Returns how many were dropped.
    pub fn resync(&mut self) -> usize {
        let skip = self.buf[1.min(self.buf.len())..]
            .iter()
            .position(|&b| b == MAGIC)
            .map(|p| p + 1)
            .unwrap_or(self.buf.len());
        self.buf.drain(..skip);
        skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_reassembles_frames_split_anywhere() {
        let a = Frame::new(FrameType::Request, [1; 16], b"hello".to_vec());
        let b = Frame::new(FrameType::Accept, [2; 16], vec![]);
        let bytes = [a.encode().unwrap(), b.encode().unwrap()].concat();
        for cut in 0..bytes.len() {
            let mut s = FrameStream::new();
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                s.extend(part);
                while let Some(f) = s.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "cut at {cut}");
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn resync_skips_garbage_to_the_next_frame() {
        let a = Frame::new(FrameType::Response, [3; 16], b"x".to_vec());
        let mut s = FrameStream::new();
        s.extend(&[0x00, 0x56, 0x99]);
        s.extend(&a.encode().unwrap());
        let mut dropped = 0;
        let f = loop {
            match s.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => panic!("a whole frame is buffered"),
                Err(_) => dropped += s.resync(),
            }
        };
        assert_eq!(f, a);
        assert_eq!(dropped, 3);
    }
}
