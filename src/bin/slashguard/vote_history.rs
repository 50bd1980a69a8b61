//! `slashguard vote-history`: show, import an Agave or Firedancer
//! `vote_history-<identity>.bin`, export one, accept an older history.

use std::path::Path;

use serde_json::{json, Value};
use slashguard::agave::{
    self, AgaveVoteHistoryStorage, HistoryLayout, SavedVoteHistory, FIREDANCER_IMPORT_LIMIT,
};
use slashguard::alpenglow::{HistoryStorage, VoteHistory};
use slashguard::file::FileVoteHistory;
use slashguard::NodeId;

use crate::args::{HistoryStoreArgs, VoteHistoryCommand};
use crate::exit::{needs_etcd, Failure};
use crate::node::node_id;
use crate::output::Report;
use crate::settings::Settings;

pub async fn run(cmd: VoteHistoryCommand, settings: &Settings) -> Result<Report, Failure> {
    match cmd {
        VoteHistoryCommand::Show {
            node,
            dir,
            etcd,
            agave,
            layout,
        } => {
            let node = node_id(&node)?;
            let layout = parse_layout(layout.as_deref())?;
            if let Some(dir) = agave {
                return show_file(&dir, layout, node);
            }
            let (history, source) =
                read_unfenced(&HistoryStoreArgs { dir, etcd }, node, settings).await?;
            Ok(show_history(node, history.as_ref(), &source))
        }
        VoteHistoryCommand::Import {
            node,
            from_agave,
            store,
            layout,
            create,
            shred_version,
        } => {
            let node = node_id(&node)?;
            let layout = parse_layout(layout.as_deref())?;
            import(
                node,
                &from_agave,
                &store,
                layout,
                create,
                shred_version,
                settings,
            )
            .await
        }
        VoteHistoryCommand::Export {
            node,
            store,
            to_agave,
            layout,
            force,
            take_over,
            beyond_firedancer_limit,
        } => {
            let node = node_id(&node)?;
            let layout = parse_layout(layout.as_deref())?;
            export(
                node,
                &store,
                &to_agave,
                layout,
                force,
                take_over,
                beyond_firedancer_limit,
                settings,
            )
            .await
        }
        VoteHistoryCommand::AcceptOlder { node, dir } => accept_older(node_id(&node)?, &dir).await,
    }
}

fn parse_layout(name: Option<&str>) -> Result<Option<HistoryLayout>, Failure> {
    name.map(|n| {
        HistoryLayout::from_name(n).map_err(|_| {
            Failure::bad_input(format!("unknown vote history layout {n:?}"))
                .hint(format!("known layouts: {}", HistoryLayout::known()))
        })
    })
    .transpose()
}

fn summary(h: &VoteHistory) -> Value {
    json!({
        "root": h.root(),
        "shred_version": h.shred_version(),
        "last_voted_slot": h.last_voted_slot(),
        "slots": h.slots().count(),
        "agave_file_bytes": h.agave_file().map(<[u8]>::len),
    })
}

fn show_history(node: NodeId, history: Option<&VoteHistory>, source: &str) -> Report {
    let Some(h) = history else {
        return Report::new(
            format!("the store of {node} in {source} holds no vote history yet"),
            json!({"node": node.to_string(), "source": source, "history": null}),
        );
    };
    let file = match SavedVoteHistory::from_stored(h, None) {
        Ok(Some(s)) => format!("{} bytes, layout {}", s.len(), s.layout()),
        Ok(None) => "none (votes recorded by slashguard's own guard, or none yet)".into(),
        Err(e) => format!("INVALID: {e}"),
    };
    let human = format!(
        "node        {node}\nsource      {source}\nroot        slot {}\nlast vote   {}\nslots       {}\nshred ver.  {}\nagave file  {file}",
        h.root(),
        h.last_voted_slot()
            .map_or("none".into(), |s| format!("slot {s}")),
        h.slots().count(),
        h.shred_version(),
    );
    Report::new(
        human,
        json!({"node": node.to_string(), "source": source, "history": summary(h)}),
    )
}

fn show_file(dir: &Path, layout: Option<HistoryLayout>, node: NodeId) -> Result<Report, Failure> {
    let source = format!("agave:{}", dir.display());
    let Some(saved) = agave::load_vote_history(dir, layout, &node)? else {
        return Ok(Report::new(
            format!("no vote history file of {node} in {}", dir.display()),
            json!({"node": node.to_string(), "source": source, "history": null}),
        ));
    };
    let path = agave::vote_history_file_path(dir, &node);
    let human = format!(
        "node        {node}\nsource      {}\nroot        slot {}\nlast vote   {}\nlayout      {}\nsize        {} bytes{}\nsignature   valid (verified against the node key)",
        path.display(),
        saved.root(),
        saved
            .history()
            .last_voted_slot()
            .map_or("none".into(), |s| format!("slot {s}")),
        saved.layout(),
        saved.len(),
        if saved.len() > FIREDANCER_IMPORT_LIMIT {
            format!(" (above Firedancer's {FIREDANCER_IMPORT_LIMIT}-byte import limit)")
        } else {
            String::new()
        },
    );
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "source": source, "path": path.display().to_string(),
               "history": {"root": saved.root(), "last_voted_slot": saved.history().last_voted_slot(),
                           "layout": saved.layout().name(), "bytes": saved.len()}}),
    ))
}

/// Read a stored history without owning the identity (inspection only).
async fn read_unfenced(
    store: &HistoryStoreArgs,
    node: NodeId,
    settings: &Settings,
) -> Result<(Option<VoteHistory>, String), Failure> {
    if let Some(dir) = &store.dir {
        let h = FileVoteHistory::read_unlocked(dir, node)?;
        return Ok((h, format!("file:{}", dir.display())));
    }
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        let client = crate::etcd_conn::connect(settings).await?;
        let h = slashguard::etcd::EtcdVoteHistory::read_unfenced(&client, node).await?;
        Ok((h, format!("etcd:{}", client.keys().vote_history(&node))))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = settings;
        unreachable!("needs_etcd refused")
    }
}

/// The cluster's shred version for a new history: the flag, or the one
/// every vote of the file carries.
fn shred_version_of(saved: &SavedVoteHistory, flag: Option<u16>) -> Result<u16, Failure> {
    if let Some(sv) = flag {
        return Ok(sv);
    }
    let mut carried: Vec<u16> = saved
        .history()
        .votes_cast
        .iter()
        .flat_map(|(_, v)| v.iter())
        .filter_map(|v| v.shred_version)
        .collect();
    carried.sort_unstable();
    carried.dedup();
    match carried.as_slice() {
        [one] => Ok(*one),
        _ => Err(Failure::bad_input(
            "the file does not name one shred version (its layout carries none, it has no vote, or its votes disagree)",
        )
        .hint("give the cluster's shred version with --shred-version (`solana -u <cluster> cluster-version` or the validator's log)")),
    }
}

/// Record `saved` in `storage` as the Agave adapter does; with `create`
/// (the cluster's shred version), start the history from it in one write.
async fn record<S: HistoryStorage>(
    storage: S,
    saved: &SavedVoteHistory,
    create: Option<u16>,
) -> Result<bool, Failure> {
    let adapter = AgaveVoteHistoryStorage::new(storage, saved.layout());
    match create {
        Some(sv) => {
            adapter
                .start_from_file(&saved.encode(), sv)
                .await
                .map_err(adapter_failure)?;
            Ok(true)
        }
        None => Ok(adapter
            .store(&saved.encode())
            .await
            .map_err(adapter_failure)?
            .wrote),
    }
}

fn adapter_failure(e: agave::AgaveVoteHistoryError) -> Failure {
    use agave::AgaveVoteHistoryError as E;
    match e {
        E::Fenced(e) | E::Refused(e) | E::Failed(e) => {
            let refused_by_rule = matches!(e, slashguard::Error::Refused(_));
            let f = Failure::from(e);
            if refused_by_rule {
                f.hint("the stored history is newer, or the file would record a slashable pair: a validator started on an older history can vote twice; nothing was changed")
            } else {
                f
            }
        }
        E::NotFound { node } => Failure::bad_input(format!("no vote history stored for {node}")),
        E::Invalid { node, source } => {
            Failure::bad_input(format!("vote history of {node}: {source}"))
                .hint("check the identity, the file and its layout (--layout); nothing was changed")
        }
        other => Failure::bad_input(other.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn import(
    node: NodeId,
    from: &Path,
    store: &HistoryStoreArgs,
    layout: Option<HistoryLayout>,
    create: bool,
    shred_version: Option<u16>,
    settings: &Settings,
) -> Result<Report, Failure> {
    let saved = agave::load_vote_history(from, layout, &node)?.ok_or_else(|| {
        Failure::bad_input(format!(
            "no vote history file of {node} in {}",
            from.display()
        ))
        .hint("give the validator's ledger directory (it holds vote_history-<identity>.bin)")
    })?;
    let create = if create {
        Some(shred_version_of(&saved, shred_version)?)
    } else {
        None
    };
    let (target, wrote) = if let Some(dir) = &store.dir {
        let lock = slashguard::file::FileTowerStorage::lock_path(dir, &node);
        let new_lock = !lock.exists();
        let storage = if create.is_some() {
            FileVoteHistory::create(dir, node)?
        } else {
            FileVoteHistory::open(dir, node)?
        };
        let recorded = record(storage, &saved, create).await;
        if recorded.is_err() && create.is_some() {
            // Leave no empty store behind to be opened later as "no votes"
            // (the lock file only if this command made it: it is shared
            // with the identity's tower).
            let _ = std::fs::remove_file(FileVoteHistory::data_path(dir, &node));
            if new_lock {
                let _ = std::fs::remove_file(&lock);
            }
        }
        (format!("file:{}", dir.display()), recorded?)
    } else {
        needs_etcd()?;
        #[cfg(feature = "etcd")]
        {
            let client = crate::etcd_conn::connect(settings).await?;
            let identity = crate::etcd_conn::identity(client.clone(), node, settings)?;
            let ownership = crate::held::hold_free(&identity, node, "vote history").await?;
            let recorded = async {
                let storage =
                    slashguard::etcd::EtcdVoteHistory::open(&identity, &ownership).await?;
                Ok::<_, Failure>(record(storage, &saved, create).await)
            }
            .await;
            let released = identity.release(ownership).await;
            let wrote = recorded??;
            released?;
            (format!("etcd:{}", client.keys().vote_history(&node)), wrote)
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = settings;
            unreachable!("needs_etcd refused")
        }
    };
    let last = saved.history().last_voted_slot();
    let human = format!(
        "imported the vote history of {node} from {} into {target}{}\nroot        slot {}\nlast vote   {}\nlayout      {}",
        from.display(),
        if wrote { "" } else { " (already stored: nothing changed)" },
        saved.root(),
        last.map_or("none".into(), |s| format!("slot {s}")),
        saved.layout(),
    );
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "from": from.display().to_string(), "to": target,
               "root": saved.root(), "last_voted_slot": last, "layout": saved.layout().name(),
               "created": create.is_some(), "wrote": wrote}),
    ))
}

/// Read the history for an export, fenced against a running validator: a
/// history read while its owner still votes is stale the moment it is
/// read, and a validator started on it votes a second time.
async fn read_fenced(
    store: &HistoryStoreArgs,
    node: NodeId,
    take_over: bool,
    settings: &Settings,
) -> Result<(Option<VoteHistory>, String), Failure> {
    if let Some(dir) = &store.dir {
        let source = format!("file:{}", dir.display());
        let storage = crate::held::open_unheld(
            || FileVoteHistory::open(dir, node),
            "vote history",
            "vote-history show",
        )
        .await?;
        // A damaged store loads a history that may lack its newest votes:
        // never exported as current (the same refusal as `show`, with the
        // recovery). Read while this process holds the lock.
        if storage.is_damaged().await? {
            let damaged = FileVoteHistory::read_unlocked(dir, node)
                .err()
                .map(Failure::from)
                .unwrap_or_else(|| {
                    Failure::refused(format!(
                        "the vote history of {node} in {source} is damaged: its newest record may be lost"
                    ))
                    .hint(format!("`slashguard vote-history accept-older --dir {} --node {node}` once the identity cannot vote again in a slot the lost record may hold", dir.display()))
                });
            return Err(damaged);
        }
        let history = storage.load().await?;
        return Ok((history, source));
    }
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        let client = crate::etcd_conn::connect(settings).await?;
        let identity = crate::etcd_conn::identity(client.clone(), node, settings)?;
        let ownership =
            crate::held::hold_for_export(&identity, node, take_over, "vote history").await?;
        let read = async {
            let storage = slashguard::etcd::EtcdVoteHistory::open(&identity, &ownership).await?;
            storage.load().await
        }
        .await;
        let released = identity.release(ownership).await;
        let history = read?;
        released?;
        Ok((
            history,
            format!("etcd:{}", client.keys().vote_history(&node)),
        ))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (settings, take_over);
        unreachable!("needs_etcd refused")
    }
}

#[allow(clippy::too_many_arguments)]
async fn export(
    node: NodeId,
    store: &HistoryStoreArgs,
    to: &Path,
    layout: Option<HistoryLayout>,
    force: bool,
    take_over: bool,
    beyond_firedancer_limit: bool,
    settings: &Settings,
) -> Result<Report, Failure> {
    if !to.is_dir() {
        return Err(
            Failure::bad_input(format!("{} is not a directory", to.display()))
                .hint("give the validator's ledger directory"),
        );
    }
    let (history, source) = read_fenced(store, node, take_over, settings).await?;
    let history = history.ok_or_else(|| {
        Failure::bad_input(format!("no vote history stored for {node} in {source}"))
            .hint("check --node/--keypair and the store; nothing was written")
    })?;
    let saved = SavedVoteHistory::from_stored(&history, layout)
        .map_err(|e| {
            Failure::bad_input(format!("the Agave file stored for {node} in {source}: {e}"))
                .hint("nothing was written; export in the layout the file was stored in (drop --layout), or let the validator store a new file")
        })?
        .ok_or_else(|| {
            Failure::bad_input(format!(
                "the vote history of {node} in {source} holds no Agave file: its votes (up to slot {}) were recorded by slashguard's own guard or after the last file",
                history.last_voted_slot().unwrap_or(history.root())
            ))
            .hint("a validator cannot be given these votes as a file: start it with the guard on the same store, or wait until the cluster finalized a slot past its last vote; nothing was written")
        })?;
    if saved.len() > FIREDANCER_IMPORT_LIMIT && !beyond_firedancer_limit {
        return Err(Failure::bad_input(format!(
            "the vote history of {node} is {} bytes, above the {FIREDANCER_IMPORT_LIMIT} bytes Firedancer's `set-identity --vote-history-file` reads: Firedancer would refuse the file",
            saved.len()
        ))
        .hint("the history shrinks as the cluster finalizes (votes below the root are dropped): let the validator store again after the next finalized slot and export then; for an Agave validator (no such limit) pass --beyond-firedancer-limit; nothing was written"));
    }
    let path = agave::write_vote_history_durable(to, &saved, force)?;
    let last = saved.history().last_voted_slot();
    let human = format!(
        "wrote {} from {source}\nroot        slot {}\nlast vote   {}\nlayout      {}\nsize        {} bytes\nthen: `agave-validator set-identity` (Agave), or Firedancer's `set-identity --vote-history-file {}`",
        path.display(),
        saved.root(),
        last.map_or("none".into(), |s| format!("slot {s}")),
        saved.layout(),
        saved.len(),
        path.display(),
    );
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "from": source, "path": path.display().to_string(),
               "root": saved.root(), "last_voted_slot": last, "layout": saved.layout().name(),
               "bytes": saved.len(), "forced": force}),
    ))
}

async fn accept_older(node: NodeId, dir: &Path) -> Result<Report, Failure> {
    let storage = FileVoteHistory::open(dir, node)?;
    let was_damaged = storage.is_damaged().await?;
    let history = storage.accept_older().await?;
    let last = history.as_ref().and_then(VoteHistory::last_voted_slot);
    let human = if was_damaged {
        format!(
            "accepted the loaded vote history of {node} in {}: votes are accepted again\nlast vote   {}",
            dir.display(),
            last.map_or("none".into(), |s| format!("slot {s}"))
        )
    } else {
        format!(
            "the vote history of {node} in {} is not damaged: nothing changed",
            dir.display()
        )
    };
    Ok(Report::new(
        human,
        json!({"node": node.to_string(), "dir": dir.display().to_string(),
               "was_damaged": was_damaged, "last_voted_slot": last}),
    ))
}
