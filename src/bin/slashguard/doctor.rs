//! `slashguard doctor`: check a configuration end to end, one line per
//! check, before a failover needs it.

use serde_json::{json, Value};

use crate::args::{DoctorArgs, NodeArgs};
use crate::exit::{Code, Failure};
use crate::output::{when, Report};
use crate::settings::Settings;

/// The outcome of one check.
struct Check {
    name: &'static str,
    /// `None`: passed; `Some(code)`: failed with that exit code.
    failed: Option<Code>,
    detail: String,
}

/// The checks run so far; each is printed as it completes (text mode).
struct Checks {
    json: bool,
    done: Vec<Check>,
}

impl Checks {
    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(Check {
            name,
            failed: None,
            detail: detail.into(),
        });
    }

    fn fail(&mut self, name: &'static str, f: &Failure) {
        self.add(Check {
            name,
            failed: Some(f.code),
            detail: format!("{} (next: {})", f.message, f.next_step()),
        });
    }

    fn add(&mut self, c: Check) {
        if !self.json {
            println!(
                "{:<4} {:<18} {}",
                if c.failed.is_some() { "FAIL" } else { "ok" },
                c.name,
                c.detail
            );
        }
        self.done.push(c);
    }
}

pub async fn run(args: DoctorArgs, settings: &Settings, json: bool) -> Result<Report, Failure> {
    let mut checks = Checks {
        json,
        done: Vec::new(),
    };
    let node = if args.node.is_some() || args.keypair.is_some() {
        match crate::node::node_id(&NodeArgs {
            node: args.node.clone(),
            keypair: args.keypair.clone(),
            baker: None,
        }) {
            Ok(n) => {
                checks.pass("node", n.to_string());
                Some(n)
            }
            Err(f) => {
                checks.fail("node", &f);
                None
            }
        }
    } else {
        None
    };
    etcd_checks(&args, node, settings, &mut checks).await;
    file_checks(&args, node, &mut checks);
    device_checks(&args, &mut checks).await;
    if checks.done.is_empty() {
        return Err(Failure::bad_input("nothing to check").hint(
            "give the etcd settings (flags, SLASHGUARD_* or --config), --node, --tower-dir, --watermark-file or --devices",
        ));
    }
    let failed: Vec<&Check> = checks.done.iter().filter(|c| c.failed.is_some()).collect();
    let rows: Vec<Value> = checks
        .done
        .iter()
        .map(|c| json!({"check": c.name, "ok": c.failed.is_none(), "detail": c.detail}))
        .collect();
    if failed.is_empty() {
        return Ok(Report::new(
            format!("all {} checks passed", checks.done.len()),
            json!({"checks": rows}),
        ));
    }
    // The exit code of the first failure: usually the root cause (a bad
    // certificate before an unreachable etcd).
    let code = failed[0].failed.unwrap_or(Code::Other);
    Err(Failure::new(
        code,
        format!(
            "{} of {} checks failed: {}{}",
            failed.len(),
            checks.done.len(),
            failed.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
            if json {
                format!("; {}", Value::Array(rows))
            } else {
                String::new()
            }
        ),
    )
    .hint("fix the first failed check above, then run `slashguard doctor` again"))
}

#[cfg(feature = "etcd")]
async fn etcd_checks(
    args: &DoctorArgs,
    node: Option<slashguard::NodeId>,
    settings: &Settings,
    checks: &mut Checks,
) {
    let e = &settings.etcd;
    if e.endpoints.is_empty() && !args.etcd_stores {
        return;
    }
    let tls = e.cacert_file.is_some() || e.cert_file.is_some();
    // Reading and cross-checking the certificates is part of building the
    // configuration (CA parses, client certificate valid and signed by the
    // CA, key belongs to the certificate).
    match e.config(None, None, None) {
        Ok(_) if tls => checks.pass(
            "certificates",
            format!(
                "readable and consistent: CA {}{}",
                e.cacert_file
                    .as_deref()
                    .map_or("-".into(), |p| p.display().to_string()),
                match (&e.cert_file, &e.key_file) {
                    (Some(c), Some(k)) =>
                        format!(", client {} with its key {}", c.display(), k.display()),
                    _ => ", no client certificate".into(),
                }
            ),
        ),
        Ok(_) => checks.pass("certificates", "none configured: plain connection to etcd"),
        Err(err) => {
            checks.fail("certificates", &Failure::from(err));
            return;
        }
    }
    let client = match crate::etcd_conn::connect(settings).await {
        Ok(c) => {
            checks.pass(
                "etcd",
                format!(
                    "reachable at {} ({}), keys under {}",
                    c.config().endpoints().join(", "),
                    if c.config().uses_tls() {
                        "TLS"
                    } else {
                        "plain"
                    },
                    c.config().key_prefix()
                ),
            );
            c
        }
        Err(f) => {
            checks.fail("etcd", &f);
            return;
        }
    };
    if let Some(node) = node {
        match crate::etcd_conn::identity(client.clone(), node, settings) {
            Ok(id) => match id.status().await {
                Ok(None) => checks.pass("identity", format!("{node} is free: nobody owns it")),
                Ok(Some(o)) => checks.pass(
                    "identity",
                    format!(
                        "{node} owned by {} since {}, fence {}, {}",
                        o.instance,
                        when(o.since_ms),
                        o.fence,
                        match o.ttl_left {
                            Some(t) => format!("lease {}s left unless renewed", t.as_secs()),
                            None => "lease expired (the claim is about to vanish)".into(),
                        }
                    ),
                ),
                Err(err) => checks.fail("identity", &Failure::from(err)),
            },
            Err(f) => checks.fail("identity", &f),
        }
    }
    if args.etcd_stores {
        if let Some(node) = node {
            match slashguard::etcd::EtcdTowerStorage::read_unfenced(&client, node).await {
                Ok(r) => checks.pass("tower (etcd)", tower_text(r.as_ref())),
                Err(err) => checks.fail("tower (etcd)", &Failure::from(err)),
            }
        }
        let store = slashguard::etcd::EtcdWatermarks::new(client);
        match slashguard::watermark::SignerGuard::watermarks(&store).await {
            Ok(marks) => checks.pass("watermarks (etcd)", marks_text(&marks)),
            Err(err) => checks.fail("watermarks (etcd)", &Failure::from(err)),
        }
    }
}

#[cfg(not(feature = "etcd"))]
async fn etcd_checks(
    args: &DoctorArgs,
    _node: Option<slashguard::NodeId>,
    settings: &Settings,
    checks: &mut Checks,
) {
    if !settings.etcd.endpoints.is_empty() || args.etcd_stores {
        if let Err(f) = crate::exit::needs_etcd() {
            checks.fail("etcd", &f);
        }
    }
}

fn file_checks(args: &DoctorArgs, node: Option<slashguard::NodeId>, checks: &mut Checks) {
    if let Some(dir) = &args.tower_dir {
        match node {
            None => checks.fail(
                "tower (file)",
                &Failure::bad_input("--tower-dir needs the node (--node or --keypair)"),
            ),
            Some(_) if !dir.is_dir() => checks.fail(
                "tower (file)",
                &Failure::bad_input(format!("{} is not a directory", dir.display())),
            ),
            Some(node) => match slashguard::file::FileTowerStorage::read_unlocked(dir, node) {
                Ok(r) => checks.pass("tower (file)", tower_text(r.as_ref())),
                Err(e) => checks.fail("tower (file)", &Failure::from(e)),
            },
        }
    }
    if let Some(path) = &args.watermark_file {
        if !path.is_file() {
            checks.fail(
                "watermarks (file)",
                &Failure::bad_input(format!("no watermark store at {}", path.display())),
            );
        } else {
            match slashguard::file::FileWatermarks::read_unlocked(path) {
                Ok(table) => {
                    let marks: Vec<_> = table.iter().map(|(k, w)| (*k, *w)).collect();
                    checks.pass("watermarks (file)", marks_text(&marks));
                }
                Err(e) => checks.fail("watermarks (file)", &Failure::from(e)),
            }
        }
    }
}

async fn device_checks(args: &DoctorArgs, checks: &mut Checks) {
    let Some(expected) = args.devices else {
        return;
    };
    match crate::device::run(crate::args::DeviceCommand::List).await {
        Err(f) => checks.fail("devices", &f),
        Ok(report) => {
            let found = report.json["devices"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let unreadable = found.iter().filter(|d| d["details"].is_null()).count();
            let f = if found.len() < expected {
                Some(Failure::new(
                    Code::Unavailable,
                    format!("{} USB signer(s) found, {expected} expected", found.len()),
                ).hint("plug the signer in, unlock it and open the baking app; see `slashguard device list`"))
            } else if unreadable > 0 {
                Some(Failure::new(
                    Code::Unavailable,
                    format!("{unreadable} of {} USB signer(s) present but not readable (locked, app closed, or udev rules missing)", found.len()),
                ).hint("unlock the signer and open the baking app; see `slashguard device list`"))
            } else {
                None
            };
            match f {
                Some(f) => checks.fail("devices", &f),
                None => checks.pass(
                    "devices",
                    format!("{} USB signer(s) present and readable", found.len()),
                ),
            }
            // Each readable signer in the state a baker needs: a Ledger in
            // the Tezos Baking app (the Wallet app cannot bake).
            for d in found.iter().filter(|d| !d["details"].is_null()) {
                let what = format!(
                    "{} serial {}",
                    d["model"].as_str().unwrap_or("device"),
                    d["serial"].as_str().unwrap_or("unreadable")
                );
                let details = &d["details"];
                match details["app"].as_str() {
                    Some("tezsign") => checks.pass(
                        "device",
                        format!(
                            "{what}: TezSign, {} key(s) unlocked",
                            details["keys"].as_array().map_or(0, Vec::len)
                        ),
                    ),
                    Some("Tezos Baking") => checks.pass(
                        "device",
                        format!(
                            "{what}: Tezos Baking {}, key {}, HWM level {} on {}",
                            details["version"].as_str().unwrap_or("?"),
                            details["key"].as_str().unwrap_or("?"),
                            details["main"]["level"],
                            details["main_chain"].as_str().unwrap_or("?")
                        ),
                    ),
                    other => checks.fail(
                        "device",
                        &Failure::new(
                            Code::Unavailable,
                            format!(
                                "{what}: runs the {} app, not Tezos Baking",
                                other.unwrap_or("unknown")
                            ),
                        )
                        .hint("open the Tezos Baking app on the Ledger"),
                    ),
                }
            }
        }
    }
}

fn tower_text(r: Option<&slashguard::tower::TowerRecord>) -> String {
    match r {
        None => "healthy, no tower stored yet".into(),
        Some(r) => format!(
            "healthy, last vote {}, signed {}, signature {}",
            r.last_vote()
                .map_or("none".into(), |v| format!("slot {}", v.slot)),
            when(r.signed_at_ms()),
            if r.verify() { "valid" } else { "INVALID" }
        ),
    }
}

fn marks_text(
    marks: &[(
        slashguard::watermark::WatermarkKey,
        slashguard::watermark::Watermark,
    )],
) -> String {
    match marks.iter().max_by_key(|(_, w)| w.mark) {
        None => "healthy, no marks stored yet".into(),
        Some((k, w)) => format!(
            "healthy, {} marks; highest {}/{} ({k})",
            marks.len(),
            w.mark.level,
            w.mark.round
        ),
    }
}
