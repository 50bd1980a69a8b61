//! In-memory backends: nothing survives the process. For tests, examples,
//! and as the reference behaviour every durable backend must match.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::identity::NodeId;
use crate::tower::{check_store, StoreMode, StoreReceipt, TowerRecord, TowerStorage};
use crate::watermark::{
    Decision, Mark, SetMode, SignRequest, SignerGuard, Watermark, WatermarkKey, WatermarkTable,
};

/// A tower kept in memory.
#[derive(Debug)]
pub struct MemoryTowerStorage {
    node: NodeId,
    state: Mutex<(Option<TowerRecord>, u64)>,
}

impl MemoryTowerStorage {
    /// An empty store for `node`.
    pub fn new(node: NodeId) -> Self {
        MemoryTowerStorage {
            node,
            state: Mutex::new((None, 0)),
        }
    }
}

#[async_trait]
impl TowerStorage for MemoryTowerStorage {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn node(&self) -> NodeId {
        self.node
    }
    async fn load(&self) -> Result<Option<TowerRecord>> {
        Ok(lock(&self.state).0.clone())
    }
    async fn store(&self, record: &TowerRecord, mode: StoreMode) -> Result<StoreReceipt> {
        let mut state = lock(&self.state);
        check_store(&self.node, state.0.as_ref(), record, mode)?;
        state.0 = Some(record.clone());
        state.1 += 1;
        Ok(StoreReceipt {
            fence: 0,
            sequence: state.1,
        })
    }
}

/// Watermarks kept in memory.
#[derive(Debug, Default)]
pub struct MemoryWatermarks {
    table: Mutex<WatermarkTable>,
}

impl MemoryWatermarks {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SignerGuard for MemoryWatermarks {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        let mut table = lock(&self.table);
        let (decisions, changes) = table.plan_authorize(requests)?;
        table.apply(&changes);
        Ok(decisions)
    }
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        crate::watermark::decide(lock(&self.table).get(&request.key), request)?;
        Ok(())
    }
    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        Ok(lock(&self.table).get(key).copied())
    }
    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        Ok(lock(&self.table).iter().map(|(k, w)| (*k, *w)).collect())
    }
    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        let mut table = lock(&self.table);
        let changes = table.plan_set(marks, mode)?;
        table.apply(&changes);
        Ok(())
    }
}

// A poisoned lock only means another thread panicked while holding it; the
// table itself is only ever replaced whole, so its content is consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An Alpenglow vote history kept in memory (feature `alpenglow`).
#[cfg(feature = "alpenglow")]
#[derive(Debug)]
pub struct MemoryVoteHistory {
    node: NodeId,
    state: Mutex<(Option<crate::alpenglow::VoteHistory>, u64)>,
}

#[cfg(feature = "alpenglow")]
impl MemoryVoteHistory {
    /// An empty store (no history yet) for `node`.
    pub fn new(node: NodeId) -> Self {
        MemoryVoteHistory {
            node,
            state: Mutex::new((None, 0)),
        }
    }
}

#[cfg(feature = "alpenglow")]
#[async_trait]
impl crate::alpenglow::HistoryStorage for MemoryVoteHistory {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    async fn load(&self) -> Result<Option<crate::alpenglow::VoteHistory>> {
        Ok(lock(&self.state).0.clone())
    }

    async fn create(&self, history: &crate::alpenglow::VoteHistory) -> Result<StoreReceipt> {
        let mut state = lock(&self.state);
        crate::alpenglow::storage::check_create(&self.node, state.0.as_ref(), history)?;
        state.0 = Some(history.clone());
        state.1 += 1;
        Ok(StoreReceipt {
            fence: 0,
            sequence: state.1,
        })
    }

    async fn apply(
        &self,
        update: &crate::alpenglow::HistoryUpdate,
        mode: crate::alpenglow::RuleMode,
    ) -> Result<crate::alpenglow::Applied> {
        let step = crate::alpenglow::HistoryStep::new("votes", {
            let (node, update) = (self.node, update.clone());
            move |current| crate::alpenglow::storage::plan(&node, current, &update, mode)
        });
        self.apply_step(&step).await
    }

    async fn apply_step(
        &self,
        step: &crate::alpenglow::HistoryStep,
    ) -> Result<crate::alpenglow::Applied> {
        let mut state = lock(&self.state);
        let (next, checks) = step.plan(state.0.as_ref())?;
        let wrote = next.is_some();
        if let Some(next) = next {
            state.0 = Some(next);
            state.1 += 1;
        }
        Ok(crate::alpenglow::Applied {
            receipt: StoreReceipt {
                fence: 0,
                sequence: state.1,
            },
            checks,
            wrote,
        })
    }
}
