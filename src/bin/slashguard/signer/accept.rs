//! The accept loop every listener shares: a connection slot first (see
//! [`slots`](super::slots)), then `accept`, with a growing pause after
//! accept errors so that running out of file descriptors (EMFILE) or
//! memory does not spin the signer's only thread.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::log;
use super::slots::{Pressure, Slot, Slots};
use super::Shared;

/// First pause after an accept error; doubled on each error in a row.
const BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest pause: the listener retries at least this often.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening socket (TCP or Unix).
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        // Replies are one small write each: send them at once.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

/// The pause after `errors` accept errors in a row.
fn backoff(errors: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << errors.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// Accept connections on `listener` until shutdown, each in its own task
/// running `serve(stream, slot)`.
pub async fn run<L, F, Fut>(
    listener: L,
    slots: Arc<Slots>,
    shared: Arc<Shared>,
    transport: &'static str,
    serve: F,
) where
    L: Listener,
    F: Fn(L::Stream, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = shared.stop.subscribe();
    let mut errors: u32 = 0;
    loop {
        let (slot, pressure) = tokio::select! {
            s = slots.acquire() => s,
            _ = super::stopped(&mut stop) => return,
        };
        if let Pressure::Reclaimed { idle, silent } = pressure {
            log::event(
                "connections_reclaimed",
                json!({"transport": transport, "idle": idle, "silent": silent, "limit": shared.limits.max_connections}),
            );
        }
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = super::stopped(&mut stop) => return,
        };
        match stream {
            Ok(stream) => {
                errors = 0;
                tokio::spawn(serve(stream, slot));
            }
            Err(e) => {
                drop(slot);
                errors = errors.saturating_add(1);
                let pause = backoff(errors);
                // One line per error would flood the log at the rate of
                // the pauses; the first of a run and then every tenth.
                if errors == 1 || errors.is_multiple_of(10) {
                    log::event(
                        "accept_error",
                        json!({"transport": transport, "error": e.to_string(), "in_a_row": errors, "pause_ms": pause.as_millis() as u64}),
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = super::stopped(&mut stop) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(5), Duration::from_millis(160));
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
