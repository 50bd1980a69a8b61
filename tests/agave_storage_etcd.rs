//! The Agave `TowerStorage` adapter through Agave's call sequence on a real
//! etcd: load at start, store before each vote, take over at set-identity,
//! the old owner fenced ("stop voting now"), the new owner loading the
//! exact bytes; and the blocking facade with clients built on its own
//! runtime or refused when built on a current-thread runtime elsewhere.

#[path = "common/etcd_harness.rs"]
mod etcd_harness;
#[path = "common/etcd_util.rs"]
mod etcd_util;

use std::time::Duration;

use etcd_harness::EtcdCluster;
use etcd_util::*;
use slashguard::agave::{
    AgaveStorageError, AgaveTower, AgaveTowerStorage, LastVote, Lockout, SavedTower, TowerSync,
};
use slashguard::blocking::Blocking;
use slashguard::etcd::{EtcdClient, EtcdIdentity, EtcdTowerStorage};
use slashguard::{Error, NodeKeypair, Ownership};

const SEED: [u8; 32] = [0x43; 32];

fn agave_tower(kp: &NodeKeypair, slot: u64, hash: u8) -> Vec<u8> {
    let lockouts: Vec<Lockout> = (0..2)
        .map(|i| Lockout {
            slot: slot - 1 + i,
            confirmation_count: 2 - i as u32,
        })
        .collect();
    let mut tower = AgaveTower::new(kp.node_id());
    tower.vote_state.votes = lockouts.clone();
    tower.vote_state.root_slot = Some(1);
    tower.last_vote = LastVote::TowerSync(TowerSync {
        lockouts,
        root: Some(1),
        hash: [hash; 32],
        timestamp: None,
        block_id: [9; 32],
    });
    SavedTower::sign(tower, kp).unwrap().encode()
}

/// One validator instance as an Agave integration holds it: the identity
/// handle, its ownership, and the adapter, all living on the blocking
/// facade's runtime.
struct Instance {
    _identity: EtcdIdentity,
    ownership: Ownership,
    adapter: AgaveTowerStorage<EtcdTowerStorage>,
}

/// `set-identity` on `name`: connect, take the identity over, open the
/// fenced store, all on the facade's own runtime.
fn take_over(etcd: &EtcdCluster, name: &str) -> Blocking<Instance> {
    let config = config(etcd, "/agave");
    let name = name.to_string();
    Blocking::build(|| async move {
        let client = EtcdClient::connect(config).await?;
        let kp = NodeKeypair::from_seed(SEED);
        let identity = identity(&client, kp.node_id(), &name, Duration::from_secs(5));
        let ownership = identity.take_over().await?;
        let storage = EtcdTowerStorage::open(&identity, &ownership).await?;
        Ok(Instance {
            _identity: identity,
            ownership,
            adapter: AgaveTowerStorage::new(storage, kp)?,
        })
    })
    .unwrap()
}

fn store(i: &Blocking<Instance>, bytes: &[u8]) -> Result<(), AgaveStorageError> {
    i.block_on(i.inner().adapter.store(bytes))
        .unwrap()
        .map(|_| ())
}

fn load(i: &Blocking<Instance>) -> Result<Vec<u8>, AgaveStorageError> {
    let node = i.inner().adapter.node();
    i.block_on(i.inner().adapter.load(&node))
        .unwrap()
        .map(|t| t.encode())
}

#[test]
fn agaves_call_sequence_with_set_identity_on_etcd() {
    let etcd = EtcdCluster::single();
    let agave = NodeKeypair::from_seed(SEED);

    let a = take_over(&etcd, "primary");
    assert!(load(&a).unwrap_err().is_not_found());
    let mut last = Vec::new();
    for slot in 10..20 {
        last = agave_tower(&agave, slot, slot as u8);
        store(&a, &last).unwrap();
        assert_eq!(load(&a).unwrap(), last);
    }
    let e = store(&a, &agave_tower(&agave, 15, 15)).unwrap_err();
    assert!(matches!(e, AgaveStorageError::Refused(_)), "{e}");

    // set-identity: the secondary takes over; it loads exactly the last
    // tower the primary stored.
    let b = take_over(&etcd, "secondary");
    assert_eq!(load(&b).unwrap(), last);
    // The old owner is fenced: its next store is "stop voting now", and
    // its ownership says it is lost.
    let e = store(&a, &agave_tower(&agave, 20, 20)).unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(e.to_string().starts_with("stop voting now"), "{e}");
    assert!(a.inner().ownership.lost_reason().is_some());
    // The new owner votes on.
    let next = agave_tower(&agave, 20, 20);
    store(&b, &next).unwrap();
    assert_eq!(load(&b).unwrap(), next);
}

#[test]
fn a_client_built_on_an_idle_current_thread_runtime_is_refused_not_timed_out() {
    let etcd = EtcdCluster::single();
    let kp = NodeKeypair::from_seed(SEED);
    let node = kp.node_id();
    let config = config(&etcd, "/rt");
    // Built the way a synchronous program might: on a throwaway
    // current-thread runtime, then handed to the blocking facade.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(EtcdClient::connect(config)).unwrap();
    let id = identity(&client, node, "sync", Duration::from_secs(5));
    let (ownership, storage) = rt.block_on(async {
        let ownership = id.take_over().await.unwrap();
        let storage = EtcdTowerStorage::open(&id, &ownership).await.unwrap();
        (ownership, storage)
    });
    let adapter = Blocking::new(AgaveTowerStorage::new(storage, kp).unwrap()).unwrap();
    let started = std::time::Instant::now();
    match adapter.store(&agave_tower(&NodeKeypair::from_seed(SEED), 10, 1)) {
        Err(AgaveStorageError::Failed(Error::Config(text))) => {
            assert!(text.contains("Blocking::build"), "{text}")
        }
        other => panic!("expected a configuration refusal, got {other:?}"),
    }
    assert!(started.elapsed() < within_deadline());
    drop((ownership, rt));
}
