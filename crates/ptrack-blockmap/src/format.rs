//! The change-set file (`*.ptrackmap`), little-endian:
//!
//! ```text
//! 0   8  magic "PTRKBMAP"
//! 8   4  format version (1)
//! 12  4  flags (bit 0: the range is unsafe for incremental backups)
//! 16  8  system identifier
//! 24  8  start LSN
//! 32  8  end LSN
//! 40  4  number of fork entries F
//! 44  4  number of database resets D
//! 48  4  number of unsafe reasons U
//! 52     D x { spc u32, db u32 }
//!        U x { kind u8 (1 wal_level minimal, 2 unknown special update, 3 unparsable), rmid u8,
//!              info u8, pad u8, lsn u64 }
//!        F x { spc u32, db u32, relfilenode u32, fork u8, has_limit u8, pad u16, limit u32,
//!              bitmap length u32, bitmap (roaring portable serialization) }
//! end-4  4  CRC-32C of every byte before it
//! ```
//!
//! Readers check the CRC first, reject other magics and newer versions, and bound every length by
//! the bytes that remain before allocating.

use std::path::Path;

use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, RelFileLocator, RelFileNumber};
use roaring::RoaringBitmap;

use crate::{ChangeSet, ForkChanges, Unsafe};

/// File magic.
pub const MAGIC: &[u8; 8] = b"PTRKBMAP";
/// Current format version.
pub const VERSION: u32 = 1;

/// Why a change-set file cannot be read (or sets cannot be merged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not a change-set file.
    #[error("not a ptrack change-set file (bad magic)")]
    BadMagic,
    /// Written by a newer ptrack.
    #[error("change-set format version {0} is newer than this ptrack understands ({VERSION})")]
    UnsupportedVersion(u32),
    /// CRC mismatch.
    #[error(
        "change-set file has an incorrect CRC: stored 0x{stored:08X}, computed 0x{computed:08X}"
    )]
    CrcMismatch {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A field runs past the end or holds an impossible value.
    #[error("change-set file is malformed at {field}")]
    Malformed {
        /// The field.
        field: &'static str,
    },
    /// Ranges do not follow each other.
    #[error("change sets are not consecutive: one ends at {end}, the next starts at {next_start}")]
    NotConsecutive {
        /// End of the first.
        end: Lsn,
        /// Start of the second.
        next_start: Lsn,
    },
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        let s = self
            .b
            .get(
                self.at
                    ..self
                        .at
                        .checked_add(n)
                        .ok_or(FormatError::Malformed { field })?,
            )
            .ok_or(FormatError::Malformed { field })?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, f: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, f)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(
            self.take(2, f)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4, f)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(8, f)?.try_into().unwrap_or_default(),
        ))
    }
}

impl ChangeSet {
    /// Serialises the set (format above).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&u32::from(!self.unsafe_reasons.is_empty()).to_le_bytes());
        b.extend_from_slice(&self.system_identifier.to_le_bytes());
        b.extend_from_slice(&self.start.0.to_le_bytes());
        b.extend_from_slice(&self.end.0.to_le_bytes());
        for n in [
            self.forks.len(),
            self.db_resets.len(),
            self.unsafe_reasons.len(),
        ] {
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for (spc, db) in &self.db_resets {
            b.extend_from_slice(&spc.0.to_le_bytes());
            b.extend_from_slice(&db.0.to_le_bytes());
        }
        for u in &self.unsafe_reasons {
            let (kind, rmid, info, lsn) = match *u {
                Unsafe::WalLevelMinimal { lsn } => (1u8, 0, 0, lsn),
                Unsafe::UnknownSpecialUpdate { lsn, rmid, info } => (2, rmid, info, lsn),
                Unsafe::Unparsable { lsn, rmid, info } => (3, rmid, info, lsn),
            };
            b.extend_from_slice(&[kind, rmid, info, 0]);
            b.extend_from_slice(&lsn.0.to_le_bytes());
        }
        for ((l, fork), f) in &self.forks {
            for v in [l.spc_oid.0, l.db_oid.0, l.rel_number.0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&[fork.as_u8(), u8::from(f.limit.is_some()), 0, 0]);
            b.extend_from_slice(&f.limit.map_or(0, |l| l.0).to_le_bytes());
            let mut bm = Vec::with_capacity(f.blocks.serialized_size());
            // Writing into a Vec cannot fail.
            let _ = f.blocks.serialize_into(&mut bm);
            b.extend_from_slice(&(bm.len() as u32).to_le_bytes());
            b.extend_from_slice(&bm);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a change-set file. Never panics on any bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<ChangeSet, FormatError> {
        if bytes.len() < 12 || bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let version = u32::from_le_bytes(
            body.get(8..12)
                .and_then(|v| v.try_into().ok())
                .unwrap_or_default(),
        );
        if version > VERSION || version == 0 {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(FormatError::CrcMismatch { stored, computed });
        }
        let mut r = Reader { b: body, at: 12 };
        let _flags = r.u32("flags")?;
        let mut s = ChangeSet::new(r.u64("system identifier")?, Lsn(r.u64("start LSN")?));
        s.end = Lsn(r.u64("end LSN")?);
        let nforks = r.u32("fork count")? as usize;
        let ndb = r.u32("database reset count")? as usize;
        let nunsafe = r.u32("unsafe count")? as usize;
        for _ in 0..ndb {
            s.db_resets
                .insert((Oid(r.u32("reset spc")?), Oid(r.u32("reset db")?)));
        }
        for _ in 0..nunsafe {
            let (kind, rmid, info) = (
                r.u8("unsafe kind")?,
                r.u8("unsafe rmid")?,
                r.u8("unsafe info")?,
            );
            r.u8("pad")?;
            let lsn = Lsn(r.u64("unsafe lsn")?);
            s.unsafe_reasons.push(match kind {
                1 => Unsafe::WalLevelMinimal { lsn },
                2 => Unsafe::UnknownSpecialUpdate { lsn, rmid, info },
                3 => Unsafe::Unparsable { lsn, rmid, info },
                _ => {
                    return Err(FormatError::Malformed {
                        field: "unsafe kind",
                    });
                }
            });
        }
        for _ in 0..nforks {
            let locator = RelFileLocator {
                spc_oid: Oid(r.u32("spc")?),
                db_oid: Oid(r.u32("db")?),
                rel_number: RelFileNumber(r.u32("relfilenode")?),
            };
            let fork = ForkNumber::from_u8(r.u8("fork")?)
                .ok_or(FormatError::Malformed { field: "fork" })?;
            let has_limit = r.u8("has_limit")?;
            r.u16("pad")?;
            let limit = r.u32("limit")?;
            let len = r.u32("bitmap length")? as usize;
            let bm = r.take(len, "bitmap")?;
            let blocks = RoaringBitmap::deserialize_from(bm)
                .map_err(|_| FormatError::Malformed { field: "bitmap" })?;
            // The portable format can describe what no bitmap holds (an empty run container,
            // container keys out of order or repeated), which later operations trip over
            // (found by fuzz/fuzz_targets/changeset.rs: writing such a set back panicked). Keep
            // a bitmap rebuilt from the blocks, which must be strictly increasing.
            let blocks = RoaringBitmap::from_sorted_iter(blocks.iter())
                .map_err(|_| FormatError::Malformed { field: "bitmap" })?;
            let limit = match has_limit {
                0 => None,
                1 => Some(BlockNumber(limit)),
                _ => return Err(FormatError::Malformed { field: "has_limit" }),
            };
            s.forks
                .insert((locator, fork), ForkChanges { blocks, limit });
        }
        if r.at != body.len() {
            return Err(FormatError::Malformed {
                field: "trailing bytes",
            });
        }
        Ok(s)
    }

    /// Writes the set to `path` through the durable-write path.
    pub fn write_file(&self, path: &Path) -> Result<(), FormatError> {
        ptrack_durable::write_file(path, &self.to_bytes()).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a set written by [`ChangeSet::write_file`].
    pub fn read_file(path: &Path) -> Result<ChangeSet, FormatError> {
        let b = std::fs::read(path).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })?;
        ChangeSet::from_bytes(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChangeSet {
        let mut s = ChangeSet::new(0x7000_0000_0000_0001, Lsn(0x1_0000_0028));
        let l = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(16384),
        };
        for b in [0, 1, 2, 100_000, 131_072 * 3 + 5] {
            s.mark(l, ForkNumber::Main, BlockNumber(b));
        }
        s.set_limit(l, ForkNumber::VisibilityMap, BlockNumber(2));
        s.db_resets.insert((Oid(1663), Oid(16400)));
        s.unsafe_reasons.push(Unsafe::UnknownSpecialUpdate {
            lsn: Lsn(0x1_0000_0100),
            rmid: 130,
            info: 0x11,
        });
        s.end = Lsn(0x2_0000_0000);
        s
    }

    #[test]
    fn round_trip_and_golden_header() {
        let s = sample();
        let b = s.to_bytes();
        assert_eq!(&b[..8], b"PTRKBMAP");
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 1, 0, 0, 0]); // version 1, unsafe flag
        assert_eq!(&b[24..32], &0x1_0000_0028u64.to_le_bytes());
        assert_eq!(ChangeSet::from_bytes(&b).unwrap(), s);
    }

    #[test]
    fn every_corruption_is_an_error_never_a_panic() {
        let b = sample().to_bytes();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(ChangeSet::from_bytes(&c).is_err(), "flip at {i} accepted");
        }
        for n in 0..b.len() {
            assert!(
                ChangeSet::from_bytes(&b[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
        let mut newer = b.clone();
        newer[8] = 2;
        assert!(matches!(
            ChangeSet::from_bytes(&newer),
            Err(FormatError::UnsupportedVersion(2))
        ));
    }

    /// A file of one main-fork entry with `bitmap` as its serialized blocks.
    fn file_with_bitmap(bitmap: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        for v in [VERSION, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [7u64, 0x100, 0x200] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [1u32, 0, 0, 1663, 5, 16384] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&(bitmap.len() as u32).to_le_bytes());
        b.extend_from_slice(bitmap);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn bitmaps_no_writer_makes_are_rebuilt_or_refused() {
        // Found by fuzz/fuzz_targets/changeset.rs: a run container with no runs (cookie 12347,
        // one container, key 0) read as an empty container, and writing the set back
        // underflowed its cardinality.
        let empty_run = [0x3b, 0x30, 0, 0, 0x01, 0, 0, 0, 0, 0, 0];
        let s = ChangeSet::from_bytes(&file_with_bitmap(&empty_run)).unwrap();
        assert_eq!(s.block_count(), 0);
        assert_eq!(ChangeSet::from_bytes(&s.to_bytes()).unwrap(), s);
        // Two array containers with keys out of order (blocks 5·65536 then 1·65536).
        let mut unsorted = Vec::new();
        for v in [12346u32, 2] {
            unsorted.extend_from_slice(&v.to_le_bytes());
        }
        for v in [5u16, 0, 1, 0] {
            unsorted.extend_from_slice(&v.to_le_bytes());
        }
        for v in [24u32, 26] {
            unsorted.extend_from_slice(&v.to_le_bytes());
        }
        unsorted.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            ChangeSet::from_bytes(&file_with_bitmap(&unsorted)),
            Err(FormatError::Malformed { field: "bitmap" })
        ));
    }

    #[test]
    fn written_file_reads_back() {
        let d = std::env::temp_dir().join(format!("ptrack-bm-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("x.ptrackmap");
        sample().write_file(&p).unwrap();
        assert_eq!(ChangeSet::read_file(&p).unwrap(), sample());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
