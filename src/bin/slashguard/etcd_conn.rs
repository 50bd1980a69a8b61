//! Connecting to etcd with the resolved settings.

use std::time::Duration;

use slashguard::etcd::{EtcdClient, EtcdConfig, EtcdIdentity, OwnershipOptions};
use slashguard::NodeId;

use crate::exit::{Code, Failure};
use crate::settings::Settings;

/// The CLI's default request deadline: an operator's tool may run far from
/// etcd; the library's 150 ms default is for the vote path.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn connect(settings: &Settings) -> Result<EtcdClient, Failure> {
    let e = &settings.etcd;
    if e.endpoints.is_empty() {
        return Err(Failure::bad_input("no etcd endpoint given").hint(
            "pass --etcd-endpoint HOST:PORT, set SLASHGUARD_ETCD_ENDPOINT, or `endpoints` under [etcd] in the config file",
        ));
    }
    let mut b = EtcdConfig::builder(e.endpoints.clone())
        .request_deadline(e.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis))
        .connect_timeout(Duration::from_secs(3));
    if let Some(ca) = &e.cacert_file {
        b = b.ca_file(ca);
    }
    match (&e.cert_file, &e.key_file) {
        (Some(c), Some(k)) => b = b.client_cert(c, k),
        (None, None) => {}
        _ => {
            return Err(Failure::bad_input(
                "--etcd-cert-file and --etcd-key-file go together",
            ))
        }
    }
    if let Some(d) = &e.domain_name {
        b = b.tls_domain(d);
    }
    if let Some(p) = &e.prefix {
        b = b.key_prefix(p);
    }
    let config = b.build()?;
    let endpoints = config.endpoints().join(", ");
    EtcdClient::connect(config).await.map_err(|f| {
        let f = Failure::from(f);
        let hint =
            format!("check that etcd answers at {endpoints} (network, firewall, quorum) and retry");
        f.hint_if(Code::Unavailable, hint)
    })
}

/// The identity `node` as this instance sees it.
pub fn identity(
    client: EtcdClient,
    node: NodeId,
    settings: &Settings,
) -> Result<EtcdIdentity, Failure> {
    Ok(EtcdIdentity::new(
        client,
        node,
        OwnershipOptions::new(settings.instance.clone()),
    )?)
}
