//! The `[signer]` section of the configuration file, and loading what it
//! names: keys (octez-client's `secret_keys` file, or the device that
//! holds them), policies, the watermark store (a file, or etcd with the
//! baker's ownership), listeners and limits. Devices are named here and
//! opened by `devices`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use slashguard::keys::{KeyError, PublicKey, SecretKeysFile, SoftwareKey};
use slashguard::remote_signer::generic::{OperationKind, MAGIC as GENERIC_MAGIC};
use slashguard::remote_signer::{KeyPolicy, MagicBytes, Role, ServiceOptions};
use slashguard::watermark::KeyHash;
use slashguard::watermark::{ChainId, ConsensusKind, Curve};
use zeroize::Zeroizing;

use crate::device::LedgerAt;
use crate::exit::Failure;
use crate::settings::parse_chain;

/// Shown by `slashguard signer --help`.
pub const EXAMPLE: &str = "\
Configuration: the [signer] section of the config file (--config or
SLASHGUARD_CONFIG); the files, listeners and limits also have flags and
SLASHGUARD_SIGNER_* variables (above), which win over the file, e.g.:

  [signer]
  secret-keys-file = \"/home/baker/.octez-client/secret_keys\"
  password-file = \"/etc/slashguard/key-password\"   # or password-env = \"VAR\"
  watermarks-file = \"/var/lib/slashguard/watermarks\"
  # store = \"etcd\"                         # instead of watermarks-file: the
  #                                        # watermarks in etcd ([etcd] section or
  #                                        # --etcd-* flags), shared with a backup
  #                                        # host; see [signer.ownership]
  # magic-bytes = [0x11, 0x12, 0x13]        # -M (default: all three, and
                                           # 0x03 if a key lists generic-operations)
  # require-authentication = true
  # authorized-keys = [\"edpk...\"]
  # allow-list-known-keys = false
  # allow-proof-of-possession = false       # tz4 bls_prove_possession
  [signer.listen]
  http = [\"127.0.0.1:6732\"]
  tcp = [\"127.0.0.1:7732\"]
  unix = [\"/run/slashguard/signer.sock\"]
  # metrics = [\"127.0.0.1:9732\"]          # Prometheus /metrics only
                                           # (every http listener serves it too)
  # https = [\"0.0.0.0:6733\"]               # needs [signer.tls]
  # [signer.tls]
  # certificate-file = \"/etc/slashguard/signer.pem\"   # PEM chain
  # key-file = \"/etc/slashguard/signer-key.pem\"
  [signer.limits]                          # the defaults
  max-body-bytes = 16384
  max-connections = 64                     # per listener
  first-request-timeout-ms = 2000          # connect to first byte
  request-timeout-ms = 10000
  idle-timeout-ms = 60000
  # [signer.ownership]                     # store = \"etcd\" only
  # name = \"my-baker\"                     # the same on the primary and backup
  # lease-ttl-secs = 5                     # a dead active signer is replaced
  #                                        # after about this long
  [[signer.keys]]
  key = \"consensus\"                       # an alias of secret_keys, or a device:
  # device = \"ledger\"                     # instead of key: a Ledger running
  #                                        # Tezos Baking (feature usb)
  # serial = \"auto\"                       # USB serial (`slashguard device list`),
  #                                        # or auto for the only one
  # speculos = \"127.0.0.1:9999\"           # instead of serial: Speculos's APDU port
  # path = \"44'/1729'/0'/0'\"              # curve = \"ed25519\" (secp256k1, p256,
  #                                        # bip32-ed25519, bls)
  # device = \"tezsign\"                    # or a TezSign key: serial as above,
  # alias = \"consensus\"                   # its alias on the device,
  # passphrase-file = \"/etc/slashguard/tezsign-pass\"  # unlocked at start
  # pkh = \"tz1...\"                        # refuse to start unless the device
  #                                        # answers with this key
  # timeout-ms = 2500                      # per device command (default: a
  #                                        # quarter of request-timeout-ms)
  # kinds = [\"block\", \"preattestation\", \"attestation\"]
  # chains = [\"NetXdQprcVkpaWU\"]            # default: any chain
  # role = \"consensus\"                     # or \"companion\" (tz4 only)
  # generic-operations = [\"transaction\"]  # 0x03 kinds this key signs
  #   (default none; every content of a batch must be listed and have this
  #   key as source; reveal, transaction, origination, delegation,
  #   register_global_constant, set_deposits_limit, increase_paid_storage,
  #   update_consensus_key, update_companion_key, transfer_ticket,
  #   proposals, ballot)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    secret_keys_file: Option<PathBuf>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    store: Option<String>,
    watermarks_file: Option<PathBuf>,
    ownership: Option<OwnershipSection>,
    magic_bytes: Option<Vec<u8>>,
    #[serde(default)]
    require_authentication: bool,
    #[serde(default)]
    authorized_keys: Vec<String>,
    #[serde(default)]
    allow_list_known_keys: bool,
    #[serde(default)]
    allow_proof_of_possession: bool,
    #[serde(default)]
    listen: ListenSection,
    #[serde(default)]
    limits: LimitsSection,
    tls: Option<TlsSection>,
    keys: Vec<KeySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ListenSection {
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    tcp: Vec<String>,
    #[serde(default)]
    unix: Vec<PathBuf>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    https: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsSection {
    certificate_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSection {
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    first_request_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OwnershipSection {
    name: String,
    lease_ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeySection {
    key: Option<String>,
    device: Option<String>,
    serial: Option<String>,
    speculos: Option<String>,
    path: Option<String>,
    curve: Option<String>,
    alias: Option<String>,
    passphrase_file: Option<PathBuf>,
    pkh: Option<String>,
    timeout_ms: Option<u64>,
    kinds: Option<Vec<String>>,
    chains: Option<Vec<String>>,
    role: Option<String>,
    #[serde(default)]
    generic_operations: Vec<String>,
}

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub http: Vec<String>,
    pub tcp: Vec<String>,
    pub unix: Vec<PathBuf>,
    /// Listeners that serve only `GET /metrics`.
    pub metrics: Vec<String>,
    /// HTTPS listeners (the HTTP routes over TLS).
    pub https: Vec<String>,
}

/// The HTTPS certificate chain and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The bounds of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Open connections of each listener (one listener full of idle
    /// clients does not close the others).
    pub max_connections: usize,
    /// From connecting to the first byte of the first request: a client
    /// that connects and sends nothing is dropped after this.
    pub first_request_timeout: Duration,
    /// From the first byte of a request to its reply, signing included.
    pub request_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
}

/// Where the watermarks live, and so which process signs.
#[derive(Debug, Clone)]
pub enum Store {
    /// A file on this host; its lock admits one signer process.
    File(PathBuf),
    /// etcd (the `[etcd]` settings), shared with a backup host; the
    /// process that owns the baker signs.
    Etcd(EtcdStore),
}

/// `store = "etcd"`: the baker's ownership.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    /// The baker's name, the same on every host that may sign for it.
    pub name: String,
    /// How long a dead active signer keeps the baker.
    pub lease_ttl: Duration,
}

/// The longest baker name (etcd's owner claim carries instance names of
/// this size too).
const MAX_NAME_LEN: usize = 255;
/// The default lease TTL of the baker's ownership.
const DEFAULT_LEASE_TTL_SECS: u64 = 5;
/// The longest lease accepted: a dead signer keeps its baker this long.
const MAX_LEASE_TTL_SECS: u64 = 300;

/// One key, loaded (a software key) or named (a device key, opened by
/// `devices`), with its policy and configured name.
pub struct LoadedKey {
    /// The secret_keys alias, or a description of the device key.
    pub alias: String,
    pub source: KeySource,
    pub policy: KeyPolicy,
}

/// Where a key is.
pub enum KeySource {
    Software(SoftwareKey),
    Device(DeviceSpec),
}

/// A device key as configured; opened at start.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub model: DeviceModel,
    /// The key the device must answer with.
    pub pkh: Option<KeyHash>,
    /// Bound on each device command.
    #[cfg_attr(not(feature = "usb"), allow(dead_code))]
    pub timeout: Duration,
}

/// Which device, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceModel {
    /// A Ledger running Tezos Baking; `path` and `curve` as written.
    Ledger {
        at: LedgerAt,
        path: String,
        curve: String,
    },
    /// A key of a TezSign gadget, by alias.
    TezSign {
        serial: String,
        alias: String,
        passphrase_file: Option<PathBuf>,
    },
}

impl DeviceModel {
    pub fn name(&self) -> &'static str {
        match self {
            DeviceModel::Ledger { .. } => "ledger",
            DeviceModel::TezSign { .. } => "tezsign",
        }
    }

    /// Where the device is, as an operator names it.
    pub fn location(&self) -> String {
        match self {
            DeviceModel::Ledger { at, .. } => at.to_string(),
            DeviceModel::TezSign { serial, .. } if serial == "auto" => {
                "USB (the only TezSign attached)".into()
            }
            DeviceModel::TezSign { serial, .. } => format!("USB serial {serial}"),
        }
    }

    /// The configured name of the key.
    pub fn label(&self) -> String {
        match self {
            DeviceModel::Ledger { path, .. } => {
                format!("ledger {path} ({})", self.location())
            }
            DeviceModel::TezSign { alias, .. } => {
                format!("tezsign alias {alias} ({})", self.location())
            }
        }
    }
}

impl LoadedKey {
    /// The key's hash when known before any device is opened.
    pub fn known_hash(&self) -> Option<KeyHash> {
        match &self.source {
            KeySource::Software(k) => Some(k.public_key().hash()),
            KeySource::Device(d) => d.pkh,
        }
    }
}

/// Everything `serve` needs.
pub struct SignerConfig {
    pub keys: Vec<LoadedKey>,
    pub options: ServiceOptions,
    pub store: Store,
    pub listen: Listeners,
    pub limits: Limits,
    pub tls: Option<TlsFiles>,
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure::bad_input(msg)
        .hint("fix the [signer] section of the config file (see `slashguard signer --help`)")
}

fn key_failure(e: KeyError) -> Failure {
    let hint = match e.root() {
        KeyError::WrongPassword => {
            "check password-file / password-env: the encrypted key does not decrypt with that password"
        }
        KeyError::NoPassword(_) => "set password-file or password-env in [signer]",
        KeyError::Base58 { .. } | KeyError::Damaged { .. } => {
            "the secret_keys file is damaged: restore it from a backup or re-import the key with octez-client"
        }
        KeyError::Unsupported { .. } | KeyError::UnknownPrefix { .. } => {
            "this signer loads tz1, tz2, tz3 and tz4 software keys"
        }
        KeyError::UnsupportedUri { .. } => {
            "serve this key from the device or signer that holds it; slashguard signer loads software keys only"
        }
        _ => "check the secret_keys file and the [signer] keys list",
    };
    Failure::bad_input(e.to_string()).hint(hint)
}

/// The store settings: a file, or etcd with an ownership section; never
/// both, never neither (an ambiguous setting must not pick one).
fn store(section: &Section) -> Result<Store, Failure> {
    match section.store.as_deref() {
        None | Some("file") => {
            if section.ownership.is_some() {
                return Err(bad(
                    "[signer.ownership] is for store = \"etcd\"; a watermark file admits one signer process by its lock",
                ));
            }
            let file = section.watermarks_file.clone().ok_or_else(|| {
                bad("no watermark store: set watermarks-file (one host), or store = \"etcd\" with [signer.ownership] (a primary and a backup host)")
            })?;
            Ok(Store::File(file))
        }
        Some("etcd") => {
            if section.watermarks_file.is_some() {
                return Err(bad(
                    "store = \"etcd\" keeps the watermarks in etcd: remove watermarks-file (carry its marks over first: `slashguard watermark export --file F --out marks.json`, then `slashguard watermark import --in marks.json --etcd`)",
                ));
            }
            crate::exit::needs_etcd()?;
            let o = section.ownership.as_ref().ok_or_else(|| {
                bad("store = \"etcd\" needs [signer.ownership] name = \"<the baker's name>\", the same on the primary and the backup host")
            })?;
            if o.name.is_empty()
                || o.name.len() > MAX_NAME_LEN
                || o.name.chars().any(char::is_control)
            {
                return Err(bad(format!(
                    "[signer.ownership] name must have 1 to {MAX_NAME_LEN} bytes and no control characters"
                )));
            }
            let ttl = o.lease_ttl_secs.unwrap_or(DEFAULT_LEASE_TTL_SECS);
            if !(1..=MAX_LEASE_TTL_SECS).contains(&ttl) {
                return Err(bad(format!(
                    "[signer.ownership] lease-ttl-secs must be 1 to {MAX_LEASE_TTL_SECS}"
                )));
            }
            Ok(Store::Etcd(EtcdStore {
                name: o.name.clone(),
                lease_ttl: Duration::from_secs(ttl),
            }))
        }
        Some(other) => Err(bad(format!(
            "store = {other:?}: \"file\" (watermarks-file) or \"etcd\""
        ))),
    }
}

fn parse_kind(s: &str) -> Result<ConsensusKind, Failure> {
    ConsensusKind::ALL
        .into_iter()
        .find(|k| k.to_string() == s)
        .ok_or_else(|| {
            bad(format!(
                "unknown kind {s:?} (block, preattestation, attestation)"
            ))
        })
}

fn chains(list: &[String]) -> Result<BTreeSet<ChainId>, Failure> {
    list.iter().map(|c| parse_chain(c)).collect()
}

fn read_password(section: &Section) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if let Some(path) = &section.password_file {
        let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?);
        // A file written by `echo` ends in a newline that is no part of
        // the password.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        return Ok(bytes);
    }
    if let Some(var) = &section.password_env {
        let value = std::env::var_os(var)
            .map(|v| Zeroizing::new(v.into_encoded_bytes()))
            .ok_or_else(|| KeyError::NoPassword(format!("the variable {var} is not set")))?;
        // Read once: a password left in the environment is inherited by
        // every child process and readable in /proc/<pid>/environ.
        std::env::remove_var(var);
        return Ok(value);
    }
    Err(KeyError::NoPassword(
        "neither password-file nor password-env is set".into(),
    ))
}

/// The largest `limits.max-connections` accepted.
const MAX_CONNECTIONS: usize = 65_536;

/// The `[signer.limits]` section, checked.
fn limits(section: &Section) -> Result<Limits, Failure> {
    let limits = Limits {
        max_body_bytes: section.limits.max_body_bytes.unwrap_or(16 * 1024),
        max_connections: section.limits.max_connections.unwrap_or(64),
        first_request_timeout: Duration::from_millis(
            section.limits.first_request_timeout_ms.unwrap_or(2_000),
        ),
        request_timeout: Duration::from_millis(section.limits.request_timeout_ms.unwrap_or(10_000)),
        idle_timeout: Duration::from_millis(section.limits.idle_timeout_ms.unwrap_or(60_000)),
    };
    // A bound well below what tokio's semaphore (and the u32 permit count)
    // accepts: a huge value would panic at start or be truncated.
    if limits.max_connections > MAX_CONNECTIONS {
        return Err(bad(format!(
            "limits: max-connections must be at most {MAX_CONNECTIONS}"
        )));
    }
    if limits.max_connections == 0 || limits.max_body_bytes < 64 {
        return Err(bad(
            "limits: max-connections must be at least 1 and max-body-bytes at least 64",
        ));
    }
    if limits.request_timeout.is_zero()
        || limits.idle_timeout.is_zero()
        || limits.first_request_timeout.is_zero()
    {
        return Err(bad("limits: timeouts must be positive"));
    }
    Ok(limits)
}

/// The first device-only setting a software key entry has, if any.
fn device_field(k: &KeySection) -> Option<&'static str> {
    [
        ("serial", k.serial.is_some()),
        ("speculos", k.speculos.is_some()),
        ("path", k.path.is_some()),
        ("curve", k.curve.is_some()),
        ("alias", k.alias.is_some()),
        ("passphrase-file", k.passphrase_file.is_some()),
        ("pkh", k.pkh.is_some()),
        ("timeout-ms", k.timeout_ms.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(name, _)| name)
}

/// Whether `source` is the device key `spec` names: the same Ledger (one
/// authorized key each), or the same alias of the same TezSign.
fn same_device_key(source: &KeySource, spec: &DeviceSpec) -> bool {
    let KeySource::Device(other) = source else {
        return false;
    };
    match (&other.model, &spec.model) {
        (DeviceModel::Ledger { at: a, .. }, DeviceModel::Ledger { at: b, .. }) => a == b,
        (
            DeviceModel::TezSign {
                serial: s1,
                alias: a1,
                ..
            },
            DeviceModel::TezSign {
                serial: s2,
                alias: a2,
                ..
            },
        ) => s1 == s2 && a1 == a2,
        _ => false,
    }
}

/// A device command's bound: long enough for a real device (a Ledger signs
/// in well under a second), short enough that a sign (two commands, the
/// second only after a refusal for TezSign) fails with the device's own
/// error before the request deadline.
fn device_timeout(k: &KeySection, name: &str, limits: &Limits) -> Result<Duration, Failure> {
    let timeout = match k.timeout_ms {
        Some(ms) => Duration::from_millis(ms),
        None => limits.request_timeout / 4,
    };
    if timeout < Duration::from_millis(10) || timeout * 2 >= limits.request_timeout {
        return Err(bad(format!(
            "key {name:?}: timeout-ms {} must be at least 10 and less than half of request-timeout-ms ({}): a sign takes up to two device commands, and the device's own error must come before the request deadline",
            timeout.as_millis(),
            limits.request_timeout.as_millis()
        )));
    }
    Ok(timeout)
}

/// A `device = ...` entry, checked (the device is opened later).
fn device_spec(k: &KeySection, device: &str, limits: &Limits) -> Result<DeviceSpec, Failure> {
    let refuse = |field: &str, value: bool, model: &str| {
        if value {
            Err(bad(format!(
                "device = {model:?}: {field} is not a setting of this device"
            )))
        } else {
            Ok(())
        }
    };
    let serial = || {
        let s = k.serial.clone().unwrap_or_else(|| "auto".into());
        if s.is_empty() {
            Err(bad(format!(
                "device = {device:?}: serial is empty (a USB serial from `slashguard device list`, or auto)"
            )))
        } else {
            Ok(s)
        }
    };
    let model = match device {
        "ledger" => {
            refuse("alias", k.alias.is_some(), device)?;
            refuse("passphrase-file", k.passphrase_file.is_some(), device)?;
            let at = match (&k.speculos, &k.serial) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "device = \"ledger\": serial (USB) and speculos (the emulator) name two places; keep one",
                    ))
                }
                (Some(addr), None) => LedgerAt::Speculos(addr.clone()),
                (None, _) => LedgerAt::Usb(serial()?),
            };
            DeviceModel::Ledger {
                at,
                path: k.path.clone().unwrap_or_else(|| "44'/1729'/0'/0'".into()),
                curve: k.curve.clone().unwrap_or_else(|| "ed25519".into()),
            }
        }
        "tezsign" => {
            refuse("speculos", k.speculos.is_some(), device)?;
            refuse("path", k.path.is_some(), device)?;
            refuse("curve", k.curve.is_some(), device)?;
            let alias = k.alias.clone().filter(|a| !a.is_empty()).ok_or_else(|| {
                bad("device = \"tezsign\" needs alias = \"<the key's alias on the device>\" (for example consensus or companion)")
            })?;
            DeviceModel::TezSign {
                serial: serial()?,
                alias,
                passphrase_file: k.passphrase_file.clone(),
            }
        }
        other => {
            return Err(bad(format!(
                "device = {other:?}: \"ledger\" (Tezos Baking app) or \"tezsign\""
            )))
        }
    };
    let name = model.label();
    let pkh = k
        .pkh
        .as_deref()
        .map(|p| {
            p.parse::<KeyHash>().map_err(|_| {
                bad(format!(
                    "key {name:?}: pkh {p:?} is not a tz1, tz2, tz3 or tz4 key hash"
                ))
            })
        })
        .transpose()?;
    if let (DeviceModel::TezSign { .. }, Some(h)) = (&model, pkh) {
        if h.curve != Curve::Bls {
            return Err(bad(format!(
                "key {name:?}: pkh {h}: a TezSign holds tz4 (BLS) keys only"
            )));
        }
    }
    Ok(DeviceSpec {
        pkh,
        timeout: device_timeout(k, &name, limits)?,
        model,
    })
}

/// Parse and load the `[signer]` section: every key decrypted, every
/// setting checked. Nothing is opened for writing.
pub fn load(section: Option<&toml::Value>) -> Result<SignerConfig, Failure> {
    let section = section.ok_or_else(|| {
        bad("no [signer] section in the configuration file (or no --config given) and no signer flags")
    })?;
    let section: Section = section
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| bad(format!("[signer]: {}", e.message())))?;
    if section.password_file.is_some() && section.password_env.is_some() {
        return Err(bad("set password-file or password-env, not both"));
    }
    if section.keys.is_empty() {
        return Err(bad("no [[signer.keys]]: name at least one key to serve"));
    }
    let generic = section
        .keys
        .iter()
        .any(|k| !k.generic_operations.is_empty());
    let store = store(&section)?;
    let magic_bytes = match &section.magic_bytes {
        None if generic => MagicBytes::consensus_and_generic(),
        None => MagicBytes::consensus(),
        Some(list) => MagicBytes::new(list.iter().copied()).map_err(|b| {
            bad(format!(
                "magic byte {b:#04x}: slashguard signs consensus payloads (0x11, 0x12, 0x13) and generic operations (0x03)"
            ))
        })?,
    };
    // Each contradiction is refused rather than guessed: one of the two
    // settings would be silently ignored.
    match (magic_bytes.contains(GENERIC_MAGIC), generic) {
        (true, false) => {
            return Err(bad(
                "magic-bytes allows 0x03 and no key lists generic-operations: nothing would be signed under 0x03 (list the kinds on a key, or remove 0x03)",
            ))
        }
        (false, true) => {
            return Err(bad(
                "a key lists generic-operations and magic-bytes does not allow 0x03: add 0x03 to magic-bytes, or remove generic-operations",
            ))
        }
        _ => {}
    }
    let authorized: Vec<PublicKey> = section
        .authorized_keys
        .iter()
        .map(|k| {
            k.parse()
                .map_err(|e: KeyError| bad(format!("authorized-keys: {k:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if section.require_authentication && authorized.is_empty() {
        return Err(bad(
            "require-authentication is set and authorized-keys is empty: nothing could be signed",
        ));
    }
    if !section.require_authentication && !authorized.is_empty() {
        return Err(bad(
            "authorized-keys given without require-authentication = true; set it, or remove the keys",
        ));
    }
    let limits = limits(&section)?;
    let software = section.keys.iter().any(|k| k.device.is_none());
    let file = match (&section.secret_keys_file, software) {
        (Some(path), true) => Some(SecretKeysFile::read(path).map_err(key_failure)?),
        (None, true) => return Err(bad(
            "a [[signer.keys]] entry names a key of secret_keys and secret-keys-file is not set",
        )),
        (_, false) => None,
    };
    let mut keys: Vec<LoadedKey> = Vec::new();
    for k in &section.keys {
        let (name, source) = match (&k.key, &k.device) {
            (Some(alias), None) => {
                if let Some(field) = device_field(k) {
                    return Err(bad(format!(
                        "key {alias:?}: {field} is for device keys (device = \"ledger\" or \"tezsign\")"
                    )));
                }
                let file = file.as_ref().expect("read when a software key is listed");
                let key = file
                    .load(alias, || read_password(&section))
                    .map_err(key_failure)?;
                (alias.clone(), KeySource::Software(key))
            }
            (None, Some(device)) => {
                crate::exit::needs_usb()?;
                let spec = device_spec(k, device, &limits)?;
                (spec.model.label(), KeySource::Device(spec))
            }
            (Some(alias), Some(device)) => {
                return Err(bad(format!(
                    "[[signer.keys]] key = {alias:?} and device = {device:?}: name a key of secret_keys or a device, not both"
                )))
            }
            (None, None) => {
                return Err(bad(
                    "a [[signer.keys]] entry names no key: set key = \"<alias of secret_keys>\" or device = \"ledger\" / \"tezsign\"",
                ))
            }
        };
        let this = LoadedKey {
            alias: name.clone(),
            source,
            policy: KeyPolicy::default(),
        };
        if let Some(other) = keys
            .iter()
            .find(|o| o.known_hash().is_some() && o.known_hash() == this.known_hash())
        {
            return Err(bad(format!(
                "{:?} and {:?} are the same key {}",
                other.alias,
                name,
                this.known_hash().expect("compared")
            )));
        }
        if let KeySource::Device(spec) = &this.source {
            if let Some(other) = keys.iter().find(|o| same_device_key(&o.source, spec)) {
                return Err(bad(format!(
                    "{:?} and {name:?} are the same device key{}",
                    other.alias,
                    if matches!(spec.model, DeviceModel::Ledger { .. }) {
                        " (a Ledger's Tezos Baking app signs with one authorized key: serve one key per Ledger)"
                    } else {
                        ""
                    }
                )));
            }
        }
        let role = match k.role.as_deref() {
            None | Some("consensus") => Role::Consensus,
            Some("companion") => {
                // A device key's scheme is known once the device answers
                // (checked again then), or from its configured pkh.
                if let Some(hash) = this.known_hash().filter(|h| h.curve != Curve::Bls) {
                    return Err(bad(format!(
                        "key {name:?}: a companion key is a tz4 (BLS) key, and this one is {hash}"
                    )));
                }
                Role::Companion
            }
            Some(other) => {
                return Err(bad(format!(
                    "key {name:?}: unknown role {other:?} (consensus, companion)"
                )))
            }
        };
        let kinds = match &k.kinds {
            None => ConsensusKind::ALL.into_iter().collect(),
            Some(list) if list.is_empty() => {
                return Err(bad(format!("key {name:?}: empty kinds list")))
            }
            Some(list) => list
                .iter()
                .map(|s| parse_kind(s))
                .collect::<Result<_, _>>()?,
        };
        let chains = k.chains.as_deref().map(chains).transpose()?;
        let operations = k
            .generic_operations
            .iter()
            .map(|name| {
                OperationKind::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
                    bad(format!(
                        "key {:?}: unknown generic operation kind {name:?} (known: {})",
                        this.alias,
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        if role == Role::Companion && !k.generic_operations.is_empty() {
            return Err(bad(format!(
                "key {name:?}: a companion key co-signs attestations only, it signs no generic operations"
            )));
        }
        if matches!(this.source, KeySource::Device(_)) && !k.generic_operations.is_empty() {
            return Err(bad(format!(
                "key {name:?}: a device key signs consensus operations only (blocks, preattestations, attestations); remove generic-operations"
            )));
        }
        keys.push(LoadedKey {
            policy: KeyPolicy {
                kinds,
                chains,
                role,
                operations,
            },
            ..this
        });
    }
    let l = &section.listen;
    if l.http.is_empty() && l.tcp.is_empty() && l.unix.is_empty() && l.https.is_empty() {
        return Err(bad(
            "no listener: set [signer.listen] http, https, tcp or unix",
        ));
    }
    match (&section.tls, l.https.is_empty()) {
        (None, false) => {
            return Err(bad(
                "[signer.listen] https needs [signer.tls] certificate-file and key-file",
            ))
        }
        (Some(_), true) => {
            return Err(bad(
                "[signer.tls] is set and no [signer.listen] https listener uses it",
            ))
        }
        _ => {}
    }
    Ok(SignerConfig {
        keys,
        options: ServiceOptions {
            magic_bytes,
            authorized_keys: section.require_authentication.then_some(authorized),
            allow_list_known_keys: section.allow_list_known_keys,
            allow_proof_of_possession: section.allow_proof_of_possession,
        },
        store,
        listen: Listeners {
            http: l.http.clone(),
            tcp: l.tcp.clone(),
            unix: l.unix.clone(),
            metrics: l.metrics.clone(),
            https: l.https.clone(),
        },
        tls: section.tls.as_ref().map(|t| TlsFiles {
            certificate: t.certificate_file.clone(),
            key: t.key_file.clone(),
        }),
        limits,
    })
}
