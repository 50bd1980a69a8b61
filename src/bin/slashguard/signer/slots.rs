//! Connection slots of one listener: a bound on its open connections that
//! idle clients cannot use to lock the baker out.
//!
//! A slot is taken before a connection is accepted and given back when
//! the connection ends. When every slot is taken, the listener reclaims
//! one that is doing nothing for anybody: first the connection idle
//! longest between two requests, then the connection that has sent
//! nothing, or only part of a request, the longest (once it has been so
//! for [`SILENT_GRACE`]). A connection whose request was received whole is
//! never reclaimed while it is handled. A client that opens many
//! connections and sends nothing, or stalls inside a request (one byte of
//! a head or frame, a head without its body), therefore delays a real
//! request by about the grace, not by a deadline; without reclaiming, the
//! kernel's accept queue would serve every such connection queued before
//! the baker's first. A baker's request arrives whole right after it
//! connects (or after its TLS handshake), well within the grace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection that has sent nothing, or only part of a request,
/// is left alone under pressure. A real client sends its whole request
/// right after connecting (the bytes follow the handshake without a round
/// trip); this only has to cover scheduling delays of a busy host.
pub const SILENT_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected, nothing received yet.
    Silent,
    /// Part of a request received (or a TLS handshake under way): only
    /// its sender is waited for, so it is reclaimed like a silent one.
    Receiving,
    /// A request received whole, being handled or answered: never
    /// reclaimed.
    Busy,
    /// Between two requests.
    Idle,
    /// Told to close; its slot is given back when it has.
    Reclaimed,
}

struct Entry {
    state: State,
    since: Instant,
    close: Arc<Close>,
}

/// The order to close one connection: seen by every task of the
/// connection that waits for it, before or after it was given.
#[derive(Default)]
struct Close {
    given: AtomicBool,
    notify: Notify,
}

impl Close {
    fn give(&self) {
        self.given.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.given.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: BTreeMap<u64, Entry>,
}

/// The slots of one listener.
pub struct Slots {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Woken when a slot is given back or a connection turns idle.
    changed: Notify,
}

/// What [`Slots::acquire`] had to do to find room (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// A slot was free.
    None,
    /// Connections were reclaimed: this many idle, this many silent.
    Reclaimed { idle: usize, silent: usize },
}

impl Slots {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Slots {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain table, consistent after every statement: a
        // panic elsewhere does not leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections holding a slot.
    pub fn in_use(&self) -> usize {
        self.lock().open.len()
    }

    /// Wait for a free slot, reclaiming idle or long-silent connections
    /// when every slot is taken. The slot starts silent.
    pub async fn acquire(self: &Arc<Self>) -> (Slot, Pressure) {
        let (mut idle, mut silent) = (0, 0);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a slot given back between the
            // check and the wait still wakes this loop.
            changed.as_mut().enable();
            let wake_at = {
                let mut g = self.lock();
                let now = Instant::now();
                if g.open.len() < self.capacity {
                    let id = g.next;
                    g.next += 1;
                    let close = Arc::new(Close::default());
                    g.open.insert(
                        id,
                        Entry {
                            state: State::Silent,
                            since: now,
                            close: close.clone(),
                        },
                    );
                    let pressure = if idle + silent == 0 {
                        Pressure::None
                    } else {
                        Pressure::Reclaimed { idle, silent }
                    };
                    return (
                        Slot {
                            slots: self.clone(),
                            id,
                            close,
                        },
                        pressure,
                    );
                }
                let reclaiming = g
                    .open
                    .values()
                    .filter(|e| e.state == State::Reclaimed)
                    .count();
                // One reclaimed connection per missing slot is enough.
                if reclaiming == 0 {
                    match victim(&g.open, now) {
                        Some(id) => {
                            let e = g.open.get_mut(&id).expect("victim is open");
                            if e.state == State::Idle {
                                idle += 1;
                            } else {
                                silent += 1;
                            }
                            e.state = State::Reclaimed;
                            e.close.give();
                            None
                        }
                        None => g
                            .open
                            .values()
                            .filter(|e| e.state.waits_for_sender())
                            .map(|e| e.since + SILENT_GRACE)
                            .min(),
                    }
                } else {
                    None
                }
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Resolves when every slot has been given back.
    pub async fn drained(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_use() == 0 {
                return;
            }
            changed.await;
        }
    }

    fn set(&self, id: u64, state: State) {
        let mut g = self.lock();
        if let Some(e) = g.open.get_mut(&id) {
            // A reclaimed connection stays reclaimed: it is closing.
            if e.state != State::Reclaimed {
                e.state = state;
                e.since = Instant::now();
            }
        }
        drop(g);
        if state == State::Idle {
            self.changed.notify_waiters();
        }
    }
}

impl State {
    /// Silent or receiving: waiting for its sender, not for us.
    fn waits_for_sender(self) -> bool {
        matches!(self, State::Silent | State::Receiving)
    }
}

/// The connection to reclaim now: the one idle longest, else the one
/// silent or receiving longest past the grace.
fn victim(open: &BTreeMap<u64, Entry>, now: Instant) -> Option<u64> {
    let oldest = |f: fn(State) -> bool| {
        open.iter()
            .filter(|(_, e)| f(e.state))
            .min_by_key(|(_, e)| e.since)
            .map(|(id, e)| (*id, e.since))
    };
    if let Some((id, _)) = oldest(|s| s == State::Idle) {
        return Some(id);
    }
    oldest(State::waits_for_sender)
        .filter(|(_, since)| now.saturating_duration_since(*since) >= SILENT_GRACE)
        .map(|(id, _)| id)
}

/// One connection's slot; given back on drop.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    close: Arc<Close>,
}

impl Slot {
    /// A request started and is not yet received whole (or a TLS
    /// handshake began): reclaimable after the grace, counted from now.
    pub fn receiving(&self) {
        self.slots.set(self.id, State::Receiving);
    }

    /// A request was received whole: the connection is not reclaimed
    /// until it is answered.
    pub fn busy(&self) {
        self.slots.set(self.id, State::Busy);
    }

    /// The request was answered; the connection waits for the next one.
    pub fn idle(&self) {
        self.slots.set(self.id, State::Idle);
    }

    /// Resolves when the listener reclaims this slot (at once if it
    /// already did): close the connection. Every task of the connection
    /// waiting for it is told.
    pub async fn reclaimed(&self) {
        self.close.wait().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
        self.slots.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once() {
        let s = Slots::new(2);
        let (_a, p) = s.acquire().await;
        assert_eq!(p, Pressure::None);
        let (_b, _) = s.acquire().await;
        assert_eq!(s.in_use(), 2);
    }

    #[tokio::test]
    async fn the_idle_connection_is_reclaimed_before_a_silent_one() {
        let s = Slots::new(2);
        let (silent, _) = s.acquire().await;
        let (idle, _) = s.acquire().await;
        idle.busy();
        idle.idle();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.acquire().await })
        };
        // The idle one is told to close, not the silent one.
        tokio::time::timeout(Duration::from_secs(30), idle.reclaimed())
            .await
            .expect("idle reclaimed");
        drop(idle);
        let (_new, p) = waiter.await.unwrap();
        assert_eq!(p, Pressure::Reclaimed { idle: 1, silent: 0 });
        assert!(
            tokio::time::timeout(Duration::from_millis(1), silent.reclaimed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_reclaimed_after_the_grace_and_a_busy_one_never() {
        let s = Slots::new(2);
        let (busy, _) = s.acquire().await;
        busy.busy();
        let (silent, _) = s.acquire().await;
        let start = Instant::now();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.acquire().await })
        };
        silent.reclaimed().await;
        assert!(start.elapsed() >= SILENT_GRACE, "not before the grace");
        drop(silent);
        let (_new, p) = waiter.await.unwrap();
        assert_eq!(p, Pressure::Reclaimed { idle: 0, silent: 1 });
        // Only busy and the new silent one: the busy one is never chosen,
        // the new one only after its grace.
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.acquire().await })
        };
        assert!(
            tokio::time::timeout(SILENT_GRACE * 4, busy.reclaimed())
                .await
                .is_err(),
            "a busy connection is never reclaimed"
        );
        waiter.abort();
    }

    /// A connection inside a request it has not received whole is
    /// reclaimed like a silent one (after the grace, counted from when the
    /// request began), and every task waiting on the slot is told.
    #[tokio::test]
    async fn a_connection_stalling_inside_a_request_is_reclaimed_after_the_grace() {
        let s = Slots::new(1);
        let (stalled, _) = s.acquire().await;
        stalled.receiving();
        let start = Instant::now();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.acquire().await })
        };
        let stalled = Arc::new(stalled);
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let st = stalled.clone();
                tokio::spawn(async move { st.reclaimed().await })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("every waiter told")
                .unwrap();
        }
        assert!(start.elapsed() >= SILENT_GRACE, "not before the grace");
        // Told before it waited: at once.
        tokio::time::timeout(Duration::from_secs(30), stalled.reclaimed())
            .await
            .expect("a late waiter is told too");
        drop(stalled);
        let (_new, p) = waiter.await.unwrap();
        assert_eq!(p, Pressure::Reclaimed { idle: 0, silent: 1 });
    }

    #[tokio::test]
    async fn drained_waits_for_every_slot() {
        let s = Slots::new(3);
        let (a, _) = s.acquire().await;
        let d = {
            let s = s.clone();
            tokio::spawn(async move { s.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!d.is_finished());
        drop(a);
        d.await.unwrap();
    }
}
