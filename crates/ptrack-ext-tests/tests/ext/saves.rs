//! Incremental map saves (`ptrack_map::mapsave`): after the first full save, a checkpoint
//! writes a small delta and leaves the map file alone; a restart loads the chain; a damaged
//! delta is refused with a WARNING and the tracker reads WAL again from the state before it (no
//! change lost); a long chain is folded into a new full file.

use std::os::unix::fs::MetadataExt;

use ptrack_ext_tests::{
    Location, is_empty_page, map_deltas, pagemapset, ptrack_cluster, read_saved_map, wait_map_saved,
};
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

/// Every block of table `t` that holds anything must be reported since `start` (bulk
/// extension adds empty pages without WAL; a backup recreates them from the file size).
fn assert_table_reported(c: &PgCluster, start: &str, what: &str) {
    c.execute("CHECKPOINT");
    let path = c.relation_path("postgres", "t");
    let bytes = std::fs::read(c.datadir().join(&path)).unwrap();
    let want: Vec<u32> = bytes
        .chunks_exact(8192)
        .enumerate()
        .filter(|(_, p)| !is_empty_page(p))
        .map(|(i, _)| i as u32)
        .collect();
    assert!(
        want.len() > 100,
        "{what}: only {} blocks hold data",
        want.len()
    );
    let set = pagemapset(c, start);
    let got = set.get(&path).cloned().unwrap_or_default();
    let missed: Vec<u32> = want.iter().copied().filter(|b| !got.contains(b)).collect();
    assert!(
        missed.is_empty(),
        "{what}: blocks {missed:?} of {path} not reported since {start}"
    );
}

fn map_saves(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 16, true);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CHECKPOINT");
    let map = Location::PgPtrack.map(&c);
    wait_map_saved(&c, &map);
    let full = std::fs::metadata(&map).unwrap();
    let start = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &map);
    // A delta, not a new map file.
    let deltas = map_deltas(&map);
    assert!(!deltas.is_empty(), "no delta after a checkpoint");
    let now = std::fs::metadata(&map).unwrap();
    assert_eq!(
        (now.ino(), now.mtime_nsec()),
        (full.ino(), full.mtime_nsec()),
        "map file rewritten"
    );
    let delta_bytes: u64 = deltas
        .iter()
        .map(|d| std::fs::metadata(d).unwrap().len())
        .sum();
    assert!(
        delta_bytes * 10 < full.len(),
        "deltas of {delta_bytes} bytes for one table against a {}-byte map",
        full.len()
    );
    // Loaded after a crash: the change is still there.
    c.stop(StopMode::Immediate);
    c.start();
    assert!(c.log().contains("map deltas"), "{}", c.log());
    assert_table_reported(&c, &start, "after a restart");

    // Damage the newest delta: refused, and the changes in it are read again from WAL.
    let start2 = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET v = 'x'");
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &map);
    c.stop(StopMode::Immediate);
    let newest = map_deltas(&map).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    c.start();
    let warning = format!(
        "ptrack: map delta \"{}\" not used: incorrect checksum",
        std::fs::canonicalize(newest.parent().unwrap())
            .unwrap()
            .join(newest.file_name().unwrap())
            .display()
    );
    assert!(c.log().contains(&warning), "{warning} not in\n{}", c.log());
    assert!(!newest.exists(), "the damaged delta is removed");
    assert_table_reported(&c, &start2, "after a damaged delta");

    // A long chain becomes a new full file.
    let before = read_saved_map(&map).unwrap().tracked;
    for i in 0..70 {
        c.execute(&format!(
            "UPDATE t SET v = 'y{i}' WHERE g = {}",
            1 + i * 200
        ));
        c.execute("CHECKPOINT");
    }
    wait_map_saved(&c, &map);
    assert!(read_saved_map(&map).unwrap().tracked > before);
    let n = map_deltas(&map).len();
    assert!(n < 64, "{n} deltas: the chain was never folded");
    let now = std::fs::metadata(&map).unwrap();
    assert_ne!(now.ino(), full.ino(), "map file never rewritten");
    c.stop(StopMode::Fast);
    c.start();
    assert_table_reported(&c, &start, "after the fold and a clean restart");
}

every_major!(map_saves);
