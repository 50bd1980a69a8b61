//! USB signers: opening the one a command names, reading its marks, and
//! `slashguard device list`.

use crate::args::DeviceCommand;
use crate::exit::{needs_usb, Failure};
use crate::output::Report;

pub async fn run(cmd: DeviceCommand) -> Result<Report, Failure> {
    needs_usb()?;
    match cmd {
        DeviceCommand::List => {
            #[cfg(feature = "usb")]
            {
                usb::list().await
            }
            #[cfg(not(feature = "usb"))]
            unreachable!("needs_usb refused")
        }
    }
}

/// Where a Ledger is reached (the USB commands and the signer's device
/// keys).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "usb", feature = "signer")), allow(dead_code))]
pub enum LedgerAt {
    /// The Speculos emulator's APDU port (`HOST:PORT`).
    Speculos(String),
    /// USB, by serial, or `auto` for the only one attached.
    Usb(String),
}

impl std::fmt::Display for LedgerAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerAt::Speculos(a) => write!(f, "Speculos at {a}"),
            LedgerAt::Usb(s) if s == "auto" => f.write_str("USB (the only Ledger attached)"),
            LedgerAt::Usb(s) => write!(f, "USB serial {s}"),
        }
    }
}

#[cfg(feature = "usb")]
pub use usb::*;

#[cfg(feature = "usb")]
mod usb {
    use std::net::ToSocketAddrs;
    use std::time::Duration;

    use serde_json::{json, Value};
    use slashguard::usb::ledger::{AppKind, BipPath, DerivationType};
    use slashguard::usb::tezsign::status_marks;
    use slashguard::usb::{
        list_devices, DeviceKind, HidApdu, LedgerConfig, LedgerSigner, Reopening, RusbLedger,
        RusbTezSign, SpeculosTransport, TezSignDevice,
    };
    use slashguard::watermark::{ChainId, ConsensusKind, KeyHash, Mark};

    use super::LedgerAt;
    use crate::args::WatermarkSource;
    use crate::exit::Failure;
    use crate::output::Report;

    /// How long a TezSign request may take.
    pub const TEZSIGN_TIMEOUT: Duration = Duration::from_secs(5);

    /// An opened signer.
    pub enum Device {
        Ledger(LedgerSigner),
        TezSign(TezSignDevice),
    }

    /// One key's marks as a device reports them: (alias, key, chain or
    /// every chain, the three marks).
    pub type DeviceKeyMarks = (
        Option<String>,
        KeyHash,
        Option<ChainId>,
        [(ConsensusKind, Mark); 3],
    );

    fn serial(s: &str) -> Option<&str> {
        (s != "auto").then_some(s)
    }

    /// A derivation type by name; `what` names the setting in errors.
    pub fn curve(s: &str, what: &str) -> Result<DerivationType, Failure> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ed25519" => DerivationType::Ed25519,
            "secp256k1" => DerivationType::Secp256k1,
            "p256" | "p-256" => DerivationType::P256,
            "bip32-ed25519" => DerivationType::Bip32Ed25519,
            "bls" | "bls12-381" => DerivationType::Bls12_381,
            other => {
                return Err(Failure::bad_input(format!(
                    "{what} {other:?}: expected ed25519, secp256k1, p256, bip32-ed25519 or bls"
                )))
            }
        })
    }

    /// A derivation path; `what` names the setting in errors.
    pub fn path(s: &str, what: &str) -> Result<BipPath, Failure> {
        s.parse()
            .map_err(|e| Failure::bad_input(format!("{what} {s:?}: {e}")))
    }

    fn ledger_config(source: &WatermarkSource) -> Result<LedgerConfig, Failure> {
        Ok(LedgerConfig {
            path: path(&source.ledger_path, "--ledger-path")?,
            derivation: curve(&source.ledger_curve, "--ledger-curve")?,
            ..LedgerConfig::default()
        })
    }

    /// Connect to the Tezos Baking app at `at` and read `config`'s key.
    /// With `reopen`, a USB Ledger that is unplugged and plugged back is
    /// opened again at the next request (a long-running signer); the
    /// Speculos transport reconnects by itself.
    pub async fn connect_ledger(
        at: &LedgerAt,
        config: LedgerConfig,
        reopen: bool,
    ) -> Result<LedgerSigner, Failure> {
        match at {
            LedgerAt::Speculos(addr) => {
                let addr = addr
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        Failure::bad_input(format!("Speculos address {addr:?} is not HOST:PORT"))
                    })?;
                Ok(LedgerSigner::connect(SpeculosTransport::new(addr), config).await?)
            }
            LedgerAt::Usb(s) => {
                let ledger = RusbLedger::open(serial(s)).map_err(slashguard::Error::from)?;
                if reopen {
                    let wanted = serial(s).map(String::from);
                    let transport = Reopening::new(HidApdu::new(ledger), move || {
                        RusbLedger::open(wanted.as_deref()).map(HidApdu::new)
                    });
                    Ok(LedgerSigner::connect(transport, config).await?)
                } else {
                    Ok(LedgerSigner::connect(HidApdu::new(ledger), config).await?)
                }
            }
        }
    }

    /// Open the TezSign with `serial` (or `auto`). With `reopen`, as
    /// [`connect_ledger`].
    pub fn open_tezsign(
        serial_or_auto: &str,
        timeout: Duration,
        reopen: bool,
    ) -> Result<TezSignDevice, Failure> {
        let t = RusbTezSign::open(serial(serial_or_auto)).map_err(slashguard::Error::from)?;
        Ok(if reopen {
            let wanted = serial(serial_or_auto).map(String::from);
            TezSignDevice::new(
                Reopening::new(t, move || RusbTezSign::open(wanted.as_deref())),
                timeout,
            )
        } else {
            TezSignDevice::new(t, timeout)
        })
    }

    /// Open the device the source names, if any.
    pub async fn open(source: &WatermarkSource) -> Result<Option<Device>, Failure> {
        if let Some(addr) = &source.ledger_speculos {
            let at = LedgerAt::Speculos(addr.clone());
            let signer = connect_ledger(&at, ledger_config(source)?, false).await?;
            return Ok(Some(Device::Ledger(signer)));
        }
        if let Some(s) = &source.ledger {
            let config = ledger_config(source)?;
            let signer = connect_ledger(&LedgerAt::Usb(s.clone()), config, false).await?;
            return Ok(Some(Device::Ledger(signer)));
        }
        if let Some(s) = &source.tezsign {
            return Ok(Some(Device::TezSign(open_tezsign(
                s,
                TEZSIGN_TIMEOUT,
                false,
            )?)));
        }
        Ok(None)
    }

    impl Device {
        pub fn describe(&self) -> String {
            match self {
                Device::Ledger(l) => format!("ledger:{}", l.key_hash()),
                Device::TezSign(_) => "tezsign".into(),
            }
        }

        /// Every key's marks. A Ledger keeps one mark for its main chain
        /// and one for every other chain; TezSign one per key for all chains.
        pub async fn marks(&self, chain: Option<ChainId>) -> Result<Vec<DeviceKeyMarks>, Failure> {
            match self {
                Device::Ledger(l) => {
                    let hwm = l.device_hwm().await?;
                    let three = |m: slashguard::usb::ledger::DeviceMark| {
                        let mark = Mark {
                            level: m.level,
                            round: m.round.unwrap_or(0),
                        };
                        ConsensusKind::ALL.map(|k| (k, mark))
                    };
                    let unset = hwm.main_chain.0 == [0; 4];
                    Ok(match chain {
                        Some(c) => vec![(None, l.key_hash(), Some(c), three(hwm.for_chain(c)))],
                        None if unset => vec![(None, l.key_hash(), None, three(hwm.main))],
                        None => vec![
                            (None, l.key_hash(), Some(hwm.main_chain), three(hwm.main)),
                            (None, l.key_hash(), None, three(hwm.test)),
                        ],
                    })
                }
                Device::TezSign(d) => {
                    let mut out = Vec::new();
                    for st in d.status().await? {
                        let key: KeyHash = st.tz4.parse().map_err(|_| {
                            Failure::bad_input(format!(
                                "TezSign alias {:?} reports no valid tz4 ({:?})",
                                st.key_id, st.tz4
                            ))
                        })?;
                        let marks = status_marks(&st).map_err(slashguard::Error::from)?;
                        out.push((Some(st.key_id.clone()), key, chain, marks));
                    }
                    Ok(out)
                }
            }
        }
    }

    pub async fn list() -> Result<Report, Failure> {
        let found = list_devices().map_err(|e| {
            Failure::from(slashguard::Error::from(e)).hint(
                "run on the host the signer is plugged into, with the udev rules from the README",
            )
        })?;
        let mut human = String::new();
        let mut rows = Vec::new();
        for info in &found {
            let (model, details) = match info.kind {
                DeviceKind::Ledger(m) => (
                    m.name().to_string(),
                    ledger_details(info.serial.as_deref()).await,
                ),
                DeviceKind::TezSign => (
                    "TezSign".to_string(),
                    tezsign_details(info.serial.as_deref()).await,
                ),
            };
            human.push_str(&format!(
                "{model}  serial {}  bus {} address {}\n",
                info.serial.as_deref().unwrap_or("unreadable"),
                info.bus,
                info.address
            ));
            if let Some(n) = &info.note {
                human.push_str(&format!("  note: {n}\n"));
            }
            match &details {
                Ok((text, _)) => human.push_str(text),
                Err(e) => human.push_str(&format!("  not readable: {e}\n")),
            }
            rows.push(json!({
                "model": model,
                "vendor_id": info.vendor_id,
                "product_id": info.product_id,
                "bus": info.bus,
                "address": info.address,
                "serial": info.serial,
                "note": info.note,
                "details": details.as_ref().map(|(_, j)| j.clone()).unwrap_or(Value::Null),
                "error": details.as_ref().err().map(|e| e.to_string()),
            }));
        }
        if found.is_empty() {
            human.push_str("no Ledger or TezSign on the USB bus\n");
        }
        Ok(Report::new(human, json!({"devices": rows})))
    }

    async fn ledger_details(serial: Option<&str>) -> Result<(String, Value), slashguard::Error> {
        let ledger = RusbLedger::open(serial)?;
        let signer = LedgerSigner::connect(HidApdu::new(ledger), LedgerConfig::default()).await?;
        let v = signer.app_version();
        let app = match v.kind {
            AppKind::Baking => "Tezos Baking",
            AppKind::Wallet => "Tezos Wallet",
            AppKind::Other(_) => "other",
        };
        let hwm = signer.device_hwm().await?;
        let mark = |m: slashguard::usb::ledger::DeviceMark| match m.round {
            Some(r) => format!("level {} round {r}", m.level),
            None => format!("level {}", m.level),
        };
        let text = format!(
            "  app {app} {}.{}.{}, key {} ({})\n  HWM main chain {}: {}; other chains: {}\n",
            v.major,
            v.minor,
            v.patch,
            signer.key_hash(),
            signer.config().path,
            hwm.main_chain,
            mark(hwm.main),
            mark(hwm.test)
        );
        let json = json!({
            "app": app, "version": format!("{}.{}.{}", v.major, v.minor, v.patch),
            "key": signer.key_hash().to_string(),
            "main_chain": hwm.main_chain.to_string(),
            "main": {"level": hwm.main.level, "round": hwm.main.round},
            "test": {"level": hwm.test.level, "round": hwm.test.round},
        });
        Ok((text, json))
    }

    async fn tezsign_details(serial: Option<&str>) -> Result<(String, Value), slashguard::Error> {
        let t = RusbTezSign::open(serial)?;
        let device = TezSignDevice::new(t, TEZSIGN_TIMEOUT);
        let mut text = String::new();
        let mut keys = Vec::new();
        for st in device.status().await? {
            let marks = status_marks(&st)?;
            let m = |k: ConsensusKind| {
                let m = marks
                    .iter()
                    .find(|(kk, _)| *kk == k)
                    .map(|(_, m)| *m)
                    .unwrap_or(Mark::level(0));
                format!("{}/{}", m.level, m.round)
            };
            text.push_str(&format!(
                "  alias {} {}: block {} preattestation {} attestation {}\n",
                st.key_id,
                st.tz4,
                m(ConsensusKind::Block),
                m(ConsensusKind::Preattestation),
                m(ConsensusKind::Attestation)
            ));
            keys.push(json!({
                "alias": st.key_id, "key": st.tz4,
                "marks": marks.iter().map(|(k, m)| json!({"kind": k.to_string(), "level": m.level, "round": m.round})).collect::<Vec<_>>(),
            }));
        }
        Ok((text, json!({"app": "tezsign", "keys": keys})))
    }
}
