//! Errors: a refusal (a safety rule said no) is kept apart from a failure
//! (the store or device could not answer), and both keep their sources.

use std::path::PathBuf;

use crate::failover::FailoverRefusal;
use crate::limit::SignerLimit;
use crate::tower::TowerRefusal;
use crate::watermark::{Mark, PayloadError, WatermarkKey, WatermarkRefusal};

/// A boxed error kept as the source of a failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when storing a tower or authorizing a
/// signature.
///
/// Whatever the variant, an `Err` means the vote or signature must be
/// withheld: no backend ever returns `Err` after releasing one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A safety rule refused the request. Retrying the same request will be
    /// refused again.
    #[error(transparent)]
    Refused(#[from] Refusal),

    /// This instance no longer owns the identity: another instance took it
    /// over, or the ownership lease expired. The store was not changed.
    #[error("fenced: this instance no longer owns {identity} ({reason})")]
    Fenced {
        /// The identity (node public key or key prefix) that was lost.
        identity: String,
        /// What is known about the loss: who owns it now, or why it was lost.
        reason: String,
    },

    /// Another process on this host holds the file lock.
    #[error("{path} is held by another process (only one instance may own it)")]
    Locked {
        /// The locked file.
        path: PathBuf,
    },

    /// No store exists where one was expected: it was never created there,
    /// or its data file was moved away or lost. Nothing was created: an
    /// empty store in its place would forget every vote and signature.
    #[error("no store at {path}: {hint}")]
    StoreMissing {
        /// The data file that is absent.
        path: PathBuf,
        /// What is known (a lock file that shows a store existed) and what
        /// the operator can do.
        hint: String,
    },

    /// The store's data is damaged such that what it loaded may be older
    /// than the last acknowledged record. Every write (authorization, tower
    /// store) is refused until an operator runs `recover`.
    #[error(
        "{path} is damaged: {detail}; every write is refused until an operator recovers: {recover}"
    )]
    Damaged {
        /// The data file.
        path: PathBuf,
        /// What was found.
        detail: String,
        /// The operator step (a command) that lifts the refusal.
        recover: String,
    },

    /// The store's data file is already open as a store in this process
    /// (by this or another path to the same file).
    #[error("{path} is already open in this process (one store per file: share the open store)")]
    AlreadyOpen {
        /// The data file.
        path: PathBuf,
    },

    /// The store was reached through an alias (a symbolic link, a second
    /// hard link) or its lock file was replaced: one file must have one
    /// owner, whatever path reaches it.
    #[error("{path} refused: {detail}")]
    Aliased {
        /// The path that was refused.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// `create` found a store already there: it was not touched.
    #[error("a store already exists at {path}: open it instead of creating a new one")]
    StoreExists {
        /// The existing data file.
        path: PathBuf,
    },

    /// The store could not be reached or did not answer within its deadline.
    /// Nothing was acknowledged; the same request may be retried.
    #[error("{backend} store unavailable: {detail}")]
    Unavailable {
        /// Which backend (`file`, `etcd`, `device`, ...).
        backend: &'static str,
        /// What failed, for the operator.
        detail: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// Stored data is damaged, truncated, of an unknown version or not ours.
    /// Nothing was overwritten.
    #[error("corrupt {what}: {problem}")]
    Corrupt {
        /// What was being read (a file path, an etcd key, a device reply).
        what: String,
        /// What is wrong with it.
        problem: FormatError,
    },

    /// The bytes a baker asked to sign are not a consensus payload we can
    /// guard.
    #[error(transparent)]
    Payload(#[from] PayloadError),

    /// The request is invalid independently of any stored state (a record of
    /// another node, a bad signature, a key mismatch).
    #[error("invalid request: {0}")]
    Invalid(String),

    /// Construction-time configuration problem (missing certificate, bad
    /// endpoint, unreadable key file).
    #[error("configuration: {0}")]
    Config(String),

    /// A local I/O error on a path, with its source.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A signer or device failed (not a refusal by a watermark rule).
    #[error("signer failed: {detail}")]
    Signer {
        /// What failed.
        detail: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The store shows state older than this process has itself written or
    /// read before: a deleted key, an etcd snapshot or a backup restored
    /// under a running instance, an operator's edit. Believing it could
    /// sign or vote twice, so nothing was written or released, and every
    /// later request on the same key is refused the same way until an
    /// operator repairs the store (`recovery` says how).
    #[error("{what} went backwards: this process already wrote or saw {floor}, the store now shows {found}; nothing was signed, voted or written. To recover: {recovery}")]
    Regressed {
        /// The key, file or record that went backwards.
        what: String,
        /// The newest state this process wrote or saw there.
        floor: String,
        /// What the store shows now (`nothing` for a missing key).
        found: String,
        /// The operator command that repairs it.
        recovery: String,
    },
}

impl Error {
    /// `true` when a safety rule refused the request (retrying is pointless).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Refused(_)
                | Error::Fenced { .. }
                | Error::Damaged { .. }
                | Error::Regressed { .. }
        )
    }

    /// `true` when the store could not answer: the request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, problem: FormatError) -> Self {
        Error::Corrupt {
            what: what.into(),
            problem,
        }
    }
}

/// A safety rule said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A tower store would go backwards or conflict with a stored vote.
    #[error(transparent)]
    Tower(#[from] TowerRefusal),
    /// A signature would be at or below a stored watermark.
    #[error(transparent)]
    Watermark(#[from] WatermarkRefusal),
    /// The signing device refused by its own high watermark (it keeps one
    /// of its own, checked when it signs).
    #[error("refused by the signing device's own watermark: {0}")]
    Device(String),
    /// A failover step is not safe yet (the seed's "common mistakes").
    #[error(transparent)]
    Failover(#[from] FailoverRefusal),
    /// The request breaks a documented limit of the signer (payload size,
    /// level range, scheme), found by [`Signer::check`](crate::Signer::check)
    /// before any watermark moved.
    #[error(transparent)]
    Limit(#[from] SignerLimit),
    /// The signer (a device with its own rules) refused a request that the
    /// host store had already been asked to authorize. Nothing was signed.
    /// `stored` is what the host store holds for the key now (`None`: no
    /// mark), so an operator knows which requests it will refuse next.
    #[error("{refusal}; nothing was signed, and the {backend} store now holds {} for {key}", stored_text(.stored))]
    SignerRefused {
        /// The signer's refusal.
        refusal: Box<Refusal>,
        /// The host store's backend (`file`, `etcd`, ...).
        backend: &'static str,
        /// The request's watermark key.
        key: WatermarkKey,
        /// The host store's mark for `key` after the refusal.
        stored: Option<Mark>,
    },
}

fn stored_text(stored: &Option<Mark>) -> String {
    match stored {
        Some(m) => m.to_string(),
        None => "no mark".into(),
    }
}

impl From<SignerLimit> for Error {
    fn from(l: SignerLimit) -> Self {
        Error::Refused(Refusal::Limit(l))
    }
}

impl From<FailoverRefusal> for Error {
    fn from(r: FailoverRefusal) -> Self {
        Error::Refused(Refusal::Failover(r))
    }
}

impl From<TowerRefusal> for Error {
    fn from(r: TowerRefusal) -> Self {
        Error::Refused(Refusal::Tower(r))
    }
}

impl From<WatermarkRefusal> for Error {
    fn from(r: WatermarkRefusal) -> Self {
        Error::Refused(Refusal::Watermark(r))
    }
}

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// There were no bytes at all.
    #[error("empty")]
    Empty,
    /// Fewer bytes than the format needs.
    #[error("truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The leading magic bytes are not ours.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// What was found.
        found: Vec<u8>,
    },
    /// A version byte this build does not know.
    #[error("unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// The checksum does not match the content (torn or flipped bytes).
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Checksum stored with the data.
        stored: u32,
        /// Checksum of the data as read.
        computed: u32,
    },
    /// The ed25519 signature over the record does not verify.
    #[error("signature does not verify for node {node}")]
    BadSignature {
        /// The node whose key was used.
        node: String,
    },
    /// The record belongs to another node.
    #[error("record of node {found}, expected {expected}")]
    ForeignNode {
        /// The node this store belongs to.
        expected: String,
        /// The node named in the record.
        found: String,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid field {field}: {detail}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Bytes left over after a complete record.
    #[error("{count} trailing bytes after the record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}
