//! The ptrack map: a header and an array of LSN slots, kept in shared memory as 64-bit atomics
//! and persisted as `pg_ptrack/ptrack.map` (or `global/ptrack.map`, see [`crate::files`]).
//! Mirrors ptrack's `engine.h: PtrackMapHdr` and `engine.c: ptrack_mark_block` (spec ptrack.md
//! §3.1–3.2) with these additions:
//!
//! * a header that names the cluster (system identifier) and the WAL position the map is complete
//!   up to (`tracked_lsn` and its timeline), since ptrack-ext learns of changes from WAL;
//! * the cluster's `data_checksum_version` when the map was saved: `pg_checksums --enable`
//!   rewrites every page while the server is down, without WAL and without changing page LSNs, so
//!   a change of that field at the next start means the map cannot vouch for what happened
//!   before ([`Map::check_checksum_version`]);
//! * two *summary levels* in the same slot array: marking block `b` of a fork also raises the
//!   slots of the key `(fork + 16, b >> 10)` (its 1024-block chunk) and `(fork + 32, segno)` (its
//!   segment file). A scan skips a whole segment file or chunk whose summary slots are below the
//!   start LSN without hashing its blocks. Summary keys are ordinary keys, so collisions only raise
//!   slots: false positives, never false negatives.
//!
//! A block is reported for start LSN `S` only when both of its slots are `>= S`. Slots are only
//! raised (`fetch_max`), never lowered.

use std::sync::atomic::{AtomicU64, Ordering};

use ptrack_types::{BlockNumber, ForkNumber, Lsn, RelFileLocator, TimeLineId};

use crate::hash::{BlockKey, slots};

/// Words of the header, before the slots (version 1 had 8).
pub const HEADER_WORDS: usize = 16;
/// Bytes of the header.
pub const HEADER_BYTES: usize = HEADER_WORDS * 8;
/// Bytes of the trailing CRC-32C in the file.
pub const CRC_BYTES: usize = 4;
/// `"PTRKMAP\0"`, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PTRKMAP\0");
/// File format version: 1 had a 64-byte header without `data_checksum_version`; 2 has a 128-byte
/// header with it (and 7 reserved words, written as zero).
pub const FORMAT_VERSION: u32 = 2;
/// Largest `ptrack.map_size` in MB (32 GB, as the original).
pub const MAX_MAP_SIZE_MB: u32 = 32 * 1024;
/// Blocks per summary chunk (`1 << CHUNK_SHIFT`).
pub const CHUNK_SHIFT: u32 = 10;
/// Fork offset of the chunk-level keys.
pub const CHUNK_FORK_OFFSET: i32 = 16;
/// Fork offset of the segment-level keys.
pub const SEGMENT_FORK_OFFSET: i32 = 32;

pub(crate) const W_MAGIC: usize = 0;
pub(crate) const W_VERSION: usize = 1;
pub(crate) const W_SYSID: usize = 2;
const W_INIT_LSN: usize = 3;
const W_TRACKED_LSN: usize = 4;
const W_TRACKED_TLI: usize = 5;
pub(crate) const W_NSLOTS: usize = 6;
pub(crate) const W_MAJOR: usize = 7;
const W_CHECKSUM_VERSION: usize = 8;

/// Sizes derived from `ptrack.map_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    /// Number of LSN slots.
    pub slots: u64,
}

impl MapLayout {
    /// The layout for a map of `mb` megabytes: the file (header, slots, CRC) fits in `mb` MiB.
    /// `None` for 0 (tracking off) or above [`MAX_MAP_SIZE_MB`].
    pub fn for_size_mb(mb: u32) -> Option<MapLayout> {
        if mb == 0 || mb > MAX_MAP_SIZE_MB {
            return None;
        }
        let bytes = u64::from(mb) << 20;
        Some(MapLayout {
            slots: (bytes - (HEADER_BYTES + CRC_BYTES) as u64) / 8,
        })
    }

    /// 64-bit words in shared memory (header and slots).
    pub fn words(&self) -> usize {
        HEADER_WORDS + self.slots as usize
    }

    /// Bytes of shared memory.
    pub fn shmem_bytes(&self) -> usize {
        self.words() * 8
    }

    /// Bytes of the file.
    pub fn file_bytes(&self) -> u64 {
        self.shmem_bytes() as u64 + CRC_BYTES as u64
    }
}

/// Identity written into a fresh map, from `pg_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapIdentity {
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// Major version of the cluster.
    pub major: u32,
    /// `pg_control`'s `data_checksum_version` (0 = off).
    pub data_checksum_version: u32,
}

/// The header fields of a map file image, read without checking anything but its length
/// ([`MapHeader::parse`]): for tools and tests that look at a saved map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    /// Magic (a ptrack-ext map has [`MAGIC`]).
    pub magic: u64,
    /// Format version.
    pub version: u64,
    /// System identifier.
    pub system_identifier: u64,
    /// `init_lsn`.
    pub init_lsn: Lsn,
    /// Position every record before which has been marked.
    pub tracked_lsn: Lsn,
    /// Timeline of `tracked_lsn`.
    pub tracked_tli: TimeLineId,
    /// Slot count.
    pub nslots: u64,
    /// Major version.
    pub major: u64,
    /// `data_checksum_version` when saved (version 2 onwards; 0 for version 1).
    pub data_checksum_version: u64,
}

fn le_word(bytes: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

/// Word `i` of `bytes`, 0 when it is not all there.
pub(crate) fn le_word_or_zero(bytes: &[u8], i: usize) -> u64 {
    bytes
        .get(i * 8..i * 8 + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

impl MapHeader {
    /// The header of a file image; `None` when it is shorter than a version 1 header (64 bytes).
    pub fn parse(bytes: &[u8]) -> Option<MapHeader> {
        if bytes.len() < 8 * 8 {
            return None;
        }
        let w = |i: usize| le_word(bytes, i);
        let v2 = w(W_VERSION) >= 2 && bytes.len() >= HEADER_BYTES;
        Some(MapHeader {
            magic: w(W_MAGIC),
            version: w(W_VERSION),
            system_identifier: w(W_SYSID),
            init_lsn: Lsn(w(W_INIT_LSN)),
            tracked_lsn: Lsn(w(W_TRACKED_LSN)),
            tracked_tli: TimeLineId(w(W_TRACKED_TLI) as u32),
            nslots: w(W_NSLOTS),
            major: w(W_MAJOR),
            data_checksum_version: if v2 { w(W_CHECKSUM_VERSION) } else { 0 },
        })
    }
}

/// `data_checksum_version` changed while the server was down ([`Map::check_checksum_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumChange {
    /// The version the map was saved with.
    pub saved: u32,
    /// The version `pg_control` has now.
    pub now: u32,
    /// `init_lsn` after the change.
    pub init_lsn: Lsn,
}

impl std::fmt::Display for ChecksumChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ptrack: data checksums were {} while the server was down (data_checksum_version {} when the map was saved, {} in pg_control now): pg_checksums rewrites pages without WAL and without changing their LSNs, so changes before {} cannot be tracked: init_lsn moved to {}, a full backup is needed before the next incremental one",
            if self.now == 0 { "disabled" } else { "enabled" },
            self.saved,
            self.now,
            self.init_lsn,
            self.init_lsn
        )
    }
}

/// A map over shared 64-bit words (shared memory in the extension, a `Vec` in tests and tools),
/// with an optional dirty bitmap of its regions ([`crate::mapsave`]).
#[derive(Debug, Clone, Copy)]
pub struct Map<'a> {
    words: &'a [AtomicU64],
    nslots: u64,
    dirty: &'a [AtomicU64],
}

/// Why a byte image cannot be loaded as a map. The messages are the original's (spec §1.6), so
/// that clients and tests grepping the server log keep working.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Wrong size: a resize, or a truncated file.
    #[error("ptrack init: unexpected \"{path}\" file size {size} != {expected}, deleting")]
    Size {
        /// File.
        path: String,
        /// Size found.
        size: u64,
        /// Size this `ptrack.map_size` needs.
        expected: u64,
    },
    /// Not a ptrack-ext map.
    #[error("ptrack read map: wrong map format of file \"{path}\"")]
    Magic {
        /// File.
        path: String,
    },
    /// Another format version.
    #[error(
        "ptrack read map: map format version {found} in the file \"{path}\" is incompatible with file format of extension {FORMAT_VERSION}"
    )]
    Version {
        /// File.
        path: String,
        /// Version found.
        found: u64,
    },
    /// CRC mismatch.
    #[error("ptrack read map: incorrect checksum of file \"{path}\"")]
    Checksum {
        /// File.
        path: String,
    },
    /// A map of another cluster (copied in, or from before `initdb`/`pg_upgrade`).
    #[error(
        "ptrack read map: file \"{path}\" belongs to another cluster (system identifier {found}, this cluster {expected})"
    )]
    ForeignCluster {
        /// File.
        path: String,
        /// Identifier in the file.
        found: u64,
        /// This cluster's.
        expected: u64,
    },
    /// Slot count in the header does not match the size.
    #[error("ptrack init: broken map file \"{path}\", deleting")]
    Broken {
        /// File.
        path: String,
    },
    /// A read failed (the original's "read error": WARNING, then the file is treated as broken).
    #[error("ptrack read map: could not read file \"{path}\" at offset {offset}: {source}")]
    Read {
        /// File.
        path: String,
        /// Where the read failed.
        offset: u64,
        /// The error.
        source: std::io::Error,
    },
}

impl<'a> Map<'a> {
    /// A view of `words` (at least the header; the slot count comes from the length).
    pub fn new(words: &'a [AtomicU64]) -> Map<'a> {
        Map::with_dirty(words, &[])
    }

    /// A view of `words` that records changed regions in `dirty` (at least
    /// [`crate::mapsave::dirty_words`] words; a shorter bitmap records nothing, and every save
    /// must then be full).
    pub fn with_dirty(words: &'a [AtomicU64], dirty: &'a [AtomicU64]) -> Map<'a> {
        let nslots = words.len().saturating_sub(HEADER_WORDS).max(1) as u64;
        let dirty = if dirty.len() >= crate::mapsave::dirty_words(nslots) {
            dirty
        } else {
            &[]
        };
        Map {
            nslots,
            words,
            dirty,
        }
    }

    /// Fresh dirty-bitmap words for `layout`.
    pub fn alloc_dirty(layout: MapLayout) -> Vec<AtomicU64> {
        (0..crate::mapsave::dirty_words(layout.slots))
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    /// Whether changed regions are recorded (incremental saves are possible).
    pub fn tracks_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The changed regions since the last call, ascending; their bits are cleared.
    pub fn take_dirty(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, w) in self.dirty.iter().enumerate() {
            let mut bits = w.swap(0, Ordering::AcqRel);
            while bits != 0 {
                out.push((i * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        out
    }

    fn set_dirty(&self, slot: usize) {
        let r = slot / crate::mapsave::REGION_SLOTS;
        if let Some(w) = self.dirty.get(r / 64) {
            w.fetch_or(1 << (r % 64), Ordering::AcqRel);
        }
    }

    /// Every word, header and slots.
    pub(crate) fn words(&self) -> &'a [AtomicU64] {
        self.words
    }

    pub(crate) fn header_word(&self, i: usize) -> &AtomicU64 {
        &self.words[i]
    }

    pub(crate) fn slot_word(&self, i: usize) -> &AtomicU64 {
        &self.words[HEADER_WORDS + i]
    }

    /// Fresh words for `layout` (tests and offline tools).
    pub fn alloc(layout: MapLayout) -> Vec<AtomicU64> {
        (0..layout.words()).map(|_| AtomicU64::new(0)).collect()
    }

    /// Number of slots.
    pub fn slot_count(&self) -> u64 {
        self.nslots
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        &self.words[i]
    }

    fn slot(&self, i: usize) -> &AtomicU64 {
        &self.words[HEADER_WORDS + i]
    }

    /// Zeroes every slot and writes a fresh header: `init_lsn` and `tracked_lsn` 0 (the tracker
    /// sets both when it picks its start).
    pub fn reset(&self, id: MapIdentity) {
        for s in &self.words[HEADER_WORDS..] {
            s.store(0, Ordering::Relaxed);
        }
        self.w(W_MAGIC).store(MAGIC, Ordering::Relaxed);
        self.w(W_VERSION)
            .store(u64::from(FORMAT_VERSION), Ordering::Relaxed);
        self.w(W_SYSID)
            .store(id.system_identifier, Ordering::Relaxed);
        self.w(W_INIT_LSN).store(0, Ordering::Relaxed);
        self.w(W_TRACKED_LSN).store(0, Ordering::Relaxed);
        self.w(W_TRACKED_TLI).store(0, Ordering::Relaxed);
        self.w(W_NSLOTS).store(self.nslots, Ordering::Relaxed);
        self.w(W_CHECKSUM_VERSION)
            .store(u64::from(id.data_checksum_version), Ordering::Relaxed);
        for w in &self.words[W_CHECKSUM_VERSION + 1..HEADER_WORDS] {
            w.store(0, Ordering::Relaxed);
        }
        self.w(W_MAJOR)
            .store(u64::from(id.major), Ordering::Release);
    }

    /// `data_checksum_version` recorded in the map.
    pub fn data_checksum_version(&self) -> u32 {
        self.w(W_CHECKSUM_VERSION).load(Ordering::Acquire) as u32
    }

    /// Compares the `data_checksum_version` the map was saved with against `now` (from
    /// `pg_control` at start). When they differ, pages may have been rewritten without WAL while
    /// the server was down (`pg_checksums --enable`; `--disable` rewrites only `pg_control`, but
    /// nothing tells the two apart afterwards): `init_lsn` is raised past `redo`, the redo point
    /// of the checkpoint in `pg_control`, and the new version is recorded. Every backup taken
    /// before the shutdown started at or before `redo` (a restartpoint skipped at a standby's
    /// shutdown leaves `redo` equal to the last backup's start), and every later one starts
    /// after it, hence `redo + 1`.
    pub fn check_checksum_version(&self, now: u32, redo: Lsn) -> Option<ChecksumChange> {
        let saved = self.data_checksum_version();
        if saved == now {
            return None;
        }
        let init_lsn = self.raise_init_lsn(Lsn(redo.0 + 1));
        self.w(W_CHECKSUM_VERSION)
            .store(u64::from(now), Ordering::Release);
        Some(ChecksumChange {
            saved,
            now,
            init_lsn,
        })
    }

    /// The cluster the map belongs to.
    pub fn system_identifier(&self) -> u64 {
        self.w(W_SYSID).load(Ordering::Acquire)
    }

    /// The LSN from which the map is complete (0/0 before the tracker has started).
    pub fn init_lsn(&self) -> Lsn {
        Lsn(self.w(W_INIT_LSN).load(Ordering::Acquire))
    }

    /// Raises `init_lsn` to `lsn` (history before it is lost); returns the new value.
    pub fn raise_init_lsn(&self, lsn: Lsn) -> Lsn {
        Lsn(self
            .w(W_INIT_LSN)
            .fetch_max(lsn.0, Ordering::AcqRel)
            .max(lsn.0))
    }

    /// Where the tracker resumes: every record before it has been marked.
    pub fn tracked(&self) -> (Lsn, TimeLineId) {
        (
            Lsn(self.w(W_TRACKED_LSN).load(Ordering::Acquire)),
            TimeLineId(self.w(W_TRACKED_TLI).load(Ordering::Acquire) as u32),
        )
    }

    /// Records the tracker's position (only the tracker calls this).
    pub fn set_tracked(&self, lsn: Lsn, tli: TimeLineId) {
        self.w(W_TRACKED_TLI)
            .store(u64::from(tli.0), Ordering::Release);
        self.w(W_TRACKED_LSN).store(lsn.0, Ordering::Release);
    }

    fn raise_key(&self, key: BlockKey, lsn: u64) {
        let (a, b) = slots(key.hash(), self.nslots);
        for i in [a, b] {
            if self.slot(i).fetch_max(lsn, Ordering::AcqRel) < lsn {
                self.set_dirty(i);
            }
        }
    }

    /// Whether both slots of `key` are `>= start`; the second slot is read only when the first
    /// passes.
    pub fn key_changed(&self, key: BlockKey, start: Lsn) -> bool {
        let (a, b) = slots(key.hash(), self.nslots);
        self.slot(a).load(Ordering::Acquire) >= start.0
            && self.slot(b).load(Ordering::Acquire) >= start.0
    }

    /// Marks `block` of a fork as changed at `lsn`, with its chunk and segment summary keys;
    /// `relseg_blocks` is `RELSEG_SIZE`.
    pub fn mark(
        &self,
        locator: RelFileLocator,
        fork: ForkNumber,
        block: BlockNumber,
        lsn: Lsn,
        relseg_blocks: u32,
    ) {
        let k = block_key(locator, fork, block);
        self.raise_key(k, lsn.0);
        self.raise_key(chunk_key(k), lsn.0);
        self.raise_key(segment_key(k, block.0 / relseg_blocks.max(1)), lsn.0);
    }

    /// The whole image (header and slots) as file bytes with the CRC appended. Slots are read
    /// one by one while others may raise them; the tracker, the only writer, calls this.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        seal(self.snapshot())
    }

    /// The header and slots as little-endian bytes, without the CRC (see [`seal`]): the cheap
    /// part of a save, done by the tracker; sealing and writing can happen elsewhere.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.snapshot_into(&mut out);
        out
    }

    /// [`Map::snapshot`] into `out`, replacing its contents. Reusing one buffer matters for a
    /// large map: a fresh allocation of tens of megabytes costs more in page faults than the copy.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.words.len() * 8 + CRC_BYTES);
        out.resize(self.words.len() * 8, 0);
        for (dst, w) in out.chunks_exact_mut(8).zip(self.words) {
            dst.copy_from_slice(&w.load(Ordering::Acquire).to_le_bytes());
        }
    }

    /// Loads a file image held in memory into this map after checking magic, version, size,
    /// CRC and cluster: [`Map::load_from`] on one thread (see [`crate::mapload`] for the order
    /// of the checks). Magic and version come before the size, so that a map of an older format
    /// (whose header, and hence size, differs) is reported as such rather than as a resize. On
    /// error the map's content is unspecified: reset it.
    pub fn load_file_bytes(
        &self,
        path: &str,
        bytes: &[u8],
        id: MapIdentity,
    ) -> Result<(), LoadError> {
        let plan = crate::mapload::LoadPlan {
            threads: 1,
            buffer_bytes: crate::mapload::BUFFER_BYTES,
        };
        self.load_from(path, bytes, id, plan).map(|_| ())
    }
}

/// Appends the CRC-32C to a [`Map::snapshot`], giving the file image.
pub fn seal(mut snapshot: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&snapshot);
    snapshot.extend_from_slice(&crc.to_le_bytes());
    snapshot
}

/// The key of a block.
pub fn block_key(locator: RelFileLocator, fork: ForkNumber, block: BlockNumber) -> BlockKey {
    BlockKey {
        spc: locator.spc_oid.0,
        db: locator.db_oid.0,
        rel: locator.rel_number.0,
        fork: i32::from(fork.as_u8()),
        blk: block.0,
    }
}

/// The chunk-level key of a block key.
pub fn chunk_key(k: BlockKey) -> BlockKey {
    BlockKey {
        fork: k.fork + CHUNK_FORK_OFFSET,
        blk: k.blk >> CHUNK_SHIFT,
        ..k
    }
}

/// The segment-level key of a block key in segment `segno`.
pub fn segment_key(k: BlockKey, segno: u32) -> BlockKey {
    BlockKey {
        fork: k.fork + SEGMENT_FORK_OFFSET,
        blk: segno,
        ..k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_types::{Oid, RelFileNumber};

    fn loc(rel: u32) -> RelFileLocator {
        RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(rel),
        }
    }

    const ID: MapIdentity = MapIdentity {
        system_identifier: 42,
        major: 18,
        data_checksum_version: 1,
    };

    #[test]
    fn layout() {
        assert_eq!(MapLayout::for_size_mb(0), None);
        assert_eq!(MapLayout::for_size_mb(MAX_MAP_SIZE_MB + 1), None);
        let l = MapLayout::for_size_mb(1).unwrap();
        assert!(l.file_bytes() <= 1 << 20 && l.file_bytes() + 8 > 1 << 20);
        assert_eq!(l.slots, ((1 << 20) - 132) / 8);
    }

    #[test]
    fn mark_and_query() {
        let l = MapLayout::for_size_mb(1).unwrap();
        let words = Map::alloc(l);
        let m = Map::new(&words);
        m.reset(ID);
        m.mark(
            loc(16385),
            ForkNumber::Main,
            BlockNumber(7),
            Lsn(1000),
            131072,
        );
        let k = block_key(loc(16385), ForkNumber::Main, BlockNumber(7));
        assert!(m.key_changed(k, Lsn(1000)));
        assert!(m.key_changed(chunk_key(k), Lsn(1000)));
        assert!(m.key_changed(segment_key(k, 0), Lsn(1000)));
        assert!(!m.key_changed(k, Lsn(1001)));
        // Values are only raised.
        m.mark(
            loc(16385),
            ForkNumber::Main,
            BlockNumber(7),
            Lsn(10),
            131072,
        );
        assert!(m.key_changed(k, Lsn(1000)));
        assert_eq!(m.raise_init_lsn(Lsn(50)), Lsn(50));
        assert_eq!(m.raise_init_lsn(Lsn(20)), Lsn(50));
    }

    #[test]
    fn file_round_trip_and_every_failure() {
        let l = MapLayout::for_size_mb(1).unwrap();
        let words = Map::alloc(l);
        let m = Map::new(&words);
        m.reset(ID);
        m.raise_init_lsn(Lsn(77));
        m.set_tracked(Lsn(99), TimeLineId(3));
        m.mark(loc(1), ForkNumber::Fsm, BlockNumber(2), Lsn(88), 131072);
        let bytes = m.to_file_bytes();
        assert_eq!(bytes.len() as u64, l.file_bytes());

        let words2 = Map::alloc(l);
        let m2 = Map::new(&words2);
        m2.load_file_bytes("f", &bytes, ID).unwrap();
        assert_eq!(m2.init_lsn(), Lsn(77));
        assert_eq!(m2.tracked(), (Lsn(99), TimeLineId(3)));
        assert_eq!(m2.to_file_bytes(), bytes);

        // The original's corruption test: 12 bytes at offset 42.
        let mut bad = bytes.clone();
        bad[42..54].copy_from_slice(b"corruptbytes");
        assert!(matches!(
            m2.load_file_bytes("f", &bad, ID),
            Err(LoadError::Checksum { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(matches!(
            m2.load_file_bytes("f", &bad, ID),
            Err(LoadError::Magic { .. })
        ));
        assert!(matches!(
            m2.load_file_bytes("f", &bytes[..bytes.len() - 8], ID),
            Err(LoadError::Size { .. })
        ));
        let other = MapIdentity {
            system_identifier: 43,
            ..ID
        };
        let e = m2
            .load_file_bytes("/d/global/ptrack.map", &bytes, other)
            .unwrap_err();
        assert!(matches!(e, LoadError::ForeignCluster { .. }));
        assert!(e.to_string().contains("another cluster"));
        let e = LoadError::Checksum {
            path: "/d/global/ptrack.map".into(),
        };
        assert_eq!(
            e.to_string(),
            "ptrack read map: incorrect checksum of file \"/d/global/ptrack.map\""
        );
    }

    /// A version 1 image (64-byte header and 8 more slots: the same file size for the same
    /// map_size): reported as an incompatible version.
    #[test]
    fn older_format_is_a_version_error_before_the_size() {
        let l = MapLayout::for_size_mb(1).unwrap();
        let v1_slots = ((1u64 << 20) - 68) / 8;
        let mut v1 = Vec::new();
        for w in [MAGIC, 1, 42, 77, 99, 1, v1_slots, 18] {
            v1.extend_from_slice(&w.to_le_bytes());
        }
        v1.resize(64 + 8 * v1_slots as usize, 0);
        let v1 = seal(v1);
        assert_eq!(v1.len() as u64, l.file_bytes());
        let words = Map::alloc(l);
        let e = Map::new(&words)
            .load_file_bytes("/d/pg_ptrack/ptrack.map", &v1, ID)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ptrack read map: map format version 1 in the file \"/d/pg_ptrack/ptrack.map\" is incompatible with file format of extension 2"
        );
        let h = MapHeader::parse(&v1).unwrap();
        assert_eq!(
            (h.version, h.tracked_lsn, h.data_checksum_version),
            (1, Lsn(99), 0)
        );
        // Too short to hold a version: a size error.
        assert!(matches!(
            Map::new(&words).load_file_bytes("f", &v1[..10], ID),
            Err(LoadError::Size { .. })
        ));
    }

    #[test]
    fn checksum_version_is_saved_and_a_change_moves_init_lsn() {
        let l = MapLayout::for_size_mb(1).unwrap();
        let words = Map::alloc(l);
        let m = Map::new(&words);
        m.reset(MapIdentity {
            data_checksum_version: 0,
            ..ID
        });
        m.raise_init_lsn(Lsn(500));
        let h = MapHeader::parse(&m.to_file_bytes()).unwrap();
        assert_eq!((h.magic, h.version, h.data_checksum_version), (MAGIC, 2, 0));
        assert_eq!(m.check_checksum_version(0, Lsn(9000)), None);
        assert_eq!(m.init_lsn(), Lsn(500));
        let c = m.check_checksum_version(1, Lsn(9000)).unwrap();
        assert_eq!(
            c,
            ChecksumChange {
                saved: 0,
                now: 1,
                init_lsn: Lsn(9001)
            }
        );
        assert!(
            c.to_string()
                .contains("data checksums were enabled while the server was down")
        );
        assert!(
            c.to_string()
                .contains("a full backup is needed before the next incremental one")
        );
        assert_eq!(m.init_lsn(), Lsn(9001));
        assert_eq!(
            MapHeader::parse(&m.to_file_bytes())
                .unwrap()
                .data_checksum_version,
            1
        );
        // Checked again with the same version: nothing to say.
        assert_eq!(m.check_checksum_version(1, Lsn(9500)), None);
        let off = m.check_checksum_version(0, Lsn(9500)).unwrap();
        assert!(off.to_string().contains("disabled"));
        assert_eq!(m.init_lsn(), Lsn(9501));
        // init_lsn is never lowered.
        m.check_checksum_version(1, Lsn(10));
        assert_eq!(m.init_lsn(), Lsn(9501));
    }
}
