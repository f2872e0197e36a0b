//! Fuzz target: the extension's map file check (`Map::load_file_bytes`, run at every server
//! start on `pg_ptrack/ptrack.map`) and `MapHeader::parse` on any bytes never panic; an image
//! that loads is the map's image afterwards.
//!
//! Byte 0 picks the map's slot count (1–64); bit 7 of byte 1 turns the rest into an image of
//! that map's exact size with a valid CRC-32C (header words as given, so that the magic,
//! version, slot count, major and system identifier checks are all reached); the identity the
//! map expects is taken from the image's own header when bit 6 is set.
#![no_main]

use std::sync::atomic::AtomicU64;

use libfuzzer_sys::fuzz_target;
use ptrack_map::map::{CRC_BYTES, HEADER_WORDS, MAGIC};
use ptrack_map::{Map, MapHeader, MapIdentity};

fuzz_target!(|data: &[u8]| {
    let _ = MapHeader::parse(data);
    let [a, b, rest @ ..] = data else {
        return;
    };
    let nslots = usize::from(a % 64) + 1;
    let words: Vec<AtomicU64> = (0..HEADER_WORDS + nslots)
        .map(|_| AtomicU64::new(0))
        .collect();
    let map = Map::new(&words);
    let mut image = rest.to_vec();
    if b & 0x80 != 0 {
        image.resize(words.len() * 8, 0);
        if b & 0x20 != 0 {
            image[..8].copy_from_slice(&MAGIC.to_le_bytes());
            image[8..16].copy_from_slice(&2u64.to_le_bytes());
        }
        let crc = crc32c::crc32c(&image);
        image.extend_from_slice(&crc.to_le_bytes());
    }
    let id = match MapHeader::parse(&image) {
        Some(h) if b & 0x40 != 0 => MapIdentity {
            system_identifier: h.system_identifier,
            major: h.major as u32,
            data_checksum_version: h.data_checksum_version as u32,
        },
        _ => MapIdentity {
            system_identifier: 7,
            major: 18,
            data_checksum_version: 1,
        },
    };
    if map.load_file_bytes("fuzz/ptrack.map", &image, id).is_ok() {
        assert_eq!(image.len(), words.len() * 8 + CRC_BYTES);
        assert_eq!(map.to_file_bytes(), image);
        let _ = map.check_checksum_version(0, ptrack_types::Lsn(u64::from(*b)));
    }
});
