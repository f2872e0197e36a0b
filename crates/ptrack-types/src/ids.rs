//! Object identifiers, relation locators, fork and block numbers.
//!
//! Mirrors `src/include/postgres_ext.h` (`Oid`), `src/include/storage/relfilelocator.h`
//! (`RelFileLocator`, called `RelFileNode` before PG16: same three fields, same bytes),
//! `src/include/common/relpath.h` (`ForkNumber`, fork names) and `src/include/storage/block.h`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! u32_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<u32>().map($name)
            }
        }
    };
}

u32_newtype!(
    /// A PostgreSQL object identifier (database, tablespace, relation).
    Oid
);
u32_newtype!(
    /// The number naming a relation's files (`relfilenode`); equals the relation's OID until a
    /// rewrite gives it a new one.
    RelFileNumber
);
u32_newtype!(
    /// A block number within one fork of a relation, counted across all of the fork's 1 GiB
    /// segment files (`BlockNumber`; `0xFFFFFFFF` is `InvalidBlockNumber`).
    BlockNumber
);
u32_newtype!(
    /// A WAL timeline (`TimeLineID`).
    TimeLineId
);

/// `GLOBALTABLESPACE_OID`: the tablespace of shared catalogs, stored under `global/`.
pub const GLOBAL_TABLESPACE_OID: Oid = Oid(1664);
/// `DEFAULTTABLESPACE_OID`: the default tablespace, stored under `base/`.
pub const DEFAULT_TABLESPACE_OID: Oid = Oid(1663);

impl BlockNumber {
    /// `InvalidBlockNumber`.
    pub const INVALID: BlockNumber = BlockNumber(u32::MAX);
}

/// Which file set of a relation (`ForkNumber` in `relpath.h`). Declared in PostgreSQL's numeric
/// order so that the derived ordering matches it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForkNumber {
    /// `MAIN_FORKNUM` (0): the data; file name has no suffix.
    Main,
    /// `FSM_FORKNUM` (1): free space map, suffix `_fsm`.
    Fsm,
    /// `VISIBILITYMAP_FORKNUM` (2): visibility map, suffix `_vm`.
    #[serde(rename = "vm")]
    VisibilityMap,
    /// `INIT_FORKNUM` (3): initial contents of an unlogged relation, suffix `_init`.
    Init,
}

/// A fork name or number PostgreSQL does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fork {0:?}: expected main, fsm, vm or init")]
pub struct ParseForkError(pub String);

impl ForkNumber {
    /// All forks in numeric order.
    pub const ALL: [ForkNumber; 4] = [
        ForkNumber::Main,
        ForkNumber::Fsm,
        ForkNumber::VisibilityMap,
        ForkNumber::Init,
    ];

    /// PostgreSQL's fork number (0–3).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The fork with PostgreSQL number `n`, if any.
    pub fn from_u8(n: u8) -> Option<ForkNumber> {
        ForkNumber::ALL.get(usize::from(n)).copied()
    }

    /// The name PostgreSQL uses (`forkNames[]`): `main`, `fsm`, `vm`, `init`.
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::Fsm => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }

    /// The file-name suffix: empty for the main fork, else `_` followed by the name.
    pub fn file_suffix(self) -> &'static str {
        match self {
            ForkNumber::Main => "",
            ForkNumber::Fsm => "_fsm",
            ForkNumber::VisibilityMap => "_vm",
            ForkNumber::Init => "_init",
        }
    }
}

impl fmt::Display for ForkNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ForkNumber {
    type Err = ParseForkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ForkNumber::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| ParseForkError(s.to_owned()))
    }
}

/// Identifies the files of one relation: tablespace, database and file number
/// (`RelFileLocator`; `RelFileNode` before PG16). Fields are in the order the derived ordering
/// should use. Shared catalogs have `db_oid` 0 and `spc_oid` [`GLOBAL_TABLESPACE_OID`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RelFileLocator {
    /// Tablespace OID (`spcOid`).
    pub spc_oid: Oid,
    /// Database OID (`dbOid`), 0 for shared relations.
    pub db_oid: Oid,
    /// File number (`relNumber`).
    pub rel_number: RelFileNumber,
}

impl fmt::Display for RelFileLocator {
    /// `spc/db/rel`, as pg_waldump prints a block reference's relation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spc_oid, self.db_oid, self.rel_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_names_and_numbers_round_trip() {
        for (i, f) in ForkNumber::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(f.as_u8()), i);
            assert_eq!(ForkNumber::from_u8(f.as_u8()), Some(f));
            assert_eq!(f.name().parse::<ForkNumber>().unwrap(), f);
        }
        assert_eq!(ForkNumber::from_u8(4), None);
        assert!("visibility".parse::<ForkNumber>().is_err());
        assert_eq!(ForkNumber::VisibilityMap.file_suffix(), "_vm");
        assert_eq!(
            serde_json::to_string(&ForkNumber::VisibilityMap).unwrap(),
            "\"vm\""
        );
    }

    #[test]
    fn locator_displays_like_pg_waldump() {
        let l = RelFileLocator {
            spc_oid: DEFAULT_TABLESPACE_OID,
            db_oid: Oid(5),
            rel_number: RelFileNumber(16384),
        };
        assert_eq!(l.to_string(), "1663/5/16384");
        assert_eq!(serde_json::to_string(&Oid(7)).unwrap(), "7");
    }
}
