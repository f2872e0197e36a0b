//! Versioned, checksummed JSON documents: the repository marker, an instance's catalog and each
//! backup's manifest. Layout (docs/formats.md): one ASCII header line
//! `PTRACK <kind> <version> <crc32c as 8 hex digits> <body length>\n`, then the JSON body. The
//! CRC-32C covers the body (against damage; identity is the manifests' BLAKE3 hash chain). Written
//! and read only through the repository's [`Storage`] (a put is atomic and durable). Large
//! documents (manifests) are written and read as streams ([`stream`]).

pub mod stream;

use ptrack_repo::{Key, SeqReader, Storage, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{DocError, Error, Result};

/// Encodes `value` as a `kind` document of format `version`.
pub fn encode<T: Serialize>(kind: &str, version: u32, value: &T) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(value).expect("plain data serialises");
    frame(kind, version, &body)
}

/// `body` behind a valid `kind` header of format `version` (what [`encode`] writes around its
/// JSON; tests and fuzz targets frame arbitrary bodies with it).
pub fn frame(kind: &str, version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "PTRACK {kind} {version} {:08x} {}\n",
        crc32c::crc32c(body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

/// Decodes a `kind` document of format `version` exactly; `what` names it in errors. Older
/// versions are refused with the reason (see [`OLD_FORMAT`]), newer ones as written by a newer
/// ptrack. Errors never quote the file's bytes (a repository file may be a link to a secret).
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    kind: &str,
    version: u32,
    what: &str,
) -> Result<T> {
    let bad = |why: DocError| Error::Document {
        object: what.to_string(),
        why,
    };
    let nl = bytes
        .iter()
        .take(200)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad(DocError::NotADocument("no header line")))?;
    let Header { crc, len } = parse_header(&bytes[..nl], kind, version).map_err(bad)?;
    let body = bytes
        .get(nl + 1..)
        .and_then(|b| b.get(..len))
        .ok_or_else(|| bad(DocError::Truncated(len)))?;
    let computed = crc32c::crc32c(body);
    if computed != crc {
        return Err(bad(DocError::Checksum {
            stored: crc,
            computed,
        }));
    }
    serde_json::from_slice(body).map_err(|e| bad(content_error(&e)))
}

/// What serde_json found wrong with a body, without quoting it.
pub(crate) fn content_error(e: &serde_json::Error) -> DocError {
    DocError::Content {
        line: e.line(),
        column: e.column(),
        class: format!("{:?}", e.classify()),
    }
}

/// What a document's header line says about its body.
struct Header {
    crc: u32,
    len: usize,
}

/// Checks a header line (without its newline): magic, kind, version, checksum and length.
fn parse_header(line: &[u8], kind: &str, version: u32) -> std::result::Result<Header, DocError> {
    let header =
        std::str::from_utf8(line).map_err(|_| DocError::NotADocument("header is not text"))?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, k, found, crc, len] = parts.as_slice() else {
        return Err(DocError::NotADocument("malformed header"));
    };
    if *magic != "PTRACK" {
        return Err(DocError::NotADocument("bad magic"));
    }
    if !KINDS.contains(k) {
        return Err(DocError::NotADocument("unknown kind"));
    }
    if *k != kind {
        return Err(DocError::WrongKind {
            found: k.to_string(),
            expected: kind.to_string(),
        });
    }
    let found: u32 = found
        .parse()
        .map_err(|_| DocError::MalformedHeader("version"))?;
    let oldest = oldest_readable(kind, version);
    if found < oldest {
        return Err(DocError::OlderFormat {
            found,
            oldest,
            newest: version,
        });
    }
    if found > version {
        return Err(DocError::NewerFormat {
            found,
            newest: version,
        });
    }
    let crc = u32::from_str_radix(crc, 16)
        .ok()
        .filter(|c| format!("{c:08x}") == *crc)
        .ok_or(DocError::MalformedHeader("checksum field"))?;
    let len: usize = len
        .parse()
        .map_err(|_| DocError::MalformedHeader("length"))?;
    Ok(Header { crc, len })
}

/// The oldest format version of `kind` this ptrack still reads, when it writes `version`: a
/// newer format that only adds to an older one (a field with a default) keeps the older one
/// readable. Manifest version 3 added `zero_tail` to WAL entries.
fn oldest_readable(kind: &str, version: u32) -> u32 {
    match kind {
        "manifest" => version.min(2),
        // Version 3 only marks the repository encrypted.
        "repository" => version.min(2),
        _ => version,
    }
}

/// Every document kind.
const KINDS: &[&str] = &[
    "repository",
    "instance",
    "catalog",
    "manifest",
    "backup-record",
    "catalog-index",
    "retention-policy",
];

/// What to do with a repository of an older format.
pub const OLD_FORMAT: &str = "Repositories written by ptrack 0.1 (format 1) identified unchanged files by CRC-32C and \
     could restore stale pg_control, pg_filenode.map and prepared-transaction files from incremental \
     backups; they are not read. Keep that repository for its full backups only (restore them with \
     the ptrack that wrote them) and start a new repository with `ptrack init`.";

/// Writes a document durably (one atomic put).
pub fn write<T: Serialize>(
    store: &dyn Storage,
    key: &Key,
    kind: &str,
    version: u32,
    value: &T,
) -> Result<()> {
    Ok(store.put(key, &encode(kind, version, value))?)
}

/// Reads and checks a document.
pub fn read<T: DeserializeOwned>(
    store: &dyn Storage,
    key: &Key,
    kind: &str,
    version: u32,
) -> Result<T> {
    let bytes = read_object(store, key)?;
    decode(&bytes, kind, version, &format!("\"{key}\""))
}

/// Largest document read (a manifest of a cluster with millions of files stays far below).
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 30;

/// Opens a document object, refusing one larger than any document.
pub fn open_object(store: &dyn Storage, key: &Key) -> Result<SeqReader> {
    let r = SeqReader::new(store.open(key)?);
    if r.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::Document {
            object: format!("\"{key}\""),
            why: DocError::TooLarge(r.len()),
        });
    }
    Ok(r)
}

/// Reads a whole document object.
pub fn read_object(store: &dyn Storage, key: &Key) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut r = open_object(store, key)?;
    let mut out = Vec::with_capacity(r.len() as usize);
    r.read_to_end(&mut out)
        .map_err(|e| storage_io(key, "read", e))?;
    Ok(out)
}

/// An I/O error of a reader or writer of object `key`, as a storage error (the backend's own
/// error is passed through when it is one).
pub fn storage_io(key: &Key, op: &'static str, e: std::io::Error) -> Error {
    match e.downcast::<StorageError>() {
        Ok(se) => Error::Storage(se),
        Err(e) => Error::Storage(StorageError::io(key, op, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let v = vec![1u32, 2, 3];
        let b = encode("catalog", 1, &v);
        let back: Vec<u32> = decode(&b, "catalog", 1, "x").unwrap();
        assert_eq!(back, v);
        assert!(decode::<Vec<u32>>(&b, "manifest", 1, "x").is_err());
        let newer = encode("catalog", 2, &v);
        let e = decode::<Vec<u32>>(&newer, "catalog", 1, "x").unwrap_err();
        assert!(e.to_string().contains("newer ptrack"), "{e}");
        let e = decode::<Vec<u32>>(&b, "catalog", 2, "x").unwrap_err();
        assert!(e.to_string().contains("older ptrack"), "{e}");
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x20;
            if t[i] == b'\n' || b[i] == b'\n' || i == b.len() - 1 {
                continue;
            }
            assert!(
                decode::<Vec<u32>>(&t, "catalog", 1, "x").is_err(),
                "flip at {i}"
            );
        }
        for n in 0..b.len() - 1 {
            assert!(decode::<Vec<u32>>(&b[..n], "catalog", 1, "x").is_err());
        }
    }
}
