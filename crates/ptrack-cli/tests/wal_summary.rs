//! Our change sets against PostgreSQL 18's own WAL summaries (`summarize_wal = on`): for every
//! summary the server wrote while running the DDL mix, every block in
//! `pg_wal_summary_contents()` must be in our change set for the same LSN range. Blocks we have and
//! it has not are listed and must be explained: FSM blocks (the summarizer skips the FSM fork) and
//! visibility-map pages we derive from heap records (spec §3.5).

use std::collections::BTreeSet;
use std::time::Duration;

use ptrack_blockmap::ChangeSet;
use ptrack_testkit::{ClusterConfig, PgCluster, StopMode, require_pg};
use ptrack_types::{ForkNumber, Lsn, PgMajorVersion};
use ptrack_wal::{Change, WalDir, changes_of};

use crate::util::run;
use crate::workload::run_ddl_mix;

type Key = (u32, u32, u32, u8, u32); // spc, db, relfilenode, fork, block

#[test]
fn pg18_every_summarized_block_is_in_ours() {
    let Some(pg) = require_pg(18) else { return };
    let cfg = ClusterConfig::new(true)
        .set("summarize_wal", "on")
        .set("max_prepared_transactions", "5")
        .set("wal_keep_size", "4GB")
        .set("max_wal_size", "4GB");
    let mut c = PgCluster::init_with(&pg, &cfg);
    c.start();
    run_ddl_mix(&c);
    c.execute("CHECKPOINT");
    let target: Lsn = c
        .query_one("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    c.execute("SELECT pg_switch_wal()");
    c.execute("CHECKPOINT");
    c.wait_for_lsn(
        "SELECT summarized_lsn FROM pg_get_wal_summarizer_state()",
        &target.to_string(),
        "WAL summarizer",
        Duration::from_secs(180),
    );
    let summaries: Vec<(Lsn, Lsn)> = c
        .query("SELECT start_lsn, end_lsn FROM pg_available_wal_summaries() WHERE tli = 1 ORDER BY start_lsn")
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    assert!(summaries.len() >= 3, "too few summaries: {summaries:?}");
    let mut theirs: Vec<BTreeSet<Key>> = Vec::new();
    for (s, e) in &summaries {
        let rows = c.query(&format!(
            "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, is_limit_block
               FROM pg_wal_summary_contents(1, '{s}', '{e}')"
        ));
        theirs.push(
            rows.iter()
                .filter(|r| r[5] == "f")
                .map(|r| {
                    (
                        r[0].parse().unwrap(),
                        r[1].parse().unwrap(),
                        r[2].parse().unwrap(),
                        r[3].parse().unwrap(),
                        r[4].parse().unwrap(),
                    )
                })
                .collect(),
        );
    }
    c.stop(StopMode::Fast);

    // Decode the WAL once, keeping every change with its record LSN.
    let dir = c.datadir().join("pg_wal");
    let wal = WalDir::open(&dir).unwrap();
    let first_available = wal.segment_start(*wal.segments.keys().next().unwrap());
    let mut changes: Vec<(Lsn, Change)> = Vec::new();
    crate::util::each_record(&wal, &mut |r| {
        for ch in changes_of(r, PgMajorVersion::V18, 8192) {
            changes.push((r.lsn, ch));
        }
    });

    let (mut compared, mut blocks_checked, mut fsm_extra, mut vm_extra) = (0, 0, 0, 0);
    for ((start, end), pg_blocks) in summaries.iter().zip(&theirs) {
        if *start < first_available {
            continue; // segment recycled before the test could read it
        }
        let mut ours = ChangeSet::new(wal.system_identifier, *start);
        let mut implied = BTreeSet::new();
        for (lsn, ch) in changes.iter().filter(|(l, _)| l >= start && l < end) {
            ours.apply(*lsn, ch);
            if let Change::Block {
                locator,
                fork,
                block,
                implied: true,
            } = ch
            {
                implied.insert((
                    locator.spc_oid.0,
                    locator.db_oid.0,
                    locator.rel_number.0,
                    fork.as_u8(),
                    block.0,
                ));
            }
        }
        let mut ours_keys = BTreeSet::new();
        for ((l, f), fc) in &ours.forks {
            for b in &fc.blocks {
                ours_keys.insert((l.spc_oid.0, l.db_oid.0, l.rel_number.0, f.as_u8(), b));
            }
        }
        let missing: Vec<&Key> = pg_blocks
            .iter()
            .filter(|k| {
                !ours_keys.contains(*k)
                    && !ours
                        .db_resets
                        .contains(&(ptrack_types::Oid(k.0), ptrack_types::Oid(k.1)))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "range {start}..{end}: PostgreSQL summarized blocks we missed: {:?}",
            &missing[..missing.len().min(20)]
        );
        for k in ours_keys.difference(pg_blocks) {
            if k.3 == ForkNumber::Fsm.as_u8() {
                fsm_extra += 1;
            } else if k.3 == ForkNumber::VisibilityMap.as_u8() && implied.contains(k) {
                vm_extra += 1;
                eprintln!(
                    "range {start}..{end}: extra VM block {k:?}: implied by a heap record that cleared VM bits (spec 3.5)"
                );
            } else {
                panic!("range {start}..{end}: block {k:?} is ours only and not explained");
            }
        }
        compared += 1;
        blocks_checked += pg_blocks.len();
    }
    assert!(
        compared >= 3 && blocks_checked > 1000,
        "compared {compared} summaries, {blocks_checked} blocks"
    );
    eprintln!(
        "PG18: {compared} summaries, {blocks_checked} summarized blocks all found; extra blocks: {fsm_extra} FSM (not summarized by PostgreSQL), {vm_extra} implied VM"
    );

    // The CLI summarises a whole range and says it is safe.
    let (s, e) = (
        summaries
            .iter()
            .find(|(s, _)| *s >= first_available)
            .unwrap()
            .0,
        summaries.last().unwrap().1,
    );
    let r = run(&[
        "wal",
        "summarize",
        "--json",
        "--from",
        &s.to_string(),
        "--to",
        &e.to_string(),
        &dir.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["safe"], true);
    assert!(j["changed_blocks"].as_u64().unwrap() as usize >= blocks_checked / 2);
    assert!(
        !j["database_resets"].as_array().unwrap().is_empty(),
        "CREATE/DROP DATABASE must reset databases"
    );
}
