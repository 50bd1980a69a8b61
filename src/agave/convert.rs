//! Between an Agave tower file and slashguard's [`TowerRecord`].
//!
//! The record's opaque tower bytes hold the Agave tower `data` in the
//! current (1.14.11) layout, so nothing of the tower is lost; the record's
//! last vote (slot and bank hash) and root are read from that tower, as
//! Agave reads them: the last vote's newest slot and hash, and the vote
//! state's root slot.

use crate::agave::envelope::{FileKind, SavedTower};
use crate::agave::error::AgaveError;
use crate::agave::tower::{AgaveTower, TowerLayout};
use crate::identity::NodeKeypair;
use crate::tower::{TowerBytesKind, TowerRecord, TowerUpdate, VoteRef};

fn describe_vote(vote: Option<VoteRef>) -> String {
    match vote {
        Some(v) => format!(
            "slot {} hash {}",
            v.slot,
            bs58::encode(v.hash).into_string()
        ),
        None => "no vote".to_string(),
    }
}

fn describe_root(root: Option<u64>) -> String {
    root.map_or_else(|| "no root".to_string(), |r| format!("slot {r}"))
}

impl AgaveTower {
    /// The tower as a [`TowerUpdate`] for
    /// [`VoteGuard::vote`](crate::tower::VoteGuard::vote): its last vote,
    /// its root, and its data in the current layout. `None` before the
    /// tower's first vote (there is nothing to guard).
    pub fn tower_update(&self) -> Result<Option<TowerUpdate>, AgaveError> {
        let Some(vote) = self.last_vote_ref() else {
            return Ok(None);
        };
        Ok(Some(TowerUpdate {
            vote,
            root: self.root(),
            tower: self.encode(TowerLayout::V1_14_11)?,
        }))
    }
}

impl SavedTower {
    /// Convert to a tower record signed by `identity`, which must be the
    /// tower's node. The file's signature is checked first: only a tower
    /// the node signed becomes a record. A file in an older envelope is
    /// stored in the current layout (as Agave itself upgrades it on load).
    pub fn to_record(&self, identity: &NodeKeypair) -> Result<TowerRecord, AgaveError> {
        if identity.node_id() != self.node() {
            return Err(AgaveError::ForeignNode {
                expected: identity.node_id(),
                found: self.node(),
            });
        }
        self.verify()?;
        let tower = self.tower();
        let data = if self.format().layout() == TowerLayout::V1_14_11 {
            self.data().to_vec()
        } else {
            tower.encode(TowerLayout::V1_14_11)?
        };
        TowerRecord::sign_as(
            identity,
            tower.last_vote_ref(),
            tower.root(),
            data,
            TowerBytesKind::AgaveTowerData,
            None,
        )
        .map_err(AgaveError::Record)
    }

    /// The Agave tower file a stored record stands for, whatever wrote it:
    /// the stored file itself, byte for byte, when the record holds one
    /// ([`TowerBytesKind::AgaveSavedTower`], checked against the record's
    /// node, signature, last vote and root); otherwise the file
    /// [`from_record`](Self::from_record) rebuilds from Agave tower data. A
    /// record whose bytes are the validator's own format is
    /// [`AgaveError::OpaqueTower`].
    pub fn from_stored(record: &TowerRecord, identity: &NodeKeypair) -> Result<Self, AgaveError> {
        match record.tower_kind() {
            TowerBytesKind::AgaveSavedTower => {
                if !record.verify() {
                    return Err(AgaveError::BadSignature {
                        node: record.node(),
                    });
                }
                let saved =
                    SavedTower::decode(record.tower_bytes(), FileKind::V1_9, &record.node())?;
                check_summary(record, saved.tower())?;
                Ok(saved)
            }
            // Records written before the kind existed may hold Agave data
            // (`to_record` of an earlier release): those still convert.
            TowerBytesKind::Opaque
                if AgaveTower::decode(record.tower_bytes(), TowerLayout::V1_14_11).is_err() =>
            {
                Err(AgaveError::OpaqueTower {
                    node: record.node(),
                })
            }
            _ => Self::from_record(record, identity),
        }
    }

    /// Rebuild the Agave file from a tower record, signed by `identity` in
    /// the current envelope. The record must verify, belong to `identity`,
    /// hold an Agave tower of that node in its tower bytes, and state the
    /// same last vote and root as that tower
    /// ([`AgaveError::RecordMismatch`] otherwise).
    ///
    /// ed25519 signatures are deterministic, so a file converted to a
    /// record and back is byte-for-byte the original (for a file in the
    /// current envelope).
    pub fn from_record(record: &TowerRecord, identity: &NodeKeypair) -> Result<Self, AgaveError> {
        if !record.verify() {
            return Err(AgaveError::BadSignature {
                node: record.node(),
            });
        }
        if identity.node_id() != record.node() {
            return Err(AgaveError::ForeignNode {
                expected: identity.node_id(),
                found: record.node(),
            });
        }
        let tower = AgaveTower::decode(record.tower_bytes(), TowerLayout::V1_14_11)?;
        if tower.node_pubkey != record.node() {
            return Err(AgaveError::ForeignNode {
                expected: record.node(),
                found: tower.node_pubkey,
            });
        }
        check_summary(record, &tower)?;
        SavedTower::sign(tower, identity)
    }
}

/// The record's last vote and root are the tower's.
fn check_summary(record: &TowerRecord, tower: &AgaveTower) -> Result<(), AgaveError> {
    if tower.last_vote_ref() != record.last_vote() {
        return Err(AgaveError::RecordMismatch {
            field: "last vote",
            record: describe_vote(record.last_vote()),
            tower: describe_vote(tower.last_vote_ref()),
        });
    }
    if tower.root() != record.root() {
        return Err(AgaveError::RecordMismatch {
            field: "root",
            record: describe_root(record.root()),
            tower: describe_root(tower.root()),
        });
    }
    Ok(())
}
