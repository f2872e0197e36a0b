//! Segment bytes handed to the decoder: owned (decompressed) or a read-only memory map of a plain
//! segment file, which spares the copy `read()` makes. Mapping is safe for WAL because segment
//! files are never truncated in place: PostgreSQL preallocates them at full size, recycles them
//! by renaming and removes them by unlinking, neither of which affects an existing mapping.

use std::fs::File;
use std::ops::Deref;

/// The bytes of one segment.
#[derive(Debug)]
pub enum SegmentData {
    /// Bytes in memory.
    Owned(Vec<u8>),
    /// A private read-only mapping of a whole file.
    Mapped(Mapping),
}

/// A read-only `mmap` of a file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; the pointer is never shared mutably.
unsafe impl Send for Mapping {}
// SAFETY: as above; only shared reads happen through `Deref`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` read-only. The page tables are filled by faults as
    /// the decoder reads on (each fault maps the cached pages around it, about 34 pages per fault
    /// here): `MAP_POPULATE` walked every page through `get_user_pages` and cost about 10% more
    /// CPU over a whole `ptrack wal summarize` (issue 11 §4).
    /// Returns `None` when mapping is not possible (the caller then reads the file instead).
    pub fn map(file: &File, len: usize) -> Option<Mapping> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return None;
        }
        // SAFETY: a new private read-only mapping of a valid descriptor; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Read once, in order: readahead may run ahead, and (VM_SEQ_READ) the pages touched
        // through this mapping are not marked accessed when it is unmapped, which spared the
        // LRU work that took about a tenth of a summarize run's cycles in munmap. Advice only:
        // its failure changes nothing.
        // SAFETY: advice on the mapping just made, of exactly its length.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Some(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not yet unmapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

impl Deref for SegmentData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegmentData::Owned(v) => v,
            // SAFETY: the mapping covers `len` readable bytes for as long as `self` lives.
            SegmentData::Mapped(m) => unsafe {
                std::slice::from_raw_parts(m.ptr as *const u8, m.len)
            },
        }
    }
}
