//! The Alpenglow vote history in etcd when the store goes backwards under
//! a running guard, with a real etcd and the operator's own tool
//! (`etcdctl`): a snapshot restored under the running owner (Debian's
//! etcd 3.4 `etcdctl snapshot restore`, which reuses revisions), a
//! snapshot restored under a standby that took the identity at the old
//! owner's very fence revision, and a deleted key. In none of them may a
//! guard sign a slashable pair or vote past what it already recorded: it
//! refuses with `Error::Regressed` or `Error::Fenced`. Mirrors
//! `tests/etcd_regression.rs` (towers and watermarks).

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::time::Duration;

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::alpenglow::{
    derive_voter_key, AlpenglowGuard, AlpenglowRefusal, HistoryStorage, RuleMode, Vote, VoteKind,
};
use slashguard::etcd::EtcdVoteHistory;
use slashguard::{Error, NodeKeypair, Refusal};

/// Long enough that no lease expires while a test restores etcd: what is
/// under test is the store's own checks.
const LONG_TTL: Duration = Duration::from_secs(60);
const SV: u16 = 21;
const VOTER: [u8; 32] = [0x77; 32];

fn v(slot: u64, kind: VoteKind) -> Vote {
    Vote {
        slot,
        kind,
        shred_version: SV,
    }
}

fn guard(store: EtcdVoteHistory) -> AlpenglowGuard<EtcdVoteHistory> {
    let kp = NodeKeypair::from_seed(VOTER);
    let registered = derive_voter_key(&kp).unwrap().public_key();
    AlpenglowGuard::new(store, kp, &registered, RuleMode::Strict).unwrap()
}

/// Stop etcd, restore `snapshot` into a new data directory, start it on it.
fn stop_and_restore(etcd: &mut EtcdCluster, snapshot: &std::path::Path) {
    etcd.stop(0);
    etcd.restore_snapshot(0, snapshot);
    etcd.restart(0);
}

/// Retry while etcd (just restarted) answers `Unavailable`.
async fn retry_unavailable<T, F, Fut>(mut f: F) -> slashguard::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = slashguard::Result<T>>,
{
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Err(e) if e.is_unavailable() && std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

/// Put a dummy key until etcd's next write gets revision `target`.
async fn pad_to(raw: &mut etcd_client::Client, target: i64) {
    loop {
        let now = raw.get("/pad", None).await.unwrap();
        let rev = now.header().unwrap().revision();
        assert!(
            rev < target,
            "test set-up: etcd is at revision {rev}, past {target}"
        );
        if rev + 1 == target {
            return;
        }
        raw.put("/pad", "x", None).await.unwrap();
    }
}

fn is_regressed(got: &slashguard::Result<impl std::fmt::Debug>, key: &str) -> bool {
    match got {
        Err(e @ Error::Regressed { what, recovery, .. }) => {
            assert!(e.is_refusal());
            assert!(what.contains(key), "{what}");
            assert!(
                recovery.contains("slashguard vote-history import"),
                "{recovery}"
            );
            true
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restored_under_the_running_guard_is_refused_never_voted_past() {
    let mut etcd = EtcdCluster::single();
    let snapshot = etcd.scratch_dir().join("before.db");
    let prefix = "/ag-restore-running";
    let node = NodeKeypair::from_seed([0x71; 32]).node_id();
    let client = client(&etcd, prefix).await;
    let key = client.keys().vote_history(&node);
    let id = identity(&client, node, "primary", LONG_TTL);
    let own = id.take_over().await.unwrap();
    let g = guard(EtcdVoteHistory::open(&id, &own).await.unwrap());
    g.start_history(SV, 10).await.unwrap();
    g.vote(&[v(11, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap();
    etcd.snapshot_save(0, &snapshot);

    // After the snapshot: slot 12 notarized and finalized.
    g.vote(
        &[
            v(12, VoteKind::Notarize([2; 32])),
            v(12, VoteKind::Finalize),
        ],
        None,
    )
    .await
    .unwrap();

    // The operator restores the older snapshot under the running guard: the
    // owner key is back with this instance's very claim, so the fence
    // compare holds; the history lost slot 12.
    stop_and_restore(&mut etcd, &snapshot);

    // Before: the next vote (slot 13) found the record changed, re-read the
    // older history and adopted it; Skip(12) was then signed, a slashable
    // pair with the Notarize and Finalize already signed in slot 12.
    let skip_13 = [v(13, VoteKind::Skip)];
    let next = retry_unavailable(|| g.vote(&skip_13, None)).await;
    assert!(is_regressed(&next, &key), "{next:?}");
    let skip_12 = g.vote(&[v(12, VoteKind::Skip)], None).await;
    assert!(skip_12.is_err(), "slashable pair signed: {skip_12:?}");
    // Every later vote and load is refused too, until an operator repairs
    // the store.
    assert!(is_regressed(
        &g.vote(&[v(14, VoteKind::Skip)], None).await,
        &key
    ));
    assert!(is_regressed(&g.storage().load().await, &key));
    // Nothing was written over the restored history.
    let raw = EtcdVoteHistory::read_unfenced(&client, node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.last_voted_slot(), Some(11));
    assert!(!own.is_lost(), "a regression is not a loss of ownership");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_snapshot_restore_the_old_owner_cannot_vote_while_a_standby_owns_the_identity() {
    let mut etcd = EtcdCluster::single();
    let snapshot = etcd.scratch_dir().join("before.db");
    let prefix = "/ag-restore-standby";
    let node = NodeKeypair::from_seed([0x72; 32]).node_id();
    let mut raw = raw(&etcd).await;
    raw.put("/unrelated", "x", None).await.unwrap();
    etcd.snapshot_save(0, &snapshot);

    // The primary takes the identity and votes, after the snapshot.
    let client_a = client(&etcd, prefix).await;
    let primary = identity(&client_a, node, "primary", LONG_TTL);
    let own_a = primary.take_over().await.unwrap();
    let fence = own_a.fence() as i64;
    let a = guard(EtcdVoteHistory::open(&primary, &own_a).await.unwrap());
    a.start_history(SV, 10).await.unwrap();
    for slot in 11..14 {
        a.vote(&[v(slot, VoteKind::Notarize([slot as u8; 32]))], None)
            .await
            .unwrap();
    }

    // Restored under the running primary; the standby's claim lands at
    // exactly the primary's fence revision.
    stop_and_restore(&mut etcd, &snapshot);
    let mut raw = etcd_util::raw(&etcd).await;
    pad_to(&mut raw, fence).await;
    let client_b = client(&etcd, prefix).await;
    let standby = identity(&client_b, node, "standby", LONG_TTL);
    let own_b = standby.take_over().await.unwrap();
    assert_eq!(
        own_b.fence() as i64,
        fence,
        "test set-up: the standby's claim must reuse the primary's fence revision"
    );

    // The old primary's next vote: its fence revision matches, but the
    // identity is the standby's. Refused, and the loss is marked.
    let skip_14 = [v(14, VoteKind::Skip)];
    let stale = retry_unavailable(|| a.vote(&skip_14, None)).await;
    match stale {
        Err(Error::Fenced { reason, .. }) => assert!(reason.contains("standby"), "{reason}"),
        other => panic!("the old owner voted while the standby owns the identity: {other:?}"),
    }
    assert!(own_a.is_lost());

    // The standby finds no history (the snapshot predates it): it refuses
    // to vote (a Notarize(13) for another block would be slashable) until
    // an operator imports the old owner's history or starts one with
    // evidence; it never starts one by itself.
    let b = guard(EtcdVoteHistory::open(&standby, &own_b).await.unwrap());
    let err = b
        .vote(&[v(13, VoteKind::Notarize([0x99; 32]))], None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Alpenglow(AlpenglowRefusal::NoHistory { .. }))
        ),
        "{err}"
    );
    assert!(!own_b.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_vote_history_key_is_refused_not_believed() {
    let etcd = EtcdCluster::single();
    let prefix = "/ag-deleted";
    let node = NodeKeypair::from_seed([0x73; 32]).node_id();
    let client = client(&etcd, prefix).await;
    let key = client.keys().vote_history(&node);
    let id = identity(&client, node, "validator", LONG_TTL);
    let own = id.take_over().await.unwrap();
    let g = guard(EtcdVoteHistory::open(&id, &own).await.unwrap());
    g.start_history(SV, 10).await.unwrap();
    g.vote(&[v(11, VoteKind::Notarize([1; 32]))], None)
        .await
        .unwrap();

    etcd.etcdctl(0, &["del", &key]);

    // Before: the guard re-read "no history" and refused only for want of
    // one; an operator's `start_history` then let slot 11 be voted again.
    // Now the store itself is refused, and a new history cannot be made.
    assert!(is_regressed(
        &g.vote(&[v(12, VoteKind::Skip)], None).await,
        &key
    ));
    assert!(is_regressed(
        &g.vote(&[v(11, VoteKind::Skip)], None).await,
        &key
    ));
    assert!(is_regressed(&g.storage().load().await, &key));
    assert!(is_regressed(&g.start_history(SV, 5).await, &key));
    assert!(
        etcd.etcdctl(0, &["get", &key]).trim().is_empty(),
        "nothing was written"
    );
    assert!(!own.is_lost());
}
