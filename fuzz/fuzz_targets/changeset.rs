//! Fuzz target: the change-set file reader (`ChangeSet::from_bytes`) on any bytes never panics,
//! and a set it accepts writes back to bytes that read as the same set.
//!
//! Each input is tried as given and as a body behind the magic with a valid CRC-32C appended,
//! so that the fuzzer reaches the fields behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_blockmap::ChangeSet;

fn check(bytes: &[u8]) {
    if let Ok(s) = ChangeSet::from_bytes(bytes) {
        let again = ChangeSet::from_bytes(&s.to_bytes()).expect("a written set reads back");
        assert_eq!(again, s);
        let _ = s.block_count();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut b = Vec::with_capacity(data.len() + 12);
    b.extend_from_slice(b"PTRKBMAP");
    b.extend_from_slice(data);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    check(&b);
});
