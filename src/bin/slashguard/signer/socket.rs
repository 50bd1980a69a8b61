//! The TCP and Unix-socket listeners: `u16` length frames, one request per
//! frame, answered in order until the client closes. A client that sends
//! nothing within the first-request deadline after connecting, or for the
//! idle timeout between requests, or takes longer than the request
//! deadline to send a frame it started, is disconnected; so is one whose
//! slot the listener reclaims while it waits.

use std::sync::Arc;

use serde_json::json;
use slashguard::remote_signer::socket::{self as codec, Request};
use slashguard::remote_signer::trace::TraceError;
use slashguard::remote_signer::{ServiceError, SignCall};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::slots::Slot;
use super::{log, Shared};

fn error_reply(msg: impl Into<String>) -> Vec<u8> {
    codec::error_reply(&[TraceError::failure(msg)])
}

async fn answer(shared: &Shared, transport: &'static str, frame: &[u8]) -> Vec<u8> {
    let service = &shared.service;
    let request = match codec::decode_request(frame) {
        Ok(r) => r,
        Err(e) => return error_reply(format!("slashguard: bad request: {e}")),
    };
    let service_error = |e: ServiceError| codec::error_reply(&e.trace());
    match request {
        Request::Sign {
            pkh,
            version,
            data,
            authentication,
        } => {
            let call = SignCall {
                pkh,
                data: &data,
                authentication: authentication.as_deref(),
                version,
            };
            let started = std::time::Instant::now();
            let result = service.handle_sign(call).await;
            let logged = log::decision(transport, &pkh, &result);
            shared.metrics.sign(transport, &result, started.elapsed());
            if logged.is_err() {
                return error_reply(log::UNLOGGED);
            }
            match result {
                Ok(s) => codec::ok_reply(s.signature()),
                Err(w) => service_error(w.error),
            }
        }
        Request::PublicKey(pkh) => match service.public_key(&pkh) {
            Ok(pk) => codec::ok_reply(&pk.to_tagged_bytes()),
            Err(e) => service_error(e),
        },
        Request::AuthorizedKeys => codec::ok_reply(&codec::authorized_keys_value(
            service.authorized_keys().as_deref(),
        )),
        Request::DeterministicNonce { .. } => error_reply(
            "slashguard: deterministic nonces are not supported (bakers use random nonces by default)",
        ),
        Request::SupportsDeterministicNonces(pkh) => match service.public_key(&pkh) {
            Ok(_) => codec::ok_reply(&[0x00]),
            Err(e) => service_error(e),
        },
        Request::KnownKeys => match service.known_keys() {
            Ok(k) => codec::ok_reply(&codec::key_list(&k)),
            Err(e) => service_error(e),
        },
        Request::ProvePossession { pkh, public_key } => {
            match service.prove_possession(&pkh, public_key.as_deref().map(|k| &k[..])) {
                Ok(p) => codec::ok_reply(&p),
                Err(e) => service_error(e),
            }
        }
    }
}

/// Serve one connection until EOF, error, timeout, reclaim or shutdown.
pub async fn connection<S>(mut stream: S, slot: Slot, shared: Arc<Shared>, transport: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = shared.stop.subscribe();
    let mut first_request = true;
    loop {
        // Wait for the next frame's first byte (the first request has a
        // short deadline, later ones the idle timeout), then read the rest
        // of it within the request deadline.
        let wait = if first_request {
            shared.limits.first_request_timeout
        } else {
            shared.limits.idle_timeout
        };
        let mut len = [0u8; 2];
        let first = tokio::select! {
            r = tokio::time::timeout(wait, stream.read(&mut len[..1])) => r,
            _ = slot.reclaimed() => return,
            _ = super::stopped(&mut stop) => return,
        };
        match first {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let event = if first_request {
                    "first_request_timeout"
                } else {
                    "idle_timeout"
                };
                log::event(event, json!({"transport": transport}));
                return;
            }
        }
        first_request = false;
        // Until the frame is here, only the client is waited for: a client
        // that stalls inside it is reclaimed under pressure like a silent
        // one (the bytes already here are read first).
        slot.receiving();
        let deadline = tokio::time::Instant::now() + shared.limits.request_timeout;
        let read = async {
            stream.read_exact(&mut len[1..]).await?;
            let n = u16::from_be_bytes(len) as usize;
            let mut frame = vec![0u8; n];
            stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        };
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, read) => r,
            _ = slot.reclaimed() => return,
        };
        slot.busy();
        let frame = match read {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => return,
            Err(_) => {
                log::event(
                    "slow_client",
                    json!({"transport": transport, "detail": "frame not received within the request deadline"}),
                );
                return;
            }
        };
        let reply =
            match tokio::time::timeout_at(deadline, answer(&shared, transport, &frame)).await {
                Ok(r) => r,
                Err(_) => {
                    if frame.first() == Some(&0) {
                        shared.metrics.deadline(transport);
                    }
                    error_reply("slashguard: request deadline exceeded")
                }
            };
        let Some(out) = codec::frame(&reply) else {
            // Only a key list of thousands of keys could get here.
            return;
        };
        match tokio::time::timeout_at(
            deadline + shared.limits.request_timeout,
            stream.write_all(&out),
        )
        .await
        {
            Ok(Ok(())) => slot.idle(),
            _ => return,
        }
    }
}
