//! `ptrack backup/restore/validate/show` against real PG15 and PG18 servers: the paranoia chain
//! (FULL → PTRACK → DELTA → PTRACK over pgbench and a DDL mix, every backup restored, started and
//! compared with `pg_dumpall` taken at backup time, then amcheck'ed).

use ptrack_testkit::{PgInstall, require_ptrack};

use crate::backup_util::*;
use crate::util::run;

fn ddl_mix(c: &ptrack_testkit::PgCluster, ts_dir: &str, round: u32) {
    c.execute(&format!("CREATE DATABASE fc{round} STRATEGY FILE_COPY"));
    c.execute(&format!("CREATE DATABASE wl{round} STRATEGY WAL_LOG"));
    c.execute_db(
        &format!("wl{round}"),
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    );
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
}

fn paranoia_chain(install: PgInstall, checksums: bool) {
    let c = ptrack_cluster(&install, checksums, 64);
    c.pgbench_init(3);
    let ts_dir = c.new_tablespace_dir("ts1");
    let ts = ts_dir.display().to_string();
    let (_d, repo) = new_repo();
    let mut taken: Vec<(String, String)> = Vec::new();

    let full = backup(&c, &repo, "full");
    taken.push((full, dumpall(&c)));
    c.run_tool("pgbench", &["-t", "300", "-c", "2", "postgres"]);
    let p1 = backup(&c, &repo, "ptrack");
    taken.push((p1, dumpall(&c)));
    c.run_tool("pgbench", &["-t", "300", "-c", "2", "postgres"]);
    ddl_mix(&c, &ts, 1);
    let d1 = backup(&c, &repo, "delta");
    taken.push((d1, dumpall(&c)));
    c.run_tool("pgbench", &["-t", "200", "-c", "2", "postgres"]);
    ddl_mix(&c, &ts, 2);
    let p2 = backup(&c, &repo, "ptrack");
    taken.push((p2.clone(), dumpall(&c)));

    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    let shown = show(&repo);
    assert_eq!(shown.len(), 4);
    assert!(shown.iter().all(|b| b["status"] == "OK"));
    assert_eq!(shown[3]["parent"], shown[2]["id"]);

    for (i, (id, dump)) in taken.iter().enumerate() {
        let tss = if i >= 2 { vec![ts.clone()] } else { vec![] };
        let r = restore_and_start(&install, &repo, id, &tss);
        let got = dumpall(&r);
        if got != *dump {
            let _ = std::fs::write(
                format!("/tmp/ptrack-dump-{}-{i}-want.sql", install.major),
                dump,
            );
            let _ = std::fs::write(
                format!("/tmp/ptrack-dump-{}-{i}-got.sql", install.major),
                &got,
            );
        }
        assert!(
            got == *dump,
            "PG{} backup {id} (#{i}): restored pg_dumpall differs from the source's at backup time",
            install.major
        );
        amcheck(&r);
    }
}

#[test]
fn paranoia_chain_pg18_checksums() {
    if let Some(i) = require_ptrack(18) {
        paranoia_chain(i, true);
    }
}

#[test]
fn paranoia_chain_pg15_no_checksums() {
    if let Some(i) = require_ptrack(15) {
        paranoia_chain(i, false);
    }
}

/// Backups taken while pgbench runs: after restoring the ptrack backup the pgbench invariants
/// hold (the balances of accounts, tellers and branches each add up to the history's deltas).
fn under_load(install: PgInstall) {
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(3);
    let (_d, repo) = new_repo();
    let mut bench = c.pgbench_spawn(&["-c", "2", "-T", "600"]);
    let full = backup(&c, &repo, "full");
    let p1 = backup(&c, &repo, "ptrack");
    let d1 = backup(&c, &repo, "delta");
    let _ = bench.kill();
    let _ = bench.wait();
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

/// Full and delta backups of the other majors where installed (13 and 14 use the
/// `pg_start_backup`/`pg_stop_backup` names): restored, started, same rows.
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
        let id = backup(&c, &repo, "delta");
        let want =
            c.query("SELECT count(*), sum(length(v)) FROM t UNION ALL SELECT count(*), 0 FROM u");
        let v = run(&["validate", "-B", &repo]);
        assert_eq!(v.code, 0, "PG{major} validate:\n{}{}", v.stdout, v.stderr);
        let r = restore_and_start(&install, &repo, &id, &[]);
        assert_eq!(
            r.query("SELECT count(*), sum(length(v)) FROM t UNION ALL SELECT count(*), 0 FROM u"),
            want,
            "PG{major}"
        );
    }
}
