//! [`TezSignDevice`] and [`TezSignSigner`]: the crate's [`Signer`] on a
//! TezSign key, and a [`WatermarkDevice`] for its watermark.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::limit::SignerLimit;
use crate::signer::Signer;
use crate::usb::device_guard::{device_refusal, DeviceMarks, DeviceRule, WatermarkDevice};
use crate::usb::error::DeviceError;
use crate::usb::tezsign::proto::KeyStatus;
use crate::usb::tezsign::{status_marks, TezSignClient};
use crate::usb::transport::BulkTransport;
use crate::watermark::{ChainId, ConsensusKind, Curve, KeyHash, Mark, SignRequest, WatermarkKey};

type Client = TezSignClient<Box<dyn BulkTransport>>;

/// A TezSign gadget. Clones share it; blocking USB I/O runs on tokio's
/// blocking pool, one request at a time.
#[derive(Clone)]
pub struct TezSignDevice {
    client: Arc<Mutex<Client>>,
}

impl std::fmt::Debug for TezSignDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TezSignDevice")
    }
}

fn lock(m: &Mutex<Client>) -> std::sync::MutexGuard<'_, Client> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TezSignDevice {
    /// A device behind `transport`; each request gets `timeout`.
    pub fn new(transport: impl BulkTransport + 'static, timeout: Duration) -> Self {
        let transport: Box<dyn BulkTransport> = Box::new(transport);
        TezSignDevice {
            client: Arc::new(Mutex::new(TezSignClient::new(transport, timeout))),
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<R, DeviceError> + Send + 'static,
    ) -> std::result::Result<R, DeviceError> {
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&client)))
            .await
            .map_err(|e| DeviceError::Io {
                detail: format!("device task failed: {e}"),
            })?
    }

    /// Every key with its lock state and watermarks.
    pub async fn status(&self) -> Result<Vec<KeyStatus>> {
        Ok(self.run(|c| c.status()).await?)
    }

    /// The device's software version.
    pub async fn version(&self) -> Result<String> {
        Ok(self.run(|c| c.version()).await?)
    }

    /// The status of one alias.
    pub async fn key_status(&self, alias: &str) -> Result<KeyStatus> {
        let alias = alias.to_string();
        Ok(self.run(move |c| c.key_status(&alias)).await?)
    }

    /// Unlock `aliases`; fails naming every key the device did not unlock.
    pub async fn unlock(&self, aliases: &[&str], passphrase: &[u8]) -> Result<()> {
        let aliases: Vec<String> = aliases.iter().map(|s| s.to_string()).collect();
        let pass = passphrase.to_vec();
        let results = self
            .run(move |c| {
                let refs: Vec<&str> = aliases.iter().map(String::as_str).collect();
                c.unlock(&refs, &pass)
            })
            .await?;
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{}: {}", r.key_id, r.error))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DeviceError::Locked {
                detail: format!("tezsign did not unlock {}", failed.join("; ")),
            }
            .into())
        }
    }

    /// A signer for the key `alias` (`consensus`, `companion`, ...),
    /// resolving its tz4 address through the device status.
    pub async fn signer(&self, alias: &str) -> Result<TezSignSigner> {
        let st = self.key_status(alias).await?;
        let tz4: KeyHash = st.tz4.parse().map_err(|_| {
            Error::from(DeviceError::bad_reply(
                "status",
                format!("alias {alias:?} has no valid tz4 address ({:?})", st.tz4),
            ))
        })?;
        if tz4.curve != Curve::Bls {
            return Err(DeviceError::bad_reply("status", format!("{tz4} is not a tz4 key")).into());
        }
        Ok(TezSignSigner {
            device: self.clone(),
            alias: alias.to_string(),
            tz4,
        })
    }
}

/// One TezSign key (a tz4 BLS key, by alias). Signatures go to the signing
/// interface, where the device checks its per-kind watermark, persists the
/// advance, then signs; set level goes to the management interface.
#[derive(Clone, Debug)]
pub struct TezSignSigner {
    device: TezSignDevice,
    alias: String,
    tz4: KeyHash,
}

impl TezSignSigner {
    /// The tz4 key (the same as [`Signer::key_hash`] and
    /// [`WatermarkDevice::key_hash`]).
    pub fn key_hash(&self) -> KeyHash {
        self.tz4
    }

    /// The key alias on the device.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The device.
    pub fn device(&self) -> &TezSignDevice {
        &self.device
    }

    async fn marks(&self) -> Result<[(ConsensusKind, Mark); 3]> {
        let alias = self.alias.clone();
        Ok(self
            .device
            .run(move |c| status_marks(&c.key_status(&alias)?))
            .await?)
    }
}

#[async_trait]
impl Signer for TezSignSigner {
    fn key_hash(&self) -> KeyHash {
        self.tz4
    }

    /// Ed25519 and BLS signatures are deterministic; ECDSA (tz2, tz3) is
    /// not assumed to be.
    fn deterministic(&self) -> bool {
        matches!(
            self.tz4.curve,
            crate::watermark::Curve::Ed25519 | crate::watermark::Curve::Bls
        )
    }

    /// The device's own high watermark moves when it signs.
    fn has_own_watermark(&self) -> bool {
        true
    }

    /// Sign on the device. A stale-watermark answer (error 33) comes back
    /// as [`Error::Refused`] when the device mark read right after explains
    /// it, otherwise as [`Error::Signer`] with source
    /// [`DeviceError::RefusedByDeviceWatermark`].
    /// TezSign holds tz4 (BLS) keys only, and this signer signs with one.
    fn check(&self, request: &SignRequest, _payload: &[u8]) -> Result<()> {
        if request.key.key != self.tz4 || request.key.key.curve != Curve::Bls {
            return Err(SignerLimit::Scheme {
                signer: "TezSign",
                key: request.key.key,
                accepts: format!("tz4 keys only, here {} (alias {:?})", self.tz4, self.alias),
            }
            .into());
        }
        Ok(())
    }

    async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let request = SignRequest::parse(payload, self.tz4)?;
        self.check(&request, payload)?;
        let tz4 = self.tz4;
        let alias = self.alias.clone();
        let bytes = payload.to_vec();
        let outcome = self
            .device
            .run(move |c| match c.sign(&tz4, &bytes) {
                Err(e) if e.is_watermark_refusal() => {
                    let marks = c.key_status(&alias).and_then(|s| status_marks(&s)).ok();
                    Ok(Err((e, marks)))
                }
                other => other.map(Ok),
            })
            .await?;
        match outcome {
            Ok(sig) => Ok(sig),
            Err((e, marks)) => {
                let stored = marks.map(|m| {
                    m.iter()
                        .find(|(k, _)| *k == request.key.kind)
                        .map(|(_, m)| *m)
                        .expect("three kinds")
                });
                tracing::warn!(key = %request.key, requested = %request.mark, device = ?stored, "the TezSign watermark refused to sign");
                match stored {
                    // Strictly-greater rule: at or below the device mark.
                    Some(s) if request.mark <= s => {
                        Err(device_refusal(request.key, s, request.mark).into())
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }
}

#[async_trait]
impl WatermarkDevice for TezSignSigner {
    fn key_hash(&self) -> KeyHash {
        self.tz4
    }

    fn describe(&self) -> String {
        format!("TezSign key {:?} ({})", self.alias, self.tz4)
    }

    /// TezSign keeps no chain id: the same marks apply to every chain.
    async fn read_marks(&self, _chain: ChainId) -> Result<DeviceMarks> {
        Ok(DeviceMarks {
            marks: self.marks().await?,
            rule: DeviceRule::StrictPerKind,
        })
    }

    async fn raise_to(&self, chain: ChainId, level: u32) -> Result<()> {
        let marks = self.marks().await?;
        let target = Mark { level, round: 0 };
        if marks.iter().all(|(_, m)| *m >= target) {
            tracing::info!(alias = %self.alias, level, "TezSign watermark already at the requested level");
            return Ok(());
        }
        if let Some((kind, m)) = marks.iter().find(|(_, m)| *m > target) {
            tracing::warn!(alias = %self.alias, %kind, device = %m, requested = %target, "refusing to lower the TezSign watermark");
            return Err(device_refusal(
                WatermarkKey {
                    chain,
                    key: self.tz4,
                    kind: *kind,
                },
                *m,
                target,
            )
            .into());
        }
        if let Some((kind, _)) = marks.iter().find(|(_, m)| m.level == level) {
            return Err(Error::Invalid(format!(
                "tezsign key {:?}: {kind} is already at ({level}, 0) and set level must exceed every kind; raise to {} instead",
                self.alias,
                level + 1
            )));
        }
        let alias = self.alias.clone();
        self.device
            .run(move |c| c.set_level(&alias, level as u64))
            .await?;
        tracing::info!(alias = %self.alias, level, "TezSign watermark raised");
        Ok(())
    }
}
