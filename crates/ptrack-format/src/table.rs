//! A compact table of `(path, payload)` records, the in-memory form of a data directory's
//! listing and of a manifest's entries (issue 11 §5: a few dozen bytes per file instead of a
//! `RelPath`, an enum and their allocations each). Records live in one byte arena, front coded
//! as a sorted string table is (each path stored as the length it shares with the previous
//! record's path and the rest), with a full path every [`RESTART`] records so that record `i` is
//! decoded from its restart point and a path is found by binary search over the restart points.
//! Numbers are LEB128 varints ([`put_varint`], [`Cursor`]).
//!
//! Only this crate writes the arena, so decoding it is an internal invariant; untrusted bytes
//! (manifest JSON) are checked as `RelPath`s before they reach a table. Not a PostgreSQL
//! structure; its nearest relative is `backup_manifest.c`'s per-file entries.

use std::cmp::Ordering;

use crate::paths::RelPath;

/// Records per restart point.
pub const RESTART: usize = 16;

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A reader of this crate's own encodings (bytes it wrote itself: a short read is a bug).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    /// A varint.
    pub fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
        }
        unreachable!("a varint of this crate's own encoding has at most ten bytes")
    }

    /// A varint that fits in `u32` (it was written from one).
    pub fn u32(&mut self) -> u32 {
        u32::try_from(self.varint()).expect("written from a u32")
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        let (b, rest) = self.bytes.split_first().expect("own encoding");
        self.bytes = rest;
        *b
    }

    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        b
    }

    /// Everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// 32 bytes (a digest).
    pub fn digest(&mut self) -> [u8; 32] {
        self.take(32).try_into().expect("32 bytes")
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = self.varint() as usize;
        self.take(n)
    }
}

/// Front-coded `(path, payload)` records in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    arena: Vec<u8>,
    restarts: Vec<u32>,
    len: usize,
    last: Vec<u8>,
    unsorted_at: Option<usize>,
}

/// Why a record does not fit a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a table holds at most 4 GiB of records")]
pub struct TableFull;

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every path so far was greater than the one before (sorted and unique).
    pub fn is_sorted(&self) -> bool {
        self.unsorted_at.is_none()
    }

    /// The first record whose path was not greater than the one before.
    pub fn unsorted_at(&self) -> Option<usize> {
        self.unsorted_at
    }

    /// Bytes held (arena, restart points and the last path), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 4 * self.restarts.capacity() + self.last.capacity()
    }

    /// Releases spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.restarts.shrink_to_fit();
    }

    /// Appends a record.
    pub fn push(&mut self, path: &[u8], payload: &[u8]) -> Result<(), TableFull> {
        let shared = if self.len.is_multiple_of(RESTART) {
            let at = u32::try_from(self.arena.len()).map_err(|_| TableFull)?;
            self.restarts.push(at);
            0
        } else {
            path.iter()
                .zip(&self.last)
                .take_while(|(a, b)| a == b)
                .count()
        };
        if self.unsorted_at.is_none() && self.len > 0 && path <= self.last.as_slice() {
            self.unsorted_at = Some(self.len);
        }
        let start = self.arena.len();
        put_varint(&mut self.arena, shared as u64);
        put_varint(&mut self.arena, (path.len() - shared) as u64);
        self.arena.extend_from_slice(&path[shared..]);
        put_varint(&mut self.arena, payload.len() as u64);
        self.arena.extend_from_slice(payload);
        if u32::try_from(self.arena.len()).is_err() {
            self.arena.truncate(start);
            return Err(TableFull);
        }
        self.last.clear();
        self.last.extend_from_slice(path);
        self.len += 1;
        Ok(())
    }

    /// Every record in order: `f(index, path, payload)`.
    pub fn for_each(&self, mut f: impl FnMut(usize, &[u8], &[u8])) {
        let mut it = self.iter();
        while let Some((i, p, d)) = it.next_record() {
            f(i, p, d);
        }
    }

    /// A reader of the records in order.
    pub fn iter(&self) -> Records<'_> {
        Records {
            table: self,
            cur: Cursor::new(&self.arena),
            index: 0,
            path: Vec::new(),
        }
    }

    /// A reader positioned at record `i`'s restart point.
    fn at_restart(&self, r: usize) -> Records<'_> {
        let off = self.restarts[r] as usize;
        Records {
            table: self,
            cur: Cursor::new(&self.arena[off..]),
            index: r * RESTART,
            path: Vec::new(),
        }
    }

    /// Record `i`: its path and payload (`path` receives the path).
    pub fn get<'a>(&'a self, i: usize, path: &mut Vec<u8>) -> &'a [u8] {
        assert!(i < self.len, "record {i} of {}", self.len);
        let mut it = self.at_restart(i / RESTART);
        loop {
            let (k, p, d) = it.next_record().expect("i < len");
            if k == i {
                path.clear();
                path.extend_from_slice(p);
                return d;
            }
        }
    }

    /// The index and payload of the record whose path is `path`. The table must be sorted
    /// (`is_sorted`) for the answer to mean anything; on an unsorted one it is wrong, never a
    /// panic (tables are read from untrusted manifests before their shape is checked).
    pub fn find(&self, path: &[u8]) -> Option<(usize, &[u8])> {
        if self.restarts.is_empty() {
            return None;
        }
        // The last restart point whose (full) path is <= `path`.
        let first_path = |r: usize| {
            let mut c = Cursor::new(&self.arena[self.restarts[r] as usize..]);
            let _shared = c.varint();
            c.bytes()
        };
        let (mut lo, mut hi) = (0usize, self.restarts.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match first_path(mid).cmp(path) {
                Ordering::Greater => hi = mid,
                _ => lo = mid + 1,
            }
        }
        if lo == 0 {
            return None;
        }
        let mut it = self.at_restart(lo - 1);
        let end = (lo * RESTART).min(self.len);
        while it.index < end {
            let (k, p, d) = it.next_record().expect("in range");
            match p.cmp(path) {
                Ordering::Equal => return Some((k, d)),
                Ordering::Greater => return None,
                Ordering::Less => {}
            }
        }
        None
    }
}

/// Records of a [`Table`] in order.
pub struct Records<'a> {
    table: &'a Table,
    cur: Cursor<'a>,
    index: usize,
    path: Vec<u8>,
}

impl<'a> Records<'a> {
    /// The next record: its index, path (valid until the next call) and payload.
    pub fn next_record(&mut self) -> Option<(usize, &[u8], &'a [u8])> {
        if self.index >= self.table.len {
            return None;
        }
        let shared = self.cur.varint() as usize;
        let rest = self.cur.bytes();
        self.path.truncate(shared);
        self.path.extend_from_slice(rest);
        let payload = self.cur.bytes();
        let i = self.index;
        self.index += 1;
        Some((i, &self.path, payload))
    }
}

/// Paths are always checked [`RelPath`]s before they enter a table; this rebuilds one.
pub fn rel_path(bytes: &[u8]) -> RelPath {
    RelPath::from_bytes(bytes).expect("tables hold checked paths")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let mut b = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            b.clear();
            put_varint(&mut b, v);
            assert_eq!(Cursor::new(&b).varint(), v);
        }
    }

    #[test]
    fn records_front_coded_found_and_decoded() {
        let mut t = Table::new();
        let paths: Vec<String> = (0..1000).map(|i| format!("base/5/{}", 10000 + i)).collect();
        for (i, p) in paths.iter().enumerate() {
            t.push(p.as_bytes(), &(i as u32).to_le_bytes()).unwrap();
        }
        assert!(t.is_sorted());
        assert_eq!(t.len(), 1000);
        t.shrink_to_fit();
        // Shared prefixes are not repeated: far less than the paths' own bytes.
        let raw: usize = paths.iter().map(|p| p.len() + 4).sum();
        assert!(t.heap_bytes() < raw * 3 / 4, "{} vs {raw}", t.heap_bytes());
        let mut p = Vec::new();
        for i in [0, 1, 15, 16, 17, 999] {
            let d = t.get(i, &mut p);
            assert_eq!(p, paths[i].as_bytes());
            assert_eq!(d, (i as u32).to_le_bytes());
            assert_eq!(t.find(paths[i].as_bytes()).unwrap().0, i);
        }
        assert!(t.find(b"base/5/1").is_none());
        assert!(t.find(b"base/5/99999").is_none());
        assert!(t.find(b"a").is_none());
        assert!(t.find(b"base/5/100005").is_none());
        let mut n = 0;
        t.for_each(|i, path, _| {
            assert_eq!(path, paths[i].as_bytes());
            n += 1;
        });
        assert_eq!(n, 1000);
        t.push(b"base/5/10500", b"").unwrap();
        assert_eq!(t.unsorted_at(), Some(1000));
        assert!(Table::new().find(b"x").is_none());
    }
}
