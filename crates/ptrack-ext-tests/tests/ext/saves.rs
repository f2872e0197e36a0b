//! Incremental map saves (`ptrack_map::mapsave`): after the first full save, a checkpoint
//! writes a small delta and leaves the map file alone; a restart loads the chain; a damaged
//! delta is refused with a WARNING and the tracker reads WAL again from the state before it (no
//! change lost); a long chain is folded into a new full file. Change sets cut at each save answer
//! `ptrack_get_pagemapset` when they cover its range, and never across a gap.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ptrack_ext_tests::{
    Hints, Location, compare, is_empty_page, lsn, map_deltas, pagemapset, ptrack_cluster,
    read_saved_map, snapshot, sync_tracker, wait_map_saved, wait_until,
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
    // Loaded after a crash (not reset: init_lsn kept), and the change is still there.
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Immediate);
    c.start();
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    assert!(!c.log().contains("WARNING:  ptrack"), "{}", c.log());
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
    // Removed (a new delta of that number may have been written since).
    assert!(
        std::fs::read(&newest).map_or(true, |b| b != bytes),
        "the damaged delta is still there"
    );
    assert_table_reported(&c, &start2, "after a damaged delta");

    // A long chain becomes a new full file: at most 64 deltas, each save written before the
    // next checkpoint (queued saves merge, which would make the count depend on timing).
    let before = read_saved_map(&map).unwrap().tracked;
    let mut folded = None;
    // The chain's length after each save, for the failure message (a CI run on a loaded
    // machine once saw no fold within 100 checkpoints; at most 64 deltas make one).
    let mut lengths = Vec::new();
    for i in 0..200 {
        c.execute(&format!(
            "UPDATE t SET v = 'y{i}' WHERE g = {}",
            1 + i * 200
        ));
        c.execute("CHECKPOINT");
        wait_map_saved(&c, &map);
        if std::fs::metadata(&map).unwrap().ino() != full.ino() {
            folded = Some(i);
            break;
        }
        lengths.push(map_deltas(&map).len());
    }
    assert!(
        folded.is_some(),
        "the chain was never folded into a new full file within 200 checkpoints; deltas after each save: {lengths:?}\n{}",
        c.log()
    );
    assert!(read_saved_map(&map).unwrap().tracked > before);
    // The writer removes the old chain right after the new file is in place.
    wait_until(
        "the old delta chain removed after the fold",
        Duration::from_secs(30),
        || map_deltas(&map).len() < 4,
    );
    c.stop(StopMode::Fast);
    c.start();
    assert_table_reported(&c, &start, "after the fold and a clean restart");
}

every_major!(map_saves);

/// Whether `ptrack_get_pagemapset(start)` answered from change sets (its DEBUG1 line says).
fn answered_from_sets(c: &PgCluster, start: &str) -> bool {
    let (r, notices) = c.sql_with_notices(
        "postgres",
        &format!(
            "SET client_min_messages = debug1; SELECT count(*) FROM ptrack_get_pagemapset('{start}')"
        ),
    );
    r.unwrap();
    let line = notices
        .iter()
        .find(|n| n.contains("ptrack_get_pagemapset("))
        .unwrap_or_else(|| panic!("no DEBUG1 line in {notices:?}"));
    line.contains("change sets (used)")
}

/// Change sets answer `ptrack_get_pagemapset` with no false negative: after scattered updates
/// (what the map answers slowest), across a crash (the chain continues from the map's saved
/// position), and never across a gap (a removed set): then the map answers, still complete.
/// Every answer is checked against block hashes of the whole cluster.
fn change_sets(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 16, true);
    c.start();
    c.execute("CREATE EXTENSION ptrack");
    c.pgbench_init(2);
    c.execute("VACUUM");
    c.execute("CHECKPOINT");
    let start = c.query_one("SELECT pg_current_wal_flush_lsn()");
    let before = snapshot(&c);
    let check = |c: &PgCluster, what: &str| {
        c.execute("CHECKPOINT");
        sync_tracker(c);
        let after = snapshot(c);
        let cmp = compare(&before, &after, &pagemapset(c, &start), Hints::Logged);
        assert!(
            cmp.changed > 50,
            "{what}: only {} blocks changed",
            cmp.changed
        );
        assert!(
            cmp.missed.is_empty(),
            "{what}: {} changed blocks not reported, first {:?}",
            cmp.missed.len(),
            &cmp.missed[..cmp.missed.len().min(5)]
        );
        cmp
    };
    // Scattered: one row on every 20th page of pgbench_accounts, over several checkpoints.
    for k in 0..3 {
        c.execute(&format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1220 = {k}"
        ));
        c.execute("CHECKPOINT");
    }
    let cmp = check(&c, "scattered updates");
    assert!(answered_from_sets(&c, &start), "change sets not used");
    // With the original's full scan the map answers; the sets report no more than it.
    c.execute("ALTER SYSTEM SET ptrack.full_scan = on");
    c.execute("SELECT pg_reload_conf()");
    let full = pagemapset(&c, &start);
    c.execute("ALTER SYSTEM RESET ptrack.full_scan");
    c.execute("SELECT pg_reload_conf()");
    let full_count: usize = full.values().map(Vec::len).sum();
    assert!(
        cmp.reported as usize <= full_count,
        "sets reported {} blocks, the map {full_count}",
        cmp.reported
    );
    // A crash: the chain continues.
    c.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1220 = 7");
    c.stop(StopMode::Immediate);
    c.start();
    c.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1220 = 9");
    check(&c, "after a crash");
    assert!(
        answered_from_sets(&c, &start),
        "change sets not used after a crash"
    );
    // A gap: the map answers, still complete.
    let dir = c.datadir().join("pg_ptrack/changes");
    let mut sets: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sets.sort();
    assert!(sets.len() >= 3, "{sets:?}");
    std::fs::remove_file(&sets[sets.len() / 2]).unwrap();
    check(&c, "with a set removed");
    assert!(!answered_from_sets(&c, &start), "sets used across a gap");
}

every_major!(change_sets);

/// A hole in the delta chain, or deltas left without their map file, are said with a WARNING
/// (the hostile test's findings): the chain before the hole is used and WAL read again from
/// there; deltas without a map start a new map with a later `init_lsn`.
fn delta_holes(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 16, true);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CHECKPOINT");
    let map = Location::PgPtrack.map(&c);
    wait_map_saved(&c, &map);
    let start = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    for i in 0..4 {
        c.execute(&format!("UPDATE t SET v = 'z{i}' WHERE g % 7 = {i}"));
        c.execute("CHECKPOINT");
        wait_map_saved(&c, &map);
    }
    assert!(map_deltas(&map).len() >= 4, "{:?}", map_deltas(&map));
    c.stop(StopMode::Immediate);
    std::fs::remove_file(map.parent().unwrap().join("ptrack.map.delta.2")).unwrap();
    c.start();
    assert!(
        c.log().contains("ptrack.map.delta.2\" is missing, so the"),
        "{}",
        c.log()
    );
    assert_table_reported(&c, &start, "after a hole in the chain");

    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.execute("UPDATE t SET v = 'w'");
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &map);
    c.stop(StopMode::Immediate);
    assert!(!map_deltas(&map).is_empty());
    std::fs::remove_file(&map).unwrap();
    c.start();
    assert!(c.log().contains("without the map file"), "{}", c.log());
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init2) > lsn(&init), "init_lsn {init} -> {init2}");
}

every_major!(delta_holes);
