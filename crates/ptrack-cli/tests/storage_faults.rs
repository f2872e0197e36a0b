//! Backup, restore and validate on the in-memory store with every storage operation failing
//! in turn (issue 12 §5): a permanent failure is a clean error naming the object (a backup is
//! then ERROR with its objects gone, a restore leaves no `pg_control`, a validate changes no
//! status), a transient one is retried and the command succeeds with the same result. The
//! backups are of a real PG18 server; the repository never touches a disk. The clean restore
//! from memory is started and compared page by page with the stopped source.

use std::path::Path;
use std::sync::Arc;

use ptrack_backup::backup::{BackupOptions, Quiet, run_backup};
use ptrack_backup::conn::ConnOptions;
use ptrack_backup::restore::{RestoreOptions, run_restore};
use ptrack_backup::validate::run_validate;
use ptrack_format::bundle::Compression;
use ptrack_format::catalog::{Mode, Status};
use ptrack_format::repo::Repository;
use ptrack_repo::Storage;
use ptrack_repo::memory::MemStore;
use ptrack_testkit::{PgCluster, StopMode, require_ptrack};

use crate::backup_util::*;

fn options(c: &PgCluster, mode: Mode) -> BackupOptions {
    BackupOptions {
        pgdata: c.datadir().to_path_buf(),
        mode,
        jobs: 2,
        compression: Compression::Lz4,
        allow_corruption: false,
        conn: ConnOptions {
            host: Some(c.socket_dir().display().to_string()),
            port: Some(c.port()),
            user: Some("postgres".into()),
            dbname: Some("postgres".into()),
        },
    }
}

fn restore_opts(target: &Path, id: &str) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        backup_id: Some(id.into()),
        jobs: 2,
        ..RestoreOptions::default()
    }
}

/// Positions `0..n` to fail: all of them when few, else an even sample with both ends.
fn positions(n: u64, most: u64) -> Vec<u64> {
    if n <= most {
        return (0..n).collect();
    }
    (0..most).map(|i| i * (n - 1) / (most - 1)).collect()
}

/// Every status in the catalog of the only instance.
fn statuses(repo: &Repository) -> Vec<(String, Status)> {
    let inst = repo.only_instance(None).expect("instance");
    inst.catalog()
        .expect("catalog")
        .backups
        .iter()
        .map(|b| (b.id.clone(), b.status))
        .collect()
}

/// Removes lease intents left by a release that failed (they would expire after two minutes;
/// the lock is taken again at once in the next round); whether there was one.
fn clear_intents(mem: &MemStore) -> bool {
    let mut left = false;
    for k in mem.list(None).expect("list") {
        if k.as_str().contains("/lock/") {
            mem.delete(&k).expect("delete intent");
            left = true;
        }
    }
    left
}

/// A failed command's message names what failed: an object key or the injected failure.
fn names_the_object(e: &str) -> bool {
    e.contains("injected failure") || e.contains("repository object")
}

#[test]
fn every_storage_operation_failing_in_turn() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let mut c = ptrack_cluster(&install, true, 16);
    c.pgbench_init(1);
    let mem = MemStore::new();
    let repo = Repository::init_on(Arc::new(mem.clone())).expect("init in memory");
    let full = run_backup(&repo, &options(&c, Mode::Full), &Quiet).expect("full backup");

    // Backups: each failing position once, permanently then transiently.
    c.run_tool("pgbench", &["-t", "100", "-c", "2", "postgres"]);
    let base = mem.ops();
    let probe = run_backup(&repo, &options(&c, Mode::Ptrack), &Quiet).expect("ptrack backup");
    let n = mem.ops() - base;
    for at in positions(n, 14) {
        for transient in [false, true] {
            mem.fail_op(mem.ops() + at, transient);
            let r = run_backup(&repo, &options(&c, Mode::Ptrack), &Quiet);
            let pending = mem.take_pending_failure();
            // Not reached, or the lock's release failed (its intent is left to expire).
            let unreached = clear_intents(&mem) || pending;
            match r {
                Ok(rep) => {
                    assert_eq!(rep.info.status, Status::Ok);
                    assert!(
                        transient || unreached,
                        "backup ignored failure of operation {at}: {:?}",
                        rep.warnings
                    );
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        names_the_object(&e) || e.contains("another ptrack process"),
                        "operation {at} of {n} (transient {transient}): {e}"
                    );
                    // A transient failure is retried, except where bytes were streamed: a
                    // writer's completion is the one thing not replayed.
                    assert!(
                        !transient || e.contains("finish"),
                        "a transient failure of operation {at} was not retried: {e}"
                    );
                }
            }
        }
    }
    // What failed is ERROR and holds no object; what is OK validates.
    let inst = repo.only_instance(None).expect("instance");
    for (id, st) in statuses(&repo) {
        let objects = repo
            .store()
            .list(Some(&inst.backup_key(&id).expect("key")))
            .expect("list");
        match st {
            Status::Ok => assert!(objects.iter().any(|k| k.as_str().ends_with("/manifest"))),
            Status::Error => assert!(objects.is_empty(), "{id} left {objects:?}"),
            other => panic!("backup {id} is {other} after the fault sweep"),
        }
    }
    let checks = run_validate(&repo, None, None, 2).expect("validate");
    assert!(checks.iter().all(|c| c.problems.is_empty()), "{checks:?}");

    // Restores of the two-backup chain.
    let id = probe.info.id.clone();
    let scratch = tempfile::tempdir().expect("tempdir");
    let clean = scratch.path().join("clean");
    let base = mem.ops();
    run_restore(&repo, &restore_opts(&clean, &id), &Quiet).expect("clean restore");
    let n = mem.ops() - base;
    for at in positions(n, 60) {
        for transient in [false, true] {
            let t = scratch.path().join(format!("r{at}-{transient}"));
            mem.fail_op(mem.ops() + at, transient);
            let r = run_restore(&repo, &restore_opts(&t, &id), &Quiet);
            let pending = mem.take_pending_failure();
            // Not reached, or the lock's release failed (its intent is left to expire).
            let unreached = clear_intents(&mem) || pending;
            match (r, transient) {
                (Ok(_), true) => {
                    let d = ptrack_testkit::paranoia::compare(&clean, &t, 8192);
                    assert!(d.is_empty(), "retried restore differs: {d:?}");
                }
                (Ok(_), false) => assert!(
                    unreached,
                    "restore ignored a failure of operation {at} of {n}"
                ),
                (Err(e), true) => {
                    panic!("a transient failure of operation {at} was not retried: {e}")
                }
                (Err(e), false) => {
                    assert!(names_the_object(&e.to_string()), "operation {at}: {e}");
                    assert!(
                        !t.join("global/pg_control").exists(),
                        "a failed restore (operation {at} of {n}: {e}) left a startable directory"
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&t);
        }
    }

    // Validates: a permanent failure stops validate and marks nothing; a transient one is
    // retried.
    let before = statuses(&repo);
    let base = mem.ops();
    run_validate(&repo, None, None, 1).expect("validate");
    let n = mem.ops() - base;
    for at in positions(n, 60) {
        for transient in [false, true] {
            mem.fail_op(mem.ops() + at, transient);
            let r = run_validate(&repo, None, None, 1);
            let pending = mem.take_pending_failure();
            // Not reached, or the lock's release failed (its intent is left to expire).
            let unreached = clear_intents(&mem) || pending;
            match r {
                Ok(checks) => {
                    assert!(
                        checks.iter().all(|c| c.problems.is_empty()),
                        "operation {at} (transient {transient}) was taken for damage: {checks:?}"
                    );
                    assert!(
                        transient || unreached,
                        "validate ignored a failure of operation {at}"
                    );
                }
                Err(e) => {
                    assert!(!transient, "transient failure of operation {at}: {e}");
                    assert!(names_the_object(&e.to_string()), "operation {at}: {e}");
                }
            }
            assert_eq!(statuses(&repo), before, "validate changed a status");
        }
    }

    // The clean restore from memory, started and compared with the stopped source.
    c.stop(StopMode::Fast);
    let dir = PgCluster::new_cluster_dir();
    std::fs::rename(&clean, dir.join("data")).expect("move the restored directory");
    chown_postgres(&dir);
    let mut r = PgCluster::adopt(&install, dir, &[]);
    r.start();
    wait_recovery_end(&r);
    r.stop(StopMode::Fast);
    let diffs = ptrack_testkit::paranoia::compare(c.datadir(), r.datadir(), 8192);
    assert!(diffs.is_empty(), "restored from memory differs: {diffs:?}");
    assert!(statuses(&repo).iter().any(|(i, _)| *i == full.info.id));
}

/// An encrypted repository in memory (`Encrypted(Retrying(MemStore))`): storage failures under
/// the encryption are still failures of the store (a permanent one stops validate with exit 2
/// semantics and marks nothing, a transient one is retried), never taken for damage; a byte
/// flipped in any sealed object of a backup is damage naming that object (validate: CORRUPT;
/// restore: refused, no `pg_control`), and validate finds it OK again once mended. PG18
/// without the extension (full and delta backups).
#[test]
fn encrypted_in_memory_failures_are_not_damage_and_damage_is_named() {
    use ptrack_repo::keyring::{KdfParams, KeySource};
    let Some(install) = ptrack_testkit::require_pg(18) else {
        return;
    };
    let mut c = PgCluster::init_with(&install, &ptrack_testkit::ClusterConfig::new(true));
    c.start();
    c.pgbench_init(1);
    let key = || KeySource::Passphrase {
        var: "TEST_PASSPHRASE".into(),
        secret: ptrack_repo::keyring::Secret::new(b"in-memory test key".to_vec()),
    };
    let cheap = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let mem = MemStore::new();
    let store: Arc<dyn Storage> = Arc::new(mem.clone());
    let repo = Repository::init_encrypted_on(Arc::clone(&store), &key(), cheap).expect("init");
    run_backup(&repo, &options(&c, Mode::Full), &Quiet).expect("full backup");
    c.run_tool("pgbench", &["-t", "100", "-c", "2", "postgres"]);
    let delta = run_backup(&repo, &options(&c, Mode::Delta), &Quiet).expect("delta backup");
    c.stop(StopMode::Fast);
    let repo = Repository::open_on_with(store, Some(&key())).expect("reopen");

    let before = statuses(&repo);
    let base = mem.ops();
    run_validate(&repo, None, None, 1).expect("validate");
    let n = mem.ops() - base;
    for at in positions(n, 40) {
        for transient in [false, true] {
            mem.fail_op(mem.ops() + at, transient);
            let r = run_validate(&repo, None, None, 1);
            let unreached = mem.take_pending_failure() | clear_intents(&mem);
            match r {
                Ok(checks) => {
                    assert!(
                        checks.iter().all(|c| c.problems.is_empty()),
                        "operation {at} (transient {transient}) was taken for damage: {checks:?}"
                    );
                    assert!(transient || unreached, "validate ignored operation {at}");
                }
                Err(e) => {
                    assert!(!transient, "transient failure of operation {at}: {e}");
                    assert!(names_the_object(&e.to_string()), "operation {at}: {e}");
                }
            }
            assert_eq!(statuses(&repo), before, "validate changed a status");
        }
    }

    let inst = repo.only_instance(None).expect("instance");
    let objects = mem
        .list(Some(&inst.backup_key(&delta.info.id).expect("key")))
        .expect("list");
    assert!(objects.len() >= 2, "{objects:?}");
    let scratch = tempfile::tempdir().expect("tempdir");
    for (i, k) in objects.iter().enumerate() {
        let good = mem.get(k).expect("sealed object");
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x10;
        mem.put(k, &bad).expect("tamper");
        let checks = run_validate(&repo, None, Some(&delta.info.id), 1).expect("validate");
        let c = checks
            .iter()
            .find(|c| c.id == delta.info.id)
            .expect("checked");
        assert_eq!(c.status, Status::Corrupt, "{k}: {c:?}");
        assert!(
            c.problems
                .iter()
                .map(|p| p.to_string())
                .any(|p| p.contains(k.as_str()) && p.contains("damaged")),
            "{k} is not named: {:?}",
            c.problems
        );
        let t = scratch.path().join(format!("t{i}"));
        let e = run_restore(&repo, &restore_opts(&t, &delta.info.id), &Quiet)
            .expect_err("restore of a damaged backup");
        assert!(e.to_string().contains(k.as_str()), "{k}: {e}");
        assert!(!t.join("global/pg_control").exists());
        mem.put(k, &good).expect("mend");
    }
    let checks = run_validate(&repo, None, None, 1).expect("validate");
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
    run_restore(
        &repo,
        &restore_opts(&scratch.path().join("clean"), &delta.info.id),
        &Quiet,
    )
    .expect("restore");
}
