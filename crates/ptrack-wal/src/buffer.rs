//! The decoder's input buffer: fed WAL bytes as a queue of chunks whose boundaries fall on WAL
//! page boundaries (except the end of the last one), so any page lies inside one chunk and a
//! record that fits in a page can be decoded in place. A whole segment handed over with
//! [`ChunkBuf::push_owned`] becomes a chunk without being copied.

use std::collections::VecDeque;

use crate::mapped::SegmentData;

#[derive(Debug)]
pub(crate) struct ChunkBuf {
    chunks: VecDeque<(u64, SegmentData)>,
    /// Stream position when there are no chunks.
    start: u64,
    page: u64,
}

/// Chunks smaller than this are extended rather than followed by a new one.
const MIN_CHUNK: usize = 1 << 16;

impl ChunkBuf {
    pub(crate) fn new(start: u64, page: u64) -> ChunkBuf {
        ChunkBuf {
            chunks: VecDeque::new(),
            start,
            page,
        }
    }

    /// LSN just after the last byte fed.
    pub(crate) fn end(&self) -> u64 {
        self.chunks
            .back()
            .map_or(self.start, |(l, c)| l.saturating_add(c.len() as u64))
    }

    fn must_extend(&self) -> bool {
        let end = self.end();
        self.chunks
            .back()
            .is_some_and(|(_, c)| !end.is_multiple_of(self.page) || c.len() < MIN_CHUNK)
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.must_extend()
            && let Some((_, c)) = self.chunks.back_mut()
        {
            match c {
                SegmentData::Owned(v) => v.extend_from_slice(bytes),
                SegmentData::Mapped(_) => {
                    let mut v = c.to_vec();
                    v.extend_from_slice(bytes);
                    *c = SegmentData::Owned(v);
                }
            }
        } else {
            let end = self.end();
            self.chunks
                .push_back((end, SegmentData::Owned(bytes.to_vec())));
        }
    }

    pub(crate) fn push_owned(&mut self, bytes: SegmentData) {
        if bytes.is_empty() {
            return;
        }
        let end = self.end();
        if !end.is_multiple_of(self.page) {
            self.push(&bytes);
        } else {
            self.chunks.push_back((end, bytes));
        }
    }

    /// `n` bytes at `lsn`, if fed and inside one chunk.
    pub(crate) fn slice(&self, lsn: u64, n: u64) -> Option<&[u8]> {
        for (l, c) in self.chunks.iter().rev() {
            if lsn >= *l {
                let off = usize::try_from(lsn - l).ok()?;
                return c.get(off..off.checked_add(usize::try_from(n).ok()?)?);
            }
        }
        None
    }

    /// Forgets chunks that end at or before `lsn`.
    pub(crate) fn drop_before(&mut self, lsn: u64) {
        while let Some((l, c)) = self.chunks.front() {
            let end = l.saturating_add(c.len() as u64);
            if end > lsn {
                break;
            }
            self.start = end;
            self.chunks.pop_front();
        }
    }
}
