//! `global/pg_control` for PostgreSQL 13–18, CRC-32C checked.
//!
//! Mirrors `src/include/catalog/pg_control.h` (`ControlFileData`, `CheckPoint`) and
//! `src/common/controldata_utils.c: get_controlfile` (spec §6). The layout is the same in 13–17;
//! PG18 added `default_char_signedness` @256, which moved the CRC from offset 288 to 292. The CRC
//! covers every byte before it. A running server rewrites the file at each checkpoint, so a read
//! can be torn: like `get_controlfile`, [`read_control_file`] re-reads a few times before it
//! believes a CRC mismatch.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ptrack_types::{Lsn, PgMajorVersion, TimeLineId, WalSegSize};
use serde::Serialize;

use crate::page::{le32, le64};

/// `PG_CONTROL_FILE_SIZE`.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;
/// `FLOATFORMAT_VALUE`.
const FLOAT_FORMAT_VALUE: f64 = 1234567.0;

/// `DBState`, printed the way `pg_controldata` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbState {
    /// `DB_STARTUP`.
    Startup,
    /// `DB_SHUTDOWNED`.
    Shutdowned,
    /// `DB_SHUTDOWNED_IN_RECOVERY`.
    ShutdownedInRecovery,
    /// `DB_SHUTDOWNING`.
    Shutdowning,
    /// `DB_IN_CRASH_RECOVERY`.
    InCrashRecovery,
    /// `DB_IN_ARCHIVE_RECOVERY`.
    InArchiveRecovery,
    /// `DB_IN_PRODUCTION`.
    InProduction,
}

impl DbState {
    fn from_u32(v: u32) -> Option<DbState> {
        Some(match v {
            0 => DbState::Startup,
            1 => DbState::Shutdowned,
            2 => DbState::ShutdownedInRecovery,
            3 => DbState::Shutdowning,
            4 => DbState::InCrashRecovery,
            5 => DbState::InArchiveRecovery,
            6 => DbState::InProduction,
            _ => return None,
        })
    }

    /// True for the two cleanly shut down states.
    pub fn is_shut_down(self) -> bool {
        matches!(self, DbState::Shutdowned | DbState::ShutdownedInRecovery)
    }
}

impl fmt::Display for DbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbState::Startup => "starting up",
            DbState::Shutdowned => "shut down",
            DbState::ShutdownedInRecovery => "shut down in recovery",
            DbState::Shutdowning => "shutting down",
            DbState::InCrashRecovery => "in crash recovery",
            DbState::InArchiveRecovery => "in archive recovery",
            DbState::InProduction => "in production",
        })
    }
}

/// The fields of `pg_control` ptrack uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlFile {
    /// Major version implied by `pg_control_version` and `catalog_version_no`.
    pub major: PgMajorVersion,
    /// `system_identifier`.
    pub system_identifier: u64,
    /// `pg_control_version`.
    pub pg_control_version: u32,
    /// `catalog_version_no`.
    pub catalog_version_no: u32,
    /// `state`.
    pub state: DbState,
    /// `checkPoint`: LSN of the latest checkpoint record.
    pub checkpoint: Lsn,
    /// `checkPointCopy.redo`: the latest checkpoint's REDO location.
    pub redo: Lsn,
    /// `checkPointCopy.ThisTimeLineID`.
    pub timeline: TimeLineId,
    /// `checkPointCopy.PrevTimeLineID`.
    pub prev_timeline: TimeLineId,
    /// `minRecoveryPoint`.
    pub min_recovery_point: Lsn,
    /// `backupStartPoint`.
    pub backup_start_point: Lsn,
    /// `backupEndPoint`.
    pub backup_end_point: Lsn,
    /// `wal_level` setting (0 minimal, 1 replica, 2 logical).
    pub wal_level: u32,
    /// `wal_log_hints` setting.
    pub wal_log_hints: bool,
    /// `maxAlign`.
    pub max_align: u32,
    /// `blcksz`: data page size.
    pub blcksz: u32,
    /// `relseg_size`: blocks per relation segment file.
    pub relseg_size: u32,
    /// `xlog_blcksz`: WAL page size.
    pub xlog_blcksz: u32,
    /// `xlog_seg_size`: WAL segment size in bytes.
    pub xlog_seg_size: WalSegSize,
    /// `data_checksum_version`: 0 when data checksums are off.
    pub data_checksum_version: u32,
    /// `crc` as stored.
    pub crc: u32,
}

/// Why `pg_control` could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlFileError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Shorter than `ControlFileData`.
    #[error("pg_control is {len} bytes, too short to hold the control data")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The file was written on a host of the other byte order.
    #[error(
        "pg_control version {found} looks byte-swapped: the cluster comes from a host of the other byte order"
    )]
    ByteOrder {
        /// The version as read.
        found: u32,
    },
    /// A version no supported major writes.
    #[error(
        "pg_control version {found} (catalog version {catver}) is not a PostgreSQL 13-18 control file"
    )]
    UnsupportedVersion {
        /// `pg_control_version`.
        found: u32,
        /// `catalog_version_no`.
        catver: u32,
    },
    /// The CRC does not match the contents.
    #[error("pg_control has an incorrect CRC: stored 0x{stored:08X}, computed 0x{computed:08X}")]
    CrcMismatch {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
    /// A field holds an impossible value.
    #[error("pg_control field {field} has an impossible value {value}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Decodes and checks the bytes of a `pg_control` file.
pub fn parse_control_file(b: &[u8]) -> Result<ControlFile, ControlFileError> {
    let too_short = || ControlFileError::TooShort { len: b.len() };
    let u32_at = |off| le32(b, off).ok_or_else(too_short);
    let u64_at = |off| le64(b, off).ok_or_else(too_short);
    let version = u32_at(8)?;
    let catver = u32_at(12)?;
    let major = match version {
        1300 => match PgMajorVersion::from_catalog_version(catver) {
            Some(
                m @ (PgMajorVersion::V13
                | PgMajorVersion::V14
                | PgMajorVersion::V15
                | PgMajorVersion::V16),
            ) => m,
            // A development or patched build of 13–16: same layout, the version is unknown.
            _ if (202007201..202406281).contains(&catver) => {
                if catver >= PgMajorVersion::V16.catalog_version() {
                    PgMajorVersion::V16
                } else if catver >= PgMajorVersion::V15.catalog_version() {
                    PgMajorVersion::V15
                } else if catver >= PgMajorVersion::V14.catalog_version() {
                    PgMajorVersion::V14
                } else {
                    PgMajorVersion::V13
                }
            }
            _ => {
                return Err(ControlFileError::UnsupportedVersion {
                    found: version,
                    catver,
                });
            }
        },
        1700 => PgMajorVersion::V17,
        1800 => PgMajorVersion::V18,
        v if matches!(v.swap_bytes(), 1300 | 1700 | 1800) => {
            return Err(ControlFileError::ByteOrder { found: v });
        }
        _ => {
            return Err(ControlFileError::UnsupportedVersion {
                found: version,
                catver,
            });
        }
    };
    let crc_off = if major >= PgMajorVersion::V18 {
        292
    } else {
        288
    };
    let stored = u32_at(crc_off)?;
    let computed = crc32c::crc32c(b.get(..crc_off).ok_or_else(too_short)?);
    if stored != computed {
        return Err(ControlFileError::CrcMismatch { stored, computed });
    }
    let bad = |field, value: u64| ControlFileError::BadValue { field, value };
    let state_raw = u32_at(16)?;
    let state = DbState::from_u32(state_raw).ok_or_else(|| bad("state", state_raw.into()))?;
    let float = f64::from_bits(u64_at(208)?);
    if float != FLOAT_FORMAT_VALUE {
        return Err(bad("floatFormat", float.to_bits()));
    }
    let pow2_in = |field, v: u32, lo: u32, hi: u32| {
        if v.is_power_of_two() && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(bad(field, v.into()))
        }
    };
    let blcksz = pow2_in("blcksz", u32_at(216)?, 1024, 32768)?;
    let xlog_blcksz = pow2_in("xlog_blcksz", u32_at(224)?, 1024, 65536)?;
    let seg = u32_at(228)?;
    let xlog_seg_size =
        WalSegSize::new(seg.into()).map_err(|_| bad("xlog_seg_size", seg.into()))?;
    let relseg_size = u32_at(220)?;
    if relseg_size == 0 {
        return Err(bad("relseg_size", 0));
    }
    let max_align = u32_at(204)?;
    if max_align != 8 {
        return Err(bad("maxAlign", max_align.into()));
    }
    Ok(ControlFile {
        major,
        system_identifier: u64_at(0)?,
        pg_control_version: version,
        catalog_version_no: catver,
        state,
        checkpoint: Lsn(u64_at(32)?),
        redo: Lsn(u64_at(40)?),
        timeline: TimeLineId(u32_at(48)?),
        prev_timeline: TimeLineId(u32_at(52)?),
        min_recovery_point: Lsn(u64_at(136)?),
        backup_start_point: Lsn(u64_at(152)?),
        backup_end_point: Lsn(u64_at(160)?),
        wal_level: u32_at(172)?,
        wal_log_hints: b.get(176).copied().unwrap_or(0) != 0,
        max_align,
        blcksz,
        relseg_size,
        xlog_blcksz,
        xlog_seg_size,
        data_checksum_version: u32_at(252)?,
        crc: stored,
    })
}

/// Reads `<pgdata>/global/pg_control`. A CRC mismatch is re-read up to 10 times, 10 ms apart, as
/// `get_controlfile` does, because a running server may be rewriting the file.
pub fn read_control_file(pgdata: &Path) -> Result<ControlFile, ControlFileError> {
    let path = pgdata.join("global").join("pg_control");
    let mut attempt = 0;
    loop {
        let bytes = std::fs::read(&path).map_err(|source| ControlFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match parse_control_file(&bytes) {
            Err(ControlFileError::CrcMismatch { .. }) if attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Builds a valid `pg_control` image (8192 bytes, correct CRC) for `pg_control_version` and
/// `catalog_version_no`: for unit tests and as a fuzzing seed; real files are tested against
/// real servers.
pub fn synthetic_control_file(version: u32, catver: u32) -> Vec<u8> {
    let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
    let mut put = |off: usize, v: &[u8]| {
        if let Some(d) = b.get_mut(off..off + v.len()) {
            d.copy_from_slice(v);
        }
    };
    put(0, &0x7000_1234_5678_9ABCu64.to_le_bytes());
    put(8, &version.to_le_bytes());
    put(12, &catver.to_le_bytes());
    put(16, &6u32.to_le_bytes());
    put(32, &0x1_0000_0028u64.to_le_bytes());
    put(40, &0x1_0000_0000u64.to_le_bytes());
    put(48, &1u32.to_le_bytes());
    put(204, &8u32.to_le_bytes());
    put(208, &FLOAT_FORMAT_VALUE.to_le_bytes());
    put(216, &8192u32.to_le_bytes());
    put(220, &131072u32.to_le_bytes());
    put(224, &8192u32.to_le_bytes());
    put(228, &(16u32 << 20).to_le_bytes());
    put(252, &1u32.to_le_bytes());
    let crc_off = if version >= 1800 { 292 } else { 288 };
    let crc = crc32c::crc32c(b.get(..crc_off).unwrap_or_default());
    if let Some(d) = b.get_mut(crc_off..crc_off + 4) {
        d.copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
