//! The repository: `ptrack init -B DIR|s3://bucket/prefix`, instances keyed by the cluster's
//! system identifier, their catalogs and the lock that keeps two writers of one instance apart.
//! Every access goes through [`ptrack_repo::Storage`] (a directory, an S3 bucket, or memory in
//! tests); the object keys below are the same on every backend.
//!
//! ```text
//! ptrack-repo                 repository marker document (plaintext; says whether encrypted)
//! ptrack-keys                 an encrypted repository's keyring (plaintext; ptrack_repo::keyring)
//! <sysid>/instance            instance document (cluster facts)
//! <sysid>/records/<ID>.<gen>  one write-once record per backup state (crate::records)
//! <sysid>/index               the records' index, a cache (crate::records)
//! <sysid>/lock                the instance lock (flock(2) on a directory, a lease elsewhere)
//! <sysid>/<ID>/manifest       manifest document (crate::manifest), written last
//! <sysid>/<ID>/bundle.<n>     stored pages and files (crate::bundle)
//! ```
//!
//! In an encrypted repository every object but the marker and the keyring is sealed with the
//! keyring's data key: the store is `Encrypted(Retrying(backend))`, so a failed tag is damage
//! naming the object, never retried, and the marker and keyring are read through `Retrying`
//! alone.
use std::sync::Arc;

use ptrack_repo::encrypted::Encrypted;
use ptrack_repo::keyring::{CIPHER, KEYRING, KdfParams, KeySource, Keyring, Unlocked};
use ptrack_repo::location::Location;
use ptrack_repo::retry::FailureLog;
use ptrack_repo::sealed::hex;
use ptrack_repo::{Held, Key, LockError, Storage, StorageError};
use ptrack_types::{PgMajorVersion, WalSegSize};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupInfo, Catalog, Status};
use crate::records::{Records, Snapshot};
use crate::{Error, Refusal, RepoDamage, Result, envelope};

const REPO_FILE: &str = "ptrack-repo";
/// The marker's format: 3 when the repository is encrypted (so a ptrack that knows nothing of
/// encryption refuses it as written by a newer one), 2 when not.
const REPO_VERSION: u32 = 3;
const PLAIN_REPO_VERSION: u32 = 2;
const INSTANCE_VERSION: u32 = 1;

/// The repository marker.
#[derive(Debug, Serialize, Deserialize)]
struct RepoDoc {
    created: i64,
    program_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<EncryptionDoc>,
}

/// What the marker of an encrypted repository says.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionDoc {
    /// The object envelope ([`ptrack_repo::keyring::CIPHER`]).
    cipher: String,
    /// The keyring's key.
    keyring: String,
    /// The data key's id (hex), also in the keyring and in every object header.
    data_key_id: String,
}

/// An encrypted repository's key slots, as `ptrack key list` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    /// The data key's id.
    pub data_key_id: String,
    /// The slots.
    pub keys: Vec<KeyInfo>,
    /// The slot the key given opens, when one was given.
    pub given: Option<String>,
}

/// One key slot.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Its id.
    pub key_id: String,
    /// When it was added (Unix seconds).
    pub created: i64,
    /// Argon2id memory (KiB), passes and lanes.
    pub argon2: [u32; 3],
}

/// Facts about a backed-up cluster that every backup of it shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `pg_control`'s system identifier.
    pub system_identifier: u64,
    /// PostgreSQL major version.
    pub pg_major: PgMajorVersion,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// `RELSEG_SIZE` in blocks.
    pub relseg_blocks: u32,
    /// WAL segment size.
    pub wal_seg_size: WalSegSize,
    /// The data directory last backed up.
    pub pgdata: String,
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn Storage>,
    /// The store below any encryption (marker and keyring), retrying.
    plain: Arc<dyn Storage>,
    failures: FailureLog,
    /// An encrypted repository's data key and the slot that opened it.
    unlocked: Option<Arc<Unlocked>>,
}

/// Current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A key made of checked parts (IDs and numbers the catalog already checked).
pub fn key(s: &str) -> Result<Key> {
    Ok(Key::new(s)?)
}

impl Repository {
    /// `ptrack init`: makes `loc` a repository. A directory may exist if empty; a bucket
    /// prefix must hold no objects.
    pub fn init(loc: &Location) -> Result<Repository> {
        Repository::init_on(Repository::create_root(loc)?)
    }

    /// `ptrack init --encrypt`: [`Repository::init`] of an encrypted repository whose first key
    /// comes from `key`, stretched with `cost` ([`KdfParams::DEFAULT`] but in tests).
    pub fn init_encrypted(loc: &Location, key: &KeySource, cost: KdfParams) -> Result<Repository> {
        // A key that cannot be read (a key file others may read) is refused before anything
        // is created.
        key.secret()?;
        Repository::init_encrypted_on(Repository::create_root(loc)?, key, cost)
    }

    /// The store of a new repository at `loc` (a directory is created, or must be empty).
    fn create_root(loc: &Location) -> Result<Arc<dyn Storage>> {
        if let Location::Dir(root) = loc {
            if root.join(REPO_FILE).exists() {
                return Err(Refusal::AlreadyARepository(root.display().to_string()).into());
            }
            ptrack_repo::local::LocalFs::create_root(root).map_err(Refusal::CannotCreate)?;
        }
        Ok(loc.connect()?)
    }

    /// [`Repository::init`] on a store given directly (tests on [`ptrack_repo::memory`]).
    pub fn init_on(store: Arc<dyn Storage>) -> Result<Repository> {
        Repository::check_empty(&*store)?;
        let doc = RepoDoc {
            created: now(),
            program_version: env!("CARGO_PKG_VERSION").into(),
            encryption: None,
        };
        envelope::write(
            &*store,
            &key(REPO_FILE)?,
            "repository",
            PLAIN_REPO_VERSION,
            &doc,
        )?;
        Repository::open_on(store)
    }

    /// [`Repository::init_encrypted`] on a store given directly. The keyring is written first,
    /// the marker last (what makes the prefix a repository).
    pub fn init_encrypted_on(
        store: Arc<dyn Storage>,
        key_source: &KeySource,
        cost: KdfParams,
    ) -> Result<Repository> {
        Repository::check_empty(&*store)?;
        let (ring, _) = Keyring::create(key_source, cost, now())?;
        ring.save(&*store)?;
        let doc = RepoDoc {
            created: now(),
            program_version: env!("CARGO_PKG_VERSION").into(),
            encryption: Some(EncryptionDoc {
                cipher: CIPHER.into(),
                keyring: KEYRING.into(),
                data_key_id: hex(&ring.data_key_id()),
            }),
        };
        envelope::write(&*store, &key(REPO_FILE)?, "repository", REPO_VERSION, &doc)?;
        Repository::open_on_with(store, Some(key_source))
    }

    /// Refuses a store that holds anything (a repository or other objects).
    fn check_empty(store: &dyn Storage) -> Result<()> {
        let marker = key(REPO_FILE)?;
        let existing = store.list(None)?;
        if existing.contains(&marker) {
            return Err(Refusal::AlreadyARepository(store.address()).into());
        }
        if let Some(k) = existing.first() {
            return Err(Refusal::NotEmpty {
                address: store.address(),
                first: k.to_string(),
                more: existing.len() - 1,
            }
            .into());
        }
        Ok(())
    }

    /// Opens an existing repository that is not encrypted.
    pub fn open(loc: &Location) -> Result<Repository> {
        Repository::open_with(loc, None)
    }

    /// Opens an existing repository; `key` opens an encrypted one (and is refused by one
    /// that is not).
    pub fn open_with(loc: &Location, key: Option<&KeySource>) -> Result<Repository> {
        if let Location::Dir(root) = loc
            && !root.is_dir()
        {
            return Err(not_a_repository(&loc.to_string()));
        }
        Repository::open_on_with(loc.connect()?, key)
    }

    /// [`Repository::open`] on a store given directly. Its transient failures are retried
    /// ([`ptrack_repo::retry`]).
    pub fn open_on(store: Arc<dyn Storage>) -> Result<Repository> {
        Repository::open_on_with(store, None)
    }

    /// [`Repository::open_with`] on a store given directly.
    pub fn open_on_with(store: Arc<dyn Storage>, key: Option<&KeySource>) -> Result<Repository> {
        let retrying = ptrack_repo::retry::Retrying::new(store);
        let failures = retrying.failures();
        let plain: Arc<dyn Storage> = Arc::new(retrying);
        let ring = read_marker(&*plain)?;
        let addr = plain.address();
        let (store, unlocked): (Arc<dyn Storage>, _) = match (ring, key) {
            (None, None) => (Arc::clone(&plain), None),
            (None, Some(k)) => {
                return Err(Refusal::KeyForPlain {
                    address: addr,
                    given: k.describe(),
                }
                .into());
            }
            (Some(_), None) => {
                return Err(Refusal::KeyNeeded(addr).into());
            }
            (Some(ring), Some(k)) => {
                let u = ring.unlock(k)?;
                let store = Encrypted::new(Arc::clone(&plain), u.data_key());
                (Arc::new(store) as Arc<dyn Storage>, Some(Arc::new(u)))
            }
        };
        Ok(Repository {
            store,
            plain,
            failures,
            unlocked,
        })
    }

    /// The key slots of the repository at `loc` (no key needed); with `key`, the slot it
    /// opens.
    pub fn list_keys(loc: &Location, key: Option<&KeySource>) -> Result<KeyListing> {
        if let Location::Dir(root) = loc
            && !root.is_dir()
        {
            return Err(not_a_repository(&loc.to_string()));
        }
        let plain: Arc<dyn Storage> = Arc::new(ptrack_repo::retry::Retrying::new(loc.connect()?));
        let ring = read_marker(&*plain)?;
        let ring = ring.ok_or_else(|| Refusal::NoKeys(plain.address()))?;
        let given = match key {
            Some(k) => Some(hex(&ring.unlock(k)?.slot)),
            None => None,
        };
        Ok(listing(&ring, given))
    }

    /// This encrypted repository's key slots, the one it was opened with marked.
    pub fn keys(&self) -> Result<KeyListing> {
        let u = self.unlocked()?;
        Ok(listing(&Keyring::load(&*self.plain)?, Some(hex(&u.slot))))
    }

    /// `ptrack key add`: wraps the data key for `new` as well (the key this repository was
    /// opened with stays valid); returns the new key's id. One atomic put of the keyring; run
    /// one key command at a time.
    pub fn add_key(&self, new: &KeySource, cost: KdfParams) -> Result<String> {
        let u = self.unlocked()?;
        let _held = self.keys_lock("add a key")?;
        let mut ring = Keyring::load(&*self.plain)?;
        let id = ring.add(u, new, cost, now())?;
        ring.save(&*self.plain)?;
        Ok(hex(&id))
    }

    /// `ptrack key remove`: removes key `id`; never the last one nor the one this repository
    /// was opened with. The data are not re-encrypted: whoever has the data key (not just the
    /// removed passphrase) can still read them.
    pub fn remove_key(&self, id: &str) -> Result<KeyListing> {
        let u = self.unlocked()?;
        let _held = self.keys_lock("remove a key")?;
        let mut ring = Keyring::load(&*self.plain)?;
        ring.remove(id, u.slot)?;
        ring.save(&*self.plain)?;
        Ok(listing(&ring, Some(hex(&u.slot))))
    }

    /// The keyring's lock: key commands read, change and write `ptrack-keys` back, so two at
    /// once would lose one's change (a removed key could come back).
    fn keys_lock(&self, what: &str) -> Result<Box<dyn Held>> {
        let owner = format!(
            "ptrack key command (pid {} on {})",
            std::process::id(),
            hostname()
        );
        self.plain
            .lock(&key("keys-lock")?, &owner)
            .map_err(|e| match e {
                LockError::Held { owner } => Refusal::KeyringBusy {
                    what: what.to_string(),
                    address: self.address(),
                    owner,
                }
                .into(),
                LockError::Storage(e) => e.into(),
            })
    }

    fn unlocked(&self) -> Result<&Unlocked> {
        self.unlocked
            .as_deref()
            .ok_or_else(|| Error::from(Refusal::NoKeys(self.address())))
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.unlocked.is_some()
    }

    /// Where the repository is (for messages).
    pub fn address(&self) -> String {
        self.store.address()
    }

    /// The repository's storage.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// System identifiers of the instances in the repository: the numeric names at its top
    /// that hold an instance document (one listing of the top level, not of every object).
    pub fn instances(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for name in self.store.children(None)? {
            let Ok(sysid) = name.parse::<u64>() else {
                continue;
            };
            match self.store.size(&key(&name)?.join("instance")?) {
                Ok(_) => out.push(sysid),
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The instance of `sysid`, if the repository has it.
    pub fn instance(&self, sysid: u64) -> Result<Option<Instance>> {
        let dir = key(&sysid.to_string())?;
        let ikey = dir.join("instance")?;
        let info: InstanceInfo =
            match envelope::read(&*self.store, &ikey, "instance", INSTANCE_VERSION) {
                Err(Error::Storage(StorageError::NotFound { .. })) => return Ok(None),
                r => r?,
            };
        if info.system_identifier != sysid {
            return Err(RepoDamage::InstanceOfOther {
                key: ikey.to_string(),
                found: info.system_identifier,
                expected: sysid,
            }
            .into());
        }
        Ok(Some(Instance {
            store: Arc::clone(&self.store),
            failures: Arc::clone(&self.failures),
            dir,
            info,
        }))
    }

    /// The instance to use when the user did not name one: the only one there is.
    pub fn only_instance(&self, chosen: Option<u64>) -> Result<Instance> {
        let all = self.instances()?;
        let addr = self.address();
        let sysid = match (chosen, all.as_slice()) {
            (Some(s), _) => s,
            (None, [one]) => *one,
            (None, []) => {
                return Err(Refusal::Empty(addr).into());
            }
            (None, many) => {
                return Err(Refusal::SeveralInstances {
                    address: addr,
                    sysids: many.to_vec(),
                }
                .into());
            }
        };
        self.instance(sysid)?.ok_or_else(|| {
            Error::from(Refusal::NoSuchInstance {
                address: addr,
                sysid,
                held: all.clone(),
            })
        })
    }

    /// Creates the instance for a cluster (first backup of it).
    pub fn add_instance(&self, info: InstanceInfo) -> Result<Instance> {
        let dir = key(&info.system_identifier.to_string())?;
        envelope::write(
            &*self.store,
            &dir.join("instance")?,
            "instance",
            INSTANCE_VERSION,
            &info,
        )?;
        Ok(Instance {
            store: Arc::clone(&self.store),
            failures: Arc::clone(&self.failures),
            dir,
            info,
        })
    }
}

/// Reads the marker, and for an encrypted repository its keyring (checked to belong to it).
fn read_marker(plain: &dyn Storage) -> Result<Option<Keyring>> {
    let marker = key(REPO_FILE)?;
    let doc: RepoDoc = match envelope::read(plain, &marker, "repository", REPO_VERSION) {
        Err(Error::Storage(StorageError::NotFound { .. })) => {
            return Err(not_a_repository(&plain.address()));
        }
        r => r?,
    };
    let Some(enc) = &doc.encryption else {
        return Ok(None);
    };
    if enc.cipher != CIPHER || enc.keyring != KEYRING {
        return Err(RepoDamage::UnknownScheme {
            marker: marker.to_string(),
            cipher: CIPHER,
            keyring: KEYRING,
        }
        .into());
    }
    let ring = match Keyring::load(plain) {
        Err(ptrack_repo::keyring::KeyError::Storage(StorageError::NotFound { .. })) => {
            return Err(RepoDamage::KeyringMissing {
                marker: marker.to_string(),
                keyring: KEYRING,
            }
            .into());
        }
        r => r?,
    };
    if hex(&ring.data_key_id()) != enc.data_key_id {
        return Err(RepoDamage::KeyringOfOther {
            keyring: KEYRING,
            found: hex(&ring.data_key_id()),
            expected: enc.data_key_id.clone(),
        }
        .into());
    }
    Ok(Some(ring))
}

fn listing(ring: &Keyring, given: Option<String>) -> KeyListing {
    KeyListing {
        data_key_id: hex(&ring.data_key_id()),
        keys: ring
            .slots()
            .iter()
            .map(|s| KeyInfo {
                key_id: hex(&s.key_id),
                created: s.created,
                argon2: [s.params.m_cost, s.params.t_cost, s.params.p_cost],
            })
            .collect(),
        given,
    }
}

fn not_a_repository(addr: &str) -> Error {
    Refusal::NotARepository(addr.to_string()).into()
}

/// An instance's facts for tests (here and in ptrack-backup's): PG18, 8 KiB blocks, 1 GiB
/// segments, 16 MiB WAL segments.
#[doc(hidden)]
pub fn sample_instance(sysid: u64, pgdata: &str) -> InstanceInfo {
    InstanceInfo {
        system_identifier: sysid,
        pg_major: PgMajorVersion::V18,
        blcksz: 8192,
        relseg_blocks: 131072,
        wal_seg_size: WalSegSize::DEFAULT,
        pgdata: pgdata.into(),
    }
}

/// One cluster's backups.
#[derive(Debug, Clone)]
pub struct Instance {
    store: Arc<dyn Storage>,
    failures: FailureLog,
    dir: Key,
    /// The cluster's facts.
    pub info: InstanceInfo,
}

/// The instance lock; released when dropped (or when its holder dies: at once on a
/// directory, when the lease expires on object storage).
#[derive(Debug)]
pub struct Lock {
    held: Box<dyn Held>,
    /// The catalog as its holder last read or wrote it, with the instance it is of: while
    /// the lock is held nobody else writes records, so it is read once per command (on object
    /// storage each read is a listing and a GET).
    snapshot: std::sync::Mutex<Option<(Key, Snapshot)>>,
}

impl Lock {
    /// Whether the lock is still held (a lease that could not be renewed may be lost):
    /// checked before anything is committed.
    pub fn check(&self) -> Result<()> {
        Ok(self.held.check()?)
    }
}

impl Instance {
    /// The repository's storage.
    pub fn store(&self) -> &dyn Storage {
        &*self.store
    }

    /// The first failure of the storage (not a missing object) since the last call, if any:
    /// an object that could not be read is not a damaged one.
    pub fn take_storage_failure(&self) -> Option<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The same storage, shared (readers on several threads).
    pub fn shared_store(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.store)
    }

    /// The key prefix of backup `id` (IDs are checked by the catalog).
    pub fn backup_key(&self, id: &str) -> Result<Key> {
        Ok(self.dir.join(id)?)
    }

    /// The key prefix of this instance's objects.
    pub fn dir(&self) -> &Key {
        &self.dir
    }

    /// Whether any object of backup `id` exists.
    pub fn backup_exists(&self, id: &str) -> Result<bool> {
        Ok(!self.store.list(Some(&self.backup_key(id)?))?.is_empty())
    }

    /// Removes every object of backup `id` (a failed or interrupted backup; the catalog record
    /// stays, with the cause). The manifest goes first: a backup is never left looking whole.
    pub fn remove_backup_files(&self, id: &str) -> Result<()> {
        let dir = self.backup_key(id)?;
        let manifest = dir.join("manifest")?;
        self.store.delete(&manifest)?;
        Ok(self.store.delete_prefix(&dir)?)
    }

    /// Takes the instance lock without waiting, then marks backups left RUNNING by a dead process
    /// as ERROR and removes their files (nobody else can be running them while we hold the
    /// lock).
    pub fn lock(&self, what: &str) -> Result<Lock> {
        let name = self.dir.join("lock")?;
        let owner = format!(
            "ptrack {what} (pid {} on {})",
            std::process::id(),
            hostname()
        );
        let held = self.store.lock(&name, &owner).map_err(|e| match e {
            LockError::Held { owner } => Error::from(Refusal::InstanceBusy {
                what: what.to_string(),
                sysid: self.info.system_identifier,
                owner,
            }),
            LockError::Storage(e) => e.into(),
        })?;
        let lock = Lock {
            held,
            snapshot: std::sync::Mutex::default(),
        };
        let mut deleting = Vec::new();
        for mut b in self.catalog_locked(&lock)?.backups {
            if b.status == Status::Deleting {
                deleting.push(b.id.clone());
            }
            if b.status == Status::Running {
                b.status = Status::Error;
                // A manifest means the backup got as far as committing: its objects are kept
                // (never delete what may be a whole backup on the word of a record, which an
                // older copy put back could make RUNNING again); without one they are leftovers.
                let manifest = self.backup_key(&b.id)?.join("manifest")?;
                let committed = match self.store.size(&manifest) {
                    Ok(_) => true,
                    Err(StorageError::NotFound { .. }) => false,
                    Err(e) => return Err(e.into()),
                };
                if committed {
                    b.error = Some(
                        "interrupted after its manifest was written; its files are kept".into(),
                    );
                } else {
                    b.error =
                        Some("interrupted: the process taking it ended without finishing".into());
                    self.remove_backup_files(&b.id)?;
                }
                eprintln!(
                    "ptrack: warning: backup {} was left RUNNING by a process that ended; marked ERROR{}",
                    b.id,
                    if committed {
                        " (files kept: its manifest exists)"
                    } else {
                        " and its partial files removed"
                    }
                );
                self.save_record(&b, &lock)?;
            }
        }
        // The deletes a killed or failed command left, newest first (a child before its
        // parent, as they were marked).
        for id in deleting.iter().rev() {
            eprintln!(
                "ptrack: finishing the delete of backup {id} (left DELETING by a command that ended)"
            );
            self.finish_delete(id, &lock)?;
        }
        Ok(lock)
    }

    /// Removes every object of a backup recorded DELETING, then its record (with the lock
    /// held). Killed at any point, the backup is still DELETING or gone.
    pub fn finish_delete(&self, id: &str, lock: &Lock) -> Result<()> {
        lock.check()?;
        self.remove_backup_files(id)?;
        self.remove_record(id, lock)
    }

    /// Reads the catalog from the backup records and checks every ID it names (IDs become key
    /// components).
    pub fn catalog(&self) -> Result<Catalog> {
        self.checked(Records::new(&*self.store, &self.dir).load()?)
    }

    /// [`Instance::catalog`] for the holder of `lock`: read once, then as its own saves left it.
    pub fn catalog_locked(&self, lock: &Lock) -> Result<Catalog> {
        self.with_snapshot(lock, |_, snap| Ok(snap.catalog().clone()))
    }

    /// Runs `f` on the lock's snapshot of this instance's catalog, taken (and checked) first
    /// when the lock has none of this instance.
    fn with_snapshot<T>(
        &self,
        lock: &Lock,
        f: impl FnOnce(&Records<'_>, &mut Snapshot) -> Result<T>,
    ) -> Result<T> {
        let records = Records::new(&*self.store, &self.dir);
        let mut slot = lock.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(dir, _)| *dir != self.dir) {
            let snap = records.snapshot()?;
            self.checked(snap.catalog().clone())?;
            *slot = Some((self.dir.clone(), snap));
        }
        let (_, snap) = slot.as_mut().expect("filled above");
        f(&records, snap)
    }

    /// [`Instance::catalog`] from every record object, without the index (for validate).
    pub fn catalog_verified(&self) -> Result<Catalog> {
        self.checked(Records::new(&*self.store, &self.dir).load_verified()?)
    }

    fn checked(&self, cat: Catalog) -> Result<Catalog> {
        cat.check().map_err(|why| {
            Error::from(RepoDamage::Catalog {
                instance: self.dir.to_string(),
                why,
            })
        })?;
        Ok(cat)
    }

    /// Records a new state of one backup (only with the lock held, which is checked first).
    /// Other backups' records are not touched, so no writer can undo another's change.
    pub fn save_record(&self, info: &BackupInfo, lock: &Lock) -> Result<()> {
        lock.check()?;
        let cat = Catalog {
            backups: vec![info.clone()],
        };
        cat.check().map_err(Refusal::BadRecord)?;
        self.with_snapshot(lock, |records, snap| records.save_in(snap, info))
    }

    /// Removes the record of backup `id` (only with the lock held, after its objects are gone):
    /// the last step of a delete.
    pub fn remove_record(&self, id: &str, lock: &Lock) -> Result<()> {
        lock.check()?;
        self.with_snapshot(lock, |records, snap| records.remove_in(snap, id))
    }

    /// Updates the instance facts (only with the lock held).
    pub fn save_info(&self, lock: &Lock) -> Result<()> {
        lock.check()?;
        let k = self.dir.join("instance")?;
        envelope::write(&*self.store, &k, "instance", INSTANCE_VERSION, &self.info)
    }
}

/// This host's name, for lock owners (`?` when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
#[path = "repo_tests.rs"]
mod tests;
