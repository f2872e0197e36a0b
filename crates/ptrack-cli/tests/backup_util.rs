//! Helpers of the backup tests: a ptrack-enabled cluster, `ptrack backup/restore/validate/show`
//! runs against it, restoring into a started cluster, and the oracles (`pg_dumpall`, amcheck).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ptrack_testkit::{ClusterConfig, PgCluster, PgInstall};
use serde_json::Value;

use crate::util::{Run, run};

/// A started cluster with ptrack preloaded (`map_mb` MB map; 0 disables it) and the extension
/// created in `postgres`.
pub fn ptrack_cluster(install: &PgInstall, checksums: bool, map_mb: u32) -> PgCluster {
    let cfg = ClusterConfig::new(checksums)
        .set("shared_preload_libraries", "ptrack")
        .set("ptrack.map_size", &format!("{map_mb}MB"));
    let mut c = PgCluster::init_with(install, &cfg);
    c.start();
    if map_mb > 0 {
        c.execute("CREATE EXTENSION ptrack");
    }
    c
}

/// Hands `path` to the `postgres` user when the tests run as root (ptrack then works as
/// `postgres`, the owner of the directory a repository is created in).
pub fn chown_postgres(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg("postgres:")
            .arg(path)
            .status()
            .expect("run chown");
        assert!(st.success(), "chown postgres {}", path.display());
    }
}

/// uid of the `postgres` user.
pub fn postgres_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let d = PgCluster::new_cluster_dir();
    let uid = std::fs::metadata(&d).expect("stat").uid();
    let _ = std::fs::remove_dir_all(&d);
    uid
}

/// Every path under `root` (not following links) whose owner is not `uid`.
pub fn not_owned_by(root: &Path, uid: u32) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.uid() != uid {
            out.push(p.clone());
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read dir").flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A new repository (in a directory owned by `postgres`).
pub fn new_repo() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().expect("tempdir");
    chown_postgres(d.path());
    let repo = d.path().join("repo").display().to_string();
    let r = run(&["init", "-B", &repo]);
    assert_eq!(r.code, 0, "init: {}", r.stderr);
    (d, repo)
}

/// A repository at `s3://<bucket>/<prefix>` on Garage `g`, initialised; every `ptrack` this
/// thread runs from now on talks to `g` (its endpoint and key in the AWS variables).
pub fn new_s3_repo(g: &ptrack_testkit::Garage, prefix: &str) -> String {
    crate::util::set_thread_env(
        g.env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let repo = format!("s3://{}/{prefix}", g.bucket);
    let r = run(&["init", "-B", &repo]);
    assert_eq!(r.code, 0, "init {repo}: {}", r.stderr);
    repo
}

/// A script in `dir` that runs `ptrack` with Garage `g`'s endpoint and key: what a server's
/// `archive_command` or `restore_command` runs (their environment is the server's).
pub fn s3_wrapper(g: &ptrack_testkit::Garage, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("ptrack-s3");
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in g.env() {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str(&format!("exec {} \"$@\"\n", env!("CARGO_BIN_EXE_ptrack")));
    std::fs::write(&wrapper, script).expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700))
        .expect("chmod the wrapper");
    chown_postgres(&wrapper);
    wrapper
}

/// Connection arguments for `c`.
pub fn conn_args(c: &PgCluster) -> Vec<String> {
    vec![
        "-h".into(),
        c.socket_dir().display().to_string(),
        "-p".into(),
        c.port().to_string(),
        "-U".into(),
        "postgres".into(),
        "-d".into(),
        "postgres".into(),
    ]
}

/// `ptrack backup --json` of `c` in `mode` with extra arguments.
pub fn backup_with(c: &PgCluster, repo: &str, mode: &str, extra: &[&str]) -> Run {
    let data = c.datadir().display().to_string();
    let mut args: Vec<String> = ["backup", "-B", repo, "-D", &data, "-b", mode, "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(conn_args(c));
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&a)
}

/// A backup that must succeed; returns its ID.
pub fn backup(c: &PgCluster, repo: &str, mode: &str) -> String {
    let r = backup_with(c, repo, mode, &[]);
    assert_eq!(
        r.code, 0,
        "backup {mode} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    let j = r.json();
    assert_eq!(j["backup"]["status"], "OK");
    // Every phase is timed, and the phases add up to no more than the whole.
    let phases = j["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "start (checkpoint)",
        "walk",
        "pages and files",
        "stop",
        "WAL",
        "catalog",
    ] {
        assert!(names.contains(&want), "phase {want} missing: {names:?}");
    }
    let sum: f64 = phases.iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    assert!(
        sum <= j["elapsed_seconds"].as_f64().unwrap() + 0.05,
        "{phases:?}"
    );
    j["backup"]["id"].as_str().expect("id").to_string()
}

/// `ptrack show --json`: the backups of the only instance.
pub fn show(repo: &str) -> Vec<Value> {
    let r = run(&["show", "-B", repo, "--json"]);
    assert_eq!(r.code, 0, "show: {}", r.stderr);
    r.json()[0]["backups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Status of backup `id`.
pub fn status(repo: &str, id: &str) -> String {
    show(repo)
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("backup {id} not shown"))
}

/// Restores backup `id` into a new directory and starts it (tablespaces relocated under the new
/// directory). The server reaches consistency with the backup's own WAL.
pub fn restore_and_start(
    install: &PgInstall,
    repo: &str,
    id: &str,
    tablespaces: &[String],
) -> PgCluster {
    let base = PgCluster::new_cluster_dir();
    let data = base.join("data");
    let mut args: Vec<String> = vec![
        "restore".into(),
        "-B".into(),
        repo.into(),
        "-D".into(),
        data.display().to_string(),
        "-i".into(),
        id.into(),
        "-j".into(),
        "2".into(),
        // Both ways of making the files durable, each on half of the majors.
        "--sync-method".into(),
        if install.major % 2 == 1 {
            "fsync"
        } else {
            "syncfs"
        }
        .into(),
        // Bulk files around the page cache (the default) and through it (14 and 17).
        "--write-method".into(),
        if install.major % 3 == 2 {
            "buffered"
        } else {
            "direct"
        }
        .into(),
    ];
    let mut extra: Vec<PathBuf> = Vec::new();
    for (i, old) in tablespaces.iter().enumerate() {
        let new = base.join(format!("ts{i}"));
        args.push("-T".into());
        args.push(format!("{old}={}", new.display()));
        extra.push(new);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&a);
    assert_eq!(r.code, 0, "restore {id}: {}\n{}", r.stdout, r.stderr);
    // Restored as the repository's owner, never as root: nothing to hand over.
    let uid = postgres_uid();
    for d in std::iter::once(&data).chain(extra.iter()) {
        let wrong = not_owned_by(d, uid);
        assert!(
            wrong.is_empty(),
            "restore left files not owned by postgres: {wrong:?}"
        );
    }
    let extra_refs: Vec<&Path> = extra.iter().map(PathBuf::as_path).collect();
    let mut c = PgCluster::adopt(install, base, &extra_refs);
    c.start();
    wait_recovery_end(&c);
    c
}

/// Waits (bounded) until `c` has ended recovery: a restore always sets up archive recovery, so
/// the server promotes onto a new timeline at the end of the stored WAL.
pub fn wait_recovery_end(c: &PgCluster) {
    c.wait_for_lsn(
        "SELECT CASE WHEN pg_is_in_recovery() THEN '0/0' ELSE '0/1' END",
        "0/1",
        "end of recovery of the restored cluster",
        std::time::Duration::from_secs(120),
    );
}

/// The paranoia check of backup `id` of `source`, which must have been quiescent since the
/// backup: the source is stopped, `id` restored and started until its recovery ends and
/// stopped, the two data directories compared file by file and page by page
/// (`ptrack_testkit::paranoia`), and both started again. Returns the restored cluster.
pub fn restore_and_compare(
    source: &mut PgCluster,
    repo: &str,
    id: &str,
    tablespaces: &[String],
) -> PgCluster {
    let install = source.install.clone();
    source.stop(ptrack_testkit::StopMode::Fast);
    let mut r = restore_and_start(&install, repo, id, tablespaces);
    r.stop(ptrack_testkit::StopMode::Fast);
    assert_same_files(source, &r, &format!("backup {id}"));
    source.start();
    r.start();
    r
}

/// The paranoia comparison of two stopped clusters' data directories (file by file, page by
/// page, `ptrack_testkit::paranoia`); `what` names the restore in the failure.
pub fn assert_same_files(source: &PgCluster, restored: &PgCluster, what: &str) {
    let blcksz: usize = source.controldata()["Database block size"]
        .parse()
        .expect("block size");
    let diffs = ptrack_testkit::paranoia::compare(source.datadir(), restored.datadir(), blcksz);
    assert!(
        diffs.is_empty(),
        "PG{} {what}: the restored data directory differs from the source:\n  {}",
        source.install.major,
        diffs.join("\n  ")
    );
}

/// `pg_dumpall` of `c`, without the per-run `\restrict` keys and tablespace locations (a
/// restore relocates them).
pub fn dumpall(c: &PgCluster) -> String {
    let out = c.run_tool("pg_dumpall", &["--no-sync"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| match l.strip_prefix("CREATE TABLESPACE ") {
            Some(rest) => rest.split(" LOCATION ").next().unwrap_or(rest),
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// amcheck over every database: `pg_amcheck --all` with heap and index checks where the
/// installation has it, otherwise `bt_index_check` on every B-tree index.
pub fn amcheck(c: &PgCluster) {
    let share = std::process::Command::new(c.install.bin("pg_config"))
        .arg("--sharedir")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !Path::new(&share).join("extension/amcheck.control").exists() {
        // The PyPI PostgreSQL 16 build has no contrib modules; the paranoia comparison has
        // checked the restore page by page already.
        eprintln!(
            "\n*** SKIPPED: amcheck is not installed in PG{} ({share}); the restore was compared file by file only ***\n",
            c.install.major
        );
        return;
    }
    if c.install.has("pg_amcheck") {
        let out = c
            .tool("pg_amcheck")
            .args([
                "--all",
                "--install-missing",
                "--heapallindexed",
                "--no-dependent-indexes",
            ])
            .output()
            .expect("run pg_amcheck");
        assert!(
            out.status.success(),
            "pg_amcheck failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    for db in c.query("SELECT datname FROM pg_database WHERE datallowconn") {
        let db = &db[0];
        c.execute_db(db, "CREATE EXTENSION IF NOT EXISTS amcheck");
        let n = c.query_db(
            db,
            "SELECT count(bt_index_check(i.indexrelid, true)) FROM pg_index i JOIN pg_class r ON r.oid = i.indexrelid \
             JOIN pg_am a ON a.oid = r.relam WHERE a.amname = 'btree' AND r.relpersistence <> 't' AND i.indisvalid",
        );
        assert!(!n.is_empty(), "amcheck in {db}");
    }
}

/// Every file of the repository with its content.
pub fn snapshot(repo: &str) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read repo").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).expect("inside").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new(repo), Path::new(repo), &mut out);
    out
}

/// The JSON body of a repository document.
pub fn doc_body(path: &Path) -> Value {
    let b = std::fs::read(path).expect("read document");
    let nl = b.iter().position(|&c| c == b'\n').expect("header");
    serde_json::from_slice(&b[nl + 1..]).expect("json body")
}

/// Rewrites a repository document with a valid header (an edit a CRC check cannot see).
pub fn write_doc(path: &Path, kind: &str, v: &Value) {
    let body = serde_json::to_vec_pretty(v).unwrap();
    // Format versions as ptrack writes them (crate::records documents are at 1).
    let version = match kind {
        "backup-record" | "catalog-index" => 1,
        _ => 2,
    };
    let mut out = format!(
        "PTRACK {kind} {version} {:08x} {}\n",
        crc32c::crc32c(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    std::fs::write(path, out).unwrap();
}

pub fn instance_dir(repo: &str) -> std::path::PathBuf {
    std::fs::read_dir(repo)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("instance directory")
}

/// Rewrites backup `id`'s manifest through `edit` and re-seals it as a careful attacker would:
/// the document header and the catalog's BLAKE3 of it are made to match.
pub fn reseal_manifest(repo: &str, id: &str, edit: impl FnOnce(&mut Value)) {
    let inst = instance_dir(repo);
    let path = inst.join(id).join("manifest");
    let mut m = doc_body(&path);
    edit(&mut m);
    write_doc(&path, "manifest", &m);
    let digest = blake3::hash(&std::fs::read(&path).unwrap())
        .to_hex()
        .to_string();
    edit_catalog(repo, |cat| {
        for b in cat["backups"].as_array_mut().unwrap() {
            if b["id"] == id {
                b["manifest_digest"] = Value::String(digest.clone());
            }
        }
    });
}

/// The current record file of every backup of the only instance in `repo`, by ID, with its gen
/// (docs/formats.md: `<sysid>/records/<ID>.<gen>`, the highest gen is current).
pub fn current_records(
    repo: &str,
) -> std::collections::BTreeMap<String, (u64, std::path::PathBuf)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(instance_dir(repo).join("records")) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let (id, g) = name.split_once('.').expect("record name");
        let g: u64 = g.parse().expect("record gen");
        let newer = out.get(id).is_none_or(|(old, _)| *old < g);
        if newer {
            out.insert(id.to_string(), (g, e.path()));
        }
    }
    out
}

/// Rewrites the catalog through `edit` as an attacker with valid headers would: `edit` gets
/// `{"backups": [record, ...]}`; every record it leaves is written as a new state, removed ones
/// are deleted, and the index (a cache) is dropped.
pub fn edit_catalog(repo: &str, edit: impl FnOnce(&mut Value)) {
    let inst = instance_dir(repo);
    let current = current_records(repo);
    let mut cat = serde_json::json!({
        "backups": current.values().map(|(_, p)| doc_body(p)).collect::<Vec<_>>()
    });
    edit(&mut cat);
    for (_, p) in current.values() {
        std::fs::remove_file(p).unwrap();
    }
    for b in cat["backups"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap();
        let g = current.get(id).map_or(1, |(g, _)| g + 1);
        let path = inst.join("records").join(format!("{id}.{g:010}"));
        write_doc(&path, "backup-record", b);
    }
    let _ = std::fs::remove_file(inst.join("index"));
}

/// Runs `f` on each of `majors` that is installed (each missing one skips loudly, or fails
/// under CI, as `require_pg` does).
pub fn each_major(majors: &[u32], f: impl Fn(&ptrack_testkit::PgInstall)) {
    for &m in majors {
        if let Some(install) = ptrack_testkit::require_pg(m) {
            f(&install);
        }
    }
}
