#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../bodies/vote_tx.rs");

fuzz_target!(|data: &[u8]| vote_tx(data));
