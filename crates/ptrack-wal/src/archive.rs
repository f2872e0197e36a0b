//! What can sit in a WAL directory or archive besides plain segments: compressed segments
//! (`.gz`, `.zst`, `.lz4` frame format, as archive_command scripts and pg_receivewal write them),
//! `.partial` segments (the last, incomplete segment of a timeline), and timeline history files
//! (`src/backend/access/transam/timeline.c: readTimeLineHistory`; spec §1.6).

use std::io::Read;
use std::path::Path;

use ptrack_types::{Lsn, TimeLineId};

/// How a segment file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Compression {
    /// Plain.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
    /// LZ4 frame (`.lz4`).
    Lz4,
}

/// A file name split into its 24-hex-digit segment name, partial flag and compression.
pub fn split_segment_file_name(name: &str) -> Option<(&str, bool, Compression)> {
    let (rest, compression) = if let Some(r) = name.strip_suffix(".gz") {
        (r, Compression::Gzip)
    } else if let Some(r) = name.strip_suffix(".zst") {
        (r, Compression::Zstd)
    } else if let Some(r) = name.strip_suffix(".lz4") {
        (r, Compression::Lz4)
    } else {
        (name, Compression::None)
    };
    let (base, partial) = match rest.strip_suffix(".partial") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    (base.len() == 24).then_some((base, partial, compression))
}

/// Reads a segment file, decompressing it, and bounds it to `limit` bytes (a segment never
/// decompresses to more than its size).
pub fn read_segment_file(
    path: &Path,
    compression: Compression,
    limit: u64,
) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    if compression == Compression::None {
        // Plain: one allocation of the file's size and a direct read.
        let len = f.metadata()?.len().min(limit + 1);
        let mut out = Vec::with_capacity(len as usize);
        f.take(limit + 1).read_to_end(&mut out)?;
        return Ok(out);
    }
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(1 << 30));
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
        _ => Box::new(lz4_flex::frame::FrameDecoder::new(f)),
    };
    reader.take(limit + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// One entry of a timeline history: `tli` was in use up to `switchpoint` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The parent timeline.
    pub tli: TimeLineId,
    /// Where the child timeline branched off.
    pub switchpoint: Lsn,
}

/// Parses a `NNNNNNNN.history` file: `parentTLI<TAB>X/X<TAB>reason` per line, `#` comments and
/// blank lines ignored, timelines strictly increasing. Returns `None` on a malformed file.
pub fn parse_history(text: &str) -> Option<Vec<HistoryEntry>> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let tli: u32 = parts.next()?.parse().ok()?;
        let switchpoint: Lsn = parts.next()?.parse().ok()?;
        if out.last().is_some_and(|e| e.tli.0 >= tli) {
            return None;
        }
        out.push(HistoryEntry {
            tli: TimeLineId(tli),
            switchpoint,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_and_history() {
        assert_eq!(
            split_segment_file_name("000000010000000000000003.partial.zst"),
            Some(("000000010000000000000003", true, Compression::Zstd))
        );
        assert_eq!(
            split_segment_file_name("000000010000000000000003"),
            Some(("000000010000000000000003", false, Compression::None))
        );
        assert_eq!(split_segment_file_name("00000002.history"), None);
        let h = parse_history(
            "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tx\n",
        )
        .unwrap();
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    tli: TimeLineId(1),
                    switchpoint: Lsn(0x3000158)
                },
                HistoryEntry {
                    tli: TimeLineId(2),
                    switchpoint: Lsn(0x5000000)
                },
            ]
        );
        assert!(parse_history("2\t0/1\n1\t0/2\n").is_none());
        assert!(parse_history("x\t0/1\n").is_none());
    }

    #[test]
    fn every_compression_reads_back() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d = std::env::temp_dir().join(format!("ptrack-arch-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let gz = d.join("a.gz");
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        let zst = d.join("a.zst");
        std::fs::write(&zst, zstd::encode_all(&data[..], 3).unwrap()).unwrap();
        let lz = d.join("a.lz4");
        let mut w = lz4_flex::frame::FrameEncoder::new(std::fs::File::create(&lz).unwrap());
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        for (p, c) in [
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
            (&lz, Compression::Lz4),
        ] {
            assert_eq!(read_segment_file(p, c, 100_000).unwrap(), data);
            assert_eq!(
                read_segment_file(p, c, 1000).unwrap().len(),
                1001,
                "bounded"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
