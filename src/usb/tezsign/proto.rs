//! The TezSign protobuf messages slashguard uses, declared by hand with
//! prost (no build step).
//!
//! Field numbers follow the public `signer/signer.proto` of
//! tez-capital/tezsign (package `signer`), except the version messages:
//! that file declares no `Version` request, so [`VersionRequest`] (request
//! tag 11) and [`VersionResponse`] (response tag 9) are **assumptions** to
//! check against the device firmware before relying on
//! [`TezSignClient::version`](crate::usb::tezsign::TezSignClient::version).
//! Messages slashguard does not use (new keys, logs, init, delete) are not
//! declared; prost skips them if a device sends them.

/// One key's result of a batch operation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PerKeyResult {
    /// The key alias.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// Whether it succeeded.
    #[prost(bool, tag = "2")]
    pub ok: bool,
    /// Why not, when it did not.
    #[prost(string, tag = "3")]
    pub error: String,
}

/// Unlock keys with the master passphrase (management interface).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockRequest {
    /// Aliases to unlock.
    #[prost(string, repeated, tag = "1")]
    pub key_ids: Vec<String>,
    /// The passphrase.
    #[prost(bytes = "vec", tag = "2")]
    pub passphrase: Vec<u8>,
}

/// Per-key unlock results.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockResponse {
    /// One per requested alias.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<PerKeyResult>,
}

/// Lock keys (management interface).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRequest {
    /// Aliases to lock.
    #[prost(string, repeated, tag = "1")]
    pub key_ids: Vec<String>,
}

/// Per-key lock results.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockResponse {
    /// One per requested alias.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<PerKeyResult>,
}

/// Whether a key's secret is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LockState {
    /// Not reported.
    Unspecified = 0,
    /// Locked: the device reports no watermarks and does not sign.
    Locked = 1,
    /// Unlocked.
    Unlocked = 2,
}

/// One key as the device reports it. Watermarks are meaningful only while
/// the key is unlocked.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyStatus {
    /// The alias (`consensus`, `companion`, ...).
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// Locked or unlocked.
    #[prost(enumeration = "LockState", tag = "2")]
    pub lock_state: i32,
    /// The tz4 address.
    #[prost(string, tag = "3")]
    pub tz4: String,
    /// The BLS public key (BLpk...).
    #[prost(string, tag = "4")]
    pub bl_pubkey: String,
    /// Proof of possession (BLsig...).
    #[prost(string, tag = "5")]
    pub pop: String,
    /// Block watermark level.
    #[prost(uint64, tag = "10")]
    pub last_block_level: u64,
    /// Preattestation watermark level.
    #[prost(uint64, tag = "11")]
    pub last_preattestation_level: u64,
    /// Attestation watermark level.
    #[prost(uint64, tag = "12")]
    pub last_attestation_level: u64,
    /// Block watermark round.
    #[prost(uint32, tag = "20")]
    pub last_block_round: u32,
    /// Preattestation watermark round.
    #[prost(uint32, tag = "21")]
    pub last_preattestation_round: u32,
    /// Attestation watermark round.
    #[prost(uint32, tag = "22")]
    pub last_attestation_round: u32,
    /// The device could not read its watermark file for this key.
    #[prost(bool, tag = "30")]
    pub state_corrupted: bool,
}

/// Ask for every key's status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// Every key's status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// One per key on the device.
    #[prost(message, repeated, tag = "1")]
    pub keys: Vec<KeyStatus>,
}

/// Sign a consensus operation with a tz4 key (signing interface).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignRequest {
    /// The key's tz4 address.
    #[prost(string, tag = "1")]
    pub tz4: String,
    /// The bytes to sign, watermark byte included.
    #[prost(bytes = "vec", tag = "2")]
    pub message: Vec<u8>,
}

/// A signature.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignResponse {
    /// Compressed BLS signature (96 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub signature: Vec<u8>,
}

/// Raise a key's watermark: every kind to (level, 0), only upwards
/// (management interface).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetLevelRequest {
    /// The alias.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// The new level.
    #[prost(uint64, tag = "3")]
    pub level: u64,
}

/// Ask for the firmware version (assumed message, see the module docs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {}

/// The firmware version (assumed message, see the module docs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version text.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// Success without data (set level, init).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkReply {
    /// Always true on success.
    #[prost(bool, tag = "1")]
    pub ok: bool,
}

/// A failure: code and text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorReply {
    /// 31 key not found, 32 locked, 33 stale watermark, 34 bad payload,
    /// 80 set level failed, 98/1001 wrong interface, ...
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// The device's words.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Any request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Which request.
    #[prost(oneof = "RequestPayload", tags = "1, 2, 3, 4, 9, 11")]
    pub payload: Option<RequestPayload>,
}

/// The requests slashguard sends.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RequestPayload {
    /// Unlock keys.
    #[prost(message, tag = "1")]
    Unlock(UnlockRequest),
    /// Lock keys.
    #[prost(message, tag = "2")]
    Lock(LockRequest),
    /// Status of every key.
    #[prost(message, tag = "3")]
    Status(StatusRequest),
    /// Sign.
    #[prost(message, tag = "4")]
    Sign(SignRequest),
    /// Raise a watermark.
    #[prost(message, tag = "9")]
    SetLevel(SetLevelRequest),
    /// Firmware version (assumed tag).
    #[prost(message, tag = "11")]
    Version(VersionRequest),
}

/// Any response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Which response.
    #[prost(oneof = "ResponsePayload", tags = "1, 2, 3, 4, 9, 15, 16")]
    pub payload: Option<ResponsePayload>,
}

/// The responses slashguard reads.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponsePayload {
    /// Unlock results.
    #[prost(message, tag = "1")]
    Unlock(UnlockResponse),
    /// Lock results.
    #[prost(message, tag = "2")]
    Lock(LockResponse),
    /// Key statuses.
    #[prost(message, tag = "3")]
    Status(StatusResponse),
    /// A signature.
    #[prost(message, tag = "4")]
    Sign(SignResponse),
    /// Firmware version (assumed tag).
    #[prost(message, tag = "9")]
    Version(VersionResponse),
    /// Success without data.
    #[prost(message, tag = "15")]
    Ok(OkReply),
    /// A failure.
    #[prost(message, tag = "16")]
    Error(ErrorReply),
}

/// TezSign error codes.
pub mod code {
    /// Unlock attempts throttled.
    pub const UNLOCK_THROTTLED: u32 = 12;
    /// Unknown key.
    pub const KEY_NOT_FOUND: u32 = 31;
    /// Key locked.
    pub const KEY_LOCKED: u32 = 32;
    /// At or below the key's watermark for that kind.
    pub const STALE_WATERMARK: u32 = 33;
    /// Not a consensus operation the device signs.
    pub const BAD_PAYLOAD: u32 = 34;
    /// Set level failed (locked, unknown key, or not above every kind).
    pub const SET_LEVEL_FAILED: u32 = 80;
    /// A management request on the signing interface.
    pub const WRONG_INTERFACE_SIGNING: u32 = 98;
    /// A sign request on the management interface.
    pub const WRONG_INTERFACE_MANAGEMENT: u32 = 1001;
}
