//! [`S3Store`]: a repository in an S3-compatible bucket (AWS S3, MinIO, R2, Garage), through
//! the `object_store` crate (Apache Arrow's: request signing, retries with backoff, multipart
//! uploads, ranged GETs). The bucket and a key prefix come from `s3://bucket/prefix`; endpoint,
//! region and credentials from the AWS conventions (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and `AWS_PROFILE` with
//! `~/.aws/credentials` and `~/.aws/config`, see [`crate::profile`]). Requests are path-style
//! (`endpoint/bucket/key`), which self-hosted stores need; an `http://` endpoint is allowed
//! because the user wrote it. Secrets are held by the client only: never printed, never stored.
//!
//! Contract on object storage: a put is atomic and durable when S3 answers 200; a writer uploads
//! parts of [`PART`] bytes while it is written (at most [`IN_FLIGHT`] parts at once, so memory per
//! writer is bounded by `(IN_FLIGHT + 1) × PART`) and the object appears only when the upload is
//! completed; a writer dropped unfinished aborts its upload (a killed process leaves an
//! unfinished upload that is invisible; a bucket lifecycle rule "abort incomplete multipart
//! uploads" removes it). Conditional puts are not relied on (Garage ignores them): the lock is a
//! lease ([`crate::lease`]).

use std::io::{self, Write};
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as OsPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use crate::key::Key;
use crate::storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, Storage, StorageError,
};

/// Size of one uploaded part (S3 wants at least 5 MiB for every part but the last).
pub const PART: usize = 8 << 20;
/// Parts of one writer uploaded at once.
pub const IN_FLIGHT: usize = 2;
/// Bytes a sequential reader asks for at once (served from [`S3Reader`]'s chunks).
const READ_AHEAD: usize = 1 << 20;

/// A parsed `s3://bucket/prefix` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Address {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside it, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Address {
    /// Parses `s3://bucket[/prefix]`; `None` when `s` is not an `s3://` address.
    pub fn parse(s: &str) -> Option<std::result::Result<S3Address, String>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_string();
        let ok_bucket = !bucket.is_empty()
            && bucket.len() <= 63
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok_bucket {
            return Some(Err(format!(
                "\"{s}\": the bucket name must be 1 to 63 lowercase letters, digits, '-' or '.'"
            )));
        }
        if !prefix.is_empty()
            && let Err(e) = Key::new(&prefix)
        {
            return Some(Err(format!("\"{s}\": bad prefix: {e}")));
        }
        Some(Ok(S3Address {
            bucket: bucket.to_string(),
            prefix,
        }))
    }
}

impl std::fmt::Display for S3Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[derive(Debug)]
struct Inner {
    client: AmazonS3,
    addr: S3Address,
    rt: tokio::runtime::Runtime,
}

/// An S3 bucket (below a prefix) as repository storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

/// Maps an `object_store` error to ours. The client has already retried what it considers
/// transient (timeouts, throttling, 5xx) with backoff, so what is left is reported as is.
fn map_err(key: &str, op: &'static str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound {
            key: key.to_string(),
        },
        other => StorageError::Io {
            key: key.to_string(),
            op,
            transient: false,
            cause: io::Error::other(other.to_string()),
        },
    }
}

fn config_error(addr: &S3Address, why: String) -> StorageError {
    StorageError::Io {
        key: addr.to_string(),
        op: "configure S3",
        transient: false,
        cause: io::Error::other(why),
    }
}

impl S3Store {
    /// Connects to `addr` with the environment's AWS settings and the shared profile files
    /// (nothing is sent yet).
    pub fn new(addr: S3Address) -> Result<S3Store> {
        let profile = crate::profile::settings().map_err(|why| config_error(&addr, why))?;
        S3Store::build(addr, AmazonS3Builder::from_env(), profile)
    }

    /// Connects to `addr` with only the settings given (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, …), ignoring the environment: tests.
    pub fn with_settings(addr: S3Address, settings: &[(&str, String)]) -> Result<S3Store> {
        let mut kv = Vec::new();
        for (k, v) in settings {
            let key: AmazonS3ConfigKey = k
                .parse()
                .map_err(|_| config_error(&addr, format!("unknown setting {k}")))?;
            kv.push((key, v.clone()));
        }
        S3Store::build(addr, AmazonS3Builder::new(), kv)
    }

    fn build(
        addr: S3Address,
        mut b: AmazonS3Builder,
        settings: Vec<(AmazonS3ConfigKey, String)>,
    ) -> Result<S3Store> {
        for (k, v) in settings {
            b = b.with_config(k, v);
        }
        b = b
            .with_bucket_name(&addr.bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig::default());
        if b.get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"))
        {
            b = b.with_allow_http(true);
        }
        let client = b.build().map_err(|e| config_error(&addr, e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ptrack-s3")
            .enable_all()
            .build()
            .map_err(|e| config_error(&addr, e.to_string()))?;
        Ok(S3Store {
            inner: Arc::new(Inner { client, addr, rt }),
        })
    }

    fn path(&self, key: &Key) -> OsPath {
        let p = &self.inner.addr.prefix;
        if p.is_empty() {
            OsPath::from(key.as_str())
        } else {
            OsPath::from(format!("{p}/{}", key.as_str()))
        }
    }

    /// Where a listing of `prefix` starts in the bucket.
    fn list_root(&self, prefix: Option<&Key>) -> Option<OsPath> {
        let base = &self.inner.addr.prefix;
        match (base.is_empty(), prefix) {
            (true, None) => None,
            (true, Some(p)) => Some(OsPath::from(p.as_str())),
            (false, None) => Some(OsPath::from(base.as_str())),
            (false, Some(p)) => Some(OsPath::from(format!("{base}/{}", p.as_str()))),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f)
    }

    /// Whether the store honours `If-None-Match: *` (AWS S3, MinIO and R2 do; Garage 2.5 does
    /// not): writes `probe` twice with a create-only put and deletes it again.
    pub fn probe_conditional_put(&self, probe: &Key) -> Result<bool> {
        let path = self.path(probe);
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let c = &self.inner.client;
        self.block_on(c.put_opts(&path, PutPayload::from_static(b"1"), opts()))
            .map_err(|e| map_err(probe.as_str(), "probe", e))?;
        let second = self.block_on(c.put_opts(&path, PutPayload::from_static(b"2"), opts()));
        self.delete(probe)?;
        match second {
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err(map_err(probe.as_str(), "probe", e)),
        }
    }
}

/// Reads an object with ranged GETs. Opening it fetches its first [`HEAD_BYTES`] (the size
/// comes with them, in the response's `Content-Range`), so a small object (a catalog record,
/// an index, a manifest) is read in one request, with no HEAD first; only when that GET
/// fails (an empty object has no first byte) does a HEAD give the size. Reads that follow
/// one another (a restore's or validate's pass over a bundle) are served from aligned chunks of
/// [`CHUNK`] bytes, the next chunk being fetched while the current one is used; a read far from
/// the previous one is fetched exactly. At most two chunks are kept and one is in flight.
#[derive(Debug)]
struct S3Reader {
    store: S3Store,
    key: Key,
    path: OsPath,
    len: u64,
    /// The object's first bytes (at most [`HEAD_BYTES`]), fetched at open.
    head: bytes::Bytes,
    chunks: std::sync::Mutex<Chunks>,
}

/// Bytes fetched when an object is opened: a manifest of a few thousand files is one GET (an
/// incremental reads the manifest of every backup of its chain; each further GET is a round
/// trip, and on a store that leaves Nagle's algorithm on, such as Garage, a 40 ms wait). A
/// bundle's first megabyte is what a pass over it reads first anyway.
const HEAD_BYTES: u64 = 1 << 20;

/// Bytes of one aligned chunk of an object.
const CHUNK: u64 = 4 << 20;

#[derive(Debug, Default)]
struct Chunks {
    cached: Vec<(u64, bytes::Bytes)>,
    pending: Option<(
        u64,
        tokio::task::JoinHandle<object_store::Result<bytes::Bytes>>,
    )>,
    last: Option<u64>,
}

impl S3Reader {
    fn range_of(&self, c: u64) -> std::ops::Range<u64> {
        c * CHUNK..((c + 1) * CHUNK).min(self.len)
    }

    fn get(&self, r: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        let want = (r.end - r.start) as usize;
        let start = r.start;
        let b = self
            .store
            .block_on(self.store.inner.client.get_range(&self.path, r))
            .map_err(|e| map_err(self.key.as_str(), "read", e))?;
        self.check_len(b, want, start)
    }

    fn check_len(&self, b: bytes::Bytes, want: usize, at: u64) -> Result<bytes::Bytes> {
        if b.len() == want {
            return Ok(b);
        }
        Err(StorageError::Io {
            key: self.key.to_string(),
            op: "read",
            transient: true,
            cause: io::Error::other(format!("asked for {want} bytes at {at}, got {}", b.len())),
        })
    }

    /// Chunk `c`: cached, fetched ahead, or fetched now.
    fn chunk(&self, st: &mut Chunks, c: u64) -> Result<bytes::Bytes> {
        if let Some((_, b)) = st.cached.iter().find(|(i, _)| *i == c) {
            return Ok(b.clone());
        }
        let r = self.range_of(c);
        let b = match st.pending.take() {
            Some((i, h)) if i == c => {
                let want = (r.end - r.start) as usize;
                match self.store.block_on(h) {
                    Ok(Ok(b)) => self.check_len(b, want, r.start)?,
                    // A failed or lost prefetch is fetched again, now, its error reported.
                    _ => self.get(r)?,
                }
            }
            other => {
                if let Some((_, h)) = other {
                    h.abort();
                }
                self.get(r)?
            }
        };
        st.cached.push((c, b.clone()));
        if st.cached.len() > 2 {
            st.cached.remove(0);
        }
        Ok(b)
    }

    fn prefetch(&self, st: &mut Chunks, c: u64) {
        let have = st.cached.iter().any(|(i, _)| *i == c)
            || st.pending.as_ref().is_some_and(|(i, _)| *i == c);
        if have || c * CHUNK >= self.len {
            return;
        }
        let (client, path, r) = (
            self.store.inner.client.clone(),
            self.path.clone(),
            self.range_of(c),
        );
        let h = self
            .store
            .inner
            .rt
            .spawn(async move { client.get_range(&path, r).await });
        if let Some((_, old)) = st.pending.replace((c, h)) {
            old.abort();
        }
    }
}

impl Drop for S3Reader {
    fn drop(&mut self) {
        let st = self.chunks.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some((_, h)) = st.pending.take() {
            h.abort();
        }
    }
}

impl ObjectReader for S3Reader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| StorageError::past_end(&self.key, offset, buf.len(), self.len))?;
        if buf.is_empty() {
            return Ok(());
        }
        if end <= self.head.len() as u64 {
            buf.copy_from_slice(&self.head[offset as usize..end as usize]);
            return Ok(());
        }
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let mut st = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let follows = st.last.is_some_and(|l| first == l || first == l + 1);
        st.last = Some(last);
        if !follows && (buf.len() as u64) < CHUNK / 4 {
            drop(st);
            let b = self.get(offset..end)?;
            buf.copy_from_slice(&b);
            return Ok(());
        }
        for c in first..=last {
            let b = self.chunk(&mut st, c)?;
            let from = offset.max(c * CHUNK);
            let to = end.min(c * CHUNK + b.len() as u64);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            dst.copy_from_slice(&b[(from - c * CHUNK) as usize..(to - c * CHUNK) as usize]);
        }
        self.prefetch(&mut st, last + 1);
        Ok(())
    }

    fn read_ahead(&self) -> usize {
        READ_AHEAD
    }
}

/// A streaming writer: one PUT when the object stays under [`PART`], else a multipart upload
/// started at the first full part.
struct S3Writer {
    store: S3Store,
    key: Key,
    path: OsPath,
    buf: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl S3Writer {
    fn push_part(&mut self) -> io::Result<()> {
        let s = self.store.clone();
        if self.upload.is_none() {
            let up = s
                .block_on(s.inner.client.put_multipart(&self.path))
                .map_err(|e| io::Error::other(map_err(self.key.as_str(), "start upload", e)))?;
            self.upload = Some(WriteMultipart::new_with_chunk_size(up, PART));
        }
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        s.block_on(up.wait_for_capacity(IN_FLIGHT))
            .map_err(|e| io::Error::other(map_err(self.key.as_str(), "upload part", e)))?;
        let _in_runtime = s.inner.rt.enter();
        up.put(std::mem::take(&mut self.buf).into());
        self.buf.reserve(PART);
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(PART - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == PART {
            self.push_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<()> {
        let s = self.store.clone();
        let key = self.key.clone();
        match self.upload.take() {
            None => {
                let body = PutPayload::from(std::mem::take(&mut self.buf));
                s.block_on(s.inner.client.put(&self.path, body))
                    .map_err(|e| map_err(key.as_str(), "put", e))?;
            }
            Some(mut up) => {
                if !self.buf.is_empty() {
                    let _in_runtime = s.inner.rt.enter();
                    up.put(std::mem::take(&mut self.buf).into());
                }
                s.block_on(up.finish())
                    .map_err(|e| map_err(key.as_str(), "complete upload", e))?;
            }
        }
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(up) = self.upload.take() {
            // Best effort: an upload left behind is invisible and removed by the bucket's
            // lifecycle rule.
            let _ = self.store.block_on(up.abort());
        }
    }
}

impl Storage for S3Store {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        let c = &self.inner.client;
        let path = self.path(key);
        self.block_on(async {
            let r = c.get(&path).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| map_err(key.as_str(), "get", e))
    }

    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>> {
        let path = self.path(key);
        let first = self.block_on(async {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(0..HEAD_BYTES)),
                ..GetOptions::default()
            };
            let r = self.inner.client.get_opts(&path, opts).await?;
            let size = r.meta.size;
            Ok::<_, object_store::Error>((size, r.bytes().await?))
        });
        let (len, head) = match first {
            Ok((size, b)) if b.len() as u64 == size.min(HEAD_BYTES) => (size, b),
            // Empty, or an answer that is not what was asked: the size from a HEAD.
            _ => {
                let meta = self
                    .block_on(self.inner.client.head(&path))
                    .map_err(|e| map_err(key.as_str(), "head", e))?;
                (meta.size, bytes::Bytes::new())
            }
        };
        Ok(Box::new(S3Reader {
            store: self.clone(),
            key: key.clone(),
            path,
            len,
            head,
            chunks: std::sync::Mutex::default(),
        }))
    }

    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>> {
        let end = start
            .checked_add(len as u64)
            .ok_or_else(|| StorageError::past_end(key, start, len, u64::MAX))?;
        let b = self
            .block_on(self.inner.client.get_range(&self.path(key), start..end))
            .map_err(|e| map_err(key.as_str(), "get range", e))?;
        // A range past the end comes back short (or as an error): either way, refused.
        if b.len() != len {
            return Err(StorageError::past_end(key, start, len, b.len() as u64));
        }
        Ok(b.to_vec())
    }

    fn size(&self, key: &Key) -> Result<u64> {
        Ok(self.open(key)?.len())
    }

    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>> {
        use futures_util::TryStreamExt;
        let base = &self.inner.addr.prefix;
        let full = self.list_root(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .block_on(self.inner.client.list(full.as_ref()).try_collect())
            .map_err(|e| map_err(prefix.map_or("", Key::as_str), "list", e))?;
        let strip = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        let mut out: Vec<Key> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(strip.as_str())
                    .map(Key::new)
            })
            .filter_map(std::result::Result::ok)
            .collect();
        out.sort();
        Ok(out)
    }

    fn children(&self, prefix: Option<&Key>) -> Result<Vec<String>> {
        let full = self.list_root(prefix);
        let res = self
            .block_on(self.inner.client.list_with_delimiter(full.as_ref()))
            .map_err(|e| map_err(prefix.map_or("", Key::as_str), "list", e))?;
        let mut out: Vec<String> = res
            .common_prefixes
            .iter()
            .chain(res.objects.iter().map(|m| &m.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| Key::new(n).is_ok())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let body = PutPayload::from(bytes.to_vec());
        self.block_on(self.inner.client.put(&self.path(key), body))
            .map(|_| ())
            .map_err(|e| map_err(key.as_str(), "put", e))
    }

    fn put_if_absent(&self, key: &Key, _bytes: &[u8]) -> Result<bool> {
        Err(StorageError::Unsupported {
            key: key.to_string(),
            op: "put if absent (not relied on with S3: Garage ignores it)",
        })
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: key.clone(),
            path: self.path(key),
            buf: Vec::with_capacity(1 << 16),
            upload: None,
        }))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        match self.block_on(self.inner.client.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key.as_str(), "delete", e)),
        }
    }

    fn lock(&self, name: &Key, owner: &str) -> std::result::Result<Box<dyn Held>, LockError> {
        crate::lease::keep_boxed(Arc::new(self.clone()), name, owner)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_put: false,
            lease_lock: true,
        }
    }

    fn address(&self) -> String {
        self.inner.addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_named() {
        let a = S3Address::parse("s3://bkt/some/prefix/").and_then(|r| r.ok());
        assert_eq!(
            a,
            Some(S3Address {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            })
        );
        assert_eq!(
            a.map(|a| a.to_string()).as_deref(),
            Some("s3://bkt/some/prefix")
        );
        assert!(S3Address::parse("/var/repo").is_none());
        for bad in ["s3://", "s3://Upper", "s3://b/../x", "s3://b/.hidden"] {
            let e = S3Address::parse(bad).and_then(|r| r.err());
            assert!(e.is_some_and(|e| e.contains(bad)), "{bad}");
        }
    }
}
