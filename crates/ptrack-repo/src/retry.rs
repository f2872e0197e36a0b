//! [`Retrying`]: any [`Storage`] with its transient failures retried (issue 12 §1: typed errors
//! whose transient/permanent distinction drives retries). An operation failing transiently is
//! tried again up to [`ATTEMPTS`] times in all, after 50, 100, 200 ms; permanent failures and
//! the last transient one are returned as they are, naming the key. Retrying is safe because
//! every operation is idempotent (a put replaces, a delete of an absent object succeeds, reads
//! change nothing); a streaming writer's bytes are not replayed (an S3 client retries each part
//! itself), so writers are passed through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::key::Key;
use crate::storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, Storage, StorageError,
};

/// Tries per operation.
pub const ATTEMPTS: u32 = 4;

/// The first failure that was not "no such object", as text (see [`Retrying::failures`]).
pub type FailureLog = Arc<Mutex<Option<String>>>;

fn again<T>(log: &FailureLog, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(50 << (attempt - 1)));
                attempt += 1;
            }
            Err(e) => {
                if !matches!(e, StorageError::NotFound { .. }) {
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.get_or_insert_with(|| e.to_string());
                }
                return Err(e);
            }
            ok => return ok,
        }
    }
}

/// A store whose transient failures are retried, and which remembers the first failure that
/// is not a missing object (validate tells "could not read" from "damaged" by it).
#[derive(Debug, Clone)]
pub struct Retrying {
    inner: Arc<dyn Storage>,
    log: FailureLog,
}

impl Retrying {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Retrying {
        Retrying {
            inner,
            log: FailureLog::default(),
        }
    }

    /// The failure log, shared: take its content to reset it.
    pub fn failures(&self) -> FailureLog {
        Arc::clone(&self.log)
    }
}

#[derive(Debug)]
struct RetryingReader(Box<dyn ObjectReader>, FailureLog);

impl ObjectReader for RetryingReader {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        again(&self.1, || self.0.read_at(buf, offset))
    }

    fn read_ahead(&self) -> usize {
        self.0.read_ahead()
    }
}

impl Storage for Retrying {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        again(&self.log, || self.inner.get(key))
    }

    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>> {
        let r = again(&self.log, || self.inner.open(key))?;
        Ok(Box::new(RetryingReader(r, Arc::clone(&self.log))))
    }

    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>> {
        again(&self.log, || self.inner.get_range(key, start, len))
    }

    fn size(&self, key: &Key) -> Result<u64> {
        again(&self.log, || self.inner.size(key))
    }

    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>> {
        again(&self.log, || self.inner.list(prefix))
    }

    fn children(&self, prefix: Option<&Key>) -> Result<Vec<String>> {
        again(&self.log, || self.inner.children(prefix))
    }

    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        again(&self.log, || self.inner.put(key, bytes))
    }

    fn put_if_absent(&self, key: &Key, bytes: &[u8]) -> Result<bool> {
        // Not retried: after a lost answer, a second try would see its own object and say
        // "existed".
        self.inner.put_if_absent(key, bytes)
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        again(&self.log, || self.inner.writer(key))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        again(&self.log, || self.inner.delete(key))
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<()> {
        again(&self.log, || self.inner.delete_prefix(prefix))
    }

    fn lock(&self, name: &Key, owner: &str) -> std::result::Result<Box<dyn Held>, LockError> {
        // The lease's puts, lists and deletes retried like every other operation.
        crate::lease::lock_through(Arc::new(self.clone()), &*self.inner, name, owner)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn address(&self) -> String {
        self.inner.address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemStore;

    #[test]
    fn transient_failures_are_retried_and_permanent_ones_returned() {
        let mem = MemStore::new();
        let s = Retrying::new(Arc::new(mem.clone()));
        let k = Key::new("a/b").unwrap_or_else(|e| unreachable!("{e}"));
        s.put(&k, b"x").expect("put");
        mem.fail_op(mem.ops(), true);
        assert_eq!(s.get(&k).expect("retried"), b"x");
        mem.fail_op(mem.ops(), false);
        assert!(s.failures().lock().expect("log").is_none());
        let e = s.get(&k).expect_err("permanent");
        assert!(e.to_string().contains("a/b"), "{e}");
        assert!(s.failures().lock().expect("log").take().is_some());
        let missing = Key::new("none").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(s.get(&missing).is_err());
        assert!(
            s.failures().lock().expect("log").is_none(),
            "a missing object is not a failure of the store"
        );
        // A reader's reads are retried too.
        let r = s.open(&k).expect("open");
        mem.fail_op(mem.ops(), true);
        let mut b = [0u8; 1];
        r.read_at(&mut b, 0).expect("retried read");
        assert_eq!(&b, b"x");
    }
}
