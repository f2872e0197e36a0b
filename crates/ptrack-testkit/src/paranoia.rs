//! The paranoia comparison (pg_probackup's "paranoia" mode): a restored data directory against
//! its source, file by file, both stopped, the source quiescent since the backup. Every relation
//! file is compared page by page, every other file byte for byte, except what is listed here,
//! each for a stated reason.
//!
//! Not compared (runtime state PostgreSQL rewrites on its own at start, stop or recovery, or
//! contents a backup leaves out as `basebackup.c` does): `postmaster.pid`, `postmaster.opts`,
//! `current_logfiles`, `log/`, `pg_wal/` (each cluster writes its own after the backup),
//! `pg_stat/` (statistics written at shutdown), the contents of `pg_stat_tmp/`, `pg_replslot/`,
//! `pg_dynshmem/`, `pg_notify/`, `pg_serial/`, `pg_snapshots/`, `pg_subtrans/`,
//! `pg_ptrack/` and `global/ptrack.map*` (the tracker's map, not backed up), `pg_internal.init`
//! (relation cache, rebuilt), `backup_manifest` (a pg_basebackup's, left out as basebackup.c
//! does), `backup_label.old` / `tablespace_map.old` / `recovery.signal` / `standby.signal` / `ptrack.restored` (how the
//! restore started), and of `global/pg_control` only the system identifier, catalog version,
//! block and segment sizes and data checksum version are compared (checkpoint and timeline move
//! on in both). `postgresql.auto.conf` is compared without the block `ptrack restore` appends,
//! `postgresql.conf` without the socket directory the testkit appends to an adopted cluster.
//!
//! Masked on relation pages, following PostgreSQL's own `bufmask.c` (what a server may change
//! without WAL, used by `wal_consistency_checking`): `pd_checksum`, the hint flags
//! `PD_PAGE_FULL` and `PD_HAS_FREE_LINES`, `pd_prune_xid`, the unused space between `pd_lower`
//! and `pd_upper`, on heap pages the tuple hint bits `HEAP_XMIN_COMMITTED`/`INVALID` and
//! `HEAP_XMAX_COMMITTED`/`INVALID` and the command id `t_cid` with its `HEAP_COMBOCID` flag (replay writes `FirstCommandId`,
//! `heapam.c: heap_xlog_insert`; `heap_mask` masks it too), on index pages `LP_DEAD` (killed-item hints) and B-tree's
//! `BTP_HAS_GARBAGE`, and with those masked `pd_lsn` itself (with data checksums on, setting a
//! hint bit logs a full-page image, `XLOG_FPI_FOR_HINT`, which advances the page's LSN: the
//! first connections to a restored cluster set hint bits on catalog pages). Free space map forks
//! are maintained without WAL (`freespace.c`) and are not compared, and one only in the restored
//! directory is no difference (replay creates them). Neither are the forks of an unlogged
//! relation other than its init fork: a backup leaves them out (`basebackup.c`) and the end of
//! recovery resets them from the init fork (`ResetUnloggedRelations`), while the source keeps
//! its rows. A visibility map fork on one side only is no difference when no bit in it is set:
//! VACUUM creates the fork before it knows whether it sets a bit, and creating it is not
//! WAL-logged (`visibilitymap.c: vm_extend`), so replay makes it only with its first bit.
//! Everything else must be equal.

use std::collections::BTreeMap;
use std::path::Path;

use ptrack_page::page::{LinePointer, LpFlags, PageHeader};
use ptrack_page::relpath::{PathKind, classify_path};

const SKIP_DIRS: &[&str] = &[
    "pg_wal",
    "pg_stat",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_ptrack",
    "log",
];

const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "current_logfiles",
    "backup_label.old",
    "backup_manifest",
    "tablespace_map.old",
    "recovery.signal",
    "ptrack.restored",
    "standby.signal",
    "global/ptrack.map",
    "global/ptrack.map.tmp",
];

fn skipped(rel: &str) -> bool {
    SKIP_FILES.contains(&rel)
        || SKIP_DIRS
            .iter()
            .any(|d| rel.len() > d.len() && rel.starts_with(d) && rel.as_bytes()[d.len()] == b'/')
        || rel
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("pg_internal.init"))
}

/// Every file below `root` (following only `pg_tblspc/<oid>` links; other links are listed by
/// their target), by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            let lm = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            if lm.file_type().is_symlink() && rel != "pg_tblspc" {
                let t = std::fs::read_link(&p).unwrap_or_default();
                out.insert(r, format!("symbolic link to {}", t.display()).into_bytes());
                continue;
            }
            let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
            if m.is_dir() {
                stack.push((p, r));
            } else if !skipped(&r) {
                out.insert(
                    r,
                    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
                );
            }
        }
    }
    out
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

/// A page with everything PostgreSQL may change without WAL masked (see the module comment).
fn masked(page: &[u8]) -> Vec<u8> {
    let mut p = page.to_vec();
    let Some(h) = PageHeader::parse(&p) else {
        return p;
    };
    if h.is_new() || usize::from(h.special) > p.len() || h.lower > h.upper {
        return p;
    }
    p[0..8].fill(0); // pd_lsn (advanced by hint-bit full-page images)
    p[8..10].fill(0); // pd_checksum
    let flags = u16_at(&p, 10) & !0x0003; // PD_HAS_FREE_LINES, PD_PAGE_FULL
    p[10..12].copy_from_slice(&flags.to_le_bytes());
    p[20..24].fill(0); // pd_prune_xid
    let (lower, upper) = (usize::from(h.lower), usize::from(h.upper).min(p.len()));
    p[lower..upper].fill(0);
    let heap = usize::from(h.special) == p.len();
    for off in 1..=h.line_pointer_count() {
        let Some(lp) = LinePointer::read(&p, off) else {
            break;
        };
        let at = 24 + (off - 1) * 4;
        if heap {
            let (o, l) = (usize::from(lp.off), usize::from(lp.len));
            if lp.flags == LpFlags::Normal && l >= 23 && o + l <= p.len() {
                // The four hint bits, and HEAP_COMBOCID (0x0020): redo sets the command id to
                // FirstCommandId without a combo id (heap_xlog_delete, heap_xlog_update).
                let im = u16_at(&p, o + 20) & !0x0F20;
                p[o + 20..o + 22].copy_from_slice(&im.to_le_bytes());
                // t_cid: redo sets FirstCommandId (heap_xlog_insert), as heap_mask notes.
                p[o + 8..o + 12].fill(0);
            }
        } else if lp.flags == LpFlags::Dead {
            let normal = LinePointer {
                flags: LpFlags::Normal,
                ..lp
            };
            p[at..at + 4].copy_from_slice(&normal.to_raw().to_le_bytes());
        }
    }
    // B-tree opaque data: btpo_flags at special + 12 (BTP_HAS_GARBAGE = 1 << 6).
    let sp = usize::from(h.special);
    if !heap && p.len() - sp == 16 {
        let f = u16_at(&p, sp + 12) & !0x0040;
        p[sp + 12..sp + 14].copy_from_slice(&f.to_le_bytes());
    }
    p
}

fn control_facts(b: &[u8]) -> Vec<u8> {
    // system identifier, pg_control and catalog versions; blcksz .. xlog_seg_size; checksums.
    let mut v = b.get(0..16).unwrap_or_default().to_vec();
    v.extend_from_slice(b.get(216..232).unwrap_or_default());
    v.extend_from_slice(b.get(252..256).unwrap_or_default());
    v
}

/// `b` up to a block appended by `marker` (ptrack restore's recovery settings, the testkit's
/// socket directory for an adopted cluster).
fn before_block(b: &[u8], marker: &str) -> Vec<u8> {
    let t = String::from_utf8_lossy(b);
    let cut = t.find(marker).unwrap_or(t.len());
    t[..cut].as_bytes().to_vec()
}

/// Whether `rel` is a free space map fork segment (`…_fsm`, `…_fsm.N`).
fn is_fsm(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let base = name.split_once('.').map_or(name, |(b, _)| b);
    base.ends_with("_fsm")
}

/// Whether `rel` is a visibility map fork with no bit set (every page's bytes after its
/// header are zero).
fn empty_vm(rel: &str, bytes: &[u8], blcksz: usize) -> bool {
    let vm = matches!(classify_path(rel), PathKind::Relation(s) if s.fork == ptrack_types::ForkNumber::VisibilityMap);
    vm && bytes
        .chunks(blcksz)
        .all(|p| p.iter().skip(PAGE_HEADER).all(|&b| b == 0))
}

/// Bytes of a page header (`SizeOfPageHeaderData`), before a visibility map page's bits.
const PAGE_HEADER: usize = 24;

/// The paths of `files` that are forks of unlogged relations other than their init forks
/// (relation files of a relation that has an `_init` fork), to be left out.
fn unlogged_forks(files: &BTreeMap<String, Vec<u8>>) -> std::collections::BTreeSet<String> {
    let seg = |k: &str| match classify_path(k) {
        PathKind::Relation(s) => Some(s),
        _ => None,
    };
    let with_init: std::collections::BTreeSet<_> = files
        .keys()
        .filter_map(|k| seg(k))
        .filter(|s| s.fork == ptrack_types::ForkNumber::Init)
        .map(|s| s.locator)
        .collect();
    files
        .keys()
        .filter(|k| {
            seg(k).is_some_and(|s| {
                s.fork != ptrack_types::ForkNumber::Init && with_init.contains(&s.locator)
            })
        })
        .cloned()
        .collect()
}

/// Compares `restored` with `source`; returns every difference (empty: identical under the
/// rules above). `blcksz` is the clusters' block size.
pub fn compare(source: &Path, restored: &Path, blcksz: usize) -> Vec<String> {
    let (mut a, mut b) = (files(source), files(restored));
    let unlogged = unlogged_forks(&a);
    a.retain(|k, _| !unlogged.contains(k.as_str()));
    b.retain(|k, _| !unlogged.contains(k.as_str()));
    let mut diffs = Vec::new();
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        if !empty_vm(k, &a[k.as_str()], blcksz) {
            diffs.push(format!("{k}: missing from the restored directory"));
        }
    }
    // Replay creates free space map forks the source may not have yet (heap redo records free
    // space, `XLogRecordPageWithFreeSpace`): one only in the restored directory is no loss.
    for k in b
        .keys()
        .filter(|k| !a.contains_key(*k) && !is_fsm(k) && !empty_vm(k, &b[k.as_str()], blcksz))
    {
        diffs.push(format!("{k}: only in the restored directory"));
    }
    for (k, x) in &a {
        let Some(y) = b.get(k) else { continue };
        let rel_kind = classify_path(k);
        match (k.as_str(), rel_kind) {
            ("global/pg_control", _) => {
                if control_facts(x) != control_facts(y) {
                    diffs.push(format!("{k}: cluster facts differ"));
                }
            }
            ("postgresql.auto.conf", _) => {
                let m = "\n# Recovery settings written by ptrack restore";
                if before_block(x, m) != before_block(y, m) {
                    diffs.push(format!("{k}: differs (beyond ptrack restore's settings)"));
                }
            }
            ("postgresql.conf", _) => {
                if before_block(x, crate::cluster::ADOPTED_MARK)
                    != before_block(y, crate::cluster::ADOPTED_MARK)
                {
                    diffs.push(format!(
                        "{k}: differs (beyond the testkit's socket setting)"
                    ));
                }
            }
            (_, PathKind::Relation(seg)) => {
                if seg.fork == ptrack_types::ForkNumber::Fsm {
                    continue;
                }
                if x.len() != y.len() {
                    diffs.push(format!(
                        "{k}: {} bytes in the source, {} restored",
                        x.len(),
                        y.len()
                    ));
                    continue;
                }
                let bad: Vec<usize> = x
                    .chunks(blcksz)
                    .zip(y.chunks(blcksz))
                    .enumerate()
                    .filter(|(_, (p, q))| p != q && masked(p) != masked(q))
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&first) = bad.first() {
                    let (p, q) = (
                        masked(&x[first * blcksz..][..blcksz]),
                        masked(&y[first * blcksz..][..blcksz]),
                    );
                    let at: Vec<String> = (0..blcksz)
                        .filter(|&i| p[i] != q[i])
                        .take(6)
                        .map(|i| format!("{i}: {:02x}/{:02x}", p[i], q[i]))
                        .collect();
                    diffs.push(format!(
                        "{k}: {} page(s) differ, first blocks {:?}; block {first} at (masked, source/restored) {}",
                        bad.len(),
                        &bad[..bad.len().min(8)],
                        at.join(", ")
                    ));
                }
            }
            _ => {
                if x != y {
                    diffs.push(format!(
                        "{k}: contents differ ({} bytes in the source, {} restored)",
                        x.len(),
                        y.len()
                    ));
                }
            }
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visibility_map_without_bits_is_none() {
        let mut page = vec![0u8; 8192];
        page[0..8].copy_from_slice(&[1, 0, 0, 0, 9, 0, 0, 0]);
        assert!(empty_vm("base/5/100_vm", &page, 8192));
        page[30] = 1;
        assert!(!empty_vm("base/5/100_vm", &page, 8192));
        assert!(!empty_vm("base/5/100", &vec![0u8; 8192], 8192));
    }

    #[test]
    fn unlogged_forks_but_their_init_fork_are_left_out() {
        let files: BTreeMap<String, Vec<u8>> = [
            "base/5/100",
            "base/5/100_init",
            "base/5/100_fsm",
            "base/5/100.1",
            "base/5/200",
            "base/6/100",
        ]
        .iter()
        .map(|k| (k.to_string(), Vec::new()))
        .collect();
        let got: Vec<String> = unlogged_forks(&files).into_iter().collect();
        assert_eq!(got, ["base/5/100", "base/5/100.1", "base/5/100_fsm"]);
    }

    #[test]
    fn masks_only_hints() {
        let mut page = vec![0u8; 8192];
        page[12..14].copy_from_slice(&28u16.to_le_bytes()); // lower: one line pointer
        page[14..16].copy_from_slice(&8000u16.to_le_bytes()); // upper
        page[16..18].copy_from_slice(&8192u16.to_le_bytes()); // special: heap
        page[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        let lp = LinePointer {
            off: 8000,
            flags: LpFlags::Normal,
            len: 40,
        };
        page[24..28].copy_from_slice(&lp.to_raw().to_le_bytes());
        let mut hinted = page.clone();
        hinted[8000 + 20] |= 0x00;
        hinted[8000 + 21] |= 0x01; // HEAP_XMIN_COMMITTED (0x0100)
        hinted[8] = 0x55; // checksum
        assert_ne!(page, hinted);
        assert_eq!(masked(&page), masked(&hinted));
        let mut cid = page.clone();
        cid[8000 + 8] = 7; // t_cid: replay writes FirstCommandId
        assert_eq!(masked(&page), masked(&cid));
        let mut changed = page.clone();
        changed[8030] = 1; // tuple data
        assert_ne!(masked(&page), masked(&changed));
        let mut xmax = page.clone();
        xmax[8000 + 4] = 1; // t_xmax is WAL-logged: compared
        assert_ne!(masked(&page), masked(&xmax));
        let mut special = page.clone();
        special[16..18].copy_from_slice(&8176u16.to_le_bytes());
        assert_ne!(masked(&page), masked(&special));
        assert!(skipped("pg_wal/000000010000000000000001") && !skipped("pg_walx"));
        assert!(skipped("base/5/pg_internal.init") && !skipped("global/pg_filenode.map"));
        assert!(is_fsm("base/5/16384_fsm") && is_fsm("base/5/16384_fsm.1"));
        assert!(!is_fsm("base/5/16384") && !is_fsm("base/5/16384_vm"));
    }
}
