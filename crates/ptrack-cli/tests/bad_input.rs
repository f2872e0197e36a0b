//! Bad input gives one clear line naming the file at fault and exit 2, never a panic: not a data
//! directory, a pg_control with a bad CRC, a truncated segment, an unreadable file, bad options.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ptrack_testkit::{PgCluster, StopMode, require_pg};

use crate::util::{Run, run};

fn error_lines(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("ptrack: error: "))
        .collect()
}

#[test]
fn not_a_data_directory_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().display().to_string();
    let r = run(&["verify", "-D", &p]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&p) && r.stderr.contains("not a PostgreSQL data directory"),
        "{}",
        r.stderr
    );

    let missing = format!("{p}/nope");
    let r = run(&["verify", "-D", &missing]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(&missing), "{}", r.stderr);

    let r = run(&["verify", "-D", &p, "-j", "0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(&["verify"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    // Bad archive and recovery options: an error naming the value, before anything is opened
    // (archive-get's errors exit 255, which stops a recovery).
    let bad_timeline = ["--recovery-target-timeline", "0"];
    let bad_target = ["--recovery-target", "soon"];
    let cases: [(Vec<&str>, i32, &str); 4] = [
        (
            [&["restore", "-B", &p, "-D", &missing][..], &bad_timeline].concat(),
            2,
            "timeline",
        ),
        (
            [&["restore", "-B", &p, "-D", &missing][..], &bad_target].concat(),
            2,
            "soon",
        ),
        (
            vec!["archive-get", "-B", &p, "../x", "/tmp/x"],
            255,
            "error",
        ),
        (vec!["archive-push", "-B", &p], 2, "WALFILE"),
    ];
    for (args, code, needle) in cases {
        let r = run(&args);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

/// A stopped PG18 cluster with some data, or `None` when PG18 is missing (skips loudly).
fn stopped_cluster() -> Option<(PgCluster, String)> {
    let pg = require_pg(18)?;
    let mut c = PgCluster::start_new(&pg, true);
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    let rel = c.relation_path("postgres", "t");
    c.stop(StopMode::Fast);
    Some((c, rel))
}

#[test]
fn pg_control_with_bad_crc_exit_2() {
    let Some((c, _)) = stopped_cluster() else {
        return;
    };
    let path = c.datadir().join("global/pg_control");
    let mut b = std::fs::read(&path).unwrap();
    b[100] ^= 0xFF;
    std::fs::write(&path, b).unwrap();
    let r = run(&["verify", "-D", &c.datadir().display().to_string()]);
    assert_eq!(r.code, 2);
    assert_eq!(error_lines(&r).len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&path.display().to_string()) && r.stderr.contains("incorrect CRC"),
        "{}",
        r.stderr
    );
}

#[test]
fn truncated_segment_exit_2_names_file() {
    let Some((c, rel)) = stopped_cluster() else {
        return;
    };
    let path = c.datadir().join(&rel);
    let mut b = std::fs::read(&path).unwrap();
    b.truncate(b.len() - 100);
    std::fs::write(&path, b).unwrap();
    let r = run(&["verify", "-D", &c.datadir().display().to_string()]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let errs = error_lines(&r);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(
        errs[0].contains(&rel) && errs[0].contains("not a multiple of the block size"),
        "{}",
        errs[0]
    );
    // The JSON report carries the same error, and the other files were still checked.
    let j = run(&["verify", "--json", "-D", &c.datadir().display().to_string()]);
    assert_eq!(j.code, 2);
    let doc = j.json();
    assert_eq!(doc["status"], "error");
    assert_eq!(doc["errors"][0]["path"], rel.as_str());
    assert!(doc["blocks"].as_u64().unwrap() > 0);
}

#[test]
fn unreadable_file_exit_2_names_file() {
    let Some((c, rel)) = stopped_cluster() else {
        return;
    };
    let path = c.datadir().join(&rel);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: run ptrack as the unprivileged postgres user, who owns the cluster.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_ptrack")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ptrack"))
    };
    let out = cmd
        .args(["verify", "-D", &c.datadir().display().to_string()])
        .output()
        .unwrap();
    let r = Run::from_output(out);
    r.assert_no_panic();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let errs = error_lines(&r);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(
        errs[0].contains(&rel) && errs[0].contains("permission denied"),
        "{}",
        errs[0]
    );
}
