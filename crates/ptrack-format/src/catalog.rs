//! An instance's catalog: one record per backup (ID, mode, parent, status, LSNs, times, sizes).
//! Each record is stored as its own write-once `backup-record` document ([`crate::records`]; the
//! one-document `catalog` of older repositories is read and converted); the per-file detail of a
//! backup is in its manifest ([`crate::manifest`]). Statuses follow pg_probackup's: a backup is RUNNING while
//! it is taken, OK once its manifest is durable, ERROR when it failed or was interrupted, CORRUPT
//! when validation found damage, DELETING from the moment a delete decided to remove it until
//! its last object and record are gone.

use ptrack_types::Lsn;
use serde::{Deserialize, Serialize};

use crate::CatalogError;
use crate::paths::Digest;
use crate::stored::Compression;

/// Catalog document format version.
pub const CATALOG_VERSION: u32 = 2;

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Being taken (or its process died; the next command holding the lock marks it ERROR).
    Running,
    /// Complete and durable.
    Ok,
    /// Failed or interrupted; never used for restore or as a parent.
    Error,
    /// Validation found damage.
    Corrupt,
    /// Being deleted: never used for restore or as a parent again, whatever objects remain;
    /// the next command that takes the instance lock finishes the delete.
    Deleting,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Running => "RUNNING",
            Status::Ok => "OK",
            Status::Error => "ERROR",
            Status::Corrupt => "CORRUPT",
            Status::Deleting => "DELETING",
        })
    }
}

/// How the changed pages were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every page.
    Full,
    /// Pages the ptrack extension reports changed since the parent's start LSN.
    Ptrack,
    /// Every page read; kept when its LSN is at or after the parent's start LSN.
    Delta,
    /// Pages the archived WAL since the parent's start LSN references.
    Wal,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Full => "FULL",
            Mode::Ptrack => "PTRACK",
            Mode::Delta => "DELTA",
            Mode::Wal => "WAL",
        })
    }
}

/// One backup's catalog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Short sortable ID (base 36 of the start time in seconds).
    pub id: String,
    /// Mode.
    pub mode: Mode,
    /// The backup this one is incremental to.
    pub parent: Option<String>,
    /// Status.
    pub status: Status,
    /// Start LSN (`pg_backup_start`): the redo point of the backup's checkpoint.
    pub start_lsn: Lsn,
    /// Stop LSN (`pg_backup_stop`), once known.
    pub stop_lsn: Option<Lsn>,
    /// Timeline at the start.
    pub timeline: Option<ptrack_types::TimeLineId>,
    /// Start, Unix seconds.
    pub start_time: i64,
    /// End, Unix seconds.
    pub end_time: Option<i64>,
    /// Bytes of the cluster's files at backup time.
    pub data_bytes: u64,
    /// Bytes this backup stores (bundles, compressed, WAL included).
    pub stored_bytes: u64,
    /// Bytes of WAL stored (uncompressed).
    pub wal_bytes: u64,
    /// Compression of stored pages and files.
    pub compression: Compression,
    /// PostgreSQL major version.
    pub pg_major: ptrack_types::PgMajorVersion,
    /// BLAKE3 of the manifest file, recorded when the backup became OK.
    pub manifest_digest: Option<Digest>,
    /// Why it failed or what validation found.
    pub error: Option<String>,
    /// The ptrack version that wrote it.
    pub program_version: String,
    /// Pinned: retention never expires it before this Unix time ([`KEEP_FOREVER`]: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<i64>,
}

/// [`BackupInfo::keep_until`] of a backup kept forever.
pub const KEEP_FOREVER: i64 = i64::MAX;

impl BackupInfo {
    /// Whether the backup is pinned at Unix time `now`.
    pub fn pinned_at(&self, now: i64) -> bool {
        self.keep_until.is_some_and(|t| t > now)
    }
}

/// The catalog document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Every backup of the instance, in ID order.
    pub backups: Vec<BackupInfo>,
}

impl Catalog {
    /// Checks what readers rely on: every ID and parent is a backup ID, IDs are unique and in
    /// order.
    pub fn check(&self) -> Result<(), CatalogError> {
        for b in &self.backups {
            if !is_backup_id(&b.id) {
                return Err(CatalogError::MalformedId(b.id.escape_debug().to_string()));
            }
            if let Some(p) = &b.parent
                && !is_backup_id(p)
            {
                return Err(CatalogError::MalformedParent(b.id.clone()));
            }
        }
        for w in self.backups.windows(2) {
            if w[0].id >= w[1].id {
                return Err(CatalogError::Order(w[1].id.clone()));
            }
        }
        Ok(())
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<&BackupInfo> {
        self.backups.iter().find(|b| b.id == id)
    }

    /// The mutable record of `id`.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut BackupInfo> {
        self.backups.iter_mut().find(|b| b.id == id)
    }

    /// Every backup whose chain passes through `id` (its children, theirs, …), in ID order;
    /// `id` itself is not included.
    pub fn descendants(&self, id: &str) -> Vec<&BackupInfo> {
        let mut found: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        found.insert(id);
        // IDs grow with time and a parent is older than its child, but a damaged or hand-made
        // catalog need not keep that order: repeat until nothing new joins.
        loop {
            let before = found.len();
            for b in &self.backups {
                if let Some(p) = &b.parent
                    && found.contains(p.as_str())
                {
                    found.insert(b.id.as_str());
                }
            }
            if found.len() == before {
                break;
            }
        }
        self.backups
            .iter()
            .filter(|b| b.id != id && found.contains(b.id.as_str()))
            .collect()
    }

    /// The newest backup with status OK.
    pub fn latest_ok(&self) -> Option<&BackupInfo> {
        self.backups.iter().rev().find(|b| b.status == Status::Ok)
    }

    /// The chain from `id` back to its full backup, newest first. Errors name the missing or
    /// unusable link.
    pub fn chain(&self, id: &str) -> Result<Vec<&BackupInfo>, CatalogError> {
        let mut out: Vec<&BackupInfo> = Vec::new();
        let mut cur = id.to_string();
        loop {
            let b = self.get(&cur).ok_or_else(|| match out.last() {
                None => CatalogError::NoSuchBackup(cur.clone()),
                Some(child) => CatalogError::MissingParent {
                    child: child.id.clone(),
                    parent: cur.clone(),
                },
            })?;
            if out.iter().any(|o| o.id == b.id) || out.len() > 100_000 {
                return Err(CatalogError::Loop {
                    id: id.to_string(),
                    at: cur,
                });
            }
            out.push(b);
            match (&b.parent, b.mode) {
                (None, Mode::Full) => return Ok(out),
                (Some(p), Mode::Ptrack | Mode::Delta | Mode::Wal) => cur = p.clone(),
                _ => return Err(CatalogError::InconsistentLink(b.id.clone())),
            }
        }
    }
}

/// Base 36 digits used in IDs.
const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A backup ID for Unix time `secs`: base 36, upper case, padded to 7 characters so that IDs sort
/// as their times do.
pub fn backup_id(secs: i64) -> String {
    let mut n = secs.max(0) as u64;
    let mut s = Vec::new();
    while n > 0 {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while s.len() < 7 {
        s.push(b'0');
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// Whether `s` looks like a backup ID (so that it can safely name a directory).
pub fn is_backup_id(s: &str) -> bool {
    (1..=16).contains(&s.len()) && s.bytes().all(|b| DIGITS.contains(&b))
}

/// A backup record for tests (here and in ptrack-backup's): full, the given status, everything
/// else empty.
#[doc(hidden)]
pub fn sample_info(id: &str, status: Status) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        mode: Mode::Full,
        parent: None,
        status,
        start_lsn: Lsn(1),
        stop_lsn: None,
        timeline: Some(ptrack_types::TimeLineId(1)),
        start_time: 1,
        end_time: None,
        data_bytes: 0,
        stored_bytes: 0,
        wal_bytes: 0,
        compression: Compression::None,
        pg_major: ptrack_types::PgMajorVersion::V18,
        manifest_digest: None,
        error: None,
        program_version: "t".into(),
        keep_until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_like_times() {
        let a = backup_id(1_790_000_000);
        let b = backup_id(1_790_000_001);
        let c = backup_id(2_500_000_000);
        assert_eq!(a.len(), 7);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(is_backup_id(&a));
        assert!(!is_backup_id("../x"));
        assert!(!is_backup_id(""));
    }
}
