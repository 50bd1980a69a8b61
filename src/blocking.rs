//! A blocking facade for synchronous validators (Agave's own tower storage
//! trait is synchronous). Each wrapper owns a runtime with one worker
//! thread.

use crate::error::{Error, Result};
use crate::signer::{GuardedSignature, GuardedSigner, Signer};
use crate::tower::{
    SignedVote, StoreMode, StoreReceipt, TowerRecord, TowerStorage, TowerUpdate, VoteGuard,
};
use crate::watermark::SignerGuard;

/// Runs an async guard from synchronous code.
///
/// Each `Blocking` owns a runtime with one worker thread of its own, so
/// that the background tasks of what runs on it (an etcd client's
/// connection, an ownership's lease keep-alive) keep running between
/// calls, while the calling thread waits. Build values that spawn such
/// tasks on that runtime with [`Blocking::build`]: a client created on a
/// runtime nobody drives any more (a current-thread runtime that returned
/// from `block_on`) cannot answer; an etcd client built on a
/// current-thread runtime and used from the facade refuses every request
/// with [`Error::Config`] saying so, instead of timing out.
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("slashguard-blocking")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start a runtime: {e}")))
}

impl<T> Blocking<T> {
    /// Wrap `inner` with a runtime of its own.
    pub fn new(inner: T) -> Result<Self> {
        Ok(Blocking {
            inner,
            rt: runtime()?,
        })
    }

    /// Build the inner value on the facade's own runtime (connect an etcd
    /// client, take over an identity, open a store), so that its
    /// background tasks run on the thread the facade keeps running.
    ///
    /// ```
    /// use slashguard::blocking::Blocking;
    /// use slashguard::memory::MemoryTowerStorage;
    /// use slashguard::NodeKeypair;
    ///
    /// let node = NodeKeypair::generate().node_id();
    /// let storage = Blocking::build(|| async move { Ok(MemoryTowerStorage::new(node)) })?;
    /// # Ok::<(), slashguard::Error>(())
    /// ```
    pub fn build<F, Fut>(make: F) -> Result<Self>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Config(
                "Blocking::build called from inside an async runtime; use the async API".into(),
            ));
        }
        let rt = runtime()?;
        let inner = rt.block_on(make())?;
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
