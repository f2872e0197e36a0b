//! Tests of [`super`]: files written by `to_file_bytes` and by the saver load back word for word
//! with 1, 2 and 3 threads and buffers that do not divide the ranges; every failure gives its
//! `LoadError` with the path, whichever range it is in; short and failing reads; a directory.

use super::*;
use crate::map::{HEADER_WORDS, MapLayout, seal};
use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, RelFileLocator, RelFileNumber, TimeLineId};
use std::sync::atomic::AtomicUsize;

const ID: MapIdentity = MapIdentity {
    system_identifier: 42,
    major: 18,
    data_checksum_version: 1,
};

/// 1 MB: 131071 words, a multiple of neither 2 nor 3.
fn layout() -> MapLayout {
    MapLayout::for_size_mb(1).unwrap()
}

/// A map with marks all over it, and its file image.
fn image() -> Vec<u8> {
    let words = Map::alloc(layout());
    let m = Map::new(&words);
    m.reset(ID);
    m.raise_init_lsn(Lsn(77));
    m.set_tracked(Lsn(99), TimeLineId(3));
    for i in 0..5000u32 {
        let loc = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(16384 + i % 7),
        };
        m.mark(
            loc,
            ForkNumber::Main,
            BlockNumber(i * 31),
            Lsn(1000 + u64::from(i)),
            131072,
        );
    }
    m.to_file_bytes()
}

fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> (std::path::PathBuf, File) {
    let path = dir.path().join("ptrack.map");
    std::fs::write(&path, bytes).unwrap();
    let file = File::open(&path).unwrap();
    (path, file)
}

fn plan(threads: usize, buffer_bytes: usize) -> LoadPlan {
    LoadPlan {
        threads,
        buffer_bytes,
    }
}

/// Words set to a value no load writes, to see whether a failed load touched them.
fn sentinel_words() -> Vec<AtomicU64> {
    (0..layout().words())
        .map(|_| AtomicU64::new(u64::MAX))
        .collect()
}

fn untouched(words: &[AtomicU64]) -> bool {
    words.iter().all(|w| w.load(Ordering::Relaxed) == u64::MAX)
}

fn snapshot_words(words: &[AtomicU64]) -> Vec<u64> {
    words.iter().map(|w| w.load(Ordering::Relaxed)).collect()
}

fn words_of(image: &[u8]) -> Vec<u64> {
    image[..image.len() - CRC_BYTES]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Loads `bytes` from a file with `threads` threads and a small buffer; the path is checked in
/// the error message.
fn load_err(bytes: &[u8], id: MapIdentity, threads: usize) -> (LoadError, Vec<AtomicU64>) {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = write(&dir, bytes);
    let words = sentinel_words();
    let p = path.display().to_string();
    let e = Map::new(&words)
        .load_from(&p, &file, id, plan(threads, 4096 + 24))
        .unwrap_err();
    assert!(e.to_string().contains(&format!("\"{p}\"")), "{e}");
    (e, words)
}

fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() - CRC_BYTES);
    seal(bytes)
}

#[test]
fn load_round_trip_with_threads_and_uneven_buffers_is_word_for_word() {
    let image = image();
    let want = words_of(&image);
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = write(&dir, &image);
    for threads in [1, 2, 3] {
        // 8 bytes, 7 words, 1000 words + 3 bytes (rounded down), 4 MiB (more than a range).
        for buffer in [8, 56, 8003, 4 << 20] {
            let words = sentinel_words();
            let m = Map::new(&words);
            let loaded = m
                .load_from(
                    &path.display().to_string(),
                    &file,
                    ID,
                    plan(threads, buffer),
                )
                .unwrap();
            assert_eq!(
                loaded,
                Loaded {
                    bytes: image.len() as u64,
                    threads
                }
            );
            assert!(
                snapshot_words(&words) == want,
                "{threads} threads, {buffer} bytes"
            );
            assert_eq!(m.tracked(), (Lsn(99), TimeLineId(3)));
        }
    }
    // The default plan, and the bytes in memory: the same words.
    let words = sentinel_words();
    let loaded = Map::new(&words).load_file(&path, &file, ID).unwrap();
    assert_eq!(loaded.threads, 1, "a 1 MB map loads on one thread");
    assert!(snapshot_words(&words) == want);
    let words = sentinel_words();
    Map::new(&words).load_file_bytes("m", &image, ID).unwrap();
    assert!(snapshot_words(&words) == want);
}

#[test]
fn load_plan_is_one_thread_for_small_maps_and_capped() {
    assert_eq!(LoadPlan::for_file_bytes(8 << 20).threads, 1);
    let big = LoadPlan::for_file_bytes(1 << 30);
    assert!((1..=MAX_THREADS).contains(&big.threads), "{big:?}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(big.threads, cores.min(MAX_THREADS));
    assert_eq!(big.buffer_bytes, BUFFER_BYTES);
}

#[test]
fn load_short_or_foreign_headers_give_their_errors_before_the_body() {
    let image = image();
    let l = layout();
    for threads in [1, 2, 3] {
        let (e, w) = load_err(&image[..image.len() - 8], ID, threads);
        assert!(
            matches!(e, LoadError::Size { size, expected, .. }
                if size == image.len() as u64 - 8 && expected == l.file_bytes()),
            "{e:?}"
        );
        assert!(untouched(&w));
        let (e, _) = load_err(&image[..10], ID, threads);
        assert!(matches!(e, LoadError::Size { size: 10, .. }), "{e:?}");
        // Longer than the header but shorter than a map: still the size.
        let (e, _) = load_err(&image[..HEADER_BYTES + 5], ID, threads);
        assert!(matches!(e, LoadError::Size { .. }), "{e:?}");
        let mut bad = image.clone();
        bad[3] ^= 0x40;
        let (e, w) = load_err(&bad, ID, threads);
        assert!(matches!(e, LoadError::Magic { .. }), "{e:?}");
        assert!(untouched(&w));
        let mut bad = image.clone();
        bad[8..16].copy_from_slice(&3u64.to_le_bytes());
        let (e, w) = load_err(&reseal(bad), ID, threads);
        assert!(matches!(e, LoadError::Version { found: 3, .. }), "{e:?}");
        assert!(untouched(&w));
    }
}

#[test]
fn load_flipped_bit_in_any_range_is_a_checksum_error() {
    let image = image();
    let body = image.len() - CRC_BYTES;
    // In the first (after the header), middle and last of three ranges, and the CRC itself.
    for at in [HEADER_BYTES + 3, body / 2, body - 1, body + 2] {
        for threads in [1, 2, 3] {
            let mut bad = image.clone();
            bad[at] ^= 0x10;
            let (e, _) = load_err(&bad, ID, threads);
            assert!(
                matches!(e, LoadError::Checksum { .. }),
                "{at}, {threads}: {e:?}"
            );
        }
    }
    // A damaged system identifier is damage, not another cluster.
    let mut bad = image.clone();
    bad[2 * 8] ^= 1;
    let (e, w) = load_err(&bad, ID, 2);
    assert!(matches!(e, LoadError::Checksum { .. }), "{e:?}");
    assert!(
        untouched(&w),
        "a header error is known before the body: nothing stored"
    );
}

#[test]
fn load_foreign_cluster_or_wrong_slots_or_major_leave_the_map_untouched() {
    let image = image();
    for threads in [1, 3] {
        let other = MapIdentity {
            system_identifier: 43,
            ..ID
        };
        let (e, w) = load_err(&image, other, threads);
        assert!(
            matches!(
                e,
                LoadError::ForeignCluster {
                    found: 42,
                    expected: 43,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("belongs to another cluster"));
        assert!(untouched(&w));
        let mut bad = image.clone();
        let nslots = layout().slots - 1;
        bad[6 * 8..7 * 8].copy_from_slice(&nslots.to_le_bytes());
        let (e, w) = load_err(&reseal(bad), ID, threads);
        assert!(matches!(e, LoadError::Broken { .. }), "{e:?}");
        assert!(untouched(&w));
        let pg17 = MapIdentity { major: 17, ..ID };
        let (e, _) = load_err(&image, pg17, threads);
        assert!(matches!(e, LoadError::Broken { .. }), "{e:?}");
    }
}

/// A source over bytes that claims `len`, returns at most `step` bytes a read, is interrupted
/// once, and fails with EIO at `fail_at`.
struct Flaky {
    bytes: Vec<u8>,
    len: u64,
    step: usize,
    fail_at: Option<u64>,
    interrupts: AtomicUsize,
}

impl Flaky {
    fn new(bytes: Vec<u8>) -> Flaky {
        Flaky {
            len: bytes.len() as u64,
            bytes,
            step: usize::MAX,
            fail_at: None,
            interrupts: AtomicUsize::new(0),
        }
    }
}

impl MapSource for Flaky {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if self.interrupts.fetch_add(1, Ordering::Relaxed) == 1 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let mut k = buf.len().min(self.step);
        if let Some(f) = self.fail_at
            && (offset..offset + k as u64).contains(&f)
        {
            // Short of the failing byte first, so that the failing read starts there.
            if f == offset {
                return Err(io::Error::from_raw_os_error(5));
            }
            k = (f - offset) as usize;
        }
        self.bytes.as_slice().read_at(&mut buf[..k], offset)
    }
}

#[test]
fn load_partial_and_interrupted_reads_are_resumed() {
    let image = image();
    let src = Flaky {
        step: 13,
        ..Flaky::new(image.clone())
    };
    for threads in [1, 3] {
        let words = sentinel_words();
        Map::new(&words)
            .load_from("f", &src, ID, plan(threads, 1000))
            .unwrap();
        assert!(snapshot_words(&words) == words_of(&image));
    }
    assert!(src.interrupts.load(Ordering::Relaxed) > 1);
}

#[test]
fn load_file_shrinking_or_failing_mid_read_is_a_size_or_read_error() {
    let image = image();
    // The size was right when checked, then the file lost its last 1000 bytes.
    let shrunk = Flaky {
        len: image.len() as u64,
        ..Flaky::new(image[..image.len() - 1000].to_vec())
    };
    let e = Map::new(&sentinel_words())
        .load_from("/d/ptrack.map", &shrunk, ID, plan(3, 4096))
        .unwrap_err();
    assert!(
        matches!(e, LoadError::Size { size, .. } if size == image.len() as u64 - 1000),
        "{e:?}"
    );
    // EIO in the second of three ranges.
    let at = image.len() as u64 / 2 + 11;
    let failing = Flaky {
        fail_at: Some(at),
        step: 64,
        ..Flaky::new(image.clone())
    };
    for threads in [1, 3] {
        let e = Map::new(&sentinel_words())
            .load_from("/d/ptrack.map", &failing, ID, plan(threads, 4096))
            .unwrap_err();
        match &e {
            LoadError::Read { offset, source, .. } => {
                assert_eq!(*offset, at, "{e}");
                assert_eq!(source.raw_os_error(), Some(5));
            }
            e => panic!("{e:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("ptrack read map: could not read file \"/d/ptrack.map\" at offset "),
            "{e}"
        );
    }
}

#[test]
fn load_directory_or_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ptrack.map");
    assert!(crate::files::open_map(&p).unwrap().is_none());
    std::fs::create_dir(&p).unwrap();
    let e = crate::files::open_map(&p).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("ptrack.map\" is a directory, not a regular file"),
        "{e}"
    );
    // Opened anyway (open(2) allows it): the read fails, named.
    let d = File::open(&p).unwrap();
    let words = sentinel_words();
    match Map::new(&words).load_file(&p, &d, ID) {
        Err(e @ LoadError::Read { .. }) => {
            assert!(
                e.to_string().contains(&format!("\"{}\"", p.display())),
                "{e}"
            );
        }
        Err(e @ LoadError::Size { .. }) => {
            // A file system that gives directories a size under 16 bytes.
            assert!(e.to_string().contains("ptrack.map"), "{e}");
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn load_of_a_saver_chain_matches_the_saved_map() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ptrack.map");
    let l = MapLayout::for_size_mb(2).unwrap();
    let words = Map::alloc(l);
    let dirty = Map::alloc_dirty(l);
    let m = Map::with_dirty(&words, &dirty);
    m.reset(ID);
    let loc = RelFileLocator {
        spc_oid: Oid(1663),
        db_oid: Oid(5),
        rel_number: RelFileNumber(16385),
    };
    for b in 0..300 {
        m.mark(loc, ForkNumber::Main, BlockNumber(b * 7), Lsn(500), 131072);
    }
    m.set_tracked(Lsn(600), TimeLineId(1));
    let mut saver = crate::mapsave::Saver::new(&path, 0, 1, false, l.file_bytes());
    let mut s = m.take_save(true, Vec::new());
    saver.write(&mut s, &path, 600).unwrap();
    let f = crate::files::open_map(&path).unwrap().unwrap();
    let on_disk = words_of(&std::fs::read(&path).unwrap());
    // The file is the map plus the generation the saver wrote into header word 9.
    let mut want = snapshot_words(&words);
    want[crate::mapsave::W_GENERATION] = on_disk[crate::mapsave::W_GENERATION];
    assert!(want == on_disk);
    let words2 = Map::alloc(l);
    for threads in [2, 3] {
        Map::new(&words2)
            .load_from(
                &f.path.display().to_string(),
                &f.file,
                ID,
                plan(threads, 777),
            )
            .unwrap();
        assert!(snapshot_words(&words2) == want, "{threads} threads");
    }
    assert_eq!(words2.len(), HEADER_WORDS + l.slots as usize);
}
