//! WAL of every installed major (13–18):
//! decoding the whole pg_wal of a real server after a clean shutdown ends cleanly, its last record
//! is the shutdown checkpoint that pg_control names, and every block of a freshly loaded table that
//! is not all zeroes on disk appears in the block references (PG16+ extends relations in bulk with
//! zero pages that have no WAL until first used; spec §3.6).

use std::collections::BTreeSet;

use ptrack_page::read_control_file;
use ptrack_testkit::{PgCluster, StopMode, optional_pg};
use ptrack_types::Lsn;
use ptrack_wal::{ScanEnd, WalDir};

fn decode_whole_wal(major: u32) {
    let Some(pg) = optional_pg(major) else { return };
    let mut c = PgCluster::start_new(&pg, major >= 15);
    c.execute("CREATE TABLE w AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");
    c.execute("UPDATE w SET h = 'x' WHERE g % 10 = 0");
    let relfilenode: u32 = c
        .query_one("SELECT relfilenode FROM pg_class WHERE relname = 'w'")
        .parse()
        .unwrap();
    let path = c.relation_path("postgres", "w");
    c.stop(StopMode::Fast);
    let want = crate::util::written_blocks(&c.datadir().join(&path));
    assert!(want.len() > 100);
    let ctl = read_control_file(c.datadir()).unwrap();
    let wal = WalDir::open(&c.datadir().join("pg_wal")).unwrap();
    let mut last = Lsn(0);
    let mut seen = BTreeSet::new();
    let end = crate::util::each_record(&wal, &mut |r| {
        last = r.lsn;
        for b in &r.blocks {
            if b.locator.rel_number.0 == relfilenode {
                seen.insert(b.block.0);
            }
        }
    });
    assert!(matches!(end, ScanEnd::EndOfWal(_)), "PG{major}: {end:?}");
    assert_eq!(
        last, ctl.checkpoint,
        "PG{major}: last record must be the shutdown checkpoint of pg_control"
    );
    let missing: Vec<&u32> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "PG{major}: written blocks never referenced in WAL: {missing:?}"
    );
}

#[test]
fn pg13_whole_wal_decodes() {
    decode_whole_wal(13);
}

#[test]
fn pg14_whole_wal_decodes() {
    decode_whole_wal(14);
}

#[test]
fn pg15_whole_wal_decodes() {
    decode_whole_wal(15);
}

#[test]
fn pg16_whole_wal_decodes() {
    decode_whole_wal(16);
}

#[test]
fn pg17_whole_wal_decodes() {
    decode_whole_wal(17);
}

#[test]
fn pg18_whole_wal_decodes() {
    decode_whole_wal(18);
}
