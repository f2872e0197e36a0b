//! Memory per file of a backup (issue 11 §5): a simulated cluster of one million files taken
//! through the code a delta incremental runs once the files are read — the parent's manifest
//! read from disk (`envelope::stream`, as `chain::read_manifest` does), the listing, the plan's
//! units, the workers' result log, the summary and the new manifest streamed to disk — on one
//! thread, with the test allocator (`crate::alloc_count`) counting what that thread holds. What
//! is not simulated is the reading of pages (per worker, independent of the number of files).

use ptrack_types::Lsn;

use super::compose::{Composer, EntryStream, ResultLog, encode_part, encode_whole};
use super::plan::{Planner, UnitKind};
use crate::alloc_count::{held, peak, reset_peak};
use crate::chain::Link;
use crate::pages::{PartResult, Whole};
use crate::walk::{FileId, Item, Listing};
use ptrack_format::bundle::Compression;
use ptrack_format::catalog::{BackupInfo, Mode, Status};
use ptrack_format::envelope::stream;
use ptrack_format::manifest::{
    Entries, Entry, EntryKind, IndexRef, MANIFEST_VERSION, Manifest, ManifestDoc, Stored,
};
use ptrack_format::paths::{Digest, RelPath};

/// Files in the simulated cluster.
const FILES: usize = 1_000_000;
/// The bound: bytes per file held at any time (issue 11 §5).
const BOUND: usize = 300;

/// Path and size of file `i`: ten databases, each relation a main fork, its FSM and VM, and
/// an index (`base/<db>/<relfilenode>[_fsm|_vm]`).
fn file(i: usize) -> (String, u64) {
    let db = 16384 + i / (FILES / 10);
    let rel = 100_000 + i / 4;
    match i % 4 {
        0 | 3 => (
            format!("base/{db}/{}", rel * 2 + i % 4 / 3),
            8192 * (1 + i as u64 % 3),
        ),
        1 => (format!("base/{db}/{}_fsm", rel * 2), 24576),
        _ => (format!("base/{db}/{}_vm", rel * 2), 8192),
    }
}

fn file_id(i: usize) -> FileId {
    FileId {
        ino: 10_000_000 + i as u64,
        born_ns: Some(1_764_000_000_000_000_000 + i as i64 * 1000),
    }
}

fn digest(i: usize, salt: u8) -> Digest {
    let mut b = [salt; 40];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Digest::of(&b)
}

fn at(i: usize) -> Stored {
    Stored {
        bundle: (i % 2) as u32,
        offset: 16 + i as u64 * 300,
        len: 180 + (i % 50) as u64,
    }
}

/// The parent's entry of file `i` (a full backup).
fn parent_entry(path: String, size: u64, i: usize) -> Entry {
    let path = RelPath::new(&path).unwrap();
    let kind = if path.as_bytes().ends_with(b"m") {
        EntryKind::File {
            size,
            digest: digest(i, 1),
            stored: Some(at(i)),
        }
    } else {
        EntryKind::Data {
            size,
            blocks: (size / 8192) as u32,
            base: true,
            parts: vec![IndexRef {
                at: at(i),
                count: (size / 8192) as u32,
                digest: digest(i, 2),
            }],
            pages: size / 8192,
            corrupt: Vec::new(),
            tail: None,
            file_id: Some(file_id(i)),
        }
    };
    Entry { path, kind }
}

fn dirs() -> Vec<String> {
    let mut d = vec!["base".to_string()];
    d.extend((0..10).map(|k| format!("base/{}", 16384 + k)));
    d
}

fn manifest_doc<E>(id: &str, entries: E, parent: Option<&Link>) -> ManifestDoc<E> {
    ManifestDoc {
        backup_id: id.into(),
        mode: if parent.is_some() {
            Mode::Delta
        } else {
            Mode::Full
        },
        parent: parent.map(|p| p.info.id.clone()),
        parent_manifest: parent.map(|p| p.digest),
        system_identifier: 7,
        pg_major: ptrack_types::PgMajorVersion::V18,
        blcksz: 8192,
        wal_seg_size: ptrack_types::WalSegSize::DEFAULT,
        data_checksum_version: 1,
        compression: Compression::None,
        start_lsn: Lsn(0x100_0000),
        stop_lsn: Lsn(0x200_0000),
        consistent_lsn: Lsn(0x200_0000),
        timeline: ptrack_types::TimeLineId(1),
        from_standby: false,
        bundles: Vec::new(),
        entries,
        wal: Vec::new(),
        removed: Vec::new(),
        skipped: Vec::new(),
        start_wal: None,
        lineage: Vec::new(),
    }
}

/// Writes the parent (a full backup of the cluster) to `path`: its entries built compactly,
/// in path order (files of a database are numbered so that their order is `i`'s), and streamed
/// to disk.
fn write_parent(st: &dyn ptrack_repo::Storage, path: &ptrack_repo::Key) -> Digest {
    let mut entries = Entries::new();
    let dir = |p: &str| Entry {
        path: RelPath::new(p).unwrap(),
        kind: EntryKind::Dir,
    };
    entries.push(&dir("base")).unwrap();
    for i in 0..FILES {
        if i % (FILES / 10) == 0 {
            entries
                .push(&dir(&format!("base/{}", 16384 + i / (FILES / 10))))
                .unwrap();
        }
        let (p, size) = file(i);
        entries.push(&parent_entry(p, size, i)).unwrap();
    }
    assert_eq!(entries.unsorted_at(), None);
    let doc = manifest_doc("A", entries, None);
    stream::write(st, path, "manifest", MANIFEST_VERSION, &doc).unwrap()
}

fn info(id: &str, digest: Digest) -> BackupInfo {
    BackupInfo {
        status: Status::Ok,
        start_lsn: Lsn(0x100_0000),
        stop_lsn: Some(Lsn(0x200_0000)),
        start_time: 0,
        manifest_digest: Some(digest),
        program_version: String::new(),
        keep_until: None,
        ..ptrack_format::catalog::sample_info(id, Status::Ok)
    }
}

/// The listing of the cluster now: the same files, one of each hundred dropped and as many
/// new ones.
fn listing() -> Listing {
    let mut l = Listing::default();
    for d in dirs() {
        l.push(&RelPath::new(&d).unwrap(), &Item::Dir).unwrap();
    }
    for i in 0..FILES {
        let (p, size) = if i % 100 == 7 {
            (format!("base/16384/9{i}"), 8192)
        } else {
            file(i)
        };
        l.push(&RelPath::new(&p).unwrap(), &Item::File(size, file_id(i)))
            .unwrap();
    }
    l.sort();
    l
}

/// What the workers would have produced for every unit.
fn results(units: &[super::plan::Unit]) -> ResultLog {
    let mut log = ResultLog::default();
    let mut buf = Vec::new();
    for u in units {
        buf.clear();
        let i = u.pos as usize;
        match u.kind() {
            UnitKind::Whole => encode_whole(
                &Whole::Read {
                    size: u.weight,
                    digest: digest(i, 3),
                    stored: i.is_multiple_of(3).then(|| at(i)),
                },
                &mut buf,
            ),
            UnitKind::Part(_) => encode_part(
                &PartResult {
                    index: Some(IndexRef {
                        at: at(i),
                        count: 1,
                        digest: digest(i, 4),
                    }),
                    pages: 1,
                    ..PartResult::default()
                },
                &mut buf,
            ),
            UnitKind::Tail => unreachable!("no partial blocks here"),
        }
        log.add(u.pos, &buf, Vec::new(), 1).unwrap();
    }
    log.seal();
    log
}

fn per_file(bytes: isize) -> usize {
    bytes.max(0) as usize / FILES
}

#[test]
fn issue_11_a_million_files_fit_300_bytes_each() {
    let dir = tempfile::tempdir().unwrap();
    let st = ptrack_repo::local::LocalFs::new(dir.path());
    let st: &dyn ptrack_repo::Storage = &st;
    let (ppath, npath) = (
        ptrack_repo::Key::new("parent").unwrap(),
        ptrack_repo::Key::new("manifest").unwrap(),
    );
    let base = held();
    reset_peak();
    let pdigest = write_parent(st, &ppath);
    let full_peak = peak() - base;
    assert!(held() - base < 1 << 20, "the parent's entries were freed");

    // A delta incremental against it: everything a backup holds once its files are read.
    reset_peak();
    let r = stream::read::<Manifest>(st, &ppath, "manifest", MANIFEST_VERSION).unwrap();
    assert_eq!(r.digest, pdigest);
    let parent = Link {
        info: info("A", pdigest),
        manifest: r.value.unwrap(),
        digest: pdigest,
    };
    let read_peak = peak() - base;
    let parent_held = held() - base;
    assert_eq!(parent.manifest.entries.len(), FILES + dirs().len());
    parent.manifest.check_shape().unwrap();
    let l0 = held();
    let listing = listing();
    let listing_held = held() - l0;
    let (also, planner_map) = (Default::default(), None);
    let planner = Planner {
        mode: Mode::Delta,
        parent: Some(&parent),
        blcksz: 8192,
        relseg: 131072,
        pagemap: planner_map,
        also: &also,
    };
    let u0 = held();
    let mut plan = planner.plan(&listing);
    let units_held = held() - u0;
    assert_eq!(plan.units.len(), FILES);
    assert!(plan.tails.is_empty());
    let r0 = held();
    let log = results(&plan.units);
    let log_held = held() - r0;
    plan.units = Vec::new();
    let composer = Composer {
        listing: &listing,
        log: &log,
        plan: &plan,
        relseg: 131072,
        late: &[],
        blcksz: 8192,
    };
    let summary = composer.summary(Some(&parent.manifest));
    assert_eq!(summary.removed.len(), FILES / 100);
    assert_eq!(summary.files, FILES as u64);
    let mut doc = manifest_doc("B", EntryStream(&composer), Some(&parent));
    doc.removed = summary.removed;
    let ndigest = stream::write(st, &npath, "manifest", MANIFEST_VERSION, &doc).unwrap();
    let incr_peak = peak() - base;
    drop(doc);
    drop(log);
    drop(listing);
    drop(parent);
    println!(
        "per file: full backup's manifest written {} B; parent read {} B peak, {} B held; \
         listing {} B; units {} B; result log {} B; incremental peak {} B",
        per_file(full_peak),
        per_file(read_peak),
        per_file(parent_held),
        per_file(listing_held),
        per_file(units_held),
        per_file(log_held),
        per_file(incr_peak),
    );
    assert!(
        per_file(incr_peak) <= BOUND,
        "{} B per file",
        per_file(incr_peak)
    );
    assert!(
        per_file(full_peak) <= BOUND,
        "{} B per file",
        per_file(full_peak)
    );

    // Restore and validate hold the chain's manifests: two here.
    reset_peak();
    let a = stream::read::<Manifest>(st, &ppath, "manifest", MANIFEST_VERSION).unwrap();
    let b = stream::read::<Manifest>(st, &npath, "manifest", MANIFEST_VERSION).unwrap();
    assert_eq!(b.digest, ndigest);
    let (a, b) = (a.value.unwrap(), b.value.unwrap());
    let chain_peak = peak() - base;
    println!(
        "per file: a chain of two manifests read {} B",
        per_file(chain_peak)
    );
    assert!(
        per_file(chain_peak) <= BOUND,
        "{} B per file",
        per_file(chain_peak)
    );
    // What was written is what a backup means: every file, the dropped ones removed.
    b.check_shape().unwrap();
    assert_eq!(b.entries.len(), FILES + dirs().len());
    let (p, _) = file(8);
    let e = b.entry(&RelPath::new(&p).unwrap()).unwrap();
    assert!(
        matches!(e.kind, EntryKind::Data { base: false, ref parts, .. } if parts.len() == 1),
        "{e:?}"
    );
    let (gone, _) = file(7);
    assert!(b.entry(&RelPath::new(&gone).unwrap()).is_none());
    assert!(a.entry(&RelPath::new(&gone).unwrap()).is_some());
    assert!(b.removed.contains(&RelPath::new(&gone).unwrap()));
}
