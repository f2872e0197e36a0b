//! `WalDecoder`: a sans-I/O decoder that turns a contiguous stream of WAL bytes into records.
//!
//! The caller feeds bytes in LSN order (any chunk sizes, whole segments including the padding
//! after an `XLOG_SWITCH`) and polls for records. Mirrors
//! `src/backend/access/transam/xlogreader.c: XLogDecodeNextRecord, XLogReaderValidatePageHeader,
//! ValidXLogRecordHeader, ValidXLogRecord, XLogFindNextRecord` (spec §1–2):
//!
//! * every page header is validated when first touched (magic of a supported major, flags, long
//!   header at segment starts with segment size, page size and system identifier, `xlp_pageaddr`,
//!   non-decreasing timeline);
//! * records are reassembled across pages and segments, checking `XLP_FIRST_IS_CONTRECORD` and
//!   `xlp_rem_len` on each continuation page; a page flagged `XLP_FIRST_IS_OVERWRITE_CONTRECORD`
//!   abandons the record being gathered ([`Poll::Abandoned`]) and decoding resumes on that page;
//! * each record's header (length, rmgr id, `xl_prev` link) and CRC-32C are checked before its body
//!   is decoded;
//! * `XLOG_SWITCH` skips to the next segment.
//!
//! The end of valid WAL (zeroes, a length that cannot be, a recycled page with a stale address, a
//! broken prev link, a CRC mismatch) is reported as [`Poll::End`] with the reason, distinct from
//! [`WalError`], which means bytes that cannot be WAL of the cluster at all (corruption).

use ptrack_types::{Lsn, PgMajorVersion, WalSegSize};
use serde::Serialize;

use crate::buffer::ChunkBuf;
use crate::consts::*;
use crate::pieces::{copy_out, copy_out_into, pieces_crc};
use crate::record::{Record, RecordError, decode_record_into, record_crc};

/// Fixed properties of the WAL being decoded.
#[derive(Debug, Clone, Copy)]
pub struct DecoderConfig {
    /// WAL segment size (from pg_control or the first long page header).
    pub seg_size: WalSegSize,
    /// WAL page size (`XLOG_BLCKSZ`).
    pub xlog_blcksz: u32,
    /// Data page size (`BLCKSZ`), needed for uncompressed image holes.
    pub blcksz: u32,
    /// Expected system identifier, checked against every long page header when known.
    pub system_identifier: Option<u64>,
    /// Expected major version; when `None` it is taken from the first page's magic.
    pub major: Option<PgMajorVersion>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            seg_size: WalSegSize::DEFAULT,
            xlog_blcksz: 8192,
            blcksz: 8192,
            system_identifier: None,
            major: None,
        }
    }
}

/// Where decoding starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// At a known record start (a checkpoint's redo LSN, a resume position); `prev` is the
    /// previous record's LSN when known (checked against `xl_prev`).
    Record {
        /// The record's LSN.
        lsn: Lsn,
        /// `xl_prev` it must carry, if known.
        prev: Option<Lsn>,
    },
    /// At the first record that begins on the page at `page_lsn` (skipping the tail of a record
    /// continued from an earlier page), like `XLogFindNextRecord`.
    FirstOnPage(Lsn),
}

/// Why valid WAL ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum EndReason {
    /// `xl_tot_len` is zero: preallocated or zeroed space.
    ZeroLength,
    /// `xl_tot_len` below the header size or above the maximum.
    BadLength {
        /// The length read.
        tot_len: u32,
    },
    /// A zeroed page header.
    ZeroPage,
    /// `xlp_pageaddr` is not this page's address: a recycled segment.
    PageAddrMismatch {
        /// Address found.
        found: Lsn,
    },
    /// `xl_prev` does not point at the previous record.
    PrevLinkMismatch {
        /// Expected previous record.
        expected: Lsn,
        /// Found.
        found: Lsn,
    },
    /// An invalid resource manager id.
    BadRmgr {
        /// The id.
        rmid: u8,
    },
    /// The record CRC does not match.
    CrcMismatch {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A continuation page does not continue the record.
    MissingContrecord,
    /// A page header that is not a WAL page header (unknown magic or flag bits): garbage or
    /// never-written space after the end of WAL.
    InvalidPageHeader {
        /// `xlp_magic` found.
        magic: u16,
        /// `xlp_info` found.
        info: u16,
    },
    /// The timeline went backwards.
    TimelineBackwards {
        /// Timeline of the earlier page.
        previous: u32,
        /// Timeline of this page.
        found: u32,
    },
}

/// The end of valid WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndOfWal {
    /// LSN of the record (or page) where decoding stopped.
    pub lsn: Lsn,
    /// Why.
    #[serde(flatten)]
    pub reason: EndReason,
}

/// Bytes that cannot be WAL of this cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A page magic of no supported major (or not the expected one).
    #[error("WAL page at {lsn}: magic 0x{magic:04X} is not PostgreSQL {expected} WAL")]
    BadMagic {
        /// Page LSN.
        lsn: Lsn,
        /// Magic found.
        magic: u16,
        /// What was expected.
        expected: String,
    },
    /// Invalid page header fields.
    #[error("WAL page at {lsn}: {why}")]
    BadPageHeader {
        /// Page LSN.
        lsn: Lsn,
        /// What is wrong.
        why: String,
    },
    /// A record with a valid CRC whose body cannot be parsed.
    #[error("WAL record at {lsn}: {source}")]
    BadRecord {
        /// Record LSN.
        lsn: Lsn,
        /// What is wrong.
        source: RecordError,
    },
    /// Bytes were fed out of order.
    #[error("WAL bytes fed at {got}, expected the stream to continue at {expected}")]
    Gap {
        /// Expected LSN.
        expected: Lsn,
        /// LSN given.
        got: Lsn,
    },
}

/// Result of [`WalDecoder::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The next record.
    Record(Box<Record>),
    /// The record starting at `lsn` was abandoned (its tail was never written; the server
    /// overwrote WAL from `at`, marked `XLP_FIRST_IS_OVERWRITE_CONTRECORD`). Its block references
    /// never happened.
    Abandoned {
        /// The abandoned record.
        lsn: Lsn,
        /// The page where WAL continues.
        at: Lsn,
    },
    /// Feed more bytes.
    NeedMore,
    /// The end of valid WAL was reached; every later poll returns it again.
    End(EndOfWal),
}

/// Result of [`WalDecoder::poll_into`]: a [`Poll`] whose record is in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// The next record was decoded into the buffer.
    Record,
    /// See [`Poll::Abandoned`].
    Abandoned {
        /// The abandoned record.
        lsn: Lsn,
        /// The page where WAL continues.
        at: Lsn,
    },
    /// Feed more bytes.
    NeedMore,
    /// See [`Poll::End`].
    End(EndOfWal),
}

/// Where a record's bytes are: (LSN, length) per page.
type Pieces = Vec<(u64, u64)>;

#[derive(Debug, Clone, Copy)]
struct PageHdr {
    info: u16,
    rem_len: u32,
    size: u64,
}

enum Step<T> {
    Ok(T),
    NeedMore,
    End(EndOfWal),
    Abandon(Lsn),
}

macro_rules! step {
    ($e:expr) => {
        match $e? {
            Step::Ok(v) => v,
            Step::NeedMore => return Ok(Step::NeedMore),
            Step::End(e) => return Ok(Step::End(e)),
            Step::Abandon(at) => return Ok(Step::Abandon(at)),
        }
    };
}

/// The decoder. See the module documentation.
#[derive(Debug)]
pub struct WalDecoder {
    cfg: DecoderConfig,
    major: Option<PgMajorVersion>,
    buf: ChunkBuf,
    next: Lsn,
    prev: Option<Lsn>,
    find_first: bool,
    ended: Option<EndOfWal>,
    /// The page whose header was checked last, with that header: records on it look it up
    /// here instead of parsing it again.
    validated_page: Option<(Lsn, PageHdr)>,
    last_tli: u32,
    rec: Vec<u8>,
    /// Reused by `gather`.
    pieces: Pieces,
}

fn maxalign(l: u64) -> u64 {
    (l + 7) & !7
}

impl WalDecoder {
    /// A decoder for a stream whose first fed byte is at `stream_start` (a page boundary).
    pub fn new(cfg: DecoderConfig, stream_start: Lsn, start: Start) -> WalDecoder {
        let (next, prev, find_first) = match start {
            Start::Record { lsn, prev } => (lsn, prev, false),
            Start::FirstOnPage(p) => (p, None, true),
        };
        WalDecoder {
            major: cfg.major,
            cfg,
            buf: ChunkBuf::new(stream_start.0, u64::from(cfg.xlog_blcksz)),
            next,
            prev,
            find_first,
            ended: None,
            validated_page: None,
            last_tli: 0,
            rec: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// The major version (known after the first page header).
    pub fn major(&self) -> Option<PgMajorVersion> {
        self.major
    }

    /// Where the next record starts (or where the search for it resumes).
    pub fn position(&self) -> Lsn {
        self.next
    }

    /// LSN of the last record returned.
    pub fn prev_record(&self) -> Option<Lsn> {
        self.prev
    }

    /// LSN just after the last byte fed.
    pub fn fed_up_to(&self) -> Lsn {
        Lsn(self.buf.end())
    }

    /// Appends bytes to the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.push(bytes);
    }

    /// Appends bytes, taking ownership: a page-aligned piece (a whole segment) is kept without
    /// copying.
    pub fn feed_owned(&mut self, bytes: Vec<u8>) {
        self.buf
            .push_owned(crate::mapped::SegmentData::Owned(bytes));
    }

    /// Appends a whole segment's bytes (owned or mapped) without copying.
    pub fn feed_segment(&mut self, bytes: crate::mapped::SegmentData) {
        self.buf.push_owned(bytes);
    }

    /// Appends bytes that start at `lsn`, which must continue the stream.
    pub fn feed_at(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), WalError> {
        let expected = self.fed_up_to();
        if lsn != expected {
            return Err(WalError::Gap { expected, got: lsn });
        }
        self.feed(bytes);
        Ok(())
    }

    fn slice(&self, lsn: u64, n: u64) -> Option<&[u8]> {
        self.buf.slice(lsn, n)
    }

    fn page_size(&self) -> u64 {
        u64::from(self.cfg.xlog_blcksz)
    }

    /// Reads and (once per page) validates the header of the page at `page`.
    fn page_header(&mut self, page: u64) -> Result<Step<PageHdr>, WalError> {
        if let Some((p, hdr)) = self.validated_page
            && p == Lsn(page)
        {
            return Ok(Step::Ok(hdr));
        }
        let Some(short) = self.slice(page, SIZE_OF_XLOG_SHORT_PHD) else {
            return Ok(Step::NeedMore);
        };
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let magic = u16_at(short, 0);
        let info = u16_at(short, 2);
        let tli = u32_at(short, 4);
        let pageaddr = u64::from(u32_at(short, 8)) | (u64::from(u32_at(short, 12)) << 32);
        let rem_len = u32_at(short, 16);
        let size = if info & XLP_LONG_HEADER != 0 {
            SIZE_OF_XLOG_LONG_PHD
        } else {
            SIZE_OF_XLOG_SHORT_PHD
        };
        let hdr = PageHdr {
            info,
            rem_len,
            size,
        };
        let lsn = Lsn(page);
        if short.iter().all(|&b| b == 0) {
            return Ok(Step::End(EndOfWal {
                lsn,
                reason: EndReason::ZeroPage,
            }));
        }
        let found_major = PgMajorVersion::ALL
            .into_iter()
            .find(|m| m.xlog_page_magic() == magic);
        match (self.major, found_major) {
            (_, None) => {
                return Ok(Step::End(EndOfWal {
                    lsn,
                    reason: EndReason::InvalidPageHeader { magic, info },
                }));
            }
            (Some(want), Some(got)) if want == got => {}
            (None, Some(got)) => self.major = Some(got),
            (Some(want), Some(_)) => {
                // WAL of another major in the same stream: not this cluster's WAL.
                return Err(WalError::BadMagic {
                    lsn,
                    magic,
                    expected: want.to_string(),
                });
            }
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Ok(Step::End(EndOfWal {
                lsn,
                reason: EndReason::InvalidPageHeader { magic, info },
            }));
        }
        if pageaddr != page {
            return Ok(Step::End(EndOfWal {
                lsn,
                reason: EndReason::PageAddrMismatch {
                    found: Lsn(pageaddr),
                },
            }));
        }
        let seg = self.cfg.seg_size.bytes();
        if info & XLP_LONG_HEADER != 0 {
            let Some(long) = self.slice(page, SIZE_OF_XLOG_LONG_PHD) else {
                return Ok(Step::NeedMore);
            };
            let sysid = u64::from_le_bytes(long[24..32].try_into().unwrap_or_default());
            let seg_size = u32_at(long, 32);
            let blcksz = u32_at(long, 36);
            if let Some(want) = self.cfg.system_identifier
                && want != sysid
            {
                return Err(WalError::BadPageHeader {
                    lsn,
                    why: format!("system identifier {sysid} is not the cluster's {want}"),
                });
            }
            if u64::from(seg_size) != seg || blcksz != self.cfg.xlog_blcksz {
                return Err(WalError::BadPageHeader {
                    lsn,
                    why: format!(
                        "segment size {seg_size} / page size {blcksz}, expected {} / {}",
                        self.cfg.seg_size, self.cfg.xlog_blcksz
                    ),
                });
            }
        } else if page.is_multiple_of(seg) {
            return Err(WalError::BadPageHeader {
                lsn,
                why: "first page of a segment without a long header".into(),
            });
        }
        if tli < self.last_tli {
            return Ok(Step::End(EndOfWal {
                lsn,
                reason: EndReason::TimelineBackwards {
                    previous: self.last_tli,
                    found: tli,
                },
            }));
        }
        self.last_tli = tli;
        self.validated_page = Some((Lsn(page), hdr));
        Ok(Step::Ok(hdr))
    }

    /// Locates the `n` bytes of the record at `start`, skipping page headers and checking
    /// continuation pages. Returns the LSN after the last byte and the pieces (LSN, length),
    /// each inside one page.
    ///
    /// A first pass validates every continuation page header fed so far (so garbage ends WAL as
    /// soon as it is seen) and returns `NeedMore` before copying anything unless the whole record
    /// is there: a large record arriving in small pieces is copied once, not on every poll.
    fn gather(
        &mut self,
        start: u64,
        n: u64,
        tot_len: u32,
        gathered_before: u64,
    ) -> Result<Step<(u64, Pieces)>, WalError> {
        let psize = self.page_size();
        let fed = self.fed_up_to().0;
        let (mut pos, mut left, mut gathered) = (start, n, gathered_before);
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.clear();
        while left > 0 {
            let page = pos - pos % psize;
            if pos == page {
                let h = step!(self.page_header(page));
                if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    return Ok(Step::Abandon(Lsn(page)));
                }
                if h.info & XLP_FIRST_IS_CONTRECORD == 0
                    || h.rem_len == 0
                    || u64::from(tot_len) != u64::from(h.rem_len) + gathered
                {
                    return Ok(Step::End(EndOfWal {
                        lsn: self.next,
                        reason: EndReason::MissingContrecord,
                    }));
                }
                pos = page + h.size;
            }
            let take = left.min(page + psize - pos);
            if pos + take > fed {
                return Ok(Step::NeedMore);
            }
            pieces.push((pos, take));
            pos += take;
            left -= take;
            gathered += take;
        }
        Ok(Step::Ok((pos, pieces)))
    }

    /// Decodes the next record, if enough bytes have been fed.
    pub fn poll(&mut self) -> Result<Poll, WalError> {
        let mut r = Record::default();
        Ok(match self.poll_into(&mut r)? {
            Polled::Record => Poll::Record(Box::new(r)),
            Polled::Abandoned { lsn, at } => Poll::Abandoned { lsn, at },
            Polled::NeedMore => Poll::NeedMore,
            Polled::End(e) => Poll::End(e),
        })
    }

    /// Like [`WalDecoder::poll`], decoding the record into `out`, whose vectors are reused: a
    /// caller passing the same buffer every time allocates nothing per record. `out` holds the
    /// record only when [`Polled::Record`] is returned.
    pub fn poll_into(&mut self, out: &mut Record) -> Result<Polled, WalError> {
        if let Some(e) = &self.ended {
            return Ok(Polled::End(e.clone()));
        }
        let polled = match self.try_next(out)? {
            Step::Ok(()) => Polled::Record,
            Step::NeedMore => Polled::NeedMore,
            Step::End(e) => {
                self.ended = Some(e.clone());
                Polled::End(e)
            }
            Step::Abandon(at) => {
                let lsn = self.next;
                // Decoding resumes with the first record on the overwriting page.
                self.next = at;
                self.find_first = false;
                Polled::Abandoned { lsn, at }
            }
        };
        self.compact();
        Ok(polled)
    }

    fn compact(&mut self) {
        let keep_from = self.next.0 - self.next.0 % self.page_size();
        self.buf.drop_before(keep_from);
    }

    fn try_next(&mut self, out: &mut Record) -> Result<Step<()>, WalError> {
        let psize = self.page_size();
        // Move to a record start: past a page header, and at the very start past the tail of a
        // record continued from an earlier page.
        loop {
            let page = self.next.0 - self.next.0 % psize;
            let h = step!(self.page_header(page));
            if self.next.0 == page {
                if self.find_first && h.info & XLP_FIRST_IS_CONTRECORD != 0 {
                    // Skip MAXALIGN(rem_len) usable bytes, possibly over whole pages.
                    let mut left = maxalign(u64::from(h.rem_len));
                    let mut pos = page + h.size;
                    while left > 0 {
                        let room = page_end(pos, psize) - pos;
                        if left <= room {
                            pos += left;
                            left = 0;
                        } else {
                            left -= room;
                            let np = page_end(pos, psize);
                            let nh = step!(self.page_header(np));
                            pos = np + nh.size;
                        }
                    }
                    self.next = Lsn(pos);
                    if !pos.is_multiple_of(psize) {
                        break;
                    }
                    continue;
                }
                self.next = Lsn(page + h.size);
            }
            break;
        }
        self.find_first = false;
        let lsn = self.next.0;
        let Some(len_bytes) = self.slice(lsn, 4) else {
            return Ok(Step::NeedMore);
        };
        let tot_len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
        let at = Lsn(lsn);
        if tot_len == 0 {
            return Ok(Step::End(EndOfWal {
                lsn: at,
                reason: EndReason::ZeroLength,
            }));
        }
        if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > XLOG_RECORD_MAX_SIZE {
            return Ok(Step::End(EndOfWal {
                lsn: at,
                reason: EndReason::BadLength { tot_len },
            }));
        }
        let (end, pieces) = step!(self.gather(lsn, u64::from(tot_len), tot_len, 0));
        let result = match pieces.as_slice() {
            // The whole record inside one page: decode it in place.
            [(p, n)] => match self.buf.slice(*p, *n) {
                Some(bytes) => self.check_record(bytes, at, Lsn(end), out)?,
                None => return Ok(Step::NeedMore),
            },
            _ => self.check_pieces(&pieces, tot_len, at, Lsn(end), out)?,
        };
        self.pieces = pieces;
        if let Step::Ok(()) = &result {
            let record = &*out;
            self.prev = Some(at);
            let seg = self.cfg.seg_size.bytes();
            self.next = if record.rmid == RM_XLOG_ID && record.rmgr_info() == XLOG_SWITCH {
                Lsn(end.div_ceil(seg) * seg)
            } else {
                Lsn(maxalign(end))
            };
        }
        Ok(result)
    }

    /// Checks and decodes a record held contiguously in `rec`.
    fn check_record(
        &self,
        rec: &[u8],
        at: Lsn,
        end: Lsn,
        out: &mut Record,
    ) -> Result<Step<()>, WalError> {
        let computed = record_crc(rec);
        let mut main = |off: usize, n: usize, buf: &mut Vec<u8>| match rec.get(off..off + n) {
            Some(b) => {
                buf.extend_from_slice(b);
                true
            }
            None => false,
        };
        self.check_prefix(rec, computed, at, end, &mut main, out)
    }

    /// Checks and decodes a record spread over page pieces: the CRC is computed over the pieces
    /// in place, and the record's first bytes (header and fragment headers) are decoded in place
    /// from the first piece; only its main data is copied, never its images. When the fragment
    /// headers run past the first piece, a prefix of the record is copied, and if even that is too
    /// short, the whole record.
    fn check_pieces(
        &mut self,
        pieces: &[(u64, u64)],
        tot_len: u32,
        at: Lsn,
        end: Lsn,
        out: &mut Record,
    ) -> Result<Step<()>, WalError> {
        const PREFIX: usize = 4096;
        let Some(computed) = pieces_crc(&self.buf, pieces) else {
            return Ok(Step::NeedMore);
        };
        let buf = &self.buf;
        let mut main =
            |off: usize, n: usize, v: &mut Vec<u8>| copy_out_into(buf, pieces, off, n, v);
        let first = pieces
            .first()
            .and_then(|(p, n)| buf.slice(*p, *n))
            .unwrap_or_default();
        if first.len() >= SIZE_OF_XLOG_RECORD {
            match self.check_prefix(first, computed, at, end, &mut main, out) {
                Err(e) if is_truncated(&e) => {}
                other => return other,
            }
        }
        let want = (tot_len as usize).min(PREFIX);
        if first.len() < want {
            let Some(prefix) = copy_out(buf, pieces, 0, want) else {
                return Ok(Step::NeedMore);
            };
            match self.check_prefix(&prefix, computed, at, end, &mut main, out) {
                Err(e) if is_truncated(&e) && want < tot_len as usize => {}
                other => return other,
            }
        }
        let mut rec = std::mem::take(&mut self.rec);
        rec.clear();
        for (p, n) in pieces {
            if let Some(b) = self.buf.slice(*p, *n) {
                rec.extend_from_slice(b);
            }
        }
        let r = self.check_record(&rec, at, end, out);
        self.rec = rec;
        r
    }

    /// Header checks (rmgr id, prev link), CRC comparison with `computed`, then decoding from
    /// `rec`, the record or a prefix of it.
    fn check_prefix(
        &self,
        rec: &[u8],
        computed: u32,
        at: Lsn,
        end: Lsn,
        main: &mut dyn FnMut(usize, usize, &mut Vec<u8>) -> bool,
        out: &mut Record,
    ) -> Result<Step<()>, WalError> {
        let major = self.major.unwrap_or(PgMajorVersion::V18);
        let rmid = rec.get(17).copied().unwrap_or(0);
        let valid_rmid =
            rmid <= RM_MAX_BUILTIN_ID || (major >= PgMajorVersion::V15 && rmid >= RM_MIN_CUSTOM_ID);
        if !valid_rmid {
            return Ok(Step::End(EndOfWal {
                lsn: at,
                reason: EndReason::BadRmgr { rmid },
            }));
        }
        let prev = Lsn(u64::from_le_bytes(
            rec.get(8..16)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        ));
        match self.prev {
            Some(p) if p != prev => {
                return Ok(Step::End(EndOfWal {
                    lsn: at,
                    reason: EndReason::PrevLinkMismatch {
                        expected: p,
                        found: prev,
                    },
                }));
            }
            None if prev >= at => {
                return Ok(Step::End(EndOfWal {
                    lsn: at,
                    reason: EndReason::PrevLinkMismatch {
                        expected: at,
                        found: prev,
                    },
                }));
            }
            _ => {}
        }
        let stored = u32::from_le_bytes(
            rec.get(20..24)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        );
        if stored != computed {
            return Ok(Step::End(EndOfWal {
                lsn: at,
                reason: EndReason::CrcMismatch { stored, computed },
            }));
        }
        decode_record_into(rec, at, end, major, self.cfg.blcksz, main, out)
            .map_err(|source| WalError::BadRecord { lsn: at, source })?;
        Ok(Step::Ok(()))
    }
}

/// Whether decoding failed only because the bytes given ended inside a field.
fn is_truncated(e: &WalError) -> bool {
    matches!(
        e,
        WalError::BadRecord {
            source: RecordError::Truncated { .. },
            ..
        }
    )
}

fn page_end(pos: u64, psize: u64) -> u64 {
    pos - pos % psize + psize
}
