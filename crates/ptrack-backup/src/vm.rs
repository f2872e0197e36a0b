//! Heap pages a delta backup would miss by their LSN alone. Without data checksums and without
//! `wal_log_hints`, VACUUM sets a heap page's `PD_ALL_VISIBLE` flag and logs only
//! `XLOG_HEAP2_VISIBLE` for the visibility map: the heap page's LSN is not advanced
//! (`heapam.c: visibilitymap_set` sets it only when `XLogHintBitIsNeeded()`). Such a page looks
//! unchanged to a delta backup although its flag changed. Every such page has its all-visible
//! bit newly set in the visibility map, so comparing the fork's map now with the parent's finds
//! them all (clearing the flag always comes with a WAL-logged, LSN-advancing change); the
//! parent's map is rebuilt from its chain. Mirrors the map layout of
//! `src/backend/access/heap/visibilitymap.c`.

use std::collections::HashMap;
use std::path::Path;

use ptrack_page::relpath::{PathKind, RelFileSegment, classify_path};
use ptrack_types::ForkNumber;

use crate::parent::Parent;
use crate::walk::{Item, Listing};
use crate::{Error, Result};
use ptrack_format::bundle::BundleReader;
use ptrack_format::manifest::{Entry, EntryKind};
use ptrack_format::paths::RelPath;
use ptrack_format::repo::Instance;

/// Size of the page header a visibility-map page starts with (`MAXALIGN(SizeOfPageHeaderData)`).
const VM_HEADER: usize = 24;
/// `VISIBILITYMAP_ALL_VISIBLE` in every 2-bit pair of a map byte.
const ALL_VISIBLE_BITS: u8 = 0x55;

/// Heap blocks whose all-visible bit is set in `current` and not in `parent` (both whole
/// visibility-map forks; a shorter or absent parent counts as zeros), sorted.
pub fn newly_all_visible(current: &[u8], parent: &[u8], blcksz: usize) -> Vec<u64> {
    let per_page = ((blcksz - VM_HEADER) * 4) as u64;
    let mut out = Vec::new();
    for (p, page) in current.chunks(blcksz).enumerate() {
        if page.len() < blcksz {
            break;
        }
        let old = parent.get(p * blcksz..(p + 1) * blcksz);
        for (i, &byte) in page[VM_HEADER..].iter().enumerate() {
            let was = old.map_or(0, |o| o[VM_HEADER + i]);
            let new = byte & !was & ALL_VISIBLE_BITS;
            for pair in 0..4 {
                if new & (1 << (2 * pair)) != 0 {
                    out.push(p as u64 * per_page + i as u64 * 4 + pair);
                }
            }
        }
    }
    out
}

/// For delta backups of clusters that do not WAL-log hints: per main-fork segment, the heap
/// pages whose all-visible bit was set since the parent, segment-relative. `items` is the data
/// directory's listing, `tsdir` its `PG_<major>_<catver>`, `blcksz` and `relseg` its sizes.
pub fn newly_visible_pages(
    pgdata: &Path,
    instance: &Instance,
    parent: &Parent,
    listing: &Listing,
    tsdir: &str,
    (blcksz, relseg): (usize, u32),
) -> Result<HashMap<RelPath, Vec<u32>>> {
    let relseg = u64::from(relseg);
    let mut readers: Vec<BundleReader> = crate::chain::readers(instance, &parent.chain)?;
    let mut out: HashMap<RelPath, Vec<u32>> = HashMap::new();
    for (rel, item) in listing.iter() {
        let Item::File(..) = item else { continue };
        let Some(PathKind::Relation(seg)) = rel.as_str().map(classify_path) else {
            continue;
        };
        if seg.fork != ForkNumber::VisibilityMap || seg.segno != 0 {
            continue;
        }
        let path = pgdata.join(rel.as_path());
        let current = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, "read", e)),
        };
        let old = match parent.chain[0].manifest.entry(&rel) {
            Some(
                e @ Entry {
                    kind: EntryKind::File { .. },
                    ..
                },
            ) => crate::restore::file_content(&parent.chain, &mut readers, &e, false)?,
            _ => Vec::new(),
        };
        for b in newly_all_visible(&current, &old, blcksz) {
            let main = RelFileSegment {
                locator: seg.locator,
                fork: ForkNumber::Main,
                segno: (b / relseg) as u32,
            };
            let Ok(p) = RelPath::new(&main.path(tsdir)) else {
                continue;
            };
            out.entry(p).or_default().push((b % relseg) as u32);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bits_set_since_the_parent() {
        let bs = 8192;
        let mut cur = vec![0u8; 2 * bs];
        let mut old = vec![0u8; bs];
        cur[VM_HEADER] = 0b0000_0011; // heap block 0 all-visible + all-frozen
        cur[VM_HEADER + 1] = 0b0100_0000; // heap block 7 all-visible
        old[VM_HEADER] = 0b0000_0001; // block 0 was already visible
        cur[bs + VM_HEADER + 2] = 0b0000_0100; // second map page: heap block per_page + 9
        let per_page = ((bs - VM_HEADER) * 4) as u64;
        assert_eq!(newly_all_visible(&cur, &old, bs), vec![7, per_page + 9]);
        assert_eq!(newly_all_visible(&cur, &cur, bs), Vec::<u64>::new());
        assert_eq!(newly_all_visible(&old, &[], bs), vec![0]);
    }
}
