//! `ptrack init`, `backup`, `restore`, `validate`, `show`: options in, `ptrack_backup` calls,
//! results out (text for people, `--json` for programs). No backup logic lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ptrack_backup::backup::{BackupOptions, Progress, damage_report, run_backup};
use ptrack_backup::conn::ConnOptions;
use ptrack_backup::identity::act_as_owner_of;
use ptrack_backup::restore::{RestoreOptions, SyncMethod, WriteMethod, run_restore};
use ptrack_backup::target::RecoveryTarget;
use ptrack_backup::validate::run_validate;
use ptrack_format::bundle::Compression;
use ptrack_format::catalog::Mode;
use ptrack_format::repo::Repository;
use ptrack_repo::keyring::{KdfParams, KeySource, PASSPHRASE_ENV};
use ptrack_repo::location::Location;

use crate::verify::human_bytes;
use crate::{EXIT_OK, EXIT_PROBLEMS};

/// Connection options (libpq conventions; `PG*` environment variables and `~/.pgpass` apply).
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Server host name or socket directory [env: PGHOST].
    #[arg(short = 'h', long = "host")]
    host: Option<String>,
    /// Server port [env: PGPORT].
    #[arg(short = 'p', long = "port")]
    port: Option<u16>,
    /// User name [env: PGUSER].
    #[arg(short = 'U', long = "username")]
    user: Option<String>,
    /// Database to connect to (the one where ptrack is installed) [env: PGDATABASE].
    #[arg(short = 'd', long = "dbname")]
    dbname: Option<String>,
}

/// The repository and, when it is encrypted, its key (every command that opens one).
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: a directory or s3://bucket/prefix (see README: S3 repositories).
    #[arg(short = 'B', long = "backup-path", env = "PTRACK_BACKUP_PATH", value_parser = Location::parse)]
    pub repo: Location,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// The key of an encrypted repository.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Key of an encrypted repository: a file (mode 0600 or stricter) whose bytes, less one
    /// trailing newline, are the key. Without it, the passphrase in the environment variable
    /// PTRACK_ENCRYPTION_PASSPHRASE is used when set.
    #[arg(long = "encryption-key-file", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key given, if any.
    pub fn source(&self) -> Option<KeySource> {
        KeySource::resolve(self.key_file.as_deref(), PASSPHRASE_ENV)
    }
}

impl RepoArgs {
    /// Opens the repository with the key given.
    pub fn open(&self) -> Result<Repository> {
        Ok(Repository::open_with(
            &self.repo,
            self.key.source().as_ref(),
        )?)
    }
}

/// Argon2id cost of new keys (hidden: for tests, which need cheap ones): `M_KIB,T,P`.
pub fn parse_kdf_cost(s: &str) -> Result<KdfParams, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let [m_cost, t_cost, p_cost] = v.as_slice() else {
        return Err("expected M_KIB,T,P".into());
    };
    let p = KdfParams {
        m_cost: *m_cost,
        t_cost: *t_cost,
        p_cost: *p_cost,
    };
    p.check()?;
    Ok(p)
}

/// Options of `ptrack init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository to create: a directory (absent or empty) or s3://bucket/prefix (empty).
    #[arg(short = 'B', long = "backup-path", env = "PTRACK_BACKUP_PATH", value_parser = Location::parse)]
    repo: Location,
    /// Encrypt every object (XChaCha20-Poly1305) with a random data key wrapped under the
    /// key given (--encryption-key-file or PTRACK_ENCRYPTION_PASSPHRASE; see README).
    #[arg(long)]
    encrypt: bool,
    #[command(flatten)]
    key: KeyArgs,
    /// Argon2id cost of the key: memory KiB, passes, lanes (default 65536,3,1).
    #[arg(long, hide = true, value_parser = parse_kdf_cost)]
    kdf_cost: Option<KdfParams>,
}

/// Backup mode.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Every page.
    Full,
    /// Pages the ptrack extension reports changed since the parent backup.
    Ptrack,
    /// Every page read, pages changed since the parent backup kept.
    Delta,
    /// Pages the archived WAL (`ptrack archive-push`) references since the parent backup.
    Wal,
}

/// Compression choice.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    /// Zstandard level 1.
    Zstd,
    /// LZ4.
    Lz4,
    /// None.
    None,
}

impl From<CompressArg> for Compression {
    fn from(c: CompressArg) -> Compression {
        match c {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::Lz4 => Compression::Lz4,
            CompressArg::None => Compression::None,
        }
    }
}

/// Options of `ptrack backup`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct BackupArgs {
    /// Print help (`-h` is the host, as in libpq tools).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    repo: RepoArgs,
    /// Data directory of the running cluster to back up.
    #[arg(short = 'D', long = "pgdata", env = "PGDATA")]
    pgdata: PathBuf,
    /// Backup mode; ptrack, delta and wal backups are incremental to the newest OK backup.
    #[arg(short = 'b', long = "mode", value_enum)]
    mode: ModeArg,
    /// Parallel readers.
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
    /// Compression of stored pages and files.
    #[arg(long = "compress", value_enum, default_value_t = CompressArg::Lz4)]
    compress: CompressArg,
    /// Record damaged pages in the manifest and finish the backup instead of failing.
    #[arg(long)]
    allow_corruption: bool,
    /// After the backup, delete what the retention policy expires (as `ptrack delete
    /// --expired`; the retention options override the stored policy for this run).
    #[arg(long = "delete-expired")]
    delete_expired: bool,
    #[command(flatten)]
    retention: crate::lifecycle::RetentionArgs,

    /// Show progress on standard error (default when it is a terminal).
    #[arg(long)]
    progress: bool,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Options of `ptrack restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// New data directory (absent or empty).
    #[arg(short = 'D', long = "pgdata")]
    target: PathBuf,
    /// Backup to restore (default: the newest OK backup).
    #[arg(short = 'i', long = "backup-id")]
    id: Option<String>,
    /// Cluster (system identifier) when the repository holds several.
    #[arg(long)]
    instance: Option<u64>,
    /// Relocate a tablespace: OLD=NEW (repeatable).
    #[arg(short = 'T', long = "tablespace-mapping", value_parser = parse_mapping)]
    mapping: Vec<(String, String)>,
    /// Stop recovery at: immediate, latest (the end of the archive), lsn:X/X,
    /// time:'YYYY-MM-DD HH:MM:SS[+ZZ]', xid:XID, name:NAME. Without it the server replays the
    /// backup's WAL (and what the archive or --restore-command holds), then starts on a new
    /// timeline.
    #[arg(long = "recovery-target", value_parser = parse_target)]
    target_spec: Option<RecoveryTarget>,
    /// The timeline to recover along: current (the backup's), latest (the newest the archive
    /// holds, PostgreSQL's default) or a timeline number.
    #[arg(long = "recovery-target-timeline", value_name = "TLI", value_parser = parse_timeline)]
    target_timeline: Option<String>,
    /// restore_command for a WAL archive (recovery beyond the backup's own WAL).
    #[arg(long)]
    restore_command: Option<String>,
    /// Segments the written restore_command (ptrack archive-get) fetches ahead of recovery,
    /// into --archive-spool (0: none).
    #[arg(long = "prefetch", value_name = "N", default_value_t = 0, requires = "archive_spool",
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    prefetch: u32,
    /// Spool directory of the prefetching archive-get (outside the data directory).
    #[arg(long = "archive-spool", value_name = "DIR")]
    archive_spool: Option<PathBuf>,
    /// Parallel writers.
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
    /// How the restored files are made durable before pg_control is written: syncfs (one
    /// syncfs per filesystem; also waits for other dirty data there) or fsync (each file and
    /// directory).
    #[arg(long = "sync-method", value_enum, default_value_t = SyncArg::Syncfs)]
    sync: SyncArg,
    /// How relation files and WAL are written: direct (O_DIRECT, around the page cache, where
    /// the filesystem supports it; the host's cache is not evicted) or buffered (through it).
    #[arg(long = "write-method", value_enum, default_value_t = WriteArg::Direct)]
    write: WriteArg,
    /// Show progress on standard error (default when it is a terminal).
    #[arg(long)]
    progress: bool,
}

/// `--sync-method`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncArg {
    /// One syncfs per filesystem written.
    Syncfs,
    /// fsync of every file and directory.
    Fsync,
}

/// `--write-method`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WriteArg {
    /// O_DIRECT where supported.
    Direct,
    /// Through the page cache.
    Buffered,
}

/// Options of `ptrack validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Backup to validate with its parents (default: every OK or CORRUPT backup).
    #[arg(short = 'i', long = "backup-id")]
    id: Option<String>,
    /// Cluster (system identifier) when the repository holds several.
    #[arg(long)]
    instance: Option<u64>,
    /// Parallel readers.
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Validate the WAL archive instead: every archived file read back and checked, and for
    /// every OK backup how far recovery from it reaches without a gap. Exit status 1 on any
    /// damage or gap.
    #[arg(long, conflicts_with = "id")]
    archive: bool,
}

/// Options of `ptrack show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Cluster (system identifier); default: every cluster in the repository.
    #[arg(long)]
    instance: Option<u64>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Show the WAL archive instead: per timeline, the archived segments and the gaps.
    #[arg(long)]
    archive: bool,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    let (a, b) = s.split_once('=').ok_or("expected OLD=NEW")?;
    if a.is_empty() || b.is_empty() {
        return Err("expected OLD=NEW with both directories given".into());
    }
    Ok((a.to_string(), b.to_string()))
}

fn parse_timeline(s: &str) -> Result<String, String> {
    ptrack_backup::target::target_timeline_setting(s).map(|_| s.to_string())
}

fn parse_target(s: &str) -> Result<RecoveryTarget, String> {
    RecoveryTarget::from_str(s)
}

/// Under root, becomes the owner of `path` before anything is opened (ptrack_backup::identity).
fn as_owner(path: &std::path::Path, what: &'static str) -> Result<()> {
    if let Some(s) = act_as_owner_of(path, what)? {
        eprintln!(
            "ptrack: running as user {} (uid {}), the owner of {what} \"{}\"",
            s.user,
            s.uid,
            path.display()
        );
    }
    Ok(())
}

/// Acts as the owner of a directory repository (nothing to do for object storage).
pub fn repo_owner(loc: &Location) -> Result<()> {
    match loc {
        Location::Dir(d) => as_owner(d, "the repository"),
        Location::S3(_) => Ok(()),
    }
}

/// `p` or its nearest existing ancestor.
fn nearest_existing(p: &std::path::Path) -> std::path::PathBuf {
    let mut p = p.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => p = d.to_path_buf(),
            _ => return std::path::PathBuf::from("."),
        }
    }
    p
}

/// The directory a new repository is created in.
fn parent_of(p: &std::path::Path) -> std::path::PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(on: bool) -> Bar {
        if !(on || std::io::stderr().is_terminal()) {
            return Bar(None);
        }
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Bar(Some(b))
    }
    fn done(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn step(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
        }
    }
}

/// `ptrack init`.
pub fn init(a: &InitArgs) -> Result<u8> {
    if let Location::Dir(d) = &a.repo {
        as_owner(&parent_of(d), "the directory the repository is created in")?;
    }
    let key = a.key.source();
    match (a.encrypt, &key) {
        (false, None) => {
            Repository::init(&a.repo)?;
            println!("ptrack: repository initialised at \"{}\"", a.repo);
        }
        (false, Some(k)) => anyhow::bail!(
            "a key was given ({}) but not --encrypt; add --encrypt for an encrypted repository, or give no key",
            k.describe()
        ),
        (true, None) => anyhow::bail!(
            "--encrypt needs a key: --encryption-key-file FILE or the environment variable {PASSPHRASE_ENV}"
        ),
        (true, Some(k)) => {
            let r =
                Repository::init_encrypted(&a.repo, k, a.kdf_cost.unwrap_or(KdfParams::DEFAULT))?;
            let keys = r.keys()?;
            println!(
                "ptrack: encrypted repository initialised at \"{}\" (data key {}, key {})",
                a.repo,
                keys.data_key_id,
                keys.given.unwrap_or_default()
            );
        }
    }
    Ok(EXIT_OK)
}

/// `ptrack backup`.
pub fn backup(a: &BackupArgs) -> Result<u8> {
    as_owner(&a.pgdata, "the data directory")?;
    let repo = a.repo.open()?;
    let opts = BackupOptions {
        pgdata: a.pgdata.clone(),
        mode: match a.mode {
            ModeArg::Full => Mode::Full,
            ModeArg::Ptrack => Mode::Ptrack,
            ModeArg::Delta => Mode::Delta,
            ModeArg::Wal => Mode::Wal,
        },

        jobs: a.jobs as usize,
        compression: a.compress.into(),
        allow_corruption: a.allow_corruption,
        conn: ConnOptions {
            host: a.conn.host.clone(),
            port: a.conn.port,
            user: a.conn.user.clone(),
            dbname: a.conn.dbname.clone(),
        },
    };
    let bar = Bar::new(a.progress);
    let started = std::time::Instant::now();
    let r = run_backup(&repo, &opts, &bar);
    bar.done();
    let r = r?;
    for w in &r.warnings {
        eprintln!("ptrack: warning: {w}");
    }
    if !r.damaged.is_empty() {
        eprintln!(
            "ptrack: warning: {} damaged page(s) recorded (--allow-corruption):\n{}",
            r.damaged.len(),
            damage_report(&r.damaged)
        );
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "backup": r.info, "files": r.files, "pages": r.pages, "damaged": r.damaged,
                "skipped": r.skipped, "warnings": r.warnings, "phases": r.phases,
                "elapsed_seconds": started.elapsed().as_secs_f64(),
            }))?
        );
    } else {
        println!(
            "ptrack: backup {} ({}) completed: start {} stop {}, {} of data, {} stored, {} pages, {:.1} s",
            r.info.id,
            r.info.mode,
            r.info.start_lsn,
            r.info.stop_lsn.unwrap_or_default(),
            human_bytes(r.info.data_bytes),
            human_bytes(r.info.stored_bytes),
            r.pages,
            started.elapsed().as_secs_f64()
        );
    }
    if a.delete_expired {
        let opts = ptrack_backup::expire::ExpireOptions {
            over: a.retention.policy(),
            ..Default::default()
        };
        crate::lifecycle::expired(&repo, Some(r.system_identifier), &opts, false)?;
    }
    Ok(EXIT_OK)
}

/// `ptrack restore`.
pub fn restore(a: &RestoreArgs) -> Result<u8> {
    match &a.repo.repo {
        Location::Dir(d) => as_owner(d, "the repository")?,
        // Files are created as the owner of the directory they are restored into.
        Location::S3(_) => as_owner(&nearest_existing(&a.target), "the directory restored into")?,
    }
    let repo = a.repo.open()?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        backup_id: a.id.clone(),
        instance: a.instance,
        tablespace_map: a.mapping.clone(),
        recovery_target: a.target_spec.clone(),
        restore_command: a.restore_command.clone(),
        archive_get: Some(archive_get_command(
            &a.repo,
            a.archive_spool.as_deref().filter(|_| a.prefetch > 0),
            a.prefetch,
        )?),
        target_timeline: a.target_timeline.clone(),
        jobs: a.jobs as usize,
        sync: match a.sync {
            SyncArg::Syncfs => SyncMethod::Syncfs,
            SyncArg::Fsync => SyncMethod::Fsync,
        },
        write: match a.write {
            WriteArg::Direct => WriteMethod::Direct,
            WriteArg::Buffered => WriteMethod::Buffered,
        },
    };
    let bar = Bar::new(a.progress);
    let started = std::time::Instant::now();
    let r = run_restore(&repo, &opts, &bar);
    bar.done();
    let r = r?;
    for w in &r.warnings {
        eprintln!("ptrack: note: {w}");
    }
    println!(
        "ptrack: restored backup {} (chain {}) into \"{}\": {} files, {}, {:.1} s",
        r.backup.id,
        r.chain.join(" <- "),
        a.target.display(),
        r.files,
        human_bytes(r.bytes),
        started.elapsed().as_secs_f64()
    );
    println!(
        "ptrack: started there, the server recovers from the backup's WAL{} and then ends recovery on a new timeline",
        match &r.restore_command {
            Some(c) => format!(" and the archive ({c})"),
            None => String::new(),
        }
    );
    Ok(EXIT_OK)
}

/// The `restore_command` that reads this repository's archive: this program's `archive-get`,
/// with the repository and the key file when one was given (a passphrase in the environment
/// does not reach the server's restore_command: give --restore-command then), prefetching
/// `prefetch` segments into `spool` when given.
fn archive_get_command(
    repo: &RepoArgs,
    spool: Option<&std::path::Path>,
    prefetch: u32,
) -> Result<String> {
    let exe = std::env::current_exe()?;
    let quote = |s: &str| {
        let plain = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:-+=@,".contains(&b));
        match plain {
            true => s.to_string(),
            false => format!("'{}'", s.replace('\'', "'\\''")),
        }
    };
    let mut cmd = format!(
        "{} archive-get -B {}",
        quote(&exe.display().to_string()),
        quote(&repo_address(repo)?)
    );
    if let Some(k) = &repo.key.key_file {
        let k = std::path::absolute(k)?;
        cmd.push_str(&format!(
            " --encryption-key-file {}",
            quote(&k.display().to_string())
        ));
    }
    if let Some(sp) = spool {
        let sp = std::path::absolute(sp)?;
        cmd.push_str(&format!(
            " --spool {} --prefetch {prefetch}",
            quote(&sp.display().to_string())
        ));
    }
    cmd.push_str(" %f %p");
    Ok(cmd)
}

/// The repository's address as an absolute one: the server runs archive and restore commands
/// in the data directory, where a relative path would name nothing.
pub fn repo_address(repo: &RepoArgs) -> Result<String> {
    Ok(match &repo.repo {
        Location::Dir(d) => std::path::absolute(d)?.display().to_string(),
        other => other.to_string(),
    })
}

/// `ptrack validate`.
pub fn validate(a: &ValidateArgs) -> Result<u8> {
    repo_owner(&a.repo.repo)?;
    let repo = a.repo.open()?;
    if a.archive {
        return crate::archive::validate(&repo, a.instance, a.json);
    }
    let checks = run_validate(&repo, a.instance, a.id.as_deref(), a.jobs as usize)?;
    let bad = checks.iter().any(|c| !c.problems.is_empty());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "backup {}: {} ({} pages, {} files, {} WAL segments checked{})",
                c.id,
                c.status,
                c.pages,
                c.files,
                c.wal_segments,
                if c.recorded_damage > 0 {
                    format!(
                        ", {} damaged pages recorded at backup time",
                        c.recorded_damage
                    )
                } else {
                    String::new()
                }
            );
            for p in &c.problems {
                println!("  {p}");
            }
        }
        if checks.is_empty() {
            println!("ptrack: no backups to validate");
        }
    }
    Ok(if bad { EXIT_PROBLEMS } else { EXIT_OK })
}

/// `ptrack show`.
pub fn show(a: &ShowArgs) -> Result<u8> {
    repo_owner(&a.repo.repo)?;
    let repo = a.repo.open()?;
    let ids = match a.instance {
        Some(i) => vec![i],
        None => repo.instances()?,
    };
    if a.archive {
        return crate::archive::show(&repo, &ids, a.json);
    }
    let mut all = Vec::new();
    let now = ptrack_backup::expire::now();
    for sysid in ids {
        let inst = repo.only_instance(Some(sysid))?;
        let cat = inst.catalog()?;
        let (policy, plan) = ptrack_backup::expire::preview(&inst, &cat, now)?;
        all.push((inst.info.clone(), cat, policy, plan));
    }
    if a.json {
        let v: Vec<_> = all
            .iter()
            .map(|(i, c, policy, plan)| {
                serde_json::json!({"instance": i, "backups": c.backups, "retention": policy, "retention_plan": plan})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    for (info, cat, policy, plan) in &all {
        println!(
            "Instance {} (PostgreSQL {}, {}); retention: {policy}",
            info.system_identifier, info.pg_major, info.pgdata
        );
        println!(
            "  {:<8} {:<7} {:<8} {:<14} {:<14} {:<20} {:>8} {:>10} {:>10}  STATUS",
            "ID",
            "MODE",
            "PARENT",
            "START LSN",
            "STOP LSN",
            "START TIME",
            "SECONDS",
            "DATA",
            "STORED"
        );
        for b in cat.backups.iter().rev() {
            println!(
                "  {:<8} {:<7} {:<8} {:<14} {:<14} {:<20} {:>8} {:>10} {:>10}  {}",
                b.id,
                b.mode.to_string(),
                b.parent.as_deref().unwrap_or("-"),
                if b.start_lsn.is_valid() {
                    b.start_lsn.to_string()
                } else {
                    "-".into()
                },
                b.stop_lsn.map_or("-".into(), |l| l.to_string()),
                format_time(b.start_time),
                b.end_time
                    .map_or("-".into(), |e| (e - b.start_time).to_string()),
                human_bytes(b.data_bytes),
                human_bytes(b.stored_bytes),
                format_args!(
                    "{}{}",
                    b.status,
                    crate::lifecycle::show_note(plan, &b.id, b.keep_until, now)
                )
            );
        }
    }
    Ok(EXIT_OK)
}

/// UTC `YYYY-MM-DD HH:MM:SS` for Unix seconds (civil-from-days, H. Hinnant's algorithm).
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_targets() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(parse_target("immediate"), Ok(RecoveryTarget::Immediate));
        assert!(parse_target("lsn:zz").is_err());
        assert!(parse_target("time:garbage").is_err());
        assert_eq!(parse_mapping("/a=/b"), Ok(("/a".into(), "/b".into())));
        assert!(parse_mapping("/a").is_err());
    }
}
