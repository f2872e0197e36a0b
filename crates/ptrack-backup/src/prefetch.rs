//! `archive-get --prefetch N` (issue 13 §1): recovery is handed a file the prefetcher fetched
//! into the spool's `in/<repository>-<system id>/`, checked again ([`take_prefetched`]), or
//! else `archive-get` fetches it itself; then, unless one runs (`get.lock`), it starts a
//! prefetcher ([`run_prefetcher`]) for what recovery will ask for next:
//!
//! - after a segment, the N segments that follow **on the way recovery goes**: on the target
//!   timeline's path, each segment on the newest timeline begun at or before it (so across a
//!   timeline switch, the child's segments from the switch segment on). The target is the
//!   cluster's `recovery_target_timeline` (read from `postgresql.conf` and
//!   `postgresql.auto.conf`, where `ptrack restore` writes it); for `latest` (the default)
//!   the newest timeline whose history file the archive holds, probed upwards from the
//!   segment's own as recovery probes; a target whose path does not pass through the segment
//!   falls back to the segment's own timeline;
//! - after a timeline history file, the history files of the next timelines, up to the first
//!   the archive does not hold (recovery's probe for the newest timeline asks for them next).
//!
//! A wrong guess costs a fetch, never correctness: only a complete, checked file of exactly
//! the name asked for is ever renamed into `pg_wal`.
//!
//! Mirrors `src/backend/access/transam/xlogrecovery.c` (`XLogFileReadAnyTLI`: which timeline's
//! file is asked for; `rescanLatestTimeLine` and `timeline.c: findNewestTimeLine`: the history
//! files probed) and `xlogarchive.c` (`RestoreArchivedFile`).

use std::path::{Path, PathBuf};

use ptrack_format::archived::WalFile;
use ptrack_format::repo::{Instance, Repository};
use ptrack_types::{TimeLineId, WalSegSize};
use ptrack_wal::SegmentName;

use crate::archive::{check_file, control, fetch_checked};
use crate::spool::{Site, Spool, Worker, list_names, read_if_there, remove};
use crate::target::configured;
use crate::timelines::{TimelinePath, archived_history};
use crate::{Error, Result, parallel};

/// What `archive-get` with prefetch is told.
#[derive(Debug, Clone)]
pub struct Prefetch<'a> {
    /// Where.
    pub site: Site<'a>,
    /// Files fetched ahead.
    pub count: usize,
}

/// The prefetch directory of the instance `sysid` of the repository at `repository`.
fn in_dir(spool: &Spool, repository: &str, sysid: u64) -> PathBuf {
    let h = blake3::hash(repository.as_bytes()).to_hex();
    spool.prefetched().join(format!("{}-{sysid}", &h[..16]))
}

/// Whether recovery may be handed a prefetched copy of `file`.
fn prefetchable(file: &WalFile) -> bool {
    matches!(
        file,
        WalFile::Segment { partial: false, .. } | WalFile::History(_)
    )
}

/// Hands recovery the file `name` at `dest` from the prefetch directory: `Ok(false)` when it
/// is not there (or is not the file asked for: then it is removed and the caller fetches it).
pub fn take_prefetched(p: &Prefetch<'_>, name: &str, dest: &Path) -> Result<bool> {
    let Some(file) = WalFile::parse(name).filter(prefetchable) else {
        return Ok(false);
    };
    let control = control(p.site.pgdata)?;
    let src = in_dir(p.site.spool, p.site.repository, control.system_identifier).join(name);
    let Some(bytes) = read_if_there(&src)? else {
        return Ok(false);
    };
    if check_file(&file, &bytes, &control, &src).is_err() {
        remove(&src)?;
        return Ok(false);
    }
    #[allow(clippy::disallowed_methods)] // a rename of a complete, fsynced file
    let renamed = std::fs::rename(&src, dest);
    if renamed.is_err() {
        // Another filesystem: copy through the durable path.
        ptrack_durable::write_file(dest, &bytes).map_err(|e| Error::io(dest, "write", e))?;
        remove(&src)?;
    }
    Ok(true)
}

/// Whether `archive-get` of `name` starts a prefetcher after it.
pub fn prefetches_after(name: &str) -> bool {
    WalFile::parse(name).is_some_and(|f| prefetchable(&f))
}

/// The prefetcher after file `after` (see the module's doc): removes the fetched files
/// recovery is past, then fetches what it will ask for next. Returns the names it fetched;
/// none when another prefetcher runs.
pub fn run_prefetcher(p: &Prefetch<'_>, repo: &Repository, after: &str) -> Result<Vec<String>> {
    let Some(_lock) = p.site.spool.try_lock(Worker::Get)? else {
        return Ok(Vec::new());
    };
    let control = control(p.site.pgdata)?;
    let seg = control.xlog_seg_size;
    let Some(inst) = repo.instance(control.system_identifier)? else {
        return Ok(Vec::new());
    };
    let dir = in_dir(p.site.spool, p.site.repository, control.system_identifier);
    ptrack_durable::create_private_dir(&dir).map_err(|e| Error::io(&dir, "create", e))?;
    let fetch = |file: &WalFile| -> Result<bool> {
        let name = file.file_name();
        match fetch_checked(&inst, &control, file)? {
            Some(b) => p.site.spool.write(&dir.join(&name), &b).map(|()| true),
            None => Ok(false),
        }
    };
    match WalFile::parse(after) {
        Some(WalFile::Segment {
            name,
            partial: false,
        }) => {
            let Some(from) = SegmentName::parse(&name, seg) else {
                return Ok(Vec::new());
            };
            forget(&dir, |f| match f {
                WalFile::Segment { name, .. } => {
                    SegmentName::parse(name, seg).is_none_or(|s| s.segno <= from.segno)
                }
                _ => true,
            })?;
            let path = recovery_path(&inst, p.site.pgdata, from, seg)?;
            let want: Vec<WalFile> = (1..=p.count as u64)
                .map(|i| WalFile::Segment {
                    name: path.segment_name(from.segno + i, seg),
                    partial: false,
                })
                .filter(|f| !dir.join(f.file_name()).exists())
                .collect();
            let got = parallel::run(
                p.site.jobs,
                want.len(),
                |_| Ok(()),
                |_, i| fetch(&want[i]),
                |_, _| Ok(()),
            )?;
            Ok(want
                .iter()
                .zip(got)
                .filter(|(_, g)| *g)
                .map(|(f, _)| f.file_name())
                .collect())
        }
        Some(WalFile::History(tli)) => {
            forget(&dir, |f| matches!(f, WalFile::History(t) if *t <= tli))?;
            let mut got = Vec::new();
            for t in (1..=p.count as u32).map(|i| TimeLineId(tli.0.saturating_add(i))) {
                let file = WalFile::History(t);
                if !dir.join(file.file_name()).exists() && !fetch(&file)? {
                    break;
                }
                got.push(file.file_name());
            }
            Ok(got)
        }
        _ => Ok(Vec::new()),
    }
}

/// Removes from the prefetch directory `dir` the files `past` says recovery no longer asks
/// for, and anything that is not an archived file's name (a `.tmp` left by a killed
/// prefetcher).
fn forget(dir: &Path, past: impl Fn(&WalFile) -> bool) -> Result<()> {
    for n in list_names(dir)? {
        if WalFile::parse(&n).is_none_or(|f| past(&f)) {
            remove(&dir.join(n))?;
        }
    }
    Ok(())
}

/// The most timelines probed for the newest one.
const MAX_PROBES: u32 = 1000;

/// The path recovery of the cluster in `pgdata` follows after segment `from` (see the
/// module's doc). A history file that cannot be read only makes the guess poorer.
fn recovery_path(
    inst: &Instance,
    pgdata: &Path,
    from: SegmentName,
    seg: WalSegSize,
) -> Result<TimelinePath> {
    let own = TimelinePath::new(from.tli, &[]);
    let wanted = configured(pgdata, "recovery_target_timeline");
    let wanted = wanted.as_deref().map(str::trim);
    let path = match wanted.map(|w| (w, w.parse::<u32>())) {
        Some(("current", _)) => None,
        Some((_, Ok(t))) => archived_history(inst, TimeLineId(t)).ok().flatten(),
        _ => newest_path(inst, from.tli),
    };
    Ok(path.filter(|p| passes(p, from, seg)).unwrap_or(own))
}

/// The path of the newest timeline after `tli` whose history file the archive holds, probing
/// `tli + 1`, `tli + 2`, … up to the first it does not; `None` when not even `tli + 1`'s.
fn newest_path(inst: &Instance, tli: TimeLineId) -> Option<TimelinePath> {
    let mut newest = None;
    for t in (1..=MAX_PROBES).map(|i| TimeLineId(tli.0.saturating_add(i))) {
        match archived_history(inst, t).ok().flatten() {
            Some(p) => newest = Some(p),
            None => break,
        }
    }
    newest
}

/// Whether `path` reads segment `from` on its timeline, or a later one of that timeline
/// (`from` lies before the path leaves the timeline).
fn passes(path: &TimelinePath, from: SegmentName, seg: WalSegSize) -> bool {
    match path.end_of(from.tli) {
        Some(None) => true,
        Some(Some(switch)) => seg.segno(switch) >= from.segno,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_types::Lsn;
    use ptrack_wal::archive::HistoryEntry;

    #[test]
    fn a_path_passes_a_segment_before_it_leaves_its_timeline() {
        let seg = WalSegSize::DEFAULT;
        let h = [HistoryEntry {
            tli: TimeLineId(1),
            switchpoint: Lsn(0x5000100),
        }];
        let p = TimelinePath::new(TimeLineId(2), &h);
        let s = |tli, segno| SegmentName {
            tli: TimeLineId(tli),
            segno,
        };
        assert!(passes(&p, s(1, 4), seg));
        assert!(passes(&p, s(1, 5), seg), "the switch segment");
        assert!(!passes(&p, s(1, 6), seg), "timeline 1 after the switch");
        assert!(passes(&p, s(2, 9), seg));
        assert!(!passes(&p, s(3, 9), seg));
        // After segment 4 of timeline 1, recovery asks for 5 and on on timeline 2.
        let next: Vec<String> = (5..=6).map(|n| p.segment_name(n, seg)).collect();
        assert_eq!(
            next,
            ["000000020000000000000005", "000000020000000000000006"]
        );
    }
}
