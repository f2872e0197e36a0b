//! Loading a map file into the map's words at server start (issue 11 §2: a 1 GB map took 5–9 s
//! to load when it was read whole into a buffer, checked, then copied word by word). Mirrors
//! the reading part of ptrack's `engine.c: ptrackMapReadFromFile` (spec ptrack.md §3.5).
//!
//! The header (128 bytes) is read first, and magic, version and size are checked before the
//! map is touched. Then the body (header and slots, everything before the CRC) is cut into
//! [`LoadPlan::threads`] ranges of whole words, each read by one scoped thread with `pread`
//! into a buffer of [`LoadPlan::buffer_bytes`], converted from little-endian straight into the
//! map's atomic words, with the range's CRC-32C computed on the way; the ranges' CRCs are
//! combined (`crc32c_combine`) and compared with the stored one at the end. No buffer of the
//! file's size is ever allocated.
//!
//! The checks and their order are [`crate::map::Map::load_file_bytes`]'s, which goes through
//! the same code with the bytes in memory: magic, version, size, CRC, slot count and major,
//! system identifier. The header's slot count, major and system identifier are known before
//! the body is read; when one of them is wrong the body is still read, without storing it, so
//! that a damaged header is reported as a checksum error (as before) and a map of another
//! cluster as such, and the map is left untouched.
//!
//! **On error the map's content is unspecified** (a checksum error or a failed read is found
//! after words were stored): the caller must reset it.
//!
//! Threads: the extension runs this in the postmaster. The threads only read through
//! [`MapSource`] and store into the atomics: pure Rust I/O, never a PostgreSQL function; they
//! are scoped (`std::thread::scope`), so every one has been joined when a load returns, error
//! or not. A thread that cannot be spawned has its range read by the calling thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::map::{CRC_BYTES, FORMAT_VERSION, HEADER_BYTES, LoadError, MAGIC, Map, MapIdentity};

/// Most threads a load uses: reading from the page cache or a fast disk stops scaling beyond a
/// few, and the postmaster should not take the whole machine at start.
pub const MAX_THREADS: usize = 4;
/// Files smaller than this load on one thread (8 MB loads in a few milliseconds).
pub const PARALLEL_MIN_BYTES: u64 = 64 << 20;
/// Bytes each thread reads at a time.
pub const BUFFER_BYTES: usize = 2 << 20;

/// Where a map file image is read from: a file (`pread`) or bytes in memory. A seam for tests
/// (short reads, failing reads) as well.
pub trait MapSource: Sync {
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at `offset` into `buf`, as `pread`: fewer bytes than asked, 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl MapSource for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl MapSource for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).map_or(<[u8]>::len(self), |o| o.min(<[u8]>::len(self)));
        let src = self.get(start..).unwrap_or_default();
        let n = src.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(src.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// How a load is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadPlan {
    /// Threads, each reading one range of the body (at least 1).
    pub threads: usize,
    /// Bytes each thread reads at a time (rounded down to whole words, at least one).
    pub buffer_bytes: usize,
}

impl LoadPlan {
    /// The plan for a file of `file_bytes`: one thread below [`PARALLEL_MIN_BYTES`], else the
    /// available parallelism capped at [`MAX_THREADS`].
    pub fn for_file_bytes(file_bytes: u64) -> LoadPlan {
        let threads = if file_bytes < PARALLEL_MIN_BYTES {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS)
        };
        LoadPlan {
            threads,
            buffer_bytes: BUFFER_BYTES,
        }
    }
}

/// What a successful load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Bytes of the file.
    pub bytes: u64,
    /// Threads that read it.
    pub threads: usize,
}

/// Whether a pass over the body stores the words into the map or only computes the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Store,
    Discard,
}

impl<'a> Map<'a> {
    /// Loads the map file `file`, opened from `path` (named in every error), with the plan for
    /// its size ([`LoadPlan::for_file_bytes`]). On error the map's content is unspecified: reset
    /// it.
    pub fn load_file(
        &self,
        path: &Path,
        file: &File,
        id: MapIdentity,
    ) -> Result<Loaded, LoadError> {
        let plan = LoadPlan::for_file_bytes(self.words().len() as u64 * 8);
        self.load_from(&path.display().to_string(), file, id, plan)
    }

    /// Loads a map file image from `src` after checking magic, version, size, CRC and cluster
    /// (see the module doc for the order), split as `plan` says. On error the map's content is
    /// unspecified: reset it.
    pub fn load_from<S: MapSource + ?Sized>(
        &self,
        path: &str,
        src: &S,
        id: MapIdentity,
        plan: LoadPlan,
    ) -> Result<Loaded, LoadError> {
        let words = self.words();
        let expected = words.len() as u64 * 8 + CRC_BYTES as u64;
        let size = src.size().map_err(|source| LoadError::Read {
            path: path.into(),
            offset: 0,
            source,
        })?;
        let io = Io {
            path,
            expected,
            abort: AtomicBool::new(false),
        };
        let size_error = |size: u64| LoadError::Size {
            path: path.into(),
            size,
            expected,
        };
        if size < 16 {
            return Err(size_error(size));
        }
        let mut header = [0u8; HEADER_BYTES];
        let have = usize::try_from(size).map_or(HEADER_BYTES, |s| s.min(HEADER_BYTES));
        io.read_full(src, header.get_mut(..have).unwrap_or_default(), 0)?;
        let word = |i: usize| crate::map::le_word_or_zero(&header, i);
        if word(crate::map::W_MAGIC) != MAGIC {
            return Err(LoadError::Magic { path: path.into() });
        }
        if word(crate::map::W_VERSION) != u64::from(FORMAT_VERSION) {
            return Err(LoadError::Version {
                path: path.into(),
                found: word(crate::map::W_VERSION),
            });
        }
        if size != expected {
            return Err(size_error(size));
        }
        let header_error = if word(crate::map::W_NSLOTS) != self.slot_count()
            || word(crate::map::W_MAJOR) != u64::from(id.major)
        {
            Some(LoadError::Broken { path: path.into() })
        } else if word(crate::map::W_SYSID) != id.system_identifier {
            Some(LoadError::ForeignCluster {
                path: path.into(),
                found: word(crate::map::W_SYSID),
                expected: id.system_identifier,
            })
        } else {
            None
        };
        let sink = if header_error.is_some() {
            Sink::Discard
        } else {
            Sink::Store
        };
        let threads = plan.threads.clamp(1, words.len());
        let crc = read_body(&io, src, words, sink, threads, plan.buffer_bytes)?;
        let mut stored = [0u8; CRC_BYTES];
        io.read_full(src, &mut stored, words.len() as u64 * 8)?;
        if crc != u32::from_le_bytes(stored) {
            return Err(LoadError::Checksum { path: path.into() });
        }
        if let Some(e) = header_error {
            return Err(e);
        }
        std::sync::atomic::fence(Ordering::Release);
        Ok(Loaded {
            bytes: size,
            threads,
        })
    }
}

/// What every reader of one load shares: the names for errors, and a flag that stops the
/// other ranges once one has failed.
struct Io<'p> {
    path: &'p str,
    expected: u64,
    abort: AtomicBool,
}

impl Io<'_> {
    /// Fills `buf` from `offset`; the end of the file before that is a size error (the file
    /// shrank after its size was checked).
    fn read_full<S: MapSource + ?Sized>(
        &self,
        src: &S,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<(), LoadError> {
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset + done as u64;
            match src.read_at(rest, at) {
                Ok(0) => {
                    return Err(LoadError::Size {
                        path: self.path.into(),
                        size: at,
                        expected: self.expected,
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LoadError::Read {
                        path: self.path.into(),
                        offset: at,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Reads the words of the body (`words.len()` of them) in `threads` ranges and returns the
/// CRC-32C of the whole body; stores them into `words` for [`Sink::Store`]. Once a range fails
/// the others stop at their next buffer, and the first failed range's error (in file order) is
/// returned.
fn read_body<S: MapSource + ?Sized>(
    io: &Io<'_>,
    src: &S,
    words: &[AtomicU64],
    sink: Sink,
    threads: usize,
    buffer_bytes: usize,
) -> Result<u32, LoadError> {
    let n = words.len();
    let bounds: Vec<(usize, usize)> = (0..threads)
        .map(|t| (t * n / threads, (t + 1) * n / threads))
        .collect();
    let buf_words = (buffer_bytes / 8).max(1);
    let range = |&(start, end): &(usize, usize)| -> Result<u32, LoadError> {
        let dst = words.get(start..end).unwrap_or_default();
        read_range(io, src, dst, start, sink, buf_words)
    };
    // Every thread is joined before the scope ends; none calls anything but `read_range`.
    let results: Vec<Result<u32, LoadError>> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut inline = Vec::new();
        for (i, b) in bounds.iter().enumerate().skip(1) {
            match std::thread::Builder::new()
                .name("ptrack map load".into())
                .spawn_scoped(s, move || range(b))
            {
                Ok(h) => handles.push((i, h)),
                Err(_) => inline.push(i),
            }
        }
        let mut out: Vec<Option<Result<u32, LoadError>>> = (0..threads).map(|_| None).collect();
        if let (Some(slot), Some(b)) = (out.first_mut(), bounds.first()) {
            *slot = Some(range(b));
        }
        for i in inline {
            if let (Some(slot), Some(b)) = (out.get_mut(i), bounds.get(i)) {
                *slot = Some(range(b));
            }
        }
        for (i, h) in handles {
            let r = match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
        out.into_iter().flatten().collect()
    });
    let mut crc = 0u32;
    for (r, (start, end)) in results.into_iter().zip(&bounds) {
        crc = crc32c::crc32c_combine(crc, r?, (end - start) * 8);
    }
    Ok(crc)
}

/// Reads the words `first .. first + dst.len()` of the body, `buf_words` at a time, into `dst`
/// (for [`Sink::Store`]), and returns their CRC-32C.
fn read_range<S: MapSource + ?Sized>(
    io: &Io<'_>,
    src: &S,
    dst: &[AtomicU64],
    first: usize,
    sink: Sink,
    buf_words: usize,
) -> Result<u32, LoadError> {
    let mut buf = vec![0u8; buf_words.min(dst.len()) * 8];
    let mut crc = 0u32;
    for (k, chunk) in dst.chunks(buf_words).enumerate() {
        if io.abort.load(Ordering::Relaxed) {
            // Another range failed; its error is the one reported.
            return Ok(crc);
        }
        let bytes = buf.get_mut(..chunk.len() * 8).unwrap_or_default();
        let offset = (first + k * buf_words) as u64 * 8;
        if let Err(e) = io.read_full(src, bytes, offset) {
            io.abort.store(true, Ordering::Relaxed);
            return Err(e);
        }
        crc = crc32c::crc32c_append(crc, bytes);
        if sink == Sink::Store {
            for (w, b) in chunk.iter().zip(bytes.chunks_exact(8)) {
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                w.store(u64::from_le_bytes(le), Ordering::Relaxed);
            }
        }
    }
    Ok(crc)
}

#[cfg(test)]
#[path = "mapload_tests.rs"]
mod tests;
