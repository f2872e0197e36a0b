//! A timeline and the timelines it descends from, read from its history file: which timeline a
//! WAL segment is read on (the newest one that began at or before it, as
//! `xlogrecovery.c: XLogFileReadAnyTLI` picks), and whether a backup lies on the path (its
//! timeline is in it and was not left before the backup's consistency point, as
//! `timeline.c: tliOfPointInHistory` and `tliSwitchPoint` decide). Used for a wal-mode backup's
//! WAL (the server's history), and for a restore's choice of backup and its archive check (the
//! target timeline's archived history).

use ptrack_format::archived::{self, Listing, WalFile};
use ptrack_format::repo::Instance;
use ptrack_types::{Lsn, TimeLineId, WalSegSize};
use ptrack_wal::SegmentName;
use ptrack_wal::archive::{HistoryEntry, parse_history};

use crate::{Refusal, Result};

/// A timeline's path: each timeline and the LSN it begins at, oldest first (the last is the
/// timeline itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePath {
    begins: Vec<(TimeLineId, Lsn)>,
}

impl TimelinePath {
    /// The path of `tli`, whose history file lists `parents` (oldest first; empty for 1).
    pub fn new(tli: TimeLineId, parents: &[HistoryEntry]) -> TimelinePath {
        let mut begins = Vec::new();
        let mut begin = Lsn(0);
        for e in parents {
            begins.push((e.tli, begin));
            begin = e.switchpoint;
        }
        begins.push((tli, begin));
        TimelinePath { begins }
    }

    /// The timeline the path leads to.
    pub fn target(&self) -> TimeLineId {
        self.begins.last().map_or(TimeLineId(1), |b| b.0)
    }

    /// Where `tli` ends on the path: `Some(Some(switchpoint))` for an ancestor, `Some(None)`
    /// for the target, `None` when it is not on the path.
    pub fn end_of(&self, tli: TimeLineId) -> Option<Option<Lsn>> {
        let i = self.begins.iter().position(|b| b.0 == tli)?;
        Some(self.begins.get(i + 1).map(|b| b.1))
    }

    /// The timeline segment `segno` is read on.
    pub fn segment_timeline(&self, segno: u64, seg: WalSegSize) -> TimeLineId {
        self.begins
            .iter()
            .rev()
            .find(|(_, begin)| seg.segno(*begin) <= segno)
            .map_or(TimeLineId(1), |b| b.0)
    }

    /// The file name of segment `segno` on the path.
    pub fn segment_name(&self, segno: u64, seg: WalSegSize) -> String {
        SegmentName {
            tli: self.segment_timeline(segno, seg),
            segno,
        }
        .file_name(seg)
    }

    /// Why a backup on timeline `tli`, consistent at `stop`, is not on the path (`None`: it is).
    pub fn why_not_on(&self, tli: TimeLineId, stop: Lsn) -> Option<String> {
        match self.end_of(tli) {
            None => Some(format!(
                "its timeline {tli} is not in the history of timeline {}",
                self.target()
            )),
            Some(Some(sw)) if sw < stop => Some(format!(
                "timeline {} left timeline {tli} at {sw}, before the backup's stop LSN {stop}",
                self.target()
            )),
            _ => None,
        }
    }
}

/// The highest timeline the archive `list` holds a segment or history file of.
fn newest(list: &Listing, seg: WalSegSize) -> Option<TimeLineId> {
    let names = list.segments.iter().chain(list.partial.iter());
    let segs = names
        .filter_map(|n| SegmentName::parse(n, seg))
        .map(|s| s.tli);
    segs.chain(list.histories.iter().copied()).max()
}

/// The path recovery follows to `wanted` (`recovery_target_timeline`: a number, `latest` or
/// none for PostgreSQL's default, the newest archived timeline; `current` gives none: the
/// backup's own timeline), from the instance's archive. `None` when the archive is empty or
/// the target is `current`. A timeline above 1 whose history file is not archived is refused:
/// recovery could not follow it either.
pub fn archived_path(
    inst: &Instance,
    list: &Listing,
    wanted: Option<&str>,
) -> Result<Option<TimelinePath>> {
    let seg = inst.info.wal_seg_size;
    let tli = match wanted {
        Some("current") => return Ok(None),
        None | Some("latest") => match newest(list, seg) {
            Some(t) => t,
            None => return Ok(None),
        },
        Some(n) => TimeLineId(n.parse().map_err(|_| Refusal::BadTimeline(n.to_string()))?),
    };
    history_path(inst, tli).map(Some)
}

/// The path of `tli` from its archived history file (none needed for timeline 1); a missing
/// or malformed history file is refused.
pub fn history_path(inst: &Instance, tli: TimeLineId) -> Result<TimelinePath> {
    match archived_history(inst, tli)? {
        Some(p) => Ok(p),
        None => Err(Refusal::NoArchivedHistory {
            timeline: tli,
            key: archived::wal_key(inst.dir(), &WalFile::History(tli))?.to_string(),
        }
        .into()),
    }
}

/// The path of `tli` from its archived history file; `None` when the archive does not hold
/// it (timeline 1 has none and needs none).
pub fn archived_history(inst: &Instance, tli: TimeLineId) -> Result<Option<TimelinePath>> {
    if tli.0 <= 1 {
        return Ok(Some(TimelinePath::new(tli, &[])));
    }
    let key = archived::wal_key(inst.dir(), &WalFile::History(tli))?;
    let Some(text) = archived::fetch(inst.store(), &key)? else {
        return Ok(None);
    };
    let parents = parse_history(&String::from_utf8_lossy(&text)).ok_or_else(|| {
        Refusal::NoArchivedHistory {
            timeline: tli,
            key: format!("{key} (malformed)"),
        }
    })?;
    Ok(Some(TimelinePath::new(tli, &parents)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> TimelinePath {
        let h = [
            HistoryEntry {
                tli: TimeLineId(1),
                switchpoint: Lsn(0x3000100),
            },
            HistoryEntry {
                tli: TimeLineId(2),
                switchpoint: Lsn(0x5000000),
            },
        ];
        TimelinePath::new(TimeLineId(3), &h)
    }

    #[test]
    fn segments_are_read_on_the_newest_timeline_begun() {
        let p = path();
        let seg = WalSegSize::DEFAULT;
        let tl = |n| p.segment_timeline(n, seg).0;
        assert_eq!(
            [tl(1), tl(2), tl(3), tl(4), tl(5), tl(9)],
            [1, 1, 2, 2, 3, 3]
        );
        assert_eq!(p.segment_name(3, seg), "000000020000000000000003");
        assert_eq!(p.target(), TimeLineId(3));
    }

    #[test]
    fn backups_on_the_path() {
        let p = path();
        assert_eq!(p.why_not_on(TimeLineId(1), Lsn(0x3000100)), None);
        assert!(p.why_not_on(TimeLineId(1), Lsn(0x3000101)).is_some());
        assert_eq!(p.why_not_on(TimeLineId(2), Lsn(0x4000000)), None);
        assert_eq!(p.why_not_on(TimeLineId(3), Lsn(0x9000000)), None);
        let e = p.why_not_on(TimeLineId(4), Lsn(1)).unwrap();
        assert!(e.contains("not in the history of timeline 3"), "{e}");
        assert_eq!(p.end_of(TimeLineId(2)), Some(Some(Lsn(0x5000000))));
        assert_eq!(p.end_of(TimeLineId(3)), Some(None));
    }
}
