//! Bundles: the files holding a backup's stored pages, whole files and page indexes. Each backup
//! worker appends to its own bundle, so a backup writes a handful of large files, each fsynced
//! once. Layout (docs/formats.md): a 16-byte header (`PTRKBNDL`, version u32 LE, compression u32
//! LE), then records at the offsets the manifest and the page indexes give:
//!
//! * a page: the page compressed on its own (or raw when that is not smaller);
//! * a whole file: the content compressed as one block;
//! * a page index: [`PageEntry::SIZE`]-byte entries (block, flags, pd_checksum, pd_lsn, offset,
//!   length, CRC-32C of the page), its own CRC-32C kept in the manifest.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use ptrack_repo::{Key, ObjectReader, ObjectWriter, Storage};

use crate::envelope::storage_io;

use crate::error::At;
use crate::paths::Digest;
pub use crate::stored::Compression;
use crate::stored::{IndexRef, Stored};
use crate::{BundleError, Error, Result};

/// Largest whole file a bundle record may hold (WAL segments are at most 1 GiB).
const MAX_BLOB: usize = 1 << 31;

/// Bundle magic.
pub const MAGIC: &[u8; 8] = b"PTRKBNDL";
/// Bundle format version.
pub const VERSION: u32 = 1;
/// Header bytes.
pub const HEADER_SIZE: u64 = 16;

/// The page is stored compressed.
pub const FLAG_COMPRESSED: u16 = 1;
/// The page is all zeros; nothing is stored for it.
pub const FLAG_ZERO: u16 = 2;
/// The page failed verification and was kept because of `--allow-corruption`.
pub const FLAG_CORRUPT: u16 = 4;

/// One stored page in a page index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEntry {
    /// Block number within the segment file.
    pub block: u32,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// `pd_checksum` as stored in the page.
    pub checksum: u16,
    /// `pd_lsn`.
    pub lsn: u64,
    /// Offset in the bundle.
    pub offset: u64,
    /// Stored length.
    pub len: u32,
    /// CRC-32C of the (uncompressed) page.
    pub crc: u32,
}

impl PageEntry {
    /// Encoded size.
    pub const SIZE: usize = 32;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.block.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    fn decode(b: &[u8]) -> PageEntry {
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        PageEntry {
            block: u32at(0),
            flags: u16::from_le_bytes([b[4], b[5]]),
            checksum: u16::from_le_bytes([b[6], b[7]]),
            lsn: u64at(8),
            offset: u64at(16),
            len: u32at(24),
            crc: u32at(28),
        }
    }
}

/// The key of bundle `n` of the backup whose objects are below `dir`.
pub fn bundle_key(dir: &Key, n: u32) -> Result<Key> {
    Ok(dir.join(&format!("bundle.{n}"))?)
}

/// Compresses with a reusable context.
pub struct Compressor {
    kind: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl Compressor {
    /// A compressor of `kind`.
    pub fn new(kind: Compression) -> Compressor {
        let zstd = (kind == Compression::Zstd)
            .then(|| zstd::bulk::Compressor::new(1).expect("zstd level 1"));
        Compressor {
            kind,
            zstd,
            buf: Vec::new(),
        }
    }

    /// Compresses `data`; `None` when compression does not make it smaller.
    fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        let n = match self.kind {
            Compression::None => return None,
            Compression::Lz4 => {
                self.buf
                    .resize(lz4_flex::block::get_maximum_output_size(data.len()), 0);
                lz4_flex::block::compress_into(data, &mut self.buf).ok()?
            }
            Compression::Zstd => {
                self.buf
                    .resize(zstd::zstd_safe::compress_bound(data.len()), 0);
                self.zstd
                    .as_mut()?
                    .compress_to_buffer(data, &mut self.buf)
                    .ok()?
            }
        };
        (n < data.len()).then(|| &self.buf[..n])
    }
}

/// Appends records to one bundle.
pub struct BundleWriter {
    number: u32,
    out: BufWriter<Box<dyn ObjectWriter>>,
    pos: u64,
    comp: Compressor,
    key: Key,
}

impl BundleWriter {
    /// Starts `bundle.<number>` below `dir` (invisible until [`BundleWriter::finish`]).
    pub fn create(
        store: &dyn Storage,
        dir: &Key,
        number: u32,
        kind: Compression,
    ) -> Result<BundleWriter> {
        let key = bundle_key(dir, number)?;
        let f = store.writer(&key)?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&kind.code().to_le_bytes());
        out.write_all(&h)
            .map_err(|e| storage_io(&key, "write", e))?;
        Ok(BundleWriter {
            number,
            out,
            pos: HEADER_SIZE,
            comp: Compressor::new(kind),
            key,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<Stored> {
        write_at_end(&mut self.out, &mut self.pos, self.number, &self.key, bytes)
    }

    /// Appends `data`, compressed when that makes it smaller (without copying the compressed
    /// bytes); returns whether it was compressed and where it is.
    fn append_compressed(&mut self, data: &[u8]) -> Result<(bool, Stored)> {
        let BundleWriter {
            number,
            out,
            pos,
            comp,
            key,
        } = self;
        match comp.compress(data) {
            Some(c) => Ok((true, write_at_end(out, pos, *number, key, c)?)),
            None => Ok((false, write_at_end(out, pos, *number, key, data)?)),
        }
    }

    /// Stores a page; returns its index entry (block and verification flags filled by the caller).
    pub fn put_page(&mut self, page: &[u8], block: u32) -> Result<PageEntry> {
        let crc = crc32c::crc32c(page);
        let lsn = ptrack_page::page::PageHeader::parse(page).map_or(0, |h| h.lsn.0);
        let checksum = u16::from_le_bytes([page[8], page[9]]);
        if page.iter().all(|&b| b == 0) {
            return Ok(PageEntry {
                block,
                flags: FLAG_ZERO,
                checksum,
                lsn,
                offset: 0,
                len: 0,
                crc,
            });
        }
        let (compressed, s) = self.append_compressed(page)?;
        Ok(PageEntry {
            block,
            flags: if compressed { FLAG_COMPRESSED } else { 0 },
            checksum,
            lsn,
            offset: s.offset,
            len: s.len as u32,
            crc,
        })
    }

    /// Stores a whole file's content.
    pub fn put_blob(&mut self, data: &[u8]) -> Result<Stored> {
        Ok(self.append_compressed(data)?.1)
    }

    /// Stores a file's content read from `r` as it comes, uncompressed (a record as long as its
    /// file is raw), in pieces of at most [`STREAM_PIECE`] bytes, so that no large file is held
    /// whole; `each(offset, piece)` sees every piece (to hash it). Returns where it is.
    pub fn put_stream(
        &mut self,
        r: &mut impl std::io::Read,
        src: &Path,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<Stored> {
        let start = self.pos;
        let mut buf = vec![0u8; STREAM_PIECE];
        loop {
            let n = match read_some(r, &mut buf, src)? {
                0 => break,
                n => n,
            };
            each(self.pos - start, &buf[..n]);
            self.append(&buf[..n])?;
        }
        Ok(Stored {
            bundle: self.number,
            offset: start,
            len: self.pos - start,
        })
    }

    /// [`BundleWriter::put_stream`] without the zeros the content ends with (what follows a WAL
    /// segment switch): returns where the stored bytes are and how many zero bytes followed
    /// them. Zeros inside the content are stored; `each` sees every piece read, zeros included.
    pub fn put_stream_trim_zeros(
        &mut self,
        r: &mut impl std::io::Read,
        src: &Path,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(Stored, u64)> {
        let start = self.pos;
        let mut buf = vec![0u8; STREAM_PIECE];
        // Bytes read so far, and how many of the last of them are zeros not yet written.
        let (mut read, mut zeros) = (0u64, 0u64);
        loop {
            let n = match read_some(r, &mut buf, src)? {
                0 => break,
                n => n,
            };
            each(read, &buf[..n]);
            read += n as u64;
            match last_nonzero(&buf[..n]) {
                None => zeros += n as u64,
                Some(last) => {
                    self.append_zeros(zeros)?;
                    self.append(&buf[..=last])?;
                    zeros = (n - last - 1) as u64;
                }
            }
        }
        let stored = Stored {
            bundle: self.number,
            offset: start,
            len: self.pos - start,
        };
        Ok((stored, zeros))
    }

    fn append_zeros(&mut self, mut n: u64) -> Result<()> {
        let zeros = [0u8; 1 << 14];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.append(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Stores a page index.
    pub fn put_index(&mut self, entries: &[PageEntry]) -> Result<IndexRef> {
        let mut b = Vec::with_capacity(entries.len() * PageEntry::SIZE);
        for e in entries {
            e.encode(&mut b);
        }
        let at = self.append(&b)?;
        Ok(IndexRef {
            at,
            count: entries.len() as u32,
            digest: Digest::of(&b),
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.pos
    }

    /// Makes the bundle visible and durable; returns its size.
    pub fn finish(self) -> Result<u64> {
        let key = self.key.clone();
        let f = self
            .out
            .into_inner()
            .map_err(|e| storage_io(&key, "write", e.into_error()))?;
        f.finish()?;
        Ok(self.pos)
    }
}

fn write_at_end(
    out: &mut BufWriter<Box<dyn ObjectWriter>>,
    pos: &mut u64,
    number: u32,
    key: &Key,
    bytes: &[u8],
) -> Result<Stored> {
    out.write_all(bytes)
        .map_err(|e| storage_io(key, "write", e))?;
    let s = Stored {
        bundle: number,
        offset: *pos,
        len: bytes.len() as u64,
    };
    *pos += bytes.len() as u64;
    Ok(s)
}

/// Pieces a large file is stored and read in ([`BundleWriter::put_stream`],
/// [`BundleReader::blob_stream`]).
pub const STREAM_PIECE: usize = 1 << 20;

/// Where record `s` starts.
fn at(s: Stored) -> At {
    At {
        bundle: s.bundle,
        offset: s.offset,
    }
}

/// One `read` into `buf`, again when interrupted; 0 at the end.
fn read_some(r: &mut impl std::io::Read, buf: &mut [u8], src: &Path) -> Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map_err(|e| Error::io(src, "read", e)),
        }
    }
}

/// The index of the last byte of `b` that is not zero (64 bytes at a time: this scans 16 MB of
/// a switched WAL segment's zeros).
fn last_nonzero(b: &[u8]) -> Option<usize> {
    let whole = b.len() / 64 * 64;
    if let Some(i) = b[whole..].iter().rposition(|&x| x != 0) {
        return Some(whole + i);
    }
    let block = b[..whole]
        .chunks_exact(64)
        .rposition(|c| c.iter().fold(0u8, |a, &x| a | x) != 0)?;
    let at = block * 64;
    b[at..at + 64].iter().rposition(|&x| x != 0).map(|i| at + i)
}

/// The largest gap between records still read as one sequential read, as a fraction of the
/// backend's read-ahead (pages superseded by a newer backup are skipped over).
const GAP_FRACTION: u64 = 8;

/// Reads records from a backup's bundles. Records read in the order they were stored, or with
/// small gaps (a restore or validate reads page after page, skipping pages a newer backup
/// replaces), come from one read of the backend's read-ahead (hundreds of KiB from a file,
/// megabytes from object storage) instead of one request each; others are read exactly.
pub struct BundleReader {
    store: Arc<dyn Storage>,
    dir: Key,
    kind: Compression,
    files: Vec<Option<(Box<dyn ObjectReader>, u64)>>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    buf: Vec<u8>,
    /// Bytes read ahead: bundle, offset of `ahead[0]`.
    ahead_at: (u32, u64),
    ahead: Vec<u8>,
    /// Where the last record read ended (bundle, offset).
    last_end: (u32, u64),
}

impl BundleReader {
    /// A reader for the bundles of the backup whose objects are below `dir`.
    pub fn new(store: Arc<dyn Storage>, dir: &Key, kind: Compression) -> BundleReader {
        BundleReader {
            store,
            dir: dir.clone(),
            kind,
            files: Vec::new(),
            zstd: None,
            buf: Vec::new(),
            ahead_at: (0, 0),
            ahead: Vec::new(),
            last_end: (u32::MAX, 0),
        }
    }

    /// Bundle `n`, opened and checked once, with its length.
    fn file(&mut self, n: u32) -> Result<(&dyn ObjectReader, u64)> {
        // Checked before the table grows: a bundle number from a damaged manifest must not size
        // it (u32::MAX would be 16 GiB of slots).
        if n > 4096 {
            return Err(BundleError::ImplausibleNumber(n).into());
        }
        let i = n as usize;
        if self.files.len() <= i {
            self.files.resize_with(i + 1, || None);
        }
        if self.files[i].is_none() {
            let p = bundle_key(&self.dir, n)?;
            let f = self.store.open(&p)?;
            let mut h = [0u8; 16];
            f.read_at(&mut h, 0)?;
            if &h[..8] != MAGIC
                || u32::from_le_bytes(h[8..12].try_into().expect("4")) != VERSION
                || Compression::from_code(u32::from_le_bytes(h[12..16].try_into().expect("4")))
                    != Some(self.kind)
            {
                return Err(BundleError::BadHeader {
                    key: p.to_string(),
                    version: VERSION,
                    compression: self.kind.name(),
                }
                .into());
            }
            let len = f.len();
            self.files[i] = Some((f, len));
        }
        let (f, len) = self.files[i].as_ref().expect("opened");
        Ok((&**f, *len))
    }

    fn read_range(&mut self, s: Stored) -> Result<Vec<u8>> {
        let (f, flen) = self.file(s.bundle)?;
        let read_ahead = f.read_ahead() as u64;
        let len = s
            .offset
            .checked_add(s.len)
            .filter(|&end| s.offset >= HEADER_SIZE && end <= flen)
            .map(|_| s.len as usize)
            .ok_or_else(|| {
                Error::from(BundleError::Outside {
                    at: at(s),
                    len: s.len,
                    bundle_len: flen,
                })
            })?;
        // In order, or a little ahead (pages superseded by a newer backup are skipped).
        let sequential = self.last_end.0 == s.bundle
            && s.offset >= self.last_end.1
            && s.offset - self.last_end.1 <= read_ahead / GAP_FRACTION;
        self.last_end = (s.bundle, s.offset + s.len);
        let (ab, ao) = self.ahead_at;
        if ab == s.bundle && s.offset >= ao && s.offset + s.len <= ao + self.ahead.len() as u64 {
            let from = (s.offset - ao) as usize;
            return Ok(self.ahead[from..from + len].to_vec());
        }
        // Opened above (`file`); the fields are borrowed apart so the window can be filled.
        let f = &self.files[s.bundle as usize].as_ref().expect("opened").0;
        let read = |buf: &mut [u8]| f.read_at(buf, s.offset).map_err(Error::from);
        if !sequential || s.len >= read_ahead {
            let mut out = vec![0u8; len];
            read(&mut out)?;
            return Ok(out);
        }
        let window = read_ahead.min(flen - s.offset) as usize;
        self.ahead.resize(window, 0);
        read(&mut self.ahead)?;
        self.ahead_at = (s.bundle, s.offset);
        Ok(self.ahead[..len].to_vec())
    }

    fn decompress(&mut self, data: &[u8], size: usize, out: &mut Vec<u8>) -> bool {
        out.resize(size, 0);
        let n = match self.kind {
            Compression::None => return false,
            Compression::Lz4 => lz4_flex::block::decompress_into(data, out).ok(),
            Compression::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = zstd::bulk::Decompressor::new().ok();
                }
                self.zstd
                    .as_mut()
                    .and_then(|z| z.decompress_to_buffer(data, out.as_mut_slice()).ok())
            }
        };
        n == Some(size)
    }

    /// Reads and checks a page index.
    pub fn index(&mut self, r: &IndexRef) -> Result<Vec<PageEntry>> {
        let b = self.read_range(r.at)?;
        if b.len() != r.count as usize * PageEntry::SIZE || Digest::of(&b) != r.digest {
            return Err(BundleError::IndexDigest(at(r.at)).into());
        }
        Ok(b.chunks_exact(PageEntry::SIZE)
            .map(PageEntry::decode)
            .collect())
    }

    /// Reads page `e` of an index stored in `bundle` (a part's pages are in its index's bundle)
    /// into `out` (BLCKSZ bytes) and checks its CRC.
    pub fn page(
        &mut self,
        bundle: u32,
        e: &PageEntry,
        blcksz: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if e.flags & FLAG_ZERO != 0 {
            out.clear();
            out.resize(blcksz, 0);
        } else {
            let raw = self.read_range(Stored {
                bundle,
                offset: e.offset,
                len: u64::from(e.len),
            })?;
            if e.flags & FLAG_COMPRESSED != 0 {
                let mut tmp = std::mem::take(&mut self.buf);
                let ok = self.decompress(&raw, blcksz, &mut tmp);
                *out = tmp;
                if !ok {
                    return Err(BundleError::PageDecompress(e.block).into());
                }
            } else {
                *out = raw;
            }
        }
        if out.len() != blcksz || crc32c::crc32c(out) != e.crc {
            return Err(BundleError::PageCrc(e.block).into());
        }
        Ok(())
    }

    /// Reads a file stored at `s` with `size` bytes and BLAKE3 `digest` piece by piece:
    /// `each(offset, piece)` for pieces of at most [`STREAM_PIECE`] bytes when it is stored raw
    /// (nothing larger is held), or once with the whole content when it is compressed. The
    /// digest is checked after the last piece: a caller that wrote pieces out must treat an
    /// error as making them worthless. `each`'s errors are the caller's own, passed through.
    pub fn blob_stream<E: From<Error>>(
        &mut self,
        s: Stored,
        size: u64,
        digest: Digest,
        each: impl FnMut(u64, &mut [u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.blob_stream_zero_tail(s, size, 0, digest, each)
    }

    /// [`BundleReader::blob_stream`] of a file whose last `zero_tail` bytes are zeros that were
    /// not stored ([`BundleWriter::put_stream_trim_zeros`]): the stored record is raw and
    /// `size - zero_tail` long; the zeros are produced (and hashed) after it.
    pub fn blob_stream_zero_tail<E: From<Error>>(
        &mut self,
        s: Stored,
        size: u64,
        zero_tail: u64,
        digest: Digest,
        mut each: impl FnMut(u64, &mut [u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.check_stream(s, size, zero_tail)?;
        if zero_tail == 0 && s.len != size {
            let mut data = self.blob(s, size, digest)?;
            return each(0, &mut data);
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; STREAM_PIECE.min(size as usize)];
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(STREAM_PIECE as u64) as usize;
            // Stored bytes, then zeros.
            let from_file = s.len.saturating_sub(done).min(n as u64) as usize;
            if from_file > 0 {
                let f = &self.files[s.bundle as usize].as_ref().expect("opened").0;
                f.read_at(&mut buf[..from_file], s.offset + done)
                    .map_err(Error::from)?;
            }
            buf[from_file..n].fill(0);
            hasher.update(&buf[..n]);
            each(done, &mut buf[..n])?;
            done += n as u64;
        }
        if Digest(*hasher.finalize().as_bytes()) != digest {
            return Err(Error::from(BundleError::FileDigest(at(s))).into());
        }
        Ok(())
    }

    /// The checks of a streamed record before its first piece: its length and zero tail add
    /// up to the file's size, and a raw one lies inside its bundle (which is opened).
    fn check_stream(&mut self, s: Stored, size: u64, zero_tail: u64) -> Result<()> {
        if zero_tail == 0 && s.len != size {
            return Ok(());
        }
        if s.len.checked_add(zero_tail) != Some(size) {
            return Err(BundleError::WrongSize {
                at: at(s),
                len: s.len,
                zero_tail,
                size,
            }
            .into());
        }
        let (_, flen) = self.file(s.bundle)?;
        if s.offset < HEADER_SIZE || s.offset.checked_add(s.len).is_none_or(|e| e > flen) {
            return Err(BundleError::Outside {
                at: at(s),
                len: s.len,
                bundle_len: flen,
            }
            .into());
        }
        Ok(())
    }

    /// Bytes `off..off + n` of the record at `s` as stored (of a raw record: of the file),
    /// checked against the record and the bundle; the caller checks the whole record's digest.
    pub fn record_piece(&mut self, s: Stored, off: u64, n: u64) -> Result<Vec<u8>> {
        if off.checked_add(n).is_none_or(|end| end > s.len) {
            return Err(BundleError::PieceOutside {
                start: off,
                len: n,
                at: at(s),
            }
            .into());
        }
        self.read_range(Stored {
            bundle: s.bundle,
            offset: s.offset + off,
            len: n,
        })
    }

    /// Reads a whole file stored at `s` with `size` bytes and BLAKE3 `digest`.
    pub fn blob(&mut self, s: Stored, size: u64, digest: Digest) -> Result<Vec<u8>> {
        let raw = self.read_range(s)?;
        let data = if raw.len() as u64 == size {
            raw
        } else {
            let size = usize::try_from(size)
                .ok()
                .filter(|&n| n <= MAX_BLOB)
                .ok_or_else(|| Error::from(BundleError::ImplausibleSize(size)))?;
            let mut out = Vec::new();
            if !self.decompress(&raw, size, &mut out) {
                return Err(BundleError::FileDecompress {
                    at: at(s),
                    size: size as u64,
                }
                .into());
            }
            out
        };
        if Digest::of(&data) != digest {
            return Err(BundleError::FileDigest(at(s)).into());
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests;
