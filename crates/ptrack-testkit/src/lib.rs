//! Test harness: finds installed PostgreSQL servers and runs throwaway clusters on them.
//!
//! * [`PgInstall`] locates a major's binaries: `$PTRACK_PG<major>_BINDIR`, then
//!   `<workspace>/.pg/bin/<major>` (linked by `scripts/setup`), then Debian's
//!   `/usr/lib/postgresql/<major>/bin`.
//! * [`require_pg`] is how a test asks for a server: it returns `None` after printing a loud
//!   SKIPPED line when the major is missing, and panics instead when `CI=true` and the major is
//!   one CI must have (15 and 18).
//! * [`PgCluster`] (in [`cluster`]) is an `initdb`-ed cluster in a private temporary directory,
//!   run as the unprivileged `postgres` user on a private Unix socket and a free loopback port,
//!   stopped and deleted on drop (also when a test panics).
//!
//! * [`garage`] runs a throwaway Garage cluster (S3-compatible object store) on loopback.
//!
//! * [`paranoia`] compares a restored data directory with its source file by file and page by
//!   page (masking only what PostgreSQL changes without WAL).
//!
//! The corruption simulator lives in `ptrack_page::damage` so the CLI can share it; it is
//! re-exported here.

pub mod cluster;
pub mod garage;
mod install;
pub mod paranoia;
mod rng;

pub use cluster::{ClusterConfig, PgCluster, StopMode};
pub use garage::{Garage, require_garage};
pub use install::{PgInstall, ci, optional_pg, require_pg, require_ptrack, run_as_postgres};
pub use ptrack_page::damage::{DamageKind, damage_block};
pub use rng::TestRng;
