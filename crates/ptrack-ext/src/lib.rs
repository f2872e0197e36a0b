//! The `ptrack` extension: ptrack 2.x's SQL API on stock PostgreSQL 15–18 (spec ptrack.md §1–2).
//! A thin shell: the settings, the shared-memory hooks, the background worker and the SQL
//! functions translate between PostgreSQL and `ptrack-map`, which holds the logic. Mirrors
//! ptrack's `ptrack.c: _PG_init` (preload check, settings, `wal_level` check, file cleanup at 0).
//!
//! * [`settings`]: `ptrack.map_size`, `ptrack.map_location`, `ptrack.wait_timeout`,
//!   `ptrack.full_scan`;
//! * [`shmem`]: the map in shared memory, loaded from and saved to `pg_ptrack/ptrack.map` (or
//!   `global/ptrack.map`);
//! * [`tracker`]: the background worker that follows WAL and marks changed blocks;
//! * [`api`]: `ptrack_version`, `ptrack_init_lsn`, `ptrack_get_pagemapset`, `ptrack_get_change_stat`.

use std::ffi::CStr;

use pgrx::prelude::*;
use ptrack_map::MapLocation;
use ptrack_map::files;

pub mod api;
pub mod compat;
pub mod settings;
pub mod shmem;
pub mod tracker;
pub mod writer;

pub use settings::{FULL_SCAN, MAP_SIZE, WAIT_TIMEOUT};

::pgrx::pg_module_magic!(name, version);

/// The version `ptrack_version()` reports and `extversion` carries.
pub const PTRACK_VERSION: &str = "2.4";

unsafe extern "C" {
    /// `common/file_perm.h`: the mode of directories the server creates (0700, or 0750 when
    /// the data directory allows group access).
    static pg_dir_create_mode: std::ffi::c_int;
}

fn data_dir() -> String {
    // SAFETY: DataDir is set by the postmaster before libraries are preloaded and never freed.
    unsafe {
        let p = pg_sys::DataDir;
        if p.is_null() {
            ".".to_string()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Data directory as a path (absolute: the postmaster makes `DataDir` absolute).
pub fn pgdata() -> std::path::PathBuf {
    std::path::PathBuf::from(data_dir())
}

/// The configured location of the map.
pub fn map_location() -> MapLocation {
    settings::map_location()
}

/// Where the change sets live: `$PGDATA/pg_ptrack/changes`, with the map at the default
/// location only (the original's `global/` layout keeps none: PostgreSQL's tools check every
/// file there).
pub fn changes_dir() -> Option<std::path::PathBuf> {
    (map_location() == MapLocation::PgPtrack).then(|| {
        MapLocation::PgPtrack
            .dir(&pgdata())
            .join(ptrack_map::changelog::DIR)
    })
}

/// The map file: `$PGDATA/pg_ptrack/ptrack.map` or `$PGDATA/global/ptrack.map`.
pub fn map_path() -> String {
    map_location().map_path(&pgdata()).display().to_string()
}

/// Removes the map files of `location` (and an empty `pg_ptrack` directory when `remove_dir`),
/// warning about what could not be removed; `stale` logs each removal.
pub fn remove_map_files(location: MapLocation, remove_dir: bool, stale: bool) {
    let c = files::remove_files(&pgdata(), location, remove_dir);
    for p in &c.removed {
        if stale {
            log!(
                "ptrack: removed \"{}\" (ptrack.map_location is '{}')",
                p.display(),
                map_location().name()
            );
        }
    }
    for e in &c.problems {
        warning!("ptrack: stale map file left in place: {e}");
    }
}

/// The SQLSTATE of a failed file operation on the map's files.
pub fn file_error_code(e: &files::FileError) -> PgSqlErrorCode {
    match e {
        files::FileError::WrongType { .. } => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
        files::FileError::Io { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
    }
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a postmaster global flag.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        error!(
            "ptrack module must be initialized by Postmaster. Put the following line to configuration file: shared_preload_libraries='ptrack'"
        );
    }
    settings::define();
    // SAFETY: wal_level is a plain global set from the configuration before preloading.
    let minimal = unsafe { pg_sys::wal_level } == pg_sys::WalLevel::WAL_LEVEL_MINIMAL as i32;
    if MAP_SIZE.get() != 0 && minimal {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "assign_ptrack_map_size: cannot use ptrack if wal_level is minimal",
            "Set wal_level to \"replica\" or higher, or turn off ptrack with \"ptrack.map_size=0\""
        );
    }
    if MAP_SIZE.get() == 0 {
        for location in MapLocation::ALL {
            remove_map_files(location, true, false);
        }
        return;
    }
    // SAFETY: a plain global of the postmaster, set from the data directory's mode.
    let mode = unsafe { pg_dir_create_mode } as u32;
    if let Err(e) = files::prepare_dir(&pgdata(), map_location(), mode) {
        ereport!(
            WARNING,
            file_error_code(&e),
            format!("ptrack: cannot use the map's directory: {e}"),
            shmem::MEMORY_ONLY_DETAIL
        );
    }
    shmem::install_hooks();
    tracker::register();
}
