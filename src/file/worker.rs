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
//! Group commit: calls made with [`Worker::run_grouped`] that are queued
//! while the I/O thread is busy (typically in an `fdatasync`) are taken
//! together: each stages its change on top of the ones staged before it
//! (so it is decided against them: two conflicting requests cannot both
//! pass), then ONE [`GroupCommit::flush`] makes them all durable, and only
//! then is any of them answered. A failed flush fails every call of the
//! group, and none of its changes becomes visible. Calls made with
//! [`Worker::run`] run alone, after the group queued before them was
//! flushed. The queue is first in, first out, so the order of calls (per
//! key, or any other) is kept.
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

/// At most this many grouped calls share one flush, which bounds the time
/// a group holds the state and the size of its write.
const MAX_GROUP: usize = 1024;

/// State whose changes can be staged by several calls and made durable by
/// one flush (see the module docs).
pub(crate) trait GroupCommit: Send + 'static {
    /// Make every change staged since the last flush durable, then
    /// visible. On `Err`, the staged changes are dropped: none is visible.
    fn flush(&mut self) -> Result<()>;
    /// Drop every staged change (the store is out of service).
    fn discard(&mut self);
}

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

/// An operation on the state. What it returns answers its caller once the
/// I/O thread has let go of the state (a caller that drops the store as
/// soon as it is answered must find its locks released).
enum Work<I> {
    /// Runs on its own, with nothing staged.
    Alone(Box<dyn FnOnce(&mut I) -> Deliver + Send>),
    /// Stages a change; answered with the outcome of its group's flush.
    Grouped {
        stage: Box<dyn FnOnce(&mut I) -> Staged + Send>,
        commit: Commit<I>,
    },
}
/// [`GroupCommit`]'s methods, for the I/O thread, which does not require
/// the trait of every state.
struct Commit<I> {
    flush: fn(&mut I) -> Result<()>,
    discard: fn(&mut I),
}
type Deliver = Box<dyn FnOnce() + Send>;
/// Answers a grouped call: with its own result if the flush succeeded
/// (`None`), with the flush's error otherwise.
type Staged = Box<dyn FnOnce(Option<&Error>) + Send>;

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
            Work::Alone(Box::new(move |inner: &mut I| {
                let result = f(inner);
                Box::new(move || {
                    answer.send(result);
                })
            })),
        )?;
        self.wait(rx).await
    }

    /// Run `f` on the state as part of a group (see the module docs): `f`
    /// decides against the state with the changes staged before it, stages
    /// its own change (or returns `Err` having staged nothing), and its
    /// result is returned only once the group's flush made every staged
    /// change durable. If the flush fails, the call fails with its error.
    pub(crate) async fn run_grouped<T, F>(&self, f: F) -> Result<T>
    where
        I: GroupCommit,
        T: Send + 'static,
        F: FnOnce(&mut I) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let reply = Arc::new(Reply(Mutex::new(Some(tx))));
        let answer = Arc::clone(&reply);
        self.submit(
            reply,
            Work::Grouped {
                stage: Box::new(move |inner: &mut I| {
                    let result = f(inner);
                    Box::new(move |failed: Option<&Error>| {
                        answer.send(match failed {
                            None => result,
                            Some(e) => Err(shared_failure(e)),
                        });
                    })
                }),
                commit: Commit {
                    flush: I::flush,
                    discard: I::discard,
                },
            },
        )?;
        self.wait(rx).await
    }

    /// `Err` when the store no longer serves calls (a missed deadline), for
    /// reads that do not go through the I/O thread.
    pub(crate) fn check_in_service(&self) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(self.broken_error(why));
        }
        if self.shared.is_wedged() {
            return Err(self.shared.wedged_error(lock(&self.shared.queue).deadline));
        }
        Ok(())
    }

    fn broken_error(&self, why: &str) -> Error {
        unavailable(format!(
            "{}: the store's I/O thread could not be started: {why}",
            self.shared.path.display()
        ))
    }

    fn submit(&self, answer: Arc<dyn Answer>, work: Work<I>) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(self.broken_error(why));
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
        let wake_io = std::mem::take(&mut q.io_idle);
        let wake_watch = std::mem::take(&mut q.watch_idle);
        // Notified after the queue is unlocked: a thread woken while the
        // caller still holds the lock would only block on it again.
        drop(q);
        if wake_io {
            self.shared.work.notify_one();
        }
        if wake_watch {
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

/// Run the queued operations in order until the worker is dropped: one
/// `run` call at a time, or all the grouped calls queued in a row.
fn io_thread<I>(shared: Arc<Shared<I>>, state: Weak<Mutex<I>>) {
    loop {
        let batch = {
            let mut q = lock(&shared.queue);
            loop {
                if q.closed {
                    return;
                }
                if !q.jobs.is_empty() {
                    break take_batch(&mut q);
                }
                q.io_idle = true;
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(state) = state.upgrade() else { return };
        let deliveries = {
            let mut inner = lock(&state);
            run_batch(&shared, &mut inner, batch)
        };
        drop(state);
        for deliver in deliveries {
            deliver();
        }
        // Every call of the batch is answered: nothing is running.
        lock(&shared.queue).running.clear();
    }
}

/// The next batch: a `run` call alone, or the grouped calls at the head of
/// the queue (at most [`MAX_GROUP`]). Watched from now on as running.
fn take_batch<I>(q: &mut Queue<I>) -> Vec<Job<I>> {
    let grouped = |j: &Job<I>| matches!(j.work, Work::Grouped { .. });
    let n = match q.jobs.front() {
        Some(j) if grouped(j) => q
            .jobs
            .iter()
            .take(MAX_GROUP)
            .take_while(|j| grouped(j))
            .count(),
        _ => 1,
    };
    let batch: Vec<Job<I>> = q.jobs.drain(..n).collect();
    q.running
        .extend(batch.iter().map(|j| (j.due, Arc::clone(&j.answer))));
    batch
}

/// Run one batch on the state; returns how to answer each call, to be done
/// once the state is let go of.
fn run_batch<I>(shared: &Shared<I>, inner: &mut I, batch: Vec<Job<I>>) -> Vec<Deliver> {
    let panicked = |answer: Arc<dyn Answer>| -> Deliver {
        let error = unavailable(format!(
            "{}: the file operation panicked",
            shared.path.display()
        ));
        Box::new(move || {
            answer.fail(error);
        })
    };
    let mut deliveries: Vec<Deliver> = Vec::with_capacity(batch.len());
    let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
    let mut group: Option<Commit<I>> = None;
    for Job { answer, work, .. } in batch {
        // A panicking operation answers "failed" and the thread carries
        // on: the next operation may well succeed, and a torn record is
        // caught by its checksum.
        match work {
            Work::Alone(f) => match catch_unwind(AssertUnwindSafe(|| f(inner))) {
                Ok(deliver) => deliveries.push(deliver),
                Err(_) => deliveries.push(panicked(answer)),
            },
            Work::Grouped { stage, commit } => {
                group = Some(commit);
                match catch_unwind(AssertUnwindSafe(|| stage(inner))) {
                    Ok(answer_with) => staged.push(answer_with),
                    Err(_) => deliveries.push(panicked(answer)),
                }
            }
        }
    }
    let Some(Commit { flush, discard }) = group else {
        return deliveries;
    };
    // Out of service (a call of this group missed its deadline while it
    // waited): nothing more is written, and every call was answered.
    let outcome = if shared.is_wedged() {
        discard(inner);
        Err(unavailable(format!(
            "{}: store out of service after a missed deadline",
            shared.path.display()
        )))
    } else {
        match catch_unwind(AssertUnwindSafe(|| flush(inner))) {
            Ok(outcome) => outcome,
            Err(_) => {
                discard(inner);
                Err(unavailable(format!(
                    "{}: the group's write panicked",
                    shared.path.display()
                )))
            }
        }
    };
    let outcome = Arc::new(outcome);
    deliveries.extend(staged.into_iter().map(|answer_with| -> Deliver {
        let outcome = Arc::clone(&outcome);
        Box::new(move || answer_with(outcome.as_ref().as_ref().err()))
    }));
    deliveries
}

/// The error of a failed group write, for each of its calls (`Error` is not
/// `Clone`: its sources are boxed). The kind is kept, so that a refusal
/// (`Fenced`, `Damaged`) stays one; a source is folded into the text.
fn shared_failure(e: &Error) -> Error {
    match e {
        Error::Refused(r) => Error::Refused(r.clone()),
        Error::Fenced { identity, reason } => Error::Fenced {
            identity: identity.clone(),
            reason: reason.clone(),
        },
        Error::Locked { path } => Error::Locked { path: path.clone() },
        Error::Damaged {
            path,
            detail,
            recover,
        } => Error::Damaged {
            path: path.clone(),
            detail: detail.clone(),
            recover: recover.clone(),
        },
        Error::AlreadyOpen { path } => Error::AlreadyOpen { path: path.clone() },
        Error::Aliased { path, detail } => Error::Aliased {
            path: path.clone(),
            detail: detail.clone(),
        },
        Error::Corrupt { what, problem } => Error::Corrupt {
            what: what.clone(),
            problem: problem.clone(),
        },
        Error::Invalid(s) => Error::Invalid(s.clone()),
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Unavailable {
            backend,
            detail,
            source,
        } => Error::Unavailable {
            backend,
            detail: match source {
                Some(s) => format!("{detail}: {s}"),
                None => detail.clone(),
            },
            source: None,
        },
        other => unavailable(other.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        // No driver at all: the worker must not need one.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// A caller that drops the store as soon as it is answered finds its
    /// state (its file locks, in a store) already released.
    #[test]
    fn an_answered_store_releases_its_state_when_dropped() {
        let rt = rt();
        for _ in 0..500 {
            let held = Arc::new(());
            let worker = Worker::new(Arc::clone(&held), "state".into());
            rt.block_on(worker.run(|_| Ok(()))).unwrap();
            drop(worker);
            assert_eq!(Arc::strong_count(&held), 1, "state outlived its store");
        }
    }

    /// A panicking operation fails its own call only.
    #[test]
    fn a_panicking_operation_fails_only_its_call() {
        let rt = rt();
        let worker = Worker::new(7u64, "panics".into());
        let got = rt.block_on(worker.run(|_: &mut u64| -> Result<()> { panic!("boom") }));
        assert!(matches!(got, Err(Error::Unavailable { .. })), "{got:?}");
        assert_eq!(rt.block_on(worker.run(|v| Ok(*v))).unwrap(), 7);
    }

    #[derive(Default)]
    struct Counter {
        durable: u64,
        staged: u64,
        flushes: u64,
        fail_flush: bool,
    }

    impl GroupCommit for Counter {
        fn flush(&mut self) -> Result<()> {
            self.flushes += 1;
            let staged = std::mem::take(&mut self.staged);
            if std::mem::take(&mut self.fail_flush) {
                return Err(Error::Fenced {
                    identity: "counter".into(),
                    reason: "lost".into(),
                });
            }
            self.durable += staged;
            Ok(())
        }
        fn discard(&mut self) {
            self.staged = 0;
        }
    }

    /// Grouped calls queued behind a busy thread share one flush; a failed
    /// flush fails each of them with its kind of error, and changes nothing.
    #[test]
    fn grouped_calls_share_one_flush_and_fail_together() {
        let rt = rt();
        let worker = Worker::new(Counter::default(), "counter".into());
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let add = |n: u64| {
            worker.run_grouped(move |c: &mut Counter| {
                c.staged += n;
                Ok(c.durable + c.staged)
            })
        };
        let open_gate = || {
            let (open, cv) = &*gate;
            *lock(open) = true;
            cv.notify_all();
        };
        // The first call holds the thread until the others are queued.
        let g = Arc::clone(&gate);
        let hold = worker.run(move |_| {
            let (open, cv) = &*g;
            let mut o = lock(open);
            while !*o {
                o = cv.wait(o).unwrap();
            }
            Ok(())
        });
        let (held, a, b, c, ()) = rt
            .block_on(async { tokio::join!(hold, add(1), add(2), add(3), async { open_gate() }) });
        held.unwrap();
        // Each decided against the ones before it.
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 3, 6));
        let (durable, flushes) = rt
            .block_on(worker.run(|c| Ok((c.durable, c.flushes))))
            .unwrap();
        assert_eq!((durable, flushes), (6, 1), "one flush for the group");

        // A failed flush: every call fails, as a refusal (Fenced).
        *lock(&gate.0) = false;
        rt.block_on(worker.run(|c| {
            c.fail_flush = true;
            Ok(())
        }))
        .unwrap();
        let g = Arc::clone(&gate);
        let hold = worker.run(move |_| {
            let (open, cv) = &*g;
            let mut o = lock(open);
            while !*o {
                o = cv.wait(o).unwrap();
            }
            Ok(())
        });
        let (held, a, b, ()) =
            rt.block_on(async { tokio::join!(hold, add(10), add(20), async { open_gate() }) });
        held.unwrap();
        for got in [a, b] {
            assert!(
                matches!(got, Err(Error::Fenced { .. })),
                "the group's error, for each call: {got:?}"
            );
        }
        let durable = rt.block_on(worker.run(|c| Ok(c.durable))).unwrap();
        assert_eq!(durable, 6, "nothing of the failed group is visible");
    }
}
