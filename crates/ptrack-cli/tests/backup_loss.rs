//! The data-loss paths of issue 10 §1, each as a test on real servers that fails on ptrack 0.1:
//! a cluster restored from an older backup must not join the original chain (new timeline,
//! same-timeline fork), repository paths and catalog facts cannot be trusted without the
//! manifest, and pages rewritten without WAL (pg_checksums) make incrementals refuse.

use ptrack_testkit::{PgCluster, StopMode, require_ptrack};
use serde_json::Value;

use crate::backup_util::*;
use crate::util::run;

fn parent_of(repo: &str, id: &str) -> Value {
    show(repo)
        .into_iter()
        .find(|b| b["id"] == id)
        .map(|b| b["parent"].clone())
        .unwrap_or(Value::Null)
}

/// Restores `id` without starting it; returns the cluster directory.
fn restore_only(repo: &str, id: &str, extra: &[&str]) -> std::path::PathBuf {
    let base = PgCluster::new_cluster_dir();
    let data = base.join("data").display().to_string();
    let mut args = vec!["restore", "-B", repo, "-D", &data, "-i", id];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.code, 0, "restore {id}: {}", r.stderr);
    base
}

/// A PG18 cluster with data, a repository, a full backup F, changes (`n` pgbench transactions)
/// and a `mode` backup P after them.
struct TwoBackups {
    install: ptrack_testkit::PgInstall,
    c: PgCluster,
    _dir: tempfile::TempDir,
    repo: String,
    f: String,
    p: String,
}

fn two_backups(n: u32, mode: &str) -> Option<TwoBackups> {
    let install = require_ptrack(18)?;
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(1);
    let (_dir, repo) = new_repo();
    let f = backup(&c, &repo, "full");
    c.run_tool("pgbench", &["-t", &n.to_string(), "postgres"]);
    let p = backup(&c, &repo, mode);
    Some(TwoBackups {
        install,
        c,
        _dir,
        repo,
        f,
        p,
    })
}

/// F ← P in one repository; the cluster restored from F, started and changed, backs up into
/// the same repository: the parent must be F (an ancestor of its history), never P.
#[test]
fn restored_cluster_never_joins_the_original_chain() {
    let Some(TwoBackups {
        install,
        c: _c,
        _dir,
        repo,
        f,
        p,
    }) = two_backups(200, "ptrack")
    else {
        return;
    };
    // Restored without a target: recovery ends on timeline 2.
    let mut r = restore_and_start(&install, &repo, &f, &[]);
    assert!(
        r.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())")
            .starts_with("00000002")
    );
    r.execute("CREATE TABLE after_restore AS SELECT g FROM generate_series(1, 5000) g");
    // The restored cluster's tracker follows WAL from the backup's start on its own history,
    // so ptrack mode works against F; P (the other branch) is passed over and named.
    let w = backup_with(&r, &repo, "ptrack", &[]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    let id = w.json()["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        parent_of(&repo, &id),
        Value::String(f.clone()),
        "parent of {id}"
    );
    assert!(
        w.json()["warnings"].as_array().unwrap().iter().any(|x| x
            .as_str()
            .unwrap_or("")
            .contains(&format!("backup {p} is not an ancestor"))),
        "the passed-over parent is named: {}",
        w.stdout
    );
    let first = restore_and_compare(&mut r, &repo, &id, &[]);
    assert_eq!(
        first.query_one("SELECT count(*) FROM after_restore"),
        "5000"
    );
    drop(first);
    // The restored cluster's own chain continues.
    r.execute("UPDATE after_restore SET g = -g WHERE g % 10 = 0");
    let pt = backup(&r, &repo, "delta");
    assert_eq!(parent_of(&repo, &pt), Value::String(id.clone()));
    let back = restore_and_compare(&mut r, &repo, &pt, &[]);
    assert_eq!(
        back.query_one("SELECT count(*) FROM after_restore WHERE g < 0"),
        "500"
    );
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

/// Restored from F with `--recovery-target immediate` (timeline 2 branches at F's end): P lies
/// on the other branch; the next backup's parent is F.
#[test]
fn recovery_target_immediate_branch_picks_an_ancestor() {
    let Some(TwoBackups {
        install,
        c: _c,
        _dir,
        repo,
        f,
        ..
    }) = two_backups(300, "delta")
    else {
        return;
    };
    let base = restore_only(&repo, &f, &["--recovery-target", "immediate"]);
    let mut r = PgCluster::adopt(&install, base, &[]);
    r.start();
    wait_recovery_end(&r);
    r.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid < 1000");
    let id = backup(&r, &repo, "delta");
    assert_eq!(parent_of(&repo, &id), Value::String(f.clone()));
    restore_and_compare(&mut r, &repo, &id, &[]);
}

/// A copy of F started without archive recovery stays on timeline 1 (as a restore by other
/// means would): once its WAL passes P's stop LSN only the WAL comparison tells the fork.
#[test]
fn same_timeline_fork_is_caught_by_the_wal() {
    let Some(TwoBackups {
        install,
        c: _c,
        _dir,
        repo,
        f,
        p,
    }) = two_backups(300, "delta")
    else {
        return;
    };
    let p_stop = show(&repo).last().unwrap()["stop_lsn"]
        .as_str()
        .unwrap()
        .to_string();
    let base = restore_only(&repo, &f, &[]);
    std::fs::remove_file(base.join("data/recovery.signal")).unwrap();
    let mut r = PgCluster::adopt(&install, base, &[]);
    r.start();
    assert_eq!(r.query_one("SELECT pg_is_in_recovery()"), "f");
    while lsn_num(&r.query_one("SELECT pg_current_wal_lsn()")) <= lsn_num(&p_stop) {
        r.execute("CREATE TABLE IF NOT EXISTS filler (g int, t text); INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 50000) g");
    }
    assert!(
        r.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())")
            .starts_with("00000001")
    );
    let w = backup_with(&r, &repo, "delta", &[]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    let j = w.json();
    assert_eq!(j["backup"]["parent"], Value::String(f), "{}", w.stdout);
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|x| {
            let t = x.as_str().unwrap_or("");
            t.contains(&format!("backup {p}")) && t.contains("differs from the WAL stored")
        }),
        "{}",
        w.stdout
    );
    let id = j["backup"]["id"].as_str().unwrap().to_string();
    restore_and_compare(&mut r, &repo, &id, &[]);
}

fn lsn_num(s: &str) -> u64 {
    let (h, l) = s.split_once('/').unwrap();
    (u64::from_str_radix(h, 16).unwrap() << 32) | u64::from_str_radix(l, 16).unwrap()
}

/// Manifest paths outside the data directory and catalog facts that disagree with the manifest
/// are CORRUPT, restores are refused, and nothing is written outside the target.
#[test]
fn tampered_paths_and_catalog_facts_are_corrupt() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(1);
    for case in ["dotdot", "absolute", "parent", "start_lsn", "digest_chain"] {
        let (d, repo) = new_repo();
        let full = backup(&c, &repo, "full");
        let other = backup(&c, &repo, "full");
        c.run_tool("pgbench", &["-t", "50", "postgres"]);
        let inc = backup(&c, &repo, "delta");
        let rename = |to: &'static str| {
            move |m: &mut Value| {
                for e in m["entries"].as_array_mut().unwrap() {
                    if e["path"] == "PG_VERSION" {
                        e["path"] = Value::String(to.into());
                    }
                }
            }
        };
        let victim = match case {
            "dotdot" => {
                reseal_manifest(&repo, &inc, rename("../../escaped_by_ptrack"));
                inc.clone()
            }
            "absolute" => {
                reseal_manifest(&repo, &inc, rename("/tmp/escaped_by_ptrack_abs"));
                inc.clone()
            }
            "parent" => {
                // The catalog says the delta belongs to the other full backup.
                edit_catalog(&repo, |cat| {
                    for b in cat["backups"].as_array_mut().unwrap() {
                        if b["id"] == inc.as_str() {
                            b["parent"] = Value::String(full.clone());
                        }
                    }
                });
                inc.clone()
            }
            "start_lsn" => {
                edit_catalog(&repo, |cat| {
                    for b in cat["backups"].as_array_mut().unwrap() {
                        if b["id"] == other.as_str() {
                            b["start_lsn"] = Value::String("F/0".into());
                        }
                    }
                });
                other.clone()
            }
            _ => {
                // The parent's manifest replaced by a re-sealed edit: the child's recorded
                // digest of it no longer matches.
                reseal_manifest(&repo, &other, |m| {
                    m["removed"] = Value::Array(vec![Value::String("base/1/1".into())]);
                });
                inc.clone()
            }
        };
        let v = run(&["validate", "-B", &repo]);
        assert_eq!(v.code, 1, "{case}: validate:\n{}{}", v.stdout, v.stderr);
        assert_eq!(status(&repo, &victim), "CORRUPT", "{case}: {}", v.stdout);
        let target = d.path().join("restore-target");
        let r = run(&[
            "restore",
            "-B",
            &repo,
            "-D",
            &target.display().to_string(),
            "-i",
            &victim,
        ]);
        assert_eq!(r.code, 2, "{case}: restore: {}", r.stdout);
        assert!(!d.path().join("escaped_by_ptrack").exists(), "{case}");
        assert!(
            !std::path::Path::new("/tmp/escaped_by_ptrack_abs").exists(),
            "{case}"
        );
        assert!(
            !std::path::Path::new("/escaped_by_ptrack").exists(),
            "{case}"
        );
    }
}

/// `validate -i CHILD` judges the child by its parent's fresh result, not a stale status.
#[test]
fn validate_uses_the_parents_fresh_status() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (_d, repo) = new_repo();
    let full = backup(&c, &repo, "full");
    c.execute("CREATE TABLE t AS SELECT 1 AS x");
    let inc = backup(&c, &repo, "delta");
    edit_catalog(&repo, |cat| {
        for b in cat["backups"].as_array_mut().unwrap() {
            if b["id"] == full.as_str() {
                b["status"] = Value::String("CORRUPT".into());
            }
        }
    });
    let v = run(&["validate", "-B", &repo, "-i", &inc]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(status(&repo, &full), "OK");
    assert_eq!(status(&repo, &inc), "OK");
}

/// `pg_checksums --enable` on the stopped cluster between backups: incrementals refuse with the
/// reason, a full backup works and the chain continues from it.
#[test]
fn pg_checksums_between_backups_makes_incrementals_refuse() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let mut c = ptrack_cluster(&install, false, 64);
    c.pgbench_init(1);
    let (_d, repo) = new_repo();
    backup(&c, &repo, "full");
    c.stop(StopMode::Fast);
    let out = c.run_tool(
        "pg_checksums",
        &["--enable", "-D", &c.datadir().display().to_string()],
    );
    assert!(out.status.success(), "pg_checksums --enable");
    c.start();
    for mode in ["delta", "ptrack"] {
        let r = backup_with(&c, &repo, mode, &[]);
        assert_eq!(r.code, 2, "{mode}: {}", r.stdout);
        assert!(
            r.stderr.contains("data checksums were enabled")
                || r.stderr.contains("Create new full backup"),
            "{mode}: {}",
            r.stderr
        );
    }
    backup(&c, &repo, "full");
    c.execute("UPDATE pgbench_accounts SET abalance = 7 WHERE aid % 50 = 0");
    let id = backup(&c, &repo, "delta");
    let r = restore_and_compare(&mut c, &repo, &id, &[]);
    assert_eq!(r.query_one("SHOW data_checksums"), "on");
}
