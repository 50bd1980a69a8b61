// Fuzz body for the strict Tezos consensus payload parser, shared by the
// cargo-fuzz target and the `fuzz_smoke` test. Any input: no panic; and
// every accepted payload round-trips: re-encoded here, independently of
// the parser, from the fields it reported (kind, chain, tag, level, round)
// and the opaque fields of the documented layout (formats.md section 1),
// it gives back exactly the input. So an accepted payload has the exact
// length of its layout, its level and round where the layout puts them,
// a canonical DAL bitset and a fitness of the documented shape.

/// Parse `data` for every key scheme and role; re-encode what is accepted.
/// Returns how many (scheme, role) pairs accepted it.
pub fn tezos_payload(data: &[u8]) -> usize {
    use slashguard::watermark::{ConsensusPayload, Curve, KeyRole, PayloadHash};

    let mut accepted = 0;
    for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls] {
        for role in [KeyRole::Consensus, KeyRole::Companion] {
            if let Ok(p) = ConsensusPayload::parse_as(data, curve, role) {
                assert_eq!(p.payload_hash, PayloadHash::of(data));
                assert!(p.mark.level <= i32::MAX as u32);
                assert!(p.mark.round <= i32::MAX as u32);
                let again = tezos_reencode(&p, data);
                assert_eq!(again, data, "{curve:?} {role:?}: {p:?}");
                accepted += 1;
            }
        }
    }
    accepted
}

fn tezos_reencode(p: &slashguard::watermark::ConsensusPayload, data: &[u8]) -> Vec<u8> {
    use slashguard::watermark::ConsensusKind;

    let mut out = vec![p.kind.magic()];
    out.extend_from_slice(&p.chain.0);
    match p.kind {
        ConsensusKind::Block => {
            // level, then the shell header up to the fitness, copied.
            out.extend_from_slice(&p.mark.level.to_be_bytes());
            out.extend_from_slice(&data[9..83]);
            // The fitness from its parts: 02, level, optional locked round,
            // -1 - predecessor round (copied), round.
            let fitness_len = u32::from_be_bytes(data[83..87].try_into().unwrap()) as usize;
            let locked = fitness_len == 37;
            let mut f = Vec::new();
            let mut item = |b: &[u8]| {
                f.extend_from_slice(&(b.len() as u32).to_be_bytes());
                f.extend_from_slice(b);
            };
            item(&[0x02]);
            item(&p.mark.level.to_be_bytes());
            // locked round value at 87 + 5 + 8 + 4
            let mut at = 87 + 5 + 8 + 4;
            if locked {
                item(&data[at..at + 4]);
                at += 4;
            } else {
                item(&[]);
            }
            item(&data[at + 4..at + 8]);
            item(&p.mark.round.to_be_bytes());
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(&f);
            // Everything after the fitness, copied.
            out.extend_from_slice(&data[87 + fitness_len..]);
        }
        ConsensusKind::Preattestation | ConsensusKind::Attestation => {
            let tag = p.tag.expect("a (pre)attestation has a tag").byte();
            out.extend_from_slice(&data[5..37]); // branch
            out.push(tag);
            let slot = matches!(tag, 20 | 21 | 23);
            if slot {
                out.extend_from_slice(&data[38..40]);
            }
            out.extend_from_slice(&p.mark.level.to_be_bytes());
            out.extend_from_slice(&p.mark.round.to_be_bytes());
            let bph = out.len();
            out.extend_from_slice(&data[bph..bph + 32]);
            if tag == 23 {
                out.extend_from_slice(&z_reencode(&data[80..]));
            }
        }
    }
    out
}

/// Decode a Data_encoding.z number (non-negative) into its bits and encode
/// them again canonically: only a canonical input comes back unchanged.
fn z_reencode(bytes: &[u8]) -> Vec<u8> {
    let mut bits = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let (n, v) = if i == 0 { (6, b & 0x3f) } else { (7, b & 0x7f) };
        for j in 0..n {
            bits.push((v >> j) & 1);
        }
        if b & 0x80 == 0 {
            break;
        }
    }
    while bits.last() == Some(&0) {
        bits.pop();
    }
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let n = if at == 0 { 6 } else { 7 };
        let mut v = 0u8;
        for j in 0..n {
            v |= bits.get(at + j).copied().unwrap_or(0) << j;
        }
        at += n;
        if at < bits.len() {
            out.push(v | 0x80);
        } else {
            out.push(v);
            break;
        }
    }
    out
}
