//! Versioned, checksummed JSON documents: the repository marker, an instance's catalog and each
//! backup's manifest. Layout (docs/formats.md): one ASCII header line
//! `PTRACK <kind> <version> <crc32c as 8 hex digits> <body length>\n`, then the JSON body. The
//! CRC-32C covers the body. Written only through `ptrack_durable`.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Encodes `value` as a `kind` document of format `version`.
pub fn encode<T: Serialize>(kind: &str, version: u32, value: &T) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(value).expect("plain data serialises");
    let mut out = format!(
        "PTRACK {kind} {version} {:08x} {}\n",
        crc32c::crc32c(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Decodes a `kind` document; `what` names it in errors. Versions above `max_version` are refused
/// (written by a newer ptrack).
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    kind: &str,
    max_version: u32,
    what: &str,
) -> Result<T> {
    let bad = |why: String| Error::Corrupt(format!("{what}: {why}"));
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| bad("header is not text".into()))?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, k, version, crc, len] = parts.as_slice() else {
        return Err(bad(format!("malformed header {header:?}")));
    };
    if *magic != "PTRACK" {
        return Err(bad("not a ptrack document (bad magic)".into()));
    }
    if *k != kind {
        return Err(bad(format!("is a {k} document, expected {kind}")));
    }
    let version: u32 = version
        .parse()
        .map_err(|_| bad(format!("bad version {version:?}")))?;
    if version == 0 || version > max_version {
        return Err(bad(format!(
            "format version {version} is not supported (this ptrack reads up to {max_version})"
        )));
    }
    let crc_text = *crc;
    let crc = u32::from_str_radix(crc_text, 16)
        .ok()
        .filter(|c| format!("{c:08x}") == crc_text)
        .ok_or_else(|| bad(format!("bad checksum field {crc_text:?}")))?;
    let len: usize = len
        .parse()
        .map_err(|_| bad(format!("bad length {len:?}")))?;
    let body = bytes
        .get(nl + 1..)
        .and_then(|b| b.get(..len))
        .ok_or_else(|| bad(format!("truncated: body shorter than {len} bytes")))?;
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(bad(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        )));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid content: {e}")))
}

/// Writes a document durably.
pub fn write<T: Serialize>(path: &Path, kind: &str, version: u32, value: &T) -> Result<()> {
    ptrack_durable::write_file(path, &encode(kind, version, value))
        .map_err(|e| Error::io(path, "write", e))
}

/// Reads and checks a document.
pub fn read<T: DeserializeOwned>(path: &Path, kind: &str, max_version: u32) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    decode(&bytes, kind, max_version, &path.display().to_string())
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
        assert!(e.to_string().contains("version 2"), "{e}");
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
