//! One WAL record: its 24-byte header, CRC and body grammar, decoded into block references and
//! main data. Mirrors `src/include/access/xlogrecord.h` and
//! `src/backend/access/transam/xlogreader.c: DecodeXLogRecord, ValidXLogRecord` (spec §2).
//!
//! The body is parsed exactly like `DecodeXLogRecord`: fragment headers (blocks in strictly
//! increasing id order, origin, top-level xid) until the main-data header, then the payloads
//! (images and block data in block order, then main data). Every read is bounds-checked; a
//! malformed record is an error naming the field, never a panic. The one per-major difference in
//! the grammar is the full-page-image flag byte (`bimg_info`): PG13/14 mark compression with 0x02,
//! PG15+ with any of 0x1C.

use ptrack_types::{
    BlockNumber, ForkNumber, Lsn, Oid, PgMajorVersion, RelFileLocator, RelFileNumber,
};
use serde::Serialize;

use crate::consts::*;

/// What is wrong with a record's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record ended inside a field.
    #[error("record too short for {field}: need {need} more bytes, {have} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A block id out of order or invalid.
    #[error("invalid block id {id} (previous {prev})")]
    BadBlockId {
        /// The id read.
        id: u8,
        /// The previous block id (-1 if none).
        prev: i32,
    },
    /// HAS_DATA disagrees with data_length.
    #[error("block {id}: BKPBLOCK_HAS_DATA does not match data length {len}")]
    DataFlag {
        /// Block id.
        id: u8,
        /// data_length.
        len: u16,
    },
    /// Image header fields contradict each other.
    #[error(
        "block {id}: inconsistent image header (len {len}, hole offset {hole_offset}, hole length {hole_length}, info 0x{info:02X})"
    )]
    BadImage {
        /// Block id.
        id: u8,
        /// bimg_len.
        len: u16,
        /// hole_offset.
        hole_offset: u16,
        /// hole_length.
        hole_length: u16,
        /// bimg_info.
        info: u8,
    },
    /// BKPBLOCK_SAME_REL on the first block.
    #[error("block {id}: BKPBLOCK_SAME_REL set but no previous relation")]
    SameRelWithoutRel {
        /// Block id.
        id: u8,
    },
    /// Fork number above 3.
    #[error("block {id}: invalid fork number {fork}")]
    BadFork {
        /// Block id.
        id: u8,
        /// The fork number.
        fork: u8,
    },
    /// The payload lengths do not add up to the record length.
    #[error("record length {tot_len} does not match its contents ({expected} bytes)")]
    LengthMismatch {
        /// xl_tot_len.
        tot_len: u32,
        /// Header plus fragments plus payloads.
        expected: u64,
    },
}

/// Full-page image details of a block reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// Bytes of image stored in the record.
    pub len: u16,
    /// Start of the hole (omitted bytes).
    pub hole_offset: u16,
    /// Length of the hole.
    pub hole_length: u16,
    /// The raw `bimg_info` byte.
    pub info: u8,
    /// Whether redo applies the image (`BKPIMAGE_APPLY`).
    pub apply: bool,
    /// Compression: "none", "pglz", "lz4" or "zstd".
    pub compression: &'static str,
}

/// One block reference of a record (`DecodedBkpBlock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRef {
    /// Block id within the record (0..=32).
    pub id: u8,
    /// The relation.
    pub locator: RelFileLocator,
    /// The fork.
    pub fork: ForkNumber,
    /// Block number within the fork.
    pub block: BlockNumber,
    /// `BKPBLOCK_WILL_INIT`: redo initialises the page.
    pub will_init: bool,
    /// Length of the block's data.
    pub data_len: u16,
    /// Full-page image, if any.
    pub image: Option<ImageInfo>,
}

/// A decoded record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Start LSN.
    pub lsn: Lsn,
    /// End LSN (first byte after the record; `EndRecPtr`).
    pub end_lsn: Lsn,
    /// `xl_prev`.
    pub prev: Lsn,
    /// `xl_xid`.
    pub xid: u32,
    /// `xl_rmid`.
    pub rmid: u8,
    /// `xl_info` (all 8 bits).
    pub info: u8,
    /// `xl_tot_len`.
    pub tot_len: u32,
    /// Block references in id order.
    pub blocks: Vec<BlockRef>,
    /// Main data.
    #[serde(skip)]
    pub main_data: Vec<u8>,
    /// Top-level xid (PG14+, `XLR_BLOCK_ID_TOPLEVEL_XID`).
    pub toplevel_xid: Option<u32>,
    /// Replication origin.
    pub origin: Option<u16>,
}

impl Record {
    /// `xl_info & XLR_RMGR_INFO_MASK`: the resource manager's info code.
    pub fn rmgr_info(&self) -> u8 {
        self.info & XLR_RMGR_INFO_MASK
    }

    /// The resource manager's name as pg_waldump prints it.
    pub fn rmgr_name(&self) -> &'static str {
        RMGR_NAMES
            .get(usize::from(self.rmid))
            .copied()
            .unwrap_or("custom")
    }
}

/// A checked little-endian cursor over a record.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        let have = self.b.len() - self.at;
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(RecordError::Truncated {
                field,
                need: n,
                have,
            })?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, field)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        let s = self.take(2, field)?;
        Ok(u16::from_le_bytes(s.try_into().unwrap_or_default()))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes(s.try_into().unwrap_or_default()))
    }
}

/// Reads a 12-byte relation locator at the start of `b`.
pub fn read_locator(b: &[u8]) -> Option<RelFileLocator> {
    let w =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    Some(RelFileLocator {
        spc_oid: Oid(w(0)?),
        db_oid: Oid(w(4)?),
        rel_number: RelFileNumber(w(8)?),
    })
}

/// The CRC-32C of a whole record as `ValidXLogRecord` computes it: the body after the header,
/// then the first 20 header bytes.
pub fn record_crc(rec: &[u8]) -> u32 {
    let body = rec.get(SIZE_OF_XLOG_RECORD..).unwrap_or_default();
    let head = rec.get(..20).unwrap_or_default();
    crate::crc::crc32c_append(crate::crc::crc32c_append(0, body), head)
}

fn image_compression(info: u8, major: PgMajorVersion) -> (&'static str, bool) {
    if major <= PgMajorVersion::V14 {
        // 0x02 IS_COMPRESSED (pglz), 0x04 APPLY.
        (
            if info & 0x02 != 0 { "pglz" } else { "none" },
            info & 0x04 != 0,
        )
    } else {
        // 0x02 APPLY, 0x04 PGLZ, 0x08 LZ4, 0x10 ZSTD.
        let c = if info & 0x04 != 0 {
            "pglz"
        } else if info & 0x08 != 0 {
            "lz4"
        } else if info & 0x10 != 0 {
            "zstd"
        } else {
            "none"
        };
        (c, info & 0x02 != 0)
    }
}

/// Decodes the body of a reassembled, CRC-checked record `rec` (its full `xl_tot_len` bytes)
/// that starts at `lsn` and ends at `end_lsn`. `blcksz` is the data page size.
pub fn decode_record(
    rec: &[u8],
    lsn: Lsn,
    end_lsn: Lsn,
    major: PgMajorVersion,
    blcksz: u32,
) -> Result<Record, RecordError> {
    let tot_len = rec
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    if rec.len() as u64 != u64::from(tot_len) {
        return Err(RecordError::LengthMismatch {
            tot_len,
            expected: rec.len() as u64,
        });
    }
    decode_record_prefix(rec, lsn, end_lsn, major, blcksz, &mut |off, n| {
        rec.get(off..off + n).map(<[u8]>::to_vec)
    })
}

/// Like [`decode_record`] from `prefix`, the first bytes of the record, which must hold the
/// header and every fragment header (else a `Truncated` error); `main(offset, len)` supplies the
/// main data, which sits at the end of the record. Lets the decoder skip copying the images of a
/// record that spans pages.
pub fn decode_record_prefix(
    prefix: &[u8],
    lsn: Lsn,
    end_lsn: Lsn,
    major: PgMajorVersion,
    blcksz: u32,
    main: &mut dyn FnMut(usize, usize) -> Option<Vec<u8>>,
) -> Result<Record, RecordError> {
    let mut out = Record::default();
    let mut copy_main = |off: usize, n: usize, buf: &mut Vec<u8>| match main(off, n) {
        Some(v) => {
            *buf = v;
            true
        }
        None => false,
    };
    decode_record_into(
        prefix,
        lsn,
        end_lsn,
        major,
        blcksz,
        &mut copy_main,
        &mut out,
    )?;
    Ok(out)
}

/// Like [`decode_record_prefix`], into `out`, whose vectors are reused (a caller decoding record
/// after record allocates nothing per record); `main(offset, len, buf)` puts the main data in
/// `buf` (cleared) and returns false if it cannot. On error `out` holds a partial record.
pub fn decode_record_into(
    prefix: &[u8],
    lsn: Lsn,
    end_lsn: Lsn,
    major: PgMajorVersion,
    blcksz: u32,
    main: &mut dyn FnMut(usize, usize, &mut Vec<u8>) -> bool,
    out: &mut Record,
) -> Result<(), RecordError> {
    let rec = prefix;
    let mut c = Cursor { b: rec, at: 0 };
    let tot_len = c.u32("xl_tot_len")?;
    let xid = c.u32("xl_xid")?;
    let prev_lo = c.u32("xl_prev")?;
    let prev_hi = c.u32("xl_prev")?;
    let prev = Lsn(u64::from(prev_lo) | (u64::from(prev_hi) << 32));
    let info = c.u8("xl_info")?;
    let rmid = c.u8("xl_rmid")?;
    c.take(6, "xl_crc")?;

    let blocks = &mut out.blocks;
    blocks.clear();
    let mut datatotal: u64 = 0;
    let mut max_block_id: i32 = -1;
    let mut last_rel: Option<RelFileLocator> = None;
    let mut main_len: u64 = 0;
    let mut toplevel_xid = None;
    let mut origin = None;
    while (tot_len as usize).saturating_sub(c.at) as u64 > datatotal {
        let id = c.u8("block id")?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = u64::from(c.u8("main data length")?);
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u64::from(c.u32("main data length")?);
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => origin = Some(c.u16("origin")?),
            XLR_BLOCK_ID_TOPLEVEL_XID if major >= PgMajorVersion::V14 => {
                toplevel_xid = Some(c.u32("toplevel xid")?)
            }
            0..=XLR_MAX_BLOCK_ID => {
                if i32::from(id) <= max_block_id {
                    return Err(RecordError::BadBlockId {
                        id,
                        prev: max_block_id,
                    });
                }
                max_block_id = i32::from(id);
                let ff = c.u8("fork_flags")?;
                let data_len = c.u16("data_length")?;
                let has_data = ff & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len > 0) {
                    return Err(RecordError::DataFlag { id, len: data_len });
                }
                datatotal += u64::from(data_len);
                let mut image = None;
                if ff & BKPBLOCK_HAS_IMAGE != 0 {
                    let len = c.u16("bimg_len")?;
                    let hole_offset = c.u16("hole_offset")?;
                    let binfo = c.u8("bimg_info")?;
                    let (compression, apply) = image_compression(binfo, major);
                    let compressed = compression != "none";
                    let has_hole = binfo & BKPIMAGE_HAS_HOLE != 0;
                    let hole_length = if compressed {
                        if has_hole { c.u16("hole_length")? } else { 0 }
                    } else {
                        (blcksz as u16).wrapping_sub(len)
                    };
                    let bad = if has_hole {
                        hole_offset == 0 || hole_length == 0 || u32::from(len) == blcksz
                    } else {
                        hole_offset != 0 || hole_length != 0
                    } || (compressed && u32::from(len) == blcksz)
                        || (!has_hole && !compressed && u32::from(len) != blcksz);
                    if bad {
                        return Err(RecordError::BadImage {
                            id,
                            len,
                            hole_offset,
                            hole_length,
                            info: binfo,
                        });
                    }
                    datatotal += u64::from(len);
                    image = Some(ImageInfo {
                        len,
                        hole_offset,
                        hole_length,
                        info: binfo,
                        apply,
                        compression,
                    });
                }
                let locator = if ff & BKPBLOCK_SAME_REL == 0 {
                    let l = read_locator(c.take(12, "relfilelocator")?).ok_or(
                        RecordError::Truncated {
                            field: "relfilelocator",
                            need: 12,
                            have: 0,
                        },
                    )?;
                    last_rel = Some(l);
                    l
                } else {
                    last_rel.ok_or(RecordError::SameRelWithoutRel { id })?
                };
                let fork_no = ff & BKPBLOCK_FORK_MASK;
                let fork = ForkNumber::from_u8(fork_no)
                    .ok_or(RecordError::BadFork { id, fork: fork_no })?;
                let block = BlockNumber(c.u32("block number")?);
                blocks.push(BlockRef {
                    id,
                    locator,
                    fork,
                    block,
                    will_init: ff & BKPBLOCK_WILL_INIT != 0,
                    data_len,
                    image,
                });
            }
            _ => {
                return Err(RecordError::BadBlockId {
                    id,
                    prev: max_block_id,
                });
            }
        }
    }
    let expected = c.at as u64 + datatotal;
    if expected != u64::from(tot_len) {
        return Err(RecordError::LengthMismatch { tot_len, expected });
    }
    // Payloads: block images and data in block order, then the main data at the end.
    let main_len = main_len as usize;
    out.main_data.clear();
    if !main(tot_len as usize - main_len, main_len, &mut out.main_data) {
        return Err(RecordError::Truncated {
            field: "main data",
            need: main_len,
            have: 0,
        });
    }
    out.lsn = lsn;
    out.end_lsn = end_lsn;
    out.prev = prev;
    out.xid = xid;
    out.rmid = rmid;
    out.info = info;
    out.tot_len = tot_len;
    out.toplevel_xid = toplevel_xid;
    out.origin = origin;
    Ok(())
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
