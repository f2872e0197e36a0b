//! ptrack's backups: the repository on any [`ptrack_repo::Storage`] (catalog, manifests, bundles), taking
//! full, ptrack and delta backups of a running cluster, restoring a backup chain, validating
//! stored backups. The command line (`ptrack-cli`) only parses options and prints.
//!
//! Mirrors the protocol of PostgreSQL's non-exclusive base backup
//! (`src/backend/access/transam/xlog.c: do_pg_backup_start/stop`, `xlogfuncs.c`) and the file
//! selection of `src/backend/backup/basebackup.c` (what a base backup leaves out).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod backup;
pub mod bundle;
pub mod catalog;
pub mod chain;
pub mod conn;
pub mod entries;
pub mod envelope;
pub mod identity;
pub mod lineage;
pub mod manifest;
pub mod pages;
pub mod parallel;
pub mod parent;
pub mod paths;
pub mod phases;
pub mod records;
pub mod repo;
pub mod restore;
pub mod server;
pub mod stored;
pub mod table;
pub mod take;
pub mod target;
pub mod validate;
pub mod vm;
pub mod walk;

#[cfg(test)]
mod alloc_count;
#[cfg(test)]
#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

use std::path::Path;

/// Errors of the backup library. Every message names the file, backup, LSN or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file (the cause is part of the message, not a separate
    /// source, so that it is printed once).
    #[error("could not {op} \"{path}\": {cause}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// A repository document or stored file that fails its checks.
    #[error("{0}")]
    Corrupt(String),
    /// A request that cannot be carried out (bad option, missing backup, refused mode).
    #[error("{0}")]
    Refused(String),
    /// The database server said no.
    #[error("{0}")]
    Server(String),
    /// The repository's storage failed (the message names the object's key).
    #[error("repository object {0}")]
    Storage(ptrack_repo::StorageError),
    /// An encrypted repository's key: missing, wrong (the ids are named), or its keyring
    /// damaged.
    #[error("{0}")]
    Key(ptrack_repo::keyring::KeyError),
}

impl From<ptrack_repo::keyring::KeyError> for Error {
    fn from(e: ptrack_repo::keyring::KeyError) -> Error {
        match e {
            ptrack_repo::keyring::KeyError::Storage(s) => Error::Storage(s),
            e => Error::Key(e),
        }
    }
}

impl From<ptrack_repo::StorageError> for Error {
    fn from(e: ptrack_repo::StorageError) -> Error {
        Error::Storage(e)
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.display().to_string(),
            cause: source,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for [`Error::Refused`].
pub fn refused(msg: impl Into<String>) -> Error {
    Error::Refused(msg.into())
}
