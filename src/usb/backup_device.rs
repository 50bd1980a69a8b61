//! The USB signers as [`BackupDevice`]s of a
//! [`BackupGuard`](crate::failover::BackupGuard): a backup Ledger must not
//! be authorized for baking before activation (the seed: "Backup TezSign
//! device or Ledger (not authorized for baking)", "Don't pre-authorize -
//! wait until needed"); activation then sets its watermark and authorizes
//! its key in one approval, as `tezbake setup-ledger --authorize --hwm`
//! does.

use async_trait::async_trait;

use crate::error::Result;
use crate::failover::{BackupDevice, FailoverRefusal};
use crate::usb::device_guard::WatermarkDevice;
use crate::usb::ledger_signer::LedgerSigner;
use crate::usb::tezsign_signer::TezSignSigner;
use crate::watermark::{ChainId, KeyHash};

#[async_trait]
impl BackupDevice for LedgerSigner {
    fn key_hash(&self) -> KeyHash {
        LedgerSigner::key_hash(self)
    }

    fn describe(&self) -> String {
        WatermarkDevice::describe(self)
    }

    /// Refuses when the Baking app has any key authorized: this one could
    /// sign, and another one means the device is set up for something
    /// else.
    async fn ensure_standby(&self) -> Result<()> {
        match self.authorized_key().await? {
            None => Ok(()),
            Some((derivation, path)) => {
                let which = if self.is_authorized().await? {
                    "this key".to_string()
                } else {
                    format!("another key ({derivation:?} at {path})")
                };
                Err(FailoverRefusal::PreAuthorized {
                    detail: format!(
                        "{} has {which} authorized for baking before activation; \
                         deauthorize it (or reinstall the Baking app) and activate again",
                        WatermarkDevice::describe(self)
                    ),
                }
                .into())
            }
        }
    }

    /// SETUP: the chain, both watermarks at (`level`, 0) and this key
    /// authorized, in one approval on the device. Refuses to lower either
    /// watermark.
    async fn arm(&self, chain: ChainId, level: u32) -> Result<()> {
        self.setup(chain, level).await
    }
}

#[async_trait]
impl BackupDevice for TezSignSigner {
    fn key_hash(&self) -> KeyHash {
        TezSignSigner::key_hash(self)
    }

    fn describe(&self) -> String {
        WatermarkDevice::describe(self)
    }

    /// TezSign has no baking authorization to check: a key signs once
    /// unlocked, and what keeps a backup from double signing is its
    /// watermark, which [`arm`](BackupDevice::arm) raises.
    async fn ensure_standby(&self) -> Result<()> {
        Ok(())
    }

    /// `set-level` of this alias to `level` (every kind), never lowering.
    async fn arm(&self, chain: ChainId, level: u32) -> Result<()> {
        self.raise_to(chain, level).await
    }
}
