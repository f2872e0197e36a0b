//! A manifest's entries held compactly ([`Entries`]): each [`Entry`] encoded into a
//! front-coded [`Table`] record (varints, digests as their 32 bytes) and decoded when it is
//! read, so a manifest of a million files costs tens of megabytes, not a gigabyte of structs.
//! In JSON the entries are the same array of objects as ever (docs/formats.md, manifest
//! version 2): [`Entries`] serialises entry by entry and deserialises a JSON array record by
//! record without holding the entries as structs.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::manifest::{Entry, EntryKind, IndexRef, Stored, Tail};
use crate::paths::FileId;
use crate::paths::{Digest, RelPath};
use crate::table::{Cursor, Table, TableFull, put_varint, rel_path};

const DIR: u8 = 0;
const LINK: u8 = 1;
const FILE: u8 = 2;
const DATA: u8 = 3;

/// Data entry flags.
const BASE: u8 = 1;
const HAS_TAIL: u8 = 2;
const HAS_ID: u8 = 4;
const HAS_BORN: u8 = 8;

/// Appends a [`Stored`] as three varints (also the result log's encoding, `take::compose`).
pub fn put_stored(out: &mut Vec<u8>, s: &Stored) {
    put_varint(out, u64::from(s.bundle));
    put_varint(out, s.offset);
    put_varint(out, s.len);
}

/// Reads what [`put_stored`] wrote.
pub fn stored(c: &mut Cursor) -> Stored {
    Stored {
        bundle: c.u32(),
        offset: c.varint(),
        len: c.varint(),
    }
}

/// Encodes what an entry is.
pub fn encode_kind(kind: &EntryKind, out: &mut Vec<u8>) {
    match kind {
        EntryKind::Dir => out.push(DIR),
        EntryKind::Link { target } => {
            out.push(LINK);
            put_varint(out, target.len() as u64);
            out.extend_from_slice(target.as_bytes());
        }
        EntryKind::File {
            size,
            digest,
            stored,
        } => {
            out.push(FILE);
            put_varint(out, *size);
            out.extend_from_slice(&digest.0);
            match stored {
                Some(s) => {
                    out.push(1);
                    put_stored(out, s);
                }
                None => out.push(0),
            }
        }
        EntryKind::Data {
            size,
            blocks,
            base,
            parts,
            pages,
            corrupt,
            tail,
            file_id,
        } => {
            out.push(DATA);
            let flags = (u8::from(*base) * BASE)
                | (u8::from(tail.is_some()) * HAS_TAIL)
                | (u8::from(file_id.is_some()) * HAS_ID)
                | (u8::from(file_id.is_some_and(|f| f.born_ns.is_some())) * HAS_BORN);
            out.push(flags);
            put_varint(out, *size);
            put_varint(out, u64::from(*blocks));
            put_varint(out, *pages);
            put_varint(out, parts.len() as u64);
            for p in parts {
                put_stored(out, &p.at);
                put_varint(out, u64::from(p.count));
                out.extend_from_slice(&p.digest.0);
            }
            put_varint(out, corrupt.len() as u64);
            for b in corrupt {
                put_varint(out, u64::from(*b));
            }
            if let Some(t) = tail {
                put_varint(out, u64::from(t.len));
                out.extend_from_slice(&t.digest.0);
                put_stored(out, &t.stored);
            }
            if let Some(id) = file_id {
                put_varint(out, id.ino);
                if let Some(b) = id.born_ns {
                    out.extend_from_slice(&b.to_le_bytes());
                }
            }
        }
    }
}

/// Decodes what [`encode_kind`] wrote.
pub fn decode_kind(bytes: &[u8]) -> EntryKind {
    let mut c = Cursor::new(bytes);
    match c.byte() {
        DIR => EntryKind::Dir,
        LINK => EntryKind::Link {
            target: String::from_utf8(c.bytes().to_vec()).expect("written from a String"),
        },
        FILE => {
            let size = c.varint();
            let digest = Digest(c.digest());
            let stored = (c.byte() == 1).then(|| stored(&mut c));
            EntryKind::File {
                size,
                digest,
                stored,
            }
        }
        DATA => decode_data(&mut c),
        t => unreachable!("entry tag {t} of this crate's own encoding"),
    }
}

fn decode_data(c: &mut Cursor) -> EntryKind {
    let flags = c.byte();
    let size = c.varint();
    let blocks = c.u32();
    let pages = c.varint();
    let parts = (0..c.varint())
        .map(|_| IndexRef {
            at: stored(c),
            count: c.u32(),
            digest: Digest(c.digest()),
        })
        .collect();
    let corrupt = (0..c.varint()).map(|_| c.u32()).collect();
    let tail = (flags & HAS_TAIL != 0).then(|| Tail {
        len: c.u32(),
        digest: Digest(c.digest()),
        stored: stored(c),
    });
    let file_id = (flags & HAS_ID != 0).then(|| FileId {
        ino: c.varint(),
        born_ns: (flags & HAS_BORN != 0)
            .then(|| i64::from_le_bytes(c.take(8).try_into().expect("8 bytes"))),
    });
    EntryKind::Data {
        size,
        blocks,
        base: flags & BASE != 0,
        parts,
        pages,
        corrupt,
        tail,
        file_id,
    }
}

/// A manifest's entries, compactly (see the module doc). Sorted by path when the manifest's
/// shape was checked (`Manifest::check_shape`). Equal when they hold the same entries.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    table: Table,
    scratch: Vec<u8>,
}

impl Entries {
    /// No entries.
    pub fn new() -> Entries {
        Entries::default()
    }

    /// Appends an entry (sortedness is recorded, see [`Entries::unsorted_at`]).
    pub fn push(&mut self, e: &Entry) -> Result<(), TableFull> {
        self.scratch.clear();
        encode_kind(&e.kind, &mut self.scratch);
        self.table.push(e.path.as_bytes(), &self.scratch)
    }

    /// Appends an entry from its path bytes and encoded kind.
    pub fn push_encoded(&mut self, path: &[u8], kind: &[u8]) -> Result<(), TableFull> {
        self.table.push(path, kind)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The path of the first entry that is not after the one before it.
    pub fn unsorted_at(&self) -> Option<RelPath> {
        let i = self.table.unsorted_at()?;
        let mut p = Vec::new();
        self.table.get(i, &mut p);
        Some(rel_path(&p))
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> Entry {
        let mut p = Vec::new();
        let d = self.table.get(i, &mut p);
        Entry {
            path: rel_path(&p),
            kind: decode_kind(d),
        }
    }

    /// The entry for `path` (entries sorted).
    pub fn find(&self, path: &RelPath) -> Option<Entry> {
        self.table.find(path.as_bytes()).map(|(_, d)| Entry {
            path: path.clone(),
            kind: decode_kind(d),
        })
    }

    /// Whether `path` has an entry (entries sorted).
    pub fn contains(&self, path: &[u8]) -> bool {
        self.table.find(path).is_some()
    }

    /// Every entry, decoded one at a time.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut r = self.table.iter();
        std::iter::from_fn(move || {
            r.next_record().map(|(_, p, d)| Entry {
                path: rel_path(p),
                kind: decode_kind(d),
            })
        })
    }

    /// Every path, in order.
    pub fn paths(&self) -> impl Iterator<Item = RelPath> + '_ {
        let mut r = self.table.iter();
        std::iter::from_fn(move || r.next_record().map(|(_, p, _)| rel_path(p)))
    }

    /// Every path with its encoded kind, without decoding (`f(path, kind)`).
    pub fn for_each_raw(&self, f: impl FnMut(usize, &[u8], &[u8])) {
        self.table.for_each(f);
    }

    /// Bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.scratch.capacity()
    }

    /// Releases spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit();
        self.scratch = Vec::new();
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        // The encoding is deterministic: the same entries make the same table.
        self.table == other.table
    }
}

impl Eq for Entries {}

impl FromIterator<Entry> for Entries {
    fn from_iter<I: IntoIterator<Item = Entry>>(it: I) -> Entries {
        let mut out = Entries::new();
        for e in it {
            out.push(&e).expect("entries made in memory fit a table");
        }
        out
    }
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for e in self.iter() {
            seq.serialize_element(&e)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        d.deserialize_seq(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of manifest entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        let mut out = Entries::new();
        while let Some(e) = seq.next_element::<Entry>()? {
            out.push(&e).map_err(serde::de::Error::custom)?;
        }
        out.shrink_to_fit();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Entry> {
        let d = Digest::of(b"x");
        let st = Stored {
            bundle: 3,
            offset: 1 << 40,
            len: 8192,
        };
        let kinds = [
            EntryKind::Dir,
            EntryKind::Link {
                target: "/srv/ts".into(),
            },
            EntryKind::File {
                size: 0,
                digest: d,
                stored: None,
            },
            EntryKind::File {
                size: 123_456,
                digest: d,
                stored: Some(st),
            },
            EntryKind::Data {
                size: 8192 * 3 + 5,
                blocks: 3,
                base: true,
                parts: vec![IndexRef {
                    at: st,
                    count: 2,
                    digest: Digest::of(b"i"),
                }],
                pages: 2,
                corrupt: vec![1, 2],
                tail: Some(Tail {
                    len: 5,
                    digest: d,
                    stored: st,
                }),
                file_id: Some(FileId {
                    ino: 99,
                    born_ns: Some(-7),
                }),
            },
            EntryKind::Data {
                size: 0,
                blocks: 0,
                base: false,
                parts: Vec::new(),
                pages: 0,
                corrupt: Vec::new(),
                tail: None,
                file_id: Some(FileId {
                    ino: 5,
                    born_ns: None,
                }),
            },
            EntryKind::Data {
                size: 0,
                blocks: 0,
                base: false,
                parts: Vec::new(),
                pages: 0,
                corrupt: Vec::new(),
                tail: None,
                file_id: None,
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Entry {
                path: RelPath::new(&format!("base/5/{}", 100 + i)).unwrap(),
                kind,
            })
            .collect()
    }

    #[test]
    fn every_kind_round_trips_and_json_is_unchanged() {
        let v = samples();
        let e: Entries = v.iter().cloned().collect();
        assert_eq!(e.iter().collect::<Vec<_>>(), v);
        for (i, x) in v.iter().enumerate() {
            assert_eq!(&e.get(i), x);
            assert_eq!(e.find(&x.path).as_ref(), Some(x));
        }
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        let back: Entries = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), v);
        assert_eq!(back, e);
        assert_ne!(back, v[1..].iter().cloned().collect());
        assert_eq!(back.unsorted_at(), None);
        let mut rev = v.clone();
        rev.reverse();
        let r: Entries = rev.into_iter().collect();
        assert_eq!(r.unsorted_at(), Some(v[v.len() - 2].path.clone()));
    }
}
