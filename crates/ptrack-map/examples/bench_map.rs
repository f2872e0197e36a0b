//! Map I/O at scale (issue 11 §2): the cost of a full save, of a delta save after some changed
//! blocks, and of loading the file and its chain, for a map of a given size, on the disk under
//! the given directory. The load is measured three ways: as before the parallel loader (whole
//! file into a buffer, CRC, copy), with the loader on one thread, and with the loader's default
//! plan for the size (up to `mapload::MAX_THREADS` threads); then the deltas are applied.
//! Run by `scripts/bench-map`.
//!
//!   cargo run --release -p ptrack-map --example bench_map -- MAP_MB CHANGED_BLOCKS DIR

use std::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use ptrack_map::mapsave::{Save, Saver, load_deltas};
use ptrack_map::{LoadPlan, Map, MapIdentity, MapLayout};
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

/// The load before the parallel loader, for comparison: the whole file read into a buffer, its
/// CRC-32C checked, then every word stored. Returns the seconds of each step.
fn old_load(path: &std::path::Path, words: &[AtomicU64]) -> Result<[f64; 3], String> {
    let t = Instant::now();
    let image = std::fs::read(path).map_err(|e| e.to_string())?;
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let body = &image[..image.len() - 4];
    let stored = u32::from_le_bytes(image[body.len()..].try_into().map_err(|_| "short")?);
    if crc32c::crc32c(body) != stored {
        return Err("old load: checksum mismatch".into());
    }
    let crc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (w, b) in words.iter().zip(body.chunks_exact(8)) {
        w.store(
            u64::from_le_bytes(b.try_into().map_err(|_| "short")?),
            Ordering::Relaxed,
        );
    }
    let copy = t.elapsed().as_secs_f64();
    std::hint::black_box(words);
    drop(image);
    Ok([read, crc, copy])
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

    // Loads, as at server start, from the page cache (the file was just written). Each goes into
    // fresh words, allocated before its clock starts but never written, as shared memory is at
    // server start: the first write of each page (a page fault) is part of every load. The
    // first line measures that alone.
    let file_bytes = layout.file_bytes();
    {
        let fresh = Map::alloc(layout);
        let t = Instant::now();
        for w in &fresh {
            w.store(1, Ordering::Relaxed);
        }
        let s = t.elapsed().as_secs_f64();
        // Else the stores into memory freed unread may be optimised away.
        std::hint::black_box(&fresh);
        println!(
            "first write of the fresh words                {s:8.3} s  {:8.3} s/GB  (page faults: part of every load below)",
            s / gb
        );
    }
    {
        let fresh = Map::alloc(layout);
        let old = old_load(&path, &fresh)?;
        std::hint::black_box(&fresh);
        println!(
            "load, old     {file_bytes:>12} bytes  {:8.3} s  {:8.3} s/GB  (read whole file {:.3} s, CRC {:.3} s, copy {:.3} s; 1 thread)",
            old.iter().sum::<f64>(),
            old.iter().sum::<f64>() / gb,
            old[0],
            old[1],
            old[2]
        );
    }
    let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let name = path.display().to_string();
    let default = LoadPlan::for_file_bytes(file_bytes);
    let mut plans = vec![LoadPlan {
        threads: 1,
        ..default
    }];
    if default.threads > 1 {
        plans.push(default);
    }
    let mut words2 = Vec::new();
    // Into fresh words (as at server start), then again into the same words, already written:
    // the loader's own cost without the page faults.
    for (plan, fresh) in plans
        .iter()
        .map(|p| (p, true))
        .chain(plans.iter().map(|p| (p, false)))
    {
        if fresh {
            words2 = Map::alloc(layout);
        }
        let m2 = Map::new(&words2);
        let t = Instant::now();
        let loaded = m2
            .load_from(&name, &file, ID, *plan)
            .map_err(|e| e.to_string())?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "load, new     {:>12} bytes  {s:8.3} s  {:8.3} s/GB  ({} threads, {} KiB buffers, {} words)",
            loaded.bytes,
            s / gb,
            loaded.threads,
            plan.buffer_bytes >> 10,
            if fresh { "fresh" } else { "written" }
        );
    }
    let m2 = Map::new(&words2);
    let t = Instant::now();
    let report = load_deltas(&m2, &dir, ID);
    let s = t.elapsed().as_secs_f64();
    println!(
        "load deltas   {:>12} bytes  {s:8.3} s  ({} deltas)",
        report.bytes, report.applied
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
