//! `EtcdVoteHistory`: one node's Alpenglow vote history in etcd, written
//! only under the fence of the ownership it was opened with (the same
//! ownership, owner key and fence as the node's tower).

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnResponse};
use tokio::sync::Mutex;

use crate::alpenglow::storage::{check_create, plan};
use crate::alpenglow::{
    Applied, Check, HistoryStep, HistoryStorage, HistoryUpdate, RuleMode, VoteHistory,
};
use crate::error::{Error, FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::holding::Holding;
use crate::etcd::keepalive::describe_owner;
use crate::etcd::ownership::EtcdIdentity;
use crate::etcd::tower::get_kv;
use crate::failover::Ownership;
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

/// How often an apply retries when the record changed under it.
const STORE_ATTEMPTS: usize = 4;

/// A node's vote history at `<prefix>/tower/<node>/alpenglow`, stored by
/// the instance that owns the identity.
///
/// - **apply** is ONE transaction: compare the owner key's `mod_revision`
///   with this ownership's fence *and* the record's `mod_revision` with the
///   one last seen, then put the new history. A failed fence compare is
///   [`Error::Fenced`] naming the new owner; a changed record is re-read,
///   re-checked and retried. An update with nothing new makes no request
///   once the ownership is checked locally.
/// - **create** puts the first history only if the key does not exist
///   (same fence compare).
/// - A value that is not this node's intact history is [`Error::Corrupt`]
///   and is never overwritten.
/// - Every call returns within the client's deadline (per retry);
///   etcd down or without quorum is [`Error::Unavailable`].
pub struct EtcdVoteHistory {
    client: EtcdClient,
    node: NodeId,
    owner_key: String,
    record_key: String,
    holding: Arc<Holding>,
    cache: Mutex<Cached>,
}

struct Cached {
    /// `mod_revision` of the record key, 0 when absent.
    rev: i64,
    value: Stored,
}

enum Stored {
    Absent,
    History(VoteHistory),
    Corrupt(FormatError),
}

impl EtcdVoteHistory {
    /// Open the history of `identity` under `ownership`, reading it under
    /// the fence. Errors as [`EtcdTowerStorage::open`](crate::etcd::EtcdTowerStorage::open).
    pub async fn open(identity: &EtcdIdentity, ownership: &Ownership) -> Result<Self> {
        let holding = identity.holding(ownership)?;
        let client = identity.client().clone();
        let keys = client.keys();
        let node = identity.node();
        let storage = EtcdVoteHistory {
            owner_key: keys.owner(&node),
            record_key: keys.vote_history(&node),
            client,
            node,
            holding,
            cache: Mutex::new(Cached {
                rev: 0,
                value: Stored::Absent,
            }),
        };
        let mut cache = storage.cache.lock().await;
        storage.read(&mut cache).await?;
        drop(cache);
        Ok(storage)
    }

    /// Read `node`'s history without owning the identity (inspection and
    /// export). `Ok(None)` when none exists.
    pub async fn read_unfenced(client: &EtcdClient, node: NodeId) -> Result<Option<VoteHistory>> {
        let key = client.keys().vote_history(&node);
        let resp = client
            .call("read the vote history", client.deadline(), || {
                let mut c = client.raw();
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => VoteHistory::decode(kv.value(), &node)
                .map(Some)
                .map_err(|p| Error::corrupt(key.clone(), p)),
        }
    }

    /// The fence this storage writes under.
    pub fn fence(&self) -> u64 {
        self.holding.fence as u64
    }

    fn fence_compare(&self) -> Compare {
        Compare::mod_revision(self.owner_key.clone(), CompareOp::Equal, self.holding.fence)
    }

    async fn read(&self, cache: &mut Cached) -> Result<()> {
        self.holding.check()?;
        let txn = Txn::new()
            .when([self.fence_compare()])
            .and_then([TxnOp::get(self.record_key.clone(), None)])
            .or_else([TxnOp::get(self.owner_key.clone(), None)]);
        let resp = self.client.txn("load the vote history", txn).await?;
        if !resp.succeeded() {
            return Err(self.fenced_by(&resp));
        }
        *cache = self.decode(get_kv(&resp.op_responses(), 0).as_ref());
        Ok(())
    }

    fn decode(&self, kv: Option<&KeyValue>) -> Cached {
        match kv {
            None => Cached {
                rev: 0,
                value: Stored::Absent,
            },
            Some(kv) => Cached {
                rev: kv.mod_revision(),
                value: match VoteHistory::decode(kv.value(), &self.node) {
                    Ok(h) => Stored::History(h),
                    Err(e) => Stored::Corrupt(e),
                },
            },
        }
    }

    fn current<'a>(&self, cache: &'a Cached) -> Result<Option<&'a VoteHistory>> {
        match &cache.value {
            Stored::Absent => Ok(None),
            Stored::History(h) => Ok(Some(h)),
            Stored::Corrupt(p) => Err(Error::corrupt(self.record_key.clone(), p.clone())),
        }
    }

    fn fenced_by(&self, resp: &TxnResponse) -> Error {
        let reason = match get_kv(&resp.op_responses(), 0) {
            None => {
                "the owner key is gone: the lease expired or the identity was released".to_string()
            }
            Some(kv) => describe_owner(&kv, &self.holding),
        };
        self.holding.lose(reason.clone());
        self.holding.fenced(reason)
    }

    /// Put `bytes` if the fence and the record revision still hold.
    /// `Ok(Some(rev))` on success, `Ok(None)` when the record changed (the
    /// cache is refreshed), `Err(Fenced)` when the fence failed.
    async fn put(&self, cache: &mut Cached, bytes: Vec<u8>, what: &str) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when([
                self.fence_compare(),
                Compare::mod_revision(self.record_key.clone(), CompareOp::Equal, cache.rev),
            ])
            .and_then([TxnOp::put(self.record_key.clone(), bytes, None)])
            .or_else([
                TxnOp::get(self.owner_key.clone(), None),
                TxnOp::get(self.record_key.clone(), None),
            ]);
        let resp = self.client.txn(what, txn).await?;
        if resp.succeeded() {
            let rev = resp.header().map_or(0, |h| h.revision());
            // An answer arriving after the lease may have expired must not
            // release a vote.
            self.holding.check()?;
            return Ok(Some(rev));
        }
        let responses = resp.op_responses();
        if get_kv(&responses, 0)
            .as_ref()
            .is_none_or(|kv| kv.mod_revision() != self.holding.fence)
        {
            return Err(self.fenced_by(&resp));
        }
        let fresh = self.decode(get_kv(&responses, 1).as_ref());
        tracing::warn!(node = %self.node, seen = cache.rev, now = fresh.rev, "vote history changed in etcd under this owner; re-checking");
        *cache = fresh;
        Ok(None)
    }

    fn receipt(&self, rev: i64) -> StoreReceipt {
        StoreReceipt {
            fence: self.holding.fence as u64,
            sequence: rev as u64,
        }
    }

    fn gave_up(&self) -> Error {
        Error::Unavailable {
            backend: "etcd",
            detail: format!("{} kept changing under this owner", self.record_key),
            source: None,
        }
    }
}

#[async_trait]
impl HistoryStorage for EtcdVoteHistory {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    async fn load(&self) -> Result<Option<VoteHistory>> {
        let mut cache = self.cache.lock().await;
        self.read(&mut cache).await?;
        Ok(self.current(&cache)?.cloned())
    }

    async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt> {
        let mut cache = self.cache.lock().await;
        self.holding.check()?;
        for _ in 0..STORE_ATTEMPTS {
            check_create(&self.node, self.current(&cache)?, history)?;
            if let Some(rev) = self
                .put(&mut cache, history.encode(), "create the vote history")
                .await?
            {
                *cache = Cached {
                    rev,
                    value: Stored::History(history.clone()),
                };
                return Ok(self.receipt(rev));
            }
        }
        Err(self.gave_up())
    }

    async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
        let node = self.node;
        self.apply_with(|current| plan(&node, current, update, mode))
            .await
    }

    async fn apply_step(&self, step: &HistoryStep) -> Result<Applied> {
        self.apply_with(|current| step.plan(current)).await
    }
}

impl EtcdVoteHistory {
    /// Plan from the history in etcd and put the result under the fence,
    /// planning again on the record's new value when it changed under us.
    async fn apply_with(
        &self,
        plan: impl Fn(Option<&VoteHistory>) -> Result<(Option<VoteHistory>, Vec<Check>)>,
    ) -> Result<Applied> {
        let mut cache = self.cache.lock().await;
        self.holding.check()?;
        for _ in 0..STORE_ATTEMPTS {
            let (next, checks) = plan(self.current(&cache)?)?;
            let Some(next) = next else {
                return Ok(Applied {
                    receipt: self.receipt(cache.rev),
                    checks,
                    wrote: false,
                });
            };
            if let Some(rev) = self
                .put(&mut cache, next.encode(), "store the vote history")
                .await?
            {
                *cache = Cached {
                    rev,
                    value: Stored::History(next),
                };
                return Ok(Applied {
                    receipt: self.receipt(rev),
                    checks,
                    wrote: true,
                });
            }
        }
        Err(self.gave_up())
    }
}

impl std::fmt::Debug for EtcdVoteHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdVoteHistory")
            .field("node", &self.node)
            .field("record_key", &self.record_key)
            .finish()
    }
}
