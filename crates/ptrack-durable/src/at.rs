//! The durable-write path relative to an open directory, for writers that must not leave the
//! directories they were given (restore): every component of a relative path is opened with
//! `openat(…, O_NOFOLLOW)`, so neither `..` (refused) nor a symbolic link met on the way (an
//! error, `ELOOP`/`ENOTDIR`) can lead outside. Files are written to `<name>.tmp` with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, fsynced and renamed with `renameat` inside the same
//! directory; directories are fsynced through their own descriptors. The same protocol as
//! [`crate::write_file`], by descriptor (`fd.c: durable_rename`). For a target that is not live
//! until its last file lands (a restore), files may instead be written in place and made durable
//! together (`create_new`, `sync_filesystem`, as `initdb --sync-method=syncfs` does) before that
//! last file goes through the durable path.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// An open directory that files are created under.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn component(c: &[u8]) -> io::Result<&OsStr> {
    if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "\"{}\" is not a plain file name",
                String::from_utf8_lossy(c)
            ),
        ));
    }
    Ok(OsStr::from_bytes(c))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Dir {
    /// Opens `path` (given by the user: a link there is followed, as any path argument is).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened as (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the existing subdirectory `name` without following a link.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let n = component(name)?;
        let fd = rustix::fs::openat(&self.fd, n, dir_flags(), Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.child_path(n),
        })
    }

    /// Creates subdirectory `name` (mode 0700; an existing directory is fine, a link is not) and
    /// opens it. The parent is not fsynced here: call [`Dir::sync`] on it.
    pub fn create_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let n = component(name)?;
        match rustix::fs::mkdirat(&self.fd, n, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.open_dir(name)
    }

    /// Opens (creating as needed) the directories of `components` below this one.
    pub fn create_dirs<'a>(
        &self,
        components: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<Dir> {
        let mut cur = self.open_dir_self()?;
        for c in components {
            cur = cur.create_dir(c)?;
        }
        Ok(cur)
    }

    fn open_dir_self(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Creates a symbolic link `name` → `target` (any target: only reading through it could
    /// leave the directory, and this API never follows links).
    pub fn symlink(&self, target: &Path, name: &[u8]) -> io::Result<()> {
        let n = component(name)?;
        rustix::fs::symlinkat(target, &self.fd, n)?;
        Ok(())
    }

    /// Starts writing file `name` through `<name>.tmp` (a leftover temporary file is replaced).
    pub fn create_staged(&self, name: &[u8]) -> io::Result<StagedAt<'_>> {
        let n = component(name)?;
        let mut tmp = n.to_owned();
        tmp.push(".tmp");
        match rustix::fs::unlinkat(&self.fd, tmp.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(StagedAt {
            dir: self,
            file: File::from(fd),
            tmp: tmp.as_bytes().to_vec(),
            name: n.as_bytes().to_vec(),
        })
    }

    /// Creates file `name`, which must not exist, for writing in place, without a temporary
    /// file and without an fsync. Only for a target that nothing reads until the writer puts a
    /// last file in place through the durable path (a restore writes `pg_control` last): such
    /// files are made durable together with [`Dir::sync_filesystem`] before that.
    pub fn create_new(&self, name: &[u8]) -> io::Result<File> {
        let n = component(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            n,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Starts the write-back of everything written to `f` so far without waiting for it
    /// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, as PostgreSQL's `pre_sync_fname`): the
    /// disk works while the writer goes on, and the final [`Dir::sync_filesystem`] or fsync has
    /// little left to wait for. Durability still comes from that final sync.
    pub fn start_writeback(f: &File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open descriptor; no memory is passed.
        let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `syncfs(2)` on the filesystem holding this directory: every file and directory written
    /// there reaches the disk, and a write-back error since the files were opened is reported
    /// (Linux 5.8+).
    pub fn sync_filesystem(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd)?;
        Ok(())
    }

    /// Writes `bytes` to `name` durably (temp, fsync, rename, fsync this directory).
    pub fn write_file(&self, name: &[u8], bytes: &[u8]) -> io::Result<()> {
        let mut f = self.create_staged(name)?;
        f.write_all(bytes)?;
        f.commit()?;
        self.sync()
    }

    /// Fsyncs the directory (its entries).
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// Whether the directory has no entries.
    pub fn is_empty(&self) -> io::Result<bool> {
        let fd = rustix::fs::openat(&self.fd, ".", dir_flags(), Mode::empty())?;
        let mut d = rustix::fs::Dir::read_from(fd.as_fd())?;
        while let Some(e) = d.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A file being written under a [`Dir`]; invisible under its name until [`StagedAt::commit`].
#[derive(Debug)]
pub struct StagedAt<'a> {
    dir: &'a Dir,
    file: File,
    tmp: Vec<u8>,
    name: Vec<u8>,
}

impl StagedAt<'_> {
    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Fsyncs the data and renames it over the target; the caller fsyncs the directory later.
    pub fn commit(self) -> io::Result<()> {
        self.file.sync_all()?;
        rustix::fs::renameat(
            &self.dir.fd,
            OsStr::from_bytes(&self.tmp),
            &self.dir.fd,
            OsStr::from_bytes(&self.name),
        )?;
        Ok(())
    }
}

impl Write for StagedAt<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_leaves_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        let r = Dir::open(&root).unwrap();
        assert!(r.is_empty().is_ok_and(|e| !e));
        // Through a link, up with "..", or with a slash: all refused.
        assert!(r.open_dir(b"link").is_err());
        assert!(r.create_dirs([&b"link"[..], b"x"]).is_err());
        assert!(r.create_dir(b"..").is_err());
        assert!(r.create_staged(b"../x").is_err());
        assert!(r.create_staged(b"link").is_ok_and(|s| s.commit().is_ok()));
        // The commit replaced the link itself, it did not write through it.
        assert!(
            std::fs::symlink_metadata(root.join("link"))
                .unwrap()
                .is_file()
        );
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        let sub = r.create_dirs([&b"a"[..], b"b"]).unwrap();
        sub.write_file(b"f", b"data").unwrap();
        assert_eq!(std::fs::read(root.join("a/b/f")).unwrap(), b"data");
        assert!(!root.join("a/b/f.tmp").exists());
        let mut f = sub.create_new(b"g").unwrap();
        f.write_all(b"in place").unwrap();
        assert!(sub.create_new(b"g").is_err(), "create_new never replaces");
        assert!(r.create_new(b"link").is_err(), "nor writes through a link");
        Dir::start_writeback(&f).unwrap();
        r.sync_filesystem().unwrap();
        r.symlink(Path::new("/nowhere"), b"ts").unwrap();
        assert!(r.open_dir(b"ts").is_err());
        r.sync().unwrap();
    }
}
