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

pub use codec::{decode_entry, encode_entry, entry_len, ENTRY_LEN, ENTRY_V1_LEN};
pub use guard::{SetMode, SignerGuard};
pub use ids::{ChainId, ConsensusKind, Curve, KeyHash, UnknownScheme, WatermarkKey};
pub use mark::{
    decide, Decision, Mark, PayloadHash, RefusalReason, StoredSignature, Watermark,
    WatermarkRefusal, MAX_SIGNATURE_LEN,
};
pub use payload::{
    check_dal_bitset, ConsensusPayload, KeyRole, OperationTag, PayloadError, SignRequest,
    BLOCK_FITNESS_AT, BLS_ATTESTATION_LEN, SLOT_ATTESTATION_LEN, TAG_AT,
};
pub use table::WatermarkTable;
