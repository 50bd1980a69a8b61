//! The HTTP listener: hyper 1 on a TCP socket, one task per connection,
//! bounded by the listener's connection slots, the first-request, header
//! and body deadlines, the body size limit and the per-request deadline.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use slashguard::keys::signature_to_b58;
use slashguard::remote_signer::http::{self as codec, HttpError, Route};
use slashguard::remote_signer::trace::{to_json, TraceError};
use slashguard::remote_signer::{ServiceError, SignCall};
use tokio::net::TcpStream;

use super::slots::Slot;
use super::{log, Shared};

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, msg: impl Into<String>) -> Reply {
    reply(status, to_json(&[TraceError::failure(msg)]))
}

fn service_error(e: &ServiceError) -> Reply {
    reply(e.status(), to_json(&e.trace()))
}

fn http_error(e: &HttpError) -> Reply {
    let status = match e {
        HttpError::NotFound(_) => 404,
        HttpError::MethodNotAllowed { .. } => 405,
        HttpError::BadRequest(_) => 400,
    };
    error(status, format!("slashguard: {e}"))
}

async fn metrics_reply(shared: &Shared) -> Reply {
    // The active gauge is read at scrape time from the service's state,
    // which the ownership supervisor changes.
    shared.metrics.set_active(shared.service.is_active().await);
    let mut r = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(super::metrics::CONTENT_TYPE),
    );
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    slot: &Slot,
    metrics_only: bool,
    transport: &'static str,
) -> Reply {
    // Prometheus scrapes: on every HTTP listener, and the only route of a
    // metrics listener.
    if req.uri().path() == "/metrics" {
        slot.busy();
        return match req.method().as_str() {
            "GET" => metrics_reply(&shared).await,
            m => error(
                405,
                format!("slashguard: method {m} not allowed on /metrics"),
            ),
        };
    }
    if metrics_only {
        return error(404, "slashguard: this listener serves /metrics only");
    }
    let deadline = shared.limits.request_timeout;
    let sign = req.method() == hyper::Method::POST;
    match tokio::time::timeout(deadline, route(&shared, req, slot, transport)).await {
        Ok(r) => r,
        Err(_) => {
            // Dropping the request here is safe: a watermark that advanced
            // without a released signature only makes a later repeat of the
            // same bytes a repeat.
            log::event(
                "timeout",
                json!({"transport": transport, "after_ms": deadline.as_millis() as u64}),
            );
            if sign {
                shared.metrics.deadline(transport);
            }
            error(503, "slashguard: request deadline exceeded")
        }
    }
}

/// The reply to a request whose connection the listener reclaimed before
/// the request was received whole (its sender stalled inside it while
/// every slot was taken): nothing was signed.
fn reclaimed_reply() -> Reply {
    let mut r = error(
        503,
        "slashguard: request not received in time while the signer is busy; nothing was signed",
    );
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

async fn route(
    shared: &Shared,
    req: Request<Incoming>,
    slot: &Slot,
    transport: &'static str,
) -> Reply {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let route = match codec::route(&method, &path) {
        Ok(r) => r,
        Err(e) => return http_error(&e),
    };
    // Only a sign request has a body to wait for; every other request is
    // whole once its head is.
    if !matches!(route, Route::Sign(_)) {
        slot.busy();
    }
    let service = &shared.service;
    match route {
        Route::Sign(pkh) => {
            let query = match codec::parse_sign_query(req.uri().query()) {
                Ok(q) => q,
                Err(e) => return http_error(&e),
            };
            let too_big = req
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > shared.limits.max_body_bytes as u64);
            if too_big {
                return error(
                    413,
                    format!(
                        "slashguard: body larger than {} bytes",
                        shared.limits.max_body_bytes
                    ),
                );
            }
            // The body is waited for as the head was: a client that stalls
            // inside it is reclaimed under pressure (the bytes already here
            // are taken first).
            let collected = tokio::select! {
                biased;
                b = Limited::new(req.into_body(), shared.limits.max_body_bytes).collect() => b,
                _ = slot.reclaimed() => return reclaimed_reply(),
            };
            slot.busy();
            let body = match collected {
                Ok(b) => b.to_bytes(),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return error(
                        413,
                        format!(
                            "slashguard: body larger than {} bytes",
                            shared.limits.max_body_bytes
                        ),
                    )
                }
                Err(e) => return error(400, format!("slashguard: cannot read the body: {e}")),
            };
            let data = match codec::parse_sign_body(&body) {
                Ok(d) => d,
                Err(e) => return http_error(&e),
            };
            let call = SignCall {
                pkh,
                data: &data,
                authentication: query.authentication.as_deref(),
                version: query.version,
            };
            let started = std::time::Instant::now();
            let result = service.handle_sign(call).await;
            let logged = log::decision(transport, &pkh, &result);
            shared.metrics.sign(transport, &result, started.elapsed());
            if logged.is_err() {
                return error(500, log::UNLOGGED);
            }
            match result {
                Ok(s) => match signature_to_b58(pkh.curve, s.signature()) {
                    Ok(b58) => reply(200, codec::signature_reply(&b58)),
                    Err(e) => {
                        // Details for the log; the client gets generic words.
                        log::event(
                            "internal_error",
                            json!({"transport": transport, "key": pkh.to_string(), "error": e.to_string()}),
                        );
                        error(500, "slashguard: signer error: no signature was released (the signer's log has the details)")
                    }
                },
                Err(w) => service_error(&w.error),
            }
        }
        Route::PublicKey(pkh) => match service.public_key(&pkh) {
            Ok(pk) => reply(200, codec::public_key_reply(&pk)),
            Err(e) => service_error(&e),
        },
        Route::AuthorizedKeys => reply(
            200,
            codec::authorized_keys_reply(service.authorized_keys().as_deref()),
        ),
        Route::KnownKeys => match service.known_keys() {
            Ok(k) => reply(200, codec::known_keys_reply(&k)),
            Err(e) => service_error(&e),
        },
        Route::ProvePossession(pkh) => {
            let pk = match codec::parse_pop_query(req.uri().query()) {
                Ok(pk) => pk,
                Err(e) => return http_error(&e),
            };
            match service.prove_possession(&pkh, pk.as_deref()).and_then(|p| {
                signature_to_b58(pkh.curve, &p).map_err(|e| ServiceError::BadRequest(e.to_string()))
            }) {
                Ok(b58) => reply(200, codec::proof_of_possession_reply(&b58)),
                Err(e) => service_error(&e),
            }
        }
        Route::Healthz => match service.health().await {
            Ok(()) => reply(200, codec::health_reply(true, "ready")),
            Err(why) => reply(503, codec::health_reply(false, &why)),
        },
    }
}

/// Marks the connection as inside a request while a handler runs
/// (receiving until the request is whole, then busy: see `route`), idle
/// again when the handler ends or is dropped.
struct InRequest<'a> {
    slot: &'a Slot,
    handling: &'a AtomicBool,
}

impl<'a> InRequest<'a> {
    fn new(slot: &'a Slot, handling: &'a AtomicBool) -> Self {
        handling.store(true, Ordering::SeqCst);
        slot.receiving();
        InRequest { slot, handling }
    }
}

impl Drop for InRequest<'_> {
    fn drop(&mut self) {
        self.handling.store(false, Ordering::SeqCst);
        self.slot.idle();
    }
}

/// Wait (bounded by the first-request deadline) for the client's first
/// byte; `false` when the connection is to be dropped.
async fn first_byte(stream: &TcpStream, slot: &Slot, shared: &Shared, transport: &str) -> bool {
    let mut stop = shared.stop.subscribe();
    let mut probe = [0u8; 1];
    let first = tokio::select! {
        r = tokio::time::timeout(shared.limits.first_request_timeout, stream.peek(&mut probe)) => r,
        _ = slot.reclaimed() => return false,
        _ = super::stopped(&mut stop) => return false,
    };
    match first {
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
        Err(_) => {
            log::event(
                "first_request_timeout",
                json!({"transport": transport, "peer": peer(stream)}),
            );
            false
        }
    }
}

fn peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Serve one plain HTTP connection until it closes, times out, its slot is
/// reclaimed or the signer shuts down.
pub async fn connection(stream: TcpStream, slot: Slot, shared: Arc<Shared>, metrics_only: bool) {
    // The first byte within the first-request deadline, before hyper
    // (whose header timeout is the longer idle timeout) gets the stream.
    let transport = if metrics_only { "metrics" } else { "http" };
    if !first_byte(&stream, &slot, &shared, transport).await {
        return;
    }
    let peer = peer(&stream);
    serve_http(stream, peer, slot, shared, metrics_only, transport).await
}

/// Serve one HTTPS connection: the TLS handshake within the request
/// deadline after the first byte, then HTTP as [`connection`].
pub async fn tls_connection(
    stream: TcpStream,
    slot: Slot,
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    if !first_byte(&stream, &slot, &shared, "https").await {
        return;
    }
    let peer = peer(&stream);
    let mut stop = shared.stop.subscribe();
    // The handshake waits for the client: reclaimable after the grace.
    slot.receiving();
    let handshake = tokio::select! {
        r = tokio::time::timeout(shared.limits.request_timeout, acceptor.accept(stream)) => r,
        _ = slot.reclaimed() => return,
        _ = super::stopped(&mut stop) => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log::event(
                "tls_handshake_failed",
                json!({"transport": "https", "peer": peer, "error": e.to_string()}),
            );
            return;
        }
        Err(_) => {
            log::event(
                "slow_client",
                json!({"transport": "https", "peer": peer, "detail": "TLS handshake not done within the request deadline"}),
            );
            return;
        }
    };
    // The request head is next: a new grace for it.
    slot.receiving();
    serve_http(tls, peer, slot, shared, false, "https").await
}

async fn serve_http<S>(
    stream: S,
    peer: String,
    slot: Slot,
    shared: Arc<Shared>,
    metrics_only: bool,
    transport: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.stop.subscribe();
    let slot = Arc::new(slot);
    // Whether a handler runs: a reclaimed connection with none (its client
    // stalls inside a head) is dropped at once, since hyper's graceful
    // shutdown would wait for that head until the header deadline.
    let handling = Arc::new(AtomicBool::new(false));
    let svc = {
        let shared = shared.clone();
        let slot = slot.clone();
        let handling = handling.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let slot = slot.clone();
            let handling = handling.clone();
            async move {
                let _in_request = InRequest::new(&slot, &handling);
                Ok::<_, Infallible>(handle(shared, req, &slot, metrics_only, transport).await)
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = slot.reclaimed() => {
            if !handling.load(Ordering::SeqCst) {
                return;
            }
            // A handler runs: it answers (a request received whole), or
            // gives up on a body that stalls; then the connection closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = super::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log::event(
            "connection_error",
            json!({"transport": transport, "peer": peer, "error": e.to_string()}),
        );
    }
}
