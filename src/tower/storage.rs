//! The `TowerStorage` trait: where a validator's tower lives between votes.

use async_trait::async_trait;

use crate::error::Result;
use crate::identity::NodeId;
use crate::tower::{StoreMode, TowerRecord};

/// Proof that a store completed: durable, and fenced by this instance's
/// ownership of the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreReceipt {
    /// The fencing token under which the store was accepted: an etcd
    /// revision, or a local lock generation. Grows with every takeover.
    pub fence: u64,
    /// The store's own sequence number of the written record.
    pub sequence: u64,
}

/// Durable storage for one node's tower, owned by this instance.
///
/// A value of a type implementing this trait represents *ownership*: the
/// file backend holds an exclusive OS lock, the etcd backend a fencing
/// token. Contract for every implementation:
///
/// - [`store`](TowerStorage::store) is atomic: afterwards [`load`](TowerStorage::load)
///   returns either the previous record or the new one, never a mix, even
///   across a crash or power loss at any moment.
/// - `Ok` means durable: the record survives a crash of this process and of
///   the host (fsynced file, or a committed etcd transaction).
/// - `Ok` means fenced: the store checked, in the same atomic step as the
///   write, that this instance still owns the identity. If it does not, the
///   result is [`Error::Fenced`](crate::Error::Fenced) and nothing was written.
/// - Every store applies [`check_store`](crate::tower::check_store) against
///   the record it replaces, in the same atomic step.
/// - Any `Err` means the vote must be withheld. An
///   [`Error::Unavailable`](crate::Error::Unavailable) comes back within the
///   backend's configured deadline; it never hangs.
#[async_trait]
pub trait TowerStorage: Send + Sync {
    /// The node whose tower this store holds.
    fn node(&self) -> NodeId;

    /// The last durable tower, verified (signature and node), or `None` if
    /// none was ever stored. Damaged data is an
    /// [`Error::Corrupt`](crate::Error::Corrupt), never `None`.
    async fn load(&self) -> Result<Option<TowerRecord>>;

    /// Store `record` durably under the fence; see the trait docs.
    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt>;

    /// A short name of the backend for logs and metrics (`file`, `etcd`,
    /// `memory`; `custom` unless overridden).
    fn backend(&self) -> &'static str {
        "custom"
    }
}

macro_rules! forward_storage {
    ($($t:ty),*) => {$(
        #[async_trait]
        impl<T: TowerStorage + ?Sized> TowerStorage for $t {
            fn node(&self) -> NodeId {
                (**self).node()
            }
            async fn load(&self) -> Result<Option<TowerRecord>> {
                (**self).load().await
            }
            async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
                (**self).store(record, mode).await
            }
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
        }
    )*};
}

forward_storage!(std::sync::Arc<T>, Box<T>, &T);
