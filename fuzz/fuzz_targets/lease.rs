//! Fuzz target: a lease intent body of any bytes (written by another process, read by
//! `ptrack_repo::lease`): parsing never panics, and a body it wrote itself reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_repo::lease::{parse_intent, parse_local};

fuzz_target!(|data: &[u8]| {
    let _ = parse_local(data);
    let (expires, owner) = parse_intent(data);
    // Owners are one line of our own text (no line breaks), so they read back whole.
    if !owner.contains(['\n', '\r']) && !owner.is_empty() {
        let again = parse_intent(format!("{expires}\n{owner}\n").as_bytes());
        assert_eq!(again, (expires, owner));
    }
});
