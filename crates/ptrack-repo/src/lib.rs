//! Repository storage behind one seam (issue 12 §1): the [`Storage`] trait, its object keys
//! ([`Key`]) and typed errors ([`StorageError`], with the transient/permanent distinction that
//! drives retries), and its backends: [`local::LocalFs`] (today's repository directory: temp,
//! fsync, rename, fsync directory through `ptrack-durable`, files 0600, directories 0700, no
//! symbolic links followed, `flock(2)`), [`s3::S3Store`] (an S3-compatible bucket through
//! `object_store`) and [`memory::MemStore`] (in memory, failing the Nth operation on request,
//! for tests of backup, restore and validate without a server). Objects are written once, whole
//! or through a writer that is invisible until finished, and nothing is renamed. [`lease`] is
//! an expiring lock built on puts, lists and deletes only, safe where conditional writes are
//! ignored (the lock of object storage). [`encrypted::Encrypted`] seals every object of a store
//! (XChaCha20-Poly1305 in chunks, [`sealed`]) with the data key of the repository's
//! [`keyring`].

#![deny(clippy::unwrap_used, clippy::panic)]

pub mod encrypted;
pub mod key;
pub mod keyring;
pub mod lease;
pub mod local;
pub mod location;
pub mod memory;
pub mod profile;
pub mod retry;
pub mod s3;
pub mod sealed;
mod storage;

pub use key::Key;
pub use storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, SeqReader, Storage,
    StorageError,
};

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod encrypted_tests;
