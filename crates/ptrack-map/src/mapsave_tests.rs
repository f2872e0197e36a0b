//! Tests of [`super`]: full and delta saves round-trip, only dirty regions are written, the chain
//! stops at a damaged, missing or foreign delta, merges, failed writes, and the parser on bad
//! bytes.

use super::*;
use crate::map::{MapIdentity, MapLayout};
use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, RelFileLocator, RelFileNumber, TimeLineId};
use std::sync::atomic::AtomicU64;

const ID: MapIdentity = MapIdentity {
    system_identifier: 42,
    major: 18,
    data_checksum_version: 1,
};

struct Fixture {
    words: Vec<AtomicU64>,
    dirty: Vec<AtomicU64>,
    layout: MapLayout,
}

impl Fixture {
    fn new() -> Fixture {
        let layout = MapLayout::for_size_mb(8).unwrap();
        Fixture {
            words: Map::alloc(layout),
            dirty: Map::alloc_dirty(layout),
            layout,
        }
    }
    fn map(&self) -> Map<'_> {
        Map::with_dirty(&self.words, &self.dirty)
    }
}

fn mark(m: &Map<'_>, rel: u32, block: u32, lsn: u64) {
    let loc = RelFileLocator {
        spc_oid: Oid(1663),
        db_oid: Oid(5),
        rel_number: RelFileNumber(rel),
    };
    m.mark(loc, ForkNumber::Main, BlockNumber(block), Lsn(lsn), 131072);
}

fn save(m: &Map<'_>, saver: &mut Saver, path: &Path, full: bool, tracked: u64) -> u64 {
    m.set_tracked(Lsn(tracked), TimeLineId(1));
    let mut s = m.take_save(full, Vec::new());
    saver.write(&mut s, path, tracked).unwrap()
}

/// Words without the generation (which only the files carry).
fn state(m: &Map<'_>) -> Vec<u8> {
    let mut s = m.snapshot();
    s[W_GENERATION * 8..W_GENERATION * 8 + 8].fill(0);
    s
}

fn load(dir: &Path, layout: MapLayout) -> (Vec<AtomicU64>, DeltaLoad) {
    let words = Map::alloc(layout);
    let m = Map::new(&words);
    let f = crate::files::open_map(&dir.join("ptrack.map"))
        .unwrap()
        .unwrap();
    m.load_file(&f.path, &f.file, ID).unwrap();
    let report = load_deltas(&m, dir, ID);
    (words, report)
}

#[test]
fn deltas_round_trip_and_hold_only_dirty_regions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ptrack.map");
    let f = Fixture::new();
    let m = f.map();
    m.reset(ID);
    let mut saver = Saver::new(&path, 0, 1, false, f.layout.file_bytes());
    assert!(saver.wants_full());
    let full = save(&m, &mut saver, &path, true, 100);
    assert_eq!(full, f.layout.file_bytes());
    assert!(!saver.wants_full());
    let mut states = Vec::new();
    for round in 0..3u64 {
        for b in 0..20 {
            mark(&m, 16385 + round as u32, b * 1000, 200 + round);
        }
        let dirty_before: Vec<u32> = {
            // What the save will take: the dirty regions, without clearing them.
            let s = m.take_save(false, Vec::new());
            let Save::Delta { regions, .. } = &s else {
                panic!()
            };
            let keys = regions.keys().copied().collect();
            // Put the bits back by marking the same blocks again at the same LSN: no change,
            // so the regions must be dirty only because of the first marks.
            for r in regions.keys() {
                f.dirty[*r as usize / 64]
                    .fetch_or(1 << (r % 64), std::sync::atomic::Ordering::Relaxed);
            }
            keys
        };
        // Each block raises 6 slots (block, chunk and segment keys): at most 120 regions.
        assert!(
            !dirty_before.is_empty() && dirty_before.len() <= 120,
            "{}",
            dirty_before.len()
        );
        let n = save(&m, &mut saver, &path, false, 300 + round);
        assert!(
            n < full / 10,
            "delta of {n} bytes for 20 marks (full {full})"
        );
        states.push(state(&m));
    }
    let (words, report) = load(dir.path(), f.layout);
    assert_eq!((report.applied, report.stopped.is_none()), (3, true));
    assert_eq!(state(&Map::new(&words)), states[2]);
    assert_eq!(Map::new(&words).tracked().0, Lsn(302));
    // Nothing dirty after a save; re-marking an older LSN dirties nothing.
    assert!(m.take_dirty().is_empty());
    mark(&m, 16385, 0, 10);
    assert!(m.take_dirty().is_empty());
}

#[test]
fn chain_stops_at_a_damaged_missing_or_foreign_delta() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ptrack.map");
    let f = Fixture::new();
    let m = f.map();
    m.reset(ID);
    let mut saver = Saver::new(&path, 0, 1, false, f.layout.file_bytes());
    save(&m, &mut saver, &path, true, 100);
    let base = state(&m);
    let mut states = Vec::new();
    for round in 0..3u32 {
        mark(&m, 20000 + round, round, 500 + u64::from(round));
        save(&m, &mut saver, &path, false, 600 + u64::from(round));
        states.push(state(&m));
    }
    let delta = |seq| dir.path().join(delta_name(seq));
    // Damage delta 2: 1 applies, 2 and 3 are removed.
    let mut bytes = std::fs::read(delta(2)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(delta(2), &bytes).unwrap();
    let (words, report) = load(dir.path(), f.layout);
    assert_eq!(report.applied, 1);
    assert!(matches!(report.stopped, Some((_, DeltaError::Checksum))));
    assert_eq!(report.removed.len(), 2);
    assert_eq!(state(&Map::new(&words)), states[0]);
    assert!(!delta(2).exists() && !delta(3).exists() && delta(1).exists());
    // Delta 1 missing: nothing applies, the rest is removed.
    std::fs::remove_file(delta(1)).unwrap();
    std::fs::write(delta(2), b"stale").unwrap();
    let (words, report) = load(dir.path(), f.layout);
    assert_eq!((report.applied, report.removed.len()), (0, 1));
    assert_eq!(report.missing, Some(1), "a hole before delta 2");
    assert_eq!(state(&Map::new(&words)), base);
    // A delta of another generation (left from before a full save) is not applied.
    let m2words = Map::alloc(f.layout);
    let m2 = Map::new(&m2words);
    m2.reset(ID);
    let mut other = Saver::new(&path, 0, 1, false, f.layout.file_bytes());
    save(&m2, &mut other, &dir.path().join("other.map"), true, 150);
    mark(&m2, 1, 1, 700);
    save(&m2, &mut other, &dir.path().join("other.map"), false, 800);
    let (_, report) = load(dir.path(), f.layout);
    assert!(
        matches!(report.stopped, Some((_, DeltaError::Foreign { .. }))),
        "{report:?}"
    );
    assert_eq!(report.applied, 0);
}

#[test]
fn merged_saves_equal_saves_in_turn() {
    let f = Fixture::new();
    let m = f.map();
    m.reset(ID);
    let full = m.take_save(true, Vec::new());
    mark(&m, 1, 5, 100);
    let d1 = m.take_save(false, Vec::new());
    mark(&m, 2, 9000, 200);
    mark(&m, 1, 5, 300);
    let d2 = m.take_save(false, Vec::new());
    let Save::Full(merged) = Save::merge(full, Save::merge(d1.clone(), d2.clone())) else {
        panic!("a full save stays full")
    };
    assert_eq!(merged, m.snapshot());
    let Save::Delta { regions, .. } = Save::merge(d1.clone(), d2.clone()) else {
        panic!()
    };
    let (Save::Delta { regions: r1, .. }, Save::Delta { regions: r2, .. }) = (d1, d2) else {
        panic!()
    };
    assert!(r1.keys().chain(r2.keys()).all(|k| regions.contains_key(k)));
    for (k, v) in &r2 {
        assert_eq!(&regions[k], v, "the newer region wins");
    }
}

#[test]
fn a_failed_write_refuses_deltas_until_a_full_save() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new();
    let m = f.map();
    m.reset(ID);
    let bad = dir.path().join("missing-dir/ptrack.map");
    let mut saver = Saver::new(&bad, 0, 1, true, f.layout.file_bytes());
    mark(&m, 1, 1, 10);
    let mut d = m.take_save(false, Vec::new());
    assert!(saver.write(&mut d, &bad, 1).is_err());
    assert!(saver.wants_full());
    let mut d = m.take_save(false, Vec::new());
    let e = saver.write(&mut d, &bad, 1).unwrap_err();
    assert!(e.contains("next save writes the whole map"), "{e}");
    let good = dir.path().join("ptrack.map");
    let mut saver = Saver::new(&good, 0, 1, false, f.layout.file_bytes());
    let mut full = m.take_save(true, Vec::new());
    saver.write(&mut full, &good, 5).unwrap();
    assert!(!saver.wants_full());
    assert!(saver.generation() >= 5);
    // After MAX_DELTAS deltas the next save is full again.
    for i in 0..MAX_DELTAS {
        mark(&m, 3, i, 100 + u64::from(i));
        let mut d = m.take_save(false, Vec::new());
        saver.write(&mut d, &good, 5).unwrap();
    }
    assert!(saver.wants_full());
    assert_eq!(
        crate::files::delta_files(dir.path()).len(),
        MAX_DELTAS as usize
    );
    // The full save that follows removes the old chain.
    let mut full = m.take_save(true, Vec::new());
    saver.write(&mut full, &good, 6).unwrap();
    assert!(crate::files::delta_files(dir.path()).is_empty());
}

#[test]
fn parser_refuses_bad_bytes_without_panicking() {
    let f = Fixture::new();
    let m = f.map();
    m.reset(ID);
    mark(&m, 1, 1, 10);
    let Save::Delta { header, regions } = m.take_save(false, Vec::new()) else {
        panic!()
    };
    let good = delta_image(7, 1, &header, &regions);
    assert!(parse_delta(&good).is_ok());
    for len in 0..good.len().min(400) {
        assert!(parse_delta(&good[..len]).is_err());
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = good.clone();
        let i = (x % b.len() as u64) as usize;
        b[i] ^= (x >> 32) as u8 | 1;
        assert!(parse_delta(&b).is_err(), "flip at {i} accepted");
        // Lengths that lie, with a CRC that matches.
        let mut c = good.clone();
        c[24..28].copy_from_slice(&((x >> 8) as u32).to_le_bytes());
        let n = c.len() - 4;
        let crc = crc32c::crc32c(&c[..n]);
        c[n..].copy_from_slice(&crc.to_le_bytes());
        let _ = parse_delta(&c);
    }
    assert_eq!(delta_seq("ptrack.map.delta.12"), Some(12));
    for bad in [
        "ptrack.map.delta.",
        "ptrack.map.delta.012",
        "ptrack.map.delta.1.tmp",
        "ptrack.map",
    ] {
        assert_eq!(delta_seq(bad), None, "{bad}");
    }
}
