//! Fuzz target: the extension's map delta files (`ptrack.map.delta.<seq>`, read at every server
//! start) and change-set names: `parse_delta`, `Map::apply_delta` and `SetName::parse` never
//! panic on any bytes, and a delta that applies leaves the map's slot count and the bytes it
//! did not carry alone.
//!
//! Byte 0 picks the map's slot count (1–256, so regions can be partial); bit 7 of byte 1 seals
//! the rest with a valid CRC-32C and the delta magic and version, so that the length, region and
//! identity checks are reached; the rest of byte 1 is the sequence number expected.
#![no_main]

use std::sync::atomic::AtomicU64;

use libfuzzer_sys::fuzz_target;
use ptrack_map::map::HEADER_WORDS;
use ptrack_map::mapsave::{DELTA_MAGIC, DELTA_VERSION, parse_delta};
use ptrack_map::{Map, MapIdentity};

fuzz_target!(|data: &[u8]| {
    let _ = parse_delta(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ptrack_map::changelog::SetName::parse(s);
    }
    let [a, b, rest @ ..] = data else {
        return;
    };
    let nslots = usize::from(*a) + 1;
    let words: Vec<AtomicU64> = (0..HEADER_WORDS + nslots)
        .map(|_| AtomicU64::new(0))
        .collect();
    let map = Map::new(&words);
    let mut image = rest.to_vec();
    if b & 0x80 != 0 && image.len() >= 16 {
        image[..8].copy_from_slice(&DELTA_MAGIC.to_le_bytes());
        image[8..12].copy_from_slice(&DELTA_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&image);
        image.extend_from_slice(&crc.to_le_bytes());
    }
    let id = MapIdentity {
        system_identifier: 7,
        major: 18,
        data_checksum_version: 1,
    };
    if let Ok(d) = parse_delta(&image) {
        let before = map.snapshot();
        if map
            .apply_delta(&image, id, d.generation, u32::from(b & 0x7F))
            .is_ok()
        {
            assert_eq!(map.slot_count(), nslots as u64);
            assert_eq!(map.snapshot().len(), before.len());
        }
    }
});
