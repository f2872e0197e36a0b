//! Fuzz target: `verify_page` on any bytes, every fork, checksums on and off, must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_page::{PageCheck, verify_page};
use ptrack_types::ForkNumber;

fuzz_target!(|data: &[u8]| {
    let blkno = data
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for fork in ForkNumber::ALL {
        for checksums in [true, false] {
            for p in verify_page(data, blkno, PageCheck { checksums, fork }) {
                let _ = p.to_string();
            }
        }
    }
});
