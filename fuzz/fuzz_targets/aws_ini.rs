//! Fuzz target: `ptrack_repo::profile::parse_ini`, the reader of the AWS shared credentials and
//! config files (text another program wrote), on any text: it never panics, and every setting
//! it returns has a key without '=' and no line break.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (section, key, value) in ptrack_repo::profile::parse_ini(&text) {
        assert!(!key.contains('='), "{key:?}");
        for s in [&section, &key, &value] {
            assert!(!s.contains('\n'), "{s:?}");
        }
    }
});
