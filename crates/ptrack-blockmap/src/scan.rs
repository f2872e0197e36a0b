//! [`summarize`]: folds every record of a WAL range, read from any
//! [`ptrack_wal::SegmentSource`] (a directory, a repository's archive), into one [`ChangeSet`]
//! on several threads: each range of segments into its own [`ChangeSetBuilder`], the parts then
//! merged in order. The changes of a record are its block references plus
//! [`ptrack_wal::special_changes_into`] (what `walsummarizer.c: SummarizeWAL` records).

use ptrack_types::Lsn;
use ptrack_wal::{
    Change, DecoderConfig, ReadError, Record, ScanEnd, SegmentSource, scan_dir_parallel,
    special_changes_into,
};

use crate::{ChangeSet, ChangeSetBuilder};

/// What [`summarize`] found.
#[derive(Debug)]
pub struct Summary {
    /// The changes of every record read; `end` is where the last range kept ended.
    pub set: ChangeSet,
    /// How the scan ended: see [`ScanEnd::covers`].
    pub end: ScanEnd,
    /// Records abandoned by an overwrite-contrecord page: (record, where it was cut).
    pub abandoned: Vec<(Lsn, Lsn)>,
    /// Records read.
    pub records: u64,
}

/// Applies record `r`'s changes to `set` (`scratch` is reused between records).
pub fn apply_record(
    set: &mut ChangeSetBuilder,
    r: &Record,
    major: ptrack_types::PgMajorVersion,
    blcksz: u32,
    scratch: &mut Vec<Change>,
) {
    for b in &r.blocks {
        set.mark(b.locator, b.fork, b.block);
    }
    scratch.clear();
    special_changes_into(r, major, blcksz, scratch);
    for c in scratch.iter() {
        set.apply(r.lsn, c);
    }
}

/// The changes of the records of `src` in `[from, to)`, for data pages of `blcksz` bytes, read
/// on `jobs` threads.
pub fn summarize(
    src: &dyn SegmentSource,
    blcksz: u32,
    from: Lsn,
    to: Lsn,
    jobs: usize,
) -> Result<Summary, ReadError> {
    let facts = src.facts();
    let cfg = DecoderConfig {
        blcksz,
        ..DecoderConfig::default()
    };
    let (parts, end, abandoned) = scan_dir_parallel(
        src,
        cfg,
        from,
        to,
        jobs,
        |start| {
            let set = ChangeSetBuilder::new(facts.system_identifier, start);
            (set, Vec::new(), 0u64)
        },
        |(set, scratch, n), r| {
            *n += 1;
            apply_record(set, r, facts.major, blcksz, scratch);
        },
    )?;
    let mut records = 0u64;
    let mut set: Option<ChangeSet> = None;
    for ((part, _, n), range_end) in parts {
        records += n;
        let mut part = part.finish();
        part.end = range_end;
        match &mut set {
            None => set = Some(part),
            // The parts are consecutive by construction.
            Some(s) => s.merge(&part).map_err(|e| ReadError::BadSegment {
                path: src.location(facts.seg_size.segno(part.start)),
                why: e.to_string(),
            })?,
        }
    }
    Ok(Summary {
        set: set.unwrap_or_else(|| ChangeSet::new(facts.system_identifier, from)),
        end,
        abandoned,
        records,
    })
}
