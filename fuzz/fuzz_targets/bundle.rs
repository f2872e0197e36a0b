//! Fuzz target: `BundleReader` (`index`, `page`, `blob`, `blob_stream`, `blob_stream_zero_tail`, `record_piece`) on a bundle file of any bytes never
//! panics and never allocates more than the bundle (or a bounded decompressed size).
//!
//! Input: 32 control bytes, then the file. Control bytes (little-endian numbers):
//!
//! ```text
//! 0       bits 0-1 the compression the reader expects (0 none, 2 zstd, else lz4); bit 2 a valid
//!         header is put in front of the file (else the file is the bytes as given); bit 3 the
//!         records are read from bundle number [27..31) (else bundle 0)
//! 1..5    index offset (modulo the file length + 1; anywhere when bit 7 of byte 5 is set)
//! 5       bits 0-6 index entry count; its BLAKE3 digest is computed from the file, so that
//!         the entries themselves are decoded and read as pages (at most 64)
//! 6       flags of the fourth page entry; modulo 3 the page size (8192, 1024, 32768) of
//!         every page read
//! 7..11   page offset (the first of four pages; the others rotate it)
//! 11..13  page length, shifted left by [13] & 15
//! 14..18  stored file offset, 18..22 its length
//! 22      bit 0: the stored file is compressed to the size in [23..27) (bounded to 1 MiB);
//!         else its size is its length
//! 27..31  page CRC-32C (and bundle number, see byte 0)
//! ```
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ptrack_format::bundle::{
    BundleReader, Compression, FLAG_COMPRESSED, FLAG_ZERO, MAGIC, PageEntry, VERSION,
};
use ptrack_format::manifest::{IndexRef, Stored};
use ptrack_format::paths::Digest;

/// Control bytes before the file.
const CONTROL: usize = 32;
const BLCKSZ: [usize; 3] = [8192, 1024, 32768];
/// Largest decompressed size asked of `blob` (the manifest's size is an input too).
const MAX_BLOB: u64 = 1 << 20;

fn u32_at(c: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]])
}

fn digest_of(file: &[u8], s: Stored) -> Digest {
    let r = usize::try_from(s.offset).ok().and_then(|o| {
        let e = o.checked_add(usize::try_from(s.len).ok()?)?;
        file.get(o..e)
    });
    r.map_or(Digest([0; 32]), Digest::of)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < CONTROL {
        return;
    }
    let (c, rest) = data.split_at(CONTROL);
    let kind = match c[0] & 3 {
        0 => Compression::None,
        2 => Compression::Zstd,
        _ => Compression::Lz4,
    };
    let mut file = Vec::with_capacity(rest.len() + 16);
    if c[0] & 4 != 0 {
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&VERSION.to_le_bytes());
        file.extend_from_slice(&u32::from(c[0] & 3).min(2).to_le_bytes());
    }
    file.extend_from_slice(rest);
    // One store for the whole run; b/bundle.0 is rewritten for each input.
    static MEM: OnceLock<ptrack_repo::memory::MemStore> = OnceLock::new();
    let mem = MEM.get_or_init(ptrack_repo::memory::MemStore::new);
    let dir = ptrack_repo::Key::new("b").unwrap();
    ptrack_repo::Storage::put(mem, &dir.join("bundle.0").unwrap(), &file).unwrap();
    let bundle = if c[0] & 8 != 0 { u32_at(c, 27) } else { 0 };
    let flen = file.len() as u64;
    // Offsets mostly inside the file, sometimes anywhere.
    let place = |v: u32, wild: bool| -> u64 {
        if wild || flen == 0 {
            u64::from(v) << (v & 31)
        } else {
            u64::from(v) % (flen + 1)
        }
    };
    let mut r = BundleReader::new(std::sync::Arc::new(mem.clone()), &dir, kind);
    let blcksz = BLCKSZ[usize::from(c[6]) % BLCKSZ.len()];

    // An index, and its entries as pages.
    let count = u32::from(c[5] & 0x7f);
    let at = Stored {
        bundle,
        offset: place(u32_at(c, 1), c[5] & 0x80 != 0),
        len: u64::from(count) * PageEntry::SIZE as u64,
    };
    let idx = IndexRef {
        at,
        count,
        digest: digest_of(&file, at),
    };
    let mut out = Vec::new();
    if let Ok(entries) = r.index(&idx) {
        assert_eq!(entries.len(), count as usize);
        for e in entries.iter().take(64) {
            let _ = r.page(bundle, e, blcksz, &mut out);
        }
    }

    // Pages placed by the control bytes: raw, compressed, all-zero, and flags as given.
    let len = u32::from(u16::from_le_bytes([c[11], c[12]])) << (c[13] & 15);
    for (i, flags) in [0, FLAG_COMPRESSED, FLAG_ZERO, c[6].into()]
        .into_iter()
        .enumerate()
    {
        let e = PageEntry {
            block: i as u32,
            flags,
            checksum: 0,
            lsn: 0,
            offset: place(u32_at(c, 7).rotate_left(i as u32 * 8), false),
            len,
            crc: u32_at(c, 27),
        };
        if r.page(bundle, &e, blcksz, &mut out).is_ok() {
            assert_eq!(out.len(), blcksz);
        }
    }

    // A stored file: raw (size = length) or compressed to a bounded size.
    let s = Stored {
        bundle,
        offset: place(u32_at(c, 14), false),
        len: place(u32_at(c, 18), false),
    };
    let size = if c[22] & 1 == 0 {
        s.len
    } else {
        u64::from(u32_at(c, 23)) % MAX_BLOB
    };
    let whole = r.blob(s, size, digest_of(&file, s));
    if let Ok(b) = &whole {
        assert_eq!(b.len() as u64, size);
    }
    let _ = r.blob(s, size, Digest::of(b"x"));
    // The same stored file read piece by piece: what `blob` reads, `blob_stream` reads too.
    let mut pieces = Vec::new();
    let streamed = r.blob_stream(s, size, digest_of(&file, s), |off, piece| {
        assert_eq!(off, pieces.len() as u64);
        pieces.extend_from_slice(piece);
        Ok::<(), ptrack_format::Error>(())
    });
    if let Ok(b) = &whole {
        assert!(streamed.is_ok(), "blob read it, blob_stream did not");
        assert_eq!(b, &pieces);
    }
    // The same record with zeros after it that were not stored: the stored bytes, then zeros.
    let tail = u64::from(c[27]) << 8;
    let mut zeroed = Vec::new();
    let whole_digest = usize::try_from(s.offset).ok().and_then(|o| {
        let mut b = file
            .get(o..o.checked_add(usize::try_from(s.len).ok()?)?)?
            .to_vec();
        b.resize(b.len() + tail as usize, 0);
        Some(Digest::of(&b))
    });
    let padded = r.blob_stream_zero_tail(
        s,
        s.len + tail,
        tail,
        whole_digest.unwrap_or(Digest([0; 32])),
        |off, piece| {
            assert_eq!(off, zeroed.len() as u64);
            zeroed.extend_from_slice(piece);
            Ok::<(), ptrack_format::Error>(())
        },
    );
    if let Ok(b) = &whole
        && s.len == size
    {
        assert!(
            padded.is_ok(),
            "blob read it raw, blob_stream_zero_tail did not"
        );
        assert_eq!(&zeroed[..b.len()], &b[..]);
        assert!(zeroed[b.len()..].iter().all(|&x| x == 0));
    }
    let _ = r.blob_stream_zero_tail(s, size, tail + 1, digest_of(&file, s), |_, _| {
        Ok::<(), ptrack_format::Error>(())
    });
    let off = place(u32_at(c, 7), false);
    let _ = r.record_piece(s, off, u64::from(c[13]) << 4);
});
