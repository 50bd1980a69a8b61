//! File I/O off the async workers, with a deadline.
//!
//! A `write` + `fdatasync` on a hung disk can block for ever. Run inline in
//! an async call, it would hold a runtime thread (and every task queued on
//! it, such as an etcd keep-alive) and the vote or signature with it. Here
//! each operation runs on tokio's blocking pool and the caller waits at most
//! the deadline: past it, the call returns [`Error::Unavailable`] and the
//! store refuses every later call until it is reopened. The operation left
//! behind may still complete: it updates the in-memory state only after its
//! write is durable, and nobody is told it succeeded, so the state is right
//! whether or not it lands.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a file store waits for one write and its `fdatasync` by
/// default. Generous: a loaded disk can take seconds to flush, and a
/// timeout takes the store out of service until it is reopened.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Shared state behind a mutex, run on the blocking pool with a deadline.
pub(crate) struct Worker<I> {
    inner: Arc<Mutex<I>>,
    wedged: Arc<AtomicBool>,
    deadline: Duration,
    path: PathBuf,
}

impl<I: Send + 'static> Worker<I> {
    pub(crate) fn new(inner: I, path: PathBuf) -> Self {
        Worker {
            inner: Arc::new(Mutex::new(inner)),
            wedged: Arc::new(AtomicBool::new(false)),
            deadline: DEFAULT_DEADLINE,
            path,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    fn wedged_error(&self) -> Error {
        Error::Unavailable {
            backend: "file",
            detail: format!(
                "{}: an earlier write or fdatasync did not finish within {:?}; the store refuses every call until it is reopened",
                self.path.display(),
                self.deadline
            ),
            source: None,
        }
    }

    /// Run `f` on the state, on the blocking pool, for at most the deadline.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut I) -> Result<T> + Send + 'static,
    {
        if self.wedged.load(Ordering::Acquire) {
            return Err(self.wedged_error());
        }
        let inner = Arc::clone(&self.inner);
        let wedged = Arc::clone(&self.wedged);
        let task = tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            // Started only after the caller gave up (the pool was busy, or
            // an earlier operation hung and released the lock late): do
            // nothing, the caller was already told "unavailable".
            if wedged.load(Ordering::Acquire) {
                return Err(Error::Unavailable {
                    backend: "file",
                    detail: "store out of service after a timed-out write".into(),
                    source: None,
                });
            }
            f(&mut guard)
        });
        match tokio::time::timeout(self.deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Unavailable {
                backend: "file",
                detail: format!("{}: the file task failed", self.path.display()),
                source: Some(Box::new(join)),
            }),
            Err(_) => {
                self.wedged.store(true, Ordering::Release);
                tracing::error!(path = %self.path.display(), deadline = ?self.deadline, "file write did not finish within its deadline: store out of service until reopened");
                Err(self.wedged_error())
            }
        }
    }
}
