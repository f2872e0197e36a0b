//! Shared vocabulary of ptrack: the PostgreSQL quantities every other crate passes around.
//!
//! Newtypes instead of bare integers (house rule 2): [`Lsn`] (`XLogRecPtr`), [`Oid`],
//! [`RelFileNumber`], [`BlockNumber`], [`TimeLineId`], the [`ForkNumber`] enum and the
//! [`RelFileLocator`] that names a relation's files, plus [`PgMajorVersion`] and [`WalSegSize`] (with the LSN ↔ segment arithmetic). Each prints the way
//! PostgreSQL prints it, so ptrack's output can be grepped against server logs. Mirrors
//! `src/include/access/xlogdefs.h`, `src/include/common/relpath.h` and
//! `src/include/storage/relfilelocator.h`.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod ids;
mod lsn;
mod version;
mod walseg;

pub use ids::{
    BlockNumber, DEFAULT_TABLESPACE_OID, ForkNumber, GLOBAL_TABLESPACE_OID, Oid, ParseForkError,
    RelFileLocator, RelFileNumber, TimeLineId,
};
pub use lsn::{Lsn, ParseLsnError};
pub use version::{PgMajorVersion, UnsupportedMajor};
pub use walseg::{BadWalSegSize, WalSegSize};
