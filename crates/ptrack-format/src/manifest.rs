//! A backup's manifest: every directory, tablespace link, file and relation segment of the
//! cluster at backup time, where each stored piece lives in the backup's bundles, the WAL stored
//! with it, and the facts every command checks the catalog against (the manifest is the
//! authority): its own ID, mode, parent, timeline, start and stop LSN, and the BLAKE3 digest of
//! its parent's manifest file, so a chain of manifests is a hash chain. Files absent from a
//! manifest did not exist (or were excluded) at that backup; `removed` lists the ones the parent
//! still had, for people reading it.
//!
//! Format version 3 (docs/formats.md); version 2 (without `zero_tail` on WAL entries) is still
//! read. Version 1 (ptrack 0.1) identified unchanged files by CRC-32C, which cannot tell
//! self-checksummed files such as `pg_control` apart: it is refused.

use ptrack_types::{Lsn, WalSegSize};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupInfo, Mode};
pub use crate::entries::Entries;
use crate::paths::{Digest, RelPath};
use crate::stored::Compression;
pub use crate::stored::{IndexRef, Stored};

/// Manifest document format version.
pub const MANIFEST_VERSION: u32 = 3;

/// Bytes after the last whole block of a relation segment (a block being written when the
/// segment was read), stored as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tail {
    /// Bytes (less than one block).
    pub len: u32,
    /// BLAKE3 of them.
    pub digest: Digest,
    /// Where they are.
    pub stored: Stored,
}

/// A range of WAL inside one segment and its BLAKE3 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSpan {
    /// First byte.
    pub from: Lsn,
    /// End (exclusive).
    pub to: Lsn,
    /// BLAKE3 of the bytes.
    pub digest: Digest,
}

/// A WAL segment or history file stored with a backup: a `file` entry whose last `zero_tail`
/// bytes are zeros that are not stored (what follows a segment switch is zeros; the stored
/// record holds the bytes before them, raw). `size` and `digest` are of the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEntry {
    /// The file.
    #[serde(flatten)]
    pub entry: Entry,
    /// Zero bytes at its end that were not stored (version 3; 0 in version 2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zero_tail: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::ops::Deref for WalEntry {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

/// What a manifest entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A tablespace link `pg_tblspc/<oid>` and the absolute directory it pointed to.
    Link {
        /// Target directory (absolute).
        target: String,
    },
    /// A file stored whole.
    File {
        /// Bytes.
        size: u64,
        /// BLAKE3 of the content.
        digest: Digest,
        /// Where the content is; `None` when it equals the parent's (same size and digest).
        stored: Option<Stored>,
    },
    /// A relation segment stored page by page.
    Data {
        /// Bytes at backup time (whole blocks, plus `tail`).
        size: u64,
        /// Whole blocks at backup time; restore truncates or extends to this.
        blocks: u32,
        /// Every block is in this backup or is all-zero: restore looks no further back.
        base: bool,
        /// Page indexes of the stored pages (one per piece read in parallel).
        parts: Vec<IndexRef>,
        /// Pages stored.
        pages: u64,
        /// Blocks found damaged and kept because of `--allow-corruption`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        corrupt: Vec<u32>,
        /// A partial block after the last whole one, stored as is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<Tail>,
        /// The file's identity when it was read: a later backup whose file has another one
        /// reads it whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<crate::paths::FileId>,
    },
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// PGDATA-relative path (WAL: the segment file name).
    pub path: RelPath,
    /// What it is.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// A bundle file of the backup and its length when the backup ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// Number.
    pub number: u32,
    /// Bytes.
    pub size: u64,
}

/// Something in the data directory the backup did not store, and why (reported, never silent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// PGDATA-relative path.
    pub path: RelPath,
    /// Why.
    pub reason: String,
}

/// The manifest document as read: its entries held compactly ([`Entries`]).
pub type Manifest = ManifestDoc<Entries>;

/// The manifest document, generic over how its entries are held: [`Entries`] when read, a
/// stream of entries when a backup writes it (`crate::take`), the JSON the same either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDoc<E> {
    /// The backup.
    pub backup_id: String,
    /// Mode.
    pub mode: Mode,
    /// Its parent.
    pub parent: Option<String>,
    /// BLAKE3 of the parent's manifest file (the hash chain).
    pub parent_manifest: Option<Digest>,
    /// The cluster.
    pub system_identifier: u64,
    /// PostgreSQL major version.
    pub pg_major: ptrack_types::PgMajorVersion,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// WAL segment size (validated when read).
    pub wal_seg_size: WalSegSize,
    /// `pg_control`'s `data_checksum_version` at the end of the backup (0: off).
    pub data_checksum_version: u32,
    /// Compression of pages and files.
    pub compression: Compression,
    /// Start LSN.
    pub start_lsn: Lsn,
    /// Stop LSN.
    pub stop_lsn: Lsn,
    /// Where the restored cluster becomes consistent: the stop LSN, or on a standby the later
    /// minimum recovery point of the `pg_control` stored (`xlogrecovery.c` takes a standby
    /// backup's end from it). The stored WAL reaches it; a restore replays no further.
    #[serde(default)]
    pub consistent_lsn: Lsn,
    /// Timeline of the backup (start and stop).
    pub timeline: ptrack_types::TimeLineId,
    /// Whether it was taken from a standby.
    pub from_standby: bool,
    /// Bundles.
    pub bundles: Vec<BundleInfo>,
    /// Cluster content, sorted by path.
    pub entries: E,
    /// WAL segments and timeline history files from start to stop LSN, restored into `pg_wal`.
    pub wal: Vec<WalEntry>,
    /// Paths the parent had and this backup does not.
    pub removed: Vec<RelPath>,
    /// What the backup left out and why (symlinks outside `pg_tblspc`, unreadable entries).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The WAL from the start LSN to the end of its segment (or the consistency point), for the
    /// fork check of later incrementals (`crate::parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_wal: Option<WalSpan>,
    /// The restores the cluster came through, oldest first (`ptrack.restored`, see
    /// `crate::lineage`): a parent's lineage must be a prefix of its child's.
    #[serde(default)]
    pub lineage: Vec<String>,
}

impl<E> ManifestDoc<E> {
    /// Checks the facts the catalog repeats against this manifest (the authority). Returns
    /// every difference.
    pub fn disagreements(&self, b: &BackupInfo) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |what: &str, cat: String, man: String| {
            if cat != man {
                out.push(format!(
                    "the catalog says {what} {cat} but the manifest says {man}"
                ));
            }
        };
        cmp("backup", b.id.clone(), self.backup_id.clone());
        cmp("mode", b.mode.to_string(), self.mode.to_string());
        let opt = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        cmp("parent", opt(&b.parent), opt(&self.parent));
        cmp(
            "start LSN",
            b.start_lsn.to_string(),
            self.start_lsn.to_string(),
        );
        cmp(
            "stop LSN",
            b.stop_lsn.map_or("none".into(), |l| l.to_string()),
            self.stop_lsn.to_string(),
        );
        cmp(
            "timeline",
            b.timeline.map_or("none".into(), |t| t.to_string()),
            self.timeline.to_string(),
        );
        cmp(
            "PostgreSQL major",
            b.pg_major.to_string(),
            self.pg_major.to_string(),
        );
        out
    }
}

impl Manifest {
    /// The consistency point (older manifests of format 2 lack the field: the stop LSN).
    pub fn consistent(&self) -> Lsn {
        self.consistent_lsn.max(self.stop_lsn)
    }

    /// The entry for `path` (entries are sorted).
    pub fn entry(&self, path: &RelPath) -> Option<Entry> {
        self.entries.find(path)
    }

    /// Every entry but a top-level one lies in a directory or tablespace link of the manifest
    /// (so no path runs through a file, and tablespace contents have their link).
    fn check_parent(&self, e: &Entry) -> Result<(), String> {
        let b = e.path.as_bytes();
        let Some(cut) = b.iter().rposition(|&c| c == b'/') else {
            return Ok(());
        };
        let parent = RelPath::from_bytes(&b[..cut]).map_err(|x| x.to_string())?;
        match self.entry(&parent).map(|p| p.kind) {
            Some(EntryKind::Dir | EntryKind::Link { .. }) => Ok(()),
            _ => Err(format!(
                "entry \"{}\" does not lie in a directory or tablespace of the backup",
                e.path
            )),
        }
    }

    /// Checks what a reader relies on beyond the paths themselves: entries sorted and unique,
    /// each inside a directory entry, tablespace links only at `pg_tblspc/<oid>` with absolute
    /// targets, sizes that match blocks, LSNs in order, WAL names plain and segments whole.
    pub fn check_shape(&self) -> Result<(), String> {
        if let Some(p) = self.entries.unsorted_at() {
            return Err(format!("entries are not sorted and unique at \"{p}\""));
        }
        for e in self.entries.iter() {
            if let EntryKind::Link { target } = &e.kind {
                let oid = e
                    .path
                    .as_str()
                    .and_then(|p| p.strip_prefix("pg_tblspc/"))
                    .filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
                if oid.is_none() {
                    return Err(format!(
                        "link entry \"{}\" is not a tablespace link pg_tblspc/<oid>",
                        e.path
                    ));
                }
                if !target.starts_with('/') || target.contains('\0') {
                    return Err(format!(
                        "tablespace link \"{}\" has a target that is not an absolute path",
                        e.path
                    ));
                }
            }
            if let EntryKind::Data {
                blocks, tail, size, ..
            } = &e.kind
            {
                let whole = u64::from(*blocks) * u64::from(self.blcksz);
                let t = tail.map_or(0, |t| u64::from(t.len));
                if tail.is_some_and(|t| t.len == 0 || t.len >= self.blcksz) || *size != whole + t {
                    return Err(format!(
                        "\"{}\": size {size} does not match its {blocks} blocks and tail",
                        e.path
                    ));
                }
            }
            self.check_parent(&e)?;
        }
        if let Some(w) = &self.start_wal
            && (w.from > w.to
                || self.wal_seg_size.segno(w.from) != self.wal_seg_size.prev_segno(w.to))
        {
            return Err("the start WAL span does not lie in one segment".into());
        }
        if self.start_lsn > self.stop_lsn
            || self.stop_lsn > self.consistent()
            || self.consistent().0 >= 1 << 62
        {
            return Err(format!(
                "start {}, stop {} and consistency point {} are out of order",
                self.start_lsn, self.stop_lsn, self.consistent_lsn
            ));
        }
        for e in &self.wal {
            let segment = !e.path.as_bytes().ends_with(b".history");
            match e.kind {
                EntryKind::File { size, stored, .. }
                    if e.path.components().count() == 1
                        && (!segment || size == self.wal_seg_size.bytes())
                        && (e.zero_tail == 0
                            || (segment
                                && stored.is_some_and(|st| {
                                    st.len.checked_add(e.zero_tail) == Some(size)
                                }))) => {}
                _ => {
                    return Err(format!(
                        "WAL entry \"{}\" is not a plain file name of a whole segment or history file (with its zero tail)",
                        e.path
                    ));
                }
            }
        }
        if !matches!(self.blcksz, 1024 | 2048 | 4096 | 8192 | 16384 | 32768) {
            return Err(format!(
                "block size {} is not one PostgreSQL supports",
                self.blcksz
            ));
        }
        Ok(())
    }
}
