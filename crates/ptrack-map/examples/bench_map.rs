//! Map I/O at scale (issue 11 §2): the cost of a full save, of a delta save after some changed
//! blocks, and of loading the file and its chain, for a map of a given size, on the disk under
//! the given directory. Run by `scripts/bench-map`.
//!
//!   cargo run --release -p ptrack-map --example bench_map -- MAP_MB CHANGED_BLOCKS DIR

use std::time::Instant;

use ptrack_map::mapsave::{Save, Saver, load_deltas};
use ptrack_map::{Map, MapIdentity, MapLayout};
use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, RelFileLocator, RelFileNumber, TimeLineId};

const ID: MapIdentity = MapIdentity {
    system_identifier: 7,
    major: 18,
    data_checksum_version: 1,
};

/// Marks `n` pseudo-random blocks of 1000 relations at `lsn`.
fn mark_random(m: &Map<'_>, n: u64, seed: u64, lsn: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let loc = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(16384 + (x % 1000) as u32),
        };
        m.mark(
            loc,
            ForkNumber::Main,
            BlockNumber((x >> 20) as u32 % 1_000_000),
            Lsn(lsn),
            131072,
        );
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let mb: u32 = args
        .get(1)
        .map_or(Ok(1024), |a| a.parse())
        .map_err(|e| format!("MAP_MB: {e}"))?;
    let changed: u64 = args
        .get(2)
        .map_or(Ok(100_000), |a| a.parse())
        .map_err(|e| format!("CHANGED_BLOCKS: {e}"))?;
    let dir = std::path::PathBuf::from(args.get(3).map_or("/var/tmp", String::as_str));
    let layout = MapLayout::for_size_mb(mb).ok_or("MAP_MB must be 1 to 32768")?;
    let path = dir.join("ptrack.map");
    let words = Map::alloc(layout);
    let dirty = Map::alloc_dirty(layout);
    let m = Map::with_dirty(&words, &dirty);
    m.reset(ID);
    mark_random(&m, changed, 1, 100);
    let gb = f64::from(mb) / 1024.0;
    let mut saver = Saver::new(&path, 0, 1, false, layout.file_bytes());

    m.set_tracked(Lsn(200), TimeLineId(1));
    let t = Instant::now();
    let mut full = m.take_save(true, Vec::new());
    let bytes = saver.write(&mut full, &path, 1)?;
    let full_s = t.elapsed().as_secs_f64();
    println!(
        "full save     {bytes:>12} bytes  {full_s:8.3} s  {:8.3} s/GB",
        full_s / gb
    );

    for (round, seed) in [(1u64, 2u64), (2, 3)] {
        mark_random(&m, changed, seed, 300 + round);
        m.set_tracked(Lsn(400 + round), TimeLineId(1));
        let t = Instant::now();
        let mut delta = m.take_save(false, Vec::new());
        let regions = match &delta {
            Save::Delta { regions, .. } => regions.len(),
            Save::Full(_) => 0,
        };
        let bytes = saver.write(&mut delta, &path, 1)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "delta save {round}  {bytes:>12} bytes  {s:8.3} s  ({changed} changed blocks, {regions} regions, {:.1}% of the map)",
            100.0 * bytes as f64 / layout.file_bytes() as f64
        );
    }

    let t = Instant::now();
    let words2 = Map::alloc(layout);
    let m2 = Map::new(&words2);
    let image = std::fs::read(&path).map_err(|e| e.to_string())?;
    m2.load_file_bytes("ptrack.map", &image, ID)
        .map_err(|e| e.to_string())?;
    let report = load_deltas(&m2, &dir, ID);
    let load_s = t.elapsed().as_secs_f64();
    println!(
        "load          {:>12} bytes  {load_s:8.3} s  {:8.3} s/GB  ({} deltas)",
        image.len() as u64 + report.bytes,
        load_s / gb,
        report.applied
    );
    if m2.tracked().0 != Lsn(402) {
        return Err(format!(
            "loaded map tracked up to {}, saved 0/192",
            m2.tracked().0
        ));
    }
    for name in ptrack_map::files::delta_files(&dir) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
