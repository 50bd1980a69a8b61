//! Settings from flags, environment and the configuration file, resolved
//! once: flags and environment (clap) win over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use slashguard::watermark::{ChainId, KeyHash};

use crate::args::{AliasArgs, Cli, EtcdArgs};
use crate::exit::Failure;

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    chain: Option<String>,
    instance: Option<String>,
    #[serde(default)]
    etcd: EtcdSection,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    /// `slashguard signer`'s settings, parsed by that command.
    signer: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EtcdSection {
    #[serde(default)]
    endpoints: Vec<String>,
    cacert_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    domain_name: Option<String>,
    prefix: Option<String>,
    timeout_ms: Option<u64>,
}

/// Everything a command may need besides its own arguments.
pub struct Settings {
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub etcd: EtcdArgs,
    pub aliases: AliasBook,
    pub chain: Option<String>,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub instance: String,
    /// The `[signer]` section of the config file.
    #[cfg_attr(not(feature = "signer"), allow(dead_code))]
    pub signer: Option<toml::Value>,
}

impl Settings {
    pub fn resolve(cli: &Cli) -> Result<Self, Failure> {
        let file = match &cli.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let mut f = file.etcd;
        // Paths in the file are relative to the file, not to wherever the
        // command happens to run from.
        if let Some(base) = cli.config.as_deref().and_then(Path::parent) {
            for p in [&mut f.cacert_file, &mut f.cert_file, &mut f.key_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        let a = &cli.etcd;
        let etcd = EtcdArgs {
            endpoints: if a.endpoints.is_empty() {
                f.endpoints
            } else {
                a.endpoints.clone()
            },
            cacert_file: a.cacert_file.clone().or(f.cacert_file),
            cert_file: a.cert_file.clone().or(f.cert_file),
            key_file: a.key_file.clone().or(f.key_file),
            domain_name: a.domain_name.clone().or(f.domain_name),
            prefix: a.prefix.clone().or(f.prefix),
            timeout_ms: a.timeout_ms.or(f.timeout_ms),
        };
        let aliases = AliasBook::build(&file.aliases, &cli.aliases)?;
        let instance = cli
            .instance
            .clone()
            .or(file.instance)
            .unwrap_or_else(default_instance);
        Ok(Settings {
            etcd,
            aliases,
            chain: file.chain,
            instance,
            signer: file.signer,
        })
    }

    /// The chain from the command's flag (or SLASHGUARD_CHAIN), else the
    /// config file; `None` when neither gives one.
    pub fn chain(&self, flag: &Option<String>) -> Result<Option<ChainId>, Failure> {
        flag.as_ref()
            .or(self.chain.as_ref())
            .map(|c| parse_chain(c))
            .transpose()
    }

    /// As [`chain`](Self::chain), but required.
    pub fn require_chain(&self, flag: &Option<String>, why: &str) -> Result<ChainId, Failure> {
        self.chain(flag)?.ok_or_else(|| {
            Failure::bad_input(format!("no chain given: {why}"))
                .hint("pass --chain NetXdQprcVkpaWU (or `mainnet`), set SLASHGUARD_CHAIN, or `chain = ...` in the config file")
        })
    }
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok());
    match host {
        Some(h) => format!("slashguard-cli@{h}"),
        None => "slashguard-cli".to_string(),
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::bad_input(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
        .hint("check --config / SLASHGUARD_CONFIG")
    })?;
    toml::from_str(&text).map_err(|e| {
        Failure::bad_input(format!("config file {}: {e}", path.display()))
            .hint("see the example at the end of `slashguard --help`")
    })
}

pub fn parse_chain(s: &str) -> Result<ChainId, Failure> {
    let s = s.trim();
    let s = if s.eq_ignore_ascii_case("mainnet") {
        "NetXdQprcVkpaWU"
    } else {
        s
    };
    s.parse().map_err(|_| {
        Failure::bad_input(format!(
            "{s:?} is not a Tezos chain id (Net...) or `mainnet`"
        ))
    })
}

/// Names of keys, from the config file, an alias file and `--alias`.
#[derive(Debug, Default, Clone)]
pub struct AliasBook {
    by_name: BTreeMap<String, KeyHash>,
}

impl AliasBook {
    fn build(config: &BTreeMap<String, String>, args: &AliasArgs) -> Result<Self, Failure> {
        let mut book = AliasBook::default();
        for (name, key) in config {
            book.add(name, key, "the config file")?;
        }
        if let Some(path) = &args.alias_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::bad_input(format!(
                    "cannot read the alias file {}: {e}",
                    path.display()
                ))
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let (name, key) = line.split_once('=').ok_or_else(|| {
                    Failure::bad_input(format!(
                        "{} line {}: expected NAME=tz..., found {line:?}",
                        path.display(),
                        n + 1
                    ))
                })?;
                book.add(
                    name.trim(),
                    key.trim(),
                    &format!("{} line {}", path.display(), n + 1),
                )?;
            }
        }
        for a in &args.alias {
            let (name, key) = a
                .split_once('=')
                .ok_or_else(|| Failure::bad_input(format!("--alias {a:?}: expected NAME=tz...")))?;
            book.add(name.trim(), key.trim(), "--alias")?;
        }
        Ok(book)
    }

    fn add(&mut self, name: &str, key: &str, origin: &str) -> Result<(), Failure> {
        if name.is_empty() {
            return Err(Failure::bad_input(format!("{origin}: empty alias name")));
        }
        let key: KeyHash = key.parse().map_err(|_| {
            Failure::bad_input(format!(
                "{origin}: alias {name}: {key:?} is not a tz1..tz4 key"
            ))
        })?;
        if let Some((other, _)) = self
            .by_name
            .iter()
            .find(|(n, k)| **k == key && n.as_str() != name)
        {
            return Err(Failure::bad_input(format!(
                "{origin}: {key} is named both {other:?} and {name:?}"
            )));
        }
        self.by_name.insert(name.to_string(), key);
        Ok(())
    }

    /// Add names from elsewhere (an imported file, a device) without
    /// overriding the operator's.
    pub fn absorb(&mut self, names: &BTreeMap<KeyHash, String>) {
        for (key, name) in names {
            if self.name_of(key).is_none() && !self.by_name.contains_key(name) {
                self.by_name.insert(name.clone(), *key);
            }
        }
    }

    pub fn key_of(&self, name: &str) -> Option<KeyHash> {
        self.by_name.get(name).copied()
    }

    pub fn name_of(&self, key: &KeyHash) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(n, _)| n.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = KeyHash> + '_ {
        self.by_name.values().copied()
    }

    /// Key to name, as the interchange file wants it.
    pub fn by_key(&self) -> BTreeMap<KeyHash, String> {
        self.by_name.iter().map(|(n, k)| (*k, n.clone())).collect()
    }

    /// A key given as tz... or as a name.
    pub fn resolve(&self, s: &str) -> Result<KeyHash, Failure> {
        if let Some(k) = self.key_of(s) {
            return Ok(k);
        }
        s.parse().map_err(|_| {
            Failure::bad_input(format!("{s:?} is neither a tz1..tz4 key nor a known alias")).hint(
                "define it with --alias NAME=tz..., --alias-file or [aliases] in the config file",
            )
        })
    }
}
