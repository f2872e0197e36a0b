//! `ptrack backup/restore/validate/show` against real PG13 to PG18 servers: the paranoia chain
//! (FULL → PTRACK → DELTA → PTRACK over pgbench, a DDL mix and catalog rewrites, every backup
//! restored, compared file by file and page by page with its quiescent source, started and
//! compared with `pg_dumpall` taken at backup time, its prepared transactions checked, then
//! amcheck'ed).

use ptrack_testkit::{PgInstall, require_ptrack};

use crate::backup_util::*;
use crate::util::run;

fn ddl_mix(c: &ptrack_testkit::PgCluster, ts_dir: &str, round: u32) {
    c.create_database(&format!("fc{round}"), "file_copy", "");
    c.create_database(&format!("wl{round}"), "wal_log", "");
    c.execute_db(
        &format!("wl{round}"),
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    );
    if round > 1 {
        let prev = round - 1;
        c.execute(&format!("DROP DATABASE fc{prev}"));
        c.execute(&format!("DROP DATABASE wl{prev}"));
    }
    c.execute("TRUNCATE pgbench_history");
    c.execute("VACUUM FULL pgbench_tellers");
    c.execute(&format!(
        "CREATE INDEX ix{round} ON pgbench_accounts (abalance)"
    ));
    c.execute(&format!(
        "CREATE TABLE gone{round} AS SELECT g FROM generate_series(1, 1000) g"
    ));
    c.execute(&format!("DROP TABLE gone{round}"));
    if round == 1 {
        c.execute(&format!("CREATE TABLESPACE ts1 LOCATION '{ts_dir}'"));
    }
    c.execute(&format!("CREATE TABLE ts_t{round} TABLESPACE ts1 AS SELECT g, repeat('x', 200) AS f FROM generate_series(1, 3000) g"));
    c.execute(&format!("UPDATE ts_t{round} SET f = 'y' WHERE g % 7 = 0"));
    c.execute("DELETE FROM pgbench_accounts WHERE aid % 97 = 0");
    c.execute("VACUUM pgbench_accounts");
    catalog_mix(c, round);
}

/// What rewrites catalogs and the self-checksummed files (pg_filenode.map, pg_control,
/// replorigin_checkpoint, pg_twophase): VACUUM FULL of mapped catalogs, ALTER SYSTEM,
/// sequences, a prepared transaction left open across the next backup, a replication origin
/// advanced.
fn catalog_mix(c: &ptrack_testkit::PgCluster, round: u32) {
    c.execute("VACUUM FULL pg_class");
    c.execute("VACUUM FULL pg_attribute");
    c.execute("VACUUM FULL pg_database");
    c.execute(&format!("ALTER SYSTEM SET work_mem = '{}MB'", 4 + round));
    c.execute(&format!(
        "CREATE SEQUENCE seq{round}; SELECT count(nextval('seq{round}')) FROM generate_series(1, 50 * {round})"
    ));
    c.execute("CREATE TABLE IF NOT EXISTS prepared_t (r int, g int)");
    c.execute(&format!(
        "BEGIN; INSERT INTO prepared_t SELECT {round}, g FROM generate_series(1, 100) g; PREPARE TRANSACTION 'px{round}'"
    ));
    if round > 1 {
        c.execute(&format!("COMMIT PREPARED 'px{}'", round - 1));
    }
    c.execute(&format!(
        "SELECT pg_replication_origin_create('origin{round}'); SELECT pg_replication_origin_advance('origin1', '0/{:X}')",
        0x1000_0000u64 * u64::from(round)
    ));
}

fn paranoia_chain(install: PgInstall, checksums: bool) {
    let (_d, repo) = new_repo();
    paranoia_chain_in(install, checksums, &repo);
}

/// The paranoia chain in repository `repo` (a directory or an S3 bucket).
fn paranoia_chain_in(install: PgInstall, checksums: bool, repo: &str) {
    let repo = repo.to_string();
    let cfg = ptrack_testkit::ClusterConfig::new(checksums)
        .set("shared_preload_libraries", "ptrack")
        .set("ptrack.map_size", "64MB")
        .set("max_prepared_transactions", "10");
    let mut c = ptrack_testkit::PgCluster::init_with(&install, &cfg);
    c.start();
    c.execute("CREATE EXTENSION ptrack");
    c.pgbench_init(3);
    let ts_dir = c.new_tablespace_dir("ts1");
    let ts = ts_dir.display().to_string();
    let mut ids = Vec::new();
    let steps: [(&str, u32); 4] = [("full", 0), ("ptrack", 0), ("delta", 1), ("ptrack", 2)];
    for (i, (mode, round)) in steps.into_iter().enumerate() {
        if i > 0 {
            c.run_tool("pgbench", &["-t", "300", "-c", "2", "postgres"]);
        }
        if round > 0 {
            ddl_mix(&c, &ts, round);
        }
        if i == 3 {
            // VACUUM FULL waits for the prepared transaction's lock: commit it first and leave a
            // new one open across the backup.
            c.execute("COMMIT PREPARED 'px2'");
            let out = c.run_tool("vacuumdb", &["--full", "--all", "--quiet"]);
            assert!(out.status.success(), "vacuumdb --full --all");
            c.execute("BEGIN; INSERT INTO prepared_t VALUES (3, 3); PREPARE TRANSACTION 'px3'");
        }
        let dump = dumpall(&c);
        let prepared = c.query("SELECT gid FROM pg_prepared_xacts ORDER BY 1");
        let id = backup(&c, &repo, mode);
        let tss = if round > 0 || i >= 2 {
            vec![ts.clone()]
        } else {
            vec![]
        };
        let r = restore_and_compare(&mut c, &repo, &id, &tss);
        let got = dumpall(&r);
        if got != dump {
            let _ = std::fs::write(
                format!("/tmp/ptrack-dump-{}-{i}-want.sql", install.major),
                &dump,
            );
            let _ = std::fs::write(
                format!("/tmp/ptrack-dump-{}-{i}-got.sql", install.major),
                &got,
            );
        }
        assert!(
            got == dump,
            "PG{} backup {id} (#{i}): restored pg_dumpall differs from the source's at backup time",
            install.major
        );
        assert_eq!(
            r.query("SELECT gid FROM pg_prepared_xacts ORDER BY 1"),
            prepared,
            "PG{} backup {id}: prepared transactions",
            install.major
        );
        amcheck(&r);
        ids.push(id);
    }
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    let shown = show(&repo);
    assert_eq!(shown.len(), 4);
    assert!(shown.iter().all(|b| b["status"] == "OK"));
    assert_eq!(shown[3]["parent"], shown[2]["id"]);
}

/// The same chain with the repository on a real object store (Garage on loopback): every
/// backup restored from S3 and compared page by page, validate and show through S3.
#[test]
fn paranoia_chain_pg18_on_s3() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let Some(bin) = ptrack_testkit::require_garage() else {
        return;
    };
    let g = ptrack_testkit::Garage::start(&bin, 1);
    let repo = new_s3_repo(&g, "chain");
    paranoia_chain_in(install, true, &repo);
    // init refuses a prefix that holds a repository; no secret is ever printed.
    let r = run(&["init", "-B", &repo]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("already a ptrack repository"),
        "{}",
        r.stderr
    );
    let v = run(&["validate", "-B", &repo]);
    for out in [&r.stdout, &r.stderr, &v.stdout, &v.stderr] {
        assert!(!out.contains(&g.secret), "a secret was printed: {out}");
    }
}

#[test]
fn paranoia_chain_pg18_checksums() {
    if let Some(i) = require_ptrack(18) {
        paranoia_chain(i, true);
    }
}

#[test]
fn paranoia_chain_pg16_no_checksums() {
    if let Some(i) = require_ptrack(16) {
        paranoia_chain(i, false);
    }
}

#[test]
fn paranoia_chain_pg15_no_checksums() {
    if let Some(i) = require_ptrack(15) {
        paranoia_chain(i, false);
    }
}

#[test]
fn paranoia_chain_pg17_checksums() {
    if let Some(i) = require_ptrack(17) {
        paranoia_chain(i, true);
    }
}

#[test]
fn paranoia_chain_pg14_no_checksums() {
    if let Some(i) = require_ptrack(14) {
        paranoia_chain(i, false);
    }
}

#[test]
fn paranoia_chain_pg13_checksums() {
    if let Some(i) = require_ptrack(13) {
        paranoia_chain(i, true);
    }
}

/// Backups taken while pgbench runs: after restoring the ptrack backup the pgbench invariants
/// hold (the balances of accounts, tellers and branches each add up to the history's deltas).
fn under_load(install: PgInstall) {
    let mut c = ptrack_cluster(&install, install.major >= 18, 64);
    c.pgbench_init(3);
    let (_d, repo) = new_repo();
    let mut bench = c.pgbench_spawn(&["-c", "2", "-T", "600"]);
    let full = backup(&c, &repo, "full");
    let p1 = backup(&c, &repo, "ptrack");
    let d1 = backup(&c, &repo, "delta");
    c.pgbench_stop(&mut bench);
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    for id in [full, p1, d1] {
        let r = restore_and_start(&install, &repo, &id, &[]);
        let sums = r.query(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), \
             (SELECT sum(bbalance) FROM pgbench_branches), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), \
             (SELECT count(*) FROM pgbench_history)",
        );
        let row = &sums[0];
        assert_eq!(
            row[0], row[3],
            "PG{} backup {id}: accounts vs history {row:?}",
            install.major
        );
        assert_eq!(
            row[1], row[3],
            "PG{} backup {id}: tellers vs history {row:?}",
            install.major
        );
        assert_eq!(
            row[2], row[3],
            "PG{} backup {id}: branches vs history {row:?}",
            install.major
        );
        amcheck(&r);
    }
    // The chain taken under load continues: with the load stopped, one more incremental of each
    // kind restores identical to its source file by file.
    for mode in ["ptrack", "delta"] {
        c.execute("UPDATE pgbench_branches SET bbalance = bbalance");
        let id = backup(&c, &repo, mode);
        restore_and_compare(&mut c, &repo, &id, &[]);
    }
}

#[test]
fn under_load_pg18() {
    if let Some(i) = require_ptrack(18) {
        under_load(i);
    }
}

#[test]
fn under_load_pg15() {
    if let Some(i) = require_ptrack(15) {
        under_load(i);
    }
}

/// `--recovery-target immediate`: the restored server stops recovery at consistency, promotes to
/// a new timeline and holds the data of the backup.
#[test]
fn restore_with_recovery_target_promotes() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(1);
    let (_d, repo) = new_repo();
    backup(&c, &repo, "full");
    c.execute("CREATE TABLE after_full AS SELECT g FROM generate_series(1, 1000) g");
    let id = backup(&c, &repo, "delta");
    let want = c.query_one("SELECT count(*) FROM pgbench_accounts");
    let base = ptrack_testkit::PgCluster::new_cluster_dir();
    let data = base.join("data").display().to_string();
    let r = run(&[
        "restore",
        "-B",
        &repo,
        "-D",
        &data,
        "-i",
        &id,
        "--recovery-target",
        "immediate",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(base.join("data/recovery.signal").exists());
    let mut rc = ptrack_testkit::PgCluster::adopt(&install, base, &[]);
    rc.start();
    rc.wait_for_lsn(
        "SELECT CASE WHEN pg_is_in_recovery() THEN '0/0' ELSE '0/1' END",
        "0/1",
        "promotion",
        std::time::Duration::from_secs(60),
    );
    assert_eq!(rc.query_one("SELECT count(*) FROM pgbench_accounts"), want);
    assert_eq!(rc.query_one("SELECT count(*) FROM after_full"), "1000");
    let wal = rc.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(
        wal.starts_with("00000002"),
        "promoted onto timeline 2, WAL file {wal}"
    );
}

/// Full and delta backups of the other majors (13 and 14 use the `pg_start_backup` /
/// `pg_stop_backup` names): restored, compared file by file with the source, started, same rows.
#[test]
fn full_and_delta_on_other_majors() {
    for major in [13, 14, 16, 17] {
        let Some(install) = ptrack_testkit::optional_pg(major) else {
            continue;
        };
        let mut c = ptrack_testkit::PgCluster::init(&install, true);
        c.start();
        c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
        let (_d, repo) = new_repo();
        backup(&c, &repo, "full");
        c.execute("UPDATE t SET v = 'changed' WHERE g % 10 = 0");
        c.execute("CREATE TABLE u AS SELECT g FROM generate_series(1, 5000) g");
        // Read before the backup: a read after it may prune pages (and the comparison below
        // needs a source unchanged since the backup).
        let want =
            c.query("SELECT count(*), sum(length(v)) FROM t UNION ALL SELECT count(*), 0 FROM u");
        let id = backup(&c, &repo, "delta");
        let v = run(&["validate", "-B", &repo]);
        assert_eq!(v.code, 0, "PG{major} validate:\n{}{}", v.stdout, v.stderr);
        // The source is quiescent since the backup: compared file by file and page by page.
        let r = restore_and_compare(&mut c, &repo, &id, &[]);
        assert_eq!(
            r.query("SELECT count(*), sum(length(v)) FROM t UNION ALL SELECT count(*), 0 FROM u"),
            want,
            "PG{major}"
        );
    }
}
