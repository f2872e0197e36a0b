//! Is this file the WAL segment its name says, of this cluster? The check `ptrack archive-push`
//! makes before a segment enters the archive: the length is the segment size, the first page
//! has a long header naming the cluster's system identifier, segment size and WAL page size,
//! and every page's header names this page's own address, a known magic and a timeline no later
//! than the file name's (the first segment of a new timeline starts with pages of its parent's,
//! see `xlog.c: XLogInitNewTimeline`) that never goes back. A page of zeros is accepted (the
//! space a tool zero-filled), anything else is refused with the offset where it is.
//!
//! Mirrors `src/backend/access/transam/xlogreader.c: XLogReaderValidatePageHeader`, applied to
//! every page of a file rather than to the pages a reader happens to need.

use ptrack_types::{PgMajorVersion, TimeLineId, WalSegSize};

use crate::consts::{
    SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_SHORT_PHD, XLP_ALL_FLAGS, XLP_LONG_HEADER,
};
use crate::segment::SegmentName;

/// The WAL page size every supported build uses (`XLOG_BLCKSZ`).
pub const XLOG_BLCKSZ: u32 = 8192;

/// What a segment that passed the check says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
    /// The cluster's system identifier (the first page's long header).
    pub system_identifier: u64,
    /// The major that wrote it (by page magic).
    pub major: PgMajorVersion,
    /// Pages with a valid header (the rest are zeros).
    pub pages: u32,
}

/// Why a file is not the segment it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentFault {
    /// Not a whole segment (a full segment, or for a `.partial` one a whole number of pages).
    #[error("it has {found} bytes, not {expected} (a WAL segment of this cluster is that long)")]
    Length {
        /// Its length.
        found: u64,
        /// The segment size.
        expected: u64,
    },
    /// The first page is not a segment's first page.
    #[error("its first page has no long header (info {info:#06x}): not the start of a WAL segment")]
    NoLongHeader {
        /// `xlp_info` found.
        info: u16,
    },
    /// Another cluster's segment.
    #[error("it belongs to the cluster with system identifier {found}, not {expected}")]
    OtherCluster {
        /// The segment's.
        found: u64,
        /// The cluster's.
        expected: u64,
    },
    /// Another segment or page size.
    #[error(
        "its header says segment size {seg_size} and page size {page_size}, expected {expected_seg} and {XLOG_BLCKSZ}"
    )]
    Sizes {
        /// `xlp_seg_size`.
        seg_size: u32,
        /// `xlp_xlog_blcksz`.
        page_size: u32,
        /// The cluster's segment size.
        expected_seg: u64,
    },
    /// A page whose header is not one PostgreSQL writes.
    #[error(
        "the page at offset {offset} has no valid WAL page header (magic {magic:#06x}, info {info:#06x})"
    )]
    BadHeader {
        /// Offset in the file.
        offset: u64,
        /// `xlp_magic`.
        magic: u16,
        /// `xlp_info`.
        info: u16,
    },
    /// A page of another major than the first page's.
    #[error(
        "the page at offset {offset} was written by another PostgreSQL major than the first page"
    )]
    MixedMajors {
        /// Offset in the file.
        offset: u64,
    },
    /// A page with another page's address: a renamed or recycled file.
    #[error(
        "the page at offset {offset} is page {found} of the WAL, not {expected}: the file holds another segment (renamed or recycled)"
    )]
    Address {
        /// Offset in the file.
        offset: u64,
        /// `xlp_pageaddr`.
        found: ptrack_types::Lsn,
        /// This page's address.
        expected: ptrack_types::Lsn,
    },
    /// No page of the timeline the name says.
    #[error(
        "no page is on timeline {timeline}, as its name says (its pages are on timeline {found})"
    )]
    NotOnTimeline {
        /// The name's timeline.
        timeline: TimeLineId,
        /// The pages' last timeline.
        found: TimeLineId,
    },
    /// A page of a later timeline than the file name's, or going back.
    #[error("the page at offset {offset} is on timeline {found}, which {why}")]
    Timeline {
        /// Offset in the file.
        offset: u64,
        /// `xlp_tli`.
        found: TimeLineId,
        /// Why that is wrong.
        why: String,
    },
}

/// Checks that `bytes` is segment `name` of a cluster with segment size `seg` (and system
/// identifier `sysid` when known). `partial`: the last segment of a timeline (`.partial`),
/// which may be shorter, in whole pages.
pub fn check_segment(
    bytes: &[u8],
    name: SegmentName,
    seg: WalSegSize,
    sysid: Option<u64>,
    partial: bool,
) -> Result<SegmentFacts, SegmentFault> {
    let page = u64::from(XLOG_BLCKSZ);
    let len = bytes.len() as u64;
    let whole =
        len == seg.bytes() || (partial && len > 0 && len < seg.bytes() && len.is_multiple_of(page));
    if !whole {
        return Err(SegmentFault::Length {
            found: len,
            expected: seg.bytes(),
        });
    }
    let first = header(bytes, 0);
    if first.info & XLP_LONG_HEADER == 0 {
        return Err(SegmentFault::NoLongHeader { info: first.info });
    }
    let found_sysid = u64_at(bytes, 24);
    if let Some(expected) = sysid
        && expected != found_sysid
    {
        return Err(SegmentFault::OtherCluster {
            found: found_sysid,
            expected,
        });
    }
    let (seg_size, page_size) = (u32_at(bytes, 32), u32_at(bytes, 36));
    if u64::from(seg_size) != seg.bytes() || page_size != XLOG_BLCKSZ {
        return Err(SegmentFault::Sizes {
            seg_size,
            page_size,
            expected_seg: seg.bytes(),
        });
    }
    let start = seg.start(name.segno).0;
    let mut major = None;
    let mut last_tli = 0u32;
    let mut pages = 0u32;
    let mut on_name_tli = false;
    for (i, p) in bytes.chunks(page as usize).enumerate() {
        let offset = i as u64 * page;
        if p.iter().all(|&b| b == 0) {
            continue;
        }
        // A .partial segment (a promoted standby's last one) holds WAL up to where it was
        // received, then whatever the recycled file held: its pages are checked to the first
        // one that is not this segment's.
        if partial && i > 0 && !page_of(p, start + offset) {
            break;
        }
        let h = header(p, 0);
        let m = PgMajorVersion::ALL
            .into_iter()
            .find(|m| m.xlog_page_magic() == h.magic);
        let bad = SegmentFault::BadHeader {
            offset,
            magic: h.magic,
            info: h.info,
        };
        let Some(m) = m else { return Err(bad) };
        let long = h.info & XLP_LONG_HEADER != 0;
        if h.info & !XLP_ALL_FLAGS != 0 || long != (i == 0) {
            return Err(bad);
        }
        match major {
            None => major = Some(m),
            Some(first) if first != m => return Err(SegmentFault::MixedMajors { offset }),
            Some(_) => {}
        }
        let expected = start + offset;
        if h.pageaddr != expected {
            return Err(SegmentFault::Address {
                offset,
                found: ptrack_types::Lsn(h.pageaddr),
                expected: ptrack_types::Lsn(expected),
            });
        }
        let why = match h.tli {
            t if t > name.tli.0 => Some(format!("is later than the file name's {}", name.tli)),
            t if t < last_tli => Some(format!("goes back from timeline {last_tli}")),
            0 => Some("does not exist".into()),
            _ => None,
        };
        if let Some(why) = why {
            return Err(SegmentFault::Timeline {
                offset,
                found: TimeLineId(h.tli),
                why,
            });
        }
        last_tli = h.tli;
        on_name_tli |= h.tli == name.tli.0;
        pages += 1;
    }
    // Every segment has pages of the timeline its name says (the first segment of a new
    // timeline starts with its parent's pages, then its own).
    if !on_name_tli {
        return Err(SegmentFault::NotOnTimeline {
            timeline: name.tli,
            found: TimeLineId(last_tli),
        });
    }
    Ok(SegmentFacts {
        system_identifier: found_sysid,
        // The first page has a long header, so it is not zeros: `major` is set.
        major: major.unwrap_or(PgMajorVersion::V18),
        pages,
    })
}

/// Whether `p` has a valid page header for the page at `addr`.
fn page_of(p: &[u8], addr: u64) -> bool {
    let h = header(p, 0);
    let known = PgMajorVersion::ALL
        .into_iter()
        .any(|m| m.xlog_page_magic() == h.magic);
    known && h.info & !XLP_ALL_FLAGS == 0 && h.pageaddr == addr
}

struct Header {
    magic: u16,
    info: u16,
    tli: u32,
    pageaddr: u64,
}

/// The short header at `at` (the caller has checked that a page is there).
fn header(b: &[u8], at: usize) -> Header {
    debug_assert!(b.len() >= at + SIZE_OF_XLOG_SHORT_PHD as usize);
    debug_assert!(SIZE_OF_XLOG_LONG_PHD <= u64::from(XLOG_BLCKSZ));
    Header {
        magic: u16::from_le_bytes([b[at], b[at + 1]]),
        info: u16::from_le_bytes([b[at + 2], b[at + 3]]),
        tli: u32_at(b, at + 4),
        pageaddr: u64_at(b, at + 8),
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Why a segment's records fail [`check_records`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordFault {
    /// Valid WAL ends inside a whole segment (a record's CRC, length, back link or resource
    /// manager is wrong there): recovery would stop at `lsn`.
    #[error("its WAL ends at {lsn}, inside the segment, on a bad record ({reason})")]
    EndsEarly {
        /// Where decoding stopped.
        lsn: ptrack_types::Lsn,
        /// Why (the decoder's reason).
        reason: String,
    },
    /// Bytes that are not WAL of this cluster.
    #[error("{0}")]
    Bad(crate::WalError),
}

/// Decodes every record that begins in `bytes`, segment `name` (which passed
/// [`check_segment`]), checking each one's header, back link and CRC-32C as recovery does. A
/// whole segment's records must run to its end or to an `XLOG_SWITCH`; the last one may
/// continue into the next segment, whose bytes `next` (when archived) finish and check it. A
/// `.partial` one's may end anywhere. Returns how many records begin in it.
pub fn check_records(
    bytes: &[u8],
    next: Option<&[u8]>,
    name: SegmentName,
    seg: WalSegSize,
    blcksz: u32,
    sysid: Option<u64>,
    partial: bool,
) -> Result<u64, RecordFault> {
    use crate::{DecoderConfig, Poll, Start, WalDecoder};
    let start = seg.start(name.segno);
    let cfg = DecoderConfig {
        seg_size: seg,
        xlog_blcksz: XLOG_BLCKSZ,
        blcksz,
        system_identifier: sysid,
        major: None,
    };
    let end = ptrack_types::Lsn(start.0 + seg.bytes());
    let mut d = WalDecoder::new(cfg, start, Start::FirstOnPage(start));
    d.feed(bytes);
    let mut next = next.filter(|_| !partial);
    let mut records = 0;
    loop {
        if d.position() >= end {
            return Ok(records);
        }
        match d.poll().map_err(RecordFault::Bad)? {
            Poll::Record(r) if r.lsn < end => records += 1,
            Poll::Record(_) => return Ok(records),
            Poll::Abandoned { .. } => {}
            Poll::NeedMore => match next.take() {
                Some(n) => d.feed(n),
                None => return Ok(records),
            },
            Poll::End(e) if partial || e.lsn >= end => return Ok(records),
            Poll::End(e) => {
                return Err(RecordFault::EndsEarly {
                    lsn: e.lsn,
                    reason: format!("{:?}", e.reason),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::WalBuilder;

    fn seg() -> WalSegSize {
        WalSegSize::new(1 << 20).unwrap()
    }

    /// Segment 7 (timeline 1 in every page) with a few records and a switch.
    fn segment() -> (Vec<u8>, u64) {
        let w = builder(7);
        (w.bytes().to_vec(), w.sysid)
    }

    fn builder(segno: u64) -> WalBuilder {
        let mut w = WalBuilder::new(PgMajorVersion::V16, seg().bytes(), segno);
        for i in 0..200u32 {
            w.record(
                crate::consts::RM_HEAP_ID,
                0,
                &WalBuilder::block_body(i, i, 100),
            );
        }
        w.switch();
        w
    }

    /// Sets the timeline of the page at `page`.
    fn set_tli(b: &mut [u8], page: usize, tli: u32) {
        let at = page * XLOG_BLCKSZ as usize + 4;
        b[at..at + 4].copy_from_slice(&tli.to_le_bytes());
    }

    #[test]
    fn a_real_layout_passes_and_each_kind_of_damage_is_named() {
        let (b, sysid) = segment();
        assert_eq!(b.len() as u64, seg().bytes());
        let name = SegmentName {
            tli: TimeLineId(1),
            segno: 7,
        };
        let f = check_segment(&b, name, seg(), Some(sysid), false).unwrap();
        assert_eq!(f.system_identifier, sysid);
        assert_eq!(f.major, PgMajorVersion::V16);
        assert_eq!(f.pages as u64, seg().bytes() / u64::from(XLOG_BLCKSZ));
        // Another cluster.
        assert!(matches!(
            check_segment(&b, name, seg(), Some(sysid + 1), false),
            Err(SegmentFault::OtherCluster { .. })
        ));
        // Renamed: the name of the next segment.
        let renamed = SegmentName { segno: 8, ..name };
        assert!(matches!(
            check_segment(&b, renamed, seg(), None, false),
            Err(SegmentFault::Address { offset: 0, .. })
        ));
        // A later timeline in the name than in the pages: the first segment of a new timeline
        // starts with its parent's pages, but has pages of its own too.
        let newer = SegmentName {
            tli: TimeLineId(2),
            ..name
        };
        assert!(matches!(
            check_segment(&b, newer, seg(), None, false),
            Err(SegmentFault::NotOnTimeline { .. })
        ));
        let mut branched = b.clone();
        for p in 100..(b.len() / XLOG_BLCKSZ as usize) {
            set_tli(&mut branched, p, 2);
        }
        assert!(check_segment(&branched, newer, seg(), None, false).is_ok());
        assert!(check_segment(&branched, name, seg(), None, false).is_err());
        // Pages of a later timeline than the name's, or going back.
        let mut later = b.clone();
        set_tli(&mut later, 3, 2);
        assert!(matches!(
            check_segment(&later, name, seg(), None, false),
            Err(SegmentFault::Timeline { offset, .. }) if offset == 3 * u64::from(XLOG_BLCKSZ)
        ));
        assert!(
            check_segment(&later, newer, seg(), None, false).is_err(),
            "back to 1 after 2"
        );
        // A .partial segment with a recycled file's stale pages after its WAL: accepted, the
        // same bytes as a whole segment are not.
        let mut stale = b.clone();
        let other = builder(9).bytes().to_vec();
        let at = 40 * XLOG_BLCKSZ as usize;
        stale[at..].copy_from_slice(&other[at..]);
        assert!(check_segment(&stale, name, seg(), None, true).is_ok());
        assert!(matches!(
            check_segment(&stale, name, seg(), None, false),
            Err(SegmentFault::Address { .. })
        ));
        // Truncated.
        assert!(matches!(
            check_segment(&b[..b.len() - 1], name, seg(), None, false),
            Err(SegmentFault::Length { .. })
        ));
        // A partial segment in whole pages is accepted only as .partial.
        let half = &b[..b.len() / 2];
        assert!(check_segment(half, name, seg(), None, true).is_ok());
        assert!(check_segment(half, name, seg(), None, false).is_err());
        // A garbage page header in the middle, and zeros (accepted).
        let mut g = b.clone();
        let at = 5 * XLOG_BLCKSZ as usize;
        g[at..at + 16].copy_from_slice(&[0xAB; 16]);
        assert!(matches!(
            check_segment(&g, name, seg(), None, false),
            Err(SegmentFault::BadHeader { offset, .. }) if offset == at as u64
        ));
        g[at..at + XLOG_BLCKSZ as usize].fill(0);
        assert!(check_segment(&g, name, seg(), None, false).is_ok());
        // Another segment size.
        let small = WalSegSize::new(1 << 21).unwrap();
        assert!(check_segment(&b, name, small, None, true).is_err());
    }

    #[test]
    fn records_are_decoded_to_the_end_and_a_damaged_one_is_named() {
        let (b, sysid) = segment();
        let name = SegmentName {
            tli: TimeLineId(1),
            segno: 7,
        };
        let n = check_records(&b, None, name, seg(), 8192, Some(sysid), false).unwrap();
        assert_eq!(n, 201, "200 records and the switch");
        // A flipped byte in a record's body: its CRC fails, recovery would stop there.
        let mut d = b.clone();
        d[XLOG_BLCKSZ as usize * 3 + 500] ^= 0x40;
        let e = check_records(&d, None, name, seg(), 8192, Some(sysid), false).unwrap_err();
        assert!(matches!(e, RecordFault::EndsEarly { .. }), "{e}");
        // In a .partial segment WAL may end anywhere, but not on another cluster's page.
        let mut z = b.clone();
        z[XLOG_BLCKSZ as usize * 3..].fill(0);
        assert!(check_records(&z, None, name, seg(), 8192, Some(sysid), true).is_ok());
        assert!(check_records(&z, None, name, seg(), 8192, Some(sysid), false).is_err());
        assert!(check_records(&b, None, name, seg(), 8192, Some(sysid + 1), true).is_err());
    }

    #[test]
    fn a_record_continued_into_the_next_segment_is_checked_with_it() {
        let mut w = WalBuilder::new(PgMajorVersion::V16, seg().bytes(), 7);
        let one = seg().bytes() as usize;
        let mut i = 0;
        while w.bytes().len() < one + 2 * XLOG_BLCKSZ as usize {
            w.record(
                crate::consts::RM_HEAP_ID,
                0,
                &WalBuilder::block_body(i, i, 3000),
            );
            i += 1;
        }
        let all = w.bytes().to_vec();
        let (a, b) = all.split_at(one);
        let rem_len = u32_at(b, 16);
        assert!(
            rem_len > 16,
            "the first record of segment 7 continues into 8 ({rem_len})"
        );
        let name = SegmentName {
            tli: TimeLineId(1),
            segno: 7,
        };
        let sysid = Some(w.sysid);
        assert!(check_records(a, Some(b), name, seg(), 8192, sysid, false).is_ok());
        let mut d = b.to_vec();
        d[SIZE_OF_XLOG_LONG_PHD as usize + 8] ^= 0x10;
        assert!(check_records(a, None, name, seg(), 8192, sysid, false).is_ok());
        let e = check_records(a, Some(&d), name, seg(), 8192, sysid, false).unwrap_err();
        assert!(matches!(e, RecordFault::EndsEarly { .. }), "{e}");
    }

    #[test]
    fn never_panics_on_short_or_random_input() {
        let name = SegmentName {
            tli: TimeLineId(1),
            segno: 1,
        };
        for n in [0usize, 1, 23, 24, 39, 40, 8191, 8192, 1 << 20] {
            let v: Vec<u8> = (0..n).map(|i| (i * 7919 % 251) as u8).collect();
            let _ = check_segment(&v, name, seg(), None, true);
            let _ = check_segment(&v, name, seg(), None, false);
            let _ = check_records(&v, None, name, seg(), 8192, None, true);
        }
    }
}
