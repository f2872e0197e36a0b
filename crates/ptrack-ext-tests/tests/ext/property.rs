//! No false negatives, as a property: randomised rounds of pgbench and DDL (new databases of
//! both strategies, TRUNCATE, VACUUM FULL, CLUSTER, index builds of every access method,
//! SET TABLESPACE, unlogged tables, drops), with immediate stops and restarts in some rounds.
//! Around each round the cluster is quiescent, checkpointed, and every block of every relation
//! file is hashed; every block whose bytes changed (or that is new and not all zeros) must be in
//! `ptrack_get_pagemapset(LSN before the round)`. It runs twice per major: with data checksums,
//! so hint-bit writes are WAL-logged like every other change, and in PostgreSQL's default
//! configuration (no checksums, no `wal_log_hints`), where free-space-map pages change without
//! WAL and must still all be reported, and main-fork pages whose only change is hint bits (page
//! LSN not moved) are counted apart.

use ptrack_ext_tests::{Hints, compare, lsn, pagemapset, ptrack_cluster, snapshot, sync_tracker};
use ptrack_testkit::{PgCluster, StopMode, TestRng, require_ptrack};

const ROUNDS: u32 = 20;
/// Rounds in the default configuration (a second run per major; CI time).
const DEFAULT_CONFIG_ROUNDS: u32 = 10;

const AMS: [(&str, &str); 6] = [
    ("btree", "(id)"),
    ("hash", "(id)"),
    ("gist", "(p)"),
    ("spgist", "(r)"),
    ("gin", "(arr)"),
    ("brin", "(id)"),
];

/// One round of changes; returns a one-line description.
fn workload(c: &PgCluster, r: u32, rng: &mut TestRng) -> String {
    let mut did = Vec::new();
    let tx = 50 + rng.below(400);
    c.run_tool(
        "pgbench",
        &["-n", "-t", &tx.to_string(), "-c", "2", "postgres"],
    );
    did.push(format!("pgbench {tx}x2"));
    let rows = 500 + rng.below(5000);
    let (am, col) = AMS[rng.below(AMS.len() as u64) as usize];
    c.execute(&format!(
        "CREATE TABLE t{r} (id int, v text, arr int[], p point, r int4range);
         INSERT INTO t{r} SELECT g, md5(g::text), ARRAY[g, g + 1], point(g, g), int4range(g, g + 5)
           FROM generate_series(1, {rows}) g;
         CREATE INDEX t{r}_idx ON t{r} USING {am} {col}"
    ));
    did.push(format!("table of {rows} rows, {am} index"));
    if r > 0 {
        let p = rng.below(u64::from(r));
        let exists = c.query_one(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = 't{p}'"
        )) == "1";
        if exists {
            let op = rng.below(7);
            let sql = match op {
                0 => format!("TRUNCATE t{p}"),
                1 => format!("VACUUM FULL t{p}"),
                2 => format!("UPDATE t{p} SET v = 'u' WHERE id % 5 = 0"),
                3 => format!("DELETE FROM t{p} WHERE id % 3 = 0"),
                4 => format!("ALTER TABLE t{p} SET TABLESPACE ts"),
                5 => format!("DROP TABLE t{p}"),
                _ => format!(
                    "CREATE INDEX IF NOT EXISTS t{p}_c ON t{p} (id); CLUSTER t{p} USING t{p}_c"
                ),
            };
            for stmt in sql.split("; ") {
                c.execute(stmt);
            }
            did.push(sql);
            if op != 5 {
                c.execute(&format!("VACUUM t{p}"));
            }
        }
    }
    if rng.chance(40) {
        let strategy = if rng.chance(50) {
            "file_copy"
        } else {
            "wal_log"
        };
        c.create_database(&format!("d{r}"), strategy, "");
        c.execute_db(
            &format!("d{r}"),
            "CREATE TABLE x AS SELECT generate_series(1, 3000) AS g",
        );
        did.push(format!("database d{r} ({strategy})"));
    }
    let dbs = c.query("SELECT datname FROM pg_database WHERE datname ~ '^d[0-9]+$' ORDER BY oid");
    if dbs.len() > 2 {
        c.execute(&format!("DROP DATABASE {}", dbs[0][0]));
        did.push(format!("drop database {}", dbs[0][0]));
    }
    if rng.chance(30) {
        c.execute(&format!(
            "CREATE UNLOGGED TABLE u{r} AS SELECT generate_series(1, 2000) AS g"
        ));
        did.push("unlogged table".into());
    }
    did.join("; ")
}

fn no_false_negatives(major: u32) {
    rounds(major, true, ROUNDS);
}

every_major!(no_false_negatives);

fn no_false_negatives_default_config(major: u32) {
    rounds(major, false, DEFAULT_CONFIG_ROUNDS);
}

every_major!(no_false_negatives_default_config);

fn rounds(major: u32, checksums: bool, rounds: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let what = if checksums {
        "checksums"
    } else {
        "default config"
    };
    let mut rng = TestRng::from_env(&format!("PG{major} ({what}): no-false-negative rounds"));
    let mut c = ptrack_cluster(&pg, 8, checksums);
    c.start();
    c.execute("CREATE EXTENSION ptrack");
    c.pgbench_init(1);
    let ts = c.new_tablespace_dir("prop");
    c.execute(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    let (mut changed, mut reported, mut fps, mut zeros) = (0u64, 0u64, 0u64, 0u64);
    let mut lost = 0u32;
    let (mut spgist, mut hint_only, mut fsm_seen) = (0u64, 0u64, 0u64);
    for r in 0..rounds {
        c.execute("CHECKPOINT");
        let start = c.query_one("SELECT pg_current_wal_flush_lsn()");
        let before = snapshot(&c);
        let what = workload(&c, r, &mut rng);
        let crash = rng.chance(30);
        if crash {
            // A crash under load, not at a quiet moment after the last statement.
            let tx = (10 + rng.below(100)).to_string();
            c.run_tool("pgbench", &["-n", "-t", &tx, "-c", "2", "postgres"]);
            c.stop(StopMode::Immediate);
            c.start();
        }
        c.execute("CHECKPOINT");
        // After a crash the tracker may find a gap only once it has read on: wait for it, so
        // that init_lsn below is final for this round.
        sync_tracker(&c);
        let after = snapshot(&c);
        let init = c.query_one("SELECT ptrack_init_lsn()");
        if lsn(&init) > lsn(&start) {
            // History was lost (WAL the tracker needed was recycled before it saved its
            // position): it must have said so, and the map must refuse this start LSN.
            let log = c.log();
            assert!(
                log.contains("a full backup is needed before the next incremental one"),
                "PG{major} round {r}: init_lsn moved from before {start} to {init} without a warning; ptrack log lines:\n{}",
                log.lines()
                    .filter(|l| l.contains("ptrack"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            eprintln!(
                "PG{major} round {r}: history lost after the crash (warned), init_lsn {init}"
            );
            lost += 1;
            continue;
        }
        let set = pagemapset(&c, &start);
        let hints = if checksums {
            Hints::Logged
        } else {
            Hints::Unlogged(lsn(&start))
        };
        let cmp = compare(&before, &after, &set, hints);
        eprintln!(
            "PG{major} round {r}{}: {what}: {} changed ({} FSM), {} reported, {} false positives, {} new empty pages, {} SP-GiST cache-only metapages, {} hint-only pages",
            if crash { " (immediate stop)" } else { "" },
            cmp.changed,
            cmp.changed_fsm,
            cmp.reported,
            cmp.false_positives,
            cmp.new_zero,
            cmp.spgist_cache,
            cmp.hint_only
        );
        if !cmp.missed.is_empty() {
            for (path, blk) in cmp.missed.iter().take(5) {
                let file = path.rsplit('/').next().unwrap_or("");
                let num = file.split(['_', '.']).next().unwrap_or("0");
                let db = if path.starts_with("base/5/") {
                    "postgres"
                } else {
                    "template1"
                };
                let name = c.query_db(
                    db,
                    &format!("SELECT relname, relkind FROM pg_class WHERE relfilenode = {num}"),
                );
                eprintln!("missed {path} block {blk}: {name:?}");
            }
        }
        assert!(
            cmp.missed.is_empty(),
            "PG{major} round {r} (PTRACK_SEED={}): {} changed blocks not reported since {start}, first: {:?}",
            rng.seed(),
            cmp.missed.len(),
            &cmp.missed[..cmp.missed.len().min(10)]
        );
        assert!(
            cmp.changed > 0,
            "round {r} changed nothing: the test would prove nothing"
        );
        changed += cmp.changed;
        reported += cmp.reported;
        fps += cmp.false_positives;
        zeros += cmp.new_zero;
        spgist += cmp.spgist_cache;
        hint_only += cmp.hint_only;
        fsm_seen += cmp.changed_fsm;
    }
    if !checksums {
        // Without changed FSM pages the FSM rule would be untested.
        assert!(fsm_seen > 0, "PG{major}: no FSM page changed in any round");
    }
    assert!(
        lost <= 2,
        "PG{major}: history lost in {lost} of {rounds} rounds: too few rounds verified"
    );
    eprintln!(
        "PG{major} ({what}): {} rounds verified ({lost} lost history after a crash, warned), 0 misses; {changed} changed blocks ({fsm_seen} FSM), {reported} reported, false-positive rate {:.1}% ({fps} blocks); {zeros} new empty pages; {spgist} SP-GiST cache-only metapages; {hint_only} hint-only pages",
        rounds - lost,
        100.0 * fps as f64 / reported.max(1) as f64
    );
}
