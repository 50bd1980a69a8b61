//! USB signers whose keys never leave the device: a Ledger running the
//! Tezos Baking app, and a TezSign gadget. Both keep their own high
//! watermark; slashguard drives them and makes that watermark part of the
//! safety story.
//!
//! Layers, bottom up:
//!
//! - [`transport`]: the traits every transport implements
//!   ([`ApduTransport`], [`HidReports`], [`BulkTransport`]). Shipped:
//!   [`RusbLedger`] and [`RusbTezSign`] (libusb), [`SpeculosTransport`]
//!   (TCP to the Speculos emulator), and, with feature `sim`, the
//!   simulators in `sim`.
//! - [`ledger`] and [`tezsign`]: framing, messages and blocking clients.
//! - [`LedgerSigner`], [`TezSignSigner`]: the crate's
//!   [`Signer`](crate::Signer); [`DeviceWatermarks`]: a
//!   [`SignerGuard`](crate::SignerGuard) over a device mark;
//!   [`raise_for_failover`]: step 5 of the failover procedure.
//! - [`DeviceQueue`] and [`QueuedSigner`]: one request at a time per
//!   device with a bounded wait (a server's "device busy");
//!   [`Reopening`]: a USB handle opened again after the device was
//!   unplugged and plugged back.
//!
//! What the device watermark adds: the device checks and advances its
//! mark in one atomic step inside the device, at sign time, whoever asks,
//! so a second host with a copy of the config (or a baker started by
//! mistake) cannot get a double signature from the same device. What it
//! does not give: a record that survives losing the device (a replacement
//! starts at whatever it is set to; a Ledger with "HWM in RAM" loses its
//! mark on a power cut), and, on a Ledger, protection at exactly a reset
//! mark for attestations. So combine it with a file or etcd store:
//!
//! ```no_run
//! use slashguard::file::FileWatermarks;
//! use slashguard::usb::{HidApdu, LedgerConfig, LedgerSigner, RusbLedger};
//! use slashguard::GuardedSigner;
//!
//! # async fn run() -> slashguard::Result<()> {
//! let ledger = RusbLedger::open(Some("0001"))?; // serial from `list_devices()`
//! let signer = LedgerSigner::connect(HidApdu::new(ledger), LedgerConfig::default()).await?;
//! // The file mark advances durably first, then the Ledger checks its own.
//! let baker = GuardedSigner::new(FileWatermarks::open("/var/lib/baker/hwm")?, signer);
//! # let payload = [0u8; 0];
//! let signed = baker.sign(&payload).await?;
//! # Ok(()) }
//! ```

mod backup_device;
mod device_guard;
mod error;
mod failover;
pub mod ledger;
mod ledger_signer;
mod queue;
mod reopen;
mod rusb_transport;
#[cfg(feature = "sim")]
pub mod sim;
mod speculos;
pub mod tezsign;
mod tezsign_signer;
pub mod transport;

pub use device_guard::{DeviceMarks, DeviceRule, DeviceWatermarks, WatermarkDevice};
pub use error::{DeviceError, ProtocolError, LEDGER_UDEV_RULE, TEZSIGN_UDEV_RULE};
pub use failover::{raise_for_failover, FailoverReport, RaisedDevice, DEFAULT_MARGIN};
pub use ledger::HidApdu;
pub use ledger_signer::{ApprovalState, LedgerConfig, LedgerSigner};
pub use queue::{DeviceQueue, QueuedSigner};
pub use reopen::Reopening;
pub use rusb_transport::{
    list_devices, DeviceKind, LedgerModel, RusbLedger, RusbTezSign, UsbDeviceInfo,
    LEDGER_VENDOR_ID, TEZSIGN_PRODUCT_ID, TEZSIGN_VENDOR_ID,
};
pub use speculos::SpeculosTransport;
pub use tezsign_signer::{TezSignDevice, TezSignSigner};
pub use transport::{ApduReply, ApduTransport, BulkTransport, HidReports, TezSignInterface};

use crate::error::{Error, Refusal};

/// `true` when `err` says a watermark refused a signature at the device
/// or in slashguard: [`Error::Refused`], or a [`DeviceError`] that is a
/// device watermark refusal, anywhere in the source chain (for errors a
/// custom transport or signer wrapped).
pub fn is_device_refusal(err: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        match e.downcast_ref::<Error>() {
            Some(Error::Refused(Refusal::Watermark(_) | Refusal::Device(_))) => return true,
            // Reported by `GuardedSigner` with the host store's mark.
            Some(Error::Refused(Refusal::SignerRefused { refusal, .. }))
                if matches!(**refusal, Refusal::Watermark(_) | Refusal::Device(_)) =>
            {
                return true
            }
            _ => {}
        }
        if e.downcast_ref::<DeviceError>()
            .is_some_and(DeviceError::is_watermark_refusal)
        {
            return true;
        }
        cur = e.source();
    }
    false
}
