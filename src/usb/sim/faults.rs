//! Fault injection behind the same transport traits: wrap a transport,
//! arm a fault for the n-th reply, and see what the layers above make of
//! it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::usb::error::DeviceError;
use crate::usb::transport::{ApduReply, ApduTransport, HidReports, HID_REPORT_LEN};

/// A fault armed to fire on a later reply. Clones share the switch, so a
/// test keeps one while the transport is moved into a signer.
#[derive(Debug)]
pub struct FaultSwitch<F> {
    armed: Arc<Mutex<Option<(usize, F)>>>,
}

impl<F> Clone for FaultSwitch<F> {
    fn clone(&self) -> Self {
        FaultSwitch {
            armed: self.armed.clone(),
        }
    }
}

impl<F> Default for FaultSwitch<F> {
    fn default() -> Self {
        FaultSwitch {
            armed: Arc::new(Mutex::new(None)),
        }
    }
}

impl<F> FaultSwitch<F> {
    /// Fire `fault` on the reply after `skip` more replies.
    pub fn arm(&self, skip: usize, fault: F) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((skip, fault));
    }

    /// Whether a fault is still waiting to fire.
    pub fn is_armed(&self) -> bool {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Called once per reply: the fault, if this is its reply.
    fn next_reply(&self) -> Option<F> {
        let mut a = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        match a.as_mut() {
            Some((0, _)) => a.take().map(|(_, f)| f),
            Some((n, _)) => {
                *n -= 1;
                None
            }
            None => None,
        }
    }
}

/// Faults on the first HID report of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HidFault {
    /// The report is lost: the read times out (further reports of a
    /// multi-report reply stay queued).
    DropReply,
    /// The report comes on another channel.
    WrongChannel,
    /// The report carries sequence 1 instead of 0 (a frame went missing).
    SequenceGap,
    /// The report is cut to 40 bytes.
    ShortFrame,
}

/// HID reports with faults injected into replies.
pub struct FaultyHid<R> {
    inner: R,
    switch: FaultSwitch<HidFault>,
}

impl<R: HidReports> FaultyHid<R> {
    /// Wrap `inner`; arm faults through the returned switch.
    pub fn new(inner: R) -> (Self, FaultSwitch<HidFault>) {
        let switch = FaultSwitch::default();
        (
            FaultyHid {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }
}

impl<R: HidReports> HidReports for FaultyHid<R> {
    fn write_report(
        &mut self,
        report: &[u8; HID_REPORT_LEN],
        timeout: Duration,
    ) -> Result<(), DeviceError> {
        self.inner.write_report(report, timeout)
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Vec<u8>, DeviceError> {
        let mut r = self.inner.read_report(timeout)?;
        let first_of_reply = r.len() == HID_REPORT_LEN && r[3] == 0 && r[4] == 0;
        if !first_of_reply {
            return Ok(r);
        }
        match self.switch.next_reply() {
            None => {}
            Some(HidFault::DropReply) => {
                return Err(DeviceError::timeout(
                    "a HID report (dropped by fault injection)",
                    timeout,
                ))
            }
            Some(HidFault::WrongChannel) => {
                r[0] ^= 0xff;
            }
            Some(HidFault::SequenceGap) => {
                r[4] = 1;
            }
            Some(HidFault::ShortFrame) => r.truncate(40),
        }
        Ok(r)
    }
}

/// Faults on whole APDU replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApduFault {
    /// The reply's status word is replaced.
    StatusWord(u16),
    /// The reply is lost (a timeout).
    Drop,
}

/// An APDU transport with faults injected into replies.
pub struct FaultyApdu<T> {
    inner: T,
    switch: FaultSwitch<ApduFault>,
}

impl<T: ApduTransport> FaultyApdu<T> {
    /// Wrap `inner`; arm faults through the returned switch.
    pub fn new(inner: T) -> (Self, FaultSwitch<ApduFault>) {
        let switch = FaultSwitch::default();
        (
            FaultyApdu {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }
}

impl<T: ApduTransport> ApduTransport for FaultyApdu<T> {
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        let mut r = self.inner.exchange(apdu, timeout)?;
        match self.switch.next_reply() {
            None => Ok(r),
            Some(ApduFault::StatusWord(sw)) => {
                r.status = sw;
                Ok(r)
            }
            Some(ApduFault::Drop) => Err(DeviceError::timeout(
                "an APDU reply (dropped by fault injection)",
                timeout,
            )),
        }
    }

    fn resync(&mut self) -> Result<(), DeviceError> {
        self.inner.resync()
    }
}
