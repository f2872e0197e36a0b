//! `ptrack archive-push` and `ptrack archive-get`: the `archive_command` and `restore_command`
//! of a cluster whose WAL is archived into a ptrack repository (`ptrack_backup::archive`), and
//! `show --archive` / `validate --archive`. With `--async` (push) or `--prefetch` (get) the
//! commands hand work to a background worker through a spool directory
//! (`ptrack_backup::spool`): this file only starts that worker, a copy of this process with
//! `--daemon`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ptrack_format::archived::Pushed;
use ptrack_format::repo::Repository;

use ptrack_backup::prefetch::{self, Prefetch};
use ptrack_backup::spool::{self, Pusher, Site, Spool, Waited, Worker};

use crate::backups::{CompressArg, RepoArgs, repo_address, repo_owner};
use crate::{EXIT_OK, EXIT_PROBLEMS};

/// The repository and the cluster's data directory, as both archive commands take them.
#[derive(Debug, Args)]
pub struct Where {
    #[command(flatten)]
    repo: RepoArgs,
    /// The cluster's data directory (default: the current directory, where the archiver runs
    /// `archive_command` and the startup process `restore_command`).
    #[arg(
        short = 'D',
        long = "pgdata",
        value_name = "PGDATA",
        default_value = "."
    )]
    pgdata: PathBuf,
}

/// Options of `ptrack archive-push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    at: Where,
    /// Compression of the archived file.
    #[arg(long = "compress", value_enum, default_value_t = CompressArg::Lz4)]
    compress: CompressArg,
    /// Archive asynchronously: a background pusher (started when none runs) stores files
    /// ahead of the archiver, in parallel; this command exits 0 only once its file is durable
    /// in the repository.
    #[arg(long = "async", requires = "spool")]
    asynchronous: bool,
    /// Spool directory of --async / --prefetch (one per cluster, outside its data directory).
    #[arg(long = "spool", value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Threads of the background pusher.
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Seconds to wait for the pusher before failing (the archiver then retries).
    #[arg(long = "archive-timeout", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
    /// Files waiting for the archiver above which every call warns, in the server's log, that
    /// the archive falls behind (WAL is never dropped: pg_wal grows until it catches up).
    #[arg(long = "queue-max", value_name = "FILES", default_value_t = 64)]
    queue_max: usize,
    /// Run as the background worker (started by this command itself).
    #[arg(long = "daemon", hide = true)]
    daemon: bool,
    /// The WAL file to archive (`%p`).
    #[arg(value_name = "WALFILE")]
    path: PathBuf,
}

/// Options of `ptrack archive-get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    at: Where,
    /// The file PostgreSQL asks for (`%f`).
    #[arg(value_name = "NAME")]
    name: String,
    /// Segments to fetch ahead, in the background, into --spool (0: none).
    #[arg(long = "prefetch", value_name = "N", default_value_t = 0, requires = "spool",
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    prefetch: u32,
    /// Spool directory of the prefetched segments (one per cluster, outside its data directory).
    #[arg(long = "spool", value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Threads of the prefetcher.
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Run as the background prefetcher (started by this command itself).
    #[arg(long = "daemon", hide = true)]
    daemon: bool,
    /// Where to write it (`%p`).
    #[arg(value_name = "DEST")]
    dest: PathBuf,
}

/// `ptrack archive-push`: exit 0 only once the file is durable in the repository.
pub fn push(a: &PushArgs) -> Result<u8> {
    repo_owner(&a.at.repo.repo)?;
    match (&a.spool, a.asynchronous || a.daemon) {
        (Some(dir), true) => return push_async(a, &Spool::open_for(dir, &a.at.pgdata)?),
        (None, true) => anyhow::bail!("--async needs --spool DIR"),
        _ => {}
    }
    let repo = a.at.repo.open()?;
    let r = ptrack_backup::archive::push(&repo, &a.at.pgdata, &a.path, a.compress.into())?;
    if r.outcome == Pushed::AlreadyThere {
        eprintln!(
            "ptrack: {} is archived already with the same content",
            r.name
        );
    }
    Ok(EXIT_OK)
}

/// `archive-push --async`: the foreground waits for the pusher; `--daemon` is the pusher.
fn push_async(a: &PushArgs, sp: &Spool) -> Result<u8> {
    let address = repo_address(&a.at.repo)?;
    if a.daemon {
        let p = Pusher {
            site: Site {
                spool: sp,
                pgdata: &a.at.pgdata,
                repository: &address,
                jobs: a.jobs.into(),
            },
            compression: a.compress.into(),
            batch: 4 * usize::from(a.jobs),
        };
        let repo = a.at.repo.open().map_err(|e| format!("{e:#}"));
        let n = spool::run_pusher(&p, repo)?;
        eprintln!(
            "ptrack: pusher {}: {} file(s) archived, {} failed{}",
            std::process::id(),
            n.pushed,
            n.failed,
            if n.other_running {
                " (another pusher runs)"
            } else {
                ""
            }
        );
        return Ok(EXIT_OK);
    }
    let (waiting, oldest) = spool::backlog(&a.at.pgdata)?;
    if waiting > a.queue_max {
        eprintln!(
            "ptrack: warning: {waiting} WAL files wait for archiving (--queue-max {}), the oldest {}: pg_wal grows until the repository takes them",
            a.queue_max,
            oldest.unwrap_or_default()
        );
    }
    let timeout = Duration::from_secs(a.timeout);
    let log = sp.log(Worker::Push);
    let mut start = || start_worker(&log);
    match spool::await_pushed(sp, &a.path, &address, timeout, &mut start)? {
        Waited::Archived => Ok(EXIT_OK),
        Waited::Failed(why) => anyhow::bail!("{} was not archived: {why}", a.path.display()),
        Waited::TimedOut => anyhow::bail!(
            "{} was not archived within {} s (--archive-timeout): see \"{}\"",
            a.path.display(),
            a.timeout,
            log.display()
        ),
    }
}

/// Starts this program again, with the same arguments and `--daemon`, in its own process
/// group (the archiver's signals are not its), logging to `log`.
fn start_worker(log: &Path) -> ptrack_backup::Result<Child> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let io = |e| ptrack_backup::Error::io(log, "start the background worker logging to", e);
    if std::fs::metadata(log).is_ok_and(|m| m.len() > 8 << 20) {
        let mut old = log.as_os_str().to_owned();
        old.push(".old");
        #[allow(clippy::disallowed_methods)] // a log, not data
        std::fs::rename(log, old).map_err(io)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    Command::new(std::env::current_exe().map_err(io)?)
        .args(std::env::args_os().skip(1))
        .arg("--daemon")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io)
}

/// Exit status of `archive-get` on an error: above 125, so that PostgreSQL stops recovery
/// (`xlogarchive.c: RestoreArchivedFile`) instead of taking the error for the end of the archive
/// and ending recovery early, at a point nobody chose.
pub const EXIT_GET_ERROR: u8 = 255;

/// `ptrack archive-get`: exit 0 when the file was written, 1 when the archive does not hold it
/// (recovery ends there or waits for it), [`EXIT_GET_ERROR`] on any error (an unreadable or
/// damaged repository, a wrong key, a file that is not the one asked for).
pub fn get(a: &GetArgs) -> Result<u8> {
    let got = repo_owner(&a.at.repo.repo).and_then(|()| get_one(a));
    match got {
        Ok(true) => Ok(EXIT_OK),
        Ok(false) => Ok(EXIT_PROBLEMS),
        Err(e) => {
            eprintln!("ptrack: error: {e:#}");
            Ok(EXIT_GET_ERROR)
        }
    }
}

/// One `archive-get`: from the prefetched files when there, else from the repository; then
/// the prefetcher is started for the segments after it when none runs.
fn get_one(a: &GetArgs) -> Result<bool> {
    let sp = match (&a.spool, a.prefetch > 0 || a.daemon) {
        (Some(dir), true) => Some(Spool::open_for(dir, &a.at.pgdata)?),
        (None, true) => anyhow::bail!("--prefetch needs --spool DIR"),
        _ => None,
    };
    let address = repo_address(&a.at.repo)?;
    let pf = sp.as_ref().map(|sp| Prefetch {
        site: Site {
            spool: sp,
            pgdata: &a.at.pgdata,
            repository: &address,
            jobs: a.jobs.into(),
        },
        count: a.prefetch as usize,
    });
    if let Some(pf) = pf.as_ref().filter(|_| a.daemon) {
        let got = prefetch::run_prefetcher(pf, &a.at.repo.open()?, &a.name)?;
        eprintln!(
            "ptrack: prefetcher after {}: {} file(s) [{}]",
            a.name,
            got.len(),
            got.join(" ")
        );
        return Ok(true);
    }
    let mut got = match &pf {
        Some(pf) => prefetch::take_prefetched(pf, &a.name, &a.dest)?,
        None => false,
    };
    if !got {
        let repo = a.at.repo.open()?;
        got = ptrack_backup::archive::get(&repo, &a.at.pgdata, &a.name, &a.dest)?;
    }
    if let Some(sp) = sp
        .as_ref()
        .filter(|_| got && prefetch::prefetches_after(&a.name))
        && !sp.running(Worker::Get)?
    {
        start_worker(&sp.log(Worker::Get))?;
    }
    Ok(got)
}

/// `ptrack show --archive`.
pub fn show(repo: &Repository, ids: &[u64], json: bool) -> Result<u8> {
    let mut all = Vec::new();
    for &sysid in ids {
        let inst = repo.only_instance(Some(sysid))?;
        all.push((sysid, ptrack_backup::archive::summary(&inst)?));
    }
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(i, t)| serde_json::json!({"instance": i, "timelines": t}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    for (sysid, tls) in &all {
        println!("Instance {sysid}: WAL archive");
        if tls.is_empty() {
            println!("  (empty)");
        }
        for t in tls {
            let runs: Vec<String> = t.runs.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            println!(
                "  timeline {}: {} segment(s) in {} run(s){}{}{}",
                t.timeline,
                t.segments,
                t.runs.len(),
                if t.runs.len() > 1 {
                    " (gaps between)"
                } else {
                    ""
                },
                if t.history { ", history file" } else { "" },
                match runs.is_empty() {
                    true => String::new(),
                    false => format!(": {}", runs.join(", ")),
                }
            );
            for p in &t.partial {
                println!("    {p}.partial");
            }
        }
    }
    Ok(EXIT_OK)
}

/// `ptrack validate --archive`.
pub fn validate(repo: &Repository, instance: Option<u64>, json: bool) -> Result<u8> {
    let inst = repo.only_instance(instance)?;
    let cat = inst.catalog()?;
    let now = ptrack_backup::expire::now();
    let (ok, given_up) = ptrack_backup::expire::pitr_backups(&inst, &cat, now)?;
    let chk = ptrack_backup::archive::check_archive(&inst, &ok)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&chk)?);
    } else {
        println!(
            "archive of instance {}: {} files checked",
            inst.info.system_identifier, chk.files
        );
        for w in &chk.windows {
            println!(
                "  backup {} (timeline {}): recoverable from {} to {}",
                w.backup, w.timeline, w.from, w.to
            );
        }
        for id in &given_up {
            println!(
                "  backup {id}: restores to its own end only (its WAL in the archive expired under --wal-depth)"
            );
        }
        for p in &chk.problems {
            println!("  {p}");
        }
    }
    Ok(if chk.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
