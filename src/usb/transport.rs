//! The transport boundary: the traits the Ledger and TezSign layers speak
//! through. The rusb code, the Speculos TCP client and the simulators all
//! implement them, so the protocol code above is the same for a real device
//! and a test. Implement them to plug in your own transport (hidapi, a
//! remote USB-over-IP bridge, ...).
//!
//! The traits are blocking: USB transfers are blocking calls with a
//! timeout. The async signers run them on tokio's blocking pool.

use std::time::Duration;

use crate::usb::error::DeviceError;

/// One APDU reply: the data and the status word that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApduReply {
    /// Reply data, without the status word.
    pub data: Vec<u8>,
    /// The 2-byte status word (0x9000 is success).
    pub status: u16,
}

impl ApduReply {
    /// Split a raw reply (data then status word).
    pub fn from_raw(raw: &[u8]) -> Result<Self, DeviceError> {
        if raw.len() < 2 {
            return Err(crate::usb::error::ProtocolError::NoStatusWord { len: raw.len() }.into());
        }
        let (data, sw) = raw.split_at(raw.len() - 2);
        Ok(ApduReply {
            data: data.to_vec(),
            status: u16::from_be_bytes([sw[0], sw[1]]),
        })
    }

    /// Data then status word, as on the wire.
    pub fn to_raw(&self) -> Vec<u8> {
        let mut v = self.data.clone();
        v.extend_from_slice(&self.status.to_be_bytes());
        v
    }
}

/// Sends one encoded APDU and returns the device's reply.
///
/// Contract: `exchange` returns within `timeout` (plus the cost of one
/// transfer); on any `Err` the reply, if it ever comes, must not be taken
/// for the reply of a later exchange (drain or reconnect first).
pub trait ApduTransport: Send {
    /// Send `apdu` (CLA INS P1 P2 Lc data) and wait for the reply.
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError>;

    /// Get back in step after a reply that did not fit its command: discard
    /// whatever the device has already sent (drain queued reports, drop the
    /// connection and open a new one at the next exchange). The caller then
    /// re-queries the device. The default does nothing.
    fn resync(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

impl<T: ApduTransport + ?Sized> ApduTransport for Box<T> {
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        (**self).exchange(apdu, timeout)
    }
    fn resync(&mut self) -> Result<(), DeviceError> {
        (**self).resync()
    }
}

/// Size of one Ledger HID report (no report-id byte with libusb).
pub const HID_REPORT_LEN: usize = 64;

/// Raw 64-byte HID reports to and from a Ledger (interrupt transfers on
/// the generic HID interface).
pub trait HidReports: Send {
    /// Write one report.
    fn write_report(
        &mut self,
        report: &[u8; HID_REPORT_LEN],
        timeout: Duration,
    ) -> Result<(), DeviceError>;

    /// Read one report, as many bytes as the transfer carried (a correct
    /// device always sends 64).
    fn read_report(&mut self, timeout: Duration) -> Result<Vec<u8>, DeviceError>;
}

impl<T: HidReports + ?Sized> HidReports for Box<T> {
    fn write_report(
        &mut self,
        report: &[u8; HID_REPORT_LEN],
        timeout: Duration,
    ) -> Result<(), DeviceError> {
        (**self).write_report(report, timeout)
    }
    fn read_report(&mut self, timeout: Duration) -> Result<Vec<u8>, DeviceError> {
        (**self).read_report(timeout)
    }
}

/// The two TezSign interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TezSignInterface {
    /// Interface 0 (bulk IN 0x81, OUT 0x02): sign, status, version.
    Signing,
    /// Interface 1 (bulk IN 0x83, OUT 0x04): everything but sign (unlock,
    /// set level, ...).
    Management,
}

impl TezSignInterface {
    /// The USB interface number.
    pub fn number(self) -> u8 {
        match self {
            TezSignInterface::Signing => 0,
            TezSignInterface::Management => 1,
        }
    }

    /// Both interfaces.
    pub const ALL: [TezSignInterface; 2] =
        [TezSignInterface::Signing, TezSignInterface::Management];
}

impl std::fmt::Display for TezSignInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TezSignInterface::Signing => f.write_str("signing interface (0)"),
            TezSignInterface::Management => f.write_str("management interface (1)"),
        }
    }
}

/// A control-IN request (the TezSign readiness probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlIn {
    /// bmRequestType.
    pub request_type: u8,
    /// bRequest.
    pub request: u8,
    /// wValue.
    pub value: u16,
    /// wIndex.
    pub index: u16,
    /// wLength: the most bytes to read.
    pub length: u16,
}

/// Bulk transfers on the TezSign interfaces, and the control request of
/// the readiness probe. Bulk reads return whatever one transfer carried: a
/// frame may arrive split over several reads or several frames in one.
pub trait BulkTransport: Send {
    /// Write `data` to the interface's OUT endpoint; returns bytes written.
    fn write_bulk(
        &mut self,
        interface: TezSignInterface,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError>;

    /// Read one transfer from the interface's IN endpoint into `buf`.
    fn read_bulk(
        &mut self,
        interface: TezSignInterface,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError>;

    /// A control-IN transfer on endpoint 0.
    fn control_in(&mut self, request: ControlIn, timeout: Duration)
        -> Result<Vec<u8>, DeviceError>;
}

impl<T: BulkTransport + ?Sized> BulkTransport for Box<T> {
    fn write_bulk(
        &mut self,
        interface: TezSignInterface,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        (**self).write_bulk(interface, data, timeout)
    }
    fn read_bulk(
        &mut self,
        interface: TezSignInterface,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        (**self).read_bulk(interface, buf, timeout)
    }
    fn control_in(
        &mut self,
        request: ControlIn,
        timeout: Duration,
    ) -> Result<Vec<u8>, DeviceError> {
        (**self).control_in(request, timeout)
    }
}

/// Time left until `deadline`, or a [`DeviceError::Timeout`] naming `during`.
pub(crate) fn remaining(
    deadline: std::time::Instant,
    total: Duration,
    during: &str,
) -> Result<Duration, DeviceError> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        Err(DeviceError::timeout(during, total))
    } else {
        Ok(left)
    }
}
