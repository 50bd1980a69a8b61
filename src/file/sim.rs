//! Fault injection at the file stores' storage seam (feature `sim`, for
//! tests; not part of the default API).
//!
//! A test installs [`DiskFaults`] for a data file path; every store opened
//! on that path afterwards (and while the handle lives) consults it at each
//! `fdatasync` of its slot file: the sync can hang until released, fail,
//! or be slowed down, and every sync is counted. The record is written to
//! the real file first, as on a real disk whose flush misbehaves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Faults of the `fdatasync`s of one data file. See the [module docs](self).
#[derive(Debug)]
pub struct DiskFaults {
    path: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    hang: bool,
    fail_next: bool,
    delay: Duration,
    syncs: u64,
    hung: usize,
}

static INSTALLED: Mutex<Vec<(PathBuf, Weak<DiskFaults>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskFaults {
    /// Faults for the data file at `path` (the path the store is opened
    /// with), applied to stores opened after this call for as long as the
    /// returned handle lives. Starts with no fault: syncs are only counted.
    pub fn install(path: impl AsRef<Path>) -> Arc<DiskFaults> {
        let faults = Arc::new(DiskFaults {
            path: path.as_ref().to_path_buf(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let mut installed = lock(&INSTALLED);
        installed.retain(|(p, f)| f.strong_count() > 0 && p != &faults.path);
        installed.push((faults.path.clone(), Arc::downgrade(&faults)));
        faults
    }

    /// The faults installed for `path`, if any.
    pub(crate) fn lookup(path: &Path) -> Option<Arc<DiskFaults>> {
        lock(&INSTALLED)
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, f)| f.upgrade())
    }

    /// The data file these faults apply to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on every `fdatasync` blocks (a hung disk) until
    /// [`release_syncs`](Self::release_syncs).
    pub fn hang_syncs(&self) {
        lock(&self.state).hang = true;
    }

    /// Let the hung `fdatasync`s return (successfully), and stop hanging.
    pub fn release_syncs(&self) {
        lock(&self.state).hang = false;
        self.changed.notify_all();
    }

    /// The next `fdatasync` fails with an I/O error (the record was
    /// written, but is not known to be durable).
    pub fn fail_next_sync(&self) {
        lock(&self.state).fail_next = true;
    }

    /// Every `fdatasync` takes at least `delay` longer (a slow disk).
    pub fn delay_syncs(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// How many `fdatasync`s the store started on the file (including
    /// failed and hung ones).
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// How many `fdatasync`s are blocked by [`hang_syncs`](Self::hang_syncs)
    /// right now.
    pub fn hung(&self) -> usize {
        lock(&self.state).hung
    }

    /// Wait up to `timeout` until at least `n` `fdatasync`s are hung;
    /// `true` if they are.
    pub fn wait_hung(&self, n: usize, timeout: Duration) -> bool {
        let state = lock(&self.state);
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.hung < n)
            .unwrap_or_else(|p| p.into_inner());
        state.hung >= n
    }

    /// Called by the slot file before each `fdatasync`.
    pub(crate) fn before_sync(&self) -> std::io::Result<()> {
        let mut state = lock(&self.state);
        state.syncs += 1;
        if std::mem::take(&mut state.fail_next) {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        if state.hang {
            state.hung += 1;
            self.changed.notify_all();
            while state.hang {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.hung -= 1;
        }
        let delay = state.delay;
        drop(state);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        Ok(())
    }
}
