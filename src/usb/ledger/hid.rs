//! Ledger HID framing: an APDU (or a reply) cut into 64-byte reports.
//!
//! | bytes | frame 0 | frame n > 0 |
//! |---|---|---|
//! | 0..2 | channel (big-endian) | channel |
//! | 2 | tag 0x05 (APDU) | tag |
//! | 3..5 | sequence 0 | sequence n |
//! | 5..7 | total message length | data |
//! | rest | data, zero padded | data, zero padded |
//!
//! The same framing carries requests and replies; a reply message ends
//! with the status word. With libusb there is no report-id byte.

use std::time::{Duration, Instant};

use crate::usb::error::{DeviceError, ProtocolError};
use crate::usb::transport::{remaining, ApduReply, ApduTransport, HidReports, HID_REPORT_LEN};

/// Tag of a frame carrying APDU data.
pub const TAG_APDU: u8 = 0x05;
/// Tag of a ping frame.
pub const TAG_PING: u8 = 0x02;
/// The channel most clients use.
pub const DEFAULT_CHANNEL: u16 = 0x0101;

const HEADER_LEN: usize = 5;
const FIRST_DATA: usize = HID_REPORT_LEN - HEADER_LEN - 2;
const NEXT_DATA: usize = HID_REPORT_LEN - HEADER_LEN;

/// Cut `message` into reports on `channel`. Fails only for messages longer
/// than the 16-bit length field allows.
pub fn encode_frames(
    channel: u16,
    message: &[u8],
) -> Result<Vec<[u8; HID_REPORT_LEN]>, DeviceError> {
    let total = u16::try_from(message.len()).map_err(|_| {
        DeviceError::Invalid(format!(
            "message of {} bytes does not fit HID framing (at most 65535)",
            message.len()
        ))
    })?;
    let mut frames = Vec::new();
    let mut rest = message;
    let mut seq: u16 = 0;
    loop {
        let mut f = [0u8; HID_REPORT_LEN];
        f[0..2].copy_from_slice(&channel.to_be_bytes());
        f[2] = TAG_APDU;
        f[3..5].copy_from_slice(&seq.to_be_bytes());
        let (at, room) = if seq == 0 {
            f[5..7].copy_from_slice(&total.to_be_bytes());
            (7, FIRST_DATA)
        } else {
            (5, NEXT_DATA)
        };
        let n = rest.len().min(room);
        f[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        frames.push(f);
        if rest.is_empty() {
            return Ok(frames);
        }
        seq += 1;
    }
}

/// Reassembles one message from reports, checking channel, tag and
/// sequence on every report.
#[derive(Debug)]
pub struct FrameAssembler {
    channel: Option<u16>,
    next_seq: u16,
    total: usize,
    buf: Vec<u8>,
}

impl FrameAssembler {
    /// Expect reports on `channel`.
    pub fn new(channel: u16) -> Self {
        FrameAssembler {
            channel: Some(channel),
            next_seq: 0,
            total: 0,
            buf: Vec::new(),
        }
    }

    /// Accept the channel of the first report (the device side: it echoes
    /// whatever channel the host chose).
    pub fn any_channel() -> Self {
        FrameAssembler {
            channel: None,
            next_seq: 0,
            total: 0,
            buf: Vec::new(),
        }
    }

    /// The channel of the message being assembled, once known.
    pub fn channel(&self) -> Option<u16> {
        self.channel
    }

    /// Feed one report. Returns the whole message once its last report has
    /// arrived; an error leaves the assembler unusable for this message.
    pub fn push(&mut self, report: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
        if report.len() != HID_REPORT_LEN {
            return Err(ProtocolError::ShortFrame { len: report.len() });
        }
        let channel = u16::from_be_bytes([report[0], report[1]]);
        match self.channel {
            Some(expected) if expected != channel => {
                return Err(ProtocolError::WrongChannel {
                    expected,
                    found: channel,
                })
            }
            _ => self.channel = Some(channel),
        }
        if report[2] != TAG_APDU {
            return Err(ProtocolError::WrongTag(report[2]));
        }
        let seq = u16::from_be_bytes([report[3], report[4]]);
        if seq != self.next_seq {
            return Err(ProtocolError::SequenceGap {
                expected: self.next_seq,
                found: seq,
            });
        }
        let data = if seq == 0 {
            self.total = u16::from_be_bytes([report[5], report[6]]) as usize;
            self.buf.clear();
            &report[7..]
        } else {
            &report[5..]
        };
        let want = self.total - self.buf.len();
        self.buf.extend_from_slice(&data[..want.min(data.len())]);
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.buf.len() == self.total {
            self.next_seq = 0;
            Ok(Some(std::mem::take(&mut self.buf)))
        } else {
            Ok(None)
        }
    }
}

/// An [`ApduTransport`] over HID reports: what talks to a Ledger plugged in
/// by USB.
///
/// After a timeout or a protocol error, reports of the abandoned reply may
/// still be queued in the device; the next exchange first drains them so
/// they are never taken for its own reply.
pub struct HidApdu<R> {
    reports: R,
    channel: u16,
    needs_drain: bool,
}

/// How long one drain read waits before the queue is considered empty.
const DRAIN_READ: Duration = Duration::from_millis(20);
/// At most this many stale reports are discarded per drain.
const DRAIN_MAX: usize = 1100;

impl<R: HidReports> HidApdu<R> {
    /// Frame APDUs on [`DEFAULT_CHANNEL`].
    pub fn new(reports: R) -> Self {
        Self::with_channel(reports, DEFAULT_CHANNEL)
    }

    /// Frame APDUs on `channel`.
    pub fn with_channel(reports: R, channel: u16) -> Self {
        HidApdu {
            reports,
            channel,
            needs_drain: false,
        }
    }

    /// The report transport.
    pub fn reports_mut(&mut self) -> &mut R {
        &mut self.reports
    }

    fn drain(&mut self) -> Result<(), DeviceError> {
        for _ in 0..DRAIN_MAX {
            match self.reports.read_report(DRAIN_READ) {
                Ok(stale) => tracing::debug!(len = stale.len(), "discarded a stale HID report"),
                Err(DeviceError::Timeout { .. }) => {
                    self.needs_drain = false;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Err(DeviceError::Protocol(ProtocolError::BadReply {
            what: "drain",
            detail: "the device keeps sending reports nobody asked for".into(),
        }))
    }

    fn exchange_inner(
        &mut self,
        apdu: &[u8],
        timeout: Duration,
        deadline: Instant,
    ) -> Result<ApduReply, DeviceError> {
        for frame in encode_frames(self.channel, apdu)? {
            let left = remaining(deadline, timeout, "the APDU write")?;
            self.reports.write_report(&frame, left)?;
        }
        let mut asm = FrameAssembler::new(self.channel);
        loop {
            let left = remaining(deadline, timeout, "the APDU reply")?;
            let report = self.reports.read_report(left)?;
            if let Some(message) = asm.push(&report)? {
                return ApduReply::from_raw(&message);
            }
        }
    }
}

impl<R: HidReports> ApduTransport for HidApdu<R> {
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        if self.needs_drain {
            self.drain()?;
        }
        let deadline = Instant::now() + timeout;
        let result = self.exchange_inner(apdu, timeout, deadline);
        if matches!(
            result,
            Err(DeviceError::Timeout { .. }) | Err(DeviceError::Protocol(_))
        ) {
            self.needs_drain = true;
        }
        result
    }

    /// Drain every report the device has queued.
    fn resync(&mut self) -> Result<(), DeviceError> {
        self.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_length_up_to_four_frames() {
        for len in 0..(FIRST_DATA + 3 * NEXT_DATA + 2) {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let frames = encode_frames(0x1234, &msg).unwrap();
            let expect_frames = if len <= FIRST_DATA {
                1
            } else {
                1 + (len - FIRST_DATA).div_ceil(NEXT_DATA)
            };
            assert_eq!(frames.len(), expect_frames, "len {len}");
            let mut asm = FrameAssembler::new(0x1234);
            let mut out = None;
            for (i, f) in frames.iter().enumerate() {
                let r = asm.push(f).unwrap();
                assert_eq!(r.is_some(), i + 1 == frames.len());
                out = r.or(out);
            }
            assert_eq!(out.unwrap(), msg);
        }
    }

    #[test]
    fn oversized_message_is_refused() {
        assert!(matches!(
            encode_frames(1, &vec![0; 65536]),
            Err(DeviceError::Invalid(_))
        ));
    }
}
