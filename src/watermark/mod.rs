//! Tezos high watermarks: what a baker asks to sign, the ordering rule, the
//! stored form, and the `SignerGuard` trait every watermark store implements.

mod codec;
mod guard;
mod ids;
#[cfg(feature = "interchange")]
pub mod interchange;
mod mark;
#[cfg(feature = "interchange")]
pub mod octez;
mod payload;
pub(crate) mod table;

pub use codec::{decode_entry, encode_entry, ENTRY_LEN};
pub use guard::{SetMode, SignerGuard};
pub use ids::{ChainId, ConsensusKind, Curve, KeyHash, WatermarkKey};
pub use mark::{decide, Decision, Mark, PayloadHash, RefusalReason, Watermark, WatermarkRefusal};
pub use payload::{ConsensusPayload, PayloadError, SignRequest};
pub use table::WatermarkTable;
