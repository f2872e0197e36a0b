//! What a backup reads of each listed file, decided from the listing, the parent's manifest and
//! the page map: a whole file (stored unless its size and BLAKE3 equal the parent's), or a
//! main-fork segment read in parts of [`PART_BLOCKS`] with a [`Select`] of the blocks to read
//! and keep, and its partial last block. The work is a list of small [`Unit`]s (16 bytes each,
//! issue 11 §5); a worker decides a unit's file again from the same immutable inputs instead
//! of the plan holding every file's selection. Mirrors the file loop of `basebackup.c`
//! (`sendDir`/`sendFile`) and pg_probackup's page selection per mode.

use std::collections::HashMap;

use ptrack_page::relpath::{PathKind, RelFileSegment, classify_path};
use ptrack_types::ForkNumber;

use crate::chain::Link;
use crate::pages::Select;
use crate::walk::{FileId, Item, Listing};
use ptrack_format::catalog::{BackupInfo, Mode};
use ptrack_format::manifest::EntryKind;
use ptrack_format::paths::{Digest, RelPath};

/// Blocks per unit of parallel work (128 MiB at 8 KiB).
pub const PART_BLOCKS: u32 = 16384;

/// What a unit reads: the whole file, the partial last block, or the data part starting at a
/// block.
const WHOLE: u32 = u32::MAX;
const TAIL: u32 = u32::MAX - 1;

/// One piece of work: a listed file (its position in path order) and which part of it.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Position in the listing (path order).
    pub pos: u32,
    what: u32,
    /// Bytes to read (for ordering and progress).
    pub weight: u64,
}

/// What a unit is, decoded.
pub enum UnitKind {
    /// The whole file.
    Whole,
    /// The bytes after the last whole block.
    Tail,
    /// Blocks from this one (up to [`PART_BLOCKS`]).
    Part(u32),
}

impl Unit {
    /// What it reads.
    pub fn kind(&self) -> UnitKind {
        match self.what {
            WHOLE => UnitKind::Whole,
            TAIL => UnitKind::Tail,
            b => UnitKind::Part(b),
        }
    }
}

/// What the backup does with one listed regular file.
pub enum FilePlan {
    /// Read whole; the parent's size and digest when it had the file.
    Whole {
        /// The parent's `(size, digest)`.
        parent: Option<(u64, Digest)>,
    },
    /// A main-fork segment read page by page.
    Data {
        /// Which segment.
        seg: RelFileSegment,
        /// Whole blocks.
        blocks: u32,
        /// Bytes after them.
        tail: u32,
        /// Blocks to read and keep.
        sel: Select,
    },
}

/// How each listed path was planned, one byte per path ([`Plan::shape`]), and the work.
pub struct Plan {
    /// The units, biggest first.
    pub units: Vec<Unit>,
    /// Bytes they read.
    pub total: u64,
    /// Per listed path: [`NOT_DATA`], [`DATA`] or [`DATA_BASE`].
    shapes: Vec<u8>,
    /// Relation segments with bytes after their last whole block, and how many.
    pub tails: Vec<(u32, u32)>,
}

/// A directory, link or file stored whole.
pub const NOT_DATA: u8 = 0;
/// A main-fork segment that needs older backups.
pub const DATA: u8 = 1;
/// A main-fork segment stored whole in this backup (`base`).
pub const DATA_BASE: u8 = 2;

impl Plan {
    /// The shape of listed path `pos`.
    pub fn shape(&self, pos: u32) -> u8 {
        self.shapes[pos as usize]
    }
}

/// Decides each file's plan from inputs that do not change during the copy.
pub struct Planner<'a> {
    /// The backup's mode.
    pub mode: Mode,
    /// The parent (newest first in its chain), for incrementals.
    pub parent: Option<&'a Link>,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// `RELSEG_SIZE`.
    pub relseg: u32,
    /// Ptrack and wal modes: path → changed blocks of the segment (sorted).
    pub pagemap: Option<&'a HashMap<String, Vec<u32>>>,
    /// Delta mode: heap pages whose all-visible bit was set since the parent.
    pub also: &'a HashMap<RelPath, Vec<u32>>,
}

impl Planner<'_> {
    /// The plan of regular file `rel` of `size` bytes and identity `file_id`.
    pub fn file(&self, rel: &RelPath, size: u64, file_id: FileId) -> FilePlan {
        let parent = self.parent;
        let blcksz = u64::from(self.blcksz);
        let parent_kind = parent.and_then(|p| p.manifest.entry(rel)).map(|e| e.kind);
        let seg = match rel.as_str().map(classify_path) {
            Some(PathKind::Relation(s)) if s.fork == ForkNumber::Main => s,
            _ => {
                let parent = match parent_kind {
                    Some(EntryKind::File { size, digest, .. }) => Some((size, digest)),
                    _ => None,
                };
                return FilePlan::Whole { parent };
            }
        };
        let blocks = u32::try_from(size / blcksz)
            .unwrap_or(u32::MAX)
            .min(self.relseg);
        let tail = (size - u64::from(blocks) * blcksz).min(blcksz - 1) as u32;
        // A file created anew under the same name since the parent is read whole (base).
        let parent_blocks = match parent_kind {
            Some(EntryKind::Data {
                blocks,
                file_id: pid,
                ..
            }) if pid.is_none_or(|p| p.same_file(&file_id)) => parent.map(|p| (&p.info, blocks)),
            _ => None,
        };
        let listed = self
            .pagemap
            .and_then(|m| rel.as_str().and_then(|r| m.get(r)));
        let mut sel = select(self.mode, parent_blocks, listed, blocks);
        if sel.since.is_some()
            && let Some(a) = self.also.get(rel)
        {
            sel.also.clone_from(a);
        }
        FilePlan::Data {
            seg,
            blocks,
            tail,
            sel,
        }
    }

    /// Every unit of work of the listing, biggest first, and each path's shape.
    pub fn plan(&self, listing: &Listing) -> Plan {
        let blcksz = u64::from(self.blcksz);
        let mut units = Vec::new();
        let mut shapes = vec![NOT_DATA; listing.len()];
        let mut tails = Vec::new();
        for (i, (rel, item)) in listing.iter().enumerate() {
            let Item::File(size, id) = item else { continue };
            let pos = i as u32;
            let FilePlan::Data {
                blocks, tail, sel, ..
            } = self.file(&rel, size, id)
            else {
                units.push(Unit {
                    pos,
                    what: WHOLE,
                    weight: size,
                });
                continue;
            };
            shapes[i] = if sel.since.is_none() { DATA_BASE } else { DATA };
            if tail > 0 {
                tails.push((pos, tail));
                units.push(Unit {
                    pos,
                    what: TAIL,
                    weight: u64::from(tail),
                });
            }
            let mut start = 0;
            while start < blocks {
                let end = (start + PART_BLOCKS).min(blocks);
                let n = sel.blocks.as_ref().map_or(end - start, |l| {
                    l.iter().filter(|&&b| b >= start && b < end).count() as u32
                });
                if n > 0 {
                    units.push(Unit {
                        pos,
                        what: start,
                        weight: u64::from(n) * blcksz,
                    });
                }
                start = end;
            }
        }
        units.shrink_to_fit();
        units.sort_by_key(|u| std::cmp::Reverse(u.weight));
        let total = units.iter().map(|u| u.weight).sum();
        Plan {
            units,
            total,
            shapes,
            tails,
        }
    }
}

/// Which blocks of a main-fork segment to read and keep.
fn select(
    mode: Mode,
    parent: Option<(&BackupInfo, u32)>,
    listed: Option<&Vec<u32>>,
    blocks: u32,
) -> Select {
    match (mode, parent) {
        (Mode::Full, _) | (_, None) => Select {
            blocks: None,
            since: None,
            keep_read: true,
            new_from: 0,
            also: Vec::new(),
        },
        (Mode::Delta, Some((p, pb))) => Select {
            blocks: None,
            since: Some(p.start_lsn),
            keep_read: false,
            new_from: pb,
            also: Vec::new(),
        },
        (Mode::Ptrack | Mode::Wal, Some((p, pb))) => {
            let mut list = listed.cloned().unwrap_or_default();
            list.retain(|&b| b < pb.min(blocks));
            list.extend(pb..blocks);
            Select {
                blocks: Some(list),
                since: Some(p.start_lsn),
                keep_read: true,
                new_from: pb,
                also: Vec::new(),
            }
        }
    }
}
