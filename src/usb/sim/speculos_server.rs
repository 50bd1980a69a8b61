//! A TCP server speaking Speculos's APDU protocol in front of a
//! [`LedgerSim`], so [`SpeculosTransport`](crate::usb::SpeculosTransport)
//! is tested end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::usb::sim::LedgerSim;

/// A Speculos-compatible APDU server on a loopback port. Stops on drop.
pub struct SpeculosServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SpeculosServer {
    /// Serve `sim` on 127.0.0.1 at a free port.
    pub fn start(sim: LedgerSim) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = conn {
                    let sim = sim.clone();
                    std::thread::spawn(move || serve(stream, sim));
                }
            }
        });
        Ok(SpeculosServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SpeculosServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, sim: LedgerSim) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > 4096 {
            return;
        }
        let mut apdu = vec![0u8; len];
        if stream.read_exact(&mut apdu).is_err() {
            return;
        }
        // An unplugged device closes the connection without answering.
        let Some(raw) = sim.process(&apdu) else {
            return;
        };
        let (data, sw) = raw.split_at(raw.len() - 2);
        let mut out = Vec::with_capacity(6 + data.len());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(sw);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}
