//! The signed envelope of an Agave vote history file: `u32` variant of
//! `SavedVoteHistoryVersions` (0, `Current`, the only one), the identity's
//! 64-byte ed25519 signature over `data`, `u64` length, `data` (the
//! history, whose first field is the identity). The identity is not in
//! the envelope itself.

use std::fmt;

use crate::agave::vote_history::error::VoteHistoryFileError;
use crate::agave::vote_history::layout::{AgaveVoteHistory, HistoryLayout};
use crate::identity::{NodeId, NodeKeypair};

/// Bytes of the envelope around `data`.
pub const ENVELOPE_BYTES: usize = 4 + 64 + 8;

/// The largest vote history file read or stored: it must fit one etcd
/// request (etcd's default limit is 1.5 MiB) with room to spare. Agave
/// prunes its history below the finalized root, so a healthy validator's
/// file is a few KiB.
pub const MAX_VOTE_HISTORY_FILE_BYTES: usize = 1 << 20;

/// The largest file Firedancer's `set-identity --vote-history-file` reads
/// (its `AG_VOTE_HISTORY_FILE_MAX`: one admin request).
pub const FIREDANCER_IMPORT_LIMIT: usize = 32_688;

/// A decoded Agave vote history file: envelope, signed `data`, the layout
/// it was read in, and the history.
///
/// A value is decoded from bytes or signed by the identity
/// ([`sign`](Self::sign)); its `data` and history always agree, so
/// [`encode`](Self::encode) gives back exactly the bytes it was decoded
/// from.
#[derive(Clone, PartialEq, Eq)]
pub struct SavedVoteHistory {
    layout: HistoryLayout,
    signature: [u8; 64],
    data: Vec<u8>,
    history: AgaveVoteHistory,
}

impl fmt::Debug for SavedVoteHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedVoteHistory")
            .field("layout", &self.layout)
            .field("node", &self.history.node)
            .field("root", &self.history.root)
            .field("last_voted_slot", &self.history.last_voted_slot())
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Split the envelope into the signature and the data after it.
fn envelope(bytes: &[u8]) -> Result<([u8; 64], &[u8]), VoteHistoryFileError> {
    let bad = |detail: String| VoteHistoryFileError::Envelope { detail };
    if bytes.is_empty() {
        return Err(VoteHistoryFileError::Empty);
    }
    if bytes.len() > MAX_VOTE_HISTORY_FILE_BYTES {
        return Err(VoteHistoryFileError::TooLarge {
            len: bytes.len(),
            max: MAX_VOTE_HISTORY_FILE_BYTES,
        });
    }
    if bytes.len() < ENVELOPE_BYTES {
        return Err(bad(format!(
            "{} bytes, shorter than the {ENVELOPE_BYTES}-byte envelope",
            bytes.len()
        )));
    }
    let variant = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if variant != 0 {
        return Err(bad(format!(
            "SavedVoteHistoryVersions variant {variant}; this build knows only 0 (Current)"
        )));
    }
    let signature: [u8; 64] = bytes[4..68].try_into().expect("64 bytes");
    let len = u64::from_le_bytes(bytes[68..76].try_into().expect("8 bytes"));
    let have = (bytes.len() - ENVELOPE_BYTES) as u64;
    if len != have {
        return Err(bad(format!(
            "data length {len} at offset 68, but {have} bytes follow the envelope"
        )));
    }
    Ok((signature, &bytes[ENVELOPE_BYTES..]))
}

impl SavedVoteHistory {
    /// Decode and verify the file of identity `expected`, in `layout`, as
    /// Agave's loader does and stricter: the signature must verify
    /// (strictly) under `expected`, the history must be `expected`'s,
    /// every byte must be read and re-encode to itself, and the history
    /// must hold together ([`AgaveVoteHistory::check`]).
    pub fn decode(
        bytes: &[u8],
        layout: HistoryLayout,
        expected: &NodeId,
    ) -> Result<Self, VoteHistoryFileError> {
        let saved = Self::decode_unverified(bytes, layout)?;
        if saved.node() != *expected {
            return Err(VoteHistoryFileError::ForeignNode {
                expected: *expected,
                found: saved.node(),
            });
        }
        saved.verify()?;
        saved.history.check()?;
        Ok(saved)
    }

    /// [`decode`](Self::decode) in whichever layout this build knows the
    /// bytes are in. Refused when none fits (naming every known layout),
    /// and when several fit but disagree on the votes or the root (only a
    /// history with no vote at all reads the same in every layout; then
    /// the newest layout is taken).
    pub fn decode_any(bytes: &[u8], expected: &NodeId) -> Result<Self, VoteHistoryFileError> {
        let mut fits = Vec::new();
        let mut first_err = None;
        for layout in HistoryLayout::ALL {
            match Self::decode(bytes, layout, expected) {
                Ok(s) => fits.push(s),
                // Not a layout question: the same answer in every layout.
                Err(
                    e @ (VoteHistoryFileError::Empty
                    | VoteHistoryFileError::TooLarge { .. }
                    | VoteHistoryFileError::Envelope { .. }
                    | VoteHistoryFileError::BadSignature { .. }
                    | VoteHistoryFileError::ForeignNode { .. }),
                ) => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match fits.len() {
            0 => Err(match first_err {
                Some(VoteHistoryFileError::NotInLayout { .. }) | None => {
                    VoteHistoryFileError::NotInLayout {
                        layout: HistoryLayout::ALL[0],
                        detail: "it decodes in none of them".into(),
                        known: HistoryLayout::known(),
                    }
                }
                Some(other) => other,
            }),
            1 => Ok(fits.remove(0)),
            _ => {
                let same = fits.windows(2).all(|w| {
                    w[0].history.root == w[1].history.root && w[0].votes(0) == w[1].votes(0)
                });
                if same {
                    Ok(fits.remove(0))
                } else {
                    Err(VoteHistoryFileError::Ambiguous {
                        layouts: fits
                            .iter()
                            .map(|s| s.layout.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
    }

    /// Decode in `layout` without checking identity, signature or
    /// consistency (inspection). Check [`verify`](Self::verify) before
    /// trusting it.
    pub fn decode_unverified(
        bytes: &[u8],
        layout: HistoryLayout,
    ) -> Result<Self, VoteHistoryFileError> {
        let (signature, data) = envelope(bytes)?;
        let history = AgaveVoteHistory::decode(data, layout, ENVELOPE_BYTES)?;
        Ok(SavedVoteHistory {
            layout,
            signature,
            data: data.to_vec(),
            history,
        })
    }

    /// Sign `history` with the identity, in `layout`, as Agave writes it.
    /// The history must be the identity's own, encodable in `layout`, and
    /// consistent: the identity never signs bytes chosen by the caller.
    pub fn sign(
        history: AgaveVoteHistory,
        layout: HistoryLayout,
        identity: &NodeKeypair,
    ) -> Result<Self, VoteHistoryFileError> {
        if history.node != identity.node_id() {
            return Err(VoteHistoryFileError::ForeignNode {
                expected: identity.node_id(),
                found: history.node,
            });
        }
        history.check()?;
        let data = history.encode(layout)?;
        if data.len() + ENVELOPE_BYTES > MAX_VOTE_HISTORY_FILE_BYTES {
            return Err(VoteHistoryFileError::TooLarge {
                len: data.len() + ENVELOPE_BYTES,
                max: MAX_VOTE_HISTORY_FILE_BYTES,
            });
        }
        let signature = identity.sign(&data);
        Ok(SavedVoteHistory {
            layout,
            signature,
            data,
            history,
        })
    }

    /// Check the signature over `data` under the history's identity,
    /// strictly.
    pub fn verify(&self) -> Result<(), VoteHistoryFileError> {
        let node = self.node();
        if node.verify_strict(&self.data, &self.signature) {
            Ok(())
        } else {
            Err(VoteHistoryFileError::BadSignature { node })
        }
    }

    /// The file's bytes, exactly as decoded or as Agave would write them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_BYTES + self.data.len());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// The file's size in bytes.
    pub fn len(&self) -> usize {
        ENVELOPE_BYTES + self.data.len()
    }

    /// Always `false`: a file has at least its envelope and identity.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The layout it was read or signed in.
    pub fn layout(&self) -> HistoryLayout {
        self.layout
    }
    /// The identity whose history it is.
    pub fn node(&self) -> NodeId {
        self.history.node
    }
    /// The finalized root.
    pub fn root(&self) -> u64 {
        self.history.root
    }
    /// The signature over [`data`](Self::data).
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    /// The signed history bytes (what Agave deserializes into its
    /// `VoteHistory`).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The decoded history.
    pub fn history(&self) -> &AgaveVoteHistory {
        &self.history
    }
    /// Every vote it says was cast ([`AgaveVoteHistory::votes`]).
    pub fn votes(&self, shred_version: u16) -> Vec<crate::alpenglow::Vote> {
        self.history.votes(shred_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agave::vote_history::layout::SavedVote;
    use crate::alpenglow::VoteKind;

    fn history(kp: &NodeKeypair, sv: Option<u16>) -> AgaveVoteHistory {
        let mut h = AgaveVoteHistory::new(kp.node_id(), 10);
        h.add_vote(SavedVote {
            slot: 11,
            kind: VoteKind::Notarize([1; 32]),
            shred_version: sv,
        });
        h
    }

    #[test]
    fn envelope_layout_and_roundtrip() {
        let kp = NodeKeypair::from_seed([3; 32]);
        for (layout, sv) in [
            (HistoryLayout::VoteEnum, None),
            (HistoryLayout::SignedPayload, Some(7)),
        ] {
            let saved = SavedVoteHistory::sign(history(&kp, sv), layout, &kp).unwrap();
            let bytes = saved.encode();
            assert_eq!(bytes[..4], [0; 4]);
            assert_eq!(bytes[4..68], saved.signature()[..]);
            assert_eq!(bytes[68..76], (saved.data().len() as u64).to_le_bytes());
            assert_eq!(&bytes[76..108], kp.node_id().as_bytes());
            assert!(kp.node_id().verify(saved.data(), saved.signature()));
            let back = SavedVoteHistory::decode(&bytes, layout, &kp.node_id()).unwrap();
            assert_eq!(back, saved);
            assert_eq!(back.encode(), bytes);
            assert_eq!(
                SavedVoteHistory::decode_any(&bytes, &kp.node_id()).unwrap(),
                saved
            );
        }
    }

    #[test]
    fn every_envelope_fault_is_refused() {
        let kp = NodeKeypair::from_seed([3; 32]);
        let other = NodeKeypair::from_seed([4; 32]);
        let saved =
            SavedVoteHistory::sign(history(&kp, Some(7)), HistoryLayout::SignedPayload, &kp)
                .unwrap();
        let bytes = saved.encode();
        let decode =
            |b: &[u8]| SavedVoteHistory::decode(b, HistoryLayout::SignedPayload, &kp.node_id());
        assert_eq!(decode(&[]), Err(VoteHistoryFileError::Empty));
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert!(matches!(
            decode(&v1),
            Err(VoteHistoryFileError::Envelope { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(VoteHistoryFileError::Envelope { .. })
        ));
        let mut sig = bytes.clone();
        sig[10] ^= 1;
        assert!(matches!(
            decode(&sig),
            Err(VoteHistoryFileError::BadSignature { .. })
        ));
        assert!(matches!(
            SavedVoteHistory::decode(&bytes, HistoryLayout::SignedPayload, &other.node_id()),
            Err(VoteHistoryFileError::ForeignNode { .. })
        ));
        // Any flipped byte of the data breaks the signature or the decoding.
        for i in ENVELOPE_BYTES..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x80;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
        // In the other layout: refused, naming the layouts known.
        let err = SavedVoteHistory::decode(&bytes, HistoryLayout::VoteEnum, &kp.node_id())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("signed-payload") && err.contains("vote-enum"),
            "{err}"
        );
        // Another identity's history is never signed.
        assert!(matches!(
            SavedVoteHistory::sign(history(&other, None), HistoryLayout::VoteEnum, &kp),
            Err(VoteHistoryFileError::ForeignNode { .. })
        ));
    }

    #[test]
    fn a_history_without_votes_reads_the_same_in_every_layout() {
        let kp = NodeKeypair::from_seed([3; 32]);
        let empty = AgaveVoteHistory::new(kp.node_id(), 5);
        let saved = SavedVoteHistory::sign(empty, HistoryLayout::VoteEnum, &kp).unwrap();
        let any = SavedVoteHistory::decode_any(&saved.encode(), &kp.node_id()).unwrap();
        assert_eq!(any.layout(), HistoryLayout::ALL[0]);
        assert_eq!(any.encode(), saved.encode());
    }
}
