//! Builds valid heap pages byte by byte, the way `PageInit` and `PageAddItem` lay them out
//! (`src/backend/storage/page/bufpage.c`). Used by unit tests and as fuzzing seeds; real pages in
//! integration tests come from real servers.

use crate::checksum::pg_checksum_page;
use crate::page::{LinePointer, LpFlags, PD_CHECKSUM_OFFSET, SIZE_OF_PAGE_HEADER, maxalign};

/// A heap page under construction.
#[derive(Debug, Clone)]
pub struct HeapPageBuilder {
    page: Vec<u8>,
    lower: usize,
    upper: usize,
}

impl HeapPageBuilder {
    /// An empty heap page of `blcksz` bytes (`PageInit(page, blcksz, 0)`).
    pub fn new(blcksz: usize) -> HeapPageBuilder {
        let mut b = HeapPageBuilder {
            page: vec![0; blcksz],
            lower: SIZE_OF_PAGE_HEADER,
            upper: blcksz,
        };
        b.put16(16, blcksz); // pd_special
        b.put16(18, (blcksz & 0xFF00) | 4); // pd_pagesize_version
        b.sync_bounds();
        b
    }

    fn put16(&mut self, off: usize, v: usize) {
        if let Some(d) = self.page.get_mut(off..off + 2) {
            d.copy_from_slice(&(v as u16).to_le_bytes());
        }
    }

    fn sync_bounds(&mut self) {
        self.put16(12, self.lower);
        self.put16(14, self.upper);
    }

    /// Adds a tuple with `data_len` bytes of user data after a 24-byte header, `natts`
    /// attributes and no nulls. Returns its offset number, or `None` if it does not fit.
    pub fn add_tuple(&mut self, natts: u16, data: &[u8]) -> Option<u16> {
        let len = maxalign(23) + data.len();
        // Tuples are placed at MAXALIGN-ed offsets growing down from pd_upper.
        let start = self.upper.checked_sub(len)? & !7;
        if start < self.lower + 4 {
            return None;
        }
        let t = self.page.get_mut(start..start + len)?;
        t.fill(0);
        t[0..4].copy_from_slice(&2u32.to_le_bytes()); // xmin: FrozenTransactionId
        t[16..18].copy_from_slice(&1u16.to_le_bytes()); // ctid offset
        t[18..20].copy_from_slice(&natts.to_le_bytes()); // t_infomask2
        t[20..22].copy_from_slice(&0x0900u16.to_le_bytes()); // XMIN_COMMITTED|XMAX_INVALID
        t[22] = maxalign(23) as u8; // t_hoff
        t[24..].copy_from_slice(data);
        let offnum = (self.lower - SIZE_OF_PAGE_HEADER) / 4 + 1;
        let lp = LinePointer {
            off: start as u16,
            flags: LpFlags::Normal,
            len: len as u16,
        };
        self.page[self.lower..self.lower + 4].copy_from_slice(&lp.to_raw().to_le_bytes());
        self.lower += 4;
        self.upper = start;
        self.sync_bounds();
        Some(offnum as u16)
    }

    /// Appends a raw line pointer (for redirects, dead and unused items).
    pub fn add_line_pointer(&mut self, lp: LinePointer) -> u16 {
        self.page[self.lower..self.lower + 4].copy_from_slice(&lp.to_raw().to_le_bytes());
        self.lower += 4;
        self.sync_bounds();
        ((self.lower - SIZE_OF_PAGE_HEADER) / 4) as u16
    }

    /// The finished page, with a correct checksum for absolute block `blkno`.
    pub fn finish(mut self, blkno: u32) -> Vec<u8> {
        let sum = pg_checksum_page(&self.page, blkno);
        self.page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_le_bytes());
        self.page
    }
}

/// Stores a fresh checksum for absolute block `blkno` in `page`.
pub fn set_checksum(page: &mut [u8], blkno: u32) {
    let sum = pg_checksum_page(page, blkno);
    if let Some(d) = page.get_mut(PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2) {
        d.copy_from_slice(&sum.to_le_bytes());
    }
}
