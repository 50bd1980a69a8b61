//! The Tezos Baking app's own watermark rule, as the app's public source
//! implements it. The simulator enforces it; the device guard uses it to
//! refuse early what the device would certainly refuse.
//!
//! One [`LedgerHwm`] per chain (the app keeps a "main" one for the main
//! chain id, or for any chain while no main chain is set, and a "test" one
//! for every other chain), shared by blocks, preattestations and
//! attestations:
//!
//! - anything at a (level, round) strictly above the mark is allowed;
//! - at exactly the mark, an attestation is allowed if no attestation was
//!   signed there, and a preattestation if neither a preattestation nor an
//!   attestation was; a block never is;
//! - below the mark, nothing is; nor is any level with its two top bits set.
//!
//! After a signature the mark becomes the request's (level, round); the two
//! flags are cleared when the mark moves and then record the kind signed.
//! RESET sets (level, 0) and clears "had attestation" only; SETUP sets
//! (level, 0) and clears both flags.
//!
//! A consequence worth knowing: right after a RESET to level L, the device
//! will still sign an attestation (and a preattestation, if its flag was
//! clear) at exactly (L, 0). slashguard's file and etcd stores do not (a set
//! mark admits nothing at itself), so combine the device with one of them,
//! or choose a margin large enough that (L, 0) is never in play.

use crate::limit::SignerLimit;
use crate::watermark::{ConsensusKind, KeyHash, Mark, SignRequest};

/// Levels with either of the two top bits set are invalid to the app.
pub const LEVEL_LIMIT: u32 = 0x4000_0000;

/// The most message bytes SIGN takes: the app reads one data packet of at
/// most this many bytes (`MAX_APDU_SIZE`) and answers 0x917E to more.
pub const MAX_SIGN_DATA: usize = 235;

/// How the signer names itself in a [`SignerLimit`].
pub const LEDGER_SIGNER: &str = "the Ledger Tezos Baking app";

/// What the app refuses whatever its watermark: a message longer than one
/// data packet, a level at or above [`LEVEL_LIMIT`], another key than the
/// one `key` (the signer's).
pub fn check_request(key: KeyHash, request: &SignRequest, len: usize) -> Result<(), SignerLimit> {
    if request.key.key != key {
        return Err(SignerLimit::Scheme {
            signer: LEDGER_SIGNER,
            key: request.key.key,
            accepts: format!("with {key} only"),
        });
    }
    if len > MAX_SIGN_DATA {
        return Err(SignerLimit::PayloadTooLong {
            signer: LEDGER_SIGNER,
            len,
            max: MAX_SIGN_DATA,
        });
    }
    if request.mark.level >= LEVEL_LIMIT {
        return Err(SignerLimit::LevelOutOfRange {
            signer: LEDGER_SIGNER,
            level: request.mark.level,
            limit: LEVEL_LIMIT,
        });
    }
    Ok(())
}

/// One chain's high watermark inside the Tezos Baking app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerHwm {
    /// Highest level signed or set.
    pub level: u32,
    /// Round at that level.
    pub round: u32,
    /// A preattestation was signed at exactly (level, round).
    pub had_preattestation: bool,
    /// An attestation was signed at exactly (level, round).
    pub had_attestation: bool,
}

impl LedgerHwm {
    /// The state SETUP leaves: (level, 0), no flags.
    pub fn at(level: u32) -> Self {
        LedgerHwm {
            level,
            round: 0,
            had_preattestation: false,
            had_attestation: false,
        }
    }

    /// The (level, round) part.
    pub fn mark(&self) -> Mark {
        Mark {
            level: self.level,
            round: self.round,
        }
    }

    /// Would the app sign `kind` at `mark`?
    pub fn permits(&self, kind: ConsensusKind, mark: Mark) -> bool {
        if mark.level >= LEVEL_LIMIT {
            return false;
        }
        match mark.cmp(&self.mark()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => match kind {
                ConsensusKind::Block => false,
                ConsensusKind::Attestation => !self.had_attestation,
                ConsensusKind::Preattestation => !self.had_attestation && !self.had_preattestation,
            },
        }
    }

    /// Record a signature of `kind` at `mark` (after [`permits`](Self::permits)).
    pub fn record(&mut self, kind: ConsensusKind, mark: Mark) {
        if mark.level > self.level || mark.round > self.round {
            self.had_attestation = false;
            self.had_preattestation = false;
        }
        self.level = self.level.max(mark.level);
        self.round = mark.round;
        self.had_attestation |= kind == ConsensusKind::Attestation;
        self.had_preattestation |= kind == ConsensusKind::Preattestation;
    }

    /// What RESET does to each watermark.
    pub fn reset(&mut self, level: u32) {
        self.level = level;
        self.round = 0;
        self.had_attestation = false;
    }
}

/// The part of the rule that needs no flags (QUERY_ALL_HWM does not report
/// them): `true` when the device will refuse `kind` at `mark` whatever its
/// flags. `round` is `None` when an old app reported levels only.
pub fn certainly_refused(level: u32, round: Option<u32>, kind: ConsensusKind, mark: Mark) -> bool {
    if mark.level >= LEVEL_LIMIT || mark.level < level {
        return true;
    }
    if mark.level > level {
        return false;
    }
    match round {
        // Unknown round at the device's level: any round above it would be
        // accepted, so nothing at this level is certain.
        None => false,
        Some(r) => mark.round < r || (mark.round == r && kind == ConsensusKind::Block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsensusKind::*;

    fn m(level: u32, round: u32) -> Mark {
        Mark { level, round }
    }

    #[test]
    fn tenderbake_sequence_at_one_level() {
        let mut h = LedgerHwm::at(100);
        // Nothing at or below the set mark but (pre)attestations at it.
        assert!(!h.permits(Block, m(100, 0)));
        assert!(h.permits(Preattestation, m(100, 0)));
        assert!(!h.permits(Block, m(99, 5)));
        // Block, preattestation, attestation at (101, 0), in that order.
        assert!(h.permits(Block, m(101, 0)));
        h.record(Block, m(101, 0));
        assert!(!h.permits(Block, m(101, 0)));
        assert!(h.permits(Preattestation, m(101, 0)));
        h.record(Preattestation, m(101, 0));
        assert!(!h.permits(Preattestation, m(101, 0)));
        assert!(h.permits(Attestation, m(101, 0)));
        h.record(Attestation, m(101, 0));
        assert!(!h.permits(Attestation, m(101, 0)));
        assert!(!h.permits(Preattestation, m(101, 0)));
        // Next round opens everything again.
        assert!(h.permits(Block, m(101, 1)));
        h.record(Preattestation, m(101, 1));
        assert!(!h.had_attestation && h.had_preattestation);
        assert!(!h.permits(Block, m(101, 1)));
        assert!(!h.permits(Attestation, m(101, 0)));
    }

    #[test]
    fn reset_keeps_the_preattestation_flag_and_invalid_levels_are_refused() {
        let mut h = LedgerHwm::at(5);
        h.record(Preattestation, m(6, 0));
        h.record(Attestation, m(6, 0));
        h.reset(10);
        assert_eq!(h.mark(), m(10, 0));
        assert!(h.permits(Attestation, m(10, 0)));
        assert!(!h.permits(Preattestation, m(10, 0)));
        assert!(!h.permits(Block, m(LEVEL_LIMIT, 0)));
    }

    #[test]
    fn limits_from_the_app() {
        use crate::watermark::{ChainId, Curve, PayloadHash, WatermarkKey};
        let key = KeyHash {
            curve: Curve::Ed25519,
            hash: [1; 20],
        };
        let req = |level: u32, k: KeyHash| SignRequest {
            key: WatermarkKey {
                chain: ChainId([1; 4]),
                key: k,
                kind: Block,
            },
            mark: m(level, 0),
            payload_hash: PayloadHash([0; 32]),
        };
        assert!(check_request(key, &req(5, key), 235).is_ok());
        assert_eq!(
            check_request(key, &req(5, key), 236),
            Err(SignerLimit::PayloadTooLong {
                signer: LEDGER_SIGNER,
                len: 236,
                max: 235
            })
        );
        assert!(check_request(key, &req(0x3FFF_FFFF, key), 100).is_ok());
        for level in [0x4000_0000, 0x8000_0000, u32::MAX] {
            assert!(matches!(
                check_request(key, &req(level, key), 100),
                Err(SignerLimit::LevelOutOfRange { level: l, limit: 0x4000_0000, .. }) if l == level
            ));
        }
        let other = KeyHash {
            curve: Curve::Secp256k1,
            hash: [1; 20],
        };
        assert!(matches!(
            check_request(key, &req(5, other), 100),
            Err(SignerLimit::Scheme { .. })
        ));
    }

    #[test]
    fn flagless_precheck_never_contradicts_the_device() {
        // For every state and request: certainly_refused => !permits.
        for flags in 0..4u8 {
            let h = LedgerHwm {
                level: 10,
                round: 2,
                had_preattestation: flags & 1 != 0,
                had_attestation: flags & 2 != 0,
            };
            for level in 8..13 {
                for round in 0..4 {
                    for kind in ConsensusKind::ALL {
                        let mk = m(level, round);
                        for reported in [Some(2), None] {
                            if certainly_refused(10, reported, kind, mk) {
                                assert!(!h.permits(kind, mk), "{h:?} {kind} {mk}");
                            }
                        }
                    }
                }
            }
        }
    }
}
