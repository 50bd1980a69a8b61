//! Helpers shared by the key and signer tests.
#![allow(dead_code)]

pub mod bls;
pub mod openssl;
#[cfg(feature = "signer")]
pub mod server;
