//! Write-vote-history-before-vote, enforced by ownership of the BLS vote
//! key: the guard derives and holds the key, and the only way to get an
//! Alpenglow vote signature out of it is a completed, durable, fenced
//! [`HistoryStorage::apply`] that recorded the vote.

use tokio::sync::Mutex;

use crate::alpenglow::history::{HistoryUpdate, VoteHistory};
use crate::alpenglow::payload::Vote;
use crate::alpenglow::rules::{Check, RuleMode};
use crate::alpenglow::storage::HistoryStorage;
use crate::bls::{self, BlsError};
use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::tower::StoreReceipt;

/// The message the authorized voter's ed25519 key signs to derive its BLS
/// key: `"bls-key-derive-" ‖ "alpenglow"` (Agave's `derive_from_signer`
/// with the public seed `alpenglow`).
pub const BLS_DERIVATION_MESSAGE: &[u8] = b"bls-key-derive-alpenglow";

/// The BLS vote key Agave derives from an authorized voter keypair:
/// ed25519-sign [`BLS_DERIVATION_MESSAGE`] (deterministic), then the IETF
/// `KeyGen` with the 64-byte signature as input key material and no key
/// info (`blst_keygen`).
pub fn derive_voter_key(voter: &NodeKeypair) -> Result<bls::SecretKey, BlsError> {
    bls::SecretKey::key_gen(&voter.sign(BLS_DERIVATION_MESSAGE), b"")
}

/// The message a vote account's proof of possession signs over, before
/// the public key: `"ALPENGLOW" ‖ vote account`.
pub fn pop_prefix(vote_account: &[u8; 32]) -> Vec<u8> {
    let mut prefix = b"ALPENGLOW".to_vec();
    prefix.extend_from_slice(vote_account);
    prefix
}

/// A vote signed after it was durably recorded. Only
/// [`AlpenglowGuard`] makes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAlpenglowVote {
    vote: Vote,
    signature: bls::Signature,
    receipt: StoreReceipt,
    check: Check,
}

impl SignedAlpenglowVote {
    /// The vote.
    pub fn vote(&self) -> Vote {
        self.vote
    }
    /// The signed bytes (11 or 43).
    pub fn payload(&self) -> Vec<u8> {
        self.vote.to_bytes()
    }
    /// The BLS signature over [`payload`](Self::payload).
    pub fn signature(&self) -> bls::Signature {
        self.signature
    }
    /// The store under which it was recorded.
    pub fn receipt(&self) -> StoreReceipt {
        self.receipt
    }
    /// [`Check::New`], or [`Check::SameData`] for a re-sign of a recorded
    /// vote (the same signature bytes as before).
    pub fn check(&self) -> Check {
        self.check
    }
}

/// Records Alpenglow votes in the vote history, then BLS-signs them.
///
/// ```
/// use slashguard::alpenglow::{derive_voter_key, AlpenglowGuard, RuleMode, Vote, VoteKind};
/// use slashguard::memory::MemoryVoteHistory;
/// use slashguard::NodeKeypair;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let identity = NodeKeypair::generate();
/// let voter = NodeKeypair::generate();
/// // What the operator registered in the vote account.
/// let registered = derive_voter_key(&voter).unwrap().public_key();
/// let store = MemoryVoteHistory::new(identity.node_id());
/// let guard = AlpenglowGuard::new(store, voter, &registered, RuleMode::Strict)?;
/// // No history yet: refused until started from a finalized slot.
/// let notarize = Vote { slot: 1000, kind: VoteKind::Notarize([7; 32]), shred_version: 50093 };
/// assert!(guard.vote(&[notarize], None).await.unwrap_err().is_refusal());
/// guard.start_history(50093, 990).await?;
///
/// let signed = guard.vote(&[notarize], None).await?;
/// assert!(registered.verify(&signed[0].payload(), &signed[0].signature()));
/// // Skip in a slot already notarized is slashable: refused, nothing signed.
/// let skip = Vote { kind: VoteKind::Skip, ..notarize };
/// assert!(guard.vote(&[skip], None).await.unwrap_err().is_refusal());
/// # Ok::<(), slashguard::Error>(())
/// # }).unwrap();
/// ```
pub struct AlpenglowGuard<S> {
    storage: S,
    key: bls::SecretKey,
    public: bls::PublicKey,
    mode: RuleMode,
    // Serializes votes: the order the store sees is the order signatures
    // leave in.
    order: Mutex<()>,
}

impl<S: HistoryStorage> AlpenglowGuard<S> {
    /// A guard voting with the BLS key derived from `voter` (the
    /// authorized voter keypair, consumed), recording into `storage`.
    /// [`Error::Config`] unless the derived public key is `registered`,
    /// the key the operator says the vote account holds: a guard must never
    /// sign with a key the cluster does not count, nor count on a history
    /// kept for another key.
    pub fn new(
        storage: S,
        voter: NodeKeypair,
        registered: &bls::PublicKey,
        mode: RuleMode,
    ) -> Result<Self> {
        let key = derive_voter_key(&voter)
            .map_err(|e| Error::Config(format!("deriving the BLS vote key: {e}")))?;
        Self::with_bls_key(storage, key, registered, mode)
    }

    /// A guard with a BLS key given directly (a key kept apart from the
    /// voter keypair), checked against `registered` as in [`new`](Self::new).
    pub fn with_bls_key(
        storage: S,
        key: bls::SecretKey,
        registered: &bls::PublicKey,
        mode: RuleMode,
    ) -> Result<Self> {
        let public = key.public_key();
        if public != *registered {
            return Err(Error::Config(format!(
                "the BLS vote key is {public}, the vote account registers {registered}: check --authorized-voter"
            )));
        }
        Ok(AlpenglowGuard {
            storage,
            key,
            public,
            mode,
            order: Mutex::new(()),
        })
    }

    /// The node whose history this guard keeps.
    pub fn node(&self) -> NodeId {
        self.storage.node()
    }

    /// The BLS public key votes are signed with.
    pub fn public_key(&self) -> bls::PublicKey {
        self.public
    }

    /// The storage behind the guard.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The last durable history (call after taking ownership).
    pub async fn load(&self) -> Result<Option<VoteHistory>> {
        self.storage.load().await
    }

    /// Start the vote history where none exists: votes below `finalized`
    /// will be refused. The caller states that `finalized` is a finalized
    /// slot past every vote this identity ever cast (a new validator: the
    /// current finalized slot; after losing the previous owner's history:
    /// a slot the cluster finalized after its last vote). Refused with
    /// `HistoryExists` when a history exists: it is never replaced.
    pub async fn start_history(&self, shred_version: u16, finalized: u64) -> Result<StoreReceipt> {
        let _order = self.order.lock().await;
        let history = VoteHistory::new(self.storage.node(), shred_version, finalized);
        self.storage.create(&history).await
    }

    /// Check the votes of one event (and an optional newly finalized root)
    /// against the history, record them in ONE durable fenced step, then
    /// sign each. Any error means nothing was signed and no vote may be
    /// sent; a refusal of one vote refuses the whole event.
    pub async fn vote(
        &self,
        votes: &[Vote],
        finalized: Option<u64>,
    ) -> Result<Vec<SignedAlpenglowVote>> {
        let _order = self.order.lock().await;
        let update = HistoryUpdate {
            votes: votes.to_vec(),
            finalized,
        };
        let node = self.storage.node();
        let backend = self.storage.backend();
        let span = tracing::debug_span!("vote_history_store", %node, backend, votes = votes.len());
        let result =
            tracing::Instrument::instrument(self.storage.apply(&update, self.mode), span).await;
        crate::metrics::note_refusal(&result);
        let applied = result.inspect_err(|e| {
                if e.is_refusal() {
                    tracing::warn!(%node, backend, error = %e, "vote history refused: votes withheld");
                } else {
                    tracing::warn!(%node, backend, error = %e, "vote history store failed: votes withheld");
                }
            })?;
        if applied.checks.len() != votes.len() {
            // A storage that does not follow the contract signs nothing.
            return Err(Error::Invalid(format!(
                "storage checked {} of {} votes",
                applied.checks.len(),
                votes.len()
            )));
        }
        Ok(votes
            .iter()
            .zip(applied.checks)
            .map(|(vote, check)| SignedAlpenglowVote {
                vote: *vote,
                signature: self.key.sign(&vote.to_bytes()),
                receipt: applied.receipt,
                check,
            })
            .collect())
    }

    /// [`vote`](Self::vote) for raw signing requests: each payload must be
    /// exactly an Alpenglow vote (11 or 43 bytes), or nothing is signed.
    pub async fn sign_payloads(
        &self,
        payloads: &[&[u8]],
        finalized: Option<u64>,
    ) -> Result<Vec<SignedAlpenglowVote>> {
        let votes = payloads
            .iter()
            .map(|p| Vote::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.vote(&votes, finalized).await
    }
}

impl<S> std::fmt::Debug for AlpenglowGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpenglowGuard")
            .field("public", &self.public)
            .field("mode", &self.mode)
            .finish()
    }
}
