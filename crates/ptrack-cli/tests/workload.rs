//! The WAL workload shared by the WAL tests: pgbench plus the DDL mix of issue 3 (both CREATE
//! DATABASE strategies, DROP DATABASE, CREATE/DROP TABLESPACE, SET TABLESPACE, TRUNCATE, VACUUM, VACUUM FULL,
//! CLUSTER, an index of every built-in access method, TOASTed values, full-page images under each
//! wal_compression setting the server supports, two-phase commit, subtransactions, unlogged
//! tables).

use ptrack_testkit::PgCluster;

/// Runs the workload; returns the wal_compression methods that were exercised.
pub fn run_ddl_mix(c: &PgCluster) -> Vec<String> {
    let major = c.install.major;
    c.pgbench_init(1);
    c.run_tool("pgbench", &["-n", "-t", "300", "-c", "2", "postgres"]);
    let ts = c.new_tablespace_dir("one");
    let script = format!(
        "CREATE TABLE t1 (id int PRIMARY KEY, v text, arr int[], p point, r int4range);
         INSERT INTO t1 SELECT g, repeat('x', 100), ARRAY[g, g+1], point(g, g), int4range(g, g+10)
           FROM generate_series(1, 6000) g;
         CREATE INDEX t1_hash ON t1 USING hash (id);
         CREATE INDEX t1_gist ON t1 USING gist (p);
         CREATE INDEX t1_spgist ON t1 USING spgist (r);
         CREATE INDEX t1_gin ON t1 USING gin (arr);
         CREATE INDEX t1_brin ON t1 USING brin (id);
         CREATE TABLE toasty (id int, big text);
         INSERT INTO toasty SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 400) i)
           FROM generate_series(1, 40) g;
         UPDATE t1 SET v = 'updated' WHERE id % 3 = 0;
         DELETE FROM t1 WHERE id % 7 = 0;
         VACUUM t1;
         VACUUM FULL toasty;
         CLUSTER t1 USING t1_pkey;
         CREATE TABLE moved (x int); INSERT INTO moved SELECT generate_series(1, 3000);
         CREATE TABLESPACE ts_one LOCATION '{}';
         ALTER TABLE moved SET TABLESPACE ts_one;
         CREATE TABLE in_ts (x int) TABLESPACE ts_one; INSERT INTO in_ts SELECT generate_series(1, 500);
         TRUNCATE toasty;
         CREATE UNLOGGED TABLE unlogged_t (x int); INSERT INTO unlogged_t SELECT generate_series(1, 2000);
         CREATE TABLE dropped (x int); INSERT INTO dropped SELECT generate_series(1, 100); DROP TABLE dropped;",
        ts.display()
    );
    // One statement at a time: VACUUM, CLUSTER and tablespaces refuse transaction blocks.
    for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.execute(stmt);
    }
    // Subtransactions and two-phase commit.
    c.execute(
        "BEGIN; INSERT INTO moved VALUES (1); SAVEPOINT a; INSERT INTO moved VALUES (2);
         ROLLBACK TO a; SAVEPOINT b; INSERT INTO moved VALUES (3); RELEASE b; COMMIT;",
    );
    c.execute(
        "BEGIN; CREATE TABLE twopc (x int); INSERT INTO twopc VALUES (1); PREPARE TRANSACTION 'p1'",
    );
    c.execute("COMMIT PREPARED 'p1'");
    c.execute("BEGIN; CREATE TABLE twopc_abort (x int); PREPARE TRANSACTION 'p2'");
    c.execute("ROLLBACK PREPARED 'p2'");
    // Databases: both strategies where the major has them, then a drop.
    if major >= 15 {
        c.execute("CREATE DATABASE db_wal_log STRATEGY wal_log");
        c.execute("CREATE DATABASE db_file_copy STRATEGY file_copy");
    } else {
        c.execute("CREATE DATABASE db_wal_log");
        c.execute("CREATE DATABASE db_file_copy");
    }
    c.try_execute_db(
        "db_wal_log",
        "CREATE TABLE x AS SELECT generate_series(1, 1000) g",
    )
    .expect("table in new database");
    c.execute("DROP DATABASE db_file_copy");
    // Empty the tablespace and drop it.
    c.execute("ALTER TABLE moved SET TABLESPACE pg_default");
    c.execute("DROP TABLE in_ts");
    c.execute("DROP TABLESPACE ts_one");
    // Full-page images under each compression the server supports.
    let mut methods = Vec::new();
    for m in ["off", "pglz", "lz4", "zstd"] {
        if c.try_execute_db(
            "postgres",
            &format!("ALTER SYSTEM SET wal_compression = '{m}'"),
        )
        .is_err()
        {
            continue;
        }
        c.execute("SELECT pg_reload_conf()");
        c.execute("CHECKPOINT");
        c.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0");
        methods.push(m.to_string());
    }
    c.execute("ALTER SYSTEM RESET wal_compression");
    c.execute("SELECT pg_reload_conf()");
    c.execute("CHECKPOINT");
    methods
}
