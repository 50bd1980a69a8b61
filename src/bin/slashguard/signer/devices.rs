//! Device keys of `slashguard signer`: a Ledger running Tezos Baking (over
//! USB or the Speculos emulator's APDU port) or a TezSign key, opened at
//! start with the CLI's own device code (`crate::device`), their key read
//! from the device and checked against the configured `pkh`.
//!
//! Every device key signs through the service's [`GuardedSigner`] on the
//! same watermark store as software keys (a repeat returns the stored
//! signature without asking the device; the store's precheck refuses what
//! it would refuse before the device is asked; the signature is released
//! only after the store's durable advance), and the device checks its own
//! watermark when it signs. Its requests wait in one [`DeviceQueue`] per
//! device (one at a time, "device busy" rather than a wait past the
//! request deadline).
//!
//! [`GuardedSigner`]: slashguard::GuardedSigner
//! [`DeviceQueue`]: slashguard::usb::DeviceQueue

use serde_json::{json, Value};
use slashguard::keys::PublicKey;
use slashguard::remote_signer::{KeyPolicy, Role, ServedKey};
use slashguard::watermark::KeyHash;

use super::config::{DeviceSpec, KeySource, Limits, LoadedKey};
use crate::exit::Failure;

/// What start-up and `check-config` learned of one device key.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    /// The configured name.
    pub label: String,
    /// `ledger` or `tezsign`.
    pub model: &'static str,
    /// Where it was looked for.
    pub location: String,
    /// The key it answered with.
    pub pkh: Option<KeyHash>,
    /// App or firmware version, when the device told.
    pub version: Option<String>,
    /// Whether the device can sign with the key now (Ledger: the key is
    /// the authorized baking key; TezSign: the key is unlocked).
    pub ready: Option<bool>,
    /// Why it is not usable, if it is not.
    pub error: Option<String>,
}

impl DeviceReport {
    pub fn reachable(&self) -> bool {
        self.error.is_none()
    }

    pub fn human(&self) -> String {
        let mut line = format!("device key {} [{}]: ", self.label, self.model);
        match (&self.error, self.pkh) {
            (Some(e), _) => line.push_str(&format!("NOT usable: {e}")),
            (None, pkh) => {
                line.push_str(&format!(
                    "reachable, key {}",
                    pkh.map_or("unknown".into(), |p| p.to_string())
                ));
                if let Some(v) = &self.version {
                    line.push_str(&format!(", {v}"));
                }
                match (self.model, self.ready) {
                    ("ledger", Some(false)) => line.push_str(
                        ", NOT authorized for baking on the device (every signature will be refused until it is: `octez-client setup ledger to bake for ...` on this host)",
                    ),
                    ("tezsign", Some(false)) => line.push_str(", locked"),
                    _ => {}
                }
            }
        }
        line.push('\n');
        line
    }

    pub fn json(&self) -> Value {
        json!({
            "label": self.label,
            "device": self.model,
            "location": self.location,
            "pkh": self.pkh.map(|p| p.to_string()),
            "version": self.version,
            "ready": self.ready,
            "reachable": self.reachable(),
            "error": self.error,
        })
    }
}

/// The key a device answered with, checked against the configured `pkh`
/// and the key's role.
#[cfg_attr(not(feature = "usb"), allow(dead_code))]
fn check_key(
    label: &str,
    policy: &KeyPolicy,
    spec: &DeviceSpec,
    found: KeyHash,
) -> Result<(), Failure> {
    if let Some(want) = spec.pkh {
        if want != found {
            return Err(Failure::bad_input(format!(
                "{label}: the device answers with key {found}, and the configuration names pkh = \"{want}\"; refusing to start"
            ))
            .hint("a wrong device, a wrong path or curve, or a device set up from another seed: plug in the right one, or correct the key's pkh/path/curve"));
        }
    }
    if policy.role == Role::Companion && found.curve != slashguard::watermark::Curve::Bls {
        return Err(Failure::bad_input(format!(
            "{label}: a companion key is a tz4 (BLS) key, and the device answers with {found}"
        )));
    }
    Ok(())
}

/// Every key ready to serve, in the configuration's order, and a report
/// per device key. A device that does not answer, or answers with another
/// key than the configured `pkh`, stops the start.
pub async fn open(
    keys: Vec<LoadedKey>,
    limits: &Limits,
) -> Result<(Vec<(ServedKey, KeyPolicy)>, Vec<DeviceReport>), Failure> {
    let mut opened = imp::Opened::new();
    let mut out = Vec::new();
    let mut reports = Vec::new();
    for key in keys {
        let LoadedKey {
            alias,
            source,
            policy,
        } = key;
        match source {
            KeySource::Software(k) => out.push((ServedKey::software(k), policy)),
            KeySource::Device(spec) => {
                let (served, report) = opened.open(&alias, &spec, &policy, limits).await?;
                out.push((served, policy));
                reports.push(report);
            }
        }
    }
    // Two entries that turn out to be one key (a device's key equal to a
    // software key, or to another device's).
    for (i, (a, _)) in out.iter().enumerate() {
        if let Some((b, _)) = out[i + 1..]
            .iter()
            .find(|(b, _)| b.key_hash() == a.key_hash())
        {
            return Err(Failure::bad_input(format!(
                "{} is served twice ({} and {}); serve each key once",
                a.key_hash(),
                a.device_name().unwrap_or("a software key"),
                b.device_name().unwrap_or("a software key"),
            )));
        }
    }
    Ok((out, reports))
}

/// `check-config`: each device key, reachable or not (nothing fails here;
/// the caller decides).
pub async fn probe(keys: &[LoadedKey], limits: &Limits) -> Vec<DeviceReport> {
    let mut opened = imp::Opened::new();
    let mut reports = Vec::new();
    for key in keys {
        let KeySource::Device(spec) = &key.source else {
            continue;
        };
        let report = match opened.open(&key.alias, spec, &key.policy, limits).await {
            Ok((_, report)) => report,
            Err(f) => DeviceReport {
                label: key.alias.clone(),
                model: spec.model.name(),
                location: spec.model.location(),
                pkh: None,
                version: None,
                ready: None,
                error: Some(match &f.hint {
                    Some(h) => format!("{} (next: {h})", f.message),
                    None => f.message.clone(),
                }),
            },
        };
        reports.push(report);
    }
    reports
}

/// The device key's public key in Tezos form.
#[cfg_attr(not(feature = "usb"), allow(dead_code))]
fn public_key(
    label: &str,
    curve: slashguard::watermark::Curve,
    bytes: &[u8],
) -> Result<PublicKey, Failure> {
    PublicKey::from_bytes(curve, bytes).map_err(|e| {
        Failure::new(
            crate::exit::Code::Other,
            format!("{label}: the device answered with a public key that does not decode: {e}"),
        )
    })
}

#[cfg(feature = "usb")]
mod imp {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use slashguard::keys::{signature_from_b58, PublicKey};
    use slashguard::remote_signer::{KeyPolicy, ServedKey};
    use slashguard::usb::ledger::{AppKind, LedgerTimeouts};
    use slashguard::usb::tezsign::proto::LockState;
    use slashguard::usb::{DeviceQueue, LedgerConfig, QueuedSigner, TezSignDevice};
    use zeroize::Zeroizing;

    use super::{check_key, public_key, DeviceReport};
    use crate::device::{connect_ledger, curve, path};
    use crate::exit::Failure;
    use crate::signer::config::{DeviceModel, DeviceSpec, Limits};

    const START_HINT: &str = "check the device: plugged in, unlocked, the Tezos Baking app open (Ledger) or the gadget started (TezSign), and no other program using it; `slashguard signer check-config` shows each device key";

    /// The TezSign gadgets opened so far (one handle and one queue per
    /// gadget, shared by its aliases).
    pub struct Opened {
        tezsign: BTreeMap<String, (TezSignDevice, DeviceQueue)>,
    }

    /// How long a request may spend on a device, waiting in line
    /// included: a little under the request deadline, so that a refusal
    /// ("device busy") reaches the client before the deadline does.
    fn budget(limits: &Limits) -> Duration {
        limits.request_timeout * 9 / 10
    }

    impl Opened {
        pub fn new() -> Self {
            Opened {
                tezsign: BTreeMap::new(),
            }
        }

        pub async fn open(
            &mut self,
            label: &str,
            spec: &DeviceSpec,
            policy: &KeyPolicy,
            limits: &Limits,
        ) -> Result<(ServedKey, DeviceReport), Failure> {
            match &spec.model {
                DeviceModel::Ledger {
                    at,
                    path: p,
                    curve: c,
                } => {
                    let config = LedgerConfig {
                        path: path(p, &format!("{}: path", label))?,
                        derivation: curve(c, &format!("{}: curve", label))?,
                        timeouts: LedgerTimeouts {
                            command: spec.timeout,
                            ..LedgerTimeouts::default()
                        },
                    };
                    let start = Instant::now();
                    let signer = connect_ledger(at, config, true)
                        .await
                        .map_err(|f| f.hint(START_HINT))?;
                    // VERSION and GET_PUBLIC_KEY: two exchanges, as a sign.
                    let took = start.elapsed();
                    let found = signer.key_hash();
                    check_key(label, policy, spec, found)?;
                    let bytes = signer
                        .public_key()
                        .tezos_bytes()
                        .map_err(slashguard::Error::from)?;
                    let public = public_key(label, found.curve, &bytes)?;
                    let v = signer.app_version();
                    let app = match v.kind {
                        AppKind::Baking => "Tezos Baking",
                        AppKind::Wallet => "Tezos Wallet",
                        AppKind::Other(_) => "another app",
                    };
                    let ready = signer.is_authorized().await.ok();
                    if ready == Some(false) {
                        tracing::warn!(key = %found, "the Ledger has not authorized this key for baking");
                    }
                    let queue =
                        DeviceQueue::new(label.to_string(), budget(limits)).with_estimate(took);
                    let served = ServedKey::device(
                        QueuedSigner::new(signer, queue),
                        public,
                        label.to_string(),
                    )?;
                    Ok((
                        served,
                        DeviceReport {
                            label: label.to_string(),
                            model: "ledger",
                            location: spec.model.location(),
                            pkh: Some(found),
                            version: Some(format!("{app} {}.{}.{}", v.major, v.minor, v.patch)),
                            ready,
                            error: None,
                        },
                    ))
                }
                DeviceModel::TezSign {
                    serial,
                    alias,
                    passphrase_file,
                } => {
                    let (device, queue) = match self.tezsign.get(serial) {
                        Some(d) => d.clone(),
                        None => {
                            let start = Instant::now();
                            let device = crate::device::open_tezsign(serial, spec.timeout, true)
                                .map_err(|f| f.hint(START_HINT))?;
                            let d = (
                                device,
                                DeviceQueue::new(
                                    format!("tezsign ({})", spec.model.location()),
                                    budget(limits),
                                )
                                .with_estimate(start.elapsed()),
                            );
                            self.tezsign.insert(serial.clone(), d.clone());
                            d
                        }
                    };
                    if let Some(file) = passphrase_file {
                        let pass = read_passphrase(file)?;
                        device
                            .unlock(&[alias.as_str()], &pass)
                            .await
                            .map_err(|e| Failure::from(e).hint("check passphrase-file"))?;
                    }
                    let status = device
                        .key_status(alias)
                        .await
                        .map_err(|e| Failure::from(e).hint(START_HINT))?;
                    let signer = device.signer(alias).await?;
                    let found = signer.key_hash();
                    check_key(label, policy, spec, found)?;
                    let public: PublicKey = status.bl_pubkey.parse().map_err(|_| {
                        Failure::new(
                            crate::exit::Code::Other,
                            format!(
                                "{}: the TezSign reports no usable public key for alias {alias:?} ({:?}); a baker cannot check signatures without it",
                                label, status.bl_pubkey
                            ),
                        )
                    })?;
                    let locked = status.lock_state() != LockState::Unlocked;
                    if locked {
                        return Err(Failure::new(
                            crate::exit::Code::Unavailable,
                            format!("{}: the TezSign key {alias:?} is locked", label),
                        )
                        .hint("set passphrase-file on this key so the signer unlocks it at start (this process holds the device, so nothing else can unlock it while it runs)"));
                    }
                    let version = device.version().await.ok();
                    let mut served = ServedKey::device(
                        QueuedSigner::new(signer, queue),
                        public,
                        label.to_string(),
                    )?;
                    if !status.pop.is_empty() {
                        let proof = signature_from_b58(&status.pop).map_err(|e| {
                            Failure::bad_input(format!(
                                "{}: the TezSign's proof of possession does not decode: {e}",
                                label
                            ))
                        })?;
                        served = served.with_proof_of_possession(proof)?;
                    }
                    Ok((
                        served,
                        DeviceReport {
                            label: label.to_string(),
                            model: "tezsign",
                            location: spec.model.location(),
                            pkh: Some(found),
                            version: version.map(|v| format!("TezSign {v}")),
                            ready: Some(!locked),
                            error: None,
                        },
                    ))
                }
            }
        }
    }

    fn read_passphrase(path: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let mut bytes =
            Zeroizing::new(std::fs::read(path).map_err(|e| {
                Failure::bad_input(format!("passphrase-file {}: {e}", path.display()))
            })?);
        // A file written by `echo` ends in a newline that is no part of
        // the passphrase.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(bytes)
    }
}

#[cfg(not(feature = "usb"))]
mod imp {
    use slashguard::remote_signer::{KeyPolicy, ServedKey};

    use super::DeviceReport;
    use crate::exit::Failure;
    use crate::signer::config::{DeviceSpec, Limits};

    /// Without USB support no device key gets past the configuration.
    pub struct Opened;

    impl Opened {
        pub fn new() -> Self {
            Opened
        }

        pub async fn open(
            &mut self,
            _: &str,
            _: &DeviceSpec,
            _: &KeyPolicy,
            _: &Limits,
        ) -> Result<(ServedKey, DeviceReport), Failure> {
            crate::exit::needs_usb()?;
            unreachable!("needs_usb refuses without the usb feature")
        }
    }
}
