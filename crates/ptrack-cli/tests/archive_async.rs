//! `ptrack archive-push --async` and `archive-get --prefetch` (issue 13 §1) on real servers:
//! under a pgbench load with DDL and a prepared transaction the asynchronous archive keeps up
//! (the `.ready` backlog never exceeds the queue bound) and loses nothing (the archive is
//! continuous, and a restore recovering through a prefetching `archive-get` equals the source
//! file by file and by pg_dumpall); with the repository unreachable nothing is reported
//! archived, every attempt fails loudly in the server's log, and the archive catches up once
//! the repository is back; the pusher killed at random points leaves only complete, verified
//! objects and the next pusher finishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ptrack_testkit::{ClusterConfig, PgCluster, PgInstall, StopMode, require_pg};

use crate::backup_util::{backup, chown_postgres, dumpall, new_repo, wait_recovery_end};
use crate::util::run;

const EXE: &str = env!("CARGO_BIN_EXE_ptrack");
/// `--queue-max` of the load test: the backlog it must stay within.
const QUEUE: usize = 16;

/// A started cluster whose `archive_command` is `archive-push --async` into `repo` through
/// `spool`, with `extra` options.
fn async_cluster(install: &PgInstall, repo: &str, spool: &Path, extra: &str) -> PgCluster {
    let cmd = format!(
        "{EXE} archive-push -B {repo} --async --spool {} -j 2 {extra} %p",
        spool.display()
    );
    crate::archive::cluster_archiving_with(install, &cmd)
}

/// A directory owned by `postgres` (the server's commands write there).
pub fn owned_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    chown_postgres(d.path());
    d
}

fn ready_count(c: &PgCluster) -> usize {
    let dir = c.datadir().join("pg_wal/archive_status");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

/// Polls `cond` on the server until it is `t`, at most `limit`.
fn wait_until(c: &PgCluster, cond: &str, what: &str, limit: Duration) {
    let t0 = Instant::now();
    while c.query_one(cond) != "t" {
        let log = c.log();
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; server log:\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Switches segment (after writing a WAL record: a switch at a segment's start is none) and
/// waits for it to be archived; its name.
fn switch_and_archive(c: &PgCluster) -> String {
    c.execute("SELECT pg_logical_emit_message(false, 'ptrack-test', 'x')");
    let seg = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    wait_until(
        c,
        &format!("SELECT coalesce(last_archived_wal >= '{seg}', false) FROM pg_stat_archiver"),
        &format!("{seg} archived"),
        Duration::from_secs(120),
    );
    seg
}

/// Waits until no worker of `spool` holds its lock (the test stops what it started).
pub fn wait_workers_gone(spool: &Path) {
    for w in ["push", "get"] {
        let p = spool.join(format!("{w}.lock"));
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) else {
            continue;
        };
        let t0 = Instant::now();
        // SAFETY: flock on a descriptor we own.
        while unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            assert!(t0.elapsed() < Duration::from_secs(60), "{w} worker runs on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn archive_is_one_run(repo: &str) -> serde_json::Value {
    let v = run(&["validate", "-B", repo, "--archive"]);
    assert_eq!(v.code, 0, "validate --archive:\n{}{}", v.stdout, v.stderr);
    let sh = run(&["show", "-B", repo, "--archive", "--json"]);
    assert_eq!(sh.code, 0, "{}", sh.stderr);
    let tl = sh.json()[0]["timelines"][0].clone();
    assert_eq!(tl["runs"].as_array().unwrap().len(), 1, "gaps: {tl}");
    tl
}

#[test]
fn async_push_keeps_up_under_load_and_a_prefetching_restore_equals_the_source() {
    crate::backup_util::each_major(&[15, 18], under_load);
}

fn under_load(install: &PgInstall) {
    let (_d, repo) = new_repo();
    let spool = owned_dir();
    let mut c = async_cluster(
        install,
        &repo,
        spool.path(),
        &format!("--queue-max {QUEUE}"),
    );
    c.pgbench_init(10);
    let full = backup(&c, &repo, "full");
    let first = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");

    // The backlog, sampled while pgbench runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let status = c.datadir().join("pg_wal/archive_status");
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = std::fs::read_dir(&status)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                            .count()
                    })
                    .unwrap_or(0);
                peak.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut bench = c.pgbench_spawn(&["-T", "15", "-c", "2", "-j", "1"]);
    // DDL and catalog rewrites while it runs.
    c.execute("CREATE TABLE ddl AS SELECT g, md5(g::text) v FROM generate_series(1, 20000) g");
    c.execute("VACUUM FULL pg_class");
    c.execute("ALTER TABLE ddl ADD COLUMN w int DEFAULT 7");
    c.execute("CLUSTER pgbench_branches USING pgbench_branches_pkey");
    let st = bench.wait().expect("pgbench");
    assert!(st.success(), "pgbench failed");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    c.execute("BEGIN; INSERT INTO ddl VALUES (-1, 'prepared', 0); PREPARE TRANSACTION 'p1'");

    // Quiescent from here on: what a later read would change in WAL (pruning the pages the
    // DDL left dead tuples in) is done now, into archived WAL.
    c.execute("VACUUM");
    let want = dumpall(&c);
    c.execute("CHECKPOINT");
    let last = switch_and_archive(&c);
    assert_eq!(
        c.query_one("SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        c.log()
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= QUEUE,
        "PG{}: {peak} files waited for the archiver (bound {QUEUE})",
        install.major
    );
    assert!(!c.log().contains("wait for archiving"), "{}", c.log());
    let archived: u64 = c
        .query_one("SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert!(
        archived >= 8,
        "only {archived} files archived: too little load"
    );
    c.stop(StopMode::Fast);
    wait_workers_gone(spool.path());
    let tl = archive_is_one_run(&repo);
    assert!(tl["runs"][0][0].as_str().unwrap() <= first.as_str(), "{tl}");
    assert!(tl["runs"][0][1].as_str().unwrap() >= last.as_str(), "{tl}");

    // Restored with a prefetching archive-get, recovered to the end of the archive.
    let get_spool = owned_dir();
    let gs = get_spool.path().display().to_string();
    let base = PgCluster::new_cluster_dir();
    let data = base.join("data").display().to_string();
    let r = run(&[
        "restore",
        "-B",
        &repo,
        "-D",
        &data,
        "-i",
        &full,
        "--prefetch",
        "4",
        "--archive-spool",
        &gs,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("--prefetch 4"), "{}", r.stdout);
    let mut rc = PgCluster::adopt(install, base, &[]);
    rc.start();
    wait_recovery_end(&rc);
    rc.stop(StopMode::Fast);
    wait_workers_gone(get_spool.path());
    let log = std::fs::read_to_string(get_spool.path().join("get.log")).unwrap_or_default();
    let fetched: usize = log
        .lines()
        .filter_map(|l| {
            l.rsplit(": ")
                .next()?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(fetched > 0, "nothing was prefetched:\n{log}");
    let diffs = ptrack_testkit::paranoia::compare(c.datadir(), rc.datadir(), 8192);
    assert!(
        diffs.is_empty(),
        "PG{}: recovered through the prefetching archive-get, the data directory differs:\n  {}\nrestored server's log:\n{}\nget.log:\n{log}",
        install.major,
        diffs.join("\n  "),
        rc.log()
            .lines()
            .filter(|l| !l.contains("restored log file"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    rc.start();
    assert_eq!(
        rc.query_one("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'p1'"),
        "1"
    );
    assert_eq!(
        dumpall(&rc),
        want,
        "PG{}: dump after recovery",
        install.major
    );
}

#[test]
fn async_push_fails_loudly_and_stores_nothing_while_the_repository_is_unreachable() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let (d, repo) = new_repo();
    let spool = owned_dir();
    let mut c = async_cluster(
        &install,
        &repo,
        spool.path(),
        "--queue-max 1 --archive-timeout 10",
    );
    c.execute("CREATE TABLE t(i int)");
    switch_and_archive(&c);
    let archived = c.query_one("SELECT archived_count FROM pg_stat_archiver");
    let away = d.path().join("away");
    #[allow(clippy::disallowed_methods)]
    std::fs::rename(&repo, &away).unwrap();
    let mut waiting = Vec::new();
    for i in 0..3 {
        c.execute(&format!("INSERT INTO t VALUES ({i})"));
        waiting.push(c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())"));
        c.execute("SELECT pg_switch_wal()");
    }
    wait_until(
        &c,
        "SELECT failed_count >= 2 FROM pg_stat_archiver",
        "archive failures",
        Duration::from_secs(60),
    );
    assert_eq!(
        c.query_one("SELECT archived_count FROM pg_stat_archiver"),
        archived,
        "reported archived while the repository was away"
    );
    assert!(ready_count(&c) >= 3, "the waiting files are kept");
    let log = c.log();
    assert!(log.contains("was not archived"), "{log}");
    assert!(log.contains(&repo), "the error names the repository: {log}");
    assert!(
        log.contains("wait for archiving"),
        "the backlog warning: {log}"
    );

    #[allow(clippy::disallowed_methods)]
    std::fs::rename(&away, &repo).unwrap();
    let last = switch_and_archive(&c);
    assert!(waiting.iter().all(|w| *w <= last));
    c.stop(StopMode::Fast);
    wait_workers_gone(spool.path());
    let tl = archive_is_one_run(&repo);
    let runs = &tl["runs"][0];
    assert!(runs[0].as_str().unwrap() <= waiting[0].as_str(), "{tl}");
    assert!(runs[1].as_str().unwrap() >= waiting[2].as_str(), "{tl}");
}

#[test]
fn the_pusher_killed_at_random_points_leaves_only_verified_objects() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let (_d, repo) = new_repo();
    let spool = owned_dir();
    // WAL piles up (.ready) while the archive_command fails; then the server is stopped and
    // pushers are run on it by hand.
    let cfg = ClusterConfig::new(true)
        .set("archive_mode", "on")
        .set("archive_command", "/bin/false")
        .set("wal_level", "replica");
    let mut c = PgCluster::init_with(&install, &cfg);
    c.start();
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    for _ in 0..8 {
        c.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5000) g");
        c.execute("SELECT pg_switch_wal()");
    }
    c.stop(StopMode::Fast);
    let total = ready_count(&c);
    assert!(total >= 8, "{total} files waiting");
    let data = c.datadir().display().to_string();
    let sp = spool.path().display().to_string();
    let args = [
        "archive-push",
        "-B",
        &repo,
        "--spool",
        &sp,
        "-D",
        &data,
        "-j",
        "2",
        "--daemon",
        "unused",
    ];
    let t0 = Instant::now();
    let st = crate::util::ptrack()
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let took = t0.elapsed();
    let oks = |sp: &Path| -> Vec<PathBuf> {
        // A pusher killed before it made `out/` has written no marker.
        std::fs::read_dir(sp.join("out"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ok"))
            .collect()
    };
    assert_eq!(oks(spool.path()).len(), total, "a marker per file");
    let mut rng = ptrack_testkit::TestRng::from_env("async pusher crash test");
    for trial in 0..20 {
        // Start over: a fresh repository and spool each time.
        let (_d2, repo2) = new_repo();
        let sp2 = owned_dir();
        let sp2s = sp2.path().display().to_string();
        let mut a: Vec<&str> = args.to_vec();
        a[2] = &repo2;
        a[4] = &sp2s;
        let mut child = crate::util::ptrack()
            .args(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(
            rng.below(took.as_micros() as u64).max(1),
        ));
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        // Every marker names a stored file, and everything stored is complete and verified.
        let marked = oks(sp2.path()).len();
        let v = run(&["validate", "-B", &repo2, "--archive", "--json"]);
        if v.code == 0 {
            let files = v.json()["files"].as_u64().unwrap() as usize;
            assert!(
                files >= marked,
                "trial {trial}: {marked} markers, {files} files"
            );
        } else {
            // Nothing stored yet: no instance in the repository.
            assert_eq!(
                marked,
                0,
                "trial {trial} (seed {}): {}",
                rng.seed(),
                v.stderr
            );
        }
        // The next pusher finishes the job.
        assert!(crate::util::ptrack().args(&a).status().unwrap().success());
        assert_eq!(oks(sp2.path()).len(), total, "trial {trial}");
        archive_is_one_run(&repo2);
    }
}

/// `archive-get --prefetch` of a timeline history file prefetches the next timelines' history
/// files, up to the first the archive lacks (recovery probes them next), and hands the next
/// request the prefetched copy; a prefetched copy that is not the file is not handed over.
#[test]
fn a_prefetching_get_of_a_history_file_fetches_the_next_ones() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let (_d, repo) = new_repo();
    let c = crate::archive::cluster_archiving_with(&install, "/bin/true");
    let data = c.datadir().display().to_string();
    let s = owned_dir();
    let histories = [
        (
            2,
            "1\t0/3000000\tno recovery target specified\n".to_string(),
        ),
        (3, "1\t0/3000000\tone\n2\t0/5000000\ttwo\n".to_string()),
        (5, "1\t0/3000000\tone\n4\t0/7000000\tfour\n".to_string()),
    ];
    for (tli, text) in &histories {
        let p = s.path().join(format!("{tli:08X}.history"));
        std::fs::write(&p, text).unwrap();
        chown_postgres(&p);
        let r = run(&[
            "archive-push",
            "-B",
            &repo,
            "-D",
            &data,
            &p.display().to_string(),
        ]);
        assert_eq!(r.code, 0, "push {}: {}", p.display(), r.stderr);
    }
    let spool = owned_dir();
    let sp = spool.path().display().to_string();
    let get = |name: &str| {
        let dest = s.path().join(format!("got-{name}"));
        let d = dest.display().to_string();
        let r = run(&[
            "archive-get",
            "-B",
            &repo,
            "-D",
            &data,
            "--spool",
            &sp,
            "--prefetch",
            "3",
            name,
            &d,
        ]);
        assert_eq!(r.code, 0, "get {name}: {}", r.stderr);
        // The prefetcher it started logs when it is done.
        let t0 = Instant::now();
        let done = format!("prefetcher after {name}:");
        while !std::fs::read_to_string(spool.path().join("get.log"))
            .is_ok_and(|l| l.contains(&done))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no prefetcher after {name}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_workers_gone(spool.path());
        std::fs::read_to_string(&dest).unwrap()
    };
    assert_eq!(get("00000002.history"), histories[0].1);
    let log = std::fs::read_to_string(spool.path().join("get.log")).unwrap_or_default();
    assert!(
        log.contains("prefetcher after 00000002.history: 1 file(s) [00000003.history]"),
        "timeline 3's history is prefetched, 5's is not (4 has none):\n{log}"
    );
    let inbox = std::fs::read_dir(spool.path().join("in"))
        .unwrap()
        .next()
        .expect("a prefetch directory")
        .unwrap()
        .path();
    let held = inbox.join("00000003.history");
    assert!(held.is_file(), "{log}");
    assert_eq!(get("00000003.history"), histories[1].1);
    assert!(!held.exists(), "the prefetched copy was handed over");
    // A damaged prefetched copy: the repository's file is fetched instead.
    std::fs::write(inbox.join("00000005.history"), "junk").unwrap();
    assert_eq!(get("00000005.history"), histories[2].1);
}
