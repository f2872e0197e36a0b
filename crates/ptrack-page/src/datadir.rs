//! A PostgreSQL data directory as ptrack sees it: its `pg_control`, its major version, whether a
//! server is running on it, and the list of its relation segment files.
//!
//! The walk mirrors what `pg_checksums` (`src/bin/pg_checksums/pg_checksums.c: scan_directory`)
//! covers: `global/`, every database directory under `base/`, and for each tablespace in
//! `pg_tblspc/` only the directory of this server's version (`PG_<major>_<catver>`, from
//! `PG_VERSION` and `pg_control`). Temporary relation files and non-relation files are skipped
//! (spec §7.1).

use std::io;
use std::path::{Path, PathBuf};

use ptrack_types::PgMajorVersion;
use serde::Serialize;

use crate::control::{ControlFile, ControlFileError, read_control_file};
use crate::relpath::{PathKind, RelFileSegment, classify_path};

/// Why a directory cannot be used as a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The path does not exist or is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A file every data directory has is missing.
    #[error("{path} is not a PostgreSQL data directory: {missing} not found")]
    NotADataDirectory {
        /// The directory.
        path: String,
        /// The file that is missing.
        missing: &'static str,
    },
    /// `PG_VERSION` cannot be read or names an unsupported version.
    #[error("{path}: {why}")]
    BadVersionFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// `pg_control` cannot be used.
    #[error("{path}: {source}")]
    Control {
        /// The file.
        path: String,
        /// What is wrong.
        source: ControlFileError,
    },
}

/// An opened data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
    /// Its control file.
    pub control: ControlFile,
    /// Major version from `PG_VERSION`.
    pub major: PgMajorVersion,
    /// True when `postmaster.pid` exists: a server may be writing while we read.
    pub online: bool,
}

/// A relation segment file found by the walk.
#[derive(Debug, Clone, Serialize)]
pub struct RelFile {
    /// PGDATA-relative path with `/` separators.
    pub rel_path: String,
    /// Absolute path.
    #[serde(skip)]
    pub abs_path: PathBuf,
    /// Relation, fork and segment.
    pub segment: RelFileSegment,
    /// Size in bytes when listed.
    pub size: u64,
}

/// A file or directory the walk or scan could not handle.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileError {
    /// PGDATA-relative path.
    pub path: String,
    /// What went wrong, one line.
    pub message: String,
}

impl DataDir {
    /// Opens `root`: checks `PG_VERSION` and reads `global/pg_control` (CRC checked).
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let shown = root.display().to_string();
        if !root.is_dir() {
            return Err(DataDirError::NotADirectory { path: shown });
        }
        let version_path = root.join("PG_VERSION");
        if !version_path.exists() {
            return Err(DataDirError::NotADataDirectory {
                path: shown,
                missing: "PG_VERSION",
            });
        }
        let control_path = root.join("global").join("pg_control");
        if !control_path.exists() {
            return Err(DataDirError::NotADataDirectory {
                path: shown,
                missing: "global/pg_control",
            });
        }
        let vpath = version_path.display().to_string();
        let text =
            std::fs::read_to_string(&version_path).map_err(|e| DataDirError::BadVersionFile {
                path: vpath.clone(),
                why: e.to_string(),
            })?;
        let major = text
            .trim()
            .parse::<u32>()
            .map_err(|_| DataDirError::BadVersionFile {
                path: vpath.clone(),
                why: format!("{:?} is not a major version number", text.trim()),
            })
            .and_then(|n| {
                PgMajorVersion::from_number(n).map_err(|e| DataDirError::BadVersionFile {
                    path: vpath.clone(),
                    why: e.to_string(),
                })
            })?;
        let control = read_control_file(root).map_err(|source| DataDirError::Control {
            path: control_path.display().to_string(),
            source,
        })?;
        if control.major != major {
            return Err(DataDirError::BadVersionFile {
                path: vpath,
                why: format!(
                    "PG_VERSION says {major} but global/pg_control is a PostgreSQL {} control file",
                    control.major
                ),
            });
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            control,
            major,
            online: root.join("postmaster.pid").exists(),
        })
    }

    /// Block size of the cluster.
    pub fn blcksz(&self) -> usize {
        self.control.blcksz as usize
    }

    /// `PG_<major>_<catver>`: this version's directory inside each tablespace.
    pub fn tablespace_version_dir(&self) -> String {
        self.major.tablespace_dir(self.control.catalog_version_no)
    }

    /// Lists every relation segment file, sorted by path. Directories that cannot be read are
    /// returned as errors; on a running cluster a directory or file that vanished during the walk
    /// (a dropped database or table) is not an error.
    pub fn relation_files(&self) -> (Vec<RelFile>, Vec<FileError>) {
        let mut files = Vec::new();
        let (dirs, mut errors) = relation_dirs(&self.root, &self.tablespace_version_dir());
        for dir in dirs {
            let names = match read_dir_names(&self.root, &dir) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.online => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => {
                    errors.push(io_error(&dir, &e));
                    continue;
                }
            };
            for name in names {
                let rel_path = format!("{dir}/{name}");
                let PathKind::Relation(segment) = classify_path(&rel_path) else {
                    continue;
                };
                let abs_path = self.root.join(&rel_path);
                match std::fs::metadata(&abs_path) {
                    Ok(m) if m.is_file() => files.push(RelFile {
                        rel_path,
                        abs_path,
                        segment,
                        size: m.len(),
                    }),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && self.online => {}
                    Err(e) => errors.push(io_error(&rel_path, &e)),
                }
            }
        }
        files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        (files, errors)
    }
}

/// The names in directory `root/rel`, sorted (names that are not UTF-8 are skipped: PostgreSQL
/// names its files in ASCII).
pub fn read_dir_names(root: &Path, rel: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        if let Ok(n) = entry.file_name().into_string() {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
}

fn io_error(rel: &str, e: &io::Error) -> FileError {
    FileError {
        path: rel.to_string(),
        message: io_message(e),
    }
}

/// The PGDATA-relative directories that can hold relation files: `global`, `base/<db>` and
/// `pg_tblspc/<spc>/<ts_version_dir>/<db>` (symlinked or in-place tablespaces), sorted within each
/// parent. A missing `base` or unreadable directory is an error; a tablespace without this
/// version's directory, or a database directory that vanished, is not.
pub fn relation_dirs(root: &Path, ts_version_dir: &str) -> (Vec<String>, Vec<FileError>) {
    let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let mut errors = Vec::new();
    let mut parents = vec![("base".to_string(), true)];
    match read_dir_names(root, "pg_tblspc") {
        Ok(names) => parents.extend(
            names
                .into_iter()
                .filter(|n| digits(n))
                .map(|n| (format!("pg_tblspc/{n}/{ts_version_dir}"), false)),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => errors.push(io_error("pg_tblspc", &e)),
    }
    let mut dirs = vec!["global".to_string()];
    for (parent, required) in parents {
        match read_dir_names(root, &parent) {
            Ok(names) => dirs.extend(
                names
                    .into_iter()
                    .filter(|n| digits(n))
                    .map(|n| format!("{parent}/{n}")),
            ),
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(io_error(&parent, &e)),
        }
    }
    (dirs, errors)
}

/// An I/O error as one lower-case line without the `(os error N)` tail.
pub fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
