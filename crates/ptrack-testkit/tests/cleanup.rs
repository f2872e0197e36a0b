//! The testkit always cleans up: a running cluster is stopped and its directory deleted when the
//! `PgCluster` is dropped, also when the test panics; servers run as `postgres`, not root.

use std::path::PathBuf;

use ptrack_testkit::{PgCluster, StopMode, require_pg};

fn postmaster_pid(c: &PgCluster) -> i32 {
    std::fs::read_to_string(c.datadir().join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let Some(pg) = require_pg(18) else { return };
    let c = PgCluster::start_new(&pg, true);
    assert_eq!(c.query_one("SELECT current_user"), "postgres");
    assert_eq!(
        c.query_one("SELECT setting FROM pg_settings WHERE name = 'listen_addresses'"),
        "127.0.0.1"
    );
    let pid = postmaster_pid(&c);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        !uid_line.split_whitespace().nth(1).unwrap().eq("0"),
        "server must not run as root: {uid_line}"
    );
    let dir: PathBuf = c.datadir().to_path_buf();
    assert!(alive(pid));
    drop(c);
    assert!(!alive(pid), "postmaster {pid} still running after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[test]
fn panic_in_test_still_cleans_up() {
    let Some(pg) = require_pg(15) else { return };
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = PgCluster::start_new(&pg, false);
        seen = Some((postmaster_pid(&c), c.datadir().to_path_buf()));
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.unwrap();
    assert!(!alive(pid), "postmaster {pid} survived the panic");
    assert!(!dir.exists());
}

#[test]
fn stop_modes_leave_expected_control_state() {
    let Some(pg) = require_pg(15) else { return };
    let mut c = PgCluster::start_new(&pg, true);
    c.stop(StopMode::Immediate);
    assert_eq!(c.controldata()["Database cluster state"], "in production");
    c.start();
    c.stop(StopMode::Fast);
    assert_eq!(c.controldata()["Database cluster state"], "shut down");
}
