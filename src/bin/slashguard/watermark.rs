//! `slashguard watermark`: show, set-level, export, import.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{json, Value};
use slashguard::file::FileWatermarks;
use slashguard::watermark::interchange::{self, ImportMode, WatermarkFile};
use slashguard::watermark::{
    octez, ChainId, ConsensusKind, KeyHash, Mark, PayloadHash, SetMode, SignerGuard, Watermark,
    WatermarkKey,
};

use crate::args::{WatermarkCommand, WatermarkSource, WatermarkStore};
#[cfg(feature = "usb")]
use crate::device;
use crate::exit::{needs_etcd, needs_usb, Code, Failure};
use crate::output::Report;
use crate::settings::Settings;

/// One watermark as shown: a device may keep one mark for every chain.
struct Row {
    chain: Option<ChainId>,
    key: KeyHash,
    alias: Option<String>,
    kind: ConsensusKind,
    mark: Mark,
    payload_hash: Option<PayloadHash>,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "chain": self.chain.map(|c| c.to_string()),
            "key": self.key.to_string(),
            "alias": self.alias,
            "kind": self.kind.to_string(),
            "level": self.mark.level,
            "round": self.mark.round,
            "payload_hash": self.payload_hash.map(|h| hex(&h.0)),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn run(cmd: WatermarkCommand, settings: &mut Settings) -> Result<Report, Failure> {
    match cmd {
        WatermarkCommand::Show { source, chain } => {
            let chain = settings.chain(&chain)?;
            let (rows, from) = read_rows(&source, chain, settings).await?;
            Ok(show(rows, &from))
        }
        WatermarkCommand::SetLevel {
            source,
            chain,
            level,
            key,
            all,
            keep_higher,
            force,
            yes,
            create,
        } => {
            let chain = settings.require_chain(&chain, "set-level sets the marks of one chain")?;
            let how = if force {
                Lowering::Force { confirmed: yes }
            } else if keep_higher {
                Lowering::KeepHigher
            } else {
                Lowering::Refuse
            };
            set_level(&source, chain, level, &key, all, how, create, settings).await
        }
        WatermarkCommand::Export { source, chain, out } => {
            let chain = settings.chain(&chain)?;
            export(&source, chain, &out, settings).await
        }
        WatermarkCommand::Import {
            input,
            from_octez,
            skip_unknown_keys,
            store,
            keep_higher,
            force,
        } => {
            let mode = if force {
                ImportMode::Force
            } else if keep_higher {
                ImportMode::KeepHigher
            } else {
                ImportMode::RaiseOnly
            };
            let unknown = if skip_unknown_keys {
                octez::UnknownKeys::Skip
            } else {
                octez::UnknownKeys::Refuse
            };
            import(
                input.as_deref(),
                from_octez.as_deref(),
                unknown,
                &store,
                mode,
                settings,
            )
            .await
        }
    }
}

fn count_sources(s: &WatermarkSource) -> usize {
    usize::from(s.file.is_some())
        + usize::from(s.etcd)
        + usize::from(s.ledger.is_some())
        + usize::from(s.ledger_speculos.is_some())
        + usize::from(s.tezsign.is_some())
}

/// Open a store for writing: the file store takes its lock (a running
/// baker holding it is a refusal), etcd needs no lock. A file store is
/// created only when `create` says so.
async fn open_store(
    file: Option<&Path>,
    etcd: bool,
    create: bool,
    settings: &Settings,
) -> Result<Option<(Box<dyn SignerGuard>, String)>, Failure> {
    if let Some(path) = file {
        let opened = if create {
            FileWatermarks::create(path)
        } else {
            FileWatermarks::open(path)
        };
        let store = opened.map_err(|e| {
            Failure::from(e).hint_if(
                Code::Refused,
                "a running signer or baker holds this watermark file: stop it first (reading works while it runs: `watermark show`)",
            )
        })?;
        return Ok(Some((Box::new(store), format!("file:{}", path.display()))));
    }
    if etcd {
        needs_etcd()?;
        #[cfg(feature = "etcd")]
        {
            let client = crate::etcd_conn::connect(settings).await?;
            let from = format!("etcd:{}", client.keys().watermarks());
            return Ok(Some((
                Box::new(slashguard::etcd::EtcdWatermarks::new(client)),
                from,
            )));
        }
    }
    let _ = settings;
    Ok(None)
}

/// Every watermark of the one store or device the source names.
async fn read_rows(
    source: &WatermarkSource,
    chain: Option<ChainId>,
    settings: &mut Settings,
) -> Result<(Vec<Row>, String), Failure> {
    if count_sources(source) != 1 {
        return Err(Failure::bad_input(
            "name exactly one source: --file, --etcd, --ledger, --ledger-speculos or --tezsign",
        ));
    }
    let stored: Option<(Vec<(WatermarkKey, Watermark)>, String)> = if let Some(path) = &source.file
    {
        let table = FileWatermarks::read_unlocked(path)?;
        Some((
            table.iter().map(|(k, w)| (*k, *w)).collect(),
            format!("file:{}", path.display()),
        ))
    } else if source.etcd {
        let (store, from) = open_store(None, true, false, settings)
            .await?
            .expect("etcd asked");
        Some((store.watermarks().await?, from))
    } else {
        None
    };
    if let Some((marks, from)) = stored {
        let rows = marks
            .into_iter()
            .filter(|(k, _)| chain.is_none_or(|c| c == k.chain))
            .map(|(k, w)| Row {
                chain: Some(k.chain),
                key: k.key,
                alias: settings.aliases.name_of(&k.key).map(String::from),
                kind: k.kind,
                mark: w.mark,
                payload_hash: w.payload_hash,
            })
            .collect();
        return Ok((rows, from));
    }
    needs_usb()?;
    #[cfg(feature = "usb")]
    {
        let dev = device::open(source).await?.expect("a device is named");
        let mut rows = Vec::new();
        let marks = dev.marks(chain).await?;
        let device_names: BTreeMap<KeyHash, String> = marks
            .iter()
            .filter_map(|(a, k, _, _)| a.clone().map(|a| (*k, a)))
            .collect();
        settings.aliases.absorb(&device_names);
        for (alias, key, c, three) in marks {
            for (kind, mark) in three {
                rows.push(Row {
                    chain: c,
                    key,
                    alias: alias
                        .clone()
                        .or_else(|| settings.aliases.name_of(&key).map(String::from)),
                    kind,
                    mark,
                    payload_hash: None,
                });
            }
        }
        Ok((rows, dev.describe()))
    }
    #[cfg(not(feature = "usb"))]
    unreachable!("needs_usb refused")
}

fn show(rows: Vec<Row>, from: &str) -> Report {
    let mut human = format!("watermarks of {from}\n");
    if rows.is_empty() {
        human.push_str("(none stored)\n");
    } else {
        human.push_str(&format!(
            "{:<16} {:<37} {:<12} {:<15} {:>10} {:>6}\n",
            "CHAIN", "KEY", "ALIAS", "KIND", "LEVEL", "ROUND"
        ));
        for r in &rows {
            human.push_str(&format!(
                "{:<16} {:<37} {:<12} {:<15} {:>10} {:>6}\n",
                r.chain
                    .map_or("(every chain)".to_string(), |c| c.to_string()),
                r.key.to_string(),
                r.alias.as_deref().unwrap_or("-"),
                r.kind.to_string(),
                r.mark.level,
                r.mark.round
            ));
        }
    }
    let json =
        json!({"source": from, "watermarks": rows.iter().map(Row::json).collect::<Vec<_>>()});
    Report::new(human, json)
}

#[allow(clippy::too_many_arguments)]
async fn set_level(
    source: &WatermarkSource,
    chain: ChainId,
    level: u32,
    keys: &[String],
    all: bool,
    how: Lowering,
    create: bool,
    settings: &Settings,
) -> Result<Report, Failure> {
    if level > i32::MAX as u32 {
        return Err(Failure::bad_input(format!(
            "level {level} is beyond Tezos levels"
        )));
    }
    let stores = usize::from(source.file.is_some()) + usize::from(source.etcd);
    let devices = count_sources(source) - stores;
    if stores > 1 || devices > 1 || stores + devices == 0 {
        return Err(Failure::bad_input(
            "name one store (--file or --etcd), one device (--ledger, --ledger-speculos, --tezsign), or one of each",
        ));
    }
    if devices == 1 {
        if matches!(how, Lowering::Force { .. }) {
            return Err(Failure::bad_input(
                "--force cannot lower a device watermark: slashguard only raises device marks",
            )
            .hint("lower a device mark with the device's own tool, if you must"));
        }
        needs_usb()?;
        #[cfg(feature = "usb")]
        return set_level_with_device(source, chain, level, keys, all, create, settings).await;
    }
    let (store, target) = open_store(source.file.as_deref(), source.etcd, create, settings)
        .await?
        .expect("one store named");
    let before: BTreeMap<WatermarkKey, Watermark> = store.watermarks().await?.into_iter().collect();
    let mut chosen: BTreeSet<KeyHash> = BTreeSet::new();
    for k in keys {
        chosen.insert(settings.aliases.resolve(k)?);
    }
    if all {
        chosen.extend(before.keys().filter(|k| k.chain == chain).map(|k| k.key));
        chosen.extend(settings.aliases.keys());
    }
    if chosen.is_empty() {
        return Err(Failure::bad_input(format!(
            "no key to set: {target} holds none on chain {chain} and no alias is defined"
        ))
        .hint("name keys with --key tz... (or an alias)"));
    }
    let target_mark = Mark::level(level);
    let marks: Vec<(WatermarkKey, Mark)> = chosen
        .iter()
        .flat_map(|key| {
            ConsensusKind::ALL.map(|kind| {
                (
                    WatermarkKey {
                        chain,
                        key: *key,
                        kind,
                    },
                    target_mark,
                )
            })
        })
        .collect();
    // Marks already above the target: refused, kept, or lowered (after
    // confirmation) as the operator chose.
    let higher: Vec<(WatermarkKey, Mark)> = marks
        .iter()
        .filter_map(|(k, m)| before.get(k).filter(|w| w.mark > *m).map(|w| (*k, w.mark)))
        .collect();
    let listed = |v: &[(WatermarkKey, Mark)]| {
        v.iter()
            .map(|(k, m)| format!("{k} at {}/{}", m.level, m.round))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut marks = marks;
    let mut kept = Vec::new();
    let mode = match how {
        Lowering::Refuse if !higher.is_empty() => {
            return Err(Failure::refused(format!(
                "not raised to level {level}: {} mark(s) in {target} are already above it ({}); set-level only raises marks, and nothing was changed",
                higher.len(),
                listed(&higher)
            ))
            .hint(format!("marks above level {level} stay as they are: choose a level above them, or --keep-higher to raise the others and keep these; --force lowers them (operator recovery only)")));
        }
        Lowering::KeepHigher => {
            marks.retain(|(k, _)| !higher.iter().any(|(h, _)| h == k));
            kept = higher.clone();
            SetMode::RaiseOnly
        }
        Lowering::Force { confirmed } if !higher.is_empty() => {
            confirm_lowering(&higher, level, &target, confirmed)?;
            SetMode::Force
        }
        Lowering::Force { .. } => SetMode::Force,
        Lowering::Refuse => SetMode::RaiseOnly,
    };
    let force = matches!(how, Lowering::Force { .. });
    store
        .set_marks(&marks, mode)
        .await
        .map_err(|e| not_set(e, &format!("set level {level} in {target}")))?;
    let mut human = format!("set level {level} (round 0) on chain {chain} in {target}\n");
    let mut rows = Vec::new();
    for (k, m) in &kept {
        human.push_str(&format!(
            "  {} {:<15} {}/{} kept (above level {level})\n",
            k.key,
            k.kind.to_string(),
            m.level,
            m.round
        ));
        rows.push(json!({
            "key": k.key.to_string(), "alias": settings.aliases.name_of(&k.key), "kind": k.kind.to_string(),
            "before": json!({"level": m.level, "round": m.round}), "level": m.level, "changed": false, "kept_higher": true,
        }));
    }
    for (k, m) in &marks {
        let prev = before.get(k).map(|w| w.mark);
        let changed = force || prev.is_none_or(|p| p < *m);
        let lowered = prev.is_some_and(|p| p > *m);
        let name = settings
            .aliases
            .name_of(&k.key)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        human.push_str(&format!(
            "  {}{name} {:<15} {} -> {}\n",
            k.key,
            k.kind.to_string(),
            prev.map_or("none".into(), |p| format!("{}/{}", p.level, p.round)),
            if lowered {
                format!("{}/0  (LOWERED)", m.level)
            } else if changed {
                format!("{}/0", m.level)
            } else {
                "unchanged".into()
            }
        ));
        rows.push(json!({
            "key": k.key.to_string(), "alias": settings.aliases.name_of(&k.key), "kind": k.kind.to_string(),
            "before": prev.map(|p| json!({"level": p.level, "round": p.round})),
            "level": m.level, "changed": changed, "lowered": lowered,
        }));
    }
    Ok(Report::new(
        human,
        json!({"target": target, "chain": chain.to_string(), "level": level, "forced": force, "kept_higher": kept.len(), "marks": rows}),
    ))
}

/// What `set-level` does with marks already above the level.
#[derive(Debug, Clone, Copy)]
enum Lowering {
    /// Refuse the whole step (the default).
    Refuse,
    /// Raise the others, keep those.
    KeepHigher,
    /// Lower them; `confirmed` by --yes, else asked on stdin.
    Force { confirmed: bool },
}

/// Show what --force would lower and ask. No answer (stdin closed or not
/// given) is a refusal: lowering a watermark can allow a double signature.
fn confirm_lowering(
    higher: &[(WatermarkKey, Mark)],
    level: u32,
    target: &str,
    confirmed: bool,
) -> Result<(), Failure> {
    eprintln!("slashguard: --force will LOWER these marks in {target} to level {level}:");
    for (k, m) in higher {
        eprintln!("  {k}: {}/{} -> {level}/0", m.level, m.round);
    }
    if confirmed {
        eprintln!("slashguard: lowering (--yes)");
        return Ok(());
    }
    eprint!("slashguard: a baker signing below its last signature can double-sign; type `yes` to lower: ");
    let mut answer = String::new();
    let read = std::io::stdin().read_line(&mut answer);
    if matches!(read, Ok(n) if n > 0) && answer.trim() == "yes" {
        return Ok(());
    }
    eprintln!();
    Err(Failure::refused(format!(
        "lowering {} mark(s) in {target} was not confirmed; nothing was changed",
        higher.len()
    ))
    .hint("answer `yes` on a terminal, or pass --yes to lower without asking (operator recovery only)"))
}

/// A store refusing to set or import marks: say what was refused and why
/// (nothing was being signed).
fn not_set(e: slashguard::Error, what: &str) -> Failure {
    if let slashguard::Error::Refused(slashguard::Refusal::Watermark(r)) = &e {
        return Failure::refused(format!(
            "{what} refused: {} would go from {}/{} down to {}/{}; marks only rise, and nothing was changed",
            r.key, r.stored.mark.level, r.stored.mark.round, r.requested.level, r.requested.round
        ))
        .hint("choose a higher level, or keep the higher stored marks (--keep-higher); --force lowers them (operator recovery only)");
    }
    Failure::from(e)
}

#[cfg(feature = "usb")]
async fn set_level_with_device(
    source: &WatermarkSource,
    chain: ChainId,
    level: u32,
    keys: &[String],
    all: bool,
    create: bool,
    settings: &Settings,
) -> Result<Report, Failure> {
    use slashguard::usb::{raise_for_failover, WatermarkDevice};

    let dev = device::open(source).await?.expect("a device is named");
    let store = open_store(source.file.as_deref(), source.etcd, create, settings).await?;
    let mut tezsign_keys = Vec::new();
    let device_list: Vec<&dyn WatermarkDevice> = match &dev {
        device::Device::Ledger(l) => {
            for k in keys {
                let key = settings.aliases.resolve(k)?;
                if key != l.key_hash() {
                    return Err(Failure::bad_input(format!(
                        "the Ledger signs with {}, not {key}",
                        l.key_hash()
                    )));
                }
            }
            vec![l as &dyn WatermarkDevice]
        }
        device::Device::TezSign(d) => {
            let status = d.status().await?;
            let wanted: Vec<String> = if all {
                status.iter().map(|s| s.key_id.clone()).collect()
            } else {
                let mut v = Vec::new();
                for k in keys {
                    let alias = status
                        .iter()
                        .find(|s| {
                            s.key_id == *k
                                || s.tz4 == *k
                                || settings
                                    .aliases
                                    .key_of(k)
                                    .is_some_and(|h| h.to_string() == s.tz4)
                        })
                        .map(|s| s.key_id.clone())
                        .ok_or_else(|| {
                            Failure::bad_input(format!(
                                "the TezSign has no key {k:?}; its aliases: {}",
                                status
                                    .iter()
                                    .map(|s| s.key_id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?;
                    v.push(alias);
                }
                v
            };
            for alias in wanted {
                tezsign_keys.push(d.signer(&alias).await?);
            }
            tezsign_keys
                .iter()
                .map(|s| s as &dyn WatermarkDevice)
                .collect()
        }
    };
    if device_list.is_empty() {
        return Err(Failure::bad_input("the device has no key to set"));
    }
    let local = store.as_ref().map(|(s, _)| s.as_ref() as &dyn SignerGuard);
    let report = raise_for_failover(&device_list, local, chain, level, 0).await?;
    let mut human = format!("raised to level {level} (round 0) on chain {chain}");
    if let Some((_, target)) = &store {
        human.push_str(&format!(", {target} first"));
    }
    human.push('\n');
    let mut rows = Vec::new();
    for d in &report.devices {
        human.push_str(&format!(
            "  {}: highest mark before {}/{} -> {}\n",
            d.device,
            d.before.highest().level,
            d.before.highest().round,
            if d.changed {
                format!("{level}/0")
            } else {
                "unchanged".into()
            }
        ));
        rows.push(json!({"device": d.device, "before": {"level": d.before.highest().level, "round": d.before.highest().round}, "changed": d.changed}));
    }
    Ok(Report::new(
        human,
        json!({"chain": chain.to_string(), "level": level, "store": store.as_ref().map(|(_, t)| t.clone()), "devices": rows}),
    ))
}

async fn export(
    source: &WatermarkSource,
    chain: Option<ChainId>,
    out: &Path,
    settings: &mut Settings,
) -> Result<Report, Failure> {
    let (rows, from) = read_rows(source, chain, settings).await?;
    let mut marks = Vec::with_capacity(rows.len());
    for r in rows {
        let chain = r.chain.or(chain).ok_or_else(|| {
            Failure::bad_input(format!(
                "{from} keeps marks for every chain: say which chain they are for"
            ))
            .hint("pass --chain NetXdQprcVkpaWU (or `mainnet`)")
        })?;
        marks.push((
            WatermarkKey {
                chain,
                key: r.key,
                kind: r.kind,
            },
            Watermark {
                mark: r.mark,
                payload_hash: r.payload_hash,
                signature: None,
            },
        ));
    }
    let file = WatermarkFile::new(marks, &settings.aliases.by_key(), Some(from.clone()));
    let text = file.to_json();
    if out == Path::new("-") {
        let value: Value = serde_json::from_str(&text).expect("just written");
        return Ok(Report::new(text, value));
    }
    write_durably(out, text.as_bytes())?;
    Ok(Report::new(
        format!(
            "exported {} watermarks of {from} to {}",
            file.watermarks.len(),
            out.display()
        ),
        json!({"source": from, "path": out.display().to_string(), "count": file.watermarks.len()}),
    ))
}

/// Write through a temporary file, fsync, rename, fsync the directory: an
/// export is either the old file or the whole new one.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let io = |e: std::io::Error| {
        Failure::from(slashguard::Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".slashguard-new");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

async fn import(
    input: Option<&Path>,
    from_octez: Option<&Path>,
    unknown: octez::UnknownKeys,
    store: &WatermarkStore,
    mode: ImportMode,
    settings: &mut Settings,
) -> Result<Report, Failure> {
    let mut skipped = Vec::new();
    let file = match (input, from_octez) {
        (_, Some(dir)) => {
            let read = octez::read_octez_dir_with(dir, &settings.aliases.by_key(), unknown)
                .map_err(|e| {
                    let unknown_scheme = e.to_string().contains("slashguard does not sign for");
                    let f = Failure::from(e);
                    if unknown_scheme {
                        f.hint_if(
                            Code::BadInput,
                            "pass --skip-unknown-keys to import the other entries and leave these out",
                        )
                    } else {
                        f
                    }
                })?;
            skipped = read.skipped;
            read.file
        }
        (Some(p), None) => {
            let (text, what) = if p == Path::new("-") {
                let mut t = String::new();
                std::io::stdin()
                    .read_to_string(&mut t)
                    .map_err(|e| Failure::bad_input(format!("reading stdin: {e}")))?;
                (t, "stdin".to_string())
            } else {
                let t = std::fs::read_to_string(p).map_err(|e| {
                    Failure::from(slashguard::Error::Io {
                        path: p.to_path_buf(),
                        source: e,
                    })
                })?;
                (t, p.display().to_string())
            };
            WatermarkFile::from_json(&text, &what)?
        }
        (None, None) => return Err(Failure::bad_input("give --in FILE or --from-octez DIR")),
    };
    settings.aliases.absorb(&file.aliases());
    // With --create, a failed import must not leave an empty store behind
    // that later opens as "never signed": remember what this run creates.
    let created = match (&store.file, store.create) {
        (Some(p), true) => Some((p.clone(), FileWatermarks::lock_path(p).exists())),
        _ => None,
    };
    let (guard, target) = open_store(store.file.as_deref(), store.etcd, store.create, settings)
        .await?
        .expect("one store named");
    let imported = interchange::import(guard.as_ref(), &file, mode).await;
    let report = match imported {
        Ok(r) => r,
        Err(e) => {
            drop(guard);
            let mut failure = not_set(e, &format!("import into {target}")).hint_if(
                Code::Refused,
                "the store is ahead of the file for that key: nothing was imported; --keep-higher imports the rest and keeps the higher stored marks, --force lowers (recovery only)",
            );
            if let Some((path, lock_existed)) = created {
                failure
                    .message
                    .push_str(&remove_created(&path, lock_existed));
            }
            return Err(failure);
        }
    };
    let mut human = format!(
        "imported {} into {target}: {} set, {} already equal, {} kept higher\n",
        file.source.as_deref().unwrap_or("the file"),
        report.set.len(),
        report.unchanged.len(),
        report.kept_higher.len()
    );
    for (k, before, after) in &report.set {
        human.push_str(&format!(
            "  {k}: {} -> {}/{}{}\n",
            before.map_or("none".into(), |b| format!("{}/{}", b.level, b.round)),
            after.level,
            after.round,
            if before.is_some_and(|b| b > *after) {
                "  (LOWERED)"
            } else {
                ""
            }
        ));
    }
    for e in &skipped {
        human.push_str(&format!("  skipped {e}\n"));
    }
    for (k, stored, in_file) in &report.kept_higher {
        human.push_str(&format!(
            "  {k}: kept {}/{} (file: {}/{})\n",
            stored.level, stored.round, in_file.level, in_file.round
        ));
    }
    let set: Vec<Value> = report
        .set
        .iter()
        .map(|(k, b, a)| json!({"key": k.to_string(), "before": b.map(|b| json!({"level": b.level, "round": b.round})), "level": a.level, "round": a.round}))
        .collect();
    Ok(Report::new(
        human,
        json!({"target": target, "source": file.source, "set": set, "unchanged": report.unchanged.len(),
               "kept_higher": report.kept_higher.len(), "lowered": report.lowered().count(), "mode": format!("{mode:?}"),
               "skipped": skipped.iter().map(|e| e.to_string()).collect::<Vec<_>>()}),
    ))
}

/// Remove the watermark file this run created for a failed import (and its
/// lock file, if this run made that too): says what was done.
fn remove_created(path: &Path, lock_existed: bool) -> String {
    let removed = std::fs::remove_file(path);
    if !lock_existed {
        let _ = std::fs::remove_file(FileWatermarks::lock_path(path));
    }
    match removed {
        Ok(()) => format!(
            "; the new, empty watermark file {} was removed (nothing was created)",
            path.display()
        ),
        Err(e) => format!(
            "; the new, EMPTY watermark file {} could not be removed ({e}): delete it before using that path",
            path.display()
        ),
    }
}
