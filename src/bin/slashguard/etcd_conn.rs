//! Connecting to etcd with the resolved settings.

use std::time::Duration;

use slashguard::etcd::{EtcdClient, EtcdIdentity, OwnershipOptions};
use slashguard::NodeId;

use crate::exit::{Code, Failure};
use crate::settings::Settings;

/// The CLI's default request deadline: an operator's tool may run far from
/// etcd; the library's 150 ms default is for the vote path.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The CLI's default bound of the connection check (`--etcd-timeout-ms`
/// replaces it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn connect(settings: &Settings) -> Result<EtcdClient, Failure> {
    let e = &settings.etcd;
    if e.endpoints.is_empty() {
        return Err(Failure::bad_input("no etcd endpoint given").hint(
            "pass --etcd-endpoint HOST:PORT, set SLASHGUARD_ETCD_ENDPOINT, or `endpoints` under [etcd] in the config file",
        ));
    }
    let config = e.config(Some(DEFAULT_TIMEOUT), Some(CONNECT_TIMEOUT), None)?;
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
