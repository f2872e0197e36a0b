//! The part of a backup between `pg_backup_start` and the manifest: reserve WAL with a temporary
//! slot, start the backup, for ptrack check `ptrack_init_lsn()` and fetch the page map since the
//! parent's start LSN, list the data directory (`crate::walk`), read every file with `-j`
//! workers each appending to its own bundle, `pg_backup_stop`, then — as `basebackup.c` does —
//! `global/pg_control` last (always stored: on a standby its minimum recovery point is the
//! backup's end), `backup_label`, `tablespace_map`, the WAL from start to stop and every timeline
//! history file; fsync the bundles; write the manifest. A failure after the start ends the
//! server's backup before returning.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use ptrack_page::control::{ControlFile, parse_control_file};
use ptrack_page::verify::PageCheck;
use ptrack_types::{ForkNumber, Lsn, TimeLineId};
use ptrack_wal::segment::SegmentName;

use crate::backup::{BackupOptions, BackupReport, Progress, damage_report};
use crate::bundle::BundleWriter;
use crate::catalog::{BackupInfo, Mode, Status};
use crate::manifest::{
    BundleInfo, Entry, EntryKind, MANIFEST_VERSION, ManifestDoc, Stored, WalEntry, WalSpan,
};
use crate::pages::{Damaged, Part, copy_part, copy_tail, copy_whole};
use crate::parent::Parent;
use crate::paths::{Digest, RelPath};
use crate::phases::Clock;
use crate::repo::{Instance, now};
use crate::server::{PtrackExt, Session};
use crate::walk::{Item, Listing, walk};

mod compose;
mod plan;
#[cfg(test)]
mod tests;

use crate::{Error, Result, envelope, refused};
use compose::{
    Composer, EntryStream, ResultLog, SharedLog, encode_part, encode_tail, encode_whole,
};
use plan::{FilePlan, PART_BLOCKS, Planner, Unit, UnitKind};

/// Everything `take` needs besides the session.
pub struct TakeContext<'a> {
    /// Options.
    pub opts: &'a BackupOptions,
    /// `pg_control` read before the backup.
    pub control: &'a ControlFile,
    /// The instance.
    pub instance: &'a Instance,
    /// The new backup's ID.
    pub id: &'a str,
    /// Its directory (created).
    pub dir: &'a ptrack_repo::Key,
    /// The parent and its chain, for incrementals.
    pub parent: Option<&'a Parent>,
    /// The ptrack extension, for ptrack mode.
    pub ptrack: Option<&'a PtrackExt>,
    /// The server's timeline when the parent was chosen.
    pub timeline: TimeLineId,
    /// The data directory's lineage (`crate::lineage`).
    pub lineage: &'a [String],
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// Reserves WAL, starts the backup, takes it, and ends the server's backup on failure.
pub fn take(session: &mut Session, ctx: &TakeContext, clock: &mut Clock) -> Result<BackupReport> {
    let mut warnings = Vec::new();
    let slot = format!(
        "ptrack_{}_{}",
        std::process::id(),
        ctx.id.to_ascii_lowercase()
    );
    if let Some(w) = session.reserve_wal(&slot) {
        warnings.push(w);
    }
    ctx.progress.step("starting backup (checkpoint)");
    let start_lsn = session.backup_start(&format!("ptrack backup {}", ctx.id))?;
    clock.lap("start (checkpoint)");
    let r = take_started(session, ctx, start_lsn, warnings, clock);
    if r.is_err() {
        session.abort_backup();
    }
    r
}

/// Sets bit lists from pagemap rows: path → sorted segment-relative blocks.
fn pagemap_blocks(rows: Vec<(String, Vec<u8>)>) -> HashMap<String, Vec<u32>> {
    rows.into_iter()
        .map(|(path, map)| {
            let blocks = ptrack_page::datapagemap::blocks(&map).collect();
            (path, blocks)
        })
        .collect()
}

fn timeline_of_label(label: &str) -> Option<TimeLineId> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
        .map(TimeLineId)
}

fn take_started(
    session: &mut Session,
    ctx: &TakeContext,
    start_lsn: Lsn,
    mut warnings: Vec<String>,
    clock: &mut Clock,
) -> Result<BackupReport> {
    let parent = ctx.parent.map(|p| &p.chain[0]);
    let mut pagemap: Option<HashMap<String, Vec<u32>>> = None;
    if let (Some(ext), Some(p)) = (ctx.ptrack, parent) {
        let init = session.ptrack_init_lsn(ext)?;
        if !init.is_valid() || init > p.info.start_lsn {
            return Err(refused(format!(
                "LSN from ptrack_control {init} is greater than Start LSN of previous backup {} ({}). \
                 Create new full backup before an incremental one.",
                p.info.start_lsn, p.info.id
            )));
        }
        ctx.progress.step("asking ptrack for changed pages");
        pagemap = Some(pagemap_blocks(
            session.ptrack_pagemapset(ext, p.info.start_lsn)?,
        ));
    }
    let tsdir = format!(
        "PG_{}_{}",
        ctx.control.major.number(),
        ctx.control.catalog_version_no
    );
    clock.lap("pagemap");
    let listing = walk(&ctx.opts.pgdata, &tsdir)?;
    let blcksz = ctx.control.blcksz as usize;
    // Whether hints were WAL-logged all the time since the parent cannot be known (wal_log_hints
    // and pg_checksums may have been switched meanwhile): the visibility maps are always compared.
    let also = match (ctx.opts.mode, ctx.parent) {
        (Mode::Delta, Some(p)) => crate::vm::newly_visible_pages(
            &ctx.opts.pgdata,
            ctx.instance,
            p,
            &listing,
            &tsdir,
            (blcksz, ctx.control.relseg_size),
        )?,
        _ => HashMap::new(),
    };
    let planner = Planner {
        mode: ctx.opts.mode,
        parent,
        blcksz: ctx.control.blcksz,
        relseg: ctx.control.relseg_size,
        pagemap: pagemap.as_ref(),
        also: &also,
    };
    let mut plan = planner.plan(&listing);
    let mut data_bytes = 0;
    for (_, item) in listing.iter() {
        if let Item::File(size, _) = item {
            data_bytes += size;
        }
    }
    for &(pos, tail) in &plan.tails {
        let (rel, _) = listing.get(pos as usize);
        warnings.push(format!(
            "\"{rel}\" ends with {tail} byte(s) after its last whole block (a block being written, or a damaged file); stored as they are"
        ));
    }
    ctx.progress.start(plan.total);
    ctx.progress.step("copying files");
    clock.lap("walk");
    let (log, mut bundles, jobs) = copy_all(ctx, &planner, &listing, &plan.units)?;
    plan.units = Vec::new();
    clock.lap("pages and files");
    if !log.damaged.is_empty() && !ctx.opts.allow_corruption {
        return Err(Error::Corrupt(format!(
            "backup {} failed: {} damaged page(s) found (use --allow-corruption to record them and go on):\n{}",
            ctx.id,
            log.damaged.len(),
            damage_report(&log.damaged)
        )));
    }
    ctx.progress.step("stopping backup");
    let stop = session.backup_stop()?;
    clock.lap("stop");
    let timeline = timeline_of_label(&stop.label).unwrap_or(ctx.control.timeline);
    if ctx.parent.is_some() && timeline != ctx.timeline {
        return Err(refused(format!(
            "the server moved from timeline {} to {timeline} during the backup; take it again",
            ctx.timeline
        )));
    }
    let wal_bundle = jobs as u32;
    let mut w = BundleWriter::create(
        ctx.instance.store(),
        ctx.dir,
        wal_bundle,
        ctx.opts.compression,
    )?;
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
    bundles.push(BundleInfo {
        number: wal_bundle,
        size,
    });
    bundles.sort_by_key(|b| b.number);
    let stored_bytes = bundles.iter().map(|b| b.size).sum();
    let composer = Composer {
        listing: &listing,
        log: &log,
        plan: &plan,
        relseg: ctx.control.relseg_size,
        late: &late,
        blcksz: blcksz as u64,
    };
    let summary = composer.summary(parent.map(|p| &p.manifest));
    let mut skipped = listing.skipped.clone();
    skipped.extend(summary.skipped);
    for s in &skipped {
        warnings.push(format!("not backed up: \"{}\": {}", s.path, s.reason));
    }
    let manifest = ManifestDoc {
        backup_id: ctx.id.to_string(),
        mode: ctx.opts.mode,
        parent: parent.map(|p| p.info.id.clone()),
        parent_manifest: parent.map(|p| p.digest),
        system_identifier: ctx.control.system_identifier,
        pg_major: ctx.control.major,
        blcksz: ctx.control.blcksz,
        wal_seg_size: ctx.control.xlog_seg_size,
        data_checksum_version: control_now.data_checksum_version,
        compression: ctx.opts.compression,
        start_lsn,
        stop_lsn: stop.lsn,
        consistent_lsn: consistent,
        timeline,
        from_standby: session.in_recovery,
        bundles,
        entries: EntryStream(&composer),
        wal,
        removed: summary.removed,
        skipped: skipped.clone(),
        start_wal,
        lineage: ctx.lineage.to_vec(),
    };
    // Last: the backup exists once its manifest does.
    let mkey = ctx.dir.join("manifest")?;
    let manifest_digest = envelope::stream::write(
        ctx.instance.store(),
        &mkey,
        "manifest",
        MANIFEST_VERSION,
        &manifest,
    )?;
    let info = BackupInfo {
        id: ctx.id.to_string(),
        mode: ctx.opts.mode,
        parent: manifest.parent.clone(),
        status: Status::Running,
        start_lsn,
        stop_lsn: Some(stop.lsn),
        timeline: Some(timeline),
        start_time: 0,
        end_time: Some(now()),
        data_bytes,
        stored_bytes,
        wal_bytes,
        compression: ctx.opts.compression,
        pg_major: manifest.pg_major,
        manifest_digest: Some(manifest_digest),
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    clock.lap("fsync, manifest");
    Ok(BackupReport {
        phases: Vec::new(),
        info,
        warnings,
        damaged: log.damaged,
        skipped,
        files: summary.files,
        pages: log.pages,
    })
}

/// Reads every unit on `-j` workers (biggest first), each appending to its own bundle; what
/// each unit produced goes to the result log.
fn copy_all(
    ctx: &TakeContext,
    planner: &Planner,
    listing: &Listing,
    units: &[Unit],
) -> Result<(ResultLog, Vec<BundleInfo>, usize)> {
    let blcksz = ctx.control.blcksz as usize;
    let jobs = ctx.opts.jobs.max(1).min(units.len().max(1));
    let bundles: Mutex<Vec<BundleInfo>> = Mutex::new(Vec::new());
    let log: SharedLog = Mutex::new(ResultLog::default());
    crate::parallel::run(
        jobs,
        units.len(),
        |t| {
            Ok((
                BundleWriter::create(
                    ctx.instance.store(),
                    ctx.dir,
                    t as u32,
                    ctx.opts.compression,
                )?,
                Vec::new(),
            ))
        },
        |(w, buf), k| {
            let u = units[k];
            buf.clear();
            let (damaged, pages) = copy_unit(ctx, planner, listing, u, w, buf, blcksz)?;
            log.lock()
                .expect("log lock")
                .add(u.pos, buf, damaged, pages)?;
            ctx.progress.advance(u.weight);
            Ok(())
        },
        |t, (w, _)| {
            let size = w.finish()?;
            bundles.lock().expect("lock").push(BundleInfo {
                number: t as u32,
                size,
            });
            Ok(())
        },
    )?;
    let mut log = log.into_inner().expect("log lock");
    log.seal();
    Ok((log, bundles.into_inner().expect("lock"), jobs))
}

/// Reads one unit and encodes what it produced into `out`; returns its damaged pages and the
/// pages it stored.
fn copy_unit(
    ctx: &TakeContext,
    planner: &Planner,
    listing: &Listing,
    u: Unit,
    w: &mut BundleWriter,
    out: &mut Vec<u8>,
    blcksz: usize,
) -> Result<(Vec<Damaged>, u64)> {
    let pgdata = &ctx.opts.pgdata;
    let (rel, item) = listing.get(u.pos as usize);
    let Item::File(size, id) = item else {
        unreachable!("units are made of regular files")
    };
    match (planner.file(&rel, size, id), u.kind()) {
        (FilePlan::Whole { parent }, _) => {
            encode_whole(&copy_whole(pgdata, &rel, parent, w)?, out);
        }
        (FilePlan::Data { blocks, tail, .. }, UnitKind::Tail) => {
            let offset = u64::from(blocks) * blcksz as u64;
            encode_tail(copy_tail(pgdata, &rel, offset, tail, w)?.as_ref(), out);
        }
        (
            FilePlan::Data {
                seg, blocks, sel, ..
            },
            UnitKind::Part(start),
        ) => {
            let part = Part {
                rel: &rel,
                start,
                end: (start + PART_BLOCKS).min(blocks),
                base_block: seg.segno * ctx.control.relseg_size,
                check: PageCheck {
                    checksums: ctx.control.data_checksum_version != 0,
                    fork: ForkNumber::Main,
                },
            };
            let mut r = copy_part(pgdata, &part, &sel, w, blcksz)?;
            encode_part(&r, out);
            return Ok((std::mem::take(&mut r.damaged), r.pages));
        }
        (FilePlan::Data { .. }, UnitKind::Whole) => unreachable!("data files are read in parts"),
    }
    Ok((Vec::new(), 0))
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
    Err(Error::Corrupt(format!("\"{}\": {last}", path.display())))
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
            Error::Refused(format!(
                "WAL segment \"{}\" needed by backup {} (start {start}, stop {stop}) could not be read: {e}; \
                 it may have been recycled: allow ptrack a replication slot or raise wal_keep_size",
                path.display(),
                ctx.id
            ))
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
            return Err(Error::Refused(format!(
                "WAL segment \"{}\" has {} bytes, expected {seg_size}",
                path.display(),
                stored.len + zero_tail
            )));
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
