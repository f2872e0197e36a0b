//! Repository storage behind one seam (issue 12 §1): the [`Storage`] trait, its object keys
//! ([`Key`]) and typed errors ([`StorageError`], with the transient/permanent distinction that
//! drives retries), and its backends: [`local::LocalFs`] (today's repository directory: temp,
//! fsync, rename, fsync directory through `ptrack-durable`, files 0600, directories 0700, no
//! symbolic links followed) and [`memory::MemStore`] (in memory, failing the Nth operation on
//! request, for tests of backup, restore and validate without a server). An S3-compatible
//! backend comes next; the trait is shaped for it: objects are written once, whole or through
//! a writer that is invisible until finished, and nothing is renamed. [`lease`] is an expiring
//! lock built on puts, lists and deletes only, safe where conditional writes are ignored.
//!
//! Not yet used by `ptrack-backup`, whose modules still call `std::fs` on repository paths;
//! moving them onto this seam is the next step of issue 12.

#![deny(clippy::unwrap_used, clippy::panic)]

pub mod key;
pub mod lease;
pub mod local;
pub mod memory;
mod storage;

pub use key::Key;
pub use storage::{Capabilities, ObjectWriter, Result, Storage, StorageError};

#[cfg(test)]
mod contract_tests;
