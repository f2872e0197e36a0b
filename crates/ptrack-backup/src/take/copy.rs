//! The copy step of a backup: the planned units read on `-j` workers (biggest first), each
//! appending to its own bundle, and what each unit produced encoded into the result log
//! (`compose`). Mirrors the file loop of `basebackup.c` (`sendDir`/`sendFile`), with every
//! page verified as it is read (`crate::pages`).

use std::sync::Mutex;

use ptrack_page::verify::PageCheck;
use ptrack_types::ForkNumber;

use super::TakeContext;
use super::compose::{ResultLog, SharedLog, encode_part, encode_tail, encode_whole};
use super::plan::{FilePlan, PART_BLOCKS, Planner, Unit, UnitKind};
use crate::Result;
use crate::pages::{Damaged, Part, copy_part, copy_tail, copy_whole};
use crate::walk::{Item, Listing};
use ptrack_format::bundle::BundleWriter;
use ptrack_format::manifest::BundleInfo;

/// Reads every unit on `-j` workers (biggest first), each appending to its own bundle; what
/// each unit produced goes to the result log.
pub(super) fn copy_all(
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
