//! Fuzz target: the pg_control parser and the relation path parser on any bytes must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ptrack_page::parse_control_file(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ptrack_page::classify_path(s);
    }
});
