//! The single durable-write path for every file ptrack writes (house rule 5): write a temporary
//! file next to the target, fsync it, rename it over the target, fsync the directory. A reader
//! therefore sees either the old file or the whole new one, also after a crash. Mirrors
//! PostgreSQL's `durable_rename` (`src/backend/storage/file/fd.c`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` durably. The temporary file is `<path>.tmp`; a leftover one from an
/// interrupted earlier write is unlinked first and the new one created afresh (a new inode), so a
/// concurrent reader of the old one, such as `pg_basebackup` copying the data directory, never
/// sees it truncated under it. Any fsync failure is returned, never retried.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    #[allow(clippy::disallowed_methods)]
    std::fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
