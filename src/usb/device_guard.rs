//! A [`SignerGuard`] backed by a signing device's own high watermark.
//!
//! What it guarantees, precisely: a device checks its watermark and
//! advances it in one atomic step **when it signs** (the Ledger in its
//! secure element, TezSign under a per-key lock, persisted before it
//! replies). A guard cannot make the device advance without signing, so
//! [`DeviceWatermarks::authorize`] only reads the device marks and refuses
//! what the device would certainly refuse; it advances nothing and returns
//! [`Decision::Advanced`] for the rest. The atomic check is the device's, at
//! sign time, and it covers every host that can reach the device.
//!
//! So `GuardedSigner<DeviceWatermarks<S>, S>` is safe only because `S`
//! signs on the same device. To get slashguard's rule (which is stricter
//! than the Ledger's: a set mark admits nothing at itself) and a record
//! that survives the loss of the device, put a file or etcd store in front:
//! `GuardedSigner<FileWatermarks, LedgerSigner>` advances the local mark
//! first, then the device checks again when it signs. A request is signed
//! only if both agree.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::usb::ledger::rule::certainly_refused;
use crate::watermark::{
    ChainId, ConsensusKind, Decision, KeyHash, Mark, RefusalReason, SetMode, SignRequest,
    SignerGuard, Watermark, WatermarkKey, WatermarkRefusal,
};

/// How a device applies its marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRule {
    /// The Tezos Baking app: one (level, round) for all kinds, plus flags
    /// the device does not report (see [`crate::usb::ledger::rule`]).
    /// `round_known` is false for old apps that report levels only.
    Ledger {
        /// Whether the device reported its round.
        round_known: bool,
    },
    /// TezSign: each kind strictly above its own mark.
    StrictPerKind,
}

/// A device's watermarks for one chain and key, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMarks {
    /// One mark per kind (the same three for a Ledger).
    pub marks: [(ConsensusKind, Mark); 3],
    /// How the device applies them.
    pub rule: DeviceRule,
}

impl DeviceMarks {
    /// The mark of `kind`.
    pub fn mark(&self, kind: ConsensusKind) -> Mark {
        self.marks
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, m)| *m)
            .expect("all three kinds")
    }

    /// `true` when the device will refuse `kind` at `mark` whatever state
    /// it does not report.
    pub fn certainly_refuses(&self, kind: ConsensusKind, mark: Mark) -> bool {
        let m = self.mark(kind);
        match self.rule {
            DeviceRule::Ledger { round_known } => {
                certainly_refused(m.level, round_known.then_some(m.round), kind, mark)
            }
            DeviceRule::StrictPerKind => mark <= m,
        }
    }

    /// The highest of the three marks.
    pub fn highest(&self) -> Mark {
        self.marks.iter().map(|(_, m)| *m).max().expect("three")
    }
}

/// A signing device with its own watermark, as the guard and the failover
/// helper need it. Implemented by [`LedgerSigner`](crate::usb::LedgerSigner)
/// and [`TezSignSigner`](crate::usb::TezSignSigner); implement it for other
/// devices.
#[async_trait]
pub trait WatermarkDevice: Send + Sync {
    /// The key the device signs with.
    fn key_hash(&self) -> KeyHash;

    /// A name for logs and reports (model, serial, alias).
    fn describe(&self) -> String;

    /// Read the device's marks that apply to `chain`.
    async fn read_marks(&self, chain: ChainId) -> Result<DeviceMarks>;

    /// Raise every kind to (level, 0) for `chain`, never lowering any:
    /// if a kind is above (level, 0) nothing changes and the error is a
    /// [`WatermarkRefusal`] (so [`Error::is_refusal`] holds). A no-op when
    /// every kind is already at or above (level, 0).
    async fn raise_to(&self, chain: ChainId, level: u32) -> Result<()>;
}

#[async_trait]
impl<T: WatermarkDevice + ?Sized> WatermarkDevice for std::sync::Arc<T> {
    fn key_hash(&self) -> KeyHash {
        (**self).key_hash()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn read_marks(&self, chain: ChainId) -> Result<DeviceMarks> {
        (**self).read_marks(chain).await
    }
    async fn raise_to(&self, chain: ChainId, level: u32) -> Result<()> {
        (**self).raise_to(chain, level).await
    }
}

/// The refusal a device mark stands for, built the way the crate's rule
/// names it (a device mark carries no payload hash).
pub(crate) fn device_refusal(key: WatermarkKey, stored: Mark, requested: Mark) -> WatermarkRefusal {
    WatermarkRefusal {
        key,
        stored: Box::new(Watermark::raised(stored)),
        requested,
        reason: if requested < stored {
            RefusalReason::Below
        } else {
            RefusalReason::AtRaisedMark
        },
    }
}

/// [`SignerGuard`] over one device key on one chain. See the module docs
/// for exactly what it does and does not guarantee.
pub struct DeviceWatermarks<D> {
    device: D,
    chain: ChainId,
}

impl<D: WatermarkDevice> DeviceWatermarks<D> {
    /// Guard with `device`'s watermark on `chain`.
    pub fn new(device: D, chain: ChainId) -> Self {
        DeviceWatermarks { device, chain }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    fn check_key(&self, key: &WatermarkKey) -> Result<()> {
        if key.key != self.device.key_hash() {
            return Err(Error::Invalid(format!(
                "{key} is not the key of {} ({})",
                self.device.describe(),
                self.device.key_hash()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl<D: WatermarkDevice> SignerGuard for DeviceWatermarks<D> {
    fn backend(&self) -> &'static str {
        "device"
    }

    // The device's own watermark moves when it signs: it is asked first.
    fn keeps_signatures(&self) -> bool {
        false
    }

    async fn stored_signature(
        &self,
        _request: &SignRequest,
    ) -> Result<Option<crate::watermark::StoredSignature>> {
        Ok(None)
    }

    /// Refuses what the device would certainly refuse; advances nothing
    /// (the device advances when it signs). All or nothing: one refusal
    /// refuses the batch.
    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
        let mut read: Vec<(ChainId, DeviceMarks)> = Vec::new();
        for r in requests {
            self.check_key(&r.key)?;
            let marks = match read.iter().find(|(c, _)| *c == r.key.chain) {
                Some((_, m)) => *m,
                None => {
                    let m = self.device.read_marks(r.key.chain).await?;
                    read.push((r.key.chain, m));
                    m
                }
            };
            if marks.certainly_refuses(r.key.kind, r.mark) {
                let stored = marks.mark(r.key.kind);
                let refusal = device_refusal(r.key, stored, r.mark);
                return Err(refusal.into());
            }
        }
        Ok(vec![Decision::Advanced; requests.len()])
    }

    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
        if key.key != self.device.key_hash() {
            return Ok(None);
        }
        let marks = self.device.read_marks(key.chain).await?;
        Ok(Some(Watermark::raised(marks.mark(key.kind))))
    }

    /// The three marks of the device key on the guard's chain. For a Ledger
    /// all three are the device's one (level, round); it may still accept a
    /// (pre)attestation at exactly that mark, so the value reported is the
    /// conservative one.
    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
        let marks = self.device.read_marks(self.chain).await?;
        Ok(marks
            .marks
            .iter()
            .map(|(kind, mark)| {
                (
                    WatermarkKey {
                        chain: self.chain,
                        key: self.device.key_hash(),
                        kind: *kind,
                    },
                    Watermark::raised(*mark),
                )
            })
            .collect())
    }

    /// Raise the device: every kind to (L, 0) where L is the highest level
    /// asked for (a device sets all kinds at once, so some kinds may be
    /// raised further than asked, never less). Marks must have round 0 and
    /// belong to the device key on the guard's chain. [`SetMode::Force`] is
    /// refused: slashguard never lowers a device watermark.
    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
        if mode == SetMode::Force {
            return Err(Error::Invalid(
                "a device watermark is only ever raised; SetMode::Force is refused for devices"
                    .into(),
            ));
        }
        let mut level = None;
        for (key, mark) in marks {
            self.check_key(key)?;
            if key.chain != self.chain {
                return Err(Error::Invalid(format!(
                    "{key} is not on this guard's chain {}",
                    self.chain
                )));
            }
            if mark.round != 0 {
                return Err(Error::Invalid(format!(
                    "a device sets (level, 0) only; {key} asks for {mark}: ask for level {} instead",
                    mark.level.saturating_add(1)
                )));
            }
            level = level.max(Some(mark.level));
        }
        match level {
            Some(l) => self.device.raise_to(self.chain, l).await,
            None => Ok(()),
        }
    }
}
