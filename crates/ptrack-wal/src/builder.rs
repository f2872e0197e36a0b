//! Lays records out into WAL pages exactly as the server does (`xloginsert.c`,
//! `XLogInsertRecord`/`CopyXLogRecordToWAL`): MAXALIGN-ed record starts, short page headers, a long
//! header on each segment's first page, `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` on
//! continuation pages, CRC-32C on every record. For unit tests of the decoder's edge cases and as
//! fuzzing seeds; real WAL from real servers is tested against pg_waldump.

use ptrack_types::{Lsn, PgMajorVersion};

use crate::consts::*;
use crate::record::record_crc;

/// Builds a WAL byte stream starting at a segment boundary.
#[derive(Debug, Clone)]
pub struct WalBuilder {
    /// Segment size.
    pub seg_size: u64,
    /// Page size.
    pub page: u64,
    /// System identifier written in long headers.
    pub sysid: u64,
    magic: u16,
    start: u64,
    bytes: Vec<u8>,
    prev: u64,
    /// Extra `xlp_info` bits for the next page header written (e.g. overwrite-contrecord).
    pub next_page_flags: u16,
}

impl WalBuilder {
    /// A builder for `major` whose stream starts at segment `segno`.
    pub fn new(major: PgMajorVersion, seg_size: u64, segno: u64) -> WalBuilder {
        WalBuilder {
            seg_size,
            page: 8192,
            sysid: 0x7000_0000_0000_0042,
            magic: major.xlog_page_magic(),
            start: segno * seg_size,
            bytes: Vec::new(),
            prev: 0,
            next_page_flags: 0,
        }
    }

    /// LSN of the first byte.
    pub fn start(&self) -> Lsn {
        Lsn(self.start)
    }

    /// LSN of the next byte to be written.
    pub fn pos(&self) -> Lsn {
        Lsn(self.start + self.bytes.len() as u64)
    }

    fn page_header(&mut self, rem_len: u32) {
        let at = self.pos().0;
        let long = at.is_multiple_of(self.seg_size);
        let mut info = self.next_page_flags;
        self.next_page_flags = 0;
        if rem_len > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        if long {
            info |= XLP_LONG_HEADER;
        }
        self.bytes.extend_from_slice(&self.magic.to_le_bytes());
        self.bytes.extend_from_slice(&info.to_le_bytes());
        self.bytes.extend_from_slice(&1u32.to_le_bytes());
        self.bytes.extend_from_slice(&at.to_le_bytes());
        self.bytes.extend_from_slice(&rem_len.to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]);
        if long {
            self.bytes.extend_from_slice(&self.sysid.to_le_bytes());
            self.bytes
                .extend_from_slice(&(self.seg_size as u32).to_le_bytes());
            self.bytes
                .extend_from_slice(&(self.page as u32).to_le_bytes());
        }
    }

    /// Writes raw record bytes (already with header and CRC) at the current position, splitting
    /// them over pages. Stops after `limit` bytes when given (a torn record).
    fn write_split(&mut self, rec: &[u8], limit: Option<usize>) {
        let mut done = 0;
        let stop = limit.unwrap_or(rec.len()).min(rec.len());
        while done < stop {
            if self.pos().0.is_multiple_of(self.page) {
                self.page_header(if done == 0 {
                    0
                } else {
                    (rec.len() - done) as u32
                });
            }
            let room = (self.page - self.pos().0 % self.page) as usize;
            let n = room.min(stop - done);
            self.bytes.extend_from_slice(&rec[done..done + n]);
            done += n;
        }
    }

    fn align(&mut self) {
        while !self.pos().0.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if self.pos().0.is_multiple_of(self.page) {
            self.page_header(0);
        }
    }

    /// Encodes a record: `body` is everything after the 24-byte header (fragment headers and
    /// payloads). Returns the bytes.
    pub fn encode(&self, rmid: u8, info: u8, xid: u32, prev: u64, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::with_capacity(24 + body.len());
        r.extend_from_slice(&((24 + body.len()) as u32).to_le_bytes());
        r.extend_from_slice(&xid.to_le_bytes());
        r.extend_from_slice(&prev.to_le_bytes());
        r.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(body);
        let crc = record_crc(&r);
        r[20..24].copy_from_slice(&crc.to_le_bytes());
        r
    }

    /// Appends a record; returns its LSN.
    pub fn record(&mut self, rmid: u8, info: u8, body: &[u8]) -> Lsn {
        self.align();
        let lsn = self.pos();
        let rec = self.encode(rmid, info, 7, self.prev, body);
        self.write_split(&rec, None);
        self.prev = lsn.0;
        lsn
    }

    /// Appends only the first `keep` bytes of a record (its tail is never written), then pads to
    /// the end of the page: the situation `XLP_FIRST_IS_OVERWRITE_CONTRECORD` repairs.
    pub fn torn_record(&mut self, rmid: u8, info: u8, body: &[u8], keep: usize) -> Lsn {
        self.align();
        let lsn = self.pos();
        let rec = self.encode(rmid, info, 7, self.prev, body);
        self.write_split(&rec, Some(keep));
        while !self.pos().0.is_multiple_of(self.page) {
            self.bytes.push(0);
        }
        lsn
    }

    /// A heap-insert-like body with one block reference and `data` bytes of block data.
    pub fn block_body(rel: u32, block: u32, data: usize) -> Vec<u8> {
        let mut b = vec![0, if data > 0 { 0x20 } else { 0 }];
        b.extend_from_slice(&(data as u16).to_le_bytes());
        for v in [1663u32, 5, rel, block] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0xFF, 3]);
        b.extend(std::iter::repeat_n(0xAB, data));
        b.extend_from_slice(&[1, 0, 0]);
        b
    }

    /// Appends `XLOG_SWITCH` and pads to the end of the segment.
    pub fn switch(&mut self) -> Lsn {
        let lsn = self.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
        while !self.pos().0.is_multiple_of(self.seg_size) {
            if self.pos().0.is_multiple_of(self.page) {
                self.page_header(0);
            } else {
                self.bytes.push(0);
            }
        }
        lsn
    }

    /// Pads with zeroes to the end of the current segment (never-written space).
    pub fn pad_segment(&mut self) {
        while !self.pos().0.is_multiple_of(self.seg_size) {
            self.bytes.push(0);
        }
    }

    /// The stream so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Mutable access, to damage the stream in tests.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}
