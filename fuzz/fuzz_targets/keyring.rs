//! Fuzz target: an encrypted repository's keyring (`ptrack-keys`, plain JSON anyone with write
//! access to the store may have changed) read by `ptrack_repo::keyring`: parsing never panics,
//! never allocates beyond its bounds, and a keyring it accepts writes back to one that parses
//! to the same keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_repo::keyring::{KdfParams, Keyring};

fuzz_target!(|data: &[u8]| {
    let Ok(ring) = Keyring::parse(data) else {
        return;
    };
    for s in ring.slots() {
        // What was read is within the bounds the derivation accepts.
        assert!(s.params.check().is_ok());
        assert!(s.params.m_cost <= KdfParams::MAX_M_COST);
    }
    let again = Keyring::parse(&ring.to_bytes()).expect("our own keyring parses");
    assert_eq!(again, ring);
});
