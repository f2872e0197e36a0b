//! The repository: `ptrack init -B DIR|s3://bucket/prefix`, instances keyed by the cluster's
//! system identifier, their catalogs and the lock that keeps two writers of one instance apart.
//! Every access goes through [`ptrack_repo::Storage`] (a directory, an S3 bucket, or memory in
//! tests); the object keys below are the same on every backend.
//!
//! ```text
//! ptrack-repo                 repository marker document
//! <sysid>/instance            instance document (cluster facts)
//! <sysid>/records/<ID>.<gen>  one write-once record per backup state (crate::records)
//! <sysid>/index               the records' index, a cache (crate::records)
//! <sysid>/lock                the instance lock (flock(2) on a directory, a lease elsewhere)
//! <sysid>/<ID>/manifest       manifest document (crate::manifest), written last
//! <sysid>/<ID>/bundle.<n>     stored pages and files (crate::bundle)
//! ```
use std::sync::Arc;

use ptrack_repo::location::Location;
use ptrack_repo::retry::FailureLog;
use ptrack_repo::{Held, Key, LockError, Storage, StorageError};
use ptrack_types::{PgMajorVersion, WalSegSize};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupInfo, Catalog, Status};
use crate::records::Records;
use crate::{Error, Result, envelope, refused};

const REPO_FILE: &str = "ptrack-repo";
const REPO_VERSION: u32 = 2;
const INSTANCE_VERSION: u32 = 1;

/// The repository marker.
#[derive(Debug, Serialize, Deserialize)]
struct RepoDoc {
    created: i64,
    program_version: String,
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
    failures: FailureLog,
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
        if let Location::Dir(root) = loc {
            if root.join(REPO_FILE).exists() {
                return Err(refused(format!(
                    "\"{}\" is already a ptrack repository",
                    root.display()
                )));
            }
            ptrack_repo::local::LocalFs::create_root(root).map_err(refused)?;
        }
        Repository::init_on(loc.connect()?)
    }

    /// [`Repository::init`] on a store given directly (tests on [`ptrack_repo::memory`]).
    pub fn init_on(store: Arc<dyn Storage>) -> Result<Repository> {
        let marker = key(REPO_FILE)?;
        let existing = store.list(None)?;
        if existing.contains(&marker) {
            return Err(refused(format!(
                "\"{}\" is already a ptrack repository",
                store.address()
            )));
        }
        if let Some(k) = existing.first() {
            return Err(refused(format!(
                "\"{}\" is not empty (it holds \"{k}\" and {} more objects); give an empty prefix",
                store.address(),
                existing.len() - 1
            )));
        }
        let doc = RepoDoc {
            created: now(),
            program_version: env!("CARGO_PKG_VERSION").into(),
        };
        envelope::write(&*store, &marker, "repository", REPO_VERSION, &doc)?;
        Repository::open_on(store)
    }

    /// Opens an existing repository.
    pub fn open(loc: &Location) -> Result<Repository> {
        if let Location::Dir(root) = loc
            && !root.is_dir()
        {
            return Err(not_a_repository(&loc.to_string()));
        }
        Repository::open_on(loc.connect()?)
    }

    /// [`Repository::open`] on a store given directly. Its transient failures are retried
    /// ([`ptrack_repo::retry`]).
    pub fn open_on(store: Arc<dyn Storage>) -> Result<Repository> {
        let retrying = ptrack_repo::retry::Retrying::new(store);
        let failures = retrying.failures();
        let store: Arc<dyn Storage> = Arc::new(retrying);
        let marker = key(REPO_FILE)?;
        let _: RepoDoc = match envelope::read(&*store, &marker, "repository", REPO_VERSION) {
            Err(Error::Storage(StorageError::NotFound { .. })) => {
                return Err(not_a_repository(&store.address()));
            }
            r => r?,
        };
        Ok(Repository { store, failures })
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
            return Err(Error::Corrupt(format!(
                "\"{ikey}\" describes system {}, not {sysid}",
                info.system_identifier
            )));
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
                return Err(refused(format!(
                    "repository \"{addr}\" holds no backups yet"
                )));
            }
            (None, many) => {
                return Err(refused(format!(
                    "repository \"{addr}\" holds several clusters ({}); choose one with --instance",
                    many.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        self.instance(sysid)?.ok_or_else(|| {
            refused(format!(
                "repository \"{addr}\" has no backups of the cluster with system identifier {sysid} (it holds: {})",
                if all.is_empty() { "none".to_string() } else { all.iter().map(u64::to_string).collect::<Vec<_>>().join(", ") }
            ))
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

fn not_a_repository(addr: &str) -> Error {
    refused(format!(
        "\"{addr}\" is not a ptrack repository (no {REPO_FILE} object); create one with `ptrack init -B {addr}`"
    ))
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
            LockError::Held { owner } => refused(format!(
                "cannot {what}: another ptrack process is working on instance {}: {owner}",
                self.info.system_identifier
            )),
            LockError::Storage(e) => e.into(),
        })?;
        let lock = Lock { held };
        for mut b in self.catalog()?.backups {
            if b.status == Status::Running {
                b.status = Status::Error;
                b.error = Some("interrupted: the process taking it ended without finishing".into());
                self.remove_backup_files(&b.id)?;
                self.save_record(&b, &lock)?;
            }
        }
        Ok(lock)
    }

    /// Reads the catalog from the backup records and checks every ID it names (IDs become key
    /// components).
    pub fn catalog(&self) -> Result<Catalog> {
        let cat = Records::new(&*self.store, &self.dir).load()?;
        cat.check().map_err(|why| {
            Error::Corrupt(format!("the catalog of instance \"{}\": {why}", self.dir))
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
        cat.check()
            .map_err(|why| Error::Corrupt(format!("record to save: {why}")))?;
        Records::new(&*self.store, &self.dir).save(info)?;
        Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn init_open_and_lock() {
        let d = tempfile::tempdir().unwrap();
        let root = Location::Dir(d.path().join("repo"));
        let r = Repository::init(&root).unwrap();
        assert!(Repository::init(&root).is_err());
        assert!(Repository::open(&Location::Dir(d.path().into())).is_err());
        let r2 = Repository::open(&root).unwrap();
        assert!(r2.instances().unwrap().is_empty());
        let inst = r
            .add_instance(InstanceInfo {
                system_identifier: 7,
                pg_major: PgMajorVersion::V18,
                blcksz: 8192,
                relseg_blocks: 131072,
                wal_seg_size: WalSegSize::DEFAULT,
                pgdata: "/x".into(),
            })
            .unwrap();
        assert_eq!(r.instances().unwrap(), vec![7]);
        let l = inst.lock("test").unwrap();
        let e = inst.lock("test again").unwrap_err().to_string();
        assert!(e.contains("another ptrack process"), "{e}");
        drop(l);
        inst.lock("after release").unwrap();
        assert!(r.only_instance(Some(8)).is_err());
        assert_eq!(r.only_instance(None).unwrap().info.system_identifier, 7);
    }
}
