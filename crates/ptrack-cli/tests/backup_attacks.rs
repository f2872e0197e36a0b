//! What a hostile tester found after the first round of fixes, each as a test: all-visible flags
//! set without an LSN change (ptrack and delta), a database dropped and re-created with the
//! same OID, two restores of one backup, a backup of a standby's data directory through its
//! primary's connection, WAL replayed past a standby backup's end, recovery targets inherited
//! from an earlier restore, repository links and FIFOs, re-sealed manifests that break
//! restores, and tablespace mappings that overlap.

use std::time::Duration;

use ptrack_testkit::{PgCluster, require_ptrack};
use serde_json::Value;

use crate::backup_util::*;
use crate::util::run;

/// VACUUM of an insert-only table sets PD_ALL_VISIBLE without advancing the page LSN when hints
/// are not WAL-logged (PG15 without checksums): ptrack and delta incrementals keep those pages.
#[test]
fn all_visible_without_lsn_change_is_backed_up() {
    let Some(install) = require_ptrack(15) else {
        return;
    };
    let mut c = ptrack_cluster(&install, false, 64);
    for t in ["v1", "v2"] {
        c.execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, repeat('x', 100) FROM generate_series(1, 10000) g"
        ));
    }
    c.execute("CHECKPOINT");
    let (_d, repo) = new_repo();
    backup(&c, &repo, "full");
    for (t, mode) in [("v1", "ptrack"), ("v2", "delta")] {
        c.execute(&format!("VACUUM {t}"));
        let id = backup(&c, &repo, mode);
        let r = restore_and_compare(&mut c, &repo, &id, &[]);
        // With the flag lost, an index-only scan would return rows deleted after the restore.
        r.execute(&format!("DELETE FROM {t} WHERE id <= 100"));
        let n = r.query_one(&format!(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM {t} WHERE id <= 100"
        ));
        assert_eq!(n, "0", "{mode}: deleted rows still visible");
    }
}

/// A database dropped and re-created with the same OID by FILE_COPY: its files have the same
/// names and the template's old LSNs.
#[test]
fn database_recreated_with_the_same_oid() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let mut c = ptrack_cluster(&install, true, 64);
    for mode in ["ptrack", "delta"] {
        c.execute("CREATE DATABASE d1 OID 20000");
        c.execute_db("d1", "CREATE TABLE a AS SELECT generate_series(1, 1000) x");
        let (_d, repo) = new_repo();
        backup(&c, &repo, "full");
        c.execute("DROP DATABASE d1");
        c.execute("CREATE DATABASE d2 OID 20000 STRATEGY FILE_COPY");
        let dump = dumpall(&c);
        let id = backup(&c, &repo, mode);
        let r = restore_and_compare(&mut c, &repo, &id, &[]);
        assert_eq!(dumpall(&r), dump, "{mode}");
        drop(r);
        c.execute("DROP DATABASE d2");
    }
}

/// Two restores of one backup share timeline, switch point and system identifier; once the
/// second has recycled the WAL, only ptrack.restored tells them apart.
#[test]
fn two_restores_of_one_backup_stay_apart() {
    let Some(install) = require_ptrack(15) else {
        return;
    };
    let c = ptrack_cluster(&install, false, 64);
    c.execute("CREATE TABLE tw (id int, who text); INSERT INTO tw VALUES (1, 'original')");
    let (_d, repo) = new_repo();
    let f = backup(&c, &repo, "full");
    drop(c);
    let r1 = restore_and_start(&install, &repo, &f, &[]);
    r1.execute("UPDATE tw SET who = 'R1'");
    r1.execute("SELECT pg_switch_wal()");
    let d1 = backup(&r1, &repo, "delta");
    drop(r1);
    let mut r2 = restore_and_start(&install, &repo, &f, &[]);
    r2.execute("UPDATE tw SET who = 'R2'");
    for i in 0..4 {
        r2.execute(&format!(
            "CREATE TABLE junk{i} AS SELECT generate_series(1, 1000); SELECT pg_switch_wal(); CHECKPOINT"
        ));
    }
    let w = backup_with(&r2, &repo, "delta", &[]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    let j = w.json();
    assert_eq!(
        j["backup"]["parent"],
        Value::String(f.clone()),
        "{}",
        w.stdout
    );
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|x| {
            let t = x.as_str().unwrap_or("");
            t.contains(&format!("backup {d1}")) && t.contains("another restore")
        }),
        "{}",
        w.stdout
    );
    let id = j["backup"]["id"].as_str().unwrap().to_string();
    let back = restore_and_compare(&mut r2, &repo, &id, &[]);
    assert_eq!(back.query_one("SELECT who FROM tw"), "R2");
}

/// `-D` a standby's data directory with the primary's connection (same system identifier) is
/// refused; a standby backup under load replays no WAL past its consistency point, and
/// validates with the primary idle.
#[test]
fn standby_mixups_and_its_consistency_point() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.execute("CREATE TABLE marks (n serial, at pg_lsn DEFAULT pg_current_wal_insert_lsn())");
    let mut s = PgCluster::standby_of(&c);
    s.start();
    let (_d, repo) = new_repo();
    let data = s.datadir().display().to_string();
    let mut args: Vec<String> = ["backup", "-B", &repo, "-D", &data, "-b", "full"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    args.extend(conn_args(&c));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&a);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("is not the one running on"),
        "{}",
        r.stderr
    );
    // Inserts on the primary while the standby is backed up.
    let mut load = c.tool("psql");
    load.args(["-h", &c.socket_dir().display().to_string(), "-p", &c.port().to_string(), "-U", "postgres", "-d", "postgres", "-qc"])
        .arg("DO $$ BEGIN FOR i IN 1..4000 LOOP INSERT INTO marks DEFAULT VALUES; COMMIT; PERFORM pg_sleep(0.001); END LOOP; END $$");
    let mut child = load.spawn().unwrap();
    let id = backup(&s, &repo, "full");
    let _ = child.wait();
    let m = doc_body(&instance_dir(&repo).join(&id).join("manifest"));
    let consistent = m["consistent_lsn"].as_str().unwrap().to_string();
    let r = restore_and_start(&install, &repo, &id, &[]);
    let after = r.query_one(&format!(
        "SELECT count(*) FROM marks WHERE at > '{consistent}'"
    ));
    assert_eq!(
        after, "0",
        "rows from after the backup's consistency point {consistent} were restored"
    );
    drop(r);
    // Validate with the primary idle: the standby's WAL ends at its stop LSN.
    let lsn = c.query_one("SELECT pg_current_wal_lsn()");
    s.wait_for_lsn(
        "SELECT pg_last_wal_replay_lsn()",
        &lsn,
        "replay",
        Duration::from_secs(60),
    );
    backup(&s, &repo, "full");
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

/// A restore with an LSN target, backed up and restored again without one, starts (the earlier
/// target is disabled in postgresql.auto.conf).
#[test]
fn earlier_recovery_targets_are_not_inherited() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (_d, repo) = new_repo();
    let f = backup(&c, &repo, "full");
    // A target after the backup, reached through the source's own pg_wal as the archive.
    c.execute("CREATE TABLE later AS SELECT 1 AS x");
    let target_lsn = c.query_one("SELECT pg_current_wal_lsn()");
    c.execute("SELECT pg_switch_wal()");
    let archive = format!("cp {}/pg_wal/%f %p", c.datadir().display());
    let base = PgCluster::new_cluster_dir();
    let t = base.join("data").display().to_string();
    let r = run(&[
        "restore",
        "-B",
        &repo,
        "-D",
        &t,
        "-i",
        &f,
        "--recovery-target",
        &format!("lsn:{target_lsn}"),
        "--restore-command",
        &archive,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut r1 = PgCluster::adopt(&install, base, &[]);
    r1.start();
    wait_recovery_end(&r1);
    assert_eq!(r1.query_one("SELECT count(*) FROM later"), "1");
    r1.execute("CREATE TABLE after AS SELECT 1 AS x");
    let id = backup(&r1, &repo, "delta");
    let r2 = restore_and_compare(&mut r1, &repo, &id, &[]);
    assert_eq!(r2.query_one("SELECT count(*) FROM after"), "1");
    let conf = std::fs::read_to_string(r2.datadir().join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains("# (earlier, disabled by ptrack restore) recovery_target_lsn"),
        "{conf}"
    );
}

/// A backup directory that is a link, a lock that is a FIFO, re-sealed manifests with blocks
/// beyond any segment, an entry under a missing tablespace link, a file under a file, and an
/// impossible start LSN: each refused or CORRUPT, never a crash or a hang.
#[test]
fn repository_shapes_that_break_readers() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    for case in [
        "dir_link",
        "fifo_lock",
        "blocks",
        "no_link",
        "under_file",
        "lsn",
    ] {
        let (d, repo) = new_repo();
        let id = backup(&c, &repo, "full");
        let inst = instance_dir(&repo);
        match case {
            "dir_link" => {
                let moved = d.path().join("moved");
                std::fs::rename(inst.join(&id), &moved).unwrap();
                std::os::unix::fs::symlink(&moved, inst.join(&id)).unwrap();
            }
            "fifo_lock" => {
                let lock = inst.join("lock");
                let _ = std::fs::remove_file(&lock);
                let p = std::ffi::CString::new(lock.display().to_string()).unwrap();
                // SAFETY: mkfifo on a path we own.
                assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o600) }, 0);
                chown_postgres(&lock);
            }
            _ => reseal_manifest(&repo, &id, |m| {
                let entries = m["entries"].as_array_mut().unwrap();
                let data = entries.iter().position(|e| e["kind"] == "data").unwrap();
                match case {
                    "blocks" => entries[data]["blocks"] = Value::from(4_000_000_000u64),
                    "no_link" => {
                        let mut e = entries[data].clone();
                        e["path"] = Value::String("pg_tblspc/99/PG_18_1/1/1".into());
                        entries.push(e);
                    }
                    "under_file" => {
                        let mut e = entries[data].clone();
                        e["path"] = Value::String("global/pg_control/x".into());
                        entries.push(e);
                    }
                    _ => m["start_lsn"] = Value::String("FFFFFFFF/FFFFFFFF".into()),
                }
                let mut v: Vec<Value> = m["entries"].as_array().unwrap().clone();
                v.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
                m["entries"] = Value::Array(v);
            }),
        }
        let out = std::process::Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_ptrack"))
            .args(["validate", "-B", &repo])
            .output()
            .unwrap();
        let code = out.status.code();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            matches!(code, Some(1) | Some(2)),
            "{case}: validate exit {code:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{case}: {text}");
        if case == "fifo_lock" {
            assert!(text.contains("not a regular file"), "{text}");
            continue;
        }
        let target = d.path().join("restored");
        let r = run(&[
            "restore",
            "-B",
            &repo,
            "-D",
            &target.display().to_string(),
            "-i",
            &id,
        ]);
        assert_eq!(r.code, 2, "{case}: restore: {}", r.stdout);
        assert!(!target.join("global/pg_control").exists(), "{case}");
    }
}

/// Tablespace mappings that would overlap are refused before anything is written.
#[test]
fn overlapping_tablespace_mappings_are_refused() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let ts1 = c.new_tablespace_dir("a").display().to_string();
    let ts2 = c.new_tablespace_dir("b").display().to_string();
    c.execute(&format!("CREATE TABLESPACE a LOCATION '{ts1}'"));
    c.execute(&format!("CREATE TABLESPACE b LOCATION '{ts2}'"));
    let (d, repo) = new_repo();
    let id = backup(&c, &repo, "full");
    let target = d.path().join("restored");
    let t = target.display().to_string();
    let same = d.path().join("same").display().to_string();
    let inside = format!("{t}/pg_tblspc/x");
    for (maps, needle) in [
        (
            vec![format!("{ts1}={same}"), format!("{ts2}={same}")],
            "would share",
        ),
        (
            vec![format!("{ts1}={inside}"), format!("{ts2}={same}")],
            "lie inside one another",
        ),
        (
            vec![
                format!("{ts1}={same}"),
                format!("{ts1}={same}2"),
                format!("{ts2}={same}3"),
            ],
            "given more than once",
        ),
    ] {
        let mut args = vec![
            "restore".to_string(),
            "-B".into(),
            repo.clone(),
            "-D".into(),
            t.clone(),
            "-i".into(),
            id.clone(),
        ];
        for m in &maps {
            args.push("-T".into());
            args.push(m.clone());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&a);
        assert_eq!(r.code, 2, "{maps:?}: {}", r.stdout);
        assert!(r.stderr.contains(needle), "{maps:?}: {}", r.stderr);
        assert!(!target.exists(), "{maps:?}: the target was created");
    }
}
