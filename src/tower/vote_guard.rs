//! Write-tower-before-vote, enforced by ownership of the keys: the guard
//! owns the identity (and voter) keypairs, and the only way to get a vote
//! signature out of it is a completed, durable, fenced tower store whose
//! last vote is exactly the vote the signed message casts.

use tokio::sync::Mutex;

use crate::agave::{AgaveTower, BlockTimestamp, LastVote, TowerLayout};
use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::tower::vote_tx::VoteMessage;
use crate::tower::{
    check_after_released, check_message, check_vote, message_hash, ReleasedVote, StoreMode,
    StoreReceipt, TowerBytesKind, TowerRecord, TowerStorage, VoteBinding, VoteRef, VoteRefusal,
};

/// The tower a validator wants to vote with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowerUpdate {
    /// The vote this tower ends with: the one being sent.
    pub vote: VoteRef,
    /// The tower's root, if it has one.
    pub root: Option<u64>,
    /// The validator's own serialized tower (opaque to slashguard).
    pub tower: Vec<u8>,
}

/// A vote transaction message signed after its tower was stored. It can only
/// be made by [`VoteGuard::vote`] and [`VoteGuard::sign_vote_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVote {
    vote: VoteRef,
    receipt: StoreReceipt,
    signatures: Vec<(NodeId, [u8; 64])>,
}

impl SignedVote {
    /// The vote this signature is for.
    pub fn vote(&self) -> VoteRef {
        self.vote
    }
    /// The store that made it possible (fencing token and sequence).
    pub fn receipt(&self) -> StoreReceipt {
        self.receipt
    }
    /// The guard's signatures over the message, in the message's signer
    /// order (the fee payer first): one for each of the guard's keys (the
    /// identity, the authorized voter) that the message requires.
    pub fn signatures(&self) -> &[(NodeId, [u8; 64])] {
        &self.signatures
    }
}

/// Stores a tower, then signs the vote message that casts the tower's last
/// vote, and no other message.
///
/// A message is signed only if it decodes as a vote transaction
/// ([`VoteMessage`]) with exactly one vote instruction, for the configured
/// vote account ([`with_vote_account`](Self::with_vote_account)),
/// authorized by the identity or the authorized voter as a required
/// signer, whose last vote (slot and bank hash) is the stored tower's, whose
/// root is not ahead of the tower's, and whose other instructions call only
/// programs the caller allowed ([`allow_program`](Self::allow_program)).
/// The stored record keeps the hash of the message it released: the
/// byte-identical message may be signed again (a resend after a crash),
/// any other message for that vote is refused. The guard also remembers
/// the last vote it released itself ([`check_after_released`]): a forced
/// store ([`StoreMode::Force`], operator recovery) that puts an older or
/// another tower back does not free a released slot in this process; a
/// restart votes from the forced tower, as the operator decided.
///
/// [`check_after_released`]: crate::tower::check_after_released
///
/// # Example
///
/// ```
/// use slashguard::agave::{LastVote, Lockout, TowerSync};
/// use slashguard::memory::MemoryTowerStorage;
/// use slashguard::tower::vote_tx::{CastVote, VoteKind};
/// use slashguard::tower::VoteGuard;
/// use slashguard::{NodeId, NodeKeypair};
///
/// # tokio_test_rt(async {
/// let identity = NodeKeypair::generate();
/// let node = identity.node_id();
/// let vote_account = NodeId([9; 32]);
/// let storage = MemoryTowerStorage::new(node);
/// let guard = VoteGuard::new(storage, identity)?.with_vote_account(vote_account);
///
/// // The TowerSync vote a validator sends: the guard stores the tower it
/// // describes (lockouts, root, last vote, hash, block id), then signs.
/// let sync = |hash| CastVote {
///     kind: VoteKind::TowerSync,
///     vote_account,
///     authority: node,
///     vote: LastVote::TowerSync(TowerSync {
///         lockouts: vec![Lockout { slot: 41, confirmation_count: 2 }, Lockout { slot: 42, confirmation_count: 1 }],
///         root: Some(40),
///         hash,
///         timestamp: None,
///         block_id: [3; 32],
///     }),
///     switch_proof: None,
/// };
/// let message = sync([1; 32]).to_legacy_message(node, [0; 32])?;
/// let signed = guard.sign_vote_message(&message).await?;
/// assert_eq!(signed.vote().slot, 42);
/// // A resend of the same bytes is signed again...
/// guard.sign_vote_message(&message).await?;
///
/// // ...but the same slot with another bank hash is a double vote: refused.
/// let conflicting = sync([2; 32]).to_legacy_message(node, [0; 32])?;
/// assert!(guard.sign_vote_message(&conflicting).await.unwrap_err().is_refusal());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_rt<F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>>(f: F) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f).unwrap()
/// # }
/// ```
pub struct VoteGuard<S> {
    storage: S,
    identity: NodeKeypair,
    voter: Option<NodeKeypair>,
    vote_account: Option<NodeId>,
    allowed_programs: Vec<NodeId>,
    // Serializes votes so that the tower order seen by the store is the
    // order in which signatures leave. It also holds what this guard last
    // stored durably (last vote, released message hash), so that `save`
    // can carry a release over without reading the store again: on etcd
    // that read is a second round trip per save. `None` until the first
    // store, and again after any failed store (its write may or may not
    // have landed), so the next `save` reads the store. And the last vote
    // this guard released, which no store can take back.
    order: Mutex<Order>,
}

/// What a guard remembers between votes, under its `order` lock.
#[derive(Default)]
struct Order {
    /// What this guard last stored durably (see `VoteGuard::order`).
    last: Option<LastStored>,
    /// The last vote this guard released, whatever the store says since:
    /// an operator's forced store may put an older tower back, but what
    /// this process signed cannot be taken back.
    released: Option<ReleasedVote>,
}

/// The last record a guard stored: enough to carry its release over.
#[derive(Clone, Copy)]
struct LastStored {
    vote: Option<VoteRef>,
    released: Option<[u8; 32]>,
}

impl<S: TowerStorage> VoteGuard<S> {
    /// A guard signing with `identity`, storing into `storage`, which must
    /// belong to the same node. It signs no vote until its vote account is
    /// set with [`with_vote_account`](Self::with_vote_account).
    pub fn new(storage: S, identity: NodeKeypair) -> Result<Self> {
        if storage.node() != identity.node_id() {
            return Err(Error::Invalid(format!(
                "storage belongs to node {}, keypair is {}",
                storage.node(),
                identity.node_id()
            )));
        }
        Ok(VoteGuard {
            storage,
            identity,
            voter: None,
            vote_account: None,
            allowed_programs: Vec::new(),
            order: Mutex::default(),
        })
    }

    /// Also sign votes with an authorized voter keypair (Solana's
    /// `--authorized-voter`): a message authorized by this key is signed by
    /// it (and by the identity when the identity is also a required
    /// signer, as the fee payer).
    pub fn with_authorized_voter(mut self, voter: NodeKeypair) -> Self {
        self.voter = Some(voter);
        self
    }

    /// The node's vote account: the guard signs only votes cast for it.
    pub fn with_vote_account(mut self, vote_account: NodeId) -> Self {
        self.vote_account = Some(vote_account);
        self
    }

    /// Allow instructions of `program` beside the vote (for example the
    /// compute budget program). Instructions of any other program, and any
    /// other instruction of the vote program, are refused.
    pub fn allow_program(mut self, program: NodeId) -> Self {
        self.allowed_programs.push(program);
        self
    }

    /// The node this guard votes for.
    pub fn node(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The configured vote account.
    pub fn vote_account(&self) -> Option<NodeId> {
        self.vote_account
    }

    /// The storage behind the guard.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The last durable tower (call this after taking ownership, before the
    /// first vote).
    pub async fn load(&self) -> Result<Option<TowerRecord>> {
        self.storage.load().await
    }

    /// Store `update` durably under the fence, then sign `message`, which
    /// must cast exactly `update`'s vote (see the type's docs). Any error
    /// means no signature was made and the vote must not be sent; a
    /// message that does not match is refused before anything is stored.
    pub async fn vote(&self, update: TowerUpdate, message: &[u8]) -> Result<SignedVote> {
        let binding = self.binding()?;
        let decoded = refuse(VoteMessage::decode(message).map_err(VoteRefusal::from))?;
        let (vote, root) = (update.vote, update.root);
        let record = self.record(update, TowerBytesKind::Opaque, Some(message_hash(message)))?;
        refuse(check_vote(&decoded, &binding, vote, root))?;
        self.store_and_sign(record, &decoded, message).await
    }

    /// Sign a vote message whose vote carries the whole tower
    /// (`TowerSync`, `CompactUpdateVoteState`, `UpdateVoteState` and their
    /// switch variants): the guard derives the tower from the instruction
    /// itself (lockouts, root, last vote, bank hash, block id, timestamp),
    /// stores it durably under the fence as an Agave tower
    /// ([`TowerBytesKind::AgaveTowerData`]), then signs. The validator
    /// never builds a second description of its vote. A plain `Vote`
    /// carries no tower: [`VoteRefusal::NoTower`].
    pub async fn sign_vote_message(&self, message: &[u8]) -> Result<SignedVote> {
        let binding = self.binding()?;
        let decoded = refuse(VoteMessage::decode(message).map_err(VoteRefusal::from))?;
        refuse(check_message(&decoded, &binding))?;
        let update = refuse(self.tower_of(&decoded))??;
        let (vote, root) = (update.vote, update.root);
        refuse(check_vote(&decoded, &binding, vote, root))?;
        let record = self.record(
            update,
            TowerBytesKind::AgaveTowerData,
            Some(message_hash(message)),
        )?;
        self.store_and_sign(record, &decoded, message).await
    }

    /// Store a tower without signing a vote (for example at startup). A
    /// tower for the vote whose message the stored tower released keeps
    /// that release, so that storing it again does not free the vote for
    /// another message.
    pub async fn save(&self, update: TowerUpdate, mode: StoreMode) -> Result<StoreReceipt> {
        let mut order = self.order.lock().await;
        let last = &mut order.last;
        let released = match mode {
            StoreMode::Force => None,
            StoreMode::Advance => {
                let stored = match *last {
                    Some(stored) => stored,
                    None => {
                        let record = self.storage.load().await?;
                        LastStored {
                            vote: record.as_ref().and_then(TowerRecord::last_vote),
                            released: record.as_ref().and_then(TowerRecord::released_message),
                        }
                    }
                };
                stored.released.filter(|_| stored.vote == Some(update.vote))
            }
        };
        let record = self.record(update, TowerBytesKind::Opaque, released)?;
        self.store_record(&record, mode, last).await
    }

    fn binding(&self) -> Result<VoteBinding> {
        let vote_account = self.vote_account.ok_or_else(|| {
            Error::Config(
                "no vote account configured: call VoteGuard::with_vote_account before voting"
                    .into(),
            )
        })?;
        let mut authorities = vec![self.identity.node_id()];
        authorities.extend(self.voter.as_ref().map(NodeKeypair::node_id));
        Ok(VoteBinding {
            vote_account,
            authorities,
            allowed_programs: self.allowed_programs.clone(),
        })
    }

    /// The Agave tower a full-tower vote describes.
    fn tower_of(&self, message: &VoteMessage) -> Result<Result<TowerUpdate>, VoteRefusal> {
        let cast = message.vote();
        let lockouts = cast.lockouts().ok_or(VoteRefusal::NoTower)?;
        let mut tower = AgaveTower::new(self.identity.node_id());
        tower.vote_state.votes = lockouts.to_vec();
        tower.vote_state.root_slot = cast.root();
        let last = cast.last_vote();
        if let Some(timestamp) = cast.timestamp() {
            tower.last_timestamp = BlockTimestamp {
                slot: last.slot,
                timestamp,
            };
        }
        tower.last_vote = cast.vote.clone();
        debug_assert!(!matches!(tower.last_vote, LastVote::Vote(_)));
        Ok(tower
            .encode(TowerLayout::V1_14_11)
            .map_err(|e| Error::Invalid(format!("the vote's tower cannot be encoded: {e}")))
            .map(|bytes| TowerUpdate {
                vote: last,
                root: cast.root(),
                tower: bytes,
            }))
    }

    async fn store_and_sign(
        &self,
        record: TowerRecord,
        decoded: &VoteMessage,
        message: &[u8],
    ) -> Result<SignedVote> {
        let mut order = self.order.lock().await;
        let vote = decoded.vote().last_vote();
        // The record carries the message's hash (both callers put it there).
        let hash = record
            .released_message()
            .unwrap_or_else(|| message_hash(message));
        let released = order.released;
        let checked = check_after_released(released, vote, hash).map_err(Error::from);
        crate::metrics::note_refusal(&checked);
        if let Err(e) = checked {
            tracing::warn!(error = %e, released = ?released.map(|r| r.vote.slot), "vote contradicts one this process released: vote withheld");
            return Err(e);
        }
        let receipt = self
            .store_record(&record, StoreMode::Advance, &mut order.last)
            .await?;
        // Sign with each of the guard's keys the message requires, in the
        // message's signer order.
        let mut signatures = Vec::with_capacity(2);
        for signer in decoded.signers() {
            let key = [Some(&self.identity), self.voter.as_ref()]
                .into_iter()
                .flatten()
                .find(|k| k.node_id() == *signer);
            if let Some(key) = key {
                if !signatures.iter().any(|(id, _)| id == signer) {
                    signatures.push((*signer, key.sign(message)));
                }
            }
        }
        order.released = Some(ReleasedVote {
            vote,
            message: hash,
        });
        tracing::debug!(node = %self.identity.node_id(), slot = vote.slot, fence = receipt.fence, "vote released after durable tower store");
        Ok(SignedVote {
            vote,
            receipt,
            signatures,
        })
    }

    /// The signed record of `update` (an invalid update is
    /// [`Error::Invalid`], before anything is stored or checked).
    fn record(
        &self,
        update: TowerUpdate,
        kind: TowerBytesKind,
        released: Option<[u8; 32]>,
    ) -> Result<TowerRecord> {
        TowerRecord::sign_as(
            &self.identity,
            Some(update.vote),
            update.root,
            update.tower,
            kind,
            released,
        )
        .map_err(|e| Error::Invalid(format!("tower update: {e}")))
    }

    async fn store_record(
        &self,
        record: &TowerRecord,
        mode: StoreMode,
        last: &mut Option<LastStored>,
    ) -> Result<StoreReceipt> {
        let slot = record.last_vote_slot().unwrap_or_default();
        let root = record.root();
        let node = self.identity.node_id();
        let backend = self.storage.backend();
        let span = tracing::debug_span!("tower_store", %node, slot, backend);
        let start = std::time::Instant::now();
        let result = tracing::Instrument::instrument(self.storage.store(record, mode), span).await;
        let latency = start.elapsed();
        if let Some(m) = crate::metrics::installed() {
            m.tower_store(
                backend,
                &node,
                latency,
                crate::metrics::Outcome::of(&result),
            );
        }
        crate::metrics::note_refusal(&result);
        *last = match &result {
            Ok(_) => Some(LastStored {
                vote: record.last_vote(),
                released: record.released_message(),
            }),
            Err(_) => None,
        };
        match &result {
            Ok(r) => {
                tracing::debug!(%node, slot, root = ?root, backend, latency_us = latency.as_micros() as u64, fence = r.fence, "tower stored")
            }
            Err(e) if e.is_refusal() => {
                tracing::warn!(%node, slot, backend, latency_us = latency.as_micros() as u64, reason = crate::metrics::RefusalReason::of(e).map(|r| r.as_str()), error = %e, "tower store refused: vote withheld")
            }
            Err(e) => {
                tracing::warn!(%node, slot, backend, latency_us = latency.as_micros() as u64, error = %e, "tower store failed: vote withheld")
            }
        }
        result
    }
}

/// A vote refusal as the crate's error, counted like every refusal.
fn refuse<T>(result: Result<T, VoteRefusal>) -> Result<T> {
    let result = result.map_err(Error::from);
    crate::metrics::note_refusal(&result);
    if let Err(e) = &result {
        tracing::warn!(error = %e, "vote message refused: vote withheld");
    }
    result
}
