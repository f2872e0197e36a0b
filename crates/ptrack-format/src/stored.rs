//! Where stored bytes are and how they are encoded, the vocabulary shared by bundles (which
//! hold the bytes), manifests (which point into bundles) and the catalog: [`Stored`] (a byte
//! range of a bundle), [`IndexRef`] (a page index in a bundle) and [`Compression`]. Kept apart
//! so that `bundle` and `manifest` do not import each other.

use serde::{Deserialize, Serialize};

use crate::paths::Digest;

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
    /// BLAKE3 of the index bytes.
    pub digest: Digest,
}

/// How stored pages and files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 block format (`lz4_flex`).
    Lz4,
    /// Zstandard, level 1.
    Zstd,
}

impl Compression {
    pub(crate) fn code(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    pub(crate) fn from_code(c: u32) -> Option<Compression> {
        Some(match c {
            0 => Compression::None,
            1 => Compression::Lz4,
            2 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}
