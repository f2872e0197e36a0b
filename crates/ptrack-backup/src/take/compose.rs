//! The manifest's entries of a backup being taken, without holding them (issue 11 §5): the
//! workers append what each unit produced to a [`ResultLog`] (a few dozen bytes per file:
//! digests, bundle offsets, page counts), and the entries are composed from the listing, the
//! log and the late files (`pg_control`, `backup_label`, `tablespace_map`) in path order each
//! time they are needed — once for the summary (`removed`, files counted, unreadable files) and
//! twice while the manifest is written ([`EntryStream`], see `ptrack_format::envelope::stream`). What a
//! composed entry holds is what `basebackup.c`'s manifest records per file, plus the page map
//! of each stored segment.

use std::sync::Mutex;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::plan::{DATA, DATA_BASE, Plan};
use crate::pages::{Damaged, PartResult, Whole};
use crate::walk::{Item, Listing};
use ptrack_format::entries::{decode_kind, encode_kind, put_stored, stored};
use ptrack_format::manifest::{Entry, EntryKind, IndexRef, Manifest, Skipped, Tail};
use ptrack_format::paths::{Digest, RelPath};
use ptrack_format::table::{Cursor, put_varint};

const WHOLE_READ: u8 = 0;
const WHOLE_VANISHED: u8 = 1;
const WHOLE_UNREADABLE: u8 = 2;
const TAIL_NONE: u8 = 3;
const TAIL_SOME: u8 = 4;
const PART: u8 = 5;

/// Part flags.
const HAS_INDEX: u8 = 1;
const HAS_SHORT: u8 = 2;
const UNREADABLE: u8 = 4;

/// What the units produced, compactly, and the damaged pages found.
#[derive(Default)]
pub struct ResultLog {
    bytes: Vec<u8>,
    /// `(position in the listing, offset of the record)`, sorted by [`ResultLog::seal`].
    index: Vec<(u32, u32)>,
    /// Damaged pages.
    pub damaged: Vec<Damaged>,
    /// Pages stored.
    pub pages: u64,
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn text(c: &mut Cursor) -> String {
    String::from_utf8_lossy(c.bytes()).into_owned()
}

/// Encodes a whole file's result.
pub fn encode_whole(w: &Whole, out: &mut Vec<u8>) {
    match w {
        Whole::Read {
            size,
            digest,
            stored,
        } => {
            out.push(WHOLE_READ);
            encode_kind(
                &EntryKind::File {
                    size: *size,
                    digest: *digest,
                    stored: *stored,
                },
                out,
            );
        }
        Whole::Vanished => out.push(WHOLE_VANISHED),
        Whole::Unreadable(why) => {
            out.push(WHOLE_UNREADABLE);
            put_text(out, why);
        }
    }
}

/// Encodes a partial last block's result.
pub fn encode_tail(t: Option<&Tail>, out: &mut Vec<u8>) {
    match t {
        None => out.push(TAIL_NONE),
        Some(t) => {
            out.push(TAIL_SOME);
            put_varint(out, u64::from(t.len));
            out.extend_from_slice(&t.digest.0);
            put_stored(out, &t.stored);
        }
    }
}

/// Encodes a data part's result (its damaged pages are kept whole, in the log).
pub fn encode_part(r: &PartResult, out: &mut Vec<u8>) {
    out.push(PART);
    let flags = (u8::from(r.index.is_some()) * HAS_INDEX)
        | (u8::from(r.short_at.is_some()) * HAS_SHORT)
        | (u8::from(r.unreadable.is_some()) * UNREADABLE);
    out.push(flags);
    if let Some(i) = &r.index {
        put_stored(out, &i.at);
        put_varint(out, u64::from(i.count));
        out.extend_from_slice(&i.digest.0);
    }
    put_varint(out, r.pages);
    if let Some(s) = r.short_at {
        put_varint(out, u64::from(s));
    }
    if let Some(why) = &r.unreadable {
        put_text(out, why);
    }
    put_varint(out, r.damaged.len() as u64);
    for d in &r.damaged {
        put_varint(out, u64::from(d.block_in_file));
    }
}

impl ResultLog {
    /// Appends the record `bytes` of the file at `pos` (and a part's damaged pages).
    pub fn add(
        &mut self,
        pos: u32,
        bytes: &[u8],
        damaged: Vec<Damaged>,
        pages: u64,
    ) -> crate::Result<()> {
        let off = u32::try_from(self.bytes.len()).map_err(|_| {
            crate::Error::from(crate::Refusal::TooLarge(
                "the backup's results outgrew 4 GiB",
            ))
        })?;
        self.bytes.extend_from_slice(bytes);
        self.index.push((pos, off));
        self.damaged.extend(damaged);
        self.pages += pages;
        Ok(())
    }

    /// Orders the records by file (then as appended) and the damaged pages by path and block.
    pub fn seal(&mut self) {
        self.index.sort_unstable();
        self.bytes.shrink_to_fit();
        self.index.shrink_to_fit();
        self.damaged
            .sort_by(|a, b| (&a.path, a.block_in_file).cmp(&(&b.path, b.block_in_file)));
    }

    /// The records of the file at `pos`.
    fn records(&self, pos: u32) -> impl Iterator<Item = Cursor<'_>> {
        let from = self.index.partition_point(|&(p, _)| p < pos);
        self.index[from..]
            .iter()
            .take_while(move |&&(p, _)| p == pos)
            .map(|&(_, off)| Cursor::new(&self.bytes[off as usize..]))
    }
}

/// A shared log the workers append to.
pub type SharedLog = Mutex<ResultLog>;

/// One composed item: an entry, or a file that turned out unreadable.
pub enum Composed {
    /// A manifest entry.
    Entry(Entry),
    /// Left out, and why.
    Skipped(Skipped),
}

/// Composes the entries of the backup in path order.
pub struct Composer<'a> {
    /// The listing.
    pub listing: &'a Listing,
    /// What the units produced (sealed).
    pub log: &'a ResultLog,
    /// How each path was planned.
    pub plan: &'a Plan,
    /// `RELSEG_SIZE`.
    pub relseg: u32,
    /// Entries stored after the copy (`global/pg_control`, `backup_label`, …), sorted.
    pub late: &'a [Entry],
    /// `BLCKSZ`.
    pub blcksz: u64,
}

impl Composer<'_> {
    /// Every item in path order: `f(item)`.
    pub fn for_each(&self, mut f: impl FnMut(Composed)) {
        let mut late = self.late.iter().peekable();
        for (i, (rel, item)) in self.listing.iter().enumerate() {
            while let Some(l) = late.next_if(|l| l.path < rel) {
                f(Composed::Entry(l.clone()));
            }
            if let Some(c) = self.compose(i as u32, rel, item) {
                f(c);
            }
        }
        for l in late {
            f(Composed::Entry(l.clone()));
        }
    }

    fn compose(&self, pos: u32, path: RelPath, item: Item) -> Option<Composed> {
        let (size, id) = match item {
            Item::Dir => {
                return Some(Composed::Entry(Entry {
                    path,
                    kind: EntryKind::Dir,
                }));
            }
            Item::Link(target) => {
                return Some(Composed::Entry(Entry {
                    path,
                    kind: EntryKind::Link { target },
                }));
            }
            Item::File(size, id) => (size, id),
        };
        let shape = self.plan.shape(pos);
        if shape != DATA && shape != DATA_BASE {
            return self.whole(pos, path);
        }
        let blocks = u32::try_from(size / self.blcksz)
            .unwrap_or(u32::MAX)
            .min(self.relseg);
        let kind = EntryKind::Data {
            size: u64::from(blocks) * self.blcksz,
            blocks,
            base: shape == DATA_BASE,
            parts: Vec::new(),
            pages: 0,
            corrupt: Vec::new(),
            tail: None,
            file_id: Some(id),
        };
        self.data(pos, path, kind)
    }

    fn whole(&self, pos: u32, path: RelPath) -> Option<Composed> {
        let mut c = self
            .log
            .records(pos)
            .next()
            .expect("every whole file was read");
        match c.byte() {
            WHOLE_READ => Some(Composed::Entry(Entry {
                path,
                kind: decode_kind(c.take_rest()),
            })),
            WHOLE_VANISHED => None,
            _ => Some(Composed::Skipped(Skipped {
                path,
                reason: text(&mut c),
            })),
        }
    }

    fn data(&self, pos: u32, path: RelPath, mut kind: EntryKind) -> Option<Composed> {
        let EntryKind::Data {
            size,
            blocks,
            parts,
            pages,
            corrupt,
            tail,
            ..
        } = &mut kind
        else {
            unreachable!("a data entry")
        };
        let (mut short, mut got_tail) = (false, None);
        for mut c in self.log.records(pos) {
            match c.byte() {
                TAIL_SOME => {
                    got_tail = Some(Tail {
                        len: c.u32(),
                        digest: Digest(c.digest()),
                        stored: stored(&mut c),
                    });
                }
                TAIL_NONE => {}
                _ => {
                    let flags = c.byte();
                    if flags & HAS_INDEX != 0 {
                        parts.push(IndexRef {
                            at: stored(&mut c),
                            count: c.u32(),
                            digest: Digest(c.digest()),
                        });
                    }
                    *pages += c.varint();
                    if flags & HAS_SHORT != 0 {
                        *blocks = (*blocks).min(c.u32());
                        short = true;
                    }
                    if flags & UNREADABLE != 0 {
                        let reason = text(&mut c);
                        return Some(Composed::Skipped(Skipped { path, reason }));
                    }
                    corrupt.extend((0..c.varint()).map(|_| c.u32()));
                }
            }
        }
        parts.sort_by_key(|p| (p.at.bundle, p.at.offset));
        corrupt.sort_unstable();
        *size = u64::from(*blocks) * self.blcksz;
        // A segment found shorter than listed lost its partial last block too.
        if let (false, Some(t)) = (short, got_tail) {
            *size += u64::from(t.len);
            *tail = Some(t);
        }
        Some(Composed::Entry(Entry { path, kind }))
    }

    /// What the manifest needs before its entries are written: the files stored (or recorded
    /// unchanged), the files found unreadable while read, and the parent's paths this backup
    /// does not have.
    pub fn summary(&self, parent: Option<&Manifest>) -> Summary {
        let mut s = Summary::default();
        let mut theirs = parent.map(|p| p.entries.paths().peekable());
        self.for_each(|c| match c {
            Composed::Entry(e) => {
                if matches!(e.kind, EntryKind::File { .. } | EntryKind::Data { .. }) {
                    s.files += 1;
                }
                if let Some(t) = &mut theirs {
                    while let Some(p) = t.next_if(|p| *p <= e.path) {
                        if p != e.path {
                            s.removed.push(p);
                        }
                    }
                }
            }
            Composed::Skipped(k) => s.skipped.push(k),
        });
        s.removed.extend(theirs.into_iter().flatten());
        s
    }
}

/// See [`Composer::summary`].
#[derive(Debug, Default)]
pub struct Summary {
    /// Files and relation segments recorded.
    pub files: u64,
    /// Found unreadable while read.
    pub skipped: Vec<Skipped>,
    /// The parent's paths this backup does not have.
    pub removed: Vec<RelPath>,
}

/// The entries of a backup being taken, serialised as they are composed.
pub struct EntryStream<'a>(pub &'a Composer<'a>);

impl Serialize for EntryStream<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut err = None;
        self.0.for_each(|c| {
            if let (Composed::Entry(e), None) = (c, &err)
                && let Err(x) = seq.serialize_element(&e)
            {
                err = Some(x);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        seq.end()
    }
}
