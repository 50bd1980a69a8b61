//! `EtcdTowerStorage`: one node's tower in etcd, written only under the
//! fence of the ownership it was opened with.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::Mutex;

use crate::error::{Error, FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::holding::Holding;
use crate::etcd::keepalive::describe_owner;
use crate::etcd::ownership::EtcdIdentity;
use crate::failover::Ownership;
use crate::identity::NodeId;
use crate::tower::{check_store, StoreMode, StoreReceipt, TowerRecord, TowerStorage};

/// How often a store retries when the record changed under it (only an
/// operator's tool or a late write of our own can do that).
const STORE_ATTEMPTS: usize = 4;

/// A node's tower at `<prefix>/tower/<node>/record`, stored by the instance
/// that owns the identity.
///
/// - **store** is ONE transaction: compare the owner key's `mod_revision`
///   with this ownership's fence *and* the record's `mod_revision` with the
///   one last seen, then put the record. A failed fence compare returns
///   [`Error::Fenced`] naming the new owner, and marks the ownership lost.
///   A failed record compare (someone else wrote it) reloads, re-applies
///   [`check_store`] to what is there, and retries.
/// - **load** reads the record in a transaction that compares the fence.
/// - A value that is not this node's validly signed record is
///   [`Error::Corrupt`] and is never overwritten, except by
///   [`StoreMode::Force`] (operator recovery).
/// - Before each operation the ownership's local state is checked: once the
///   loss is known, or the lease may have expired on the server, every
///   operation fails with [`Error::Fenced`] without asking etcd. A store
///   whose answer arrives after that point also fails (its vote is
///   withheld), although its write is in etcd.
/// - Every call returns within the client's request deadline (plus, for a
///   store, one deadline per retry after a record change); etcd down or
///   without quorum gives [`Error::Unavailable`].
/// - Keep the [`Ownership`] alive while the storage is in use: dropping it
///   stops the lease keep-alive, and the storage refuses from then on.
pub struct EtcdTowerStorage {
    client: EtcdClient,
    node: NodeId,
    owner_key: String,
    record_key: String,
    holding: Arc<Holding>,
    cache: Mutex<Cached>,
}

/// The newest tower this process stored or read (its last vote and root):
/// etcd showing anything older later is a regression, never adopted.
#[derive(Debug, Clone, Copy)]
struct Floor {
    last_vote: Option<u64>,
    root: Option<u64>,
}

impl Floor {
    fn of(r: &TowerRecord) -> Floor {
        Floor {
            last_vote: r.last_vote_slot(),
            root: r.root(),
        }
    }

    fn describe(&self) -> String {
        let slot = |s: Option<u64>| s.map_or("none".to_string(), |s| format!("slot {s}"));
        format!(
            "a tower with last vote {} and root {}",
            slot(self.last_vote),
            slot(self.root)
        )
    }
}

/// The record as last seen in etcd.
struct Cached {
    /// `mod_revision` of the record key, 0 when absent.
    rev: i64,
    value: Stored,
    /// The newest record this process stored or read; survives reloads.
    floor: Option<Floor>,
}

enum Stored {
    Absent,
    Record(TowerRecord),
    Corrupt(FormatError),
}

impl EtcdTowerStorage {
    /// Open the tower of `identity` under `ownership` (from
    /// [`EtcdIdentity::take_over`] or
    /// [`acquire_when_free`](EtcdIdentity::acquire_when_free)), reading the
    /// record under the fence.
    ///
    /// Errors: [`Error::Invalid`] if `ownership` was not granted by
    /// `identity`; [`Error::Fenced`] if it is already lost (taken over,
    /// expired, released or superseded); [`Error::Unavailable`]. A damaged
    /// record does not fail the open: [`load`](TowerStorage::load) and
    /// stores report it.
    pub async fn open(identity: &EtcdIdentity, ownership: &Ownership) -> Result<Self> {
        let holding = identity.holding(ownership)?;
        let client = identity.client().clone();
        let keys = client.keys();
        let node = identity.node();
        let storage = EtcdTowerStorage {
            owner_key: keys.owner(&node),
            record_key: keys.record(&node),
            client,
            node,
            holding,
            cache: Mutex::new(Cached {
                rev: 0,
                value: Stored::Absent,
                floor: None,
            }),
        };
        let mut cache = storage.cache.lock().await;
        storage.read(&mut cache).await?;
        drop(cache);
        Ok(storage)
    }

    /// Read `node`'s tower record without owning the identity and without
    /// comparing a fence (inspection and export tools). The record is
    /// verified as [`load`](TowerStorage::load) does; `Ok(None)` when none
    /// was ever stored. The owner may store a newer record right after.
    ///
    /// Errors: [`Error::Corrupt`] naming the key if the value is not this
    /// node's validly signed record; [`Error::Unavailable`].
    pub async fn read_unfenced(client: &EtcdClient, node: NodeId) -> Result<Option<TowerRecord>> {
        let key = client.keys().record(&node);
        let resp = client
            .call("read the tower", client.deadline(), || {
                let mut c = client.raw();
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => TowerRecord::decode(kv.value(), &node)
                .map(Some)
                .map_err(|p| Error::corrupt(key.clone(), p)),
        }
    }

    /// The fence this storage writes under.
    pub fn fence(&self) -> u64 {
        self.holding.fence as u64
    }

    /// `true` once the ownership behind this storage is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.holding.is_lost()
    }

    /// Read the record under the fence into `cache`.
    async fn read(&self, cache: &mut Cached) -> Result<()> {
        self.holding.check()?;
        let txn = Txn::new()
            .when(self.holding.fence_compares())
            .and_then([TxnOp::get(self.record_key.clone(), None)])
            .or_else([TxnOp::get(self.owner_key.clone(), None)]);
        let resp = self.client.txn("load the tower", txn).await?;
        if !resp.succeeded() {
            return Err(self.fenced_by(&resp));
        }
        let kv = get_kv(&resp.op_responses(), 0);
        self.adopt(cache, kv.as_ref())
    }

    /// Take `kv` (the record as read from etcd) as the current record,
    /// unless it is older than what this process stored or read before:
    /// then [`Error::Regressed`], and the cache keeps its floor so that
    /// every later operation refuses too.
    fn adopt(&self, cache: &mut Cached, kv: Option<&KeyValue>) -> Result<()> {
        let (rev, value) = match kv {
            None => (0, Stored::Absent),
            Some(kv) => (
                kv.mod_revision(),
                match TowerRecord::decode(kv.value(), &self.node) {
                    Ok(r) => Stored::Record(r),
                    Err(e) => Stored::Corrupt(e),
                },
            ),
        };
        cache.rev = rev;
        cache.value = value;
        self.check_floor(cache)
    }

    /// [`Error::Regressed`] when the cached record is older than the
    /// floor; otherwise the floor follows it.
    fn check_floor(&self, cache: &mut Cached) -> Result<()> {
        let Some(floor) = cache.floor else {
            if let Stored::Record(r) = &cache.value {
                cache.floor = Some(Floor::of(r));
            }
            return Ok(());
        };
        let found = match &cache.value {
            Stored::Absent => "no tower at all".to_string(),
            Stored::Record(r) => {
                let now = Floor::of(r);
                if now.last_vote >= floor.last_vote && now.root >= floor.root {
                    cache.floor = Some(now);
                    return Ok(());
                }
                now.describe()
            }
            // Reported as Corrupt by the caller.
            Stored::Corrupt(_) => return Ok(()),
        };
        tracing::error!(node = %self.node, key = %self.record_key, floor = %floor.describe(), %found, "tower in etcd went backwards under its owner; refusing");
        Err(Error::Regressed {
            what: format!("the tower {}", self.record_key),
            floor: floor.describe(),
            found,
            recovery: format!(
                "stop this validator; put the newest tower back with `slashguard tower import --keypair <identity keypair> --from-agave <its tower directory> --etcd` (or restore the etcd snapshot that holds it, see README \"Restoring an etcd snapshot\"), then start it again; it will not vote on {} until then",
                self.record_key
            ),
        })
    }

    fn corrupt(&self, problem: &FormatError) -> Error {
        Error::corrupt(self.record_key.clone(), problem.clone())
    }

    /// The fence compare failed: name the new owner, mark the loss. The
    /// else branch's first operation reads the owner key.
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
}

#[async_trait]
impl TowerStorage for EtcdTowerStorage {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    async fn load(&self) -> Result<Option<TowerRecord>> {
        let mut cache = self.cache.lock().await;
        self.read(&mut cache).await?;
        match &cache.value {
            Stored::Absent => Ok(None),
            Stored::Record(r) => Ok(Some(r.clone())),
            Stored::Corrupt(p) => Err(self.corrupt(p)),
        }
    }

    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
        let mut cache = self.cache.lock().await;
        self.holding.check()?;
        let bytes = record.encode();
        for _ in 0..STORE_ATTEMPTS {
            // A regression seen by an earlier load stays refused.
            self.check_floor(&mut cache)?;
            // The ordering rule against what etcd holds (the compare below
            // proves that it still holds it).
            match &cache.value {
                Stored::Corrupt(p) if mode != StoreMode::Force => return Err(self.corrupt(p)),
                Stored::Record(r) => check_store(&self.node, Some(r), record, mode)?,
                Stored::Absent | Stored::Corrupt(_) => check_store(&self.node, None, record, mode)?,
            }
            let [owner_rev, owner_value] = self.holding.fence_compares();
            let txn = Txn::new()
                .when([
                    owner_rev,
                    owner_value,
                    Compare::mod_revision(self.record_key.clone(), CompareOp::Equal, cache.rev),
                ])
                .and_then([TxnOp::put(self.record_key.clone(), bytes.clone(), None)])
                .or_else([
                    TxnOp::get(self.owner_key.clone(), None),
                    TxnOp::get(self.record_key.clone(), None),
                ]);
            let resp = self.client.txn("store the tower", txn).await?;
            if resp.succeeded() {
                let rev = resp.header().map_or(0, |h| h.revision());
                cache.rev = rev;
                cache.value = Stored::Record(record.clone());
                cache.floor = Some(Floor::of(record));
                // An answer that arrives after the lease may have expired
                // (this process was paused, say) must not release a vote.
                if let Err(e) = self.holding.check() {
                    tracing::warn!(node = %self.node, revision = rev, "tower stored, but ownership was lost before the answer arrived: vote withheld");
                    return Err(e);
                }
                return Ok(StoreReceipt {
                    fence: self.holding.fence as u64,
                    sequence: rev as u64,
                });
            }
            let responses = resp.op_responses();
            let owner = get_kv(&responses, 0);
            if owner.as_ref().is_none_or(|kv| !self.holding.is_ours(kv)) {
                return Err(self.fenced_by(&resp));
            }
            let seen = cache.rev;
            self.adopt(&mut cache, get_kv(&responses, 1).as_ref())?;
            tracing::warn!(node = %self.node, seen, now = cache.rev, "tower record changed in etcd under this owner; re-checking");
        }
        Err(Error::Unavailable {
            backend: "etcd",
            detail: format!(
                "store the tower: {} kept changing under this owner",
                self.record_key
            ),
            source: None,
        })
    }
}

impl std::fmt::Debug for EtcdTowerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTowerStorage")
            .field("node", &self.node)
            .field("record_key", &self.record_key)
            .field("holding", &self.holding)
            .finish()
    }
}

/// The key-value of the `i`-th operation, if it is a get that found one.
fn get_kv(responses: &[TxnOpResponse], i: usize) -> Option<KeyValue> {
    match responses.get(i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
        _ => None,
    }
}
