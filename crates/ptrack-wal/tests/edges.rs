//! Decoder edge cases on WAL laid out by `WalBuilder` exactly as the server lays it out: records
//! crossing pages and segments, `XLOG_SWITCH`, an abandoned record repaired by
//! `XLP_FIRST_IS_OVERWRITE_CONTRECORD`, garbage or zeroes after the end, chunked feeding, and
//! random damage that must never panic.

use ptrack_types::{Lsn, PgMajorVersion};
use ptrack_wal::builder::WalBuilder;
use ptrack_wal::consts::*;
use ptrack_wal::{DecoderConfig, EndReason, Poll, Start, WalDecoder};

const SEG: u64 = 1 << 20;

fn cfg() -> DecoderConfig {
    DecoderConfig {
        seg_size: ptrack_types::WalSegSize::new(SEG).unwrap(),
        system_identifier: Some(0x7000_0000_0000_0042),
        ..DecoderConfig::default()
    }
}

#[derive(Debug, PartialEq)]
enum Ev {
    Rec(Lsn, usize),
    Abandoned(Lsn),
    End(EndReason),
    Err(String),
}

fn decode(b: &WalBuilder, chunk: usize) -> Vec<Ev> {
    let mut d = WalDecoder::new(cfg(), b.start(), Start::FirstOnPage(b.start()));
    let mut out = Vec::new();
    let bytes = b.bytes();
    let mut at = 0;
    loop {
        match d.poll() {
            Ok(Poll::Record(r)) => out.push(Ev::Rec(r.lsn, r.blocks.len())),
            Ok(Poll::Abandoned { lsn, .. }) => out.push(Ev::Abandoned(lsn)),
            Ok(Poll::End(e)) => {
                out.push(Ev::End(e.reason));
                return out;
            }
            Err(e) => {
                out.push(Ev::Err(e.to_string()));
                return out;
            }
            Ok(Poll::NeedMore) => {
                if at >= bytes.len() {
                    return out;
                }
                let n = chunk.min(bytes.len() - at);
                d.feed(&bytes[at..at + n]);
                at += n;
            }
        }
    }
}

fn recs(ev: &[Ev]) -> Vec<Lsn> {
    ev.iter()
        .filter_map(|e| {
            if let Ev::Rec(l, _) = e {
                Some(*l)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn records_crossing_pages_and_segments() {
    let mut b = WalBuilder::new(PgMajorVersion::V16, SEG, 3);
    let mut lsns = Vec::new();
    for i in 0..400u32 {
        let size = [0usize, 5, 100, 8000, 8170, 20_000, 65_000][i as usize % 7];
        lsns.push(b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(16384, i, size)));
    }
    assert!(b.pos().0 > b.start().0 + 2 * SEG, "must cross segments");
    b.pad_segment();
    let whole = decode(&b, usize::MAX);
    assert_eq!(recs(&whole), lsns);
    assert_eq!(whole.last(), Some(&Ev::End(EndReason::ZeroLength)));
    for chunk in [1, 7, 24, 8191, 8193, 65_537] {
        assert_eq!(decode(&b, chunk), whole, "chunk {chunk}");
    }
}

#[test]
fn switch_skips_to_next_segment() {
    let mut b = WalBuilder::new(PgMajorVersion::V15, SEG, 1);
    let a = b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 1, 10));
    let s = b.switch();
    let c = b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 2, 10));
    assert_eq!(
        c,
        Lsn(2 * SEG + 40),
        "first record of the next segment follows the long header"
    );
    b.pad_segment();
    let ev = decode(&b, 4096);
    assert_eq!(recs(&ev), vec![a, s, c]);
}

#[test]
fn abandoned_record_is_reported_and_decoding_resumes() {
    let mut b = WalBuilder::new(PgMajorVersion::V17, SEG, 1);
    let a = b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 1, 10));
    let torn = b.torn_record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 2, 30_000), 3000);
    b.next_page_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
    let mut main = vec![0xFF, 16];
    main.extend_from_slice(&torn.0.to_le_bytes());
    main.extend_from_slice(&[0; 8]);
    let ow = b.record(RM_XLOG_ID, XLOG_OVERWRITE_CONTRECORD, &main);
    let after = b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 3, 10));
    b.pad_segment();
    let ev = decode(&b, 1000);
    assert_eq!(
        ev,
        vec![
            Ev::Rec(a, 1),
            Ev::Abandoned(torn),
            Ev::Rec(ow, 0),
            Ev::Rec(after, 1),
            Ev::End(EndReason::ZeroLength)
        ]
    );
}

#[test]
fn garbage_after_the_end_ends_cleanly() {
    let mut seed = 0x243F_6A88_85A3_08D3u64;
    for _ in 0..200 {
        let mut b = WalBuilder::new(PgMajorVersion::V18, SEG, 1);
        let last = b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 1, 100));
        let end = b.pos().0 as usize - b.start().0 as usize;
        let len = b.bytes().len();
        b.bytes_mut().resize(len + 3 * 8192, 0);
        for x in b.bytes_mut()[end..].iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *x = seed as u8;
        }
        b.pad_segment();
        let ev = decode(&b, 3000);
        assert_eq!(recs(&ev)[0], last);
        assert!(
            matches!(ev.last(), Some(Ev::End(_))),
            "garbage must end WAL, not fail: {:?}",
            ev.last()
        );
    }
}

#[test]
fn random_damage_never_panics() {
    let mut b = WalBuilder::new(PgMajorVersion::V14, SEG, 1);
    for i in 0..60u32 {
        b.record(
            RM_HEAP_ID,
            0,
            &WalBuilder::block_body(16384, i, [0, 50, 9000][i as usize % 3]),
        );
    }
    b.pad_segment();
    let clean = b.bytes().to_vec();
    let mut seed = 99u64;
    for _ in 0..500 {
        let bytes = b.bytes_mut();
        bytes.copy_from_slice(&clean);
        for _ in 0..1 + seed % 6 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % (200_000.min(bytes.len()));
            bytes[at] = (seed >> 32) as u8;
        }
        let _ = decode(&b, 5000);
    }
}

#[test]
fn wal_of_another_cluster_is_an_error() {
    let mut b = WalBuilder::new(PgMajorVersion::V15, SEG, 1);
    b.sysid = 1;
    b.record(RM_HEAP_ID, 0, &WalBuilder::block_body(1, 1, 10));
    b.pad_segment();
    assert!(
        matches!(decode(&b, usize::MAX).last(), Some(Ev::Err(e)) if e.contains("system identifier"))
    );
}

/// Writes a builder's stream as segment files named for timeline 1.
fn write_segments(b: &WalBuilder, dir: &std::path::Path) {
    for (i, seg) in b.bytes().chunks(SEG as usize).enumerate() {
        let segno = b.start().0 / SEG + i as u64;
        let name = ptrack_wal::SegmentName {
            tli: ptrack_types::TimeLineId(1),
            segno,
        }
        .file_name(ptrack_types::WalSegSize::new(SEG).unwrap());
        std::fs::write(dir.join(name), seg).unwrap();
    }
}

fn sequential(wal: &ptrack_wal::WalDir, from: Lsn, to: Lsn) -> (Vec<Lsn>, ptrack_wal::ScanEnd) {
    let mut v = Vec::new();
    let end = ptrack_wal::scan_dir(
        wal,
        DecoderConfig::default(),
        Some(from),
        Some(to),
        &mut |r| v.push(r.lsn),
        &mut |_, _| {},
    )
    .unwrap();
    (v, end)
}

/// `parts` ranges on 1 to 3 threads (the thread count varies with `parts`).
fn parallel(
    wal: &ptrack_wal::WalDir,
    from: Lsn,
    to: Lsn,
    parts: usize,
) -> (Vec<Lsn>, ptrack_wal::ScanEnd) {
    let (kept, end, _) = ptrack_wal::scan_dir_ranges(
        wal,
        DecoderConfig::default(),
        from,
        to,
        parts % 3 + 1,
        parts,
        |_| Vec::new(),
        |v: &mut Vec<Lsn>, r| v.push(r.lsn),
    )
    .unwrap();
    (kept.into_iter().flat_map(|(v, _)| v).collect(), end)
}

#[test]
fn parallel_ranges_equal_sequential_scan() {
    let mut b = WalBuilder::new(PgMajorVersion::V17, SEG, 4);
    for i in 0..900u32 {
        b.record(
            RM_HEAP_ID,
            0,
            &WalBuilder::block_body(16384, i, [3usize, 9000, 40_000, 100][i as usize % 4]),
        );
        if i == 500 {
            b.switch();
        }
    }
    b.pad_segment();
    let dir = tempfile::tempdir().unwrap();
    write_segments(&b, dir.path());
    let wal = ptrack_wal::WalDir::open(dir.path()).unwrap();
    let from = b.start();
    let to = Lsn(b.pos().0 - 1);
    let (seq, seq_end) = sequential(&wal, from, to);
    assert!(seq.len() > 800);
    for parts in 1..=9 {
        assert_eq!(
            parallel(&wal, from, to, parts),
            (seq.clone(), seq_end.clone()),
            "{parts} parts"
        );
    }
    // Damage the middle of the third segment: every split must stop where the sequential scan
    // stops, never continuing with later ranges.
    let third = dir.path().join(
        ptrack_wal::SegmentName {
            tli: ptrack_types::TimeLineId(1),
            segno: 6,
        }
        .file_name(ptrack_types::WalSegSize::new(SEG).unwrap()),
    );
    let mut bytes = std::fs::read(&third).unwrap();
    for x in &mut bytes[300_000..300_100] {
        *x ^= 0xFF;
    }
    std::fs::write(&third, bytes).unwrap();
    let (seq, seq_end) = sequential(&wal, from, to);
    assert!(matches!(seq_end, ptrack_wal::ScanEnd::EndOfWal(_)));
    for parts in 1..=9 {
        let (par, _) = parallel(&wal, from, to, parts);
        assert_eq!(par, seq, "{parts} parts after damage");
    }
}

/// `poll_into` with one reused buffer returns exactly the records `poll` returns, field by field,
/// whatever the previous record left in the buffer (more or fewer blocks, longer main data).
#[test]
fn poll_into_reused_buffer_equals_poll() {
    let mut b = WalBuilder::new(PgMajorVersion::V16, SEG, 4);
    for i in 0..400u32 {
        match i % 5 {
            // Main data only, of varying length.
            0 => b.record(RM_XLOG_ID, 0, &{
                let n = (i as usize * 7) % 200;
                let mut body = vec![XLR_BLOCK_ID_DATA_SHORT, n as u8];
                body.extend((0..n).map(|k| k as u8));
                body
            }),
            // A block reference with data crossing pages now and then.
            k => b.record(
                RM_HEAP_ID,
                0,
                &WalBuilder::block_body(16384 + i, i, [5usize, 300, 9000, 20][k as usize - 1]),
            ),
        };
    }
    b.pad_segment();
    let mut by_poll = WalDecoder::new(cfg(), b.start(), Start::FirstOnPage(b.start()));
    let mut by_into = WalDecoder::new(cfg(), b.start(), Start::FirstOnPage(b.start()));
    by_poll.feed(b.bytes());
    by_into.feed(b.bytes());
    let mut buf = ptrack_wal::Record::default();
    let mut n = 0;
    loop {
        let p = by_poll.poll().unwrap();
        let q = by_into.poll_into(&mut buf).unwrap();
        match (p, q) {
            (Poll::Record(r), ptrack_wal::Polled::Record) => {
                assert_eq!(*r, buf, "record {n}");
                n += 1;
            }
            (Poll::End(a), ptrack_wal::Polled::End(b)) => {
                assert_eq!(a, b);
                break;
            }
            (Poll::NeedMore, ptrack_wal::Polled::NeedMore) => break,
            (p, q) => panic!("poll {p:?} but poll_into {q:?} after {n} records"),
        }
    }
    assert_eq!(n, 400);
}
