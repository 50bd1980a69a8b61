//! File I/O off the async workers, with a deadline, on any runtime.
//!
//! A `write` + `fdatasync` on a hung disk can block for ever. Run inline in
//! an async call, it would hold a runtime thread (and every task queued on
//! it, such as an etcd keep-alive) and the vote or signature with it. Here
//! each store has two threads of its own, plain `std` threads: an I/O
//! thread that runs the store's operations one after the other, and a
//! watch thread that enforces the deadline. The async caller only awaits a
//! oneshot channel, so a store works on any tokio runtime (current-thread
//! or multi-thread, with or without `enable_time`/`enable_io`) and on any
//! other executor: nothing here needs tokio's timer or blocking pool.
//!
//! A call waits at most the deadline, counted from when it was queued:
//! past it, the watch thread answers [`Error::Unavailable`], and the store
//! refuses every later call (and every call still queued) until it is
//! reopened. The operation left behind may still complete: it updates the
//! in-memory state only after its write is durable, and nobody is told it
//! succeeded, so the state is right whether or not it lands.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How long a file store waits for one write and its `fdatasync` by
/// default. Generous: a loaded disk can take seconds to flush, and a
/// timeout takes the store out of service until it is reopened.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Shared state run by an I/O thread of its own, each call for at most
/// the deadline.
pub(crate) struct Worker<I> {
    // Held by the worker only: the I/O thread upgrades a weak reference for
    // each operation, so that dropping an idle store drops its state (and
    // releases its locks) at once, not whenever the thread notices.
    _state: Arc<Mutex<I>>,
    shared: Arc<Shared<I>>,
    deadline: Duration,
    // Why the threads could not be started: every call fails with it.
    broken: Option<String>,
}

/// What the caller, the I/O thread and the watch thread share.
struct Shared<I> {
    queue: Mutex<Queue<I>>,
    // The I/O thread waits here for work.
    work: Condvar,
    // The watch thread waits here for the next deadline.
    watch: Condvar,
    // Set once a call missed its deadline: read without the lock by callers.
    wedged: AtomicBool,
    path: PathBuf,
}

struct Queue<I> {
    jobs: VecDeque<Job<I>>,
    // The calls the I/O thread took and has not answered, with their
    // deadlines, for the watch thread.
    running: VecDeque<(Instant, Arc<dyn Answer>)>,
    deadline: Duration,
    closed: bool,
    // The I/O thread waits for work: a new job must wake it.
    io_idle: bool,
    // The watch thread waits without a deadline: a new job must wake it.
    watch_idle: bool,
}

struct Job<I> {
    due: Instant,
    answer: Arc<dyn Answer>,
    work: Work<I>,
}

/// An operation on the state; what it returns answers its caller once the
/// I/O thread has let go of the state (a caller that drops the store as
/// soon as it is answered must find its locks released).
type Work<I> = Box<dyn FnOnce(&mut I) -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

/// The caller's side of one call, answered at most once: by the I/O thread
/// with the result, or by the watch thread with a timeout.
trait Answer: Send + Sync {
    /// Answer with `error` unless already answered; `true` if this did.
    fn fail(&self, error: Error) -> bool;
    fn answered(&self) -> bool;
}

struct Reply<T>(Mutex<Option<oneshot::Sender<Result<T>>>>);

impl<T: Send> Reply<T> {
    fn send(&self, result: Result<T>) -> bool {
        match lock(&self.0).take() {
            Some(tx) => {
                // The caller may have stopped waiting (a cancelled future).
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }
}

impl<T: Send> Answer for Reply<T> {
    fn fail(&self, error: Error) -> bool {
        self.send(Err(error))
    }
    fn answered(&self) -> bool {
        lock(&self.0).is_none()
    }
}

/// The state's and the queue's mutexes, recovered after a panic: the I/O
/// thread catches a panicking operation, and the slot file's checksums,
/// not the mutex, guard the data on disk.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(detail: String) -> Error {
    Error::Unavailable {
        backend: "file",
        detail,
        source: None,
    }
}

impl<I> Shared<I> {
    fn wedged_error(&self, deadline: Duration) -> Error {
        unavailable(format!(
            "{}: an earlier write or fdatasync did not finish within {deadline:?}; the store refuses every call until it is reopened",
            self.path.display()
        ))
    }

    fn is_wedged(&self) -> bool {
        self.wedged.load(Ordering::Acquire)
    }
}

impl<I: Send + 'static> Worker<I> {
    pub(crate) fn new(inner: I, path: PathBuf) -> Self {
        let state = Arc::new(Mutex::new(inner));
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: VecDeque::new(),
                deadline: DEFAULT_DEADLINE,
                closed: false,
                io_idle: false,
                watch_idle: false,
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
            wedged: AtomicBool::new(false),
            path,
        });
        let broken = start_threads(&shared, Arc::downgrade(&state)).err();
        if let Some(why) = &broken {
            lock(&shared.queue).closed = true;
            shared.work.notify_all();
            shared.watch.notify_all();
            tracing::error!(path = %shared.path.display(), %why, "cannot start the file store's threads");
        }
        Worker {
            _state: state,
            shared,
            deadline: DEFAULT_DEADLINE,
            broken,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
        lock(&self.shared.queue).deadline = deadline;
        // A watch thread sleeping towards a longer deadline looks again.
        self.shared.watch.notify_all();
    }

    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Run `f` on the state, on the I/O thread, for at most the deadline.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut I) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let reply = Arc::new(Reply(Mutex::new(Some(tx))));
        let answer = Arc::clone(&reply);
        self.submit(
            reply,
            Box::new(move |inner: &mut I| {
                let result = f(inner);
                Box::new(move || {
                    answer.send(result);
                })
            }),
        )?;
        self.wait(rx).await
    }

    fn submit(&self, answer: Arc<dyn Answer>, work: Work<I>) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(unavailable(format!(
                "{}: the store's I/O thread could not be started: {why}",
                self.shared.path.display()
            )));
        }
        let mut q = lock(&self.shared.queue);
        if self.shared.is_wedged() {
            return Err(self.shared.wedged_error(q.deadline));
        }
        let now = Instant::now();
        // A deadline too far to represent is no deadline: a year will do.
        let due = now
            .checked_add(q.deadline)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        q.jobs.push_back(Job { due, answer, work });
        // Wake only a thread that sleeps: a busy one finds the job itself.
        if q.io_idle {
            q.io_idle = false;
            self.shared.work.notify_one();
        }
        if q.watch_idle {
            q.watch_idle = false;
            self.shared.watch.notify_one();
        }
        Ok(())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        match rx.await {
            Ok(result) => result,
            // Dropped unanswered: the operation panicked, or the store is
            // being closed.
            Err(_) => Err(unavailable(format!(
                "{}: the file operation failed before it answered",
                self.shared.path.display()
            ))),
        }
    }
}

impl<I> Drop for Worker<I> {
    fn drop(&mut self) {
        // The threads end once they see this; a job still queued belongs to
        // a call nobody awaits any more, and is not run. An I/O thread stuck
        // in a hung sync ends when the sync returns, if ever.
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
    }
}

fn start_threads<I: Send + 'static>(
    shared: &Arc<Shared<I>>,
    state: Weak<Mutex<I>>,
) -> std::result::Result<(), String> {
    let io = Arc::clone(shared);
    std::thread::Builder::new()
        .name("slashguard-file-io".into())
        .spawn(move || io_thread(io, state))
        .map_err(|e| format!("I/O thread: {e}"))?;
    let watch = Arc::clone(shared);
    std::thread::Builder::new()
        .name("slashguard-file-watch".into())
        .spawn(move || watch_thread(watch))
        .map_err(|e| format!("watch thread: {e}"))?;
    Ok(())
}

/// Run the queued operations in order until the worker is dropped.
fn io_thread<I>(shared: Arc<Shared<I>>, state: Weak<Mutex<I>>) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if q.closed {
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    q.running.push_back((job.due, Arc::clone(&job.answer)));
                    break job;
                }
                q.io_idle = true;
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(state) = state.upgrade() else { return };
        let Job { answer, work, .. } = job;
        let outcome = {
            let mut inner = lock(&state);
            catch_unwind(AssertUnwindSafe(|| work(&mut inner)))
        };
        drop(state);
        match outcome {
            Ok(deliver) => deliver(),
            // The thread carries on: the next operation may well succeed,
            // and a torn record is caught by its checksum.
            Err(_) => {
                answer.fail(unavailable(format!(
                    "{}: the file operation panicked",
                    shared.path.display()
                )));
            }
        }
        let mut q = lock(&shared.queue);
        q.running.retain(|(_, a)| !Arc::ptr_eq(a, &answer));
    }
}

/// Answer, with a timeout, every call that is past its deadline, and take
/// the store out of service when one was not answered in time.
fn watch_thread<I>(shared: Arc<Shared<I>>) {
    let mut q = lock(&shared.queue);
    loop {
        if q.closed || shared.is_wedged() {
            return;
        }
        // Calls the I/O thread has answered are not watched any more.
        q.running.retain(|(_, a)| !a.answered());
        let next = q
            .running
            .iter()
            .map(|(due, _)| *due)
            .chain(q.jobs.iter().map(|j| j.due))
            .min();
        let Some(due) = next else {
            q.watch_idle = true;
            q = shared.watch.wait(q).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let now = Instant::now();
        if due > now {
            q = shared
                .watch
                .wait_timeout(q, due - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        // Answer the late calls; one answered here (not by the I/O thread
        // a moment before) wedges the store.
        let late = |d: &Instant| *d <= now;
        let error = || shared.wedged_error(q.deadline);
        let mut missed = false;
        for (_, answer) in q.running.iter().filter(|(d, _)| late(d)) {
            missed |= answer.fail(error());
        }
        for job in q.jobs.iter().filter(|j| late(&j.due)) {
            missed |= job.answer.fail(error());
        }
        if !missed {
            continue;
        }
        shared.wedged.store(true, Ordering::Release);
        tracing::error!(path = %shared.path.display(), deadline = ?q.deadline, "file write did not finish within its deadline: store out of service until reopened");
        // Everything still waiting is refused now rather than at its own
        // deadline: the store will not serve it.
        let running: Vec<_> = q.running.drain(..).collect();
        let jobs: Vec<_> = q.jobs.drain(..).collect();
        let deadline = q.deadline;
        drop(q);
        for (_, answer) in running {
            answer.fail(shared.wedged_error(deadline));
        }
        for job in jobs {
            job.answer.fail(shared.wedged_error(deadline));
        }
        return;
    }
}
