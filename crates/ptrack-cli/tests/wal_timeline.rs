//! Timelines and archives: a standby promoted to timeline 2 has segments of both timelines and
//! `00000002.history` in pg_wal; decoding follows the history to the end of the new timeline (the
//! last record is pg_control's shutdown checkpoint), sees the end-of-recovery record, and every
//! block written on the new timeline is referenced. The same WAL archived with each segment
//! compressed (gzip, zstd, lz4 in turn) decodes to exactly the same records.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use ptrack_page::read_control_file;
use ptrack_testkit::{ClusterConfig, PgCluster, StopMode, require_pg};
use ptrack_types::{Lsn, TimeLineId};
use ptrack_wal::{Change, ScanEnd, WalDir, changes_of};

fn records(dir: &std::path::Path) -> (Vec<(Lsn, usize)>, ScanEnd, Vec<Change>) {
    let wal = WalDir::open(dir).unwrap();
    let mut out = Vec::new();
    let mut special = Vec::new();
    let end = crate::util::each_record(&wal, &mut |r| {
        out.push((r.lsn, r.blocks.len()));
        for c in changes_of(r, wal.major, 8192) {
            if matches!(c, Change::EndOfRecovery { .. } | Change::Checkpoint { .. }) {
                special.push(c);
            }
        }
    });
    (out, end, special)
}

#[test]
fn promoted_standby_wal_follows_history_and_archives_decode_alike() {
    let Some(pg) = require_pg(18) else { return };
    let cfg = ClusterConfig::new(true).set("wal_keep_size", "1GB");
    let mut primary = PgCluster::init_with(&pg, &cfg);
    primary.start();
    primary.execute("CREATE TABLE before_switch AS SELECT generate_series(1, 5000) g");
    let mut standby = PgCluster::standby_of(&primary);
    standby.start();
    primary.execute("INSERT INTO before_switch SELECT generate_series(1, 5000)");
    let target: Lsn = primary
        .query_one("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    standby.wait_for_lsn(
        "SELECT pg_last_wal_replay_lsn()",
        &target.to_string(),
        "standby replay",
        Duration::from_secs(120),
    );
    primary.stop(StopMode::Fast);
    assert_eq!(standby.query_one("SELECT pg_promote()"), "t");
    standby.execute(
        "CREATE TABLE after_switch AS SELECT g, md5(g::text) FROM generate_series(1, 8000) g",
    );
    let path = standby.relation_path("postgres", "after_switch");
    let relfilenode: u32 = standby
        .query_one("SELECT relfilenode FROM pg_class WHERE relname = 'after_switch'")
        .parse()
        .unwrap();
    standby.stop(StopMode::Fast);

    let pg_wal = standby.datadir().join("pg_wal");
    assert!(pg_wal.join("00000002.history").exists());
    let wal = WalDir::open(&pg_wal).unwrap();
    assert_eq!(wal.timeline, TimeLineId(2));
    assert_eq!(wal.history.len(), 1);
    let (recs, end, special) = records(&pg_wal);
    assert!(matches!(end, ScanEnd::EndOfWal(_)), "{end:?}");
    let ctl = read_control_file(standby.datadir()).unwrap();
    assert_eq!(
        recs.last().unwrap().0,
        ctl.checkpoint,
        "last record must be the new timeline's shutdown checkpoint"
    );
    assert!(
        special.iter().any(|c| matches!(
            c,
            Change::EndOfRecovery {
                timeline: TimeLineId(2),
                prev_timeline: TimeLineId(1)
            }
        ) || matches!(
            c,
            Change::Checkpoint {
                timeline: Some(TimeLineId(2)),
                ..
            }
        )),
        "no record of the switch to timeline 2: {special:?}"
    );
    // Every written block of the table created on timeline 2 is referenced.
    let written = crate::util::written_blocks(&standby.datadir().join(&path));
    let mut seen = BTreeSet::new();
    crate::util::each_record(&wal, &mut |r| {
        for b in r
            .blocks
            .iter()
            .filter(|b| b.locator.rel_number.0 == relfilenode)
        {
            seen.insert(b.block.0);
        }
    });
    assert!(
        written.is_subset(&seen),
        "blocks written on timeline 2 missing from WAL"
    );

    // pg_waldump on the timeline-2 segments agrees with us block reference by block reference.
    let mut tl2: Vec<String> = std::fs::read_dir(&pg_wal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.starts_with("00000002"))
        .collect();
    tl2.sort();
    let out = standby
        .tool("pg_waldump")
        .args([
            "--bkp-details",
            "--timeline",
            "2",
            "-p",
            &pg_wal.display().to_string(),
        ])
        .args([&tl2[0], tl2.last().unwrap()])
        .output()
        .unwrap();
    let theirs = crate::wal::parse_waldump(&String::from_utf8_lossy(&out.stdout));
    assert!(
        theirs.len() > 100,
        "pg_waldump printed too little: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mine, _) = crate::wal::ours(&pg_wal);
    let mine: Vec<_> = mine.into_iter().filter(|r| r.0 >= theirs[0].0).collect();
    assert_eq!(
        mine, theirs,
        "timeline 2 block references differ from pg_waldump"
    );

    // An archive with every segment compressed decodes to the same records.
    let archive = tempfile::tempdir().unwrap();
    std::fs::copy(
        pg_wal.join("00000002.history"),
        archive.path().join("00000002.history"),
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&pg_wal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    for (i, n) in names.iter().enumerate() {
        let data = std::fs::read(pg_wal.join(n)).unwrap();
        match i % 3 {
            0 => {
                let mut e = flate2::write::GzEncoder::new(
                    std::fs::File::create(archive.path().join(format!("{n}.gz"))).unwrap(),
                    flate2::Compression::fast(),
                );
                e.write_all(&data).unwrap();
                e.finish().unwrap();
            }
            1 => std::fs::write(
                archive.path().join(format!("{n}.zst")),
                zstd::encode_all(&data[..], 1).unwrap(),
            )
            .unwrap(),
            _ => {
                let mut w = lz4_flex::frame::FrameEncoder::new(
                    std::fs::File::create(archive.path().join(format!("{n}.lz4"))).unwrap(),
                );
                w.write_all(&data).unwrap();
                w.finish().unwrap();
            }
        }
    }
    let (arch_recs, arch_end, _) = records(archive.path());
    assert_eq!(
        arch_recs, recs,
        "compressed archive must decode to the same records"
    );
    assert_eq!(arch_end, end);
}
