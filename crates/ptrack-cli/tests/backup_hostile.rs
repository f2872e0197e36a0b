//! The other defects of issue 10 §2, attacked as a hostile user or a careless DBA would: a
//! restore killed part-way, odd data-directory contents (links out of the cluster, loops, names
//! that are not UTF-8, unreadable files, a partial block), a full disk, repository files that are
//! links to secrets, running as root, bad recovery targets, a schema that needs quoting, a
//! closed output pipe, a missing password, and a backup taken from a standby.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use ptrack_testkit::{PgCluster, StopMode, TestRng, require_ptrack};

use crate::backup_util::*;
use crate::util::{ptrack, run};

/// SIGKILL a restore at random points: the directory it leaves is started by PostgreSQL only
/// when the restore finished (pg_control is written last).
#[test]
fn killed_restore_never_leaves_a_startable_directory() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(5);
    let (_d, repo) = new_repo();
    let id = backup(&c, &repo, "full");
    let base = PgCluster::new_cluster_dir();
    // How long a restore takes with the repository in the page cache, as in the trials: the
    // faster of two (the first also reads the repository from disk).
    let mut took = u64::MAX;
    for p in ["probe1", "probe2"] {
        let t0 = std::time::Instant::now();
        let probe = base.join(p);
        let r = run(&[
            "restore",
            "-B",
            &repo,
            "-D",
            &probe.display().to_string(),
            "-i",
            &id,
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        took = took.min(t0.elapsed().as_micros() as u64);
    }
    let mut rng = TestRng::from_env("killed restore");
    let mut partial = 0;
    for trial in 0..12 {
        let dir = base.join(format!("t{trial}"));
        let mut child = ptrack()
            .args([
                "restore",
                "-B",
                &repo,
                "-D",
                &dir.display().to_string(),
                "-i",
                &id,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(took.max(1))));
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let finished = child.wait().unwrap().success();
        let control = dir.join("global/pg_control").exists();
        if !finished {
            partial += 1;
        }
        if control {
            // pg_control is there only after everything else is durable.
            assert!(dir.join("recovery.signal").exists(), "trial {trial}");
            assert!(dir.join("PG_VERSION").exists(), "trial {trial}");
        } else if dir.join("PG_VERSION").exists() {
            let cl = base.join(format!("c{trial}"));
            std::fs::create_dir_all(cl.join("sock")).unwrap();
            std::fs::rename(&dir, cl.join("data")).unwrap();
            let mut pc = PgCluster::adopt(&install, cl, &[]);
            assert!(
                pc.try_start().is_err(),
                "trial {trial}: a partial restore starts"
            );
        }
    }
    assert!(
        partial >= 6,
        "only {partial} of 12 restores were killed part-way"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Links out of the cluster, a link loop, a name that is not UTF-8, an unreadable file: the
/// backup succeeds, reports each, copies nothing from outside, and restores the odd name.
#[test]
fn odd_data_directory_contents() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let data = c.datadir().to_path_buf();
    std::os::unix::fs::symlink("/etc", data.join("pg_tblspc/99999")).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc_link")).unwrap();
    std::os::unix::fs::symlink("loop_b", data.join("loop_a")).unwrap();
    std::os::unix::fs::symlink("loop_a", data.join("loop_b")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"notes-caf\xe9.txt");
    std::fs::write(data.join(odd), b"non-UTF-8 name").unwrap();
    chown_postgres(&data.join(odd));
    let secret = data.join("root_only");
    std::fs::write(&secret, b"not for postgres").unwrap();
    // SAFETY: plain chmod on our own file.
    unsafe {
        libc::chmod(
            std::ffi::CString::new(secret.as_os_str().as_bytes())
                .unwrap()
                .as_ptr(),
            0o600,
        )
    };
    let (_d, repo) = new_repo();
    let r = backup_with(&c, &repo, "full", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    let skipped: Vec<String> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap_or("").to_string())
        .collect();
    for p in [
        "pg_tblspc/99999",
        "etc_link",
        "loop_a",
        "loop_b",
        "root_only",
    ] {
        assert!(
            skipped.iter().any(|s| s == p),
            "{p} not reported: {skipped:?}"
        );
    }
    // Nothing of /etc in the repository.
    let snap = snapshot(&repo);
    let shadow = std::fs::read("/etc/passwd").unwrap();
    let needle = &shadow[..shadow.len().min(24)];
    for (name, bytes) in &snap {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{name} holds /etc/passwd"
        );
    }
    let id = j["backup"]["id"].as_str().unwrap().to_string();
    let rc = restore_and_start(&install, &repo, &id, &[]);
    assert_eq!(
        std::fs::read(rc.datadir().join(odd)).unwrap(),
        b"non-UTF-8 name"
    );
    // PostgreSQL itself recreates the link from tablespace_map (pg_backup_start lists every link
    // in pg_tblspc); nothing behind it was copied.
    let l = rc.datadir().join("pg_tblspc/99999");
    assert!(
        std::fs::symlink_metadata(&l).is_err_or_link(),
        "{}",
        l.display()
    );
}

/// A 1-byte partial block at the end of a relation segment is reported and restored as it was.
#[test]
fn partial_trailing_block_is_kept() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let mut c = ptrack_cluster(&install, true, 64);
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 2000) g");
    c.execute("CHECKPOINT");
    let rel = c.relation_path("postgres", "t");
    let path = c.datadir().join(&rel);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"\x01").unwrap();
    drop(f);
    let (_d, repo) = new_repo();
    let r = backup_with(&c, &repo, "full", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("\\\"{rel}\\\" ends with 1 byte(s)")),
        "{}",
        r.stdout
    );
    let id = r.json()["backup"]["id"].as_str().unwrap().to_string();
    let rc = restore_and_compare(&mut c, &repo, &id, &[]);
    assert_eq!(
        std::fs::metadata(rc.datadir().join(&rel)).unwrap().len(),
        std::fs::metadata(&path).unwrap().len()
    );
}

trait LinkOrAbsent {
    fn is_err_or_link(&self) -> bool;
}
impl LinkOrAbsent for std::io::Result<std::fs::Metadata> {
    fn is_err_or_link(&self) -> bool {
        self.as_ref().map_or(true, |m| m.file_type().is_symlink())
    }
}

/// A mounted tmpfs: unmounted on drop, then its temporary parent directory removed.
struct Tmpfs {
    mnt: PathBuf,
    _parent: tempfile::TempDir,
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

/// A small tmpfs owned by postgres, unmounted when the guard drops (its directory with it);
/// `None`, loudly, when not root (CI runs as root).
fn small_tmpfs(size: &str, what: &str) -> Option<Tmpfs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** SKIPPED: {what} needs root to mount a tmpfs ***\n");
        assert!(!ptrack_testkit::ci(), "CI runs as root");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    chown_postgres(&mnt);
    Some(Tmpfs { mnt, _parent: d })
}

/// The repository on a full disk: the backup fails naming the file it was writing, the catalog
/// records ERROR with that cause at once, and no temporary files stay behind.
#[test]
fn disk_full_is_recorded_and_cleaned_up() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let Some(small) = small_tmpfs("24m", "disk_full") else {
        return;
    };
    let c = ptrack_cluster(&install, false, 64);
    c.pgbench_init(10);
    let repo = small.mnt.join("repo").display().to_string();
    assert_eq!(run(&["init", "-B", &repo]).code, 0);
    let r = backup_with(&c, &repo, "full", &["--compress", "none"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(
        r.stderr.contains("bundle."),
        "the error names the file being written: {}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("No space left on device").count(),
        1,
        "the cause is printed once: {}",
        r.stderr
    );
    let shown = show(&repo);
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["status"], "ERROR");
    assert!(
        shown[0]["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{:?}",
        shown[0]
    );
    let snap = snapshot(&repo);
    let leftovers: Vec<&String> = snap
        .keys()
        .filter(|k| k.contains("bundle") || k.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A restore onto a full disk (relation files written with O_DIRECT, the default, and through
/// the page cache): exit 2 naming the file being written, and no `global/pg_control`, so the
/// half-written directory cannot be started.
#[test]
fn restore_onto_a_full_disk_fails_cleanly() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let Some(small) = small_tmpfs("40m", "restore onto a full disk") else {
        return;
    };
    let c = ptrack_cluster(&install, false, 64);
    c.pgbench_init(10);
    let (_r, repo) = new_repo();
    let id = backup(&c, &repo, "full");
    let mnt = small.mnt.clone();
    for method in ["direct", "buffered"] {
        let target = mnt.join(method);
        let t = target.display().to_string();
        let r = run(&[
            "restore",
            "-B",
            &repo,
            "-D",
            &t,
            "-i",
            &id,
            "--write-method",
            method,
        ]);
        assert_eq!(r.code, 2, "{method}: {}", r.stdout);
        assert!(
            r.stderr.contains("No space left on device") && r.stderr.contains(&t),
            "{method}: the error names the cause and the file: {}",
            r.stderr
        );
        assert!(
            !target.join("global/pg_control").exists(),
            "{method}: pg_control must not be written after a failed restore"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// Repository files that are links (to a secret) are refused, and no error quotes their bytes.
#[test]
fn repository_links_are_refused_without_quoting() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (d, repo) = new_repo();
    backup(&c, &repo, "full");
    let secret = d.path().join("secret");
    std::fs::write(&secret, "TOPSECRET-LINE\nmore\n").unwrap();
    // The index first (read by every command), then a record (read when the index is gone).
    let index = instance_dir(&repo).join("index");
    let (_, cat) = current_records(&repo)
        .into_values()
        .next()
        .expect("a record");
    std::fs::remove_file(&index).unwrap();
    std::os::unix::fs::symlink(&secret, &index).unwrap();
    let r = run(&["show", "-B", &repo]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(!r.stderr.contains("TOPSECRET") && !r.stdout.contains("TOPSECRET"));
    std::fs::remove_file(&index).unwrap();
    std::fs::remove_file(&cat).unwrap();
    std::os::unix::fs::symlink(&secret, &cat).unwrap();
    for args in [vec!["show", "-B", &repo], vec!["validate", "-B", &repo]] {
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains("symbolic link"), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("TOPSECRET") && !r.stdout.contains("TOPSECRET"),
            "{args:?}"
        );
    }
    // A regular file with the secret's bytes: refused as not a ptrack document, not quoted.
    std::fs::remove_file(&cat).unwrap();
    std::fs::copy(&secret, &cat).unwrap();
    let r = run(&["show", "-B", &repo]);
    assert_eq!(r.code, 2);
    assert!(!r.stderr.contains("TOPSECRET"), "{}", r.stderr);
}

/// As root: a repository in a root-owned directory is refused with the user to run as; a
/// backup and a restore act as the owners (restore_and_start checks every restored file
/// belongs to postgres).
#[test]
fn root_acts_as_the_owner_or_refuses() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** SKIPPED: root_acts_as_the_owner needs root ***\n");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let r = run(&["init", "-B", &d.path().join("repo").display().to_string()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("belongs to root") && r.stderr.contains("runuser"),
        "{}",
        r.stderr
    );
    assert!(!d.path().join("repo").exists());
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (rd, repo) = new_repo();
    let id = backup(&c, &repo, "full");
    let uid = postgres_uid();
    let wrong = not_owned_by(rd.path(), uid);
    assert!(
        wrong.is_empty(),
        "root-owned files in the repository: {wrong:?}"
    );
    restore_and_start(&install, &repo, &id, &[]);
}

/// Recovery targets that cannot work are refused before anything is written.
#[test]
fn bad_recovery_targets_write_nothing() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (d, repo) = new_repo();
    let id = backup(&c, &repo, "full");
    let target = d.path().join("never");
    let t = target.display().to_string();
    let archive = ["--restore-command", "cp /nonexistent/%f %p"];
    for (spec, extra, needle) in [
        ("time:garbage", &[][..], "bad recovery target time"),
        ("xid:abc", &[], "bad recovery target transaction ID"),
        (
            "lsn:FF/0",
            &[],
            "the only recovery target it can reach is `immediate`",
        ),
        (
            "name:nosuch",
            &[],
            "the only recovery target it can reach is `immediate`",
        ),
        ("time:1999-01-01 00:00:00+00", &archive[..], "before backup"),
        ("lsn:0/1", &archive[..], "before backup"),
    ] {
        let mut args = vec![
            "restore",
            "-B",
            &repo,
            "-D",
            &t,
            "-i",
            &id,
            "--recovery-target",
            spec,
        ];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert_eq!(r.code, 2, "{spec}: {}", r.stdout);
        assert!(r.stderr.contains(needle), "{spec}: {}", r.stderr);
        assert!(!target.exists(), "{spec}: the target was created");
    }
    // Without -i, a target before the newest backup picks an older one that reaches it.
    c.execute("CREATE TABLE later AS SELECT 1 AS x");
    let lsn = c.query_one("SELECT pg_current_wal_lsn()");
    c.execute("SELECT pg_switch_wal()");
    backup(&c, &repo, "delta");
    let base = PgCluster::new_cluster_dir();
    let r = run(&[
        "restore",
        "-B",
        &repo,
        "-D",
        &base.join("data").display().to_string(),
        "--recovery-target",
        &format!("lsn:{lsn}"),
        "--restore-command",
        "cp /nonexistent/%f %p",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("newer backup"),
        "the newer backup passed over is named: {}",
        r.stderr
    );
    assert!(
        r.stdout.contains(&format!("restored backup {id}")),
        "{}",
        r.stdout
    );
}

/// ptrack installed in a schema whose name needs quoting.
#[test]
fn quoted_schema_works() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 0);
    let mut c = c;
    c.append_conf(&[("ptrack.map_size", "64MB")]);
    c.restart();
    c.execute("CREATE SCHEMA \"Pt S\"; CREATE EXTENSION ptrack SCHEMA \"Pt S\"");
    let (_d, repo) = new_repo();
    backup(&c, &repo, "full");
    c.execute("CREATE TABLE t AS SELECT 1 AS x");
    backup(&c, &repo, "ptrack");
    assert!(!c.log().contains("pg_backup_stop"), "{}", c.log());
}

/// `ptrack show | (exit at once)` ends quietly; a missing password gives libpq's message.
#[test]
fn closed_pipe_and_missing_password() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    let (_d, repo) = new_repo();
    for _ in 0..3 {
        backup(&c, &repo, "full");
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' show -B '{repo}' --json | true",
            env!("CARGO_BIN_EXE_ptrack")
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    let hba = c.datadir().join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\nhost all pwuser 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n").unwrap();
    c.execute("CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'x'; SELECT pg_reload_conf()");
    let data = c.datadir().display().to_string();
    let port = c.port().to_string();
    let home = tempfile::tempdir().unwrap();
    let out = ptrack()
        .args([
            "backup",
            "-B",
            &repo,
            "-D",
            &data,
            "-b",
            "full",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "pwuser",
            "-d",
            "postgres",
        ])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", home.path().join("none"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no password supplied"), "{err}");
}

/// A backup from a streaming standby (full, then ptrack from its restartpoint): restored, it
/// starts as a primary on a new timeline (standby.signal is not stored), identical file by file.
#[test]
fn backup_from_a_standby() {
    let Some(install) = require_ptrack(18) else {
        return;
    };
    let c = ptrack_cluster(&install, true, 64);
    c.pgbench_init(2);
    let mut s = PgCluster::standby_of(&c);
    s.start();
    let (_d, repo) = new_repo();
    let catch_up = |s: &PgCluster| {
        let lsn = c.query_one("SELECT pg_current_wal_lsn()");
        s.wait_for_lsn(
            "SELECT pg_last_wal_replay_lsn()",
            &lsn,
            "standby replay",
            Duration::from_secs(60),
        );
    };
    catch_up(&s);
    let f = backup(&s, &repo, "full");
    let m = doc_body(&instance_dir(&repo).join(&f).join("manifest"));
    assert_eq!(m["from_standby"], true);
    assert!(
        !m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "standby.signal"),
        "standby.signal stored"
    );
    // Quiesce: stop the primary so the standby stays where the backup left it.
    let r = restore_and_compare(&mut s, &repo, &f, &[]);
    assert_eq!(r.query_one("SELECT pg_is_in_recovery()"), "f");
    drop(r);
    c.run_tool("pgbench", &["-t", "200", "postgres"]);
    c.execute("CHECKPOINT");
    catch_up(&s);
    let p = backup(&s, &repo, "ptrack");
    let mut c = c;
    c.stop(StopMode::Fast);
    let r = restore_and_compare(&mut s, &repo, &p, &[]);
    assert_eq!(
        r.query_one("SELECT count(*) FROM pgbench_accounts"),
        "200000"
    );
}
