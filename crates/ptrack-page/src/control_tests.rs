//! Unit tests of the pg_control parser on synthetic files; real files from every installed major
//! are compared with `pg_controldata` and the server's own `pg_control_*()` functions in
//! `crates/ptrack-cli/tests/control.rs`.

use super::*;

use crate::control::synthetic_control_file as synthetic;

#[test]
fn parses_each_layout_and_finds_the_crc() {
    for (v, cat, major) in [
        (1300, 202007201, PgMajorVersion::V13),
        (1300, 202209061, PgMajorVersion::V15),
        (1700, 202406281, PgMajorVersion::V17),
        (1800, 202506291, PgMajorVersion::V18),
    ] {
        let c = parse_control_file(&synthetic(v, cat)).unwrap();
        assert_eq!(c.major, major);
        assert_eq!(c.system_identifier, 0x7000_1234_5678_9ABC);
        assert_eq!(c.checkpoint.to_string(), "1/28");
        assert_eq!(c.redo.to_string(), "1/0");
        assert_eq!(
            (c.blcksz, c.relseg_size, c.xlog_seg_size.bytes()),
            (8192, 131072, 16 << 20)
        );
        assert_eq!(c.state, DbState::InProduction);
        assert_eq!(c.data_checksum_version, 1);
    }
}

#[test]
fn rejects_bad_crc_version_and_values() {
    let mut b = synthetic(1500 - 200, 202209061);
    b[100] ^= 1;
    assert!(matches!(
        parse_control_file(&b),
        Err(ControlFileError::CrcMismatch { .. })
    ));
    // PG18 keeps the CRC at 292: a PG18 file read with the 288 offset would fail.
    let mut b18 = synthetic(1800, 202506291);
    b18[289] ^= 0xFF;
    assert!(
        matches!(
            parse_control_file(&b18),
            Err(ControlFileError::CrcMismatch { .. })
        ),
        "bytes 288..292 are covered by the PG18 CRC"
    );

    let swapped = synthetic(1300u32.swap_bytes(), 202209061);
    assert!(matches!(
        parse_control_file(&swapped),
        Err(ControlFileError::ByteOrder { .. })
    ));
    assert!(matches!(
        parse_control_file(&synthetic(1201, 201909212)),
        Err(ControlFileError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        parse_control_file(&synthetic(1300, 202209061)[..100]),
        Err(ControlFileError::TooShort { .. })
    ));
    let mut odd = synthetic(1300, 202209061);
    odd[216..220].copy_from_slice(&8000u32.to_le_bytes());
    let crc = crc32c::crc32c(&odd[..288]);
    odd[288..292].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        parse_control_file(&odd),
        Err(ControlFileError::BadValue {
            field: "blcksz",
            ..
        })
    ));
}
