//! Relation file identity from a PGDATA-relative path.
//!
//! Mirrors `src/common/relpath.c: GetRelationPath` and the strict file-name parse of
//! `parse_filename_for_nontemp_relation` / `looks_like_temp_rel_name` (spec §7.1):
//!
//! * `global/<relfilenode>[_fork][.N]` — shared catalogs (tablespace 1664, database 0);
//! * `base/<dboid>/<relfilenode>[_fork][.N]` — the default tablespace (1663);
//! * `pg_tblspc/<spcoid>/PG_<major>_<catver>/<dboid>/<relfilenode>[_fork][.N]` — other tablespaces.
//!
//! A file number starts with a digit 1–9 and fits in `u32`; forks are `_fsm`, `_vm`, `_init`
//! (`_main` never appears on disk); a segment suffix `.N` has no leading zero. Temporary relation
//! files (`t<procnumber>_<relfilenode>…`) are recognised and kept apart: they are never scanned nor
//! backed up.

use std::fmt;

use ptrack_types::{
    DEFAULT_TABLESPACE_OID, ForkNumber, GLOBAL_TABLESPACE_OID, Oid, RelFileLocator, RelFileNumber,
};
use serde::Serialize;

/// One segment file of one fork of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RelFileSegment {
    /// Which relation.
    pub locator: RelFileLocator,
    /// Which fork.
    pub fork: ForkNumber,
    /// Segment number: 0 for the file without suffix, N for `.N`.
    pub segno: u32,
}

/// What a PGDATA-relative path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// A segment of a permanent or unlogged relation.
    Relation(RelFileSegment),
    /// A temporary relation's file (`t<procnumber>_…`): excluded from scans and backups.
    TempRelation,
    /// Anything else.
    Other,
}

/// Parses a decimal OID/file number with PostgreSQL's rules: first digit 1–9, fits in `u32`.
fn parse_oid(s: &str) -> Option<u32> {
    let first = *s.as_bytes().first()?;
    if !(b'1'..=b'9').contains(&first) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a relation file name (`16384`, `16384_fsm`, `16384.2`, `16384_vm.1`) into file number,
/// fork and segment.
pub fn parse_rel_filename(name: &str) -> Option<(RelFileNumber, ForkNumber, u32)> {
    let (stem, segno) = match name.split_once('.') {
        Some((stem, seg)) => (stem, parse_oid(seg)?),
        None => (name, 0),
    };
    let (num, fork) = match stem.split_once('_') {
        Some((num, fork)) => {
            let fork = match fork {
                "fsm" => ForkNumber::Fsm,
                "vm" => ForkNumber::VisibilityMap,
                "init" => ForkNumber::Init,
                _ => return None,
            };
            (num, fork)
        }
        None => (stem, ForkNumber::Main),
    };
    Some((RelFileNumber(parse_oid(num)?), fork, segno))
}

/// `looks_like_temp_rel_name`: `t<digits>_<relation file name>`.
pub fn is_temp_rel_filename(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((proc, file)) = rest.split_once('_') else {
        return false;
    };
    !proc.is_empty()
        && proc.bytes().all(|b| b.is_ascii_digit())
        && parse_rel_filename(file).is_some()
}

/// Whether `name` is a per-version tablespace directory `PG_<major>_<catver>`.
pub fn is_tablespace_version_dir(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("PG_") else {
        return false;
    };
    let Some((major, catver)) = rest.split_once('_') else {
        return false;
    };
    [major, catver]
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Classifies a PGDATA-relative path with `/` separators.
pub fn classify_path(rel: &str) -> PathKind {
    let parts: Vec<&str> = rel.split('/').collect();
    let (spc, db, file) = match parts.as_slice() {
        ["global", file] => (GLOBAL_TABLESPACE_OID, Oid(0), *file),
        ["base", db, file] => match parse_oid(db) {
            Some(db) => (DEFAULT_TABLESPACE_OID, Oid(db), *file),
            None => return PathKind::Other,
        },
        ["pg_tblspc", spc, ver, db, file] if is_tablespace_version_dir(ver) => {
            match (parse_oid(spc), parse_oid(db)) {
                (Some(spc), Some(db)) => (Oid(spc), Oid(db), *file),
                _ => return PathKind::Other,
            }
        }
        _ => return PathKind::Other,
    };
    if db.0 != 0 && is_temp_rel_filename(file) {
        return PathKind::TempRelation;
    }
    match parse_rel_filename(file) {
        Some((rel_number, fork, segno)) => PathKind::Relation(RelFileSegment {
            locator: RelFileLocator {
                spc_oid: spc,
                db_oid: db,
                rel_number,
            },
            fork,
            segno,
        }),
        None => PathKind::Other,
    }
}

impl RelFileSegment {
    /// The PGDATA-relative path of this segment (`GetRelationPath` plus the segment suffix);
    /// `ts_version_dir` is the `PG_<major>_<catver>` directory used for non-default tablespaces.
    pub fn path(&self, ts_version_dir: &str) -> String {
        let l = &self.locator;
        let mut p = if l.spc_oid == GLOBAL_TABLESPACE_OID {
            format!("global/{}", l.rel_number)
        } else if l.spc_oid == DEFAULT_TABLESPACE_OID {
            format!("base/{}/{}", l.db_oid, l.rel_number)
        } else {
            format!(
                "pg_tblspc/{}/{}/{}/{}",
                l.spc_oid, ts_version_dir, l.db_oid, l.rel_number
            )
        };
        p.push_str(self.fork.file_suffix());
        if self.segno != 0 {
            p.push_str(&format!(".{}", self.segno));
        }
        p
    }
}

impl fmt::Display for RelFileSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} fork segment {}",
            self.locator, self.fork, self.segno
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(path: &str) -> RelFileSegment {
        match classify_path(path) {
            PathKind::Relation(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_location_fork_and_segment() {
        let r = rel("global/1262");
        assert_eq!(r.locator.spc_oid, GLOBAL_TABLESPACE_OID);
        assert_eq!(
            (r.locator.db_oid, r.fork, r.segno),
            (Oid(0), ForkNumber::Main, 0)
        );

        let r = rel("base/16384/16385_fsm.1");
        assert_eq!(r.locator.to_string(), "1663/16384/16385");
        assert_eq!((r.fork, r.segno), (ForkNumber::Fsm, 1));

        let r = rel("pg_tblspc/16390/PG_15_202209061/5/16391_vm");
        assert_eq!(r.locator.to_string(), "16390/5/16391");
        assert_eq!(r.fork, ForkNumber::VisibilityMap);
        assert_eq!(
            r.path("PG_15_202209061"),
            "pg_tblspc/16390/PG_15_202209061/5/16391_vm"
        );

        let r = rel("base/1/2619_init.12");
        assert_eq!((r.fork, r.segno), (ForkNumber::Init, 12));
        for p in ["global/1262", "base/16384/16385_fsm.1", "base/5/3_vm.7"] {
            assert_eq!(rel(p).path("x"), p);
        }
    }

    #[test]
    fn temp_files_are_recognised() {
        assert_eq!(classify_path("base/5/t3_16384"), PathKind::TempRelation);
        assert_eq!(
            classify_path("base/5/t12_16384_fsm.1"),
            PathKind::TempRelation
        );
        assert_eq!(
            classify_path("pg_tblspc/16390/PG_18_202506291/5/t3_16384"),
            PathKind::TempRelation
        );
        assert_eq!(classify_path("base/5/t_16384"), PathKind::Other);
    }

    #[test]
    fn non_relation_names_are_rejected() {
        for p in [
            "global/pg_control",
            "global/pg_filenode.map",
            "base/5/PG_VERSION",
            "base/5/pg_internal.init",
            "base/5/016384",
            "base/5/16384_main",
            "base/5/16384.0",
            "base/5/16384.01",
            "base/5/16384.",
            "base/5/16384_fsm_vm",
            "base/5/4294967296",
            "base/05/16384",
            "base/pgsql_tmp/16384",
            "pg_tblspc/16390/16384",
            "pg_tblspc/16390/PG_15/5/16384",
            "pg_wal/000000010000000000000001",
            "base/5/16384/1",
            "",
        ] {
            assert_eq!(classify_path(p), PathKind::Other, "{p}");
        }
        assert_eq!(
            rel("base/5/4294967295").locator.rel_number,
            RelFileNumber(u32::MAX)
        );
    }
}
