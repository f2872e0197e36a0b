//! WAL segment files in a directory (`pg_wal` or an archive): names, segment size, and reading
//! a range of records by feeding whole segments to [`crate::WalDecoder`].
//!
//! Mirrors `src/include/access/xlog_internal.h` (`XLogFileName`, `IsXLogFileName`,
//! `XLogFromFileName`) and `pg_waldump`'s way of finding the segment size (the long header of the
//! first page, `xlp_seg_size` @32). For each segment number the file of the highest timeline found
//! is used (`XLogFileReadAnyTLI` on a single timeline history: the newest copy of a segment holds
//! the parent's WAL up to the switch point, then the child's).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use ptrack_types::{Lsn, TimeLineId};

use crate::decoder::{DecoderConfig, EndOfWal, Poll, Start, WalDecoder, WalError};
use crate::record::Record;

/// A segment file name: timeline and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// Timeline.
    pub tli: TimeLineId,
    /// Segment number (`XLogSegNo`).
    pub segno: u64,
}

impl SegmentName {
    /// Parses `TTTTTTTTLLLLLLLLSSSSSSSS` (24 upper-case hex digits) for a segment size.
    pub fn parse(name: &str, seg_size: u64) -> Option<SegmentName> {
        if name.len() != 24
            || !name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        let tli = u32::from_str_radix(name.get(0..8)?, 16).ok()?;
        let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
        let per_log = 0x1_0000_0000 / seg_size;
        Some(SegmentName {
            tli: TimeLineId(tli),
            segno: log * per_log + seg,
        })
    }

    /// The file name (`XLogFileName`).
    pub fn file_name(&self, seg_size: u64) -> String {
        let per_log = 0x1_0000_0000 / seg_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.tli.0,
            self.segno / per_log,
            self.segno % per_log
        )
    }
}

/// Errors reading WAL from a directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// No segment files.
    #[error("{dir}: no WAL segment files found")]
    NoSegments {
        /// The directory.
        dir: String,
    },
    /// A segment whose header or size is unusable.
    #[error("{path}: {why}")]
    BadSegment {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The decoder found bytes that cannot be WAL.
    #[error("{path}: {source}")]
    Wal {
        /// The segment being read.
        path: String,
        /// The error.
        source: WalError,
    },
}

/// The segment files of a directory.
#[derive(Debug, Clone)]
pub struct WalDir {
    /// The directory.
    pub dir: PathBuf,
    /// Segment size in bytes, from the first segment's long header.
    pub seg_size: u32,
    /// Page size, from the same header.
    pub xlog_blcksz: u32,
    /// System identifier, from the same header.
    pub system_identifier: u64,
    /// For each segment number, the file of the highest timeline.
    pub segments: BTreeMap<u64, (TimeLineId, PathBuf)>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl WalDir {
    /// Lists the segment files of `dir` and reads the segment size from the first one.
    pub fn open(dir: &Path) -> Result<WalDir, ReadError> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            if let Ok(n) = e.file_name().into_string()
                && n.len() == 24
            {
                names.push(n);
            }
        }
        names.sort();
        let first = names
            .iter()
            .find(|n| SegmentName::parse(n, 16 << 20).is_some())
            .ok_or_else(|| ReadError::NoSegments {
                dir: dir.display().to_string(),
            })?;
        let first_path = dir.join(first);
        let mut head = [0u8; 40];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(&first_path).map_err(io_err(&first_path))?;
            f.read_exact(&mut head).map_err(io_err(&first_path))?;
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
        let seg_size = u32_at(32);
        let xlog_blcksz = u32_at(36);
        let system_identifier = u64::from_le_bytes(head[24..32].try_into().unwrap_or_default());
        let info = u16::from_le_bytes([head[2], head[3]]);
        let valid_seg = seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&seg_size);
        if info & crate::consts::XLP_LONG_HEADER == 0
            || !valid_seg
            || !xlog_blcksz.is_power_of_two()
        {
            return Err(ReadError::BadSegment {
                path: first_path.display().to_string(),
                why: "first page has no valid long header (segment size, page size)".into(),
            });
        }
        let mut segments: BTreeMap<u64, (TimeLineId, PathBuf)> = BTreeMap::new();
        for n in &names {
            if let Some(s) = SegmentName::parse(n, u64::from(seg_size)) {
                let newer = segments.get(&s.segno).is_none_or(|(t, _)| s.tli > *t);
                if newer {
                    segments.insert(s.segno, (s.tli, dir.join(n)));
                }
            }
        }
        Ok(WalDir {
            dir: dir.to_path_buf(),
            seg_size,
            xlog_blcksz,
            system_identifier,
            segments,
        })
    }

    /// LSN of the first byte of segment `segno`.
    pub fn segment_start(&self, segno: u64) -> Lsn {
        Lsn(segno * u64::from(self.seg_size))
    }
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The `to` LSN was reached.
    ReachedTo,
    /// The end of valid WAL.
    EndOfWal(EndOfWal),
    /// The next segment file does not exist; decoding stopped at `at`.
    MissingSegment {
        /// The segment's file name.
        name: String,
        /// Where the next record would have started.
        at: Lsn,
    },
}

/// Decodes every record of `wal` with `lsn` in `[from, to)` (from the first segment's first
/// record when `from` is `None`; to the end of WAL when `to` is `None`), calling `on_record`, and
/// `on_abandoned` for records abandoned by an overwrite-contrecord page.
pub fn scan_dir(
    wal: &WalDir,
    base: DecoderConfig,
    from: Option<Lsn>,
    to: Option<Lsn>,
    on_record: &mut dyn FnMut(&Record),
    on_abandoned: &mut dyn FnMut(Lsn, Lsn),
) -> Result<ScanEnd, ReadError> {
    let seg = u64::from(wal.seg_size);
    let cfg = DecoderConfig {
        seg_size: wal.seg_size,
        xlog_blcksz: wal.xlog_blcksz,
        system_identifier: Some(wal.system_identifier),
        ..base
    };
    let first_seg = match from {
        Some(l) => l.0 / seg,
        None => *wal
            .segments
            .keys()
            .next()
            .ok_or_else(|| ReadError::NoSegments {
                dir: wal.dir.display().to_string(),
            })?,
    };
    let psize = u64::from(wal.xlog_blcksz);
    let stream_start = Lsn(first_seg * seg);
    let start_page = from.map_or(stream_start, |l| Lsn(l.0 - l.0 % psize));
    let mut dec = WalDecoder::new(cfg, stream_start, Start::FirstOnPage(start_page));
    let mut segno = first_seg;
    loop {
        // Feed the next segment when the decoder needs more.
        let (poll, path) = loop {
            let p = dec.poll().map_err(|source| ReadError::Wal {
                path: segment_path(wal, segno.saturating_sub(1)),
                source,
            })?;
            if p != Poll::NeedMore {
                break (p, segment_path(wal, segno.saturating_sub(1)));
            }
            let Some((_, path)) = wal.segments.get(&segno) else {
                let name = crate::segment::SegmentName {
                    tli: wal.segments.values().next().map_or(TimeLineId(1), |v| v.0),
                    segno,
                }
                .file_name(seg);
                return Ok(ScanEnd::MissingSegment {
                    name,
                    at: dec.position(),
                });
            };
            let bytes = std::fs::read(path).map_err(io_err(path))?;
            if bytes.len() as u64 != seg {
                return Err(ReadError::BadSegment {
                    path: path.display().to_string(),
                    why: format!("size {} is not the segment size {seg}", bytes.len()),
                });
            }
            dec.feed_owned(bytes);
            segno += 1;
        };
        let _ = path;
        match poll {
            Poll::Record(r) => {
                if to.is_some_and(|t| r.lsn >= t) {
                    return Ok(ScanEnd::ReachedTo);
                }
                if from.is_none_or(|f| r.lsn >= f) {
                    on_record(&r);
                }
            }
            Poll::Abandoned { lsn, at } => on_abandoned(lsn, at),
            Poll::End(e) => return Ok(ScanEnd::EndOfWal(e)),
            Poll::NeedMore => {}
        }
    }
}

fn segment_path(wal: &WalDir, segno: u64) -> String {
    wal.segments.get(&segno).map_or_else(
        || wal.dir.display().to_string(),
        |(_, p)| p.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let s = SegmentName::parse("000000010000000000000001", 16 << 20).unwrap();
        assert_eq!((s.tli, s.segno), (TimeLineId(1), 1));
        let s = SegmentName::parse("0000000200000016000000FF", 16 << 20).unwrap();
        assert_eq!(s.segno, 0x16 * 256 + 0xFF);
        assert_eq!(s.file_name(16 << 20), "0000000200000016000000FF");
        let g = SegmentName::parse("000000010000000300000002", 1 << 30).unwrap();
        assert_eq!(g.segno, 3 * 4 + 2);
        assert_eq!(g.file_name(1 << 30), "000000010000000300000002");
        for bad in [
            "00000001000000000000001",
            "00000001000000000000000g",
            "000000010000000000000001.partial",
        ] {
            assert!(SegmentName::parse(bad, 16 << 20).is_none(), "{bad}");
        }
    }
}
