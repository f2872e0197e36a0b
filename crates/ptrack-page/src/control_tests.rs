//! Unit tests of the pg_control parser on synthetic files; real files from every installed major
//! are compared with `pg_controldata` and the server's own `pg_control_*()` functions in
//! `crates/ptrack-cli/tests/control.rs`.

use super::*;

fn synthetic(version: u32, catver: u32) -> Vec<u8> {
    let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
    let mut put32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put32(8, version);
    put32(12, catver);
    put32(16, 6);
    put32(48, 1);
    put32(204, 8);
    put32(216, 8192);
    put32(220, 131072);
    put32(224, 8192);
    put32(228, 16 << 20);
    put32(252, 1);
    b[0..8].copy_from_slice(&0x7000_1234_5678_9ABCu64.to_le_bytes());
    b[32..40].copy_from_slice(&0x1_0000_0028u64.to_le_bytes());
    b[40..48].copy_from_slice(&0x1_0000_0000u64.to_le_bytes());
    b[208..216].copy_from_slice(&1234567.0f64.to_le_bytes());
    let crc_off = if version >= 1800 { 292 } else { 288 };
    let crc = crc32c::crc32c(&b[..crc_off]);
    b[crc_off..crc_off + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

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
            (c.blcksz, c.relseg_size, c.xlog_seg_size),
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
