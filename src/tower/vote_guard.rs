//! Write-tower-before-vote, enforced by ownership of the keys: the guard
//! owns the identity (and voter) keypairs, and the only way to get a vote
//! signature out of it is a completed, durable, fenced tower store that
//! contains that vote.

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::tower::{StoreMode, StoreReceipt, TowerRecord, TowerStorage, VoteRef};

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
/// be made by [`VoteGuard::vote`].
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
    /// The signatures over the message, in signer order: the node identity
    /// first, then the authorized voter if one is configured.
    pub fn signatures(&self) -> &[(NodeId, [u8; 64])] {
        &self.signatures
    }
}

/// Stores a tower, then signs the vote that the tower contains.
///
/// # Example
///
/// ```
/// use slashguard::memory::MemoryTowerStorage;
/// use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
/// use slashguard::NodeKeypair;
///
/// # tokio_test_rt(async {
/// let identity = NodeKeypair::generate();
/// let storage = MemoryTowerStorage::new(identity.node_id());
/// let guard = VoteGuard::new(storage, identity)?;
///
/// let update = TowerUpdate { vote: VoteRef { slot: 42, hash: [1; 32] }, root: None, tower: vec![0; 64] };
/// let signed = guard.vote(update.clone(), b"vote transaction message").await?;
/// assert_eq!(signed.vote().slot, 42);
///
/// // The same slot with another bank hash is a double vote: refused.
/// let conflicting = TowerUpdate { vote: VoteRef { slot: 42, hash: [2; 32] }, ..update };
/// assert!(guard.vote(conflicting, b"other message").await.unwrap_err().is_refusal());
/// # Ok::<(), slashguard::Error>(())
/// # });
/// # fn tokio_test_rt<F: std::future::Future<Output = Result<(), slashguard::Error>>>(f: F) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f).unwrap()
/// # }
/// ```
pub struct VoteGuard<S> {
    storage: S,
    identity: NodeKeypair,
    voter: Option<NodeKeypair>,
    // Serializes votes so that the tower order seen by the store is the
    // order in which signatures leave.
    order: Mutex<()>,
}

impl<S: TowerStorage> VoteGuard<S> {
    /// A guard signing with `identity`, storing into `storage`, which must
    /// belong to the same node.
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
            order: Mutex::new(()),
        })
    }

    /// Also sign votes with an authorized voter keypair (Solana's
    /// `--authorized-voter`).
    pub fn with_authorized_voter(mut self, voter: NodeKeypair) -> Self {
        self.voter = Some(voter);
        self
    }

    /// The node this guard votes for.
    pub fn node(&self) -> NodeId {
        self.identity.node_id()
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

    /// Store `update` durably under the fence, then sign `message`. Any
    /// error means no signature was made and the vote must not be sent.
    pub async fn vote(&self, update: TowerUpdate, message: &[u8]) -> Result<SignedVote> {
        let _order = self.order.lock().await;
        let vote = update.vote;
        let receipt = self.store_locked(update, StoreMode::Advance).await?;
        let mut signatures = vec![(self.identity.node_id(), self.identity.sign(message))];
        if let Some(voter) = &self.voter {
            signatures.push((voter.node_id(), voter.sign(message)));
        }
        tracing::debug!(node = %self.identity.node_id(), slot = vote.slot, fence = receipt.fence, "vote released after durable tower store");
        Ok(SignedVote {
            vote,
            receipt,
            signatures,
        })
    }

    /// Store a tower without signing a vote (for example at startup).
    pub async fn save(&self, update: TowerUpdate, mode: StoreMode) -> Result<StoreReceipt> {
        let _order = self.order.lock().await;
        self.store_locked(update, mode).await
    }

    async fn store_locked(&self, update: TowerUpdate, mode: StoreMode) -> Result<StoreReceipt> {
        let record =
            TowerRecord::sign(&self.identity, Some(update.vote), update.root, update.tower)
                .map_err(|e| Error::Invalid(format!("tower update: {e}")))?;
        let node = self.identity.node_id();
        let backend = self.storage.backend();
        let span = tracing::debug_span!("tower_store", %node, slot = update.vote.slot, backend);
        let start = std::time::Instant::now();
        let result = tracing::Instrument::instrument(self.storage.store(&record, mode), span).await;
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
        match &result {
            Ok(r) => {
                tracing::debug!(%node, slot = update.vote.slot, root = ?update.root, backend, latency_us = latency.as_micros() as u64, fence = r.fence, "tower stored")
            }
            Err(e) if e.is_refusal() => {
                tracing::warn!(%node, slot = update.vote.slot, backend, latency_us = latency.as_micros() as u64, reason = crate::metrics::RefusalReason::of(e).map(|r| r.as_str()), error = %e, "tower store refused: vote withheld")
            }
            Err(e) => {
                tracing::warn!(%node, slot = update.vote.slot, backend, latency_us = latency.as_micros() as u64, error = %e, "tower store failed: vote withheld")
            }
        }
        result
    }
}
