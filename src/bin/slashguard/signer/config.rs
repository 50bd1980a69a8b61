//! The `[signer]` section of the configuration file, and loading what it
//! names: keys (octez-client's `secret_keys` file), policies, the
//! watermark store (a file, or etcd with the baker's ownership),
//! listeners and limits.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use slashguard::keys::{KeyError, PublicKey, SecretKeysFile, SoftwareKey};
use slashguard::remote_signer::{KeyPolicy, MagicBytes, Role, ServiceOptions};
use slashguard::watermark::{ChainId, ConsensusKind, Curve};
use zeroize::Zeroizing;

use crate::exit::Failure;
use crate::settings::parse_chain;

/// Shown by `slashguard signer --help`.
pub const EXAMPLE: &str = "\
Configuration: the [signer] section of the config file (--config or
SLASHGUARD_CONFIG), e.g.:

  [signer]
  secret-keys-file = \"/home/baker/.octez-client/secret_keys\"
  password-file = \"/etc/slashguard/key-password\"   # or password-env = \"VAR\"
  watermarks-file = \"/var/lib/slashguard/watermarks\"
  # store = \"etcd\"                         # instead of watermarks-file: the
  #                                        # watermarks in etcd ([etcd] section or
  #                                        # --etcd-* flags), shared with a backup
  #                                        # host; see [signer.ownership]
  # magic-bytes = [0x11, 0x12, 0x13]        # -M (default: all three)
  # require-authentication = true
  # authorized-keys = [\"edpk...\"]
  # allow-list-known-keys = false
  # allow-proof-of-possession = false       # tz4 bls_prove_possession
  [signer.listen]
  http = [\"127.0.0.1:6732\"]
  tcp = [\"127.0.0.1:7732\"]
  unix = [\"/run/slashguard/signer.sock\"]
  [signer.limits]                          # the defaults
  max-body-bytes = 16384
  max-connections = 64
  request-timeout-ms = 10000
  idle-timeout-ms = 60000
  # [signer.ownership]                     # store = \"etcd\" only
  # name = \"my-baker\"                     # the same on the primary and backup
  # lease-ttl-secs = 5                     # a dead active signer is replaced
  #                                        # after about this long
  [[signer.keys]]
  key = \"consensus\"                       # an alias of secret_keys
  # kinds = [\"block\", \"preattestation\", \"attestation\"]
  # chains = [\"NetXdQprcVkpaWU\"]            # default: any chain
  # role = \"consensus\"                     # or \"companion\" (tz4 only)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    secret_keys_file: PathBuf,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSection {
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
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
    key: String,
    kinds: Option<Vec<String>>,
    chains: Option<Vec<String>>,
    role: Option<String>,
}

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub http: Vec<String>,
    pub tcp: Vec<String>,
    pub unix: Vec<PathBuf>,
}

/// The bounds of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_connections: usize,
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

/// One key, loaded, with its policy and configured name.
pub struct LoadedKey {
    pub alias: String,
    pub key: SoftwareKey,
    pub policy: KeyPolicy,
}

/// Everything `serve` needs.
pub struct SignerConfig {
    pub keys: Vec<LoadedKey>,
    pub options: ServiceOptions,
    pub store: Store,
    pub listen: Listeners,
    pub limits: Limits,
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

/// Parse and load the `[signer]` section: every key decrypted, every
/// setting checked. Nothing is opened for writing.
pub fn load(section: Option<&toml::Value>) -> Result<SignerConfig, Failure> {
    let section = section.ok_or_else(|| {
        bad("no [signer] section in the configuration file (or no --config given)")
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
    let store = store(&section)?;
    let magic_bytes = match &section.magic_bytes {
        None => MagicBytes::consensus(),
        Some(list) => MagicBytes::new(list.iter().copied()).map_err(|b| {
            bad(format!(
                "magic byte {b:#04x}: slashguard signs consensus payloads only (0x11, 0x12, 0x13)"
            ))
        })?,
    };
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
    let file = SecretKeysFile::read(&section.secret_keys_file).map_err(key_failure)?;
    let mut keys: Vec<LoadedKey> = Vec::new();
    for k in &section.keys {
        let key = file
            .load(&k.key, || read_password(&section))
            .map_err(key_failure)?;
        if let Some(other) = keys.iter().find(|o| o.key.public_key() == key.public_key()) {
            return Err(bad(format!(
                "{:?} and {:?} are the same key {}",
                other.alias,
                k.key,
                key.public_key().hash()
            )));
        }
        let role = match k.role.as_deref() {
            None | Some("consensus") => Role::Consensus,
            Some("companion") => {
                if key.curve() != Curve::Bls {
                    return Err(bad(format!(
                        "key {:?}: a companion key is a tz4 (BLS) key, and this one is {}",
                        k.key,
                        key.public_key().hash()
                    )));
                }
                Role::Companion
            }
            Some(other) => {
                return Err(bad(format!(
                    "key {:?}: unknown role {other:?} (consensus, companion)",
                    k.key
                )))
            }
        };
        let kinds = match &k.kinds {
            None => ConsensusKind::ALL.into_iter().collect(),
            Some(list) if list.is_empty() => {
                return Err(bad(format!("key {:?}: empty kinds list", k.key)))
            }
            Some(list) => list
                .iter()
                .map(|s| parse_kind(s))
                .collect::<Result<_, _>>()?,
        };
        let chains = k.chains.as_deref().map(chains).transpose()?;
        keys.push(LoadedKey {
            alias: k.key.clone(),
            key,
            policy: KeyPolicy {
                kinds,
                chains,
                role,
            },
        });
    }
    let l = &section.listen;
    if l.http.is_empty() && l.tcp.is_empty() && l.unix.is_empty() {
        return Err(bad("no listener: set [signer.listen] http, tcp or unix"));
    }
    let limits = Limits {
        max_body_bytes: section.limits.max_body_bytes.unwrap_or(16 * 1024),
        max_connections: section.limits.max_connections.unwrap_or(64),
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
    if limits.request_timeout.is_zero() || limits.idle_timeout.is_zero() {
        return Err(bad("limits: timeouts must be positive"));
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
        },
        limits,
    })
}
