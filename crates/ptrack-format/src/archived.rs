//! The WAL archive of an instance: one write-once object per archived file under
//! `<sysid>/wal/` (a segment, the `.partial` last segment of a timeline, a timeline history
//! file or a backup history file), named as PostgreSQL names the file. Each object is a small checked header and the
//! file's bytes, compressed:
//!
//! ```text
//! offset size
//!      0    8  magic "PTRKWAL\x01"
//!      8    4  format version (1), little endian
//!     12    4  compression: 0 none, 1 LZ4 block, 2 zstd
//!     16    8  the file's size
//!     24   32  BLAKE3 of the file's bytes
//!     56    8  stored body length
//!     64    4  CRC-32C of bytes 0..64
//!     68    …  body
//! ```
//!
//! The digest is the file's identity: pushing a file that is already archived with the same
//! digest succeeds (a retry after a crash), a different digest is refused and never overwrites.
//! Reads check the header, the body's length, the decompressed size and the digest.

use ptrack_repo::{Key, Storage, StorageError};

use crate::paths::Digest;
use crate::stored::Compression;
use crate::{DocError, Error, Result};

const MAGIC: &[u8; 8] = b"PTRKWAL\x01";
const VERSION: u32 = 1;
/// Header length.
pub const HEADER: usize = 68;
/// Largest file archived: PostgreSQL's largest WAL segment (1 GiB).
pub const MAX_FILE: u64 = 1 << 30;

/// What an archived file is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalFile {
    /// A segment (`TTTTTTTTXXXXXXXXYYYYYYYY`), `partial` for `….partial`.
    Segment {
        /// Its 24-digit name.
        name: String,
        /// The last, incomplete segment of a timeline.
        partial: bool,
    },
    /// A timeline history file (`TTTTTTTT.history`).
    History(ptrack_types::TimeLineId),
    /// A backup history file (`<segment>.<offset as 8 hex digits>.backup`, written by
    /// `pg_backup_stop` while archiving is on).
    BackupHistory {
        /// The segment the backup started in.
        segment: String,
        /// The start's offset in it, 8 hex digits.
        offset: String,
    },
}

impl WalFile {
    /// The file `name` names, when it is one the archive holds (upper-case hex, as PostgreSQL
    /// writes them; anything else is refused so that no other name reaches a key).
    pub fn parse(name: &str) -> Option<WalFile> {
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        };
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.')?;
            let ok = segment.len() == 24 && hex(segment) && offset.len() == 8 && hex(offset);
            return ok.then(|| WalFile::BackupHistory {
                segment: segment.to_string(),
                offset: offset.to_string(),
            });
        }
        if let Some(t) = name.strip_suffix(".history") {
            let tli = u32::from_str_radix(t, 16)
                .ok()
                .filter(|_| t.len() == 8 && hex(t))?;
            return Some(WalFile::History(ptrack_types::TimeLineId(tli)));
        }
        let (seg, partial) = match name.strip_suffix(".partial") {
            Some(s) => (s, true),
            None => (name, false),
        };
        (seg.len() == 24 && hex(seg)).then(|| WalFile::Segment {
            name: seg.to_string(),
            partial,
        })
    }

    /// The file name.
    pub fn file_name(&self) -> String {
        match self {
            WalFile::Segment {
                name,
                partial: false,
            } => name.clone(),
            WalFile::Segment {
                name,
                partial: true,
            } => format!("{name}.partial"),
            WalFile::History(t) => format!("{:08X}.history", t.0),
            WalFile::BackupHistory { segment, offset } => format!("{segment}.{offset}.backup"),
        }
    }
}

/// The archive's key prefix of the instance under `dir`.
pub fn archive_dir(dir: &Key) -> Result<Key> {
    Ok(dir.join("wal")?)
}

/// The key of `file` in the archive of the instance under `dir`.
pub fn wal_key(dir: &Key, file: &WalFile) -> Result<Key> {
    Ok(archive_dir(dir)?.join(&file.file_name())?)
}

/// Encodes `bytes` as an archive object.
pub fn encode(bytes: &[u8], compression: Compression) -> Vec<u8> {
    encode_with(bytes, Digest::of(bytes), compression)
}

/// [`encode`] of `bytes` whose BLAKE3 is `digest` (computed once by the caller).
fn encode_with(bytes: &[u8], digest: Digest, compression: Compression) -> Vec<u8> {
    let body = match compression {
        Compression::None => None,
        Compression::Lz4 => Some(lz4_flex::block::compress(bytes)),
        Compression::Zstd => zstd::bulk::compress(bytes, 1).ok(),
    };
    // A body that does not shrink is stored as is.
    let (compression, body) = match body {
        Some(b) if b.len() < bytes.len() => (compression, b),
        _ => (Compression::None, Vec::new()),
    };
    let body: &[u8] = match compression {
        Compression::None => bytes,
        _ => &body,
    };
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&compression.code().to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// What an object's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// How the body is stored.
    pub compression: Compression,
    /// The file's size.
    pub size: u64,
    /// The file's BLAKE3.
    pub digest: Digest,
    /// The body's length.
    pub body: u64,
}

/// Parses and checks an object's header (`what` names it in errors).
pub fn parse_head(b: &[u8], what: &str) -> Result<Head> {
    let bad = |why: &str| Error::Document {
        object: what.to_string(),
        why: DocError::Invalid(format!("archived WAL: {why}")),
    };
    let h = b
        .get(..HEADER)
        .ok_or_else(|| bad("shorter than its header"))?;
    if &h[..8] != MAGIC {
        return Err(bad("not a ptrack archived WAL file (bad magic)"));
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(a)
    };
    if crc32c::crc32c(&h[..64]) != u32_at(64) {
        return Err(bad("header checksum mismatch"));
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(bad(&format!(
            "format version {version}, this ptrack reads {VERSION}"
        )));
    }
    let compression =
        Compression::from_code(u32_at(12)).ok_or_else(|| bad("unknown compression"))?;
    let size = u64_at(16);
    if size > MAX_FILE {
        return Err(bad("implausible file size"));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&h[24..56]);
    Ok(Head {
        compression,
        size,
        digest: Digest(digest),
        body: u64_at(56),
    })
}

/// Decodes a whole object: the file's bytes, checked against the header's size and digest.
pub fn decode(b: &[u8], what: &str) -> Result<Vec<u8>> {
    let head = parse_head(b, what)?;
    let bad = |why: &str| Error::Document {
        object: what.to_string(),
        why: DocError::Invalid(format!("archived WAL: {why}")),
    };
    let body = &b[HEADER..];
    if body.len() as u64 != head.body {
        return Err(bad("truncated or extended body"));
    }
    let size = head.size as usize;
    let out = match head.compression {
        Compression::None => body.to_vec(),
        Compression::Lz4 => {
            lz4_flex::block::decompress(body, size).map_err(|_| bad("body does not decompress"))?
        }
        Compression::Zstd => {
            zstd::bulk::decompress(body, size).map_err(|_| bad("body does not decompress"))?
        }
    };
    if out.len() != size {
        return Err(bad("body decompresses to another size"));
    }
    if Digest::of(&out) != head.digest {
        return Err(bad("content does not match its BLAKE3 digest"));
    }
    Ok(out)
}

/// What [`push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The file is now archived.
    Stored,
    /// It was archived already, with the same content.
    AlreadyThere,
}

/// A file that is archived already with other content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{key}\" is archived already with other content (BLAKE3 {archived}, this file's {pushed}); it is not overwritten: find out which cluster wrote which"
)]
pub struct Conflict {
    /// The object.
    pub key: String,
    /// The archived file's digest.
    pub archived: String,
    /// The pushed file's.
    pub pushed: String,
}

/// Stores `bytes` as `key` unless it is there: the same content is success, other content a
/// [`PushError::Conflict`]. Durable when it returns
/// `Ok`. On a store with atomic conditional puts two pushers of one key cannot both write; on
/// one without (Garage), the check and the put are two steps (PostgreSQL's archiver pushes one
/// file at a time).
pub fn push(
    store: &dyn Storage,
    key: &Key,
    bytes: &[u8],
    compression: Compression,
) -> std::result::Result<Pushed, PushError> {
    let digest = Digest::of(bytes);
    if let Some(p) = compare_existing(store, key, digest)? {
        return Ok(p);
    }
    let obj = encode_with(bytes, digest, compression);
    let stored = match store.put_if_absent(key, &obj) {
        Ok(true) => true,
        Ok(false) => false,
        Err(StorageError::Unsupported { .. }) => {
            store.put(key, &obj).map_err(Error::from)?;
            true
        }
        Err(e) => return Err(Error::from(e).into()),
    };
    if stored {
        return Ok(Pushed::Stored);
    }
    // Someone stored it between the check and the put.
    Ok(compare_existing(store, key, digest)?.unwrap_or(Pushed::Stored))
}

/// Compares an archived object with `digest`: `None` when there is no object. The whole
/// object is read and checked (a header alone says nothing of a truncated body): a damaged
/// object is an error naming it, never "archived already", and it is not replaced.
fn compare_existing(
    store: &dyn Storage,
    key: &Key,
    digest: Digest,
) -> std::result::Result<Option<Pushed>, PushError> {
    let Some(bytes) = fetch(store, key)? else {
        return Ok(None);
    };
    if Digest::of(&bytes) == digest {
        return Ok(Some(Pushed::AlreadyThere));
    }
    Err(PushError::Conflict(Conflict {
        key: key.to_string(),
        archived: Digest::of(&bytes).to_string(),
        pushed: digest.to_string(),
    }))
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Other content is archived under the name.
    #[error("{0}")]
    Conflict(Conflict),
    /// The repository failed, or its object is damaged.
    #[error("{0}")]
    Repo(#[from] Error),
}

/// What an instance's archive holds, by name (objects are not read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Segment names (24 digits) archived whole.
    pub segments: std::collections::BTreeSet<String>,
    /// `.partial` segments (24-digit names).
    pub partial: std::collections::BTreeSet<String>,
    /// Timeline history files.
    pub histories: std::collections::BTreeSet<ptrack_types::TimeLineId>,
    /// Backup history files.
    pub backup_histories: std::collections::BTreeSet<WalFile>,
}

/// Lists the archive of the instance under `dir`. An object whose name is not an archived
/// file's is damage, named (never passed over).
pub fn list(store: &dyn Storage, dir: &Key) -> Result<Listing> {
    let prefix = archive_dir(dir)?;
    let mut out = Listing::default();
    for k in store.list(Some(&prefix))? {
        let name = k.as_str().rsplit('/').next().unwrap_or_default();
        match WalFile::parse(name) {
            Some(WalFile::Segment {
                name,
                partial: false,
            }) => out.segments.insert(name),
            Some(WalFile::Segment {
                name,
                partial: true,
            }) => out.partial.insert(name),
            Some(WalFile::History(t)) => out.histories.insert(t),
            Some(f @ WalFile::BackupHistory { .. }) => out.backup_histories.insert(f),
            None => {
                return Err(Error::Document {
                    object: format!("\"{k}\""),
                    why: DocError::Invalid(
                        "not an archived WAL file's name; move it out of the archive".into(),
                    ),
                });
            }
        };
    }
    Ok(out)
}

/// Reads archived `key`: the file's bytes, checked (`Ok(None)` when it is not archived).
pub fn fetch(store: &dyn Storage, key: &Key) -> Result<Option<Vec<u8>>> {
    let b = match store.get(key) {
        Ok(b) => b,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    decode(&b, &format!("\"{key}\"")).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_repo::memory::MemStore;

    #[test]
    fn names_are_the_ones_postgresql_writes() {
        for n in [
            "000000010000000000000001",
            "0000000A00000000000000FF.partial",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
        ] {
            assert_eq!(WalFile::parse(n).unwrap().file_name(), n);
        }
        for n in [
            "00000001000000000000000g",
            "000000010000000000000001.gz",
            "0000000100000000000000001",
            "00000002.History",
            "0000002.history",
            "../00000002.history",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000002.backup",
            "",
        ] {
            assert_eq!(WalFile::parse(n), None, "{n}");
        }
    }

    #[test]
    fn round_trip_idempotent_push_conflict_and_damage() {
        let st = MemStore::new();
        let k = Key::new("1/wal/000000010000000000000001").unwrap();
        let seg: Vec<u8> = (0..1 << 16).map(|i| (i % 7) as u8).collect();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            assert_eq!(decode(&encode(&seg, c), "x").unwrap(), seg);
        }
        assert_eq!(
            push(&st, &k, &seg, Compression::Lz4).unwrap(),
            Pushed::Stored
        );
        assert!(st.get(&k).unwrap().len() < seg.len(), "compressed");
        assert_eq!(
            push(&st, &k, &seg, Compression::Zstd).unwrap(),
            Pushed::AlreadyThere
        );
        let mut other = seg.clone();
        other[100] ^= 1;
        assert!(matches!(
            push(&st, &k, &other, Compression::Lz4),
            Err(PushError::Conflict(_))
        ));
        assert_eq!(fetch(&st, &k).unwrap().unwrap(), seg, "not overwritten");
        assert_eq!(
            fetch(&st, &Key::new("1/wal/00000002.history").unwrap()).unwrap(),
            None
        );
        // Every flipped byte and every truncation is caught.
        let obj = st.get(&k).unwrap();
        for at in (0..obj.len()).step_by(97) {
            let mut bad = obj.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad, "x").is_err(), "flip at {at}");
            assert!(decode(&obj[..at], "x").is_err(), "cut at {at}");
        }
    }
}
