//! `ptrack backup --mode wal` (issue 13 §3) on real servers, every major installed: after a
//! full backup, a workload of pgbench, the DDL mix (both CREATE DATABASE strategies, a database
//! dropped and created again under the same OID by file copy, tablespaces, TRUNCATE, VACUUM
//! FULL, CLUSTER, unlogged tables, two-phase commit), catalog rewrites, a relation truncated by
//! VACUUM and grown again, and a prepared transaction left open; WAL switched and checkpointed
//! until the parent's start segment is gone from `pg_wal`, so the archive is what is read. The
//! repository was copied after the full backup: a delta backup of the same quiescent state goes
//! into the copy. The wal backup stores every page the delta backup stores, and only pages
//! unchanged since the parent besides; both restore to data directories equal to the source
//! file by file and page by page, and to its pg_dumpall. Then the refusals: a gap in the
//! archive, and WAL written with `wal_level = minimal`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ptrack_format::bundle::BundleReader;
use ptrack_format::manifest::EntryKind;
use ptrack_format::repo::Repository;
use ptrack_repo::location::Location;
use ptrack_testkit::{PgCluster, PgInstall, StopMode};

use crate::archive::{cluster_archiving_with, switch_and_wait};
use crate::backup_util::*;
use crate::util::run;

/// Per main-fork segment of backup `id` in `repo`: each stored page's block and LSN.
fn stored_pages(repo: &str, id: &str) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let r = Repository::open(&Location::parse(repo).unwrap()).unwrap();
    let sysid = r.instances().unwrap()[0];
    let inst = r.instance(sysid).unwrap().unwrap();
    let cat = inst.catalog().unwrap();
    let b = cat.get(id).unwrap();
    let (m, _) = ptrack_backup::chain::read_manifest(&inst, b).unwrap();
    let mut reader = BundleReader::new(
        inst.shared_store(),
        &inst.backup_key(id).unwrap(),
        m.compression,
    );
    let mut out = BTreeMap::new();
    for e in m.entries.iter() {
        let EntryKind::Data { parts, .. } = &e.kind else {
            continue;
        };
        let mut pages = BTreeMap::new();
        for p in parts {
            for pe in reader.index(p).unwrap() {
                pages.insert(pe.block, pe.lsn);
            }
        }
        out.insert(e.path.as_str().unwrap().to_string(), pages);
    }
    out
}

/// The parent's start LSN of backup `id`, as a number.
fn start_lsn_of(repo: &str, id: &str) -> u64 {
    let b = shown(repo, id);
    parse_lsn(b["start_lsn"].as_str().unwrap())
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn shown(repo: &str, id: &str) -> serde_json::Value {
    show(repo)
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("backup {id} not shown"))
}

/// A cluster archiving into `repo` with ptrack archive-push.
fn archiving(install: &PgInstall, repo: &str) -> PgCluster {
    let cmd = format!("{} archive-push -B {repo} %p", env!("CARGO_BIN_EXE_ptrack"));
    cluster_archiving_with(install, &cmd)
}

/// The changes a wal backup must follow (see the module comment); before it, `before` ran
/// ahead of the full backup.
fn before_full(c: &PgCluster) {
    c.pgbench_init(1);
    c.execute(
        "CREATE TABLE shrink AS SELECT g, repeat('x', 500) AS f FROM generate_series(1, 20000) g",
    );
    c.execute_db("template1", "CREATE TABLE tmpl (g int)");
    if c.install.major >= 15 {
        c.create_database("same_oid", "file_copy", "OID 40000");
    }
}

fn workload(c: &PgCluster) {
    c.run_tool("pgbench", &["-n", "-t", "300", "-c", "2", "postgres"]);
    crate::workload::run_ddl_mix(c);
    // Truncated by VACUUM, then grown again past where it was cut.
    c.execute("DELETE FROM shrink WHERE g > 2000");
    c.execute("VACUUM shrink");
    c.execute("INSERT INTO shrink SELECT g, repeat('y', 500) FROM generate_series(1, 15000) g");
    // A database dropped and copied again under the same OID from a changed template: its
    // files change without a page in WAL.
    if c.install.major >= 15 {
        c.execute_db(
            "template1",
            "INSERT INTO tmpl SELECT generate_series(1, 5000)",
        );
        c.execute("DROP DATABASE same_oid");
        c.create_database("same_oid", "file_copy", "OID 40000");
    }
    c.execute("VACUUM FULL pg_class");
    c.execute("VACUUM FULL pg_attribute");
    c.execute("CREATE SEQUENCE s1; SELECT count(nextval('s1')) FROM generate_series(1, 100)");
    c.execute("CREATE TABLE prepared_t (g int)");
    c.execute("BEGIN; INSERT INTO prepared_t SELECT generate_series(1, 100); PREPARE TRANSACTION 'open_one'");
    // A restore resets unlogged tables: emptied, the dumps can be compared.
    c.execute("TRUNCATE unlogged_t");
}

/// Switches and checkpoints until `pg_wal` no longer has the segment of `lsn`.
fn push_out_of_pg_wal(c: &PgCluster, lsn: u64) {
    let name = c.query_one(&format!(
        "SELECT pg_walfile_name('{:X}/{:X}')",
        lsn >> 32,
        lsn & 0xFFFF_FFFF
    ));
    let path = c.datadir().join("pg_wal").join(&name);
    for _ in 0..4 {
        if !path.exists() {
            return;
        }
        c.execute("SELECT pg_logical_emit_message(false, 'p', 'x')");
        switch_and_wait(c);
        c.execute("CHECKPOINT");
    }
    assert!(
        !path.exists(),
        "{name} still in pg_wal after four checkpoints"
    );
}

/// Copies the repository at `from` to `to`, without the archive (the archiver writes it
/// meanwhile; the copy takes a delta backup, which needs none).
fn copy_repo(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (p, q) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            if e.file_name() == "wal" && p.parent().is_some_and(|d| d.join("instance").exists()) {
                continue;
            }
            std::fs::create_dir_all(&q).unwrap();
            copy_repo(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

fn wal_equals_delta(install: &PgInstall) {
    let (_d, repo) = new_repo();
    let mut c = archiving(install, &repo);
    before_full(&c);
    let full = backup(&c, &repo, "full");
    let copy = tempfile::tempdir().unwrap();
    copy_repo(Path::new(&repo), copy.path());
    chown_postgres(copy.path());
    let repo2 = copy.path().display().to_string();
    workload(&c);
    push_out_of_pg_wal(&c, start_lsn_of(&repo, &full));
    c.execute("CHECKPOINT");
    let dump = dumpall(&c);
    let prepared = c.query("SELECT gid FROM pg_prepared_xacts");
    let wal = backup(&c, &repo, "wal");
    let delta = backup(&c, &repo2, "delta");
    assert_eq!(shown(&repo, &wal)["mode"], "wal");
    assert_eq!(shown(&repo, &wal)["parent"], full.as_str());

    let parent_start = start_lsn_of(&repo, &full);
    let (w, d) = (stored_pages(&repo, &wal), stored_pages(&repo2, &delta));
    let mut extra = 0usize;
    let mut missed: Vec<String> = Vec::new();
    for (path, dpages) in &d {
        let wpages = w.get(path).cloned().unwrap_or_default();
        for b in dpages.keys().filter(|b| !wpages.contains_key(b)) {
            missed.push(format!("{path} block {b}"));
        }
    }
    assert!(
        missed.is_empty(),
        "PG{}: pages the delta backup stores and the wal backup does not: {missed:?}",
        install.major
    );
    for (path, wpages) in &w {
        let dpages: BTreeSet<u32> = d
            .get(path)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for (b, lsn) in wpages.iter().filter(|(b, _)| !dpages.contains(b)) {
            extra += 1;
            assert!(
                *lsn < parent_start,
                "PG{}: {path} block {b} (LSN {lsn:X}) stored by the wal backup only, yet changed after the parent's start {parent_start:X}",
                install.major
            );
        }
    }
    eprintln!(
        "PG{}: wal backup {} pages, delta {}, {extra} unchanged pages more",
        install.major,
        w.values().map(BTreeMap::len).sum::<usize>(),
        d.values().map(BTreeMap::len).sum::<usize>()
    );
    for (r, id) in [(&repo, &wal), (&repo2, &delta)] {
        let restored = restore_and_compare(&mut c, r, id, &[]);
        let got = dumpall(&restored);
        if got != dump {
            let _ = std::fs::write(format!("/tmp/ptrack-wal-{id}-want.sql"), &dump);
            let _ = std::fs::write(format!("/tmp/ptrack-wal-{id}-got.sql"), &got);
        }
        assert!(
            got == dump,
            "PG{} {id}: pg_dumpall differs (/tmp/ptrack-wal-{id}-*.sql)",
            install.major
        );
        assert_eq!(
            restored.query("SELECT gid FROM pg_prepared_xacts"),
            prepared
        );
        amcheck(&restored);
    }
    refusals(&mut c, &repo);
}

/// A gap in the archive, then WAL written at `wal_level = minimal`: refused, saying why, and
/// recorded ERROR.
fn refusals(c: &mut PgCluster, repo: &str) {
    c.execute("COMMIT PREPARED 'open_one'");
    let start = parse_lsn(&c.query_one("SELECT pg_current_wal_lsn()"));
    backup(c, repo, "full");
    c.execute("INSERT INTO shrink SELECT 1, 'gap'");
    let gone = switch_and_wait(c);
    push_out_of_pg_wal(c, start);
    let path = instance_dir(repo).join("wal").join(&gone);
    assert!(path.exists(), "{gone} not archived at {}", path.display());
    // Damaged where the backup needs it: a flipped byte (the object's digest names it), then a
    // record damaged and the object sealed again (digest and CRC recomputed, as anyone can; the
    // record's CRC-32C names it). Both refused, nothing recorded OK; the object put back.
    let orig = std::fs::read(&path).unwrap();
    let mut flipped = orig.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let mut plain = ptrack_format::archived::decode(&orig, "test").unwrap();
    for b in &mut plain[3 * 8192 + 100..3 * 8192 + 164] {
        *b ^= 0xFF;
    }
    let resealed =
        ptrack_format::archived::encode(&plain, ptrack_format::stored::Compression::None);
    for (what, bytes) in [("flipped", flipped), ("resealed", resealed)] {
        std::fs::write(&path, &bytes).unwrap();
        let r = backup_with(c, repo, "wal", &[]);
        assert_eq!(r.code, 2, "{what}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(&gone), "{what}: {}", r.stderr);
        assert_ne!(show(repo).pop().unwrap()["status"], "OK", "{what}");
    }
    std::fs::write(&path, &orig).unwrap();
    std::fs::remove_file(&path).unwrap();
    let r = backup_with(c, repo, "wal", &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&gone) && r.stderr.contains("take a delta or full backup"),
        "{}",
        r.stderr
    );
    let last = show(repo).pop().unwrap();
    assert_eq!(last["status"], "ERROR", "{last}");

    // wal_level = minimal between a full backup and the next.
    backup(c, repo, "full");
    c.stop(StopMode::Fast);
    c.append_conf(&[
        ("wal_level", "minimal"),
        ("archive_mode", "off"),
        ("max_wal_senders", "0"),
    ]);
    c.start();
    c.execute("BEGIN; CREATE TABLE skipped (g int); INSERT INTO skipped SELECT generate_series(1, 1000); COMMIT");
    c.stop(StopMode::Fast);
    c.append_conf(&[
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("max_wal_senders", "10"),
    ]);
    c.start();
    let r = backup_with(c, repo, "wal", &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("wal_level = minimal"), "{}", r.stderr);
    let v = run(&["validate", "-B", repo]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

#[test]
fn wal_mode_equals_delta_and_restores_identically() {
    each_major(&[15, 18, 13, 14, 16, 17], wal_equals_delta);
}
