//! File backends: durable on return with ONE `fdatasync` per store, torn
//! writes detected by checksum, and an OS lock so that only one process on
//! a host owns a tower or watermark file. See `docs/file-format.md`.

mod lock;
#[cfg(feature = "sim")]
pub mod sim;
mod slots;
mod tower;
#[cfg(feature = "alpenglow")]
mod vote_history;
mod watermarks;
mod worker;

pub use lock::OwnerLock;
pub use slots::Recovery;
pub use tower::FileTowerStorage;
#[cfg(feature = "alpenglow")]
pub use vote_history::FileVoteHistory;
pub use watermarks::FileWatermarks;
pub use worker::DEFAULT_DEADLINE;
