//! Ledger with the Tezos Baking app: HID framing, APDUs, the app's
//! commands and its own watermark rule.

pub mod apdu;
mod baking;
pub mod hid;
mod keys;
mod path;
pub mod rule;

pub use baking::{
    parse_all_hwm, AllHwm, AppKind, AppVersion, BakingApp, DeviceMark, LedgerTimeouts,
};
pub use hid::HidApdu;
pub use keys::{tezos_signature, LedgerPublicKey};
pub use path::{BipPath, DerivationType, HARDENED};
pub use rule::LedgerHwm;
