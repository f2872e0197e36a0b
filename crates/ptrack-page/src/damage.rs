//! The corruption simulator: damages one block of a relation file in a chosen way, so tests (and
//! the hidden `ptrack debug corrupt` command) can check that `ptrack verify` reports exactly that
//! block. This is a test tool: it writes the damaged block back in place and fsyncs the file.
//!
//! Every kind is built so that it is detectable by a known rule: header damage breaks
//! `pd_lower <= pd_upper`; line-pointer damage makes the first tuple's pointer unaligned and past
//! `pd_special`; tuple-header damage makes `t_hoff` unaligned; tuple-data damage flips a data byte
//! (found only by checksums); checksum damage changes only `pd_checksum`.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::checksum::pg_checksum_page;
use crate::page::{LinePointer, LpFlags, PD_CHECKSUM_OFFSET, PageHeader, le16};

/// A kind of simulated damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DamageKind {
    /// Page header: `pd_lower` moved above `pd_upper`.
    Header,
    /// Line pointer array: the first tuple's pointer made unaligned and out of the page.
    LinePointer,
    /// Tuple header: the first tuple's `t_hoff` made unaligned.
    TupleHeader,
    /// One byte of the first tuple's data flipped.
    TupleData,
    /// Only the `pd_checksum` field changed.
    Checksum,
}

impl DamageKind {
    /// All kinds.
    pub const ALL: [DamageKind; 5] = [
        DamageKind::Header,
        DamageKind::LinePointer,
        DamageKind::TupleHeader,
        DamageKind::TupleData,
        DamageKind::Checksum,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::Header => "header",
            DamageKind::LinePointer => "line-pointer",
            DamageKind::TupleHeader => "tuple-header",
            DamageKind::TupleData => "tuple-data",
            DamageKind::Checksum => "checksum",
        }
    }

    /// Whether `ptrack verify` can see this damage without data checksums.
    pub fn detectable_without_checksums(self) -> bool {
        !matches!(self, DamageKind::TupleData | DamageKind::Checksum)
    }
}

impl std::str::FromStr for DamageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DamageKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown damage kind {s:?}: expected header, line-pointer, tuple-header, tuple-data or checksum")
            })
    }
}

/// Why a block could not be damaged as asked.
#[derive(Debug, thiserror::Error)]
pub enum DamageError {
    /// I/O on the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The page has no header or no tuple to damage.
    #[error("block {block} of {path}: {why}")]
    Unsuitable {
        /// The file.
        path: String,
        /// Block within the file.
        block: u32,
        /// Why.
        why: &'static str,
    },
}

/// First `LP_NORMAL` line pointer of a page and its number.
fn first_tuple(page: &[u8]) -> Option<(usize, LinePointer)> {
    let h = PageHeader::parse(page)?;
    (1..=h.line_pointer_count())
        .filter_map(|i| LinePointer::read(page, i).map(|lp| (i, lp)))
        .find(|(_, lp)| {
            lp.flags == LpFlags::Normal
                && lp.len >= 24
                && usize::from(lp.off) + usize::from(lp.len) <= page.len()
        })
}

/// Damages `page` (a page of absolute block `blkno`) in place. Returns a description of what
/// was changed, or why the page cannot take this kind of damage.
pub fn damage_page(page: &mut [u8], blkno: u32, kind: DamageKind) -> Result<String, &'static str> {
    let h = PageHeader::parse(page).ok_or("page shorter than its header")?;
    if h.is_new() {
        return Err("page is new (all zero); nothing to damage");
    }
    match kind {
        DamageKind::Header => {
            let lower = h.upper.saturating_add(8);
            page[12..14].copy_from_slice(&lower.to_le_bytes());
            Ok(format!(
                "pd_lower {} -> {lower} (above pd_upper {})",
                h.lower, h.upper
            ))
        }
        DamageKind::LinePointer => {
            let (i, lp) = first_tuple(page).ok_or("page has no tuple")?;
            let bad = LinePointer {
                off: h.special.saturating_sub(1) & 0x7FFF,
                ..lp
            };
            let at = 24 + (i - 1) * 4;
            page[at..at + 4].copy_from_slice(&bad.to_raw().to_le_bytes());
            Ok(format!(
                "line pointer {i}: lp_off {} -> {}",
                lp.off, bad.off
            ))
        }
        DamageKind::TupleHeader => {
            let (i, lp) = first_tuple(page).ok_or("page has no tuple")?;
            let at = usize::from(lp.off) + 22;
            let old = page[at];
            page[at] = old.wrapping_add(3) | 1;
            Ok(format!("tuple {i}: t_hoff {old} -> {}", page[at]))
        }
        DamageKind::TupleData => {
            let (i, lp) = first_tuple(page).ok_or("page has no tuple")?;
            let hoff = usize::from(page[usize::from(lp.off) + 22]);
            if hoff >= usize::from(lp.len) {
                return Err("first tuple has no data bytes");
            }
            let at = usize::from(lp.off) + hoff;
            let old = page[at];
            // Pick a change the checksum sees (a 16-bit checksum could, rarely, collide).
            for mask in 1..=255u8 {
                page[at] = old ^ mask.rotate_left(7);
                if pg_checksum_page(page, blkno) != h.checksum {
                    return Ok(format!(
                        "tuple {i}: data byte at offset {at}: 0x{old:02X} -> 0x{:02X}",
                        page[at]
                    ));
                }
            }
            page[at] = old;
            Err("no single-byte change of the data alters the checksum")
        }
        DamageKind::Checksum => {
            let old = le16(page, PD_CHECKSUM_OFFSET).unwrap_or(0);
            let new = old ^ 0x5A5A;
            page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&new.to_le_bytes());
            Ok(format!("pd_checksum 0x{old:04X} -> 0x{new:04X}"))
        }
    }
}

/// Damages block `block` (within the file) of the relation segment file `path`; `blcksz` and
/// `relseg_size` come from pg_control, `segno` is the file's segment number. Writes the block back
/// and fsyncs the file. Returns what was changed.
pub fn damage_block(
    path: &Path,
    segno: u32,
    block: u32,
    blcksz: usize,
    relseg_size: u32,
    kind: DamageKind,
) -> Result<String, DamageError> {
    let shown = path.display().to_string();
    let io_err = |source| DamageError::Io {
        path: shown.clone(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let mut page = vec![0u8; blcksz];
    let offset = u64::from(block) * blcksz as u64;
    f.read_exact_at(&mut page, offset).map_err(io_err)?;
    let abs = segno.wrapping_mul(relseg_size).wrapping_add(block);
    let what = damage_page(&mut page, abs, kind).map_err(|why| DamageError::Unsuitable {
        path: shown.clone(),
        block,
        why,
    })?;
    f.write_all_at(&page, offset).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(what)
}
