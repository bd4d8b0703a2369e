#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nftlbd::fuzzing::varlink_stream(data);
});
