//! Which parts of a data directory a backup holds. Mirrors `src/backend/backup/basebackup.c`
//! (`excludeDirContents`, `excludeFiles`, `sendDir`, `sendTablespace`): runtime directories are
//! kept empty, server-private and temporary files are left out, of an unlogged relation only the
//! init fork is kept (the server resets the rest at startup), and `global/pg_control` is left to
//! the caller, which stores it last. Beyond basebackup.c, `standby.signal` and `recovery.signal`
//! are left out (a restore decides how the cluster starts) and so is the ptrack extension's map
//! (`pg_ptrack/`, `global/ptrack.map*`): a restored cluster's tracker starts afresh.
//!
//! Links: only `pg_tblspc/<oid>` links are followed, and inside a tablespace only this major's
//! `PG_<major>_<catversion>` directory (other majors' directories, left by pg_upgrade, are not
//! this cluster's). `pg_wal` and the excluded runtime directories are recorded as directories
//! whatever they are. Any other link, and anything but a directory or regular file, is not
//! followed and is reported in `skipped`, as pg_basebackup warns "skipping special file". Names
//! are bytes; an unreadable directory is reported, not fatal.

use std::collections::HashSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ptrack_page::relpath::{is_temp_rel_filename, parse_rel_filename};
use ptrack_types::ForkNumber;

use crate::{Error, Refusal, Result};
pub use ptrack_format::FileId;
use ptrack_format::manifest::Skipped;
use ptrack_format::paths::RelPath;
use ptrack_format::table::{Cursor, Table, put_varint, rel_path};

/// Top-level directories whose contents are never backed up (they are recreated empty).
pub const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_wal",
    "pg_ptrack",
];

/// Top-level files never backed up.
const EXCLUDED_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "current_logfiles.tmp",
    "postgresql.auto.conf.tmp",
    "backup_label.old",
    "standby.signal",
    "recovery.signal",
];

/// Files of `global/` never backed up: `pg_control` (stored last by the backup) and the
/// original ptrack's map files.
const EXCLUDED_GLOBAL_FILES: &[&str] = &[
    "pg_control",
    "ptrack.map",
    "ptrack.map.tmp",
    "ptrack.map.mmap",
];

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A directory.
    Dir,
    /// A tablespace link and its (absolute) target.
    Link(String),
    /// A regular file: its size and identity.
    File(u64, FileId),
}

/// What a backup of a data directory holds: every path and what it is, compactly (a
/// front-coded [`Table`] in the order found, and the order by path), and what was left out.
#[derive(Debug, Default)]
pub struct Listing {
    table: Table,
    /// Record numbers in path order.
    order: Vec<u32>,
    /// What was left out and why.
    pub skipped: Vec<Skipped>,
}

const DIR: u8 = 0;
const LINK: u8 = 1;
const FILE: u8 = 2;

fn encode_item(item: &Item, out: &mut Vec<u8>) {
    match item {
        Item::Dir => out.push(DIR),
        Item::Link(t) => {
            out.push(LINK);
            put_varint(out, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Item::File(size, id) => {
            out.push(FILE + u8::from(id.born_ns.is_some()));
            put_varint(out, *size);
            put_varint(out, id.ino);
            if let Some(b) = id.born_ns {
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
    }
}

fn decode_item(bytes: &[u8]) -> Item {
    let mut c = Cursor::new(bytes);
    match c.byte() {
        DIR => Item::Dir,
        LINK => Item::Link(String::from_utf8(c.bytes().to_vec()).expect("written from a String")),
        tag => {
            let size = c.varint();
            let ino = c.varint();
            let born_ns =
                (tag > FILE).then(|| i64::from_le_bytes(c.take(8).try_into().expect("8 bytes")));
            Item::File(size, FileId { ino, born_ns })
        }
    }
}

impl Listing {
    pub(crate) fn push(&mut self, path: &RelPath, item: &Item) -> Result<()> {
        let mut b = Vec::with_capacity(24);
        encode_item(item, &mut b);
        self.table.push(path.as_bytes(), &b).map_err(|_| {
            Error::from(Refusal::TooLarge(
                "the data directory's listing is too large",
            ))
        })
    }

    /// Sorts by path (the walk finds paths almost in order: the sort is about linear).
    pub(crate) fn sort(&mut self) {
        let n = u32::try_from(self.table.len()).expect("a table holds fewer records");
        self.order = (0..n).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let t = &self.table;
        self.order.sort_by(|&x, &y| {
            t.get(x as usize, &mut a);
            t.get(y as usize, &mut b);
            a.cmp(&b)
        });
        self.table.shrink_to_fit();
    }

    /// Paths listed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing was listed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The `i`-th path in path order and what it is.
    pub fn get(&self, i: usize) -> (RelPath, Item) {
        let mut p = Vec::new();
        let d = self.table.get(self.order[i] as usize, &mut p);
        (rel_path(&p), decode_item(d))
    }

    /// Every path in path order and what it is.
    pub fn iter(&self) -> impl Iterator<Item = (RelPath, Item)> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + 4 * self.order.capacity()
    }
}

/// Whether a file name is excluded wherever it appears (`RELCACHE_INIT_FILENAME` is a prefix
/// match in basebackup.c; `pgsql_tmp` is `PG_TEMP_FILE_PREFIX`).
fn excluded_anywhere(name: &[u8]) -> bool {
    name.starts_with(b"pg_internal.init") || name.starts_with(b"pgsql_tmp")
}

struct Walker<'a> {
    tablespace_dir: &'a str,
    out: Listing,
}

/// Lists what a backup of `root` holds. `tablespace_dir` is this cluster's
/// `PG_<major>_<catversion>`. Files that vanish while listed are left out (a dropped relation;
/// WAL replay of the backup removes it anyway).
pub fn walk(root: &Path, tablespace_dir: &str) -> Result<Listing> {
    let mut w = Walker {
        tablespace_dir,
        out: Listing::default(),
    };
    w.dir(root, None)?;
    w.out.sort();
    Ok(w.out)
}

fn rel_join(rel: Option<&RelPath>, name: &[u8]) -> Result<RelPath> {
    match rel {
        None => RelPath::from_bytes(name),
        Some(r) => r.join(name),
    }
    .map_err(|e| Error::from(Refusal::BadName(e.to_string())))
}

impl Walker<'_> {
    fn skip(&mut self, path: RelPath, reason: String) {
        self.out.skipped.push(Skipped { path, reason });
    }

    fn dir(&mut self, dir: &Path, rel: Option<&RelPath>) -> Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && rel.is_some() => return Ok(()),
            Err(e) if rel.is_some() => {
                let r = rel.expect("checked").clone();
                self.skip(r, format!("could not read directory: {e}"));
                return Ok(());
            }
            Err(e) => return Err(Error::io(dir, "read directory", e)),
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(dir, "read directory", e))?;
            names.push(e.file_name().as_bytes().to_vec());
        }
        names.sort();
        let rel_s = rel.and_then(|r| r.as_str()).unwrap_or("");
        let top = rel.is_none();
        let is_db_dir = rel_s == "global"
            || (rel_s.starts_with("base/") && rel_s.matches('/').count() == 1)
            || (rel_s.starts_with("pg_tblspc/") && rel_s.matches('/').count() == 3);
        let unlogged: HashSet<u32> = if is_db_dir {
            names
                .iter()
                .filter_map(|n| std::str::from_utf8(n).ok())
                .filter_map(parse_rel_filename)
                .filter(|(_, fork, _)| *fork == ForkNumber::Init)
                .map(|(num, _, _)| num.0)
                .collect()
        } else {
            HashSet::new()
        };
        for name in names {
            let text = std::str::from_utf8(&name).ok();
            if excluded_anywhere(&name)
                || (top && text.is_some_and(|t| EXCLUDED_TOP_FILES.contains(&t)))
                || (rel_s == "global" && text.is_some_and(|t| EXCLUDED_GLOBAL_FILES.contains(&t)))
            {
                continue;
            }
            if is_db_dir && let Some(t) = text {
                if is_temp_rel_filename(t) {
                    continue;
                }
                if let Some((num, fork, _)) = parse_rel_filename(t)
                    && fork != ForkNumber::Init
                    && unlogged.contains(&num.0)
                {
                    continue;
                }
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let relp = rel_join(rel, &name)?;
            self.entry(&path, relp, top, rel_s)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, relp: RelPath, top: bool, parent: &str) -> Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.skip(relp, format!("could not stat: {e}"));
                return Ok(());
            }
        };
        let ft = meta.file_type();
        let name = relp.as_str().unwrap_or("");
        if top && EXCLUDED_DIR_CONTENTS.contains(&name) {
            // Kept as an empty directory whatever it is (basebackup.c: convert_link_to_directory).
            if ft.is_dir() || ft.is_symlink() {
                self.out.push(&relp, &Item::Dir)?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| Error::io(path, "read link", e))?;
            if parent == "pg_tblspc" {
                return self.tablespace(path, relp, &target);
            }
            self.skip(
                relp,
                format!(
                    "symbolic link to \"{}\" not followed (only tablespace links are, as in pg_basebackup); recreate it after a restore if it is needed",
                    target.display()
                ),
            );
            return Ok(());
        }
        if ft.is_dir() {
            self.out.push(&relp, &Item::Dir)?;
            return self.dir(path, Some(&relp));
        }
        if ft.is_file() {
            self.out
                .push(&relp, &Item::File(meta.len(), FileId::of(&meta)))?;
            return Ok(());
        }
        self.skip(relp, "not a regular file, directory or link".into());
        Ok(())
    }

    /// A tablespace link: recorded, and only this major's directory inside it followed. A link
    /// whose name is not an OID or that has no such directory is not a tablespace of this
    /// cluster: reported, not followed.
    fn tablespace(&mut self, path: &Path, relp: RelPath, target: &Path) -> Result<()> {
        let oid_name = relp
            .as_str()
            .and_then(|p| p.strip_prefix("pg_tblspc/"))
            .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
        let version_dir = path.join(self.tablespace_dir);
        let is_ours = std::fs::symlink_metadata(&version_dir).is_ok_and(|m| m.is_dir());
        if !oid_name || !is_ours {
            let why = if oid_name {
                format!("it has no {} directory", self.tablespace_dir)
            } else {
                "its name is not a tablespace OID".to_string()
            };
            self.skip(
                relp,
                format!(
                    "link to \"{}\" in pg_tblspc is not a tablespace of this cluster ({why}); not followed",
                    target.display()
                ),
            );
            return Ok(());
        }
        let t = target
            .to_str()
            .filter(|t| t.starts_with('/'))
            .ok_or_else(|| {
                Error::from(Refusal::TablespaceTarget {
                    link: path.display().to_string(),
                    target: target.display().to_string(),
                })
            })?;
        self.out.push(&relp, &Item::Link(t.to_string()))?;
        let sub = rel_join(Some(&relp), self.tablespace_dir.as_bytes())?;
        self.entry(&version_dir, sub, false, "")
    }
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
            "pg_ptrack",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "standby.signal",
            "base/5/100",
            "base/5/100_fsm",
            "base/5/200",
            "base/5/200_init",
            "base/5/200_vm",
            "base/5/t3_300",
            "base/5/pg_internal.init",
            "base/5/pg_internal.init.123",
            "global/pg_control",
            "global/ptrack.map",
            "global/ptrack.map.tmp",
            "global/1262",
            "pg_ptrack/ptrack.map",
            "pg_wal/000000010000000000000001",
            "pg_stat_tmp/x",
        ] {
            std::fs::write(r.join(f), b"12").unwrap();
        }
        let ts = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ts.path().join("PG_18_1/5")).unwrap();
        std::fs::create_dir_all(ts.path().join("PG_17_9/5")).unwrap();
        std::fs::write(ts.path().join("PG_18_1/5/400"), b"x").unwrap();
        std::os::unix::fs::symlink(ts.path(), r.join("pg_tblspc/16400")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("pg_tblspc/99999")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc_link")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
        let l = walk(r, "PG_18_1").unwrap();
        let got: Vec<String> = l.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/100",
                "base/5/100_fsm",
                "base/5/200_init",
                "caf\\xe9",
                "global",
                "global/1262",
                "pg_ptrack",
                "pg_stat_tmp",
                "pg_tblspc",
                "pg_tblspc/16400",
                "pg_tblspc/16400/PG_18_1",
                "pg_tblspc/16400/PG_18_1/5",
                "pg_tblspc/16400/PG_18_1/5/400",
                "pg_wal",
            ]
        );
        let skipped: Vec<String> = l.skipped.iter().map(|s| s.path.to_string()).collect();
        assert!(skipped.contains(&"etc_link".to_string()), "{skipped:?}");
        assert!(skipped.contains(&"loop".to_string()), "{skipped:?}");
        assert!(
            skipped.contains(&"pg_tblspc/99999".to_string()),
            "{skipped:?}"
        );
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(l.len(), got.len());
        let item = |p: &str| l.iter().find(|(r, _)| r.to_string() == p).unwrap().1;
        assert!(matches!(item("PG_VERSION"), Item::File(2, _)));
        assert_eq!(item("base/5"), Item::Dir);
        assert_eq!(
            item("pg_tblspc/16400"),
            Item::Link(ts.path().to_str().unwrap().to_string())
        );
        let meta = std::fs::metadata(r.join("base/5/100")).unwrap();
        assert_eq!(item("base/5/100"), Item::File(2, FileId::of(&meta)));
    }
}
