//! Fuzz target: `parse_history` (timeline history files read from `pg_wal` and the archive) on
//! any text never panics, and what it accepts has strictly increasing timelines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_wal::archive::parse_history;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(h) = parse_history(&text) {
        assert!(h.windows(2).all(|w| w[0].tli.0 < w[1].tli.0));
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = ptrack_wal::archive::split_segment_file_name(name);
    }
});
