//! A backup's manifest: every directory, tablespace link, file and relation segment of the
//! cluster at backup time, where each stored piece lives in the backup's bundles, and the WAL
//! stored with it. Files absent from a manifest did not exist (or were excluded) at that backup;
//! `removed` lists the ones the parent still had, for people reading it.

use ptrack_types::Lsn;
use serde::{Deserialize, Serialize};

use crate::bundle::Compression;

/// Manifest document format version.
pub const MANIFEST_VERSION: u32 = 1;

/// A byte range of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Bundle number (`bundle.<n>`).
    pub bundle: u32,
    /// Offset in the bundle.
    pub offset: u64,
    /// Stored (compressed) length.
    pub len: u64,
}

/// A page index stored in a bundle: `count` entries of [`crate::bundle::PageEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// Where the index is.
    pub at: Stored,
    /// Entries.
    pub count: u32,
    /// CRC-32C of the index bytes.
    pub crc: u32,
}

/// What a manifest entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A tablespace link `pg_tblspc/<oid>` and the directory it pointed to.
    Link {
        /// Target directory.
        target: String,
    },
    /// A file stored whole.
    File {
        /// Bytes.
        size: u64,
        /// CRC-32C of the content.
        crc: u32,
        /// Where the content is; `None` when it equals the parent's (same size and CRC).
        stored: Option<Stored>,
    },
    /// A relation segment stored page by page.
    Data {
        /// Bytes at backup time (whole blocks).
        size: u64,
        /// Blocks at backup time; restore truncates or extends to this.
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
    },
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// PGDATA-relative path with `/` separators (WAL: the segment file name).
    pub path: String,
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

/// The manifest document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The backup.
    pub backup_id: String,
    /// Its parent.
    pub parent: Option<String>,
    /// The cluster.
    pub system_identifier: u64,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// WAL segment size.
    pub wal_seg_size: u64,
    /// Whether the cluster has data checksums.
    pub data_checksums: bool,
    /// Compression of pages and files.
    pub compression: Compression,
    /// Start LSN.
    pub start_lsn: Lsn,
    /// Stop LSN.
    pub stop_lsn: Lsn,
    /// Timeline of the WAL stored.
    pub timeline: u32,
    /// Bundles.
    pub bundles: Vec<BundleInfo>,
    /// Cluster content, sorted by path.
    pub entries: Vec<Entry>,
    /// WAL segments and timeline history files from start to stop LSN, restored into `pg_wal`.
    pub wal: Vec<Entry>,
    /// Paths the parent had and this backup does not.
    pub removed: Vec<String>,
}

impl Manifest {
    /// The entry for `path` (entries are sorted).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}
