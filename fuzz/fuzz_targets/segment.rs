//! Arbitrary bytes as a buffer segment file (what start-up reads after a
//! crash or disk damage): recovery must never panic, and must account for
//! every byte as a valid entry, a corrupt region or a torn tail.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = connector_s3::buffer::scan_segment_bytes(data);
});
