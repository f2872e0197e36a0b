//! Helpers for the extension's integration tests (`tests/ext.rs`): clusters with ptrack
//! preloaded, the pagemapset as a map of path to block list, and block-level snapshots of every
//! relation file (the oracle of the no-false-negative test).

use std::collections::BTreeMap;

use ptrack_page::datadir::DataDir;
use ptrack_testkit::{ClusterConfig, PgCluster, PgInstall};
use ptrack_types::Lsn;

/// A cluster with `shared_preload_libraries = 'ptrack'` and `ptrack.map_size = map_mb`, not
/// started.
pub fn ptrack_cluster(install: &PgInstall, map_mb: u32, checksums: bool) -> PgCluster {
    let cfg = ClusterConfig::new(checksums)
        .set("shared_preload_libraries", "ptrack")
        .set("ptrack.map_size", &format!("{map_mb}MB"));
    PgCluster::init_with(install, &cfg)
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
pub type Snapshot = BTreeMap<String, Vec<u32>>;

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
    let mut out = Snapshot::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f.abs_path) else {
            continue;
        };
        out.insert(
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
    /// Changed blocks ptrack did not report: data loss for an incremental backup.
    pub missed: Vec<(String, u32)>,
    /// New blocks that are empty pages (relation, FSM or VM extension without WAL; PostgreSQL
    /// treats them like absent blocks and a backup recreates them from the file size).
    pub new_zero: u64,
    /// Reported blocks that did not change.
    pub false_positives: u64,
    /// Reported blocks in total.
    pub reported: u64,
}

/// Compares snapshots `before` and `after` with a pagemapset since `before`.
pub fn compare(
    before: &Snapshot,
    after: &Snapshot,
    reported: &BTreeMap<String, Vec<u32>>,
) -> Comparison {
    let mut cmp = Comparison::default();
    for (path, blocks) in after {
        let old = before.get(path);
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
            cmp.changed += 1;
            if !rep.contains(&i) {
                cmp.missed.push((path.clone(), i));
            }
        }
    }
    for (path, blocks) in reported {
        cmp.reported += blocks.len() as u64;
        let (Some(a), Some(b)) = (after.get(path), before.get(path)) else {
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
