//! The keyring of an encrypted repository: the object [`KEYRING`] at the repository's root,
//! plain JSON (it must be read before any key is known), holding the repository's random 32-byte
//! data key wrapped once per key slot. A slot's key-encryption key (KEK) is Argon2id of the
//! passphrase or key-file bytes with the slot's own salt and parameters; its id is BLAKE3
//! `derive_key("ptrack key id v1", KEK)` cut to 8 bytes (shown as hex), so a wrong key is told
//! apart from a damaged keyring and named. The data key is wrapped with XChaCha20-Poly1305 under
//! the KEK (associated data: a context string, the slot's id and the data key's id), and its id
//! must be the one the keyring (and every object header) records.
//!
//! Rotation adds a slot wrapping the same data key under a new KEK and removes the old one: the
//! data are not re-encrypted, so a data key that leaked needs a new repository. Everything read
//! from the keyring is bounded ([`KdfParams::check`], [`MAX_SLOTS`], [`MAX_KEYRING_BYTES`]) so a
//! hostile keyring cannot make a reader allocate gigabytes or spin for hours.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::key::Key;
use crate::sealed::{DataKey, hex, key_id};
use crate::storage::{Storage, StorageError};

/// The keyring's object key.
pub const KEYRING: &str = "ptrack-keys";
/// The keyring's format version.
pub const KEYRING_FORMAT: u32 = 1;
/// The object envelope the keyring's data key is for ([`crate::sealed`]).
pub const CIPHER: &str = "xchacha20poly1305-stream-64k";
/// The environment variable holding a passphrase.
pub const PASSPHRASE_ENV: &str = "PTRACK_ENCRYPTION_PASSPHRASE";
/// Key slots a keyring may hold.
pub const MAX_SLOTS: usize = 8;
/// Largest keyring read.
pub const MAX_KEYRING_BYTES: usize = 64 << 10;
/// Largest key file read.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// The context of key ids.
const KEY_ID_CONTEXT: &str = "ptrack key id v1";
/// The context of the data key's wrapping.
const WRAP_CONTEXT: &[u8] = b"ptrack keyring v1";

/// Why a key could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file that cannot be read.
    #[error("key file \"{path}\": {cause}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A key file others may read or write.
    #[error(
        "key file \"{path}\" has mode {mode:04o}: others may read or change it; make it 0600 (chmod 600 \"{path}\")"
    )]
    KeyFileMode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// An empty passphrase or key file.
    #[error("{what} is empty")]
    Empty {
        /// Which key source.
        what: String,
    },
    /// The key opens no slot.
    #[error(
        "the key given ({given}) is not one of this repository's keys: with the slots' salts it has ids {}; the keyring holds {}",
        .tried.join(", "), .held.join(", ")
    )]
    WrongKey {
        /// Where the key came from.
        given: String,
        /// Its ids with each slot's salt and parameters.
        tried: Vec<String>,
        /// The slots' ids.
        held: Vec<String>,
    },
    /// A keyring that fails its checks.
    #[error("keyring \"{KEYRING}\": {why}")]
    BadKeyring {
        /// What is wrong.
        why: String,
    },
    /// A key operation that is not allowed (removing the last slot or the one in use).
    #[error("{why}")]
    Refused {
        /// Why.
        why: String,
    },
    /// Key derivation failed (parameters Argon2 refuses).
    #[error("key derivation: {why}")]
    Kdf {
        /// Why.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn bad(why: impl Into<String>) -> KeyError {
    KeyError::BadKeyring { why: why.into() }
}

/// Argon2id cost parameters of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The default for new slots: 64 MiB, 3 passes, 1 lane (a few hundred ms).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 64 << 10,
        t_cost: 3,
        p_cost: 1,
    };
    /// Largest memory accepted (256 MiB: four times the default; a keyring anyone can edit
    /// must not make every command allocate a gigabyte per slot).
    pub const MAX_M_COST: u32 = 1 << 18;
    /// Most passes accepted.
    pub const MAX_T_COST: u32 = 8;
    /// Most lanes accepted.
    pub const MAX_P_COST: u32 = 8;

    /// Refuses parameters outside the bounds (checked on every slot read and written).
    pub fn check(&self) -> Result<(), String> {
        let min_m = 8 * self.p_cost.max(1);
        if !(min_m..=Self::MAX_M_COST).contains(&self.m_cost) {
            return Err(format!(
                "Argon2 memory {} KiB outside {min_m} .. {} KiB",
                self.m_cost,
                Self::MAX_M_COST
            ));
        }
        if !(1..=Self::MAX_T_COST).contains(&self.t_cost) {
            return Err(format!(
                "Argon2 passes {} outside 1 .. {}",
                self.t_cost,
                Self::MAX_T_COST
            ));
        }
        if !(1..=Self::MAX_P_COST).contains(&self.p_cost) {
            return Err(format!(
                "Argon2 lanes {} outside 1 .. {}",
                self.p_cost,
                Self::MAX_P_COST
            ));
        }
        Ok(())
    }
}

/// A data key's bytes, wiped when dropped.
type DekBytes = Zeroizing<[u8; 32]>;

/// Key bytes, wiped when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

/// Where a key comes from.
pub enum KeySource {
    /// A key file (mode 0600 or stricter); its bytes less one trailing newline.
    File(PathBuf),
    /// A passphrase (from [`PASSPHRASE_ENV`], or another variable for a new key).
    Passphrase {
        /// The variable it came from (for messages; never the value).
        var: String,
        /// The passphrase.
        secret: Zeroizing<Vec<u8>>,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl KeySource {
    /// The key file when one is given, else the passphrase in the environment variable `var`
    /// when it is set; `None` when neither is.
    pub fn resolve(file: Option<&Path>, var: &str) -> Option<KeySource> {
        if let Some(f) = file {
            return Some(KeySource::File(f.to_path_buf()));
        }
        std::env::var_os(var).map(|v| KeySource::Passphrase {
            var: var.to_string(),
            secret: Zeroizing::new(v.into_encoded_bytes()),
        })
    }

    /// What the key is, for messages (never its bytes).
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("key file \"{}\"", p.display()),
            KeySource::Passphrase { var, .. } => format!("the passphrase in {var}"),
        }
    }

    /// The key's bytes. A key file must be a regular file that neither group nor others may
    /// read or write.
    pub fn secret(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut s = match self {
            KeySource::Passphrase { secret, .. } => Zeroizing::new(secret.to_vec()),
            KeySource::File(p) => read_key_file(p)?,
        };
        if s.ends_with(b"\n") {
            s.pop();
            if s.ends_with(b"\r") {
                s.pop();
            }
        }
        if s.is_empty() {
            return Err(KeyError::Empty {
                what: self.describe(),
            });
        }
        Ok(s)
    }
}

fn read_key_file(p: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let path = p.display().to_string();
    let err = |cause| KeyError::KeyFile {
        path: path.clone(),
        cause,
    };
    // Not blocking on a FIFO put where the key file should be (refused below).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::KeyFileMode {
            path: path.clone(),
            mode,
        });
    }
    let mut out = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(err(std::io::Error::other(format!(
            "larger than {MAX_KEY_FILE_BYTES} bytes"
        ))));
    }
    Ok(out)
}

/// The keyring as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringDoc {
    format: u32,
    cipher: String,
    data_key_id: String,
    slots: Vec<SlotDoc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotDoc {
    key_id: String,
    kdf: String,
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    nonce: String,
    wrapped_key: String,
    created: i64,
}

/// One key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The id of its KEK.
    pub key_id: [u8; 8],
    salt: Vec<u8>,
    /// Its Argon2id parameters.
    pub params: KdfParams,
    nonce: [u8; 24],
    wrapped: [u8; 48],
    /// When it was added (Unix seconds).
    pub created: i64,
}

/// A keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    data_key_id: [u8; 8],
    slots: Vec<Slot>,
}

/// The data key, unwrapped, and the slot that opened it.
pub struct Unlocked {
    dek: Zeroizing<[u8; 32]>,
    /// The slot the key given opened.
    pub slot: [u8; 8],
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unlocked(slot {})", hex(&self.slot))
    }
}

impl Unlocked {
    /// The data key for [`crate::encrypted::Encrypted`].
    pub fn data_key(&self) -> DataKey {
        DataKey::from_bytes(&self.dek)
    }
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], KeyError> {
    let v = unhex_vec(s, what, N, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&v);
    Ok(out)
}

fn unhex_vec(s: &str, what: &str, min: usize, max: usize) -> Result<Vec<u8>, KeyError> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || b.len() < 2 * min || b.len() > 2 * max {
        return Err(bad(format!("{what}: not {min} to {max} bytes of hex")));
    }
    b.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad(format!("{what}: not hex")))
        })
        .collect()
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Kdf {
        why: format!("no random numbers: {e}"),
    })?;
    Ok(b)
}

/// Argon2id of `secret` with `salt`: a KEK.
fn derive(secret: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    p.check().map_err(|why| KeyError::Kdf { why })?;
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| KeyError::Kdf { why: e.to_string() })?;
    let mut kek = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(secret, salt, &mut *kek)
        .map_err(|e| KeyError::Kdf { why: e.to_string() })?;
    Ok(kek)
}

fn kek_cipher(kek: &[u8; 32]) -> Result<XChaCha20Poly1305, KeyError> {
    XChaCha20Poly1305::new_from_slice(kek).map_err(|_| KeyError::Kdf {
        why: "key length".into(),
    })
}

fn wrap_aad(key_id: &[u8; 8], data_key_id: &[u8; 8]) -> Vec<u8> {
    [WRAP_CONTEXT, key_id, data_key_id].concat()
}

impl Slot {
    /// A slot for `secret` wrapping `dek`.
    fn new(
        secret: &[u8],
        dek: &[u8; 32],
        data_key_id: &[u8; 8],
        params: KdfParams,
        now: i64,
    ) -> Result<Slot, KeyError> {
        let salt = random::<16>()?.to_vec();
        let kek = derive(secret, &salt, params)?;
        let key_id = key_id(KEY_ID_CONTEXT, &*kek);
        let nonce = random::<24>()?;
        let mut wrapped = [0u8; 48];
        wrapped[..32].copy_from_slice(dek);
        let cipher = kek_cipher(&kek)?;
        let tag = cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &wrap_aad(&key_id, data_key_id),
                (&mut wrapped[..32]).into(),
            )
            .map_err(|_| KeyError::Kdf {
                why: "wrapping the data key failed".into(),
            })?;
        wrapped[32..].copy_from_slice(tag.as_slice());
        Ok(Slot {
            key_id,
            salt,
            params,
            nonce,
            wrapped,
            created: now,
        })
    }

    /// The KEK's id for `secret` with this slot's salt, and the data key when it is this
    /// slot's key.
    fn try_open(
        &self,
        secret: &[u8],
        data_key_id: &[u8; 8],
    ) -> Result<([u8; 8], Option<DekBytes>), KeyError> {
        let kek = derive(secret, &self.salt, self.params)?;
        let id = key_id(KEY_ID_CONTEXT, &*kek);
        if id != self.key_id {
            return Ok((id, None));
        }
        let mut dek = Zeroizing::new([0u8; 32]);
        dek.copy_from_slice(&self.wrapped[..32]);
        let tag = Tag::try_from(&self.wrapped[32..]).map_err(|_| bad("tag length"))?;
        kek_cipher(&kek)?
            .decrypt_inout_detached(
                &XNonce::from(self.nonce),
                &wrap_aad(&self.key_id, data_key_id),
                (&mut dek[..]).into(),
                &tag,
            )
            .map_err(|_| {
                bad(format!(
                    "slot {}: the wrapped data key fails authentication",
                    hex(&self.key_id)
                ))
            })?;
        if DataKey::id_of(&dek) != *data_key_id {
            return Err(bad(format!(
                "slot {} holds data key {}, not the keyring's {}",
                hex(&self.key_id),
                hex(&DataKey::id_of(&dek)),
                hex(data_key_id)
            )));
        }
        Ok((id, Some(dek)))
    }
}

impl Keyring {
    /// A new keyring: a random data key, wrapped for `src`.
    pub fn create(
        src: &KeySource,
        params: KdfParams,
        now: i64,
    ) -> Result<(Keyring, Unlocked), KeyError> {
        let secret = src.secret()?;
        let dek = Zeroizing::new(random::<32>()?);
        let data_key_id = DataKey::id_of(&dek);
        let slot = Slot::new(&secret, &dek, &data_key_id, params, now)?;
        let unlocked = Unlocked {
            dek,
            slot: slot.key_id,
        };
        Ok((
            Keyring {
                data_key_id,
                slots: vec![slot],
            },
            unlocked,
        ))
    }

    /// The data key's id.
    pub fn data_key_id(&self) -> [u8; 8] {
        self.data_key_id
    }

    /// The slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Unwraps the data key with the key from `src` (one Argon2 derivation per slot at most).
    pub fn unlock(&self, src: &KeySource) -> Result<Unlocked, KeyError> {
        let secret = src.secret()?;
        let mut tried = Vec::new();
        for slot in &self.slots {
            let (id, dek) = slot.try_open(&secret, &self.data_key_id)?;
            if let Some(dek) = dek {
                return Ok(Unlocked {
                    dek,
                    slot: slot.key_id,
                });
            }
            tried.push(hex(&id));
        }
        Err(KeyError::WrongKey {
            given: src.describe(),
            tried,
            held: self.slots.iter().map(|s| hex(&s.key_id)).collect(),
        })
    }

    /// Adds a slot for `new`, wrapping the data key `unlocked` holds; returns its id.
    pub fn add(
        &mut self,
        unlocked: &Unlocked,
        new: &KeySource,
        params: KdfParams,
        now: i64,
    ) -> Result<[u8; 8], KeyError> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(KeyError::Refused {
                why: format!("the keyring holds {MAX_SLOTS} keys already; remove one first"),
            });
        }
        let secret = new.secret()?;
        // The same key twice would be two slots, and removing one would leave it working.
        for s in &self.slots {
            if s.try_open(&secret, &self.data_key_id)?.1.is_some() {
                return Err(KeyError::Refused {
                    why: format!(
                        "{} is already key {} of this repository",
                        new.describe(),
                        hex(&s.key_id)
                    ),
                });
            }
        }
        let slot = Slot::new(&secret, &unlocked.dek, &self.data_key_id, params, now)?;
        let id = slot.key_id;
        self.slots.push(slot);
        Ok(id)
    }

    /// Removes slot `id` (hex); never the last one nor `in_use` (the slot of the key given).
    pub fn remove(&mut self, id: &str, in_use: [u8; 8]) -> Result<(), KeyError> {
        let Some(pos) = self.slots.iter().position(|s| hex(&s.key_id) == id) else {
            return Err(KeyError::Refused {
                why: format!(
                    "no key {id} in the keyring (it holds {})",
                    self.slots
                        .iter()
                        .map(|s| hex(&s.key_id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        if self.slots.len() == 1 {
            return Err(KeyError::Refused {
                why: format!(
                    "key {id} is the repository's only key; add another (ptrack key add) before removing it"
                ),
            });
        }
        if self.slots.get(pos).map(|s| s.key_id) == Some(in_use) {
            return Err(KeyError::Refused {
                why: format!(
                    "key {id} is the key given to this command; give another of the repository's keys to remove it"
                ),
            });
        }
        self.slots.remove(pos);
        Ok(())
    }

    /// The keyring's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let doc = KeyringDoc {
            format: KEYRING_FORMAT,
            cipher: CIPHER.into(),
            data_key_id: hex(&self.data_key_id),
            slots: self
                .slots
                .iter()
                .map(|s| SlotDoc {
                    key_id: hex(&s.key_id),
                    kdf: "argon2id".into(),
                    salt: hex(&s.salt),
                    m_cost: s.params.m_cost,
                    t_cost: s.params.t_cost,
                    p_cost: s.params.p_cost,
                    nonce: hex(&s.nonce),
                    wrapped_key: hex(&s.wrapped),
                    created: s.created,
                })
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a keyring; any bytes give a keyring or an error, never a panic.
    pub fn parse(bytes: &[u8]) -> Result<Keyring, KeyError> {
        if bytes.len() > MAX_KEYRING_BYTES {
            return Err(bad(format!("larger than {MAX_KEYRING_BYTES} bytes")));
        }
        let doc: KeyringDoc = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "invalid JSON at line {} column {} ({:?} error)",
                e.line(),
                e.column(),
                e.classify()
            ))
        })?;
        if doc.format != KEYRING_FORMAT {
            return Err(bad(format!(
                "format version {} (this ptrack reads version {KEYRING_FORMAT})",
                doc.format
            )));
        }
        if doc.cipher != CIPHER {
            return Err(bad(format!("unknown cipher (this ptrack knows {CIPHER})")));
        }
        if doc.slots.is_empty() || doc.slots.len() > MAX_SLOTS {
            return Err(bad(format!(
                "{} key slots (1 to {MAX_SLOTS} expected)",
                doc.slots.len()
            )));
        }
        let data_key_id = unhex::<8>(&doc.data_key_id, "data_key_id")?;
        let mut slots: Vec<Slot> = Vec::with_capacity(doc.slots.len());
        for (i, s) in doc.slots.iter().enumerate() {
            let what = |f: &str| format!("slot {i} {f}");
            if s.kdf != "argon2id" {
                return Err(bad(format!("slot {i}: unknown key derivation")));
            }
            let params = KdfParams {
                m_cost: s.m_cost,
                t_cost: s.t_cost,
                p_cost: s.p_cost,
            };
            params
                .check()
                .map_err(|why| bad(format!("slot {i}: {why}")))?;
            let slot = Slot {
                key_id: unhex::<8>(&s.key_id, &what("key_id"))?,
                salt: unhex_vec(&s.salt, &what("salt"), 16, 64)?,
                params,
                nonce: unhex::<24>(&s.nonce, &what("nonce"))?,
                wrapped: unhex::<48>(&s.wrapped_key, &what("wrapped_key"))?,
                created: s.created,
            };
            if slots.iter().any(|o| o.key_id == slot.key_id) {
                return Err(bad(format!(
                    "slot {i}: key {} listed twice",
                    hex(&slot.key_id)
                )));
            }
            slots.push(slot);
        }
        Ok(Keyring { data_key_id, slots })
    }

    /// Reads the keyring of the repository on `store` (the store below any encryption).
    pub fn load(store: &dyn Storage) -> Result<Keyring, KeyError> {
        let k = Key::new(KEYRING)?;
        if store.size(&k)? > MAX_KEYRING_BYTES as u64 {
            return Err(bad(format!("larger than {MAX_KEYRING_BYTES} bytes")));
        }
        Keyring::parse(&store.get(&k)?)
    }

    /// Writes the keyring (one atomic, durable put).
    pub fn save(&self, store: &dyn Storage) -> Result<(), KeyError> {
        Ok(store.put(&Key::new(KEYRING)?, &self.to_bytes())?)
    }
}
