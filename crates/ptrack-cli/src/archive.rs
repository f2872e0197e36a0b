//! `ptrack archive-push` and `ptrack archive-get`: the `archive_command` and `restore_command`
//! of a cluster whose WAL is archived into a ptrack repository (`ptrack_backup::archive`), and
//! `show --archive` / `validate --archive`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ptrack_format::archived::Pushed;
use ptrack_format::repo::Repository;

use crate::backups::{CompressArg, RepoArgs, repo_owner};
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
    /// Where to write it (`%p`).
    #[arg(value_name = "DEST")]
    dest: PathBuf,
}

/// `ptrack archive-push`: exit 0 only once the file is durable in the repository.
pub fn push(a: &PushArgs) -> Result<u8> {
    repo_owner(&a.at.repo.repo)?;
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

/// Exit status of `archive-get` on an error: above 125, so that PostgreSQL stops recovery
/// (`xlogarchive.c: RestoreArchivedFile`) instead of taking the error for the end of the archive
/// and ending recovery early, at a point nobody chose.
pub const EXIT_GET_ERROR: u8 = 255;

/// `ptrack archive-get`: exit 0 when the file was written, 1 when the archive does not hold it
/// (recovery ends there or waits for it), [`EXIT_GET_ERROR`] on any error (an unreadable or
/// damaged repository, a wrong key, a file that is not the one asked for).
pub fn get(a: &GetArgs) -> Result<u8> {
    let got = repo_owner(&a.at.repo.repo).and_then(|()| {
        let repo = a.at.repo.open()?;
        Ok(ptrack_backup::archive::get(
            &repo,
            &a.at.pgdata,
            &a.name,
            &a.dest,
        )?)
    });
    match got {
        Ok(true) => Ok(EXIT_OK),
        Ok(false) => Ok(EXIT_PROBLEMS),
        Err(e) => {
            eprintln!("ptrack: error: {e:#}");
            Ok(EXIT_GET_ERROR)
        }
    }
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
    let ok: Vec<_> = cat
        .backups
        .iter()
        .filter(|b| b.status == ptrack_format::catalog::Status::Ok)
        .cloned()
        .collect();
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
