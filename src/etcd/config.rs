//! Connection settings for etcd, validated when they are built: a missing,
//! unreadable or non-PEM certificate is reported here, naming the file,
//! never at the first vote.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::error::{Error, Result};

/// Default per-request deadline: well under Solana's 400 ms slot, and far
/// above a healthy etcd's sub-millisecond answer.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_millis(150);
/// Default time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default HTTP/2 keep-alive ping interval. etcd answers pings more frequent
/// than every 5 s (`--grpc-keepalive-min-time`) with GOAWAY, so stay above.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default time to wait for a keep-alive ping's answer before the
/// connection is considered dead and re-opened.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default prefix of every key slashguard writes.
pub const DEFAULT_KEY_PREFIX: &str = "/slashguard";

/// How to reach etcd: endpoints, mutual TLS, timeouts, and the key prefix
/// under which slashguard keeps its data.
///
/// Built with [`EtcdConfig::builder`]; the flags of the Solana failover
/// procedure map one to one:
///
/// | procedure flag | builder call |
/// |---|---|
/// | `--etcd-endpoint 10.0.0.5:2379` | `EtcdConfig::builder(["10.0.0.5:2379"])` |
/// | `--etcd-cacert-file certs/etcd-ca.pem` | [`ca_file`](EtcdConfigBuilder::ca_file) |
/// | `--etcd-cert-file` / `--etcd-key-file` | [`client_cert`](EtcdConfigBuilder::client_cert) |
///
/// ```
/// use std::time::Duration;
/// use slashguard::etcd::EtcdConfig;
///
/// let config = EtcdConfig::builder(["127.0.0.1:2379", "127.0.0.2:2379"])
///     .request_deadline(Duration::from_millis(100))
///     .key_prefix("/validators/mainnet")
///     .build()?;
/// assert_eq!(config.endpoints()[0], "http://127.0.0.1:2379");
/// # Ok::<(), slashguard::Error>(())
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) tls: Option<TlsMaterial>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_deadline: Duration,
    pub(crate) keep_alive: Option<(Duration, Duration)>,
    pub(crate) key_prefix: String,
}

/// TLS files, read and checked.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    pub(crate) ca_path: PathBuf,
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) ca_ders: Vec<CertificateDer<'static>>,
    pub(crate) client: Option<ClientIdentity>,
    pub(crate) domain: Option<String>,
}

/// The client certificate chain and key, read and checked.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_path: PathBuf,
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) cert_ders: Vec<CertificateDer<'static>>,
    pub(crate) key_path: PathBuf,
    pub(crate) key_pem: Vec<u8>,
}

impl EtcdConfig {
    /// Start a configuration for these endpoints (`host:port`, or full
    /// `http://` / `https://` URLs). Bare `host:port` endpoints use https
    /// when a CA file is set, http otherwise.
    pub fn builder<I, S>(endpoints: I) -> EtcdConfigBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfigBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            client_cert: None,
            tls_domain: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            keep_alive: Some((DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT)),
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
        }
    }

    /// The endpoints as full URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `true` when connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Time allowed for each store, authorization or other request,
    /// retries included. Past it the request fails with
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    pub fn request_deadline(&self) -> Duration {
        self.request_deadline
    }

    /// HTTP/2 keep-alive (ping interval, ping timeout), if enabled.
    pub fn keep_alive(&self) -> Option<(Duration, Duration)> {
        self.keep_alive
    }

    /// The prefix of every key slashguard reads or writes (no trailing `/`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths only: key material never reaches a log.
        let mut d = f.debug_struct("EtcdConfig");
        d.field("endpoints", &self.endpoints);
        if let Some(tls) = &self.tls {
            d.field("ca_file", &tls.ca_path);
            if let Some(c) = &tls.client {
                d.field("cert_file", &c.cert_path)
                    .field("key_file", &c.key_path);
            }
            d.field("tls_domain", &tls.domain);
        }
        d.field("connect_timeout", &self.connect_timeout)
            .field("request_deadline", &self.request_deadline)
            .field("keep_alive", &self.keep_alive)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// Builder of an [`EtcdConfig`]; [`build`](Self::build) reads and checks
/// every file.
#[derive(Debug, Clone)]
pub struct EtcdConfigBuilder {
    endpoints: Vec<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    tls_domain: Option<String>,
    connect_timeout: Duration,
    request_deadline: Duration,
    keep_alive: Option<(Duration, Duration)>,
    key_prefix: String,
}

impl EtcdConfigBuilder {
    /// The CA that signed the etcd server's certificate (PEM). Setting it
    /// turns TLS on (`--etcd-cacert-file`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// This client's certificate (PEM, optionally followed by intermediate
    /// certificates) and private key (PEM: PKCS#8, PKCS#1 or SEC1), for
    /// etcd servers started with `--client-cert-auth` (`--etcd-cert-file`,
    /// `--etcd-key-file`). Requires [`ca_file`](Self::ca_file).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The name to expect in the server's certificate, when it differs
    /// from the endpoint's host (etcd is often addressed by IP while its
    /// certificate names a host).
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// Time allowed to open a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of each request, retries included (default 150 ms).
    pub fn request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// HTTP/2 keep-alive pings: every `interval`, dead after `timeout`
    /// without an answer (default 10 s and 3 s; etcd refuses pings more
    /// frequent than its `--grpc-keepalive-min-time`, 5 s by default).
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Disable HTTP/2 keep-alive pings.
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// Prefix of every key (default `/slashguard`); see
    /// [`EtcdKeys`](super::EtcdKeys) for the layout under it.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Check everything and read the certificate files.
    ///
    /// Fails with [`Error::Config`] naming the file or setting when: no
    /// endpoint is given or one is malformed; an `http://` endpoint is
    /// mixed with TLS or an `https://` one has no CA file; a file is
    /// missing, unreadable or holds no PEM block of the expected kind; a
    /// certificate is not valid X.509; the client certificate has expired
    /// or is not valid yet; a client certificate or TLS domain is given
    /// without a CA file; or a duration is zero.
    pub fn build(self) -> Result<EtcdConfig> {
        if self.request_deadline.is_zero() {
            return Err(Error::Config(
                "etcd request deadline must not be zero".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config(
                "etcd connect timeout must not be zero".into(),
            ));
        }
        if let Some((interval, timeout)) = self.keep_alive {
            if interval.is_zero() || timeout.is_zero() {
                return Err(Error::Config(
                    "etcd keep-alive interval and timeout must not be zero".into(),
                ));
            }
        }
        let key_prefix = normalize_prefix(&self.key_prefix)?;
        let tls = match &self.ca_file {
            None => {
                if self.client_cert.is_some() {
                    return Err(Error::Config(
                        "an etcd client certificate needs the CA file that signed the server's certificate (ca_file / --etcd-cacert-file)".into(),
                    ));
                }
                if self.tls_domain.is_some() {
                    return Err(Error::Config(
                        "a TLS domain name is set but TLS is off (no CA file)".into(),
                    ));
                }
                None
            }
            Some(ca_path) => Some(load_tls(
                ca_path,
                self.client_cert.as_ref(),
                self.tls_domain.clone(),
            )?),
        };
        if self.endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint given".into()));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, tls.is_some()))
            .collect::<Result<Vec<_>>>()?;
        Ok(EtcdConfig {
            endpoints,
            tls,
            connect_timeout: self.connect_timeout,
            request_deadline: self.request_deadline,
            keep_alive: self.keep_alive,
            key_prefix,
        })
    }
}

fn normalize_prefix(prefix: &str) -> Result<String> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return Err(Error::Config(
            "the etcd key prefix must not be empty (use for example /slashguard)".into(),
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(Error::Config(format!(
            "the etcd key prefix {prefix:?} contains control characters"
        )));
    }
    Ok(p.to_string())
}

fn normalize_endpoint(endpoint: &str, tls: bool) -> Result<String> {
    let e = endpoint.trim();
    let (scheme, rest) = if let Some(rest) = e.strip_prefix("https://") {
        if !tls {
            return Err(Error::Config(format!(
                "etcd endpoint {e} uses https but no CA file is set (ca_file / --etcd-cacert-file)"
            )));
        }
        ("https", rest)
    } else if let Some(rest) = e.strip_prefix("http://") {
        if tls {
            return Err(Error::Config(format!(
                "etcd endpoint {e} uses plain http although TLS is configured; use https:// or host:port"
            )));
        }
        ("http", rest)
    } else if e.contains("://") {
        return Err(Error::Config(format!(
            "etcd endpoint {e}: only http:// and https:// are supported"
        )));
    } else {
        (if tls { "https" } else { "http" }, e)
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if port.is_none_or(|p| p == 0) {
        return Err(Error::Config(format!(
            "etcd endpoint {e:?} is not host:port (for example 10.0.0.5:2379)"
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("{what} {}: cannot read it: {e}", path.display())))
}

fn read_certs(what: &str, path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{what} {} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&pem).is_ok() {
            " (it holds a private key: are the certificate and key files swapped?)"
        } else {
            ""
        };
        return Err(Error::Config(format!(
            "{what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----){hint}",
            path.display()
        )));
    }
    Ok((pem, certs))
}

fn load_tls(
    ca_path: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    domain: Option<String>,
) -> Result<TlsMaterial> {
    let (ca_pem, ca_ders) = read_certs("CA file", ca_path)?;
    let mut anchors = Vec::with_capacity(ca_ders.len());
    for (i, der) in ca_ders.iter().enumerate() {
        let anchor = webpki::anchor_from_trusted_cert(der).map_err(|e| {
            Error::Config(format!(
                "CA file {}: certificate #{} is not valid X.509: {e}",
                ca_path.display(),
                i + 1
            ))
        })?;
        anchors.push(anchor.to_owned());
    }
    if let Some(d) = &domain {
        if d.trim().is_empty() {
            return Err(Error::Config("the TLS domain name is empty".into()));
        }
    }
    let client = match client {
        None => None,
        Some((cert_path, key_path)) => {
            let (cert_pem, cert_ders) = read_certs("client certificate file", cert_path)?;
            let key_pem = read_file("client key file", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                Error::Config(format!(
                    "client key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    key_path.display()
                ))
            })?;
            if !key_matches_cert(&key, &cert_ders) {
                return Err(Error::Config(format!(
                    "client key file {} does not belong to the client certificate {}: the key's public half is not the certificate's; \
                     give the key generated with that certificate (e.g. validator-key.pem with validator.pem)",
                    key_path.display(),
                    cert_path.display()
                )));
            }
            let identity = ClientIdentity {
                cert_path: cert_path.clone(),
                cert_pem,
                cert_ders,
                key_path: key_path.clone(),
                key_pem,
            };
            match identity.check(&anchors) {
                CertCheck::Valid => {}
                CertCheck::Fatal(msg) => return Err(Error::Config(msg)),
                CertCheck::Doubtful(msg) => {
                    // The server may trust another CA than the one that
                    // signed its own certificate: only the server can say.
                    tracing::warn!("{msg}");
                }
            }
            Some(identity)
        }
    };
    Ok(TlsMaterial {
        ca_path: ca_path.to_path_buf(),
        ca_pem,
        ca_ders,
        client,
        domain,
    })
}

/// `false` only when the key's public half is known to differ from the
/// certificate's (a key type rustls cannot load is left to the handshake).
fn key_matches_cert(key: &PrivateKeyDer<'_>, cert_ders: &[CertificateDer<'static>]) -> bool {
    let Ok(signing) = rustls::crypto::ring::sign::any_supported_type(key) else {
        return true;
    };
    let certified = rustls::sign::CertifiedKey::new(cert_ders.to_vec(), signing);
    !matches!(
        certified.keys_match(),
        Err(rustls::Error::InconsistentKeys(
            rustls::InconsistentKeys::KeyMismatch
        ))
    )
}

/// What a local look at the client certificate found.
pub(crate) enum CertCheck {
    Valid,
    /// It cannot work (expired, not yet valid, not X.509).
    Fatal(String),
    /// It may not work (not signed by the CA file we have).
    Doubtful(String),
}

impl ClientIdentity {
    /// Check the client certificate against the CA file at the current
    /// time, for a clear message before the server refuses it.
    pub(crate) fn check(&self, anchors: &[rustls_pki_types::TrustAnchor<'_>]) -> CertCheck {
        let path = self.cert_path.display();
        let ee = match webpki::EndEntityCert::try_from(&self.cert_ders[0]) {
            Ok(ee) => ee,
            Err(e) => {
                return CertCheck::Fatal(format!(
                    "client certificate file {path}: the first certificate is not valid X.509: {e}"
                ))
            }
        };
        let result = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            &self.cert_ders[1..],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        );
        match result {
            Ok(_) => CertCheck::Valid,
            Err(webpki::Error::CertExpired { not_after, .. }) => CertCheck::Fatal(format!(
                "client certificate {path} expired at {}: renew it",
                fmt_utc(not_after.as_secs())
            )),
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => CertCheck::Fatal(format!(
                "client certificate {path} is not valid before {} (check this host's clock)",
                fmt_utc(not_before.as_secs())
            )),
            Err(e) => CertCheck::Doubtful(format!(
                "client certificate {path} does not verify against the CA file ({e}); \
                 the etcd server will refuse it unless its --trusted-ca-file holds its issuer"
            )),
        }
    }

    /// The same check, with the CA file's anchors.
    pub(crate) fn check_with(&self, ca_ders: &[CertificateDer<'static>]) -> CertCheck {
        let anchors: Vec<_> = ca_ders
            .iter()
            .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
            .collect();
        self.check(&anchors)
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a unix time (civil-from-days, proleptic
/// Gregorian).
pub(crate) fn fmt_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_checked() {
        assert_eq!(
            normalize_endpoint("10.0.0.5:2379", false).unwrap(),
            "http://10.0.0.5:2379"
        );
        assert_eq!(
            normalize_endpoint("10.0.0.5:2379", true).unwrap(),
            "https://10.0.0.5:2379"
        );
        assert_eq!(
            normalize_endpoint("https://[::1]:2379/", true).unwrap(),
            "https://[::1]:2379"
        );
        for bad in [
            "",
            "10.0.0.5",
            ":2379",
            "10.0.0.5:0",
            "h:99999",
            "unix://x:1",
        ] {
            assert!(
                matches!(normalize_endpoint(bad, false), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert!(normalize_endpoint("http://h:1", true).is_err());
        assert!(normalize_endpoint("https://h:1", false).is_err());
    }

    #[test]
    fn builder_refusals() {
        let e = |b: EtcdConfigBuilder| match b.build() {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert!(e(EtcdConfig::builder(Vec::<String>::new())).contains("no etcd endpoint"));
        assert!(
            e(EtcdConfig::builder(["h:1"]).request_deadline(Duration::ZERO)).contains("deadline")
        );
        assert!(e(EtcdConfig::builder(["h:1"]).key_prefix("///")).contains("prefix"));
        assert!(e(EtcdConfig::builder(["h:1"]).client_cert("c", "k")).contains("CA file"));
        assert!(e(EtcdConfig::builder(["h:1"]).tls_domain("etcd")).contains("TLS is off"));
        let m = e(EtcdConfig::builder(["h:1"]).ca_file("/nonexistent/ca.pem"));
        assert!(
            m.contains("/nonexistent/ca.pem") && m.contains("cannot read"),
            "{m}"
        );
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let m = e(EtcdConfig::builder(["h:1"]).ca_file(&garbage));
        assert!(m.contains("holds no PEM certificate"), "{m}");
        let m = e(EtcdConfig::builder(["h:1"]).ca_file(dir.path()));
        assert!(m.contains("cannot read"), "{m}");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
