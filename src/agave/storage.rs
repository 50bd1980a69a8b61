//! Agave's `TowerStorage`, without Agave's crates: an adapter that takes
//! the bytes Agave would write to its tower file (the bincode of
//! `SavedTowerVersions`), checks them, and stores them durably and fenced
//! in any slashguard [`TowerStorage`], then gives them back byte for byte.
//!
//! Agave's trait is synchronous (`load(&Pubkey) -> Result<Tower>`,
//! `store(&SavedTowerVersions) -> Result<()>`, called in the voting thread
//! before each vote; a store error makes Agave exit). The async adapter
//! here is wrapped in [`Blocking`](crate::blocking::Blocking) for that
//! shape; README "Agave's TowerStorage" shows the whole implementation.

use crate::agave::{AgaveError, FileKind, SavedTower};
use crate::error::Error;
use crate::identity::{NodeId, NodeKeypair};
use crate::tower::{StoreMode, StoreReceipt, TowerBytesKind, TowerRecord, TowerStorage};

/// Why the adapter did not load or store a tower. Agave treats every store
/// error as fatal; [`Fenced`](Self::Fenced) means *stop voting now*, even
/// if the validator would otherwise retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgaveStorageError {
    /// This instance no longer owns the identity (another instance took it
    /// over, the lease expired, or another process holds the store): stop
    /// voting now. Nothing was stored.
    #[error("stop voting now: {0}")]
    Fenced(#[source] Error),
    /// No tower was ever stored for the node (Agave then starts a new
    /// tower, or refuses to start with `--require-tower`).
    #[error("no tower stored for node {node}")]
    NotFound {
        /// The node.
        node: NodeId,
    },
    /// The tower would regress (an older last vote or root, another bank
    /// hash at the stored slot): refused, nothing stored.
    #[error("tower refused: {0}")]
    Refused(#[source] Error),
    /// The bytes are not a signed Agave tower of the adapter's node
    /// (undecodable, another node, a bad signature), or the stored record
    /// has no Agave tower to give back.
    #[error("tower of node {node}: {source}")]
    InvalidTower {
        /// The adapter's node.
        node: NodeId,
        /// What is wrong.
        source: AgaveError,
    },
    /// The store could not answer (unavailable within its deadline, damaged
    /// data, I/O): the tower is not known to be stored.
    #[error(transparent)]
    Failed(Error),
}

impl AgaveStorageError {
    /// `true` when the validator must stop voting now (it lost the
    /// identity).
    pub fn is_fenced(&self) -> bool {
        matches!(self, AgaveStorageError::Fenced(_))
    }

    /// `true` when no tower was ever stored.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgaveStorageError::NotFound { .. })
    }

    fn of(e: Error) -> Self {
        match e {
            Error::Fenced { .. } | Error::Locked { .. } => AgaveStorageError::Fenced(e),
            Error::Refused(_) => AgaveStorageError::Refused(e),
            e => AgaveStorageError::Failed(e),
        }
    }
}

/// Agave's tower storage over a slashguard [`TowerStorage`] of one node.
///
/// [`store`](Self::store) verifies the `SavedTower` bytes (envelope, node,
/// signature, canonical encoding), refuses a regression against the stored
/// tower, and stores the bytes as they are (a record of kind
/// [`TowerBytesKind::AgaveSavedTower`], signed by the identity), durably
/// and under the storage's fence. [`load`](Self::load) gives back exactly
/// the stored bytes. The identity keypair signs the slashguard record
/// around the bytes (Agave has already signed the tower itself).
pub struct AgaveTowerStorage<S> {
    storage: S,
    identity: NodeKeypair,
}

impl<S: TowerStorage> AgaveTowerStorage<S> {
    /// An adapter storing into `storage`, which must belong to `identity`.
    pub fn new(storage: S, identity: NodeKeypair) -> Result<Self, Error> {
        if storage.node() != identity.node_id() {
            return Err(Error::Invalid(format!(
                "storage belongs to node {}, keypair is {}",
                storage.node(),
                identity.node_id()
            )));
        }
        Ok(AgaveTowerStorage { storage, identity })
    }

    /// The node whose tower this adapter stores.
    pub fn node(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The storage behind the adapter.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Agave's `load`: the stored tower of `node` as Agave wrote it (its
    /// `encode()` is the exact bytes). A tower of another node than the
    /// adapter's is [`AgaveStorageError::InvalidTower`]; a store never
    /// written is [`AgaveStorageError::NotFound`].
    pub async fn load(&self, node: &NodeId) -> Result<SavedTower, AgaveStorageError> {
        if *node != self.node() {
            return Err(AgaveStorageError::InvalidTower {
                node: self.node(),
                source: AgaveError::ForeignNode {
                    expected: self.node(),
                    found: *node,
                },
            });
        }
        let record = self
            .storage
            .load()
            .await
            .map_err(AgaveStorageError::of)?
            .ok_or(AgaveStorageError::NotFound { node: *node })?;
        SavedTower::from_stored(&record, &self.identity).map_err(|source| {
            AgaveStorageError::InvalidTower {
                node: *node,
                source,
            }
        })
    }

    /// Agave's `store`: `saved_tower` is the bincode of Agave's
    /// `SavedTowerVersions` (what Agave writes to its tower file). `Ok`
    /// means durable and fenced; see the type's docs for the checks.
    pub async fn store(&self, saved_tower: &[u8]) -> Result<StoreReceipt, AgaveStorageError> {
        let node = self.node();
        let invalid = |source| AgaveStorageError::InvalidTower { node, source };
        let saved = SavedTower::decode(saved_tower, FileKind::V1_9, &node).map_err(invalid)?;
        let tower = saved.tower();
        let record = TowerRecord::sign_as(
            &self.identity,
            tower.last_vote_ref(),
            tower.root(),
            saved_tower.to_vec(),
            TowerBytesKind::AgaveSavedTower,
            None,
        )
        .map_err(|e| invalid(AgaveError::Record(e)))?;
        self.storage
            .store(&record, StoreMode::Advance)
            .await
            .map_err(AgaveStorageError::of)
    }
}

impl<S: TowerStorage> crate::blocking::Blocking<AgaveTowerStorage<S>> {
    /// [`AgaveTowerStorage::load`], blocking: Agave's `load`.
    pub fn load(&self, node: &NodeId) -> Result<SavedTower, AgaveStorageError> {
        self.block_on(self.inner().load(node))
            .map_err(AgaveStorageError::Failed)?
    }

    /// [`AgaveTowerStorage::store`], blocking: Agave's `store`.
    pub fn store(&self, saved_tower: &[u8]) -> Result<StoreReceipt, AgaveStorageError> {
        self.block_on(self.inner().store(saved_tower))
            .map_err(AgaveStorageError::Failed)?
    }
}
