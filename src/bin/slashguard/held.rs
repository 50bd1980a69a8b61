//! Stores a running validator may hold: an import or export never works
//! behind its back. The file store's lock and the etcd identity are what
//! says "running"; `what` names what that validator keeps in memory and
//! overwrites at its next vote ("tower", "vote history").

use std::time::{Duration, Instant};

use crate::exit::Failure;

/// Open a file store with `open`, refusing while a running validator
/// holds its lock. A validator that is stopping (or a process that just
/// forked while holding the lock) lets go within moments: wait a little,
/// bounded, before calling it running.
pub async fn open_unheld<S>(
    mut open: impl FnMut() -> slashguard::Result<S>,
    what: &str,
    show: &str,
) -> Result<S, Failure> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let opened = loop {
        match open() {
            Err(slashguard::Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    match opened {
        Ok(s) => Ok(s),
        Err(slashguard::Error::Locked { path }) => Err(Failure::refused(format!(
            "{} is held by a running validator: its {what} changes with every vote, and a validator started on an exported copy would vote twice",
            path.display()
        ))
        .hint(format!(
            "stop that validator first, then export (`{show}` reads it without exporting)"
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use slashguard::etcd::EtcdIdentity;
    use slashguard::{NodeId, Ownership};

    use super::*;

    /// Take `node`'s identity for an import: refused while an instance
    /// owns it (that validator keeps its `what` in memory and would
    /// overwrite the import, or be fenced by it). The caller releases it.
    pub async fn hold_free(
        identity: &EtcdIdentity,
        node: NodeId,
        what: &str,
    ) -> Result<Ownership, Failure> {
        if let Some(owner) = identity.status().await? {
            return Err(Failure::refused(format!(
                "identity {node} is owned by instance {:?} (fence {}): a running validator keeps its {what} in memory and would overwrite or be fenced by an import",
                owner.instance, owner.fence
            ))
            .hint("stop that validator (or `slashguard identity release`) and import again"));
        }
        Ok(identity.acquire_when_free(Duration::from_secs(5)).await?)
    }

    /// Take `node`'s identity for an export: refused while an instance
    /// owns it (its `what` is stale the moment it is read), unless
    /// `take_over`: then that instance is fenced first. The caller reads
    /// under the returned ownership and releases it for the validator
    /// started on the exported file.
    pub async fn hold_for_export(
        identity: &EtcdIdentity,
        node: NodeId,
        take_over: bool,
        what: &str,
    ) -> Result<Ownership, Failure> {
        match identity.status().await? {
            Some(owner) if !take_over => Err(Failure::refused(format!(
                "identity {node} is owned by instance {:?} (fence {}): it may still be voting, so its {what} is stale the moment it is read, and a validator started on an exported copy would vote twice",
                owner.instance, owner.fence
            ))
            .hint(format!("stop that validator (or `slashguard identity release`) and export again, or pass --take-over to fence it, read its last {what} and hand the identity to the validator you start on the file"))),
            Some(owner) => {
                let own = identity.take_over().await?;
                eprintln!(
                    "took identity {node} over from instance {:?} (fence {}): it can no longer store a {what}",
                    owner.instance, owner.fence
                );
                Ok(own)
            }
            None => Ok(identity
                .acquire_when_free(Duration::from_secs(5))
                .await?),
        }
    }
}

#[cfg(feature = "etcd")]
pub use etcd::{hold_for_export, hold_free};
