//! Reading a relation segment for a backup: which pages to keep, verification of every page read
//! with the `ptrack verify` rules (`ptrack_page::verify`), and re-reads of failing pages that a
//! concurrent write may have torn (as `src/backend/backup/basebackup.c: verify_page_checksum`
//! and pg_probackup's `prepare_page` do). Whole files are read and compared with the parent's
//! by size and BLAKE3 digest, never by a CRC: files such as `pg_control` and `pg_filenode.map`
//! end with a CRC-32C of their own content, so their whole-file CRC-32C is one constant.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ptrack_page::page::PageHeader;
use ptrack_page::scan::{Verdict, reread_rule};
use ptrack_page::verify::{PageCheck, verify_page};
use ptrack_types::Lsn;
use serde::Serialize;

use crate::{Error, Result};
use ptrack_format::bundle::{BundleWriter, FLAG_CORRUPT};
use ptrack_format::manifest::{IndexRef, Stored, Tail};
use ptrack_format::paths::{Digest, RelPath};

/// Re-reads of a failing page before it is called damaged (pg_probackup tries up to 300).
pub const MAX_REREADS: u32 = 100;
/// Blocks read per system call.
const BATCH: u32 = 128;

/// Which blocks of a range to read and which of those to keep.
#[derive(Debug, Clone)]
pub struct Select {
    /// Segment-relative blocks to read, sorted; `None` reads every block of the range.
    pub blocks: Option<Vec<u32>>,
    /// Keep only pages whose LSN is at or after this (all-zero and new pages are always kept);
    /// `None`: keep every page read (then the file is stored whole, `base`).
    pub since: Option<Lsn>,
    /// Keep every page read whatever its LSN (ptrack mode: the map lists pages that may have
    /// changed without an LSN change, such as VACUUM's all-visible flag and copied databases).
    pub keep_read: bool,
    /// Pages at or after this segment-relative block are always kept (new since the parent).
    pub new_from: u32,
    /// Segment-relative blocks always kept, sorted (heap pages whose all-visible flag changed
    /// without an LSN change, `crate::vm`).
    pub also: Vec<u32>,
}

/// A damaged page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damaged {
    /// PGDATA-relative path.
    pub path: RelPath,
    /// Block within the segment file.
    pub block_in_file: u32,
    /// Block within the fork.
    pub block: u32,
    /// `pd_lsn` as read.
    pub lsn: Lsn,
    /// What is wrong.
    pub problems: Vec<String>,
}

/// What reading one part produced.
#[derive(Debug, Default)]
pub struct PartResult {
    /// Its page index, when any page was kept.
    pub index: Option<IndexRef>,
    /// Pages kept.
    pub pages: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Blocks present when the file turned out shorter than listed (concurrent truncation).
    pub short_at: Option<u32>,
    /// Damaged pages.
    pub damaged: Vec<Damaged>,
    /// The file could not be read (permission): why.
    pub unreadable: Option<String>,
}

/// One piece of a segment file to read.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// PGDATA-relative path.
    pub rel: &'a RelPath,
    /// First block (segment-relative).
    pub start: u32,
    /// End block (exclusive).
    pub end: u32,
    /// Block number of the segment's first block within the fork.
    pub base_block: u32,
    /// Checks to apply.
    pub check: PageCheck,
}

fn read_blocks(f: &File, buf: &mut [u8], first: u32, blcksz: usize) -> io::Result<usize> {
    let mut got = 0;
    let off = u64::from(first) * blcksz as u64;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got / blcksz)
}

/// Verifies `page` (block `in_file` of the part) and applies `ptrack verify`'s re-read rule
/// (`ptrack_page::scan::reread_rule`) when it fails. Returns the problems of the bytes kept in
/// `page` (empty: good): a page that read the same failing bytes twice is damaged; one that
/// passed on a re-read raced a write; one that changed on every read and never passed is being
/// written right now, so WAL replay from the backup's start rewrites it (full_page_writes is on
/// during a backup) and its last bytes are kept, not called damaged. `None` when the block is
/// gone (file truncated meanwhile).
fn checked(
    f: &File,
    page: &mut [u8],
    in_file: u32,
    abs: u32,
    check: PageCheck,
) -> io::Result<Option<Vec<String>>> {
    let problems = verify_page(page, abs, check);
    if problems.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let blcksz = page.len();
    let mut last = page.to_vec();
    let mut failure: Option<io::Error> = None;
    let mut reread = |buf: &mut [u8]| match read_blocks(f, buf, in_file, blcksz) {
        Ok(1) => {
            last.copy_from_slice(buf);
            true
        }
        Ok(_) => false,
        Err(e) => {
            failure = Some(e);
            false
        }
    };
    let mut pause = |attempt: u32| {
        std::thread::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10))));
    };
    let first = page.to_vec();
    let verdict = reread_rule(
        &first,
        problems,
        abs,
        check,
        MAX_REREADS,
        &mut reread,
        &mut pause,
    );
    if let Some(e) = failure {
        return Err(e);
    }
    page.copy_from_slice(&last);
    Ok(match verdict {
        Verdict::Damaged { problems, .. } => Some(problems.iter().map(|p| p.to_string()).collect()),
        Verdict::TornRead | Verdict::Unverified { .. } => Some(Vec::new()),
        Verdict::Gone => None,
    })
}

/// Reads a part of `root/rel`, verifies every page read and stores the kept ones in `w`.
pub fn copy_part(
    root: &Path,
    part: &Part,
    sel: &Select,
    w: &mut BundleWriter,
    blcksz: usize,
) -> Result<PartResult> {
    let path = root.join(part.rel.as_path());
    let mut r = PartResult::default();
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            r.short_at = Some(0);
            return Ok(r);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            r.unreadable = Some(format!("could not open: {e}"));
            return Ok(r);
        }
        Err(e) => return Err(Error::io(&path, "open", e)),
    };
    let mut entries = Vec::new();
    let mut buf = vec![0u8; BATCH as usize * blcksz];
    // Runs of consecutive blocks to read.
    let runs: Vec<(u32, u32)> = match &sel.blocks {
        None => vec![(part.start, part.end)],
        Some(list) => {
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for &b in list.iter().filter(|&&b| b >= part.start && b < part.end) {
                match runs.last_mut() {
                    Some((_, e)) if *e == b => *e += 1,
                    _ => runs.push((b, b + 1)),
                }
            }
            runs
        }
    };
    'runs: for (s, e) in runs {
        let mut b = s;
        while b < e {
            let n = (e - b).min(BATCH);
            let want = n as usize * blcksz;
            let got = read_blocks(&f, &mut buf[..want], b, blcksz)
                .map_err(|e| Error::io(&path, "read", e))?;
            r.bytes_read += (got * blcksz) as u64;
            for i in 0..got {
                let in_file = b + i as u32;
                let page = &mut buf[i * blcksz..(i + 1) * blcksz];
                let abs = part.base_block + in_file;
                let Some(problems) = checked(&f, page, in_file, abs, part.check)
                    .map_err(|e| Error::io(&path, "read", e))?
                else {
                    r.short_at = Some(in_file);
                    break 'runs;
                };
                let hdr = PageHeader::parse(page);
                let lsn = hdr.map_or(Lsn::INVALID, |h| h.lsn);
                let keep = match sel.since {
                    None => true,
                    Some(_) if sel.keep_read => true,
                    Some(since) => {
                        in_file >= sel.new_from
                            || sel.also.binary_search(&in_file).is_ok()
                            || !problems.is_empty()
                            || hdr.is_none_or(|h| h.is_new())
                            || lsn >= since
                    }
                };
                if !keep {
                    continue;
                }
                let mut entry = w.put_page(page, in_file)?;
                if !problems.is_empty() {
                    entry.flags |= FLAG_CORRUPT;
                    r.damaged.push(Damaged {
                        path: part.rel.clone(),
                        block_in_file: in_file,
                        block: abs,
                        lsn,
                        problems,
                    });
                }
                entries.push(entry);
            }
            if got < n as usize {
                r.short_at = Some(b + got as u32);
                break 'runs;
            }
            b += n;
        }
    }
    r.pages = entries.len() as u64;
    if !entries.is_empty() {
        r.index = Some(w.put_index(&entries)?);
    }
    Ok(r)
}

/// A whole file read for a backup.
#[derive(Debug)]
pub enum Whole {
    /// Read (and stored unless unchanged).
    Read {
        /// Bytes.
        size: u64,
        /// BLAKE3.
        digest: Digest,
        /// Where it was stored; `None` when identical to the parent's.
        stored: Option<Stored>,
    },
    /// Gone since the walk (dropped).
    Vanished,
    /// Not readable by the backup's user: why.
    Unreadable(String),
}

/// Reads `root/rel` whole and stores it unless its size and BLAKE3 digest equal `parent`'s.
pub fn copy_whole(
    root: &Path,
    rel: &RelPath,
    parent: Option<(u64, Digest)>,
    w: &mut BundleWriter,
) -> Result<Whole> {
    let path = root.join(rel.as_path());
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Whole::Vanished),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Ok(Whole::Unreadable(format!("could not read: {e}")));
        }
        Err(e) => return Err(Error::io(&path, "read", e)),
    };
    let digest = Digest::of(&data);
    let size = data.len() as u64;
    let stored = if parent == Some((size, digest)) {
        None
    } else {
        Some(w.put_blob(&data)?)
    };
    Ok(Whole::Read {
        size,
        digest,
        stored,
    })
}

/// Reads the partial block after the last whole block of a relation segment (`len` bytes at
/// `offset` when listed) and stores it. `None` when it is gone (truncated meanwhile).
pub fn copy_tail(
    root: &Path,
    rel: &RelPath,
    offset: u64,
    len: u32,
    w: &mut BundleWriter,
) -> Result<Option<Tail>> {
    let path = root.join(rel.as_path());
    let f = match File::open(&path) {
        Ok(f) => f,
        // Gone, or unreadable (then the whole file is reported by its part).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(&path, "open", e)),
    };
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(&path, "read", e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    buf.truncate(got);
    let stored = w.put_blob(&buf)?;
    Ok(Some(Tail {
        len: got as u32,
        digest: Digest::of(&buf),
        stored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_types::ForkNumber;

    const CHECK: PageCheck = PageCheck {
        checksums: true,
        fork: ForkNumber::Main,
    };

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn the_re_read_rule_is_ptrack_verifys() {
        // Same failing bytes on the re-read: damaged, and the bytes are kept as read.
        let bad = vec![0xFFu8; 8192];
        let (_t, f) = file_with(&bad);
        let mut page = bad.clone();
        let problems = checked(&f, &mut page, 0, 0, CHECK).unwrap().unwrap();
        assert!(!problems.is_empty());
        assert_eq!(page, bad);

        // The first read was torn, the file now holds a good (new, all-zero) page: kept, good.
        let (_t, f) = file_with(&[0u8; 8192]);
        let mut page = bad.clone();
        assert_eq!(checked(&f, &mut page, 0, 0, CHECK).unwrap(), Some(vec![]));
        assert_eq!(page, vec![0u8; 8192]);

        // The block is gone (the file was truncated meanwhile).
        let (_t, f) = file_with(&[]);
        let mut page = bad.clone();
        assert_eq!(checked(&f, &mut page, 0, 0, CHECK).unwrap(), None);
    }
}
