//! PostgreSQL's own tools on a cluster with ptrack and a map: `pg_checksums --check`,
//! `--enable` and `--disable`, `pg_basebackup` with checksum verification, `pg_resetwal` and
//! `pg_rewind`. The tools work with the map at its default place (`pg_ptrack/`); the offline
//! ones rewrite pages or WAL without the tracker seeing it, and the tracker notices on start
//! (`init_lsn` moves, with a WARNING) or keeps every change.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ptrack_ext_tests::{
    Hints, Location, compare, lsn, pagemapset, ptrack_cluster, read_saved_map, snapshot,
    sync_tracker, wait_map_saved,
};
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

use crate::failures::started_at;

/// Runs one of the cluster's tools as `postgres` and returns its output, whatever its status.
fn tool(c: &PgCluster, name: &str, args: &[&str]) -> Output {
    c.tool(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn datadir(c: &PgCluster) -> String {
    c.datadir().display().to_string()
}

/// `pg_checksums --check` on a stopped cluster with a map passes at the default location; at
/// the original's `global/ptrack.map` it stops at the map, as it always did.
fn pg_checksums_check(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, Location::PgPtrack);
    c.stop(StopMode::Fast);
    assert!(Location::PgPtrack.map(&c).exists());
    let out = tool(&c, "pg_checksums", &["--check", "-D", &datadir(&c)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Bad checksums:  0"), "{}", text(&out));

    c.append_conf(&[("ptrack.map_location", "global")]);
    c.start();
    c.stop(StopMode::Fast);
    assert!(Location::Global.map(&c).exists());
    let out = tool(&c, "pg_checksums", &["--check", "-D", &datadir(&c)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("invalid segment number 0 in file name")
            && text(&out).contains("ptrack.map"),
        "{}",
        text(&out)
    );
}

every_major!(pg_checksums_check);

/// `pg_checksums --enable` rewrites every page without WAL and without changing page LSNs, so
/// the map cannot vouch for anything before it: on start the tracker warns and moves `init_lsn`
/// past every LSN of the old server run. `--disable` (which rewrites `pg_control` only, but
/// leaves no trace of which one ran) is treated the same way. A plain restart afterwards warns
/// no more.
fn pg_checksums_enable_disable(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 4, false);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CREATE TABLE t AS SELECT generate_series(1, 10000) AS g; CHECKPOINT");
    let map = Location::PgPtrack.map(&c);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    let end = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.stop(StopMode::Fast);
    assert_eq!(read_saved_map(&map).unwrap().data_checksum_version, 0);
    let out = tool(&c, "pg_checksums", &["--enable", "-D", &datadir(&c)]);
    assert!(out.status.success(), "{}", text(&out));
    c.start();
    assert_eq!(c.query_one("SHOW data_checksums"), "on");
    let warning = "WARNING:  ptrack: data checksums were enabled while the server was down (data_checksum_version 0 when the map was saved, 1 in pg_control now)";
    assert!(
        c.log().contains(warning),
        "{warning} not in log:\n{}",
        c.log()
    );
    assert!(
        c.log()
            .contains("a full backup is needed before the next incremental one"),
        "{}",
        c.log()
    );
    sync_tracker(&c);
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    // Later than every LSN before the stop: a backup started then cannot be a parent.
    assert!(
        lsn(&init2) > lsn(&end) && lsn(&init2) > lsn(&init),
        "init_lsn {init} -> {init2}, WAL end before the stop {end}"
    );
    // Tracking goes on from there.
    c.execute("CHECKPOINT");
    let now = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET g = g + 1 WHERE g < 10");
    assert!(pagemapset(&c, &now).contains_key(&c.relation_path("postgres", "t")));
    c.restart();
    sync_tracker(&c);
    assert_eq!(c.log().matches("data checksums were enabled").count(), 1);
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init2);
    c.stop(StopMode::Fast);
    assert_eq!(read_saved_map(&map).unwrap().data_checksum_version, 1);
    let out = tool(&c, "pg_checksums", &["--check", "-D", &datadir(&c)]);
    assert!(out.status.success(), "{}", text(&out));

    let end = lsn(&c.controldata()["Latest checkpoint location"]);
    let out = tool(&c, "pg_checksums", &["--disable", "-D", &datadir(&c)]);
    assert!(out.status.success(), "{}", text(&out));
    c.start();
    assert!(
        c.log().contains(
            "WARNING:  ptrack: data checksums were disabled while the server was down (data_checksum_version 1 when the map was saved, 0 in pg_control now)"
        ),
        "{}",
        c.log()
    );
    sync_tracker(&c);
    let init3 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(
        lsn(&init3) > end,
        "init_lsn {init3}, shutdown checkpoint {end}"
    );
}

every_major!(pg_checksums_enable_disable);

/// `pg_basebackup` verifies checksums (PG15: of every file in `global/`) and copies the map;
/// at the original's `global/ptrack.map`, PG15's stops at it.
fn pg_basebackup_verifies_checksums(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, Location::PgPtrack);
    let base = PgCluster::new_cluster_dir();
    let backup = |c: &PgCluster, to: &Path| {
        tool(
            c,
            "pg_basebackup",
            &[
                "-D",
                &to.display().to_string(),
                "-X",
                "fetch",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
    };
    let out = backup(&c, &base.join("data"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(base.join("data/pg_ptrack/ptrack.map").exists());
    if major == 15 {
        c.stop(StopMode::Fast);
        c.append_conf(&[("ptrack.map_location", "global")]);
        c.start();
        let out = backup(&c, &base.join("data2"));
        assert!(!out.status.success(), "{}", text(&out));
        // The server's base backup says why (it may be at ptrack.map or ptrack.map.tmp).
        assert!(
            c.log()
                .contains("invalid segment number 0 in file \"ptrack.map"),
            "{}\n{}",
            text(&out),
            c.log()
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

every_major!(pg_basebackup_verifies_checksums);

/// `pg_resetwal` removes every WAL segment and starts WAL further on: the tracker finds the WAL
/// after its saved position gone, warns and moves `init_lsn` (the gap logic, no new check).
fn pg_resetwal_moves_init_lsn(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, Location::PgPtrack);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Fast);
    let out = tool(&c, "pg_resetwal", &["-D", &datadir(&c)]);
    assert!(out.status.success(), "{}", text(&out));
    c.start();
    sync_tracker(&c);
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init2) > lsn(&init), "init_lsn {init} -> {init2}");
    assert!(
        c.log()
            .contains("WARNING:  ptrack: WAL needed to track changes is gone"),
        "{}",
        c.log()
    );
}

every_major!(pg_resetwal_moves_init_lsn);

/// `pg_rewind` of an old primary after its standby was promoted and both changed data: the
/// rewound server gets the new primary's map (pg_rewind copies `pg_ptrack/`), replays the new
/// primary's WAL, and every block that differs from the old primary's files at a point before
/// the fork is reported for that point (or `init_lsn` moved past it, with a warning).
fn pg_rewind_keeps_every_change(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut a = ptrack_cluster(&pg, 8, true);
    a.start();
    a.execute(
        "CREATE EXTENSION ptrack;
         CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor = 50);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CHECKPOINT",
    );
    let mut b = PgCluster::standby_of(&a);
    b.start();
    // The point before the fork: both quiet and checkpointed, the standby replayed it.
    a.execute("CHECKPOINT");
    let point = a.query_one("SELECT pg_current_wal_flush_lsn()");
    let replay = "SELECT pg_last_wal_replay_lsn()";
    b.wait_for_lsn(replay, &point, "standby replay", Duration::from_secs(60));
    let before = snapshot(&a);

    b.execute("SELECT pg_promote()");
    b.execute("UPDATE t SET v = 'b' WHERE id % 10 = 0");
    b.execute("CREATE TABLE only_b AS SELECT generate_series(1, 5000) AS g");
    b.execute("CHECKPOINT");
    wait_map_saved(&b, &Location::PgPtrack.map(&b));
    a.execute("UPDATE t SET v = 'a' WHERE id % 7 = 0");
    a.execute("INSERT INTO t SELECT g, 'a' FROM generate_series(20001, 25000) g");
    a.execute("CREATE TABLE only_a AS SELECT generate_series(1, 5000) AS g");
    a.execute("CHECKPOINT");
    a.stop(StopMode::Fast);

    let source = format!(
        "host={} port={} user=postgres dbname=postgres",
        b.socket_dir().display(),
        b.port()
    );
    let out = tool(
        &b,
        "pg_rewind",
        &["-D", &datadir(&a), "--source-server", &source, "-R"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // pg_rewind copied the source's postgresql.conf: the old primary keeps its own socket.
    a.append_conf(&[(
        "unix_socket_directories",
        &a.socket_dir().display().to_string(),
    )]);
    a.start();
    assert_eq!(a.query_one("SELECT pg_is_in_recovery()"), "t");
    // Let the rewound server replay everything and write it out (a restartpoint).
    b.execute("CHECKPOINT");
    let target = b.query_one("SELECT pg_current_wal_flush_lsn()");
    a.wait_for_lsn(replay, &target, "rewound replay", Duration::from_secs(60));
    a.execute("CHECKPOINT");
    sync_tracker(&a);
    let after = snapshot(&a);
    let init = a.query_one("SELECT ptrack_init_lsn()");
    if lsn(&init) > lsn(&point) {
        assert!(
            a.log()
                .contains("a full backup is needed before the next incremental one"),
            "init_lsn moved from before {point} to {init} without a warning:\n{}",
            a.log()
        );
        return;
    }
    let set = pagemapset(&a, &point);
    let cmp = compare(&before, &after, &set, Hints::Logged);
    eprintln!(
        "PG{major} after pg_rewind: {} changed blocks since {point}, {} reported, {} false positives",
        cmp.changed, cmp.reported, cmp.false_positives
    );
    assert!(cmp.changed > 0, "nothing changed: the test proves nothing");
    assert!(
        cmp.missed.is_empty(),
        "{} blocks changed since {point} not reported after pg_rewind, first: {:?}",
        cmp.missed.len(),
        &cmp.missed[..cmp.missed.len().min(10)]
    );
    assert!(
        set.contains_key(&a.relation_path("postgres", "only_b")),
        "table created after the fork missing"
    );
}

every_major!(pg_rewind_keeps_every_change);
