//! The behaviour checked by the original ptrack's `t/001_basic.pl` (spec ptrack.md §5.1, its 23
//! checks), plus the file-copy database strategy, unlogged tables and EXECUTE for PUBLIC. The
//! PG15 run keeps the map at the original's `global/ptrack.map` (`ptrack.map_location =
//! global`), the PG18 run at the default `pg_ptrack/ptrack.map`. Like the original, `basic` runs
//! in PostgreSQL's default configuration (data checksums and `wal_log_hints` off).

use ptrack_ext_tests::{Location, lsn, pagemapset, ptrack_cluster, wait_map_saved};
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

/// Blocks of a file that are not all zeros.
fn nonzero_blocks(path: &std::path::Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(8192)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(i, _)| i as u32)
        .collect()
}

fn disabled_checks(c: &PgCluster) {
    let (r, _) = c.sql_with_notices("postgres", "SELECT ptrack_get_pagemapset('0/0')");
    assert_eq!(r.unwrap_err(), "ptrack is disabled");
    let (r, notices) = c.sql_with_notices("postgres", "SELECT ptrack_init_lsn()");
    assert_eq!(r.unwrap(), vec![vec!["0/0".to_string()]]);
    assert!(
        notices.iter().any(|n| n == "WARNING:  ptrack is disabled"),
        "{notices:?}"
    );
    let (r, _) = c.sql_with_notices("postgres", "SELECT * FROM ptrack_get_change_stat('0/0')");
    assert!(r.unwrap_err().contains("ptrack is disabled"));
}

fn basic(major: u32, location: Location) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    // 1. Not preloaded: CREATE EXTENSION fails with the original's message. PostgreSQL's
    // default configuration, as the original test has it: no data checksums, no
    // wal_log_hints, so free-space-map changes are not WAL-logged.
    let mut c = PgCluster::init(&pg, false);
    c.start();
    let err = c
        .try_execute_db("postgres", "CREATE EXTENSION ptrack")
        .unwrap_err();
    assert!(
        err.contains("ptrack module must be initialized by Postmaster"),
        "{err}"
    );
    // 2–3. Preloaded with wal_level = minimal and the map off: the API says disabled.
    c.stop(StopMode::Fast);
    c.append_conf(&[
        ("wal_level", "minimal"),
        ("max_wal_senders", "0"),
        ("shared_preload_libraries", "ptrack"),
        ("ptrack.map_location", location.setting()),
    ]);
    c.start();
    c.execute("CREATE EXTENSION ptrack");
    assert_eq!(c.query_one("SELECT ptrack_version()"), "2.4");
    let ver = c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'ptrack'");
    assert!(ver.starts_with("2."), "{ver}");
    disabled_checks(&c);
    // 4. A map with wal_level = minimal: the server refuses to start.
    c.stop(StopMode::Fast);
    c.append_conf(&[("ptrack.map_size", "13")]);
    let err = c.try_start().unwrap_err();
    assert!(
        err.contains("cannot use ptrack if wal_level is minimal"),
        "{err}"
    );
    // 5. wal_level = replica: init_lsn is set.
    c.append_conf(&[("wal_level", "replica"), ("max_wal_senders", "10")]);
    c.start();
    c.execute("CHECKPOINT");
    let flush = c.query_one("SELECT pg_current_wal_flush_lsn()");
    let init = c.query_one("SELECT ptrack_init_lsn()");
    assert_ne!(init, "0/0");
    assert!(
        lsn(&init) <= lsn(&flush),
        "init_lsn {init} after flush {flush}"
    );
    // 6. Kept across an immediate stop (once the map saved after that checkpoint is on disk: the
    // tracker writes it asynchronously, where the original wrote it inside the checkpoint).
    wait_map_saved(&c, &location.map(&c));
    c.stop(StopMode::Immediate);
    c.start();
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    // 7. A new database and table are found after a clean restart.
    c.execute("CREATE DATABASE ptrack_test");
    c.execute("CREATE TABLE ptrack_test AS SELECT i AS id, md5(i::text) AS t FROM generate_series(0, 1000) i");
    let db_oid = c.query_one("SELECT oid FROM pg_database WHERE datname = 'ptrack_test'");
    let relfile = c.query_one("SELECT relfilenode FROM pg_class WHERE relname = 'ptrack_test'");
    let table_path = c.relation_path("postgres", "ptrack_test");
    c.restart();
    let set = pagemapset(&c, &flush);
    assert!(
        set.keys()
            .any(|p| p.starts_with(&format!("base/{db_oid}/"))),
        "no file of the new database {db_oid} in {:?}",
        set.keys().collect::<Vec<_>>()
    );
    assert!(
        set.keys().any(|p| p.contains(&relfile)),
        "table {relfile} missing"
    );
    // Every block of the table that holds data is there (PG16+ may extend a relation by
    // several zero pages at once; those are not WAL-logged and a backup recreates them from the
    // file size).
    let data_blocks = nonzero_blocks(&c.datadir().join(&table_path));
    assert!(!data_blocks.is_empty());
    for b in &data_blocks {
        assert!(
            set[&table_path].contains(b),
            "block {b} of {table_path} missing"
        );
    }
    // 8. Change stat.
    let pages: f64 = c
        .query_one(&format!(
            "SELECT pages FROM ptrack_get_change_stat('{flush}')"
        ))
        .parse()
        .unwrap();
    assert!(pages > 0.0);
    let files: usize = c
        .query_one(&format!(
            "SELECT files FROM ptrack_get_change_stat('{flush}')"
        ))
        .parse()
        .unwrap();
    assert_eq!(files, set.len());
    // 9. Resize: a new map, a new init_lsn, history gone.
    c.stop(StopMode::Fast);
    c.append_conf(&[("ptrack.map_size", "14")]);
    c.start();
    c.execute("CHECKPOINT");
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert_ne!(init2, "0/0");
    assert_ne!(init2, init);
    assert!(lsn(&init2) > lsn(&init));
    let (r, notices) = c.sql_with_notices(
        "postgres",
        &format!("SELECT path FROM ptrack_get_pagemapset('{flush}')"),
    );
    let paths: Vec<String> = r.unwrap().into_iter().map(|mut r| r.remove(0)).collect();
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with(&format!("base/{db_oid}/"))),
        "{paths:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("before init_lsn")),
        "{notices:?}"
    );
    // 10. Off: files deleted at start, API disabled.
    c.stop(StopMode::Fast);
    assert!(location.map(&c).exists());
    c.append_conf(&[("ptrack.map_size", "0")]);
    c.start();
    for l in [location, location.other()] {
        assert!(!l.map(&c).exists());
        assert!(!l.dir(&c).join("ptrack.map.tmp").exists());
    }
    assert!(!Location::PgPtrack.dir(&c).exists());
    disabled_checks(&c);
}

every_major!(basic, located);

/// A database created by file copy (no block in WAL) is reported whole; unlogged tables are
/// reported whole; a role without privileges can call the functions.
fn file_copy_unlogged_public(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 16, true);
    c.start();
    c.execute("CREATE EXTENSION ptrack; CHECKPOINT");
    let start = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.create_database("fc", "file_copy", "");
    c.execute("CREATE UNLOGGED TABLE u AS SELECT generate_series(1, 5000) AS x");
    c.execute("CREATE ROLE plain LOGIN");
    let oid = c.query_one("SELECT oid FROM pg_database WHERE datname = 'fc'");
    let set = pagemapset(&c, &start);
    // Every block of every relation file of the copied database.
    let dir = c.datadir().join(format!("base/{oid}"));
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let blocks = e.metadata().unwrap().len() / 8192;
        if !name.bytes().next().unwrap().is_ascii_digit() || blocks == 0 {
            continue;
        }
        files += 1;
        let path = format!("base/{oid}/{name}");
        assert_eq!(
            set.get(&path).map(Vec::len),
            Some(blocks as usize),
            "{path}"
        );
    }
    assert!(files > 100, "only {files} files in the copied database");
    let u = c.relation_path("postgres", "u");
    let ublocks: usize = c
        .query_one("SELECT pg_relation_size('u') / 8192")
        .parse()
        .unwrap();
    assert_eq!(
        set.get(&u).map(Vec::len),
        Some(ublocks),
        "unlogged {u} not whole"
    );
    // Nothing changed since now: only unlogged relations are reported.
    c.execute("CHECKPOINT");
    let now = c.query_one("SELECT pg_current_wal_flush_lsn()");
    let later = pagemapset(&c, &now);
    assert!(later.keys().all(|p| p.starts_with(&u)), "{later:?}");
    // PUBLIC can execute.
    let out = c
        .tool("psql")
        .args([
            "-U",
            "plain",
            "-Atc",
            "SELECT ptrack_init_lsn() <> '0/0', count(*) >= 0 FROM ptrack_get_pagemapset('0/0')",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t|t",
        "{out:?}"
    );
}

every_major!(file_copy_unlogged_public);

/// On a streaming standby the tracker follows the replay position: a table created on the
/// primary is in the standby's pagemapset once replayed, and `ptrack_get_pagemapset` on the
/// standby waits for the tracker to reach the replay position at the call.
fn standby(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut primary = ptrack_cluster(&pg, 8, true);
    primary.start();
    primary.execute("CREATE EXTENSION ptrack; CHECKPOINT");
    let mut standby = PgCluster::standby_of(&primary);
    standby.start();
    let start = primary.query_one("SELECT pg_current_wal_flush_lsn()");
    primary.execute("CREATE TABLE on_primary AS SELECT generate_series(1, 20000) AS g");
    let path = primary.relation_path("postgres", "on_primary");
    let target = primary.query_one("SELECT pg_current_wal_flush_lsn()");
    standby.wait_for_lsn(
        "SELECT pg_last_wal_replay_lsn()",
        &target,
        "standby replay",
        std::time::Duration::from_secs(60),
    );
    assert_eq!(standby.query_one("SELECT pg_is_in_recovery()"), "t");
    let init = standby.query_one("SELECT ptrack_init_lsn()");
    assert!(
        lsn(&init) <= lsn(&start),
        "standby init_lsn {init} after {start}"
    );
    let set = pagemapset(&standby, &start);
    // Every page holding rows (PostgreSQL 16+ extends relations by several empty pages at a
    // time without WAL; those need no tracking: a backup recreates them from the file size).
    let with_rows: Vec<u32> = primary
        .query("SELECT DISTINCT ((ctid::text::point)[0])::int FROM on_primary ORDER BY 1")
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(with_rows.len() > 50, "{with_rows:?}");
    let reported = set.get(&path).cloned().unwrap_or_default();
    let missing: Vec<&u32> = with_rows.iter().filter(|b| !reported.contains(b)).collect();
    assert!(
        missing.is_empty(),
        "{path}: pages with rows not reported on the standby: {missing:?}"
    );
}

every_major!(standby);
