//! Backups that go wrong: the backup process killed at random points, a tampered repository,
//! bad requests. Never an OK backup that fails validation; every bad request exits 2 and leaves
//! the repository as it was.

use std::time::{Duration, Instant};

use ptrack_testkit::{PgCluster, StopMode, TestRng, require_ptrack};
use std::path::Path;

use crate::backup_util::*;
use crate::util::{ptrack, run};

#[test]
fn sigkill_at_random_points_pg18() {
    if let Some(i) = require_ptrack(18) {
        sigkill_at_random_points(i, true, 24);
    }
}

#[test]
fn sigkill_at_random_points_pg15() {
    if let Some(i) = require_ptrack(15) {
        sigkill_at_random_points(i, false, 12);
    }
}

/// SIGKILL the backup at `trials` random points: never an OK backup that fails validation, and
/// the chain goes on and restores identical to its source.
fn sigkill_at_random_points(install: ptrack_testkit::PgInstall, checksums: bool, trials: usize) {
    let mut c = ptrack_cluster(&install, checksums, 64);
    c.pgbench_init(2);
    let (_d, repo) = new_repo();
    // How long each mode takes here, so that kills land inside the backup: the faster of two
    // runs (the first of each reads more from disk than the trials will).
    let mut took = [Duration::MAX; 3];
    for _ in 0..2 {
        for (i, mode) in ["full", "ptrack", "delta"].iter().enumerate() {
            let t0 = Instant::now();
            backup(&c, &repo, mode);
            took[i] = took[i].min(t0.elapsed());
        }
    }
    let mut rng = TestRng::from_env("crash test");
    let data = c.datadir().display().to_string();
    let mut killed = 0;
    for trial in 0..trials {
        c.run_tool("pgbench", &["-t", "50", "postgres"]);
        let mode = ["full", "ptrack", "delta"][trial % 3];
        let mut args: Vec<String> = ["backup", "-B", &repo, "-D", &data, "-b", mode]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(conn_args(&c));
        let mut child = ptrack()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let span = took[trial % 3].as_micros() as u64 * 9 / 10;
        let delay = Duration::from_micros(rng.below(span.max(1)));
        std::thread::sleep(delay);
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let st = child.wait().unwrap();
        // The catalog stays readable; the interrupted backup is never OK.
        let shown = show(&repo);
        let last = shown.last().unwrap();
        // A kill that landed after the backup became OK is fine: the final validation checks it.
        if !st.success() && last["status"] != "OK" {
            killed += 1;
        }
    }
    // Every backup still marked OK validates.
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(
        v.code, 0,
        "an OK backup fails validation (PTRACK_SEED printed above):\n{}{}",
        v.stdout, v.stderr
    );
    assert!(
        killed * 3 >= trials * 2,
        "only {killed} of {trials} trials were killed before the backup became OK"
    );
    // The next backups work, and restore identical to the source file by file.
    let before = dumpall(&c);
    let id = backup(&c, &repo, "ptrack");
    let r = restore_and_compare(&mut c, &repo, &id, &[]);
    assert_eq!(dumpall(&r), before);
    let statuses: Vec<String> = show(&repo)
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_string())
        .collect();
    assert!(!statuses.iter().any(|s| s == "RUNNING"), "{statuses:?}");
}

#[test]
fn tampering_is_found_and_marks_corrupt() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(1);
    for case in ["page", "truncate", "manifest"] {
        let (_d, repo) = new_repo();
        let full = backup(&c, &repo, "full");
        c.run_tool("pgbench", &["-t", "100", "postgres"]);
        let inc = backup(&c, &repo, "ptrack");
        let bdir = instance_dir(&repo).join(&full);
        let manifest = doc_body(&bdir.join("manifest"));
        match case {
            "page" => {
                // Flip a byte inside the first stored page of pgbench_accounts' first data file.
                let e = manifest["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["kind"] == "data" && e["pages"].as_u64().unwrap_or(0) > 10)
                    .max_by_key(|e| e["pages"].as_u64())
                    .unwrap()
                    .clone();
                let part = &e["parts"][0];
                let bundle = bdir.join(format!("bundle.{}", part["at"]["bundle"]));
                let mut bytes = std::fs::read(&bundle).unwrap();
                let ix = part["at"]["offset"].as_u64().unwrap() as usize;
                let off = u64::from_le_bytes(bytes[ix + 16..ix + 24].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(bytes[ix + 24..ix + 28].try_into().unwrap()) as usize;
                assert!(len > 4, "a stored page");
                bytes[off + len / 2] ^= 0x40;
                std::fs::write(&bundle, bytes).unwrap();
            }
            "truncate" => {
                let bundle = bdir.join("bundle.0");
                let len = std::fs::metadata(&bundle).unwrap().len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&bundle)
                    .unwrap();
                f.set_len(len - 1000).unwrap();
            }
            _ => {
                let mut m = manifest.clone();
                let entries = m["entries"].as_array_mut().unwrap();
                let i = entries
                    .iter()
                    .position(|e| e["path"] == "PG_VERSION")
                    .unwrap();
                entries.remove(i);
                write_doc(&bdir.join("manifest"), "manifest", &m);
            }
        }
        let v = run(&["validate", "-B", &repo]);
        assert_eq!(
            v.code, 1,
            "{case}: validate must find it:\n{}{}",
            v.stdout, v.stderr
        );
        let expect = match case {
            "page" => "fails its CRC-32C",
            "truncate" => "the manifest recorded",
            _ => "not the one recorded in the catalog",
        };
        assert!(v.stdout.contains(expect), "{case}: {}", v.stdout);
        assert_eq!(status(&repo, &full), "CORRUPT", "{case}");
        // The child depends on it: reported too, and neither restores.
        assert!(
            v.stdout.contains(&format!("parent backup {full}")),
            "{case}: {}",
            v.stdout
        );
        let target = tempfile::tempdir().unwrap();
        let r = run(&[
            "restore",
            "-B",
            &repo,
            "-D",
            &target.path().join("x").display().to_string(),
            "-i",
            &inc,
        ]);
        assert_eq!(
            r.code, 2,
            "{case}: restore of a chain with a corrupt backup: {}",
            r.stderr
        );
        assert!(r.stderr.contains("CORRUPT"), "{case}: {}", r.stderr);
    }
}

/// An incremental checks its parent's whole chain, although it loads only the parent's
/// manifest (ptrack mode) or all of them (delta): a tampered ancestor two links back, or a
/// spliced link, leaves no backup to be incremental to; with the ancestor mended both modes
/// work again on a chain of four.
#[test]
fn a_broken_ancestor_stops_incrementals() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let mut c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(1);
    let (_d, repo) = new_repo();
    let full = backup(&c, &repo, "full");
    for _ in 0..2 {
        c.run_tool("pgbench", &["-t", "50", "postgres"]);
        backup(&c, &repo, "ptrack");
    }
    let path = instance_dir(&repo).join(&full).join("manifest");
    let original = std::fs::read(&path).unwrap();
    let mut m = doc_body(&path);
    m["removed"] = serde_json::json!(["tampered"]);
    write_doc(&path, "manifest", &m);
    for mode in ["ptrack", "delta"] {
        let r = backup_with(&c, &repo, mode, &[]);
        assert_eq!(r.code, 2, "{mode}: {}", r.stdout);
        assert!(
            r.stderr.contains("no OK backup can be the parent")
                && r.stderr.contains("not the one recorded in the catalog"),
            "{mode}: the broken ancestor is named: {}",
            r.stderr
        );
    }
    std::fs::write(&path, &original).unwrap();
    let mut last = full.clone();
    for mode in ["ptrack", "delta"] {
        c.run_tool("pgbench", &["-t", "50", "postgres"]);
        last = backup(&c, &repo, mode);
        assert_ne!(last, full);
    }
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    // The chain of five, built with only the parents' manifests loaded, restores page by page.
    let mut r = restore_and_compare(&mut c, &repo, &last, &[]);
    r.stop(StopMode::Fast);
}

#[test]
fn bad_requests_exit_2_and_change_nothing() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, false, 64);
    let other = ptrack_cluster(&install, false, 0);
    let (_d, repo) = new_repo();
    let data = c.datadir().display().to_string();
    let expect_2 = |what: &str, args: Vec<String>, needle: &str| {
        let before = snapshot(&repo);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&a);
        assert_eq!(
            r.code, 2,
            "{what}: exit {}\n{}{}",
            r.code, r.stdout, r.stderr
        );
        assert!(
            r.stderr.contains(needle),
            "{what}: message lacks {needle:?}: {}",
            r.stderr
        );
        assert_eq!(snapshot(&repo), before, "{what}: the repository changed");
    };
    let backup_args = |cl: &PgCluster, mode: &str| {
        let mut a: Vec<String> = [
            "backup",
            "-B",
            &repo,
            "-D",
            &cl.datadir().display().to_string(),
            "-b",
            mode,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(conn_args(cl));
        a
    };
    expect_2(
        "incremental without a full backup",
        backup_args(&c, "ptrack"),
        "take one with --mode full first",
    );
    expect_2(
        "delta without a full backup",
        backup_args(&c, "delta"),
        "--mode full first",
    );
    backup(&c, &repo, "full");
    expect_2(
        "repository of another cluster",
        backup_args(&other, "delta"),
        "no full backup of cluster",
    );
    expect_2(
        "ptrack disabled",
        backup_args(&other, "full")
            .into_iter()
            .map(|s| if s == "full" { "ptrack".into() } else { s })
            .collect(),
        "no full backup",
    );
    let (_d2, repo2) = new_repo();
    let r = backup_with(&other, &repo2, "full", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = snapshot(&repo2);
    let r = backup_with(&other, &repo2, "ptrack", &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not installed"), "{}", r.stderr);
    assert_eq!(snapshot(&repo2), before);
    other.execute("CREATE EXTENSION ptrack");
    let r = backup_with(&other, &repo2, "ptrack", &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("Ptrack is disabled"), "{}", r.stderr);
    assert_eq!(snapshot(&repo2), before);
    // Wrong server for the data directory.
    let mut mixed = backup_args(&c, "full");
    let at = mixed.iter().position(|s| s == "-h").unwrap();
    mixed[at + 1] = other.socket_dir().display().to_string();
    mixed[at + 3] = other.port().to_string();
    expect_2("server of another cluster", mixed, "holds cluster");
    let inc = backup(&c, &repo, "ptrack");
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("new").display().to_string();
    expect_2(
        "unknown backup ID",
        vec![
            "restore".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            t.clone(),
            "-i".into(),
            "ZZZZZZZ".into(),
        ],
        "not in the catalog",
    );
    expect_2(
        "unknown --sync-method",
        vec![
            "restore".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            target.path().display().to_string(),
            "--sync-method".into(),
            "none".into(),
        ],
        "invalid value 'none' for '--sync-method",
    );
    expect_2(
        "unknown --write-method",
        vec![
            "restore".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            target.path().display().to_string(),
            "--write-method".into(),
            "mmap".into(),
        ],
        "invalid value 'mmap' for '--write-method",
    );
    std::fs::write(target.path().join("occupied"), b"x").unwrap();
    expect_2(
        "non-empty target",
        vec![
            "restore".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            target.path().display().to_string(),
        ],
        "not empty",
    );
    expect_2(
        "not a repository",
        vec!["show".into(), "-B".into(), data.clone()],
        "not a ptrack repository",
    );
    expect_2(
        "bad option",
        vec![
            "backup".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            data.clone(),
            "-b".into(),
            "sideways".into(),
        ],
        "invalid value",
    );
    // A missing parent: drop the full backup's record from the catalog.
    let mut full_id = String::new();
    edit_catalog(&repo, |cat| {
        full_id = cat["backups"][0]["id"].as_str().unwrap().to_string();
        cat["backups"].as_array_mut().unwrap().remove(0);
    });
    expect_2(
        "missing parent",
        vec![
            "restore".into(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            t.clone(),
            "-i".into(),
            inc.clone(),
        ],
        &format!("needs its parent {full_id}"),
    );
    assert!(
        !Path::new(&t).exists(),
        "a refused restore created its target"
    );
}
