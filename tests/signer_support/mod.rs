//! Helpers shared by the key and signer tests.
#![allow(dead_code)]

pub mod bls;
#[cfg(all(feature = "signer", feature = "sim"))]
pub mod ledger;
pub mod openssl;
#[cfg(feature = "signer")]
pub mod server;
