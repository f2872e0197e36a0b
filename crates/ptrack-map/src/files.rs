//! Where the map file lives, and the file work around it at server start: the two locations of
//! `ptrack.map_location` (`pg_ptrack/`, the default, and the original's `global/`), creating the
//! `pg_ptrack` directory, finding the map (also one left at the other location when the setting
//! changed), and removing stale files. Plain `std` I/O under the data directory, no PostgreSQL;
//! the extension calls it from the postmaster. Mirrors ptrack's `engine.c: ptrackCleanFiles` and
//! the opening part of `ptrackMapReadFromFile` (spec ptrack.md §3.5–3.6).
//!
//! Why `pg_ptrack/` by default: PostgreSQL's own tools treat every file in `global/` as a
//! relation file. `pg_checksums` (`pg_checksums.c: scan_directory`, which walks `global/`,
//! `base/` and `pg_tblspc/` only) and PostgreSQL 15's base backup checksum verification
//! (`basebackup.c: is_checksummed_file`, files under `global/`, `base/` and tablespaces) stop at
//! `global/ptrack.map` ("invalid segment number 0"). A directory of its own at the top of the
//! data directory is ignored by the server and by both, and copied whole by `pg_basebackup`.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The directory of the default location, under the data directory.
pub const MAP_DIR: &str = "pg_ptrack";
/// Name of the map file (the original's).
pub const MAP_FILE: &str = "ptrack.map";
/// Name of the temporary file a save goes through (`ptrack-durable`'s `<file>.tmp`).
pub const TMP_FILE: &str = "ptrack.map.tmp";

/// Where the map file is kept (`ptrack.map_location`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapLocation {
    /// `$PGDATA/pg_ptrack/ptrack.map`: outside every directory PostgreSQL's tools read as
    /// relation files.
    PgPtrack,
    /// `$PGDATA/global/ptrack.map`, the original ptrack's place, for clients and tests that
    /// expect the file there. PostgreSQL's `pg_checksums` and PostgreSQL 15's `pg_basebackup`
    /// (with checksum verification) stop at it.
    Global,
}

impl MapLocation {
    /// Both locations.
    pub const ALL: [MapLocation; 2] = [MapLocation::PgPtrack, MapLocation::Global];

    /// The setting's value for this location.
    pub fn name(self) -> &'static str {
        match self {
            MapLocation::PgPtrack => "pg_ptrack",
            MapLocation::Global => "global",
        }
    }

    /// The location a setting's value names, ignoring case as PostgreSQL does for enum settings.
    pub fn parse(value: &str) -> Option<MapLocation> {
        MapLocation::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(value))
    }

    /// The other location.
    pub fn other(self) -> MapLocation {
        match self {
            MapLocation::PgPtrack => MapLocation::Global,
            MapLocation::Global => MapLocation::PgPtrack,
        }
    }

    /// The directory holding the map.
    pub fn dir(self, pgdata: &Path) -> PathBuf {
        pgdata.join(self.name())
    }

    /// The map file.
    pub fn map_path(self, pgdata: &Path) -> PathBuf {
        self.dir(pgdata).join(MAP_FILE)
    }
}

/// A file operation on the map's files that failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path exists but is not what it must be (a directory where the map file goes, a
    /// file where the `pg_ptrack` directory goes…).
    #[error("\"{path}\" is {found}, not a {wanted}")]
    WrongType {
        /// The path.
        path: PathBuf,
        /// What it is ("a directory", "a FIFO"…).
        found: &'static str,
        /// What it must be ("regular file" or "directory").
        wanted: &'static str,
    },
    /// An I/O error.
    #[error("could not {what} \"{path}\": {source}")]
    Io {
        /// The operation ("read", "remove", "create directory"…).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// Creates the location's directory when it is `pg_ptrack` and missing, with `mode` (the data
/// directory's `pg_dir_create_mode`: 0700, or 0750 with group access), and fsyncs it and the
/// data directory. `global/` always exists. A `pg_ptrack` that exists and is not a directory
/// (after following a symbolic link) is an error and is left alone.
pub fn prepare_dir(pgdata: &Path, location: MapLocation, mode: u32) -> Result<(), FileError> {
    if location == MapLocation::Global {
        return Ok(());
    }
    let dir = location.dir(pgdata);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) => {
            return Err(FileError::WrongType {
                path: dir,
                found: kind_of(m.file_type()),
                wanted: "directory",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("stat", &dir)(e)),
    }
    DirBuilder::new()
        .mode(mode)
        .create(&dir)
        .map_err(io_error("create directory", &dir))?;
    sync_dir(&dir)?;
    sync_dir(pgdata)
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

/// A map file found at start, opened for reading; [`crate::Map::load_file`] reads it.
#[derive(Debug)]
pub struct MapFile {
    /// Where it is.
    pub path: PathBuf,
    /// The open file.
    pub file: std::fs::File,
}

/// Opens a map file: `None` when there is none. A path that is not a regular file (after
/// following a symbolic link) is an error, and is never opened (a FIFO would block).
pub fn open_map(path: &Path) -> Result<Option<MapFile>, FileError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::File::open(path)
            .map(|file| {
                Some(MapFile {
                    path: path.to_path_buf(),
                    file,
                })
            })
            .map_err(io_error("open", path)),
        Ok(m) => Err(FileError::WrongType {
            path: path.to_path_buf(),
            found: kind_of(m.file_type()),
            wanted: "regular file",
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("stat", path)(e)),
    }
}

/// What [`find_map`] found.
#[derive(Debug)]
pub enum Found {
    /// No map file at either location.
    Nothing,
    /// The map file at the configured location, open.
    Here(MapFile),
    /// No map at the configured location but one at the other (the setting changed since it
    /// was saved), open: load it, save it here and remove it there.
    Moved(MapFile),
    /// The configured location cannot hold a map file (the map path is a directory, the
    /// `pg_ptrack` directory is a file, permissions…); nothing there is touched.
    Unusable(FileError),
}

/// Looks for the map at `location`, then at the other location, and opens it (reading is the
/// loader's: [`crate::Map::load_file`]). What is left at the other location afterwards is for
/// [`remove_files`] to delete.
pub fn find_map(pgdata: &Path, location: MapLocation) -> Found {
    match open_map(&location.map_path(pgdata)) {
        Ok(Some(f)) => Found::Here(f),
        Err(e) => Found::Unusable(e),
        Ok(None) => match open_map(&location.other().map_path(pgdata)) {
            Ok(Some(f)) => Found::Moved(f),
            // Whatever is there is not a map this location can take over.
            Ok(None) | Err(_) => Found::Nothing,
        },
    }
}

/// What [`remove_files`] did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Files (and the `pg_ptrack` directory) removed.
    pub removed: Vec<PathBuf>,
    /// Paths that could not be removed or were not removed because they are not files.
    pub problems: Vec<FileError>,
}

/// Removes the change sets (`changes/*.pcs` and their temporary files) and, once empty, the
/// `changes` directory of `pg_ptrack/`; anything else there is left alone and reported.
fn remove_change_sets(dir: &Path, out: &mut Cleanup, changed: &mut bool) {
    let cdir = dir.join(crate::changelog::DIR);
    if !std::fs::symlink_metadata(&cdir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let names: Vec<String> = std::fs::read_dir(&cdir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut removed = false;
    for name in names {
        let ours = crate::changelog::SetName::parse(name.trim_end_matches(".tmp")).is_some();
        let path = cdir.join(&name);
        if !ours {
            out.problems.push(FileError::WrongType {
                path,
                found: "file not written by ptrack",
                wanted: "change set",
            });
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) => out.problems.push(io_error("remove", &path)(e)),
        }
    }
    if removed && let Err(e) = sync_dir(&cdir) {
        out.problems.push(e);
    }
    if std::fs::read_dir(&cdir).is_ok_and(|mut d| d.next().is_none()) {
        match std::fs::remove_dir(&cdir) {
            Ok(()) => {
                *changed = true;
                out.removed.push(cdir);
            }
            Err(e) => out.problems.push(io_error("remove directory", &cdir)(e)),
        }
    }
}

/// Names of the map's delta files in `dir` (and their temporary files), sorted; none when it
/// cannot be read.
pub fn delta_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(crate::mapsave::DELTA_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Removes the map file, its delta files and their temporary files from `location`: regular files and symbolic
/// links only, anything else is reported and left alone (never a user's directory). Then, for
/// `pg_ptrack` and when `remove_dir`, the directory itself if it is empty. Every directory
/// changed is fsynced, as `durable_unlink` does.
pub fn remove_files(pgdata: &Path, location: MapLocation, remove_dir: bool) -> Cleanup {
    let mut out = Cleanup::default();
    let dir = location.dir(pgdata);
    let mut changed = false;
    let mut names = vec![TMP_FILE.to_string(), MAP_FILE.to_string()];
    names.extend(delta_files(&dir));
    for name in names {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() || m.file_type().is_symlink() => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        changed = true;
                        out.removed.push(path);
                    }
                    Err(e) => out.problems.push(io_error("remove", &path)(e)),
                }
            }
            Ok(m) => out.problems.push(FileError::WrongType {
                path,
                found: kind_of(m.file_type()),
                wanted: "regular file",
            }),
            // Missing, or the directory itself is missing or not a directory.
            Err(_) => {}
        }
    }
    if location == MapLocation::PgPtrack {
        remove_change_sets(&dir, &mut out, &mut changed);
    }
    if changed && let Err(e) = sync_dir(&dir) {
        out.problems.push(e);
    }
    let is_real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
    if location == MapLocation::PgPtrack && remove_dir && is_real_dir {
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if empty {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {
                    out.removed.push(dir);
                    if let Err(e) = sync_dir(pgdata) {
                        out.problems.push(e);
                    }
                }
                Err(e) => out.problems.push(io_error("remove directory", &dir)(e)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pgdata() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("global")).unwrap();
        d
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(MapLocation::parse("PG_PTRACK"), Some(MapLocation::PgPtrack));
        assert_eq!(MapLocation::parse("global"), Some(MapLocation::Global));
        assert_eq!(MapLocation::parse("glob"), None);
        assert_eq!(MapLocation::Global.other(), MapLocation::PgPtrack);
        assert_eq!(
            MapLocation::PgPtrack.map_path(Path::new("/d")),
            Path::new("/d/pg_ptrack/ptrack.map")
        );
        assert_eq!(
            MapLocation::Global.map_path(Path::new("/d")),
            Path::new("/d/global/ptrack.map")
        );
    }

    #[test]
    fn prepare_dir_creates_with_mode_and_refuses_a_file() {
        let d = pgdata();
        prepare_dir(d.path(), MapLocation::PgPtrack, 0o700).unwrap();
        let m = std::fs::metadata(d.path().join("pg_ptrack")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        // Existing: fine.
        prepare_dir(d.path(), MapLocation::PgPtrack, 0o700).unwrap();
        prepare_dir(d.path(), MapLocation::Global, 0o700).unwrap();
        let d2 = pgdata();
        std::fs::write(d2.path().join("pg_ptrack"), b"x").unwrap();
        let e = prepare_dir(d2.path(), MapLocation::PgPtrack, 0o700).unwrap_err();
        assert!(
            e.to_string().contains("is a regular file, not a directory"),
            "{e}"
        );
        assert_eq!(std::fs::read(d2.path().join("pg_ptrack")).unwrap(), b"x");
    }

    #[test]
    fn find_map_here_moved_nothing_unusable() {
        let d = pgdata();
        assert!(matches!(
            find_map(d.path(), MapLocation::PgPtrack),
            Found::Nothing
        ));
        let contents = |f: &MapFile| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut &f.file, &mut s).unwrap();
            s
        };
        std::fs::write(d.path().join("global/ptrack.map"), b"old").unwrap();
        match find_map(d.path(), MapLocation::PgPtrack) {
            Found::Moved(f) => {
                assert_eq!(f.path, d.path().join("global/ptrack.map"));
                assert_eq!(contents(&f), "old");
            }
            f => panic!("{f:?}"),
        }
        prepare_dir(d.path(), MapLocation::PgPtrack, 0o700).unwrap();
        std::fs::write(d.path().join("pg_ptrack/ptrack.map"), b"new").unwrap();
        match find_map(d.path(), MapLocation::PgPtrack) {
            Found::Here(f) => {
                assert_eq!(f.path, d.path().join("pg_ptrack/ptrack.map"));
                assert_eq!(contents(&f), "new");
            }
            f => panic!("{f:?}"),
        }
        // An unreadable map where the map goes: unusable, named.
        let p = d.path().join("pg_ptrack/ptrack.map");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        let unreadable = std::fs::File::open(&p).is_err();
        if unreadable {
            match find_map(d.path(), MapLocation::PgPtrack) {
                Found::Unusable(e) => assert!(
                    e.to_string().starts_with("could not open \"")
                        && e.to_string().contains("ptrack.map\": "),
                    "{e}"
                ),
                f => panic!("{f:?}"),
            }
        }
        // A directory where the map goes: unusable, and never read or removed.
        std::fs::remove_file(d.path().join("pg_ptrack/ptrack.map")).unwrap();
        std::fs::create_dir(d.path().join("pg_ptrack/ptrack.map")).unwrap();
        std::fs::write(d.path().join("pg_ptrack/ptrack.map/keep"), b"k").unwrap();
        match find_map(d.path(), MapLocation::PgPtrack) {
            Found::Unusable(e) => assert!(
                e.to_string()
                    .ends_with("ptrack.map\" is a directory, not a regular file"),
                "{e}"
            ),
            f => panic!("{f:?}"),
        }
        let c = remove_files(d.path(), MapLocation::PgPtrack, true);
        assert!(c.removed.is_empty(), "{:?}", c.removed);
        assert_eq!(c.problems.len(), 1);
        assert!(d.path().join("pg_ptrack/ptrack.map/keep").exists());
    }

    #[test]
    fn remove_files_removes_files_then_the_empty_directory() {
        let d = pgdata();
        prepare_dir(d.path(), MapLocation::PgPtrack, 0o700).unwrap();
        std::fs::write(d.path().join("pg_ptrack/ptrack.map"), b"m").unwrap();
        std::fs::write(d.path().join("pg_ptrack/ptrack.map.tmp"), b"t").unwrap();
        std::fs::write(d.path().join("global/ptrack.map"), b"g").unwrap();
        std::fs::write(d.path().join("global/1262"), b"rel").unwrap();
        let c = remove_files(d.path(), MapLocation::PgPtrack, false);
        assert_eq!(c.removed.len(), 2);
        assert!(d.path().join("pg_ptrack").is_dir());
        let c = remove_files(d.path(), MapLocation::PgPtrack, true);
        assert_eq!(c.removed, vec![d.path().join("pg_ptrack")]);
        assert!(!d.path().join("pg_ptrack").exists());
        let c = remove_files(d.path(), MapLocation::Global, true);
        assert_eq!(c.removed, vec![d.path().join("global/ptrack.map")]);
        assert!(c.problems.is_empty());
        // global/ itself and its other files stay.
        assert!(d.path().join("global/1262").exists());
        // Nothing there: nothing to do.
        let c = remove_files(d.path(), MapLocation::PgPtrack, true);
        assert!(c.removed.is_empty() && c.problems.is_empty());
    }

    /// Deltas and change sets go with the map; a file ptrack did not write stays, with its
    /// directories.
    #[test]
    fn remove_files_takes_deltas_and_change_sets() {
        let d = pgdata();
        prepare_dir(d.path(), MapLocation::PgPtrack, 0o700).unwrap();
        let p = d.path().join("pg_ptrack");
        std::fs::create_dir(p.join("changes")).unwrap();
        std::fs::write(p.join("ptrack.map"), b"m").unwrap();
        std::fs::write(p.join("ptrack.map.delta.1"), b"d").unwrap();
        let set = "00000001-0000000000000010-0000000000000020.pcs";
        std::fs::write(p.join("changes").join(set), b"s").unwrap();
        std::fs::write(p.join("changes/notes.txt"), b"mine").unwrap();
        let c = remove_files(d.path(), MapLocation::PgPtrack, true);
        assert!(!p.join("ptrack.map.delta.1").exists() && !p.join("changes").join(set).exists());
        assert!(p.join("changes/notes.txt").exists());
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        std::fs::remove_file(p.join("changes/notes.txt")).unwrap();
        let c = remove_files(d.path(), MapLocation::PgPtrack, true);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(!p.exists());
    }
}
