//! Group commit of `FileWatermarks`: concurrent authorizations share one
//! `fdatasync`, each is answered only after the `fdatasync` covering it
//! returned, each is decided against the ones before it, and a failed
//! write fails the whole group.
//!
//! The `fdatasync`s of the real data file are counted, held or failed at
//! the storage seam (`file::sim::DiskFaults`). Holding the sync of one
//! authorization while others are queued makes the groups deterministic:
//! `tokio::join!` polls its futures in order, so every call it holds is
//! queued before the branch that releases the sync runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slashguard::file::sim::DiskFaults;
use slashguard::file::FileWatermarks;
use slashguard::watermark::{
    ConsensusKind, Curve, Decision, KeyHash, Mark, PayloadHash, SetMode, SignRequest, SignerGuard,
    WatermarkKey,
};
use slashguard::Error;

fn key(i: u8) -> KeyHash {
    KeyHash {
        curve: Curve::Ed25519,
        hash: [i; 20],
    }
}

fn wm_key(i: u8) -> WatermarkKey {
    WatermarkKey {
        chain: common::MAINNET,
        key: key(i),
        kind: ConsensusKind::Attestation,
    }
}

fn attestation(k: u8, level: u32, variant: u8) -> SignRequest {
    let bytes = common::consensus(
        ConsensusKind::Attestation,
        Curve::Ed25519,
        common::MAINNET,
        level,
        0,
        variant,
    );
    SignRequest::parse(&bytes, key(k)).unwrap()
}

/// A new store at `dir/hwm` whose syncs are counted (and can be held).
fn store(dir: &tempfile::TempDir) -> (Arc<FileWatermarks>, Arc<DiskFaults>) {
    let path = dir.path().join("hwm");
    let faults = DiskFaults::install(&path);
    let wm = FileWatermarks::create(&path).unwrap();
    (Arc::new(wm), faults)
}

/// Authorize `request` in a task of its own; its sync is held until
/// released, so that the calls made next are queued behind it.
async fn hold_one_sync(
    wm: &Arc<FileWatermarks>,
    faults: &DiskFaults,
    request: SignRequest,
) -> tokio::task::JoinHandle<slashguard::Result<Vec<Decision>>> {
    faults.hang_syncs();
    let wm = Arc::clone(wm);
    let blocker = tokio::spawn(async move { wm.authorize(&[request]).await });
    let end = Instant::now() + Duration::from_secs(10);
    while faults.hung() == 0 {
        assert!(Instant::now() < end, "the first sync never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    blocker
}

/// One authorization (the request owned by the future, for `join!`).
async fn auth(wm: &FileWatermarks, request: SignRequest) -> slashguard::Result<Vec<Decision>> {
    wm.authorize(&[request]).await
}

async fn raise(wm: &FileWatermarks, k: u8, level: u32) -> slashguard::Result<()> {
    wm.set_marks(&[(wm_key(k), Mark::level(level))], SetMode::RaiseOnly)
        .await
}

fn advanced(got: &slashguard::Result<Vec<Decision>>) -> bool {
    matches!(got.as_deref(), Ok([Decision::Advanced]))
}

/// Two requests for one (key, level) with different payloads, in one
/// group: the second is decided against the first's staged, not yet
/// durable, advance and refused. Exactly one is authorized.
#[tokio::test]
async fn one_mark_two_payloads_in_one_group_exactly_one_is_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let (wm, faults) = store(&dir);
    let before = faults.syncs();
    let blocker = hold_one_sync(&wm, &faults, attestation(9, 1, 0)).await;
    let (a, b, ()) = tokio::join!(
        auth(&wm, attestation(1, 5, 1)),
        auth(&wm, attestation(1, 5, 2)),
        async { faults.release_syncs() },
    );
    assert!(advanced(&blocker.await.unwrap()));
    assert!(advanced(&a), "{a:?}");
    let refused = b.unwrap_err();
    assert!(refused.is_refusal(), "{refused}");
    assert_eq!(
        faults.syncs() - before,
        2,
        "the blocker's sync, then ONE for the group"
    );
    let w = wm.watermark(&wm_key(1)).await.unwrap().unwrap();
    assert_eq!(w.mark, Mark::level(5));
    assert_eq!(w.payload_hash, attestation(1, 5, 1).payload_hash.into());

    // The same payload twice in one group: an advance, then its repeat.
    let blocker = hold_one_sync(&wm, &faults, attestation(9, 2, 0)).await;
    let (a, b, ()) = tokio::join!(
        auth(&wm, attestation(1, 6, 1)),
        auth(&wm, attestation(1, 6, 1)),
        async { faults.release_syncs() },
    );
    assert!(advanced(&blocker.await.unwrap()));
    assert!(advanced(&a), "{a:?}");
    assert_eq!(b.unwrap(), vec![Decision::Repeat]);
}

/// Calls on one key keep their order inside a group, and a `set_marks` in
/// between is not overtaken.
#[tokio::test]
async fn order_is_kept_within_and_across_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (wm, faults) = store(&dir);
    let before = faults.syncs();
    let blocker = hold_one_sync(&wm, &faults, attestation(9, 1, 0)).await;
    let (l1, l2, l3, ()) = tokio::join!(
        auth(&wm, attestation(1, 1, 1)),
        auth(&wm, attestation(1, 2, 1)),
        auth(&wm, attestation(1, 3, 1)),
        async { faults.release_syncs() },
    );
    assert!(advanced(&blocker.await.unwrap()));
    for (level, got) in [(1, l1), (2, l2), (3, l3)] {
        assert!(advanced(&got), "level {level}: {got:?}");
    }
    assert_eq!(faults.syncs() - before, 2);

    let blocker = hold_one_sync(&wm, &faults, attestation(9, 2, 0)).await;
    let (a, raise, b, ()) = tokio::join!(
        auth(&wm, attestation(1, 10, 1)),
        raise(&wm, 1, 20),
        auth(&wm, attestation(1, 15, 1)),
        async { faults.release_syncs() },
    );
    assert!(advanced(&blocker.await.unwrap()));
    assert!(advanced(&a), "{a:?}");
    raise.unwrap();
    assert!(b.unwrap_err().is_refusal(), "decided after the raise to 20");
}

/// A group whose `fdatasync` fails: every authorization of it fails, none
/// is visible, the store refuses further writes, and a reopened store
/// holds the group entirely or not at all.
#[tokio::test]
async fn a_failed_sync_fails_the_whole_group_and_keeps_the_durable_state() {
    let dir = tempfile::tempdir().unwrap();
    let (wm, faults) = store(&dir);
    wm.authorize(&[
        attestation(1, 1, 1),
        attestation(2, 1, 1),
        attestation(3, 1, 1),
    ])
    .await
    .unwrap();
    let durable = wm.watermarks().await.unwrap();
    let blocker = hold_one_sync(&wm, &faults, attestation(9, 1, 0)).await;
    let (a, b, c, ()) = tokio::join!(
        auth(&wm, attestation(1, 2, 1)),
        auth(&wm, attestation(2, 2, 1)),
        // Refused on its own merits, but answered with the group's outcome.
        auth(&wm, attestation(3, 1, 7)),
        async {
            faults.fail_next_sync();
            faults.release_syncs();
        },
    );
    assert!(
        advanced(&blocker.await.unwrap()),
        "written before the failure"
    );
    for got in [&a, &b, &c] {
        assert!(
            matches!(got, Err(Error::Unavailable { .. })),
            "every call of the failed group fails: {got:?}"
        );
    }
    // In memory: the last durable state (the blocker's key 9 included).
    let now: BTreeMap<_, _> = wm.watermarks().await.unwrap().into_iter().collect();
    for (k, w) in &durable {
        assert_eq!(now.get(k), Some(w), "{k}");
    }
    assert_eq!(now.len(), durable.len() + 1);
    let later = wm.authorize(&[attestation(4, 1, 1)]).await;
    assert!(matches!(later, Err(Error::Unavailable { .. })), "{later:?}");
    drop(wm);

    // The failed group's record was written before its sync failed: the
    // reopened file may hold it (nobody was told), but all of it or none.
    let wm = FileWatermarks::open(dir.path().join("hwm")).unwrap();
    let mut levels = BTreeSet::new();
    for k in [1, 2] {
        levels.insert(wm.watermark(&wm_key(k)).await.unwrap().unwrap().mark.level);
    }
    assert_eq!(levels.len(), 1, "part of a group: {levels:?}");
    assert!(wm.watermark(&wm_key(4)).await.unwrap().is_none());
}

const CLIENTS: u8 = 64;
const KEYS: u8 = 100;
const ROUNDS: u32 = 8;

/// 64 concurrent clients over 100 keys, pairs of them competing for the
/// same marks with different payloads: every decision is right, no mark is given to two
/// payloads, the table is what the decisions say, and the clients shared
/// `fdatasync`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_fdatasyncs_and_every_decision_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let (wm, faults) = store(&dir);
    // A slow disk, so that clients queue behind each write as they would
    // behind a real one (tmpfs flushes in microseconds).
    faults.delay_syncs(Duration::from_millis(2));
    let before = faults.syncs();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let wm = Arc::clone(&wm);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for r in 0..ROUNDS {
                    // Clients 2i and 2i + 1 ask for the same mark with
                    // different payloads: at most one may get it.
                    let k = ((c as u32 / 2 + r * 13) % KEYS as u32) as u8;
                    let request = attestation(k, r + 1, c);
                    let got = wm.authorize(&[request]).await;
                    seen.push((k, r + 1, request.payload_hash, got));
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let requests = seen.len() as u64;
    let syncs = faults.syncs() - before;

    // (key, level) -> the payload authorized there; (key, level) refused.
    let mut authorized: BTreeMap<(u8, u32), PayloadHash> = BTreeMap::new();
    let mut refused = Vec::new();
    for (k, level, payload, got) in &seen {
        match got {
            Ok(d) => {
                assert_eq!(
                    d,
                    &vec![Decision::Advanced],
                    "distinct payloads never repeat"
                );
                let other = authorized.insert((*k, *level), *payload);
                assert!(other.is_none(), "key {k} level {level} authorized twice");
            }
            Err(e) => {
                assert!(e.is_refusal(), "only refusals: {e}");
                refused.push((*k, *level));
            }
        }
    }
    assert!(
        refused.len() >= (CLIENTS as usize / 2) * ROUNDS as usize,
        "one of each competing pair is refused"
    );
    // A refusal is right only if that key was authorized at or above.
    for (k, level) in refused {
        assert!(
            authorized
                .range((k, level)..=(k, u32::MAX))
                .next()
                .is_some(),
            "key {k} level {level} refused with no mark at or above it"
        );
    }
    // The table holds, for each key, its highest authorization.
    let table: BTreeMap<_, _> = wm.watermarks().await.unwrap().into_iter().collect();
    for k in 0..KEYS {
        let top = authorized.range((k, 0)..=(k, u32::MAX)).next_back();
        match (top, table.get(&wm_key(k))) {
            (None, None) => {}
            (Some(((_, level), payload)), Some(w)) => {
                assert_eq!(w.mark, Mark::level(*level), "key {k}");
                assert_eq!(w.payload_hash, Some(*payload), "key {k}");
            }
            (top, w) => panic!("key {k}: authorized {top:?}, stored {w:?}"),
        }
    }
    assert!(
        syncs < requests,
        "{syncs} fdatasyncs for {requests} requests: no group commit"
    );
    println!(
        "{requests} requests, {} authorized, {syncs} fdatasyncs",
        authorized.len()
    );

    // Durable: the reopened file holds the same table.
    drop(wm);
    let reopened = FileWatermarks::open(dir.path().join("hwm")).unwrap();
    let again: BTreeMap<_, _> = reopened.watermarks().await.unwrap().into_iter().collect();
    assert_eq!(again, table);
}
