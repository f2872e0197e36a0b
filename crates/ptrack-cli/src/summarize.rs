//! `ptrack wal summarize` and `ptrack wal stats`: fold the changes of every record of a WAL range
//! into a `ptrack_blockmap::ChangeSet`, or count records per resource manager.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ptrack_types::Lsn;
use ptrack_wal::{DecoderConfig, WalDir, scan_dir};
use serde_json::json;

use crate::{EXIT_OK, EXIT_PROBLEMS};

pub(crate) fn summarize(
    dir: &Path,
    from: Lsn,
    to: Lsn,
    json: bool,
    output: Option<&Path>,
    jobs: usize,
    blcksz: u32,
) -> Result<u8> {
    if to <= from {
        bail!("--to {to} must be after --from {from}");
    }
    let wal = WalDir::open(dir).with_context(|| format!("open WAL directory {}", dir.display()))?;
    let ptrack_blockmap::Summary {
        mut set,
        end,
        abandoned,
        records,
    } = ptrack_blockmap::summarize(&wal, blcksz, from, to, jobs)
        .with_context(|| format!("read WAL in {}", dir.display()))?;
    if !end.covers(to) {
        bail!(
            "WAL in {} does not reach {to}: {}; the range cannot be summarised",
            dir.display(),
            end
        );
    }
    set.end = to;
    if let Some(p) = output {
        set.write_file(p)
            .with_context(|| format!("write change set {}", p.display()))?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let forks: Vec<_> = set
            .forks
            .iter()
            .map(|((l, f), c)| {
                json!({"spc": l.spc_oid.0, "db": l.db_oid.0, "relfilenode": l.rel_number.0, "fork": f.name(),
                       "limit": c.limit.map(|b| b.0), "blocks": c.blocks.iter().collect::<Vec<u32>>()})
            })
            .collect();
        let resets: Vec<_> = set
            .db_resets
            .iter()
            .map(|(s, d)| json!({"spc": s.0, "db": d.0}))
            .collect();
        let v = json!({
            "system_identifier": set.system_identifier.to_string(), "from": from.to_string(), "to": to.to_string(),
            "records": records, "changed_blocks": set.block_count(), "forks": forks, "database_resets": resets,
            "safe": set.unsafe_reasons.is_empty(), "unsafe_reasons": set.unsafe_reasons,
            "abandoned_records": abandoned.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
    } else {
        for ((l, f), c) in &set.forks {
            let limit = c
                .limit
                .map_or(String::new(), |b| format!(", limit block {b}"));
            writeln!(
                out,
                "rel {l} fork {f}: {} changed blocks{limit}",
                c.blocks.len()
            )?;
        }
        for (s, d) in &set.db_resets {
            writeln!(
                out,
                "database {d} in tablespace {s}: created or dropped, every file changed"
            )?;
        }
        for u in &set.unsafe_reasons {
            writeln!(out, "UNSAFE: {u:?}")?;
        }
        writeln!(
            out,
            "ptrack wal summarize {from}..{to}: {records} records, {} changed blocks in {} forks, {} database resets; {}",
            set.block_count(),
            set.forks.len(),
            set.db_resets.len(),
            if set.unsafe_reasons.is_empty() {
                "safe for incremental backup"
            } else {
                "NOT safe for incremental backup"
            }
        )?;
    }
    out.flush()?;
    Ok(if set.unsafe_reasons.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

#[derive(Default)]
struct RmgrStats {
    records: u64,
    record_bytes: u64,
    fpis: u64,
    fpi_bytes: u64,
}

pub(crate) fn stats(dir: &Path, json: bool) -> Result<u8> {
    let wal = WalDir::open(dir).with_context(|| format!("open WAL directory {}", dir.display()))?;
    let mut per: BTreeMap<&'static str, RmgrStats> = BTreeMap::new();
    let mut first = None;
    let mut last = Lsn(0);
    let cfg = DecoderConfig {
        blcksz: data_block_size(dir),
        ..DecoderConfig::default()
    };
    let end = scan_dir(
        &wal,
        cfg,
        None,
        None,
        &mut |r| {
            first.get_or_insert(r.lsn);
            last = r.end_lsn;
            let s = per.entry(r.rmgr_name()).or_default();
            s.records += 1;
            s.record_bytes += u64::from(r.tot_len);
            for b in &r.blocks {
                if let Some(i) = b.image {
                    s.fpis += 1;
                    s.fpi_bytes += u64::from(i.len);
                }
            }
        },
        &mut |_, _| {},
    )?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let total: u64 = per.values().map(|s| s.records).sum();
    if json {
        let rows: BTreeMap<_, _> = per
            .iter()
            .map(|(k, s)| (*k, json!({"records": s.records, "record_bytes": s.record_bytes, "fpi": s.fpis, "fpi_bytes": s.fpi_bytes})))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"from": first.map(|l| l.to_string()), "to": last.to_string(), "records": total, "rmgr": rows, "end": end.to_string()})
        )?;
    } else {
        writeln!(
            out,
            "{:<20} {:>10} {:>14} {:>10} {:>14}",
            "rmgr", "records", "record bytes", "FPIs", "FPI bytes"
        )?;
        for (k, s) in &per {
            writeln!(
                out,
                "{k:<20} {:>10} {:>14} {:>10} {:>14}",
                s.records, s.record_bytes, s.fpis, s.fpi_bytes
            )?;
        }
        writeln!(out, "{:<20} {total:>10}", "total")?;
        writeln!(out, "WAL {}..{last}: {}", first.unwrap_or_default(), end)?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// `BLCKSZ` of the cluster whose `pg_wal` is `dir` (8192 when its pg_control cannot be read).
pub(crate) fn data_block_size(dir: &std::path::Path) -> u32 {
    ptrack_page::read_control_file(&dir.join("..")).map_or(8192, |c| c.blcksz)
}
