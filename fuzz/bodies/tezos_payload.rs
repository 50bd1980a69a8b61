// Fuzz body for the Tezos consensus payload parser, shared by the cargo-fuzz
// target and the `fuzz_smoke` test. Any input: no panic, and a parsed
// payload is consistent with its bytes.

/// Parse `data` as a consensus payload for every key scheme.
pub fn tezos_payload(data: &[u8]) {
    use slashguard::watermark::{ConsensusPayload, Curve, PayloadHash};

    for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls] {
        if let Ok(payload) = ConsensusPayload::parse(data, curve) {
            assert_eq!(data.first(), Some(&payload.kind.magic()));
            assert_eq!(payload.chain.0[..], data[1..5]);
            assert!(payload.mark.level <= i32::MAX as u32);
            assert!(payload.mark.round <= i32::MAX as u32);
            assert_eq!(payload.payload_hash, PayloadHash::of(data));
        }
    }
}
