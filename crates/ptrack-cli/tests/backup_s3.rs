//! Repositories on a real object store (Garage on loopback, `ptrack_testkit::Garage`): two
//! backups of one cluster started at once into one bucket (never both taken), and a
//! three-node cluster (replication factor 3) losing a node in the middle of a backup (the
//! backup completes or fails cleanly, the repository validates and restores). The backup
//! chain itself runs on S3 in `backup::paranoia_chain_pg18_on_s3`.

use std::process::Stdio;

use ptrack_testkit::{Garage, PgCluster, require_garage, require_ptrack};

use crate::backup_util::*;
use crate::util::{Run, ptrack, run};

/// `ptrack backup` of `c` into `repo` started in the background.
fn spawn_backup(c: &ptrack_testkit::PgCluster, repo: &str, mode: &str) -> std::process::Child {
    let data = c.datadir().display().to_string();
    ptrack()
        .args(["backup", "-B", repo, "-D", &data, "-b", mode, "--json"])
        .args(conn_args(c))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ptrack backup")
}

fn wait(child: std::process::Child) -> Run {
    let r = Run::from_output(child.wait_with_output().expect("wait"));
    r.assert_no_panic();
    r
}

/// A PG18 cluster with ptrack (pgbench scale `scale`), a Garage of `nodes` nodes and a
/// repository at `s3://…/prefix` on it; `None` when either is missing (skipped).
fn s3_case(nodes: usize, scale: u32, prefix: &str) -> Option<(Garage, PgCluster, String)> {
    let install = require_ptrack(18)?;
    let bin = require_garage()?;
    let g = Garage::start(&bin, nodes);
    let c = ptrack_cluster(&install, true, 16);
    c.pgbench_init(scale);
    let repo = new_s3_repo(&g, prefix);
    Some((g, c, repo))
}

/// The ID of the first backup `show` lists as RUNNING, polled for at most a minute.
fn wait_running(repo: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let r = run(&["show", "-B", repo, "--json"]);
        let running = (r.code == 0)
            .then(|| r.json()[0]["backups"].clone())
            .and_then(|b| {
                b.as_array()
                    .and_then(|a| a.iter().find(|b| b["status"] == "RUNNING").cloned())
            })
            .and_then(|b| b["id"].as_str().map(str::to_string));
        if running.is_some() {
            return running;
        }
        std::thread::yield_now();
    }
    None
}

#[test]
fn concurrent_backups_to_one_bucket_exclude_each_other() {
    let Some((_g, mut c, repo)) = s3_case(1, 2, "race") else {
        return;
    };
    let mut taken = 0;
    for round in 0..3 {
        let (a, b) = (
            spawn_backup(&c, &repo, "full"),
            spawn_backup(&c, &repo, "full"),
        );
        let (a, b) = (wait(a), wait(b));
        let ok = [&a, &b].iter().filter(|r| r.code == 0).count();
        assert!(
            ok <= 1,
            "round {round}: two backups of one instance ran at once:\n{}\n{}",
            a.stdout,
            b.stdout
        );
        for r in [&a, &b] {
            if r.code != 0 {
                assert_eq!(r.code, 2, "{}", r.stderr);
                assert!(
                    r.stderr
                        .contains("another ptrack process is working on instance"),
                    "round {round}: refused without saying why: {}",
                    r.stderr
                );
            }
        }
        taken += ok;
    }
    assert!(taken >= 1, "no backup was ever taken");
    let shown = show(&repo);
    assert_eq!(
        shown.iter().filter(|b| b["status"] == "OK").count(),
        taken,
        "{shown:?}"
    );
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    let last = shown.last().expect("a backup")["id"]
        .as_str()
        .expect("id")
        .to_string();
    restore_and_compare(&mut c, &repo, &last, &[]);
}

#[test]
fn a_garage_node_killed_during_a_backup() {
    let Some((mut g, mut c, repo)) = s3_case(3, 10, "three") else {
        return;
    };
    let full = backup(&c, &repo, "full");
    c.run_tool("pgbench", &["-t", "200", "-c", "2", "postgres"]);
    let child = spawn_backup(&c, &repo, "ptrack");
    // Once the new backup is recorded RUNNING (or it has ended already), a node other than
    // the one ptrack talks to dies.
    let _ = wait_running(&repo);
    g.kill_node(2);
    let r = wait(child);
    // Two of three replicas answer: the backup completes; if it does not, it fails cleanly.
    assert!(
        r.code == 0 || r.code == 2,
        "backup with a node down: {}\n{}",
        r.stdout,
        r.stderr
    );
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(
        v.code, 0,
        "validate with a node down:\n{}{}",
        v.stdout, v.stderr
    );
    let shown = show(&repo);
    let newest_ok = shown
        .iter()
        .rev()
        .find(|b| b["status"] == "OK")
        .expect("an OK backup")["id"]
        .as_str()
        .expect("id")
        .to_string();
    if r.code == 0 {
        assert_ne!(newest_ok, full, "the completed backup is listed OK");
    } else {
        assert!(
            shown
                .iter()
                .all(|b| b["status"] == "OK" || b["status"] == "ERROR"),
            "{shown:?}"
        );
    }
    g.restart_node(2);
    restore_and_compare(&mut c, &repo, &newest_ok, &[]);
}

/// `ptrack backup` into S3 killed (SIGKILL) while it runs: the next backup takes the dead
/// holder's lease over at once (same host, process gone), records the killed backup ERROR and
/// deletes its objects; the repository validates and the new backup restores page by page.
#[test]
fn a_backup_killed_mid_upload_is_cleaned_by_the_next() {
    let Some((g, mut c, repo)) = s3_case(1, 10, "killed") else {
        return;
    };
    let mut child = spawn_backup(&c, &repo, "full");
    let killed = wait_running(&repo).expect("the backup never showed RUNNING");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let next = backup(&c, &repo, "full");
    let shown = show(&repo);
    let status_of = |id: &str| {
        shown
            .iter()
            .find(|b| b["id"] == id)
            .map(|b| b["status"].clone())
    };
    assert_eq!(status_of(&killed), Some("ERROR".into()), "{shown:?}");
    assert_eq!(status_of(&next), Some("OK".into()));
    let store = ptrack_repo::s3::S3Store::with_settings(
        ptrack_repo::s3::S3Address {
            bucket: g.bucket.clone(),
            prefix: "killed".into(),
        },
        &g.settings(),
    )
    .expect("client");
    let left: Vec<String> = ptrack_repo::Storage::list(&store, None)
        .expect("list")
        .iter()
        .map(|k| k.to_string())
        .filter(|k| k.contains(&format!("/{killed}/")) || k.contains("/lock/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    restore_and_compare(&mut c, &repo, &next, &[]);
}
