//! Where the map file lives (`ptrack.map_location`): the `pg_ptrack` directory (mode, removal
//! when ptrack is off), a change of the setting (the map moves, nothing is lost, no stale copy
//! stays behind), and a map path that is not a regular file (warned about, left alone, the map
//! kept in memory).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ptrack_ext_tests::{Location, lsn, pagemapset, sync_tracker, wait_map_saved, wait_until};
use ptrack_testkit::{StopMode, require_ptrack};

use crate::failures::started_at;

/// global → pg_ptrack → global: each start moves the map, `init_lsn` stays, changes made
/// before the switch are still reported, and a stale copy at the other location is removed.
fn location_switch_moves_the_map(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, Location::Global);
    assert!(Location::Global.map(&c).exists());
    assert!(
        !Location::PgPtrack.dir(&c).exists(),
        "pg_ptrack created with map_location = global"
    );
    let init = c.query_one("SELECT ptrack_init_lsn()");
    let before = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET g = -g WHERE g < 100");
    let t = c.relation_path("postgres", "t");
    c.stop(StopMode::Fast);

    c.append_conf(&[("ptrack.map_location", "pg_ptrack")]);
    c.start();
    sync_tracker(&c);
    assert!(Location::PgPtrack.map(&c).exists());
    assert!(
        !Location::Global.map(&c).exists(),
        "global/ptrack.map left behind"
    );
    let mode = std::fs::metadata(Location::PgPtrack.dir(&c))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "pg_ptrack mode {mode:o}");
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    assert!(
        pagemapset(&c, &before).contains_key(&t),
        "{t} lost in the move"
    );
    c.stop(StopMode::Fast);

    // A stale copy (and a temporary file) at the other location: removed at start, never
    // loaded.
    std::fs::copy(Location::PgPtrack.map(&c), Location::Global.map(&c)).unwrap();
    std::fs::write(Location::Global.dir(&c).join("ptrack.map.tmp"), b"stale").unwrap();
    c.start();
    assert!(!Location::Global.map(&c).exists());
    assert!(!Location::Global.dir(&c).join("ptrack.map.tmp").exists());
    assert!(Location::PgPtrack.map(&c).exists());
    c.stop(StopMode::Fast);

    c.append_conf(&[("ptrack.map_location", "global")]);
    c.start();
    sync_tracker(&c);
    assert!(Location::Global.map(&c).exists());
    assert!(
        !Location::PgPtrack.dir(&c).exists(),
        "empty pg_ptrack left behind"
    );
    assert_eq!(c.query_one("SELECT ptrack_init_lsn()"), init);
    assert!(pagemapset(&c, &before).contains_key(&t));
}

every_major!(location_switch_moves_the_map);

/// A directory where the map file goes: the server starts, warns with the path, tracks in
/// memory (init_lsn moves), warns at each failed save, and never touches the directory; once
/// the DBA removes it, the next save writes the map again. A regular file where the
/// `pg_ptrack` directory goes is treated the same way.
fn map_path_not_a_file(major: u32) {
    let Some(pg) = require_ptrack(major) else {
        return;
    };
    let mut c = started_at(&pg, Location::PgPtrack);
    let init = c.query_one("SELECT ptrack_init_lsn()");
    c.stop(StopMode::Fast);
    let map = Location::PgPtrack.map(&c);
    std::fs::remove_file(&map).unwrap();
    std::fs::create_dir(&map).unwrap();
    std::fs::write(map.join("keep"), b"mine").unwrap();
    let abs = std::fs::canonicalize(&map).unwrap();
    c.start();
    let want = format!(
        "WARNING:  ptrack read map: cannot use map file: \"{}\" is a directory, not a regular file",
        abs.display()
    );
    assert!(c.log().contains(&want), "{want} not in log:\n{}", c.log());
    assert!(
        c.log().contains("The map is kept in memory only"),
        "{}",
        c.log()
    );
    sync_tracker(&c);
    let init2 = c.query_one("SELECT ptrack_init_lsn()");
    assert!(lsn(&init2) > lsn(&init), "init_lsn {init} -> {init2}");
    // Tracking works.
    c.execute("CHECKPOINT");
    let now = c.query_one("SELECT pg_current_wal_flush_lsn()");
    c.execute("UPDATE t SET g = g + 1 WHERE g < 10");
    let t = c.relation_path("postgres", "t");
    assert!(pagemapset(&c, &now).contains_key(&t));
    // Each save fails (reported with the next one) and says so.
    let failed = format!("ptrack: could not write \"{}\"", abs.display());
    wait_until("a failed save is reported", Duration::from_secs(60), || {
        c.execute("CHECKPOINT");
        c.log().contains(&failed)
    });
    assert_eq!(std::fs::read(map.join("keep")).unwrap(), b"mine");
    // The DBA moves it away: the next save writes the map, without a restart.
    std::fs::remove_dir_all(&map).unwrap();
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &map);
    c.stop(StopMode::Fast);

    // pg_ptrack is a regular file.
    let dir = Location::PgPtrack.dir(&c);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    c.start();
    assert!(
        c.log().contains(&format!(
            "WARNING:  ptrack: cannot use the map's directory: \"{}\" is a regular file, not a directory",
            std::fs::canonicalize(&dir).unwrap().display()
        )),
        "{}",
        c.log()
    );
    sync_tracker(&c);
    c.stop(StopMode::Fast);
    assert_eq!(std::fs::read(&dir).unwrap(), b"not a directory");
    std::fs::remove_file(&dir).unwrap();
    c.start();
    assert!(dir.is_dir());
    c.execute("CHECKPOINT");
    wait_map_saved(&c, &map);
}

every_major!(map_path_not_a_file);
