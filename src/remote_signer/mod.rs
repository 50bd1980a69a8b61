//! The octez remote-signer protocol (feature `signer`): pure codecs for
//! HTTP ([`http`]), the TCP/Unix socket protocol ([`socket`]),
//! authentication ([`auth`]) and error traces ([`trace`]); per-key
//! [`policy`]; and the transport-free [`service`] that the
//! `slashguard signer` daemon serves. Facts and sources:
//! `shared/reference/remote-signer.md`.

pub mod auth;
pub mod http;
pub mod policy;
pub mod service;
pub mod socket;
pub mod trace;

pub use policy::{KeyPolicy, MagicBytes, PolicyRefusal, Role};
pub use service::{ServiceError, ServiceOptions, SignCall, Signed, SignerService, Withheld};
