//! Fuzz target: `--recovery-target` parsing (`RecoveryTarget::from_str`, `parse_time`) on any
//! text never panics; an accepted target yields its bounds, its check against a backup and its
//! recovery settings without panicking. The text is also tried behind each `kind:` prefix.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use ptrack_backup::target::{RecoveryTarget, parse_time, recovery_settings};
use ptrack_format::catalog::{BackupInfo, Mode, Status};
use ptrack_types::Lsn;

fn backup() -> BackupInfo {
    BackupInfo {
        id: "0TOUE89".into(),
        mode: Mode::Full,
        parent: None,
        status: Status::Ok,
        start_lsn: Lsn(0x100_0000),
        stop_lsn: Some(Lsn(0x200_0000)),
        timeline: Some(ptrack_types::TimeLineId(1)),
        start_time: 1_790_000_000,
        end_time: Some(1_790_000_100),
        data_bytes: 0,
        stored_bytes: 0,
        wal_bytes: 0,
        compression: ptrack_format::stored::Compression::None,
        pg_major: ptrack_types::PgMajorVersion::V18,
        manifest_digest: None,
        error: None,
        program_version: "fuzz".into(),
        keep_until: None,
    }
}

fn check(s: &str) {
    if let Ok(t) = RecoveryTarget::from_str(s) {
        let _ = t.before_consistency(&backup());
        let conf = recovery_settings(Some(&t), Some(s), "0TOUE89");
        assert!(conf.contains("recovery_target"));
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    check(&s);
    for kind in ["lsn:", "time:", "xid:", "name:"] {
        check(&format!("{kind}{s}"));
    }
    if let Some(t) = parse_time(&s) {
        let (lo, hi) = t.bounds();
        assert!(lo <= hi);
    }
});
