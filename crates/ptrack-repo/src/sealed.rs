//! The encrypted-object envelope (issue 12 §3): XChaCha20-Poly1305 in STREAM chunks of
//! [`CHUNK`] plaintext bytes, so an object is written and read a chunk at a time and a ranged
//! read decrypts only the chunks it covers. Pure functions on bytes (no storage); the
//! [`crate::encrypted::Encrypted`] store puts them to work.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "PTRACKE\x01" (the last byte is the envelope's format version)
//! 8       8     data-key id (DataKey::id: BLAKE3 derive_key of the repository's data key)
//! 16      16    nonce prefix, random per object
//! 32      ...   chunk 0, 1, …: ciphertext (CHUNK bytes, the last one 0..=CHUNK) ‖ 16-byte tag
//! ```
//!
//! Chunk `i`'s nonce is `prefix ‖ u64be(i | LAST)`, `LAST` (the top bit) set on the last chunk
//! only, and every chunk's associated data is `header ‖ object key`. So a flipped byte
//! anywhere, an object cut at or inside a chunk boundary, chunks swapped, an object copied under
//! another key and one sealed with another data key all fail a tag. Only the last chunk may be
//! short, and only an empty object has an empty chunk, so every ciphertext size maps to one
//! plaintext size ([`plain_size`]) and back ([`sealed_size`]).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 << 10;
/// Bytes of a chunk's authentication tag.
pub const TAG: usize = 16;
/// Bytes of the object header.
pub const HEADER: usize = 32;
/// The magic, with the envelope's format version as its last byte.
pub const MAGIC: [u8; 8] = *b"PTRACKE\x01";
/// The counter bit that marks the last chunk.
const LAST: u64 = 1 << 63;
/// Ciphertext bytes of a full chunk.
const FULL: u64 = (CHUNK + TAG) as u64;

/// What an object header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The data key the object was sealed with.
    pub key_id: [u8; 8],
    /// The random nonce prefix.
    pub prefix: [u8; 16],
}

impl Header {
    /// The header's 32 bytes.
    pub fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&self.key_id);
        b[16..].copy_from_slice(&self.prefix);
        b
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header and one tag.
    #[error("{len} bytes, too short for an encrypted object (at least {min})")]
    Short {
        /// The object's size.
        len: u64,
        /// The smallest size.
        min: u64,
    },
    /// Not our magic: not an encrypted ptrack object.
    #[error("not an encrypted ptrack object (bad magic)")]
    BadMagic,
    /// Our magic with another format version.
    #[error("envelope format version {found} (this ptrack reads version 1)")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
}

/// Parses an object's first bytes (at least [`HEADER`] of them).
pub fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let h = bytes.get(..HEADER).ok_or(HeaderError::Short {
        len: bytes.len() as u64,
        min: (HEADER + TAG) as u64,
    })?;
    let (magic, rest) = h.split_at(8);
    if magic[..7] != MAGIC[..7] {
        return Err(HeaderError::BadMagic);
    }
    if magic[7] != MAGIC[7] {
        return Err(HeaderError::UnsupportedVersion { found: magic[7] });
    }
    let (id, prefix) = rest.split_at(8);
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(id);
    let mut p = [0u8; 16];
    p.copy_from_slice(prefix);
    Ok(Header { key_id, prefix: p })
}

/// Number of chunks of an object of `plain` bytes (an empty object has one).
pub fn chunks_of(plain: u64) -> u64 {
    plain.div_ceil(CHUNK as u64).max(1)
}

/// Size of the sealed object of `plain` plaintext bytes.
pub fn sealed_size(plain: u64) -> u64 {
    HEADER as u64 + plain + TAG as u64 * chunks_of(plain)
}

/// The plaintext size of a sealed object of `sealed` bytes, or why no object we write has that
/// size (too short; a last chunk shorter than its tag; an empty chunk after full ones).
pub fn plain_size(sealed: u64) -> Result<u64, HeaderError> {
    let min = (HEADER + TAG) as u64;
    let body = sealed
        .checked_sub(HEADER as u64)
        .filter(|b| *b >= TAG as u64);
    let Some(body) = body else {
        return Err(HeaderError::Short { len: sealed, min });
    };
    let (full, rem) = (body / FULL, body % FULL);
    match rem {
        0 => Ok(full * CHUNK as u64),
        r if r == TAG as u64 && full == 0 => Ok(0),
        r if r > TAG as u64 => Ok(full * CHUNK as u64 + r - TAG as u64),
        _ => Err(HeaderError::Short { len: sealed, min }),
    }
}

/// Where chunk `i` of an object of `plain` bytes lies in the sealed object, and its plaintext
/// length.
pub fn chunk_span(plain: u64, i: u64) -> (u64, usize) {
    let start = HEADER as u64 + i * FULL;
    let len = plain.saturating_sub(i * CHUNK as u64).min(CHUNK as u64) as usize;
    (start, len)
}

/// A repository's data key: the random 32-byte key every object is sealed with (unwrapped from
/// the keyring, [`crate::keyring`]), and its id.
pub struct DataKey {
    cipher: XChaCha20Poly1305,
    id: [u8; 8],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "DataKey({})", hex(&self.id))
    }
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// BLAKE3 `derive_key(context, material)` cut to 8 bytes: the ids of keys.
pub fn key_id(context: &str, material: &[u8]) -> [u8; 8] {
    let full = Zeroizing::new(blake3::derive_key(context, material));
    let mut id = [0u8; 8];
    id.copy_from_slice(&full[..8]);
    id
}

/// The context of data-key ids.
const DATA_KEY_ID_CONTEXT: &str = "ptrack data key id v1";

impl DataKey {
    /// The data key of these bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> DataKey {
        DataKey {
            cipher: XChaCha20Poly1305::new(&(*bytes).into()),
            id: key_id(DATA_KEY_ID_CONTEXT, bytes),
        }
    }

    /// The id of the data key whose bytes are `bytes`.
    pub fn id_of(bytes: &[u8; 32]) -> [u8; 8] {
        key_id(DATA_KEY_ID_CONTEXT, bytes)
    }

    /// Its id (stored in every object's header and in the keyring).
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// A new header for an object (a fresh random nonce prefix).
    pub fn new_header(&self) -> std::io::Result<Header> {
        let mut prefix = [0u8; 16];
        getrandom::fill(&mut prefix).map_err(std::io::Error::other)?;
        Ok(Header {
            key_id: self.id,
            prefix,
        })
    }

    /// Encrypts `buf` (one chunk's plaintext) in place and appends its tag. `aad` is
    /// `header ‖ object key`.
    pub fn seal_chunk(
        &self,
        h: &Header,
        aad: &[u8],
        i: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let nonce = nonce(h, i, last)
            .ok_or_else(|| std::io::Error::other("object too large for its chunk counter"))?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into())
            .map_err(|_| std::io::Error::other("chunk too large to encrypt"))?;
        buf.extend_from_slice(tag.as_slice());
        Ok(())
    }

    /// Decrypts one sealed chunk (ciphertext ‖ tag) in place, returning its plaintext length;
    /// `None` when the tag does not match.
    pub fn open_chunk(
        &self,
        h: &Header,
        aad: &[u8],
        i: u64,
        last: bool,
        sealed: &mut [u8],
    ) -> Option<usize> {
        let n = sealed.len().checked_sub(TAG)?;
        let (ct, tag) = sealed.split_at_mut(n);
        let tag = Tag::try_from(&*tag).ok()?;
        let nonce = nonce(h, i, last)?;
        self.cipher
            .decrypt_inout_detached(&nonce, aad, ct.into(), &tag)
            .ok()?;
        Some(n)
    }

    /// Seals a whole object `plain` stored under `key`.
    pub fn seal(&self, key: &str, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let h = self.new_header()?;
        let aad = aad(&h, key);
        let mut out = Vec::with_capacity(sealed_size(plain.len() as u64) as usize);
        out.extend_from_slice(&h.bytes());
        let n = chunks_of(plain.len() as u64);
        let mut buf = Vec::with_capacity(CHUNK + TAG);
        for i in 0..n {
            let (_, len) = chunk_span(plain.len() as u64, i);
            let from = (i as usize) * CHUNK;
            buf.clear();
            buf.extend_from_slice(plain.get(from..from + len).unwrap_or_default());
            self.seal_chunk(&h, &aad, i, i + 1 == n, &mut buf)?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Opens a whole sealed object stored under `key`: its plaintext, or what is wrong.
    pub fn open(&self, key: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, String> {
        let plain = plain_size(sealed.len() as u64).map_err(|e| e.to_string())?;
        let h = self.check_header(&sealed)?;
        let aad = aad(&h, key);
        let n = chunks_of(plain);
        let mut out = Vec::with_capacity(plain as usize);
        for i in 0..n {
            let (start, len) = chunk_span(plain, i);
            let start = start as usize;
            let piece = sealed
                .get_mut(start..start + len + TAG)
                .ok_or_else(|| format!("chunk {i} lies past the end"))?;
            if self.open_chunk(&h, &aad, i, i + 1 == n, piece).is_none() {
                return Err(tag_failure(i, n));
            }
            out.extend_from_slice(piece.get(..len).unwrap_or_default());
        }
        Ok(out)
    }

    /// Parses an object's header and checks that it was sealed with this data key.
    pub fn check_header(&self, bytes: &[u8]) -> Result<Header, String> {
        let h = parse_header(bytes).map_err(|e| e.to_string())?;
        if h.key_id != self.id {
            return Err(format!(
                "sealed with data key {}, not this repository's {} (an object of another repository)",
                hex(&h.key_id),
                hex(&self.id)
            ));
        }
        Ok(h)
    }
}

/// The message of a chunk whose tag fails.
pub fn tag_failure(i: u64, n: u64) -> String {
    format!(
        "chunk {i} of {n} fails authentication (changed, truncated, reordered, or copied from another object)"
    )
}

/// The associated data of every chunk: header ‖ key.
pub fn aad(h: &Header, key: &str) -> Vec<u8> {
    let mut a = h.bytes().to_vec();
    a.extend_from_slice(key.as_bytes());
    a
}

fn nonce(h: &Header, i: u64, last: bool) -> Option<XNonce> {
    if i & LAST != 0 {
        return None;
    }
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&h.prefix);
    n[16..].copy_from_slice(&(if last { i | LAST } else { i }).to_be_bytes());
    Some(n.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_both_ways() {
        let c = CHUNK as u64;
        for p in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 5, 10 << 20] {
            let s = sealed_size(p);
            assert_eq!(plain_size(s), Ok(p), "plain {p}");
        }
        // Sizes no writer makes.
        for s in [0, 47, HEADER as u64 + FULL + 16, HEADER as u64 + FULL + 3] {
            assert!(plain_size(s).is_err(), "sealed {s}");
        }
    }

    #[test]
    fn headers_are_checked() {
        let h = Header {
            key_id: [1; 8],
            prefix: [2; 16],
        };
        assert_eq!(parse_header(&h.bytes()), Ok(h));
        let mut b = h.bytes();
        b[0] ^= 1;
        assert_eq!(parse_header(&b), Err(HeaderError::BadMagic));
        let mut b = h.bytes();
        b[7] = 2;
        assert_eq!(
            parse_header(&b),
            Err(HeaderError::UnsupportedVersion { found: 2 })
        );
        assert!(parse_header(&b[..31]).is_err());
    }
}
