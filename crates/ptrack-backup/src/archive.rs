//! Continuous WAL archiving (issue 13 §1): `ptrack archive-push` for `archive_command` and
//! `ptrack archive-get` for `restore_command`. A segment is checked before it enters the archive
//! (`ptrack_wal::check`: length, system identifier, every page's address and timeline), a
//! history file is parsed; then it is stored compressed and durably
//! (`ptrack_format::archived`) before the command exits 0. A file already archived with the
//! same content is success (the archiver retries after a crash); other content is refused and
//! never overwrites. `archive-get` writes the file through the durable path (a temporary name,
//! fsync, rename), so recovery never sees a partial file; a file not in the archive exits 1.
//!
//! Both commands run in the cluster's data directory (PostgreSQL's archiver and startup
//! process do), whose `global/pg_control` names the instance: the system identifier, the
//! segment size and, for a cluster's first push, the facts its instance is created with.
//! Mirrors `src/backend/postmaster/pgarch.c` (what `%p` and `%f` are, retries) and
//! `src/backend/access/transam/xlogarchive.c: RestoreArchivedFile` (what a missing file means).

use std::collections::BTreeSet;
use std::path::Path;

use ptrack_format::archived::{self, PushError, Pushed, WalFile};
use ptrack_format::catalog::BackupInfo;
use ptrack_format::repo::{Instance, InstanceInfo, Repository};
use ptrack_format::stored::Compression;
use ptrack_page::control::{ControlFile, read_control_file};
use ptrack_wal::SegmentName;
use ptrack_wal::archive::parse_history;
use ptrack_wal::check::{SegmentFault, check_records, check_segment};
use ptrack_wal::mapped::{Mapping, SegmentData};

use ptrack_types::{TimeLineId, WalSegSize};

use crate::target::RecoveryTarget;
use crate::timelines::TimelinePath;
use crate::{Error, Refusal, Result};

/// What `archive-push` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The file's name in the archive.
    pub name: String,
    /// Stored now, or there already with the same content.
    pub outcome: Pushed,
    /// Its size.
    pub size: u64,
}

/// `ptrack archive-push FILE`: archives the WAL file at `path` (as `%p` gives it) of the
/// cluster in `pgdata`.
pub fn push(
    repo: &Repository,
    pgdata: &Path,
    path: &Path,
    compression: Compression,
) -> Result<PushReport> {
    let control = control(pgdata)?;
    let inst = instance_for(repo, &control, pgdata)?;
    push_to(&inst, &control, path, compression)
}

/// [`push`] into the cluster's instance `inst`, whose `pg_control` is `control`.
pub(crate) fn push_to(
    inst: &Instance,
    control: &ControlFile,
    path: &Path,
    compression: Compression,
) -> Result<PushReport> {
    let file = wal_file_of(path)?;
    let bytes = read_limited(path, control.xlog_seg_size.bytes())?;
    check_file(&file, &bytes, control, path)?;
    let key = archived::wal_key(inst.dir(), &file)?;
    let outcome = match archived::push(inst.store(), &key, &bytes, compression) {
        Ok(o) => o,
        Err(PushError::Conflict(c)) => return Err(Refusal::ArchivedOtherwise(c).into()),
        Err(PushError::Repo(e)) => return Err(e.into()),
    };
    Ok(PushReport {
        name: file.file_name(),
        outcome,
        size: bytes.len() as u64,
    })
}

/// `ptrack archive-get NAME DEST`: writes archived file `name` (`%f`) to `dest` (`%p`) for
/// the cluster in `pgdata`. `Ok(false)` when the archive does not hold it.
pub fn get(repo: &Repository, pgdata: &Path, name: &str, dest: &Path) -> Result<bool> {
    let control = control(pgdata)?;
    let file = WalFile::parse(name).ok_or_else(|| Refusal::NotAWalName(name.to_string()))?;
    let Some(inst) = repo.instance(control.system_identifier)? else {
        return Ok(false);
    };
    let Some(bytes) = fetch_checked(&inst, &control, &file)? else {
        return Ok(false);
    };
    ptrack_durable::write_file(dest, &bytes).map_err(|e| Error::io(dest, "write", e))?;
    Ok(true)
}

/// Archived `file` of `inst`, checked as archive-push checked it (a plain repository's object
/// may have been copied over another's name): what recovery is handed must be the file asked
/// for. `None` when the archive does not hold it.
pub(crate) fn fetch_checked(
    inst: &Instance,
    control: &ControlFile,
    file: &WalFile,
) -> Result<Option<Vec<u8>>> {
    let key = archived::wal_key(inst.dir(), file)?;
    let Some(bytes) = archived::fetch(inst.store(), &key)? else {
        return Ok(None);
    };
    check_file(file, &bytes, control, Path::new(&key.to_string()))?;
    Ok(Some(bytes))
}

pub(crate) fn control(pgdata: &Path) -> Result<ControlFile> {
    read_control_file(pgdata).map_err(|e| {
        Refusal::NotADataDir {
            pgdata: pgdata.display().to_string(),
            cause: format!(
                "{e} (archive-push and archive-get run in the data directory, or give --pgdata)"
            ),
        }
        .into()
    })
}

/// The archive name of the file at `path` (its last component, as `%p` ends in `%f`).
fn wal_file_of(path: &Path) -> Result<WalFile> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    WalFile::parse(name).ok_or_else(|| Refusal::NotAWalName(path.display().to_string()).into())
}

/// Reads at most `limit` bytes of `path`: a longer file is refused (no segment is longer). A
/// file of exactly `limit` bytes (a whole segment) is mapped, not copied (see
/// `ptrack_wal::mapped`: segments are never truncated in place).
fn read_limited(path: &Path, limit: u64) -> Result<SegmentData> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO given as the file must not hang the archiver; only a regular file is
    // read.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))?;
    let md = f.metadata().map_err(|e| Error::io(path, "stat", e))?;
    if !md.is_file() {
        return Err(Refusal::BadWalFile {
            path: path.display().to_string(),
            why: "not a regular file".into(),
        }
        .into());
    }
    if md.len() == limit
        && let Some(m) = Mapping::map(&f, limit as usize)
    {
        return Ok(SegmentData::Mapped(m));
    }
    // Sized once: growing by doubling copied and faulted in twice the segment.
    let mut out = Vec::with_capacity(md.len().min(limit) as usize + 1);
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok(SegmentData::Owned(out))
}

/// A segment must be the one its name says, of this cluster; a timeline history file must
/// parse; a backup history file must start as `pg_backup_stop` writes it.
pub(crate) fn check_file(file: &WalFile, bytes: &[u8], c: &ControlFile, path: &Path) -> Result<()> {
    check_content(file, bytes, c.xlog_seg_size, c.system_identifier).map_err(|why| {
        Refusal::BadWalFile {
            path: path.display().to_string(),
            why,
        }
        .into()
    })
}

/// [`check_file`]'s rules for a cluster of segment size `seg` and system identifier `sysid`;
/// the reason when they fail.
fn check_content(
    file: &WalFile,
    bytes: &[u8],
    seg: WalSegSize,
    sysid: u64,
) -> std::result::Result<(), String> {
    match file {
        WalFile::Segment { name, partial } => {
            let sn = SegmentName::parse(name, seg).ok_or_else(|| {
                format!("\"{name}\" is not a segment name for this cluster's segment size")
            })?;
            check_segment(bytes, sn, seg, Some(sysid), *partial)
                .map(|_| ())
                .map_err(|e: SegmentFault| e.to_string())
        }
        WalFile::BackupHistory { segment, offset } => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let want = format!("(file {segment})");
            let start = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("START WAL LOCATION: "))
                .and_then(|r| r.split_once(' '));
            let ok = start.is_some_and(|(lsn, rest)| {
                let at = lsn.parse::<ptrack_types::Lsn>().ok();
                let off = u64::from_str_radix(offset, 16).ok();
                rest.trim() == want && at.zip(off).is_some_and(|(a, o)| seg.offset(a) == o)
            });
            match ok {
                true => Ok(()),
                false => Err(format!(
                    "not the backup history file its name says (its first line must be \"START WAL LOCATION: X/X {want}\" at offset {offset})"
                )),
            }
        }
        WalFile::History(tli) => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let entries = parse_history(text).unwrap_or_default();
            // Parents in increasing order (parse_history), each before this timeline; their
            // switch points need not increase (a branch from an earlier point of a parent's
            // parent: PostgreSQL copies the parent's lines and appends its own).
            let sane = tli.0 >= 2 && !entries.is_empty() && entries.iter().all(|e| e.tli < *tli);
            match sane {
                true => Ok(()),
                false => Err(format!(
                    "not a timeline history file of timeline {tli} (a line per earlier timeline, in increasing order)"
                )),
            }
        }
    }
}

/// The cluster's instance, created from its `pg_control` when this is its first push (an
/// archive is set up before the first backup).
pub(crate) fn instance_for(repo: &Repository, c: &ControlFile, pgdata: &Path) -> Result<Instance> {
    if let Some(i) = repo.instance(c.system_identifier)? {
        return Ok(i);
    }
    Ok(repo.add_instance(InstanceInfo {
        system_identifier: c.system_identifier,
        pg_major: c.major,
        blcksz: c.blcksz,
        relseg_blocks: c.relseg_size,
        wal_seg_size: c.xlog_seg_size,
        pgdata: pgdata.display().to_string(),
    })?)
}

/// The archived segments of timeline `tli`, by segment number (a path of that timeline alone).
pub fn timeline_segments(
    list: &archived::Listing,
    tli: TimeLineId,
    seg: WalSegSize,
) -> BTreeSet<u64> {
    path_segments(list, &TimelinePath::new(tli, &[]), seg)
}

/// Contiguous runs of segment numbers (first, last).
pub fn runs(segnos: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in segnos {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// The segment numbers of `list` archived on `path` (each on the timeline the path reads it
/// on).
fn path_segments(list: &archived::Listing, path: &TimelinePath, seg: WalSegSize) -> BTreeSet<u64> {
    list.segments
        .iter()
        .filter_map(|n| SegmentName::parse(n, seg))
        .filter(|s| path.segment_timeline(s.segno, seg) == s.tli)
        .map(|s| s.segno)
        .collect()
}

/// How a restore reaches WAL beyond the backup's own: the `restore_command` to write and
/// notes for the user. `given` (`--restore-command`) is used as is. Otherwise, when the
/// archive `list` of the repository holds WAL on the way recovery goes (`path`, the target
/// timeline's; the backup's own timeline when `None`), `offered` (`ptrack archive-get` of this
/// repository, built by the caller) is used, and an LSN target the archive cannot reach is
/// refused naming the first segment missing after the backup.
pub fn recovery_command(
    inst: &Instance,
    backup: &BackupInfo,
    target: Option<&RecoveryTarget>,
    (given, offered): (Option<&str>, Option<&str>),
    list: &archived::Listing,
    path: Option<&TimelinePath>,
) -> Result<(Option<String>, Vec<String>)> {
    if let Some(g) = given {
        return Ok((Some(g.to_string()), Vec::new()));
    }
    let (Some(offered), Some(tli), Some(stop)) = (offered, backup.timeline, backup.stop_lsn) else {
        return Ok((None, Vec::new()));
    };
    let seg = inst.info.wal_seg_size;
    let own = TimelinePath::new(tli, &[]);
    let path = path.unwrap_or(&own);
    let have = path_segments(list, path, seg);
    if have.is_empty() {
        return Ok((None, Vec::new()));
    }
    let after = seg.segno(stop) + 1;
    let name = |n: u64| path.segment_name(n, seg);
    let first_gap = (after..).find(|n| !have.contains(n));
    let last = have.last().copied().unwrap_or(0);
    let mut notes = Vec::new();
    if let Some(RecoveryTarget::Lsn(l)) = target
        && *l > stop
    {
        let need = seg.segno(*l);
        if let Some(g) = first_gap.filter(|&g| g <= need) {
            return Err(Refusal::ArchiveCannotReach {
                target: *l,
                missing: name(g),
                id: backup.id.clone(),
            }
            .into());
        }
    } else if let Some(g) = first_gap.filter(|&g| g <= last) {
        notes.push(format!(
            "the archive misses {} (it has later segments): recovery from backup {} cannot go past it",
            name(g),
            backup.id
        ));
    }
    Ok((Some(offered.to_string()), notes))
}

/// One timeline of an archive, for `ptrack show --archive`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TimelineSummary {
    /// The timeline.
    pub timeline: TimeLineId,
    /// Segments archived.
    pub segments: usize,
    /// Contiguous runs, first and last segment name.
    pub runs: Vec<(String, String)>,
    /// Whether its history file is archived (timeline 1 has none).
    pub history: bool,
    /// Its `.partial` segments.
    pub partial: Vec<String>,
}

/// Per timeline: what the instance's archive holds, and where it has gaps (between runs).
pub fn summary(inst: &Instance) -> Result<Vec<TimelineSummary>> {
    let seg = inst.info.wal_seg_size;
    let list = archived::list(inst.store(), inst.dir())?;
    let mut tlis: BTreeSet<TimeLineId> = list.histories.clone();
    let names = list.segments.iter().chain(list.partial.iter());
    tlis.extend(
        names
            .filter_map(|n| SegmentName::parse(n, seg))
            .map(|s| s.tli),
    );
    Ok(tlis
        .into_iter()
        .map(|tli| {
            let have = timeline_segments(&list, tli, seg);
            let name = |n: u64| SegmentName { tli, segno: n }.file_name(seg);
            TimelineSummary {
                timeline: tli,
                segments: have.len(),
                runs: runs(&have)
                    .into_iter()
                    .map(|(a, b)| (name(a), name(b)))
                    .collect(),
                history: list.histories.contains(&tli),
                partial: list
                    .partial
                    .iter()
                    .filter(|n| SegmentName::parse(n, seg).is_some_and(|s| s.tli == tli))
                    .cloned()
                    .collect(),
            }
        })
        .collect())
}

/// What `ptrack validate --archive` found.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveCheck {
    /// Archived files read and checked.
    pub files: usize,
    /// Per OK backup, the span recovery from it can reach through the archive.
    pub windows: Vec<Window>,
    /// Everything wrong, each naming the object or segment.
    pub problems: Vec<ArchiveProblem>,
}

/// From a backup's consistent point, as far as the archive holds WAL without a gap.
#[derive(Debug, serde::Serialize)]
pub struct Window {
    /// The backup.
    pub backup: String,
    /// Its timeline.
    pub timeline: TimeLineId,
    /// Where it is consistent (its stop LSN).
    pub from: ptrack_types::Lsn,
    /// The end of the last archived segment reached without a gap.
    pub to: ptrack_types::Lsn,
}

/// One thing wrong with an archive. In JSON, its message.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveProblem {
    /// An archived object that cannot be read back or fails its checks.
    #[error("{0}")]
    Damaged(Box<ptrack_format::Error>),
    /// An archived file that is not what its name says.
    #[error("archived \"{key}\": {why}")]
    Content {
        /// The object.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// A segment missing between a backup and later archived WAL of its timeline.
    #[error(
        "the archive misses {missing} (timeline {timeline}), needed to recover from backup {backup} past it"
    )]
    Gap {
        /// The first missing segment.
        missing: String,
        /// Its timeline.
        timeline: TimeLineId,
        /// The backup whose recovery stops there.
        backup: String,
    },
}

impl serde::Serialize for ArchiveProblem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Every file of `list` (segments, `.partial` segments, timeline and backup history files).
fn every_file(list: &archived::Listing) -> Vec<WalFile> {
    let seg = |partial| {
        move |n: &String| WalFile::Segment {
            name: n.clone(),
            partial,
        }
    };
    let mut v: Vec<WalFile> = list.segments.iter().map(seg(false)).collect();
    v.extend(list.partial.iter().map(seg(true)));
    v.extend(list.histories.iter().map(|t| WalFile::History(*t)));
    v.extend(list.backup_histories.iter().cloned());
    v
}

/// Whether `b` is the whole segment right after whole segment `a` on its timeline.
fn follows(a: &WalFile, b: &WalFile, seg: WalSegSize) -> bool {
    let name = |f: &WalFile| match f {
        WalFile::Segment {
            name,
            partial: false,
        } => SegmentName::parse(name, seg),
        _ => None,
    };
    matches!((name(a), name(b)), (Some(x), Some(y)) if x.tli == y.tli && x.segno + 1 == y.segno)
}

/// [`check_object`], a failure recorded in `out` under `key`.
fn check_into(
    out: &mut ArchiveCheck,
    file: &WalFile,
    key: String,
    bytes: &[u8],
    next: Option<&[u8]>,
    info: &InstanceInfo,
) {
    if let Err(why) = check_object(file, bytes, next, info) {
        out.problems.push(ArchiveProblem::Content { key, why });
    }
}

/// The checks of [`check_file`] on an archived file of the instance `info` describes, and for
/// a segment its records (header, back link, CRC-32C: `ptrack_wal::check::check_records`; the
/// last one finished with `next`, the following segment, when archived).
fn check_object(
    file: &WalFile,
    bytes: &[u8],
    next: Option<&[u8]>,
    info: &InstanceInfo,
) -> std::result::Result<(), String> {
    let seg = info.wal_seg_size;
    check_content(file, bytes, seg, info.system_identifier)?;
    let WalFile::Segment { name, partial } = file else {
        return Ok(());
    };
    let Some(sn) = SegmentName::parse(name, seg) else {
        return Ok(());
    };
    let sysid = Some(info.system_identifier);
    check_records(bytes, next, sn, seg, info.blcksz, sysid, *partial)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `ptrack validate --archive`: reads every archived file back (digest, a segment's page
/// checks against its name and the cluster, and its records), then, for every OK backup, how far its timeline's
/// archive goes without a gap after it.
pub fn check_archive(inst: &Instance, backups: &[BackupInfo]) -> Result<ArchiveCheck> {
    let seg = inst.info.wal_seg_size;
    let list = archived::list(inst.store(), inst.dir())?;
    let mut out = ArchiveCheck {
        files: 0,
        windows: Vec::new(),
        problems: Vec::new(),
    };
    // A whole segment's last record may continue into the next one: its record check waits for
    // the next file (`held`), which finishes it when it is the following segment.
    let mut held: Option<(WalFile, String, Vec<u8>)> = None;
    for file in every_file(&list) {
        let key = archived::wal_key(inst.dir(), &file)?;
        out.files += 1;
        let bytes = match archived::fetch(inst.store(), &key) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) if e.is_damage() => {
                out.problems.push(ArchiveProblem::Damaged(Box::new(e)));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((f, k, b)) = held.take() {
            let next = follows(&f, &file, seg).then_some(bytes.as_slice());
            check_into(&mut out, &f, k, &b, next, &inst.info);
        }
        match file {
            WalFile::Segment { partial: false, .. } => {
                held = Some((file, key.to_string(), bytes));
            }
            _ => check_into(&mut out, &file, key.to_string(), &bytes, None, &inst.info),
        }
    }
    if let Some((f, k, b)) = held.take() {
        check_into(&mut out, &f, k, &b, None, &inst.info);
    }
    for b in backups {
        let (Some(tli), Some(stop)) = (b.timeline, b.stop_lsn) else {
            continue;
        };
        let have = timeline_segments(&list, tli, seg);
        let Some(&last) = have.last() else { continue };
        let after = seg.segno(stop) + 1;
        let reach = (after..=last).find(|n| !have.contains(n));
        if let Some(g) = reach {
            out.problems.push(ArchiveProblem::Gap {
                missing: SegmentName { tli, segno: g }.file_name(seg),
                timeline: tli,
                backup: b.id.clone(),
            });
        }
        let end = reach.unwrap_or(last + 1);
        out.windows.push(Window {
            backup: b.id.clone(),
            timeline: tli,
            from: stop,
            to: seg.start(end).max(stop),
        });
    }
    Ok(out)
}
