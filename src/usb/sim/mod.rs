//! Device simulators behind the same transport traits the rusb code
//! implements, so the whole backend, guard included, runs end to end
//! without hardware; plus fault injection. Behind feature `sim` (test
//! doubles are not part of the default API), so that users can test their
//! own integration the same way.

pub mod faults;
pub(crate) mod ledger;
mod speculos_server;
mod tezsign;

pub use ledger::{Approval, LedgerSim, SimApp, SimHid};
pub use speculos_server::SpeculosServer;
pub use tezsign::{SimBulk, TezSignSim};
