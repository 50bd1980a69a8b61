//! `EtcdFailover`: the [`FailoverPolicy`] of an identity shared in etcd.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;
use crate::etcd::ownership::EtcdIdentity;
use crate::failover::{FailoverPolicy, Gate, Gated, Ownership, ReclaimMode};

/// How [`EtcdFailover::acquire`](FailoverPolicy::acquire) gets the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireMode {
    /// Take it now, whoever has it (a manual `set-identity`): the previous
    /// owner is fenced from the moment the claim commits.
    TakeOver,
    /// Wait until nobody owns it (the owner released it or died and its
    /// lease expired), at most this long: automatic failover to a standby.
    WhenFree(Duration),
}

/// A [`FailoverPolicy`] backed by an [`EtcdIdentity`].
///
/// ```no_run
/// use std::time::Duration;
/// use slashguard::etcd::{
///     AcquireMode, EtcdClient, EtcdConfig, EtcdFailover, EtcdIdentity, EtcdTowerStorage,
///     OwnershipOptions,
/// };
/// use slashguard::{FailoverPolicy, NodeKeypair};
///
/// # async fn run() -> slashguard::Result<()> {
/// let config = EtcdConfig::builder(["10.0.0.5:2379"])
///     .ca_file("certs/etcd-ca.pem")
///     .client_cert("certs/validator.pem", "certs/validator-key.pem")
///     .build()?;
/// let client = EtcdClient::connect(config).await?;
/// let keypair = NodeKeypair::read_solana_json("validator-keypair.json")?;
/// let identity = EtcdIdentity::new(client, keypair.node_id(), OwnershipOptions::new("host-b"))?;
/// let policy = EtcdFailover::new(identity.clone(), AcquireMode::WhenFree(Duration::from_secs(3600)));
///
/// let ownership = policy.acquire().await?; // returns once the primary is gone
/// let storage = EtcdTowerStorage::open(&identity, &ownership).await?;
/// // ... vote through a VoteGuard over `storage` until `ownership.lost()` resolves ...
/// policy.release(ownership).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdFailover {
    identity: EtcdIdentity,
    mode: AcquireMode,
}

impl EtcdFailover {
    /// A policy acquiring `identity` as `mode` says.
    pub fn new(identity: EtcdIdentity, mode: AcquireMode) -> Self {
        EtcdFailover { identity, mode }
    }

    /// The policy of a restarting primary (the seed's software upgrade),
    /// as `mode` says:
    ///
    /// | mode | acquisition |
    /// |---|---|
    /// | [`ReclaimMode::WhenReady`] (default) | wait until `ready` is `true`, at most `timeout`, then [`AcquireMode::TakeOver`] |
    /// | [`ReclaimMode::Immediately`] | [`AcquireMode::TakeOver`] at once |
    /// | [`ReclaimMode::Never`] | [`AcquireMode::WhenFree`]`(timeout)`: a standby |
    ///
    /// The secondary it takes the identity from is fenced at once and its
    /// [`Ownership::lost`] resolves; it must stop voting, and come back as
    /// a standby (`AcquireMode::WhenFree`), which breaks the restart cycle.
    /// A readiness gate that stays closed fails `acquire` with
    /// [`FailoverRefusal::GateClosed`](crate::failover::FailoverRefusal::GateClosed)
    /// without touching the secondary.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdFailover, EtcdIdentity, OwnershipOptions};
    /// use slashguard::failover::ReclaimMode;
    /// use slashguard::{FailoverPolicy, NodeKeypair};
    /// use tokio::sync::watch;
    ///
    /// # async fn run() -> slashguard::Result<()> {
    /// let client = EtcdClient::connect(EtcdConfig::builder(["10.0.0.5:2379"]).build()?).await?;
    /// let keypair = NodeKeypair::read_solana_json("validator-keypair.json")?;
    /// let identity = EtcdIdentity::new(client, keypair.node_id(), OwnershipOptions::new("primary"))?;
    /// let (caught_up, ready) = watch::channel(false);
    /// let policy = EtcdFailover::reclaim(identity, ReclaimMode::WhenReady, ready, Duration::from_secs(1800));
    /// // ... replay the ledger; once caught up with the cluster:
    /// caught_up.send(true).ok();
    /// let ownership = policy.acquire().await?;
    /// # Ok(()) }
    /// ```
    pub fn reclaim(
        identity: EtcdIdentity,
        mode: ReclaimMode,
        ready: watch::Receiver<bool>,
        timeout: Duration,
    ) -> Gated<EtcdFailover> {
        let acquire = if mode.takes_over() {
            AcquireMode::TakeOver
        } else {
            AcquireMode::WhenFree(timeout)
        };
        let policy = Gated::new(EtcdFailover::new(identity, acquire));
        if mode.waits_for_readiness() {
            policy.gate(Gate::readiness(ready, timeout))
        } else {
            policy
        }
    }

    /// The identity it acquires.
    pub fn identity(&self) -> &EtcdIdentity {
        &self.identity
    }

    /// The acquisition mode.
    pub fn mode(&self) -> AcquireMode {
        self.mode
    }
}

#[async_trait]
impl FailoverPolicy for EtcdFailover {
    async fn acquire(&self) -> Result<Ownership> {
        tracing::debug!(node = %self.identity.node(), instance = %self.identity.instance(), mode = ?self.mode, "acquiring the identity");
        match self.mode {
            AcquireMode::TakeOver => self.identity.take_over().await,
            AcquireMode::WhenFree(timeout) => self.identity.acquire_when_free(timeout).await,
        }
    }

    async fn release(&self, ownership: Ownership) -> Result<()> {
        self.identity.release(ownership).await
    }
}
