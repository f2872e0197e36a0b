//! Verification of one page: PostgreSQL's `PageIsVerified` rules plus the heap line-pointer and
//! tuple-header checks that catch damage checksums cannot (or that clusters without checksums
//! would never notice).
//!
//! Mirrors `src/backend/storage/page/bufpage.c: PageIsVerified` (spec §5.2): a page with
//! `pd_upper == 0` is valid only if every byte is zero; otherwise its checksum must match (when the
//! cluster has data checksums) and its header must be sane. On top of that, for pages that look like
//! heap pages (main or init fork, no special space), the line pointers and tuple headers are checked
//! with the rules `contrib/amcheck/verify_heapam.c` applies (`check_tuple_header`, the line pointer
//! checks in `verify_heapam`). Index and other pages with a special space keep their own layouts
//! (metapages put data where line pointers would be), so only the generic header rules apply there.

use std::fmt;

use ptrack_types::ForkNumber;
use serde::Serialize;

use crate::checksum::pg_checksum_page;
use crate::page::{
    LinePointer, LpFlags, PD_VALID_FLAG_BITS, PG_PAGE_LAYOUT_VERSION, PageHeader,
    SIZE_OF_PAGE_HEADER, le16, maxalign,
};

/// `SizeofHeapTupleHeader` (`htup_details.h`): 23 bytes.
pub const SIZEOF_HEAP_TUPLE_HEADER: usize = 23;
/// `MaxHeapAttributeNumber`.
const MAX_HEAP_ATTRIBUTE_NUMBER: u16 = 1600;
const HEAP_NATTS_MASK: u16 = 0x07FF;
const HEAP_KEYS_UPDATED: u16 = 0x2000;
const HEAP_ONLY_TUPLE: u16 = 0x8000;
const HEAP_HASNULL: u16 = 0x0001;
const HEAP_XMAX_LOCK_ONLY: u16 = 0x0080;
const HEAP_XMAX_COMMITTED: u16 = 0x0400;
const HEAP_XMAX_IS_MULTI: u16 = 0x1000;

/// What to check on a page.
#[derive(Debug, Clone, Copy)]
pub struct PageCheck {
    /// Whether the cluster has data checksums (`data_checksum_version != 0`).
    pub checksums: bool,
    /// The fork the page belongs to (heap checks apply to main and init forks only).
    pub fork: ForkNumber,
}

/// A header rule of `PageIsVerified` (or one of ours) that a page breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderRule {
    /// `pd_flags` has bits outside `PD_VALID_FLAG_BITS`.
    InvalidFlags,
    /// `pd_lower > pd_upper`.
    LowerAboveUpper,
    /// `pd_upper > pd_special`.
    UpperAboveSpecial,
    /// `pd_special > BLCKSZ`.
    SpecialBeyondPage,
    /// `pd_special` is not a multiple of MAXALIGN.
    SpecialNotAligned,
    /// `pd_lower` is below the 24-byte header (ours: `PageInit` never writes that).
    LowerInsideHeader,
    /// `pd_pagesize_version` is not `BLCKSZ | 4` (ours: every page since 8.3 carries it).
    PageSizeVersion,
}

/// What is wrong with a line pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LpDefect {
    /// `LP_UNUSED` but offset or length is non-zero.
    UnusedHasStorage,
    /// Tuple shorter than a heap tuple header.
    TooShort,
    /// Tuple offset not a multiple of MAXALIGN.
    NotAligned,
    /// Tuple starts below `pd_upper`, in free space or the line pointer array.
    BelowUpper,
    /// Tuple ends past `pd_special`.
    PastSpecial,
    /// Redirect with a non-zero length.
    RedirectHasLength,
    /// Redirect to offset 0 or past the last line pointer.
    RedirectOutOfRange,
    /// Redirect to an unused line pointer.
    RedirectToUnused,
    /// Redirect to a dead line pointer.
    RedirectToDead,
    /// Redirect to another redirect.
    RedirectToRedirect,
    /// Redirect to a tuple that is not heap-only.
    RedirectToNonHeapOnly,
}

/// What is wrong with a heap tuple header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleDefect {
    /// `t_hoff` is not a multiple of MAXALIGN.
    HoffNotAligned,
    /// `t_hoff` is smaller than the header.
    HoffTooSmall,
    /// `t_hoff` is past the end of the tuple.
    HoffPastTuple,
    /// `t_hoff` disagrees with the attribute count and null bitmap.
    HoffMismatch,
    /// More attributes than `MaxHeapAttributeNumber`.
    TooManyAttributes,
    /// `HEAP_XMAX_COMMITTED` together with `HEAP_XMAX_IS_MULTI`.
    MultiXactCommitted,
    /// `HEAP_XMAX_LOCK_ONLY` together with `HEAP_KEYS_UPDATED`.
    LockOnlyKeysUpdated,
}

/// One thing wrong with a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// Stored checksum differs from `pg_checksum_page`.
    ChecksumMismatch {
        /// `pd_checksum` as stored.
        stored: u16,
        /// As computed.
        computed: u16,
    },
    /// `pd_upper == 0` (a new page) but not all bytes are zero.
    NewPageNotZero,
    /// The header breaks a sanity rule.
    InsaneHeader {
        /// Which rule.
        rule: HeaderRule,
        /// Header values for the message.
        flags: u16,
        /// `pd_lower`.
        lower: u16,
        /// `pd_upper`.
        upper: u16,
        /// `pd_special`.
        special: u16,
        /// `pd_pagesize_version`.
        pagesize_version: u16,
    },
    /// `pd_lower` does not end a whole number of heap line pointers.
    LinePointerArray {
        /// `pd_lower`.
        lower: u16,
    },
    /// A line pointer is invalid.
    LinePointer {
        /// Its offset number (1-based).
        item: u16,
        /// What is wrong.
        defect: LpDefect,
        /// `lp_off`.
        off: u16,
        /// `lp_len`.
        len: u16,
    },
    /// A heap tuple header is invalid.
    TupleHeader {
        /// Offset number of its line pointer.
        item: u16,
        /// What is wrong.
        defect: TupleDefect,
        /// `t_hoff`.
        hoff: u8,
        /// `t_infomask`.
        infomask: u16,
        /// `t_infomask2`.
        infomask2: u16,
    },
}

impl Problem {
    /// True for checksum mismatches (what `pg_checksums --check` also reports).
    pub fn is_checksum(&self) -> bool {
        matches!(self, Problem::ChecksumMismatch { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored 0x{stored:04X}, computed 0x{computed:04X}"
            ),
            Problem::NewPageNotZero => {
                f.write_str("pd_upper is 0 (new page) but the page is not all zeroes")
            }
            Problem::InsaneHeader {
                rule,
                flags,
                lower,
                upper,
                special,
                pagesize_version,
            } => {
                f.write_str("insane page header: ")?;
                match rule {
                    HeaderRule::InvalidFlags => {
                        write!(f, "pd_flags 0x{flags:04X} has bits outside 0x0007")
                    }
                    HeaderRule::LowerAboveUpper => {
                        write!(f, "pd_lower {lower} > pd_upper {upper}")
                    }
                    HeaderRule::UpperAboveSpecial => {
                        write!(f, "pd_upper {upper} > pd_special {special}")
                    }
                    HeaderRule::SpecialBeyondPage => {
                        write!(f, "pd_special {special} is past the end of the page")
                    }
                    HeaderRule::SpecialNotAligned => {
                        write!(f, "pd_special {special} is not a multiple of 8")
                    }
                    HeaderRule::LowerInsideHeader => {
                        write!(f, "pd_lower {lower} is inside the 24-byte page header")
                    }
                    HeaderRule::PageSizeVersion => write!(
                        f,
                        "pd_pagesize_version 0x{pagesize_version:04X} is not the page size with layout version 4"
                    ),
                }
            }
            Problem::LinePointerArray { lower } => write!(
                f,
                "pd_lower {lower} does not end a whole number of 4-byte line pointers"
            ),
            Problem::LinePointer {
                item,
                defect,
                off,
                len,
            } => {
                write!(f, "line pointer {item} (off {off}, len {len}) invalid: ")?;
                f.write_str(match defect {
                    LpDefect::UnusedHasStorage => "unused but has storage",
                    LpDefect::TooShort => "tuple shorter than a heap tuple header (23 bytes)",
                    LpDefect::NotAligned => "tuple offset not a multiple of 8",
                    LpDefect::BelowUpper => {
                        "tuple starts below pd_upper (in free space or the line pointer array)"
                    }
                    LpDefect::PastSpecial => "tuple ends past pd_special",
                    LpDefect::RedirectHasLength => "redirect with non-zero length",
                    LpDefect::RedirectOutOfRange => {
                        "redirect to a line pointer that does not exist"
                    }
                    LpDefect::RedirectToUnused => "redirect to an unused line pointer",
                    LpDefect::RedirectToDead => "redirect to a dead line pointer",
                    LpDefect::RedirectToRedirect => "redirect to another redirect",
                    LpDefect::RedirectToNonHeapOnly => "redirect to a tuple that is not heap-only",
                })
            }
            Problem::TupleHeader {
                item,
                defect,
                hoff,
                infomask,
                infomask2,
            } => {
                write!(
                    f,
                    "tuple {item} header invalid (t_hoff {hoff}, t_infomask 0x{infomask:04X}, t_infomask2 0x{infomask2:04X}): "
                )?;
                f.write_str(match defect {
                    TupleDefect::HoffNotAligned => "t_hoff not a multiple of 8",
                    TupleDefect::HoffTooSmall => "t_hoff smaller than the tuple header",
                    TupleDefect::HoffPastTuple => "t_hoff past the end of the tuple",
                    TupleDefect::HoffMismatch => {
                        "t_hoff does not match the attribute count and null bitmap"
                    }
                    TupleDefect::TooManyAttributes => "more than 1600 attributes",
                    TupleDefect::MultiXactCommitted => "multixact xmax marked committed",
                    TupleDefect::LockOnlyKeysUpdated => "xmax both lock-only and key-updating",
                })
            }
        }
    }
}

/// Checks one page of `page.len()` bytes (BLCKSZ) at absolute block number `blkno` of its fork.
/// Returns every problem found; an empty vector means the page is valid. Never panics.
pub fn verify_page(page: &[u8], blkno: u32, check: PageCheck) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(h) = PageHeader::parse(page) else {
        problems.push(Problem::NewPageNotZero);
        return problems;
    };
    if h.is_new() {
        if page.iter().any(|&b| b != 0) {
            problems.push(Problem::NewPageNotZero);
        }
        return problems;
    }
    if check.checksums {
        let computed = pg_checksum_page(page, blkno);
        if computed != h.checksum {
            problems.push(Problem::ChecksumMismatch {
                stored: h.checksum,
                computed,
            });
        }
    }
    let header_ok = check_header(&h, page.len(), &mut problems);
    let heap_fork = matches!(check.fork, ForkNumber::Main | ForkNumber::Init);
    if header_ok && heap_fork && usize::from(h.special) == page.len() {
        check_heap_items(page, &h, &mut problems);
    }
    problems
}

/// Applies the header rules; returns true when the header can be trusted.
fn check_header(h: &PageHeader, blcksz: usize, problems: &mut Vec<Problem>) -> bool {
    let mut rules = Vec::new();
    if h.flags & !PD_VALID_FLAG_BITS != 0 {
        rules.push(HeaderRule::InvalidFlags);
    }
    if h.lower > h.upper {
        rules.push(HeaderRule::LowerAboveUpper);
    }
    if h.upper > h.special {
        rules.push(HeaderRule::UpperAboveSpecial);
    }
    if usize::from(h.special) > blcksz {
        rules.push(HeaderRule::SpecialBeyondPage);
    }
    if usize::from(h.special) % 8 != 0 {
        rules.push(HeaderRule::SpecialNotAligned);
    }
    if usize::from(h.lower) < SIZE_OF_PAGE_HEADER {
        rules.push(HeaderRule::LowerInsideHeader);
    }
    if h.page_size() != blcksz || h.layout_version() != PG_PAGE_LAYOUT_VERSION {
        rules.push(HeaderRule::PageSizeVersion);
    }
    let ok = rules.is_empty();
    problems.extend(rules.into_iter().map(|rule| Problem::InsaneHeader {
        rule,
        flags: h.flags,
        lower: h.lower,
        upper: h.upper,
        special: h.special,
        pagesize_version: h.pagesize_version,
    }));
    ok
}

/// True when line pointer `raw` is an unused pointer without storage, or a normal pointer to a
/// tuple inside `[pd_upper, pd_special)` whose header passes every tuple check. This is the
/// common case, tested with few branches; anything else goes to the full checker, which names
/// the defect.
#[inline(always)]
fn item_fast_ok(page: &[u8], raw: u32, upper: u32, special: u32) -> bool {
    if raw == 0 {
        return true;
    }
    let (off, flags, len) = (raw & 0x7FFF, (raw >> 15) & 3, raw >> 17);
    if flags != 1
        || len < SIZEOF_HEAP_TUPLE_HEADER as u32
        || off & 7 != 0
        || off < upper
        || off + len > special
    {
        return false;
    }
    let Some(t) = page.get(off as usize..off as usize + SIZEOF_HEAP_TUPLE_HEADER) else {
        return false;
    };
    let Some(&[i2a, i2b, ia, ib, hoff]) = t.get(18..23).and_then(|x| <&[u8; 5]>::try_from(x).ok())
    else {
        return false;
    };
    let infomask2 = u16::from_le_bytes([i2a, i2b]);
    let infomask = u16::from_le_bytes([ia, ib]);
    let natts = usize::from(infomask2 & HEAP_NATTS_MASK);
    let expected = if infomask & HEAP_HASNULL != 0 {
        maxalign(SIZEOF_HEAP_TUPLE_HEADER + natts.div_ceil(8))
    } else {
        maxalign(SIZEOF_HEAP_TUPLE_HEADER)
    };
    usize::from(hoff) == expected
        && u32::from(hoff) <= len
        && natts <= usize::from(MAX_HEAP_ATTRIBUTE_NUMBER)
        && !(infomask & HEAP_XMAX_COMMITTED != 0 && infomask & HEAP_XMAX_IS_MULTI != 0)
        && !(infomask & HEAP_XMAX_LOCK_ONLY != 0 && infomask2 & HEAP_KEYS_UPDATED != 0)
}

/// Line pointer and tuple header checks for a heap page whose header is sane.
fn check_heap_items(page: &[u8], h: &PageHeader, problems: &mut Vec<Problem>) {
    if !(usize::from(h.lower) - SIZE_OF_PAGE_HEADER).is_multiple_of(4) {
        problems.push(Problem::LinePointerArray { lower: h.lower });
        return;
    }
    let nlp = h.line_pointer_count();
    let Some(array) = page.get(SIZE_OF_PAGE_HEADER..SIZE_OF_PAGE_HEADER + nlp * 4) else {
        return;
    };
    let (upper, special) = (u32::from(h.upper), u32::from(h.special));
    for (i, lp) in array.chunks_exact(4).enumerate() {
        let raw = u32::from_le_bytes(lp.try_into().unwrap_or_default());
        if !item_fast_ok(page, raw, upper, special) {
            check_item(page, h, nlp, i + 1, problems);
        }
    }
}

/// The full checks of line pointer number `item`, naming every defect.
fn check_item(page: &[u8], h: &PageHeader, nlp: usize, item: usize, problems: &mut Vec<Problem>) {
    let Some(lp) = LinePointer::read(page, item) else {
        return;
    };
    let mut defects = Vec::new();
    match lp.flags {
        LpFlags::Unused => {
            if lp.off != 0 || lp.len != 0 {
                defects.push(LpDefect::UnusedHasStorage);
            }
        }
        LpFlags::Redirect => redirect_defects(page, h, nlp, &lp, &mut defects),
        LpFlags::Dead if lp.len == 0 => {}
        LpFlags::Normal | LpFlags::Dead => {
            if lp.flags == LpFlags::Normal && usize::from(lp.len) < SIZEOF_HEAP_TUPLE_HEADER {
                defects.push(LpDefect::TooShort);
            }
            if !usize::from(lp.off).is_multiple_of(8) {
                defects.push(LpDefect::NotAligned);
            }
            if lp.off < h.upper {
                defects.push(LpDefect::BelowUpper);
            }
            if usize::from(lp.off) + usize::from(lp.len) > usize::from(h.special) {
                defects.push(LpDefect::PastSpecial);
            }
        }
    }
    // item <= nlp <= (65535 - 24) / 4, so it fits in u16.
    let item16 = item as u16;
    let pointer_ok = defects.is_empty();
    problems.extend(defects.into_iter().map(|defect| Problem::LinePointer {
        item: item16,
        defect,
        off: lp.off,
        len: lp.len,
    }));
    if pointer_ok && lp.flags == LpFlags::Normal {
        check_tuple_header(page, item16, &lp, problems);
    }
}

/// Defects of a redirect line pointer: it must have no length and point at an existing
/// heap-only tuple.
fn redirect_defects(
    page: &[u8],
    h: &PageHeader,
    nlp: usize,
    lp: &LinePointer,
    defects: &mut Vec<LpDefect>,
) {
    if lp.len != 0 {
        defects.push(LpDefect::RedirectHasLength);
    }
    let target = usize::from(lp.off);
    if target == 0 || target > nlp {
        defects.push(LpDefect::RedirectOutOfRange);
        return;
    }
    let Some(t) = LinePointer::read(page, target) else {
        return;
    };
    match t.flags {
        LpFlags::Unused => defects.push(LpDefect::RedirectToUnused),
        LpFlags::Dead => defects.push(LpDefect::RedirectToDead),
        LpFlags::Redirect => defects.push(LpDefect::RedirectToRedirect),
        LpFlags::Normal => {
            let infomask2 = le16(page, usize::from(t.off) + 18).unwrap_or(0);
            if tuple_in_bounds(&t, h) && infomask2 & HEAP_ONLY_TUPLE == 0 {
                defects.push(LpDefect::RedirectToNonHeapOnly);
            }
        }
    }
}

fn tuple_in_bounds(lp: &LinePointer, h: &PageHeader) -> bool {
    usize::from(lp.len) >= SIZEOF_HEAP_TUPLE_HEADER
        && usize::from(lp.off) % 8 == 0
        && lp.off >= h.upper
        && usize::from(lp.off) + usize::from(lp.len) <= usize::from(h.special)
}

/// `check_tuple_header` of amcheck, for the parts that need no catalog.
fn check_tuple_header(page: &[u8], item: u16, lp: &LinePointer, problems: &mut Vec<Problem>) {
    let base = usize::from(lp.off);
    let (Some(infomask2), Some(infomask), Some(&hoff)) = (
        le16(page, base + 18),
        le16(page, base + 20),
        page.get(base + 22),
    ) else {
        return;
    };
    let mut bad = |defect| {
        problems.push(Problem::TupleHeader {
            item,
            defect,
            hoff,
            infomask,
            infomask2,
        })
    };
    let natts = infomask2 & HEAP_NATTS_MASK;
    let hoff_us = usize::from(hoff);
    if hoff_us % 8 != 0 {
        bad(TupleDefect::HoffNotAligned);
    } else if hoff_us < maxalign(SIZEOF_HEAP_TUPLE_HEADER) {
        bad(TupleDefect::HoffTooSmall);
    } else if hoff_us > usize::from(lp.len) {
        bad(TupleDefect::HoffPastTuple);
    } else {
        let expected = if infomask & HEAP_HASNULL != 0 {
            maxalign(SIZEOF_HEAP_TUPLE_HEADER + usize::from(natts).div_ceil(8))
        } else {
            maxalign(SIZEOF_HEAP_TUPLE_HEADER)
        };
        if hoff_us != expected {
            bad(TupleDefect::HoffMismatch);
        }
    }
    if natts > MAX_HEAP_ATTRIBUTE_NUMBER {
        bad(TupleDefect::TooManyAttributes);
    }
    if infomask & HEAP_XMAX_COMMITTED != 0 && infomask & HEAP_XMAX_IS_MULTI != 0 {
        bad(TupleDefect::MultiXactCommitted);
    }
    if infomask & HEAP_XMAX_LOCK_ONLY != 0 && infomask2 & HEAP_KEYS_UPDATED != 0 {
        bad(TupleDefect::LockOnlyKeysUpdated);
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
