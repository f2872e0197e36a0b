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

/// Outcome of the re-read rule for a block whose first read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Two consecutive reads gave identical failing bytes: damaged.
    Damaged {
        /// What is wrong.
        problems: Vec<Problem>,
        /// `pd_lsn` of the failing bytes.
        lsn: Lsn,
    },
    /// A re-read gave different bytes that pass: the first read raced a write.
    TornRead,
    /// The bytes changed on every read and never passed.
    Unverified {
        /// Reads made, the first included.
        reads: u32,
    },
    /// The block could not be read again (file truncated or removed).
    Gone,
}

/// The re-read rule (see the module documentation). `first` is the failing first read with its
/// `problems`; `reread` fills its buffer with the block read again and returns `false` when the
/// block is no longer there. `pause` is called before each re-read with the attempt number.
pub fn reread_rule(
    first: &[u8],
    problems: Vec<Problem>,
    blkno: u32,
    check: PageCheck,
    max_rereads: u32,
    reread: &mut dyn FnMut(&mut [u8]) -> bool,
    pause: &mut dyn FnMut(u32),
) -> Verdict {
    let mut prev = first.to_vec();
    let mut problems = problems;
    let mut next = vec![0u8; first.len()];
    for attempt in 1..=max_rereads {
        pause(attempt);
        if !reread(&mut next) {
            return Verdict::Gone;
        }
        if next == prev {
            let lsn = PageHeader::parse(&prev).map_or(Lsn::INVALID, |h| h.lsn);
            return Verdict::Damaged { problems, lsn };
        }
        let again = verify_page(&next, blkno, check);
        if again.is_empty() {
            return Verdict::TornRead;
        }
        problems = again;
        std::mem::swap(&mut prev, &mut next);
    }
    Verdict::Unverified {
        reads: max_rereads + 1,
    }
}

/// Applies the re-read rule to a block of `f` and records the verdict in `r`.
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
    r.rereads += 1;
    let mut reread = |buf: &mut [u8]| {
        matches!(
            read_blocks(file, buf, in_file * blcksz as u64, blcksz),
            Ok(ReadOutcome::Full)
        )
    };
    let mut pause = |attempt: u32| std::thread::sleep(Duration::from_millis(u64::from(attempt)));
    match reread_rule(
        first,
        problems,
        abs,
        check,
        cfg.max_rereads,
        &mut reread,
        &mut pause,
    ) {
        Verdict::Damaged { problems, lsn } => r.damaged.push(BlockReport {
            path: f.rel_path.clone(),
            fork: f.segment.fork,
            segno: f.segment.segno,
            block: abs,
            block_in_file: in_file as u32,
            lsn,
            problems,
        }),
        Verdict::TornRead => r.torn_reads += 1,
        Verdict::Unverified { reads } => r.unverified.push(UnverifiedBlock {
            path: f.rel_path.clone(),
            block: abs,
            reads,
        }),
        Verdict::Gone => r.changed_files += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::HeapPageBuilder;
    use crate::damage::{DamageKind, damage_page};

    const CHECK: PageCheck = PageCheck {
        checksums: true,
        fork: ForkNumber::Main,
    };

    fn good() -> Vec<u8> {
        let mut b = HeapPageBuilder::new(8192);
        for i in 0..5u8 {
            b.add_tuple(2, &[i; 50]).unwrap();
        }
        b.finish(3)
    }

    /// Runs the rule with the re-reads returning `versions` in turn (None = block gone).
    fn run(first: &[u8], versions: Vec<Option<Vec<u8>>>) -> (Verdict, usize) {
        let problems = verify_page(first, 3, CHECK);
        assert!(!problems.is_empty(), "first read must fail");
        let mut it = versions.into_iter();
        let mut reads = 0;
        let mut reread = |buf: &mut [u8]| {
            reads += 1;
            match it.next().flatten() {
                Some(v) => {
                    buf.copy_from_slice(&v);
                    true
                }
                None => false,
            }
        };
        let v = reread_rule(first, problems, 3, CHECK, 5, &mut reread, &mut |_| {});
        (v, reads)
    }

    /// A torn read: the first half of the page from the new version, the rest from the old.
    fn torn(old: &[u8], new: &[u8]) -> Vec<u8> {
        let mut t = old.to_vec();
        t[..4096].copy_from_slice(&new[..4096]);
        t
    }

    #[test]
    fn torn_read_then_good_page_is_not_reported() {
        let old = good();
        let mut new_b = HeapPageBuilder::new(8192);
        for i in 0..9u8 {
            new_b.add_tuple(2, &[i ^ 0x55; 50]).unwrap();
        }
        let new = new_b.finish(3);
        let first = torn(&old, &new);
        let (v, reads) = run(&first, vec![Some(new)]);
        assert_eq!(v, Verdict::TornRead);
        assert_eq!(reads, 1);
    }

    #[test]
    fn stable_damage_is_reported_after_one_identical_reread() {
        let mut bad = good();
        damage_page(&mut bad, 3, DamageKind::Header).unwrap();
        let (v, reads) = run(&bad, vec![Some(bad.clone()), Some(good())]);
        assert!(
            matches!(v, Verdict::Damaged { ref problems, .. } if !problems.is_empty()),
            "{v:?}"
        );
        assert_eq!(reads, 1);
    }

    #[test]
    fn damage_seen_after_a_change_needs_two_identical_reads() {
        let mut bad1 = good();
        damage_page(&mut bad1, 3, DamageKind::Checksum).unwrap();
        let mut bad2 = good();
        damage_page(&mut bad2, 3, DamageKind::Header).unwrap();
        let (v, reads) = run(&bad1, vec![Some(bad2.clone()), Some(bad2.clone())]);
        match v {
            Verdict::Damaged { problems, .. } => assert!(
                problems
                    .iter()
                    .any(|p| matches!(p, Problem::InsaneHeader { .. }))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(reads, 2);
    }

    #[test]
    fn always_changing_failing_block_is_unverified_not_dropped() {
        let versions: Vec<Option<Vec<u8>>> = (0..5u8)
            .map(|i| {
                let mut p = good();
                p[8] ^= i + 1;
                Some(p)
            })
            .collect();
        let mut first = good();
        p_flip(&mut first);
        let (v, reads) = run(&first, versions);
        assert_eq!(v, Verdict::Unverified { reads: 6 });
        assert_eq!(reads, 5);
    }

    fn p_flip(p: &mut [u8]) {
        p[9] ^= 0xFF;
    }

    #[test]
    fn vanished_block_is_gone() {
        let mut bad = good();
        damage_page(&mut bad, 3, DamageKind::Checksum).unwrap();
        assert_eq!(run(&bad, vec![None]).0, Verdict::Gone);
    }
}
