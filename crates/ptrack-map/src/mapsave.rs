//! Incremental saves of the map (ptrack issue #24: a map of tens of GB rewritten at every
//! checkpoint). The map is cut into regions of [`REGION_SLOTS`] slots; marking raises a region's
//! bit in a dirty bitmap next to the map in shared memory. A save writes either the whole map
//! file (`ptrack.map`, a *full* save) or a *delta file* `ptrack.map.delta.<seq>` holding the
//! header and the regions changed since the previous save, each through the durable path (temp
//! file, fsync, rename, directory fsync: a reader sees the old file or the new one).
//!
//! The full file carries a *generation* (header word 9). Delta `seq` of generation `g` holds what
//! changed between delta `seq - 1` (or the full file, for 1) and its own save, and the header at
//! that save. Loading applies the deltas of the full file's generation in order `1, 2, ...` and
//! stops at the first one missing, damaged or of another generation: every prefix of the chain
//! is a state the tracker saved, so the result is consistent with its `tracked_lsn` and the
//! tracker re-reads WAL from there. The deltas not applied are deleted before anything is
//! written. A full save (the first of each server start that did not load a consistent chain,
//! the one after a failed write, and one after [`MAX_DELTAS`] deltas or when deltas hold more
//! than a quarter of the map) starts generation `g + 1`, then removes the old deltas.
//!
//! The delta file format (little-endian), see docs/formats.md:
//! `magic "PTRKDLT\0" u64 | version u32 | seq u32 | generation u64 | regions u32 |
//! region_slots u32 | map header (128 bytes) | per region: index u32, slots u32, slots × u64 |
//! CRC-32C u32` of everything before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::map::{HEADER_BYTES, HEADER_WORDS, Map, MapIdentity};

/// Slots per region (512 bytes): marks scatter over the map by hash, one block's keys over up
/// to six regions, so regions must be small for a delta to stay close to what changed; the
/// dirty bitmap costs one bit per region (8 MB of shared memory for a 32 GB map).
pub const REGION_SLOTS: usize = 64;
/// `"PTRKDLT\0"`, little-endian.
pub const DELTA_MAGIC: u64 = u64::from_le_bytes(*b"PTRKDLT\0");
/// Delta file format version.
pub const DELTA_VERSION: u32 = 1;
/// Deltas of one generation before the next save is full.
pub const MAX_DELTAS: u32 = 64;
/// File name prefix of the deltas, next to `ptrack.map`.
pub const DELTA_PREFIX: &str = "ptrack.map.delta.";
/// Header word holding the full file's generation.
pub const W_GENERATION: usize = 9;

const DELTA_FIXED: usize = 32;

/// What the tracker hands to the map writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// The whole map image without its CRC ([`Map::snapshot`]).
    Full(Vec<u8>),
    /// The header and the regions changed since the previous save.
    Delta {
        /// The header words as bytes.
        header: Vec<u8>,
        /// Region index and its slots as bytes, ascending.
        regions: BTreeMap<u32, Vec<u8>>,
    },
}

impl Save {
    /// One save equivalent to writing `older`, then `newer` (a queued save replaced before the
    /// writer took it): a delta's regions overlay the older save's.
    pub fn merge(older: Save, newer: Save) -> Save {
        match (older, newer) {
            (_, full @ Save::Full(_)) => full,
            (Save::Full(mut image), Save::Delta { header, regions }) => {
                image[..HEADER_BYTES].copy_from_slice(&header);
                for (r, bytes) in regions {
                    let at = HEADER_BYTES + r as usize * REGION_SLOTS * 8;
                    image[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                Save::Full(image)
            }
            (
                Save::Delta {
                    regions: mut old, ..
                },
                Save::Delta { header, regions },
            ) => {
                old.extend(regions);
                Save::Delta {
                    header,
                    regions: old,
                }
            }
        }
    }

    /// Bytes of data it carries.
    pub fn bytes(&self) -> u64 {
        match self {
            Save::Full(image) => image.len() as u64,
            Save::Delta { header, regions } => {
                (header.len() + regions.values().map(Vec::len).sum::<usize>()) as u64
            }
        }
    }
}

/// Why a delta file is not applied (loading stops before it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// Too short, wrong magic or version, or inconsistent lengths.
    #[error("not a ptrack map delta of this format")]
    Format,
    /// CRC mismatch.
    #[error("incorrect checksum")]
    Checksum,
    /// Exists but cannot be read (permissions, I/O error).
    #[error("cannot be read: {0}")]
    Unreadable(String),
    /// Of another generation, sequence number, cluster or map size.
    #[error("belongs to another map (generation {generation}, sequence {seq})")]
    Foreign {
        /// Generation in the file.
        generation: u64,
        /// Sequence number in the file.
        seq: u32,
    },
}

/// Region count of a map of `nslots` slots.
pub fn regions(nslots: u64) -> usize {
    (nslots as usize).div_ceil(REGION_SLOTS)
}

/// Words of the dirty bitmap for `nslots` slots.
pub fn dirty_words(nslots: u64) -> usize {
    regions(nslots).div_ceil(64)
}

impl Map<'_> {
    fn region_range(&self, r: usize) -> std::ops::Range<usize> {
        let n = self.slot_count() as usize;
        (r * REGION_SLOTS).min(n)..((r + 1) * REGION_SLOTS).min(n)
    }

    /// The generation of the full file this map was loaded from or last saved as.
    pub fn generation(&self) -> u64 {
        self.header_word(W_GENERATION).load(Ordering::Acquire)
    }

    /// Sets the generation (the writer, when a full save succeeded).
    pub fn set_generation(&self, g: u64) {
        self.header_word(W_GENERATION).store(g, Ordering::Release);
    }

    fn header_bytes(&self) -> Vec<u8> {
        (0..HEADER_WORDS)
            .flat_map(|i| self.header_word(i).load(Ordering::Acquire).to_le_bytes())
            .collect()
    }

    /// Takes a save: the whole map when `full`, else the header and the dirty regions. Either
    /// way the dirty bits are cleared first, so a mark made while copying is in the next save.
    /// `buf` is a spare buffer for a full image.
    pub fn take_save(&self, full: bool, mut buf: Vec<u8>) -> Save {
        let dirty = self.take_dirty();
        if full {
            self.snapshot_into(&mut buf);
            return Save::Full(buf);
        }
        let regions = dirty
            .into_iter()
            .map(|r| {
                let bytes = self
                    .region_range(r as usize)
                    .flat_map(|i| self.slot_word(i).load(Ordering::Acquire).to_le_bytes());
                (r, bytes.collect())
            })
            .collect();
        Save::Delta {
            header: self.header_bytes(),
            regions,
        }
    }

    /// Applies delta file `bytes`, which must be number `seq` of generation `generation` of this
    /// cluster's map: its header and regions replace the map's. On error nothing is changed.
    pub fn apply_delta(
        &self,
        bytes: &[u8],
        id: MapIdentity,
        generation: u64,
        seq: u32,
    ) -> Result<(), DeltaError> {
        let d = parse_delta(bytes)?;
        let sysid = le_u64(&d.header[16..24]);
        let nslots = le_u64(&d.header[48..56]);
        if d.generation != generation
            || d.seq != seq
            || sysid != id.system_identifier
            || nslots != self.slot_count()
        {
            return Err(DeltaError::Foreign {
                generation: d.generation,
                seq: d.seq,
            });
        }
        let mut regions = Vec::with_capacity(d.regions.len());
        for (r, slots) in &d.regions {
            let range = self.region_range(*r as usize);
            if range.len() * 8 != slots.len() || range.is_empty() {
                return Err(DeltaError::Format);
            }
            regions.push((range, *slots));
        }
        for (range, slots) in regions {
            for (i, b) in range.zip(slots.chunks_exact(8)) {
                self.slot_word(i).store(le_u64(b), Ordering::Relaxed);
            }
        }
        for (i, b) in d.header.chunks_exact(8).enumerate() {
            if i != W_GENERATION {
                self.header_word(i).store(le_u64(b), Ordering::Relaxed);
            }
        }
        std::sync::atomic::fence(Ordering::Release);
        Ok(())
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// A parsed delta file.
#[derive(Debug)]
pub struct Delta<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Generation of the full file it follows.
    pub generation: u64,
    /// The map header at its save.
    pub header: &'a [u8],
    /// Region index and slot bytes.
    pub regions: Vec<(u32, &'a [u8])>,
}

/// Parses and checks a delta file (never panics on any bytes).
pub fn parse_delta(bytes: &[u8]) -> Result<Delta<'_>, DeltaError> {
    if bytes.len() < DELTA_FIXED + HEADER_BYTES + 4 {
        return Err(DeltaError::Format);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if le_u64(body) != DELTA_MAGIC || le_u32(&body[8..]) != DELTA_VERSION {
        return Err(DeltaError::Format);
    }
    if crc32c::crc32c(body) != le_u32(crc) {
        return Err(DeltaError::Checksum);
    }
    let count = le_u32(&body[24..]) as usize;
    if le_u32(&body[28..]) as usize != REGION_SLOTS {
        return Err(DeltaError::Format);
    }
    let header = &body[DELTA_FIXED..DELTA_FIXED + HEADER_BYTES];
    let mut at = DELTA_FIXED + HEADER_BYTES;
    let mut regions = Vec::with_capacity(count.min(body.len() / 8));
    for _ in 0..count {
        let Some(head) = body.get(at..at + 8) else {
            return Err(DeltaError::Format);
        };
        let (r, n) = (le_u32(head), le_u32(&head[4..]) as usize);
        let Some(slots) = body.get(at + 8..at + 8 + n * 8) else {
            return Err(DeltaError::Format);
        };
        regions.push((r, slots));
        at += 8 + n * 8;
    }
    if at != body.len() {
        return Err(DeltaError::Format);
    }
    Ok(Delta {
        seq: le_u32(&body[12..]),
        generation: le_u64(&body[16..]),
        header,
        regions,
    })
}

/// The delta file image of a [`Save::Delta`].
pub fn delta_image(
    generation: u64,
    seq: u32,
    header: &[u8],
    regions: &BTreeMap<u32, Vec<u8>>,
) -> Vec<u8> {
    let size = regions.values().map(|v| v.len() + 8).sum::<usize>();
    let mut out = Vec::with_capacity(DELTA_FIXED + HEADER_BYTES + size + 4);
    out.extend_from_slice(&DELTA_MAGIC.to_le_bytes());
    out.extend_from_slice(&DELTA_VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    out.extend_from_slice(&(REGION_SLOTS as u32).to_le_bytes());
    out.extend_from_slice(header);
    for (r, slots) in regions {
        out.extend_from_slice(&r.to_le_bytes());
        out.extend_from_slice(&((slots.len() / 8) as u32).to_le_bytes());
        out.extend_from_slice(slots);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The file name of delta `seq`.
pub fn delta_name(seq: u32) -> String {
    format!("{DELTA_PREFIX}{seq}")
}

/// The sequence number of a delta file name (`None` for other names).
pub fn delta_seq(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(DELTA_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The writer's side of saving: which generation and delta come next, and whether the files on
/// disk are the map's state as of the last save (so that a delta on top of them is right).
#[derive(Debug)]
pub struct Saver {
    dir: PathBuf,
    generation: u64,
    next_seq: u32,
    delta_bytes: u64,
    map_bytes: u64,
    in_sync: bool,
}

/// What loading the deltas found ([`load_deltas`]).
#[derive(Debug, Default)]
pub struct DeltaLoad {
    /// Deltas applied (`1..=applied`).
    pub applied: u32,
    /// Bytes of the deltas applied.
    pub bytes: u64,
    /// The delta loading stopped at because it was damaged, foreign or unreadable.
    pub stopped: Option<(PathBuf, DeltaError)>,
    /// The first sequence number missing while later deltas exist (a hole in the chain; a
    /// missing one after the last is its normal end).
    pub missing: Option<u32>,
    /// Delta files removed because they were not applied, and files that could not be.
    pub removed: Vec<PathBuf>,
    /// Removal failures.
    pub problems: Vec<String>,
}

/// Applies the delta chain in `dir` to a map just loaded from its full file, then removes every
/// delta file not applied (so that none can be applied later out of turn).
pub fn load_deltas(map: &Map<'_>, dir: &Path, id: MapIdentity) -> DeltaLoad {
    let mut out = DeltaLoad::default();
    let generation = map.generation();
    loop {
        let seq = out.applied + 1;
        let path = dir.join(delta_name(seq));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let later = crate::files::delta_files(dir)
                    .iter()
                    .any(|n| delta_seq(n).is_some_and(|s| s > seq));
                out.missing = later.then_some(seq);
                break;
            }
            Err(e) => {
                out.stopped = Some((path, DeltaError::Unreadable(e.to_string())));
                break;
            }
        };
        match map.apply_delta(&bytes, id, generation, seq) {
            Ok(()) => {
                out.applied = seq;
                out.bytes += bytes.len() as u64;
            }
            Err(e) => {
                out.stopped = Some((path, e));
                break;
            }
        }
    }
    for name in crate::files::delta_files(dir) {
        if delta_seq(&name).is_some_and(|s| s <= out.applied) {
            continue;
        }
        let path = dir.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => out.removed.push(path),
            Err(e) => out
                .problems
                .push(format!("could not remove \"{}\": {e}", path.display())),
        }
    }
    if !out.removed.is_empty()
        && let Err(e) = ptrack_durable::sync_dir(dir)
    {
        out.problems
            .push(format!("could not fsync \"{}\": {e}", dir.display()));
    }
    out
}

impl Saver {
    /// A saver for the map file `map_path` whose delta chain continues at `next_seq` of
    /// `generation`; `in_sync` says the files on disk hold the map as it is in memory (else the
    /// first save must be full).
    pub fn new(
        map_path: &Path,
        generation: u64,
        next_seq: u32,
        in_sync: bool,
        map_bytes: u64,
    ) -> Saver {
        Saver {
            dir: map_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            generation,
            next_seq: next_seq.max(1),
            delta_bytes: 0,
            map_bytes,
            in_sync,
        }
    }

    /// Whether the next save must (or had better) be full: the files are not in sync, or the
    /// chain is long or large enough that loading it costs more than a full write.
    pub fn wants_full(&self) -> bool {
        !self.in_sync || self.next_seq > MAX_DELTAS || self.delta_bytes > self.map_bytes / 4
    }

    /// The generation of the full file on disk.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes a save durably; returns the bytes written. A delta is refused while the files
    /// are not in sync (an earlier write failed): the next full save covers it. Any failure
    /// leaves the files as they were (each write is a rename) and makes the next save full.
    pub fn write(&mut self, save: &mut Save, map_path: &Path, now_ns: u64) -> Result<u64, String> {
        let result = match save {
            Save::Full(image) => self.write_full(image, map_path, now_ns),
            Save::Delta { header, regions } => self.write_delta(header, regions),
        };
        if result.is_err() {
            self.in_sync = false;
        }
        result
    }

    fn write_full(
        &mut self,
        image: &mut Vec<u8>,
        map_path: &Path,
        now_ns: u64,
    ) -> Result<u64, String> {
        // A generation no earlier chain can have (a stale delta of it is never applied).
        let generation = now_ns.max(self.generation + 1);
        image[W_GENERATION * 8..W_GENERATION * 8 + 8].copy_from_slice(&generation.to_le_bytes());
        let crc = crc32c::crc32c(image);
        image.extend_from_slice(&crc.to_le_bytes());
        let written = ptrack_durable::write_file(map_path, image);
        image.truncate(image.len() - 4);
        written.map_err(|e| format!("ptrack: could not write \"{}\": {e}", map_path.display()))?;
        self.generation = generation;
        self.next_seq = 1;
        self.delta_bytes = 0;
        self.in_sync = true;
        let mut removed = false;
        for name in crate::files::delta_files(&self.dir) {
            // Of an older generation: never applied, removed to save space.
            removed |= std::fs::remove_file(self.dir.join(name)).is_ok();
        }
        if removed {
            let _ = ptrack_durable::sync_dir(&self.dir);
        }
        Ok(image.len() as u64 + 4)
    }

    fn write_delta(
        &mut self,
        header: &mut [u8],
        regions: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<u64, String> {
        if !self.in_sync {
            return Err("ptrack: map save skipped: an earlier save failed; the next save writes the whole map".into());
        }
        header[W_GENERATION * 8..W_GENERATION * 8 + 8]
            .copy_from_slice(&self.generation.to_le_bytes());
        let image = delta_image(self.generation, self.next_seq, header, regions);
        let path = self.dir.join(delta_name(self.next_seq));
        ptrack_durable::write_file(&path, &image)
            .map_err(|e| format!("ptrack: could not write \"{}\": {e}", path.display()))?;
        self.next_seq += 1;
        self.delta_bytes += image.len() as u64;
        Ok(image.len() as u64)
    }
}

#[cfg(test)]
#[path = "mapsave_tests.rs"]
mod tests;
