//! Taking a backup: full, ptrack or delta, online through the non-exclusive backup functions.
//!
//! Order (ptrack spec §1.7, `basebackup.c`): check the data directory and the server are the same
//! cluster; check the mode's preconditions and choose the parent (an ancestor of the server's
//! history, `crate::parent`) before touching the repository; lock the instance; record the
//! backup RUNNING; then `crate::take` reads everything between `pg_backup_start` and
//! `pg_backup_stop` and writes the manifest; only then is the backup recorded OK. A backup that
//! fails is recorded ERROR with its cause after its files are removed (so that a full disk has
//! room for the catalog); one that is killed is found RUNNING by the next command holding the
//! lock, which records it ERROR and removes its files.

use std::path::PathBuf;

use ptrack_page::control::read_control_file;
use ptrack_types::Lsn;

use crate::conn::ConnOptions;
use crate::pages::Damaged;
use crate::parent::{History, Parent, choose_parent};
use crate::server::Session;
use crate::take::{TakeContext, take};
use crate::{Error, Refusal, Result};
use ptrack_format::bundle::Compression;
use ptrack_format::catalog::{BackupInfo, Mode, Status, backup_id};
use ptrack_format::manifest::Skipped;
use ptrack_format::repo::{Instance, InstanceInfo, Repository, now};

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
    /// The instance (cluster) it is of.
    pub system_identifier: u64,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// Damaged pages recorded (only with `--allow-corruption`).
    pub damaged: Vec<Damaged>,
    /// What the backup left out, and why.
    pub skipped: Vec<Skipped>,
    /// Files in the backup.
    pub files: u64,
    /// Pages stored.
    pub pages: u64,
    /// Wall time of each phase.
    pub phases: Vec<crate::phases::Phase>,
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

fn instance_info(opts: &BackupOptions, c: &ptrack_page::control::ControlFile) -> InstanceInfo {
    InstanceInfo {
        system_identifier: c.system_identifier,
        pg_major: c.major,
        blcksz: c.blcksz,
        relseg_blocks: c.relseg_size,
        wal_seg_size: c.xlog_seg_size,
        pgdata: opts.pgdata.display().to_string(),
    }
}

fn check_same_cluster(
    session: &mut Session,
    opts: &BackupOptions,
    c: &ptrack_page::control::ControlFile,
) -> Result<()> {
    let server_sysid = session.system_identifier()?;
    if server_sysid != c.system_identifier {
        return Err(Refusal::OtherCluster {
            server: server_sysid,
            pgdata: opts.pgdata.display().to_string(),
            cluster: c.system_identifier,
        }
        .into());
    }
    // Same system identifier is not enough: a standby and its primary share it. The server must
    // be the one whose postmaster.pid is in the data directory.
    let pidfile = opts.pgdata.join("postmaster.pid");
    let text = std::fs::read_to_string(&pidfile).map_err(|e| {
        Error::from(Refusal::NotRunning {
            pgdata: opts.pgdata.display().to_string(),
            pidfile: pidfile.display().to_string(),
            cause: e.to_string(),
        })
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let (started, port) = session.postmaster()?;
    let (file_started, file_port) = (
        lines.get(2).and_then(|l| l.trim().parse::<i64>().ok()),
        lines.get(3).and_then(|l| l.trim().parse::<u16>().ok()),
    );
    // postmaster.pid's time is taken a moment before pg_postmaster_start_time().
    let same_start = file_started.is_some_and(|t| (t - started).abs() <= 2);
    if !same_start || file_port != Some(port) {
        return Err(Refusal::OtherPostmaster {
            port,
            started,
            pgdata: opts.pgdata.display().to_string(),
            file_port: file_port.map_or("?".into(), |p| p.to_string()),
            file_started: file_started.map_or("?".into(), |p| p.to_string()),
        }
        .into());
    }
    if session.major != c.major.number() {
        return Err(Refusal::OtherMajor {
            server: session.major,
            pgdata: opts.pgdata.display().to_string(),
            cluster: c.major.number(),
        }
        .into());
    }
    Ok(())
}

fn no_full_backup(repo: &Repository, sysid: u64) -> Result<Error> {
    let others = repo.instances()?;
    Ok(Refusal::NoFullBackup {
        sysid,
        address: repo.address(),
        others,
    }
    .into())
}

/// Takes a backup into `repo`.
pub fn run_backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let mut clock = crate::phases::Clock::new();
    let control = read_control_file(&opts.pgdata).map_err(|e| {
        Error::from(Refusal::NotADataDir {
            pgdata: opts.pgdata.display().to_string(),
            cause: e.to_string(),
        })
    })?;
    let sysid = control.system_identifier;
    let mut session = Session::open(&opts.conn)?;
    check_same_cluster(&mut session, opts, &control)?;
    let info = instance_info(opts, &control);
    let existing = repo.instance(sysid)?;
    let incremental = opts.mode != Mode::Full;
    if incremental && existing.is_none() {
        return Err(no_full_backup(repo, sysid)?);
    }
    if let Some(i) = &existing
        && (i.info.pg_major != info.pg_major || i.info.blcksz != info.blcksz)
    {
        return Err(Refusal::ClusterChanged {
            sysid,
            was_major: i.info.pg_major.to_string(),
            was_blcksz: i.info.blcksz,
            major: info.pg_major.to_string(),
            blcksz: info.blcksz,
        }
        .into());
    }
    let lineage = crate::lineage::of_data_dir(&opts.pgdata)?;
    let ptrack = match opts.mode {
        Mode::Ptrack => Some(session.ptrack()?),
        _ => None,
    };
    let position = session.position()?;
    let history = match incremental {
        true => Some(History::read(&opts.pgdata, position)?),
        false => None,
    };
    let instance = match existing {
        Some(i) => i,
        None => repo.add_instance(info.clone())?,
    };
    let lock = instance.lock("take a backup")?;
    let cat = instance.catalog_locked(&lock)?;
    let parent: Option<Parent> = match &history {
        Some(h) => Some(choose_parent(
            &instance,
            &cat,
            &opts.pgdata,
            h,
            control.data_checksum_version,
            &lineage,
            opts.mode == Mode::Delta,
        )?),
        None => None,
    };
    if let (Some(ext), Some(p)) = (&ptrack, &parent) {
        // init_lsn only moves forward: refuse now rather than after recording the backup.
        let p = &p.chain[0].info;
        let init = session.ptrack_init_lsn(ext)?;
        if !init.is_valid() || init > p.start_lsn {
            return Err(Refusal::PtrackTooNew {
                init,
                parent_start: p.start_lsn,
                parent: p.id.clone(),
            }
            .into());
        }
    }
    if instance.info.pgdata != info.pgdata {
        let mut i2 = instance.clone();
        i2.info.pgdata = info.pgdata.clone();
        i2.save_info(&lock)?;
    }
    let id = new_id(&instance, &cat)?;
    let record = BackupInfo {
        id: id.clone(),
        mode: opts.mode,
        parent: parent.as_ref().map(|p| p.chain[0].info.id.clone()),
        status: Status::Running,
        start_lsn: Lsn::INVALID,
        stop_lsn: None,
        timeline: None,
        start_time: now(),
        end_time: None,
        data_bytes: 0,
        stored_bytes: 0,
        wal_bytes: 0,
        compression: opts.compression,
        pg_major: info.pg_major,
        manifest_digest: None,
        error: None,
        program_version: env!("CARGO_PKG_VERSION").into(),
        keep_until: None,
    };
    instance.save_record(&record, &lock)?;
    let dir = instance.backup_key(&id)?;
    let ctx = TakeContext {
        lineage: &lineage,
        opts,
        control: &control,
        instance: &instance,
        id: &id,
        dir: &dir,
        parent: parent.as_ref(),
        ptrack: ptrack.as_ref(),
        history: history.as_ref(),
        timeline: position.timeline,
        progress,
    };
    clock.lap("connect, checks, parent");
    let result = take(&mut session, &ctx, &mut clock);
    let result = result.map(|mut r| {
        if let Some(p) = &parent {
            r.warnings.extend(p.passed_over.iter().cloned());
        }
        r
    });
    let mut r = finish(&instance, &lock, &id, result)?;
    clock.lap("catalog");
    r.phases = clock.phases();
    Ok(r)
}

/// The next backup ID: the start time in base 36, later than every ID already used.
fn new_id(instance: &Instance, cat: &ptrack_format::catalog::Catalog) -> Result<String> {
    let mut secs = now();
    let last = cat.backups.last().map(|b| b.id.clone()).unwrap_or_default();
    let mut id = backup_id(secs);
    while id <= last || instance.backup_exists(&id)? {
        secs += 1;
        id = backup_id(secs);
    }
    Ok(id)
}

/// Records the outcome. A failed backup's files are removed first, so that a full disk has room
/// for the catalog; if even the catalog cannot be written, the original cause is returned and
/// the next command holding the lock records the backup ERROR.
fn finish(
    instance: &Instance,
    lock: &ptrack_format::repo::Lock,
    id: &str,
    result: Result<BackupReport>,
) -> Result<BackupReport> {
    match result {
        Ok(mut report) => {
            let cat = instance.catalog_locked(lock)?;
            let rec = cat
                .get(id)
                .ok_or_else(|| Error::backup(id, crate::Fault::RecordVanished))?;
            report.info.status = Status::Ok;
            report.info.start_time = rec.start_time;
            instance.save_record(&report.info, lock)?;
            Ok(report)
        }
        Err(e) => {
            let cleanup = instance.remove_backup_files(id);
            let recorded = instance
                .catalog_locked(lock)
                .and_then(|cat| match cat.get(id) {
                    Some(rec) => {
                        let mut rec = rec.clone();
                        rec.status = Status::Error;
                        rec.end_time = Some(now());
                        rec.error = Some(e.to_string());
                        instance.save_record(&rec, lock)
                    }
                    None => Ok(()),
                });
            match (recorded, cleanup) {
                (Ok(()), Ok(())) => Err(e),
                (Err(c), _) => Err(Refusal::FailedAndMore {
                    failure: Box::new(e),
                    after: format!(
                        "the catalog could not record the failure: {c}; the next ptrack command records it"
                    ),
                }
                .into()),
                (Ok(()), Err(c)) => Err(Refusal::FailedAndMore {
                    failure: Box::new(e),
                    after: format!("its files could not all be removed: {c}"),
                }
                .into()),
            }
        }
    }
}
