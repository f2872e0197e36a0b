//! Choosing the parent of an incremental backup: the newest OK backup (its whole chain OK and
//! hash-chained) that is an **ancestor of the server's current history**. A backup is an
//! ancestor when its timeline lies on the server's timeline history (the server's
//! `<TLI>.history` file, as `xlogrecovery.c: tliOfPointInHistory` reads it) and the history
//! stays on that timeline up to the backup's stop LSN; on the current timeline the server must
//! be past the stop LSN. Where the server's WAL segment holding the backup's start LSN is still
//! in `pg_wal`, its bytes from the start LSN to the stop LSN must equal the WAL stored with the
//! backup (its digest, recorded at backup time), which catches a fork on one timeline (a data directory copied or restored by other
//! means and started twice). pg_probackup checks timelines the same way; ptrack's own restore
//! always ends recovery on a new timeline, so its restored clusters are told apart by history.
//!
//! Also refused: an incremental whose parent saw another `data_checksum_version` (pg_checksums
//! rewrote every page without WAL and without changing page LSNs).

use std::path::Path;

use ptrack_types::{Lsn, TimeLineId};
use ptrack_wal::archive::{HistoryEntry, parse_history};
use ptrack_wal::segment::{SegmentName, history_file_name};

use crate::chain::{Link, load_chain, load_chain_head};
use crate::server::Position;
use crate::{Error, Refusal, Result};
use ptrack_format::catalog::{Catalog, Status};
use ptrack_format::manifest::Manifest;
use ptrack_format::paths::Digest;
use ptrack_format::repo::Instance;

/// The server's history: where it is and the timelines it came through.
#[derive(Debug, Clone)]
pub struct History {
    /// Timeline and WAL position now.
    pub position: Position,
    /// Parent timelines with their switch points, oldest first (empty on timeline 1).
    pub parents: Vec<HistoryEntry>,
}

impl History {
    /// Reads the current timeline's history file from `pgdata/pg_wal`.
    pub fn read(pgdata: &Path, position: Position) -> Result<History> {
        if position.timeline.0 <= 1 {
            return Ok(History {
                position,
                parents: Vec::new(),
            });
        }
        let path = pgdata
            .join("pg_wal")
            .join(history_file_name(position.timeline));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::from(Refusal::NoHistory {
                timeline: position.timeline,
                path: path.display().to_string(),
                cause: e.to_string(),
            })
        })?;
        let parents = parse_history(&text).ok_or_else(|| Error::DataDir {
            path: path.display().to_string(),
            why: "timeline history file is malformed".into(),
        })?;
        Ok(History { position, parents })
    }

    /// Where timeline `tli` ends in this history: `Some(Some(switchpoint))` for a parent
    /// timeline, `Some(None)` for the current one, `None` when it is not in the history.
    fn end_of(&self, tli: TimeLineId) -> Option<Option<Lsn>> {
        crate::timelines::TimelinePath::new(self.position.timeline, &self.parents).end_of(tli)
    }

    /// Why the backup described by `m` is not an ancestor of this history (`None`: it is).
    pub fn not_ancestor(&self, m: &Manifest) -> Option<String> {
        match self.end_of(m.timeline) {
            None => Some(format!(
                "its timeline {} is not in the server's history (server on timeline {}{})",
                m.timeline,
                self.position.timeline,
                if self.parents.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", came through timelines {}",
                        self.parents
                            .iter()
                            .map(|e| e.tli.0.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )),
            Some(Some(sw)) if sw < m.stop_lsn => Some(format!(
                "the server's history left timeline {} at {sw}, before the backup's stop LSN {}: the backup lies on another branch",
                m.timeline, m.stop_lsn
            )),
            Some(None) if self.position.lsn < m.stop_lsn => Some(format!(
                "the server's WAL position {} on timeline {} is before the backup's stop LSN {}: the server was restored from an older backup or reset",
                self.position.lsn, m.timeline, m.stop_lsn
            )),
            _ => None,
        }
    }
}

/// The chosen parent and its chain (newest first, the parent at index 0).
#[derive(Debug)]
pub struct Parent {
    /// Parent and, when asked for the whole chain, its ancestors (the chain is checked either
    /// way).
    pub chain: Vec<Link>,
    /// Newer OK backups passed over, and why.
    pub passed_over: Vec<String>,
}

/// Picks the newest OK backup that is an ancestor of `history` (see the module comment). With
/// `whole_chain` every manifest of its chain is loaded (a delta backup reads the parent's files
/// through it); otherwise only the parent's, the ancestors' being checked without their
/// entries.
pub fn choose_parent(
    instance: &Instance,
    cat: &Catalog,
    pgdata: &Path,
    history: &History,
    checksum_version: u32,
    lineage: &[String],
    whole_chain: bool,
) -> Result<Parent> {
    let mut passed_over = Vec::new();
    for b in cat.backups.iter().rev().filter(|b| b.status == Status::Ok) {
        let loaded = if whole_chain {
            load_chain(instance, cat, &b.id)
        } else {
            load_chain_head(instance, cat, &b.id)
        };
        let chain = match loaded {
            Ok(c) => c,
            // The repository could not be read: that is no reason to pass a backup over.
            Err(e @ Error::Repo(ptrack_format::Error::Storage(_))) => return Err(e),
            Err(e) => {
                passed_over.push(format!("backup {}: {e}", b.id));
                continue;
            }
        };
        let m = &chain[0].manifest;
        if !crate::lineage::is_prefix(&m.lineage, lineage) {
            passed_over.push(format!(
                "backup {} is not an ancestor of the server's current state: it was taken of another restore of the same backups \
                 (its {} file differs from this data directory's)",
                b.id,
                crate::lineage::FILE
            ));
            continue;
        }
        let why = history
            .not_ancestor(m)
            .or_else(|| wal_fork(pgdata, m, history));
        if let Some(why) = why {
            passed_over.push(format!(
                "backup {} is not an ancestor of the server's current state: {why}",
                b.id
            ));
            continue;
        }
        if m.data_checksum_version != checksum_version {
            return Err(Refusal::ChecksumsSwitched {
                parent: b.id.clone(),
                then: m.data_checksum_version,
                now: checksum_version,
            }
            .into());
        }
        return Ok(Parent { chain, passed_over });
    }
    Err(match passed_over.is_empty() {
        true => Refusal::NoParent(instance.info.system_identifier),
        false => Refusal::NoParentOf(passed_over),
    }
    .into())
}

/// Compares the server's WAL from the parent's start LSN with the digest of the WAL stored in
/// the parent (`Manifest::start_wal`), where the server still has that segment. `Some(why)`
/// when they differ.
fn wal_fork(pgdata: &Path, m: &Manifest, history: &History) -> Option<String> {
    let span = m.start_wal.as_ref()?;
    let seg = m.wal_seg_size;
    let segno = seg.segno(span.from);
    if let Some(Some(sw)) = history.end_of(m.timeline)
        && sw < span.to
    {
        return None;
    }
    let mut tlis = vec![m.timeline];
    tlis.extend(
        history
            .parents
            .iter()
            .map(|e| e.tli)
            .chain([history.position.timeline])
            .filter(|t| *t > m.timeline),
    );
    let (a, b) = (seg.offset(span.from), span.to.0 - seg.start(segno).0);
    // Only the span is read (a segment is not held whole); a segment the server no longer has
    // tells nothing.
    let server = tlis.iter().find_map(|tli| {
        let name = SegmentName { tli: *tli, segno }.file_name(seg);
        span_digest(&pgdata.join("pg_wal").join(name), a, b)
    })?;
    let same = server == span.digest;
    (!same).then(|| {
        format!(
            "the server's WAL from {} differs from the WAL stored with it: the server's history forked from the backup's on timeline {} \
             (a data directory restored or copied by other means and started more than once?)",
            span.from, m.timeline
        )
    })
}

/// BLAKE3 of bytes `from..to` of `path` (of those there are, when it is shorter: then it
/// differs), read in pieces; `None` when it cannot be read.
fn span_digest(path: &Path, from: u64, to: u64) -> Option<Digest> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f.take(to.checked_sub(from)?), &mut h).ok()?;
    Some(Digest(*h.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tli: u32, stop: u64) -> Manifest {
        let j = serde_json::json!({
            "backup_id": "A", "mode": "full", "parent": null, "parent_manifest": null,
            "system_identifier": 1, "pg_major": 18, "blcksz": 8192, "wal_seg_size": 16777216,
            "data_checksum_version": 1, "compression": "lz4", "start_lsn": "0/1000000",
            "stop_lsn": format!("0/{stop:X}"), "timeline": tli, "from_standby": false,
            "bundles": [], "entries": [], "wal": [], "removed": []
        });
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn ancestry_follows_the_timeline_history() {
        let h = History {
            position: Position {
                timeline: TimeLineId(3),
                lsn: Lsn(0x9000000),
            },
            parents: vec![
                HistoryEntry {
                    tli: TimeLineId(1),
                    switchpoint: Lsn(0x3000000),
                },
                HistoryEntry {
                    tli: TimeLineId(2),
                    switchpoint: Lsn(0x5000000),
                },
            ],
        };
        assert_eq!(h.not_ancestor(&manifest(1, 0x2000000)), None);
        assert_eq!(h.not_ancestor(&manifest(1, 0x3000000)), None);
        assert!(h.not_ancestor(&manifest(1, 0x3000001)).is_some());
        assert_eq!(h.not_ancestor(&manifest(2, 0x4000000)), None);
        assert_eq!(h.not_ancestor(&manifest(3, 0x8000000)), None);
        let e = h.not_ancestor(&manifest(3, 0xA000000)).unwrap();
        assert!(e.contains("before the backup's stop LSN"), "{e}");
        let e = h.not_ancestor(&manifest(4, 0x100)).unwrap();
        assert!(e.contains("not in the server's history"), "{e}");
    }
}
