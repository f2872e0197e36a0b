//! The single durable-write path for every file ptrack writes (house rule 5): write a temporary
//! file next to the target, fsync it, rename it over the target, fsync the directory. A reader
//! therefore sees either the old file or the whole new one, also after a crash. Mirrors
//! PostgreSQL's `durable_rename` (`src/backend/storage/file/fd.c`).
//!
//! [`write_file`] writes a whole buffer; [`StagedFile`] is the same path for files written in
//! pieces (backup bundles). Files are created `0600`, directories made by [`create_private_dir`]
//! `0700`. [`at`] is the same path relative to an open directory, never following a link (restore);
//! [`direct`] writes a restore's bulk files around the page cache.

pub mod at;
pub mod direct;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` durably. The temporary file is `<path>.tmp`; a leftover one from an
/// interrupted earlier write is unlinked first and the new one created afresh (a new inode), so a
/// concurrent reader of the old one, such as `pg_basebackup` copying the data directory, never
/// sees it truncated under it. Any fsync failure is returned, never retried.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = StagedFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A file being written through the durable path: bytes go to `<path>.tmp` until
/// [`StagedFile::commit`]. Dropped without a commit, the temporary file stays behind (it is
/// never mistaken for the target and is replaced by the next attempt).
#[derive(Debug)]
pub struct StagedFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl StagedFile {
    /// Creates `<path>.tmp` (mode 0600), unlinking a leftover one first.
    pub fn create(path: &Path) -> io::Result<StagedFile> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(StagedFile {
            file,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Fsyncs the data, renames it over the target and fsyncs the directory.
    pub fn commit(self) -> io::Result<()> {
        let dir = parent_dir(&self.path).to_path_buf();
        self.commit_deferring_dir_sync()?;
        sync_dir(&dir)
    }

    /// Fsyncs the data and renames it over the target; the caller fsyncs the directory later with
    /// [`sync_dir`] (one directory fsync for many files, as `initdb --sync-only` does).
    pub fn commit_deferring_dir_sync(self) -> io::Result<()> {
        self.file.sync_all()?;
        #[allow(clippy::disallowed_methods)]
        std::fs::rename(&self.tmp, &self.path)
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fsyncs a directory (its entries: creations, renames, removals).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` with mode 0700 (an existing directory is fine) and fsyncs its parent.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_dir(parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes an exclusive `flock(2)` on `path` (created 0600 when missing) without waiting: `None`
/// when another open file description holds it. Released when the file is closed or the
/// process dies (a killed holder never leaves a stale lock).
pub fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        true => Ok(None),
        false => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_lock_excludes_a_second_holder_until_released() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let held = try_lock_file(&p).unwrap().expect("first lock");
        assert!(try_lock_file(&p).unwrap().is_none());
        drop(held);
        assert!(try_lock_file(&p).unwrap().is_some());
        assert!(try_lock_file(&d.path().join("missing/l")).is_err());
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.bin");
        write_file(&p, b"one").unwrap();
        std::fs::write(d.path().join("f.bin.tmp"), b"stale").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!d.path().join("f.bin.tmp").exists());
        assert!(write_file(&d.path().join("missing/f"), b"x").is_err());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn staged_file_is_invisible_until_commit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g");
        let mut s = StagedFile::create(&p).unwrap();
        s.write_all(b"part").unwrap();
        assert!(!p.exists());
        s.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"part");
        let sub = d.path().join("sub");
        create_private_dir(&sub).unwrap();
        create_private_dir(&sub).unwrap();
        let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
