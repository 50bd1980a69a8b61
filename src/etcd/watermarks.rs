//! `EtcdWatermarks`: high watermarks shared by any number of signer
//! processes on any number of hosts, advanced by compare-and-set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};

use crate::error::{Error, FormatError, Result};
use crate::etcd::client::EtcdClient;
use crate::etcd::holding::Holding;
use crate::etcd::keepalive::describe_owner;
use crate::etcd::keys::EtcdKeys;
use crate::etcd::ownership::EtcdIdentity;
use crate::failover::Ownership;
use crate::watermark::table::Changes;
use crate::watermark::{
    decode_entry, encode_entry, Decision, Mark, SetMode, SignRequest, SignerGuard, Watermark,
    WatermarkKey, WatermarkTable,
};

/// Compare-and-set rounds before giving up under contention.
const ATTEMPTS: usize = 8;

/// Most keys in one batch (etcd allows 128 operations per transaction by
/// default, and a batch needs two per key).
pub const MAX_BATCH: usize = 32;

/// Watermarks in etcd, one key per (chain, key, kind):
/// `<prefix>/wm/<chain>/<key hash>/<kind>`, each value one 173-byte
/// self-describing, CRC'd entry ([`encode_entry`]).
///
/// - **authorize** decides against the last values seen, then sends ONE
///   transaction that compares every batch key's `mod_revision` with the
///   one seen (0 for an absent key) and puts the advanced entries. When a
///   compare fails (another signer wrote first), the same transaction's
///   else branch returns the current values; the batch is decided again
///   on them and retried (at most 8 rounds). In steady state that is one
///   round trip. A refusal decided on remembered values is confirmed with
///   one fresh read before it is returned.
/// - So any number of processes and hosts may share the keys: for each
///   (key, chain, kind, level, round) exactly one payload is ever
///   authorized. No etcd lock or lease is involved.
/// - A batch (a consensus key and its companion key) is all or nothing:
///   one transaction for every key.
/// - A value that is not the entry of its key (garbage, truncated, another
///   key's entry) is [`Error::Corrupt`] and is never overwritten, except
///   by [`set_marks`](SignerGuard::set_marks) in [`SetMode::Force`].
/// - etcd down or without quorum: [`Error::Unavailable`] within the
///   client's request deadline (each compare-and-set round has its own
///   deadline; rounds only follow answers, never timeouts).
/// - A handle from [`fenced`](EtcdWatermarks::fenced) writes only while an
///   ownership holds: every write transaction also compares the owner
///   key's revision and claim, so a signer that lost its baker's
///   ownership (paused, cut off from etcd, taken over) cannot move a mark,
///   even with a request it checked before the loss.
pub struct EtcdWatermarks {
    client: EtcdClient,
    keys: EtcdKeys,
    /// Shared by every handle [`fenced`](EtcdWatermarks::fenced) makes from
    /// this one: what one ownership term saw still counts in the next.
    seen: Arc<Seen>,
    /// The ownership every write is fenced by, if any.
    fence: Option<Arc<Holding>>,
}

/// What this process knows of the keys.
#[derive(Default)]
struct Seen {
    cache: Mutex<HashMap<WatermarkKey, Slot>>,
    /// Per key, the highest mark this process authorized, set or saw in
    /// etcd: a value below it (or a missing key) later is a regression
    /// (a deleted key, a restored snapshot) and is refused, never adopted.
    floor: Mutex<HashMap<WatermarkKey, Mark>>,
}

/// A key's value as last seen.
#[derive(Clone)]
struct Slot {
    /// `mod_revision` of the key, 0 when absent.
    rev: i64,
    /// The store revision at which it was seen (newer sightings win).
    seen: i64,
    /// The value's exact bytes (empty when absent). A compare-and-set
    /// compares them as well as `rev`: after a snapshot restore another
    /// value can sit at the same revision.
    bytes: Vec<u8>,
    entry: Entry,
}

#[derive(Clone)]
enum Entry {
    Absent,
    Mark(Watermark),
    Corrupt(FormatError),
}

impl Slot {
    const UNKNOWN: Slot = Slot {
        rev: 0,
        seen: 0,
        bytes: Vec::new(),
        entry: Entry::Absent,
    };
}

impl EtcdWatermarks {
    /// Watermarks under the client's key prefix. Nothing is read until the
    /// first request.
    pub fn new(client: EtcdClient) -> Self {
        EtcdWatermarks {
            keys: client.keys(),
            client,
            seen: Arc::default(),
            fence: None,
        }
    }

    /// A handle on the same watermarks (and the same memory of them: cache
    /// and regression floors) whose writes are fenced by `ownership` of
    /// `identity` (a baker's signers sharing one owner key, see
    /// [`EtcdIdentity`]): each authorization and set is ONE transaction
    /// that also compares the owner key's revision with the ownership's
    /// fence and its value with the claim's bytes. Once the ownership is
    /// known to be lost, or its lease may have expired on the server, or
    /// the compare finds another owner (or none), the write fails with
    /// [`Error::Fenced`] and nothing is written; an answer that arrives
    /// after the lease may have expired is [`Error::Fenced`] too (the mark
    /// is in etcd, the signature is withheld). Reads are not fenced.
    ///
    /// Errors: [`Error::Invalid`] if `ownership` was not granted by
    /// `identity`, or `identity` uses another etcd prefix than these
    /// watermarks; [`Error::Fenced`] if it is already lost.
    pub fn fenced(&self, identity: &EtcdIdentity, ownership: &Ownership) -> Result<Self> {
        let holding = identity.holding(ownership)?;
        if identity.client().keys() != self.keys {
            return Err(Error::Invalid(format!(
                "the ownership of {} is kept under {:?} and the watermarks under {:?}: one prefix for both",
                identity.node(),
                identity.client().keys().prefix(),
                self.keys.prefix()
            )));
        }
        holding.check()?;
        Ok(EtcdWatermarks {
            client: self.client.clone(),
            keys: self.keys.clone(),
            seen: self.seen.clone(),
            fence: Some(holding),
        })
    }

    /// The fence of the ownership this handle writes under, if any.
    pub fn fence(&self) -> Option<u64> {
        self.fence.as_ref().map(|h| h.fence as u64)
    }

    /// The key layout.
    pub fn keys(&self) -> &EtcdKeys {
        &self.keys
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<WatermarkKey, Slot>> {
        self.seen.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn floor(&self) -> std::sync::MutexGuard<'_, HashMap<WatermarkKey, Mark>> {
        self.seen.floor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raise `key`'s floor to `mark` (or, for an operator's forced set
    /// through this handle, put it exactly there).
    fn raise_floor(&self, key: WatermarkKey, mark: Mark, replace: bool) {
        let mut floor = self.floor();
        let f = floor.entry(key).or_insert(mark);
        if replace || mark > *f {
            *f = mark;
        }
    }

    /// [`Error::Regressed`] when `slot` shows `key` below what this process
    /// authorized, set or saw before.
    fn check_floor(&self, key: &WatermarkKey, slot: &Slot) -> Result<()> {
        let floor = self.floor().get(key).copied();
        self.check_floor_at(key, slot, floor)
    }

    /// [`check_floor`](Self::check_floor) against a floor captured BEFORE
    /// `slot` was taken: another task of this process may raise the floor
    /// after this task took its (then current) slot, and that is a race,
    /// not a regression.
    fn check_floor_at(&self, key: &WatermarkKey, slot: &Slot, floor: Option<Mark>) -> Result<()> {
        let Some(floor) = floor else {
            return Ok(());
        };
        let found = match &slot.entry {
            Entry::Absent => "no entry (the key is missing)".to_string(),
            Entry::Mark(w) if w.mark < floor => format!("{}", w.mark),
            Entry::Mark(_) | Entry::Corrupt(_) => return Ok(()),
        };
        let path = self.keys.watermark(key);
        tracing::error!(key = %path, %floor, %found, "watermark in etcd went backwards; refusing");
        Err(Error::Regressed {
            what: format!("the watermark {path}"),
            floor: format!("{floor}"),
            found,
            recovery: format!(
                "raise it again with `slashguard watermark set-level --etcd --chain {} --key {} --level <current chain level + 10, at least {}>` (a restored etcd snapshot: see README \"Restoring an etcd snapshot\"). Only if an operator lowered it on purpose, restart this signer to accept the lower mark",
                key.chain,
                key.key,
                floor.level.saturating_add(1)
            ),
        })
    }

    fn snapshot(&self, keys: &[WatermarkKey]) -> Vec<Slot> {
        let cache = self.cache();
        keys.iter()
            .map(|k| cache.get(k).cloned().unwrap_or(Slot::UNKNOWN))
            .collect()
    }

    /// Remember `slot` unless a newer sighting is already remembered; a
    /// mark seen raises the key's floor.
    fn absorb(&self, key: WatermarkKey, slot: Slot) {
        // The cache first, then the floor: a task that captured a floor and
        // then took the cache's slot never sees a slot below that floor
        // unless etcd really went backwards.
        let mark = match &slot.entry {
            Entry::Mark(w) => Some(w.mark),
            _ => None,
        };
        {
            let mut cache = self.cache();
            match cache.get(&key) {
                Some(old) if old.seen > slot.seen => {}
                _ => {
                    cache.insert(key, slot);
                }
            }
        }
        if let Some(mark) = mark {
            self.raise_floor(key, mark, false);
        }
    }

    fn decode(&self, key: &WatermarkKey, kv: Option<&KeyValue>, seen: i64) -> Slot {
        match kv {
            None => Slot {
                rev: 0,
                seen,
                bytes: Vec::new(),
                entry: Entry::Absent,
            },
            Some(kv) => Slot {
                rev: kv.mod_revision(),
                seen,
                bytes: kv.value().to_vec(),
                entry: match decode_entry(kv.value(), Some(key)) {
                    Ok((_, w)) => Entry::Mark(w),
                    Err(e) => Entry::Corrupt(e),
                },
            },
        }
    }

    fn corrupt(&self, key: &WatermarkKey, problem: &FormatError) -> Error {
        Error::corrupt(self.keys.watermark(key), problem.clone())
    }

    /// The remembered marks of `keys` as a table. Damaged entries are an
    /// error unless `force` (then they count as absent, to be overwritten),
    /// and so are values below the floor (a forced set is the operator's
    /// recovery from either).
    fn table(
        &self,
        keys: &[WatermarkKey],
        slots: &[Slot],
        floors: &[Option<Mark>],
        force: bool,
    ) -> Result<WatermarkTable> {
        let mut table = WatermarkTable::new();
        let mut marks = Vec::new();
        for ((k, s), f) in keys.iter().zip(slots).zip(floors) {
            if !force {
                self.check_floor_at(k, s, *f)?;
            }
            match &s.entry {
                Entry::Mark(w) => marks.push((*k, *w)),
                Entry::Absent => {}
                Entry::Corrupt(_) if force => {}
                Entry::Corrupt(p) => return Err(self.corrupt(k, p)),
            }
        }
        table.apply(&marks);
        Ok(table)
    }

    /// Read `keys` afresh (one read-only transaction).
    async fn refresh(&self, keys: &[WatermarkKey]) -> Result<()> {
        let txn = Txn::new().and_then(
            keys.iter()
                .map(|k| TxnOp::get(self.keys.watermark(k), None))
                .collect::<Vec<_>>(),
        );
        let resp = self.client.txn("read watermarks", txn).await?;
        self.absorb_gets(keys, &resp.op_responses(), header_rev(&resp));
        Ok(())
    }

    fn absorb_gets(&self, keys: &[WatermarkKey], responses: &[TxnOpResponse], seen: i64) {
        for (i, k) in keys.iter().enumerate() {
            let kv = match responses.get(i) {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                _ => None,
            };
            self.absorb(*k, self.decode(k, kv.as_ref(), seen));
        }
    }

    /// ONE transaction: if every key still holds the value in `slots` (the
    /// same revision AND the same bytes), write `changes`. `Ok(false)` when
    /// a compare failed; the current values are then remembered. `force`:
    /// an operator's forced set, whose marks replace the floor.
    async fn compare_and_set(
        &self,
        what: &str,
        keys: &[WatermarkKey],
        slots: &[Slot],
        changes: &[(WatermarkKey, Watermark)],
        force: bool,
    ) -> Result<bool> {
        // Known lost, or the lease may have expired: not even asked.
        if let Some(h) = &self.fence {
            h.check()?;
        }
        // Each key's path once: it is base58check-encoded, which costs
        // more than the rest of building the transaction.
        let paths: Vec<String> = keys.iter().map(|k| self.keys.watermark(k)).collect();
        let path_of = |k: &WatermarkKey| {
            keys.iter()
                .position(|x| x == k)
                .map_or_else(|| self.keys.watermark(k), |i| paths[i].clone())
        };
        let mut compares: Vec<Compare> = Vec::with_capacity(2 * keys.len() + 2);
        // The owner key first, so that its read leads the else branch.
        let mut gets: Vec<TxnOp> = Vec::with_capacity(keys.len() + 1);
        if let Some(h) = &self.fence {
            compares.extend(h.fence_compares());
            gets.push(TxnOp::get(h.owner_key.clone(), None));
        }
        for (p, s) in paths.iter().zip(slots) {
            compares.push(Compare::mod_revision(p.clone(), CompareOp::Equal, s.rev));
            // A revision is not an identity (etcd hands revisions out again
            // after a snapshot restore): compare the bytes too. An absent
            // key has no value to compare; its revision 0 says absent.
            if s.rev != 0 {
                compares.push(Compare::value(p.clone(), CompareOp::Equal, s.bytes.clone()));
            }
        }
        let values: Vec<Vec<u8>> = changes
            .iter()
            .map(|(k, w)| encode_entry(k, w).to_vec())
            .collect();
        let puts: Vec<TxnOp> = changes
            .iter()
            .zip(&values)
            .map(|((k, _), v)| TxnOp::put(path_of(k), v.clone(), None))
            .collect();
        gets.extend(paths.iter().map(|p| TxnOp::get(p.clone(), None)));
        let txn = Txn::new().when(compares).and_then(puts).or_else(gets);
        let resp = self.client.txn(what, txn).await?;
        let rev = header_rev(&resp);
        let mut responses = resp.op_responses();
        if let Some(h) = self.fence.as_ref().filter(|_| !resp.succeeded()) {
            let owner = match responses.first() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                _ => None,
            };
            if owner.as_ref().is_none_or(|kv| !h.is_ours(kv)) {
                let reason = match owner {
                    None => "the owner key is gone: the lease expired or the baker was released"
                        .to_string(),
                    Some(kv) => describe_owner(&kv, h),
                };
                h.lose(reason.clone());
                return Err(h.fenced(reason));
            }
            responses.remove(0);
        }
        if resp.succeeded() {
            for ((k, w), bytes) in changes.iter().zip(values) {
                self.raise_floor(*k, w.mark, force);
                self.absorb(
                    *k,
                    Slot {
                        rev,
                        seen: rev,
                        bytes,
                        entry: Entry::Mark(*w),
                    },
                );
            }
            // Written while the ownership held (the compare says so), but
            // an answer this late must not release a signature.
            if let Some(h) = &self.fence {
                if let Err(e) = h.check() {
                    tracing::warn!(revision = rev, fence = h.fence, "watermarks advanced, but the ownership was lost before the answer arrived: signature withheld");
                    return Err(e);
                }
            }
            return Ok(true);
        }
        self.absorb_gets(keys, &responses, rev);
        Ok(false)
    }

    /// The compare-and-set loop of `authorize` and `set_marks`: plan on
    /// the cached values, commit with one transaction comparing every key's
    /// revision; after a lost race, or a refusal decided on cached values,
    /// plan again on fresh values. A refusal is final only when it was
    /// decided on values read from etcd during this call.
    async fn cas_loop<T>(
        &self,
        op: &'static str,
        keys: &[WatermarkKey],
        force: bool,
        plan: impl Fn(&WatermarkTable) -> Result<(T, Changes)>,
    ) -> Result<T> {
        let mut fresh = false;
        for _ in 0..ATTEMPTS {
            // The floors before the slots (see `check_floor_at`).
            let floors: Vec<Option<Mark>> = {
                let floor = self.floor();
                keys.iter().map(|k| floor.get(k).copied()).collect()
            };
            let slots = self.snapshot(keys);
            match self
                .table(keys, &slots, &floors, force)
                .and_then(|t| plan(&t))
            {
                Ok((out, changes)) => {
                    if self
                        .compare_and_set(op, keys, &slots, &changes, force)
                        .await?
                    {
                        return Ok(out);
                    }
                    fresh = true;
                }
                Err(e @ (Error::Refused(_) | Error::Corrupt { .. } | Error::Regressed { .. })) => {
                    if fresh {
                        return Err(e);
                    }
                    self.refresh(keys).await?;
                    fresh = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(self.contention(op))
    }

    fn contention(&self, what: &str) -> Error {
        Error::Unavailable {
            backend: "etcd",
            detail: format!("{what}: the keys kept changing for {ATTEMPTS} compare-and-set rounds"),
            source: None,
        }
    }
}

fn header_rev(resp: &etcd_client::TxnResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

fn check_batch_len(n: usize) -> Result<()> {
    if n > MAX_BATCH {
        return Err(Error::Invalid(format!(
            "{n} watermarks in one batch; at most {MAX_BATCH}"
        )));
    }
    Ok(())
}

#[async_trait]
impl SignerGuard for EtcdWatermarks {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        check_batch_len(requests.len())?;
        let keys: Vec<WatermarkKey> = requests.iter().map(|r| r.key).collect();
        self.cas_loop("authorize", &keys, false, |t| t.plan_authorize(requests))
            .await
    }

    // From the cache only (no round trip on the signing path): a cached
    // entry with this exact mark and payload hash was authorized once, and
    // its signature is the one stored for those bytes. Anything else is
    // decided by `authorize`, which reads etcd.
    async fn stored_signature(
        &self,
        request: &SignRequest,
    ) -> Result<Option<crate::watermark::StoredSignature>> {
        Ok(match self.cache().get(&request.key).map(|s| &s.entry) {
            Some(Entry::Mark(w)) => w.signature_of(request),
            _ => None,
        })
    }

    // From the cache, as `stored_signature`: after `reload` it is the
    // store's current value; otherwise it may lag (another host signed
    // since) and `authorize`, which reads etcd, decides. Only a refusal by
    // a remembered mark is final here: etcd's mark is at least that high
    // (a lower one is a regression, which `authorize` refuses too). A
    // remembered damaged or regressed entry is left to `authorize`, which
    // reads it again (an operator may have repaired it since).
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let slot = self.snapshot(&[request.key]).remove(0);
        if let Entry::Mark(w) = &slot.entry {
            crate::watermark::decide(Some(w), request)?;
        }
        Ok(())
    }

    // The read is fresh, so unlike `precheck` (which may answer from a
    // stale cache and leaves doubt to `authorize`) it refuses damage and
    // regressions at once: the next step asks a device that cannot take
    // its signature back.
    async fn reload(&self, key: &WatermarkKey) -> Result<()> {
        self.watermark(key).await.map(|_| ())
    }

    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        let keys = [*key];
        self.refresh(&keys).await?;
        let slot = self.snapshot(&keys).remove(0);
        self.check_floor(key, &slot)?;
        match slot.entry {
            Entry::Absent => Ok(None),
            Entry::Mark(w) => Ok(Some(w)),
            Entry::Corrupt(p) => Err(self.corrupt(key, &p)),
        }
    }

    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        let prefix = self.keys.watermarks();
        let client = &self.client;
        let resp = client
            .call("list watermarks", client.deadline(), || {
                let mut c = client.raw();
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let seen = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let path = String::from_utf8_lossy(kv.key()).into_owned();
            let (key, wm) =
                decode_entry(kv.value(), None).map_err(|p| Error::corrupt(path.clone(), p))?;
            if self.keys.watermark(&key) != path {
                return Err(Error::corrupt(
                    path,
                    FormatError::InvalidField {
                        field: "key",
                        detail: format!("entry is for {key}, stored under another key"),
                    },
                ));
            }
            let slot = Slot {
                rev: kv.mod_revision(),
                seen,
                bytes: kv.value().to_vec(),
                entry: Entry::Mark(wm),
            };
            self.check_floor(&key, &slot)?;
            self.absorb(key, slot);
            out.push((key, wm));
        }
        // A key this process wrote or saw that is missing now.
        let floors: Vec<WatermarkKey> = self.floor().keys().copied().collect();
        for key in floors {
            if !out.iter().any(|(k, _)| *k == key) {
                let gone = Slot {
                    seen,
                    ..Slot::UNKNOWN
                };
                self.check_floor(&key, &gone)?;
            }
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        check_batch_len(marks.len())?;
        let keys: Vec<WatermarkKey> = marks.iter().map(|(k, _)| *k).collect();
        let force = mode == SetMode::Force;
        self.cas_loop("set watermarks", &keys, force, |t| {
            t.plan_set(marks, mode).map(|changes| ((), changes))
        })
        .await
    }
}

impl std::fmt::Debug for EtcdWatermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWatermarks")
            .field("prefix", &self.keys.prefix())
            .field("cached_keys", &self.cache().len())
            .field("fence", &self.fence())
            .finish()
    }
}
