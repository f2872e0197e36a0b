//! Helpers for the extension's integration tests (`tests/ext/`): clusters with ptrack
//! preloaded, where their map file is and when the tracker has saved it or caught up, the
//! pagemapset as a map of path to block list, and block-level snapshots of every relation file
//! (the oracle of the no-false-negative test).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ptrack_page::datadir::DataDir;
use ptrack_testkit::{ClusterConfig, PgCluster, PgInstall};
use ptrack_types::Lsn;

/// A cluster with `shared_preload_libraries = 'ptrack'` and `ptrack.map_size = map_mb`, the map
/// at the default location, not started.
pub fn ptrack_cluster(install: &PgInstall, map_mb: u32, checksums: bool) -> PgCluster {
    ptrack_cluster_at(install, map_mb, checksums, Location::PgPtrack)
}

/// Like [`ptrack_cluster`] with `ptrack.map_location = location`.
pub fn ptrack_cluster_at(
    install: &PgInstall,
    map_mb: u32,
    checksums: bool,
    location: Location,
) -> PgCluster {
    let cfg = ClusterConfig::new(checksums)
        .set("shared_preload_libraries", "ptrack")
        .set("ptrack.map_size", &format!("{map_mb}MB"))
        .set("ptrack.map_location", location.setting());
    PgCluster::init_with(install, &cfg)
}

/// The values of `ptrack.map_location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `pg_ptrack/ptrack.map` (the default).
    PgPtrack,
    /// `global/ptrack.map` (the original's).
    Global,
}

impl Location {
    /// The location a test on `major` uses: the original's `global/` on 13 and 15, our
    /// `pg_ptrack/` on the others, so both are exercised on old and new majors.
    pub fn for_major(major: u32) -> Location {
        if major == 13 || major == 15 {
            Location::Global
        } else {
            Location::PgPtrack
        }
    }

    /// The setting's value, which is also the directory's name.
    pub fn setting(self) -> &'static str {
        match self {
            Location::PgPtrack => "pg_ptrack",
            Location::Global => "global",
        }
    }

    /// The other location.
    pub fn other(self) -> Location {
        match self {
            Location::PgPtrack => Location::Global,
            Location::Global => Location::PgPtrack,
        }
    }

    /// The directory of the map file in `c`'s data directory.
    pub fn dir(self, c: &PgCluster) -> PathBuf {
        c.datadir().join(self.setting())
    }

    /// The map file in `c`'s data directory.
    pub fn map(self, c: &PgCluster) -> PathBuf {
        self.dir(c).join("ptrack.map")
    }
}

/// Header fields of a saved map file (docs/formats.md, map file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedMap {
    /// Format version (word 1).
    pub version: u64,
    /// `init_lsn` (word 3).
    pub init_lsn: Lsn,
    /// The tracker's saved position (word 4).
    pub tracked: Lsn,
    /// `data_checksum_version` (word 8, format 2).
    pub data_checksum_version: u64,
}

/// Reads the saved map header at `path`: the map file's, or that of the newest delta of its
/// chain (`ptrack.map.delta.1`, `.2`, ... of the file's generation) when there are any; `None`
/// when there is no map file (yet). The tracker replaces each file by a rename, so a reader sees
/// whole files.
pub fn read_saved_map(path: &std::path::Path) -> Option<SavedMap> {
    let mut head = [0u8; 128];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    let generation = u64::from_le_bytes(head[72..80].try_into().ok()?);
    let dir = path.parent()?;
    for seq in 1.. {
        let Ok(bytes) = std::fs::read(dir.join(ptrack_map::mapsave::delta_name(seq))) else {
            break;
        };
        match ptrack_map::mapsave::parse_delta(&bytes) {
            Ok(d) if d.generation == generation && d.seq == seq => head.copy_from_slice(d.header),
            _ => break,
        }
    }
    let w = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    Some(SavedMap {
        version: w(1),
        init_lsn: Lsn(w(3)),
        tracked: Lsn(w(4)),
        data_checksum_version: w(8),
    })
}

/// The map's delta files next to the map file at `path`, sorted by sequence number.
pub fn map_deltas(path: &std::path::Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut seqs: Vec<u32> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| ptrack_map::mapsave::delta_seq(e.ok()?.file_name().to_str()?))
                .collect()
        })
        .unwrap_or_default();
    seqs.sort_unstable();
    seqs.into_iter()
        .map(|s| dir.join(ptrack_map::mapsave::delta_name(s)))
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the tracker has saved the map at `path` past the last checkpoint record: it
/// saves after reading that record, on a thread of its own, so the file may lag behind a
/// `CHECKPOINT` that has returned. Call it before an immediate stop that must keep the map.
pub fn wait_map_saved(c: &PgCluster, path: &std::path::Path) {
    let checkpoint = lsn(&c.query_one("SELECT checkpoint_lsn FROM pg_control_checkpoint()"));
    wait_until(
        &format!("map {} saved past checkpoint {checkpoint}", path.display()),
        Duration::from_secs(60),
        || read_saved_map(path).is_some_and(|m| m.tracked > checkpoint),
    );
}

/// Returns once the tracker has processed all WAL flushed (replayed, on a standby) before the
/// call, with every WARNING and `init_lsn` move that implies: `ptrack_get_pagemapset` waits for
/// exactly that. Use it instead of reading `ptrack_init_lsn()` right after a start, which only
/// waits until the tracker has picked its start.
pub fn sync_tracker(c: &PgCluster) {
    c.execute(
        "SELECT count(*) FROM ptrack_get_pagemapset(CASE WHEN pg_is_in_recovery() \
         THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)",
    );
}

/// Decodes a bytea in hex output format (`\x0010…`).
pub fn unhex(s: &str) -> Vec<u8> {
    let h = s.strip_prefix("\\x").unwrap_or(s).as_bytes();
    h.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            d(p[0]) << 4 | d(p[1])
        })
        .collect()
}

/// Bits set in a datapagemap, ascending.
pub fn bits(map: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, byte) in map.iter().enumerate() {
        for b in 0..8 {
            if byte & (1 << b) != 0 {
                out.push(i as u32 * 8 + b);
            }
        }
    }
    out
}

/// `ptrack_get_pagemapset(lsn)` as path → segment-relative blocks; checks that `pagecount`
/// equals the number of bits.
pub fn pagemapset(c: &PgCluster, lsn: &str) -> BTreeMap<String, Vec<u32>> {
    let rows = c.query(&format!(
        "SELECT path, pagecount, pagemap FROM ptrack_get_pagemapset('{lsn}') ORDER BY 1"
    ));
    rows.into_iter()
        .map(|r| {
            let blocks = bits(&unhex(&r[2]));
            assert_eq!(
                r[1].parse::<usize>().ok(),
                Some(blocks.len()),
                "pagecount of {}",
                r[0]
            );
            (r[0].clone(), blocks)
        })
        .collect()
}

/// Per relation segment file (PGDATA-relative path), the CRC-32C of each block; an *empty*
/// page (all zeros, or an initialised page with nothing after its header) is recorded as
/// [`EMPTY`].
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per file, per block: CRC-32C or [`EMPTY`].
    pub crcs: BTreeMap<String, Vec<u32>>,
    /// Per file, the bytes of block 0 (to tell hint-only metapage changes apart).
    pub first_blocks: BTreeMap<String, Vec<u8>>,
    /// Per file, per block: the page LSN (`pd_lsn`).
    pub lsns: BTreeMap<String, Vec<u64>>,
}

/// The page LSN of a page (`pd_lsn`: high word, then low word).
pub fn page_lsn(p: &[u8]) -> u64 {
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]));
    (u32_at(0) << 32) | u32_at(4)
}

/// Snapshot value of an empty page.
pub const EMPTY: u32 = 0;

/// Whether a page is all zeros, or a page header of an initialised page (`pd_lower` = 24,
/// `pd_upper` = `pd_special` = page size) followed by zeros: what PostgreSQL writes when it
/// extends a relation, FSM or VM without WAL.
pub fn is_empty_page(p: &[u8]) -> bool {
    if p.iter().all(|&b| b == 0) {
        return true;
    }
    let u16_at = |o: usize| u16::from_le_bytes([p[o], p[o + 1]]) as usize;
    p.len() > 24
        && u16_at(12) == 24
        && u16_at(14) == p.len()
        && u16_at(16) == p.len()
        && p[24..].iter().all(|&b| b == 0)
}

/// Reads every block of every relation file of a (quiescent) cluster.
pub fn snapshot(c: &PgCluster) -> Snapshot {
    let dd = DataDir::open(c.datadir()).unwrap_or_else(|e| panic!("open datadir: {e}"));
    let bs = dd.blcksz();
    let (files, errors) = dd.relation_files();
    assert!(errors.is_empty(), "walk errors: {errors:?}");
    let mut out = Snapshot::default();
    for f in files {
        let Ok(bytes) = std::fs::read(&f.abs_path) else {
            continue;
        };
        if bytes.len() >= bs {
            out.first_blocks
                .insert(f.rel_path.clone(), bytes[..bs].to_vec());
        }
        out.lsns.insert(
            f.rel_path.clone(),
            bytes.chunks_exact(bs).map(page_lsn).collect(),
        );
        out.crcs.insert(
            f.rel_path,
            bytes
                .chunks_exact(bs)
                .map(|p| {
                    if is_empty_page(p) {
                        EMPTY
                    } else {
                        crc32c::crc32c(p).max(1)
                    }
                })
                .collect(),
        );
    }
    out
}

/// What changed between two snapshots, compared with what ptrack reported.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Changed or new blocks (not all-zero new blocks).
    pub changed: u64,
    /// Of those, free-space-map blocks.
    pub changed_fsm: u64,
    /// Changed blocks ptrack did not report: data loss for an incremental backup.
    pub missed: Vec<(String, u32)>,
    /// New blocks that are empty pages (relation, FSM or VM extension without WAL; PostgreSQL
    /// treats them like absent blocks and a backup recreates them from the file size).
    pub new_zero: u64,
    /// SP-GiST metapages whose only change is the last-used-pages cache, which
    /// `SpGistUpdateMetaPage` rewrites without WAL (also after a VACUUM that logs nothing for
    /// the index); a stale cache is harmless and pg_probackup's own tests exclude it too.
    pub spgist_cache: u64,
    /// With hint bits not WAL-logged: main-fork pages that changed without their page LSN
    /// moving past the start (hint bits or `LP_DEAD` marks set by readers; PostgreSQL's own
    /// incremental backup does not see them either, and they are rebuilt from the commit log).
    pub hint_only: u64,
    /// Reported blocks that did not change.
    pub false_positives: u64,
    /// Reported blocks in total.
    pub reported: u64,
}

/// `SPGIST_MAGIC_NUMBER`, the first field of the SP-GiST metapage data.
const SPGIST_MAGIC: u32 = 0xBA0B_ABEE;

/// Whether two versions of a page are SP-GiST metapages that differ only in the checksum
/// (bytes 8–9) and the last-used-pages cache (from byte 28, after the magic, up to `pd_lower`).
pub fn spgist_cache_only(before: &[u8], after: &[u8]) -> bool {
    let u32_at = |p: &[u8], o: usize| u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    let pd_lower = |p: &[u8]| u16::from_le_bytes([p[12], p[13]]) as usize;
    if before.len() != after.len() || before.len() < 32 {
        return false;
    }
    if u32_at(before, 24) != SPGIST_MAGIC || u32_at(after, 24) != SPGIST_MAGIC {
        return false;
    }
    let cache_end = pd_lower(before).max(pd_lower(after)).min(before.len());
    (0..before.len())
        .filter(|&i| !(8..10).contains(&i) && !(28..cache_end).contains(&i))
        .all(|i| before[i] == after[i])
}

/// How hint-bit changes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hints {
    /// With WAL (data checksums or `wal_log_hints`): every change must be reported.
    Logged,
    /// Without WAL, since this start LSN: a main-fork page whose LSN is still before it changed
    /// only in hints. FSM and VM pages get no such excuse.
    Unlogged(Lsn),
}

/// Whether a relation segment path is of the main fork (no `_fsm`, `_vm`, `_init` suffix).
fn is_main_fork(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !name.contains('_')
}

/// Compares snapshots `before` and `after` with a pagemapset since `before`.
pub fn compare(
    before: &Snapshot,
    after: &Snapshot,
    reported: &BTreeMap<String, Vec<u32>>,
    hints: Hints,
) -> Comparison {
    let mut cmp = Comparison::default();
    for (path, blocks) in &after.crcs {
        let old = before.crcs.get(path);
        let rep: std::collections::HashSet<u32> = reported
            .get(path)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        for (i, crc) in blocks.iter().enumerate() {
            let i = i as u32;
            let was = old.and_then(|o| o.get(i as usize));
            if was == Some(crc) {
                continue;
            }
            if was.is_none() && *crc == EMPTY {
                cmp.new_zero += 1;
                continue;
            }
            if i == 0
                && !rep.contains(&0)
                && let (Some(b), Some(a)) =
                    (before.first_blocks.get(path), after.first_blocks.get(path))
                && spgist_cache_only(b, a)
            {
                cmp.spgist_cache += 1;
                continue;
            }
            if let Hints::Unlogged(start) = hints
                && was.is_some()
                && !rep.contains(&i)
                && is_main_fork(path)
                && after.lsns.get(path).and_then(|l| l.get(i as usize)) < Some(&start.0)
            {
                cmp.hint_only += 1;
                continue;
            }
            cmp.changed += 1;
            cmp.changed_fsm += u64::from(path.ends_with("_fsm") || path.contains("_fsm."));
            if !rep.contains(&i) {
                cmp.missed.push((path.clone(), i));
            }
        }
    }
    for (path, blocks) in reported {
        cmp.reported += blocks.len() as u64;
        let (Some(a), Some(b)) = (after.crcs.get(path), before.crcs.get(path)) else {
            continue;
        };
        for &i in blocks {
            if a.get(i as usize).is_some() && a.get(i as usize) == b.get(i as usize) {
                cmp.false_positives += 1;
            }
        }
    }
    cmp
}

/// Parses `X/X`.
pub fn lsn(s: &str) -> Lsn {
    s.parse().unwrap_or_else(|e| panic!("bad LSN {s:?}: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(cache: u8, other: u8) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[12..14].copy_from_slice(&100u16.to_le_bytes()); // pd_lower
        p[24..28].copy_from_slice(&SPGIST_MAGIC.to_le_bytes());
        p[40] = cache;
        p[200] = other;
        p
    }

    #[test]
    fn spgist_cache_only_accepts_the_cache_and_nothing_else() {
        assert!(spgist_cache_only(&meta(1, 0), &meta(2, 0)));
        assert!(!spgist_cache_only(&meta(1, 0), &meta(1, 7)));
        let mut not_spgist = meta(1, 0);
        not_spgist[24] = 0;
        assert!(!spgist_cache_only(&not_spgist, &meta(2, 0)));
    }
}
