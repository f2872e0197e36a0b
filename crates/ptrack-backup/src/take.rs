//! The part of a backup between `pg_backup_start` and the manifest: reserve WAL with a temporary
//! slot, start the backup, for ptrack check `ptrack_init_lsn()` and fetch the page map since the
//! parent's start LSN, list the data directory (`crate::walk`), read every file with `-j`
//! workers each appending to its own bundle, `pg_backup_stop`, then — as `basebackup.c` does —
//! `global/pg_control` last (always stored: on a standby its minimum recovery point is the
//! backup's end), `backup_label`, `tablespace_map`, the WAL from start to stop and every timeline
//! history file; fsync the bundles; write the manifest. A failure after the start ends the
//! server's backup before returning.
//!
//! The steps live in submodules: `plan` (pure: listing, parent manifest, page map and mode →
//! units of work), `copy` (the units on `-j` workers), `late` (what is stored after the stop:
//! pg_control, label, WAL) and `compose` (the manifest's entries from the result log).

use std::collections::HashMap;

use ptrack_page::control::ControlFile;
use ptrack_types::{Lsn, TimeLineId};

use crate::backup::{BackupOptions, BackupReport, Progress, damage_report};
use crate::parent::Parent;
use crate::phases::Clock;
use crate::server::{PtrackExt, Session};
use crate::walk::{Item, walk};
use ptrack_format::catalog::{BackupInfo, Mode, Status};
use ptrack_format::manifest::{BundleInfo, MANIFEST_VERSION, ManifestDoc};
use ptrack_format::repo::{Instance, now};

mod compose;
mod copy;
mod late;
mod plan;
#[cfg(test)]
mod tests;

use crate::{Error, Refusal, Result};
use compose::{Composer, EntryStream};
use copy::copy_all;
use late::timeline_of_label;
use plan::Planner;
use ptrack_format::envelope;

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
    /// The server's timeline history, for incrementals.
    pub history: Option<&'a crate::parent::History>,
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

/// For ptrack mode, the blocks changed since the parent's start LSN by the extension's map,
/// after checking the map covers that LSN (the original's refusal, word for word).
fn changed_pages(
    session: &mut Session,
    ctx: &TakeContext,
) -> Result<Option<HashMap<String, Vec<u32>>>> {
    let (Some(ext), Some(p)) = (ctx.ptrack, ctx.parent.map(|p| &p.chain[0])) else {
        return Ok(None);
    };
    let init = session.ptrack_init_lsn(ext)?;
    if !init.is_valid() || init > p.info.start_lsn {
        return Err(Refusal::PtrackTooNew {
            init,
            parent_start: p.info.start_lsn,
            parent: p.info.id.clone(),
        }
        .into());
    }
    ctx.progress.step("asking ptrack for changed pages");
    let rows = session.ptrack_pagemapset(ext, p.info.start_lsn)?;
    Ok(Some(pagemap_blocks(rows)))
}

fn take_started(
    session: &mut Session,
    ctx: &TakeContext,
    start_lsn: Lsn,
    mut warnings: Vec<String>,
    clock: &mut Clock,
) -> Result<BackupReport> {
    let parent = ctx.parent.map(|p| &p.chain[0]);
    let mut pagemap = changed_pages(session, ctx)?;
    let tsdir = format!(
        "PG_{}_{}",
        ctx.control.major.number(),
        ctx.control.catalog_version_no
    );
    clock.lap("pagemap");
    let listing = walk(&ctx.opts.pgdata, &tsdir)?;
    if let (Mode::Wal, Some(p), Some(h)) = (ctx.opts.mode, parent, ctx.history) {
        ctx.progress.step("reading the WAL since the parent backup");
        let set = crate::wal_mode::changes(ctx, h, &p.info, start_lsn)?;
        pagemap = Some(crate::wal_mode::pagemap(
            &set,
            &listing,
            ctx.control.blcksz,
            ctx.control.relseg_size,
        ));
        clock.lap("WAL since the parent");
    }
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
        return Err(Error::backup(
            ctx.id,
            crate::Fault::DamagedPages {
                count: log.damaged.len(),
                report: damage_report(&log.damaged),
            },
        ));
    }
    ctx.progress.step("stopping backup");
    let stop = session.backup_stop()?;
    clock.lap("stop");
    let timeline = timeline_of_label(&stop.label).unwrap_or(ctx.control.timeline);
    if ctx.parent.is_some() && timeline != ctx.timeline {
        return Err(Refusal::TimelineSwitch {
            from: ctx.timeline,
            to: timeline,
        }
        .into());
    }
    let wal_bundle = jobs as u32;
    let (after, size) =
        late::store_after_stop(session, ctx, &stop, start_lsn, timeline, wal_bundle, clock)?;
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
        late: &after.late,
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
        data_checksum_version: after.control_now.data_checksum_version,
        compression: ctx.opts.compression,
        start_lsn,
        stop_lsn: stop.lsn,
        consistent_lsn: after.consistent,
        timeline,
        from_standby: session.in_recovery,
        bundles,
        entries: EntryStream(&composer),
        wal: after.wal,
        removed: summary.removed,
        skipped: skipped.clone(),
        start_wal: after.start_wal,
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
        wal_bytes: after.wal_bytes,
        compression: ctx.opts.compression,
        pg_major: manifest.pg_major,
        manifest_digest: Some(manifest_digest),
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
        keep_until: None,
    };
    clock.lap("fsync, manifest");
    Ok(BackupReport {
        phases: Vec::new(),
        info,
        system_identifier: ctx.instance.info.system_identifier,
        warnings,
        damaged: log.damaged,
        skipped,
        files: summary.files,
        pages: log.pages,
    })
}
