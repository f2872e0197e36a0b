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
use std::sync::atomic::{AtomicUsize, Ordering};

use ptrack_types::{Lsn, PgMajorVersion, TimeLineId, WalSegSize};

use crate::archive::{
    Compression, HistoryEntry, parse_history, read_segment_file, split_segment_file_name,
};
use crate::decoder::{DecoderConfig, EndOfWal, Polled, Start, WalDecoder, WalError};
use crate::mapped::{Mapping, SegmentData};
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
    /// Parses `TTTTTTTTLLLLLLLLSSSSSSSS` (24 upper-case hex digits) for a segment size. Only the
    /// canonical name of a segment is one: a segment part past the segments of one xlogid
    /// (which PostgreSQL never writes) is refused, so no two names denote one segment.
    pub fn parse(name: &str, seg_size: WalSegSize) -> Option<SegmentName> {
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
        let per_log = seg_size.per_xlogid();
        (seg < per_log).then_some(SegmentName {
            tli: TimeLineId(tli),
            segno: log * per_log + seg,
        })
    }

    /// The file name (`XLogFileName`).
    pub fn file_name(&self, seg_size: WalSegSize) -> String {
        let per_log = seg_size.per_xlogid();
        format!(
            "{:08X}{:08X}{:08X}",
            self.tli.0,
            self.segno / per_log,
            self.segno % per_log
        )
    }
}

/// The name of timeline `tli`'s history file, `TTTTTTTT.history` (`TLHistoryFileName`).
pub fn history_file_name(tli: TimeLineId) -> String {
    format!("{:08X}.history", tli.0)
}

/// The timeline of a history file name (`IsTLHistoryFileName`), `None` for any other name.
pub fn parse_history_file_name(name: &str) -> Option<TimeLineId> {
    let t = name.strip_suffix(".history").filter(|t| t.len() == 8)?;
    if !t
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(t, 16).ok().map(TimeLineId)
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

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its timeline.
    pub tli: TimeLineId,
    /// The file.
    pub path: PathBuf,
    /// How it is compressed.
    pub compression: Compression,
    /// A `.partial` segment.
    pub partial: bool,
}

/// The segment files of a directory.
#[derive(Debug, Clone)]
pub struct WalDir {
    /// The directory.
    pub dir: PathBuf,
    /// Segment size, from the first segment's long header.
    pub seg_size: WalSegSize,
    /// Page size, from the same header.
    pub xlog_blcksz: u32,
    /// System identifier, from the same header.
    pub system_identifier: u64,
    /// The major version, from the first page's magic.
    pub major: PgMajorVersion,
    /// The timeline followed: the highest found.
    pub timeline: TimeLineId,
    /// Its history (parent timelines and their switch points), empty for timeline 1 or when
    /// the history file is missing.
    pub history: Vec<HistoryEntry>,
    /// For each segment number, the file to read on the followed timeline.
    pub segments: BTreeMap<u64, SegmentFile>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl WalDir {
    /// Lists the segment files of `dir` (plain, compressed, partial), reads the segment size from
    /// the first one, and picks for each segment number the file of the right timeline: following
    /// the highest timeline's history file, the newest timeline whose range covers the segment
    /// (`XLogFileReadAnyTLI`); a full segment is preferred to a `.partial` one.
    pub fn open(dir: &Path) -> Result<WalDir, ReadError> {
        let mut names = Vec::new();
        let mut histories = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let Ok(n) = e.file_name().into_string() else {
                continue;
            };
            if let Some(tli) = parse_history_file_name(&n) {
                histories.insert(tli.0, e.path());
            } else if split_segment_file_name(&n).is_some() {
                names.push(n);
            }
        }
        names.sort();
        let first = names
            .iter()
            .filter_map(|n| split_segment_file_name(n).map(|s| (n, s)))
            .find(|(_, (base, _, _))| SegmentName::parse(base, WalSegSize::DEFAULT).is_some())
            .ok_or_else(|| ReadError::NoSegments {
                dir: dir.display().to_string(),
            })?;
        let first_path = dir.join(first.0);
        // Only the long page header is needed (reading, or decompressing, the whole 16 MB
        // segment here cost as much as decoding a tenth of the WAL of a run).
        let head = read_segment_file(&first_path, first.1.2, crate::consts::SIZE_OF_XLOG_LONG_PHD)
            .map_err(io_err(&first_path))?;
        let u32_at = |o: usize| {
            head.get(o..o + 4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let seg_size = u32_at(32);
        let xlog_blcksz = u32_at(36);
        let system_identifier = head
            .get(24..32)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        let info = head
            .get(2..4)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let bad_header = || ReadError::BadSegment {
            path: first_path.display().to_string(),
            why: "first page has no valid long header (segment size, page size)".into(),
        };
        let seg_size = WalSegSize::new(u64::from(seg_size)).map_err(|_| bad_header())?;
        if info & crate::consts::XLP_LONG_HEADER == 0 || !xlog_blcksz.is_power_of_two() {
            return Err(bad_header());
        }
        let magic = head
            .get(0..2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let major = PgMajorVersion::ALL
            .into_iter()
            .find(|m| m.xlog_page_magic() == magic)
            .ok_or_else(|| ReadError::BadSegment {
                path: first_path.display().to_string(),
                why: format!("page magic 0x{magic:04X} is not PostgreSQL 13-18 WAL"),
            })?;
        // All candidate files per (segno, tli), best first.
        let mut all: BTreeMap<(u64, u32), Vec<SegmentFile>> = BTreeMap::new();
        for n in &names {
            let Some((base, partial, compression)) = split_segment_file_name(n) else {
                continue;
            };
            if let Some(s) = SegmentName::parse(base, seg_size) {
                all.entry((s.segno, s.tli.0))
                    .or_default()
                    .push(SegmentFile {
                        tli: s.tli,
                        path: dir.join(n),
                        compression,
                        partial,
                    });
            }
        }
        for v in all.values_mut() {
            v.sort_by_key(|f| (f.partial, f.compression));
        }
        let top = all
            .keys()
            .map(|k| k.1)
            .chain(histories.keys().copied())
            .max()
            .unwrap_or(1);
        let history = match histories.get(&top) {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(io_err(p))?;
                parse_history(&text).ok_or_else(|| ReadError::BadSegment {
                    path: p.display().to_string(),
                    why: "malformed timeline history file".into(),
                })?
            }
            None => Vec::new(),
        };
        // Timelines with the range of segments each may supply: [begin, end] by segment number.
        let mut ranges: Vec<(u32, u64, u64)> = Vec::new();
        let mut begin = Lsn(0);
        for h in &history {
            ranges.push((
                h.tli.0,
                seg_size.segno(begin),
                seg_size.segno(h.switchpoint),
            ));
            begin = h.switchpoint;
        }
        ranges.push((top, seg_size.segno(begin), u64::MAX));
        let follow_any = history.is_empty() && top > 1;
        let mut segments = BTreeMap::new();
        let segnos: std::collections::BTreeSet<u64> = all.keys().map(|k| k.0).collect();
        for segno in segnos {
            let pick = if follow_any {
                // No history file: the newest timeline that has the segment.
                all.range((segno, 0)..=(segno, u32::MAX))
                    .next_back()
                    .and_then(|(_, v)| v.first().cloned())
            } else {
                ranges
                    .iter()
                    .rev()
                    .filter(|(_, b, e)| segno >= *b && segno <= *e)
                    .find_map(|(tli, _, _)| {
                        all.get(&(segno, *tli)).and_then(|v| v.first().cloned())
                    })
            };
            if let Some(f) = pick {
                segments.insert(segno, f);
            }
        }
        Ok(WalDir {
            dir: dir.to_path_buf(),
            seg_size,
            xlog_blcksz,
            system_identifier,
            major,
            timeline: TimeLineId(top),
            history,
            segments,
        })
    }

    /// LSN of the first byte of segment `segno`.
    pub fn segment_start(&self, segno: u64) -> Lsn {
        self.seg_size.start(segno)
    }

    /// Reads segment `segno` (plain ones mapped, compressed ones decompressed), checking its
    /// size.
    pub fn read_segment(&self, segno: u64) -> Result<Option<SegmentData>, ReadError> {
        let Some(f) = self.segments.get(&segno) else {
            return Ok(None);
        };
        let seg = self.seg_size.bytes();
        if f.compression == Compression::None {
            let file = std::fs::File::open(&f.path).map_err(io_err(&f.path))?;
            let len = file.metadata().map_err(io_err(&f.path))?.len();
            if len != seg {
                return Err(ReadError::BadSegment {
                    path: f.path.display().to_string(),
                    why: format!("holds {len} bytes, not the segment size {seg}"),
                });
            }
            if let Some(m) = Mapping::map(&file, len as usize) {
                return Ok(Some(SegmentData::Mapped(m)));
            }
        }
        let bytes = read_segment_file(&f.path, f.compression, seg).map_err(io_err(&f.path))?;
        if bytes.len() as u64 != seg {
            return Err(ReadError::BadSegment {
                path: f.path.display().to_string(),
                why: format!("holds {} bytes, not the segment size {seg}", bytes.len()),
            });
        }
        Ok(Some(SegmentData::Owned(bytes)))
    }
}

/// What every segment of a [`SegmentSource`] agrees with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFacts {
    /// Segment size.
    pub seg_size: WalSegSize,
    /// WAL page size.
    pub xlog_blcksz: u32,
    /// System identifier.
    pub system_identifier: u64,
    /// The major version.
    pub major: PgMajorVersion,
}

/// Where a scan reads whole segments from: a directory ([`WalDir`]), or a repository's archive
/// (`ptrack-backup`).
pub trait SegmentSource: Sync {
    /// The facts the decoder checks every page against.
    fn facts(&self) -> SourceFacts;
    /// Segment `segno`, checked to be whole; `None` when the source does not hold it.
    fn segment(&self, segno: u64) -> Result<Option<SegmentData>, ReadError>;
    /// The file name of segment `segno` on the timeline followed (for a missing one).
    fn name(&self, segno: u64) -> String;
    /// Where segment `segno` is read from (for errors).
    fn location(&self, segno: u64) -> String;
}

impl SegmentSource for WalDir {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            seg_size: self.seg_size,
            xlog_blcksz: self.xlog_blcksz,
            system_identifier: self.system_identifier,
            major: self.major,
        }
    }
    fn segment(&self, segno: u64) -> Result<Option<SegmentData>, ReadError> {
        self.read_segment(segno)
    }
    fn name(&self, segno: u64) -> String {
        SegmentName {
            tli: self.timeline,
            segno,
        }
        .file_name(self.seg_size)
    }
    fn location(&self, segno: u64) -> String {
        self.segments.get(&segno).map_or_else(
            || self.dir.display().to_string(),
            |f| f.path.display().to_string(),
        )
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

impl std::fmt::Display for ScanEnd {
    /// How the scan ended, one line (as `ptrack wal` prints it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanEnd::ReachedTo => f.write_str("reached --to"),
            ScanEnd::EndOfWal(e) => write!(f, "end of WAL at {}: {:?}", e.lsn, e.reason),
            ScanEnd::MissingSegment { name, at } => {
                write!(f, "next segment {name} not found (next record at {at})")
            }
        }
    }
}

impl ScanEnd {
    /// Whether every record that starts before `to` was read: the scan reached `to`, or valid
    /// WAL (or the available segments) ended at or after it.
    pub fn covers(&self, to: Lsn) -> bool {
        match self {
            ScanEnd::ReachedTo => true,
            ScanEnd::EndOfWal(e) => e.lsn >= to,
            ScanEnd::MissingSegment { at, .. } => *at >= to,
        }
    }
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
    let from = match from {
        Some(l) => l,
        None => {
            let first = wal
                .segments
                .keys()
                .next()
                .ok_or_else(|| ReadError::NoSegments {
                    dir: wal.dir.display().to_string(),
                })?;
            wal.seg_size.start(*first)
        }
    };
    scan_source(wal, base, from, to, on_record, on_abandoned)
}

/// [`scan_dir`] over any [`SegmentSource`], from the first record at or after `from`.
pub fn scan_source(
    wal: &dyn SegmentSource,
    base: DecoderConfig,
    from: Lsn,
    to: Option<Lsn>,
    on_record: &mut dyn FnMut(&Record),
    on_abandoned: &mut dyn FnMut(Lsn, Lsn),
) -> Result<ScanEnd, ReadError> {
    let facts = wal.facts();
    let seg = facts.seg_size;
    let cfg = DecoderConfig {
        seg_size: seg,
        xlog_blcksz: facts.xlog_blcksz,
        system_identifier: Some(facts.system_identifier),
        major: Some(facts.major),
        ..base
    };
    let first_seg = seg.segno(from);
    let psize = u64::from(facts.xlog_blcksz);
    let stream_start = seg.start(first_seg);
    let start_page = Lsn(from.0 - from.0 % psize);
    let mut dec = WalDecoder::new(cfg, stream_start, Start::FirstOnPage(start_page));
    let mut segno = first_seg;
    // One record buffer for the whole scan: no allocation per record.
    let mut r = Record::default();
    loop {
        // Feed the next segment when the decoder needs more.
        let poll = loop {
            let p = dec.poll_into(&mut r).map_err(|source| ReadError::Wal {
                path: wal.location(segno.saturating_sub(1)),
                source,
            })?;
            if p != Polled::NeedMore {
                break p;
            }
            let Some(bytes) = wal.segment(segno)? else {
                return Ok(ScanEnd::MissingSegment {
                    name: wal.name(segno),
                    at: dec.position(),
                });
            };
            dec.feed_segment(bytes);
            segno += 1;
        };
        match poll {
            Polled::Record => {
                if to.is_some_and(|t| r.lsn >= t) {
                    return Ok(ScanEnd::ReachedTo);
                }
                if r.lsn >= from {
                    on_record(&r);
                }
            }
            Polled::Abandoned { lsn, at } => on_abandoned(lsn, at),
            Polled::End(e) => return Ok(ScanEnd::EndOfWal(e)),
            Polled::NeedMore => {}
        }
    }
}

/// One part of a parallel scan: what its fold produced and how its records link to the part
/// before.
struct Part<T> {
    acc: T,
    first: Option<(Lsn, Lsn)>, // (lsn, xl_prev) of its first record
    last: Option<Lsn>,
    end: ScanEnd,
    abandoned: Vec<(Lsn, Lsn)>,
}

/// What [`scan_dir_parallel`] returns: the accumulators of the ranges kept, in order, each with
/// its range end; how the scan ended; the abandoned records.
pub type ParallelScan<T> = (Vec<(T, Lsn)>, ScanEnd, Vec<(Lsn, Lsn)>);

/// How many ranges [`scan_dir_parallel`] cuts `nseg` segments into for `threads` threads: about
/// four segments each, so that a thread that finishes early (or was not descheduled by other
/// work on the machine) takes the next range instead of waiting; at least one range per thread
/// and at most eight, which bounds the accumulators kept until the join.
pub fn parallel_ranges(nseg: u64, threads: usize) -> usize {
    let threads = threads.max(1) as u64;
    nseg.div_ceil(4)
        .clamp(threads, threads * 8)
        .min(nseg)
        .max(1) as usize
}

/// Like [`scan_dir`] over `[from, to)`, on `threads` threads: the segments are split into
/// [`parallel_ranges`] contiguous ranges, which the threads take in order as they become free;
/// each is decoded from its first record (found as `XLogFindNextRecord` does) and folded into its
/// own accumulator (`init(range start)`, then `fold` per record). At each join the next range's
/// first record must link (`xl_prev`) to the previous range's last record, exactly the check a
/// sequential read makes; if a range ends early (end of valid WAL, missing segment), the later
/// ranges are discarded (and those not started yet are not decoded).
pub fn scan_dir_parallel<T, I, F>(
    wal: &dyn SegmentSource,
    base: DecoderConfig,
    from: Lsn,
    to: Lsn,
    threads: usize,
    init: I,
    fold: F,
) -> Result<ParallelScan<T>, ReadError>
where
    T: Send,
    I: Fn(Lsn) -> T + Sync,
    F: Fn(&mut T, &Record) + Sync,
{
    let seg = wal.facts().seg_size;
    let nseg = seg.prev_segno(to).saturating_sub(seg.segno(from)) + 1;
    let ranges = parallel_ranges(nseg, threads);
    scan_dir_ranges(wal, base, from, to, threads, ranges, init, fold)
}

/// [`scan_dir_parallel`] with the number of ranges given (tests try every split).
#[allow(clippy::too_many_arguments)]
pub fn scan_dir_ranges<T, I, F>(
    wal: &dyn SegmentSource,
    base: DecoderConfig,
    from: Lsn,
    to: Lsn,
    threads: usize,
    ranges: usize,
    init: I,
    fold: F,
) -> Result<ParallelScan<T>, ReadError>
where
    T: Send,
    I: Fn(Lsn) -> T + Sync,
    F: Fn(&mut T, &Record) + Sync,
{
    let seg = wal.facts().seg_size;
    let first_seg = seg.segno(from);
    let last_seg = seg.prev_segno(to);
    let nseg = last_seg.saturating_sub(first_seg) + 1;
    let nranges = (ranges.max(1) as u64).min(nseg).max(1);
    // Range k covers records starting in [bounds[k], bounds[k+1]).
    let mut bounds = vec![from];
    for k in 1..nranges {
        bounds.push(seg.start(first_seg + nseg * k / nranges));
    }
    bounds.push(to);
    let nranges = nranges as usize;
    let next = AtomicUsize::new(0);
    // The first range that ended early or failed: later ones need not be decoded.
    let stop = AtomicUsize::new(usize::MAX);
    let run = |k: usize| -> Result<Part<T>, ReadError> {
        let (start, end) = (bounds[k], bounds[k + 1]);
        let mut acc = init(start);
        let mut first = None;
        let mut last = None;
        let mut abandoned = Vec::new();
        let end_reason = scan_source(
            wal,
            base,
            start,
            Some(end),
            &mut |r| {
                first.get_or_insert((r.lsn, r.prev));
                last = Some(r.lsn);
                fold(&mut acc, r);
            },
            &mut |l, a| abandoned.push((l, a)),
        )?;
        Ok(Part {
            acc,
            first,
            last,
            end: end_reason,
            abandoned,
        })
    };
    let worker = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= nranges || k > stop.load(Ordering::Relaxed) {
                return done;
            }
            let r = run(k);
            if r.as_ref().map_or(true, |p| !p.end.covers(bounds[k + 1])) {
                stop.fetch_min(k, Ordering::Relaxed);
            }
            done.push((k, r));
        }
    };
    let mut slots: Vec<Option<Result<Part<T>, ReadError>>> = (0..nranges).map(|_| None).collect();
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads.clamp(1, nranges))
            .map(|_| sc.spawn(worker))
            .collect();
        for h in handles {
            let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (k, r) in done {
                if let Some(s) = slots.get_mut(k) {
                    *s = Some(r);
                }
            }
        }
    });
    join_parts(slots, &bounds)
}

/// Keeps the ranges' results in order while each links to the one before (see
/// [`scan_dir_parallel`]).
fn join_parts<T>(
    slots: Vec<Option<Result<Part<T>, ReadError>>>,
    bounds: &[Lsn],
) -> Result<ParallelScan<T>, ReadError> {
    let mut kept = Vec::new();
    let mut abandoned = Vec::new();
    let mut prev_last: Option<Lsn> = None;
    let mut final_end = ScanEnd::ReachedTo;
    for (k, r) in slots.into_iter().enumerate() {
        // A range not decoded comes after one that ended early: the loop stopped there.
        let Some(r) = r else { break };
        let p = r?;
        // The chain must continue across the join; otherwise WAL ended before this range.
        if let (Some(pl), Some((first_lsn, first_prev))) = (prev_last, p.first)
            && first_prev != pl
        {
            final_end = ScanEnd::EndOfWal(EndOfWal {
                lsn: first_lsn,
                reason: crate::decoder::EndReason::PrevLinkMismatch {
                    expected: pl,
                    found: first_prev,
                },
            });
            break;
        }
        prev_last = p.last.or(prev_last);
        abandoned.extend(p.abandoned);
        let range_end = bounds.get(k + 1).copied().unwrap_or_default();
        let ended_early = !p.end.covers(range_end);
        final_end = p.end.clone();
        kept.push((p.acc, range_end));
        if ended_early {
            break;
        }
    }
    Ok((kept, final_end, abandoned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_ranges_about_four_segments_each_within_bounds() {
        assert_eq!(parallel_ranges(1, 2), 1);
        assert_eq!(parallel_ranges(3, 2), 2);
        assert_eq!(parallel_ranges(29, 2), 8);
        assert_eq!(parallel_ranges(55, 2), 14);
        assert_eq!(parallel_ranges(1000, 2), 16);
        assert_eq!(parallel_ranges(10, 1), 3);
        assert_eq!(parallel_ranges(5, 0), 2);
    }

    #[test]
    fn segment_names_round_trip() {
        let m16 = WalSegSize::DEFAULT;
        let g1 = WalSegSize::new(1 << 30).unwrap();
        let s = SegmentName::parse("000000010000000000000001", m16).unwrap();
        assert_eq!((s.tli, s.segno), (TimeLineId(1), 1));
        let s = SegmentName::parse("0000000200000016000000FF", m16).unwrap();
        assert_eq!(s.segno, 0x16 * 256 + 0xFF);
        assert_eq!(s.file_name(m16), "0000000200000016000000FF");
        let g = SegmentName::parse("000000010000000300000002", g1).unwrap();
        assert_eq!(g.segno, 3 * 4 + 2);
        assert_eq!(g.file_name(g1), "000000010000000300000002");
        for bad in [
            "00000001000000000000001",
            "00000001000000000000000g",
            "000000010000000000000001.partial",
            "000000010000000000000100",
        ] {
            assert!(SegmentName::parse(bad, m16).is_none(), "{bad}");
        }
        // Not canonical for 1 GiB segments (4 per xlogid), canonical for 16 MiB ones.
        assert!(SegmentName::parse("000000010000000000000004", g1).is_none());
        assert!(SegmentName::parse("000000010000000000000004", m16).is_some());
    }

    #[test]
    fn history_names_round_trip() {
        assert_eq!(history_file_name(TimeLineId(0x1A)), "0000001A.history");
        assert_eq!(
            parse_history_file_name("0000001A.history"),
            Some(TimeLineId(0x1A))
        );
        for bad in [
            "1A.history",
            "0000001a.history",
            "0000001A.histor",
            "0000001A",
        ] {
            assert_eq!(parse_history_file_name(bad), None, "{bad}");
        }
    }
}
