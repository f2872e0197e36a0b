//! `ptrack backup --mode wal` (issue 13 §3, pg_probackup's PAGE mode done with ptrack's own
//! decoder): the blocks changed since the parent's start LSN come from the WAL of
//! `[parent start, backup start)`, folded into a [`ChangeSet`] (block references, implied VM
//! pages, truncations, created and dropped databases: `ptrack_blockmap::summarize`). No
//! extension is needed, and any major 13–18 works.
//!
//! Each segment is read on the timeline the server's history gives for it (the newest one that
//! began at or before it, `XLogFileReadAnyTLI`): from the repository's archive, checked as
//! `archive-get` checks it; a segment the archiver has not stored yet (the one holding the
//! backup's start, usually) from the server's `pg_wal`, where PostgreSQL keeps it until it is
//! archived, its pages checked by the decoder. A segment in neither, WAL that ends early or
//! does not link, or a record the change set cannot follow (`wal_level = minimal`, an unknown
//! relation-file change) refuses the backup, naming the segment, LSN or record: a delta or full
//! backup is then the way. Then [`pagemap`] turns the set into the page map the planner takes
//! for ptrack mode: for every listed main-fork segment, its changed blocks, every block at or
//! above the fork's lowest length in the range (what was truncated away and grew again may
//! have been extended with pages no record names), and every block of a database created or
//! dropped in the range (`CREATE DATABASE … STRATEGY FILE_COPY` copies files without per-block
//! WAL). Mirrors `src/backend/backup/basebackup_incremental.c: GetFileBackupMethod` (limit
//! block, whole files) and pg_probackup's `extractPageMap`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ptrack_blockmap::ChangeSet;
use ptrack_format::archived::WalFile;
use ptrack_format::catalog::BackupInfo;
use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_types::{ForkNumber, Lsn};
use ptrack_wal::mapped::SegmentData;
use ptrack_wal::{ReadError, ScanEnd, SegmentSource, SourceFacts};

use crate::parent::History;
use crate::take::TakeContext;
use crate::timelines::TimelinePath;
use crate::walk::{Item, Listing};
use crate::{Error, Refusal, Result};

/// The WAL of one history: the archive first, then `pg_wal`.
struct Source<'a> {
    ctx: &'a TakeContext<'a>,
    /// The server's timeline and those it came through.
    path: TimelinePath,
    pg_wal: PathBuf,
    /// The first repository error (a [`ReadError`] cannot carry it).
    failure: Mutex<Option<Error>>,
    from_archive: AtomicUsize,
    from_pg_wal: AtomicUsize,
}

impl Source<'_> {
    fn archived(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let file = WalFile::Segment {
            name: name.to_string(),
            partial: false,
        };
        crate::archive::fetch_checked(self.ctx.instance, self.ctx.control, &file)
    }

    /// The whole segment file `name` in `pg_wal`, if there.
    fn in_pg_wal(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.pg_wal.join(name);
        match std::fs::read(&path) {
            Ok(b) if b.len() as u64 == self.ctx.control.xlog_seg_size.bytes() => Ok(Some(b)),
            // Being renamed or recycled, or not a segment: not a source.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, "read", e)),
        }
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if let Some(b) = self.archived(name)? {
            self.from_archive.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(b));
        }
        if let Some(b) = self.in_pg_wal(name)? {
            self.from_pg_wal.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(b));
        }
        // Archived and removed from pg_wal between the two looks.
        self.archived(name)
    }
}

impl SegmentSource for Source<'_> {
    fn facts(&self) -> SourceFacts {
        let c = self.ctx.control;
        SourceFacts {
            seg_size: c.xlog_seg_size,
            xlog_blcksz: c.xlog_blcksz,
            system_identifier: c.system_identifier,
            major: c.major,
        }
    }

    fn segment(&self, segno: u64) -> std::result::Result<Option<SegmentData>, ReadError> {
        let name = self.name(segno);
        match self.read(&name) {
            Ok(b) => Ok(b.map(SegmentData::Owned)),
            Err(e) => {
                let why = e.to_string();
                let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(e);
                Err(ReadError::BadSegment { path: name, why })
            }
        }
    }

    fn name(&self, segno: u64) -> String {
        self.path
            .segment_name(segno, self.ctx.control.xlog_seg_size)
    }

    fn location(&self, segno: u64) -> String {
        format!("WAL segment {}", self.name(segno))
    }
}

/// The changes of the WAL from `parent`'s start to `start` (this backup's), or the refusal.
pub(crate) fn changes(
    ctx: &TakeContext,
    history: &History,
    parent: &BackupInfo,
    start: Lsn,
) -> Result<ChangeSet> {
    let src = Source {
        ctx,
        path: TimelinePath::new(history.position.timeline, &history.parents),
        pg_wal: ctx.opts.pgdata.join("pg_wal"),
        failure: Mutex::new(None),
        from_archive: AtomicUsize::new(0),
        from_pg_wal: AtomicUsize::new(0),
    };
    let from = parent.start_lsn;
    let blcksz = ctx.control.blcksz;
    let scanned = ptrack_blockmap::summarize(&src, blcksz, from, start, ctx.opts.jobs);
    let failure = src.failure.lock().map(|mut f| f.take()).unwrap_or(None);
    if let Some(e) = failure {
        return Err(e);
    }
    let refuse = |why: String| -> Error {
        Refusal::WalModeCannot {
            parent: parent.id.clone(),
            from,
            to: start,
            why,
        }
        .into()
    };
    let s = scanned.map_err(|e| refuse(e.to_string()))?;
    if !s.end.covers(start) {
        return Err(refuse(match &s.end {
            ScanEnd::MissingSegment { name, .. } => format!(
                "{name} is neither in the archive nor in the server's pg_wal (archive_command failing, or the archive was pruned?)"
            ),
            ScanEnd::EndOfWal(e) => format!("the WAL ends early at {}: {:?}", e.lsn, e.reason),
            // Always covers.
            ScanEnd::ReachedTo => "the scan stopped early".into(),
        }));
    }
    if let Some(u) = s.set.unsafe_reasons.first() {
        return Err(refuse(format!(
            "{u}: the change set cannot be trusted for an incremental backup"
        )));
    }
    ctx.progress.step(&format!(
        "{} WAL records since the parent: {} segments from the archive, {} from pg_wal, {} changed blocks",
        s.records,
        src.from_archive.load(Ordering::Relaxed),
        src.from_pg_wal.load(Ordering::Relaxed),
        s.set.block_count()
    ));
    Ok(s.set)
}

/// The page map of `set` over the main-fork segments of `listing` (see the module comment):
/// path → sorted segment-relative blocks to read.
pub(crate) fn pagemap(
    set: &ChangeSet,
    listing: &Listing,
    blcksz: u32,
    relseg: u32,
) -> HashMap<String, Vec<u32>> {
    let mut out = HashMap::new();
    for (rel, item) in listing.iter() {
        let (Some(path), Item::File(size, _)) = (rel.as_str(), item) else {
            continue;
        };
        let PathKind::Relation(s) = classify_path(path) else {
            continue;
        };
        let l = s.locator;
        let every = set.db_resets.contains(&(l.spc_oid, l.db_oid));
        let fork = set.forks.get(&(l, ForkNumber::Main));
        if s.fork != ForkNumber::Main || (!every && fork.is_none()) {
            continue;
        }
        // This segment's blocks, as fork block numbers [first, end).
        let first = u64::from(s.segno) * u64::from(relseg);
        let end = first + (size / u64::from(blcksz)).min(u64::from(relseg));
        // From here on every block is read.
        let all_from = match (every, fork.and_then(|f| f.limit)) {
            (true, _) => first,
            (false, Some(limit)) => u64::from(limit.0).clamp(first, end),
            (false, None) => end,
        };
        let mut list: Vec<u32> = Vec::new();
        if let Some(f) = fork {
            let named = f.blocks.range(first as u32..all_from as u32);
            list.extend(named.map(|b| (u64::from(b) - first) as u32));
        }
        list.extend(((all_from - first) as u32)..((end - first) as u32));
        out.insert(path.to_string(), list);
    }
    out
}
