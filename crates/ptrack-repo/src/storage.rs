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
    /// The object's bytes fail their checks: an encrypted object whose authentication tag does
    /// not match (a flipped byte, truncation, chunks reordered, an object copied from another
    /// key or sealed under another data key), or whose header or size is not one this program
    /// writes. Permanent: never retried.
    #[error("\"{key}\": damaged: {why}")]
    Damaged {
        /// The key.
        key: String,
        /// What failed.
        why: String,
    },
    /// The operation failed. `transient` failures (timeouts, throttling, interrupted calls)
    /// may succeed when retried; the others will not.
    #[error("\"{key}\": {op}: {cause}")]
    Io {
        /// The key.
        key: String,
        /// The operation.
        op: &'static str,
        /// Whether a retry may succeed.
        transient: bool,
        /// The cause (part of the message, not a separate source, so that it is printed once).
        cause: io::Error,
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

    /// A read of `len` bytes at `start` of an object of `size` bytes that runs past its end.
    pub fn past_end(key: &Key, start: u64, len: usize, size: u64) -> StorageError {
        StorageError::Io {
            key: key.to_string(),
            op: "read",
            transient: false,
            cause: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {start} run past the end ({size} bytes)"),
            ),
        }
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
            cause: source,
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
    /// [`Storage::lock`] is a [`crate::lease`] built on this store's own operations (object
    /// storage), so a wrapper may build it on itself instead ([`crate::retry`]).
    pub lease_lock: bool,
}

/// A writer of one object: its bytes are invisible under the key until
/// [`ObjectWriter::finish`] returns, and then all of them are visible and durable. Dropped
/// unfinished, it leaves no object (a backend may leave invisible leftovers: temporary files,
/// unfinished multipart uploads, which the next run cleans).
pub trait ObjectWriter: io::Write + Send {
    /// Makes the object visible and durable.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A reader of one finished object, opened once and read at any offset (a file descriptor
/// on a filesystem, ranged GETs on object storage).
pub trait ObjectReader: Send + Sync + std::fmt::Debug {
    /// The object's size, fixed when it was opened.
    fn len(&self) -> u64;

    /// Whether the object is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`: all of it, or an error (reading past the end is one).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// How much a sequential reader should ask for at once: a few hundred KiB on a filesystem,
    /// megabytes where every read is a request.
    fn read_ahead(&self) -> usize;
}

/// An exclusive lock on a name, held until dropped (or until its holder dies: a filesystem
/// lock at once, a lease on object storage once it expires).
pub trait Held: Send + std::fmt::Debug {
    /// Whether the lock is still held; an error when it may have been lost (a lease that could
    /// not be renewed). Checked before anything is committed.
    fn check(&self) -> Result<()>;
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error("held by {owner}")]
    Held {
        /// Who holds it, as far as the store can say.
        owner: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Repository storage. Keys are [`Key`]s; every method is safe to call from several threads.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The whole object.
    fn get(&self, key: &Key) -> Result<Vec<u8>>;

    /// Opens the object for reads at any offset.
    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>>;

    /// `len` bytes from `start`: all of them, or an error (reading past the end is one).
    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>>;

    /// The object's size in bytes.
    fn size(&self, key: &Key) -> Result<u64>;

    /// Every object at or below `prefix` (whole components; everything for `None`), sorted.
    /// Unfinished writes are never listed.
    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>>;

    /// The names one level below `prefix` (the repository's top for `None`) under which
    /// objects exist, sorted and without repeats: what a directory listing shows, without
    /// listing every object below.
    fn children(&self, prefix: Option<&Key>) -> Result<Vec<String>> {
        let skip = prefix.map_or(0, |p| p.as_str().len() + 1);
        let mut out: Vec<String> = self
            .list(prefix)?
            .iter()
            .filter_map(|k| {
                k.as_str()
                    .get(skip..)?
                    .split('/')
                    .next()
                    .map(str::to_string)
            })
            .collect();
        out.dedup();
        Ok(out)
    }

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

    /// Removes every object at or below `prefix` (and, on a filesystem, the directories they
    /// leave empty); durable when it returns.
    fn delete_prefix(&self, prefix: &Key) -> Result<()> {
        for k in self.list(Some(prefix))? {
            self.delete(&k)?;
        }
        Ok(())
    }

    /// Takes the exclusive lock `name` for `owner` (a description other processes are shown)
    /// without waiting.
    fn lock(&self, name: &Key, owner: &str) -> std::result::Result<Box<dyn Held>, LockError>;

    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Where the repository is, for messages (a directory, `s3://bucket/prefix`); never a
    /// secret.
    fn address(&self) -> String;
}

/// Reads an object from start to end through [`std::io::Read`], [`ObjectReader::read_ahead`]
/// bytes per request at most.
#[derive(Debug)]
pub struct SeqReader {
    inner: Box<dyn ObjectReader>,
    pos: u64,
}

impl SeqReader {
    /// Reads `inner` from its first byte.
    pub fn new(inner: Box<dyn ObjectReader>) -> SeqReader {
        SeqReader { inner, pos: 0 }
    }

    /// The object's size.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl io::Read for SeqReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.inner.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner
            .read_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}
