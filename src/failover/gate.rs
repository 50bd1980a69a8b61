//! Gates: a failover waits until the application says it is safe, with a
//! timeout. The same piece serves the readiness gate of a restarting
//! primary ("reclaim only once caught up") and Solana's
//! `wait-for-restart-window` ("take over only when no leader slot is
//! near").

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Result;
use crate::failover::{FailoverPolicy, FailoverRefusal, Ownership};

/// A condition the application reports on a `watch` channel: `true` means
/// open. [`wait`](Gate::wait) returns once it is open, or fails with
/// [`FailoverRefusal::GateClosed`] when it stays closed for the gate's
/// timeout or its sender is dropped while closed.
///
/// The gate is checked once, just before the failover step it guards; it
/// does not watch the condition afterwards.
#[derive(Debug, Clone)]
pub struct Gate {
    name: String,
    signal: watch::Receiver<bool>,
    timeout: Duration,
}

impl Gate {
    /// A gate named `name` (shown in logs and errors) over `signal`.
    pub fn new(name: impl Into<String>, signal: watch::Receiver<bool>, timeout: Duration) -> Self {
        Gate {
            name: name.into(),
            signal,
            timeout,
        }
    }

    /// The readiness gate of a restarting instance: `true` once the
    /// application has caught up with the cluster.
    pub fn readiness(signal: watch::Receiver<bool>, timeout: Duration) -> Self {
        Gate::new("readiness", signal, timeout)
    }

    /// Solana's restart window: `true` while taking the identity over is
    /// safe (for example: no leader slot of this identity in the next few
    /// slots, and caught up).
    pub fn restart_window(signal: watch::Receiver<bool>, timeout: Duration) -> Self {
        Gate::new("restart window", signal, timeout)
    }

    /// The gate's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long [`wait`](Gate::wait) waits for the gate to open.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `true` if the gate is open right now.
    pub fn is_open(&self) -> bool {
        *self.signal.borrow()
    }

    /// Wait until the gate is open, at most its timeout.
    pub async fn wait(&self) -> Result<()> {
        self.wait_until(Instant::now() + self.timeout).await
    }

    /// Wait until the gate is open, at most until `deadline`.
    pub(crate) async fn wait_until(&self, deadline: Instant) -> Result<()> {
        let started = Instant::now();
        if self.is_open() {
            tracing::debug!(gate = %self.name, "gate open");
            return Ok(());
        }
        tracing::info!(gate = %self.name, timeout = ?deadline.saturating_duration_since(started), "waiting for the application to open the gate before taking the identity");
        let mut signal = self.signal.clone();
        let outcome = tokio::time::timeout_at(deadline, async {
            signal.wait_for(|open| *open).await.map(|_| ())
        })
        .await;
        let detail = match outcome {
            Ok(Ok(())) => {
                tracing::info!(gate = %self.name, waited = ?started.elapsed(), "gate opened");
                return Ok(());
            }
            Ok(Err(_)) => format!(
                "the application dropped its signal while the gate was closed (after {:?})",
                started.elapsed()
            ),
            Err(_) => format!("still closed after {:?}", started.elapsed()),
        };
        tracing::warn!(gate = %self.name, %detail, "gate did not open: the identity is not taken");
        Err(FailoverRefusal::GateClosed {
            gate: self.name.clone(),
            detail,
        }
        .into())
    }
}

/// A [`FailoverPolicy`] that opens its gates, in order, before delegating
/// [`acquire`](FailoverPolicy::acquire) to the inner policy. Release is
/// passed through.
///
/// If a gate stays closed, `acquire` fails with
/// [`FailoverRefusal::GateClosed`] and the inner policy is never asked: a
/// half-started primary does not knock out a healthy secondary, and a
/// takeover does not happen just before a leader slot.
///
/// ```
/// use std::time::Duration;
/// use slashguard::failover::{FailoverRefusal, Gate, Gated, LocalLockPolicy};
/// use slashguard::{Error, FailoverPolicy, NodeKeypair, Refusal};
/// use tokio::sync::watch;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let node = NodeKeypair::generate().node_id();
/// let (window_tx, window_rx) = watch::channel(false); // a leader slot is near
/// let policy = Gated::new(LocalLockPolicy::for_tower(dir.path(), node, "secondary"))
///     .gate(Gate::restart_window(window_rx, Duration::from_millis(50)));
///
/// // The window stays closed: nothing is taken.
/// let err = policy.acquire().await.unwrap_err();
/// assert!(matches!(err, Error::Refused(Refusal::Failover(FailoverRefusal::GateClosed { .. }))));
///
/// // The application reports the window open: the takeover proceeds.
/// window_tx.send(true).unwrap();
/// let owned = policy.acquire().await?;
/// policy.release(owned).await?;
/// # Ok::<(), slashguard::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Gated<P> {
    inner: P,
    gates: Vec<Gate>,
}

impl<P: FailoverPolicy> Gated<P> {
    /// `inner` with no gate yet.
    pub fn new(inner: P) -> Self {
        Gated {
            inner,
            gates: Vec::new(),
        }
    }

    /// Add a gate; gates open in the order they were added, each within
    /// its own timeout.
    pub fn gate(mut self, gate: Gate) -> Self {
        self.gates.push(gate);
        self
    }

    /// The gates, in order.
    pub fn gates(&self) -> &[Gate] {
        &self.gates
    }

    /// The policy behind the gates.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

#[async_trait]
impl<P: FailoverPolicy> FailoverPolicy for Gated<P> {
    async fn acquire(&self) -> Result<Ownership> {
        for gate in &self.gates {
            gate.wait().await?;
        }
        self.inner.acquire().await
    }

    async fn release(&self, ownership: Ownership) -> Result<()> {
        self.inner.release(ownership).await
    }
}
