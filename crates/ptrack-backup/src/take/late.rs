//! What a backup stores after `pg_backup_stop`, as `basebackup.c` does: `global/pg_control`
//! (re-read until its CRC holds), `backup_label`, `tablespace_map`, the WAL from the start
//! segment to the one holding the consistency point, and every timeline history file; also the
//! span of the start segment an incremental's fork check compares (`crate::parent`).

use std::io::Read;

use ptrack_page::control::{ControlFile, parse_control_file};
use ptrack_types::{Lsn, TimeLineId};
use ptrack_wal::segment::SegmentName;

use super::TakeContext;
use crate::phases::Clock;
use crate::server::{Session, StopInfo};
use crate::{Error, Result};
use ptrack_format::bundle::BundleWriter;
use ptrack_format::manifest::{Entry, EntryKind, Stored, WalEntry, WalSpan};
use ptrack_format::paths::{Digest, RelPath};

/// What [`store_after_stop`] stored, for the manifest.
pub(super) struct AfterStop {
    /// `pg_control`, `backup_label` and `tablespace_map`, in path order.
    pub late: Vec<Entry>,
    /// `pg_control` as read after the stop.
    pub control_now: ControlFile,
    /// Where the restored cluster is consistent: the stop LSN or the minimum recovery point.
    pub consistent: Lsn,
    /// The WAL and history files stored.
    pub wal: Vec<WalEntry>,
    /// Their bytes.
    pub wal_bytes: u64,
    /// The span of the start segment (for the next incremental's fork check).
    pub start_wal: Option<WalSpan>,
}

/// Stores, into bundle `number`, everything read after `pg_backup_stop`; returns it and the
/// bundle's size.
pub(super) fn store_after_stop(
    session: &mut Session,
    ctx: &TakeContext,
    stop: &StopInfo,
    start_lsn: Lsn,
    timeline: TimeLineId,
    number: u32,
    clock: &mut Clock,
) -> Result<(AfterStop, u64)> {
    let mut w = BundleWriter::create(ctx.instance.store(), ctx.dir, number, ctx.opts.compression)?;
    let mut late = Vec::new();
    let control_now = store_control(ctx, &mut w, &mut late)?;
    for (name, content) in [
        ("backup_label", &stop.label),
        ("tablespace_map", &stop.tablespace_map),
    ] {
        if name == "tablespace_map" && content.is_empty() {
            continue;
        }
        insert_sorted(&mut late, stored_entry(name, content.as_bytes(), &mut w)?);
    }
    ctx.progress.step("copying WAL");
    let consistent = stop.lsn.max(control_now.min_recovery_point);
    session.wait_wal_durable(consistent)?;
    clock.lap("pg_control, label");
    let (wal, wal_bytes, start_wal) = store_wal(ctx, &mut w, start_lsn, consistent, timeline)?;
    clock.lap("WAL");
    let size = w.finish()?;
    let after = AfterStop {
        late,
        control_now,
        consistent,
        wal,
        wal_bytes,
        start_wal,
    };
    Ok((after, size))
}

pub(super) fn timeline_of_label(label: &str) -> Option<TimeLineId> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
        .map(TimeLineId)
}

fn insert_sorted(entries: &mut Vec<Entry>, e: Entry) {
    let at = entries.partition_point(|x| x.path < e.path);
    entries.insert(at, e);
}

fn stored_entry(name: &str, data: &[u8], w: &mut BundleWriter) -> Result<Entry> {
    let s: Stored = w.put_blob(data)?;
    Ok(Entry {
        path: RelPath::new(name).expect("plain name"),
        kind: EntryKind::File {
            size: data.len() as u64,
            digest: Digest::of(data),
            stored: Some(s),
        },
    })
}

/// Reads `global/pg_control` after `pg_backup_stop` (re-read while its CRC fails: the server
/// may be writing it) and stores it.
fn store_control(
    ctx: &TakeContext,
    w: &mut BundleWriter,
    entries: &mut Vec<Entry>,
) -> Result<ControlFile> {
    let path = ctx.opts.pgdata.join("global/pg_control");
    let mut last = String::new();
    for _ in 0..50 {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
        match parse_control_file(&bytes) {
            Ok(c) => {
                insert_sorted(entries, stored_entry("global/pg_control", &bytes, w)?);
                return Ok(c);
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(Error::DataDir {
        path: path.display().to_string(),
        why: last,
    })
}

/// Stores the WAL from the segment holding `start` to the one holding `stop - 1`, and every
/// timeline history file in `pg_wal` (as `basebackup.c` does).
fn store_wal(
    ctx: &TakeContext,
    w: &mut BundleWriter,
    start: Lsn,
    stop: Lsn,
    timeline: TimeLineId,
) -> Result<(Vec<WalEntry>, u64, Option<WalSpan>)> {
    let wal_dir = ctx.opts.pgdata.join("pg_wal");
    let seg = ctx.control.xlog_seg_size;
    let seg_size = seg.bytes();
    let mut wal = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, "read directory", e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| ptrack_wal::segment::parse_history_file_name(n).is_some())
        .collect();
    names.sort();
    for name in names {
        let path = wal_dir.join(&name);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
        wal.push(WalEntry {
            entry: stored_entry(&name, &data, w)?,
            zero_tail: 0,
        });
    }
    let mut wal_bytes = 0;
    let mut span = None;
    let first = seg.segno(start);
    for segno in first..=seg.prev_segno(stop) {
        let name = SegmentName {
            tli: timeline,
            segno,
        }
        .file_name(seg);
        let path = wal_dir.join(&name);
        let needed = |e: std::io::Error| {
            Error::from(crate::Refusal::WalGone {
                path: path.display().to_string(),
                id: ctx.id.to_string(),
                start,
                stop,
                cause: e.to_string(),
            })
        };
        let mut f = std::fs::File::open(&path).map_err(needed)?;
        // The span of the start segment the next incremental's fork check compares.
        let from = if segno == first {
            seg.offset(start)
        } else {
            seg_size
        };
        let to = stop.0.min(seg.start(segno + 1).0) - seg.start(segno).0;
        let (mut whole, mut part) = (blake3::Hasher::new(), blake3::Hasher::new());
        // What follows a segment switch (pg_backup_stop makes one) is zeros: not stored.
        let (stored, zero_tail) =
            w.put_stream_trim_zeros(&mut (&mut f).take(seg_size + 1), &path, |off, piece| {
                whole.update(piece);
                let end = off + piece.len() as u64;
                let (a, b) = (from.max(off), to.min(end));
                if a < b {
                    part.update(&piece[(a - off) as usize..(b - off) as usize]);
                }
            })?;
        if stored.len + zero_tail != seg_size {
            return Err(crate::Refusal::WalSize {
                path: path.display().to_string(),
                found: stored.len + zero_tail,
                expected: seg_size,
            }
            .into());
        }
        wal_bytes += seg_size;
        if segno == first {
            span = Some(WalSpan {
                from: start,
                to: Lsn(seg.start(segno).0 + to),
                digest: Digest(*part.finalize().as_bytes()),
            });
        }
        wal.push(WalEntry {
            entry: Entry {
                path: RelPath::new(&name).expect("plain name"),
                kind: EntryKind::File {
                    size: seg_size,
                    digest: Digest(*whole.finalize().as_bytes()),
                    stored: Some(stored),
                },
            },
            zero_tail,
        });
    }
    Ok((wal, wal_bytes, span))
}
