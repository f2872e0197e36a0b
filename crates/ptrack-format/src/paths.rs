//! Names read from or written to a repository: [`RelPath`], a data-directory-relative path kept as
//! bytes (PostgreSQL data directories may hold names that are not UTF-8), and [`Digest`], the
//! BLAKE3 digest that identifies file contents and manifests, and [`FileId`], which file of a data
//! directory a path named when it was backed up.
//!
//! Every `RelPath` is checked when it is made or read back: not empty, not absolute, no empty,
//! `.` or `..` component, no NUL byte. A manifest entry therefore cannot name anything outside
//! the directory it is restored into (the restore side also opens every component without
//! following links, see `ptrack_durable::at`). In JSON a path is a string when it is UTF-8 and
//! `{"hex": "…"}` otherwise.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest path accepted (PostgreSQL's `MAXPGPATH` is 1024; leave room for tablespaces).
pub const MAX_PATH_BYTES: usize = 4096;

/// A normalized relative path with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

/// Why bytes are not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPath(String);

impl RelPath {
    /// Checks and wraps `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<RelPath, BadPath> {
        let shown = || String::from_utf8_lossy(bytes).escape_debug().to_string();
        if bytes.is_empty() {
            return Err(BadPath("empty path".into()));
        }
        if bytes.len() > MAX_PATH_BYTES {
            return Err(BadPath(format!(
                "path of {} bytes is too long",
                bytes.len()
            )));
        }
        if bytes.contains(&0) {
            return Err(BadPath(format!("path \"{}\" contains a NUL byte", shown())));
        }
        if bytes[0] == b'/' {
            return Err(BadPath(format!("path \"{}\" is absolute", shown())));
        }
        for c in bytes.split(|&b| b == b'/') {
            if c.is_empty() || c == b"." || c == b".." {
                return Err(BadPath(format!(
                    "path \"{}\" is not a normalized relative path (component \"{}\")",
                    shown(),
                    String::from_utf8_lossy(c)
                )));
            }
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// Checks and wraps a text path.
    pub fn new(s: &str) -> Result<RelPath, BadPath> {
        RelPath::from_bytes(s.as_bytes())
    }

    /// `self/name` (`name` one component).
    pub fn join(&self, name: &[u8]) -> Result<RelPath, BadPath> {
        let mut b = self.0.clone();
        b.push(b'/');
        b.extend_from_slice(name);
        RelPath::from_bytes(&b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as text, when it is UTF-8 (every name PostgreSQL itself creates is).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// As a relative filesystem path.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// Components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }

    /// Whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0 == prefix.as_bytes()
            || (self.0.starts_with(prefix.as_bytes()) && self.0.get(prefix.len()) == Some(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => {
                for chunk in self.0.utf8_chunks() {
                    f.write_str(chunk.valid())?;
                    for b in chunk.invalid() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PathRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(t) => PathRepr::Text(t.to_string()),
            None => PathRepr::Bytes {
                hex: to_hex(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RelPath, D::Error> {
        let bytes = match PathRepr::deserialize(d)? {
            PathRepr::Text(t) => t.into_bytes(),
            PathRepr::Bytes { hex } => {
                from_hex(&hex).ok_or_else(|| D::Error::custom("bad hex path"))?
            }
        };
        RelPath::from_bytes(&bytes).map_err(D::Error::custom)
    }
}

/// Lower-case hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of lower-case or upper-case hex text.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A BLAKE3 digest (32 bytes), written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        let b = from_hex(&s)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| D::Error::custom("a digest is 64 hex digits"))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&b);
        Ok(Digest(out))
    }
}

/// Which file a path names: its inode number and, where the filesystem records it, its birth
/// time. A relation file that was removed and created again under the same name (a database
/// dropped and re-created with the same OID, moved to another tablespace and back) has another
/// identity, and its pages, copied with their old LSNs, cannot be picked by LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    /// `st_ino`.
    pub ino: u64,
    /// Birth time in nanoseconds since the epoch (`statx` `stx_btime`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_ns: Option<i64>,
}

impl FileId {
    /// The identity of the file `m` describes.
    pub fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let born_ns = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok());
        FileId {
            ino: m.ino(),
            born_ns,
        }
    }

    /// Whether `self` and `other` may be the same file (birth times compared only when both
    /// are known).
    pub fn same_file(&self, other: &FileId) -> bool {
        self.ino == other.ino
            && match (self.born_ns, other.born_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normalized_relative_paths() {
        for ok in [
            "PG_VERSION",
            "base/5/1259",
            "pg_tblspc/16384/PG_18_1/5/1",
            "a b/ c",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "base/../../x",
            "base//5",
            "base/./5",
            "x/",
            "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::from_bytes(&[b'a'; 5000]).is_err());
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let p = RelPath::from_bytes(b"base/5/caf\xe9").unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(j, r#"{"hex":"626173652f352f636166e9"}"#);
        let back: RelPath = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.to_string(), "base/5/caf\\xe9");
        let t: RelPath = serde_json::from_str(r#""base/1""#).unwrap();
        assert_eq!(t.as_str(), Some("base/1"));
        assert!(serde_json::from_str::<RelPath>(r#""../../etc/shadow""#).is_err());
        assert!(serde_json::from_str::<RelPath>(r#"{"hex":"2f6574632f706173737764"}"#).is_err());
        assert!(p.starts_with("base/5") && !p.starts_with("base/50") && p.starts_with("base"));
    }

    #[test]
    fn digests() {
        let d = Digest::of(b"abc");
        let j = serde_json::to_string(&d).unwrap();
        let back: Digest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert_ne!(Digest::of(b"abd"), d);
        assert!(serde_json::from_str::<Digest>(r#""abcd""#).is_err());
    }
}
