//! The WAL decoder against PostgreSQL's own reader: for every record of WAL written by a real
//! PG15 and PG18 server running the DDL mix, our block references equal `pg_waldump
//! --bkp-details` output LSN by LSN, and decoding stops where pg_waldump stops. Feeding the same
//! WAL in tiny and odd-sized pieces gives the same records.

use std::path::Path;

use ptrack_testkit::{ClusterConfig, PgCluster, StopMode, require_pg};
use ptrack_types::Lsn;
use ptrack_wal::{DecoderConfig, Poll, Start, WalDecoder, WalDir};

use crate::util::run;
use crate::workload::run_ddl_mix;

/// (record LSN, block id, rel, fork, block, has image) for each block reference.
pub(crate) type Ref = (Lsn, u64, String, String, u64, bool);

pub(crate) fn parse_waldump(text: &str) -> Vec<Ref> {
    let mut out = Vec::new();
    let mut lsn = Lsn(0);
    for line in text.lines() {
        if let Some(i) = line.find(" lsn: ") {
            let s = &line[i + 6..];
            lsn = s[..s.find(',').unwrap()].parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("\tblkref #") {
            // "3: rel 1663/5/16407 fork main blk 742 (FPW); hole: ..."
            let (id, rest) = rest.split_once(": rel ").unwrap();
            let mut w = rest.split_whitespace();
            let rel = w.next().unwrap().to_string();
            assert_eq!(w.next(), Some("fork"));
            let fork = w.next().unwrap().to_string();
            assert_eq!(w.next(), Some("blk"));
            let blk = w.next().unwrap().trim_end_matches(';').parse().unwrap();
            out.push((
                lsn,
                id.parse().unwrap(),
                rel,
                fork,
                blk,
                rest.contains("(FPW"),
            ));
        }
    }
    out
}

fn waldump_end(stderr: &str) -> Option<Lsn> {
    // "... invalid record length at 0/54B8EA8: expected at least 24, got 0": the last " at "
    // followed by an LSN.
    stderr
        .match_indices(" at ")
        .filter_map(|(i, _)| {
            stderr[i + 4..]
                .split(':')
                .next()?
                .trim()
                .parse::<Lsn>()
                .ok()
        })
        .last()
}

fn segment_range(dir: &Path) -> (String, String) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    (
        names.first().unwrap().clone(),
        names.last().unwrap().clone(),
    )
}

pub(crate) fn ours(dir: &Path) -> (Vec<Ref>, String) {
    let r = run(&["wal", "scan", "--json", &dir.display().to_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let refs = r
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["lsn"].as_str().unwrap().parse().unwrap(),
                v["block_id"].as_u64().unwrap(),
                format!("{}/{}/{}", v["spc"], v["db"], v["relfilenode"]),
                v["fork"].as_str().unwrap().to_string(),
                v["block"].as_u64().unwrap(),
                v["fpw"].as_bool().unwrap(),
            )
        })
        .collect();
    (refs, r.stderr)
}

fn block_refs_equal_pg_waldump(major: u32) {
    let Some(pg) = require_pg(major) else { return };
    let cfg = ClusterConfig::new(true)
        .set("max_prepared_transactions", "5")
        .set("wal_level", "logical")
        .set("max_wal_size", "4GB")
        .set("wal_keep_size", "4GB");
    let mut c = PgCluster::init_with(&pg, &cfg);
    c.start();
    let methods = run_ddl_mix(&c);
    eprintln!("PG{major}: wal_compression methods exercised: {methods:?}");
    c.stop(StopMode::Fast);
    let wal = c.datadir().join("pg_wal");
    let (first, last) = segment_range(&wal);
    let out = c
        .tool("pg_waldump")
        .args([
            "--bkp-details",
            "-p",
            &wal.display().to_string(),
            &first,
            &last,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs = parse_waldump(&text);
    let their_end = waldump_end(&String::from_utf8_lossy(&out.stderr));
    let (mine, stderr) = ours(&wal);
    assert!(
        theirs.len() > 5000,
        "too little WAL to compare: {}",
        theirs.len()
    );
    assert!(
        theirs.iter().any(|r| r.5),
        "no full-page images in the workload"
    );
    if mine != theirs {
        let i = mine
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(mine.len().min(theirs.len()));
        panic!(
            "PG{major}: block refs differ from pg_waldump at index {i} (ours {}, theirs {}):\n ours:   {:?}\n theirs: {:?}",
            mine.len(),
            theirs.len(),
            mine.get(i),
            theirs.get(i)
        );
    }
    let end = their_end.unwrap_or_else(|| {
        panic!(
            "pg_waldump end not found in: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        stderr.contains(&format!("end of WAL at {end}")),
        "pg_waldump ended at {end}; we: {stderr}"
    );
    eprintln!(
        "PG{major}: {} block references equal pg_waldump's; both end at {end}",
        mine.len()
    );
}

#[test]
fn pg15_block_refs_equal_pg_waldump() {
    block_refs_equal_pg_waldump(15);
}

#[test]
fn pg18_block_refs_equal_pg_waldump() {
    block_refs_equal_pg_waldump(18);
}

/// Decodes all WAL of `dir`, feeding it in pieces whose sizes cycle through `sizes`.
fn decode_chunked(dir: &Path, sizes: &[usize]) -> Vec<(Lsn, Lsn, usize)> {
    let wal = WalDir::open(dir).unwrap();
    let cfg = DecoderConfig {
        seg_size: wal.seg_size,
        xlog_blcksz: wal.xlog_blcksz,
        ..DecoderConfig::default()
    };
    let first = *wal.segments.keys().next().unwrap();
    let start = wal.segment_start(first);
    let mut dec = WalDecoder::new(cfg, start, Start::FirstOnPage(start));
    let mut out = Vec::new();
    let mut k = 0;
    'segments: for (_, f) in wal.segments.range(first..) {
        let bytes = std::fs::read(&f.path).unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let n = sizes[k % sizes.len()].min(bytes.len() - at);
            k += 1;
            dec.feed(&bytes[at..at + n]);
            at += n;
            loop {
                match dec.poll().unwrap() {
                    Poll::Record(r) => out.push((r.lsn, r.end_lsn, r.blocks.len())),
                    Poll::NeedMore => break,
                    Poll::End(_) => break 'segments,
                    Poll::Abandoned { .. } => {}
                }
            }
        }
    }
    out
}

#[test]
fn chunked_feeding_gives_the_same_records() {
    let Some(pg) = require_pg(18) else { return };
    let mut c = PgCluster::start_new(&pg, true);
    c.pgbench_init(1);
    c.execute("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 50) AS pad FROM generate_series(1, 3000) g");
    c.stop(StopMode::Fast);
    let wal = c.datadir().join("pg_wal");
    let whole = decode_chunked(&wal, &[usize::MAX]);
    assert!(whole.len() > 1000);
    for sizes in [&[1usize][..], &[7, 13, 1, 8191, 3], &[8193, 40, 24]] {
        assert_eq!(decode_chunked(&wal, sizes), whole, "chunk sizes {sizes:?}");
    }
}
