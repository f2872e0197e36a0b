//! `ptrack verify`: runs the scanner of `ptrack_page::scan` over a data directory and prints its
//! report for people (one line per damaged block, then a summary) or as JSON.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ptrack_page::{DataDir, ScanConfig, ScanReport, scan_files};
use serde::Serialize;

use crate::{EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS, VerifyArgs};

/// The JSON document `ptrack verify --json` prints.
#[derive(Serialize)]
struct JsonReport<'a> {
    data_directory: String,
    pg_major: u32,
    system_identifier: String,
    data_checksums: bool,
    server_running: bool,
    jobs: usize,
    elapsed_seconds: f64,
    /// "clean", "corrupt" or "error".
    status: &'static str,
    #[serde(flatten)]
    report: &'a ScanReport,
}

pub(crate) fn human_bytes(b: u64) -> String {
    let (v, unit) = match b {
        0..1024 => return format!("{b} B"),
        1024..1_048_576 => (b as f64 / 1024.0, "KiB"),
        1_048_576..1_073_741_824 => (b as f64 / 1_048_576.0, "MiB"),
        _ => (b as f64 / 1_073_741_824.0, "GiB"),
    };
    format!("{v:.1} {unit}")
}

/// Reports progress either as an indicatif bar (terminal) or as a line per second (`--progress`
/// without a terminal).
struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    done: AtomicU64,
    last_line: Mutex<Instant>,
}

impl Progress {
    fn new(total: u64, want: bool, json: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (tty && (want || !json)).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} verify [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Progress {
            plain: want && !tty,
            bar,
            total,
            done: AtomicU64::new(0),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.plain
            && let Ok(mut last) = self.last_line.try_lock()
            && last.elapsed() >= Duration::from_secs(1)
        {
            *last = Instant::now();
            let pct = (done * 100).checked_div(self.total).unwrap_or(100);
            eprintln!(
                "verify: {pct}% ({} of {})",
                human_bytes(done),
                human_bytes(self.total)
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub(crate) fn run(a: &VerifyArgs) -> Result<u8> {
    let dd = DataDir::open(&a.pgdata)?;
    let cfg = ScanConfig {
        jobs: a.jobs.map_or(ScanConfig::default().jobs, |j| j as usize),
        ..ScanConfig::default()
    };
    let started = Instant::now();
    let (files, mut walk_errors) = dd.relation_files();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new(total, a.progress, a.json);
    let mut report = scan_files(&dd, &files, cfg, &|n| progress.add(n));
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    report.errors.append(&mut walk_errors);
    report.errors.sort_by(|a, b| a.path.cmp(&b.path));

    let code = if !report.errors.is_empty() {
        EXIT_ERROR
    } else if !report.damaged.is_empty() {
        EXIT_PROBLEMS
    } else {
        EXIT_OK
    };
    let checksums = dd.control.data_checksum_version != 0;
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = JsonReport {
            data_directory: dd.root.display().to_string(),
            pg_major: dd.major.number(),
            system_identifier: dd.control.system_identifier.to_string(),
            data_checksums: checksums,
            server_running: dd.online,
            jobs: cfg.jobs,
            elapsed_seconds: elapsed,
            status: match code {
                EXIT_OK => "clean",
                EXIT_PROBLEMS => "corrupt",
                _ => "error",
            },
            report: &report,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        for d in &report.damaged {
            let what: Vec<String> = d.problems.iter().map(|p| p.to_string()).collect();
            writeln!(
                out,
                "{}: block {} ({} fork, block {} of segment {}, lsn {}): {}",
                d.path,
                d.block,
                d.fork,
                d.block_in_file,
                d.segno,
                d.lsn,
                what.join("; ")
            )?;
        }
        for u in &report.unverified {
            writeln!(
                out,
                "{}: block {}: not verified: its contents changed on each of {} reads (a server is writing it); run verify again",
                u.path, u.block, u.reads
            )?;
        }
        writeln!(
            out,
            "ptrack verify: PostgreSQL {} cluster {} ({}, data checksums {})",
            dd.major,
            dd.root.display(),
            if dd.online {
                "server running"
            } else {
                "server stopped"
            },
            if checksums {
                "on"
            } else {
                "off: checksum mismatches cannot be detected"
            }
        )?;
        let rate = if elapsed > 0.0 {
            format!(
                ", {}/s",
                human_bytes((report.bytes as f64 / elapsed) as u64)
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "scanned {} files, {} blocks ({}) in {elapsed:.2} s with {} jobs{rate}",
            report.files,
            report.blocks,
            human_bytes(report.bytes),
            cfg.jobs
        )?;
        if report.torn_reads > 0 || report.changed_files > 0 {
            writeln!(
                out,
                "{} blocks re-read after racing a concurrent write, {} files changed size or vanished while scanned",
                report.torn_reads, report.changed_files
            )?;
        }
        let verdict = match (report.damaged.len(), report.errors.len()) {
            (0, 0) => "no damaged blocks".to_string(),
            (n, 0) => format!("{n} damaged blocks in {} files", report.damaged_files()),
            (n, e) => format!("{n} damaged blocks, {e} files could not be checked"),
        };
        writeln!(out, "result: {verdict}")?;
    }
    out.flush()?;
    drop(out);
    for e in &report.errors {
        eprintln!("ptrack: error: {}: {}", e.path, e.message);
    }
    Ok(code)
}
