//! [`Encrypted`]: any [`Storage`] whose objects are sealed with the repository's data key
//! (issue 12 §3; the envelope is [`crate::sealed`]). Layered above [`crate::retry::Retrying`]
//! (`Encrypted(Retrying(backend))`), so a failed tag is a [`StorageError::Damaged`] naming the
//! key and is never retried as if the store had failed, while the store's own transient failures
//! still are. Keys and sizes stay visible to the store (object names are not secret); every
//! object's bytes are sealed, the repository marker and keyring excepted, which the repository
//! reads through the store below before a key is known.
//!
//! Reads decrypt only the chunks they cover: [`ObjectReader::read_at`] maps a plaintext range to
//! its chunks (at most [`BATCH`] read from the store at once, the last one decrypted kept for
//! the next read), [`Storage::size`] computes the plaintext size from the stored size. The
//! writer seals a chunk as soon as the next byte after it arrives, so it holds one chunk.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::key::Key;
use crate::sealed::{self, CHUNK, DataKey, HEADER, Header, TAG};
use crate::storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, Storage, StorageError,
};

/// Chunks read from the store in one request at most (1 MiB of plaintext).
pub const BATCH: u64 = 16;

/// A store whose objects are encrypted and authenticated.
#[derive(Debug, Clone)]
pub struct Encrypted {
    inner: Arc<dyn Storage>,
    key: Arc<DataKey>,
}

fn damaged(key: &Key, why: impl Into<String>) -> StorageError {
    StorageError::Damaged {
        key: key.to_string(),
        why: why.into(),
    }
}

fn seal_failed(key: &Key, e: io::Error) -> StorageError {
    StorageError::Io {
        key: key.to_string(),
        op: "encrypt",
        transient: false,
        cause: e,
    }
}

impl Encrypted {
    /// Seals every object of `inner` with `key`.
    pub fn new(inner: Arc<dyn Storage>, key: DataKey) -> Encrypted {
        Encrypted {
            inner,
            key: Arc::new(key),
        }
    }

    /// The data key's id.
    pub fn data_key_id(&self) -> [u8; 8] {
        self.key.id()
    }
}

/// A reader of one sealed object.
struct EncReader {
    inner: Box<dyn ObjectReader>,
    data: Arc<DataKey>,
    key: Key,
    header: Header,
    aad: Vec<u8>,
    plain: u64,
    chunks: u64,
    /// The last chunk decrypted: its index and plaintext.
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl std::fmt::Debug for EncReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncReader")
            .field("key", &self.key)
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

impl EncReader {
    fn new(inner: Box<dyn ObjectReader>, data: Arc<DataKey>, key: &Key) -> Result<EncReader> {
        let plain = sealed::plain_size(inner.len()).map_err(|e| damaged(key, e.to_string()))?;
        let mut h = [0u8; HEADER];
        inner.read_at(&mut h, 0)?;
        let header = data.check_header(&h).map_err(|why| damaged(key, why))?;
        Ok(EncReader {
            aad: sealed::aad(&header, key.as_str()),
            inner,
            data,
            key: key.clone(),
            header,
            plain,
            chunks: sealed::chunks_of(plain),
            cache: Mutex::new(None),
        })
    }

    /// Reads and decrypts chunks `first..=last` (at most [`BATCH`]), handing each plaintext to
    /// `each` with its index.
    fn decrypt_run(&self, first: u64, last: u64, mut each: impl FnMut(u64, &[u8])) -> Result<()> {
        let (start, _) = sealed::chunk_span(self.plain, first);
        let (end_start, end_len) = sealed::chunk_span(self.plain, last);
        let end = end_start + (end_len + TAG) as u64;
        let mut buf = vec![0u8; (end - start) as usize];
        self.inner.read_at(&mut buf, start)?;
        let mut at = 0usize;
        for i in first..=last {
            let (_, len) = sealed::chunk_span(self.plain, i);
            let piece = buf
                .get_mut(at..at + len + TAG)
                .ok_or_else(|| damaged(&self.key, "a chunk lies past the end"))?;
            let last_chunk = i + 1 == self.chunks;
            if self
                .data
                .open_chunk(&self.header, &self.aad, i, last_chunk, piece)
                .is_none()
            {
                return Err(damaged(&self.key, sealed::tag_failure(i, self.chunks)));
            }
            each(i, piece.get(..len).unwrap_or_default());
            at += len + TAG;
        }
        Ok(())
    }
}

impl ObjectReader for EncReader {
    fn len(&self) -> u64 {
        self.plain
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.plain)
            .ok_or_else(|| StorageError::past_end(&self.key, offset, buf.len(), self.plain))?;
        if buf.is_empty() {
            return Ok(());
        }
        let c = CHUNK as u64;
        let (first, last) = (offset / c, (end - 1) / c);
        // Copies chunk i's plaintext part that `buf` covers.
        let copy = |buf: &mut [u8], i: u64, plain: &[u8]| {
            let from = (offset.max(i * c) - i * c) as usize;
            let to = (end.min((i + 1) * c) - i * c) as usize;
            let dst = (i * c + from as u64 - offset) as usize;
            if let (Some(d), Some(s)) = (buf.get_mut(dst..dst + (to - from)), plain.get(from..to)) {
                d.copy_from_slice(s);
            }
        };
        let mut i = first;
        {
            // Held only to copy: readers on several threads decrypt at once.
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((ci, plain)) = cache.as_ref()
                && *ci == first
            {
                copy(buf, first, plain);
                i += 1;
            }
        }
        while i <= last {
            let run_end = last.min(i + BATCH - 1);
            let mut kept = None;
            self.decrypt_run(i, run_end, |j, plain| {
                copy(buf, j, plain);
                if j == run_end {
                    kept = Some((j, plain.to_vec()));
                }
            })?;
            if kept.is_some() {
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = kept;
            }
            i = run_end + 1;
        }
        Ok(())
    }

    fn read_ahead(&self) -> usize {
        (self.inner.read_ahead() / CHUNK).max(1) * CHUNK
    }
}

/// A writer sealing chunk by chunk.
struct EncWriter {
    inner: Box<dyn ObjectWriter>,
    data: Arc<DataKey>,
    key: Key,
    header: Header,
    aad: Vec<u8>,
    /// The next chunk's index.
    next: u64,
    /// Plaintext not sealed yet (at most one chunk; sealed once a byte after it arrives).
    buf: Vec<u8>,
}

impl EncWriter {
    fn seal_buffered(&mut self, last: bool) -> io::Result<()> {
        self.data
            .seal_chunk(&self.header, &self.aad, self.next, last, &mut self.buf)?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.next += 1;
        Ok(())
    }
}

impl Write for EncWriter {
    fn write(&mut self, mut b: &[u8]) -> io::Result<usize> {
        let n = b.len();
        while !b.is_empty() {
            if self.buf.len() == CHUNK {
                self.seal_buffered(false)?;
            }
            let take = (CHUNK - self.buf.len()).min(b.len());
            let (now, rest) = b.split_at(take);
            self.buf.extend_from_slice(now);
            b = rest;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for EncWriter {
    fn finish(mut self: Box<Self>) -> Result<()> {
        let key = self.key.clone();
        self.seal_buffered(true)
            .map_err(|e| match e.downcast::<StorageError>() {
                Ok(se) => se,
                Err(e) => StorageError::io(&key, "write", e),
            })?;
        self.inner.finish()
    }
}

impl Storage for Encrypted {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        let sealed = self.inner.get(key)?;
        self.key
            .open(key.as_str(), sealed)
            .map_err(|why| damaged(key, why))
    }

    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>> {
        let r = self.inner.open(key)?;
        Ok(Box::new(EncReader::new(r, Arc::clone(&self.key), key)?))
    }

    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>> {
        let r = self.open(key)?;
        let mut out = vec![0u8; len];
        r.read_at(&mut out, start)?;
        Ok(out)
    }

    fn size(&self, key: &Key) -> Result<u64> {
        sealed::plain_size(self.inner.size(key)?).map_err(|e| damaged(key, e.to_string()))
    }

    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>> {
        self.inner.list(prefix)
    }

    fn children(&self, prefix: Option<&Key>) -> Result<Vec<String>> {
        self.inner.children(prefix)
    }

    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let sealed = self
            .key
            .seal(key.as_str(), bytes)
            .map_err(|e| seal_failed(key, e))?;
        self.inner.put(key, &sealed)
    }

    fn put_if_absent(&self, key: &Key, bytes: &[u8]) -> Result<bool> {
        let sealed = self
            .key
            .seal(key.as_str(), bytes)
            .map_err(|e| seal_failed(key, e))?;
        self.inner.put_if_absent(key, &sealed)
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        let header = self.key.new_header().map_err(|e| seal_failed(key, e))?;
        let mut inner = self.inner.writer(key)?;
        inner
            .write_all(&header.bytes())
            .map_err(|e| StorageError::io(key, "write", e))?;
        Ok(Box::new(EncWriter {
            inner,
            data: Arc::clone(&self.key),
            key: key.clone(),
            aad: sealed::aad(&header, key.as_str()),
            header,
            next: 0,
            buf: Vec::with_capacity(CHUNK + TAG),
        }))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        self.inner.delete(key)
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<()> {
        self.inner.delete_prefix(prefix)
    }

    fn lock(&self, name: &Key, owner: &str) -> std::result::Result<Box<dyn Held>, LockError> {
        // The lease's intents (owner, host) are sealed like every other object.
        crate::lease::lock_through(Arc::new(self.clone()), &*self.inner, name, owner)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn address(&self) -> String {
        self.inner.address()
    }
}
