//! The etcd connection: every request bounded by a deadline, transient
//! failures retried inside it, and every failure turned into a typed
//! [`Error`] that keeps its source and explains TLS refusals.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnResponse,
};
use tokio::time::Instant;

use crate::error::{BoxError, Error, Result};
use crate::etcd::config::{CertCheck, EtcdConfig};
use crate::etcd::keys::EtcdKeys;

const BACKEND: &str = "etcd";

/// A connection to an etcd cluster, shared (it is cheap to clone) by the
/// ownership, tower and watermark handles built on it.
///
/// The underlying channel reconnects by itself: when etcd comes back after
/// an outage, the same client (and everything built on it) works again
/// without a restart of the process.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Client,
    config: Arc<EtcdConfig>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("config", &self.config)
            .finish()
    }
}

/// How a failed call ended.
enum Failure {
    /// No answer in time.
    Deadline,
    /// An error worth another try within the deadline (connection refused,
    /// reset, no leader, leader changed).
    Transient(etcd_client::Error),
    /// An answer that another try will not change.
    Final(etcd_client::Error),
}

impl EtcdClient {
    /// Connect and check, with one request bounded by the connect timeout,
    /// that etcd answers and accepts this client.
    ///
    /// Errors: [`Error::Config`] when the TLS setup is refused (by the
    /// server, or the server's certificate by us), with the likely cause;
    /// [`Error::Unavailable`] when etcd cannot be reached or has no leader.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let client = Self::connect_lazy(config).await?;
        client.check().await?;
        Ok(client)
    }

    /// Build the client without contacting etcd: connections are opened by
    /// the first request. Only local setup can fail ([`Error::Config`]).
    pub async fn connect_lazy(config: EtcdConfig) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            // Fail fast with "no leader" instead of waiting for a quorum
            // that is not there.
            .with_require_leader(true);
        if let Some((interval, timeout)) = config.keep_alive {
            options = options
                .with_keep_alive(interval, timeout)
                .with_keep_alive_while_idle(true);
        }
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(id) = &tls.client {
                t = t.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            options = options.with_tls(t);
        }
        let inner = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| {
                Error::Config(format!(
                    "cannot set up the etcd client for {:?}: {}",
                    config.endpoints,
                    describe(&e)
                ))
            })?;
        Ok(EtcdClient {
            inner,
            config: Arc::new(config),
        })
    }

    /// One read, bounded by the connect timeout, to see that etcd answers,
    /// has a leader, and accepts this client's TLS certificate. Errors as
    /// for [`connect`](Self::connect).
    pub async fn check(&self) -> Result<()> {
        let key = format!("{}/", self.config.key_prefix);
        let options = GetOptions::new().with_prefix().with_count_only();
        let result = self
            .attempts(self.config.connect_timeout, || {
                let mut c = self.inner.clone();
                let key = key.clone();
                let options = options.clone();
                async move { c.get(key, Some(options)).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(failure) => {
                let text = match &failure {
                    Failure::Deadline => String::new(),
                    Failure::Transient(e) | Failure::Final(e) => describe(e),
                };
                if let Some(hint) = self.tls_hint(&text, true) {
                    return Err(Error::Config(format!(
                        "etcd at {:?} refused the TLS connection: {hint} ({text})",
                        self.config.endpoints
                    )));
                }
                if self.config.tls.is_none() && closed_at_once(&text) {
                    return Err(Error::Config(format!(
                        "etcd at {:?} closed a plain (non-TLS) connection at once: it most likely serves TLS \
                         (started with --cert-file); give its CA with --etcd-cacert-file, and a client \
                         certificate (--etcd-cert-file, --etcd-key-file) if it was started with \
                         --client-cert-auth ({text})",
                        self.config.endpoints
                    )));
                }
                Err(self.failure("connection check", self.config.connect_timeout, failure))
            }
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The key layout under the configured prefix.
    pub fn keys(&self) -> EtcdKeys {
        EtcdKeys::new(self.config.key_prefix.clone())
    }

    /// The configured per-request deadline.
    pub(crate) fn deadline(&self) -> Duration {
        self.config.request_deadline
    }

    /// The raw client, for streams (lease keep-alive, watch) that the
    /// caller bounds itself.
    pub(crate) fn raw(&self) -> Client {
        self.inner.clone()
    }

    /// One transaction, retried on transient failures within the deadline.
    /// Retrying is safe for every transaction slashguard sends: each one
    /// compares revisions, so a retry of one that did commit fails its
    /// compare and reports the state it left.
    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.call(what, self.deadline(), || {
            let mut c = self.inner.clone();
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Run `op` until it succeeds, fails for good, or `within` has passed.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, within: Duration, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        match self.attempts(within, op).await {
            Ok(v) => Ok(v),
            Err(f) => Err(self.failure(what, within, f)),
        }
    }

    async fn attempts<T, F, Fut>(
        &self,
        within: Duration,
        mut op: F,
    ) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let end = Instant::now() + within;
        let mut pause = Duration::from_millis(2);
        let mut last: Option<etcd_client::Error> = None;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.map_or(Failure::Deadline, Failure::Transient));
            }
            match tokio::time::timeout(left, op()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) => {
                    last = Some(e);
                    // Another endpoint may answer (the balancer picks
                    // anew), or a new leader may be elected meanwhile.
                    let left = end.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Ok(Err(e)) => return Err(Failure::Final(e)),
                Err(_) => {
                    return Err(match last {
                        // The last answer says more than the timeout.
                        Some(e) => Failure::Transient(e),
                        None => Failure::Deadline,
                    });
                }
            }
        }
    }

    fn failure(&self, what: &str, within: Duration, failure: Failure) -> Error {
        match failure {
            Failure::Deadline => Error::Unavailable {
                backend: BACKEND,
                detail: format!("{what}: no answer from etcd within {within:?}"),
                source: None,
            },
            Failure::Transient(e) | Failure::Final(e) => self.error(what, Some(within), e),
        }
    }

    /// Turn an etcd-client error into ours: permission problems are
    /// configuration errors, everything else means "no acknowledged
    /// answer" and is [`Error::Unavailable`].
    pub(crate) fn error(
        &self,
        what: &str,
        within: Option<Duration>,
        e: etcd_client::Error,
    ) -> Error {
        let text = describe(&e);
        if matches!(
            tonic_code::of(&e),
            Some(tonic_code::PERMISSION_DENIED | tonic_code::UNAUTHENTICATED)
        ) {
            return Error::Config(format!("etcd refused {what}: {text}"));
        }
        let mut detail = match within {
            Some(w) => format!("{what}: no success within {w:?}: {text}"),
            None => format!("{what}: {text}"),
        };
        if let Some(hint) = self.tls_hint(&text, false) {
            detail.push_str("; ");
            detail.push_str(&hint);
        }
        Error::Unavailable {
            backend: BACKEND,
            detail,
            source: Some(Box::new(e) as BoxError),
        }
    }

    /// A readable cause for a TLS failure, if `text` looks like one.
    /// `fresh` says the connection was just opened (a connection closed
    /// right away then means the server refused our certificate).
    fn tls_hint(&self, text: &str, fresh: bool) -> Option<String> {
        let tls = self.config.tls.as_ref()?;
        let lower = text.to_ascii_lowercase();
        if lower.contains("invalid peer certificate") || lower.contains("invalidcertificate") {
            return Some(format!(
                "the etcd server's certificate is not accepted: it must be signed by the CA in {} \
                 and name the host this client connects to (when etcd is addressed by IP, set the \
                 TLS domain name to a name in its certificate)",
                tls.ca_path.display()
            ));
        }
        let alert = lower.contains("received fatal alert");
        let closed = closed_at_once(&lower);
        if !(alert || (fresh && closed)) {
            return None;
        }
        let why = if alert {
            "etcd refused this client's certificate"
        } else {
            "etcd closed the connection right after the TLS handshake, which is how a server \
             started with --client-cert-auth refuses a client certificate"
        };
        let cause = match &tls.client {
            None => "this client presents no certificate: configure client_cert \
                     (--etcd-cert-file and --etcd-key-file)"
                .to_string(),
            Some(id) => match id.check_with(&tls.ca_ders) {
                CertCheck::Fatal(m) | CertCheck::Doubtful(m) => m,
                CertCheck::Valid => format!(
                    "{} verifies against {}, so the server's --trusted-ca-file must hold another CA",
                    id.cert_path.display(),
                    tls.ca_path.display()
                ),
            },
        };
        Some(format!("{why}; {cause}"))
    }
}

/// The server hung up on a fresh connection: what a TLS server does to a
/// plain HTTP/2 client, and a --client-cert-auth server to a refused
/// certificate.
fn closed_at_once(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("connection closed")
        || lower.contains("operation was canceled")
        || lower.contains("broken pipe")
        || lower.contains("connection reset")
}

/// gRPC codes (tonic's numbering), without depending on tonic directly.
mod tonic_code {
    use etcd_client::Error;
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const INTERNAL: i32 = 13;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const UNAUTHENTICATED: i32 = 16;

    pub(super) fn of(e: &Error) -> Option<i32> {
        match e {
            Error::GRpcStatus(s) => Some(s.code() as i32),
            _ => None,
        }
    }
}

fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(_) => matches!(
            tonic_code::of(e),
            Some(
                tonic_code::CANCELLED
                    | tonic_code::UNKNOWN
                    | tonic_code::DEADLINE_EXCEEDED
                    | tonic_code::RESOURCE_EXHAUSTED
                    | tonic_code::ABORTED
                    | tonic_code::INTERNAL
                    | tonic_code::UNAVAILABLE
            )
        ),
        _ => false,
    }
}

/// One line: the gRPC message and every source, without repeats.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    match e {
        etcd_client::Error::GRpcStatus(s) => parts.push(s.message().to_string()),
        other => parts.push(other.to_string()),
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        other => std::error::Error::source(other),
    };
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    let mut out = parts.join(": ");
    // hyper hides the interesting part of some errors in their Debug form.
    if let etcd_client::Error::GRpcStatus(s) = e {
        if let Some(src) = std::error::Error::source(s) {
            let dbg = format!("{src:?}");
            for needle in [
                "received fatal alert",
                "InvalidCertificate",
                "Connection refused",
            ] {
                if dbg.contains(needle) && !out.contains(needle) {
                    out.push_str(&format!(" ({dbg})"));
                    break;
                }
            }
        }
    }
    out
}
