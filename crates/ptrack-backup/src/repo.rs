//! The repository on a local directory: `ptrack init -B DIR`, instances keyed by the cluster's
//! system identifier, their catalogs and the lock that keeps two writers of one instance apart.
//!
//! ```text
//! DIR/ptrack-repo                 repository marker document
//! DIR/<sysid>/instance            instance document (cluster facts)
//! DIR/<sysid>/catalog             catalog document (crate::catalog)
//! DIR/<sysid>/lock                flock(2) target
//! DIR/<sysid>/<ID>/manifest       manifest document (crate::manifest)
//! DIR/<sysid>/<ID>/bundle.<n>     stored pages and files (crate::bundle)
//! ```
//! Directories are 0700 and files 0600; every document goes through `ptrack_durable`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{CATALOG_VERSION, Catalog, Status};
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
    pub pg_major: u32,
    /// `BLCKSZ`.
    pub blcksz: u32,
    /// `RELSEG_SIZE` in blocks.
    pub relseg_blocks: u32,
    /// WAL segment size in bytes.
    pub wal_seg_size: u64,
    /// The data directory last backed up.
    pub pgdata: String,
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// Current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Repository {
    /// `ptrack init`: makes `root` a repository. It may exist if empty.
    pub fn init(root: &Path) -> Result<Repository> {
        if root.join(REPO_FILE).exists() {
            return Err(refused(format!(
                "\"{}\" is already a ptrack repository",
                root.display()
            )));
        }
        if root.exists() {
            let mut it = std::fs::read_dir(root).map_err(|e| Error::io(root, "read", e))?;
            if it.next().is_some() {
                return Err(refused(format!(
                    "\"{}\" exists and is not empty; give an empty or new directory",
                    root.display()
                )));
            }
        } else if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(refused(format!(
                "parent directory \"{}\" does not exist",
                parent.display()
            )));
        }
        ptrack_durable::create_private_dir(root).map_err(|e| Error::io(root, "create", e))?;
        set_private(root, 0o700)?;
        let doc = RepoDoc {
            created: now(),
            program_version: env!("CARGO_PKG_VERSION").into(),
        };
        envelope::write(&root.join(REPO_FILE), "repository", REPO_VERSION, &doc)?;
        Ok(Repository { root: root.into() })
    }

    /// Opens an existing repository.
    pub fn open(root: &Path) -> Result<Repository> {
        let marker = root.join(REPO_FILE);
        if !marker.exists() {
            return Err(refused(format!(
                "\"{}\" is not a ptrack repository (no {REPO_FILE} file); create one with `ptrack init -B {}`",
                root.display(),
                root.display()
            )));
        }
        let _: RepoDoc = envelope::read(&marker, "repository", REPO_VERSION)?;
        Ok(Repository { root: root.into() })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// System identifiers of the instances in the repository.
    pub fn instances(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, "read", e))? {
            let e = e.map_err(|e| Error::io(&self.root, "read", e))?;
            if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok())
                && e.path().join("instance").exists()
            {
                out.push(id);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The instance of `sysid`, if the repository has it.
    pub fn instance(&self, sysid: u64) -> Result<Option<Instance>> {
        let dir = self.root.join(sysid.to_string());
        if !existing_dir(&dir)? || !dir.join("instance").exists() {
            return Ok(None);
        }
        let info: InstanceInfo =
            envelope::read(&dir.join("instance"), "instance", INSTANCE_VERSION)?;
        if info.system_identifier != sysid {
            return Err(Error::Corrupt(format!(
                "\"{}\" describes system {}, not {sysid}",
                dir.join("instance").display(),
                info.system_identifier
            )));
        }
        Ok(Some(Instance { dir, info }))
    }

    /// The instance to use when the user did not name one: the only one there is.
    pub fn only_instance(&self, chosen: Option<u64>) -> Result<Instance> {
        let all = self.instances()?;
        let sysid = match (chosen, all.as_slice()) {
            (Some(s), _) => s,
            (None, [one]) => *one,
            (None, []) => {
                return Err(refused(format!(
                    "repository \"{}\" holds no backups yet",
                    self.root.display()
                )));
            }
            (None, many) => {
                return Err(refused(format!(
                    "repository \"{}\" holds several clusters ({}); choose one with --instance",
                    self.root.display(),
                    many.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        self.instance(sysid)?.ok_or_else(|| {
            refused(format!(
                "repository \"{}\" has no backups of the cluster with system identifier {sysid} (it holds: {})",
                self.root.display(),
                if all.is_empty() { "none".to_string() } else { all.iter().map(u64::to_string).collect::<Vec<_>>().join(", ") }
            ))
        })
    }

    /// Creates the instance for a cluster (first backup of it).
    pub fn add_instance(&self, info: InstanceInfo) -> Result<Instance> {
        let dir = self.root.join(info.system_identifier.to_string());
        ptrack_durable::create_private_dir(&dir).map_err(|e| Error::io(&dir, "create", e))?;
        envelope::write(
            &dir.join("catalog"),
            "catalog",
            CATALOG_VERSION,
            &Catalog::default(),
        )?;
        envelope::write(&dir.join("instance"), "instance", INSTANCE_VERSION, &info)?;
        Ok(Instance { dir, info })
    }
}

/// Whether repository directory `dir` exists; an error when it is anything but a directory (a
/// link included: ptrack never follows links inside a repository).
fn existing_dir(dir: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, "stat", e)),
        Ok(m) if !m.is_dir() => Err(Error::Corrupt(format!(
            "\"{}\" is not a directory (ptrack never follows links inside a repository)",
            dir.display()
        ))),
        Ok(_) => Ok(true),
    }
}

fn set_private(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(p, "chmod", e))
}

/// One cluster's backups.
#[derive(Debug, Clone)]
pub struct Instance {
    dir: PathBuf,
    /// The cluster's facts.
    pub info: InstanceInfo,
}

/// The instance lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Instance {
    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A backup's directory.
    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// A backup's directory, which must exist and be a directory (not a link).
    pub fn existing_backup_dir(&self, id: &str) -> Result<PathBuf> {
        let d = self.backup_dir(id);
        if existing_dir(&d)? {
            Ok(d)
        } else {
            Err(Error::Corrupt(format!(
                "backup {id}: its directory \"{}\" is missing",
                d.display()
            )))
        }
    }

    /// Removes every file of backup `id` and its directory (a failed or interrupted backup; the
    /// catalog record stays, with the cause).
    pub fn remove_backup_files(&self, id: &str) -> Result<()> {
        let dir = self.backup_dir(id);
        if !existing_dir(&dir)? {
            return Ok(());
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, "remove", e))?;
        ptrack_durable::sync_dir(&self.dir).map_err(|e| Error::io(&self.dir, "fsync", e))
    }

    /// Takes the instance lock without waiting, then marks backups left RUNNING by a dead process
    /// as ERROR and removes their files (nobody else can be running them while we hold the
    /// lock).
    pub fn lock(&self, what: &str) -> Result<Lock> {
        let path = self.dir.join("lock");
        if std::fs::symlink_metadata(&path).is_err() {
            ptrack_durable::write_file(&path, b"").map_err(|e| Error::io(&path, "create", e))?;
        }
        let file: File = envelope::open_repo_file(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(refused(format!(
                "cannot {what}: another ptrack process is working on instance {} (lock \"{}\" is held)",
                self.info.system_identifier,
                path.display()
            )));
        }
        let lock = Lock { _file: file };
        let mut cat = self.catalog()?;
        let mut changed = false;
        for b in &mut cat.backups {
            if b.status == Status::Running {
                b.status = Status::Error;
                b.error = Some("interrupted: the process taking it ended without finishing".into());
                changed = true;
                self.remove_backup_files(&b.id)?;
            }
        }
        if changed {
            self.save_catalog(&cat, &lock)?;
        }
        Ok(lock)
    }

    /// Reads the catalog and checks every ID it names (IDs become directory names).
    pub fn catalog(&self) -> Result<Catalog> {
        let path = self.dir.join("catalog");
        let cat: Catalog = envelope::read(&path, "catalog", CATALOG_VERSION)?;
        cat.check()
            .map_err(|why| Error::Corrupt(format!("\"{}\": {why}", path.display())))?;
        Ok(cat)
    }

    /// Writes the catalog (only with the lock held).
    pub fn save_catalog(&self, cat: &Catalog, _lock: &Lock) -> Result<()> {
        envelope::write(&self.dir.join("catalog"), "catalog", CATALOG_VERSION, cat)
    }

    /// Updates the instance facts (only with the lock held).
    pub fn save_info(&self, _lock: &Lock) -> Result<()> {
        envelope::write(
            &self.dir.join("instance"),
            "instance",
            INSTANCE_VERSION,
            &self.info,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_open_and_lock() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let r = Repository::init(&root).unwrap();
        assert!(Repository::init(&root).is_err());
        assert!(Repository::open(d.path()).is_err());
        let r2 = Repository::open(&root).unwrap();
        assert!(r2.instances().unwrap().is_empty());
        let inst = r
            .add_instance(InstanceInfo {
                system_identifier: 7,
                pg_major: 18,
                blcksz: 8192,
                relseg_blocks: 131072,
                wal_seg_size: 16 << 20,
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
