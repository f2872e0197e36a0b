//! The `ptrack` command line: argument parsing, output and exit codes. Thin by design: every
//! decision about pages and files is made in the library crates; this crate translates.
//!
//! Exit codes: 0 success, 1 problems found (verify, validate), 2 error. Errors print one line,
//! `ptrack: error: …`, naming the file, LSN or option at fault.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod archive;
mod backups;
mod debug;
mod keys;
mod lifecycle;
mod summarize;
mod verify;
mod wal;

/// Exit code: success, nothing found.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command ran and found problems (damaged blocks).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code: the command could not do its job.
pub const EXIT_ERROR: u8 = 2;

/// Block-level incremental backup and corruption scanning for PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "ptrack", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan every relation file of a cluster (running or stopped) and report damaged blocks.
    ///
    /// Checks each page with PostgreSQL's own rules (header sanity, all-zero new pages, the data
    /// checksum when the cluster has them) plus heap line-pointer and tuple-header checks that
    /// catch damage checksums cannot. On a running cluster a failing block is re-read and only
    /// reported when two consecutive reads give the same failing bytes.
    /// Exit status: 0 clean, 1 damaged blocks found, 2 error.
    Verify(VerifyArgs),
    /// Create a backup repository in an empty or new directory (or an empty bucket prefix),
    /// encrypted with --encrypt.
    Init(backups::InitArgs),
    /// Take a backup of a running cluster: full, or incremental (ptrack, delta) to the newest OK
    /// backup. Every page read is verified. Exit status: 0 done, 2 error (nothing is marked OK).
    Backup(backups::BackupArgs),
    /// Restore a backup (with its chain) into a new data directory.
    Restore(backups::RestoreArgs),
    /// Re-check stored backups: pages, files, chain links, WAL. Exit status: 0 clean, 1 problems
    /// found (the backup is marked CORRUPT), 2 error.
    Validate(backups::ValidateArgs),
    /// List backups (with what the retention policy would delete, and pins).
    Show(backups::ShowArgs),
    /// Delete a backup (-i ID, with --with-descendants the backups built on it too), or what
    /// the retention policy expires with the archived WAL no kept backup needs (--expired).
    /// Crash-safe: an interrupted delete is finished by the next command on the instance.
    Delete(lifecycle::DeleteArgs),
    /// Store the instance's retention policy in the repository (0 unsets a value).
    SetRetention(lifecycle::SetRetentionArgs),
    /// Keep a backup whatever the retention policy says, for a time or forever.
    Pin(lifecycle::PinArgs),
    /// Undo `ptrack pin`.
    Unpin(lifecycle::UnpinArgs),
    /// Archive one WAL file (archive_command = 'ptrack archive-push -B REPO %p'): checked
    /// (this cluster's, the segment its name says), compressed, durable before exit status 0.
    /// A file archived already with the same content is success; other content is refused.
    ArchivePush(archive::PushArgs),
    /// Fetch one archived WAL file (restore_command = 'ptrack archive-get -B REPO %f %p'),
    /// checked, written under a temporary name and renamed. Exit status: 0 written, 1 not in
    /// the archive, 2 error.
    ArchiveGet(archive::GetArgs),
    /// Keys of an encrypted repository: list, add (rotation), remove.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Read WAL: block references, change summaries, statistics.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Developer tools (not part of the stable interface).
    #[command(hide = true, subcommand)]
    Debug(debug::DebugCommand),
}

/// Options of `ptrack verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory of the cluster.
    #[arg(short = 'D', long = "pgdata", env = "PGDATA", value_name = "PGDATA")]
    pgdata: PathBuf,
    /// Number of parallel readers (default: number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Show progress on standard error (default when standard error is a terminal).
    #[arg(long)]
    progress: bool,
}

/// Runs `ptrack` with the given arguments (the first is the program name) and returns its exit
/// code. Used by `main` and by tests.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Verify(a) => verify::run(&a),
        Command::Init(a) => backups::init(&a),
        Command::Backup(a) => backups::backup(&a),
        Command::Restore(a) => backups::restore(&a),
        Command::Validate(a) => backups::validate(&a),
        Command::Show(a) => backups::show(&a),
        Command::Delete(a) => lifecycle::delete(&a),
        Command::SetRetention(a) => lifecycle::set_retention(&a),
        Command::Pin(a) => lifecycle::pin(&a),
        Command::Unpin(a) => lifecycle::unpin(&a),
        Command::ArchivePush(a) => archive::push(&a),
        Command::ArchiveGet(a) => archive::get(&a),
        Command::Key(k) => keys::run(&k),
        Command::Wal(w) => wal::run(&w),
        Command::Debug(d) => debug::run(&d),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(EXIT_OK);
            }
            let _ = std::io::stdout().flush();
            eprintln!("ptrack: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
