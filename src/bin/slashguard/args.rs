//! The command line: every subcommand, flag and environment variable.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

pub use crate::etcd_args::EtcdArgs;
pub use crate::signer_args::SignerArgs;

/// Shown at the end of `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  other failure (I/O error, device failure)
  2  refused by a safety rule (a mark or tower would go backwards, the identity
     is owned by a running instance, the file is locked by a running process,
     the restart window was not reached); nothing was changed
  3  store or device unavailable (etcd unreachable or without quorum, no device);
     nothing was acknowledged, retrying may succeed
  4  bad input, corrupt data or configuration (wrong flag, unreadable or damaged
     file, certificate problem)

Settings: flags first, then SLASHGUARD_* environment variables, then the
configuration file (--config or SLASHGUARD_CONFIG, TOML), e.g.:

  chain = \"NetXdQprcVkpaWU\"
  instance = \"secondary\"
  [etcd]
  endpoints = [\"10.0.0.5:2379\"]
  cacert-file = \"certs/etcd-ca.pem\"
  cert-file = \"certs/validator.pem\"
  key-file = \"certs/validator-key.pem\"
  domain-name = \"localhost\"
  [aliases]
  consensus = \"tz4...\"
  companion = \"tz4...\"";

/// slashguard: inspect and move Solana towers and Tezos watermarks, and
/// run failover steps, against file, etcd and USB-device stores.
#[derive(Debug, Parser)]
#[command(name = "slashguard", version, after_long_help = EXIT_CODES, after_help = "Exit codes: 0 ok, 2 refused by a safety rule, 3 store unavailable, 4 bad input or configuration, 1 other (details: --help).")]
pub struct Cli {
    /// Print one JSON object on stdout instead of text (for monitoring).
    #[arg(long, global = true)]
    pub json: bool,

    /// Configuration file (TOML; see the end of --help).
    #[arg(long, global = true, env = "SLASHGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub etcd: EtcdArgs,

    #[command(flatten)]
    pub aliases: AliasArgs,

    /// This instance's name, shown to other instances in etcd (default:
    /// slashguard-cli@<host name>).
    #[arg(long, global = true, env = "SLASHGUARD_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Names for Tezos keys.
#[derive(Debug, Args, Default, Clone)]
pub struct AliasArgs {
    /// Name a key: NAME=tz... (repeatable). Names show in output and in
    /// exported files, and select keys in `watermark set-level --key`.
    #[arg(long = "alias", global = true, value_name = "NAME=TZ")]
    pub alias: Vec<String>,

    /// A file of NAME=tz... lines (# starts a comment).
    #[arg(
        long = "alias-file",
        global = true,
        env = "SLASHGUARD_ALIAS_FILE",
        value_name = "FILE"
    )]
    pub alias_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Solana towers: show, import from an Agave file, export to one.
    #[command(subcommand)]
    Tower(TowerCommand),
    /// Solana Alpenglow vote histories: show, import an Agave or Firedancer
    /// vote_history-<identity>.bin, export one (feature `alpenglow`).
    #[command(subcommand, name = "vote-history")]
    VoteHistory(VoteHistoryCommand),
    /// Who owns a validator identity in etcd; take it over; release it.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Tezos high watermarks: show, set a level, export, import.
    #[command(subcommand)]
    Watermark(WatermarkCommand),
    /// USB signers (Ledger, TezSign).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Check a configuration end to end, one line per check: certificates
    /// readable and consistent, etcd reachable with them, the identity's
    /// owner and lease, each store's health and last record, USB signers
    /// present. Exits non-zero when a check fails (the first failure's code).
    Doctor(DoctorArgs),
    /// The octez remote signer: serve keys to a baker over HTTP, TCP or a
    /// Unix socket, behind durable watermarks (feature `signer`).
    #[command(subcommand)]
    Signer(SignerCommand),
}

/// What `slashguard doctor` checks besides the etcd settings.
#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// The node identity public key (base58), for the ownership and tower checks.
    #[arg(long, value_name = "PUBKEY", conflicts_with = "keypair")]
    pub node: Option<String>,
    /// The identity keypair file (Solana JSON), instead of --node.
    #[arg(long, value_name = "FILE")]
    pub keypair: Option<PathBuf>,
    /// Check the tower and watermark stores in etcd too.
    #[arg(long)]
    pub etcd_stores: bool,
    /// A file tower store directory to check (needs the node).
    #[arg(long, value_name = "DIR")]
    pub tower_dir: Option<PathBuf>,
    /// A file watermark store to check.
    #[arg(long, value_name = "PATH")]
    pub watermark_file: Option<PathBuf>,
    /// How many USB signers must be present and readable (feature usb).
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
}

/// `slashguard signer`: the configuration is the [signer] section of the
/// config file (see `slashguard signer serve --help`).
#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    /// Serve the configured keys until SIGTERM or SIGINT. Logs one JSON
    /// object per line on stderr for every decision.
    #[command(after_long_help = SIGNER_CONFIG)]
    Serve {
        /// First start only: create a new, empty watermark file (refused if
        /// one exists). Without it a missing file is an error, never
        /// silently replaced by an empty one that would allow signing
        /// below marks already signed.
        #[arg(long)]
        create: bool,
        #[command(flatten)]
        overrides: SignerArgs,
    },
    /// Load and check the configuration: keys decrypt, policies parse,
    /// each device key's device answers with its key, the watermark file
    /// is intact. Changes nothing.
    #[command(after_long_help = SIGNER_CONFIG)]
    CheckConfig {
        #[command(flatten)]
        overrides: SignerArgs,
    },
}

#[cfg(feature = "signer")]
const SIGNER_CONFIG: &str = crate::signer::EXAMPLE;
#[cfg(not(feature = "signer"))]
const SIGNER_CONFIG: &str = "This slashguard was built without the signer (feature `signer`).";

/// Which node: its public key, or its keypair file (or a Tezos baker's
/// signer identity, by the baker's name).
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("who").required(true).args(["node", "keypair", "baker"])))]
pub struct NodeArgs {
    /// The node identity public key (base58).
    #[arg(long, value_name = "PUBKEY")]
    pub node: Option<String>,
    /// The identity keypair file (Solana JSON, e.g. validator-keypair.json).
    #[arg(long, value_name = "FILE")]
    pub keypair: Option<PathBuf>,
    /// A Tezos baker whose `slashguard signer` processes share it through
    /// etcd: the `[signer.ownership] name`.
    #[arg(long, value_name = "NAME")]
    pub baker: Option<String>,
}

/// A slashguard tower store.
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("tower_store").required(true).args(["dir", "etcd"])))]
pub struct TowerStoreArgs {
    /// The file store: the directory holding slashguard-tower-<node>.bin.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The etcd store (settings from the --etcd-* flags).
    #[arg(long)]
    pub etcd: bool,
}

#[derive(Debug, Subcommand)]
pub enum TowerCommand {
    /// Show a tower: node, last vote, root, age, signature.
    #[command(group(ArgGroup::new("source").required(true).args(["dir", "etcd", "agave"])))]
    Show {
        #[command(flatten)]
        node: NodeArgs,
        /// The file store directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The etcd store.
        #[arg(long)]
        etcd: bool,
        /// An Agave or Firedancer tower directory (tower-1_9-<node>.bin).
        #[arg(long, value_name = "DIR")]
        agave: Option<PathBuf>,
    },
    /// Import an Agave tower file into a store (signed with the identity).
    Import {
        /// The identity keypair file (Solana JSON).
        #[arg(long, value_name = "FILE")]
        keypair: PathBuf,
        /// The Agave tower directory to read.
        #[arg(long = "from-agave", value_name = "DIR")]
        from_agave: PathBuf,
        #[command(flatten)]
        store: TowerStoreArgs,
        /// Store even if the stored tower is newer (operator recovery only).
        #[arg(long)]
        force: bool,
        /// Create a new file store in --dir (refused if one exists there).
        /// Without it, a missing tower file is an error, never silently
        /// replaced by an empty one.
        #[arg(long, requires = "dir")]
        create: bool,
    },
    /// Operator recovery of a damaged file store (a refused store says when):
    /// accept the older tower it loaded and let the validator store again.
    /// Run it only when this node cannot vote twice on that tower (its
    /// lockouts expired, or the tower was restored).
    AcceptOlder {
        #[command(flatten)]
        node: NodeArgs,
        /// The file store directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Export a stored tower to an Agave tower file, signed with the
    /// identity, for a validator started with --require-tower.
    Export {
        /// The identity keypair file (Solana JSON).
        #[arg(long, value_name = "FILE")]
        keypair: PathBuf,
        #[command(flatten)]
        store: TowerStoreArgs,
        /// The Agave tower directory to write tower-1_9-<node>.bin into.
        #[arg(long = "to-agave", value_name = "DIR")]
        to_agave: PathBuf,
        /// Overwrite a newer tower file there (operator recovery only).
        #[arg(long)]
        force: bool,
        /// etcd: when a running instance owns the identity, take it over
        /// first (that instance is fenced and stops voting), read the tower
        /// under the new fence, then release the identity for the validator
        /// started on the exported file. Without it, export refuses while
        /// the identity is owned.
        #[arg(long = "take-over")]
        take_over: bool,
    },
}

/// A slashguard vote history store.
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("history_store").required(true).args(["dir", "etcd"])))]
pub struct HistoryStoreArgs {
    /// The file store: the directory holding slashguard-alpenglow-<node>.bin.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The etcd store (settings from the --etcd-* flags).
    #[arg(long)]
    pub etcd: bool,
}

#[derive(Debug, Subcommand)]
pub enum VoteHistoryCommand {
    /// Show a vote history: identity, root, votes, the Agave file kept.
    #[command(group(ArgGroup::new("source").required(true).args(["dir", "etcd", "agave"])))]
    Show {
        #[command(flatten)]
        node: NodeArgs,
        /// The file store directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The etcd store.
        #[arg(long)]
        etcd: bool,
        /// A validator's ledger directory (vote_history-<node>.bin).
        #[arg(long, value_name = "DIR")]
        agave: Option<PathBuf>,
        /// The file's inner layout: vote-enum or signed-payload (default:
        /// whichever the file is in).
        #[arg(long, value_name = "LAYOUT")]
        layout: Option<String>,
    },
    /// Import an Agave or Firedancer vote_history-<node>.bin into a store:
    /// its votes are recorded and the file kept. Never replaces a newer
    /// history (a lower root, or a stored vote the file lacks: refused).
    Import {
        #[command(flatten)]
        node: NodeArgs,
        /// The ledger directory holding vote_history-<node>.bin.
        #[arg(long = "from-agave", value_name = "DIR")]
        from_agave: PathBuf,
        #[command(flatten)]
        store: HistoryStoreArgs,
        /// The file's inner layout: vote-enum or signed-payload (default:
        /// whichever the file is in; refused when that is ambiguous).
        #[arg(long, value_name = "LAYOUT")]
        layout: Option<String>,
        /// Start the identity's history from this file (refused if one
        /// exists; with --dir, also creates the file store). Without it, a
        /// store without a history is an error, never silently started.
        #[arg(long)]
        create: bool,
        /// The cluster's shred version, for --create (default: the one the
        /// file's votes carry).
        #[arg(long = "shred-version", value_name = "N", requires = "create")]
        shred_version: Option<u16>,
    },
    /// Export a stored history's Agave file to vote_history-<node>.bin in a
    /// ledger directory, for `agave-validator set-identity` or Firedancer's
    /// `set-identity --vote-history-file`.
    Export {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        store: HistoryStoreArgs,
        /// The ledger directory to write vote_history-<node>.bin into.
        #[arg(long = "to-agave", value_name = "DIR")]
        to_agave: PathBuf,
        /// The layout the target validator reads: vote-enum or
        /// signed-payload (default: the one the file was stored in).
        #[arg(long, value_name = "LAYOUT")]
        layout: Option<String>,
        /// Overwrite a newer vote history file there (operator recovery only).
        #[arg(long)]
        force: bool,
        /// etcd: when a running instance owns the identity, take it over
        /// first (that instance is fenced and stops voting), read the history
        /// under the new fence, then release the identity for the validator
        /// started on the exported file. Without it, export refuses while
        /// the identity is owned.
        #[arg(long = "take-over")]
        take_over: bool,
        /// Write a file above Firedancer's 32,688-byte import limit (for an
        /// Agave validator, which has none).
        #[arg(long = "beyond-firedancer-limit")]
        beyond_firedancer_limit: bool,
    },
    /// Operator recovery of a damaged file store (a refused vote says when):
    /// accept the older history it loaded and let the validator vote again.
    /// Run it only when this identity cannot vote again in a slot the lost
    /// record may hold.
    AcceptOlder {
        #[command(flatten)]
        node: NodeArgs,
        /// The file store directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Who owns the identity, since when, lease time left, fencing revision.
    Status {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Take the identity over now: from this instant the current owner can
    /// no longer store a tower (it is fenced) and stops voting. Then either
    /// release it at once, so a standby waiting for a free identity takes
    /// it (--release), or hold it until interrupted (--hold).
    #[command(group(ArgGroup::new("then").required(true).args(["release", "hold"])))]
    TakeOver {
        #[command(flatten)]
        node: NodeArgs,
        /// Give the identity up right after taking it.
        #[arg(long)]
        release: bool,
        /// Hold it until SIGINT or SIGTERM (or --hold-for), then release.
        #[arg(long)]
        hold: bool,
        /// With --hold: release after this many seconds.
        #[arg(long, value_name = "SECS", requires = "hold")]
        hold_for: Option<u64>,
        /// Run this shell command first and take over only if it exits 0,
        /// e.g. 'agave-validator -l /mnt/ledger wait-for-restart-window'.
        #[arg(long, value_name = "COMMAND")]
        wait_command: Option<String>,
        /// Give the wait command at most this many seconds (default 600).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        wait_timeout: u64,
    },
    /// Free the identity: the current owner is fenced and a standby waiting
    /// for a free identity takes it.
    Release {
        #[command(flatten)]
        node: NodeArgs,
        /// Refuse unless this instance is the current owner.
        #[arg(long, value_name = "NAME")]
        expect_instance: Option<String>,
    },
}

/// Where watermarks are read: a store or a device.
#[derive(Debug, Args, Clone, Default)]
pub struct WatermarkSource {
    /// The file store: a slashguard watermark file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The etcd store (settings from the --etcd-* flags).
    #[arg(long)]
    pub etcd: bool,
    /// A Ledger running Tezos Baking, by USB serial, or `auto` for the only one.
    #[arg(long, value_name = "SERIAL")]
    pub ledger: Option<String>,
    /// A Ledger in the Speculos emulator, at its APDU port.
    #[arg(long, value_name = "HOST:PORT")]
    pub ledger_speculos: Option<String>,
    /// The Ledger key's derivation path.
    #[arg(long, value_name = "PATH", default_value = "44'/1729'/0'/0'")]
    pub ledger_path: String,
    /// The Ledger key's curve: ed25519, secp256k1, p256, bip32-ed25519, bls.
    #[arg(long, value_name = "CURVE", default_value = "ed25519")]
    pub ledger_curve: String,
    /// A TezSign, by USB serial, or `auto` for the only one.
    #[arg(long, value_name = "SERIAL")]
    pub tezsign: Option<String>,
}

/// Where watermarks are imported: a store.
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("wm_store").required(true).args(["file", "etcd"])))]
pub struct WatermarkStore {
    /// The file store: a slashguard watermark file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The etcd store.
    #[arg(long)]
    pub etcd: bool,
    /// Create a new watermark file at --file (refused if one exists).
    /// Without it, a missing file is an error, never silently replaced by
    /// an empty one.
    #[arg(long, requires = "file")]
    pub create: bool,
}

#[derive(Debug, Subcommand)]
pub enum WatermarkCommand {
    /// Show every key, alias and kind of a store or device.
    Show {
        #[command(flatten)]
        source: WatermarkSource,
        /// Only this chain (Net... or `mainnet`); selects a Ledger's mark.
        #[arg(long, env = "SLASHGUARD_CHAIN", value_name = "CHAIN")]
        chain: Option<String>,
    },
    /// Set every kind of the chosen keys to (LEVEL, 0): raise-only unless
    /// --force. With a store and a device, the store is raised first, then
    /// the device (the failover procedure's step 5).
    #[command(group(ArgGroup::new("which").required(true).args(["key", "all"])))]
    SetLevel {
        #[command(flatten)]
        source: WatermarkSource,
        /// The chain (Net... or `mainnet`).
        #[arg(long, env = "SLASHGUARD_CHAIN", value_name = "CHAIN")]
        chain: Option<String>,
        /// The level (for a failover: current level + 10).
        #[arg(long)]
        level: u32,
        /// A key: tz... or an alias (repeatable; TezSign: a device alias).
        #[arg(long, value_name = "KEY")]
        key: Vec<String>,
        /// Every key: of the store on this chain, of the alias list, and of the device.
        #[arg(long)]
        all: bool,
        /// Raise the marks below LEVEL and keep those already above it
        /// (both are reported), instead of refusing the whole step.
        #[arg(long, conflicts_with = "force")]
        keep_higher: bool,
        /// Lower marks if needed (stores only; operator recovery only). What
        /// would be lowered is shown and must be confirmed (or --yes).
        #[arg(long)]
        force: bool,
        /// With --force: lower without asking.
        #[arg(long, requires = "force")]
        yes: bool,
        /// Create a new watermark file at --file (refused if one exists).
        #[arg(long, requires = "file")]
        create: bool,
    },
    /// Write the watermarks of a store or device to an interchange file.
    Export {
        #[command(flatten)]
        source: WatermarkSource,
        /// The chain of device marks (Net... or `mainnet`).
        #[arg(long, env = "SLASHGUARD_CHAIN", value_name = "CHAIN")]
        chain: Option<String>,
        /// The file to write (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Import an interchange file, or octez-signer's watermark files, into
    /// a store, all or nothing. A mark below the stored one refuses the
    /// whole import unless --keep-higher or --force.
    #[command(group(ArgGroup::new("import_from").required(true).args(["input", "from_octez"])))]
    Import {
        /// The interchange file to read (`-` for stdin).
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// octez-signer's base directory (block_high_watermarks, ...).
        #[arg(long, value_name = "DIR")]
        from_octez: Option<PathBuf>,
        /// With --from-octez: leave out (and name) entries of key schemes
        /// slashguard does not sign for (tz5) and import the rest. Without
        /// it such entries refuse the whole import.
        #[arg(long, requires = "from_octez")]
        skip_unknown_keys: bool,
        #[command(flatten)]
        store: WatermarkStore,
        /// Keep stored marks that are higher than the file's; import the rest.
        #[arg(long, conflicts_with = "force")]
        keep_higher: bool,
        /// Set the file's marks exactly, lowering stored ones (recovery only).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List USB signers: model, serial, app, key, watermarks.
    List,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
