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
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per file, per block: CRC-32C or [`EMPTY`].
    pub crcs: BTreeMap<String, Vec<u32>>,
    /// Per file, the bytes of block 0 (to tell hint-only metapage changes apart).
    pub first_blocks: BTreeMap<String, Vec<u8>>,
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
    /// Changed blocks ptrack did not report: data loss for an incremental backup.
    pub missed: Vec<(String, u32)>,
    /// New blocks that are empty pages (relation, FSM or VM extension without WAL; PostgreSQL
    /// treats them like absent blocks and a backup recreates them from the file size).
    pub new_zero: u64,
    /// SP-GiST metapages whose only change is the last-used-pages cache, which
    /// `SpGistUpdateMetaPage` rewrites without WAL (also after a VACUUM that logs nothing for
    /// the index); a stale cache is harmless and pg_probackup's own tests exclude it too.
    pub spgist_cache: u64,
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

/// Compares snapshots `before` and `after` with a pagemapset since `before`.
pub fn compare(
    before: &Snapshot,
    after: &Snapshot,
    reported: &BTreeMap<String, Vec<u32>>,
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
            cmp.changed += 1;
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
