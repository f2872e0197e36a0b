//! Heap pages a delta backup would miss by their LSN alone. Without data checksums and without
//! `wal_log_hints`, VACUUM sets a heap page's `PD_ALL_VISIBLE` flag and logs only
//! `XLOG_HEAP2_VISIBLE` for the visibility map: the heap page's LSN is not advanced
//! (`heapam.c: visibilitymap_set` sets it only when `XLogHintBitIsNeeded()`). Such a page looks
//! unchanged to a delta backup although its flag changed. Every such page has its all-visible
//! bit newly set in the visibility map, so comparing the fork's map now with the parent's finds
//! them all (clearing the flag always comes with a WAL-logged, LSN-advancing change). Mirrors the
//! map layout of `src/backend/access/heap/visibilitymap.c`.

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
