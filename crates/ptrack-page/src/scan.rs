//! The parallel verification engine behind `ptrack verify`: reads every block of a list of
//! relation files on a pool of threads and checks each with [`crate::verify::verify_page`].
//!
//! Work is cut into chunks of at most [`CHUNK_BLOCKS`] blocks so that both halves of a 1 GiB
//! segment keep two threads busy. Block numbers passed to the checksum are absolute within the
//! fork: `segno * relseg_size + block in file` (as `pg_checksums` computes them).
//!
//! **Re-read rule** (for running clusters, applied always): a block that fails verification is
//! read again, up to `max_rereads` times, with a short pause growing from 1 ms between reads. It
//! is reported as damaged only when two consecutive reads return *identical* bytes and those bytes
//! fail. If a re-read returns different bytes that pass, the first read raced a write (a torn read
//! of a page PostgreSQL was writing) and nothing is reported. If the bytes change on every read
//! and never pass, the block is listed as *unverified* (never silently dropped) for the user to
//! re-check. A file that shrinks or vanishes while a running cluster is scanned (VACUUM truncation,
//! DROP) is counted, not reported; on a stopped cluster it is an error.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ptrack_types::{ForkNumber, Lsn};
use rayon::prelude::*;
use serde::Serialize;

use crate::datadir::{DataDir, FileError, RelFile, io_message};
use crate::page::PageHeader;
use crate::verify::{PageCheck, Problem, verify_page};

/// Largest unit of work handed to one thread: 4096 blocks (32 MiB at 8 KiB).
pub const CHUNK_BLOCKS: u64 = 4096;
/// Blocks read per system call.
const READ_BLOCKS: usize = 128;

/// How to scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanConfig {
    /// Worker threads.
    pub jobs: usize,
    /// Re-reads of a failing block before its verdict.
    pub max_rereads: u32,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_rereads: 5,
        }
    }
}

/// A damaged block.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockReport {
    /// PGDATA-relative path of the segment file.
    pub path: String,
    /// Fork.
    pub fork: ForkNumber,
    /// Segment number.
    pub segno: u32,
    /// Absolute block number within the fork.
    pub block: u32,
    /// Block number within the segment file.
    pub block_in_file: u32,
    /// `pd_lsn` as read.
    pub lsn: Lsn,
    /// Everything wrong with it.
    pub problems: Vec<Problem>,
}

/// A block whose bytes changed on every read while failing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnverifiedBlock {
    /// PGDATA-relative path.
    pub path: String,
    /// Absolute block number within the fork.
    pub block: u32,
    /// How many reads were tried.
    pub reads: u32,
}

/// Result of a scan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    /// Relation files scanned.
    pub files: u64,
    /// Blocks read and checked.
    pub blocks: u64,
    /// Bytes read (first reads only).
    pub bytes: u64,
    /// New (all-zero) pages seen.
    pub new_pages: u64,
    /// Failing blocks that were read again.
    pub rereads: u64,
    /// Failing first reads that a re-read showed to be a race with a concurrent write.
    pub torn_reads: u64,
    /// Files that vanished or shrank during the scan of a running cluster.
    pub changed_files: u64,
    /// Damaged blocks, sorted by path and block.
    pub damaged: Vec<BlockReport>,
    /// Blocks that changed on every read and could not be verified.
    pub unverified: Vec<UnverifiedBlock>,
    /// Files that could not be read.
    pub errors: Vec<FileError>,
}

impl ScanReport {
    fn merge(mut self, o: ScanReport) -> ScanReport {
        self.files += o.files;
        self.blocks += o.blocks;
        self.bytes += o.bytes;
        self.new_pages += o.new_pages;
        self.rereads += o.rereads;
        self.torn_reads += o.torn_reads;
        self.changed_files += o.changed_files;
        self.damaged.extend(o.damaged);
        self.unverified.extend(o.unverified);
        self.errors.extend(o.errors);
        self
    }

    /// Files with at least one damaged block.
    pub fn damaged_files(&self) -> usize {
        let mut paths: Vec<&str> = self.damaged.iter().map(|d| d.path.as_str()).collect();
        paths.dedup();
        paths.len()
    }
}

struct Chunk<'a> {
    file: &'a RelFile,
    first: u64,
    count: u64,
    first_of_file: bool,
}

/// Checks every block of `files` (from [`DataDir::relation_files`]). `progress` is called with
/// the number of bytes read as work proceeds. Never panics on any file contents.
pub fn scan_files(
    dd: &DataDir,
    files: &[RelFile],
    cfg: ScanConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> ScanReport {
    let blcksz = dd.blcksz() as u64;
    let mut report = ScanReport::default();
    let mut chunks = Vec::new();
    for f in files {
        if f.size % blcksz != 0 {
            // A running server only ever extends by whole blocks; look once more in case the
            // listing raced an extension.
            let now = std::fs::metadata(&f.abs_path)
                .map(|m| m.len())
                .unwrap_or(f.size);
            if now % blcksz != 0 {
                report.errors.push(FileError {
                    path: f.rel_path.clone(),
                    message: format!(
                        "size {now} is not a multiple of the block size {blcksz} (truncated or partially written segment)"
                    ),
                });
                continue;
            }
        }
        let nblocks = f.size / blcksz;
        if nblocks > u64::from(dd.control.relseg_size) {
            report.errors.push(FileError {
                path: f.rel_path.clone(),
                message: format!(
                    "{nblocks} blocks is more than a segment holds ({})",
                    dd.control.relseg_size
                ),
            });
            continue;
        }
        report.files += 1;
        let mut first = 0;
        loop {
            let count = CHUNK_BLOCKS.min(nblocks - first);
            chunks.push(Chunk {
                file: f,
                first,
                count,
                first_of_file: first == 0,
            });
            first += count;
            if first >= nblocks {
                break;
            }
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.jobs.max(1))
        .build();
    // One read buffer per worker, reused for every chunk it takes.
    let new_buf = || vec![0u8; READ_BLOCKS * dd.blcksz()];
    let work = |buf: &mut Vec<u8>, c: &Chunk<'_>| scan_chunk(dd, c, cfg, buf, progress);
    let scanned = match pool {
        Ok(pool) => pool.install(|| {
            chunks
                .par_iter()
                .map_init(new_buf, work)
                .reduce(ScanReport::default, ScanReport::merge)
        }),
        Err(_) => {
            let mut buf = new_buf();
            chunks
                .iter()
                .map(|c| work(&mut buf, c))
                .fold(ScanReport::default(), ScanReport::merge)
        }
    };
    let files_listed = report.files;
    let mut report = report.merge(scanned);
    report.files = files_listed;
    report
        .damaged
        .sort_by(|a, b| (&a.path, a.block).cmp(&(&b.path, b.block)));
    report
        .unverified
        .sort_by(|a, b| (&a.path, a.block).cmp(&(&b.path, b.block)));
    report.errors.sort_by(|a, b| a.path.cmp(&b.path));
    report.errors.dedup();
    report
}

enum ReadOutcome {
    Full,
    /// The file ended early (or vanished) after this many whole blocks.
    Short(usize),
}

fn read_blocks(file: &File, buf: &mut [u8], offset: u64, blcksz: usize) -> io::Result<ReadOutcome> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(ReadOutcome::Short(done / blcksz)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::Full)
}

fn scan_chunk(
    dd: &DataDir,
    c: &Chunk<'_>,
    cfg: ScanConfig,
    buf: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> ScanReport {
    let mut r = ScanReport::default();
    let blcksz = dd.blcksz();
    let f = c.file;
    let file_error = |message: String| FileError {
        path: f.rel_path.clone(),
        message,
    };
    let file = match File::open(&f.abs_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && dd.online => {
            if c.first_of_file {
                r.changed_files += 1;
            }
            return r;
        }
        Err(e) => {
            r.errors
                .push(file_error(format!("cannot open: {}", io_message(&e))));
            return r;
        }
    };
    let check = PageCheck {
        checksums: dd.control.data_checksum_version != 0,
        fork: f.segment.fork,
    };
    let seg_base = u64::from(f.segment.segno) * u64::from(dd.control.relseg_size);
    let mut block = c.first;
    let end = c.first + c.count;
    while block < end {
        let n = READ_BLOCKS.min((end - block) as usize);
        let slice = &mut buf[..n * blcksz];
        let offset = block * blcksz as u64;
        let got = match read_blocks(&file, slice, offset, blcksz) {
            Ok(ReadOutcome::Full) => n,
            Ok(ReadOutcome::Short(k)) => {
                if !dd.online {
                    r.errors.push(file_error(format!(
                        "file shrank during the scan: ended at block {}",
                        block + k as u64
                    )));
                } else {
                    r.changed_files += 1;
                }
                k
            }
            Err(e) => {
                r.errors.push(file_error(format!(
                    "cannot read block {block}: {}",
                    io_message(&e)
                )));
                return r;
            }
        };
        r.bytes += (got * blcksz) as u64;
        progress((got * blcksz) as u64);
        for (i, page) in slice.chunks_exact(blcksz).take(got).enumerate() {
            let in_file = block + i as u64;
            // seg_base + in_file < 2^32 because nblocks <= relseg_size was checked.
            let abs = (seg_base + in_file) as u32;
            r.blocks += 1;
            if PageHeader::parse(page).is_some_and(|h| h.is_new()) {
                r.new_pages += 1;
            }
            let problems = verify_page(page, abs, check);
            if !problems.is_empty() {
                recheck(&file, f, page, in_file, abs, problems, check, cfg, &mut r);
            }
        }
        if got < n {
            return r;
        }
        block += n as u64;
    }
    r
}

/// Applies the re-read rule to a block whose first read failed.
#[allow(clippy::too_many_arguments)]
fn recheck(
    file: &File,
    f: &RelFile,
    first: &[u8],
    in_file: u64,
    abs: u32,
    problems: Vec<Problem>,
    check: PageCheck,
    cfg: ScanConfig,
    r: &mut ScanReport,
) {
    let blcksz = first.len();
    let mut prev = first.to_vec();
    let mut problems = problems;
    let mut next = vec![0u8; blcksz];
    let mut reads = 1;
    r.rereads += 1;
    for attempt in 1..=cfg.max_rereads {
        std::thread::sleep(Duration::from_millis(u64::from(attempt)));
        reads += 1;
        match read_blocks(file, &mut next, in_file * blcksz as u64, blcksz) {
            Ok(ReadOutcome::Full) => {}
            // The block went away under a running server (truncation): nothing to report.
            Ok(ReadOutcome::Short(_)) | Err(_) => {
                r.changed_files += 1;
                return;
            }
        }
        if next == prev {
            let lsn = PageHeader::parse(&prev).map_or(Lsn::INVALID, |h| h.lsn);
            r.damaged.push(BlockReport {
                path: f.rel_path.clone(),
                fork: f.segment.fork,
                segno: f.segment.segno,
                block: abs,
                block_in_file: in_file as u32,
                lsn,
                problems,
            });
            return;
        }
        let again = verify_page(&next, abs, check);
        if again.is_empty() {
            r.torn_reads += 1;
            return;
        }
        problems = again;
        std::mem::swap(&mut prev, &mut next);
    }
    r.unverified.push(UnverifiedBlock {
        path: f.rel_path.clone(),
        block: abs,
        reads,
    });
}
