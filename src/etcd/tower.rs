//! `EtcdTowerStorage`: one node's tower in etcd, written only under the
//! fence of the ownership it was opened with.

use async_trait::async_trait;

use crate::error::{FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::fenced::{FencedKey, FencedValue, Stored};
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
/// - **store** is ONE transaction: compare the owner key with this
///   ownership (its `mod_revision` is the fence *and* its value this
///   claim) *and* the record's `mod_revision` with the one last seen, then
///   put the record. A failed owner compare returns [`Error::Fenced`](crate::Error::Fenced)
///   naming the new owner, and marks the ownership lost. A failed record
///   compare (someone else wrote it) reloads, re-applies [`check_store`]
///   to what is there, and retries.
/// - **load** reads the record in a transaction that compares the fence.
/// - A record read that is older than one this process stored or read
///   before (a snapshot restored, a backup put back, the key deleted) is
///   [`Error::Regressed`](crate::Error::Regressed), refused until an operator repairs it.
/// - A value that is not this node's validly signed record is
///   [`Error::Corrupt`](crate::Error::Corrupt) and is never overwritten, except by
///   [`StoreMode::Force`] (operator recovery).
/// - Before each operation the ownership's local state is checked: once the
///   loss is known, or the lease may have expired on the server, every
///   operation fails with [`Error::Fenced`](crate::Error::Fenced) without asking etcd. A store
///   whose answer arrives after that point also fails (its vote is
///   withheld), although its write is in etcd.
/// - Every call returns within the client's request deadline (plus, for a
///   store, one deadline per retry after a record change); etcd down or
///   without quorum gives [`Error::Unavailable`](crate::Error::Unavailable).
/// - Keep the [`Ownership`] alive while the storage is in use: dropping it
///   stops the lease keep-alive, and the storage refuses from then on.
pub struct EtcdTowerStorage {
    key: FencedKey<TowerRecord>,
}

/// "Older" for a tower: its last vote or its root went back.
impl FencedValue for TowerRecord {
    fn decode(bytes: &[u8], node: &NodeId) -> std::result::Result<Self, FormatError> {
        TowerRecord::decode(bytes, node)
    }

    fn not_older_than(&self, floor: &Self) -> bool {
        self.last_vote_slot() >= floor.last_vote_slot() && self.root() >= floor.root()
    }

    fn describe(&self) -> String {
        let slot = |s: Option<u64>| s.map_or("none".to_string(), |s| format!("slot {s}"));
        format!(
            "a tower with last vote {} and root {}",
            slot(self.last_vote_slot()),
            slot(self.root())
        )
    }

    fn what(key: &str) -> String {
        format!("the tower {key}")
    }

    fn load() -> &'static str {
        "load the tower"
    }

    fn absent() -> &'static str {
        "no tower at all"
    }

    fn recovery(key: &str) -> String {
        format!(
            "stop this validator; put the newest tower back with `slashguard tower import --keypair <identity keypair> --from-agave <its tower directory> --etcd` (or restore the etcd snapshot that holds it, see README \"Restoring an etcd snapshot\"), then start it again; it will not vote on {key} until then"
        )
    }
}

impl EtcdTowerStorage {
    /// Open the tower of `identity` under `ownership` (from
    /// [`EtcdIdentity::take_over`] or
    /// [`acquire_when_free`](EtcdIdentity::acquire_when_free)), reading the
    /// record under the fence.
    ///
    /// Errors: [`Error::Invalid`](crate::Error::Invalid) if `ownership` was not granted by
    /// `identity`; [`Error::Fenced`](crate::Error::Fenced) if it is already lost (taken over,
    /// expired, released or superseded); [`Error::Unavailable`](crate::Error::Unavailable). A damaged
    /// record does not fail the open: [`load`](TowerStorage::load) and
    /// stores report it.
    pub async fn open(identity: &EtcdIdentity, ownership: &Ownership) -> Result<Self> {
        let holding = identity.holding(ownership)?;
        let client = identity.client().clone();
        let node = identity.node();
        let record_key = client.keys().record(&node);
        Ok(EtcdTowerStorage {
            key: FencedKey::open(client, node, record_key, holding).await?,
        })
    }

    /// Read `node`'s tower record without owning the identity and without
    /// comparing a fence (inspection and export tools). The record is
    /// verified as [`load`](TowerStorage::load) does; `Ok(None)` when none
    /// was ever stored. The owner may store a newer record right after.
    ///
    /// Errors: [`Error::Corrupt`](crate::Error::Corrupt) naming the key if the value is not this
    /// node's validly signed record; [`Error::Unavailable`](crate::Error::Unavailable).
    pub async fn read_unfenced(client: &EtcdClient, node: NodeId) -> Result<Option<TowerRecord>> {
        crate::etcd::fenced::read_unfenced(client, node, client.keys().record(&node)).await
    }

    /// The fence this storage writes under.
    pub fn fence(&self) -> u64 {
        self.key.holding.fence as u64
    }

    /// `true` once the ownership behind this storage is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.key.holding.is_lost()
    }
}

#[async_trait]
impl TowerStorage for EtcdTowerStorage {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn node(&self) -> NodeId {
        self.key.node
    }

    async fn load(&self) -> Result<Option<TowerRecord>> {
        let mut cache = self.key.lock().await;
        self.key.read(&mut cache).await?;
        Ok(self.key.current(&cache)?.cloned())
    }

    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
        let mut cache = self.key.lock().await;
        self.key.holding.check()?;
        let bytes = record.encode();
        for _ in 0..STORE_ATTEMPTS {
            // A regression seen by an earlier load stays refused.
            self.key.check_floor(&mut cache)?;
            // The ordering rule against what etcd holds (the compare in
            // the put proves that it still holds it).
            match &cache.value {
                Stored::Corrupt(p) if mode != StoreMode::Force => return Err(self.key.corrupt(p)),
                Stored::Value(r) => check_store(&self.key.node, Some(r), record, mode)?,
                Stored::Absent | Stored::Corrupt(_) => {
                    check_store(&self.key.node, None, record, mode)?
                }
            }
            if let Some(rev) = self
                .key
                .put(&mut cache, bytes.clone(), record.clone(), "store the tower")
                .await?
            {
                return Ok(StoreReceipt {
                    fence: self.fence(),
                    sequence: rev as u64,
                });
            }
        }
        Err(self.key.gave_up("store the tower"))
    }
}

impl std::fmt::Debug for EtcdTowerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTowerStorage")
            .field("node", &self.key.node)
            .field("record_key", &self.key.record_key)
            .field("holding", &self.key.holding)
            .finish()
    }
}
