//! Real devices over libusb (rusb): discovery, opening by serial,
//! claiming interfaces (detaching a bound kernel driver and re-attaching it
//! on close), interrupt transfers for Ledger HID and bulk transfers for
//! TezSign.
//!
//! Every failure is a [`DeviceError`] an operator can act on. A host
//! without a USB bus (containers, CI) gets [`DeviceError::NoDevice`]
//! explaining that libusb found no bus, never a panic or a hang.

use std::time::Duration;

use rusb::{Direction, TransferType, UsbContext};

use crate::usb::error::{DeviceError, LEDGER_UDEV_RULE, TEZSIGN_UDEV_RULE};
use crate::usb::transport::{
    BulkTransport, ControlIn, HidReports, TezSignInterface, HID_REPORT_LEN,
};

/// Ledger's USB vendor id.
pub const LEDGER_VENDOR_ID: u16 = 0x2c97;
/// TezSign's USB vendor id.
pub const TEZSIGN_VENDOR_ID: u16 = 0x9997;
/// TezSign's USB product id.
pub const TEZSIGN_PRODUCT_ID: u16 = 0x0001;

/// A Ledger model, from the USB product id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerModel {
    /// Nano S (0x10xx, old firmware 0x0001).
    NanoS,
    /// Nano X (0x40xx, old 0x0004).
    NanoX,
    /// Nano S Plus (0x50xx, old 0x0005).
    NanoSPlus,
    /// Stax (0x60xx, old 0x0006).
    Stax,
    /// Flex (0x70xx, old 0x0007).
    Flex,
    /// Apex / Nano Gen5 (0x80xx, old 0x0008).
    Apex,
    /// A product id slashguard does not know.
    Unknown(u16),
}

impl LedgerModel {
    /// The model of a Ledger product id: the high byte on current firmware
    /// (the low byte lists the interfaces), the whole id on old firmware.
    pub fn from_product_id(pid: u16) -> Self {
        let code = if pid <= 0x00ff { pid } else { pid >> 8 };
        match code {
            0x01 | 0x10 => LedgerModel::NanoS,
            0x04 | 0x40 => LedgerModel::NanoX,
            0x05 | 0x50 => LedgerModel::NanoSPlus,
            0x06 | 0x60 => LedgerModel::Stax,
            0x07 | 0x70 => LedgerModel::Flex,
            0x08 | 0x80 => LedgerModel::Apex,
            _ => LedgerModel::Unknown(pid),
        }
    }

    /// The marketing name.
    pub fn name(self) -> &'static str {
        match self {
            LedgerModel::NanoS => "Ledger Nano S",
            LedgerModel::NanoX => "Ledger Nano X",
            LedgerModel::NanoSPlus => "Ledger Nano S Plus",
            LedgerModel::Stax => "Ledger Stax",
            LedgerModel::Flex => "Ledger Flex",
            LedgerModel::Apex => "Ledger Apex (Nano Gen5)",
            LedgerModel::Unknown(_) => "Ledger (unknown model)",
        }
    }
}

/// What kind of signer a USB device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A Ledger.
    Ledger(LedgerModel),
    /// A TezSign gadget.
    TezSign,
}

impl DeviceKind {
    /// The kind of a vendor/product pair, if it is a signer slashguard
    /// drives.
    pub fn of(vendor_id: u16, product_id: u16) -> Option<Self> {
        match (vendor_id, product_id) {
            (LEDGER_VENDOR_ID, pid) => Some(DeviceKind::Ledger(LedgerModel::from_product_id(pid))),
            (TEZSIGN_VENDOR_ID, TEZSIGN_PRODUCT_ID) => Some(DeviceKind::TezSign),
            _ => None,
        }
    }

    fn udev_rule(self) -> &'static str {
        match self {
            DeviceKind::Ledger(_) => LEDGER_UDEV_RULE,
            DeviceKind::TezSign => TEZSIGN_UDEV_RULE,
        }
    }
}

/// One signer found on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceInfo {
    /// Ledger (with model) or TezSign.
    pub kind: DeviceKind,
    /// USB vendor id.
    pub vendor_id: u16,
    /// USB product id.
    pub product_id: u16,
    /// Bus number.
    pub bus: u8,
    /// Address on the bus.
    pub address: u8,
    /// The serial number, when the device could be opened to read it.
    pub serial: Option<String>,
    /// Why the serial is missing (typically: permission denied, add the
    /// udev rule).
    pub note: Option<String>,
}

impl std::fmt::Display for UsbDeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.kind {
            DeviceKind::Ledger(m) => m.name(),
            DeviceKind::TezSign => "TezSign",
        };
        write!(
            f,
            "{name} {:04x}:{:04x} on bus {} address {}",
            self.vendor_id, self.product_id, self.bus, self.address
        )?;
        match (&self.serial, &self.note) {
            (Some(s), _) => write!(f, ", serial {s}"),
            (None, Some(n)) => write!(f, " ({n})"),
            (None, None) => Ok(()),
        }
    }
}

fn context() -> Result<rusb::Context, DeviceError> {
    rusb::Context::new().map_err(|e| DeviceError::NoDevice {
        detail: format!(
            "libusb could not start ({e}): this host has no usable USB bus \
             (no /dev/bus/usb, as in most containers); run on the host the signer is plugged into, \
             or pass the device through"
        ),
    })
}

fn map_rusb(
    e: rusb::Error,
    device: &str,
    kind: DeviceKind,
    during: &str,
    timeout: Duration,
) -> DeviceError {
    match e {
        rusb::Error::Access => DeviceError::PermissionDenied {
            device: device.to_string(),
            udev_rule: kind.udev_rule(),
        },
        rusb::Error::NoDevice => DeviceError::Unplugged {
            detail: format!("{device} disappeared during {during}"),
        },
        rusb::Error::Busy => DeviceError::Busy {
            device: device.to_string(),
        },
        rusb::Error::Timeout => DeviceError::timeout(format!("{during} on {device}"), timeout),
        other => DeviceError::Io {
            detail: format!("{during} on {device}: {other}"),
        },
    }
}

/// Every Ledger and TezSign on the bus, with model and (when readable)
/// serial. An empty list means the bus has none; a host without a USB bus
/// gives [`DeviceError::NoDevice`].
pub fn list_devices() -> Result<Vec<UsbDeviceInfo>, DeviceError> {
    let ctx = context()?;
    Ok(candidates(&ctx, |_| true)?
        .into_iter()
        .map(|(_, info)| info)
        .collect())
}

type Candidate = (rusb::Device<rusb::Context>, UsbDeviceInfo);

fn candidates(
    ctx: &rusb::Context,
    want: impl Fn(DeviceKind) -> bool,
) -> Result<Vec<Candidate>, DeviceError> {
    let devices = ctx.devices().map_err(|e| DeviceError::NoDevice {
        detail: format!("libusb could not list USB devices: {e}"),
    })?;
    let mut out = Vec::new();
    for dev in devices.iter() {
        let Ok(desc) = dev.device_descriptor() else {
            continue;
        };
        let Some(kind) = DeviceKind::of(desc.vendor_id(), desc.product_id()) else {
            continue;
        };
        if !want(kind) {
            continue;
        }
        let (serial, note) = match dev.open() {
            Ok(h) => match h.read_serial_number_string_ascii(&desc) {
                Ok(s) => (Some(s.trim().to_string()), None),
                Err(e) => (None, Some(format!("serial unreadable: {e}"))),
            },
            Err(rusb::Error::Access) => (
                None,
                Some(format!(
                    "permission denied; add the udev rule `{}`",
                    kind.udev_rule()
                )),
            ),
            Err(e) => (None, Some(format!("cannot open: {e}"))),
        };
        let info = UsbDeviceInfo {
            kind,
            vendor_id: desc.vendor_id(),
            product_id: desc.product_id(),
            bus: dev.bus_number(),
            address: dev.address(),
            serial,
            note,
        };
        out.push((dev, info));
    }
    Ok(out)
}

fn choose(
    mut found: Vec<Candidate>,
    serial: Option<&str>,
    what: &str,
) -> Result<Candidate, DeviceError> {
    if found.is_empty() {
        return Err(DeviceError::NoDevice {
            detail: format!("no {what} on the USB bus (is it plugged in and unlocked?)"),
        });
    }
    let listing = || {
        found
            .iter()
            .map(|(_, i)| i.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match serial {
        Some(s) => match found
            .iter()
            .position(|(_, i)| i.serial.as_deref() == Some(s))
        {
            Some(p) => Ok(found.swap_remove(p)),
            None => match found.iter().find(|(_, i)| {
                i.serial.is_none()
                    && i.note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("permission denied"))
            }) {
                // The serial may be there, unreadable for lack of permission.
                Some((_, i)) => Err(DeviceError::PermissionDenied {
                    device: i.to_string(),
                    udev_rule: i.kind.udev_rule(),
                }),
                None => Err(DeviceError::NoDevice {
                    detail: format!("no {what} with serial {s:?}; found: {}", listing()),
                }),
            },
        },
        None if found.len() == 1 => Ok(found.pop().expect("one")),
        None => Err(DeviceError::Invalid(format!(
            "several {what}s attached; choose one by serial: {}",
            listing()
        ))),
    }
}

/// A claimed interface: released, and its kernel driver re-attached, on
/// drop.
struct Claimed {
    handle: rusb::DeviceHandle<rusb::Context>,
    interfaces: Vec<(u8, bool)>,
}

impl Claimed {
    fn claim(&mut self, iface: u8, name: &str, kind: DeviceKind) -> Result<(), DeviceError> {
        let t = Duration::ZERO;
        let detached = match self.handle.kernel_driver_active(iface) {
            Ok(true) => {
                self.handle
                    .detach_kernel_driver(iface)
                    .map_err(|e| map_rusb(e, name, kind, "detaching the kernel driver", t))?;
                true
            }
            _ => false,
        };
        if let Err(e) = self.handle.claim_interface(iface) {
            if detached {
                let _ = self.handle.attach_kernel_driver(iface);
            }
            return Err(map_rusb(e, name, kind, "claiming the interface", t));
        }
        self.interfaces.push((iface, detached));
        Ok(())
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        for &(iface, detached) in &self.interfaces {
            let _ = self.handle.release_interface(iface);
            if detached {
                if let Err(e) = self.handle.attach_kernel_driver(iface) {
                    tracing::warn!(iface, error = %e, "could not re-attach the kernel driver");
                }
            }
        }
    }
}

fn open_claimed(
    dev: &rusb::Device<rusb::Context>,
    info: &UsbDeviceInfo,
) -> Result<Claimed, DeviceError> {
    let handle = dev
        .open()
        .map_err(|e| map_rusb(e, &info.to_string(), info.kind, "opening", Duration::ZERO))?;
    Ok(Claimed {
        handle,
        interfaces: Vec::new(),
    })
}

// libusb treats a zero timeout as "wait forever": never pass one.
fn usb_timeout(t: Duration) -> Duration {
    t.max(Duration::from_millis(1))
}

/// A Ledger's generic HID interface over libusb interrupt transfers.
pub struct RusbLedger {
    claimed: Claimed,
    info: UsbDeviceInfo,
    ep_in: u8,
    ep_out: u8,
}

impl RusbLedger {
    /// Open the Ledger with `serial` (or the only Ledger attached) and
    /// claim its HID interface.
    pub fn open(serial: Option<&str>) -> Result<Self, DeviceError> {
        let ctx = context()?;
        let found = candidates(&ctx, |k| matches!(k, DeviceKind::Ledger(_)))?;
        let (dev, info) = choose(found, serial, "Ledger")?;
        let name = info.to_string();
        let (iface, ep_in, ep_out) = hid_endpoints(&dev).ok_or_else(|| DeviceError::WrongApp {
            detail: format!(
                "{name} exposes no HID interface with interrupt endpoints (is it in bootloader or recovery mode?)"
            ),
        })?;
        let mut claimed = open_claimed(&dev, &info)?;
        claimed.claim(iface, &name, info.kind)?;
        Ok(RusbLedger {
            claimed,
            info,
            ep_in,
            ep_out,
        })
    }

    /// The device.
    pub fn info(&self) -> &UsbDeviceInfo {
        &self.info
    }

    fn err(&self, e: rusb::Error, during: &str, t: Duration) -> DeviceError {
        map_rusb(e, &self.info.to_string(), self.info.kind, during, t)
    }
}

/// The HID interface (class 3; interface 0 preferred) and its interrupt
/// IN and OUT endpoints.
fn hid_endpoints(dev: &rusb::Device<rusb::Context>) -> Option<(u8, u8, u8)> {
    let config = dev
        .active_config_descriptor()
        .or_else(|_| dev.config_descriptor(0))
        .ok()?;
    let mut best: Option<(u8, u8, u8)> = None;
    for iface in config.interfaces() {
        for d in iface.descriptors() {
            if d.class_code() != 0x03 {
                continue;
            }
            let mut ep_in = None;
            let mut ep_out = None;
            for ep in d.endpoint_descriptors() {
                if ep.transfer_type() != TransferType::Interrupt {
                    continue;
                }
                match ep.direction() {
                    Direction::In => ep_in = Some(ep.address()),
                    Direction::Out => ep_out = Some(ep.address()),
                }
            }
            if let (Some(i), Some(o)) = (ep_in, ep_out) {
                let cand = (d.interface_number(), i, o);
                if best.is_none() || cand.0 == 0 {
                    best = Some(cand);
                }
            }
        }
    }
    best
}

impl HidReports for RusbLedger {
    fn write_report(
        &mut self,
        report: &[u8; HID_REPORT_LEN],
        timeout: Duration,
    ) -> Result<(), DeviceError> {
        let t = usb_timeout(timeout);
        let n = self
            .claimed
            .handle
            .write_interrupt(self.ep_out, report, t)
            .map_err(|e| self.err(e, "writing a HID report", t))?;
        if n != HID_REPORT_LEN {
            return Err(DeviceError::Io {
                detail: format!("short HID write: {n} of {HID_REPORT_LEN} bytes"),
            });
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Vec<u8>, DeviceError> {
        let t = usb_timeout(timeout);
        let mut buf = [0u8; HID_REPORT_LEN];
        let n = self
            .claimed
            .handle
            .read_interrupt(self.ep_in, &mut buf, t)
            .map_err(|e| self.err(e, "reading a HID report", t))?;
        Ok(buf[..n].to_vec())
    }
}

/// A TezSign gadget over libusb bulk transfers, both interfaces claimed.
pub struct RusbTezSign {
    claimed: Claimed,
    info: UsbDeviceInfo,
    endpoints: [(u8, u8); 2],
}

impl RusbTezSign {
    /// Open the TezSign with `serial` (or the only one attached) and claim
    /// its signing and management interfaces.
    pub fn open(serial: Option<&str>) -> Result<Self, DeviceError> {
        let ctx = context()?;
        let found = candidates(&ctx, |k| k == DeviceKind::TezSign)?;
        let (dev, info) = choose(found, serial, "TezSign")?;
        let name = info.to_string();
        let endpoints = bulk_endpoints(&dev);
        let mut claimed = open_claimed(&dev, &info)?;
        for iface in TezSignInterface::ALL {
            claimed.claim(iface.number(), &name, info.kind)?;
        }
        Ok(RusbTezSign {
            claimed,
            info,
            endpoints,
        })
    }

    /// The device.
    pub fn info(&self) -> &UsbDeviceInfo {
        &self.info
    }

    fn err(&self, e: rusb::Error, during: &str, t: Duration) -> DeviceError {
        map_rusb(e, &self.info.to_string(), self.info.kind, during, t)
    }
}

/// (IN, OUT) bulk endpoints of interfaces 0 and 1, from the descriptors,
/// falling back to the documented 0x81/0x02 and 0x83/0x04.
fn bulk_endpoints(dev: &rusb::Device<rusb::Context>) -> [(u8, u8); 2] {
    let mut eps = [(0x81, 0x02), (0x83, 0x04)];
    let Ok(config) = dev
        .active_config_descriptor()
        .or_else(|_| dev.config_descriptor(0))
    else {
        return eps;
    };
    for iface in config.interfaces() {
        for d in iface.descriptors() {
            let n = d.interface_number() as usize;
            if n > 1 || d.class_code() != 0xff {
                continue;
            }
            for ep in d.endpoint_descriptors() {
                if ep.transfer_type() != TransferType::Bulk {
                    continue;
                }
                match ep.direction() {
                    Direction::In => eps[n].0 = ep.address(),
                    Direction::Out => eps[n].1 = ep.address(),
                }
            }
        }
    }
    eps
}

impl BulkTransport for RusbTezSign {
    fn write_bulk(
        &mut self,
        interface: TezSignInterface,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let t = usb_timeout(timeout);
        let ep = self.endpoints[interface.number() as usize].1;
        self.claimed
            .handle
            .write_bulk(ep, data, t)
            .map_err(|e| self.err(e, &format!("writing to the {interface}"), t))
    }

    fn read_bulk(
        &mut self,
        interface: TezSignInterface,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let t = usb_timeout(timeout);
        let ep = self.endpoints[interface.number() as usize].0;
        self.claimed
            .handle
            .read_bulk(ep, buf, t)
            .map_err(|e| self.err(e, &format!("reading from the {interface}"), t))
    }

    fn control_in(
        &mut self,
        request: ControlIn,
        timeout: Duration,
    ) -> Result<Vec<u8>, DeviceError> {
        let t = usb_timeout(timeout);
        let mut buf = vec![0u8; request.length as usize];
        let n = self
            .claimed
            .handle
            .read_control(
                request.request_type,
                request.request,
                request.value,
                request.index,
                &mut buf,
                t,
            )
            .map_err(|e| self.err(e, "the readiness probe", t))?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ledger_product_id_names_its_model() {
        for (pid, model) in [
            (0x0001, LedgerModel::NanoS),
            (0x1011, LedgerModel::NanoS),
            (0x0004, LedgerModel::NanoX),
            (0x4011, LedgerModel::NanoX),
            (0x0005, LedgerModel::NanoSPlus),
            (0x5011, LedgerModel::NanoSPlus),
            (0x0006, LedgerModel::Stax),
            (0x6011, LedgerModel::Stax),
            (0x0007, LedgerModel::Flex),
            (0x7015, LedgerModel::Flex),
            (0x0008, LedgerModel::Apex),
            (0x8011, LedgerModel::Apex),
        ] {
            assert_eq!(LedgerModel::from_product_id(pid), model, "{pid:#06x}");
            assert_eq!(DeviceKind::of(0x2c97, pid), Some(DeviceKind::Ledger(model)));
        }
        assert_eq!(
            LedgerModel::from_product_id(0x2011),
            LedgerModel::Unknown(0x2011)
        );
        assert_eq!(DeviceKind::of(0x9997, 0x0001), Some(DeviceKind::TezSign));
        assert_eq!(DeviceKind::of(0x9997, 0x0002), None);
        assert_eq!(DeviceKind::of(0x1234, 0x0001), None);
    }
}
