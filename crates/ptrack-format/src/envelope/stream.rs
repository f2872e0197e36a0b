//! Documents written and read without holding their bytes (issue 11 §5: a manifest of a
//! million files is hundreds of megabytes of JSON). Writing serialises the value twice, once
//! into a counter for the header's CRC-32C and length and once into the file through
//! `ptrack_durable`'s staged file; serialisation is deterministic, and the bytes are those
//! [`super::encode`] makes. Reading hashes every byte of the file (BLAKE3, the identity the
//! catalog and the hash chain hold) while the JSON body is parsed from it, then checks the CRC;
//! the caller checks the digest before it trusts anything decoded. Same layout as
//! [`super::decode`] reads (docs/formats.md).

use std::io::{self, BufReader, BufWriter, Read, Write};

use ptrack_repo::{Key, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Header, content_error, open_object, parse_header, storage_io};
use crate::paths::Digest;
use crate::{DocError, Error, Result};

/// Counts bytes and their CRC-32C.
#[derive(Default)]
struct Counter {
    len: usize,
    crc: u32,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.len += buf.len();
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes writes on and hashes them.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `value` as a `kind` document durably (a writer of the store: invisible until
/// finished) and returns the BLAKE3 of the object.
pub fn write<T: Serialize>(
    store: &dyn Storage,
    key: &Key,
    kind: &str,
    version: u32,
    value: &T,
) -> Result<Digest> {
    let mut count = Counter::default();
    serde_json::to_writer_pretty(&mut count, value).expect("plain data serialises");
    let io_err = |e| storage_io(key, "write", e);
    let staged = store.writer(key)?;
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 16, staged),
        hasher: blake3::Hasher::new(),
    };
    writeln!(
        out,
        "PTRACK {kind} {version} {:08x} {}",
        count.crc, count.len
    )
    .map_err(io_err)?;
    let mut body = Counter::default();
    serde_json::to_writer_pretty(Tee(&mut out, &mut body), value)
        .map_err(io::Error::from)
        .map_err(io_err)?;
    if body.len != count.len || body.crc != count.crc {
        unreachable!("serialising the same value twice gave different bytes");
    }
    out.write_all(b"\n").map_err(io_err)?;
    let digest = Digest(*out.hasher.finalize().as_bytes());
    let staged = out.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    staged.finish()?;
    Ok(digest)
}

/// Writes to two writers.
struct Tee<'a, A, B>(&'a mut A, &'a mut B);

impl<A: Write, B: Write> Write for Tee<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Hashes (BLAKE3) every byte read; CRC-32C over the bytes read while `crc_on`.
struct Source<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts and checksums the bytes read through it.
struct Body<R> {
    inner: R,
    len: usize,
    crc: u32,
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.len += n;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// A document read as a stream: the BLAKE3 of the whole file, and what decoding it gave.
pub struct Streamed<T> {
    /// BLAKE3 of the file.
    pub digest: Digest,
    /// The decoded value, or why it is not one.
    pub value: Result<T>,
}

/// Reads a `kind` document of format `version` from `path` as a stream (see the module doc).
/// Only failures to open or read the file are the outer error.
pub fn read<T: DeserializeOwned>(
    store: &dyn Storage,
    key: &Key,
    kind: &str,
    version: u32,
) -> Result<Streamed<T>> {
    let f = open_object(store, key)?;
    let mut src = Source {
        inner: BufReader::with_capacity(1 << 20, f),
        hasher: blake3::Hasher::new(),
    };
    let mut head = Vec::with_capacity(200);
    (&mut src)
        .take(200)
        .read_to_end(&mut head)
        .map_err(|e| storage_io(key, "read", e))?;
    let value = decode_body(&mut src, &head, kind, version, key);
    io::copy(&mut src, &mut io::sink()).map_err(|e| storage_io(key, "read", e))?;
    Ok(Streamed {
        digest: Digest(*src.hasher.finalize().as_bytes()),
        value,
    })
}

fn decode_body<T: DeserializeOwned, R: Read>(
    src: &mut R,
    head: &[u8],
    kind: &str,
    version: u32,
    key: &Key,
) -> Result<T> {
    let bad = |why: DocError| Error::Document {
        object: format!("\"{key}\""),
        why,
    };
    let nl = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad(DocError::NotADocument("no header line")))?;
    let Header { crc, len } = parse_header(&head[..nl], kind, version).map_err(bad)?;
    let rest = head.get(nl + 1..).unwrap_or_default();
    let mut body = Body {
        inner: rest.chain(src).take(len as u64),
        len: 0,
        crc: 0,
    };
    let parsed: serde_json::Result<T> =
        serde_json::from_reader(BufReader::with_capacity(1 << 16, &mut body));
    if let Err(e) = &parsed
        && e.is_io()
    {
        return Err(storage_io(key, "read", io::Error::other(e.to_string())));
    }
    io::copy(&mut body, &mut io::sink()).map_err(|e| storage_io(key, "read", e))?;
    if body.len < len {
        return Err(bad(DocError::Truncated(len)));
    }
    if body.crc != crc {
        return Err(bad(DocError::Checksum {
            stored: crc,
            computed: body.crc,
        }));
    }
    parsed.map_err(|e| bad(content_error(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_bytes_are_the_encoded_ones_and_damage_is_caught() {
        let st = ptrack_repo::memory::MemStore::new();
        let s: &dyn Storage = &st;
        let p = Key::new("doc").unwrap();
        let v: Vec<u32> = (0..5000).collect();
        let digest = write(s, &p, "catalog", 1, &v).unwrap();
        let bytes = s.get(&p).unwrap();
        assert_eq!(bytes, super::super::encode("catalog", 1, &v));
        assert_eq!(digest, Digest::of(&bytes));
        let r: Streamed<Vec<u32>> = read(s, &p, "catalog", 1).unwrap();
        assert_eq!(r.digest, digest);
        assert_eq!(r.value.unwrap(), v);
        assert!(
            read::<Vec<u32>>(s, &p, "manifest", 1)
                .unwrap()
                .value
                .is_err()
        );
        for i in [3, 20, bytes.len() / 2, bytes.len() - 3] {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            s.put(&p, &t).unwrap();
            let r = read::<Vec<u32>>(s, &p, "catalog", 1).unwrap();
            assert_ne!(r.digest, digest, "flip at {i}");
            assert!(r.value.is_err(), "flip at {i}");
        }
        for n in [0, 10, bytes.len() / 2, bytes.len() - 2] {
            s.put(&p, &bytes[..n]).unwrap();
            assert!(
                read::<Vec<u32>>(s, &p, "catalog", 1)
                    .unwrap()
                    .value
                    .is_err(),
                "cut at {n}"
            );
        }
    }
}
