//! Step 5 of the failover procedure as one call: raise every signing key
//! of the backup devices (for TezSign every alias, commonly `consensus` and
//! `companion`; for a Ledger its one watermark) to `current level + margin`,
//! never lowering any.
//!
//! Order and atomicity:
//!
//! 1. Every device is read first. If any kind of any device is above the
//!    target, the call fails with a refusal and nothing is changed.
//! 2. The local store, when given, is raised next in ONE atomic
//!    [`SetMode::RaiseOnly`] batch for every (chain, key, kind), so the
//!    store is ahead of the devices from then on.
//! 3. The devices are raised one by one (a Ledger waits for a person to
//!    approve). A device cannot be raised atomically with another; if one
//!    fails, the ones before it stay raised, which is safe (raising never
//!    allows anything new) and the error names them. Run the call again to
//!    finish: it is idempotent.
//!
//! Precondition, as in the procedure: the primary is stopped and its
//! signer unplugged, and no baker uses these devices while this runs
//! (the Ledger's RESET is not raise-only inside the device; slashguard
//! checks just before asking).

use crate::error::{Error, Result};
use crate::usb::device_guard::{DeviceMarks, WatermarkDevice};
use crate::watermark::{ChainId, ConsensusKind, Mark, SetMode, SignerGuard, WatermarkKey};

/// The margin the seed procedure uses (10 levels).
pub const DEFAULT_MARGIN: u32 = 10;

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedDevice {
    /// The device, as it describes itself.
    pub device: String,
    /// Its marks before.
    pub before: DeviceMarks,
    /// `false` when it was already at the target.
    pub changed: bool,
}

/// The outcome of [`raise_for_failover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverReport {
    /// The level every kind was raised to (round 0).
    pub target: u32,
    /// Each device, in the order given.
    pub devices: Vec<RaisedDevice>,
}

/// Raise every device (and the local store) to `current_level + margin`,
/// round 0, for `chain`. See the module docs for the order and what a
/// partial failure leaves.
pub async fn raise_for_failover(
    devices: &[&dyn WatermarkDevice],
    local: Option<&dyn SignerGuard>,
    chain: ChainId,
    current_level: u32,
    margin: u32,
) -> Result<FailoverReport> {
    let target = current_level
        .checked_add(margin)
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "level {current_level} + margin {margin} is beyond Tezos levels"
            ))
        })?;
    let target_mark = Mark {
        level: target,
        round: 0,
    };

    // 1. Read everything; refuse before changing anything.
    let mut plan = Vec::with_capacity(devices.len());
    for d in devices {
        let before = d.read_marks(chain).await?;
        for (kind, m) in before.marks {
            if m > target_mark {
                tracing::warn!(device = %d.describe(), %kind, device_mark = %m, target_level = target, "failover would lower a device watermark");
                return Err(crate::usb::device_guard::device_refusal(
                    WatermarkKey {
                        chain,
                        key: d.key_hash(),
                        kind,
                    },
                    m,
                    target_mark,
                )
                .into());
            }
        }
        let changed = before.marks.iter().any(|(_, m)| *m < target_mark);
        plan.push(RaisedDevice {
            device: d.describe(),
            before,
            changed,
        });
    }

    // 2. The local store first, all keys and kinds in one atomic batch.
    if let Some(store) = local {
        let mut marks: Vec<(WatermarkKey, Mark)> = Vec::new();
        for d in devices {
            for kind in ConsensusKind::ALL {
                let key = WatermarkKey {
                    chain,
                    key: d.key_hash(),
                    kind,
                };
                if !marks.iter().any(|(k, _)| *k == key) {
                    marks.push((key, target_mark));
                }
            }
        }
        store.set_marks(&marks, SetMode::RaiseOnly).await?;
        tracing::info!(
            target,
            keys = marks.len() / 3,
            "local watermarks raised for failover"
        );
    }

    // 3. Each device.
    let mut raised: Vec<String> = Vec::new();
    for (d, p) in devices.iter().zip(&plan) {
        if !p.changed {
            continue;
        }
        if let Err(e) = d.raise_to(chain, target).await {
            tracing::error!(device = %p.device, error = %e, already_raised = ?raised, "failover raise stopped");
            if raised.is_empty() {
                return Err(e);
            }
            return Err(Error::Signer {
                detail: format!(
                    "raising {} to level {target} failed; already raised: [{}]; fix the device and run again",
                    p.device,
                    raised.join(", ")
                ),
                source: Some(Box::new(e)),
            });
        }
        tracing::info!(device = %p.device, target_level = target, "device watermark raised for failover");
        raised.push(p.device.clone());
    }
    Ok(FailoverReport {
        target,
        devices: plan,
    })
}
