//! Restoring a backup's WAL into `pg_wal`: each stored segment written piece by piece as it is
//! read from its bundle (its BLAKE3 checked at the end; a segment is never held whole; the
//! zeros after a segment switch, not stored, written out again), with
//! the WAL after the backup's consistency point zeroed when the restore has no recovery target
//! and no `restore_command` (`xlogrecovery.c` would otherwise replay records written after the
//! backup ended).

use std::io::Write;

use super::Places;
use crate::{Error, Fault, Result};
use ptrack_format::bundle::BundleReader;
use ptrack_format::manifest::{EntryKind, Manifest, WalEntry};
use ptrack_format::paths::RelPath;

/// Writes a stored WAL segment (or history file) into `pg_wal`, piece by piece (a segment is
/// never held whole), zeroing what follows the consistency point when `cut`.
pub(super) fn write_wal(
    readers: &mut [BundleReader],
    wal: &WalEntry,
    m: &Manifest,
    places: &Places,
    cut: bool,
) -> Result<u64> {
    let entry = &wal.entry;
    let EntryKind::File {
        size,
        digest,
        stored: Some(st),
    } = entry.kind
    else {
        return Err(Error::backup(
            &m.backup_id,
            Fault::WalNotStored(entry.path.to_string()),
        ));
    };
    let path = RelPath::new("pg_wal")
        .expect("plain")
        .join(entry.path.as_bytes())
        .map_err(|e| {
            Error::backup(
                &m.backup_id,
                Fault::WalNotStored(format!("{} ({e})", entry.path)),
            )
        })?;
    let cut_at = if cut {
        consistency_offset(&entry.path, m)
    } else {
        None
    };
    let (mut f, shown) = places.create_bulk(&path, size)?;
    readers[0]
        .blob_stream_zero_tail(st, size, wal.zero_tail, digest, |off, piece| {
            if let Some(c) = cut_at {
                let from = c.saturating_sub(off).min(piece.len() as u64) as usize;
                piece[from..].fill(0);
            }
            f.write_all(piece)
                .map_err(|e| Error::io(&shown, "write", e))
        })
        .map_err(|err| match err {
            Error::Repo(cause) if cause.is_damage() => Error::backup(
                &m.backup_id,
                Fault::File {
                    path: path.to_string(),
                    cause: Box::new(cause),
                },
            ),
            other => other,
        })?;
    places.finish_bulk(f, &shown)
}

/// Where the WAL after the backup's consistency point starts in segment `name`, when that
/// segment holds it: the stored copy was read after the backup ended and may hold later
/// records, which a restore without a target must not replay (they are zeroed). Not done with
/// a recovery target or a `restore_command`: `immediate` stops at the first record after
/// consistency (there must be one), and archive recovery goes further on purpose.
fn consistency_offset(name: &RelPath, m: &Manifest) -> Option<u64> {
    let seg = m.wal_seg_size;
    let end = m.consistent();
    let s = name
        .as_str()
        .and_then(|n| ptrack_wal::segment::SegmentName::parse(n, seg))?;
    (s.segno == seg.segno(end) && seg.offset(end) != 0).then_some(seg.offset(end))
}
