//! PostgreSQL relation-file and page formats, and the cluster scanner behind `ptrack verify`.
//!
//! * [`page`]: page header and line pointers (`bufpage.h`, `itemid.h`);
//! * [`checksum`]: `pg_checksum_page` (`checksum_impl.h`), byte-exact;
//! * [`verify`]: `PageIsVerified` plus heap line-pointer and tuple-header checks;
//! * [`relpath`]: relation identity from PGDATA-relative paths (`relpath.c`);
//! * [`control`]: `global/pg_control` for PG13–18 (`pg_control.h`);
//! * [`datadir`]: a data directory and its relation files;
//! * [`scan`]: the parallel verifier with the re-read rule for running clusters;
//! * [`damage`]: the corruption simulator used by tests; [`builder`]: synthetic heap pages.
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod builder;
pub mod checksum;
pub mod control;
pub mod damage;
pub mod datadir;
pub mod datapagemap;
#[deny(clippy::indexing_slicing)]
pub mod page;
pub mod relpath;
pub mod scan;
#[deny(clippy::indexing_slicing)]
pub mod verify;

pub use checksum::pg_checksum_page;
pub use control::{ControlFile, ControlFileError, DbState, parse_control_file, read_control_file};
pub use datadir::{DataDir, DataDirError, FileError, RelFile};
pub use relpath::{PathKind, RelFileSegment, classify_path};
pub use scan::{BlockReport, ScanConfig, ScanReport, UnverifiedBlock, scan_files};
pub use verify::{PageCheck, Problem, verify_page};
