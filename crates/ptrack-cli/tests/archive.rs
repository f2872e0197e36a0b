//! `ptrack archive-push` as a real server's `archive_command` and `ptrack archive-get` as the
//! `restore_command` of a restored cluster (issue 13 §1), on PG15 and PG18: every segment the
//! server archives is in the repository; a foreign, renamed, truncated or altered segment is
//! refused and nothing archived changes; pushing the same file again succeeds; a full backup
//! restored with archive-get recovers to the end of the archive, and the result equals the
//! source, quiescent, file by file and page by page and by pg_dumpall.

use std::path::{Path, PathBuf};

use ptrack_testkit::{ClusterConfig, PgCluster, PgInstall, StopMode, require_pg};

use crate::backup_util::{
    backup, chown_postgres, dumpall, instance_dir, new_repo, wait_recovery_end,
};
use crate::util::{Run, run};

/// A started cluster archiving into `repo` through `ptrack archive-push`.
fn archiving_cluster(install: &PgInstall, repo: &str) -> PgCluster {
    let cmd = format!("{} archive-push -B {repo} %p", env!("CARGO_BIN_EXE_ptrack"));
    cluster_archiving_with(install, &cmd)
}

/// A started cluster (replica WAL, prepared transactions) whose `archive_command` is `cmd`.
pub fn cluster_archiving_with(install: &PgInstall, cmd: &str) -> PgCluster {
    let cfg = ClusterConfig::new(true)
        .set("archive_mode", "on")
        .set("archive_command", cmd)
        .set("wal_level", "replica")
        .set("max_prepared_transactions", "5");
    let mut c = PgCluster::init_with(install, &cfg);
    c.start();
    c
}

/// Switches to a new segment and waits until the server has archived the one it left (and
/// none failed).
pub fn switch_and_wait(c: &PgCluster) -> String {
    let seg = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let done = format!("SELECT last_archived_wal >= '{seg}' FROM pg_stat_archiver");
    let t0 = std::time::Instant::now();
    while c.query_one(&done) != "t" {
        let log = c.log();
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{seg} not archived within 60 s; server log:\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        c.query_one("SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "archive_command failed: {}",
        c.log()
    );
    seg
}

/// `ptrack restore` of `repo` with `extra` options into a new cluster, started and recovered
/// (through the archive: the restore says it wrote archive-get or was given a command).
fn restored(install: &PgInstall, repo: &str, extra: &[&str]) -> PgCluster {
    let (base, r) = restore_into(repo, extra);
    assert_eq!(r.code, 0, "{extra:?}: {}", r.stderr);
    assert!(r.stdout.contains("and the archive"), "{}", r.stdout);
    let mut p = PgCluster::adopt(install, base, &[]);
    p.start();
    wait_recovery_end(&p);
    p
}

/// `ptrack restore` of `repo` into a new cluster directory with `extra` options; the directory.
fn restore_into(repo: &str, extra: &[&str]) -> (PathBuf, Run) {
    let base = PgCluster::new_cluster_dir();
    let d = base.join("data").display().to_string();
    let mut args = vec!["restore", "-B", repo, "-D", &d];
    args.extend_from_slice(extra);
    let r = run(&args);
    (base, r)
}

fn get(repo: &str, pgdata: &Path, name: &str, dest: &str) -> Run {
    let d = pgdata.display().to_string();
    run(&["archive-get", "-B", repo, "-D", &d, name, dest])
}

fn push(repo: &str, pgdata: &Path, file: &Path) -> Run {
    run(&[
        "archive-push",
        "-B",
        repo,
        "-D",
        &pgdata.display().to_string(),
        &file.display().to_string(),
    ])
}

/// A scratch directory the `postgres` user can read (ptrack works as the repository's owner).
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    chown_postgres(d.path());
    d
}

fn copy_as(src: &Path, dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).expect("read segment");
    edit(&mut b);
    let p = dir.join(name);
    std::fs::write(&p, b).expect("write copy");
    chown_postgres(&p);
    p
}

/// The next segment's name (same timeline, 16 MB segments).
fn next_name(seg: &str) -> String {
    let n = u64::from_str_radix(&seg[8..], 16).expect("hex");
    let (hi, lo) = (n >> 32, n & 0xFFFF_FFFF);
    let (hi, lo) = if lo == 0xFF {
        (hi + 1, 0)
    } else {
        (hi, lo + 1)
    };
    format!("{}{hi:08X}{lo:08X}", &seg[..8])
}

#[test]
fn archive_push_and_get_recover_to_the_end_of_the_archive() {
    crate::backup_util::each_major(&[15, 18], one_major);
}

fn one_major(install: &PgInstall) {
    let (_d, repo) = new_repo();
    let mut c = archiving_cluster(install, &repo);
    // Archived before any backup: the first push creates the instance.
    let first = switch_and_wait(&c);
    let arch = instance_dir(&repo).join("wal");
    assert!(arch.join(&first).is_file(), "{first} archived");
    let full = backup(&c, &repo, "full");
    c.execute("SELECT pg_switch_wal()");
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    // A point in time: after t was created, before the catalog rewrite and the update.
    c.execute("SELECT pg_create_restore_point('p1')");
    let p1_lsn = c.query_one("SELECT pg_current_wal_lsn()");
    let p1_seg = c.query_one(&format!("SELECT pg_walfile_name('{p1_lsn}')"));
    c.execute("BEGIN; CREATE TABLE rewritten (x int); PREPARE TRANSACTION 'px'");
    c.execute("VACUUM FULL pg_class");
    c.execute("UPDATE t SET v = 'changed' WHERE id % 10 = 0");
    c.execute("COMMIT PREPARED 'px'");
    c.execute("CHECKPOINT");
    let last = switch_and_wait(&c);
    let segs: Vec<String> = std::fs::read_dir(&arch)
        .expect("archive dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(segs.contains(&last), "{last} in {segs:?}");
    let archived = std::fs::read(arch.join(&last)).expect("object");
    let seg_path = c.datadir().join("pg_wal").join(&last);

    // Pushing the same segment again succeeds; every wrong one is refused, naming why.
    let s = scratch();
    let again = push(&repo, c.datadir(), &seg_path);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains("archived already"),
        "{}",
        again.stderr
    );
    let renamed = copy_as(&seg_path, s.path(), &next_name(&last), |_| {});
    let r = push(&repo, c.datadir(), &renamed);
    assert_eq!(r.code, 2, "renamed: {}", r.stderr);
    assert!(r.stderr.contains("another segment"), "{}", r.stderr);
    let cut = copy_as(&seg_path, s.path(), &last, |b| b.truncate(b.len() / 2 + 1));
    let r = push(&repo, c.datadir(), &cut);
    assert_eq!(r.code, 2, "truncated: {}", r.stderr);
    assert!(r.stderr.contains("bytes"), "{}", r.stderr);
    let altered = copy_as(&seg_path, s.path(), &last, |b| b[100_000] ^= 0x01);
    let r = push(&repo, c.datadir(), &altered);
    assert_eq!(r.code, 2, "altered: {}", r.stderr);
    assert!(r.stderr.contains("other content"), "{}", r.stderr);
    let other = PgCluster::start_new(install, false);
    let foreign_name = other.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    other.execute("SELECT pg_switch_wal()");
    let foreign = copy_as(
        &other.datadir().join("pg_wal").join(&foreign_name),
        s.path(),
        &foreign_name,
        |_| {},
    );
    let r = push(&repo, c.datadir(), &foreign);
    assert_eq!(r.code, 2, "foreign: {}", r.stderr);
    assert!(r.stderr.contains("system identifier"), "{}", r.stderr);
    let bad_files: [(&str, &[u8]); 6] = [
        ("not-wal", b"x"),
        ("00000002.history", b"junk"),
        ("00000004.history", b""),
        (
            "00000005.history",
            b"1\t0/9000000\tok\n7\t0/1000000\tlater than 5\n",
        ),
        (
            "000000010000000000000009.00000028.backup",
            b"START WAL LOCATION: junk\n",
        ),
        (
            "000000010000000000000002.00000028.backup",
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000003)\n",
        ),
    ];
    for (name, bytes) in bad_files {
        let p = s.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        chown_postgres(&p);
        let r = push(&repo, c.datadir(), &p);
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
    }
    // A FIFO named like a segment: refused at once, not waited on.
    let fifo = s.path().join(next_name(&next_name(&last)));
    let cpath = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo on a path of our own.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o644) }, 0);
    let r = push(&repo, c.datadir(), &fifo);
    assert_eq!(r.code, 2, "fifo: {}", r.stderr);
    assert!(r.stderr.contains("regular file"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(arch.join(&last)).unwrap(),
        archived,
        "unchanged"
    );

    // archive-get: a missing file is exit 1 and no file; a present one is written whole.
    let out = s.path().join("got");
    let missing = "00000009000000000000000A";
    let g = get(&repo, c.datadir(), missing, &out.display().to_string());
    assert_eq!(g.code, 1, "{}", g.stderr);
    assert!(!out.exists());
    let g = get(&repo, c.datadir(), &last, &out.display().to_string());
    assert_eq!(g.code, 0, "{}", g.stderr);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&seg_path).unwrap()
    );

    // The full backup recovered through archive-get to the end of the archive equals the
    // source, stopped after its last archived segment.
    // Quiescent from here: what reading the dump changes (pruning, hint bits) is archived too.
    let want = dumpall(&c);
    c.execute("CHECKPOINT");
    switch_and_wait(&c);
    c.stop(StopMode::Fast);
    let get_cmd = format!(
        "{} archive-get -B {repo} %f %p",
        env!("CARGO_BIN_EXE_ptrack")
    );
    let (base, r) = restore_into(&repo, &["-i", &full, "--restore-command", &get_cmd]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut rc = PgCluster::adopt(install, base, &[]);
    rc.start();
    wait_recovery_end(&rc);
    // Compared before anything reads the restored tables (a read may prune pages).
    rc.stop(StopMode::Fast);
    let diffs = ptrack_testkit::paranoia::compare(c.datadir(), rc.datadir(), 8192);
    assert!(
        diffs.is_empty(),
        "PG{}: recovered through the archive, the data directory differs:\n  {}",
        install.major,
        diffs.join("\n  ")
    );
    rc.start();
    assert_eq!(
        rc.query_one("SELECT count(*) FROM t WHERE v = 'changed'"),
        "2000"
    );
    assert_eq!(rc.query_one("SELECT count(*) FROM rewritten"), "0");
    assert_eq!(
        dumpall(&rc),
        want,
        "PG{}: dump after recovery",
        install.major
    );
    drop(rc);

    // `show --archive`: one run from the first segment to the last.
    let sh = run(&["show", "-B", &repo, "--archive", "--json"]);
    assert_eq!(sh.code, 0, "{}", sh.stderr);
    let tl = &sh.json()[0]["timelines"][0];
    assert_eq!(tl["runs"].as_array().unwrap().len(), 1, "{tl}");
    assert_eq!(tl["runs"][0][0], first.as_str(), "{tl}");

    // latest: to the end of the archive, with no restore command given. (Restored clusters
    // archive into the same repository, on timelines of their own: `latest` then follows the
    // newest, so this one comes first.)
    let mut p = restored(install, &repo, &["--recovery-target", "latest"]);
    assert_eq!(
        p.query_one("SELECT count(*) FROM t WHERE v = 'changed'"),
        "2000"
    );
    p.stop(StopMode::Fast);

    // A relative -B becomes an absolute path in the restore_command (the server runs it in
    // the restored directory).
    let parent = Path::new(&repo).parent().unwrap().to_path_buf();
    let rel_base = PgCluster::new_cluster_dir();
    let rel = crate::util::ptrack()
        .current_dir(&parent)
        .args([
            "restore",
            "-B",
            "repo",
            "-D",
            &rel_base.join("data").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        rel.status.success(),
        "{}",
        String::from_utf8_lossy(&rel.stderr)
    );
    let conf = std::fs::read_to_string(rel_base.join("data/postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(&format!("archive-get -B {repo} %f %p")),
        "{conf}"
    );
    std::fs::remove_dir_all(&rel_base).unwrap();

    // Targets in the past, through the archive ptrack finds itself (no --restore-command).
    for target in ["name:p1".to_string(), format!("lsn:{p1_lsn}")] {
        let mut p = restored(install, &repo, &["--recovery-target", &target]);
        assert_eq!(p.query_one("SELECT count(*) FROM t"), "20000", "{target}");
        assert_eq!(
            p.query_one("SELECT count(*) FROM t WHERE v = 'changed'"),
            "0",
            "{target}"
        );
        assert_eq!(
            p.query_one("SELECT to_regclass('rewritten') IS NULL"),
            "t",
            "{target}"
        );
        p.stop(StopMode::Fast);
    }

    // Those restored clusters kept the source's archive_command: each archived its own new
    // timeline into this repository (write-once: no file of the source's timeline was
    // touched), and `latest` now follows the newest timeline, a branch at p1.
    let mut p = restored(install, &repo, &["--recovery-target", "latest"]);
    assert_eq!(
        p.query_one("SELECT count(*) FROM t WHERE v = 'changed'"),
        "0"
    );
    assert!(
        p.query_one("SELECT timeline_id FROM pg_control_checkpoint()")
            .parse::<u32>()
            .unwrap()
            > 2
    );
    p.stop(StopMode::Fast);
    // Unless told which timeline: the source's own, to its end.
    let mut p = restored(
        install,
        &repo,
        &[
            "--recovery-target",
            "latest",
            "--recovery-target-timeline",
            "1",
        ],
    );
    assert_eq!(
        p.query_one("SELECT count(*) FROM t WHERE v = 'changed'"),
        "2000"
    );
    p.stop(StopMode::Fast);

    // validate --archive: every file checks out, and the full backup's window reaches the end.
    let v = run(&["validate", "-B", &repo, "--archive", "--json"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    let j = v.json();
    assert!(j["problems"].as_array().unwrap().is_empty(), "{j}");
    assert_eq!(j["windows"][0]["backup"], full.as_str(), "{j}");

    // A record damaged and the object sealed again (digest and CRC recomputed, as anyone can):
    // the page checks pass, the record check (CRC-32C of each record) names it.
    let obj = arch.join(&first);
    let orig = std::fs::read(&obj).unwrap();
    let mut plain = ptrack_format::archived::decode(&orig, "test").unwrap();
    for b in &mut plain[3 * 8192 + 100..3 * 8192 + 164] {
        *b ^= 0xFF;
    }
    let resealed =
        ptrack_format::archived::encode(&plain, ptrack_format::stored::Compression::None);
    std::fs::write(&obj, resealed).unwrap();
    let v = run(&["validate", "-B", &repo, "--archive"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(
        v.stdout.contains(&first) && v.stdout.contains("inside the segment, on a bad record"),
        "{}",
        v.stdout
    );
    std::fs::write(&obj, &orig).unwrap();

    // A segment missing between the backup and an LSN target: refused, naming it.
    std::fs::remove_file(arch.join(&p1_seg)).expect("remove archived segment");
    let v = run(&["validate", "-B", &repo, "--archive"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains(&p1_seg), "{}", v.stdout);
    // A flipped byte in an archived object: named by validate.
    assert_ne!(first, p1_seg);
    let obj = arch.join(&first);
    let mut b = std::fs::read(&obj).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x20;
    std::fs::write(&obj, &b).unwrap();
    let v = run(&["validate", "-B", &repo, "--archive"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains(&first), "{}", v.stdout);
    // archive-get of that damaged object stops recovery (exit above 125), never "not archived".
    let g = get(&repo, c.datadir(), &first, "/dev/null");
    assert_eq!(g.code, 255, "{}", g.stderr);
    // A damaged timeline history object (restored clusters archived theirs): named.
    let hist = arch.join("00000002.history");
    assert!(hist.is_file(), "the restores archived timeline 2's history");
    std::fs::write(&hist, b"garbage").unwrap();
    let v = run(&["validate", "-B", &repo, "--archive"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("00000002.history"), "{}", v.stdout);
    let lsn_target = format!("lsn:{p1_lsn}");
    let (base, r) = restore_into(&repo, &["--recovery-target", &lsn_target]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&p1_seg), "{}", r.stderr);
    assert!(!base.join("data/global/pg_control").exists());
    let sh = run(&["show", "-B", &repo, "--archive"]);
    assert!(sh.stdout.contains("gaps between"), "{}", sh.stdout);
}

/// `archive-push` killed with SIGKILL at random points: the archived object is either absent or
/// complete and verified (archive-get returns the segment's bytes), and the push run again (the
/// archiver's retry) succeeds.
#[test]
fn archive_push_killed_at_random_points() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let c = PgCluster::start_new(&install, true);
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g");
    let seg = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let seg_path = c.datadir().join("pg_wal").join(&seg);
    let want = std::fs::read(&seg_path).expect("segment");
    let data = c.datadir().display().to_string();
    let file = seg_path.display().to_string();
    let args = |repo: &str| -> Vec<String> {
        [
            "archive-push",
            "-B",
            repo,
            "-D",
            &data,
            "--compress",
            "zstd",
            &file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // How long a push takes here (the faster of two), so that kills land inside one.
    let mut took = std::time::Duration::MAX;
    for _ in 0..2 {
        let (_d, repo) = new_repo();
        let t0 = std::time::Instant::now();
        let st = crate::util::ptrack()
            .args(args(&repo))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        took = took.min(t0.elapsed());
    }
    let mut rng = ptrack_testkit::TestRng::from_env("archive-push crash test");
    let mut interrupted = 0;
    for trial in 0..20 {
        let (d, repo) = new_repo();
        let mut child = crate::util::ptrack()
            .args(args(&repo))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(took.as_micros() as u64).max(1);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let st = child.wait().unwrap();
        let out = d.path().join("got");
        let get = |out: &Path| {
            run(&[
                "archive-get",
                "-B",
                &repo,
                "-D",
                &data,
                &seg,
                &out.display().to_string(),
            ])
        };
        let g = get(&out);
        match g.code {
            0 => assert!(
                std::fs::read(&out).unwrap() == want,
                "trial {trial}: a complete object"
            ),
            1 => {
                assert!(!out.exists());
                interrupted += 1;
            }
            _ => panic!("trial {trial} (seed {}): {}", rng.seed(), g.stderr),
        }
        assert!(
            !st.success() || g.code == 0,
            "a push that exited 0 left no object"
        );
        let again = run(&args(&repo).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(again.code, 0, "trial {trial}: retry: {}", again.stderr);
        let out2 = d.path().join("got2");
        assert_eq!(get(&out2).code, 0);
        assert!(std::fs::read(&out2).unwrap() == want, "trial {trial}");
    }
    assert!(
        interrupted > 0,
        "no kill landed inside a push (took {took:?})"
    );
    after_the_crashes(&args, &seg, &data, &file);
}

/// The same on S3 (Garage): a server archives through `archive-push --async` into an `s3://`
/// repository (its credentials in a 0700 wrapper script, never on a command line), a full
/// backup is restored to a named restore point through a prefetching `archive-get`, and `show --archive`
/// lists what the server archived.
#[test]
fn archive_on_s3_recovers_to_a_restore_point() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let Some(bin) = ptrack_testkit::require_garage() else {
        return;
    };
    let g = ptrack_testkit::Garage::start(&bin, 1);
    let repo = crate::backup_util::new_s3_repo(&g, "arch");
    let s = scratch();
    let wrapper = crate::backup_util::s3_wrapper(&g, s.path());
    // Asynchronous push and prefetching get: their workers inherit the wrapper's environment.
    let (push_spool, get_spool) = (scratch(), scratch());
    let cfg = ClusterConfig::new(true).set("archive_mode", "on").set(
        "archive_command",
        &format!(
            "{} archive-push -B {repo} --async --spool {} %p",
            wrapper.display(),
            push_spool.path().display()
        ),
    );
    let mut c = PgCluster::init_with(&install, &cfg);
    c.start();
    let first = switch_and_wait(&c);
    let full = backup(&c, &repo, "full");
    c.execute("SELECT pg_switch_wal()");
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    c.execute("SELECT pg_create_restore_point('p1')");
    c.execute("INSERT INTO t SELECT g FROM generate_series(1, 500) g");
    // A wal-mode incremental reads its WAL from the bucket's archive.
    let incr = backup(&c, &repo, "wal");
    c.execute("INSERT INTO t SELECT g FROM generate_series(1, 250) g");
    let last = switch_and_wait(&c);
    c.stop(StopMode::Fast);
    let sh = run(&["show", "-B", &repo, "--archive", "--json"]);
    assert_eq!(sh.code, 0, "{}", sh.stderr);
    let tl = &sh.json()[0]["timelines"][0];
    assert_eq!(tl["runs"][0][0], first.as_str(), "{tl}");
    assert_eq!(tl["runs"][0][1], last.as_str(), "{tl}");
    crate::archive_async::wait_workers_gone(push_spool.path());
    let get = format!(
        "{} archive-get -B {repo} --spool {} --prefetch 4 %f %p",
        wrapper.display(),
        get_spool.path().display()
    );
    // Restored clusters archive nothing here (they would push their timelines into the bucket).
    let restored_with = |id: &str, target: &str, cmd: &str| {
        let extra = [
            "-i",
            id,
            "--recovery-target",
            target,
            "--restore-command",
            cmd,
        ];
        let (base, r) = restore_into(&repo, &extra);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mut p = PgCluster::adopt(&install, base, &[]);
        p.append_conf(&[("archive_mode", "off")]);
        p.start();
        wait_recovery_end(&p);
        p
    };
    let mut p = restored_with(&full, "name:p1", &get);
    assert_eq!(p.query_one("SELECT count(*) FROM t"), "1000");
    p.stop(StopMode::Fast);
    // The incremental, to the end of the archive (a spool is one cluster's: another one).
    let spool2 = scratch();
    let get2 = get.replace(
        &get_spool.path().display().to_string(),
        &spool2.path().display().to_string(),
    );
    let mut q = restored_with(&incr, "latest", &get2);
    // The source stopped after its last archived segment: the restore equals it, file by file
    // and page by page.
    q.stop(StopMode::Fast);
    let blcksz: usize = c.controldata()["Database block size"].parse().unwrap();
    let diffs = ptrack_testkit::paranoia::compare(c.datadir(), q.datadir(), blcksz);
    assert!(
        diffs.is_empty(),
        "wal incremental from S3: {}",
        diffs.join("\n  ")
    );
    q.start();
    assert_eq!(q.query_one("SELECT count(*) FROM t"), "1750");
    q.stop(StopMode::Fast);
    crate::archive_async::wait_workers_gone(get_spool.path());
    let log = std::fs::read_to_string(get_spool.path().join("get.log")).unwrap_or_default();
    assert!(
        log.contains("prefetcher after"),
        "no prefetcher ran:\n{log}"
    );
    assert!(!log.contains("error"), "{log}");
}

/// After the crash trials: a push over a truncated object is refused naming it (never
/// "archived already"); an object copied over another segment's name is refused by archive-get
/// (exit 255, which stops recovery); on a full disk the push fails and leaves no temporary file.
fn after_the_crashes(args: &dyn Fn(&str) -> Vec<String>, seg: &str, data: &str, file: &str) {
    let push_all = |repo: &str| run(&args(repo).iter().map(String::as_str).collect::<Vec<_>>());
    let (d, repo) = new_repo();
    assert_eq!(push_all(&repo).code, 0);
    let arch = instance_dir(&repo).join("wal");
    let obj = arch.join(seg);
    let full_obj = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &full_obj[..1000]).unwrap();
    let again = push_all(&repo);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("truncated"), "{}", again.stderr);
    std::fs::write(&obj, &full_obj).unwrap();
    let next = next_name(seg);
    std::fs::copy(&obj, arch.join(&next)).unwrap();
    let out = d.path().join("swapped");
    let g = run(&[
        "archive-get",
        "-B",
        &repo,
        "-D",
        data,
        &next,
        &out.display().to_string(),
    ]);
    assert_eq!(g.code, 255, "{}", g.stderr);
    assert!(!out.exists());

    let small = tempfile::tempdir().unwrap();
    let mnt = small.path().display().to_string();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", &mnt])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    chown_postgres(small.path());
    let repo = format!("{mnt}/repo");
    assert_eq!(run(&["init", "-B", &repo]).code, 0);
    let full = run(&[
        "archive-push",
        "-B",
        &repo,
        "-D",
        data,
        "--compress",
        "none",
        file,
    ]);
    let mut left = Vec::new();
    let mut stack = vec![PathBuf::from(&repo)];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                left.push(e.path());
            }
        }
    }
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(full.code, 2, "{}", full.stderr);
    assert!(full.stderr.contains("No space left"), "{}", full.stderr);
    assert!(left.is_empty(), "left behind: {left:?}");
}
