//! `ptrack_get_pagemapset`: which blocks of which segment files changed since a start LSN.
//! Mirrors ptrack's `ptrack.c: ptrack_gather_filelist, ptrack_filelist_getnext,
//! ptrack_get_pagemapset` and `datapagemap.c: datapagemap_add` (spec ptrack.md §1.4), with the
//! walk of [`ptrack_page::datadir`] (which also lists in-place tablespaces, bug §6.2 #13).
//!
//! With change sets covering the range ([`crate::changelog`]), a file's blocks are listed from
//! them, exact and without probing. Otherwise: [`Strategy::Full`] is the original's algorithm: hash and probe every block of every file.
//! [`Strategy::Skip`] first probes a file's segment-level summary key (before even `stat`-ing it)
//! and each 1024-block chunk's key, and only hashes the blocks of chunks that may have changed.
//!
//! Two kinds of file are reported whole because WAL does not describe their changes (over-reporting
//! is safe, missing a change is not): every fork of an unlogged relation (one with an `_init`
//! fork), and, when free-space-map changes are not WAL-logged (no data checksums and no
//! `wal_log_hints`, or a standby), every FSM fork whose file was modified since the start LSN
//! was reached ([`FsmRule`], bounds from [`crate::clock`]); FSM pages implied by heap records
//! are in the map either way.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use ptrack_page::relpath::{PathKind, RelFileSegment, classify_path};
use ptrack_types::{BlockNumber, ForkNumber, Lsn};

use crate::changelog::Changes;
use crate::map::{CHUNK_SHIFT, Map, block_key, chunk_key, segment_key};

/// How to decide which blocks to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Skip files and chunks whose summary keys show no change (the default).
    Skip,
    /// Probe every block of every file (the original ptrack's scan; for comparison).
    Full,
}

/// What the scan needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// The data directory.
    pub root: PathBuf,
    /// `PG_<major>_<catver>`.
    pub ts_version_dir: String,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// `RELSEG_SIZE` in blocks.
    pub relseg_blocks: u32,
    /// Which scan.
    pub strategy: Strategy,
    /// How free-space-map changes are found.
    pub fsm: FsmRule,
}

/// How free-space-map changes are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsmRule {
    /// They are WAL-logged (data checksums or `wal_log_hints`, on a primary): the map has them.
    Logged,
    /// They are not: an FSM fork whose file was modified at or after this time (nanoseconds
    /// since the Unix epoch) is reported whole; with `None` (no bound known) every FSM fork is.
    ModifiedSince(Option<u64>),
}

impl FsmRule {
    /// Whether an FSM file with modification time `mtime_ns` is reported whole.
    pub fn whole(self, mtime_ns: u64) -> bool {
        match self {
            FsmRule::Logged => false,
            FsmRule::ModifiedSince(None) => true,
            FsmRule::ModifiedSince(Some(t)) => mtime_ns >= t,
        }
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// PGDATA-relative path of the segment file.
    pub path: String,
    /// Number of changed blocks.
    pub pagecount: u64,
    /// Bitmap of segment-relative block numbers, least significant bit first.
    pub pagemap: Vec<u8>,
}

/// Work done, for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Relation segment files found.
    pub files: u64,
    /// Files skipped by their segment key.
    pub files_skipped: u64,
    /// Chunks skipped by their chunk key.
    pub chunks_skipped: u64,
    /// Blocks whose own key was probed.
    pub blocks_probed: u64,
    /// FSM forks reported whole because they were modified since the start (or no bound was
    /// known).
    pub fsm_whole: u64,
    /// Blocks taken from change sets (no probing).
    pub blocks_listed: u64,
}

/// A directory or file that could not be read: the scan refuses rather than omit its changes.
#[derive(Debug, thiserror::Error)]
#[error("ptrack: could not read \"{path}\": {source}")]
pub struct ScanError {
    /// Absolute path.
    pub path: String,
    /// Cause.
    pub source: io::Error,
}

/// A datapagemap: bit `b` is byte `b >> 3`, value `1 << (b & 7)`; it grows like pg_rewind's
/// (`offset + 1 + 10` bytes when a bit falls outside).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageMap {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Set bits.
    pub count: u64,
}

impl PageMap {
    /// Sets bit `b` (blocks are added in ascending order).
    pub fn add(&mut self, b: u32) {
        let offset = (b / 8) as usize;
        if offset >= self.bytes.len() {
            // The original's growth (`datapagemap_add`), so the column's bytes are the same.
            self.bytes.resize(offset + 1 + 10, 0);
        }
        if ptrack_page::datapagemap::set(&mut self.bytes, b) {
            self.count += 1;
        }
    }

    /// The set bits, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        ptrack_page::datapagemap::blocks(&self.bytes)
    }
}

/// PGDATA-relative directories that can hold relation files ([`ptrack_page::datadir::relation_dirs`]);
/// any directory that cannot be read is an error: the scan refuses rather than omit its changes.
pub fn relation_dirs(root: &Path, ts_version_dir: &str) -> Result<Vec<String>, ScanError> {
    let (dirs, errors) = ptrack_page::datadir::relation_dirs(root, ts_version_dir);
    match errors.into_iter().next() {
        Some(e) => Err(ScanError {
            path: root.join(&e.path).display().to_string(),
            source: io::Error::other(e.message),
        }),
        None => Ok(dirs),
    }
}

/// The relation segment files of one directory, with the relation numbers that have an
/// `_init` fork (unlogged relations).
pub fn relation_files_in(
    root: &Path,
    dir: &str,
) -> Result<Vec<(String, RelFileSegment)>, ScanError> {
    let names = match ptrack_page::datadir::read_dir_names(root, dir) {
        Ok(n) => n,
        // A database or tablespace dropped while we walk: nothing of it to back up.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Vec::new()
        }
        Err(source) => {
            return Err(ScanError {
                path: root.join(dir).display().to_string(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for name in names {
        let rel = format!("{dir}/{name}");
        if let PathKind::Relation(seg) = classify_path(&rel) {
            out.push((rel, seg));
        }
    }
    Ok(out)
}

/// Blocks and modification time (ns since the Unix epoch) of a regular file; `None` when it is
/// gone or not a regular file.
fn file_stat(path: &Path, blcksz: u32) -> Result<Option<(u32, u64)>, ScanError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            let mtime = (m.mtime().max(0) as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec().max(0) as u64);
            Ok(Some(((m.len() / u64::from(blcksz)) as u32, mtime)))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ScanError {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Every segment file with at least one block changed since `start`, sorted by path.
pub fn pagemapset(
    map: &Map<'_>,
    start: Lsn,
    cfg: &ScanConfig,
) -> Result<(Vec<Row>, ScanStats), ScanError> {
    pagemapset_with(map, start, cfg, None)
}

/// [`pagemapset`]; with `changes`, the change sets that cover everything since `start`
/// ([`crate::changelog`]), a file's blocks come from them instead of from probing the map.
pub fn pagemapset_with(
    map: &Map<'_>,
    start: Lsn,
    cfg: &ScanConfig,
    changes: Option<&Changes>,
) -> Result<(Vec<Row>, ScanStats), ScanError> {
    let mut rows = Vec::new();
    let mut stats = ScanStats::default();
    let chunk = 1u32 << CHUNK_SHIFT;
    for dir in relation_dirs(&cfg.root, &cfg.ts_version_dir)? {
        let files = relation_files_in(&cfg.root, &dir)?;
        let unlogged: HashSet<_> = files
            .iter()
            .filter(|(_, s)| s.fork == ForkNumber::Init)
            .map(|(_, s)| s.locator.rel_number)
            .collect();
        for (path, seg) in files {
            stats.files += 1;
            let fsm_stat = match (seg.fork, cfg.fsm) {
                (ForkNumber::Fsm, FsmRule::ModifiedSince(_)) => {
                    file_stat(&cfg.root.join(&path), cfg.blcksz)?
                }
                _ => None,
            };
            let fsm_whole = fsm_stat.is_some_and(|(_, mtime)| cfg.fsm.whole(mtime));
            stats.fsm_whole += u64::from(fsm_whole);
            let whole = unlogged.contains(&seg.locator.rel_number) || fsm_whole;
            let first = seg.segno.saturating_mul(cfg.relseg_blocks);
            let base = block_key(seg.locator, seg.fork, BlockNumber(first));
            let listed = changes.is_some_and(|u| !u.has(&(seg.locator, seg.fork)));
            if !whole
                && (listed
                    || (changes.is_none()
                        && cfg.strategy == Strategy::Skip
                        && !map.key_changed(segment_key(base, seg.segno), start)))
            {
                stats.files_skipped += 1;
                continue;
            }
            let stat = match fsm_stat {
                Some(st) => Some(st),
                None => file_stat(&cfg.root.join(&path), cfg.blcksz)?,
            };
            let Some((nblocks, _)) = stat else {
                continue;
            };
            let mut pm = PageMap::default();
            if whole {
                (0..nblocks).for_each(|b| pm.add(b));
            } else if let Some(u) = changes {
                let key = (seg.locator, seg.fork);
                let end = first.saturating_add(nblocks);
                if let Some(bm) = u.exact.get(&key) {
                    for b in bm.range(first..end) {
                        stats.blocks_listed += 1;
                        pm.add(b - first);
                    }
                }
                if let Some(bm) = u.probe.get(&key) {
                    for b in bm.range(first..end) {
                        stats.blocks_probed += 1;
                        if map.key_changed(block_key(seg.locator, seg.fork, BlockNumber(b)), start)
                        {
                            pm.add(b - first);
                        }
                    }
                }
            } else {
                let mut b = 0u32;
                while b < nblocks {
                    let abs = first + b;
                    let chunk_end = (b + chunk - abs % chunk).min(nblocks);
                    if cfg.strategy == Strategy::Skip {
                        let ck = chunk_key(block_key(seg.locator, seg.fork, BlockNumber(abs)));
                        if !map.key_changed(ck, start) {
                            stats.chunks_skipped += 1;
                            b = chunk_end;
                            continue;
                        }
                    }
                    for rb in b..chunk_end {
                        stats.blocks_probed += 1;
                        let k = block_key(seg.locator, seg.fork, BlockNumber(first + rb));
                        if map.key_changed(k, start) {
                            pm.add(rb);
                        }
                    }
                    b = chunk_end;
                }
            }
            if pm.count > 0 {
                rows.push(Row {
                    path,
                    pagecount: pm.count,
                    pagemap: pm.bytes,
                });
            }
        }
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((rows, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MapIdentity, MapLayout};
    use ptrack_types::{Oid, RelFileLocator, RelFileNumber};

    #[test]
    fn pagemap_layout_matches_datapagemap() {
        // README example: blocks 12, 40, 42 -> \x001000000005000000000000.
        let mut pm = PageMap::default();
        for b in [12, 40, 42] {
            pm.add(b);
        }
        assert_eq!(
            pm.bytes,
            [0x00, 0x10, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0],
            "{:02x?}",
            pm.bytes
        );
        assert_eq!(pm.count, 3);
        assert_eq!(pm.iter().collect::<Vec<_>>(), [12, 40, 42]);
        let mut one = PageMap::default();
        one.add(0);
        assert_eq!(one.bytes[0], 0x01);
        let mut seven = PageMap::default();
        seven.add(7);
        assert_eq!(seven.bytes[0], 0x80);
    }

    fn write_file(root: &Path, rel: &str, blocks: u32) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![0u8; blocks as usize * 8192]).unwrap();
    }

    /// Both strategies report exactly the marked blocks (no collisions in a map this large for
    /// a handful of keys), including blocks of a second segment and unlogged relations whole.
    #[test]
    fn strategies_agree_on_a_small_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let relseg = 4096u32;
        write_file(root, "base/5/16385", relseg);
        write_file(root, "base/5/16385.1", 3000);
        write_file(root, "base/5/16390", 10);
        write_file(root, "base/5/16390_init", 1);
        write_file(root, "global/1262", 2);
        write_file(root, "pg_tblspc/16400/PG_18_202506291/5/16401_vm", 5);
        std::fs::write(root.join("base/5/PG_VERSION"), "18").unwrap();
        let layout = MapLayout::for_size_mb(8).unwrap();
        let words = Map::alloc(layout);
        let map = Map::new(&words);
        map.reset(MapIdentity {
            system_identifier: 1,
            major: 18,
            data_checksum_version: 1,
        });
        let loc = |spc, rel| RelFileLocator {
            spc_oid: Oid(spc),
            db_oid: Oid(5),
            rel_number: RelFileNumber(rel),
        };
        let marks = [
            (loc(1663, 16385), ForkNumber::Main, 5u32, 100u64),
            (loc(1663, 16385), ForkNumber::Main, relseg + 2999, 300),
            (loc(1663, 16385), ForkNumber::Main, 2047, 50),
            (loc(16400, 16401), ForkNumber::VisibilityMap, 4, 400),
        ];
        for (l, f, b, lsn) in marks {
            map.mark(l, f, BlockNumber(b), Lsn(lsn), relseg);
        }
        for strategy in [Strategy::Skip, Strategy::Full] {
            let cfg = ScanConfig {
                root: root.to_path_buf(),
                ts_version_dir: "PG_18_202506291".into(),
                blcksz: 8192,
                relseg_blocks: relseg,
                strategy,
                fsm: FsmRule::Logged,
            };
            let (rows, stats) = pagemapset(&map, Lsn(100), &cfg).unwrap();
            let got: Vec<(String, Vec<u32>)> = rows
                .iter()
                .map(|r| {
                    let pm = PageMap {
                        bytes: r.pagemap.clone(),
                        count: r.pagecount,
                    };
                    (r.path.clone(), pm.iter().collect())
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    ("base/5/16385".to_string(), vec![5]),
                    ("base/5/16385.1".to_string(), vec![2999]),
                    ("base/5/16390".to_string(), (0..10).collect()),
                    ("base/5/16390_init".to_string(), vec![0]),
                    (
                        "pg_tblspc/16400/PG_18_202506291/5/16401_vm".to_string(),
                        vec![4]
                    ),
                ],
                "{strategy:?}"
            );
            // The same rows from change sets holding the marks since the start.
            // Exact blocks from sets after the start; blocks of the set before it are probed
            // (the mark at 50 is not reported).
            let mut u = Changes::default();
            for (l, f, b, lsn) in marks {
                let part = if lsn >= 300 {
                    &mut u.exact
                } else {
                    &mut u.probe
                };
                part.entry((l, f)).or_default().insert(b);
            }
            let (rows2, stats2) = pagemapset_with(&map, Lsn(100), &cfg, Some(&u)).unwrap();
            assert_eq!(rows2, rows);
            assert_eq!((stats2.blocks_probed, stats2.blocks_listed), (2, 2));
            if strategy == Strategy::Skip {
                assert!(
                    stats.files_skipped >= 1 && stats.chunks_skipped >= 2,
                    "{stats:?}"
                );
                assert!(stats.blocks_probed < u64::from(relseg), "{stats:?}");
            } else {
                assert_eq!(stats.blocks_probed, u64::from(relseg) + 3000 + 2 + 5);
            }
        }
    }

    /// Without WAL-logged FSM changes, an FSM fork is whole when modified since the bound, and
    /// only its marked pages (those implied by heap records) otherwise; every FSM fork is whole
    /// when no bound is known; with logged FSM changes, only marks count.
    #[test]
    fn fsm_forks_by_modification_time() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_file(root, "base/5/16385_fsm", 3);
        write_file(root, "base/5/16386_fsm", 3);
        write_file(root, "base/5/16387", 1);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let set_mtime = |rel: &str, t: SystemTime| {
            let f = std::fs::File::options()
                .write(true)
                .open(root.join(rel))
                .unwrap();
            f.set_modified(t).unwrap();
        };
        set_mtime("base/5/16385_fsm", t0);
        set_mtime("base/5/16386_fsm", t0 + Duration::from_secs(10));
        let layout = MapLayout::for_size_mb(8).unwrap();
        let words = Map::alloc(layout);
        let map = Map::new(&words);
        map.reset(MapIdentity {
            system_identifier: 1,
            major: 18,
            data_checksum_version: 0,
        });
        let loc = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(16385),
        };
        map.mark(loc, ForkNumber::Fsm, BlockNumber(2), Lsn(200), 131072);
        let ns =
            |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let run = |fsm| {
            let cfg = ScanConfig {
                root: root.to_path_buf(),
                ts_version_dir: "PG_18_202506291".into(),
                blcksz: 8192,
                relseg_blocks: 131072,
                strategy: Strategy::Skip,
                fsm,
            };
            let (rows, stats) = pagemapset(&map, Lsn(100), &cfg).unwrap();
            let rows: Vec<(String, u64)> =
                rows.into_iter().map(|r| (r.path, r.pagecount)).collect();
            (rows, stats.fsm_whole)
        };
        let bound = ns(t0 + Duration::from_secs(5));
        assert_eq!(
            run(FsmRule::ModifiedSince(Some(bound))),
            (
                vec![
                    ("base/5/16385_fsm".into(), 1),
                    ("base/5/16386_fsm".into(), 3)
                ],
                1
            )
        );
        // A file modified exactly at the bound counts as modified.
        assert_eq!(run(FsmRule::ModifiedSince(Some(ns(t0)))).1, 2);
        assert_eq!(
            run(FsmRule::ModifiedSince(None)),
            (
                vec![
                    ("base/5/16385_fsm".into(), 3),
                    ("base/5/16386_fsm".into(), 3)
                ],
                2
            )
        );
        assert_eq!(
            run(FsmRule::Logged),
            (vec![("base/5/16385_fsm".into(), 1)], 0)
        );
    }
}
