//! A DBA moving from the original C ptrack keeps the catalog entry: an installation at 2.1, 2.2
//! or 2.3 made by the original (its functions call the original library's entry points,
//! `ptrack_version`, `ptrack_init_lsn`, `ptrack_get_pagemapset`, which this library exports
//! too) works before and after `ALTER EXTENSION ptrack UPDATE` through our upgrade scripts
//! (`crates/ptrack-ext/sql/`) to 2.4; an original 2.4 installation works as it is. The original's install scripts are not ours to ship: the test writes the objects each
//! original version had (spec ptrack.md §1.1) into a temporary install script, and removes it.

use std::path::PathBuf;

use ptrack_ext_tests::*;
use ptrack_testkit::require_ptrack;

/// The objects an original installation at `version` has, calling the original's symbols.
fn original_objects(version: &str) -> String {
    let mut s = String::from(
        "CREATE FUNCTION ptrack_version() RETURNS text IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_version';\n\
         CREATE FUNCTION ptrack_init_lsn() RETURNS pg_lsn VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_init_lsn';\n",
    );
    if version == "2.1" {
        s.push_str(
            "CREATE FUNCTION ptrack_get_pagemapset(start_lsn pg_lsn) RETURNS TABLE (path text, pagemap bytea) \
             STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_get_pagemapset';\n",
        );
    } else {
        s.push_str(
            "CREATE FUNCTION ptrack_get_pagemapset(start_lsn pg_lsn) RETURNS TABLE (path text, pagecount bigint, pagemap bytea) \
             STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_get_pagemapset';\n\
             CREATE FUNCTION ptrack_get_change_stat(start_lsn pg_lsn) RETURNS TABLE (files bigint, pages numeric, \"size, MB\" numeric) \
             AS $$ SELECT count(path), sum(pagecount)::numeric, 0::numeric FROM ptrack_get_pagemapset(start_lsn) $$ LANGUAGE sql;\n",
        );
    }
    s
}

/// A temporary install script in the server's extension directory, removed on drop.
struct Script(PathBuf);
impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sharedir(pg: &ptrack_testkit::PgInstall) -> PathBuf {
    let out = std::process::Command::new(pg.bin("pg_config"))
        .arg("--sharedir")
        .output()
        .expect("pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("extension")
}

fn update_from_original(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let ext = sharedir(&pg);
    for script in [
        "ptrack--2.1--2.2.sql",
        "ptrack--2.2--2.3.sql",
        "ptrack--2.3--2.4.sql",
    ] {
        assert!(
            ext.join(script).exists(),
            "{script} is not installed in {}",
            ext.display()
        );
    }
    let mut c = ptrack_cluster(&pg, 8, false);
    c.start();
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS g; CHECKPOINT");
    for from in ["2.1", "2.2", "2.3"] {
        let path = ext.join(format!("ptrack--{from}.sql"));
        std::fs::write(&path, original_objects(from)).expect("write install script");
        let _script = Script(path);
        let db = format!("from_{}", from.replace('.', "_"));
        c.execute(&format!("CREATE DATABASE {db}"));
        c.execute_db(&db, &format!("CREATE EXTENSION ptrack VERSION '{from}'"));
        // Our library answers under the original's entry-point names before the update ...
        assert_eq!(c.query_db(&db, "SELECT ptrack_version()")[0][0], "2.4");
        if from == "2.1" {
            // ... except 2.1's two-column ptrack_get_pagemapset, refused with what to do.
            let e = c
                .try_execute_db(&db, "SELECT * FROM ptrack_get_pagemapset('0/1')")
                .unwrap_err();
            assert!(e.contains("ALTER EXTENSION ptrack UPDATE"), "{e}");
        }
        c.execute_db(&db, "ALTER EXTENSION ptrack UPDATE");
        assert_eq!(
            c.query_db(
                &db,
                "SELECT extversion FROM pg_extension WHERE extname = 'ptrack'"
            )[0][0],
            "2.4",
            "from {from}"
        );
        assert_eq!(c.query_db(&db, "SELECT ptrack_version()")[0][0], "2.4");
        let init = c.query_db(&db, "SELECT ptrack_init_lsn()")[0][0].clone();
        assert!(lsn(&init).is_valid(), "from {from}: init_lsn {init}");
        c.execute_db(&db, "CREATE TABLE u AS SELECT generate_series(1, 100) AS g");
        let rows = c.query_db(
            &db,
            &format!("SELECT files > 0, pages > 0 FROM ptrack_get_change_stat('{init}')"),
        );
        assert_eq!(rows[0], ["t", "t"], "from {from}");
        let cols = c.query_db(
            &db,
            &format!("SELECT count(*) FROM ptrack_get_pagemapset('{init}') WHERE pagecount > 0"),
        );
        assert_ne!(cols[0][0], "0", "from {from}");
    }
}

/// An installation of the original at 2.4 (nothing to update): its functions call the
/// original's entry-point names, which this library also answers.
fn original_2_4_keeps_working(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = ptrack_cluster(&pg, 8, false);
    c.start();
    c.execute("CREATE EXTENSION ptrack");
    for (f, sig, ret) in [
        ("ptrack_version", "", "text IMMUTABLE"),
        ("ptrack_init_lsn", "", "pg_lsn VOLATILE"),
        (
            "ptrack_get_pagemapset",
            "start_lsn pg_lsn",
            "TABLE (path text, pagecount bigint, pagemap bytea) STRICT VOLATILE",
        ),
    ] {
        c.execute(&format!(
            "CREATE OR REPLACE FUNCTION {f}({sig}) RETURNS {ret} LANGUAGE c AS '$libdir/ptrack', '{f}'"
        ));
    }
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS g");
    let t = c.relation_path("postgres", "t");
    assert!(pagemapset(&c, &init).contains_key(&t), "{t} not reported");
    assert_eq!(c.query_one("SELECT ptrack_version()"), "2.4");
}

every_major!(original_2_4_keeps_working);

every_major!(update_from_original);
