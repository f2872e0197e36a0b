//! [`MemStore`]: objects in memory, for tests of backup, restore and validate without a
//! server or a disk. Every operation counts, and [`MemStore::fail_op`] makes the Nth one fail
//! (transient or permanent) without doing anything, so a test can fail every operation of a
//! command in turn. A put is durable when it returns; an unfinished writer leaves nothing.
//! [`MemStore::without_conditional_put`] behaves like a store that ignores conditional writes
//! (Garage 2.5).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::key::Key;
use crate::storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, Storage, StorageError,
};

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Key, Arc<Vec<u8>>>,
    ops: u64,
    fail: Option<(u64, bool)>,
}

/// An in-memory store with fault injection.
#[derive(Debug, Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    conditional_put: bool,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore {
            state: Arc::default(),
            conditional_put: true,
        }
    }

    /// The same store, answering [`Storage::put_if_absent`] with
    /// [`StorageError::Unsupported`].
    pub fn without_conditional_put(mut self) -> MemStore {
        self.conditional_put = false;
        self
    }

    /// Makes operation number `n` (counting from 0 across all operations, see
    /// [`MemStore::ops`]) fail, transiently or not, without effect.
    pub fn fail_op(&self, n: u64, transient: bool) {
        self.lock().fail = Some((n, transient));
    }

    /// Whether a failure asked for with [`MemStore::fail_op`] has not happened yet (and
    /// cancels it).
    pub fn take_pending_failure(&self) -> bool {
        self.lock().fail.take().is_some()
    }

    /// Operations done (or failed) so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread cannot leave the map half-changed: every change is one insert
        // or remove. Go on with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an operation and fails it when asked to; runs `f` on the state otherwise.
    fn op<T>(
        &self,
        key: &str,
        op: &'static str,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        let n = st.ops;
        st.ops += 1;
        if let Some((at, transient)) = st.fail
            && at == n
        {
            st.fail = None;
            return Err(StorageError::Io {
                key: key.to_string(),
                op,
                transient,
                cause: io::Error::other(format!("injected failure of operation {n}")),
            });
        }
        f(&mut st)
    }

    fn object(st: &State, key: &Key) -> Result<Arc<Vec<u8>>> {
        st.objects
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_string(),
            })
    }
}

/// A reader of one object as it was when opened; each read counts as an operation.
#[derive(Debug)]
struct MemReader {
    store: MemStore,
    key: Key,
    bytes: Arc<Vec<u8>>,
}

impl ObjectReader for MemReader {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let key = &self.key;
        self.store.op(key.as_str(), "read", |_| {
            let piece = usize::try_from(offset)
                .ok()
                .and_then(|s| self.bytes.get(s..s.checked_add(buf.len())?))
                .ok_or_else(|| {
                    StorageError::past_end(key, offset, buf.len(), self.bytes.len() as u64)
                })?;
            buf.copy_from_slice(piece);
            Ok(())
        })
    }

    fn read_ahead(&self) -> usize {
        256 << 10
    }
}

struct MemWriter {
    store: MemStore,
    key: Key,
    buf: Vec<u8>,
}

impl Write for MemWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemWriter {
    fn finish(self: Box<Self>) -> Result<()> {
        let MemWriter { store, key, buf } = *self;
        store.op(key.as_str(), "finish", |st| {
            st.objects.insert(key.clone(), Arc::new(buf));
            Ok(())
        })
    }
}

impl Storage for MemStore {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        self.op(
            key.as_str(),
            "get",
            |st| Ok(Self::object(st, key)?.to_vec()),
        )
    }

    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>> {
        self.op(key.as_str(), "get range", |st| {
            let o = Self::object(st, key)?;
            usize::try_from(start)
                .ok()
                .and_then(|s| o.get(s..s.checked_add(len)?))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| StorageError::past_end(key, start, len, o.len() as u64))
        })
    }

    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>> {
        let bytes = self.op(key.as_str(), "open", |st| Self::object(st, key))?;
        Ok(Box::new(MemReader {
            store: self.clone(),
            key: key.clone(),
            bytes,
        }))
    }

    fn size(&self, key: &Key) -> Result<u64> {
        self.op(key.as_str(), "size", |st| {
            Ok(Self::object(st, key)?.len() as u64)
        })
    }

    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>> {
        self.op(prefix.map_or("", Key::as_str), "list", |st| {
            Ok(st
                .objects
                .keys()
                .filter(|k| prefix.is_none_or(|p| k.is_under(p)))
                .cloned()
                .collect())
        })
    }

    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        self.op(key.as_str(), "put", |st| {
            st.objects.insert(key.clone(), Arc::new(bytes.to_vec()));
            Ok(())
        })
    }

    fn put_if_absent(&self, key: &Key, bytes: &[u8]) -> Result<bool> {
        let conditional = self.conditional_put;
        self.op(key.as_str(), "put if absent", |st| {
            if !conditional {
                return Err(StorageError::Unsupported {
                    key: key.to_string(),
                    op: "put if absent",
                });
            }
            if st.objects.contains_key(key) {
                return Ok(false);
            }
            st.objects.insert(key.clone(), Arc::new(bytes.to_vec()));
            Ok(true)
        })
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        self.op(key.as_str(), "create", |_| Ok(()))?;
        Ok(Box::new(MemWriter {
            store: self.clone(),
            key: key.clone(),
            buf: Vec::new(),
        }))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        self.op(key.as_str(), "delete", |st| {
            st.objects.remove(key);
            Ok(())
        })
    }

    fn lock(&self, name: &Key, owner: &str) -> std::result::Result<Box<dyn Held>, LockError> {
        crate::lease::keep_boxed(Arc::new(self.clone()), name, owner)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_put: self.conditional_put,
            lease_lock: true,
        }
    }

    fn address(&self) -> String {
        "memory".into()
    }
}
