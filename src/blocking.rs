//! A blocking facade for synchronous validators (Agave's own tower storage
//! trait is synchronous). Each wrapper owns a small current-thread runtime.

use crate::error::{Error, Result};
use crate::signer::{GuardedSignature, GuardedSigner, Signer};
use crate::tower::{
    SignedVote, StoreMode, StoreReceipt, TowerRecord, TowerStorage, TowerUpdate, VoteGuard,
};
use crate::watermark::SignerGuard;

/// Runs an async guard from synchronous code.
///
/// ```
/// use slashguard::blocking::Blocking;
/// use slashguard::memory::MemoryTowerStorage;
/// use slashguard::tower::vote_tx::CastVote;
/// use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
/// use slashguard::{NodeId, NodeKeypair};
///
/// let id = NodeKeypair::generate();
/// let node = id.node_id();
/// let account = NodeId([9; 32]);
/// let guard = Blocking::new(
///     VoteGuard::new(MemoryTowerStorage::new(node), id)?.with_vote_account(account),
/// )?;
/// let update = TowerUpdate { vote: VoteRef { slot: 1, hash: [0; 32] }, root: None, tower: vec![] };
/// let message = CastVote::tower_sync_for(update.vote, None, account, node).to_legacy_message(node, [0; 32])?;
/// let signed = guard.vote(update, &message)?;
/// assert_eq!(signed.vote().slot, 1);
/// # Ok::<(), slashguard::Error>(())
/// ```
pub struct Blocking<T> {
    inner: T,
    rt: tokio::runtime::Runtime,
}

impl<T> Blocking<T> {
    /// Wrap `inner` with its own runtime.
    pub fn new(inner: T) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start a runtime: {e}")))?;
        Ok(Blocking { inner, rt })
    }

    /// The wrapped value.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Run any future of the inner value to completion. Refuses (instead of
    /// panicking) when called from inside an async runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Config(
                "blocking facade called from inside an async runtime; use the async API".into(),
            ));
        }
        Ok(self.rt.block_on(f))
    }
}

impl<S: TowerStorage> Blocking<VoteGuard<S>> {
    /// [`VoteGuard::vote`], blocking.
    pub fn vote(&self, update: TowerUpdate, message: &[u8]) -> Result<SignedVote> {
        self.block_on(self.inner.vote(update, message))?
    }
    /// [`VoteGuard::sign_vote_message`], blocking.
    pub fn sign_vote_message(&self, message: &[u8]) -> Result<SignedVote> {
        self.block_on(self.inner.sign_vote_message(message))?
    }
    /// [`VoteGuard::save`], blocking.
    pub fn save(&self, update: TowerUpdate, mode: StoreMode) -> Result<StoreReceipt> {
        self.block_on(self.inner.save(update, mode))?
    }
    /// [`VoteGuard::load`], blocking.
    pub fn load(&self) -> Result<Option<TowerRecord>> {
        self.block_on(self.inner.load())?
    }
}

impl<G: SignerGuard, S: Signer> Blocking<GuardedSigner<G, S>> {
    /// [`GuardedSigner::sign`], blocking.
    pub fn sign(&self, payload: &[u8]) -> Result<GuardedSignature> {
        self.block_on(self.inner.sign(payload))?
    }
}
