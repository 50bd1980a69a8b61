//! The octez remote-signer protocol (feature `signer`): pure codecs for
//! HTTP ([`http`]), the TCP/Unix socket protocol ([`socket`]),
//! authentication ([`auth`]) and error traces ([`trace`]); per-key
//! [`policy`]; and the transport-free [`service`] that the
//! `slashguard signer` daemon serves. Facts and sources:
//! `shared/reference/remote-signer.md`.

pub mod auth;
pub mod generic;
pub mod http;
pub mod policy;
mod served_key;
pub mod service;
pub mod socket;
pub mod trace;

pub use policy::{GenericRefusal, KeyPolicy, MagicBytes, PolicyRefusal, Role};
pub use served_key::ServedKey;
pub use service::{
    Released, ServiceError, ServiceOptions, SignCall, Signed, SignedOperation, SignerService,
    Withheld,
};
