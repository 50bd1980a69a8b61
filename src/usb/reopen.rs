//! A transport that opens its device again after it was unplugged.
//!
//! A libusb handle is dead once its device is unplugged: every transfer
//! fails, and a re-plugged device is a new device that needs a new handle.
//! [`Reopening`] drops the handle when a transfer reports the device gone
//! ([`DeviceError::Unplugged`], [`DeviceError::NoDevice`], or another
//! [`DeviceError::Io`]) and opens the device again, with the function it
//! was given, at the next transfer. The protocol layer above does not
//! change: the Ledger client resynchronises after such an error
//! (`BakingApp::resync` asks VERSION again and must get VERSION's answer),
//! and a reply can never cross from the old handle to the new one.
//!
//! The Speculos transport needs none of this: it reconnects by itself.

use std::time::Duration;

use crate::usb::error::DeviceError;
use crate::usb::transport::{ApduReply, ApduTransport, BulkTransport, ControlIn, TezSignInterface};

type Opener<T> = Box<dyn FnMut() -> Result<T, DeviceError> + Send>;

/// A transport `T` opened again by `open` after its device went away.
pub struct Reopening<T> {
    open: Opener<T>,
    current: Option<T>,
}

impl<T> std::fmt::Debug for Reopening<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reopening")
            .field("open", &self.current.is_some())
            .finish()
    }
}

/// Whether `e` says the handle is gone (the device unplugged, reset, or
/// the bus failed under it): the handle is dropped.
fn handle_lost(e: &DeviceError) -> bool {
    matches!(
        e,
        DeviceError::Unplugged { .. } | DeviceError::NoDevice { .. } | DeviceError::Io { .. }
    )
}

impl<T> Reopening<T> {
    /// Start with `opened`; `open` makes a new one after a loss.
    pub fn new(opened: T, open: impl FnMut() -> Result<T, DeviceError> + Send + 'static) -> Self {
        Reopening {
            open: Box::new(open),
            current: Some(opened),
        }
    }

    /// Open at the first transfer.
    pub fn lazy(open: impl FnMut() -> Result<T, DeviceError> + Send + 'static) -> Self {
        Reopening {
            open: Box::new(open),
            current: None,
        }
    }

    /// Whether a handle is open now.
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    fn handle(&mut self) -> Result<&mut T, DeviceError> {
        if self.current.is_none() {
            let t = (self.open)()?;
            tracing::info!("USB device opened again");
            self.current = Some(t);
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    fn after<R>(&mut self, r: Result<R, DeviceError>) -> Result<R, DeviceError> {
        if let Err(e) = &r {
            if handle_lost(e) && self.current.take().is_some() {
                tracing::warn!(error = %e, "USB device lost; it is opened again at the next request");
            }
        }
        r
    }
}

impl<T: ApduTransport> ApduTransport for Reopening<T> {
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        let r = self.handle()?.exchange(apdu, timeout);
        self.after(r)
    }

    /// Resynchronise the open handle; a new handle has nothing of the old
    /// one's to drop.
    fn resync(&mut self) -> Result<(), DeviceError> {
        let Some(t) = self.current.as_mut() else {
            return Ok(());
        };
        let r = t.resync();
        self.after(r)
    }
}

impl<T: BulkTransport> BulkTransport for Reopening<T> {
    fn write_bulk(
        &mut self,
        interface: TezSignInterface,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let r = self.handle()?.write_bulk(interface, data, timeout);
        self.after(r)
    }

    fn read_bulk(
        &mut self,
        interface: TezSignInterface,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, DeviceError> {
        let r = self.handle()?.read_bulk(interface, buf, timeout);
        self.after(r)
    }

    fn control_in(
        &mut self,
        request: ControlIn,
        timeout: Duration,
    ) -> Result<Vec<u8>, DeviceError> {
        let r = self.handle()?.control_in(request, timeout);
        self.after(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Answers 9000 until told the device is gone.
    struct Fake {
        gone: Arc<std::sync::atomic::AtomicBool>,
    }

    impl ApduTransport for Fake {
        fn exchange(&mut self, _: &[u8], _: Duration) -> Result<ApduReply, DeviceError> {
            if self.gone.load(Ordering::SeqCst) {
                return Err(DeviceError::Unplugged {
                    detail: "fake".into(),
                });
            }
            Ok(ApduReply {
                data: vec![],
                status: 0x9000,
            })
        }
    }

    #[test]
    fn a_lost_handle_is_opened_again_at_the_next_transfer() {
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opens = Arc::new(AtomicUsize::new(0));
        let (g, o) = (gone.clone(), opens.clone());
        let mut t = Reopening::lazy(move || {
            o.fetch_add(1, Ordering::SeqCst);
            if g.load(Ordering::SeqCst) {
                Err(DeviceError::NoDevice {
                    detail: "not plugged".into(),
                })
            } else {
                Ok(Fake { gone: g.clone() })
            }
        });
        let t1 = Duration::from_secs(1);
        assert!(!t.is_open());
        t.exchange(&[0x80, 0, 0, 0, 0], t1).unwrap();
        t.exchange(&[0x80, 0, 0, 0, 0], t1).unwrap();
        assert_eq!(
            opens.load(Ordering::SeqCst),
            1,
            "opened once while it works"
        );
        gone.store(true, Ordering::SeqCst);
        assert!(matches!(
            t.exchange(&[0x80, 0, 0, 0, 0], t1),
            Err(DeviceError::Unplugged { .. })
        ));
        assert!(!t.is_open(), "the dead handle is dropped");
        t.resync().unwrap();
        assert!(matches!(
            t.exchange(&[0x80, 0, 0, 0, 0], t1),
            Err(DeviceError::NoDevice { .. })
        ));
        gone.store(false, Ordering::SeqCst);
        t.exchange(&[0x80, 0, 0, 0, 0], t1).unwrap();
        assert_eq!(opens.load(Ordering::SeqCst), 3);
        assert!(t.is_open());
    }
}
