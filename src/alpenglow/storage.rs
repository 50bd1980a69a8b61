//! The `HistoryStorage` trait: where a validator's Alpenglow vote history
//! lives between votes.

use async_trait::async_trait;

use crate::alpenglow::history::{HistoryUpdate, VoteHistory};
use crate::alpenglow::rules::{AlpenglowRefusal, Check, RuleMode};
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::tower::StoreReceipt;

/// What [`HistoryStorage::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The fence and sequence of the record now stored (for an update with
    /// nothing new, the record already stored).
    pub receipt: StoreReceipt,
    /// One check per vote of the update, in order.
    pub checks: Vec<Check>,
    /// `true` when a durable write was made; `false` when every vote was
    /// already recorded and the root did not move (no write needed).
    pub wrote: bool,
}

/// Durable storage for one node's vote history, owned by this instance.
///
/// A value of a type implementing this trait represents *ownership* of the
/// identity (the file backend holds the identity's OS lock, the etcd
/// backend a fencing token). Contract for every implementation:
///
/// - [`apply`](HistoryStorage::apply) checks the update against the stored
///   history with [`VoteHistory::apply`] and writes the result in ONE
///   atomic, durable step (one `fdatasync`, or one etcd transaction), in
///   which it also checks that this instance still owns the identity. A
///   refusal or any error writes nothing.
/// - `Ok` means durable and fenced; afterwards [`load`](HistoryStorage::load)
///   returns the new history, across a crash or power loss at any moment.
/// - A missing history is not an empty one: `apply` refuses with
///   [`AlpenglowRefusal::NoHistory`] until [`create`](HistoryStorage::create)
///   was called, and `create` never replaces an existing history.
/// - Damaged data is [`Error::Corrupt`](crate::Error::Corrupt) and is never
///   overwritten.
#[async_trait]
pub trait HistoryStorage: Send + Sync {
    /// The node whose history this is.
    fn node(&self) -> NodeId;

    /// The last durable history, or `None` if none was ever created.
    async fn load(&self) -> Result<Option<VoteHistory>>;

    /// Store `history` as the first one. Refused with
    /// [`AlpenglowRefusal::HistoryExists`] if one exists.
    async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt>;

    /// Check and record `update` durably under the fence; see the trait
    /// docs.
    async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied>;

    /// A short name of the backend for logs (`file`, `etcd`, `memory`).
    fn backend(&self) -> &'static str {
        "custom"
    }

    /// Apply a [`HistoryStep`] built by one of slashguard's adapters (the
    /// Agave adapter stores a whole saved history this way): the step is
    /// computed from the stored history and its result written in ONE
    /// durable, fenced step, with the same contract as
    /// [`apply`](HistoryStorage::apply). The file, etcd and memory
    /// backends implement it; the default refuses with
    /// [`Error::Invalid`](crate::Error::Invalid).
    async fn apply_step(&self, step: &HistoryStep) -> Result<Applied> {
        let _ = step;
        Err(Error::Invalid(format!(
            "the {} vote history backend cannot store what {} needs",
            self.backend(),
            step.what
        )))
    }
}

/// The new history as a function of the stored one: `None` stored gives
/// [`AlpenglowRefusal::NoHistory`] or what the step decides; the result is
/// the history to write (`None`: nothing to write) and the checks of its
/// votes. Pure, so that a backend can run it again on a record that
/// changed under it (etcd) before its write.
type StepFn =
    dyn Fn(Option<&VoteHistory>) -> Result<(Option<VoteHistory>, Vec<Check>)> + Send + Sync;

/// A step from the stored history to the next one, for
/// [`HistoryStorage::apply_step`]. Only slashguard's own adapters build
/// steps (each checks the rules and refuses a regression itself), so a
/// store written through one is as safe as through
/// [`apply`](HistoryStorage::apply).
#[derive(Clone)]
pub struct HistoryStep {
    what: &'static str,
    f: std::sync::Arc<StepFn>,
}

impl HistoryStep {
    pub(crate) fn new(
        what: &'static str,
        f: impl Fn(Option<&VoteHistory>) -> Result<(Option<VoteHistory>, Vec<Check>)>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        HistoryStep {
            what,
            f: std::sync::Arc::new(f),
        }
    }

    /// Run the step on `current`.
    pub(crate) fn plan(
        &self,
        current: Option<&VoteHistory>,
    ) -> Result<(Option<VoteHistory>, Vec<Check>)> {
        (self.f)(current)
    }

    /// What the step stores (for logs and errors).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl std::fmt::Debug for HistoryStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStep")
            .field("what", &self.what)
            .finish()
    }
}

/// The storage-independent half of an `apply`: the new history to write
/// (`None`: nothing to write) and the checks, against `current`.
pub(crate) fn plan(
    node: &NodeId,
    current: Option<&VoteHistory>,
    update: &HistoryUpdate,
    mode: RuleMode,
) -> Result<(Option<VoteHistory>, Vec<Check>)> {
    let current = current.ok_or_else(|| no_history(node))?;
    Ok(current.apply(update, mode)?)
}

pub(crate) fn no_history(node: &NodeId) -> Error {
    AlpenglowRefusal::NoHistory {
        identity: node.to_string(),
    }
    .into()
}

/// Refuse a `create` over an existing history, or one of another node.
pub(crate) fn check_create(
    node: &NodeId,
    current: Option<&VoteHistory>,
    new: &VoteHistory,
) -> Result<()> {
    if new.identity() != *node {
        return Err(Error::Invalid(format!(
            "vote history of {} offered to the store of {node}",
            new.identity()
        )));
    }
    match current {
        Some(h) => Err(AlpenglowRefusal::HistoryExists {
            identity: node.to_string(),
            root: h.root(),
        }
        .into()),
        None => Ok(()),
    }
}

macro_rules! forward_storage {
    ($($t:ty),*) => {$(
        #[async_trait]
        impl<T: HistoryStorage + ?Sized> HistoryStorage for $t {
            fn node(&self) -> NodeId {
                (**self).node()
            }
            async fn load(&self) -> Result<Option<VoteHistory>> {
                (**self).load().await
            }
            async fn create(&self, history: &VoteHistory) -> Result<StoreReceipt> {
                (**self).create(history).await
            }
            async fn apply(&self, update: &HistoryUpdate, mode: RuleMode) -> Result<Applied> {
                (**self).apply(update, mode).await
            }
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            async fn apply_step(&self, step: &HistoryStep) -> Result<Applied> {
                (**self).apply_step(step).await
            }
        }
    )*};
}

forward_storage!(std::sync::Arc<T>, Box<T>, &T);
