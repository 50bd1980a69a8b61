//! Ownership of one node identity in etcd: take it over, wait for it to be
//! free, give it back, see who has it.
//!
//! The owner key `<prefix>/tower/<node>/owner` holds an owner claim and is
//! attached to the owner's lease. Its `mod_revision` is the fencing token:
//! every tower store compares it in the same transaction as its write, so
//! from the instant a newer owner's put commits, an older owner can no
//! longer store. The lease only makes a dead owner's claim vanish by itself
//! so a standby can take over without a human; safety never depends on it.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::etcd::claim::{OwnerClaim, MAX_INSTANCE_LEN};
use crate::etcd::client::EtcdClient;
use crate::etcd::holding::Holding;
use crate::etcd::keepalive;
use crate::failover::{FailoverRefusal, Ownership, PrimaryDown};
use crate::identity::NodeId;

/// Default lease TTL of an ownership: how long a dead owner keeps the
/// identity before a standby waiting with
/// [`acquire_when_free`](EtcdIdentity::acquire_when_free) gets it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// How an instance holds ownership.
#[derive(Debug, Clone)]
pub struct OwnershipOptions {
    instance: String,
    lease_ttl: Duration,
    keep_alive_interval: Option<Duration>,
    safety_margin: Option<Duration>,
    poll_interval: Duration,
}

impl OwnershipOptions {
    /// Options for the instance named `instance` (shown to other instances
    /// and operators, for example the host name; at most 255 bytes).
    pub fn new(instance: impl Into<String>) -> Self {
        OwnershipOptions {
            instance: instance.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            keep_alive_interval: None,
            safety_margin: None,
            poll_interval: Duration::from_millis(100),
        }
    }

    /// Lease TTL, rounded up to whole seconds (etcd's unit); etcd may grant
    /// more (its minimum is 1.5 election timeouts). Default 5 s.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How often the lease is renewed (default: a third of the TTL).
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// How long before the lease could expire on the server the holder
    /// declares itself lost (default: a quarter of the TTL). It covers
    /// scheduling delays and clock rate differences.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }

    /// How often [`acquire_when_free`](EtcdIdentity::acquire_when_free)
    /// looks again (default 100 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn ttl_secs(&self) -> i64 {
        let s = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        s.max(1) as i64
    }

    fn margin(&self, ttl: Duration) -> Duration {
        self.safety_margin.unwrap_or(ttl / 4)
    }

    fn interval(&self, ttl: Duration) -> Duration {
        self.keep_alive_interval.unwrap_or(ttl / 3)
    }

    fn validate(&self) -> Result<()> {
        if self.instance.is_empty() || self.instance.len() > MAX_INSTANCE_LEN {
            return Err(Error::Config(format!(
                "instance name must have 1 to {MAX_INSTANCE_LEN} bytes, not {}",
                self.instance.len()
            )));
        }
        let ttl = Duration::from_secs(self.ttl_secs() as u64);
        let margin = self.margin(ttl);
        let interval = self.interval(ttl);
        if margin >= ttl {
            return Err(Error::Config(format!(
                "safety margin {margin:?} must be shorter than the lease TTL {ttl:?}"
            )));
        }
        // A renewal sent one interval after the last answered one, and
        // given half an interval to be answered, must end before the holder
        // counts the lease as gone.
        if interval.is_zero() || interval + interval / 2 >= ttl - margin {
            return Err(Error::Config(format!(
                "keep-alive interval {interval:?} is too long: 1.5 intervals must be shorter than \
                 the lease TTL {ttl:?} minus the safety margin {margin:?}"
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("poll interval must not be zero".into()));
        }
        Ok(())
    }
}

/// Who owns an identity, as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerStatus {
    /// The owner's instance name.
    pub instance: String,
    /// The identity.
    pub node: NodeId,
    /// The fencing token (the owner key's `mod_revision`).
    pub fence: u64,
    /// When the owner took it (unix milliseconds, owner's clock).
    pub since_ms: u64,
    /// The owner's etcd lease id.
    pub lease: i64,
    /// Time left on the lease, if it still exists.
    pub ttl_left: Option<Duration>,
}

/// One node identity whose ownership is shared through etcd by several
/// instances (a primary and a secondary validator, on different hosts).
///
/// Cheap to clone; clones share the current ownership.
#[derive(Clone)]
pub struct EtcdIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    client: EtcdClient,
    node: NodeId,
    owner_key: String,
    options: OwnershipOptions,
    current: Mutex<Option<Arc<Holding>>>,
}

impl std::fmt::Debug for EtcdIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdIdentity")
            .field("node", &self.inner.node)
            .field("instance", &self.inner.options.instance)
            .field("current", &*self.current())
            .finish()
    }
}

/// A lease granted for a claim, and when it was asked for.
struct Grant {
    id: i64,
    ttl: Duration,
    sent: (Instant, SystemTime),
}

impl EtcdIdentity {
    /// The identity `node`, owned through `client` by the instance
    /// described by `options`. Fails with [`Error::Config`] on bad options.
    pub fn new(client: EtcdClient, node: NodeId, options: OwnershipOptions) -> Result<Self> {
        options.validate()?;
        let owner_key = client.keys().owner(&node);
        Ok(EtcdIdentity {
            inner: Arc::new(Inner {
                client,
                node,
                owner_key,
                options,
                current: Mutex::new(None),
            }),
        })
    }

    /// The node identity.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.inner.options.instance
    }

    /// The etcd client.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.client
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Holding>>> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make this instance the owner now, whoever owned it before (the
    /// `set-identity` moment of a failover).
    ///
    /// ONE transaction commits the claim; its revision is the returned
    /// fence. From that instant the previous owner can no longer store a
    /// tower, and its [`Ownership::lost`] resolves as soon as its
    /// keep-alive task sees the change. Read the tower only after this
    /// returns (open an [`EtcdTowerStorage`](super::EtcdTowerStorage)).
    ///
    /// Errors: [`Error::Corrupt`] if the owner key holds something that is
    /// not an owner claim of this node (nothing is overwritten; an operator
    /// must delete the key); [`Error::Unavailable`] if etcd does not answer
    /// in time (the claim may or may not have committed; it expires with
    /// its lease).
    pub async fn take_over(&self) -> Result<Ownership> {
        let grant = self.grant().await?;
        let claim = self.claim(&grant);
        let client = &self.inner.client;
        let key = &self.inner.owner_key;
        for _ in 0..8 {
            let resp = match client
                .call("read the owner key", client.deadline(), || {
                    let mut c = client.raw();
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.revoke(grant.id).await;
                    return Err(e);
                }
            };
            let seen = resp.kvs().first().map(|kv| kv.value().to_vec());
            let (rev, previous) = match resp.kvs().first() {
                None => (0, None),
                Some(kv) if kv.value() == claim.as_slice() => {
                    // An earlier attempt committed but its answer was lost.
                    return Ok(self.hold(kv.mod_revision(), &claim, &grant, None));
                }
                Some(kv) => match OwnerClaim::decode(kv.value(), &self.inner.node) {
                    Ok(c) => (kv.mod_revision(), Some(c)),
                    Err(p) => {
                        self.revoke(grant.id).await;
                        return Err(Error::corrupt(key.clone(), p));
                    }
                },
            };
            // The claim read, by revision and bytes: the previous owner
            // reported is the one replaced, even where revisions are reused.
            let mut compares = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)];
            if let Some(v) = seen {
                compares.push(Compare::value(key.clone(), CompareOp::Equal, v));
            }
            let txn = Txn::new().when(compares).and_then([TxnOp::put(
                key.clone(),
                claim.clone(),
                Some(PutOptions::new().with_lease(grant.id)),
            )]);
            let resp = match client.txn("take over the identity", txn).await {
                Ok(r) => r,
                Err(e) => {
                    self.revoke(grant.id).await;
                    return Err(e);
                }
            };
            if resp.succeeded() {
                let fence = resp.header().map_or(0, |h| h.revision());
                return Ok(self.hold(fence, &claim, &grant, previous.map(|p| (p, rev))));
            }
            // Someone else changed the owner key in between: look again.
        }
        self.revoke(grant.id).await;
        Err(Error::Unavailable {
            backend: "etcd",
            detail: format!("take over {}: the owner key kept changing", self.inner.node),
            source: None,
        })
    }

    /// Become the owner once nobody owns the identity (its owner released
    /// it, or its owner's lease expired because that owner died), waiting
    /// up to `timeout`. The claim is ONE transaction comparing that the
    /// owner key does not exist.
    ///
    /// Errors: [`Error::Unavailable`] naming the current owner when it is
    /// still owned after `timeout` (or etcd did not answer);
    /// [`Error::Corrupt`] if the owner key holds something that is not an
    /// owner claim of this node.
    pub async fn acquire_when_free(&self, timeout: Duration) -> Result<Ownership> {
        let client = &self.inner.client;
        let key = &self.inner.owner_key;
        let end = Instant::now() + timeout;
        let mut grant: Option<Grant> = None;
        let mut last = String::from("no answer from etcd yet");
        loop {
            // A lease older than half its TTL may expire before the claim
            // is renewed: take a fresh one.
            if grant
                .as_ref()
                .is_none_or(|g| g.sent.0.elapsed() > g.ttl / 2)
            {
                if let Some(old) = grant.take() {
                    self.revoke(old.id).await;
                }
                match self.grant().await {
                    Ok(g) => grant = Some(g),
                    Err(e) if e.is_unavailable() && Instant::now() < end => {
                        last = e.to_string();
                        tokio::time::sleep(self.inner.options.poll_interval).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let g = grant.as_ref().expect("granted above");
            let claim = self.claim(g);
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    claim.clone(),
                    Some(PutOptions::new().with_lease(g.id)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            match client.txn("claim the free identity", txn).await {
                Ok(resp) if resp.succeeded() => {
                    let fence = resp.header().map_or(0, |h| h.revision());
                    return Ok(self.hold(fence, &claim, g, None));
                }
                Ok(resp) => {
                    if let Some(kv) = first_kv(&resp.op_responses()) {
                        if kv.value() == claim.as_slice() {
                            return Ok(self.hold(kv.mod_revision(), &claim, g, None));
                        }
                        let owner = match OwnerClaim::decode(kv.value(), &self.inner.node) {
                            Ok(o) => o,
                            Err(p) => {
                                self.revoke(g.id).await;
                                return Err(Error::corrupt(key.clone(), p));
                            }
                        };
                        last = format!(
                            "owned by instance {} since fence {}",
                            owner.instance,
                            kv.mod_revision()
                        );
                    }
                }
                Err(e) if e.is_unavailable() => last = e.to_string(),
                Err(e) => {
                    self.revoke(g.id).await;
                    return Err(e);
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if let Some(g) = grant.take() {
                    self.revoke(g.id).await;
                }
                return Err(Error::Unavailable {
                    backend: "etcd",
                    detail: format!(
                        "identity {} not free after {timeout:?}: {last}",
                        self.inner.node
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(self.inner.options.poll_interval.min(left)).await;
        }
    }

    /// Step 1 of the Tezos backup procedure ("confirm the primary is
    /// down") through etcd: wait at most `wait` for the identity to be
    /// free (the primary released it, or died and its lease expired), and
    /// take it. The result is the evidence
    /// [`BackupGuard::activate`](crate::failover::BackupGuard::activate)
    /// needs.
    ///
    /// Errors: [`FailoverRefusal::PrimaryStillActive`] naming the owner,
    /// its fence and what is left of its lease, when another instance
    /// still owns the identity after `wait` (the seed's "starting the
    /// backup before stopping the primary"); [`Error::Unavailable`] when
    /// etcd did not answer; [`Error::Corrupt`] as for
    /// [`acquire_when_free`](Self::acquire_when_free).
    pub async fn confirm_primary_down(&self, wait: Duration) -> Result<PrimaryDown> {
        match self.acquire_when_free(wait).await {
            Ok(ownership) => {
                tracing::info!(node = %self.inner.node, instance = %self.inner.options.instance, fence = ownership.fence(), "primary confirmed down: its ownership is free and now ours");
                Ok(PrimaryDown::Acquired(ownership))
            }
            Err(e) if e.is_unavailable() => match self.status().await? {
                Some(owner) => {
                    let lease = match owner.ttl_left {
                        Some(t) => format!("its lease is alive ({t:?} left)"),
                        None => "its lease is expiring".to_string(),
                    };
                    let detail = format!(
                        "instance {} owns {} since fence {}; {lease}: stop it (or wait for its lease to expire) first",
                        owner.instance, self.inner.node, owner.fence
                    );
                    tracing::warn!(node = %self.inner.node, instance = %self.inner.options.instance, %detail, "backup refused: the primary still owns the identity");
                    Err(FailoverRefusal::PrimaryStillActive { detail }.into())
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Give the identity up so a standby can take it at once: the owner
    /// key is deleted only if it is still this ownership's (compare on the
    /// fence revision and the claim's bytes), then the lease is revoked. The ownership counts as lost from
    /// the start of the call. Releasing an ownership that was already lost,
    /// taken over or superseded is not an error: the compare leaves the
    /// current owner's key alone.
    ///
    /// Errors: [`Error::Invalid`] if `ownership` was not granted by this
    /// identity; [`Error::Unavailable`] if etcd did not answer (the claim
    /// then expires with its lease).
    pub async fn release(&self, ownership: Ownership) -> Result<()> {
        let holding = self.holding(&ownership)?;
        holding.lose("released");
        {
            let mut cur = self.current();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &holding)) {
                *cur = None;
            }
        }
        drop(ownership);
        let key = &self.inner.owner_key;
        let txn = Txn::new()
            .when(holding.fence_compares())
            .and_then([TxnOp::delete(key.clone(), None)]);
        let result = self.inner.client.txn("release the identity", txn).await;
        self.revoke(holding.lease).await;
        result.map(|_| ())
    }

    /// Who owns the identity now, if anyone.
    ///
    /// Errors: [`Error::Corrupt`] if the owner key holds something that is
    /// not an owner claim of this node; [`Error::Unavailable`].
    pub async fn status(&self) -> Result<Option<OwnerStatus>> {
        let client = &self.inner.client;
        let key = &self.inner.owner_key;
        let resp = client
            .call("read the owner key", client.deadline(), || {
                let mut c = client.raw();
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let claim = OwnerClaim::decode(kv.value(), &self.inner.node)
            .map_err(|p| Error::corrupt(key.clone(), p))?;
        let ttl = client
            .call("read the owner's lease", client.deadline(), || {
                let mut c = client.raw();
                async move { c.lease_time_to_live(claim.lease, None).await }
            })
            .await?
            .ttl();
        Ok(Some(OwnerStatus {
            instance: claim.instance,
            node: claim.node,
            fence: kv.mod_revision() as u64,
            since_ms: claim.since_ms,
            lease: claim.lease,
            ttl_left: (ttl >= 0).then(|| Duration::from_secs(ttl as u64)),
        }))
    }

    /// The held state behind `ownership`, if this identity granted it
    /// (the [`Holding`] travels inside the handle).
    pub(crate) fn holding(&self, ownership: &Ownership) -> Result<Arc<Holding>> {
        let holding = ownership
            .backing::<OnceLock<Arc<Holding>>>()
            .and_then(|slot| slot.get().cloned())
            .filter(|h| h.node == self.inner.node && h.owner_key == self.inner.owner_key);
        holding.ok_or_else(|| {
            Error::Invalid(format!(
                "ownership {ownership:?} was not granted by the etcd identity {} under {}",
                self.inner.node, self.inner.owner_key
            ))
        })
    }

    async fn grant(&self) -> Result<Grant> {
        let client = &self.inner.client;
        let ttl = self.inner.options.ttl_secs();
        let sent = (Instant::now(), SystemTime::now());
        let resp = client
            .call("grant a lease", client.deadline(), || {
                let mut c = client.raw();
                async move { c.lease_grant(ttl, None).await }
            })
            .await?;
        if !resp.error().is_empty() || resp.ttl() <= 0 {
            return Err(Error::Unavailable {
                backend: "etcd",
                detail: format!("lease grant refused: {}", resp.error()),
                source: None,
            });
        }
        Ok(Grant {
            id: resp.id(),
            ttl: Duration::from_secs(resp.ttl() as u64),
            sent,
        })
    }

    /// Best effort: an unrevoked lease expires by itself.
    async fn revoke(&self, lease: i64) {
        let client = &self.inner.client;
        let r = client
            .call("revoke a lease", client.deadline(), || {
                let mut c = client.raw();
                async move { c.lease_revoke(lease).await }
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "lease not revoked; it will expire");
        }
    }

    fn claim(&self, grant: &Grant) -> Vec<u8> {
        let since_ms = grant
            .sent
            .1
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // A fresh nonce per claim: the claim's bytes identify this
        // ownership even where etcd reuses revisions (snapshot restore).
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        OwnerClaim {
            node: self.inner.node,
            lease: grant.id,
            since_ms,
            nonce,
            instance: self.inner.options.instance.clone(),
        }
        .encode()
    }

    /// Record the new ownership, start its keep-alive loop, and hand out
    /// the handle.
    fn hold(
        &self,
        fence: i64,
        claim: &[u8],
        grant: &Grant,
        previous: Option<(OwnerClaim, i64)>,
    ) -> Ownership {
        let options = &self.inner.options;
        // The handle carries its Holding, so that stores can be opened
        // from it; the slot is filled once the notifier exists.
        let slot = Arc::new(OnceLock::new());
        let (ownership, notifier) = Ownership::new(
            fence as u64,
            options.instance.clone(),
            Some(slot.clone() as Arc<dyn Any + Send + Sync>),
        );
        let holding = Arc::new(Holding::new(
            self.inner.node,
            self.inner.owner_key.clone(),
            fence,
            claim.to_vec(),
            grant.id,
            options.instance.clone(),
            grant.ttl,
            options.margin(grant.ttl),
            grant.sent,
            notifier,
        ));
        keepalive::spawn(
            self.inner.client.clone(),
            self.inner.owner_key.clone(),
            holding.clone(),
            options.interval(grant.ttl),
        );
        let _ = slot.set(holding.clone());
        if let Some(old) = self.current().replace(holding) {
            old.lose(format!(
                "superseded by a newer ownership of this instance at fence {fence}"
            ));
        }
        match previous {
            Some((p, rev)) => {
                tracing::info!(node = %self.inner.node, instance = %options.instance, fence, previous = %p.instance, previous_fence = rev, "took over the identity")
            }
            None => {
                tracing::info!(node = %self.inner.node, instance = %options.instance, fence, "owns the identity")
            }
        }
        ownership
    }
}

fn first_kv(responses: &[TxnOpResponse]) -> Option<etcd_client::KeyValue> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}
