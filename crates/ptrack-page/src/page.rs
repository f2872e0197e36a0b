//! The standard page header (`PageHeaderData`, `src/include/storage/bufpage.h`) and the line
//! pointer (`ItemIdData`, `src/include/storage/itemid.h`), decoded from raw bytes.
//!
//! Layout (24 bytes, identical in PG13–18; spec §5.1): `pd_lsn` @0 stored as two `u32` halves,
//! high word first (not one little-endian `u64`), `pd_checksum` @8, `pd_flags` @10, `pd_lower` @12,
//! `pd_upper` @14, `pd_special` @16, `pd_pagesize_version` @18, `pd_prune_xid` @20, then the line
//! pointer array.

use ptrack_types::Lsn;

/// `SizeOfPageHeaderData`.
pub const SIZE_OF_PAGE_HEADER: usize = 24;
/// `PD_VALID_FLAG_BITS`: the only bits `pd_flags` may carry.
pub const PD_VALID_FLAG_BITS: u16 = 0x0007;
/// `PG_PAGE_LAYOUT_VERSION`, the low byte of `pd_pagesize_version` since PostgreSQL 8.3.
pub const PG_PAGE_LAYOUT_VERSION: u16 = 4;
/// `MAXIMUM_ALIGNOF` on every platform PostgreSQL 13–18 ships for (x86-64, aarch64).
pub const MAXALIGN: usize = 8;
/// Byte offset of `pd_checksum`.
pub const PD_CHECKSUM_OFFSET: usize = 8;

/// Rounds `n` up to a multiple of [`MAXALIGN`].
pub const fn maxalign(n: usize) -> usize {
    (n + MAXALIGN - 1) & !(MAXALIGN - 1)
}

/// Reads a little-endian `u16` at `off`, or `None` past the end.
pub(crate) fn le16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// Reads a little-endian `u32` at `off`, or `None` past the end.
pub(crate) fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Reads a little-endian `u64` at `off`, or `None` past the end.
pub(crate) fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// A decoded page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// `pd_lsn`: LSN of the last WAL record that changed the page.
    pub lsn: Lsn,
    /// `pd_checksum`.
    pub checksum: u16,
    /// `pd_flags`.
    pub flags: u16,
    /// `pd_lower`: offset of the start of free space (end of the line pointer array).
    pub lower: u16,
    /// `pd_upper`: offset of the end of free space; 0 means the page is new (`PageIsNew`).
    pub upper: u16,
    /// `pd_special`: offset of the special space (the page size when there is none).
    pub special: u16,
    /// `pd_pagesize_version`: page size in the high byte(s), layout version in the low byte.
    pub pagesize_version: u16,
    /// `pd_prune_xid`.
    pub prune_xid: u32,
}

impl PageHeader {
    /// Decodes the header at the start of `page`; `None` if fewer than 24 bytes are given.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            lsn: Lsn::from_parts(le32(page, 0)?, le32(page, 4)?),
            checksum: le16(page, 8)?,
            flags: le16(page, 10)?,
            lower: le16(page, 12)?,
            upper: le16(page, 14)?,
            special: le16(page, 16)?,
            pagesize_version: le16(page, 18)?,
            prune_xid: le32(page, 20)?,
        })
    }

    /// `PageIsNew`: `pd_upper == 0`.
    pub fn is_new(&self) -> bool {
        self.upper == 0
    }

    /// Page size recorded in the header (`PageGetPageSize`).
    pub fn page_size(&self) -> usize {
        usize::from(self.pagesize_version & 0xFF00)
    }

    /// Layout version recorded in the header (`PageGetPageLayoutVersion`).
    pub fn layout_version(&self) -> u16 {
        self.pagesize_version & 0x00FF
    }

    /// Number of line pointers the array holds (`PageGetMaxOffsetNumber`): 0 when `pd_lower`
    /// does not reach past the header.
    pub fn line_pointer_count(&self) -> usize {
        usize::from(self.lower).saturating_sub(SIZE_OF_PAGE_HEADER) / 4
    }
}

/// `lp_flags` of a line pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpFlags {
    /// `LP_UNUSED` (0): free for reuse, should have no storage.
    Unused,
    /// `LP_NORMAL` (1): points at a tuple.
    Normal,
    /// `LP_REDIRECT` (2): HOT redirect; `lp_off` holds the target's offset number.
    Redirect,
    /// `LP_DEAD` (3): dead, may or may not have storage.
    Dead,
}

/// A decoded `ItemIdData` (`lp_off:15, lp_flags:2, lp_len:15`, low bits first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePointer {
    /// `lp_off`: byte offset of the tuple, or the redirect target's offset number.
    pub off: u16,
    /// `lp_flags`.
    pub flags: LpFlags,
    /// `lp_len`: byte length of the tuple.
    pub len: u16,
}

impl LinePointer {
    /// Decodes the raw 32-bit word.
    pub fn from_raw(raw: u32) -> LinePointer {
        let flags = match (raw >> 15) & 3 {
            0 => LpFlags::Unused,
            1 => LpFlags::Normal,
            2 => LpFlags::Redirect,
            _ => LpFlags::Dead,
        };
        // Both masks keep 15 bits, so the casts cannot truncate.
        LinePointer {
            off: (raw & 0x7FFF) as u16,
            flags,
            len: ((raw >> 17) & 0x7FFF) as u16,
        }
    }

    /// Encodes back into the raw 32-bit word.
    pub fn to_raw(self) -> u32 {
        let f = match self.flags {
            LpFlags::Unused => 0,
            LpFlags::Normal => 1,
            LpFlags::Redirect => 2,
            LpFlags::Dead => 3,
        };
        (u32::from(self.off) & 0x7FFF) | (f << 15) | ((u32::from(self.len) & 0x7FFF) << 17)
    }

    /// Reads line pointer number `offnum` (1-based, as `OffsetNumber`) of `page`.
    pub fn read(page: &[u8], offnum: usize) -> Option<LinePointer> {
        let at = SIZE_OF_PAGE_HEADER + (offnum.checked_sub(1)?) * 4;
        le32(page, at).map(LinePointer::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_decodes_real_pg15_page() {
        // base/5/16384 block 0 of a real PG15 cluster (spec §5.1).
        let bytes = [
            0x00, 0x00, 0x00, 0x00, 0xe8, 0x6a, 0x77, 0x01, 0xe8, 0x89, 0x00, 0x00, 0x20, 0x00,
            0xb0, 0x1f, 0x00, 0x20, 0x04, 0x20, 0xd6, 0x02, 0x00, 0x00,
        ];
        let h = PageHeader::parse(&bytes).unwrap();
        assert_eq!(h.lsn.to_string(), "0/1776AE8");
        assert_eq!(h.checksum, 0x89E8);
        assert_eq!((h.flags, h.lower, h.upper, h.special), (0, 32, 8112, 8192));
        assert_eq!((h.page_size(), h.layout_version()), (8192, 4));
        assert_eq!(h.prune_xid, 726);
        assert_eq!(h.line_pointer_count(), 2);
        assert!(PageHeader::parse(&bytes[..23]).is_none());
    }

    #[test]
    fn lsn_high_word_comes_first() {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&0x16u32.to_le_bytes());
        b[4..8].copy_from_slice(&0xB374_D848u32.to_le_bytes());
        assert_eq!(
            PageHeader::parse(&b).unwrap().lsn.to_string(),
            "16/B374D848"
        );
    }

    #[test]
    fn line_pointer_round_trips() {
        for (off, flags, len) in [
            (8152u16, LpFlags::Normal, 40u16),
            (3, LpFlags::Redirect, 0),
            (0, LpFlags::Unused, 0),
            (0x7FFF, LpFlags::Dead, 0x7FFF),
        ] {
            let lp = LinePointer { off, flags, len };
            assert_eq!(LinePointer::from_raw(lp.to_raw()), lp);
        }
        // lp_off 8152 (0x1FD8), LP_NORMAL, lp_len 40: 0x1FD8 | 1<<15 | 40<<17.
        assert_eq!(LinePointer::from_raw(0x0050_9FD8).len, 40);
        assert_eq!(LinePointer::from_raw(0x0050_9FD8).off, 8152);
    }
}
