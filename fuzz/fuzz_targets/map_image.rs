//! Fuzz target: the extension's map file check and load (`Map::load_from` reading a temporary
//! file, as `Map::load_file` does at every server start on `pg_ptrack/ptrack.map`, and
//! `Map::load_file_bytes` on the same bytes) and `MapHeader::parse` on any bytes never panic;
//! the file loader, with 1 to 3 threads and a buffer of 1 to 16 words, agrees with the
//! in-memory one (same error variant, or both load); an image that loads is the map's image
//! afterwards.
//!
//! Byte 0 picks the map's slot count (1–64); bit 7 of byte 1 turns the rest into an image of
//! that map's exact size with a valid CRC-32C (header words as given, so that the magic,
//! version, slot count, major and system identifier checks are all reached); the identity the
//! map expects is taken from the image's own header when bit 6 is set.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use libfuzzer_sys::fuzz_target;
use ptrack_map::map::{CRC_BYTES, HEADER_WORDS, MAGIC};
use ptrack_map::{LoadError, LoadPlan, Map, MapHeader, MapIdentity};

fn file_path() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary directory"))
        .path()
}

/// Which check failed, for comparing the two loaders.
fn variant(r: &Result<(), LoadError>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(LoadError::Size { .. }) => 1,
        Err(LoadError::Magic { .. }) => 2,
        Err(LoadError::Version { .. }) => 3,
        Err(LoadError::Checksum { .. }) => 4,
        Err(LoadError::ForeignCluster { .. }) => 5,
        Err(LoadError::Broken { .. }) => 6,
        Err(LoadError::Read { .. }) => 7,
    }
}

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
    let path = file_path().join("ptrack.map");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&image).expect("write");
    drop(f);
    let file = std::fs::File::open(&path).expect("open");
    let plan = LoadPlan {
        threads: usize::from(b % 3) + 1,
        buffer_bytes: 8 * (usize::from((b >> 2) & 15) + 1),
    };
    let from_file = map
        .load_from("fuzz/ptrack.map", &file, id, plan)
        .map(|_| ());
    if from_file.is_ok() {
        assert_eq!(map.to_file_bytes(), image);
    }
    let from_bytes = map.load_file_bytes("fuzz/ptrack.map", &image, id);
    assert_eq!(
        variant(&from_file),
        variant(&from_bytes),
        "{from_file:?} {from_bytes:?}"
    );
    if from_bytes.is_ok() {
        assert_eq!(image.len(), words.len() * 8 + CRC_BYTES);
        assert_eq!(map.to_file_bytes(), image);
        let _ = map.check_checksum_version(0, ptrack_types::Lsn(u64::from(*b)));
    }
});
