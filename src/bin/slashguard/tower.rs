//! `slashguard tower`: show, import from Agave, export to Agave.

use std::path::Path;

use serde_json::{json, Value};
use slashguard::agave::{self, FileKind, SavedTower};
use slashguard::file::FileTowerStorage;
use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
use slashguard::{NodeId, NodeKeypair};

use crate::args::{TowerCommand, TowerStoreArgs};
use crate::exit::{needs_etcd, Failure};
use crate::node::{keypair, node_id};
use crate::output::{iso, now_ms, when, Report};
use crate::settings::Settings;

pub async fn run(cmd: TowerCommand, settings: &Settings) -> Result<Report, Failure> {
    match cmd {
        TowerCommand::Show {
            node,
            dir,
            etcd,
            agave,
        } => {
            let node = node_id(&node)?;
            if let Some(dir) = agave {
                return show_agave(&dir, node);
            }
            let (record, source) =
                read_store(&TowerStoreArgs { dir, etcd }, node, settings).await?;
            Ok(show_record(node, record.as_ref(), &source))
        }
        TowerCommand::Import {
            keypair: kp,
            from_agave,
            store,
            force,
            create,
        } => import(&keypair(&kp)?, &from_agave, &store, force, create, settings).await,
        TowerCommand::AcceptOlder { node, dir } => accept_older(node_id(&node)?, &dir).await,
        TowerCommand::Export {
            keypair: kp,
            store,
            to_agave,
            force,
            take_over,
        } => {
            export(
                &keypair(&kp)?,
                &store,
                &to_agave,
                force,
                take_over,
                settings,
            )
            .await
        }
    }
}

fn vote_json(v: Option<VoteRef>) -> Value {
    match v {
        Some(v) => json!({"slot": v.slot, "hash": bs58::encode(v.hash).into_string()}),
        None => Value::Null,
    }
}

fn vote_text(v: Option<VoteRef>) -> String {
    match v {
        Some(v) => format!(
            "slot {} (bank hash {})",
            v.slot,
            bs58::encode(v.hash).into_string()
        ),
        None => "none (the tower has not voted)".into(),
    }
}

fn root_text(r: Option<u64>) -> String {
    r.map_or("none".into(), |r| format!("slot {r}"))
}

fn show_record(node: NodeId, record: Option<&TowerRecord>, source: &str) -> Report {
    let Some(r) = record else {
        return Report::new(
            format!("no tower stored for node {node} in {source}"),
            json!({"node": node.to_string(), "source": source, "tower": null}),
        );
    };
    let human = format!(
        "node       {node}\nsource     {source}\nlast vote  {}\nroot       {}\nsigned     {}\nsignature  valid (verified against the node key)\ntower      {} bytes",
        vote_text(r.last_vote()),
        root_text(r.root()),
        when(r.signed_at_ms()),
        r.tower_bytes().len()
    );
    let json = json!({
        "node": node.to_string(),
        "source": source,
        "tower": {
            "last_vote": vote_json(r.last_vote()),
            "root": r.root(),
            "signed_at_ms": r.signed_at_ms(),
            "signed_at": iso(r.signed_at_ms()),
            "age_ms": now_ms().saturating_sub(r.signed_at_ms()),
            "signature_valid": r.verify(),
            "tower_bytes": r.tower_bytes().len(),
        }
    });
    Report::new(human, json)
}

fn show_agave(dir: &Path, node: NodeId) -> Result<Report, Failure> {
    let source = format!("agave:{}", dir.display());
    for kind in [FileKind::V1_9, FileKind::Legacy] {
        let path = agave::tower_file_path(dir, &node, kind);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(slashguard::Error::Io { path, source: e }.into()),
        };
        if bytes.len() > agave::MAX_TOWER_FILE_BYTES {
            return Err(Failure::bad_input(format!(
                "{} is larger than any tower file",
                path.display()
            )));
        }
        let saved = SavedTower::decode_unverified(&bytes, kind).map_err(|e| {
            Failure::bad_input(format!("{}: not an Agave tower file: {e}", path.display()))
        })?;
        let verified = saved.verify();
        let tower = saved.tower();
        let modified_ms = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        let sig_text = match &verified {
            Ok(()) => "valid (verified against the node key)".to_string(),
            Err(e) => format!("INVALID: {e}"),
        };
        let human = format!(
            "node       {}\nsource     {}\nlast vote  {}\nroot       {}\nmodified   {}\nsignature  {sig_text}\nformat     {:?}",
            saved.node(),
            path.display(),
            vote_text(tower.last_vote_ref()),
            root_text(tower.root()),
            modified_ms.map_or("unknown".into(), when),
            saved.format(),
        );
        let json = json!({
            "node": saved.node().to_string(),
            "source": source,
            "path": path.display().to_string(),
            "tower": {
                "last_vote": vote_json(tower.last_vote_ref()),
                "root": tower.root(),
                "modified_ms": modified_ms,
                "modified": modified_ms.map(iso),
                "age_ms": modified_ms.map(|m| now_ms().saturating_sub(m)),
                "signature_valid": verified.is_ok(),
                "format": format!("{:?}", saved.format()),
            }
        });
        if saved.node() != node {
            return Err(Failure::bad_input(format!(
                "{} holds a tower of node {}, not {node}",
                path.display(),
                saved.node()
            )));
        }
        if let Err(e) = verified {
            // A script must not take it for a usable tower: fail, naming
            // what the file claims.
            return Err(Failure::bad_input(format!(
                "{}: signature does not verify ({e}); the file claims last vote {}, root {}",
                path.display(),
                vote_text(tower.last_vote_ref()),
                root_text(tower.root())
            ))
            .hint(
                "this file was altered or signed by another key: do not start a validator on it",
            ));
        }
        return Ok(Report::new(human, json));
    }
    Ok(Report::new(
        format!("no tower file of node {node} in {}", dir.display()),
        json!({"node": node.to_string(), "source": source, "tower": null}),
    ))
}

/// Read a stored tower without owning it.
async fn read_store(
    store: &TowerStoreArgs,
    node: NodeId,
    settings: &Settings,
) -> Result<(Option<TowerRecord>, String), Failure> {
    if let Some(dir) = &store.dir {
        let r = FileTowerStorage::read_unlocked(dir, node)?;
        return Ok((r, format!("file:{}", dir.display())));
    }
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        let client = crate::etcd_conn::connect(settings).await?;
        let r = slashguard::etcd::EtcdTowerStorage::read_unfenced(&client, node).await?;
        Ok((r, format!("etcd:{}", client.keys().record(&node))))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = settings;
        unreachable!("needs_etcd refused")
    }
}

async fn accept_older(node: NodeId, dir: &Path) -> Result<Report, Failure> {
    let storage = FileTowerStorage::open(dir, node)?;
    let was_damaged = storage.is_damaged().await?;
    let record = storage.accept_older().await?;
    let vote = record.as_ref().and_then(|r| r.last_vote());
    let human = if was_damaged {
        format!(
            "accepted the loaded tower of {node} in {}: stores are accepted again\nlast vote  {}",
            dir.display(),
            vote_text(vote)
        )
    } else {
        format!(
            "the tower of {node} in {} is not damaged: nothing changed",
            dir.display()
        )
    };
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "dir": dir.display().to_string(), "was_damaged": was_damaged,
               "last_vote": vote_json(vote)}),
    ))
}

fn mode(force: bool) -> StoreMode {
    if force {
        StoreMode::Force
    } else {
        StoreMode::Advance
    }
}

async fn import(
    kp: &NodeKeypair,
    from: &Path,
    store: &TowerStoreArgs,
    force: bool,
    create: bool,
    settings: &Settings,
) -> Result<Report, Failure> {
    let node = kp.node_id();
    let saved = agave::load_tower(from, &node)?.ok_or_else(|| {
        Failure::bad_input(format!("no tower file of node {node} in {}", from.display()))
            .hint("give the validator's tower directory (its --tower path, by default the ledger directory)")
    })?;
    let record = saved.to_record(kp).map_err(slashguard::Error::from)?;
    let target = store_record(&record, store, force, create, settings).await?;
    let human = format!(
        "imported the tower of {node} from {} into {target}\nlast vote  {}\nroot       {}",
        from.display(),
        vote_text(record.last_vote()),
        root_text(record.root()),
    );
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "from": from.display().to_string(), "to": target,
               "last_vote": vote_json(record.last_vote()), "root": record.root(), "forced": force}),
    ))
}

async fn store_record(
    record: &TowerRecord,
    store: &TowerStoreArgs,
    force: bool,
    create: bool,
    settings: &Settings,
) -> Result<String, Failure> {
    let node = record.node();
    if let Some(dir) = &store.dir {
        let storage = if create {
            FileTowerStorage::create(dir, node)?
        } else {
            FileTowerStorage::open(dir, node)?
        };
        storage.store(record, mode(force)).await?;
        return Ok(format!("file:{}", dir.display()));
    }
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        let client = crate::etcd_conn::connect(settings).await?;
        let identity = crate::etcd_conn::identity(client.clone(), node, settings)?;
        let ownership = crate::held::hold_free(&identity, node, "tower").await?;
        let stored = async {
            let storage = slashguard::etcd::EtcdTowerStorage::open(&identity, &ownership).await?;
            storage.store(record, mode(force)).await
        }
        .await;
        let released = identity.release(ownership).await;
        stored?;
        released?;
        Ok(format!("etcd:{}", client.keys().record(&node)))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = settings;
        unreachable!("needs_etcd refused")
    }
}

/// Read the tower for an export, fenced against a running validator: a
/// tower read while its owner still votes is stale the moment it is read,
/// and a validator started on it votes a second time (`--require-tower`
/// trusts the file).
///
/// - file store: read under the store's lock (refused while a validator
///   holds it; nothing is created when there is no store);
/// - etcd: refused while an instance owns the identity, unless
///   `take_over`: then that instance is fenced first. Either way this
///   command holds the identity while it reads and releases it after.
async fn read_fenced(
    store: &TowerStoreArgs,
    node: NodeId,
    take_over: bool,
    settings: &Settings,
) -> Result<(Option<TowerRecord>, String), Failure> {
    if let Some(dir) = &store.dir {
        let source = format!("file:{}", dir.display());
        // Nothing stored: say so without creating a store.
        if FileTowerStorage::read_unlocked(dir, node)?.is_none() {
            return Ok((None, source));
        }
        let storage =
            crate::held::open_unheld(|| FileTowerStorage::open(dir, node), "tower", "tower show")
                .await?;
        let record = storage.load().await?;
        return Ok((record, source));
    }
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        let client = crate::etcd_conn::connect(settings).await?;
        let identity = crate::etcd_conn::identity(client.clone(), node, settings)?;
        let ownership = crate::held::hold_for_export(&identity, node, take_over, "tower").await?;
        let read = async {
            let storage = slashguard::etcd::EtcdTowerStorage::open(&identity, &ownership).await?;
            storage.load().await
        }
        .await;
        // Hand over: the validator started on the exported file takes it.
        let released = identity.release(ownership).await;
        let record = read?;
        released?;
        Ok((record, format!("etcd:{}", client.keys().record(&node))))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (settings, take_over);
        unreachable!("needs_etcd refused")
    }
}

async fn export(
    kp: &NodeKeypair,
    store: &TowerStoreArgs,
    to: &Path,
    force: bool,
    take_over: bool,
    settings: &Settings,
) -> Result<Report, Failure> {
    let node = kp.node_id();
    if !to.is_dir() {
        return Err(
            Failure::bad_input(format!("{} is not a directory", to.display()))
                .hint("create the validator's tower directory first"),
        );
    }
    let (record, source) = read_fenced(store, node, take_over, settings).await?;
    let record = record.ok_or_else(|| {
        Failure::bad_input(format!("no tower stored for node {node} in {source}"))
            .hint("check --node/--keypair and the store; nothing was written")
    })?;
    // The stored Agave file as it was, or one rebuilt from Agave tower
    // data; a record in the validator's own format is refused with why.
    let saved = SavedTower::from_stored(&record, kp).map_err(slashguard::Error::from)?;
    let path = agave::write_tower_durable(to, &saved, mode(force))?;
    let human = format!(
        "wrote {} from {source}\nlast vote  {}\nroot       {}\nstart the validator with --require-tower (and --tower {})",
        path.display(),
        vote_text(record.last_vote()),
        root_text(record.root()),
        to.display()
    );
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "from": source, "path": path.display().to_string(),
               "last_vote": vote_json(record.last_vote()), "root": record.root(), "forced": force}),
    ))
}
