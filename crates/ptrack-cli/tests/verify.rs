//! `ptrack verify` on real PG15 and PG18 clusters, data checksums on and off: clean clusters give
//! no reports (also while pgbench writes), every simulated damage kind is reported at exactly the
//! damaged block, and checksum failures agree with `pg_checksums --check`.

use std::collections::BTreeSet;

use ptrack_testkit::{ClusterConfig, DamageKind, PgCluster, StopMode, require_pg};
use ptrack_types::Lsn;

use crate::util::{damaged_set, kinds_at, run, verify_json};

/// The problem kind each damage must produce (besides a checksum mismatch when checksums are on).
fn expected_kind(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::Header => "insane_header",
        DamageKind::LinePointer => "line_pointer",
        DamageKind::TupleHeader => "tuple_header",
        DamageKind::TupleData | DamageKind::Checksum => "checksum_mismatch",
    }
}

fn damage_is_reported_exactly(major: u32, checksums: bool) {
    let Some(pg) = require_pg(major) else { return };
    let mut c = PgCluster::start_new(&pg, checksums);
    c.pgbench_init(1);
    c.execute("CREATE TABLE wide AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 2000) g; CHECKPOINT");
    let accounts = c.relation_path("postgres", "pgbench_accounts");
    let wide = c.relation_path("postgres", "wide");
    c.stop(StopMode::Fast);
    let data = c.datadir().display().to_string();

    let clean = verify_json(c.datadir());
    assert_eq!(
        clean.code, 0,
        "clean cluster: {}\n{}",
        clean.stdout, clean.stderr
    );
    let report = clean.json();
    assert_eq!(damaged_set(&report), BTreeSet::new());
    assert_eq!(report["data_checksums"], checksums);
    assert!(report["blocks"].as_u64().unwrap() > 1000);
    if checksums {
        c.run_tool("pg_checksums", &["--check", "-D", &data]);
    }

    // Damage distinct blocks of two relations, every kind the cluster can detect.
    let mut expected = BTreeSet::new();
    let mut plan = Vec::new();
    for (i, kind) in DamageKind::ALL.into_iter().enumerate() {
        if !checksums && !kind.detectable_without_checksums() {
            continue;
        }
        let (path, block) = if i % 2 == 0 {
            (accounts.clone(), 10 + 37 * i as u64)
        } else {
            (wide.clone(), 3 + 11 * i as u64)
        };
        let r = run(&[
            "debug",
            "corrupt",
            "-D",
            &data,
            "--path",
            &path,
            "--block",
            &block.to_string(),
            "--kind",
            kind.name(),
        ]);
        assert_eq!(r.code, 0, "corrupt {kind:?}: {}", r.stderr);
        expected.insert((path.clone(), block));
        plan.push((path, block, kind));
    }

    let damaged = verify_json(c.datadir());
    assert_eq!(damaged.code, 1, "{}\n{}", damaged.stdout, damaged.stderr);
    let report = damaged.json();
    assert_eq!(report["status"], "corrupt");
    assert_eq!(
        damaged_set(&report),
        expected,
        "reported blocks must be exactly the damaged ones"
    );
    for (path, block, kind) in &plan {
        let kinds = kinds_at(&report, path, *block);
        assert!(
            kinds.contains(&expected_kind(*kind).to_string()),
            "{kind:?} at {path}/{block}: {kinds:?}"
        );
        assert_eq!(
            kinds.contains(&"checksum_mismatch".to_string()),
            checksums,
            "{kind:?}: {kinds:?}"
        );
    }

    // The human report names each block once, with its path and fork.
    let human = run(&["verify", "-D", &data]);
    assert_eq!(human.code, 1);
    for (path, block) in &expected {
        assert!(
            human
                .stdout
                .contains(&format!("{path}: block {block} (main fork")),
            "{path} {block} missing:\n{}",
            human.stdout
        );
    }
    assert!(
        human
            .stdout
            .contains(&format!("result: {} damaged blocks", expected.len()))
    );

    if checksums {
        // pg_checksums reports exactly the blocks where we found a checksum mismatch.
        let out = c
            .tool("pg_checksums")
            .args(["--check", "-D", &data])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr);
        let theirs: BTreeSet<(String, u64)> = text
            .lines()
            .filter(|l| l.contains("checksum verification failed"))
            .map(|l| {
                let file = l.split('"').nth(1).unwrap();
                let rel = file.strip_prefix(&format!("{data}/")).unwrap().to_string();
                let block: u64 = l
                    .split("block ")
                    .nth(1)
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                (rel, block)
            })
            .collect();
        let ours: BTreeSet<(String, u64)> = expected
            .iter()
            .filter(|(p, b)| kinds_at(&report, p, *b).contains(&"checksum_mismatch".to_string()))
            .cloned()
            .collect();
        assert_eq!(theirs, ours, "pg_checksums output:\n{text}");
    }
}

#[test]
fn pg15_checksums_on_damage_reported_exactly() {
    damage_is_reported_exactly(15, true);
}

#[test]
fn pg15_checksums_off_damage_reported_exactly() {
    damage_is_reported_exactly(15, false);
}

#[test]
fn pg18_checksums_on_damage_reported_exactly() {
    damage_is_reported_exactly(18, true);
}

#[test]
fn pg18_checksums_off_damage_reported_exactly() {
    damage_is_reported_exactly(18, false);
}

fn xact_commits(c: &PgCluster) -> u64 {
    c.query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
        .parse()
        .unwrap()
}

fn wal_insert_lsn(c: &PgCluster) -> Lsn {
    c.query_one("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap()
}

/// A running cluster under pgbench load for the whole scan gives no false alarm. Shared buffers
/// are tiny so that backends and the background writer write pages to the files constantly while
/// they are being read.
fn running_under_pgbench_is_clean(major: u32, checksums: bool) {
    let Some(pg) = require_pg(major) else { return };
    let cfg = ClusterConfig::new(checksums)
        .set("shared_buffers", "1MB")
        .set("bgwriter_delay", "10ms")
        .set("bgwriter_lru_maxpages", "1000")
        .set("checkpoint_timeout", "30s");
    let mut c = PgCluster::init_with(&pg, &cfg);
    c.start();
    c.pgbench_init(8);
    let mut bench = c.pgbench_spawn(&["-n", "-c", "4", "-j", "2", "-T", "900"]);
    // Wait (by condition, not by time) until pgbench is committing transactions.
    let before = xact_commits(&c);
    while xact_commits(&c) < before + 100 {
        assert!(bench.try_wait().unwrap().is_none(), "pgbench exited early");
        c.execute("SELECT pg_stat_clear_snapshot()");
    }
    let mut torn = 0;
    for jobs in ["1", "2", "2", "1", "2"] {
        let start = wal_insert_lsn(&c);
        let r = run(&[
            "verify",
            "-D",
            &c.datadir().display().to_string(),
            "-j",
            jobs,
            "--json",
        ]);
        let end = wal_insert_lsn(&c);
        let report = r.json();
        assert_eq!(
            r.code, 0,
            "false alarm under load:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_eq!(report["server_running"], true);
        assert_eq!(damaged_set(&report), BTreeSet::new());
        assert!(
            bench.try_wait().unwrap().is_none(),
            "pgbench must run for the whole scan"
        );
        assert!(
            end > start,
            "no WAL written during the scan: pgbench was not writing"
        );
        assert!(report["blocks"].as_u64().unwrap() > 10_000);
        torn += report["torn_reads"].as_u64().unwrap();
        eprintln!(
            "PG{major} checksums={checksums} -j {jobs}: {} blocks in {:.3} s, {} torn reads re-read, {} unverified, {} bytes of WAL during the scan",
            report["blocks"],
            report["elapsed_seconds"].as_f64().unwrap(),
            report["torn_reads"],
            report["unverified"].as_array().unwrap().len(),
            end.0 - start.0
        );
    }
    eprintln!("PG{major} checksums={checksums}: {torn} torn reads in total, none reported");
    c.pgbench_stop(&mut bench);
    let _ = bench.wait();
}

#[test]
fn pg15_running_under_pgbench_no_false_alarm() {
    running_under_pgbench_is_clean(15, true);
}

#[test]
fn pg18_running_under_pgbench_no_false_alarm() {
    running_under_pgbench_is_clean(18, true);
}

#[test]
fn pg18_running_without_checksums_under_pgbench_no_false_alarm() {
    running_under_pgbench_is_clean(18, false);
}
