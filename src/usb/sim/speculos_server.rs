//! A TCP server speaking Speculos's APDU protocol in front of a
//! [`LedgerSim`], so [`SpeculosTransport`](crate::usb::SpeculosTransport)
//! is tested end to end.
//!
//! Like Speculos it serves one client at a time (a new connection replaces
//! the previous one, which is closed) and sends every reply to its newest
//! client, whichever connection carried the command: a reply that comes late
//! (a prompt answered after the host gave up) reaches the next connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::usb::sim::ledger::Submitted;
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
            let client: Client = Arc::new(Mutex::new(None));
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = conn else { continue };
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                let mut current = client.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = current.replace(writer) {
                    // One client at a time.
                    let _ = old.shutdown(Shutdown::Both);
                }
                drop(current);
                let sim = sim.clone();
                let client = client.clone();
                std::thread::spawn(move || serve(stream, sim, client));
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

/// The newest connection: where every reply goes.
type Client = Arc<Mutex<Option<TcpStream>>>;

fn serve(mut stream: TcpStream, sim: LedgerSim, client: Client) {
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
        let to = client.clone();
        let deliver = move |raw: Option<Vec<u8>>| {
            let mut current = to.lock().unwrap_or_else(|p| p.into_inner());
            let Some(out) = current.as_mut() else { return };
            // An unplugged device closes the connection without answering.
            let Some(raw) = raw else {
                let _ = out.shutdown(Shutdown::Both);
                *current = None;
                return;
            };
            let (data, sw) = raw.split_at(raw.len() - 2);
            let mut msg = Vec::with_capacity(6 + data.len());
            msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
            msg.extend_from_slice(data);
            msg.extend_from_slice(sw);
            let _ = out.write_all(&msg);
        };
        // Dropped while a prompt is on screen: no reply, ever.
        if sim.submit(apdu, deliver) == Submitted::Unplugged {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}
