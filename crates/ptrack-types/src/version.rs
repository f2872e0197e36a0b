//! `PgMajorVersion`: the PostgreSQL majors ptrack understands (13–18) and the per-major constants
//! that identify them on disk.
//!
//! Values from `src/include/catalog/catversion.h` (`CATALOG_VERSION_NO`),
//! `src/include/catalog/pg_control.h` (`PG_CONTROL_VERSION`) and
//! `src/include/access/xlog_internal.h` (`XLOG_PAGE_MAGIC`), as tabulated in
//! `wal-and-page-formats.md` §0.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A supported PostgreSQL major version.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum PgMajorVersion {
    /// PostgreSQL 13.
    V13,
    /// PostgreSQL 14.
    V14,
    /// PostgreSQL 15.
    V15,
    /// PostgreSQL 16.
    V16,
    /// PostgreSQL 17.
    V17,
    /// PostgreSQL 18.
    V18,
}

/// A major version ptrack does not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PostgreSQL major version {0} is not supported (ptrack supports 13 to 18)")]
pub struct UnsupportedMajor(pub u32);

impl PgMajorVersion {
    /// Every supported major, oldest first.
    pub const ALL: [PgMajorVersion; 6] = [
        PgMajorVersion::V13,
        PgMajorVersion::V14,
        PgMajorVersion::V15,
        PgMajorVersion::V16,
        PgMajorVersion::V17,
        PgMajorVersion::V18,
    ];

    /// The major number, e.g. 15.
    pub fn number(self) -> u32 {
        match self {
            PgMajorVersion::V13 => 13,
            PgMajorVersion::V14 => 14,
            PgMajorVersion::V15 => 15,
            PgMajorVersion::V16 => 16,
            PgMajorVersion::V17 => 17,
            PgMajorVersion::V18 => 18,
        }
    }

    /// The major with number `n`.
    pub fn from_number(n: u32) -> Result<PgMajorVersion, UnsupportedMajor> {
        PgMajorVersion::ALL
            .into_iter()
            .find(|v| v.number() == n)
            .ok_or(UnsupportedMajor(n))
    }

    /// `CATALOG_VERSION_NO` of the major's release.
    pub fn catalog_version(self) -> u32 {
        match self {
            PgMajorVersion::V13 => 202007201,
            PgMajorVersion::V14 => 202107181,
            PgMajorVersion::V15 => 202209061,
            PgMajorVersion::V16 => 202307071,
            PgMajorVersion::V17 => 202406281,
            PgMajorVersion::V18 => 202506291,
        }
    }

    /// `PG_CONTROL_VERSION` of the major.
    pub fn control_version(self) -> u32 {
        match self {
            PgMajorVersion::V13
            | PgMajorVersion::V14
            | PgMajorVersion::V15
            | PgMajorVersion::V16 => 1300,
            PgMajorVersion::V17 => 1700,
            PgMajorVersion::V18 => 1800,
        }
    }

    /// `XLOG_PAGE_MAGIC` of the major.
    pub fn xlog_page_magic(self) -> u16 {
        match self {
            PgMajorVersion::V13 => 0xD106,
            PgMajorVersion::V14 => 0xD10D,
            PgMajorVersion::V15 => 0xD110,
            PgMajorVersion::V16 => 0xD113,
            PgMajorVersion::V17 => 0xD116,
            PgMajorVersion::V18 => 0xD118,
        }
    }

    /// The major whose `CATALOG_VERSION_NO` is `catver`, if it is a released one.
    pub fn from_catalog_version(catver: u32) -> Option<PgMajorVersion> {
        PgMajorVersion::ALL
            .into_iter()
            .find(|v| v.catalog_version() == catver)
    }

    /// Name of the per-version directory inside a tablespace (`TABLESPACE_VERSION_DIRECTORY`),
    /// e.g. `PG_15_202209061`.
    pub fn tablespace_dir(self, catver: u32) -> String {
        format!("PG_{}_{}", self.number(), catver)
    }
}

impl fmt::Display for PgMajorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl TryFrom<u32> for PgMajorVersion {
    type Error = UnsupportedMajor;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        PgMajorVersion::from_number(n)
    }
}

impl From<PgMajorVersion> for u32 {
    fn from(v: PgMajorVersion) -> u32 {
        v.number()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_round_trip_and_map_constants() {
        for v in PgMajorVersion::ALL {
            assert_eq!(PgMajorVersion::from_number(v.number()), Ok(v));
            assert_eq!(
                PgMajorVersion::from_catalog_version(v.catalog_version()),
                Some(v)
            );
        }
        assert_eq!(PgMajorVersion::from_number(12), Err(UnsupportedMajor(12)));
        assert_eq!(
            PgMajorVersion::V15.tablespace_dir(202209061),
            "PG_15_202209061"
        );
        assert_eq!(PgMajorVersion::V18.control_version(), 1800);
    }
}
