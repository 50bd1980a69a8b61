//! What can go wrong talking to a USB signer, in terms an operator can act
//! on, and how it maps onto the crate's [`Error`].

use std::time::Duration;

use crate::error::Error;
use crate::usb::tezsign::FrameError;

/// The udev rule that lets members of `plugdev` open a Ledger.
pub const LEDGER_UDEV_RULE: &str =
    r#"SUBSYSTEMS=="usb", ATTRS{idVendor}=="2c97", MODE="0660", GROUP="plugdev""#;

/// The udev rule that lets members of `plugdev` open a TezSign gadget.
pub const TEZSIGN_UDEV_RULE: &str = r#"SUBSYSTEMS=="usb", ATTRS{idVendor}=="9997", ATTRS{idProduct}=="0001", MODE="0660", GROUP="plugdev""#;

/// A failure of the device, its transport, or its protocol.
///
/// Whatever the variant, no signature was released by the call that
/// returned it. Whether the *device* advanced its own watermark is only
/// certain for [`RefusedByDeviceWatermark`](DeviceError::RefusedByDeviceWatermark)
/// (it did not); after a [`Timeout`](DeviceError::Timeout) or
/// [`Unplugged`](DeviceError::Unplugged) during a sign it may have, which is
/// why the local store always advances first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No matching device is attached, or this host has no USB bus at all.
    #[error("no device found: {detail}")]
    NoDevice {
        /// What was looked for and why nothing was found.
        detail: String,
    },

    /// The device exists but this user may not open it.
    #[error("permission denied opening {device}; add the udev rule `{udev_rule}` (for example in /etc/udev/rules.d/20-slashguard.rules), run `udevadm control --reload-rules && udevadm trigger`, re-plug the device and make sure your user is in group plugdev")]
    PermissionDenied {
        /// The device, as listed.
        device: String,
        /// The rule to add.
        udev_rule: &'static str,
    },

    /// Another process (often another baker or Ledger Live) has claimed the
    /// interface.
    #[error("{device} is busy: another process has claimed it (stop the other baker, Ledger Live or tezsign host)")]
    Busy {
        /// The device.
        device: String,
    },

    /// The device went away during the request.
    #[error("device unplugged or reset: {detail}")]
    Unplugged {
        /// What was in progress.
        detail: String,
    },

    /// The device did not answer in time.
    #[error("device did not answer {during} within {after:?}")]
    Timeout {
        /// What was awaited.
        during: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// A person had to approve on the device and did not within the
    /// deadline. The prompt may still be on the screen: reject it there.
    #[error("nobody approved {action} on the device within {after:?}; reject the prompt on the device and retry")]
    ApprovalTimeout {
        /// What needed approval.
        action: String,
        /// How long slashguard waited.
        after: Duration,
    },

    /// The Ledger is not running the Tezos Baking app (dashboard, or the
    /// Tezos Wallet app).
    #[error("wrong app open on the Ledger: {detail}; open the Tezos Baking app")]
    WrongApp {
        /// What was found instead.
        detail: String,
    },

    /// The device (Ledger PIN screen) or the key (TezSign) is locked.
    #[error("device or key locked: {detail}")]
    Locked {
        /// Which one, and how to unlock.
        detail: String,
    },

    /// The Ledger answered 0x6982: no key, or another key, is authorized
    /// for baking. Retrying does not help: an operator must authorize the
    /// key on the device ([`LedgerSigner::authorize`](crate::usb::LedgerSigner::authorize)
    /// or [`setup`](crate::usb::LedgerSigner::setup), approved on the
    /// device).
    #[error("the Ledger answered 0x6982: this key is not authorized for baking on it (no key, or another key, is); retrying will not help: an operator must authorize the key (LedgerSigner::authorize or setup, approved on the device), after unlocking the device if it is locked")]
    NotAuthorized,

    /// A person rejected the request on the device.
    #[error("rejected on the device by the user ({action})")]
    UserRejected {
        /// What was rejected.
        action: String,
    },

    /// The device's own high watermark refused to sign (Ledger 0x6A80 on a
    /// sign, TezSign error 33). The device did not sign and did not move its
    /// watermark.
    #[error("refused by the device watermark: {detail}")]
    RefusedByDeviceWatermark {
        /// The device's words, and the request.
        detail: String,
    },

    /// slashguard refused to send a watermark change that would lower the
    /// device's watermark.
    #[error("refusing to lower the device watermark: {detail}")]
    WouldLower {
        /// The device mark and the requested one.
        detail: String,
    },

    /// The TezSign key alias or tz4 address is unknown to the device.
    #[error("key not found on the device: {detail}")]
    KeyNotFound {
        /// The alias or address.
        detail: String,
    },

    /// The device did not accept the payload as a consensus operation.
    #[error("device rejected the payload: {detail}")]
    BadPayload {
        /// The device's words.
        detail: String,
    },

    /// A known Ledger status word that is not success.
    #[error("device answered status {sw:#06x} ({meaning})")]
    Status {
        /// The status word.
        sw: u16,
        /// What the Tezos Baking app means by it.
        meaning: &'static str,
    },

    /// A Ledger status word slashguard does not know.
    #[error("device answered unknown status word {sw:#06x}")]
    UnknownStatus {
        /// The status word.
        sw: u16,
    },

    /// Earlier requests to this device would not all be answered within
    /// the time this one may wait (see [`DeviceQueue`](crate::usb::DeviceQueue)):
    /// refused before anything was sent to the device.
    #[error("device busy: {device} has {ahead} request(s) ahead of this one, which would not all be answered within {budget:?}; nothing was sent to the device (retry, or give requests more time)")]
    Backlog {
        /// The device.
        device: String,
        /// Requests queued or in service before this one.
        ahead: usize,
        /// The most a request may spend on this device, waiting included.
        budget: Duration,
    },

    /// A TezSign error code slashguard does not map to anything more
    /// specific.
    #[error("tezsign error {code}: {message}")]
    Remote {
        /// The device's code.
        code: u32,
        /// The device's message.
        message: String,
    },

    /// The TezSign interface answered its readiness probe with "not ready".
    #[error("tezsign interface {interface} is not ready (the gadget is still starting)")]
    NotReady {
        /// The interface number.
        interface: u8,
    },

    /// Bytes on the wire that break the protocol. The exchange was
    /// abandoned; nothing it carried was used.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),

    /// A request slashguard will not send (bad argument).
    #[error("invalid device request: {0}")]
    Invalid(String),

    /// A request the device documents it refuses (payload too long, level
    /// out of range, another scheme). Nothing was sent.
    #[error(transparent)]
    Limit(#[from] crate::limit::SignerLimit),

    /// Another USB or I/O failure.
    #[error("USB I/O failed: {detail}")]
    Io {
        /// What failed.
        detail: String,
    },
}

/// A malformed frame or reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A HID report of the wrong size.
    #[error("HID report of {len} bytes (a Ledger report is 64)")]
    ShortFrame {
        /// Bytes received.
        len: usize,
    },
    /// A HID report on another channel than the request's.
    #[error("HID reply on channel {found:#06x}, expected {expected:#06x}")]
    WrongChannel {
        /// The request's channel.
        expected: u16,
        /// The reply's channel.
        found: u16,
    },
    /// A HID report with a tag other than APDU (0x05).
    #[error("HID report with tag {0:#04x}, expected 0x05 (APDU)")]
    WrongTag(u8),
    /// A HID report out of sequence.
    #[error("HID sequence gap: expected frame {expected}, got {found}")]
    SequenceGap {
        /// The next expected sequence number.
        expected: u16,
        /// What arrived.
        found: u16,
    },
    /// A reply too short to hold the status word.
    #[error("reply of {len} bytes has no status word")]
    NoStatusWord {
        /// Bytes in the reply.
        len: usize,
    },
    /// A reply whose content does not fit the command.
    #[error("bad {what} reply: {detail}")]
    BadReply {
        /// The command.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A TezSign frame that does not decode.
    #[error("tezsign frame: {0}")]
    Frame(#[from] FrameError),
    /// A TezSign protobuf payload that does not decode.
    #[error("tezsign message does not decode: {0}")]
    Decode(String),
    /// A state-changing command was answered with success, but reading the
    /// state back shows it was not applied: the success was a late reply to
    /// an earlier command. The host resynchronises before its next command.
    #[error(
        "the device did not apply {command}: {detail} (the success read for it was not its reply)"
    )]
    NotApplied {
        /// The command.
        command: &'static str,
        /// What the device reports instead.
        detail: String,
    },
}

impl DeviceError {
    pub(crate) fn timeout(during: impl Into<String>, after: Duration) -> Self {
        DeviceError::Timeout {
            during: during.into(),
            after,
        }
    }

    pub(crate) fn bad_reply(what: &'static str, detail: impl Into<String>) -> Self {
        DeviceError::Protocol(ProtocolError::BadReply {
            what,
            detail: detail.into(),
        })
    }

    /// `true` when the device's own watermark refused a signature.
    pub fn is_watermark_refusal(&self) -> bool {
        matches!(self, DeviceError::RefusedByDeviceWatermark { .. })
    }

    /// `true` for states that time or a person can clear (unplugged, busy,
    /// locked, timeout, wrong app): the request may succeed later.
    /// [`NotAuthorized`](DeviceError::NotAuthorized) is not one: it waits
    /// for an operator, see [`needs_operator`](Self::needs_operator).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DeviceError::NoDevice { .. }
                | DeviceError::Busy { .. }
                | DeviceError::Backlog { .. }
                | DeviceError::Unplugged { .. }
                | DeviceError::Timeout { .. }
                | DeviceError::ApprovalTimeout { .. }
                | DeviceError::WrongApp { .. }
                | DeviceError::Locked { .. }
                | DeviceError::NotReady { .. }
        )
    }

    /// `true` when only an operator can clear it (a key to authorize on
    /// the device, a udev rule to add): retrying alone will not help.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            DeviceError::NotAuthorized | DeviceError::PermissionDenied { .. }
        )
    }

    /// `true` when the host may have lost step with the device (a reply
    /// missed, late, or of the wrong shape): the next command must
    /// resynchronise first.
    pub fn desyncs(&self) -> bool {
        matches!(
            self,
            DeviceError::Timeout { .. }
                | DeviceError::ApprovalTimeout { .. }
                | DeviceError::Protocol(_)
                | DeviceError::Unplugged { .. }
                | DeviceError::Io { .. }
        )
    }
}

/// Maps onto the crate error, keeping the device error as the source (so
/// `err.source().downcast_ref::<DeviceError>()` finds it):
///
/// - transient states ([`DeviceError::is_transient`]) become
///   [`Error::Unavailable`] with backend `"device"`;
/// - [`DeviceError::PermissionDenied`] becomes [`Error::Config`] (an
///   operator must add the udev rule);
/// - [`DeviceError::NotAuthorized`] becomes [`Error::Signer`], not
///   `Unavailable`: an operator must authorize the key, a retry alone
///   will not;
/// - [`DeviceError::Invalid`] becomes [`Error::Invalid`];
/// - [`DeviceError::Limit`] becomes [`Refusal::Limit`](crate::Refusal::Limit);
/// - a refusal by the device watermark becomes
///   [`Refusal::Device`](crate::Refusal::Device) (the device signers report
///   [`Error::Refused`] with the watermark detail themselves when they can
///   read the device mark that explains it);
/// - everything else becomes [`Error::Signer`].
impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::PermissionDenied { .. } => Error::Config(e.to_string()),
            DeviceError::Invalid(ref m) => Error::Invalid(m.clone()),
            DeviceError::Limit(l) => Error::Refused(crate::Refusal::Limit(l)),
            ref r if r.is_watermark_refusal() => {
                Error::Refused(crate::Refusal::Device(e.to_string()))
            }
            ref t if t.is_transient() => Error::Unavailable {
                backend: "device",
                detail: e.to_string(),
                source: Some(Box::new(e)),
            },
            _ => Error::Signer {
                detail: e.to_string(),
                source: Some(Box::new(e)),
            },
        }
    }
}
