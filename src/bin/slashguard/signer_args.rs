//! Flags and environment variables of `slashguard signer serve` and
//! `check-config`: the same settings as the `[signer]` section of the
//! configuration file, with the CLI's precedence (flag, then
//! `SLASHGUARD_SIGNER_*`, then the file). A list given on the command line
//! or in the environment replaces the file's list, as `--etcd-endpoint`
//! does.

use std::path::PathBuf;

use clap::Args;

/// Overrides of the `[signer]` section.
#[derive(Debug, Args, Default, Clone)]
pub struct SignerArgs {
    /// octez-client's `secret_keys` file (`secret-keys-file`).
    #[arg(long, env = "SLASHGUARD_SIGNER_SECRET_KEYS_FILE", value_name = "FILE")]
    pub secret_keys_file: Option<PathBuf>,

    /// File holding the password of encrypted keys (`password-file`;
    /// replaces a `password-env` of the file). Never the password itself:
    /// command lines are visible to every user of the host.
    #[arg(long, env = "SLASHGUARD_SIGNER_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// The watermark file (`watermarks-file`).
    #[arg(long, env = "SLASHGUARD_SIGNER_WATERMARKS_FILE", value_name = "FILE")]
    pub watermarks_file: Option<PathBuf>,

    /// HTTP listener address (repeatable, or comma-separated in the
    /// environment); replaces `[signer.listen] http`.
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_LISTEN_HTTP",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub listen_http: Vec<String>,

    /// TCP (socket protocol) listener address; replaces `[signer.listen] tcp`.
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_LISTEN_TCP",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub listen_tcp: Vec<String>,

    /// Unix socket path; replaces `[signer.listen] unix`.
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_LISTEN_UNIX",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub listen_unix: Vec<PathBuf>,

    /// Prometheus-only listener address; replaces `[signer.listen] metrics`.
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_LISTEN_METRICS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub listen_metrics: Vec<String>,

    /// HTTPS listener address; replaces `[signer.listen] https`.
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_LISTEN_HTTPS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub listen_https: Vec<String>,

    /// HTTPS certificate chain, PEM (`tls.certificate-file`).
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_TLS_CERTIFICATE_FILE",
        value_name = "FILE"
    )]
    pub tls_certificate_file: Option<PathBuf>,

    /// HTTPS private key, PEM (`tls.key-file`).
    #[arg(long, env = "SLASHGUARD_SIGNER_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Open connections per listener (`limits.max-connections`).
    #[arg(long, env = "SLASHGUARD_SIGNER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,

    /// Largest HTTP body (`limits.max-body-bytes`).
    #[arg(long, env = "SLASHGUARD_SIGNER_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,

    /// From connecting to the first byte of the first request
    /// (`limits.first-request-timeout-ms`).
    #[arg(
        long,
        env = "SLASHGUARD_SIGNER_FIRST_REQUEST_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub first_request_timeout_ms: Option<u64>,

    /// From a request's first byte to its reply (`limits.request-timeout-ms`).
    #[arg(long, env = "SLASHGUARD_SIGNER_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Between two requests of one connection (`limits.idle-timeout-ms`).
    #[arg(long, env = "SLASHGUARD_SIGNER_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
}

#[cfg_attr(not(feature = "signer"), allow(dead_code))]
impl SignerArgs {
    /// The `[signer]` section with these overrides applied (a section is
    /// made when the file has none and an override is given). Every value
    /// is then checked by the same code as the file's.
    pub fn apply(&self, section: Option<&toml::Value>) -> Option<toml::Value> {
        use toml::Value;
        let mut section = section.cloned();
        let mut set = |path: &[&str], value: Value| {
            let mut table = section.get_or_insert_with(|| Value::Table(Default::default()));
            for key in &path[..path.len() - 1] {
                // A non-table where a table belongs is left for the
                // parser to refuse with its own message.
                let Value::Table(t) = table else { return };
                table = t
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Table(Default::default()));
            }
            if let Value::Table(t) = table {
                t.insert(path[path.len() - 1].to_string(), value);
            }
        };
        let path = |p: &PathBuf| Value::String(p.to_string_lossy().into_owned());
        let strings = |l: &[String]| Value::Array(l.iter().cloned().map(Value::String).collect());
        if let Some(p) = &self.secret_keys_file {
            set(&["secret-keys-file"], path(p));
        }
        if let Some(p) = &self.watermarks_file {
            set(&["watermarks-file"], path(p));
        }
        if !self.listen_http.is_empty() {
            set(&["listen", "http"], strings(&self.listen_http));
        }
        if !self.listen_tcp.is_empty() {
            set(&["listen", "tcp"], strings(&self.listen_tcp));
        }
        if !self.listen_unix.is_empty() {
            set(
                &["listen", "unix"],
                Value::Array(self.listen_unix.iter().map(path).collect()),
            );
        }
        if !self.listen_https.is_empty() {
            set(&["listen", "https"], strings(&self.listen_https));
        }
        if let Some(p) = &self.tls_certificate_file {
            set(&["tls", "certificate-file"], path(p));
        }
        if let Some(p) = &self.tls_key_file {
            set(&["tls", "key-file"], path(p));
        }
        if !self.listen_metrics.is_empty() {
            set(&["listen", "metrics"], strings(&self.listen_metrics));
        }
        for (key, v) in [
            ("max-connections", self.max_connections),
            ("max-body-bytes", self.max_body_bytes),
            ("first-request-timeout-ms", self.first_request_timeout_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
        ] {
            if let Some(v) = v {
                // TOML integers are i64: a larger value becomes the
                // largest, which the range checks then refuse.
                set(
                    &["limits", key],
                    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)),
                );
            }
        }
        if let Some(p) = &self.password_file {
            set(&["password-file"], path(p));
            // The flag replaces the file's way of getting the password.
            if let Some(Value::Table(t)) = &mut section {
                t.remove("password-env");
            }
        }
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_the_file_and_fill_what_it_lacks() {
        let file: toml::Value = toml::from_str(
            r#"
secret-keys-file = "/a"
password-env = "PW"
watermarks-file = "/w"
[listen]
http = ["127.0.0.1:1"]
tcp = ["127.0.0.1:2"]
[limits]
max-connections = 8
"#,
        )
        .unwrap();
        let args = SignerArgs {
            listen_http: vec!["0.0.0.0:6732".into(), "[::1]:6732".into()],
            password_file: Some("/pw".into()),
            first_request_timeout_ms: Some(500),
            ..SignerArgs::default()
        };
        let out = args.apply(Some(&file)).unwrap();
        assert_eq!(
            out["listen"]["http"].as_array().unwrap().len(),
            2,
            "replaced, not appended"
        );
        assert_eq!(out["listen"]["tcp"][0].as_str(), Some("127.0.0.1:2"));
        assert_eq!(out["limits"]["max-connections"].as_integer(), Some(8));
        assert_eq!(
            out["limits"]["first-request-timeout-ms"].as_integer(),
            Some(500)
        );
        assert_eq!(out["password-file"].as_str(), Some("/pw"));
        assert!(out.get("password-env").is_none());
        assert_eq!(out["watermarks-file"].as_str(), Some("/w"));
        // No section and no flag: still none; a flag alone makes one.
        assert!(SignerArgs::default().apply(None).is_none());
        let made = SignerArgs {
            max_connections: Some(u64::MAX),
            ..SignerArgs::default()
        }
        .apply(None)
        .unwrap();
        assert_eq!(
            made["limits"]["max-connections"].as_integer(),
            Some(i64::MAX)
        );
    }
}
