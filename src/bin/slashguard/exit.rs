//! Exit codes, and failures that say what to do next.

use std::fmt;

use slashguard::{Error, Refusal};

/// What the process exit code tells a monitoring script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: anything else (I/O error, device failure).
    Other = 1,
    /// 2: a safety rule refused; nothing was changed.
    Refused = 2,
    /// 3: the store or device did not answer; retrying may succeed.
    Unavailable = 3,
    /// 4: bad input, corrupt data, or configuration.
    BadInput = 4,
}

impl Code {
    /// The name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Code::Other => "error",
            Code::Refused => "refused",
            Code::Unavailable => "unavailable",
            Code::BadInput => "bad-input",
        }
    }
}

/// A command that did not succeed: the exit code, what happened, and what
/// the operator can do about it.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            hint: None,
        }
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Code::Refused, message)
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Code::BadInput, message)
    }

    /// Replace the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The signer's hint for a missing watermark file.
    #[cfg(feature = "signer")]
    pub fn hint_if_missing(self, missing: bool) -> Self {
        if missing {
            self.hint("first start: `slashguard signer serve --create` makes a new watermark file (or import octez-signer's marks: `slashguard watermark import --from-octez DIR --file PATH --create`); a file that disappeared must be restored, not re-created")
        } else {
            self
        }
    }

    /// Replace the hint when the failure has this code.
    pub fn hint_if(self, code: Code, hint: impl Into<String>) -> Self {
        if self.code == code {
            self.hint(hint)
        } else {
            self
        }
    }
}

impl Failure {
    /// The hint, or what is true of every failure with this code.
    pub fn next_step(&self) -> &str {
        self.hint.as_deref().unwrap_or(match self.code {
            Code::Refused => "nothing was changed; see the message for the rule that refused",
            Code::Unavailable => "nothing was acknowledged; retry when the store or device answers",
            Code::BadInput => "check the arguments (slashguard --help)",
            Code::Other => "see the message above",
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  next: {}", self.message, self.next_step())
    }
}

/// The whole chain of causes, one line.
fn describe(e: &Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = describe(&e);
        let (code, hint) = match &e {
            Error::Refused(Refusal::Watermark(_)) => (
                Code::Refused,
                "a stored mark is higher: choose a level above it; --force lowers marks and is for operator recovery only",
            ),
            Error::Refused(Refusal::Tower(_)) => (
                Code::Refused,
                "the stored tower is newer: a validator started on an older tower can vote twice; --force overwrites and is for operator recovery only",
            ),
            Error::Refused(_) => (Code::Refused, "nothing was changed"),
            Error::Fenced { .. } => (
                Code::Refused,
                "another instance owns the identity now: see `slashguard identity status`",
            ),
            Error::Regressed { .. } => (
                Code::Refused,
                "the store went backwards under a running instance; nothing was changed: run the recovery named above",
            ),
            Error::Locked { .. } => (
                Code::Refused,
                "a running validator or baker holds this store: stop it first, or use a read-only command (show, export)",
            ),
            Error::Unavailable { .. } => (
                Code::Unavailable,
                "check that etcd or the device is reachable (endpoints, network, quorum, USB) and retry; nothing was acknowledged",
            ),
            Error::Corrupt { .. } => (
                Code::BadInput,
                "the data is damaged, of another node or of an unknown version; nothing was overwritten: inspect it, restore it from a backup, or import an export",
            ),
            Error::Damaged { recover, .. } => {
                return Failure {
                    code: Code::Refused,
                    message,
                    hint: Some(format!("nothing was written; to recover: {recover}")),
                }
            }
            Error::AlreadyOpen { .. } => (
                Code::Refused,
                "this process already has the store open: share that store instead of opening it twice",
            ),
            Error::Aliased { .. } => (
                Code::Refused,
                "open the store by its one real path (no symbolic or extra hard links; never delete or replace a lock file while its store is in use)",
            ),
            Error::StoreMissing { .. } => (
                Code::BadInput,
                "check the path; nothing was created: a store is created only with --create, and a store whose data file is gone must be restored, not re-created",
            ),
            Error::StoreExists { .. } => (
                Code::BadInput,
                "a store is already there: drop --create to use it (nothing was changed)",
            ),
            Error::Config(_) => (
                Code::BadInput,
                "fix the setting named above (flags, SLASHGUARD_* variables or the config file)",
            ),
            Error::Invalid(_) | Error::Payload(_) => (Code::BadInput, "check the arguments"),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                (Code::BadInput, "check the path")
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                (Code::BadInput, "run as the user that owns the files")
            }
            _ => (Code::Other, "see the message above"),
        };
        Failure {
            code,
            message,
            hint: Some(hint.to_string()),
        }
    }
}

#[cfg(feature = "etcd")]
pub fn needs_etcd() -> Result<(), Failure> {
    Ok(())
}

#[cfg(not(feature = "etcd"))]
pub fn needs_etcd() -> Result<(), Failure> {
    Err(
        Failure::bad_input("this slashguard was built without etcd support")
            .hint("rebuild with `cargo install slashguard --features cli,etcd`"),
    )
}

#[cfg(feature = "usb")]
pub fn needs_usb() -> Result<(), Failure> {
    Ok(())
}

#[cfg(not(feature = "usb"))]
pub fn needs_usb() -> Result<(), Failure> {
    Err(Failure::bad_input("this slashguard was built without USB device support")
        .hint("rebuild with `cargo install slashguard --features cli,usb` (needs libusb-1.0-0-dev and pkg-config)"))
}
