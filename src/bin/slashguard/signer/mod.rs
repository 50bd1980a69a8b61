//! `slashguard signer`: the octez remote signer (feature `signer`).

mod accept;
mod config;
mod devices;
mod http;
mod log;
mod metrics;
mod ownership;
mod slots;
mod socket;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use slashguard::file::FileWatermarks;
use slashguard::remote_signer::{Role, SignerService};
use slashguard::watermark::SignerGuard;
use tokio::sync::watch;

use crate::args::{SignerArgs, SignerCommand};
use crate::exit::{Code, Failure};
use crate::output::Report;
use crate::settings::Settings;

pub use config::EXAMPLE;

/// What every listener shares.
pub struct Shared {
    /// On the watermark file, or on etcd in terms of the baker's ownership.
    service: SignerService<dyn SignerGuard>,
    limits: config::Limits,
    stop: watch::Sender<bool>,
    metrics: Arc<metrics::SignerMetrics>,
}

pub async fn run(cmd: SignerCommand, settings: &Settings) -> Result<Report, Failure> {
    match cmd {
        SignerCommand::CheckConfig { overrides } => check_config(settings, &overrides).await,
        SignerCommand::Serve { create, overrides } => serve(settings, &overrides, create).await,
    }
}

fn describe(
    cfg: &config::SignerConfig,
    reports: &[devices::DeviceReport],
) -> (String, serde_json::Value) {
    let mut human = String::new();
    let mut keys = Vec::new();
    for k in &cfg.keys {
        let (pkh, public, device) = match &k.source {
            config::KeySource::Software(key) => (
                Some(key.public_key().hash().to_string()),
                Some(key.public_key().to_string()),
                None,
            ),
            config::KeySource::Device(_) => {
                let report = reports.iter().find(|r| r.label == k.alias);
                (
                    report.and_then(|r| r.pkh).map(|p| p.to_string()),
                    None,
                    report,
                )
            }
        };
        let kinds: Vec<String> = k.policy.kinds.iter().map(|k| k.to_string()).collect();
        let chains: Option<Vec<String>> = k
            .policy
            .chains
            .as_ref()
            .map(|c| c.iter().map(|c| c.to_string()).collect());
        let role = match k.policy.role {
            Role::Consensus => "consensus",
            Role::Companion => "companion",
        };
        human.push_str(&format!(
            "key {} = {} ({}): {} on {}\n",
            k.alias,
            pkh.as_deref().unwrap_or("(device not reachable)"),
            role,
            kinds.join(", "),
            chains
                .as_ref()
                .map_or("any chain".to_string(), |c| c.join(", "))
        ));
        let operations: Vec<&str> = k.policy.operations.iter().map(|o| o.as_str()).collect();
        if !operations.is_empty() {
            human.push_str(&format!(
                "key {}: generic operations {}\n",
                k.alias,
                operations.join(", ")
            ));
        }
        if let Some(r) = device {
            human.push_str(&r.human());
        }
        keys.push(json!({
            "generic_operations": operations,
            "alias": k.alias,
            "pkh": pkh,
            "public_key": public,
            "role": role,
            "kinds": kinds,
            "chains": chains,
            "device": device.map(|r| r.json()),
        }));
    }
    let magic: Vec<String> = cfg
        .options
        .magic_bytes
        .bytes()
        .map(|b| format!("{b:#04x}"))
        .collect();
    let store = match &cfg.store {
        config::Store::File(f) => format!("file {}", f.display()),
        config::Store::Etcd(e) => format!(
            "etcd, shared by the signers of the baker {:?} (lease {} s)",
            e.name,
            e.lease_ttl.as_secs()
        ),
    };
    human.push_str(&format!(
        "watermarks: {store}\nmagic bytes: {}\nauthentication: {}\nlisten: http {:?}, https {:?}, tcp {:?}, unix {:?}, metrics {:?}\n",
        magic.join(", "),
        match &cfg.options.authorized_keys {
            None => "not required".to_string(),
            Some(k) => format!("required ({} authorized keys)", k.len()),
        },
        cfg.listen.http,
        cfg.listen.https,
        cfg.listen.tcp,
        cfg.listen.unix,
        cfg.listen.metrics,
    ));
    let (store, file) = match &cfg.store {
        config::Store::File(f) => ("file", Some(f)),
        config::Store::Etcd(_) => ("etcd", None),
    };
    let json = json!({
        "keys": keys,
        "store": store,
        "watermarks_file": file,
        "magic_bytes": magic,
        "require_authentication": cfg.options.authorized_keys.is_some(),
        "listen": {"http": cfg.listen.http, "https": cfg.listen.https, "tcp": cfg.listen.tcp, "unix": cfg.listen.unix, "metrics": cfg.listen.metrics},
        "limits": {
            "max_connections": cfg.limits.max_connections,
            "max_body_bytes": cfg.limits.max_body_bytes,
            "first_request_timeout_ms": cfg.limits.first_request_timeout.as_millis() as u64,
            "request_timeout_ms": cfg.limits.request_timeout.as_millis() as u64,
            "idle_timeout_ms": cfg.limits.idle_timeout.as_millis() as u64,
        },
    });
    (human, json)
}

async fn check_config(settings: &Settings, overrides: &SignerArgs) -> Result<Report, Failure> {
    let cfg = config::load(overrides.apply(settings.signer.as_ref()).as_ref())?;
    if let Some(files) = &cfg.tls {
        tls::acceptor(&files.certificate, &files.key)?;
    }
    // Each device key: opened, its key read and checked, as `serve` does.
    let reports = devices::probe(&cfg.keys, &cfg.limits).await;
    if reports.iter().any(|r| !r.reachable()) {
        let lines: String = reports.iter().map(|r| r.human()).collect();
        return Err(Failure::new(
            Code::Unavailable,
            format!("not every device key is usable:\n{lines}"),
        )
        .hint("`signer serve` refuses to start until each device answers with its key: plug it in, unlock it, open the Tezos Baking app (Ledger), then run check-config again"));
    }
    let file = match &cfg.store {
        config::Store::File(f) => f.clone(),
        config::Store::Etcd(e) => {
            let (mut human, mut json) = describe(&cfg, &reports);
            let (h, j) = ownership::check(e, settings).await?;
            human.push_str(&h);
            human.push_str("configuration ok\n");
            json["etcd"] = j;
            return Ok(Report::new(human, json));
        }
    };
    // Read, not open: a running signer holds the file's lock.
    let exists = file.exists();
    if !exists && store_was_opened(&file) {
        // A store existed and its data file is gone: `--create` would forget
        // every signature, so the only advice is the recovery.
        let err = FileWatermarks::read_unlocked(&file)
            .err()
            .map(Failure::from)
            .unwrap_or_else(|| {
                Failure::bad_input(format!("watermark file {} is missing", file.display()))
            });
        return Err(err.hint(lost_store_recovery(&file)));
    }
    let marks = if exists {
        FileWatermarks::read_unlocked(&file)?.len()
    } else {
        0
    };
    let (mut human, mut json) = describe(&cfg, &reports);
    if exists {
        human.push_str(&format!("watermark file intact ({marks} marks)\n"));
    } else {
        human.push_str("watermark file absent: start with `signer serve --create` once (or import octez-signer's marks with `watermark import --from-octez DIR --file PATH --create`)\n");
    }
    human.push_str("configuration ok\n");
    json["watermarks"] = marks.into();
    json["watermarks_file_exists"] = exists.into();
    Ok(Report::new(human, json))
}

/// Whether the lock file beside `data` shows that a store was opened there
/// (a generation above 0): then a missing data file was lost, not never made.
fn store_was_opened(data: &Path) -> bool {
    std::fs::read(FileWatermarks::lock_path(data))
        .ok()
        .and_then(|b| {
            b.get(..8)
                .map(|g| u64::from_le_bytes(g.try_into().unwrap_or([0; 8])))
        })
        .is_some_and(|g| g > 0)
}

/// What recovers a signer whose watermark file was lost.
fn lost_store_recovery(file: &Path) -> String {
    let file = file.display();
    format!(
        "the watermark file was lost (its lock file shows a store was opened there): restore {file} from a backup, or import an export (`slashguard watermark import --file {file} --create ...`); only if neither exists, re-create it and, BEFORE serving, raise every key to the chain's current level + 10: `slashguard watermark set-level --file {file} --create --chain CHAIN --level LEVEL --key KEY ...` (one --key per configured key); never just `signer serve --create`"
    )
}

async fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, Failure> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Failure::bad_input(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        // A socket file left by a process that died: remove it only if
        // nobody answers on it.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(Failure::refused(format!(
                "{} is served by another process",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Failure::bad_input(format!("cannot listen on {}: {e}", path.display())))?;
    // Whoever can connect can ask for signatures: owner only, whatever the
    // umask (a group or world that needs access can be given it by a
    // directory the operator controls).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Failure::bad_input(format!(
            "cannot restrict {} to its owner: {e}",
            path.display()
        ))
    })?;
    Ok(listener)
}

async fn serve(
    settings: &Settings,
    overrides: &SignerArgs,
    create: bool,
) -> Result<Report, Failure> {
    let cfg = config::load(overrides.apply(settings.signer.as_ref()).as_ref())?;
    // Devices first: a device that does not answer with its configured key
    // stops the start before the store is opened.
    let (keys, reports) = devices::open(cfg.keys, &cfg.limits).await?;
    for r in &reports {
        log::event("device", r.json());
    }
    let metrics = metrics::SignerMetrics::install();
    // With etcd: connected, standing by until the supervisor (started once
    // the listeners are up) takes the baker.
    let (service, etcd) = match &cfg.store {
        config::Store::File(file) => {
            let store = if create {
                FileWatermarks::create(file)?
            } else {
                FileWatermarks::open(file).map_err(|e| {
                    let missing = matches!(e, slashguard::Error::StoreMissing { .. });
                    Failure::from(e).hint_if_missing(missing)
                })?
            };
            match SignerGuard::watermarks(&store).await {
                Ok(marks) => metrics.seed_watermarks(&marks),
                // Not fatal here: the first sign request meets the same
                // store and refuses with the same error.
                Err(e) => log::event("metrics_seed_failed", json!({"error": e.to_string()})),
            }
            let store: Arc<dyn SignerGuard> = Arc::new(store);
            (SignerService::new(store, keys, cfg.options), None)
        }
        config::Store::Etcd(e) => {
            if create {
                return Err(Failure::bad_input(
                    "--create makes a watermark file; with store = \"etcd\" there is none to make",
                )
                .hint("start without --create (carry earlier marks over first with `slashguard watermark import --etcd ...`)"));
            }
            let pending = ownership::connect(e, settings).await?;
            let reason = format!(
                "starting: not yet the owner of the baker {:?}",
                pending.name()
            );
            (
                SignerService::standby(keys, cfg.options, reason),
                Some(pending),
            )
        }
    };
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        service,
        limits: cfg.limits,
        stop,
        metrics,
    });
    // Install the signal handlers before announcing readiness.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(Code::Other, format!("cannot handle SIGTERM: {e}")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Failure::new(Code::Other, format!("cannot handle SIGINT: {e}")))?;

    let mut listeners = Vec::new();
    // Each listener has its own slots: idle clients of one cannot lock
    // the baker out of another.
    let mut all_slots = Vec::new();
    let new_slots = |all: &mut Vec<Arc<slots::Slots>>| {
        let s = slots::Slots::new(cfg.limits.max_connections);
        all.push(s.clone());
        s
    };
    let mut unix_paths: Vec<PathBuf> = Vec::new();
    for addr in &cfg.listen.http {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| Failure::bad_input(format!("cannot listen on http {addr}: {e}")))?;
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        log::event("listening", json!({"transport": "http", "address": local}));
        let sh = shared.clone();
        listeners.push(tokio::spawn(accept::run(
            l,
            new_slots(&mut all_slots),
            shared.clone(),
            "http",
            move |s, slot| http::connection(s, slot, sh.clone(), false),
        )));
    }
    if let Some(files) = &cfg.tls {
        // Loaded once: a certificate renewal takes a restart.
        let acceptor = tls::acceptor(&files.certificate, &files.key)?;
        for addr in &cfg.listen.https {
            let l = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| Failure::bad_input(format!("cannot listen on https {addr}: {e}")))?;
            let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            log::event("listening", json!({"transport": "https", "address": local}));
            let sh = shared.clone();
            let acceptor = acceptor.clone();
            listeners.push(tokio::spawn(accept::run(
                l,
                new_slots(&mut all_slots),
                shared.clone(),
                "https",
                move |s, slot| http::tls_connection(s, slot, sh.clone(), acceptor.clone()),
            )));
        }
    }
    for addr in &cfg.listen.metrics {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| Failure::bad_input(format!("cannot listen on metrics {addr}: {e}")))?;
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        log::event(
            "listening",
            json!({"transport": "metrics", "address": local}),
        );
        let sh = shared.clone();
        listeners.push(tokio::spawn(accept::run(
            l,
            new_slots(&mut all_slots),
            shared.clone(),
            "metrics",
            move |s, slot| http::connection(s, slot, sh.clone(), true),
        )));
    }
    for addr in &cfg.listen.tcp {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| Failure::bad_input(format!("cannot listen on tcp {addr}: {e}")))?;
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        log::event("listening", json!({"transport": "tcp", "address": local}));
        let sh = shared.clone();
        listeners.push(tokio::spawn(accept::run(
            l,
            new_slots(&mut all_slots),
            shared.clone(),
            "tcp",
            move |s, slot| socket::connection(s, slot, sh.clone(), "tcp"),
        )));
    }
    for path in &cfg.listen.unix {
        let l = bind_unix(path).await?;
        unix_paths.push(path.clone());
        log::event("listening", json!({"transport": "unix", "address": path}));
        let sh = shared.clone();
        listeners.push(tokio::spawn(accept::run(
            l,
            new_slots(&mut all_slots),
            shared.clone(),
            "unix",
            move |s, slot| socket::connection(s, slot, sh.clone(), "unix"),
        )));
    }
    log::event(
        "ready",
        json!({"keys": shared.service.key_hashes().iter().map(|k| k.to_string()).collect::<Vec<_>>()}),
    );
    // Serving from here: a standby answers "standby" until it owns the baker.
    let supervisor = etcd.map(|p| p.spawn(shared.clone()));

    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::event("shutting_down", json!({"signal": signal}));
    shared.metrics.set_active(false);
    // From here on nothing new is signed: close waits for the signatures
    // in flight, and every later request is refused.
    shared.service.close().await;
    // Only then is the baker given up, so that the backup takes it at once
    // and this process signs nothing after.
    if let Some(s) = supervisor {
        s.release(RELEASE_BOUND).await;
    }
    let _ = shared.stop.send(true);
    for l in listeners {
        let _ = l.await;
    }
    // Let connections answer what they hold (refusals now), within a bound.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        for s in &all_slots {
            s.drained().await;
        }
    })
    .await
    .is_ok();
    for p in &unix_paths {
        let _ = std::fs::remove_file(p);
    }
    log::event("stopped", json!({"connections_drained": drained}));
    Ok(Report::new(
        "signer stopped",
        json!({"stopped": true, "signal": signal}),
    ))
}

/// How long shutdown waits for the baker's release in etcd (beyond it the
/// lease expires by itself).
const RELEASE_BOUND: Duration = Duration::from_secs(5);

/// Resolves once shutdown has begun (the watch's borrow is not held
/// across the caller's awaits).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
