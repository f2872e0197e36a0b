//! Tests of the bundle writer and reader.

use super::*;

#[test]
fn large_files_are_stored_and_read_in_pieces() {
    let d = Scratch::new();
    let data: Vec<u8> = (0..STREAM_PIECE * 5 / 2)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut w = BundleWriter::create(&*d.store, &d.dir, 0, Compression::Lz4).unwrap();
    w.put_blob(b"before").unwrap();
    let mut seen = Vec::new();
    let s = w
        .put_stream(&mut data.as_slice(), d.path(), |off, p| {
            seen.push((off, p.len()))
        })
        .unwrap();
    w.finish().unwrap();
    assert_eq!(s.len, data.len() as u64, "stored raw");
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|&(_, n)| n <= STREAM_PIECE));
    let mut r = BundleReader::new(d.store.clone(), &d.dir, Compression::Lz4);
    let mut back = Vec::new();
    r.blob_stream(s, s.len, Digest::of(&data), |off, p| {
        assert_eq!(off, back.len() as u64);
        assert!(p.len() <= STREAM_PIECE);
        back.extend_from_slice(p);
        Ok::<(), Error>(())
    })
    .unwrap();
    assert_eq!(back, data);
    assert_eq!(r.blob(s, s.len, Digest::of(&data)).unwrap(), data);
    let wrong = r.blob_stream(s, s.len, Digest::of(b"x"), |_, _| Ok::<(), Error>(()));
    assert!(wrong.unwrap_err().to_string().contains("BLAKE3"));
    let outside = Stored {
        len: s.len + 1,
        ..s
    };
    assert!(
        r.blob_stream(outside, outside.len, Digest::of(&data), |_, _| Ok::<
            (),
            Error,
        >(()))
        .is_err()
    );
}

#[test]
fn pages_blobs_and_indexes_round_trip_in_every_compression() {
    for kind in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let d = Scratch::new();
        let mut w = BundleWriter::create(&*d.store, &d.dir, 3, kind).unwrap();
        let mut page = vec![0u8; 8192];
        page[0..8].copy_from_slice(&[0, 0, 0, 1, 0x10, 0, 0, 0]);
        page[8000..8100].fill(7);
        let zero = vec![0u8; 8192];
        let e1 = w.put_page(&page, 5).unwrap();
        let e2 = w.put_page(&zero, 6).unwrap();
        assert_eq!(e2.flags, FLAG_ZERO);
        let blob = b"hello hello hello hello hello hello".to_vec();
        let s = w.put_blob(&blob).unwrap();
        let idx = w.put_index(&[e1, e2]).unwrap();
        w.finish().unwrap();
        let mut r = BundleReader::new(d.store.clone(), &d.dir, kind);
        let got = r.index(&idx).unwrap();
        assert_eq!(got, vec![e1, e2]);
        let mut out = Vec::new();
        r.page(3, &got[0], 8192, &mut out).unwrap();
        assert_eq!(out, page);
        r.page(3, &got[1], 8192, &mut out).unwrap();
        assert_eq!(out, zero);
        assert_eq!(
            r.blob(s, blob.len() as u64, Digest::of(&blob)).unwrap(),
            blob
        );
        assert!(r.blob(s, blob.len() as u64, Digest::of(b"x")).is_err());
        let mut outside = s;
        outside.offset = u64::MAX - 2;
        assert!(
            r.blob(outside, blob.len() as u64, Digest::of(&blob))
                .is_err()
        );
        let mut bad = idx;
        bad.digest.0[0] ^= 1;
        assert!(r.index(&bad).is_err());
        let mut wrong = BundleReader::new(d.store.clone(), &d.dir, Compression::None);
        if kind != Compression::None {
            assert!(wrong.index(&idx).is_err());
        }
    }
}

#[test]
fn read_ahead_returns_the_same_pages_in_any_order() {
    // More than one read-ahead window of pages, read in order, with gaps, backwards and
    // interleaved with a distant record: every page must come back exactly.
    for kind in [Compression::None, Compression::Lz4] {
        let d = Scratch::new();
        let mut w = BundleWriter::create(&*d.store, &d.dir, 0, kind).unwrap();
        let pages: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                let mut p = vec![0u8; 8192];
                p[0..8].copy_from_slice(&[0, 0, 0, 1, 0x10, 0, 0, 0]);
                for (j, b) in p[24..].iter_mut().enumerate() {
                    *b = (i as usize * 7919 + j * 31) as u8 ^ (j >> 8) as u8;
                }
                p
            })
            .collect();
        let entries: Vec<PageEntry> = pages
            .iter()
            .zip(0..)
            .map(|(p, b)| w.put_page(p, b).unwrap())
            .collect();
        let blob = b"far away".to_vec();
        let s = w.put_blob(&blob).unwrap();
        w.finish().unwrap();
        let mut r = BundleReader::new(d.store.clone(), &d.dir, kind);
        let mut out = Vec::new();
        let in_order = 0..pages.len();
        let gaps = (0..pages.len()).step_by(3);
        let backwards = (0..pages.len()).rev();
        for i in in_order.chain(gaps).chain(backwards) {
            r.page(0, &entries[i], 8192, &mut out).unwrap();
            assert_eq!(out, pages[i], "{kind:?} page {i}");
            if i % 50 == 0 {
                assert_eq!(
                    r.blob(s, blob.len() as u64, Digest::of(&blob)).unwrap(),
                    blob
                );
            }
        }
    }
}

#[test]
fn implausible_bundle_number_is_refused_without_allocating() {
    // Found by fuzz/fuzz_targets/bundle.rs: the slot table was grown to the bundle number
    // before the number was checked (out of memory for 0x8b8b8b8b).
    let d = Scratch::new();
    let mut r = BundleReader::new(d.store.clone(), &d.dir, Compression::None);
    for n in [4097, 0x8b8b_8b8b, u32::MAX] {
        let s = Stored {
            bundle: n,
            offset: HEADER_SIZE,
            len: 1,
        };
        let e = r.blob(s, 1, Digest::of(b"x")).unwrap_err().to_string();
        assert!(e.contains("implausible"), "{e}");
    }
    assert!(r.files.len() <= 1);
}

/// Content with zeros inside, at piece boundaries and at its end: what `put_stream_trim_zeros`
/// leaves out, and `blob_stream_zero_tail` gives back byte for byte.
#[test]
fn trailing_zeros_are_not_stored_and_come_back() {
    let p = STREAM_PIECE;
    let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0; 5], vec![0; p * 2], vec![9; 100]];
    for last in [0, 63, 64, 65, p - 1, p, p + 1, 3 * p - 1] {
        let mut v = vec![0u8; 3 * p];
        v[7] = 1;
        v[p + 3] = 2; // zeros between this and `last` are stored
        v[last] = 3;
        cases.push(v);
    }
    for data in cases {
        let d = Scratch::new();
        let mut w = BundleWriter::create(&*d.store, &d.dir, 0, Compression::Lz4).unwrap();
        w.put_blob(b"before").unwrap();
        let mut seen = 0u64;
        let (s, tail) = w
            .put_stream_trim_zeros(&mut data.as_slice(), d.path(), |off, piece| {
                assert_eq!(off, seen);
                seen += piece.len() as u64;
            })
            .unwrap();
        w.finish().unwrap();
        assert_eq!(seen, data.len() as u64, "every piece seen");
        let kept = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        assert_eq!((s.len, tail), (kept as u64, (data.len() - kept) as u64));
        let size = data.len() as u64;
        let mut r = BundleReader::new(d.store.clone(), &d.dir, Compression::Lz4);
        let mut back = Vec::new();
        r.blob_stream_zero_tail(s, size, tail, Digest::of(&data), |off, piece| {
            assert_eq!(off, back.len() as u64);
            back.extend_from_slice(piece);
            Ok::<(), Error>(())
        })
        .unwrap();
        assert!(back == data, "restored as it was ({} bytes)", data.len());
        if tail > 0 {
            // A tail that does not add up to the size, or none where there is one.
            let short = r.blob_stream_zero_tail(s, size, tail - 1, Digest::of(&data), |_, _| {
                Ok::<(), Error>(())
            });
            assert!(short.unwrap_err().to_string().contains("zeros"));
            assert!(
                r.blob_stream(s, size, Digest::of(&data), |_, _| Ok::<(), Error>(()))
                    .is_err()
            );
        }
    }
}

#[test]
fn last_nonzero_finds_the_last_byte() {
    assert_eq!(last_nonzero(&[]), None);
    assert_eq!(last_nonzero(&[0; 200]), None);
    for n in [1, 63, 64, 65, 127, 128, 200] {
        for at in [0, n / 2, n - 1] {
            let mut v = vec![0u8; n];
            v[at] = 0x80;
            assert_eq!(last_nonzero(&v), Some(at), "{n} bytes, set at {at}");
        }
    }
}

/// A bundle directory on a local repository in a temporary directory.
struct Scratch {
    d: tempfile::TempDir,
    store: std::sync::Arc<dyn ptrack_repo::Storage>,
    dir: ptrack_repo::Key,
}

impl Scratch {
    fn new() -> Scratch {
        let d = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(ptrack_repo::local::LocalFs::new(d.path()));
        Scratch {
            d,
            store,
            dir: ptrack_repo::Key::new("7/B1").unwrap(),
        }
    }

    fn path(&self) -> &std::path::Path {
        self.d.path()
    }
}
