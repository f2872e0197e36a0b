//! `ptrack wal …`: reads WAL segments from a directory with `ptrack_wal` and prints what it finds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use ptrack_types::Lsn;
use ptrack_wal::{DecoderConfig, WalDir, scan_dir};
use serde_json::json;

use crate::EXIT_OK;
use crate::summarize::data_block_size;

#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// Print every block reference of every record, one line each (like pg_waldump's block lines).
    Scan {
        /// Directory holding WAL segment files (pg_wal or an archive).
        dir: PathBuf,
        /// First LSN to report (records starting before it are skipped).
        #[arg(long, value_name = "LSN")]
        from: Option<Lsn>,
        /// Stop before the first record starting at or after this LSN.
        #[arg(long, value_name = "LSN")]
        to: Option<Lsn>,
        /// Print JSON Lines (one object per block reference) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Summarise the changes of an LSN range: per relation fork the changed blocks and the
    /// smallest length (limit block), databases created or dropped, and whether the range is
    /// safe for an incremental backup.
    Summarize {
        /// Directory holding WAL segment files.
        dir: PathBuf,
        /// Start of the range (a record start, such as a checkpoint's redo LSN).
        #[arg(long, value_name = "LSN")]
        from: Lsn,
        /// End of the range (exclusive).
        #[arg(long, value_name = "LSN")]
        to: Lsn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also write the change set to this file (ptrack change-set format).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Data page size of the cluster (default: from `DIR/../global/pg_control` when DIR is a
        /// data directory's pg_wal, else 8192).
        #[arg(long, value_name = "BYTES")]
        block_size: Option<u32>,
        /// Decode this many segment ranges in parallel (default: number of CPUs).
        #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
        jobs: Option<u32>,
    },
    /// Statistics per resource manager: records, bytes, full-page images (like pg_waldump --stats).
    Stats {
        /// Directory holding WAL segment files.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: &WalCommand) -> Result<u8> {
    match cmd {
        WalCommand::Scan {
            dir,
            from,
            to,
            json,
        } => scan(dir, *from, *to, *json),
        WalCommand::Summarize {
            dir,
            from,
            to,
            json,
            output,
            block_size,
            jobs,
        } => {
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |j| j as usize,
            );
            let blcksz = block_size.unwrap_or_else(|| data_block_size(dir));
            crate::summarize::summarize(dir, *from, *to, *json, output.as_deref(), jobs, blcksz)
        }
        WalCommand::Stats { dir, json } => crate::summarize::stats(dir, *json),
    }
}

/// The data page size of the cluster whose `pg_wal` is `dir` (from its pg_control), else 8192.
fn scan(dir: &std::path::Path, from: Option<Lsn>, to: Option<Lsn>, json: bool) -> Result<u8> {
    let wal = WalDir::open(dir).with_context(|| format!("open WAL directory {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut records = 0u64;
    let mut refs = 0u64;
    let mut io_error = None;
    let mut on_record = |r: &ptrack_wal::Record| {
        records += 1;
        for b in &r.blocks {
            refs += 1;
            let res = if json {
                let v = json!({
                    "lsn": r.lsn.to_string(), "rmgr": r.rmgr_name(), "info": r.info, "xid": r.xid,
                    "block_id": b.id, "spc": b.locator.spc_oid.0, "db": b.locator.db_oid.0,
                    "relfilenode": b.locator.rel_number.0, "fork": b.fork.name(), "block": b.block.0,
                    "fpw": b.image.is_some(), "will_init": b.will_init,
                });
                writeln!(out, "{v}")
            } else {
                writeln!(
                    out,
                    "{} {} blkref #{}: rel {} fork {} blk {}{}{}",
                    r.lsn,
                    r.rmgr_name(),
                    b.id,
                    b.locator,
                    b.fork,
                    b.block,
                    if b.image.is_some() { " (FPW)" } else { "" },
                    if b.will_init { " will_init" } else { "" },
                )
            };
            if let Err(e) = res {
                io_error.get_or_insert(e);
            }
        }
    };
    let cfg = DecoderConfig {
        blcksz: data_block_size(dir),
        ..DecoderConfig::default()
    };
    let end = scan_dir(&wal, cfg, from, to, &mut on_record, &mut |lsn, at| {
        eprintln!("ptrack: record at {lsn} was abandoned (WAL overwritten from {at})");
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    out.flush()?;
    eprintln!(
        "ptrack wal scan: {records} records, {refs} block references; {}",
        end
    );
    Ok(EXIT_OK)
}
