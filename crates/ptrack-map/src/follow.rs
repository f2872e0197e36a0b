//! Following `pg_wal` while the server runs: read WAL up to a target LSN (the server's flush or
//! replay position), decode it with `ptrack-wal` and mark what each record changes. This is the
//! tracker's logic without PostgreSQL; the extension's background worker only supplies the target
//! LSN and timeline and persists the map.
//!
//! Reading mirrors `src/backend/access/transam/xlogreader.c` / `xlogutils.c: XLogReadDetermineTimeline`:
//! the file of a position is the timeline whose history range contains it (the last segment of
//! an old timeline may have been renamed `.partial`). A missing file or invalid WAL before the
//! target is a *gap*: WAL the tracker needed is gone, and the caller must say so and move
//! `init_lsn` forward. Mirrors `src/backend/postmaster/walsummarizer.c` in what it marks
//! (through [`ptrack_wal::changes_of`]), plus every block of every file of a database created by
//! file copy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ptrack_types::{
    BlockNumber, DEFAULT_TABLESPACE_OID, ForkNumber, GLOBAL_TABLESPACE_OID, Lsn, Oid,
    PgMajorVersion, RelFileLocator, TimeLineId, WalSegSize,
};
use ptrack_wal::archive::HistoryEntry;
use ptrack_wal::segment::{SegmentName, history_file_name};
use ptrack_wal::{Change, CreateStrategy, DecoderConfig, Poll, Record, Start, WalDecoder};

use crate::map::Map;
use crate::pagemap::relation_files_in;

/// Largest piece read from a segment file at once.
const READ_CHUNK: u64 = 1 << 20;

/// How a call to [`Follower::advance`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record that ends at or before the target was delivered.
    CaughtUp,
    /// WAL the follower needs is missing or not valid WAL of this cluster.
    Gap {
        /// Where the follower stopped.
        at: Lsn,
        /// What was wrong, one line.
        why: String,
    },
}

/// Reads and decodes `pg_wal` from a record start onwards.
#[derive(Debug)]
pub struct Follower {
    pg_wal: PathBuf,
    seg_size: WalSegSize,
    decoder: WalDecoder,
    tli: TimeLineId,
    history: Vec<HistoryEntry>,
    /// Segment files opened ahead of reading, by name: a file opened before a checkpoint
    /// recycles or removes it stays readable.
    open: BTreeMap<String, (u64, File)>,
}

/// Most segment files held open ahead of the read position.
const MAX_PINNED: usize = 64;

/// `TTTTTTTTXXXXXXXXYYYYYYYY` for timeline `tli` and segment `segno`.
fn segment_file_name(tli: TimeLineId, segno: u64, seg_size: WalSegSize) -> String {
    SegmentName { tli, segno }.file_name(seg_size)
}

/// Reads `<tli>.history` from `pg_wal` (empty for timeline 1). `None` when the file is missing
/// or malformed.
pub fn read_history(pg_wal: &Path, tli: TimeLineId) -> Option<Vec<HistoryEntry>> {
    if tli.0 <= 1 {
        return Some(Vec::new());
    }
    let text = std::fs::read_to_string(pg_wal.join(history_file_name(tli))).ok()?;
    ptrack_wal::archive::parse_history(&text)
}

impl Follower {
    /// A follower that resumes at record start `start` on timeline `tli` with its `history`.
    pub fn new(
        pg_wal: &Path,
        cfg: DecoderConfig,
        start: Lsn,
        tli: TimeLineId,
        history: Vec<HistoryEntry>,
    ) -> Follower {
        let page = u64::from(cfg.xlog_blcksz);
        let stream_start = Lsn(start.0 - start.0 % page);
        Follower {
            pg_wal: pg_wal.to_path_buf(),
            seg_size: cfg.seg_size,
            decoder: WalDecoder::new(
                cfg,
                stream_start,
                Start::Record {
                    lsn: start,
                    prev: None,
                },
            ),
            tli,
            history,
            open: BTreeMap::new(),
        }
    }

    fn open_segment(&self, name: &str) -> io::Result<File> {
        match File::open(self.pg_wal.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                File::open(self.pg_wal.join(format!("{name}.partial")))
            }
            r => r,
        }
    }

    /// Opens the segment files from the read position up to `target` that are not open yet
    /// (at most [`MAX_PINNED`]), and closes those behind the read position. Called before reading
    /// so that WAL a checkpoint removes while the follower is behind is still read.
    pub fn pin_segments(&mut self, target: Lsn) {
        let seg = self.seg_size;
        let first = seg.segno(self.decoder.fed_up_to());
        self.open.retain(|_, (segno, _)| *segno >= first);
        let last = seg.prev_segno(target);
        for segno in first..=last.max(first) {
            if self.open.len() >= MAX_PINNED {
                break;
            }
            let name = segment_file_name(self.timeline_of(seg.start(segno)), segno, seg);
            if !self.open.contains_key(&name)
                && let Ok(f) = self.open_segment(&name)
            {
                self.open.insert(name, (segno, f));
            }
        }
    }

    /// Where the next record starts: the position to persist and resume from.
    pub fn position(&self) -> Lsn {
        self.decoder.position()
    }

    /// How far WAL has been read (records ending at or before it were delivered).
    pub fn read_up_to(&self) -> Lsn {
        self.decoder.fed_up_to()
    }

    /// The timeline followed.
    pub fn timeline(&self) -> TimeLineId {
        self.tli
    }

    /// Follows a new current timeline (after a promotion on this server or upstream).
    pub fn set_timeline(&mut self, tli: TimeLineId, history: Vec<HistoryEntry>) {
        self.tli = tli;
        self.history = history;
    }

    /// Timeline of the WAL at `lsn`.
    pub fn timeline_of(&self, lsn: Lsn) -> TimeLineId {
        timeline_of(&self.history, self.tli, lsn)
    }

    /// Reads up to `target` and calls `on_record` for every record, in order. Stops early, with
    /// [`Outcome::CaughtUp`], when `on_record` returns `false` (the caller wants to persist).
    pub fn advance(&mut self, target: Lsn, on_record: &mut dyn FnMut(&Record) -> bool) -> Outcome {
        loop {
            loop {
                match self.decoder.poll() {
                    Ok(Poll::Record(r)) => {
                        if !on_record(&r) {
                            return Outcome::CaughtUp;
                        }
                    }
                    Ok(Poll::Abandoned { .. }) => {}
                    Ok(Poll::NeedMore) => break,
                    Ok(Poll::End(e)) => {
                        return Outcome::Gap {
                            at: e.lsn,
                            why: format!("no valid WAL at {} ({:?})", e.lsn, e.reason),
                        };
                    }
                    Err(e) => {
                        return Outcome::Gap {
                            at: self.decoder.position(),
                            why: e.to_string(),
                        };
                    }
                }
            }
            let fed = self.decoder.fed_up_to();
            if fed >= target {
                return Outcome::CaughtUp;
            }

            match self.read_piece(fed, target) {
                Ok(bytes) => self.decoder.feed(&bytes),
                Err(why) => return Outcome::Gap { at: fed, why },
            }
        }
    }

    /// Bytes from `from` to the end of its segment, its timeline's range, `target` or
    /// [`READ_CHUNK`], whichever is first.
    fn read_piece(&mut self, from: Lsn, target: Lsn) -> Result<Vec<u8>, String> {
        let seg = self.seg_size;
        let segno = seg.segno(from);
        let mut end = seg
            .start(segno + 1)
            .0
            .min(target.0)
            .min(from.0 + READ_CHUNK);
        if let Some(e) = self.history.iter().find(|e| from < e.switchpoint) {
            end = end.min(e.switchpoint.0);
        }
        let tli = self.timeline_of(from);
        let name = segment_file_name(tli, segno, seg);
        if !self.open.contains_key(&name) {
            let file = self.open_segment(&name).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    format!("WAL segment {name} needed for {from} is no longer in pg_wal")
                } else {
                    format!("cannot open WAL segment {name}: {e}")
                }
            })?;
            self.open.insert(name.clone(), (segno, file));
        }
        let mut buf = vec![0u8; (end - from.0) as usize];
        let Some((_, file)) = self.open.get(&name) else {
            return Err(format!("WAL segment {name} not open"));
        };
        file.read_exact_at(&mut buf, seg.offset(from))
            .map_err(|e| format!("cannot read WAL segment {name} at {from}: {e}"))?;
        Ok(buf)
    }
}

/// Timeline of `lsn` given the current timeline and its history.
pub fn timeline_of(history: &[HistoryEntry], current: TimeLineId, lsn: Lsn) -> TimeLineId {
    history
        .iter()
        .find(|e| lsn < e.switchpoint)
        .map_or(current, |e| e.tli)
}

/// Whether a position recorded on timeline `tli` lies on the current timeline's history: `Some`
/// with the position to resume from (the switch point when the recorded position is past the
/// point where the current timeline branched off `tli`), `None` when `tli` is not an ancestor.
pub fn resume_point(
    history: &[HistoryEntry],
    current: TimeLineId,
    tli: TimeLineId,
    lsn: Lsn,
) -> Option<Lsn> {
    if tli == current {
        return Some(lsn);
    }
    let e = history.iter().find(|e| e.tli == tli)?;
    Some(lsn.min(e.switchpoint))
}

/// What the tracker needs besides the map to apply records.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// The data directory.
    pub root: PathBuf,
    /// `PG_<major>_<catver>`.
    pub ts_version_dir: String,
    /// Major version of the WAL.
    pub major: PgMajorVersion,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// `RELSEG_SIZE`.
    pub relseg_blocks: u32,
}

/// What applying a record found, besides the marks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// A checkpoint record: persist the map after it.
    pub checkpoint: bool,
    /// Why the map cannot be trusted before this record's end (WAL written at
    /// `wal_level = minimal`, a change ptrack does not understand, a database directory it could
    /// not read).
    pub untrusted: Option<String>,
}

/// PGDATA-relative directory of database `db` in tablespace `spc`.
pub fn database_dir(spc: Oid, db: Oid, ts_version_dir: &str) -> String {
    if spc == DEFAULT_TABLESPACE_OID {
        format!("base/{}", db.0)
    } else if spc == GLOBAL_TABLESPACE_OID {
        "global".to_string()
    } else {
        format!("pg_tblspc/{}/{ts_version_dir}/{}", spc.0, db.0)
    }
}

/// Where marks go: the map, and with [`Recording`] also the current change set.
pub trait Marks {
    /// Marks `block` of a fork as changed at `lsn`.
    fn mark(
        &mut self,
        locator: RelFileLocator,
        fork: ForkNumber,
        block: BlockNumber,
        lsn: Lsn,
        relseg: u32,
    );
}

impl Marks for Map<'_> {
    fn mark(
        &mut self,
        locator: RelFileLocator,
        fork: ForkNumber,
        block: BlockNumber,
        lsn: Lsn,
        relseg: u32,
    ) {
        Map::mark(self, locator, fork, block, lsn, relseg);
    }
}

/// Marks the map and records the block in a change set ([`crate::changelog`]).
pub struct Recording<'m, 's> {
    /// The map.
    pub map: Map<'m>,
    /// The set of the current interval.
    pub set: &'s mut ptrack_blockmap::ChangeSet,
}

impl Marks for Recording<'_, '_> {
    fn mark(
        &mut self,
        locator: RelFileLocator,
        fork: ForkNumber,
        block: BlockNumber,
        lsn: Lsn,
        relseg: u32,
    ) {
        self.map.mark(locator, fork, block, lsn, relseg);
        self.set.mark(locator, fork, block);
    }
}

/// Marks every block of every relation file in a database directory (created by file copy,
/// so WAL has no block of it).
fn mark_database(map: &mut impl Marks, ctx: &ApplyContext, dir: &str, lsn: Lsn) -> io::Result<()> {
    let files = relation_files_in(&ctx.root, dir).map_err(|e| e.source)?;
    for (path, seg) in files {
        let size = match std::fs::metadata(ctx.root.join(&path)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let first = seg.segno * ctx.relseg_blocks;
        for b in 0..(size / u64::from(ctx.blcksz)) as u32 {
            map.mark(
                seg.locator,
                seg.fork,
                BlockNumber(first + b),
                lsn,
                ctx.relseg_blocks,
            );
        }
    }
    Ok(())
}

/// Marks what record `r` changes with its end LSN.
pub fn apply_record(map: &mut impl Marks, r: &Record, ctx: &ApplyContext) -> Applied {
    let mut out = Applied::default();
    let lsn = r.end_lsn;
    for b in &r.blocks {
        map.mark(b.locator, b.fork, b.block, lsn, ctx.relseg_blocks);
    }
    for c in ptrack_wal::special_changes(r, ctx.major, ctx.blcksz) {
        match c {
            Change::Block {
                locator,
                fork,
                block,
                ..
            } => map.mark(locator, fork, block, lsn, ctx.relseg_blocks),
            Change::DatabaseCreated {
                spc,
                db,
                strategy: CreateStrategy::FileCopy,
            } => {
                let dir = database_dir(spc, db, &ctx.ts_version_dir);
                if let Err(e) = mark_database(map, ctx, &dir, lsn) {
                    out.untrusted = Some(format!(
                        "cannot list database directory \"{dir}\" created at {}: {e}",
                        r.lsn
                    ));
                }
            }
            Change::Checkpoint { wal_level, .. } => {
                out.checkpoint = true;
                if wal_level == Some(0) {
                    out.untrusted = Some(format!(
                        "WAL at {} was written with wal_level = minimal",
                        r.lsn
                    ));
                }
            }
            Change::ParameterChange { wal_level: 0 } => {
                out.untrusted = Some(format!("wal_level was set to minimal at {}", r.lsn));
            }
            Change::UnknownSpecialUpdate { rmid, info } | Change::Unparsable { rmid, info } => {
                out.untrusted = Some(format!(
                    "record at {} (rmgr {rmid}, info 0x{info:02X}) changes relation files in a way ptrack cannot follow",
                    r.lsn
                ));
            }
            Change::Limit { .. }
            | Change::DatabaseCreated { .. }
            | Change::DatabaseDropped { .. }
            | Change::EndOfRecovery { .. }
            | Change::ParameterChange { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_timelines() {
        assert_eq!(
            segment_file_name(TimeLineId(2), 0x1_05, WalSegSize::DEFAULT),
            "000000020000000100000005"
        );
        let h = vec![
            HistoryEntry {
                tli: TimeLineId(1),
                switchpoint: Lsn(1000),
            },
            HistoryEntry {
                tli: TimeLineId(2),
                switchpoint: Lsn(5000),
            },
        ];
        assert_eq!(timeline_of(&h, TimeLineId(3), Lsn(999)), TimeLineId(1));
        assert_eq!(timeline_of(&h, TimeLineId(3), Lsn(1000)), TimeLineId(2));
        assert_eq!(timeline_of(&h, TimeLineId(3), Lsn(5000)), TimeLineId(3));
        assert_eq!(
            resume_point(&h, TimeLineId(3), TimeLineId(3), Lsn(7)),
            Some(Lsn(7))
        );
        assert_eq!(
            resume_point(&h, TimeLineId(3), TimeLineId(1), Lsn(800)),
            Some(Lsn(800))
        );
        // Recorded past the branch point on the parent: resume at the branch point.
        assert_eq!(
            resume_point(&h, TimeLineId(3), TimeLineId(1), Lsn(1200)),
            Some(Lsn(1000))
        );
        assert_eq!(resume_point(&h, TimeLineId(3), TimeLineId(9), Lsn(1)), None);
    }
}
