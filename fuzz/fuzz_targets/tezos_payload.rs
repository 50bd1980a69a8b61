#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../bodies/tezos_payload.rs");

fuzz_target!(|data: &[u8]| {
    tezos_payload(data);
});
