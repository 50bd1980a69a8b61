//! What a signer documents it will not sign, found by
//! [`Signer::check`](crate::Signer::check) before any watermark moves.
//!
//! A device with its own rules (the Ledger Tezos Baking app, TezSign)
//! refuses some well-formed requests whatever its watermark says: a payload
//! longer than it takes, a level outside its range, a key scheme it does not
//! hold. If the host store advanced first and the device refused after, the
//! store would be left ahead of anything signed, and every normal request at
//! or below that mark would be refused until an operator lowered it. So the
//! limits are checked first, and a request that breaks one moves nothing.

use crate::watermark::{ConsensusKind, KeyHash};

/// A documented limit of a signer that a request breaks. Nothing was sent
/// to the signer and no watermark moved; the same request will be refused
/// again (it is a [`Refusal`](crate::Refusal)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerLimit {
    /// The payload is longer than the signer takes (the Ledger Tezos Baking
    /// app takes one data packet of at most 235 bytes).
    #[error("{signer} takes payloads of at most {max} bytes, this one has {len}; nothing was sent and no watermark moved")]
    PayloadTooLong {
        /// Which signer.
        signer: &'static str,
        /// The payload's length.
        len: usize,
        /// The most the signer takes.
        max: usize,
    },

    /// The level is outside the range the signer signs (the Ledger refuses
    /// levels with either of the two top bits set, `>= 0x40000000`).
    #[error("{signer} refuses level {level} (it signs levels below {limit}); nothing was sent and no watermark moved")]
    LevelOutOfRange {
        /// Which signer.
        signer: &'static str,
        /// The requested level.
        level: u32,
        /// The first level the signer refuses.
        limit: u32,
    },

    /// The key or its scheme is not one the signer signs with (TezSign
    /// holds tz4 keys only; a device signs with the one key it was opened
    /// for).
    #[error("{signer} does not sign for {key}: it signs {accepts}; nothing was sent and no watermark moved")]
    Scheme {
        /// Which signer.
        signer: &'static str,
        /// The request's key.
        key: KeyHash,
        /// What it signs with instead.
        accepts: String,
    },

    /// The signer does not sign this kind of operation.
    #[error("{signer} does not sign {kind} operations; nothing was sent and no watermark moved")]
    Kind {
        /// Which signer.
        signer: &'static str,
        /// The refused kind.
        kind: ConsensusKind,
    },
}
