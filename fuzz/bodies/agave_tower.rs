// Fuzz body for the Agave tower decoders, shared by the cargo-fuzz target
// and the `fuzz_smoke` test. Any input: no panic, and whatever decodes must
// re-encode to exactly the same bytes.

/// Run every Agave tower decoder over `data`.
pub fn agave_tower(data: &[u8]) {
    use slashguard::agave::{AgaveTower, FileKind, SavedTower, TowerLayout};

    for kind in [FileKind::V1_9, FileKind::Legacy] {
        if let Ok(saved) = SavedTower::decode_unverified(data, kind) {
            assert!(saved.encode() == data, "a decoded file re-encodes to itself");
            let layout = saved.format().layout();
            let again = saved.tower().encode(layout);
            assert!(again.as_deref() == Ok(saved.data()), "its tower re-encodes to its data");
            let checked = SavedTower::decode(data, kind, &saved.node());
            assert_eq!(checked.is_ok(), saved.verify().is_ok());
        }
    }
    for layout in [TowerLayout::V1_7_14, TowerLayout::V1_14_11] {
        if let Ok(tower) = AgaveTower::decode(data, layout) {
            let again = tower.encode(layout);
            assert!(again.as_deref() == Ok(data), "tower data re-encodes to itself");
            if let Ok(Some(update)) = tower.tower_update() {
                assert_eq!(Some(update.vote), tower.last_vote_ref());
                let again = AgaveTower::decode(&update.tower, TowerLayout::V1_14_11);
                assert!(again.as_ref() == Ok(&tower), "the update holds the same tower");
            }
        }
    }
}
