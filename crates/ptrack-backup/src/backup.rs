//! Taking a backup: full, ptrack or delta, online through the non-exclusive backup functions.
//!
//! Order (ptrack spec §1.7, `basebackup.c`): check the data directory and the server are the same
//! cluster; check the mode's preconditions before touching the repository; lock the instance;
//! record the backup RUNNING; reserve WAL with a temporary slot; `pg_backup_start`; for ptrack,
//! check `ptrack_init_lsn()` and fetch the page map since the parent's start LSN; read every file
//! with `-j` workers, each appending to its own bundle; `pg_backup_stop`; store `backup_label`,
//! `tablespace_map` and the WAL from start to stop; fsync the bundles; write the manifest; only
//! then record the backup OK. A backup that fails or is killed is never OK.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ptrack_page::control::read_control_file;
use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_page::verify::PageCheck;
use ptrack_types::{ForkNumber, Lsn};
use ptrack_wal::segment::SegmentName;

use crate::bundle::{BundleWriter, Compression};
use crate::catalog::{BackupInfo, Mode, Status, backup_id};
use crate::conn::ConnOptions;
use crate::manifest::{BundleInfo, Entry, EntryKind, MANIFEST_VERSION, Manifest};
use crate::pages::{Damaged, Part, PartResult, Select, WholeResult, copy_part, copy_whole};
use crate::repo::{Instance, InstanceInfo, Lock, Repository, now};
use crate::server::Session;
use crate::walk::{Item, walk};
use crate::{Error, Result, envelope, refused};

/// Blocks per unit of parallel work (128 MiB at 8 KiB).
const PART_BLOCKS: u32 = 16384;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The cluster's data directory (read directly; the server must run on this machine).
    pub pgdata: PathBuf,
    /// Mode.
    pub mode: Mode,
    /// Parallel readers.
    pub jobs: usize,
    /// Compression.
    pub compression: Compression,
    /// Record damaged pages and go on instead of failing.
    pub allow_corruption: bool,
    /// How to connect.
    pub conn: ConnOptions,
}

/// Progress callbacks.
pub trait Progress: Sync {
    /// Total bytes to read is now known.
    fn start(&self, total: u64);
    /// Bytes read.
    fn advance(&self, bytes: u64);
    /// A step of the backup.
    fn step(&self, what: &str);
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn step(&self, _: &str) {}
}

/// A finished backup.
#[derive(Debug)]
pub struct BackupReport {
    /// Its catalog record.
    pub info: BackupInfo,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// Damaged pages recorded (only with `--allow-corruption`).
    pub damaged: Vec<Damaged>,
    /// Files in the backup.
    pub files: u64,
    /// Pages stored.
    pub pages: u64,
}

enum Work<'a> {
    Data {
        rel: &'a str,
        part: Part<'a>,
        sel: Select,
    },
    Whole {
        rel: &'a str,
        parent: Option<(u64, u32)>,
        size: u64,
    },
}

enum Done {
    Data(PartResult),
    Whole(Option<WholeResult>),
}

/// Formats damaged pages, one per line.
pub fn damage_report(d: &[Damaged]) -> String {
    d.iter()
        .map(|d| {
            format!(
                "  {} block {} (block {} of the fork, lsn {}): {}",
                d.path,
                d.block_in_file,
                d.block,
                d.lsn,
                d.problems.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Takes a backup into `repo`.
pub fn run_backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let control = read_control_file(&opts.pgdata).map_err(|e| {
        refused(format!(
            "\"{}\" is not a readable PostgreSQL data directory: {e}",
            opts.pgdata.display()
        ))
    })?;
    let sysid = control.system_identifier;
    let mut session = Session::open(&opts.conn)?;
    let server_sysid = session.system_identifier()?;
    if server_sysid != sysid {
        return Err(refused(format!(
            "the server you connected to is cluster {server_sysid}, but \"{}\" holds cluster {sysid}: connect to the server running on that data directory",
            opts.pgdata.display()
        )));
    }
    if session.major != control.major.number() {
        return Err(refused(format!(
            "server is PostgreSQL {} but \"{}\" is a PostgreSQL {} data directory",
            session.major,
            opts.pgdata.display(),
            control.major.number()
        )));
    }
    let info = InstanceInfo {
        system_identifier: sysid,
        pg_major: control.major.number(),
        blcksz: control.blcksz,
        relseg_blocks: control.relseg_size,
        wal_seg_size: u64::from(control.xlog_seg_size),
        pgdata: opts.pgdata.display().to_string(),
    };
    let existing = repo.instance(sysid)?;
    if opts.mode != Mode::Full && existing.is_none() {
        let others = repo.instances()?;
        return Err(refused(format!(
            "no full backup of cluster {sysid} in repository \"{}\"{}: take one with --mode full first",
            repo.root().display(),
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    " (it holds backups of other clusters: {})",
                    others
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )));
    }
    if let Some(i) = &existing
        && (i.info.pg_major != info.pg_major || i.info.blcksz != info.blcksz)
    {
        return Err(refused(format!(
            "cluster {sysid} was backed up as PostgreSQL {} with {}-byte blocks; it is now {} with {}: take backups into a new repository",
            i.info.pg_major, i.info.blcksz, info.pg_major, info.blcksz
        )));
    }
    let ptrack = if opts.mode == Mode::Ptrack {
        Some(session.ptrack()?)
    } else {
        None
    };
    let (instance, lock) = match existing {
        Some(i) => {
            let l = i.lock("take a backup")?;
            (i, l)
        }
        None => {
            let i = repo.add_instance(info.clone())?;
            let l = i.lock("take a backup")?;
            (i, l)
        }
    };
    let mut cat = instance.catalog()?;
    let parent = if opts.mode == Mode::Full {
        None
    } else {
        let p = cat.latest_ok().cloned().ok_or_else(|| {
            refused(format!(
                "no valid backup of cluster {sysid} to be incremental to (none has status OK): take a full backup first"
            ))
        })?;
        let chain = cat.chain(&p.id).map_err(refused)?;
        if let Some(bad) = chain.iter().find(|b| b.status != Status::Ok) {
            return Err(refused(format!(
                "the latest backup {} depends on backup {} with status {}: take a full backup first",
                p.id, bad.id, bad.status
            )));
        }
        Some(p)
    };
    let parent_manifest = match &parent {
        Some(p) => Some(read_manifest(&instance, p)?),
        None => None,
    };
    if instance.info.pgdata != info.pgdata {
        let mut i2 = instance.clone();
        i2.info.pgdata = info.pgdata.clone();
        i2.save_info(&lock)?;
    }

    let mut secs = now();
    let last = cat.backups.last().map(|b| b.id.clone()).unwrap_or_default();
    let mut id = backup_id(secs);
    while id <= last || instance.backup_dir(&id).exists() {
        secs += 1;
        id = backup_id(secs);
    }
    let record = BackupInfo {
        id: id.clone(),
        mode: opts.mode,
        parent: parent.as_ref().map(|p| p.id.clone()),
        status: Status::Running,
        start_lsn: Lsn::INVALID,
        stop_lsn: None,
        timeline: None,
        start_time: now(),
        end_time: None,
        data_bytes: 0,
        stored_bytes: 0,
        wal_bytes: 0,
        compression: opts.compression.name().into(),
        pg_major: info.pg_major,
        manifest_crc: None,
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    cat.backups.push(record);
    instance.save_catalog(&cat, &lock)?;
    let dir = instance.backup_dir(&id);
    let result = ptrack_durable::create_private_dir(&dir)
        .map_err(|e| Error::io(&dir, "create", e))
        .and_then(|()| {
            take(
                &mut session,
                opts,
                &control,
                &instance,
                &lock,
                &id,
                &dir,
                parent.as_ref().zip(parent_manifest.as_ref()),
                ptrack.as_ref(),
                progress,
            )
        });
    let mut cat = instance.catalog()?;
    let rec = cat.get_mut(&id).expect("our record");
    match result {
        Ok(mut report) => {
            report.info.status = Status::Ok;
            report.info.start_time = rec.start_time;
            *rec = report.info.clone();
            instance.save_catalog(&cat, &lock)?;
            Ok(report)
        }
        Err(e) => {
            rec.status = Status::Error;
            rec.end_time = Some(now());
            rec.error = Some(e.to_string());
            instance.save_catalog(&cat, &lock)?;
            Err(e)
        }
    }
}

/// Reads a backup's manifest and checks it is the one the catalog recorded.
pub fn read_manifest(instance: &Instance, b: &BackupInfo) -> Result<Manifest> {
    let path = instance.backup_dir(&b.id).join("manifest");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
    if let Some(crc) = b.manifest_crc
        && crc32c::crc32c(&bytes) != crc
    {
        return Err(Error::Corrupt(format!(
            "manifest of backup {} (\"{}\") is not the one recorded in the catalog (CRC-32C differs)",
            b.id,
            path.display()
        )));
    }
    let m: Manifest = envelope::decode(
        &bytes,
        "manifest",
        MANIFEST_VERSION,
        &path.display().to_string(),
    )?;
    if m.backup_id != b.id {
        return Err(Error::Corrupt(format!(
            "manifest \"{}\" belongs to backup {}, not {}",
            path.display(),
            m.backup_id,
            b.id
        )));
    }
    Ok(m)
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

#[allow(clippy::too_many_arguments)]
fn take(
    session: &mut Session,
    opts: &BackupOptions,
    control: &ptrack_page::control::ControlFile,
    instance: &Instance,
    _lock: &Lock,
    id: &str,
    dir: &Path,
    parent: Option<(&BackupInfo, &Manifest)>,
    ptrack: Option<&crate::server::PtrackExt>,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let mut warnings = Vec::new();
    let blcksz = control.blcksz as usize;
    let relseg = control.relseg_size;
    let seg_size = u64::from(control.xlog_seg_size);
    let slot = format!("ptrack_{}_{}", std::process::id(), id.to_ascii_lowercase());
    if let Some(w) = session.reserve_wal(&slot) {
        warnings.push(w);
    }
    progress.step("starting backup (checkpoint)");
    let start_lsn = session.backup_start(&format!("ptrack backup {id}"))?;
    let mut pagemap: Option<HashMap<String, Vec<u32>>> = None;
    if let (Some(ext), Some((p, _))) = (ptrack, parent) {
        let init = session.ptrack_init_lsn(ext)?;
        if !init.is_valid() || init > p.start_lsn {
            return Err(refused(format!(
                "LSN from ptrack_control {init} is greater than Start LSN of previous backup {} ({}). \
                 Create new full backup before an incremental one.",
                p.start_lsn, p.id
            )));
        }
        progress.step("asking ptrack for changed pages");
        pagemap = Some(pagemap_blocks(session.ptrack_pagemapset(ext, p.start_lsn)?));
    }
    let items = walk(&opts.pgdata)?;
    let checks = control.data_checksum_version != 0;
    let mut entries: Vec<Entry> = Vec::new();
    let mut work: Vec<Work> = Vec::new();
    let mut total = 0u64;
    let mut data_bytes = 0u64;
    for (rel, item) in &items {
        match item {
            Item::Dir => entries.push(Entry {
                path: rel.clone(),
                kind: EntryKind::Dir,
            }),
            Item::Link(t) => entries.push(Entry {
                path: rel.clone(),
                kind: EntryKind::Link { target: t.clone() },
            }),
            Item::File(size) => {
                data_bytes += size;
                let parent_entry = parent.and_then(|(_, m)| m.entry(rel)).map(|e| &e.kind);
                let seg = match classify_path(rel) {
                    PathKind::Relation(s) if s.fork == ForkNumber::Main => Some(s),
                    _ => None,
                };
                let Some(seg) = seg else {
                    let parent = match parent_entry {
                        Some(EntryKind::File { size, crc, .. }) => Some((*size, *crc)),
                        _ => None,
                    };
                    total += size;
                    work.push(Work::Whole {
                        rel,
                        parent,
                        size: *size,
                    });
                    continue;
                };
                let blocks = u32::try_from(size / blcksz as u64)
                    .unwrap_or(u32::MAX)
                    .min(relseg);
                let parent_blocks = match parent_entry {
                    Some(EntryKind::Data { blocks, .. }) => Some(*blocks),
                    _ => None,
                };
                let sel = match (opts.mode, parent, parent_blocks) {
                    (Mode::Full, _, _) | (_, _, None) | (_, None, _) => Select {
                        blocks: None,
                        since: None,
                        new_from: 0,
                    },
                    (Mode::Delta, Some((p, _)), Some(pb)) => Select {
                        blocks: None,
                        since: Some(p.start_lsn),
                        new_from: pb,
                    },
                    (Mode::Ptrack, Some((p, _)), Some(pb)) => {
                        let mut list = pagemap
                            .as_ref()
                            .and_then(|m| m.get(rel))
                            .cloned()
                            .unwrap_or_default();
                        list.retain(|&b| b < pb.min(blocks));
                        list.extend(pb..blocks);
                        Select {
                            blocks: Some(list),
                            since: Some(p.start_lsn),
                            new_from: pb,
                        }
                    }
                };
                let read_blocks = sel
                    .blocks
                    .as_ref()
                    .map_or(u64::from(blocks), |l| l.len() as u64);
                total += read_blocks * blcksz as u64;
                let base = sel.since.is_none();
                entries.push(Entry {
                    path: rel.clone(),
                    kind: EntryKind::Data {
                        size: u64::from(blocks) * blcksz as u64,
                        blocks,
                        base,
                        parts: Vec::new(),
                        pages: 0,
                        corrupt: Vec::new(),
                    },
                });
                let mut start = 0;
                loop {
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
                    if start >= blocks {
                        break;
                    }
                }
            }
        }
    }
    progress.start(total);
    progress.step("copying files");
    // Biggest first, so that workers finish together.
    let weight = |w: &Work| match w {
        Work::Data { part, sel, .. } => {
            sel.blocks
                .as_ref()
                .map_or(u64::from(part.end - part.start), |l| l.len() as u64)
                * blcksz as u64
        }
        Work::Whole { size, .. } => *size,
    };
    work.sort_by_key(|w| std::cmp::Reverse(weight(w)));
    let jobs = opts.jobs.max(1).min(work.len().max(1));
    let bundles: Mutex<Vec<BundleInfo>> = Mutex::new(Vec::new());
    let results = crate::parallel::run(
        jobs,
        work.len(),
        |t| BundleWriter::create(dir, t as u32, opts.compression),
        |w, i| {
            let item = &work[i];
            let done = match item {
                Work::Data { part, sel, .. } => {
                    Done::Data(copy_part(&opts.pgdata, part, sel, w, blcksz)?)
                }
                Work::Whole { rel, parent, .. } => {
                    Done::Whole(copy_whole(&opts.pgdata, rel, *parent, w)?)
                }
            };
            progress.advance(weight(item));
            Ok(done)
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
    let mut damaged = Vec::new();
    let mut pages = 0u64;
    let by_path: HashMap<String, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut whole_entries = Vec::new();
    for (item, done) in work.iter().zip(results) {
        match (item, done) {
            (Work::Data { rel, .. }, Done::Data(r)) => {
                let e = &mut entries[by_path[*rel]];
                if let EntryKind::Data {
                    blocks,
                    size,
                    parts,
                    pages: n,
                    corrupt,
                    ..
                } = &mut e.kind
                {
                    if let Some(short) = r.short_at {
                        *blocks = (*blocks).min(short);
                        *size = u64::from(*blocks) * blcksz as u64;
                    }
                    if let Some(ix) = r.index {
                        parts.push(ix);
                    }
                    *n += r.pages;
                    pages += r.pages;
                    corrupt.extend(r.damaged.iter().map(|d| d.block_in_file));
                }
                damaged.extend(r.damaged);
            }
            (Work::Whole { rel, .. }, Done::Whole(Some(w))) => whole_entries.push(Entry {
                path: rel.to_string(),
                kind: EntryKind::File {
                    size: w.size,
                    crc: w.crc,
                    stored: w.stored,
                },
            }),
            // Vanished since the walk (dropped): WAL replay of the backup removes it anyway.
            (Work::Whole { .. }, Done::Whole(None)) => {}
            _ => unreachable!("results are stored at their item's index"),
        }
    }
    if !damaged.is_empty() && !opts.allow_corruption {
        damaged.sort_by(|a, b| (&a.path, a.block_in_file).cmp(&(&b.path, b.block_in_file)));
        return Err(Error::Corrupt(format!(
            "backup {id} failed: {} damaged page(s) found (use --allow-corruption to record them and go on):\n{}",
            damaged.len(),
            damage_report(&damaged)
        )));
    }
    for e in &mut entries {
        if let EntryKind::Data { parts, .. } = &mut e.kind {
            parts.sort_by_key(|p| (p.at.bundle, p.at.offset));
        }
    }
    entries.extend(whole_entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    progress.step("stopping backup");
    let stop = session.backup_stop()?;
    let timeline = timeline_of_label(&stop.label).unwrap_or(control.timeline.0);
    let wal_bundle = jobs as u32;
    let mut w = BundleWriter::create(dir, wal_bundle, opts.compression)?;
    for (name, content) in [
        ("backup_label", &stop.label),
        ("tablespace_map", &stop.tablespace_map),
    ] {
        if name == "tablespace_map" && content.is_empty() {
            continue;
        }
        let s = w.put_blob(content.as_bytes())?;
        let e = Entry {
            path: name.into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                crc: crc32c::crc32c(content.as_bytes()),
                stored: Some(s),
            },
        };
        let at = entries.partition_point(|x| x.path < e.path);
        entries.insert(at, e);
    }
    progress.step("copying WAL");
    let mut waited = 0;
    while session.wal_durable_lsn()? < stop.lsn {
        if waited > 6000 {
            return Err(Error::Server(format!(
                "WAL up to the stop LSN {} was not flushed within 60 s",
                stop.lsn
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    let wal_dir = opts.pgdata.join("pg_wal");
    let first = start_lsn.0 / seg_size;
    let last = (stop.lsn.0.max(1) - 1) / seg_size;
    let mut wal = Vec::new();
    let mut wal_bytes = 0;
    if timeline > 1 {
        let name = format!("{timeline:08X}.history");
        if let Ok(data) = std::fs::read(wal_dir.join(&name)) {
            let s = w.put_blob(&data)?;
            wal.push(Entry {
                path: name,
                kind: EntryKind::File {
                    size: data.len() as u64,
                    crc: crc32c::crc32c(&data),
                    stored: Some(s),
                },
            });
        }
    }
    for segno in first..=last {
        let name = SegmentName {
            tli: ptrack_types::TimeLineId(timeline),
            segno,
        }
        .file_name(seg_size);
        let path = wal_dir.join(&name);
        let data = std::fs::read(&path).map_err(|e| {
            Error::Refused(format!(
                "WAL segment \"{}\" needed by backup {id} (start {start_lsn}, stop {}) could not be read: {e}; \
                 it may have been recycled: allow ptrack a replication slot or raise wal_keep_size",
                path.display(),
                stop.lsn
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
        let s = w.put_blob(&data)?;
        wal.push(Entry {
            path: name,
            kind: EntryKind::File {
                size: seg_size,
                crc: crc32c::crc32c(&data),
                stored: Some(s),
            },
        });
    }
    let size = w.finish()?;
    let mut bundles = bundles.into_inner().expect("lock");
    bundles.push(BundleInfo {
        number: wal_bundle,
        size,
    });
    bundles.sort_by_key(|b| b.number);
    let stored_bytes = bundles.iter().map(|b| b.size).sum();
    let removed = match parent {
        Some((_, m)) => m
            .entries
            .iter()
            .filter(|e| {
                entries
                    .binary_search_by(|x| x.path.as_str().cmp(&e.path))
                    .is_err()
            })
            .map(|e| e.path.clone())
            .collect(),
        None => Vec::new(),
    };
    let files = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. } | EntryKind::Data { .. }))
        .count() as u64;
    let manifest = Manifest {
        backup_id: id.to_string(),
        parent: parent.map(|(p, _)| p.id.clone()),
        system_identifier: control.system_identifier,
        pg_major: control.major.number(),
        blcksz: control.blcksz,
        wal_seg_size: seg_size,
        data_checksums: checks,
        compression: opts.compression,
        start_lsn,
        stop_lsn: stop.lsn,
        timeline,
        bundles,
        entries,
        wal,
        removed,
    };
    let bytes = envelope::encode("manifest", MANIFEST_VERSION, &manifest);
    let mpath = dir.join("manifest");
    ptrack_durable::write_file(&mpath, &bytes).map_err(|e| Error::io(&mpath, "write", e))?;
    ptrack_durable::sync_dir(instance.dir()).map_err(|e| Error::io(instance.dir(), "fsync", e))?;
    let info = BackupInfo {
        id: id.to_string(),
        mode: opts.mode,
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
        compression: opts.compression.name().into(),
        pg_major: manifest.pg_major,
        manifest_crc: Some(crc32c::crc32c(&bytes)),
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    Ok(BackupReport {
        info,
        warnings,
        damaged,
        files,
        pages,
    })
}
