#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../bodies/agave_tower.rs");

fuzz_target!(|data: &[u8]| agave_tower(data));
