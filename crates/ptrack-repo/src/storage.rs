//! The storage trait every repository access goes through, with the contract of each method
//! (atomicity, durability, what a crash leaves), and its typed errors. Modelled on redb's
//! `StorageBackend` (a small set of primitive operations, each with one meaning) and on object
//! stores' semantics (PUT is atomic, nothing is renamed, a multipart upload is invisible until
//! completed), so that a filesystem and an S3 bucket can both honour it.

use std::io;

use crate::key::Key;

/// What a storage operation can fail with. Every variant names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("\"{key}\": no such object")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A key that cannot name an object (see [`Key`]).
    #[error("invalid object key {key:?}: {why}")]
    BadKey {
        /// The text given.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// The backend cannot do this (a conditional write on a store that ignores conditions).
    #[error("\"{key}\": {op} is not supported by this storage")]
    Unsupported {
        /// The key.
        key: String,
        /// The operation.
        op: &'static str,
    },
    /// The operation failed. `transient` failures (timeouts, throttling, interrupted calls)
    /// may succeed when retried; the others will not.
    #[error("\"{key}\": {op}: {source}")]
    Io {
        /// The key.
        key: String,
        /// The operation.
        op: &'static str,
        /// Whether a retry may succeed.
        transient: bool,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Whether retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Io {
                transient: true,
                ..
            }
        )
    }

    /// An I/O failure of `op` on `key`, transient by its kind.
    pub fn io(key: &Key, op: &'static str, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::NotFound {
            return StorageError::NotFound {
                key: key.to_string(),
            };
        }
        let transient = matches!(
            source.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        StorageError::Io {
            key: key.to_string(),
            op,
            transient,
            source,
        }
    }
}

/// Storage results.
pub type Result<T> = std::result::Result<T, StorageError>;

/// What a backend can guarantee beyond the common contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Storage::put_if_absent`] is atomic (AWS S3, MinIO, R2, a filesystem). Garage 2.5
    /// ignores `If-None-Match: *`: a store without it answers
    /// [`StorageError::Unsupported`], and locking must not rely on it.
    pub conditional_put: bool,
}

/// A writer of one object: its bytes are invisible under the key until
/// [`ObjectWriter::finish`] returns, and then all of them are visible and durable. Dropped
/// unfinished, it leaves no object (a backend may leave invisible leftovers: temporary files,
/// unfinished multipart uploads, which the next run cleans).
pub trait ObjectWriter: io::Write + Send {
    /// Makes the object visible and durable.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Repository storage. Keys are [`Key`]s; every method is safe to call from several threads.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The whole object.
    fn get(&self, key: &Key) -> Result<Vec<u8>>;

    /// `len` bytes from `start`: all of them, or an error (reading past the end is one).
    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>>;

    /// The object's size in bytes.
    fn size(&self, key: &Key) -> Result<u64>;

    /// Every object at or below `prefix` (whole components; everything for `None`), sorted.
    /// Unfinished writes are never listed.
    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>>;

    /// Writes the whole object, replacing any object of that key: atomic (a reader sees the old
    /// or the new bytes, also after a crash) and durable when it returns.
    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()>;

    /// [`Storage::put`] only when no object has the key: `Ok(true)` when written, `Ok(false)`
    /// when one existed (it is left alone). Atomic against concurrent callers where
    /// [`Capabilities::conditional_put`] holds, else [`StorageError::Unsupported`].
    fn put_if_absent(&self, key: &Key, bytes: &[u8]) -> Result<bool>;

    /// A streaming writer (see [`ObjectWriter`]); the object replaces any of that key when
    /// finished.
    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>>;

    /// Removes the object; durable when it returns. Removing an absent object is not an error.
    fn delete(&self, key: &Key) -> Result<()>;

    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;
}
