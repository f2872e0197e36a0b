//! A map that cannot be trusted never leaves a silent gap: corrupt, foreign and stale maps, and
//! WAL removed while the tracker was stopped, each end in a WARNING and a later `init_lsn`.

use ptrack_ext_tests::{lsn, pagemapset, ptrack_cluster};
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

fn started(pg: &ptrack_testkit::PgInstall) -> PgCluster {
    let mut c = ptrack_cluster(pg, 4, true);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CREATE TABLE t AS SELECT generate_series(1, 10000) AS g; CHECKPOINT");
    c
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

fn corrupt_map(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Immediate);
    // The original's test: 12 bytes at offset 42.
    let path = c.datadir().join("global/ptrack.map");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[42..54].copy_from_slice(b"corruptbytes");
    std::fs::write(&path, bytes).unwrap();
    c.start();
    let abs = std::fs::canonicalize(&path).unwrap();
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

#[test]
fn corrupt_map_pg15() {
    corrupt_map(15);
}

#[test]
fn corrupt_map_pg18() {
    corrupt_map(18);
}

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
    std::fs::copy(
        a.datadir().join("global/ptrack.map"),
        b.datadir().join("global/ptrack.map"),
    )
    .unwrap();
    b.start();
    assert!(
        b.log().contains("belongs to another cluster"),
        "{}",
        b.log()
    );
    let init = b.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init) > lsn(&init_b), "init_lsn {init_b} -> {init}");
}

#[test]
fn foreign_map_pg15() {
    foreign_map(15);
}

#[test]
fn foreign_map_pg18() {
    foreign_map(18);
}

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

#[test]
fn stale_map_pg15() {
    stale_map(15);
}

#[test]
fn stale_map_pg18() {
    stale_map(18);
}

/// ptrack unloaded briefly, WAL still there: the tracker follows it, nothing is lost.
fn unloaded_with_wal_kept(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started(&pg);
    let (init, before) = unloaded_update(&mut c, false);
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    let t = c.relation_path("postgres", "t");
    assert!(
        pagemapset(&c, &before).contains_key(&t),
        "update made while unloaded missing"
    );
}

#[test]
fn unloaded_with_wal_kept_pg15() {
    unloaded_with_wal_kept(15);
}

#[test]
fn unloaded_with_wal_kept_pg18() {
    unloaded_with_wal_kept(18);
}

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

#[test]
fn wal_removed_under_tracker_pg15() {
    wal_removed_under_tracker(15);
}

#[test]
fn wal_removed_under_tracker_pg18() {
    wal_removed_under_tracker(18);
}
