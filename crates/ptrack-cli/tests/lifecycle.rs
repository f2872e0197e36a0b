//! Delete, retention and pins (issue 14 §1) on real servers, on a local and an S3 (Garage)
//! repository: a parent is refused without `--with-descendants` and its descendants named;
//! `delete --expired` under a stored redundancy removes the old chains and the archived WAL
//! before the oldest kept backup's start, after a dry run that changed nothing; a pinned
//! backup outlives the policy; what remains validates (backups and archive), the oldest kept
//! backup still recovers through the archive to the end (pg_dumpall equal to the source), and
//! the newest equals the quiescent source file by file and page by page. The workload has
//! catalog rewrites (VACUUM FULL of a catalog, a table rewrite) and a prepared transaction.
//! Then deletes killed with SIGKILL at random points: every backup is still OK and whole or
//! DELETING, and the next command finishes the delete.

use ptrack_testkit::{PgCluster, PgInstall, TestRng, require_garage, require_pg};

use crate::archive::{cluster_archiving_with, switch_and_wait};
use crate::backup_util::*;
use crate::util::{Run, ptrack, run};

fn load(c: &PgCluster, round: u32) {
    c.execute(&format!(
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {}) g",
        round * 1000,
        round * 1000 + 999
    ));
    c.execute("UPDATE t SET v = v || 'x' WHERE k % 7 = 0");
    if round.is_multiple_of(2) {
        c.execute("VACUUM FULL pg_class");
        c.execute("ALTER TABLE t ADD COLUMN IF NOT EXISTS extra int DEFAULT 1");
        c.execute("VACUUM FULL t");
    }
}

/// `ptrack <args> -B repo` that must succeed.
fn ok(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    r
}

fn ids(repo: &str) -> Vec<String> {
    show(repo)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The archived WAL file names of the only instance.
fn archived(repo: &str) -> Vec<String> {
    let r = ok(&["show", "-B", repo, "--archive", "--json"]);
    let mut out = Vec::new();
    collect_names(&r.json(), &mut out);
    out.sort();
    out
}

/// Every 24-hex-digit segment name in a JSON value (whatever shape `show --archive` has).
fn collect_names(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s)
            if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            out.push(s.clone())
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_names(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_names(x, out)),
        _ => {}
    }
}

/// The whole story on `repo`; `ptrack_bin` is what the server's archive_command runs.
fn lifecycle(install: &PgInstall, repo: &str, ptrack_bin: &str) {
    let cmd = format!("{ptrack_bin} archive-push -B {repo} %p");
    let mut c = cluster_archiving_with(install, &cmd);
    c.execute("CREATE TABLE t (k int, v text)");
    let mut made = Vec::new();
    for (round, mode) in ["full", "delta", "full", "wal", "delta"].iter().enumerate() {
        load(&c, round as u32);
        if round == 3 {
            // On a table of its own: its lock would block the rewrites of `t`.
            c.execute("CREATE TABLE held (k int)");
            c.execute("BEGIN; INSERT INTO held VALUES (1); PREPARE TRANSACTION 'p1'");
        }
        switch_and_wait(&c);
        made.push(backup(&c, repo, mode));
    }
    let [f1, i1, f2, i2, i3] = made.try_into().unwrap();

    // A parent is refused, its descendants named; nothing changes.
    let r = run(&["delete", "-B", repo, "-i", &f1]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains(&i1) && r.stderr.contains("--with-descendants"),
        "{}",
        r.stderr
    );
    assert_eq!(ids(repo).len(), 5);
    let r = run(&["delete", "-B", repo, "-i", "NOSUCH1"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("NOSUCH1"), "{}", r.stderr);

    // The policy: the newest full with its chain. show marks what would go; a dry run changes
    // nothing.
    let r = ok(&["set-retention", "-B", repo, "--retention-redundancy", "1"]);
    assert!(r.stdout.contains("redundancy 1"), "{}", r.stdout);
    let r = ok(&["show", "-B", repo]);
    let mut marked = Vec::new();
    for line in r.stdout.lines() {
        let id = line.split_whitespace().next().unwrap_or_default();
        if line.contains(", expired") {
            marked.push(id.to_string());
        }
    }
    assert_eq!(marked, [i1.clone(), f1.clone()], "{}", r.stdout);
    let wal_before = archived(repo);
    let r = ok(&["delete", "-B", repo, "--expired", "--dry-run"]);
    assert!(
        r.stdout.contains("would delete 2 backup(s)"),
        "{}",
        r.stdout
    );
    assert_eq!(ids(repo).len(), 5);
    assert_eq!(archived(repo), wal_before);

    // F1 pinned: I1 goes, F1 stays (a pin keeps the backup and its parents, not its children).
    ok(&["pin", "-B", repo, "-i", &f1, "--ttl", "1d"]);
    let r = ok(&["delete", "-B", repo, "--expired", "--json"]);
    let j = r.json();
    let deleted: Vec<&str> = j["deleted"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(deleted, [i1.as_str()]);
    assert_eq!(ids(repo), [f1.clone(), f2.clone(), i2.clone(), i3.clone()]);
    // Unpinned, F1 goes too, with the WAL before F2's start (F1's own WAL is in F1).
    ok(&["unpin", "-B", repo, "-i", &f1]);
    let r = ok(&["delete", "-B", repo, "--expired", "--json"]);
    let j = r.json();
    assert_eq!(j["deleted"]["backups"], serde_json::json!([f1]));
    let f2_start = show(repo).iter().find(|b| b["id"] == f2.as_str()).unwrap()["start_lsn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(j["deleted"]["wal_keep_from"], f2_start.as_str());
    let gone: Vec<String> = j["deleted"]["wal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(!gone.is_empty(), "{j}");
    let start_seg = c.query_one(&format!("SELECT pg_walfile_name('{f2_start}'::pg_lsn)"));
    let wal_after = archived(repo);
    for w in &wal_after {
        assert!(!gone.contains(w), "{w} reported deleted but still archived");
    }
    assert!(
        wal_after.contains(&start_seg),
        "{start_seg} gone: {wal_after:?}"
    );
    assert!(
        wal_after.iter().all(|w| w[8..] >= start_seg[8..]),
        "a segment before {start_seg} stayed: {wal_after:?}"
    );
    assert_eq!(ids(repo), [f2.clone(), i2.clone(), i3.clone()]);

    // What remains validates, the archive included.
    let r = run(&["validate", "-B", repo]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    c.execute("COMMIT PREPARED 'p1'");
    c.execute("SELECT pg_logical_emit_message(false, 'p', 'end')");
    switch_and_wait(&c);
    let r = run(&["validate", "-B", repo, "--archive"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // The oldest kept backup recovers through the archive to its end.
    let want = dumpall(&c);
    let mut p = restore_latest(install, repo, &f2, ptrack_bin);
    assert_eq!(
        dumpall(&p),
        want,
        "PG{}: restored from {f2} to latest",
        install.major
    );
    p.stop(ptrack_testkit::StopMode::Fast);

    // The newest, recovered to the end of the archive, against the stopped source, file by
    // file and page by page.
    c.execute("VACUUM");
    let last = backup(&c, repo, "delta");
    c.execute("SELECT pg_logical_emit_message(false, 'p', 'last')");
    switch_and_wait(&c);
    c.stop(ptrack_testkit::StopMode::Fast);
    let mut r = restore_latest(install, repo, &last, ptrack_bin);
    r.stop(ptrack_testkit::StopMode::Fast);
    assert_same_files(&c, &r, &format!("{last} restored to latest"));

    // WAL depth 1: only the newest backup keeps point-in-time recovery; the older ones keep
    // their own WAL, and the archive validates with them noted, not as gaps.
    ok(&["set-retention", "-B", repo, "--wal-depth", "1"]);
    let r = ok(&["delete", "-B", repo, "--expired", "--json"]);
    let j = r.json();
    assert_eq!(j["deleted"]["backups"], serde_json::json!([]), "{j}");
    assert!(!j["deleted"]["wal"].as_array().unwrap().is_empty(), "{j}");
    let r = run(&["validate", "-B", repo, "--archive"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for id in [&f2, &i2, &i3] {
        assert!(
            r.stdout
                .contains(&format!("backup {id}: restores to its own end only")),
            "{}",
            r.stdout
        );
    }
    let r = run(&["validate", "-B", repo]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// Restores `id` with `--recovery-target latest` (through the archive) and waits for the end
/// of recovery; the restored server archives nothing.
fn restore_latest(install: &PgInstall, repo: &str, id: &str, ptrack_bin: &str) -> PgCluster {
    let base = PgCluster::new_cluster_dir();
    let d = base.join("data").display().to_string();
    let get = format!("{ptrack_bin} archive-get -B {repo} %f %p");
    ok(&[
        "restore",
        "-B",
        repo,
        "-D",
        &d,
        "-i",
        id,
        "--recovery-target",
        "latest",
        "--restore-command",
        &get,
    ]);
    let mut p = PgCluster::adopt(install, base, &[]);
    p.append_conf(&[("archive_mode", "off")]);
    p.start();
    wait_recovery_end(&p);
    p
}

#[test]
fn delete_retention_and_pins_on_a_local_repository() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let (_d, repo) = new_repo();
    lifecycle(&install, &repo, env!("CARGO_BIN_EXE_ptrack"));
}

#[test]
fn delete_retention_and_pins_on_garage() {
    let (Some(bin), Some(install)) = (require_garage(), require_pg(15)) else {
        return;
    };
    let g = ptrack_testkit::Garage::start(&bin, 1);
    let repo = new_s3_repo(&g, "lifecycle");
    let scratch = tempfile::tempdir().expect("tempdir");
    chown_postgres(scratch.path());
    let wrapper = s3_wrapper(&g, scratch.path());
    lifecycle(&install, &repo, &wrapper.display().to_string());
}

/// SIGKILL during `ptrack delete` at random points, 20 times: afterwards every backup is OK
/// and validates, or DELETING; the next locked command (here `delete` of the next victim)
/// finishes the interrupted one; at the end only the backup never deleted remains, it
/// validates and no object of a deleted backup is left.
#[test]
fn a_killed_delete_leaves_whole_or_deleting_backups_and_is_finished() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let (d, repo) = new_repo();
    let cmd = format!("{} archive-push -B {repo} %p", env!("CARGO_BIN_EXE_ptrack"));
    let c = cluster_archiving_with(&install, &cmd);
    c.execute("CREATE TABLE t (k int, v text)");
    load(&c, 1);
    let keeper = backup(&c, &repo, "full");
    let mut rng = TestRng::from_env("killed deletes");
    let mut states = std::collections::BTreeSet::new();
    for round in 0..20 {
        load(&c, round + 2);
        let victim = backup(&c, &repo, "full");
        let child = backup(&c, &repo, "delta");
        let mut child_proc = ptrack()
            .args(["delete", "-B", &repo, "-i", &victim, "--with-descendants"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn delete");
        // A random moment within the first 60 ms (a delete of this size takes about that).
        std::thread::sleep(std::time::Duration::from_micros(rng.below(60_000)));
        let _ = child_proc.kill();
        let status = child_proc.wait().expect("wait");
        let shown = show(&repo);
        for b in &shown {
            let id = b["id"].as_str().unwrap();
            let st = b["status"].as_str().unwrap();
            states.insert(format!(
                "{}:{st}",
                if id == keeper { "keeper" } else { "victim" }
            ));
            match st {
                "OK" => {
                    let v = run(&["validate", "-B", &repo, "-i", id]);
                    assert_eq!(
                        v.code, 0,
                        "round {round}: {id} OK but: {}{}",
                        v.stdout, v.stderr
                    );
                }
                "DELETING" => assert_ne!(id, keeper),
                s => panic!("round {round}: backup {id} is {s} ({status:?})"),
            }
        }
        // An OK child never stands on a parent that is going.
        if let Some(ch) = shown.iter().find(|b| b["id"] == child.as_str())
            && ch["status"] == "OK"
        {
            assert!(
                shown
                    .iter()
                    .any(|b| b["id"] == victim.as_str() && b["status"] == "OK"),
                "round {round}: {child} OK without its parent: {shown:?}"
            );
        }
        // Finish: the repeated delete when it was killed before marking, else any locked
        // command (delete of a missing ID is one: it takes the lock first).
        if ids(&repo).contains(&victim) {
            let r = run(&["delete", "-B", &repo, "-i", &victim, "--with-descendants"]);
            assert!(
                r.code == 0 || r.stderr.contains("not in the catalog"),
                "{}",
                r.stderr
            );
        }
        assert_eq!(ids(&repo), std::slice::from_ref(&keeper), "round {round}");
    }
    eprintln!("states seen: {states:?}");
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    // No object of a deleted backup is left: the instance holds the keeper's directory only.
    let inst = instance_dir(&repo);
    let dirs: Vec<String> = std::fs::read_dir(&inst)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.len() == 7
                && n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        .collect();
    assert_eq!(dirs, std::slice::from_ref(&keeper), "{inst:?}");
    drop(c);
    drop(d);
}
