//! Change sets kept next to the map, so that `ptrack_get_pagemapset` enumerates the blocks that
//! changed instead of probing every block of every changed chunk (issue 11 §2). The tracker
//! records every block it marks into an in-memory [`ChangeSet`] as well; at each map save, and
//! when a caller asks for it, the set is *cut*: written to `pg_ptrack/changes/` as
//! `<tli>-<start>-<end>.pcs` (the `ptrack-blockmap` format, through the durable path) and a new
//! set begins at its end. The fixed-size LSN map stays the authority and the fallback: a start
//! LSN is answered from sets only when they cover `[start, now)` without a gap, every one on the
//! timeline the current history gives its whole range and of this cluster; otherwise by probing
//! the map as before. Sets report exact blocks (no hash collisions).
//!
//! What can break a chain (each falls back to the map): a set not written (I/O error, a crash
//! before the cut: the tracker resumes from the map's saved position, which may be before the
//! last set's end — an overlap is fine, a gap is not), a timeline switch inside a set, removal
//! by the size cap ([`prune`]). Nothing here mirrors PostgreSQL; the model is its WAL summaries
//! (`src/backend/postmaster/walsummarizer.c`), one file per LSN range.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use ptrack_blockmap::ChangeSet;
use ptrack_types::{ForkNumber, Lsn, RelFileLocator, TimeLineId};
use roaring::RoaringBitmap;

/// Directory of the sets, under `pg_ptrack/`.
pub const DIR: &str = "changes";
/// Most sets kept (a week of five-minute checkpoints): the directory is listed at every cut and
/// every call, so its length is bounded as well as its size.
pub const MAX_SETS: usize = 2048;
const SUFFIX: &str = ".pcs";

/// A set file's name: the timeline and LSN range `[start, end)` it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetName {
    /// First LSN covered (sorts first).
    pub start: Lsn,
    /// First LSN not covered.
    pub end: Lsn,
    /// Timeline of the whole range.
    pub tli: TimeLineId,
}

impl SetName {
    /// `TTTTTTTT-SSSSSSSSSSSSSSSS-EEEEEEEEEEEEEEEE.pcs` (hex).
    pub fn file_name(&self) -> String {
        format!(
            "{:08X}-{:016X}-{:016X}{SUFFIX}",
            self.tli.0, self.start.0, self.end.0
        )
    }

    /// Parses a file name written by [`SetName::file_name`].
    pub fn parse(name: &str) -> Option<SetName> {
        let stem = name.strip_suffix(SUFFIX)?;
        let mut parts = stem.split('-');
        let (t, s, e) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || t.len() != 8 || s.len() != 16 || e.len() != 16 {
            return None;
        }
        let hex = |x: &str| {
            x.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                .then(|| u64::from_str_radix(x, 16).ok())
                .flatten()
        };
        let set = SetName {
            tli: TimeLineId(u32::try_from(hex(t)?).ok()?),
            start: Lsn(hex(s)?),
            end: Lsn(hex(e)?),
        };
        (set.start < set.end).then_some(set)
    }
}

/// The set files in `dir`, sorted by start; none when it cannot be read.
pub fn list(dir: &Path) -> Vec<SetName> {
    let mut out: Vec<SetName> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| SetName::parse(e.ok()?.file_name().to_str()?))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Writes `set` (with `start < end`) as the set of timeline `tli`.
pub fn write(dir: &Path, tli: TimeLineId, set: &ChangeSet) -> Result<SetName, String> {
    let name = SetName {
        tli,
        start: set.start,
        end: set.end,
    };
    ptrack_durable::create_private_dir(dir)
        .map_err(|e| format!("ptrack: could not create \"{}\": {e}", dir.display()))?;
    set.write_file(&dir.join(name.file_name()))
        .map_err(|e| format!("ptrack: could not write a change set: {e}"))?;
    Ok(name)
}

/// The sets that together hold every record ending in `[start, end]`, with no gap; `None` when
/// there are none such. The set named `[s, e)` was cut at `s` and at `e`: it holds the records
/// applied in between, whose bytes lie in `[s, e)` and whose end LSNs (what marks carry) lie in
/// `(s, e]`. Each must be on the timeline `timeline_of` gives both ends of its bytes.
pub fn covering(
    names: &[SetName],
    start: Lsn,
    end: Lsn,
    timeline_of: impl Fn(Lsn) -> TimeLineId,
) -> Option<Vec<SetName>> {
    let mut out = Vec::new();
    // Every record ending at or before `covered` is accounted for.
    let mut covered = Lsn(start.0.saturating_sub(1));
    for n in names {
        if covered >= end {
            break;
        }
        if n.end <= covered {
            continue;
        }
        if n.start > covered {
            return None;
        }
        if timeline_of(n.start) != n.tli || timeline_of(Lsn(n.end.0 - 1)) != n.tli {
            return None;
        }
        covered = n.end;
        out.push(*n);
    }
    (covered >= end).then_some(out)
}

/// Changed blocks per relation fork: the union of some sets.
pub type Union = BTreeMap<(RelFileLocator, ForkNumber), RoaringBitmap>;

/// What the sets of a chain say about the changes since a start LSN.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Blocks of sets that begin at or after the start: each changed since it.
    pub exact: Union,
    /// Blocks of the set that begins before the start: some changed only before it, so each is
    /// reported only when the map also says it changed since the start.
    pub probe: Union,
}

impl Changes {
    /// Whether any set has blocks of this fork.
    pub fn has(&self, key: &(RelFileLocator, ForkNumber)) -> bool {
        self.exact.contains_key(key) || self.probe.contains_key(key)
    }
}

/// Reads the chain `names` (from [`covering`] for `start`) from `dir`; every file must be a valid
/// set of this cluster for exactly the range its name says.
pub fn read_chain(
    dir: &Path,
    names: &[SetName],
    start: Lsn,
    system_identifier: u64,
) -> Result<Changes, String> {
    let mut out = Changes::default();
    for n in names {
        let path = dir.join(n.file_name());
        let set = ChangeSet::read_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if set.system_identifier != system_identifier || set.start != n.start || set.end != n.end {
            return Err(format!(
                "{}: not this cluster's set for its range",
                path.display()
            ));
        }
        // Records in the set end in (start_of_set, end]: all since `start` when the set
        // begins at or after `start - 1`.
        let target = if n.start.0 + 1 >= start.0 {
            &mut out.exact
        } else {
            &mut out.probe
        };
        for (key, f) in set.forks {
            *target.entry(key).or_default() |= f.blocks;
        }
    }
    Ok(out)
}

/// Removes sets that end at or before `init_lsn` (never usable), then the oldest ones while the
/// rest exceeds `keep_bytes` or [`MAX_SETS`] files; returns how many were removed.
pub fn prune(dir: &Path, init_lsn: Lsn, keep_bytes: u64) -> io::Result<usize> {
    let names = list(dir);
    let sizes: Vec<u64> = names
        .iter()
        .map(|n| {
            std::fs::metadata(dir.join(n.file_name()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .collect();
    let mut total: u64 = sizes.iter().sum();
    let mut removed = 0;
    for (i, (n, size)) in names.iter().zip(&sizes).enumerate() {
        if n.end > init_lsn && total <= keep_bytes && names.len() - i <= MAX_SETS {
            break;
        }
        std::fs::remove_file(dir.join(n.file_name()))?;
        total -= size;
        removed += 1;
    }
    if removed > 0 {
        ptrack_durable::sync_dir(dir)?;
    }
    Ok(removed)
}

/// Removes every set (the map was reset: their history is not the new map's).
pub fn clear(dir: &Path) -> io::Result<()> {
    for n in list(dir) {
        std::fs::remove_file(dir.join(n.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "changelog_tests.rs"]
mod tests;
