//! One record key (a node's tower, or its Alpenglow vote history) written
//! only under the fence of the ownership it was opened with, and never
//! believed when it goes backwards.
//!
//! - Every read and write is ONE transaction comparing the owner key with
//!   this ownership (its revision is the fence AND its value is this
//!   claim's bytes: after a snapshot restore another owner's claim can land
//!   at the same revision); a write also compares the record's
//!   `mod_revision` with the one last seen. A failed owner compare is
//!   [`Error::Fenced`] naming the new owner, and marks the ownership lost.
//! - The record as last seen is cached with a *floor*: the newest value
//!   this process wrote or read. A value read later that is older than the
//!   floor (a snapshot restored, a backup put back, the key deleted) is
//!   [`Error::Regressed`], and every later operation refuses the same way
//!   until an operator repairs the key: believing it could vote twice.
//!
//! The store-specific part (decoding, what "older" means, the messages and
//! the operator's repair) is the [`FencedValue`] of the record.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{Error, FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::holding::Holding;
use crate::etcd::keepalive::describe_owner;
use crate::identity::NodeId;

/// A record kept under a [`FencedKey`].
pub(crate) trait FencedValue: Clone + Send + Sync + 'static {
    /// Decode and verify a value of `node`.
    fn decode(bytes: &[u8], node: &NodeId) -> std::result::Result<Self, FormatError>;
    /// `true` when `self` may follow `floor` (it is not older).
    fn not_older_than(&self, floor: &Self) -> bool;
    /// What the value holds, for messages ("a tower with last vote ...").
    fn describe(&self) -> String;
    /// What the key is, for messages ("the tower <key>").
    fn what(key: &str) -> String;
    /// What an absent key is, for messages ("no tower at all").
    fn absent() -> &'static str;
    /// The read, for an unavailable etcd's message ("load the tower").
    fn load() -> &'static str;
    /// The operator's repair of a regressed `key`.
    fn recovery(key: &str) -> String;
}

/// The record as last seen in etcd.
pub(crate) enum Stored<V> {
    Absent,
    Value(V),
    Corrupt(FormatError),
}

/// The cache of one key, behind the key's mutex.
pub(crate) struct Cached<V> {
    /// `mod_revision` of the record key, 0 when absent.
    pub(crate) rev: i64,
    pub(crate) value: Stored<V>,
    /// The newest value this process wrote or read; survives reloads.
    floor: Option<V>,
}

/// A record key written only under one ownership's fence.
pub(crate) struct FencedKey<V> {
    pub(crate) client: EtcdClient,
    pub(crate) node: NodeId,
    pub(crate) owner_key: String,
    pub(crate) record_key: String,
    pub(crate) holding: Arc<Holding>,
    cache: Mutex<Cached<V>>,
}

impl<V: FencedValue> FencedKey<V> {
    /// A key of `node` held under `holding`, read once under the fence.
    pub(crate) async fn open(
        client: EtcdClient,
        node: NodeId,
        record_key: String,
        holding: Arc<Holding>,
    ) -> Result<Self> {
        let key = FencedKey {
            owner_key: client.keys().owner(&node),
            client,
            node,
            record_key,
            holding,
            cache: Mutex::new(Cached {
                rev: 0,
                value: Stored::Absent,
                floor: None,
            }),
        };
        let mut cache = key.cache.lock().await;
        key.read(&mut cache).await?;
        drop(cache);
        Ok(key)
    }

    /// The cache, for one operation at a time.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, Cached<V>> {
        self.cache.lock().await
    }

    fn owner_compares(&self) -> [Compare; 2] {
        self.holding.fence_compares()
    }

    /// Read the record under the fence into `cache` (refused when it went
    /// backwards).
    pub(crate) async fn read(&self, cache: &mut Cached<V>) -> Result<()> {
        self.holding.check()?;
        let txn = Txn::new()
            .when(self.owner_compares())
            .and_then([TxnOp::get(self.record_key.clone(), None)])
            .or_else([TxnOp::get(self.owner_key.clone(), None)]);
        let resp = self.client.txn(V::load(), txn).await?;
        if !resp.succeeded() {
            return Err(self.fenced_by(&resp));
        }
        self.adopt(cache, get_kv(&resp.op_responses(), 0).as_ref())
    }

    /// Take `kv` (the record as read) as the current value, unless it is
    /// older than the floor: then [`Error::Regressed`], and the floor stays
    /// so that every later operation refuses too.
    fn adopt(&self, cache: &mut Cached<V>, kv: Option<&KeyValue>) -> Result<()> {
        let (rev, value) = match kv {
            None => (0, Stored::Absent),
            Some(kv) => (
                kv.mod_revision(),
                match V::decode(kv.value(), &self.node) {
                    Ok(v) => Stored::Value(v),
                    Err(e) => Stored::Corrupt(e),
                },
            ),
        };
        cache.rev = rev;
        cache.value = value;
        self.check_floor(cache)
    }

    /// [`Error::Regressed`] when the cached value is older than the floor;
    /// otherwise the floor follows it. Called first by every write, so a
    /// regression seen once stays refused.
    pub(crate) fn check_floor(&self, cache: &mut Cached<V>) -> Result<()> {
        let Some(floor) = &cache.floor else {
            if let Stored::Value(v) = &cache.value {
                cache.floor = Some(v.clone());
            }
            return Ok(());
        };
        let found = match &cache.value {
            Stored::Absent => V::absent().to_string(),
            Stored::Value(v) if v.not_older_than(floor) => {
                cache.floor = Some(v.clone());
                return Ok(());
            }
            Stored::Value(v) => v.describe(),
            // Reported as Corrupt by the caller.
            Stored::Corrupt(_) => return Ok(()),
        };
        let floor = floor.describe();
        tracing::error!(node = %self.node, key = %self.record_key, %floor, %found, "record in etcd went backwards under its owner; refusing");
        Err(Error::Regressed {
            what: V::what(&self.record_key),
            floor,
            found,
            recovery: V::recovery(&self.record_key),
        })
    }

    /// The cached value: `None` when absent, [`Error::Corrupt`] when it
    /// does not decode.
    pub(crate) fn current<'a>(&self, cache: &'a Cached<V>) -> Result<Option<&'a V>> {
        match &cache.value {
            Stored::Absent => Ok(None),
            Stored::Value(v) => Ok(Some(v)),
            Stored::Corrupt(p) => Err(self.corrupt(p)),
        }
    }

    pub(crate) fn corrupt(&self, problem: &FormatError) -> Error {
        Error::corrupt(self.record_key.clone(), problem.clone())
    }

    /// Put `bytes` (the encoding of `value`) if the fence and the record's
    /// revision still hold. `Ok(Some(rev))` when written (the cache and
    /// the floor follow `value`); `Ok(None)` when the record changed under
    /// this owner (the cache now holds the new value: plan again);
    /// [`Error::Fenced`] when the owner compare failed;
    /// [`Error::Regressed`] when the record changed to an older value.
    /// An answer that arrives after the lease may have expired is
    /// [`Error::Fenced`] although the write is in etcd: its vote must not
    /// leave.
    pub(crate) async fn put(
        &self,
        cache: &mut Cached<V>,
        bytes: Vec<u8>,
        value: V,
        what: &str,
    ) -> Result<Option<i64>> {
        let [owner_rev, owner_value] = self.owner_compares();
        let txn = Txn::new()
            .when([
                owner_rev,
                owner_value,
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
            cache.rev = rev;
            cache.value = Stored::Value(value.clone());
            cache.floor = Some(value);
            if let Err(e) = self.holding.check() {
                tracing::warn!(node = %self.node, revision = rev, "stored, but ownership was lost before the answer arrived: vote withheld");
                return Err(e);
            }
            return Ok(Some(rev));
        }
        let responses = resp.op_responses();
        if get_kv(&responses, 0)
            .as_ref()
            .is_none_or(|kv| !self.holding.is_ours(kv))
        {
            return Err(self.fenced_by(&resp));
        }
        let seen = cache.rev;
        self.adopt(cache, get_kv(&responses, 1).as_ref())?;
        tracing::warn!(node = %self.node, key = %self.record_key, seen, now = cache.rev, "record changed in etcd under this owner; re-checking");
        Ok(None)
    }

    /// The owner compare failed: name the new owner, mark the loss. The
    /// else branch's first operation reads the owner key.
    pub(crate) fn fenced_by(&self, resp: &TxnResponse) -> Error {
        let reason = match get_kv(&resp.op_responses(), 0) {
            None => {
                "the owner key is gone: the lease expired or the identity was released".to_string()
            }
            Some(kv) => describe_owner(&kv, &self.holding),
        };
        self.holding.lose(reason.clone());
        self.holding.fenced(reason)
    }

    /// A write that kept finding the record changed.
    pub(crate) fn gave_up(&self, what: &str) -> Error {
        Error::Unavailable {
            backend: "etcd",
            detail: format!("{what}: {} kept changing under this owner", self.record_key),
            source: None,
        }
    }
}

/// Read `node`'s record at `key` without owning the identity and without
/// comparing a fence (inspection and export). Decoded and verified as a
/// fenced read would; `Ok(None)` when the key does not exist. The owner may
/// write a newer value right after.
pub(crate) async fn read_unfenced<V: FencedValue>(
    client: &EtcdClient,
    node: NodeId,
    key: String,
) -> Result<Option<V>> {
    let resp = client
        .call(V::load(), client.deadline(), || {
            let mut c = client.raw();
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => V::decode(kv.value(), &node)
            .map(Some)
            .map_err(|p| Error::corrupt(key.clone(), p)),
    }
}

/// The key-value of the `i`-th operation, if it is a get that found one.
pub(crate) fn get_kv(responses: &[TxnOpResponse], i: usize) -> Option<KeyValue> {
    match responses.get(i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
        _ => None,
    }
}
