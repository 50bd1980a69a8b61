//! The etcd connection flags, defined once for the `slashguard` command
//! and the examples (which include this file with `#[path]`), so that both
//! take the same names, environment variables and checks as the Solana
//! failover procedure (`--etcd-endpoint`, `--etcd-cacert-file`, ...).
//!
//! Only clap and the library are used here: the file compiles as a module
//! of the binary and of each example.

use std::path::PathBuf;

use clap::Args;

/// The etcd connection, with the flags of the Solana failover procedure.
#[derive(Debug, Args, Default, Clone)]
pub struct EtcdArgs {
    /// etcd endpoint, host:port or URL (repeatable, or comma-separated in
    /// the environment).
    #[arg(
        long = "etcd-endpoint",
        global = true,
        env = "SLASHGUARD_ETCD_ENDPOINT",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub endpoints: Vec<String>,

    /// CA certificate that signed etcd's server certificate (PEM); turns TLS on.
    #[arg(
        long = "etcd-cacert-file",
        global = true,
        env = "SLASHGUARD_ETCD_CACERT_FILE",
        value_name = "FILE"
    )]
    pub cacert_file: Option<PathBuf>,

    /// This client's certificate (PEM), for etcd started with --client-cert-auth.
    #[arg(
        long = "etcd-cert-file",
        global = true,
        env = "SLASHGUARD_ETCD_CERT_FILE",
        value_name = "FILE"
    )]
    pub cert_file: Option<PathBuf>,

    /// This client's private key (PEM).
    #[arg(
        long = "etcd-key-file",
        global = true,
        env = "SLASHGUARD_ETCD_KEY_FILE",
        value_name = "FILE"
    )]
    pub key_file: Option<PathBuf>,

    /// Name expected in etcd's certificate when it differs from the
    /// endpoint's host (etcd addressed by IP, certificate naming a host).
    #[arg(
        long = "etcd-domain-name",
        global = true,
        env = "SLASHGUARD_ETCD_DOMAIN_NAME",
        value_name = "NAME"
    )]
    pub domain_name: Option<String>,

    /// Key prefix of slashguard's data in etcd (default /slashguard; the
    /// examples use a fresh one per run).
    #[arg(
        long = "etcd-prefix",
        global = true,
        env = "SLASHGUARD_ETCD_PREFIX",
        value_name = "PREFIX"
    )]
    pub prefix: Option<String>,

    /// Deadline of each etcd request and of the connection check, in
    /// milliseconds (default: 2000 for requests and 3000 for the check in
    /// the slashguard command; the library's vote-path defaults in the
    /// examples).
    #[arg(
        long = "etcd-timeout-ms",
        global = true,
        env = "SLASHGUARD_ETCD_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub timeout_ms: Option<u64>,
}

impl EtcdArgs {
    /// True when any etcd setting was given (an endpoint, a certificate,
    /// ...): a program that has a non-etcd mode must then not silently run
    /// it.
    #[allow(dead_code)] // used by the examples
    pub fn any_given(&self) -> bool {
        !self.endpoints.is_empty()
            || self.cacert_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.domain_name.is_some()
            || self.prefix.is_some()
            || self.timeout_ms.is_some()
    }

    /// The client configuration these flags describe. When
    /// `--etcd-timeout-ms` is not given, `default_timeout` is the request
    /// deadline and `default_connect` the connection check's bound (`None`:
    /// the library's defaults). `--etcd-timeout-ms` bounds both, so a slow
    /// etcd can be given more time and a fast check asked for.
    #[cfg(feature = "etcd")]
    pub fn config(
        &self,
        default_timeout: Option<std::time::Duration>,
        default_connect: Option<std::time::Duration>,
        default_prefix: Option<&str>,
    ) -> slashguard::Result<slashguard::etcd::EtcdConfig> {
        use std::time::Duration;
        if self.endpoints.is_empty() {
            return Err(slashguard::Error::Config(
                "no etcd endpoint given: pass --etcd-endpoint HOST:PORT (repeatable)".into(),
            ));
        }
        let mut b = slashguard::etcd::EtcdConfig::builder(self.endpoints.clone());
        match self.timeout_ms.map(Duration::from_millis) {
            Some(t) => {
                b = b
                    .request_deadline(t)
                    .connect_timeout(t.max(CONNECT_TIMEOUT_FLOOR))
            }
            None => {
                if let Some(t) = default_timeout {
                    b = b.request_deadline(t);
                }
                if let Some(t) = default_connect {
                    b = b.connect_timeout(t);
                }
            }
        }
        if let Some(ca) = &self.cacert_file {
            b = b.ca_file(ca);
        }
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => b = b.client_cert(c, k),
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(slashguard::Error::Config(
                    "--etcd-cert-file and --etcd-key-file go together: give both or neither".into(),
                ))
            }
        }
        if let Some(d) = &self.domain_name {
            b = b.tls_domain(d);
        }
        if let Some(p) = self.prefix.as_deref().or(default_prefix) {
            b = b.key_prefix(p);
        }
        b.build()
    }
}

/// The shortest connection check `--etcd-timeout-ms` may ask for: below
/// it a TLS handshake over a real network does not finish.
#[cfg(feature = "etcd")]
const CONNECT_TIMEOUT_FLOOR: std::time::Duration = std::time::Duration::from_millis(200);

/// Parse the command line like the `slashguard` command does: `--help` and
/// `--version` print and exit 0; a usage error (unknown flag, bad number)
/// prints clap's message and exits 4 ("bad input or configuration"; clap's
/// own 2 means "refused by a safety rule" for slashguard).
#[allow(dead_code)] // used by the examples
pub fn parse_or_exit<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            std::process::exit(match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 4,
            })
        }
    }
}

/// Print a program's failure the way the `slashguard` command does (the
/// message and its causes, not a debug dump) and return its exit code: 3
/// when the store did not answer, 4 for a configuration problem, 2 for a
/// safety refusal, 1 otherwise.
#[allow(dead_code)] // used by the examples
pub fn report_error(e: &(dyn std::error::Error + 'static)) -> i32 {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = c.source();
    }
    eprintln!("error: {text}");
    match e.downcast_ref::<slashguard::Error>() {
        Some(e) if e.is_unavailable() => 3,
        Some(e) if e.is_refusal() => 2,
        Some(
            slashguard::Error::Config(_)
            | slashguard::Error::Invalid(_)
            | slashguard::Error::Corrupt { .. },
        ) => 4,
        _ => 1,
    }
}
