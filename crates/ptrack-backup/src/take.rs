//! The part of a backup between `pg_backup_start` and the manifest: reserve WAL with a temporary
//! slot, start the backup, for ptrack check `ptrack_init_lsn()` and fetch the page map since the
//! parent's start LSN, list the data directory (`crate::walk`), read every file with `-j`
//! workers each appending to its own bundle, `pg_backup_stop`, then — as `basebackup.c` does —
//! `global/pg_control` last (always stored: on a standby its minimum recovery point is the
//! backup's end), `backup_label`, `tablespace_map`, the WAL from start to stop and every timeline
//! history file; fsync the bundles; write the manifest. A failure after the start ends the
//! server's backup before returning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use ptrack_page::control::{ControlFile, parse_control_file};
use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_page::verify::PageCheck;
use ptrack_types::{ForkNumber, Lsn, TimeLineId};
use ptrack_wal::segment::SegmentName;

use crate::backup::{BackupOptions, BackupReport, Progress, damage_report};
use crate::bundle::BundleWriter;
use crate::catalog::{BackupInfo, Mode, Status};
use crate::manifest::{
    BundleInfo, Entry, EntryKind, MANIFEST_VERSION, Manifest, Skipped, Stored, WalSpan,
};
use crate::pages::{Damaged, Part, PartResult, Select, Whole, copy_part, copy_tail, copy_whole};
use crate::parent::Parent;
use crate::paths::{Digest, RelPath};
use crate::phases::Clock;
use crate::repo::{Instance, now};
use crate::server::{PtrackExt, Session};
use crate::walk::{Item, walk};
use crate::{Error, Result, envelope, refused};

/// Blocks per unit of parallel work (128 MiB at 8 KiB).
const PART_BLOCKS: u32 = 16384;

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
    pub dir: &'a Path,
    /// The parent and its chain, for incrementals.
    pub parent: Option<&'a Parent>,
    /// The ptrack extension, for ptrack mode.
    pub ptrack: Option<&'a PtrackExt>,
    /// The server's timeline when the parent was chosen.
    pub timeline: u32,
    /// The data directory's lineage (`crate::lineage`).
    pub lineage: &'a [String],
    /// Progress.
    pub progress: &'a dyn Progress,
}

enum Work<'a> {
    Data {
        rel: &'a RelPath,
        part: Part<'a>,
        sel: Select,
    },
    Whole {
        rel: &'a RelPath,
        parent: Option<(u64, Digest)>,
        size: u64,
    },
    Tail {
        rel: &'a RelPath,
        offset: u64,
        len: u32,
    },
}

enum Done {
    Data(PartResult),
    Whole(Whole),
    Tail(Option<crate::manifest::Tail>),
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
            let mut v = Vec::new();
            for (i, byte) in map.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        v.push((i * 8 + bit) as u32);
                    }
                }
            }
            (path, v)
        })
        .collect()
}

fn timeline_of_label(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
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
    let mut skipped = listing.skipped;
    let blcksz = ctx.control.blcksz as usize;
    // Whether hints were WAL-logged all the time since the parent cannot be known (wal_log_hints
    // and pg_checksums may have been switched meanwhile): the visibility maps are always compared.
    let also = match (ctx.opts.mode, ctx.parent) {
        (Mode::Delta, Some(p)) => crate::vm::newly_visible_pages(
            &ctx.opts.pgdata,
            ctx.instance,
            p,
            &listing.items,
            &tsdir,
            (blcksz, ctx.control.relseg_size),
        )?,
        _ => HashMap::new(),
    };
    let (mut entries, work, total) = plan(ctx, &listing.items, pagemap.as_ref(), &also);
    for w in &work {
        if let Work::Tail { rel, len, .. } = w {
            warnings.push(format!(
                "\"{rel}\" ends with {len} byte(s) after its last whole block (a block being written, or a damaged file); stored as they are"
            ));
        }
    }
    let data_bytes = listing
        .items
        .iter()
        .map(|(_, i)| if let Item::File(s, _) = i { *s } else { 0 })
        .sum();
    ctx.progress.start(total);
    ctx.progress.step("copying files");
    clock.lap("walk");
    let (results, mut bundles, jobs) = copy_all(ctx, &work)?;
    clock.lap("pages and files");
    let (damaged, pages) = merge(&mut entries, &work, results, &mut skipped, blcksz);
    if !damaged.is_empty() && !ctx.opts.allow_corruption {
        return Err(Error::Corrupt(format!(
            "backup {} failed: {} damaged page(s) found (use --allow-corruption to record them and go on):\n{}",
            ctx.id,
            damaged.len(),
            damage_report(&damaged)
        )));
    }
    ctx.progress.step("stopping backup");
    let stop = session.backup_stop()?;
    clock.lap("stop");
    let timeline = timeline_of_label(&stop.label).unwrap_or(ctx.control.timeline.0);
    if ctx.parent.is_some() && timeline != ctx.timeline {
        return Err(refused(format!(
            "the server moved from timeline {} to {timeline} during the backup; take it again",
            ctx.timeline
        )));
    }
    let wal_bundle = jobs as u32;
    let mut w = BundleWriter::create(ctx.dir, wal_bundle, ctx.opts.compression)?;
    let control_now = store_control(ctx, &mut w, &mut entries)?;
    for (name, content) in [
        ("backup_label", &stop.label),
        ("tablespace_map", &stop.tablespace_map),
    ] {
        if name == "tablespace_map" && content.is_empty() {
            continue;
        }
        insert_sorted(
            &mut entries,
            stored_entry(name, content.as_bytes(), &mut w)?,
        );
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
    let removed = match parent {
        Some(p) => p
            .manifest
            .entries
            .iter()
            .filter(|e| entries.binary_search_by(|x| x.path.cmp(&e.path)).is_err())
            .map(|e| e.path.clone())
            .collect(),
        None => Vec::new(),
    };
    let files = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. } | EntryKind::Data { .. }))
        .count() as u64;
    for s in &skipped {
        warnings.push(format!("not backed up: \"{}\": {}", s.path, s.reason));
    }
    let manifest = Manifest {
        backup_id: ctx.id.to_string(),
        mode: ctx.opts.mode,
        parent: parent.map(|p| p.info.id.clone()),
        parent_manifest: parent.map(|p| p.digest),
        system_identifier: ctx.control.system_identifier,
        pg_major: ctx.control.major.number(),
        blcksz: ctx.control.blcksz,
        wal_seg_size: u64::from(ctx.control.xlog_seg_size),
        data_checksum_version: control_now.data_checksum_version,
        compression: ctx.opts.compression,
        start_lsn,
        stop_lsn: stop.lsn,
        consistent_lsn: consistent,
        timeline,
        from_standby: session.in_recovery,
        bundles,
        entries,
        wal,
        removed,
        skipped: skipped.clone(),
        start_wal,
        lineage: ctx.lineage.to_vec(),
    };
    let bytes = envelope::encode("manifest", MANIFEST_VERSION, &manifest);
    let mpath = ctx.dir.join("manifest");
    ptrack_durable::write_file(&mpath, &bytes).map_err(|e| Error::io(&mpath, "write", e))?;
    ptrack_durable::sync_dir(ctx.instance.dir())
        .map_err(|e| Error::io(ctx.instance.dir(), "fsync", e))?;
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
        compression: ctx.opts.compression.name().into(),
        pg_major: manifest.pg_major,
        manifest_digest: Some(Digest::of(&bytes)),
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    clock.lap("fsync, manifest");
    Ok(BackupReport {
        phases: Vec::new(),
        info,
        warnings,
        damaged,
        skipped,
        files,
        pages,
    })
}

/// Which blocks of a main-fork segment to read and keep.
fn select(
    mode: Mode,
    parent: Option<(&BackupInfo, u32)>,
    listed: Option<&Vec<u32>>,
    blocks: u32,
) -> Select {
    match (mode, parent) {
        (Mode::Full, _) | (_, None) => Select {
            blocks: None,
            since: None,
            keep_read: true,
            new_from: 0,
            also: Vec::new(),
        },
        (Mode::Delta, Some((p, pb))) => Select {
            blocks: None,
            since: Some(p.start_lsn),
            keep_read: false,
            new_from: pb,
            also: Vec::new(),
        },
        (Mode::Ptrack, Some((p, pb))) => {
            let mut list = listed.cloned().unwrap_or_default();
            list.retain(|&b| b < pb.min(blocks));
            list.extend(pb..blocks);
            Select {
                blocks: Some(list),
                since: Some(p.start_lsn),
                keep_read: true,
                new_from: pb,
                also: Vec::new(),
            }
        }
    }
}

/// The manifest entries known from the listing and the work that fills them in.
fn plan<'a>(
    ctx: &TakeContext,
    items: &'a [(RelPath, Item)],
    pagemap: Option<&HashMap<String, Vec<u32>>>,
    also: &HashMap<RelPath, Vec<u32>>,
) -> (Vec<Entry>, Vec<Work<'a>>, u64) {
    let parent = ctx.parent.map(|p| &p.chain[0]);
    let blcksz = u64::from(ctx.control.blcksz);
    let relseg = ctx.control.relseg_size;
    let checks = ctx.control.data_checksum_version != 0;
    let mut entries = Vec::new();
    let mut work = Vec::new();
    let mut total = 0u64;
    for (rel, item) in items {
        let size = match item {
            Item::Dir => {
                entries.push(Entry {
                    path: rel.clone(),
                    kind: EntryKind::Dir,
                });
                continue;
            }
            Item::Link(t) => {
                entries.push(Entry {
                    path: rel.clone(),
                    kind: EntryKind::Link { target: t.clone() },
                });
                continue;
            }
            Item::File(size, id) => (*size, *id),
        };
        let (size, file_id) = size;
        let parent_kind = parent.and_then(|p| p.manifest.entry(rel)).map(|e| &e.kind);
        let seg = match rel.as_str().map(classify_path) {
            Some(PathKind::Relation(s)) if s.fork == ForkNumber::Main => s,
            _ => {
                let parent = match parent_kind {
                    Some(EntryKind::File { size, digest, .. }) => Some((*size, *digest)),
                    _ => None,
                };
                total += size;
                work.push(Work::Whole { rel, parent, size });
                continue;
            }
        };
        let blocks = u32::try_from(size / blcksz).unwrap_or(u32::MAX).min(relseg);
        let tail = (size - u64::from(blocks) * blcksz).min(blcksz - 1) as u32;
        if tail > 0 {
            work.push(Work::Tail {
                rel,
                offset: u64::from(blocks) * blcksz,
                len: tail,
            });
        }
        // A file created anew under the same name since the parent is read whole (base).
        let parent_blocks = match parent_kind {
            Some(EntryKind::Data {
                blocks,
                file_id: pid,
                ..
            }) if pid.is_none_or(|p| p.same_file(&file_id)) => parent.map(|p| (&p.info, *blocks)),
            _ => None,
        };
        let listed = pagemap.and_then(|m| rel.as_str().and_then(|r| m.get(r)));
        let mut sel = select(ctx.opts.mode, parent_blocks, listed, blocks);
        if sel.since.is_some()
            && let Some(a) = also.get(rel)
        {
            sel.also.clone_from(a);
        }
        total += sel
            .blocks
            .as_ref()
            .map_or(u64::from(blocks), |l| l.len() as u64)
            * blcksz;
        entries.push(Entry {
            path: rel.clone(),
            kind: EntryKind::Data {
                size: u64::from(blocks) * blcksz,
                blocks,
                base: sel.since.is_none(),
                parts: Vec::new(),
                pages: 0,
                corrupt: Vec::new(),
                tail: None,
                file_id: Some(file_id),
            },
        });
        let mut start = 0;
        while start < blocks {
            let end = (start + PART_BLOCKS).min(blocks);
            let skip = sel
                .blocks
                .as_ref()
                .is_some_and(|l| !l.iter().any(|&b| b >= start && b < end));
            if !skip {
                work.push(Work::Data {
                    rel,
                    part: Part {
                        rel,
                        start,
                        end,
                        base_block: seg.segno * relseg,
                        check: PageCheck {
                            checksums: checks,
                            fork: ForkNumber::Main,
                        },
                    },
                    sel: sel.clone(),
                });
            }
            start = end;
        }
    }
    (entries, work, total)
}

fn weight(w: &Work, blcksz: u64) -> u64 {
    match w {
        Work::Data { part, sel, .. } => {
            sel.blocks
                .as_ref()
                .map_or(u64::from(part.end - part.start), |l| l.len() as u64)
                * blcksz
        }
        Work::Whole { size, .. } => *size,
        Work::Tail { len, .. } => u64::from(*len),
    }
}

type Copied = (Vec<Done>, Vec<BundleInfo>, usize);

/// Reads every work item on `-j` workers, biggest first.
fn copy_all(ctx: &TakeContext, work: &[Work]) -> Result<Copied> {
    let blcksz = u64::from(ctx.control.blcksz);
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&work[i], blcksz)));
    let jobs = ctx.opts.jobs.max(1).min(work.len().max(1));
    let bundles: Mutex<Vec<BundleInfo>> = Mutex::new(Vec::new());
    let pgdata = &ctx.opts.pgdata;
    let results = crate::parallel::run(
        jobs,
        work.len(),
        |t| BundleWriter::create(ctx.dir, t as u32, ctx.opts.compression),
        |w, k| {
            let item = &work[order[k]];
            let done = match item {
                Work::Data { part, sel, .. } => {
                    Done::Data(copy_part(pgdata, part, sel, w, blcksz as usize)?)
                }
                Work::Whole { rel, parent, .. } => {
                    Done::Whole(copy_whole(pgdata, rel, *parent, w)?)
                }
                Work::Tail { rel, offset, len } => {
                    Done::Tail(copy_tail(pgdata, rel, *offset, *len, w)?)
                }
            };
            ctx.progress.advance(weight(item, blcksz));
            Ok((order[k], done))
        },
        |t, w| {
            let size = w.finish()?;
            bundles.lock().expect("lock").push(BundleInfo {
                number: t as u32,
                size,
            });
            Ok(())
        },
    )?;
    let mut by_item: Vec<Option<Done>> = (0..work.len()).map(|_| None).collect();
    for (i, d) in results {
        by_item[i] = Some(d);
    }
    let done = by_item
        .into_iter()
        .map(|d| d.expect("every item ran"))
        .collect();
    Ok((done, bundles.into_inner().expect("lock"), jobs))
}

/// Folds the workers' results into the entries; returns damaged pages and pages stored.
fn merge(
    entries: &mut Vec<Entry>,
    work: &[Work],
    results: Vec<Done>,
    skipped: &mut Vec<Skipped>,
    blcksz: usize,
) -> (Vec<Damaged>, u64) {
    let by_path: HashMap<RelPath, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let (mut damaged, mut pages) = (Vec::new(), 0u64);
    let mut whole = Vec::new();
    let mut unreadable: Vec<RelPath> = Vec::new();
    for (item, done) in work.iter().zip(results) {
        match (item, done) {
            (Work::Data { rel, .. }, Done::Data(r)) => {
                if let Some(why) = r.unreadable {
                    unreadable.push((*rel).clone());
                    skipped.push(Skipped {
                        path: (*rel).clone(),
                        reason: why,
                    });
                    continue;
                }
                if let EntryKind::Data {
                    blocks,
                    size,
                    parts,
                    pages: n,
                    corrupt,
                    ..
                } = &mut entries[by_path[*rel]].kind
                {
                    if let Some(short) = r.short_at {
                        *blocks = (*blocks).min(short);
                        *size = u64::from(*blocks) * blcksz as u64;
                    }
                    parts.extend(r.index);
                    *n += r.pages;
                    pages += r.pages;
                    corrupt.extend(r.damaged.iter().map(|d| d.block_in_file));
                }
                damaged.extend(r.damaged);
            }
            (Work::Tail { rel, .. }, Done::Tail(t)) => {
                if let EntryKind::Data {
                    tail, size, blocks, ..
                } = &mut entries[by_path[*rel]].kind
                    && let Some(t) = t
                {
                    *size = u64::from(*blocks) * blcksz as u64 + u64::from(t.len);
                    *tail = Some(t);
                }
            }
            (Work::Whole { rel, .. }, Done::Whole(w)) => match w {
                Whole::Read {
                    size,
                    digest,
                    stored,
                } => whole.push(Entry {
                    path: (*rel).clone(),
                    kind: EntryKind::File {
                        size,
                        digest,
                        stored,
                    },
                }),
                // Dropped since the walk: WAL replay of the backup removes it anyway.
                Whole::Vanished => {}
                Whole::Unreadable(why) => skipped.push(Skipped {
                    path: (*rel).clone(),
                    reason: why,
                }),
            },
            _ => unreachable!("results are stored at their item's index"),
        }
    }
    entries.retain(|e| !unreadable.contains(&e.path));
    for e in entries.iter_mut() {
        if let EntryKind::Data {
            parts,
            tail,
            blocks,
            size,
            ..
        } = &mut e.kind
        {
            parts.sort_by_key(|p| (p.at.bundle, p.at.offset));
            if tail.is_some()
                && *size
                    != u64::from(*blocks) * blcksz as u64 + u64::from(tail.map_or(0, |t| t.len))
            {
                *tail = None;
            }
        }
    }
    entries.extend(whole);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    damaged.sort_by(|a, b| (&a.path, a.block_in_file).cmp(&(&b.path, b.block_in_file)));
    (damaged, pages)
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
    timeline: u32,
) -> Result<(Vec<Entry>, u64, Option<WalSpan>)> {
    let wal_dir = ctx.opts.pgdata.join("pg_wal");
    let seg_size = u64::from(ctx.control.xlog_seg_size);
    let mut wal = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, "read directory", e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.len() == 16
                && n.ends_with(".history")
                && n[..8].bytes().all(|b| b.is_ascii_hexdigit())
        })
        .collect();
    names.sort();
    for name in names {
        let path = wal_dir.join(&name);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
        wal.push(stored_entry(&name, &data, w)?);
    }
    let mut wal_bytes = 0;
    let mut span = None;
    for segno in start.0 / seg_size..=(stop.0.max(1) - 1) / seg_size {
        let name = SegmentName {
            tli: TimeLineId(timeline),
            segno,
        }
        .file_name(seg_size);
        let path = wal_dir.join(&name);
        let data = std::fs::read(&path).map_err(|e| {
            Error::Refused(format!(
                "WAL segment \"{}\" needed by backup {} (start {start}, stop {stop}) could not be read: {e}; \
                 it may have been recycled: allow ptrack a replication slot or raise wal_keep_size",
                path.display(),
                ctx.id
            ))
        })?;
        if data.len() as u64 != seg_size {
            return Err(Error::Refused(format!(
                "WAL segment \"{}\" has {} bytes, expected {seg_size}",
                path.display(),
                data.len()
            )));
        }
        wal_bytes += seg_size;
        if segno == start.0 / seg_size {
            let to = stop.0.min((segno + 1) * seg_size);
            let bytes = &data[(start.0 % seg_size) as usize..(to - segno * seg_size) as usize];
            span = Some(WalSpan {
                from: start,
                to: Lsn(to),
                digest: Digest::of(bytes),
            });
        }
        wal.push(stored_entry(&name, &data, w)?);
    }
    Ok((wal, wal_bytes, span))
}
