//! `slashguard vote-history` as an operator runs it (the real binary):
//! import an Agave or Firedancer `vote_history-<identity>.bin` into a file
//! or etcd store, show it, export it back byte for byte; refusals with
//! their exit codes: a newer stored history, a newer file in the target
//! directory, a live owner (unless `--take-over` on etcd), Firedancer's
//! 32,688-byte import limit, an unknown or wrong layout, a missing store.

mod cli_support;
#[cfg(feature = "etcd")]
#[path = "common/etcd_harness.rs"]
mod etcd_harness;

use std::path::{Path, PathBuf};

use cli_support::*;
use slashguard::agave::{
    self, AgaveVoteHistory, HistoryLayout, SavedVote, SavedVoteHistory, FIREDANCER_IMPORT_LIMIT,
};
use slashguard::alpenglow::{HistoryStorage, VoteKind};
use slashguard::file::FileVoteHistory;
use slashguard::NodeKeypair;

const SEED: [u8; 32] = [0x61; 32];
const SV: u16 = 4242;

fn kp() -> NodeKeypair {
    NodeKeypair::from_seed(SEED)
}

/// Agave's file: root `root`, Notarize + Finalize in every slot up to `last`.
fn file(layout: HistoryLayout, root: u64, last: u64) -> SavedVoteHistory {
    let kp = kp();
    let sv = match layout {
        HistoryLayout::VoteEnum => None,
        _ => Some(SV),
    };
    let mut h = AgaveVoteHistory::new(kp.node_id(), root);
    for slot in root + 1..=last {
        for kind in [VoteKind::Notarize([slot as u8; 32]), VoteKind::Finalize] {
            h.add_vote(SavedVote {
                slot,
                kind,
                shred_version: sv,
            });
        }
    }
    SavedVoteHistory::sign(h, layout, &kp).unwrap()
}

/// A ledger directory holding `saved` as vote_history-<identity>.bin.
fn ledger(parent: &Path, name: &str, saved: &SavedVoteHistory) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    agave::write_vote_history_durable(&dir, saved, true).unwrap();
    dir
}

fn node() -> String {
    kp().node_id().to_string()
}

fn in_file(dir: &Path) -> Vec<u8> {
    std::fs::read(agave::vote_history_file_path(dir, &kp().node_id())).unwrap()
}

#[test]
fn import_show_export_round_trip_on_the_file_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let first = file(HistoryLayout::SignedPayload, 100, 110);
    let from = ledger(tmp.path(), "primary", &first);

    // No store yet, no --create: refused (exit 4), nothing created.
    let v = json(
        sg().args(["vote-history", "import", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(&from),
        4,
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("slashguard-alpenglow-"),
        "{v}"
    );
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);

    // --create: the history starts from the file (shred version from its votes).
    let v = json(
        sg().args([
            "vote-history",
            "import",
            "--create",
            "--node",
            &node(),
            "--dir",
        ])
        .arg(&store)
        .arg("--from-agave")
        .arg(&from),
        0,
    );
    assert_eq!(v["created"], true, "{v}");
    assert_eq!(v["layout"], "signed-payload", "{v}");
    let v = json(
        sg().args(["vote-history", "show", "--node", &node(), "--dir"])
            .arg(&store),
        0,
    );
    assert_eq!(v["history"]["root"], 100, "{v}");
    assert_eq!(v["history"]["last_voted_slot"], 110, "{v}");
    assert_eq!(v["history"]["shred_version"], SV, "{v}");

    // A newer file imports; the same again changes nothing.
    let newer = file(HistoryLayout::SignedPayload, 100, 112);
    let from2 = ledger(tmp.path(), "primary2", &newer);
    let import2 = || {
        let mut c = sg();
        c.args(["vote-history", "import", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(&from2);
        c
    };
    assert_eq!(json(&mut import2(), 0)["wrote"], true);
    assert_eq!(json(&mut import2(), 0)["wrote"], false);

    // The older file never replaces it: refused (exit 2).
    let v = json(
        sg().args(["vote-history", "import", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(&from),
        2,
    );
    assert!(v["message"].as_str().unwrap().contains("slot 111"), "{v}");

    // Export: byte for byte what the validator saved.
    let to = tmp.path().join("standby");
    std::fs::create_dir(&to).unwrap();
    let export = |extra: &[&str], code| {
        let mut c = sg();
        c.args(["vote-history", "export", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--to-agave")
            .arg(&to)
            .args(extra);
        json(&mut c, code)
    };
    export(&[], 0);
    assert_eq!(in_file(&to), newer.encode());
    // A newer file already in the target directory is never replaced...
    let newest = file(HistoryLayout::SignedPayload, 100, 115);
    agave::write_vote_history_durable(&to, &newest, true).unwrap();
    let v = export(&[], 2);
    assert!(v["message"].as_str().unwrap().contains("slot 113"), "{v}");
    assert_eq!(in_file(&to), newest.encode());
    // ...unless the operator forces it.
    export(&["--force"], 0);
    assert_eq!(in_file(&to), newer.encode());
}

#[test]
fn export_refuses_while_a_running_validator_holds_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let from = ledger(
        tmp.path(),
        "primary",
        &file(HistoryLayout::VoteEnum, 10, 12),
    );
    json(
        sg().args(["vote-history", "import", "--create", "--shred-version", "7"])
            .args(["--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(&from),
        0,
    );
    let to = tmp.path().join("out");
    std::fs::create_dir(&to).unwrap();
    // This test process is the running validator: it holds the lock.
    let running = FileVoteHistory::open(&store, kp().node_id()).unwrap();
    let v = json(
        sg().args(["vote-history", "export", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--to-agave")
            .arg(&to),
        2,
    );
    assert!(
        v["message"].as_str().unwrap().contains("running validator"),
        "{v}"
    );
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0);
    drop(running);
    json(
        sg().args(["vote-history", "export", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--to-agave")
            .arg(&to),
        0,
    );
    let back = agave::load_vote_history(&to, Some(HistoryLayout::VoteEnum), &kp().node_id())
        .unwrap()
        .unwrap();
    assert_eq!(back.history().last_voted_slot(), Some(12));
}

#[test]
fn export_above_firedancers_import_limit_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let big = file(HistoryLayout::SignedPayload, 1000, 1300);
    assert!(big.len() > FIREDANCER_IMPORT_LIMIT, "{}", big.len());
    let from = ledger(tmp.path(), "primary", &big);
    json(
        sg().args([
            "vote-history",
            "import",
            "--create",
            "--node",
            &node(),
            "--dir",
        ])
        .arg(&store)
        .arg("--from-agave")
        .arg(&from),
        0,
    );
    let to = tmp.path().join("out");
    std::fs::create_dir(&to).unwrap();
    let export = |extra: &[&str], code| {
        let mut c = sg();
        c.args(["vote-history", "export", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--to-agave")
            .arg(&to)
            .args(extra);
        json(&mut c, code)
    };
    let v = export(&[], 4);
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("32688") && message.contains("Firedancer"),
        "{v}"
    );
    let hint = v["hint"].as_str().unwrap();
    assert!(
        hint.contains("--beyond-firedancer-limit") && hint.contains("finalizes"),
        "{v}"
    );
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0);
    export(&["--beyond-firedancer-limit"], 0);
    assert_eq!(in_file(&to), big.encode());
}

#[test]
fn layouts_are_pinned_and_unknown_ones_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let from = ledger(
        tmp.path(),
        "primary",
        &file(HistoryLayout::SignedPayload, 5, 6),
    );
    let v = json(
        sg().args([
            "vote-history",
            "show",
            "--node",
            &node(),
            "--layout",
            "agave-9.9",
            "--agave",
        ])
        .arg(&from),
        4,
    );
    let hint = v["hint"].as_str().unwrap();
    assert!(
        hint.contains("vote-enum") && hint.contains("signed-payload"),
        "{v}"
    );
    // The file in another layout than the one named: refused, naming both.
    let v = json(
        sg().args([
            "vote-history",
            "show",
            "--node",
            &node(),
            "--layout",
            "vote-enum",
            "--agave",
        ])
        .arg(&from),
        4,
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("vote-enum") && message.contains("signed-payload"),
        "{v}"
    );
    // Without --layout, the file's own.
    let v = json(
        sg().args(["vote-history", "show", "--node", &node(), "--agave"])
            .arg(&from),
        0,
    );
    assert_eq!(v["history"]["layout"], "signed-payload", "{v}");

    // --create from a vote-enum file needs the cluster's shred version.
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let old = ledger(tmp.path(), "old", &file(HistoryLayout::VoteEnum, 5, 6));
    let v = json(
        sg().args([
            "vote-history",
            "import",
            "--create",
            "--node",
            &node(),
            "--dir",
        ])
        .arg(&store)
        .arg("--from-agave")
        .arg(&old),
        4,
    );
    assert!(
        v["hint"].as_str().unwrap().contains("--shred-version"),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "nothing created"
    );
}

#[path = "common/slot_image.rs"]
mod slot_image;

/// Flip a byte in both copies of the newest slot.
fn damage_newest_slot(path: &Path) {
    slot_image::damage_newest_slot(path, 2);
}

#[test]
fn a_damaged_store_refuses_imports_until_accept_older() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let import = |from: &Path, create: bool, code| {
        let mut c = sg();
        c.args(["vote-history", "import", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(from);
        if create {
            c.arg("--create");
        }
        json(&mut c, code)
    };
    import(
        &ledger(tmp.path(), "a", &file(HistoryLayout::SignedPayload, 1, 3)),
        true,
        0,
    );
    import(
        &ledger(tmp.path(), "b", &file(HistoryLayout::SignedPayload, 1, 4)),
        false,
        0,
    );
    damage_newest_slot(&FileVoteHistory::data_path(&store, &kp().node_id()));

    let c = ledger(tmp.path(), "c", &file(HistoryLayout::SignedPayload, 1, 5));
    let v = import(&c, false, 2);
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("slashguard vote-history accept-older"),
        "{v}"
    );
    let v = json(
        sg().args(["vote-history", "accept-older", "--node", &node(), "--dir"])
            .arg(&store),
        0,
    );
    assert_eq!(v["was_damaged"], true, "{v}");
    assert_eq!(v["last_voted_slot"], 3, "{v}");
    import(&c, false, 0);
    let h = FileVoteHistory::read_unlocked(&store, kp().node_id())
        .unwrap()
        .unwrap();
    assert_eq!(h.last_voted_slot(), Some(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = FileVoteHistory::open(&store, kp().node_id()).unwrap();
    assert!(rt
        .block_on(s.load())
        .unwrap()
        .unwrap()
        .agave_file()
        .is_some());
}

/// etcd: export refuses while an instance owns the identity; with
/// `--take-over` the owner is fenced, the history read under the new fence
/// and the identity released for the validator started on the file.
#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use super::*;

    use super::etcd_harness::EtcdCluster;
    use slashguard::agave::AgaveVoteHistoryStorage;
    use slashguard::etcd::{
        EtcdClient, EtcdConfig, EtcdIdentity, EtcdVoteHistory, OwnershipOptions,
    };

    fn etcd_args(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
        let mut v = Vec::new();
        for e in cluster.endpoints() {
            v.push("--etcd-endpoint".to_string());
            v.push(e);
        }
        v.push("--etcd-prefix".into());
        v.push(prefix.into());
        v
    }

    async fn run(args: Vec<String>, code: i32) -> serde_json::Value {
        tokio::task::spawn_blocking(move || json(sg().args(args), code))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_from_etcd_refuses_a_live_owner_unless_it_takes_the_identity_over() {
        let etcd = EtcdCluster::single();
        let prefix = "/cli-vh";
        let tmp = tempfile::tempdir().unwrap();
        let config = EtcdConfig::builder(etcd.endpoints())
            .key_prefix(prefix)
            .request_deadline(Duration::from_secs(2))
            .build()
            .unwrap();
        let client = EtcdClient::connect(config).await.unwrap();
        let running = EtcdIdentity::new(
            client.clone(),
            kp().node_id(),
            OwnershipOptions::new("running-validator"),
        )
        .unwrap();
        let own = running.take_over().await.unwrap();
        let adapter = AgaveVoteHistoryStorage::new(
            EtcdVoteHistory::open(&running, &own).await.unwrap(),
            HistoryLayout::SignedPayload,
        );
        let saved = file(HistoryLayout::SignedPayload, 50, 60);
        adapter.start_history(SV, 50).await.unwrap();
        adapter.store(&saved.encode()).await.unwrap();

        let out = tmp.path().join("standby");
        std::fs::create_dir(&out).unwrap();
        let base = |cmd: &str| {
            let mut a = etcd_args(&etcd, prefix);
            a.extend(["vote-history", cmd, "--etcd", "--node"].map(String::from));
            a.push(node());
            a
        };
        let mut export = base("export");
        export.extend(["--to-agave".to_string(), out.display().to_string()]);

        // Owned by a running validator: refused, nothing written, it still votes.
        let v = run(export.clone(), 2).await;
        assert!(
            v["message"].as_str().unwrap().contains("running-validator"),
            "{v}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        assert!(!own.is_lost());
        // An import is refused the same way.
        let from = ledger(
            tmp.path(),
            "primary",
            &file(HistoryLayout::SignedPayload, 50, 61),
        );
        let mut import = base("import");
        import.extend(["--from-agave".to_string(), from.display().to_string()]);
        run(import.clone(), 2).await;

        // --take-over: fence, read, hand over.
        let mut take = export.clone();
        take.push("--take-over".into());
        run(take, 0).await;
        assert_eq!(in_file(&out), saved.encode());
        let err = adapter
            .store(&file(HistoryLayout::SignedPayload, 50, 61).encode())
            .await
            .unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert_eq!(running.status().await.unwrap(), None, "handed over: free");
        // Free now: the import goes through.
        let v = run(import, 0).await;
        assert_eq!(v["wrote"], true, "{v}");
    }
}

/// A damaged store's loaded history may be older than the last one it
/// acknowledged: exporting it would hand a validator a history that lacks
/// votes it cast. Refused (exit 2) with the recovery, and nothing written,
/// like `show` and `tower export`.
#[test]
fn export_refuses_a_damaged_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let import = |from: &Path, create: bool| {
        let mut c = sg();
        c.args(["vote-history", "import", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--from-agave")
            .arg(from);
        if create {
            c.arg("--create");
        }
        json(&mut c, 0)
    };
    import(
        &ledger(tmp.path(), "a", &file(HistoryLayout::SignedPayload, 1, 3)),
        true,
    );
    import(
        &ledger(tmp.path(), "b", &file(HistoryLayout::SignedPayload, 1, 4)),
        false,
    );
    // The record with the slot-4 votes is lost; slot 3's loads.
    damage_newest_slot(&FileVoteHistory::data_path(&store, &kp().node_id()));

    let to = tmp.path().join("standby");
    std::fs::create_dir(&to).unwrap();
    let v = json(
        sg().args(["vote-history", "export", "--node", &node(), "--dir"])
            .arg(&store)
            .arg("--to-agave")
            .arg(&to),
        2,
    );
    assert!(
        v["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("slashguard vote-history accept-older"),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(&to).unwrap().count(),
        0,
        "nothing written"
    );
}
