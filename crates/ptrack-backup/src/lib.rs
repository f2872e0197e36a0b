//! ptrack's backups: the repository on any [`ptrack_repo::Storage`] (catalog, manifests, bundles), taking
//! full, ptrack and delta backups of a running cluster, restoring a backup chain, validating
//! stored backups. The command line (`ptrack-cli`) only parses options and prints.
//!
//! Mirrors the protocol of PostgreSQL's non-exclusive base backup
//! (`src/backend/access/transam/xlog.c: do_pg_backup_start/stop`, `xlogfuncs.c`) and the file
//! selection of `src/backend/backup/basebackup.c` (what a base backup leaves out).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod archive;
pub mod backup;
pub mod chain;
pub mod conn;
pub mod expire;
mod fault;
pub mod identity;
pub mod lineage;
pub mod pages;
pub mod parallel;
pub mod parent;
pub mod phases;
pub mod prefetch;
mod refusal;
pub mod restore;
pub mod retention;
pub mod server;
pub mod spool;
pub mod take;
pub mod target;
pub mod timelines;
pub mod validate;
pub mod vm;
mod wal_mode;
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
    /// An I/O failure on a named file.
    #[error("{0}")]
    Io(ptrack_format::IoFailure),
    /// The repository: its storage, its key, an object that fails its checks, or a request it
    /// refuses ([`ptrack_format::Error`]).
    #[error(transparent)]
    Repo(ptrack_format::Error),
    /// A stored backup that cannot be used as its records say.
    #[error("backup {id}: {fault}")]
    Backup {
        /// The backup.
        id: String,
        /// What is wrong with it.
        fault: Fault,
    },
    /// A file of the data directory being backed up that is not what PostgreSQL writes.
    #[error("\"{path}\": {why}")]
    DataDir {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A request that cannot be carried out (bad option, missing backup, refused mode).
    #[error("{0}")]
    Refused(Refusal),
    /// The database server said no, or answered what no server answers.
    #[error("{0}")]
    Server(ServerError),
}

pub use fault::{Fault, ServerError};
pub use refusal::Refusal;

impl From<ptrack_format::Error> for Error {
    fn from(e: ptrack_format::Error) -> Error {
        Error::Repo(e)
    }
}

impl From<ptrack_repo::keyring::KeyError> for Error {
    fn from(e: ptrack_repo::keyring::KeyError) -> Error {
        Error::Repo(e.into())
    }
}

impl From<ptrack_repo::StorageError> for Error {
    fn from(e: ptrack_repo::StorageError) -> Error {
        Error::Repo(e.into())
    }
}

impl From<Refusal> for Error {
    fn from(e: Refusal) -> Error {
        Error::Refused(e)
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(e)
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
        Error::Io(ptrack_format::IoFailure::new(path, op, source))
    }

    /// `fault` of backup `id`.
    pub fn backup(id: &str, fault: Fault) -> Error {
        Error::Backup {
            id: id.to_string(),
            fault,
        }
    }

    /// Whether a repository object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Repo(e) if e.is_not_found())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
