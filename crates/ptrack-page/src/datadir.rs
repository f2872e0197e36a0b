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
        let mut errors = Vec::new();
        let mut dirs: Vec<String> = vec!["global".into()];
        for (parent, expect) in [("base".to_string(), true)].into_iter().chain(
            self.tablespace_dirs(&mut errors)
                .into_iter()
                .map(|d| (d, false)),
        ) {
            match self.read_dir_names(&parent) {
                Ok(names) => dirs.extend(names.into_iter().map(|n| format!("{parent}/{n}"))),
                Err(e) if !expect && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(self.io_error(&parent, &e)),
            }
        }
        for dir in dirs {
            let names = match self.read_dir_names(&dir) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.online => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => {
                    errors.push(self.io_error(&dir, &e));
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
                    Err(e) => errors.push(self.io_error(&rel_path, &e)),
                }
            }
        }
        files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        (files, errors)
    }

    /// `pg_tblspc/<oid>/PG_<major>_<catver>` for every tablespace that has one.
    fn tablespace_dirs(&self, errors: &mut Vec<FileError>) -> Vec<String> {
        let vdir = self.tablespace_version_dir();
        match self.read_dir_names("pg_tblspc") {
            Ok(names) => names
                .into_iter()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .map(|n| format!("pg_tblspc/{n}/{vdir}"))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                errors.push(self.io_error("pg_tblspc", &e));
                Vec::new()
            }
        }
    }

    fn read_dir_names(&self, rel: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.root.join(rel))? {
            let entry = entry?;
            if let Ok(n) = entry.file_name().into_string() {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    fn io_error(&self, rel: &str, e: &io::Error) -> FileError {
        FileError {
            path: rel.to_string(),
            message: io_message(e),
        }
    }
}

/// An I/O error as one lower-case line without the `(os error N)` tail.
pub fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
