//! [`LocalFs`]: a repository directory. Objects are files below it, one directory per key
//! component; every write goes through `ptrack-durable` (temporary file, fsync, rename, fsync
//! of the directory), files are created 0600 and directories 0700, and no symbolic link is
//! followed when an object is opened (`O_NOFOLLOW`; a link is refused, not read). What a crash
//! leaves: objects whole or absent, and possibly `*.tmp` files, which are never objects (see
//! [`Key`]) and never listed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ptrack_durable::StagedFile;

use crate::key::Key;
use crate::storage::{
    Capabilities, Held, LockError, ObjectReader, ObjectWriter, Result, Storage, StorageError,
};

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// The repository at `root`, which must exist.
    pub fn new(root: &Path) -> LocalFs {
        LocalFs {
            root: root.to_path_buf(),
        }
    }

    /// Makes `root` the empty private (0700) directory of a new repository: it may exist if
    /// empty, and its parent must exist. The error says why not.
    pub fn create_root(root: &Path) -> std::result::Result<(), String> {
        let shown = root.display();
        if root.exists() {
            let mut it =
                std::fs::read_dir(root).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
            if it.next().is_some() {
                return Err(format!(
                    "\"{shown}\" exists and is not empty; give an empty or new directory"
                ));
            }
        } else if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(format!(
                "parent directory \"{}\" does not exist",
                parent.display()
            ));
        }
        ptrack_durable::create_private_dir(root)
            .map_err(|e| format!("cannot create \"{shown}\": {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod \"{shown}\": {e}"))
    }

    fn path(&self, key: &Key) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.components());
        p
    }

    /// Opens the object's file for reading: a regular file, never through a link.
    fn open_file(&self, key: &Key) -> Result<File> {
        // Directories on the way must be directories too: a link there is refused, not followed.
        let comps: Vec<&str> = key.components().collect();
        let mut dir = self.root.clone();
        for c in &comps[..comps.len().saturating_sub(1)] {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::io(
                        key,
                        "open",
                        io::Error::other(format!(
                            "\"{}\" is a symbolic link, refused (ptrack never follows links inside a repository)",
                            dir.display()
                        )),
                    ));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(StorageError::io(
                        key,
                        "open",
                        io::Error::other(format!("\"{}\" is not a directory", dir.display())),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(StorageError::io(key, "open", e)),
            }
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            // Not blocking on a FIFO put where an object should be (it is refused below).
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(key))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => {
                    StorageError::io(key, "open", io::Error::other("a symbolic link, refused"))
                }
                _ => StorageError::io(key, "open", e),
            })?;
        let meta = f.metadata().map_err(|e| StorageError::io(key, "stat", e))?;
        if !meta.is_file() {
            return Err(StorageError::io(
                key,
                "open",
                io::Error::other("not a regular file"),
            ));
        }
        Ok(f)
    }

    /// Creates the directories of `key`'s parent components (0700, each fsynced in its parent).
    fn make_parents(&self, key: &Key) -> Result<()> {
        let mut dir = self.root.clone();
        let comps: Vec<&str> = key.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            dir.push(c);
            ptrack_durable::create_private_dir(&dir)
                .map_err(|e| StorageError::io(key, "mkdir", e))?;
        }
        Ok(())
    }

    fn list_into(&self, dir: &Path, prefix: &str, out: &mut Vec<Key>) -> Result<()> {
        let shown = |e: io::Error| StorageError::Io {
            key: dir.display().to_string(),
            op: "list",
            transient: false,
            cause: e,
        };
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(shown(e)),
        };
        for entry in rd {
            let entry = entry.map_err(shown)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let full = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(key) = Key::new(&full) else { continue };
            let ft = entry.file_type().map_err(shown)?;
            if ft.is_dir() {
                self.list_into(&entry.path(), &full, out)?;
            } else {
                // Links and special files are listed too: reading one is refused loudly
                // (`open_file`), where leaving it out would pass over what may be an object.
                out.push(key);
            }
        }
        Ok(())
    }
}

/// An open object file, read with `pread(2)`.
#[derive(Debug)]
struct LocalReader {
    key: Key,
    file: File,
    len: u64,
}

impl ObjectReader for LocalReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| StorageError::io(&self.key, "read", e))
    }

    fn read_ahead(&self) -> usize {
        512 << 10
    }
}

/// An `flock(2)` on a lock file: released when dropped or when the process dies.
#[derive(Debug)]
struct FileLock {
    _file: File,
}

impl Held for FileLock {
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// `dir` and every directory below it, parents first (links are not followed).
/// Writes `bytes` to a new file next to `path` named for this writer (`<name>.<pid>.<n>.<what>.tmp`,
/// 0600, fsynced) and returns its path; on any failure the file is removed (a full disk leaves
/// nothing behind).
fn write_temp(path: &Path, what: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut t = path.as_os_str().to_owned();
    t.push(format!(".{}.{n}.{what}.tmp", std::process::id()));
    let tmp = PathBuf::from(t);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    match f.write_all(bytes).and_then(|()| f.sync_all()) {
        Ok(()) => Ok(tmp),
        Err(e) => {
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(md) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            collect_dirs(&e.path(), out);
        }
    }
}

struct LocalWriter {
    key: Key,
    staged: StagedFile,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.staged.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.staged.flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(self: Box<Self>) -> Result<()> {
        let key = self.key.clone();
        self.staged
            .commit()
            .map_err(|e| StorageError::io(&key, "commit", e))
    }
}

impl Storage for LocalFs {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_file(key)?
            .read_to_end(&mut v)
            .map_err(|e| StorageError::io(key, "read", e))?;
        Ok(v)
    }

    fn get_range(&self, key: &Key, start: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.open_file(key)?
            .read_exact_at(&mut v, start)
            .map_err(|e| StorageError::io(key, "read", e))?;
        Ok(v)
    }

    fn open(&self, key: &Key) -> Result<Box<dyn ObjectReader>> {
        let file = self.open_file(key)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(key, "stat", e))?
            .len();
        Ok(Box::new(LocalReader {
            key: key.clone(),
            file,
            len,
        }))
    }

    fn size(&self, key: &Key) -> Result<u64> {
        let f = self.open_file(key)?;
        Ok(f.metadata()
            .map_err(|e| StorageError::io(key, "stat", e))?
            .len())
    }

    fn list(&self, prefix: Option<&Key>) -> Result<Vec<Key>> {
        let mut out = Vec::new();
        match prefix {
            None => self.list_into(&self.root, "", &mut out)?,
            Some(p) => {
                let path = self.path(p);
                if path.is_file() {
                    out.push(p.clone());
                } else {
                    self.list_into(&path, p.as_str(), &mut out)?;
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn children(&self, prefix: Option<&Key>) -> Result<Vec<String>> {
        let dir = prefix.map_or_else(|| self.root.clone(), |p| self.path(p));
        let shown = |e: io::Error| StorageError::Io {
            key: dir.display().to_string(),
            op: "list",
            transient: false,
            cause: e,
        };
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(shown(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(shown)?;
            let ft = entry.file_type().map_err(shown)?;
            let name = entry.file_name();
            if let Some(n) = name.to_str()
                && (ft.is_dir() || ft.is_file())
                && Key::new(n).is_ok()
            {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        self.make_parents(key)?;
        let path = self.path(key);
        let io = |e| StorageError::io(key, "put", e);
        // A temporary name of this writer's own: two processes putting one key (the first
        // pushes of a new instance) never rename each other's half-written file into place.
        let tmp = write_temp(&path, "put", bytes).map_err(io)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        ptrack_durable::sync_dir(path.parent().unwrap_or(&self.root)).map_err(io)
    }

    fn put_if_absent(&self, key: &Key, bytes: &[u8]) -> Result<bool> {
        self.make_parents(key)?;
        let path = self.path(key);
        let io = |e| StorageError::io(key, "put if absent", e);
        let tmp = write_temp(&path, "excl", bytes).map_err(io)?;
        // link(2) fails with EEXIST when the name exists: the create-if-absent is atomic.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        ptrack_durable::sync_dir(dir).map_err(io)?;
        Ok(true)
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        self.make_parents(key)?;
        let staged =
            StagedFile::create(&self.path(key)).map_err(|e| StorageError::io(key, "create", e))?;
        Ok(Box::new(LocalWriter {
            key: key.clone(),
            staged,
        }))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(key, "delete", e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        ptrack_durable::sync_dir(dir).map_err(|e| StorageError::io(key, "delete", e))
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<()> {
        for k in self.list(Some(prefix))? {
            self.delete(&k)?;
        }
        // Directories are not objects: those left empty go too (rmdir refuses any other), after
        // the temporary files of writers that never finished (never objects, see `Key`).
        let top = self.path(prefix);
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        for d in dirs.iter().rev() {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let is_tmp = e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp"));
                if is_tmp && e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        if let Some(parent) = top.parent() {
            ptrack_durable::sync_dir(parent).map_err(|e| StorageError::io(prefix, "delete", e))?;
        }
        Ok(())
    }

    fn lock(&self, name: &Key, _owner: &str) -> std::result::Result<Box<dyn Held>, LockError> {
        let path = self.path(name);
        if std::fs::symlink_metadata(&path).is_err() {
            self.put(name, b"")?;
        }
        let file = self.open_file(name)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    owner: format!(
                        "another ptrack process (lock \"{}\" is held)",
                        path.display()
                    ),
                });
            }
            return Err(StorageError::io(name, "lock", e).into());
        }
        Ok(Box::new(FileLock { _file: file }))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_put: true,
            lease_lock: false,
        }
    }

    fn address(&self) -> String {
        self.root.display().to_string()
    }
}
