//! `pg_control` as ptrack reads it equals what PostgreSQL itself says: the server's
//! `pg_control_system()`, `pg_control_checkpoint()` and `pg_control_init()` functions for every
//! installed major (13–18), and `pg_controldata` where the installation has it (15, 18).

use ptrack_page::{ControlFile, read_control_file};
use ptrack_testkit::{PgCluster, StopMode, optional_pg};

fn sql_row(c: &PgCluster, sql: &str) -> Vec<String> {
    c.query(sql).into_iter().next().expect("one row")
}

fn compare_with_server(c: &PgCluster, ctl: &ControlFile) {
    let s = sql_row(
        c,
        "SELECT pg_control_version, catalog_version_no, system_identifier FROM pg_control_system()",
    );
    assert_eq!(s[0], ctl.pg_control_version.to_string());
    assert_eq!(s[1], ctl.catalog_version_no.to_string());
    assert_eq!(s[2], ctl.system_identifier.to_string());
    let k = sql_row(
        c,
        "SELECT checkpoint_lsn, redo_lsn, timeline_id, prev_timeline_id FROM pg_control_checkpoint()",
    );
    assert_eq!(k[0], ctl.checkpoint.to_string());
    assert_eq!(k[1], ctl.redo.to_string());
    assert_eq!(k[2], ctl.timeline.to_string());
    assert_eq!(k[3], ctl.prev_timeline.to_string());
    let i = sql_row(
        c,
        "SELECT max_data_alignment, database_block_size, blocks_per_segment, wal_block_size, \
         bytes_per_wal_segment, data_page_checksum_version FROM pg_control_init()",
    );
    assert_eq!(i[0], ctl.max_align.to_string());
    assert_eq!(i[1], ctl.blcksz.to_string());
    assert_eq!(i[2], ctl.relseg_size.to_string());
    assert_eq!(i[3], ctl.xlog_blcksz.to_string());
    assert_eq!(i[4], ctl.xlog_seg_size.to_string());
    assert_eq!(i[5], ctl.data_checksum_version.to_string());
}

fn compare_with_controldata(c: &PgCluster, ctl: &ControlFile) {
    if !c.install.has("pg_controldata") {
        eprintln!(
            "PG{}: no pg_controldata in this installation; compared with SQL only",
            c.install.major
        );
        return;
    }
    let m = c.controldata();
    let get = |k: &str| {
        m.get(k)
            .unwrap_or_else(|| panic!("pg_controldata has no {k:?}: {m:?}"))
            .clone()
    };
    assert_eq!(
        get("pg_control version number"),
        ctl.pg_control_version.to_string()
    );
    assert_eq!(
        get("Catalog version number"),
        ctl.catalog_version_no.to_string()
    );
    assert_eq!(
        get("Database system identifier"),
        ctl.system_identifier.to_string()
    );
    assert_eq!(get("Database cluster state"), ctl.state.to_string());
    assert_eq!(
        get("Latest checkpoint location"),
        ctl.checkpoint.to_string()
    );
    assert_eq!(
        get("Latest checkpoint's REDO location"),
        ctl.redo.to_string()
    );
    assert_eq!(
        get("Latest checkpoint's TimeLineID"),
        ctl.timeline.to_string()
    );
    assert_eq!(get("Database block size"), ctl.blcksz.to_string());
    assert_eq!(
        get("Blocks per segment of large relation"),
        ctl.relseg_size.to_string()
    );
    assert_eq!(get("WAL block size"), ctl.xlog_blcksz.to_string());
    assert_eq!(get("Bytes per WAL segment"), ctl.xlog_seg_size.to_string());
    assert_eq!(
        get("Data page checksum version"),
        ctl.data_checksum_version.to_string()
    );
    assert_eq!(get("Maximum data alignment"), ctl.max_align.to_string());
}

fn control_matches_postgres(major: u32) {
    let Some(pg) = optional_pg(major) else { return };
    // Alternate checksums so both values of data_checksum_version are covered.
    let mut c = PgCluster::start_new(&pg, major.is_multiple_of(2));
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) g; CHECKPOINT");
    let running = read_control_file(c.datadir()).expect("read pg_control of a running server");
    assert_eq!(running.major.number(), major);
    compare_with_server(&c, &running);
    c.stop(StopMode::Fast);
    let stopped = read_control_file(c.datadir()).expect("read pg_control after shutdown");
    assert!(stopped.state.is_shut_down(), "{:?}", stopped.state);
    assert!(stopped.checkpoint > running.checkpoint);
    compare_with_controldata(&c, &stopped);
    // `ptrack debug control` prints the same values as JSON.
    let r = crate::util::run(&["debug", "control", "-D", &c.datadir().display().to_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["checkpoint"], stopped.checkpoint.to_string());
    assert_eq!(j["system_identifier"], stopped.system_identifier);
}

#[test]
fn pg13_control_matches_postgres() {
    control_matches_postgres(13);
}

#[test]
fn pg14_control_matches_postgres() {
    control_matches_postgres(14);
}

#[test]
fn pg15_control_matches_postgres() {
    control_matches_postgres(15);
}

#[test]
fn pg16_control_matches_postgres() {
    control_matches_postgres(16);
}

#[test]
fn pg17_control_matches_postgres() {
    control_matches_postgres(17);
}

#[test]
fn pg18_control_matches_postgres() {
    control_matches_postgres(18);
}
