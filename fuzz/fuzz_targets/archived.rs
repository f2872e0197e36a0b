//! Fuzz target: the WAL archive's readers never panic. The input is read as an archived WAL
//! object (`archived::decode`, and its header alone), and as a WAL segment checked against a
//! name and a 1 MiB segment size (`ptrack_wal::check::check_segment`, whole and as `.partial`);
//! a decoded object re-encodes to what decodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_format::archived::{decode, encode, parse_head};
use ptrack_format::stored::Compression;
use ptrack_types::{TimeLineId, WalSegSize};
use ptrack_wal::SegmentName;
use ptrack_wal::check::check_segment;

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data, "x");
    if let Ok(b) = decode(data, "x") {
        assert_eq!(decode(&encode(&b, Compression::Lz4), "y").unwrap(), b);
    }
    let seg = WalSegSize::new(1 << 20).unwrap();
    let tli = data.first().map_or(1, |b| u32::from(*b));
    let name = SegmentName {
        tli: TimeLineId(tli),
        segno: 3,
    };
    // Pages repeated up to a whole segment, so that later pages are checked too.
    let mut s = data.to_vec();
    if !s.is_empty() {
        while s.len() < 1 << 20 {
            s.extend_from_slice(data);
        }
        s.truncate(1 << 20);
    }
    for partial in [false, true] {
        let _ = check_segment(&s, name, seg, Some(7), partial);
        let _ = check_segment(data, name, seg, None, partial);
    }
});
