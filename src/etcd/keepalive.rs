//! The task that keeps an ownership's lease alive and watches for its loss.
//!
//! etcd-client sends one keep-alive per call and its streams do not survive
//! an etcd restart, so this loop sends one every interval on a stream it
//! re-creates after any error. It declares the ownership lost when:
//!
//! - the owner key changed or vanished (another instance took over, or the
//!   lease expired): seen at once through a watch, and checked again with
//!   a read at every tick, because watches do not survive restarts either;
//! - etcd says the lease is gone;
//! - no keep-alive was answered for the TTL minus the safety margin,
//!   counted from when the last answered one was *sent*: the server cannot
//!   have expired the lease before that, so the holder stops first.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    EventType, KeyValue, LeaseKeepAliveStream, LeaseKeeper, WatchOptions, WatchResponse,
    WatchStream,
};
use tokio::time::{sleep_until, timeout, Instant};

use crate::etcd::claim::OwnerClaim;
use crate::etcd::client::{describe, EtcdClient};
use crate::etcd::holding::Holding;

/// Pause before another attempt after a failed renewal.
const RETRY: Duration = Duration::from_millis(200);

/// Start the loop for `holding`; it ends when ownership is lost or the
/// [`Ownership`](crate::Ownership) handle is dropped.
pub(crate) fn spawn(
    client: EtcdClient,
    owner_key: String,
    holding: Arc<Holding>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut keeper = Keeper {
            client,
            owner_key,
            holding,
            interval,
            lease: None,
            watch: None,
            verified: 0,
        };
        keeper.verified = keeper.holding.fence;
        keeper.run().await;
    });
}

struct Keeper {
    client: EtcdClient,
    owner_key: String,
    holding: Arc<Holding>,
    interval: Duration,
    lease: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    watch: Option<WatchStream>,
    // The newest revision at which the owner key was seen to be ours.
    verified: i64,
}

impl Keeper {
    async fn run(&mut self) {
        let mut next_tick = Instant::now();
        while !self.holding.is_lost() {
            tokio::select! {
                _ = self.holding.handle_dropped() => {
                    self.holding.lose("the ownership handle was dropped; lease no longer kept alive");
                    break;
                }
                _ = sleep_until(self.holding.valid_until()) => {
                    // Records the loss when the lease is no longer certainly alive.
                    let _ = self.holding.check();
                }
                _ = sleep_until(next_tick) => {
                    // The loss must be declared on time even while this
                    // round waits on an unresponsive etcd.
                    let declare_by = self.holding.valid_until();
                    let round = tokio::select! {
                        renewed = self.round() => Some(renewed),
                        _ = sleep_until(declare_by) => None,
                    };
                    // After a failure, try again soon rather than a whole
                    // interval later.
                    next_tick = Instant::now()
                        + if round == Some(true) { self.interval } else { self.interval.min(RETRY) };
                    let _ = self.holding.check();
                }
                msg = next_watch(&mut self.watch) => self.on_watch(msg),
            }
        }
        tracing::debug!(
            fence = self.holding.fence,
            "ownership keep-alive loop ended"
        );
    }

    /// Time for the owner-key read and the watch: the request deadline, but
    /// never so long that the next renewal would be late.
    fn side_budget(&self) -> Duration {
        self.client.deadline().min(self.interval / 4)
    }

    /// One round: renew the lease, check the owner key, re-open the watch
    /// if it broke. `true` when the lease was renewed.
    async fn round(&mut self) -> bool {
        let renewed = self.renew().await;
        self.verify().await;
        if self.watch.is_none() && !self.holding.is_lost() {
            self.open_watch().await;
        }
        renewed
    }

    /// Send one keep-alive on the open stream, or open a new stream (which
    /// sends one). `true` when the lease was renewed.
    async fn renew(&mut self) -> bool {
        let id = self.holding.lease;
        // Renewal is not on the vote's path: half an interval to answer
        // (the ownership options guarantee that this ends in time), never
        // past the point where the loss must be declared anyway.
        let budget = self
            .holding
            .valid_until()
            .saturating_duration_since(Instant::now())
            .min(self.interval / 2);
        if let Some((k, s)) = &mut self.lease {
            let sent = (Instant::now(), SystemTime::now());
            let answer = timeout(budget, async {
                k.keep_alive().await?;
                s.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    self.holding
                        .renewed(sent, Duration::from_secs(r.ttl() as u64));
                    return true;
                }
                Ok(Ok(Some(_))) => {
                    self.holding
                        .lose(format!("lease {id:x} expired on the etcd server"));
                    return false;
                }
                Ok(Ok(None)) => tracing::debug!("lease keep-alive stream ended; re-opening it"),
                Ok(Err(e)) => {
                    tracing::debug!(error = %describe(&e), "lease keep-alive failed; re-opening the stream")
                }
                // A late answer would be read as the next one's: start over.
                Err(_) => tracing::debug!("lease keep-alive timed out; re-opening the stream"),
            }
            self.lease = None;
        }
        let left = self
            .holding
            .valid_until()
            .saturating_duration_since(Instant::now());
        let sent = (Instant::now(), SystemTime::now());
        // Opening the stream sends the first keep-alive and fails if the
        // lease is gone; transient failures (a connection re-established
        // after an outage answers the first call with the old error) are
        // retried within the budget.
        let opened = self
            .client
            .call("keep the lease alive", budget.min(left), || {
                let mut raw = self.client.raw();
                async move { raw.lease_keep_alive(id).await }
            })
            .await;
        match opened {
            Ok(stream) => {
                self.lease = Some(stream);
                self.holding.renewed(sent, self.holding.ttl);
                true
            }
            Err(e) => {
                if e.to_string().contains("lease not found") {
                    self.holding
                        .lose(format!("lease {id:x} no longer exists on the etcd server"));
                } else {
                    tracing::debug!(error = %e, "cannot open a lease keep-alive stream");
                }
                false
            }
        }
    }

    /// Read the owner key: it must still be the one this instance put.
    async fn verify(&mut self) {
        let got = self
            .client
            .call("read the owner key", self.side_budget(), || {
                let mut raw = self.client.raw();
                let key = self.owner_key.clone();
                async move { raw.get(key, None).await }
            })
            .await;
        let Ok(resp) = got else {
            return;
        };
        match resp.kvs().first() {
            None => self.holding.lose(
                "the owner key is gone: the lease expired or the identity was released elsewhere",
            ),
            // The revision alone is not an identity: after a snapshot
            // restore another claim can sit at our fence revision.
            Some(kv) if !self.holding.is_ours(kv) => {
                let who = describe_owner(kv, &self.holding);
                self.holding.lose(who);
            }
            Some(_) => {
                if let Some(h) = resp.header() {
                    self.verified = self.verified.max(h.revision());
                }
            }
        }
    }

    async fn open_watch(&mut self) {
        let from = self.verified + 1;
        let opened = self
            .client
            .call("watch the owner key", self.side_budget(), || {
                let mut raw = self.client.raw();
                let key = self.owner_key.clone();
                let options = WatchOptions::new().with_start_revision(from);
                async move { raw.watch(key, Some(options)).await }
            })
            .await;
        match opened {
            Ok(w) => self.watch = Some(w),
            Err(e) => tracing::debug!(error = %e, "cannot watch the owner key"),
        }
    }

    fn on_watch(&mut self, msg: Option<Result<WatchResponse, etcd_client::Error>>) {
        let resp = match msg {
            Some(Ok(r)) => r,
            Some(Err(_)) | None => {
                // Re-opened at the next tick, from the last verified revision.
                self.watch = None;
                return;
            }
        };
        if resp.canceled() {
            self.watch = None;
            return;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Delete => {
                    self.holding.lose(
                        "the owner key was deleted: the lease expired or the identity was released elsewhere",
                    );
                    return;
                }
                EventType::Put if !self.holding.is_ours(kv) => {
                    let who = describe_owner(kv, &self.holding);
                    self.holding.lose(who);
                    return;
                }
                EventType::Put => {}
            }
        }
    }
}

async fn next_watch(
    w: &mut Option<WatchStream>,
) -> Option<Result<WatchResponse, etcd_client::Error>> {
    match w {
        Some(w) => w.message().await.transpose(),
        None => std::future::pending().await,
    }
}

/// "instance X took over at fence N", or what is wrong with the value.
pub(crate) fn describe_owner(kv: &KeyValue, holding: &Holding) -> String {
    match OwnerClaim::decode(kv.value(), &holding.node) {
        Ok(c) => format!(
            "instance {} took over at fence {}",
            c.instance,
            kv.mod_revision()
        ),
        Err(e) => format!(
            "the owner key was overwritten at revision {} with a value that is not an owner claim ({e})",
            kv.mod_revision()
        ),
    }
}
