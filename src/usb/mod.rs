//! USB signers whose keys never leave the device: a Ledger running the
//! Tezos Baking app, and a TezSign gadget.
//!
//! - [`transport`]: the traits every transport implements
//!   ([`ApduTransport`], [`HidReports`], [`BulkTransport`]).
//! - [`ledger`] and [`tezsign`]: framing, messages and blocking clients.

mod error;
pub mod ledger;
mod rusb_transport;
pub mod sim;
mod speculos;
pub mod tezsign;
pub mod transport;

pub use error::{DeviceError, ProtocolError, LEDGER_UDEV_RULE, TEZSIGN_UDEV_RULE};
pub use ledger::HidApdu;
pub use rusb_transport::{
    list_devices, DeviceKind, LedgerModel, RusbLedger, RusbTezSign, UsbDeviceInfo,
    LEDGER_VENDOR_ID, TEZSIGN_PRODUCT_ID, TEZSIGN_VENDOR_ID,
};
pub use speculos::SpeculosTransport;
pub use transport::{ApduReply, ApduTransport, BulkTransport, HidReports, TezSignInterface};
