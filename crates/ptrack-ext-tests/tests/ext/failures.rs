//! A map that cannot be trusted never leaves a silent gap: corrupt, foreign, stale and
//! old-format maps, and WAL removed while the tracker was stopped, each end in a WARNING and a
//! later `init_lsn`.

use ptrack_ext_tests::{
    Location, lsn, pagemapset, ptrack_cluster_at, read_saved_map, sync_tracker, wait_map_saved,
};
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

/// A started cluster with the map at `location`, a table `t` and a map saved after a checkpoint.
pub fn started_at(pg: &ptrack_testkit::PgInstall, location: Location) -> PgCluster {
    let mut c = ptrack_cluster_at(pg, 4, true, location);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CREATE TABLE t AS SELECT generate_series(1, 10000) AS g; CHECKPOINT");
    wait_map_saved(&c, &location.map(&c));
    c
}

fn started(pg: &ptrack_testkit::PgInstall) -> PgCluster {
    started_at(pg, Location::PgPtrack)
}

/// Switches WAL segments and checkpoints until the segment holding `lsn` and the one after it
/// are gone from pg_wal (a reader that still holds the first one open cannot go on).
fn remove_wal_before(c: &PgCluster, lsn_text: &str) {
    let mut segs = vec![c.query_one(&format!("SELECT pg_walfile_name('{lsn_text}')"))];
    for _ in 0..12 {
        c.execute("INSERT INTO t SELECT generate_series(1, 1000)");
        c.execute("SELECT pg_switch_wal()");
        // Past the boundary: pg_walfile_name of a boundary LSN names the previous segment.
        c.execute("INSERT INTO t SELECT generate_series(1, 1000)");
        if segs.len() < 2 {
            segs.push(c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())"));
        }
        c.execute("CHECKPOINT");
        if segs.len() == 2
            && segs
                .iter()
                .all(|s| !c.datadir().join("pg_wal").join(s).exists())
        {
            return;
        }
    }
    panic!("segments {segs:?} still in pg_wal");
}

/// pg_probackup's `test_corrupt_ptrack_map` (PG15, at the original's `global/ptrack.map`) and
/// the same at the default location (PG18).
fn corrupt_map(major: u32, location: Location) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, location);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Immediate);
    // The original's test: 12 bytes at offset 42.
    let path = location.map(&c);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[42..54].copy_from_slice(b"corruptbytes");
    std::fs::write(&path, bytes).unwrap();
    // The absolute path the server names: of the directory, which stays (the server deletes
    // the corrupt file at start and writes a new one later).
    let abs = std::fs::canonicalize(location.dir(&c))
        .unwrap()
        .join("ptrack.map");
    c.start();
    let want = format!(
        "WARNING:  ptrack read map: incorrect checksum of file \"{}\"",
        abs.display()
    );
    assert!(c.log().contains(&want), "{want} not in log:\n{}", c.log());
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init2) > lsn(&init), "init_lsn {init} -> {init2}");
    // The server keeps running with a working map.
    c.execute("CHECKPOINT");
    let now = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET g = g + 1 WHERE g < 10");
    let t = c.relation_path("postgres", "t");
    assert!(pagemapset(&c, &now).contains_key(&t));
}

every_major!(corrupt_map, located);

/// A map copied from another cluster (same major, same size) is not loaded.
fn foreign_map(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut a = started(&pg);
    let mut b = started(&pg);
    let init_b = b.query_one("SELECT ptrack_init_lsn()");
    a.stop(StopMode::Fast);
    b.stop(StopMode::Fast);
    std::fs::copy(Location::PgPtrack.map(&a), Location::PgPtrack.map(&b)).unwrap();
    b.start();
    assert!(
        b.log().contains("belongs to another cluster"),
        "{}",
        b.log()
    );
    let init = b.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init) > lsn(&init_b), "init_lsn {init_b} -> {init}");
}

every_major!(foreign_map);

/// Restarts without ptrack preloaded, updates table `t` (and, when `remove_wal`, checkpoints
/// until that WAL is gone), restarts with ptrack again. Returns `init_lsn` before and the flush
/// LSN before the update.
fn unloaded_update(c: &mut PgCluster, remove_wal: bool) -> (String, String) {
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Fast);
    c.append_conf(&[("shared_preload_libraries", "")]);
    c.start();
    let before = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET g = -g WHERE g < 100");
    if remove_wal {
        remove_wal_before(c, &before);
    }
    c.stop(StopMode::Fast);
    c.append_conf(&[("shared_preload_libraries", "ptrack")]);
    c.start();
    (init, before)
}

/// ptrack unloaded for a while (bug §6.2 #10): changes made meanwhile are either followed from
/// WAL or, when that WAL is gone, init_lsn moves past them with a WARNING.
fn stale_map(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let (init, before) = unloaded_update(&mut c, true);
    // The tracker finds the gap after it has started: wait until it has read what is there.
    sync_tracker(&c);
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(
        lsn(&init2) > lsn(&before),
        "init_lsn {init} -> {init2}, changes from {before}"
    );
    assert!(
        c.log()
            .contains("WARNING:  ptrack: WAL needed to track changes is gone"),
        "{}",
        c.log()
    );
}

every_major!(stale_map);

/// ptrack unloaded briefly, WAL still there: the tracker follows it, nothing is lost.
fn unloaded_with_wal_kept(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let (init, before) = unloaded_update(&mut c, false);
    sync_tracker(&c);
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    let t = c.relation_path("postgres", "t");
    assert!(
        pagemapset(&c, &before).contains_key(&t),
        "update made while unloaded missing"
    );
}

every_major!(unloaded_with_wal_kept);

/// The tracker stopped (SIGSTOP) while checkpoints remove the WAL it has not read yet.
fn wal_removed_under_tracker(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let c = started(&pg);
    let pids = c.child_pids("ptrack tracker");
    assert_eq!(pids.len(), 1, "tracker pids {pids:?}");
    let pid = pids[0].to_string();
    let before = c.query_one("SELECT pg_current_wal_flush_lsn()");
    let kill = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    kill("-STOP");
    c.execute("UPDATE t SET g = -g WHERE g < 100");
    remove_wal_before(&c, &before);
    kill("-CONT");
    // The call waits for the tracker, which finds the gap, warns and moves init_lsn.
    let (r, notices) = c.sql_with_notices(
        "postgres",
        &format!("SELECT count(*) FROM ptrack_get_pagemapset('{before}')"),
    );
    let warned = notices.iter().any(|n| n.contains("before init_lsn"));
    let refused = r.as_ref().is_err_and(|e| e.contains("WAL was lost"));
    assert!(warned || refused, "{r:?} {notices:?}");
    let init = c.query_one("SELECT ptrack_init_lsn()");
    assert!(
        lsn(&init) > lsn(&before),
        "init_lsn {init}, changes from {before}"
    );
    assert!(
        c.log()
            .contains("WARNING:  ptrack: WAL needed to track changes is gone"),
        "{}",
        c.log()
    );
}

every_major!(wal_removed_under_tracker);

/// A map of the previous format (version 1: 64-byte header) is discarded with the original's
/// "incompatible format version" warning, and the next save writes version 2.
fn old_format_map(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Fast);
    let path = Location::PgPtrack.map(&c);
    let v2 = std::fs::read(&path).unwrap();
    assert_eq!(read_saved_map(&path).unwrap().version, 2);
    // The same cluster's map as version 1 wrote it: words 0-7 with version 1 and 8 more slots
    // (the file size is the same), then the CRC-32C.
    let word = |i: usize| u64::from_le_bytes(v2[i * 8..i * 8 + 8].try_into().unwrap());
    let mut v1 = Vec::with_capacity(v2.len());
    for i in 0..8 {
        let w = match i {
            1 => 1,
            6 => word(6) + 8,
            _ => word(i),
        };
        v1.extend_from_slice(&w.to_le_bytes());
    }
    v1.resize(v2.len() - 4, 0);
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &v1).unwrap();
    let abs = std::fs::canonicalize(Location::PgPtrack.dir(&c))
        .unwrap()
        .join("ptrack.map");
    c.start();
    let want = format!(
        "WARNING:  ptrack read map: map format version 1 in the file \"{}\" is incompatible with file format of extension 2",
        abs.display()
    );
    assert!(c.log().contains(&want), "{want} not in log:\n{}", c.log());
    assert!(
        c.log().contains(&format!(
            "Deleting file \"{}\" and reinitializing ptrack map.",
            abs.display()
        )),
        "{}",
        c.log()
    );
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init2) > lsn(&init), "init_lsn {init} -> {init2}");
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &path);
    let saved = read_saved_map(&path).unwrap();
    assert_eq!((saved.version, saved.data_checksum_version), (2, 1));
}

every_major!(old_format_map);

/// An out-of-range or malformed `ptrack.map_size`, or an unknown `ptrack.map_location`, stops
/// the server with PostgreSQL's message for the value, and touches no map file; the map saved
/// before is used once the value is fixed.
fn invalid_settings_refuse_start(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Fast);
    let path = Location::PgPtrack.map(&c);
    let saved = std::fs::read(&path).unwrap();
    let range = if major >= 16 {
        "(0 MB .. 32768 MB)"
    } else {
        "(0 .. 32768)"
    };
    let bad = [
        (
            "ptrack.map_size",
            "-1",
            format!("-1 MB is outside the valid range for parameter \"ptrack.map_size\" {range}"),
        ),
        (
            "ptrack.map_size",
            "100000000",
            format!(
                "100000000 MB is outside the valid range for parameter \"ptrack.map_size\" {range}"
            ),
        ),
        (
            "ptrack.map_size",
            "lots",
            "invalid value for parameter \"ptrack.map_size\": \"lots\"".to_string(),
        ),
        (
            "ptrack.map_location",
            "elsewhere",
            "invalid value for parameter \"ptrack.map_location\": \"elsewhere\"".to_string(),
        ),
    ];
    for (name, value, want) in bad {
        c.append_conf(&[(name, value)]);
        let err = c.try_start().unwrap_err();
        assert!(
            err.contains(&want),
            "{name} = {value}: {want} not in:\n{err}"
        );
        assert!(err.contains("HINT:  "), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), saved, "{name} = {value}");
        // Back to a good value before the next one.
        c.append_conf(&[
            ("ptrack.map_size", "4MB"),
            ("ptrack.map_location", "pg_ptrack"),
        ]);
    }
    c.start();
    sync_tracker(&c);
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    assert_eq!(c.query_one("SHOW ptrack.map_size"), "4MB");
}

every_major!(invalid_settings_refuse_start);
