//! APDUs over TCP to the Speculos Ledger emulator (its APDU port, 9999 by
//! default).
//!
//! Request: length (u32, big-endian) then the APDU. Reply: length (u32,
//! big-endian) of the data, the data, then the 2-byte status word (not
//! counted in the length).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::usb::error::DeviceError;
use crate::usb::transport::{remaining, ApduReply, ApduTransport};

/// Largest reply data accepted (a Ledger reply never comes close).
const MAX_REPLY: u32 = 64 * 1024;

/// An [`ApduTransport`] to Speculos. The connection is opened lazily and
/// dropped after any failure, so a late reply to an abandoned exchange can
/// never be read as the reply to the next one.
pub struct SpeculosTransport {
    addr: SocketAddr,
    connect_timeout: Duration,
    stream: Option<TcpStream>,
}

impl SpeculosTransport {
    /// Talk to Speculos at `addr` (for example `127.0.0.1:9999`).
    pub fn new(addr: SocketAddr) -> Self {
        SpeculosTransport {
            addr,
            connect_timeout: Duration::from_secs(3),
            stream: None,
        }
    }

    /// Bound on connecting (default 3 s).
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    fn connect(&mut self) -> Result<&mut TcpStream, DeviceError> {
        if self.stream.is_none() {
            let s =
                TcpStream::connect_timeout(&self.addr, self.connect_timeout).map_err(
                    |e| match e.kind() {
                        ErrorKind::TimedOut | ErrorKind::WouldBlock => DeviceError::timeout(
                            format!("connecting to Speculos at {}", self.addr),
                            self.connect_timeout,
                        ),
                        _ => DeviceError::NoDevice {
                            detail: format!("no Speculos answers at {}: {e}", self.addr),
                        },
                    },
                )?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("just set"))
    }

    fn exchange_inner(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr;
        let stream = self.connect()?;
        let mut req = Vec::with_capacity(4 + apdu.len());
        req.extend_from_slice(&(apdu.len() as u32).to_be_bytes());
        req.extend_from_slice(apdu);
        stream
            .set_write_timeout(Some(remaining(deadline, timeout, "the APDU write")?))
            .map_err(|e| io_error(addr, "write timeout", e, timeout))?;
        stream
            .write_all(&req)
            .map_err(|e| io_error(addr, "writing the APDU", e, timeout))?;
        let mut len = [0u8; 4];
        read_full(stream, &mut len, deadline, timeout, addr)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_REPLY {
            return Err(DeviceError::bad_reply(
                "Speculos",
                format!("reply length {len} exceeds {MAX_REPLY}"),
            ));
        }
        let mut data = vec![0u8; len as usize + 2];
        read_full(stream, &mut data, deadline, timeout, addr)?;
        ApduReply::from_raw(&data)
    }
}

impl ApduTransport for SpeculosTransport {
    fn exchange(&mut self, apdu: &[u8], timeout: Duration) -> Result<ApduReply, DeviceError> {
        let r = self.exchange_inner(apdu, timeout);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    /// Drop the connection: Speculos sends every reply to its newest
    /// client, so whatever it still had for this one goes nowhere.
    fn resync(&mut self) -> Result<(), DeviceError> {
        self.stream = None;
        Ok(())
    }
}

fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    total: Duration,
    addr: SocketAddr,
) -> Result<(), DeviceError> {
    let mut at = 0;
    while at < buf.len() {
        stream
            .set_read_timeout(Some(remaining(deadline, total, "the Speculos reply")?))
            .map_err(|e| io_error(addr, "read timeout", e, total))?;
        match stream.read(&mut buf[at..]) {
            Ok(0) => {
                return Err(DeviceError::Unplugged {
                    detail: format!("Speculos at {addr} closed the connection mid-reply"),
                })
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(addr, "reading the reply", e, total)),
        }
    }
    Ok(())
}

fn io_error(addr: SocketAddr, what: &str, e: std::io::Error, total: Duration) -> DeviceError {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            DeviceError::timeout(format!("{what} from Speculos at {addr}"), total)
        }
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => DeviceError::Unplugged {
            detail: format!("Speculos at {addr}: {what}: {e}"),
        },
        _ => DeviceError::Io {
            detail: format!("Speculos at {addr}: {what}: {e}"),
        },
    }
}
