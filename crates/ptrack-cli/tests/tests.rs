//! Integration tests of the `ptrack` binary against real PostgreSQL servers started through
//! `ptrack-testkit` (one test target, modules per command, as ripgrep does).

mod archive;
mod archive_async;
mod backup;
mod backup_attacks;
mod backup_encrypted;
mod backup_faults;
mod backup_hostile;
mod backup_loss;
mod backup_s3;
mod backup_util;
mod backup_wal;
mod bad_input;
mod control;
mod lifecycle;
mod pitr;
mod storage_faults;
mod util;
mod verify;
mod wal;
mod wal_majors;
mod wal_summary;
mod wal_timeline;
mod workload;
