//! [`ServedKey`]: a key a [`SignerService`](crate::remote_signer::SignerService)
//! serves, held in memory (a software key) or by a device (a Ledger, a
//! TezSign, or any other [`Signer`] that keeps its secret elsewhere).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::keys::{PublicKey, SoftwareKey};
use crate::signer::Signer;
use crate::watermark::KeyHash;

/// A key behind the service. Consensus payloads of every key go through
/// the same [`GuardedSigner`](crate::GuardedSigner) on the service's
/// watermark store; a software key also signs the generic operations its
/// policy allows, a device key does not (a Ledger's Tezos Baking app and
/// TezSign sign consensus operations only).
#[derive(Clone)]
pub struct ServedKey {
    signer: Arc<dyn Signer>,
    public: PublicKey,
    /// For generic operations (software keys only).
    software: Option<Arc<SoftwareKey>>,
    proof_of_possession: Option<Vec<u8>>,
    device: Option<String>,
}

impl std::fmt::Debug for ServedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Some(d) => write!(f, "ServedKey({} on {d})", self.public.hash()),
            None => write!(f, "ServedKey({}, software)", self.public.hash()),
        }
    }
}

impl ServedKey {
    /// A software key: consensus payloads, and generic operations as its
    /// policy allows; tz4 keys have their proof of possession.
    pub fn software(key: SoftwareKey) -> Self {
        let public = key.public_key();
        let proof_of_possession = key.proof_of_possession();
        let key = Arc::new(key);
        ServedKey {
            signer: key.clone(),
            public,
            software: Some(key),
            proof_of_possession,
            device: None,
        }
    }

    /// A key held by a device, described by `device` in logs and errors
    /// ("Ledger at ...", "TezSign alias ..."). `public` is the public key
    /// the device reported; it must be the key `signer` signs with.
    ///
    /// Errors: [`Error::Config`] when `public` is not `signer`'s key.
    pub fn device(
        signer: impl Signer + 'static,
        public: PublicKey,
        device: impl Into<String>,
    ) -> Result<Self> {
        let device = device.into();
        if public.hash() != signer.key_hash() {
            return Err(Error::Config(format!(
                "{device}: the public key {} (hash {}) is not the key {} it signs with",
                public,
                public.hash(),
                signer.key_hash()
            )));
        }
        Ok(ServedKey {
            signer: Arc::new(signer),
            public,
            software: None,
            proof_of_possession: None,
            device: Some(device),
        })
    }

    /// Give a device's tz4 key the proof of possession the device reported.
    ///
    /// Errors: [`Error::Config`] when it does not verify against the key.
    pub fn with_proof_of_possession(mut self, proof: Vec<u8>) -> Result<Self> {
        if !self.public.verify_proof_of_possession(&proof) {
            return Err(Error::Config(format!(
                "{}: the proof of possession does not verify against {}",
                self.device.as_deref().unwrap_or("key"),
                self.public
            )));
        }
        self.proof_of_possession = Some(proof);
        Ok(self)
    }

    /// The key's hash.
    pub fn key_hash(&self) -> KeyHash {
        self.public.hash()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// What holds the key, for a device key.
    pub fn device_name(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// The signer of consensus payloads.
    pub(crate) fn signer(&self) -> Arc<dyn Signer> {
        self.signer.clone()
    }

    /// The software key, which alone signs generic operations.
    pub(crate) fn software_key(&self) -> Option<&SoftwareKey> {
        self.software.as_deref()
    }

    pub(crate) fn proof_of_possession(&self) -> Option<&[u8]> {
        self.proof_of_possession.as_deref()
    }
}

impl From<SoftwareKey> for ServedKey {
    fn from(key: SoftwareKey) -> Self {
        ServedKey::software(key)
    }
}
