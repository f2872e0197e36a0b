//! Point-in-time recovery through the archive (issue 13 §4), after the pattern of PostgreSQL's
//! `src/bin/pg_combinebackup/t/002_compare_backups.pl`, on PG15 and PG18: a full backup and a
//! wal-mode incremental under pgbench and DDL (catalog rewrites, a database by file copy, a
//! prepared transaction), then points recorded between loads: a time, an xid, an LSN, a named
//! restore point, the incremental's own consistency point (immediate) and the end of the
//! archive (latest), each with the `pg_dumpall` and prepared transactions of that moment. Every
//! target is restored by `ptrack restore --recovery-target`, the backup chosen by ptrack, and
//! must give exactly that dump; the latest one is also compared file by file and page by page
//! with the stopped source. Then the cluster restored to the named point, promoted onto
//! timeline 2 and archiving into the same repository, is changed and named a point of its own;
//! meanwhile the source took another backup on timeline 1 after the branch. A restore to the
//! timeline 2 point passes over that backup (it is not on timeline 2's history), starts from the
//! incremental, follows the history and equals the timeline 2 cluster's dump.

use ptrack_testkit::{PgCluster, PgInstall, StopMode};

use crate::archive::{cluster_archiving_with, switch_and_wait};
use crate::archive_async::{owned_dir, wait_workers_gone};
use crate::backup_util::*;
use crate::util::run;

/// A moment recovery can be sent to, with what the cluster held then.
struct Point {
    target: String,
    dump: String,
    prepared: Vec<Vec<String>>,
}

fn capture(c: &PgCluster, target: String) -> Point {
    Point {
        target,
        dump: dumpall(c),
        prepared: c.query("SELECT gid FROM pg_prepared_xacts ORDER BY 1"),
    }
}

fn load(c: &PgCluster, round: u32) {
    c.run_tool("pgbench", &["-n", "-t", "200", "-c", "2", "postgres"]);
    c.execute(&format!(
        "CREATE TABLE r{round} AS SELECT g, md5(g::text) FROM generate_series(1, 2000) g"
    ));
    c.execute("VACUUM FULL pg_class");
    c.execute(&format!("INSERT INTO marks VALUES ('round {round}')"));
}

/// Restores `repo` with `extra` into a new cluster, started and out of recovery. Unless
/// `archiving`, the restored cluster archives nothing (it would push its own timeline into
/// the repository).
fn restore(
    install: &PgInstall,
    repo: &str,
    extra: &[&str],
    archiving: bool,
) -> (PgCluster, String) {
    let base = PgCluster::new_cluster_dir();
    let d = base.join("data").display().to_string();
    let mut args = vec!["restore", "-B", repo, "-D", &d];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.code, 0, "restore {extra:?}: {}{}", r.stdout, r.stderr);
    let mut p = PgCluster::adopt(install, base, &[]);
    if !archiving {
        p.append_conf(&[("archive_mode", "off")]);
    }
    p.start();
    // Recovery ends (pg_control says so: no connection, which would change catalog pages
    // before the paranoia comparison), or the server stops: then its log says why.
    let t0 = std::time::Instant::now();
    while p.is_running() && p.controldata()["Database cluster state"] != "in production" {
        assert!(t0.elapsed().as_secs() < 120, "{extra:?}: {}", p.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        p.is_running(),
        "restored with {extra:?}, the server stopped:\n{}",
        p.log()
    );
    (p, r.stdout)
}

fn check(install: &PgInstall, got: &PgCluster, want: &Point) {
    let dump = dumpall(got);
    let tag = want.target.replace([':', ' ', '/', '+'], "_");
    if dump != want.dump {
        let _ = std::fs::write(format!("/tmp/ptrack-pitr-{tag}-want.sql"), &want.dump);
        let _ = std::fs::write(format!("/tmp/ptrack-pitr-{tag}-got.sql"), &dump);
    }
    assert!(
        dump == want.dump,
        "PG{} target {}: the restored pg_dumpall differs (/tmp/ptrack-pitr-{tag}-*.sql)",
        install.major,
        want.target
    );
    assert_eq!(
        got.query("SELECT gid FROM pg_prepared_xacts ORDER BY 1"),
        want.prepared,
        "PG{} target {}: prepared transactions",
        install.major,
        want.target
    );
}

fn pitr(install: &PgInstall) {
    let (_d, repo) = new_repo();
    let cmd = format!("{} archive-push -B {repo} %p", env!("CARGO_BIN_EXE_ptrack"));
    let mut c = cluster_archiving_with(install, &cmd);
    c.pgbench_init(1);
    c.execute("CREATE TABLE marks (what text)");
    backup(&c, &repo, "full");
    load(&c, 1);
    c.create_database("copied", "file_copy", "");
    c.execute("BEGIN; INSERT INTO marks VALUES ('prepared'); PREPARE TRANSACTION 'px'");
    c.execute("CHECKPOINT");
    let immediate = capture(&c, "immediate".into());
    let incr = backup(&c, &repo, "wal");
    let mut points = vec![immediate];

    load(&c, 2);
    let t = c.query_one("SELECT clock_timestamp()::text");
    points.push(capture(&c, format!("time:{t}")));
    load(&c, 3);
    c.execute("COMMIT PREPARED 'px'");
    let xid = c.query_one(
        "WITH x AS (INSERT INTO marks VALUES ('xid') RETURNING txid_current()) SELECT * FROM x",
    );
    points.push(capture(&c, format!("xid:{xid}")));
    load(&c, 4);
    let lsn = c.query_one("SELECT pg_current_wal_lsn()");
    points.push(capture(&c, format!("lsn:{lsn}")));
    c.execute("BEGIN; INSERT INTO marks VALUES ('prepared 2'); PREPARE TRANSACTION 'py'");
    load(&c, 5);
    // Resolved before the branch: a transaction prepared across a timeline switch makes
    // PostgreSQL's own recovery fail (StandbyRecoverPreparedTransactions reads its PREPARE
    // record from a pg_wal file archive recovery never kept).
    c.execute("COMMIT PREPARED 'py'");
    c.execute("SELECT pg_create_restore_point('before_the_mistake')");
    let named = capture(&c, "name:before_the_mistake".into());
    load(&c, 6);
    c.execute("VACUUM");
    points.push(capture(&c, "latest".into()));
    c.execute("SELECT pg_logical_emit_message(false, 'p', 'end')");
    switch_and_wait(&c);
    // Restored clusters archive nothing, but the one restored to the named point, last: it
    // goes on as timeline 2.
    for p in &points {
        let (mut r, out) = restore(install, &repo, &["--recovery-target", &p.target], false);
        assert!(
            out.contains(&format!("restored backup {incr}")),
            "{}: {out}",
            p.target
        );
        if p.target == "latest" {
            // The end of the archive equals the stopped source, file by file and page by page
            // (compared before anything reads the restored cluster).
            c.stop(StopMode::Fast);
            r.stop(StopMode::Fast);
            assert_same_files(&c, &r, "latest");
            c.start();
            r.start();
        }
        check(install, &r, p);
    }
    let (b, out) = restore(install, &repo, &["--recovery-target", &named.target], true);
    assert!(out.contains(&format!("restored backup {incr}")), "{out}");
    check(install, &b, &named);

    // Timeline 2: the cluster restored to the named point goes on; the source takes a backup
    // on timeline 1 after the branch.
    assert_eq!(
        b.query_one("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    b.execute("INSERT INTO marks VALUES ('on timeline 2')");
    b.execute("SELECT pg_create_restore_point('on_two')");
    let two = capture(&b, "name:on_two".into());
    b.execute("SELECT pg_logical_emit_message(false, 'p', 'two')");
    switch_and_wait(&b);
    let after = backup(&c, &repo, "full");
    let r = run(&[
        "restore",
        "-B",
        &repo,
        "-D",
        &PgCluster::new_cluster_dir()
            .join("data")
            .display()
            .to_string(),
        "-i",
        &after,
        "--recovery-target",
        "name:on_two",
    ]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("not on the way to timeline 2"),
        "{}",
        r.stderr
    );
    // Through a prefetching archive-get: the prefetcher follows timeline 2's history, from
    // timeline 1's segments to timeline 2's at the switch.
    let spool = owned_dir();
    let sp = spool.path().display().to_string();
    let extra = ["--recovery-target", "name:on_two", "--prefetch", "3"];
    let (got, out) = restore(
        install,
        &repo,
        &[&extra[..], &["--archive-spool", &sp]].concat(),
        false,
    );
    assert!(out.contains(&format!("restored backup {incr}")), "{out}");
    // Nothing but a message was written on timeline 2 after the point: the restored cluster
    // equals the stopped timeline 2 cluster file by file and page by page.
    let (mut b, mut got) = (b, got);
    b.stop(StopMode::Fast);
    got.stop(StopMode::Fast);
    assert_same_files(&b, &got, "on_two");
    got.start();
    check(install, &got, &two);
    wait_workers_gone(spool.path());
    let log = std::fs::read_to_string(spool.path().join("get.log")).unwrap_or_default();
    // "prefetcher after <name>: <n> file(s) [<names>]"
    let runs: Vec<(&str, Vec<&str>)> = log
        .lines()
        .filter_map(|l| {
            let (after, rest) = l
                .strip_prefix("ptrack: prefetcher after ")?
                .split_once(": ")?;
            let names = rest.split_once('[')?.1.strip_suffix(']')?;
            Some((after, names.split_whitespace().collect()))
        })
        .collect();
    let seg = |n: &&str, tli: &str| n.len() == 24 && n.starts_with(tli);
    assert!(
        runs.iter()
            .any(|(after, got)| seg(after, "00000001") && got.iter().any(|n| seg(n, "00000002"))),
        "PG{}: no prefetcher went on from timeline 1 to timeline 2:\n{log}",
        install.major
    );
    let fetched: Vec<&str> = runs.iter().flat_map(|r| r.1.iter().copied()).collect();
    let first_two = fetched.iter().filter(|n| seg(n, "00000002")).min();
    assert!(
        fetched
            .iter()
            .filter(|n| seg(n, "00000001"))
            .all(|o| first_two.is_some_and(|t| o[8..] < t[8..])),
        "PG{}: a timeline 1 segment after the switch was prefetched:\n{log}",
        install.major
    );
    let shown = run(&["show", "-B", &repo, "--archive", "--json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let tls: Vec<u64> = shown.json()[0]["timelines"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["timeline"].as_u64()).collect())
        .unwrap_or_default();
    assert!(tls.contains(&1) && tls.contains(&2), "{}", shown.stdout);
}

#[test]
fn pitr_to_every_kind_of_target_and_along_a_new_timeline() {
    each_major(&[15, 18], pitr);
}
