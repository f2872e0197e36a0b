//! Fuzz target: an encrypted object of any bytes (`ptrack_repo::sealed`, read through
//! `ptrack_repo::encrypted`): the header reader and the size arithmetic never panic, opening
//! never panics and never succeeds on bytes not sealed with the key, and a sealed object of
//! the input opens to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_repo::sealed::{DataKey, parse_header, plain_size, sealed_size};

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(data);
    if let Ok(p) = plain_size(data.len() as u64) {
        assert_eq!(sealed_size(p), data.len() as u64);
    }
    let key = DataKey::from_bytes(&[0x5a; 32]);
    // Random bytes never authenticate (a forged tag would be a 2^-128 event).
    assert!(key.open("fuzz/object", data.to_vec()).is_err());
    let sealed = key.seal("fuzz/object", data).expect("seal");
    assert_eq!(key.open("fuzz/object", sealed.clone()).expect("open"), data);
    assert!(key.open("fuzz/other", sealed).is_err(), "bound to its key");
});
