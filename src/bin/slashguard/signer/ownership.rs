//! `store = "etcd"`: a primary and a backup signer share the baker's
//! watermarks in etcd, and the one that owns the baker signs.
//!
//! The ownership is an [`EtcdIdentity`] named after the baker
//! ([`NodeId::tezos_baker`]), taken with `acquire_when_free`: a standby
//! waits until the owner releases it (a clean stop) or its lease expires
//! (a dead, paused or cut-off owner), then takes it with one transaction.
//! Each term of ownership runs the service on a fenced watermarks handle
//! and fenced signers (`SignerService::activate`), so a signer that lost
//! the baker releases nothing more: its signers check the ownership before
//! authorizing and before releasing, and every watermark write compares
//! the owner key in the same transaction. The watermarks themselves are
//! shared: the next owner never signs other bytes at or below a mark the
//! old one signed.

use std::sync::Arc;

use super::config::EtcdStore;
use super::Shared;
use crate::exit::Failure;
use crate::settings::Settings;

#[cfg(feature = "etcd")]
pub use imp::{check, connect};

#[cfg(not(feature = "etcd"))]
pub use none::{check, connect};

#[cfg(feature = "etcd")]
mod imp {
    use super::*;

    use std::time::Duration;

    use serde_json::json;
    use slashguard::etcd::{EtcdIdentity, EtcdWatermarks, OwnershipOptions};
    use slashguard::watermark::SignerGuard;
    use slashguard::{NodeId, Ownership};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use crate::signer::log;

    /// Connected, not yet serving.
    pub struct Pending {
        identity: EtcdIdentity,
        watermarks: EtcdWatermarks,
        store: EtcdStore,
    }

    /// The task that takes the baker when it is free and runs the terms.
    pub struct Supervisor {
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    /// The baker's identity, as this instance (`--instance`, `instance =`)
    /// holds it.
    fn identity(
        client: slashguard::etcd::EtcdClient,
        store: &EtcdStore,
        settings: &Settings,
    ) -> Result<EtcdIdentity, Failure> {
        let options = OwnershipOptions::new(settings.instance.clone()).lease_ttl(store.lease_ttl);
        Ok(EtcdIdentity::new(
            client,
            NodeId::tezos_baker(&store.name),
            options,
        )?)
    }

    /// Connect to etcd (the `[etcd]` settings); nothing is taken yet.
    pub async fn connect(store: &EtcdStore, settings: &Settings) -> Result<Pending, Failure> {
        let client = crate::etcd_conn::connect(settings).await?;
        Ok(Pending {
            identity: identity(client.clone(), store, settings)?,
            watermarks: EtcdWatermarks::new(client),
            store: store.clone(),
        })
    }

    /// `signer check-config`: etcd answers, who signs for the baker now,
    /// and the watermarks under the prefix are intact.
    pub async fn check(
        store: &EtcdStore,
        settings: &Settings,
    ) -> Result<(String, serde_json::Value), Failure> {
        let pending = connect(store, settings).await?;
        let id = &pending.identity;
        let owner = id.status().await.map_err(|e| {
            Failure::from(e).hint(format!(
                "the owner key of the baker {:?} is damaged: check `slashguard identity status --baker {:?}`",
                store.name, store.name
            ))
        })?;
        let marks = pending.watermarks.watermarks().await?.len();
        let who = match &owner {
            Some(o) => format!(
                "instance {:?} signs (fence {}, lease {})",
                o.instance,
                o.fence,
                o.ttl_left
                    .map_or("expiring".to_string(), |t| format!("{}s left", t.as_secs()))
            ),
            None => "nobody signs now: the first signer to start takes it".to_string(),
        };
        let human = format!(
            "baker {:?} (etcd identity {}): {who}\nthis instance: {:?}\nwatermarks in etcd intact ({marks} marks)\n",
            store.name,
            id.node(),
            settings.instance,
        );
        let json = json!({
            "baker": store.name,
            "identity": id.node().to_string(),
            "instance": settings.instance,
            "lease_ttl_secs": store.lease_ttl.as_secs(),
            "owner": owner.map(|o| json!({"instance": o.instance, "fence": o.fence})),
            "watermarks": marks,
        });
        Ok((human, json))
    }

    impl Pending {
        /// The baker's name.
        pub fn name(&self) -> &str {
            &self.store.name
        }

        /// Start taking the baker, and serving while owning it.
        pub fn spawn(self, shared: Arc<Shared>) -> Supervisor {
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(run(self, shared, stopped));
            Supervisor { stop, task }
        }
    }

    impl Supervisor {
        /// Shutdown, once the service is closed (nothing signs any more):
        /// give the baker up so the backup takes it at once instead of
        /// after the lease. Bounded: an unreachable etcd lets the lease
        /// expire instead.
        pub async fn release(self, bound: Duration) {
            let _ = self.stop.send(true);
            if tokio::time::timeout(bound, self.task).await.is_err() {
                log::event(
                    "release_timeout",
                    json!({"detail": "the baker was not released in time; its lease expires by itself"}),
                );
            }
        }
    }

    /// Resolves once `stop` is set.
    async fn stopped(stop: &mut watch::Receiver<bool>) {
        let _ = stop.wait_for(|s| *s).await;
    }

    async fn run(p: Pending, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
        let service = &shared.service;
        let baker = p.store.name.clone();
        let identity = p.identity.node().to_string();
        let instance = p.identity.instance().to_string();
        loop {
            let own = tokio::select! {
                o = acquire(&p, &shared) => o,
                _ = stopped(&mut stop) => return,
            };
            let fence = own.fence();
            let guard = match p.watermarks.fenced(&p.identity, &own) {
                Ok(g) => g,
                Err(e) => {
                    // Lost between the claim and here: stand by again.
                    log::event(
                        "standby",
                        json!({"baker": baker, "fence": fence, "reason": e.to_string()}),
                    );
                    release(&p.identity, Arc::new(own)).await;
                    continue;
                }
            };
            let own = Arc::new(own);
            let guard: Arc<dyn SignerGuard> = Arc::new(guard);
            if !service.activate(guard, own.clone()).await {
                // Closed meanwhile (shutdown): sign nothing, give it back.
                release(&p.identity, own).await;
                return;
            }
            log::event(
                "active",
                json!({"baker": baker, "identity": identity, "instance": instance, "fence": fence}),
            );
            let lost = tokio::select! {
                why = own.lost() => Some(why),
                _ = stopped(&mut stop) => None,
            };
            match lost {
                Some(why) => {
                    let reason = format!("fenced: lost the baker {baker:?} (fence {fence}): {why}");
                    // Waits for the signatures in flight; they were
                    // refused already (their signers are fenced).
                    service.stand_by(reason).await;
                    log::event(
                        "fenced",
                        json!({"baker": baker, "fence": fence, "reason": why}),
                    );
                    // Revokes our lease; the compare leaves a new owner's
                    // claim alone.
                    release(&p.identity, own).await;
                }
                None => {
                    // The caller closed the service first; closing again
                    // is a no-op that makes sure of it before the release.
                    service.close().await;
                    release(&p.identity, own).await;
                    log::event("released", json!({"baker": baker, "fence": fence}));
                    return;
                }
            }
        }
    }

    /// Wait until the baker is free, and take it. The service stays in
    /// standby meanwhile; its reason says who signs (or why nobody can).
    async fn acquire(p: &Pending, shared: &Shared) -> Ownership {
        // Each attempt waits about one lease for the owner to go, then
        // reports who still has it.
        let wait = p.store.lease_ttl.max(Duration::from_secs(1));
        let mut last = String::new();
        loop {
            let why = match p.identity.acquire_when_free(wait).await {
                Ok(own) => return own,
                Err(e) if e.is_unavailable() => {
                    format!("waiting for the baker {:?} to be free: {e}", p.store.name)
                }
                Err(e) => {
                    // A damaged owner key: never overwritten here.
                    format!(
                        "cannot take the baker {:?}: {e} (inspect it with `slashguard identity status --baker {:?}`)",
                        p.store.name, p.store.name
                    )
                }
            };
            if why != last {
                log::event("standby", json!({"baker": p.store.name, "reason": why}));
                shared.service.stand_by(why.clone()).await;
                last = why;
            }
            // acquire_when_free polls by itself; this only spaces out
            // attempts that fail at once (etcd unreachable, damaged key).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Give `own` up if nothing else holds it any more (the service's
    /// signers were dropped with their term); otherwise its lease expires.
    async fn release(identity: &EtcdIdentity, own: Arc<Ownership>) {
        match Arc::try_unwrap(own) {
            Ok(own) => {
                if let Err(e) = identity.release(own).await {
                    log::event(
                        "release_failed",
                        json!({"error": e.to_string(), "detail": "the lease expires by itself"}),
                    );
                }
            }
            Err(_) => log::event(
                "release_skipped",
                json!({"detail": "the ownership is still referenced; its lease expires by itself"}),
            ),
        }
    }
}

#[cfg(not(feature = "etcd"))]
mod none {
    use super::*;

    /// Never built: without etcd support the configuration is refused.
    pub enum Pending {}

    /// Never built.
    pub enum Supervisor {}

    fn without_etcd() -> Failure {
        crate::exit::needs_etcd()
            .err()
            .unwrap_or_else(|| Failure::bad_input("this slashguard was built without etcd support"))
    }

    pub async fn connect(_: &EtcdStore, _: &Settings) -> Result<Pending, Failure> {
        Err(without_etcd())
    }

    pub async fn check(
        _: &EtcdStore,
        _: &Settings,
    ) -> Result<(String, serde_json::Value), Failure> {
        Err(without_etcd())
    }

    impl Pending {
        pub fn name(&self) -> &str {
            match *self {}
        }
        pub fn spawn(self, _: Arc<Shared>) -> Supervisor {
            match self {}
        }
    }

    impl Supervisor {
        pub async fn release(self, _: std::time::Duration) {
            match self {}
        }
    }
}
