//! `EtcdVoteHistory`: one node's Alpenglow vote history in etcd, written
//! only under the fence of the ownership it was opened with (the same
//! ownership, owner key and fence as the node's tower).

use async_trait::async_trait;

use crate::alpenglow::storage::{check_create, plan};
use crate::alpenglow::{
    Applied, Check, HistoryStep, HistoryStorage, HistoryUpdate, RuleMode, VoteHistory,
};
use crate::error::{FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::fenced::{FencedKey, FencedValue};
use crate::etcd::ownership::EtcdIdentity;
use crate::failover::Ownership;
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

/// How often a write retries when the record changed under it.
const STORE_ATTEMPTS: usize = 4;

/// A node's vote history at `<prefix>/tower/<node>/alpenglow`, stored by
/// the instance that owns the identity.
///
/// - **apply** is ONE transaction: compare the owner key with this
///   ownership (its revision is the fence *and* its value this claim)
///   *and* the record's `mod_revision` with the one last seen, then put
///   the new history. A failed owner compare is [`Error::Fenced`](crate::Error::Fenced) naming
///   the new owner; a changed record is re-read, re-checked and retried.
///   An update with nothing new makes no request once the ownership is
///   checked locally.
/// - **create** puts the first history only if the key does not exist
///   (same compares).
/// - A history read that is older than one this process wrote or read
///   before (an etcd snapshot restored under it, a backup put back, the
///   key deleted) is [`Error::Regressed`](crate::Error::Regressed), and every later call refuses
///   the same way until an operator repairs the key: the guard never
///   votes on a history that went backwards.
/// - A value that is not this node's intact history is [`Error::Corrupt`](crate::Error::Corrupt)
///   and is never overwritten.
/// - Every call returns within the client's deadline (per retry);
///   etcd down or without quorum is [`Error::Unavailable`](crate::Error::Unavailable).
pub struct EtcdVoteHistory {
    key: FencedKey<VoteHistory>,
}

impl FencedValue for VoteHistory {
    fn decode(bytes: &[u8], node: &NodeId) -> std::result::Result<Self, FormatError> {
        VoteHistory::decode(bytes, node)
    }

    /// Not older: the root did not move back, and every vote of `floor`
    /// at or above the new root is still there.
    fn not_older_than(&self, floor: &Self) -> bool {
        self.root() >= floor.root()
            && floor
                .slots()
                .filter(|(slot, _)| *slot >= self.root())
                .all(|(slot, votes)| {
                    self.slot(slot)
                        .is_some_and(|now| votes.kinds().iter().all(|k| now.contains(k)))
                })
    }

    fn describe(&self) -> String {
        format!(
            "a vote history with root {} and last vote {}",
            self.root(),
            self.last_voted_slot()
                .map_or("none".to_string(), |s| format!("in slot {s}"))
        )
    }

    fn what(key: &str) -> String {
        format!("the vote history {key}")
    }

    fn load() -> &'static str {
        "load the vote history"
    }

    fn absent() -> &'static str {
        "no vote history at all"
    }

    fn recovery(key: &str) -> String {
        format!(
            "stop this validator; put the newest vote history back with `slashguard vote-history import --node <identity> --from-agave <its ledger directory> --etcd` (or restore the etcd snapshot that holds it, see README \"Restoring an etcd snapshot\"), then start it again; it will not vote on {key} until then"
        )
    }
}

impl EtcdVoteHistory {
    /// Open the history of `identity` under `ownership`, reading it under
    /// the fence. Errors as [`EtcdTowerStorage::open`](crate::etcd::EtcdTowerStorage::open).
    pub async fn open(identity: &EtcdIdentity, ownership: &Ownership) -> Result<Self> {
        let holding = identity.holding(ownership)?;
        let client = identity.client().clone();
        let node = identity.node();
        let record_key = client.keys().vote_history(&node);
        Ok(EtcdVoteHistory {
            key: FencedKey::open(client, node, record_key, holding).await?,
        })
    }

    /// Read `node`'s history without owning the identity (inspection and
    /// export). `Ok(None)` when none exists.
    pub async fn read_unfenced(client: &EtcdClient, node: NodeId) -> Result<Option<VoteHistory>> {
        crate::etcd::fenced::read_unfenced(client, node, client.keys().vote_history(&node)).await
    }

    /// The fence this storage writes under.
    pub fn fence(&self) -> u64 {
        self.key.holding.fence as u64
    }

    fn receipt(&self, rev: i64) -> StoreReceipt {
        StoreReceipt {
            fence: self.fence(),
            sequence: rev as u64,
        }
    }

    /// Plan from the history in etcd and put the result under the fence,
    /// planning again on the record's new value when it changed under us.
    async fn apply_with(
        &self,
        plan: impl Fn(Option<&VoteHistory>) -> Result<(Option<VoteHistory>, Vec<Check>)>,
    ) -> Result<Applied> {
        let mut cache = self.key.lock().await;
        self.key.holding.check()?;
        for _ in 0..STORE_ATTEMPTS {
            // A regression seen before stays refused.
            self.key.check_floor(&mut cache)?;
            let (next, checks) = plan(self.key.current(&cache)?)?;
            let Some(next) = next else {
                return Ok(Applied {
                    receipt: self.receipt(cache.rev),
                    checks,
                    wrote: false,
                });
            };
            let bytes = next.encode();
            if let Some(rev) = self
                .key
                .put(&mut cache, bytes, next, "store the vote history")
                .await?
            {
                return Ok(Applied {
                    receipt: self.receipt(rev),
                    checks,
                    wrote: true,
                });
            }
        }
        Err(self.key.gave_up("store the vote history"))
    }
}

#[async_trait]
impl HistoryStorage for EtcdVoteHistory {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn node(&self) -> NodeId {
        self.key.node
    }

    async fn load(&self) -> Result<Option<VoteHistory>> {
        let mut cache = self.key.lock().await;
        self.key.read(&mut cache).await?;
        Ok(self.key.current(&cache)?.cloned())
    }

    async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt> {
        let mut cache = self.key.lock().await;
        self.key.holding.check()?;
        for _ in 0..STORE_ATTEMPTS {
            self.key.check_floor(&mut cache)?;
            check_create(&self.key.node, self.key.current(&cache)?, history)?;
            if let Some(rev) = self
                .key
                .put(
                    &mut cache,
                    history.encode(),
                    history.clone(),
                    "create the vote history",
                )
                .await?
            {
                return Ok(self.receipt(rev));
            }
        }
        Err(self.key.gave_up("create the vote history"))
    }

    async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
        let node = self.key.node;
        self.apply_with(|current| plan(&node, current, update, mode))
            .await
    }

    async fn apply_step(&self, step: &HistoryStep) -> Result<Applied> {
        self.apply_with(|current| step.plan(current)).await
    }
}

impl std::fmt::Debug for EtcdVoteHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdVoteHistory")
            .field("node", &self.key.node)
            .field("record_key", &self.key.record_key)
            .finish()
    }
}
