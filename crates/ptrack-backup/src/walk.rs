//! Which parts of a data directory a backup holds. Mirrors the exclusions of
//! `src/backend/backup/basebackup.c` (`excludeDirContents`, `excludeFiles`, `sendDir`): runtime
//! directories are kept empty, server-private files and temporary files are left out, and of an
//! unlogged relation only the init fork is kept (the server resets the rest at startup).
//! `pg_tblspc/<oid>` links are recorded and followed, so tablespace files appear under
//! `pg_tblspc/<oid>/…`.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use ptrack_page::relpath::{is_temp_rel_filename, parse_rel_filename};
use ptrack_types::ForkNumber;

use crate::{Error, Result};

/// Directories whose contents are never backed up (they are recreated empty).
pub const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_wal",
];

/// Top-level files never backed up.
const EXCLUDED_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
    "backup_label.old",
];

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A directory.
    Dir,
    /// A tablespace link and its target.
    Link(String),
    /// A regular file and its size.
    File(u64),
}

/// Whether a file name is excluded wherever it appears.
fn excluded_anywhere(name: &str) -> bool {
    name == "pg_internal.init"
        || name.starts_with("pgsql_tmp")
        || name == "ptrack.map.tmp"
        || name == "ptrack.map.mmap"
}

/// Lists what a backup of `root` holds, sorted by path. Files that vanish while listed are left
/// out (a dropped relation; WAL replay of the backup removes it anyway).
pub fn walk(root: &Path) -> Result<Vec<(String, Item)>> {
    let mut out = Vec::new();
    walk_dir(root, root, "", &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk_dir(root: &Path, dir: &Path, rel: &str, out: &mut Vec<(String, Item)>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(Error::io(dir, "read directory", e)),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "read directory", e))?;
        match e.file_name().into_string() {
            Ok(n) => names.push(n),
            Err(n) => {
                return Err(Error::Refused(format!(
                    "file name {n:?} in \"{}\" is not UTF-8; ptrack cannot record it",
                    dir.display()
                )));
            }
        }
    }
    names.sort();
    let is_db_dir = rel == "global"
        || rel.starts_with("base/")
        || (rel.starts_with("pg_tblspc/") && rel.split('/').count() == 4);
    let unlogged: HashSet<u32> = if is_db_dir {
        names
            .iter()
            .filter_map(|n| parse_rel_filename(n))
            .filter(|(_, fork, _)| *fork == ForkNumber::Init)
            .map(|(num, _, _)| num.0)
            .collect()
    } else {
        HashSet::new()
    };
    for name in names {
        let path = dir.join(&name);
        let relp = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if excluded_anywhere(&name)
            || (rel.is_empty() && EXCLUDED_TOP_FILES.contains(&name.as_str()))
        {
            continue;
        }
        if is_db_dir {
            if is_temp_rel_filename(&name) {
                continue;
            }
            if let Some((num, fork, _)) = parse_rel_filename(&name)
                && fork != ForkNumber::Init
                && unlogged.contains(&num.0)
            {
                continue;
            }
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, "stat", e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, "read link", e))?;
            if rel == "pg_tblspc" {
                let t = target.to_str().ok_or_else(|| {
                    Error::Refused(format!(
                        "tablespace link \"{}\" is not UTF-8",
                        path.display()
                    ))
                })?;
                out.push((relp.clone(), Item::Link(t.to_string())));
                walk_dir(root, &path, &relp, out)?;
                continue;
            }
            // Other links (pg_wal on another disk, a linked config file) are backed up as what
            // they point to.
            let m = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, "stat", e)),
            };
            push(root, &path, relp, &m, out)?;
        } else {
            push(root, &path, relp, &meta, out)?;
        }
    }
    Ok(())
}

fn push(
    root: &Path,
    path: &Path,
    relp: String,
    m: &std::fs::Metadata,
    out: &mut Vec<(String, Item)>,
) -> Result<()> {
    if m.is_dir() {
        let skip_contents = EXCLUDED_DIR_CONTENTS.contains(&relp.as_str());
        out.push((relp.clone(), Item::Dir));
        if !skip_contents {
            walk_dir(root, path, &relp, out)?;
        }
    } else if m.is_file() {
        out.push((relp, Item::File(m.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_follow_basebackup() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_stat_tmp",
            "pg_tblspc",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "base/5/100",
            "base/5/100_fsm",
            "base/5/200",
            "base/5/200_init",
            "base/5/200_vm",
            "base/5/t3_300",
            "base/5/pg_internal.init",
            "global/pg_control",
            "global/ptrack.map.tmp",
            "pg_wal/000000010000000000000001",
            "pg_stat_tmp/x",
        ] {
            std::fs::write(r.join(f), b"12").unwrap();
        }
        let ts = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ts.path().join("PG_18_1/5")).unwrap();
        std::fs::write(ts.path().join("PG_18_1/5/400"), b"x").unwrap();
        std::os::unix::fs::symlink(ts.path(), r.join("pg_tblspc/16400")).unwrap();
        let got: Vec<String> = walk(r).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            got,
            [
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/100",
                "base/5/100_fsm",
                "base/5/200_init",
                "global",
                "global/pg_control",
                "pg_stat_tmp",
                "pg_tblspc",
                "pg_tblspc/16400",
                "pg_tblspc/16400/PG_18_1",
                "pg_tblspc/16400/PG_18_1/5",
                "pg_tblspc/16400/PG_18_1/5/400",
                "pg_wal",
            ]
        );
    }
}
